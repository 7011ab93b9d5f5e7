//! What `v2` (an upgraded `v1`) adds for chunker parameters, without a
//! store: chunk both files, name every chunk, and count the bytes of `v2`'s
//! chunks that `v1` does not have (uncompressed, and compressed with zstd
//! at the store's level as a record would be), with the chunking speed.
//!
//!     IMGSTORE_BENCH_DATA=/tmp/peerdata/data/v1.tar \
//!     IMGSTORE_BENCH_DATA_V2=/tmp/peerdata/data/v2.tar \
//!     IMGSTORE_BENCH_CHUNKERS=16384:65536:262144:2,8192:65536:262144:1 \
//!     cargo bench --profile dev --bench dedup
//!
//! Each chunker is `min:avg:max:nc`. Without the data variables it prints
//! how to run and exits.

use std::collections::HashSet;
use std::time::Instant;

use imgstore::{ChunkId, ChunkerParams};

fn parse(spec: &str) -> Option<ChunkerParams> {
    let v: Vec<u32> = spec.split(':').filter_map(|x| x.parse().ok()).collect();
    match v.as_slice() {
        [min, avg, max, nc] => Some(ChunkerParams {
            min: *min,
            avg: *avg,
            max: *max,
            nc: u8::try_from(*nc).ok()?,
        }),
        _ => None,
    }
}

fn main() {
    let (Ok(v1), Ok(v2)) = (
        std::env::var("IMGSTORE_BENCH_DATA"),
        std::env::var("IMGSTORE_BENCH_DATA_V2"),
    ) else {
        eprintln!(
            "dedup: set IMGSTORE_BENCH_DATA and IMGSTORE_BENCH_DATA_V2 (see the file's docs)"
        );
        return;
    };
    let v1 = std::fs::read(&v1).unwrap_or_else(|e| panic!("{v1}: {e}"));
    let v2 = std::fs::read(&v2).unwrap_or_else(|e| panic!("{v2}: {e}"));
    let level: i32 = std::env::var("IMGSTORE_BENCH_LEVEL")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(1);
    let specs =
        std::env::var("IMGSTORE_BENCH_CHUNKERS").unwrap_or_else(|_| "16384:65536:262144:2".into());
    println!(
        "min\tavg\tmax\tnc\tcut_MB/s\tchunks_v1\tavg_chunk\tadded_v2_raw\tadded_v2_stored\tstored_v1_est"
    );
    for spec in specs.split(',') {
        let Some(p) = parse(spec) else {
            eprintln!("dedup: bad chunker {spec:?} (min:avg:max:nc)");
            continue;
        };
        if let Err(e) = p.validate() {
            eprintln!("dedup: {e}");
            continue;
        }
        let mut z = zstd::bulk::Compressor::new(level).unwrap_or_else(|e| panic!("{e}"));
        let stored = |z: &mut zstd::bulk::Compressor<'_>, c: &[u8]| -> u64 {
            let n = z.compress(c).map(|v| v.len()).unwrap_or(c.len());
            // The store keeps a chunk raw unless compression saves 1/32.
            56 + if n + n / 32 < c.len() { n } else { c.len() } as u64
        };
        let t = Instant::now();
        let mut n1 = 0u64;
        p.for_each_chunk(&v1, |_| n1 += 1);
        let cut_rate = v1.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
        let mut have: HashSet<ChunkId> = HashSet::new();
        let mut stored_v1 = 0u64;
        p.for_each_chunk(&v1, |c| {
            if have.insert(ChunkId::of(c)) {
                stored_v1 += stored(&mut z, c);
            }
        });
        let (mut raw, mut st) = (0u64, 0u64);
        p.for_each_chunk(&v2, |c| {
            if have.insert(ChunkId::of(c)) {
                raw += c.len() as u64;
                st += stored(&mut z, c);
            }
        });
        println!(
            "{}\t{}\t{}\t{}\t{cut_rate:.0}\t{n1}\t{}\t{raw}\t{st}\t{stored_v1}",
            p.min,
            p.avg,
            p.max,
            p.nc,
            v1.len() as u64 / n1.max(1),
        );
    }
}
