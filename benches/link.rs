//! Link latency: the same for a 4 MiB and a 1 GiB file, because a link
//! writes one key. `IMGSTORE_BENCH_LINK_MB` sets the large size (default 1024).

use criterion::{Criterion, criterion_group, criterion_main};
use imgstore::Store;

mod common;

fn link(c: &mut Criterion) {
    let large_mb = std::env::var("IMGSTORE_BENCH_LINK_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024usize);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("link");
    for mb in [4usize, large_mb] {
        let data = common::incompressible(mb << 20);
        let id = store
            .put(&data[..])
            .unwrap_or_else(|e| panic!("{e}"))
            .file_id;
        drop(data);
        g.bench_function(format!("link {mb} MiB"), |b| {
            b.iter(|| store.link(&id).unwrap_or_else(|e| panic!("{e}")))
        });
        g.bench_function(format!("link+unlink {mb} MiB"), |b| {
            b.iter(|| {
                store.link(&id).unwrap_or_else(|e| panic!("{e}"));
                store.unlink(&id).unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, link);
criterion_main!(benches);
