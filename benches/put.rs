//! Put throughput end to end (read, chunk, hash, compress, append, fsync,
//! index): new compressible data, new incompressible data, duplicate data.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgstore::Store;

mod common;

fn fresh_put(data: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        store.put(data).unwrap_or_else(|e| panic!("{e}"));
        total += t.elapsed();
    }
    total
}

fn put(c: &mut Criterion) {
    let len = common::bench_mb() << 20;
    let (source, text) = common::compressible(len);
    let random = common::incompressible(len);
    let mut g = c.benchmark_group("put");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function(format!("new compressible ({source})"), |b| {
        b.iter_custom(|iters| fresh_put(&text, iters))
    });
    g.throughput(Throughput::Bytes(random.len() as u64));
    g.bench_function("new incompressible", |b| {
        b.iter_custom(|iters| fresh_put(&random, iters))
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let first = store.put(&text[..]).unwrap_or_else(|e| panic!("{e}"));
    let stats = store.stats().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{source}: {} bytes in {} chunks stored as {} bytes (ratio {:.2})",
        first.size,
        first.chunk_count,
        stats.live_stored_bytes,
        first.size as f64 / stats.live_stored_bytes.max(1) as f64
    );
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function(format!("duplicate ({source})"), |b| {
        b.iter(|| store.put(&text[..]).unwrap_or_else(|e| panic!("{e}")))
    });
    g.finish();
}

criterion_group!(benches, put);
criterion_main!(benches);
