//! The object-store tier against the local disk, in one run, with a real
//! SeaweedFS on loopback (`weed`, from `tools/prereqs`):
//!
//! - put: the same data into a local store and into a store whose sealed
//!   segments go to the bucket, with the uploader running beside the put
//!   as the daemon's upkeep thread does; the time until the last segment
//!   is confirmed in the bucket too;
//! - local disk used once every segment is uploaded, against `cacheBytes`;
//! - a cold read: every local copy evicted, the file read back by range
//!   requests through the prefetching reader, against a read of the local
//!   store;
//! - what an activation with `durability: "remote"` waits for, for a 1 GiB
//!   image (`Store::upload_all` then `Store::push_index`): with the
//!   uploader running beside the put (the daemon's steady state) and with
//!   every segment still to upload.
//!
//!     cargo bench --profile dev --bench tier
//!
//! `IMGSTORE_BENCH_DATA=FILE` (e.g. the peer dataset's v1.tar) and
//! `IMGSTORE_BENCH_MB` pick the data; `IMGSTORE_TIER_CACHE_MB` (default
//! 256) the cache; `IMGSTORE_SEGMENT_MB` (default 64) the segment size.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imgstore::backend::{ObjectBackend, ObjectStoreBackend};
use imgstore::store::TierOptions;
use imgstore::{FileId, Store, StoreOptions};

mod common;
#[path = "../tests/it/seaweed.rs"]
#[allow(dead_code)]
mod seaweed;

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the
    // first, utime and stime the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn read_secs(store: &Store, id: &FileId) -> (f64, u64) {
    let t = Instant::now();
    let mut r = store.open_file(id).unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).unwrap_or_else(|e| panic!("read: {e}"));
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    (t.elapsed().as_secs_f64(), n)
}

