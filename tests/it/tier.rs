//! The object-store tier: the backend contract on every backend, and a
//! store whose sealed segments live in a bucket (upload, eviction, reads by
//! range request, GC with a grace period, a missing object, reopening).

use std::sync::Arc;
use std::time::Duration;

use imgstore::backend::{LocalDir, ObjectBackend, ObjectStoreBackend, conformance};
use imgstore::store::TierOptions;
use imgstore::{Store, StoreOptions};

use crate::common::*;
use crate::seaweed::Seaweed;

/// Larger than one multipart part (8 MiB), so multipart uploads run.
const LARGE: usize = (8 << 20) + 4096 + 17;

#[test]
fn the_in_memory_store_meets_the_backend_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let b = ObjectStoreBackend::memory().unwrap();
    conformance::run(&b, "conformance/", LARGE, scratch.path()).unwrap();
}

#[test]
fn a_local_directory_meets_the_backend_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let b = LocalDir::new(root.path()).unwrap();
    conformance::run(&b, "conformance/", LARGE, scratch.path()).unwrap();
}

#[test]
fn seaweedfs_meets_the_backend_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let sw = Seaweed::start("contract");
    let b = ObjectStoreBackend::s3(&sw.config("contract")).unwrap();
    conformance::run(&b, "conformance/", LARGE, scratch.path()).unwrap();
    // Wrong credentials are a clear error, not a hang or a success.
    let mut wrong = sw.config("contract");
    wrong.secret_access_key = Some("not-the-secret".into());
    let wrong = ObjectStoreBackend::s3(&wrong).unwrap();
    let err = wrong.put_bytes("x", b"1").unwrap_err().to_string();
    assert!(err.contains("uploading x"), "{err}");
    let mut buf = [0u8; 1];
    assert!(wrong.read_at("conformance/missing", 0, &mut buf).is_err());
}

fn tiered(backend: Arc<dyn ObjectBackend>, cache_bytes: u64, grace: Duration) -> StoreOptions {
    StoreOptions {
        tier: Some(TierOptions {
            backend,
            prefix: "dc1/".into(),
            cache_bytes,
            delete_grace: grace,
            seal_after: Duration::ZERO,
            remote_durability: false,
            local_limit_bytes: 0,
        }),
        ..small_options()
    }
}

fn memory() -> Arc<dyn ObjectBackend> {
    Arc::new(ObjectStoreBackend::memory().unwrap())
}

fn two_hours_from_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 7200
}

/// `data` put into a tiered store in `dir`, uploaded, its local copies
/// evicted; the store closed.
fn uploaded(
    dir: &std::path::Path,
    backend: &Arc<dyn ObjectBackend>,
    data: &[u8],
) -> imgstore::FileId {
    let store = open_tiered(dir, tiered(backend.clone(), 0, Duration::ZERO));
    let id = put(&store, data);
    store.tier_step().unwrap();
    id
}

/// A new data dir on a new in-memory bucket: cache and grace as given.
fn fresh(cache: u64, grace: Duration) -> (tempfile::TempDir, Arc<dyn ObjectBackend>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let store = open_tiered(dir.path(), tiered(backend.clone(), cache, grace));
    (dir, backend, store)
}

fn open_tiered(dir: &std::path::Path, opts: StoreOptions) -> Store {
    Store::open_with(dir, opts).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Every segment uploaded and every local copy evicted, then every byte
/// read back by range requests, verified, and again after reopening.
fn round_trip(backend: Arc<dyn ObjectBackend>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_tiered(dir.path(), tiered(backend.clone(), 0, Duration::ZERO));
    let files: Vec<_> = (0..4u64)
        .map(|i| {
            let d = text(150_000 + i as usize * 10_000, 40 + i);
            (put(&store, &d), d)
        })
        .collect();
    let step = store.tier_step().unwrap();
    assert!(step.uploaded.len() > 3, "{step:?}");
    assert_eq!(step.evicted.len(), step.uploaded.len(), "{step:?}");
    let sizes = store.tier_sizes().unwrap();
    assert_eq!(sizes.local_segments, 0, "{sizes:?}");
    assert_eq!(sizes.cached_bytes, 0, "{sizes:?}");
    assert!(sizes.remote_bytes > 0, "{sizes:?}");
    let objects = backend.list("dc1/").unwrap();
    assert_eq!(objects.len() as u64, sizes.remote_segments, "{objects:?}");
    // No segment file is left on the local disk.
    let local: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.ends_with(".seg").then_some(n)
        })
        .collect();
    assert!(local.is_empty(), "{local:?}");
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
    // New writes after the upload go to a new segment and upload in turn.
    let more = text(90_000, 99);
    let more_id = put(&store, &more);
    assert!(!store.tier_step().unwrap().uploaded.is_empty());
    drop(store);

    let store = open_tiered(dir.path(), tiered(backend.clone(), 0, Duration::ZERO));
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_eq!(read_all(&store, &more_id), more);
    assert_clean(&store);
    drop(store);
    // Without its storage configuration the store does not open: its
    // bytes are elsewhere.
    let err = Store::open_with(dir.path(), small_options()).err().unwrap();
    assert!(err.to_string().contains("remote tier"), "{err}");
}

#[test]
fn a_store_on_the_in_memory_backend_reads_every_byte_back_from_it() {
    round_trip(memory());
}

