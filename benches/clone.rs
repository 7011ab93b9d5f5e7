//! CloneImage latency over loopback HTTP for a small and a large image, each
//! on a 3-deep chain: a clone links, so both cost the same.
//! `IMGSTORE_BENCH_CLONE_MB` sets the large size (default 4096).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use imgstore::daemon::{self, DaemonConfig};
use imgstore::http::AppState;
use imgstore::service::Logger;
use reqwest::blocking::{Body, Client};
use serde_json::{Value, json};

const ALICE: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const BOB: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

/// Pseudo-random bytes generated on the fly (no 4 GiB buffer).
struct Noise {
    left: u64,
    s: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 {
            self.left.min(buf.len() as u64) as usize
        } else {
            n
        };
        for c in buf[..n].chunks_mut(8) {
            self.s ^= self.s << 13;
            self.s ^= self.s >> 7;
            self.s ^= self.s << 17;
            let b = self.s.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn start(dir: &std::path::Path) -> (String, Arc<AppState>, tokio::runtime::Runtime) {
    let cfg = DaemonConfig {
        data_dir: dir.to_path_buf(),
        ..DaemonConfig::default()
    };
    let state = cfg.open(Logger::sink()).unwrap_or_else(|e| panic!("{e}"));
    let rt = cfg.runtime().unwrap_or_else(|e| panic!("{e}"));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    rt.spawn(daemon::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (url, state, rt)
}

fn image(c: &Client, url: &str, origin: Option<&str>, size: u64, seed: u64) -> String {
    let mut body =
        json!({"name": "layer", "version": "1", "type": "zone-dataset", "os": "smartos"});
    if let Some(o) = origin {
        body["origin"] = json!(o);
    }
    let img: Value = c
        .post(format!("{url}/images?account={ALICE}"))
        .json(&body)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{e}"));
    let uuid = img["uuid"].as_str().unwrap_or_default().to_string();
    let noise = Noise {
        left: size,
        s: seed | 1,
    };
    let r = c
        .put(format!("{url}/images/{uuid}/file?compression=none"))
        .body(Body::sized(noise, size))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    c.post(format!("{url}/images/{uuid}?action=activate"))
        .json(&json!({}))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    uuid
}

fn clone(c: &mut Criterion) {
    let large_mb: u64 = std::env::var("IMGSTORE_BENCH_CLONE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (url, _state, _rt) = start(dir.path());
    let http = Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("clone");
    for mb in [4u64, large_mb] {
        let a = image(&http, &url, None, 1 << 20, mb);
        let b = image(&http, &url, Some(&a), 1 << 20, mb + 1);
        let top = image(&http, &url, Some(&b), mb << 20, mb + 2);
        http.post(format!("{url}/images/{top}/acl?account={ALICE}"))
            .json(&json!([BOB]))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        let do_clone = || {
            let r = http
                .post(format!("{url}/images/{top}/clone?account={BOB}"))
                .json(&json!({}))
                .send()
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status(), 200);
        };
        // Percentiles from plain samples, beside criterion's estimate.
        let mut samples: Vec<Duration> = (0..300)
            .map(|_| {
                let t = Instant::now();
                do_clone();
                t.elapsed()
            })
            .collect();
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        eprintln!(
            "clone of a {mb} MiB image on a 3-deep chain: p50 {:?}, p99 {:?}, max {:?}",
            pct(0.5),
            pct(0.99),
            samples[samples.len() - 1]
        );
        g.bench_function(format!("clone {mb} MiB (3-deep chain)"), |bch| {
            bch.iter(do_clone)
        });
    }
    g.finish();
}

criterion_group!(benches, clone);
criterion_main!(benches);
