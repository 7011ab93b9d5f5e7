//! Read throughput with every chunk's CRC checked and decompressed.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgstore::Store;

mod common;

fn read(c: &mut Criterion) {
    let (source, data) = common::compressible(common::bench_mb() << 20);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let id = store
        .put(&data[..])
        .unwrap_or_else(|e| panic!("{e}"))
        .file_id;
    let random = common::incompressible(data.len());
    let rid = store
        .put(&random[..])
        .unwrap_or_else(|e| panic!("{e}"))
        .file_id;
    let mut g = c.benchmark_group("read");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (name, id) in [
        (format!("compressed ({source})"), id),
        ("raw".to_string(), rid),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut r = store.open_file(&id).unwrap_or_else(|e| panic!("{e}"));
                std::io::copy(&mut r, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