#[test]
fn a_store_on_seaweedfs_reads_every_byte_back_from_it() {
    let sw = Seaweed::start("images");
    round_trip(Arc::new(
        ObjectStoreBackend::s3(&sw.config("images")).unwrap(),
    ));
}

#[test]
fn the_cache_keeps_the_most_recently_read_segments_within_its_size() {
    let (_dir, _backend, store) = fresh(200_000, Duration::ZERO);
    let a = text(300_000, 1);
    let a_id = put(&store, &a);
    store.tier_step().unwrap();
    let sizes = store.tier_sizes().unwrap();
    assert!(sizes.cached_bytes <= 200_000, "{sizes:?}");
    assert!(sizes.cached_bytes > 0, "{sizes:?}");
    assert_eq!(read_all(&store, &a_id), a);
    assert_clean(&store);
}

#[test]
fn gc_of_remote_segments_deletes_their_objects_only_after_the_grace_period() {
    let (dir, backend, store) = fresh(0, Duration::from_secs(3600));
    let keep = text(200_000, 5);
    let gone = bytes(200_000, 6);
    let keep_id = put(&store, &keep);
    let gone_id = put(&store, &gone);
    store.tier_step().unwrap();
    let before = backend.list("dc1/").unwrap().len();
    store.unlink(&gone_id).unwrap();
    let r = store.gc().unwrap();
    assert!(r.segments_deleted + r.segments_rewritten > 0, "{r:?}");
    // Retired, not deleted: a reader holding an old location still finds
    // its object for the whole grace period.
    assert_eq!(store.tier_step().unwrap().deleted, vec![]);
    assert!(store.tier_sizes().unwrap().retired_segments > 0);
    assert!(backend.list("dc1/").unwrap().len() >= before);
    assert_eq!(read_all(&store, &keep_id), keep);
    assert_clean(&store);
    // Reopened, the retired ones are still waiting, and their ids are
    // never reused for new segments.
    drop(store);
    let store = open_tiered(
        dir.path(),
        tiered(backend.clone(), 0, Duration::from_secs(3600)),
    );
    let retired = store.tier_sizes().unwrap().retired_segments;
    assert!(retired > 0);
    put(&store, &text(100_000, 7));
    store.tier_step().unwrap();
    // Past the deadline the objects go, then their entries.
    let far = two_hours_from_now();
    let deleted = store.delete_retired(far).unwrap();
    assert_eq!(deleted.len() as u64, retired);
    assert_eq!(store.tier_sizes().unwrap().retired_segments, 0);
    let names: Vec<_> = backend
        .list("dc1/")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(
        names.len() as u64,
        store.tier_sizes().unwrap().remote_segments,
        "{names:?}"
    );
    assert_eq!(read_all(&store, &keep_id), keep);
    assert_clean(&store);
}

#[test]
fn a_missing_object_is_an_error_naming_the_segment_never_wrong_bytes() {
    let (_dir, backend, store) = fresh(0, Duration::ZERO);
    let d = text(100_000, 8);
    let id = put(&store, &d);
    store.tier_step().unwrap();
    for o in backend.list("dc1/").unwrap() {
        backend.delete(&o.name).unwrap();
    }
    let mut out = Vec::new();
    let err = std::io::Read::read_to_end(&mut store.open_file(&id).unwrap(), &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("segment") && err.contains("missing"), "{err}");
    let report = store.verify(false).unwrap();
    assert!(!report.is_clean());
}

