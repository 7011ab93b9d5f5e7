//! The measurement behind the default chunk size and zstd level: for each
//! (average chunk size, zstd level), put `v1` into an empty store and then
//! `v2` (an upgraded `v1`), and report speed, stored bytes and what `v2` added.
//!
//!     IMGSTORE_BENCH_DATA=/tmp/peerdata/data/v1.tar \
//!     IMGSTORE_BENCH_DATA_V2=/tmp/peerdata/data/v2.tar \
//!     cargo bench --profile dev --bench chunk_size
//!
//! `IMGSTORE_BENCH_COMBOS=65536:3,262144:3` picks the combinations.
//! Without the data variables it prints how to run and exits.

use std::time::Instant;

use imgstore::{ChunkerParams, Store, StoreOptions};

fn main() {
    let (Ok(v1), Ok(v2)) = (
        std::env::var("IMGSTORE_BENCH_DATA"),
        std::env::var("IMGSTORE_BENCH_DATA_V2"),
    ) else {
        eprintln!(
            "chunk_size: set IMGSTORE_BENCH_DATA and IMGSTORE_BENCH_DATA_V2 (see the file's docs)"
        );
        return;
    };
    let combos = std::env::var("IMGSTORE_BENCH_COMBOS")
        .unwrap_or_else(|_| "16384:3,65536:1,65536:3,262144:3,1048576:3".into());
    let v1_len = std::fs::metadata(&v1).map(|m| m.len()).unwrap_or(1);
    let v2_len = std::fs::metadata(&v2).map(|m| m.len()).unwrap_or(1);
    println!(
        "avg_KiB\tzstd\tput_v1_MB/s\tstored_v1\tv1_ratio\tput_v2_MB/s\tadded_v2\tadded_v2_pct\tchunks_v2"
    );
    for combo in combos.split(',') {
        let mut it = combo.split(':');
        let avg: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(65536);
        let level: i32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(3);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open_with(
            dir.path(),
            StoreOptions {
                chunker: ChunkerParams::with_average(avg),
                zstd_level: level,
                ..StoreOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let put = |path: &str| {
            let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let t = Instant::now();
            let r = store.put(f).unwrap_or_else(|e| panic!("{e}"));
            (t.elapsed().as_secs_f64(), r)
        };
        let (t1, _) = put(&v1);
        let s1 = store.stats().unwrap_or_else(|e| panic!("{e}"));
        let (t2, r2) = put(&v2);
        let s2 = store.stats().unwrap_or_else(|e| panic!("{e}"));
        let added = s2.live_stored_bytes - s1.live_stored_bytes;
        println!(
            "{}\t{}\t{:.0}\t{}\t{:.2}\t{:.0}\t{}\t{:.1}\t{}",
            avg / 1024,
            level,
            v1_len as f64 / 1e6 / t1,
            s1.live_stored_bytes,
            v1_len as f64 / s1.live_stored_bytes as f64,
            v2_len as f64 / 1e6 / t2,
            added,
            100.0 * added as f64 / v2_len as f64,
            r2.chunk_count
        );
    }
}
