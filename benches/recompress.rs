//! Recompression of cold segments: the same data put into two stores at
//! ingest's level, then rewritten at a denser level by the operator's
//! command (`Store::recompress`, every segment at once) in one and by the
//! daemon's background pass (`Store::recompress_step`, one segment a step)
//! in the other. Prints stored bytes before and after, the time each took,
//! and that a second background pass finds nothing left to do.
//!
//!     cargo bench --profile dev --bench recompress
//!
//! After the operator's pass it reads the file back and compares with one
//! thread of `zstd -d` on the same bytes. `IMGSTORE_BACKGROUND=0` skips
//! the background store.
//!
//! `IMGSTORE_BENCH_DATA=FILE` (e.g. the peer dataset's v1.tar) and
//! `IMGSTORE_BENCH_MB` pick the data; `IMGSTORE_RECOMPRESS_LEVEL` the level
//! (default the store's); `IMGSTORE_DROP_CACHES=1` (as root) drops the page
//! cache before the second pass.

use std::time::{Duration, Instant};

use imgstore::store::ColdMemo;
use imgstore::{Store, StoreOptions};

mod common;

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Reading the recompressed file back (as `imgstore store cat` does: the
/// store's reader, into a sink), best of three, against one thread of
/// zstd decompressing the same bytes compressed at zstd's default level 3
/// (what `zstd -d` does with a `.zst` of the file) in the same run.
fn reads_against_zstd(store: &Store, id: &imgstore::FileId, data: &[u8]) {
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let read = best(&|| {
        let mut r = store.open_file(id).unwrap_or_else(|e| panic!("{e}"));
        std::io::copy(&mut r, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    });
    let frame = zstd::bulk::compress(data, 3).unwrap_or_else(|e| panic!("{e}"));
    let zstd_d = best(&|| {
        let mut d = zstd::stream::read::Decoder::new(&frame[..]).unwrap_or_else(|e| panic!("{e}"));
        std::io::copy(&mut d, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    });
    let len = data.len() as u64;
    println!(
        "read {:.0} MB/s; one-thread zstd -d of a zstd-3 frame {:.0} MB/s; ratio {:.2}x",
        mb(len) / read,
        mb(len) / zstd_d,
        zstd_d / read
    );
}

fn main() {
    let level: i32 = std::env::var("IMGSTORE_RECOMPRESS_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(imgstore::store::DEFAULT_RECOMPRESS_LEVEL);
    let len = common::bench_len();
    let (source, data) = common::compressible(len);
    println!(
        "data: {source}, {:.1} MB; recompression at zstd {level}",
        mb(data.len() as u64)
    );
    let open = |dir: &std::path::Path| {
        Store::open_with(dir, StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    };
    let put = |store: &Store| {
        store
            .put(&data[..])
            .unwrap_or_else(|e| panic!("{e}"))
            .file_id
    };
    let stored = |store: &Store| store.size().unwrap_or_else(|e| panic!("{e}")).stored_bytes;

    let offline_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let offline = open(offline_dir.path());
    let id = put(&offline);
    let before = stored(&offline);
    print!("before recompression: ");
    reads_against_zstd(&offline, &id, &data);
    let t = Instant::now();
    let r = offline.recompress(level).unwrap_or_else(|e| panic!("{e}"));
    let offline_secs = t.elapsed().as_secs_f64();
    println!(
        "operator's recompress: {:.1} MB -> {:.1} MB ({:.1} %) in {offline_secs:.1} s, {:.0} MB/s of input",
        mb(before),
        mb(stored(&offline)),
        100.0 * stored(&offline) as f64 / before as f64,
        mb(data.len() as u64) / offline_secs
    );
    assert_eq!(r.level, level);
    let st = offline.stats().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "after: {:.1} MB of segments + {:.1} MB of index = {:.1} MB; {} of {} live chunks in groups",
        mb(st.stored_bytes),
        mb(st.index_bytes),
        mb(st.stored_bytes + st.index_bytes),
        st.grouped_chunks,
        st.live_chunks
    );
    print!("after recompression: ");
    reads_against_zstd(&offline, &id, &data);
    drop((offline, id));

    if std::env::var("IMGSTORE_BACKGROUND").as_deref() == Ok("0") {
        return;
    }
    let bg_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bg = open(bg_dir.path());
    let id = put(&bg);
    let before = stored(&bg);
    let mut memo = ColdMemo::default();
    let t = Instant::now();
    let mut steps = 0;
    while bg
        .recompress_step(level, Duration::ZERO, &mut memo)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some()
    {
        steps += 1;
    }
    let bg_secs = t.elapsed().as_secs_f64();
    println!(
        "background pass: {:.1} MB -> {:.1} MB ({:.1} %) in {steps} steps, {bg_secs:.1} s ({:.2}x the operator's time)",
        mb(before),
        mb(stored(&bg)),
        100.0 * stored(&bg) as f64 / before as f64,
        bg_secs / offline_secs
    );
    // IMGSTORE_DROP_CACHES=1 (root): the second pass looks with a cold page
    // cache, as a daemon restarted long after would.
    if std::env::var("IMGSTORE_DROP_CACHES").is_ok() {
        let _ = std::process::Command::new("sync").status();
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
            println!("(page cache not dropped: {e})");
        }
    }
    let t = Instant::now();
    let mut again = 0;
    let mut fresh = ColdMemo::default();
    while bg
        .recompress_step(level, Duration::ZERO, &mut fresh)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some()
    {
        again += 1;
    }
    println!(
        "second background pass (a restarted daemon): {again} steps, {:.1} s to look",
        t.elapsed().as_secs_f64()
    );
    let mut back = Vec::new();
    std::io::Read::read_to_end(
        &mut bg.open_file(&id).unwrap_or_else(|e| panic!("{e}")),
        &mut back,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(back == data, "the file reads back the same");
}