/// The value of counter `name` on the daemon at `url`.
fn counter(http: &reqwest::blocking::Client, url: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    s.samples
        .iter()
        .find(|x| x.metric == name)
        .map_or(0.0, |x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("segments")).map_or(0, |rd| {
        rd.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The real daemon with its segments in a real SeaweedFS: images upload,
/// the local copies go, downloads come back by range requests; ingest goes
/// on while the bucket is down and the segments upload once it is back;
/// the admin commands open the store through the same config.
#[test]
fn the_daemon_keeps_its_segments_in_seaweedfs_and_rides_out_an_outage() {
    let mut sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", crate::procs::free_port());
    let url = format!("http://{listen}");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&serde_json::json!({
            "listen": listen,
            "dataDir": data,
            "segmentBytes": 1 << 20,
            "gcIntervalSeconds": 0,
            "recompressLevel": 0,
            "storage": {
                "type": "s3",
                "endpoint": sw.endpoint(),
                "bucket": "images",
                "prefix": "dc1/",
                "region": "us-east-1",
                "accessKeyId": crate::seaweed::KEY,
                "secretAccessKey": crate::seaweed::SECRET,
                "cacheBytes": 0,
                "sealAfterSeconds": 0,
                "durability": "local",
                "requestTimeoutSeconds": 5,
                "retries": 1
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let http = reqwest::blocking::Client::new();
    let daemon = crate::procs::start(&config, &url);
    let image = |name: &str, data: &[u8]| {
        let extra = serde_json::json!({});
        crate::daemon::create_image(&http, &url, crate::daemon::ALICE, name, extra, data, true)
    };
    let a = bytes(3 << 20, 71);
    let a_uuid = image("on-s3", &a);
    wait_for("every segment uploaded and evicted", || {
        counter(&http, &url, "imgstore_tier_uploaded_bytes_total") >= (3 << 20) as f64
            && segment_files(&data) == 0
    });
    let get = |uuid: &str| {
        http.get(format!(
            "{url}/images/{uuid}/file?account={}",
            crate::daemon::ALICE
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec()
    };
    assert!(
        get(&a_uuid) == a,
        "the file read back from the bucket differs"
    );

    // The bucket goes away: uploads still succeed (locally) and the tier
    // counts its failed steps; nothing is evicted that is not uploaded.
    sw.kill();
    let b = bytes(2 << 20, 72);
    let b_uuid = image("during-outage", &b);
    wait_for("a failed tier step", || {
        counter(&http, &url, "imgstore_tier_errors_total") >= 1.0
    });
    assert!(get(&b_uuid) == b);
    assert!(
        segment_files(&data) > 0,
        "local segments wait for the bucket"
    );
    // Back: what waited uploads, and the cache empties again.
    sw.restart();
    wait_for("the waiting segments uploaded", || {
        segment_files(&data) == 0
    });
    assert!(get(&a_uuid) == a && get(&b_uuid) == b);
    daemon.kill();

    // The admin commands open the store through the daemon's config...
    let admin = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .arg("store")
            .args(args)
            .output()
            .unwrap()
    };
    let out = admin(&[
        "stats".as_ref(),
        "--json".as_ref(),
        "--config".as_ref(),
        config.as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stats["tier"]["remote_bytes"].as_u64().unwrap() >= 5 << 20,
        "{stats}"
    );
    assert_eq!(stats["tier"]["local_segments"], 0, "{stats}");
    let out = admin(&["verify".as_ref(), "--config".as_ref(), config.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ...and refuse it without: its bytes are in the bucket.
    let out = admin(&["stats".as_ref(), "--data-dir".as_ref(), data.as_ref()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("remote tier"));
}

#[test]
fn remote_reads_fill_the_cache_and_a_full_disk_only_stops_the_filling() {
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let d = text(300_000, 9);
    let id = uploaded(dir.path(), &backend, &d);
    // Reopened with room in the cache: nothing local, then a read of the
    // whole file brings every segment it touched into the cache. The read
    // only writes the bytes; the tier step checks, syncs and places them.
    let store = open_tiered(
        dir.path(),
        tiered(backend.clone(), 10 << 20, Duration::ZERO),
    );
    assert_eq!(store.tier_sizes().unwrap().cached_bytes, 0);
    assert_eq!(read_all(&store, &id), d);
    assert_eq!(store.tier_sizes().unwrap().cached_bytes, 0);
    let step = store.tier_step().unwrap();
    assert!(!step.filled.is_empty(), "{step:?}");
    let sizes = store.tier_sizes().unwrap();
    assert!(sizes.cached_bytes > 0, "{sizes:?}");
    // The bucket's copies can go now: the cached ones answer.
    let objects = backend.list("dc1/").unwrap();
    for o in &objects {
        backend.delete(&o.name).unwrap();
    }
    assert_eq!(read_all(&store, &id), d);
    for o in &objects {
        assert!(o.len > 0);
    }
    drop(store);

    // A disk with no room for the cache: the fill fails, the read does not.
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let id = uploaded(dir.path(), &backend, &d);
    let faults = imgstore::io::FaultyIo::new();
    let store = open_tiered(
        dir.path(),
        StoreOptions {
            io: Box::new(faults.clone()),
            ..tiered(backend.clone(), 10 << 20, Duration::ZERO)
        },
    );
    faults.fail_writes_after(0, imgstore::io::ENOSPC);
    assert_eq!(read_all(&store, &id), d);
    store.tier_step().unwrap();
    assert_eq!(store.tier_sizes().unwrap().cached_bytes, 0);
    let fills = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".fill")
        })
        .count();
    assert_eq!(fills, 0, "a failed fill leaves no file behind");
    // Room again: the next read fills the cache.
    faults.heal();
    assert_eq!(read_all(&store, &id), d);
    store.tier_step().unwrap();
    assert!(store.tier_sizes().unwrap().cached_bytes > 0);
}

#[test]
fn a_cold_read_of_many_segments_caches_every_one_of_them_at_the_next_step() {
    // Random bytes in 64 KiB segments: about 20 segments, more than the
    // fills that may be in progress at once. Complete fills waiting for
    // the step must not be dropped to make room for the next ones.
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let d = bytes(1_200_000, 61);
    let id = uploaded(dir.path(), &backend, &d);
    let store = open_tiered(
        dir.path(),
        tiered(backend.clone(), 100 << 20, Duration::ZERO),
    );
    let before = store.tier_sizes().unwrap();
    assert!(before.remote_bytes > 12 * 64 * 1024, "{before:?}");
    assert_eq!(read_all(&store, &id), d);
    let step = store.tier_step().unwrap();
    let after = store.tier_sizes().unwrap();
    assert_eq!(after.cached_bytes, after.remote_bytes, "{step:?} {after:?}");
    assert_clean(&store);
}

#[test]
fn closing_the_store_keeps_what_reads_brought_whole_in_the_cache() {
    // An offline reader (`store cat`) runs no tier step: its close places
    // the complete fills, and the next open reads them locally.
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let d = bytes(400_000, 71);
    let id = uploaded(dir.path(), &backend, &d);
    let opts = || tiered(backend.clone(), 100 << 20, Duration::ZERO);
    let store = open_tiered(dir.path(), opts());
    assert_eq!(read_all(&store, &id), d);
    store.close().unwrap();
    let store = open_tiered(dir.path(), opts());
    let sizes = store.tier_sizes().unwrap();
    assert!(sizes.cached_bytes > 0, "{sizes:?}");
    assert_eq!(sizes.cached_bytes, sizes.remote_bytes, "{sizes:?}");
    assert_eq!(read_all(&store, &id), d);
    assert_clean(&store);
}

#[test]
fn a_cache_fill_that_reads_left_mostly_covered_is_completed_by_the_tier_step() {
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let a = text(300_000, 11);
    let a_id = {
        let store = open_tiered(dir.path(), tiered(backend.clone(), 0, Duration::ZERO));
        // A small file first, then garbage: no read of `a` touches its
        // records, so the first segment is never covered by reads alone.
        let b = put(&store, &bytes(4_000, 12));
        let a_id = put(&store, &a);
        store.unlink(&b).unwrap();
        store.tier_step().unwrap();
        a_id
    };
    let store = open_tiered(
        dir.path(),
        tiered(backend.clone(), 10 << 20, Duration::ZERO),
    );
    assert_eq!(read_all(&store, &a_id), a);
    let before = store.tier_sizes().unwrap();
    assert!(before.cached_bytes < before.remote_bytes, "{before:?}");
    let step = store.tier_step().unwrap();
    assert!(!step.filled.is_empty(), "{step:?}");
    let after = store.tier_sizes().unwrap();
    assert_eq!(after.cached_bytes, after.remote_bytes, "{after:?}");
    assert_clean(&store);
}

#[test]
fn objects_the_index_does_not_know_are_swept_and_known_ones_stay() {
    let (_dir, backend, store) = fresh(0, Duration::from_secs(3600));
    let keep = text(150_000, 21);
    let keep_id = put(&store, &keep);
    let gone = put(&store, &bytes(150_000, 22));
    store.tier_step().unwrap();
    store.unlink(&gone).unwrap();
    store.gc().unwrap();
    let listed = backend.list("dc1/").unwrap();
    let prefix = listed[0].name.rsplit_once('/').unwrap().0.to_string();
    // What a crash between an upload and its mark leaves, once GC removed
    // the segment: an object of an id the index has never marked.
    let orphan = format!("{prefix}/000099999999.seg");
    backend.put_bytes(&orphan, b"orphan").unwrap();
    // Not a name this store writes: left alone.
    let foreign = format!("{prefix}/notes.txt");
    backend.put_bytes(&foreign, b"x").unwrap();
    let swept = store.sweep_orphans().unwrap();
    assert_eq!(swept, vec![orphan.clone()]);
    let after: Vec<_> = backend
        .list("dc1/")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(after.contains(&foreign));
    // Every remote and retired segment's object is still there.
    assert_eq!(after.len(), listed.len() + 1, "{after:?}");
    assert_eq!(read_all(&store, &keep_id), keep);
    assert_clean(&store);
}

#[test]
fn a_fill_in_progress_never_outlives_its_segment_nor_blocks_the_tier_step() {
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let keep = text(200_000, 31);
    let (keep_id, gone_id) = {
        let store = open_tiered(dir.path(), tiered(backend.clone(), 0, Duration::ZERO));
        let gone_id = put(&store, &bytes(200_000, 32));
        let keep_id = put(&store, &keep);
        store.tier_step().unwrap();
        (keep_id, gone_id)
    };
    let store = open_tiered(
        dir.path(),
        tiered(backend.clone(), 10 << 20, Duration::ZERO),
    );
    // Part of a file: its segments' fills start and stay partial.
    let mut part = Vec::new();
    std::io::Read::read_to_end(
        &mut store.open_range(&gone_id, 0, 120_000).unwrap(),
        &mut part,
    )
    .unwrap();
    assert_eq!(part.len(), 120_000);
    let fills = || {
        std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".fill")
            })
            .count()
    };
    assert!(fills() > 0);
    // Its segments retired and (no grace) their objects deleted: the fills
    // go with them and every later step succeeds.
    store.unlink(&gone_id).unwrap();
    store.gc().unwrap();
    store.tier_step().unwrap();
    store.tier_step().unwrap();
    assert_eq!(fills(), 0);
    assert_eq!(read_all(&store, &keep_id), keep);
    assert_clean(&store);
}

/// A cluster's writer publishes its index after every write. Each
/// publication once flushed RocksDB's memtables: one tiny table file per
/// column family, which RocksDB moves down without merging, so the index
/// grew by several files per publication (1,200 after a few hundred in
/// the failover soak) and every push and follower copy with it. The
/// backups now carry the write-ahead log instead: the table files stay
/// few, and a restore of the newest backup still has every write.
#[test]
fn the_index_stays_a_few_files_over_hundreds_of_publications() {
    let (dir, backend, store) = fresh(10 << 20, Duration::ZERO);
    let mut ids = Vec::new();
    for i in 0..300u64 {
        let id = put(&store, &bytes(3_000, 1000 + i));
        store.link(&id).unwrap();
        ids.push(id);
        store.push_index().unwrap();
    }
    store.upload_all().unwrap();
    store.push_index().unwrap();
    let tables = backend
        .list("dc1/")
        .unwrap()
        .into_iter()
        .filter(|o| o.name.contains("/index/") && o.name.ends_with(".sst"))
        .count();
    assert!(tables < 100, "{tables} table files after 300 publications");
    // Purged backups leave nothing behind, not even a directory.
    let private = std::fs::read_dir(dir.path().join("index-backup/private"))
        .unwrap()
        .count();
    let metas = std::fs::read_dir(dir.path().join("index-backup/meta"))
        .unwrap()
        .count();
    assert_eq!(private, metas, "a private dir per live backup only");
    drop(store);
    let new = tempfile::tempdir().unwrap();
    let dest = new.path().join("restored");
    imgstore::store::restore(&backend, "dc1/", None, &dest).unwrap();
    let store = open_tiered(&dest, tiered(backend.clone(), 10 << 20, Duration::ZERO));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(read_all(&store, id), bytes(3_000, 1000 + i as u64));
        assert_eq!(store.stat(id).unwrap().refs, 2);
    }
    assert_clean(&store);
}

/// A superseded writer that uploads into its old epoch's index directory
/// after the new writer's first push (it had not yet learnt it lost the
/// lease) leaves files nobody reads: the writer's orphan sweep deletes
/// them once its own backup is the pointer, and keeps its own.
#[test]
fn the_writer_sweeps_index_files_left_in_older_epochs() {
    let (_dir, backend, store) = fresh(10 << 20, Duration::ZERO);
    let lease = store.take_lease("writer", None, 60).unwrap().unwrap();
    assert!(lease.epoch >= 1, "{lease:?}");
    let id = put(&store, &bytes(50_000, 7));
    store.publish().unwrap();
    let base = format!("dc1/{}/index/", store.params().store_id);
    let late = [
        format!(
            "{base}e{}/shared_checksum/000009_LATE_5.sst",
            lease.epoch - 1
        ),
        format!("{base}e{}/meta/7", lease.epoch - 1),
        format!("{base}meta/3"),
    ];
    for name in &late {
        backend.put_bytes(name, b"late").unwrap();
    }
    let own_before: Vec<String> = index_objects(&backend, &base, lease.epoch);
    assert!(!own_before.is_empty());
    let swept = store.sweep_orphans().unwrap();
    for name in &late {
        assert!(swept.contains(name), "{name} not swept: {swept:?}");
    }
    assert_eq!(index_objects(&backend, &base, lease.epoch), own_before);
    // The bucket alone still rebuilds the store.
    drop(store);
    let new = tempfile::tempdir().unwrap();
    let dest = new.path().join("restored");
    imgstore::store::restore(&backend, "dc1/", None, &dest).unwrap();
    let store = open_tiered(&dest, tiered(backend.clone(), 10 << 20, Duration::ZERO));
    assert_eq!(read_all(&store, &id), bytes(50_000, 7));
}

fn index_objects(backend: &Arc<dyn ObjectBackend>, base: &str, epoch: u64) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list(&format!("{base}e{epoch}/"))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    names
}

#[test]
fn a_store_is_rebuilt_from_its_bucket_alone() {
    let backend = memory();
    let dir = tempfile::tempdir().unwrap();
    let a = text(250_000, 41);
    let b = bytes(120_000, 42);
    let (a_id, b_id) = {
        let store = open_tiered(
            dir.path(),
            tiered(backend.clone(), 10 << 20, Duration::ZERO),
        );
        let a_id = put(&store, &a);
        store.upload_all().unwrap();
        let first = store.push_index().unwrap();
        assert!(first.uploaded > 0, "{first:?}");
        let b_id = put(&store, &b);
        store.link(&b_id).unwrap();
        store.upload_all().unwrap();
        // Pushes after the first send only what is new; a push with
        // nothing new since the last sends nothing at all.
        let second = store.push_index().unwrap();
        assert!(second.uploaded > 0, "{second:?}");
        for _ in 0..3 {
            let idle = store.push_index().unwrap();
            assert_eq!(idle.uploaded, 0, "nothing changed: {idle:?}");
        }
        let metas = backend
            .list("dc1/")
            .unwrap()
            .into_iter()
            .filter(|o| o.name.contains("/index/") && o.name.contains("/meta/"))
            .count();
        assert_eq!(metas, 2, "one backup per change");
        (a_id, b_id)
    };
    // The disk is lost.
    drop(dir);
    let new = tempfile::tempdir().unwrap();
    let dest = new.path().join("restored");
    let r = imgstore::store::restore(&backend, "dc1/", None, &dest).unwrap();
    assert!(r.index_files > 0 && r.index_bytes > 0, "{r:?}");
    let store = open_tiered(&dest, tiered(backend.clone(), 10 << 20, Duration::ZERO));
    assert_eq!(read_all(&store, &a_id), a);
    assert_eq!(read_all(&store, &b_id), b);
    assert_eq!(store.stat(&b_id).unwrap().refs, 2);
    assert_clean(&store);
    // It goes on as a store: new data, uploads, another push.
    let c = put(&store, &text(50_000, 43));
    store.upload_all().unwrap();
    store.push_index().unwrap();
    assert_eq!(read_all(&store, &c).len(), 50_000);
    drop(store);
    // Restoring into a directory that holds something is refused; so is
    // a prefix with nothing in it.
    let err = imgstore::store::restore(&backend, "dc1/", None, &dest).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let err = imgstore::store::restore(&backend, "dc9/", None, &new.path().join("x")).unwrap_err();
    assert!(err.to_string().contains("no store"), "{err}");
}

/// `durability: "remote"`: an activated image survives the loss of the
/// data directory. The real daemon on SeaweedFS, kill -9, the directory
/// deleted, `imgstore store restore`, a daemon on the new directory serves
/// the image byte for byte, with its manifest and ACL.
#[test]
fn with_remote_durability_an_activated_image_survives_the_loss_of_the_disk() {
    let sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", crate::procs::free_port());
    let url = format!("http://{listen}");
    let write_config = |data: &std::path::Path| {
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec(&serde_json::json!({
                "listen": listen,
                "dataDir": data,
                "segmentBytes": 1 << 20,
                // The daemon on the rebuilt data dir waits for the killed
                // one's writer's lease to run out.
                "cluster": {"leaseSeconds": 3},
                "storage": {
                    "type": "s3",
                    "endpoint": sw.endpoint(),
                    "bucket": "images",
                    "prefix": "dc1/",
                    "accessKeyId": crate::seaweed::KEY,
                    "secretAccessKey": crate::seaweed::SECRET,
                    "cacheBytes": 1u64 << 30,
                    // Only the activation itself may put the image in the
                    // bucket: no timed seal, no timed push.
                    "sealAfterSeconds": 86400,
                    "indexPushSeconds": 0,
                    "durability": "remote"
                }
            }))
            .unwrap(),
        )
        .unwrap();
        config
    };
    let data = dir.path().join("data");
    let config = write_config(&data);
    let http = reqwest::blocking::Client::new();
    let daemon = crate::procs::start(&config, &url);
    let file = bytes(3 << 20, 51);
    let extra = serde_json::json!({"acl": [crate::daemon::BOB], "description": "kept"});
    let uuid = crate::daemon::create_image(
        &http,
        &url,
        crate::daemon::ALICE,
        "durable",
        extra,
        &file,
        true,
    );
    let manifest = |as_who: &str| {
        let r = http
            .get(format!("{url}/images/{uuid}?account={as_who}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().unwrap()
    };
    let before = manifest(crate::daemon::ALICE);
    assert_eq!(before["state"], "active");
    // The other way to an active image: an operator's UpdateImage with
    // `state`, on an image uploaded and never activated.
    let forced_file = bytes(2 << 20, 52);
    let forced = crate::daemon::create_image(
        &http,
        &url,
        crate::daemon::ALICE,
        "forced",
        serde_json::json!({}),
        &forced_file,
        false,
    );
    let r = http
        .post(format!("{url}/images/{forced}?action=update"))
        .json(&serde_json::json!({"state": "active"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    // The disk is lost the moment the activation answered.
    daemon.kill();
    std::fs::remove_dir_all(&data).unwrap();

    let restored = dir.path().join("restored");
    let config = write_config(&restored);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["store", "restore", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["index_files"].as_u64().unwrap() > 0, "{report}");

    let _daemon = crate::procs::start(&config, &url);
    assert_eq!(manifest(crate::daemon::ALICE), before);
    assert_eq!(manifest(crate::daemon::BOB)["uuid"], before["uuid"]);
    let file_of = |image: &str| {
        http.get(format!(
            "{url}/images/{image}/file?account={}",
            crate::daemon::ALICE
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
    };
    assert!(
        file_of(&uuid).as_ref() == file.as_slice(),
        "the restored file differs"
    );
    assert!(
        file_of(&forced).as_ref() == forced_file.as_slice(),
        "the restored file of the image an operator activated differs"
    );
    let verify = http
        .post(format!("{url}/state?action=verify"))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["files"], 2, "{verify}");
}

/// With local durability a backup may be pushed while a segment is still
/// local, and that segment be uploaded afterwards: the rebuilt store
/// reads it from the bucket, and its first orphan sweep leaves it alone.
#[test]
fn a_segment_uploaded_after_the_last_push_is_read_from_the_bucket_after_a_rebuild() {
    let (_dir, backend, store) = fresh(10 << 20, Duration::ZERO);
    let a = text(200_000, 81);
    let a_id = put(&store, &a);
    store.upload_all().unwrap();
    // b lands in the new active segment, local when the index is pushed.
    let b = bytes(150_000, 82);
    let b_id = put(&store, &b);
    store.push_index().unwrap();
    store.upload_all().unwrap();
    drop(store);
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().join("r");
    let r = imgstore::store::restore(&backend, "dc1/", None, &dest).unwrap();
    assert!(r.segments_found_in_bucket > 0, "{r:?}");
    let store = open_tiered(&dest, tiered(backend.clone(), 10 << 20, Duration::ZERO));
    assert_eq!(store.sweep_orphans().unwrap(), Vec::<String>::new());
    assert_eq!(read_all(&store, &a_id), a);
    assert_eq!(read_all(&store, &b_id), b);
    assert_clean(&store);
}

#[test]
fn an_object_the_newest_pushed_index_names_is_never_deleted() {
    let (_dir, backend, store) = fresh(0, Duration::ZERO);
    let keep = text(150_000, 61);
    let keep_id = put(&store, &keep);
    let gone = put(&store, &bytes(150_000, 62));
    store.upload_all().unwrap();
    store.push_index().unwrap();
    store.unlink(&gone).unwrap();
    store.gc().unwrap();
    let far = two_hours_from_now();
    // The grace period is over, but the backup in the bucket still names
    // the retired segments: their objects stay.
    assert_eq!(store.delete_retired(far).unwrap(), vec![]);
    assert!(store.tier_sizes().unwrap().retired_segments > 0);
    // A backup taken after the retirement (a second later: retirements
    // and backups are timed in seconds) lets them go.
    std::thread::sleep(Duration::from_millis(1100));
    store.upload_all().unwrap();
    store.push_index().unwrap();
    assert!(!store.delete_retired(far).unwrap().is_empty());
    assert_eq!(store.tier_sizes().unwrap().retired_segments, 0);
    drop(store);
    // And the restore of that backup has every byte.
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().join("r");
    imgstore::store::restore(&backend, "dc1/", None, &dest).unwrap();
    let store = open_tiered(&dest, tiered(backend.clone(), 0, Duration::ZERO));
    assert_eq!(read_all(&store, &keep_id), keep);
    assert_clean(&store);
}

#[test]
fn a_sampled_verify_reads_a_share_of_the_remote_segments_and_heads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let backend = memory();
    let d = text(400_000, 71);
    let id = uploaded(dir.path(), &backend, &d);
    let store = open_tiered(dir.path(), tiered(backend.clone(), 0, Duration::ZERO));
    assert_eq!(read_all(&store, &id), d);
    let none = store.verify_sampled(false, 0.0).unwrap();
    assert!(none.is_clean(), "{:?}", none.problems);
    assert_eq!(none.remote_segments_not_read, none.segments);
    assert_eq!(none.records_checked, 0);
    let all = store.verify_sampled(false, 1.0).unwrap();
    assert!(all.is_clean(), "{:?}", all.problems);
    assert_eq!(all.remote_segments_not_read, 0);
    assert!(all.bytes_checked >= d.len() as u64);
    // An object gone: even a verify that reads nothing remote finds it.
    let victim = backend.list("dc1/").unwrap().remove(0);
    backend.delete(&victim.name).unwrap();
    let none = store.verify_sampled(false, 0.0).unwrap();
    assert!(
        none.problems.iter().any(|p| p.kind == "missing_object"),
        "{:?}",
        none.problems
    );
    assert!(!store.verify(false).unwrap().is_clean());
}

/// The contract against any S3 server, by hand (Garage, MinIO, AWS), on
/// an empty bucket:
///
///     IMGSTORE_S3_ENDPOINT=http://127.0.0.1:3900 IMGSTORE_S3_BUCKET=b \
///     IMGSTORE_S3_REGION=garage AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
///     cargo nextest run --run-ignored only tier::any_s3_server
#[test]
#[ignore = "needs a server: IMGSTORE_S3_ENDPOINT, IMGSTORE_S3_BUCKET, credentials"]
fn any_s3_server_meets_the_backend_contract() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
    let config = imgstore::backend::S3Config {
        endpoint: var("IMGSTORE_S3_ENDPOINT"),
        bucket: var("IMGSTORE_S3_BUCKET"),
        region: std::env::var("IMGSTORE_S3_REGION")
            .unwrap_or_else(|_| imgstore::backend::S3Config::DEFAULT_REGION.into()),
        access_key_id: None,
        secret_access_key: None,
        request_timeout_seconds: 30,
        retries: 2,
    };
    let scratch = tempfile::tempdir().unwrap();
    let b = ObjectStoreBackend::s3(&config).unwrap();
    conformance::run(&b, "imgstore-conformance/", LARGE, scratch.path()).unwrap();
    // And a store on it, end to end.
    round_trip(Arc::new(b));
}

#[test]
fn a_local_directory_removes_what_a_crash_left_mid_put_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let b = LocalDir::new(root.path()).unwrap();
    b.put_bytes("dc1/x/kept.seg", b"kept").unwrap();
    let sub = root.path().join("dc1/x");
    let old = sub.join("gone.seg.part-1-1");
    let young = sub.join("busy.seg.part-2-1");
    std::fs::write(&old, b"torn").unwrap();
    std::fs::write(&young, b"in progress").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    drop(b);
    let b = LocalDir::new(root.path()).unwrap();
    assert!(!old.exists(), "a put a crash cut an hour ago is gone");
    assert!(young.exists(), "a put that may be in progress stays");
    assert_eq!(b.list("dc1/").unwrap().len(), 1);
}

/// A backend that can be cut off, as a bucket behind a broken link.
struct Cut {
    inner: Arc<dyn ObjectBackend>,
    down: std::sync::atomic::AtomicBool,
}

impl Cut {
    fn check(&self) -> imgstore::backend::BackendResult<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(imgstore::backend::BackendError::Failed {
                what: "the bucket".into(),
                source: "connection refused".into(),
            });
        }
        Ok(())
    }
}

impl ObjectBackend for Cut {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_file(&self, name: &str, path: &std::path::Path) -> imgstore::backend::BackendResult<()> {
        self.check()?;
        self.inner.put_file(name, path)
    }
    fn put_bytes(&self, name: &str, bytes: &[u8]) -> imgstore::backend::BackendResult<()> {
        self.check()?;
        self.inner.put_bytes(name, bytes)
    }
    fn read_at(
        &self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> imgstore::backend::BackendResult<()> {
        self.check()?;
        self.inner.read_at(name, offset, buf)
    }
    fn len(&self, name: &str) -> imgstore::backend::BackendResult<Option<u64>> {
        self.check()?;
        self.inner.len(name)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> imgstore::backend::BackendResult<Vec<imgstore::backend::ObjectInfo>> {
        self.check()?;
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> imgstore::backend::BackendResult<()> {
        self.check()?;
        self.inner.delete(name)
    }
}

#[test]
fn ingest_stops_with_a_clear_error_at_the_local_limit_while_the_bucket_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let cut = Arc::new(Cut {
        inner: memory(),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let backend: Arc<dyn ObjectBackend> = cut.clone();
    let store = open_tiered(
        dir.path(),
        StoreOptions {
            tier: Some(TierOptions {
                local_limit_bytes: 150_000,
                ..tiered(backend, 0, Duration::ZERO).tier.unwrap()
            }),
            ..small_options()
        },
    );
    // Below the limit, puts go on; the steps fail and nothing is evicted.
    let a = bytes(200_000, 81);
    let a_id = put(&store, &a);
    assert!(store.tier_step().is_err());
    // At the limit: refused, clearly, and nothing acknowledged is lost.
    let err = store.put(&bytes(10_000, 82)[..]).err().unwrap();
    assert!(
        matches!(err, imgstore::Error::Backlog { waiting, limit } if waiting >= limit),
        "{err}"
    );
    assert!(
        err.to_string().contains("wait for the object store"),
        "{err}"
    );
    assert_eq!(read_all(&store, &a_id), a);
    // The bucket is back: what waited uploads, and puts go on.
    cut.down.store(false, std::sync::atomic::Ordering::SeqCst);
    store.tier_step().unwrap();
    assert_eq!(store.tier_sizes().unwrap().local_bytes, 0);
    let b = bytes(10_000, 83);
    let b_id = put(&store, &b);
    assert_eq!(read_all(&store, &b_id), b);
    assert_eq!(read_all(&store, &a_id), a);
    assert_clean(&store);
}

/// The bucket's copy is what a restore reads: objects deleted, truncated
/// and damaged behind the daemon's back are found although every segment
/// still has a sound cached copy (length always, bytes with
/// `read_objects`), their files are named, and `repair` uploads the
/// cached copies again.
#[test]
fn verify_checks_the_buckets_copy_of_cached_segments_and_repair_uploads_it_again() {
    let (_dir, backend, store) = fresh(1 << 30, Duration::ZERO);
    let files: Vec<_> = (0..3)
        .map(|i| put(&store, &bytes(150_000, 90 + i)))
        .collect();
    store.tier_step().unwrap();
    let read = imgstore::store::VerifyOptions {
        read_objects: true,
        ..Default::default()
    };
    assert!(store.verify_with(read).unwrap().is_clean());
    let objects = backend.list("dc1/").unwrap();
    let segs: Vec<_> = objects
        .iter()
        .filter(|o| o.name.contains("/segments/"))
        .collect();
    assert!(segs.len() >= 3, "{objects:?}");
    // Deleted, truncated, one byte flipped.
    backend.delete(&segs[0].name).unwrap();
    let mut cut = vec![0u8; (segs[1].len - 100) as usize];
    backend.read_at(&segs[1].name, 0, &mut cut).unwrap();
    backend.put_bytes(&segs[1].name, &cut).unwrap();
    let mut flipped = vec![0u8; segs[2].len as usize];
    backend.read_at(&segs[2].name, 0, &mut flipped).unwrap();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    backend.put_bytes(&segs[2].name, &flipped).unwrap();

    // By length: the deleted and the truncated object.
    let quick = store.verify(false).unwrap();
    let bad: Vec<_> = quick
        .problems
        .iter()
        .filter(|p| p.kind == "bad_object")
        .collect();
    assert_eq!(bad.len(), 2, "{:?}", quick.problems);
    // By bytes: all three, each repairable from its sound cached copy,
    // and the files they hold are named.
    let full = store.verify_with(read).unwrap();
    let bad: Vec<_> = full
        .problems
        .iter()
        .filter(|p| p.kind == "bad_object")
        .collect();
    assert_eq!(bad.len(), 3, "{:?}", full.problems);
    assert!(bad.iter().all(|p| p.repairable), "{bad:?}");
    assert!(!full.damaged_files.is_empty(), "{full:?}");
    assert!(full.damaged_files.iter().all(|f| files.contains(f)));

    let repaired = store
        .verify_with(imgstore::store::VerifyOptions {
            repair: true,
            ..read
        })
        .unwrap();
    assert!(repaired.is_clean(), "{:?}", repaired.problems);
    let after = store.verify_with(read).unwrap();
    assert!(after.is_clean(), "{:?}", after.problems);
    for s in &segs {
        let mut back = vec![0u8; s.len as usize];
        backend.read_at(&s.name, 0, &mut back).unwrap();
    }
}
