//! Receiving a file as a chunk diff, every chunk verified (CRC, BLAKE3),
//! records appended as stored, the whole file checked (size, SHA-1,
//! BLAKE3, MD5) before commit: from a local source into an empty store, and
//! into a store that already holds most of it.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgstore::Store;
use imgstore::transfer::{Expect, LocalSource, Progress, ReceiveOptions, receive_file};

mod common;

fn transfer(c: &mut Criterion) {
    let (name, data) = common::compressible(common::bench_mb() << 20);
    let src_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let src = Store::open(src_dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let id = src.put(&data[..]).unwrap_or_else(|e| panic!("{e}")).file_id;
    // The same data with a 1 MiB insertion in the middle: an update.
    let mut edited = data.clone();
    edited.splice(
        data.len() / 2..data.len() / 2,
        common::incompressible(1 << 20),
    );
    let id2 = src
        .put(&edited[..])
        .unwrap_or_else(|e| panic!("{e}"))
        .file_id;
    let opts = ReceiveOptions::default();
    let mut g = c.benchmark_group("transfer");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(format!("full copy ({name})"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                let dst = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
                let source = LocalSource::new(src.clone(), id).unwrap_or_else(|e| panic!("{e}"));
                let t = Instant::now();
                receive_file(
                    &dst,
                    &source,
                    &[1; 16],
                    &Expect::default(),
                    &Progress::default(),
                    &opts,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                total += t.elapsed();
            }
            total
        })
    });
    g.throughput(Throughput::Bytes(edited.len() as u64));
    g.bench_function(format!("update onto the previous version ({name})"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                let dst = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
                let first = LocalSource::new(src.clone(), id).unwrap_or_else(|e| panic!("{e}"));
                receive_file(
                    &dst,
                    &first,
                    &[1; 16],
                    &Expect::default(),
                    &Progress::default(),
                    &opts,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let second = LocalSource::new(src.clone(), id2).unwrap_or_else(|e| panic!("{e}"));
                let progress = Progress::default();
                let t = Instant::now();
                receive_file(
                    &dst,
                    &second,
                    &[2; 16],
                    &Expect::default(),
                    &progress,
                    &opts,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                total += t.elapsed();
                let r = progress.report();
                assert!(r.bytes_fetched < 4 << 20, "{r:?}");
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