fn main() {
    let len = common::bench_len();
    let cache_bytes = common::env_num::<u64>("IMGSTORE_TIER_CACHE_MB", 256) << 20;
    let segment_bytes = common::env_num::<u64>("IMGSTORE_SEGMENT_MB", 64) << 20;
    let (source, data) = common::compressible(len);
    println!(
        "data: {source}, {:.1} MB; segments {} MiB, cache {} MiB",
        mb(data.len() as u64),
        segment_bytes >> 20,
        cache_bytes >> 20
    );
    let sw = seaweed::Seaweed::start("bench");
    let backend: Arc<dyn ObjectBackend> =
        Arc::new(ObjectStoreBackend::s3(&sw.config("bench")).unwrap_or_else(|e| panic!("{e}")));
    let options = |cache: u64, tier: bool| StoreOptions {
        segment_bytes,
        tier: tier.then(|| TierOptions {
            backend: Arc::clone(&backend),
            prefix: "bench/".into(),
            cache_bytes: cache,
            delete_grace: Duration::from_secs(3600),
            seal_after: Duration::ZERO,
            remote_durability: true,
            local_limit_bytes: 0,
        }),
        ..StoreOptions::default()
    };

    // Local.
    let local_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let local =
        Store::open_with(local_dir.path(), options(0, false)).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let cpu0 = cpu_secs(std::process::id());
    let local_id = local
        .put(&data[..])
        .unwrap_or_else(|e| panic!("{e}"))
        .file_id;
    let local_put = t.elapsed().as_secs_f64();
    let local_cpu = cpu_secs(std::process::id()) - cpu0;

    // Tiered: the uploader runs beside the put, as in the daemon.
    let tier_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tiered = Store::open_with(tier_dir.path(), options(cache_bytes, true))
        .unwrap_or_else(|e| panic!("{e}"));
    let done = AtomicBool::new(false);
    let (weed_cpu0, own_cpu0) = (cpu_secs(sw.pid()), cpu_secs(std::process::id()));
    let (tier_put, all_uploaded, tier_id, peak_local) = std::thread::scope(|s| {
        let uploader = s.spawn(|| {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(dir_bytes(&tier_dir.path().join("segments")));
                let r = tiered.tier_step().unwrap_or_else(|e| panic!("tier: {e}"));
                if r.uploaded.is_empty() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            peak
        });
        let t = Instant::now();
        let id = tiered
            .put(&data[..])
            .unwrap_or_else(|e| panic!("{e}"))
            .file_id;
        let put = t.elapsed().as_secs_f64();
        done.store(true, Ordering::SeqCst);
        let peak = uploader.join().unwrap_or(0);
        tiered.tier_step().unwrap_or_else(|e| panic!("tier: {e}"));
        (put, t.elapsed().as_secs_f64(), id, peak)
    });
    let weed_cpu = cpu_secs(sw.pid()) - weed_cpu0;
    let own_cpu = cpu_secs(std::process::id()) - own_cpu0;
    let sizes = tiered.tier_sizes().unwrap_or_else(|e| panic!("{e}"));
    let on_disk = dir_bytes(&tier_dir.path().join("segments"));
    drop(tiered);
    let n = data.len() as u64;
    println!(
        "put, local disk:       {:6.2} s  {:7.1} MB/s  (imgstore CPU {local_cpu:.1} s)",
        local_put,
        mb(n) / local_put
    );
    println!(
        "put, S3 tier:          {:6.2} s  {:7.1} MB/s  = {:.2}x local (all {} segments confirmed in the bucket after {:.2} s: {:.2}x)",
        tier_put,
        mb(n) / tier_put,
        local_put / tier_put,
        sizes.remote_segments,
        all_uploaded,
        local_put / all_uploaded
    );
    println!(
        "  CPU during it: SeaweedFS {weed_cpu:.1} s, imgstore {own_cpu:.1} s, on {} cores for {all_uploaded:.1} s",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    println!(
        "local disk: at most {:.1} MB of segment files during the put; after upload {:.1} MB (cache {:.1} MB, remote {:.1} MB, not uploaded {:.1} MB)",
        mb(peak_local),
        mb(on_disk),
        mb(sizes.cached_bytes),
        mb(sizes.remote_bytes),
        mb(sizes.local_bytes)
    );

    // Cold: no local copy at all.
    let cold =
        Store::open_with(tier_dir.path(), options(0, true)).unwrap_or_else(|e| panic!("{e}"));
    cold.tier_step().unwrap_or_else(|e| panic!("tier: {e}"));
    assert_eq!(dir_bytes(&tier_dir.path().join("segments")), 0);
    let (cold_secs, got) = read_secs(&cold, &tier_id);
    assert_eq!(got, n);
    drop(cold);
    // Cold again, with a cache: the same read keeps what it fetched.
    let filling = Store::open_with(
        tier_dir.path(),
        options(cache_bytes.max(segment_bytes), true),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (fill_secs, _) = read_secs(&filling, &tier_id);
    // The step puts the complete fills in place (check and fsync each):
    // work the read itself no longer waits for.
    let started = Instant::now();
    let step = filling.tier_step().unwrap_or_else(|e| panic!("tier: {e}"));
    let step_secs = started.elapsed().as_secs_f64();
    let cached = filling
        .tier_sizes()
        .unwrap_or_else(|e| panic!("{e}"))
        .cached_bytes;
    let (warm_secs, _) = read_secs(&filling, &tier_id);
    let (local_secs, _) = read_secs(&local, &local_id);
    println!(
        "read, local store:     {:6.2} s  {:7.1} MB/s",
        local_secs,
        mb(n) / local_secs
    );
    println!(
        "read, cold from S3:    {:6.2} s  {:7.1} MB/s  = {:.2}x local (no cache)",
        cold_secs,
        mb(n) / cold_secs,
        local_secs / cold_secs
    );
    println!(
        "read, cold, filling the cache: {:6.2} s  {:7.1} MB/s; then {:.1} MB cached ({} fills placed by the tier step in {:.2} s, {} evicted)",
        fill_secs,
        mb(n) / fill_secs,
        mb(cached),
        step.filled.len(),
        step_secs,
        step.evicted.len()
    );
    println!(
        "read again, cache warm: {:6.2} s  {:7.1} MB/s",
        warm_secs,
        mb(n) / warm_secs
    );
    drop(filling);

    // Activation with remote durability, for a 1 GiB image.
    let image = &data[..data.len().min(1 << 30)];
    for background in [true, false] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open_with(dir.path(), options(cache_bytes, true))
            .unwrap_or_else(|e| panic!("{e}"));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let uploader = background.then(|| {
                s.spawn(|| {
                    while !done.load(Ordering::SeqCst) {
                        let r = store.tier_step().unwrap_or_else(|e| panic!("tier: {e}"));
                        if r.uploaded.is_empty() {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })
            });
            store.put(image).unwrap_or_else(|e| panic!("{e}"));
            done.store(true, Ordering::SeqCst);
            if let Some(u) = uploader {
                let _ = u.join();
            }
        });
        let pending = store
            .tier_sizes()
            .unwrap_or_else(|e| panic!("{e}"))
            .local_bytes;
        let t = Instant::now();
        let uploaded = store.upload_all().unwrap_or_else(|e| panic!("{e}"));
        let push = store.push_index().unwrap_or_else(|e| panic!("{e}"));
        println!(
            "activation, remote durability, {:.0} MB image, uploader {}: {:.2} s ({} segments, {:.1} MB, uploaded then; index push {} files, {:.1} MB)",
            mb(image.len() as u64),
            if background {
                "running beside the put"
            } else {
                "off"
            },
            t.elapsed().as_secs_f64(),
            uploaded,
            mb(pending),
            push.uploaded,
            mb(push.uploaded_bytes)
        );
    }
}
