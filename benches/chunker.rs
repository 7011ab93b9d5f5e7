//! Chunker throughput and the chunk-size distribution at several averages.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgstore::ChunkerParams;

mod common;

fn chunker(c: &mut Criterion) {
    let (source, data) = common::compressible(common::bench_mb().min(256) << 20);
    let mut g = c.benchmark_group(format!("chunker ({source})"));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for avg in [16 * 1024, 64 * 1024, 256 * 1024] {
        let p = ChunkerParams::with_average(avg);
        let mut n = 0usize;
        p.for_each_chunk(&data, |_| n += 1);
        eprintln!(
            "avg {avg}: {n} chunks, mean {} bytes",
            data.len() / n.max(1)
        );
        g.bench_function(format!("cut avg {}KiB", avg / 1024), |b| {
            b.iter(|| {
                let mut n = 0usize;
                p.for_each_chunk(&data, |_| n += 1);
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, chunker);
criterion_main!(benches);
