//! The scale of metadata: a store with many images (100,000 of 20 accounts
//! by default, small files) served by the real daemon binary. Measures how
//! long the daemon takes to answer its first ping, GetImage and ListImages
//! latencies (one page; with and without filters), the daemon's RSS, and
//! DeleteImage latency against the full table decode it used to do.
//!
//!     cargo build && cargo bench --profile dev --bench metadata
//!
//! `IMGSTORE_BENCH_IMAGES=N` sets the number of images;
//! `IMGSTORE_BIN` the daemon binary (default: `imgstore` beside the bench).

use std::process::Child;
use std::time::Instant;

use imgstore::imgapi::{self, Images};
use imgstore::{Store, StoreOptions};
use serde_json::Value;
use uuid::Uuid;

mod common;

const ACCOUNTS: u64 = 20;

fn main() {
    let n: u64 = common::env_num("IMGSTORE_BENCH_IMAGES", 100_000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    common::build_images(dir.path(), n, ACCOUNTS);
    println!(
        "built {n} images of {ACCOUNTS} accounts in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let listen = format!("127.0.0.1:{}", common::free_port());
    let url = format!("http://{listen}");
    let http = reqwest::blocking::Client::new();
    let start = |what: &str| -> Child {
        let t = Instant::now();
        let child = common::spawn_daemon(
            &[
                "serve".as_ref(),
                "--listen".as_ref(),
                listen.as_ref(),
                "--data-dir".as_ref(),
                dir.path().as_os_str(),
            ],
            &[format!("{url}/ping")],
        );
        println!(
            "daemon start to first ping, {what}: {:.3} s",
            t.elapsed().as_secs_f64()
        );
        child
    };
    // The first start builds the origin index of a store the engine wrote.
    let mut child = start("first (builds the origin index)");
    let _ = child.kill();
    let _ = child.wait();
    let mut child = start("again");

    let time = |path: &str| -> (f64, usize) {
        let t = Instant::now();
        let r = http
            .get(format!("{url}{path}"))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        // The clock stops with the body read: decoding it is the client's.
        let bytes = r.bytes().unwrap_or_else(|e| panic!("{e}"));
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        (ms, body.as_array().map_or(1, Vec::len))
    };
    let mut get = Vec::new();
    for k in 0..2000u64 {
        let i = (k * 7919) % n;
        let (ms, _) = time(&format!(
            "/images/{}?account={}",
            Uuid::from_u128(u128::from(i) + 1),
            common::account(i % ACCOUNTS)
        ));
        get.push(ms);
    }
    println!(
        "GetImage: p50 {:.2} ms, p99 {:.2} ms",
        common::percentile(get.clone(), 0.5),
        common::percentile(get, 0.99)
    );
    let a = common::account(3);
    for (what, q) in [
        ("no filter", format!("account={a}")),
        ("name", format!("account={a}&name=svc-43")),
        ("os+type", format!("account={a}&os=linux&type=zvol")),
        ("state=all, operator", "state=all".to_string()),
        (
            "marker page",
            format!("account={a}&marker=2023-11-15T00:00:00.000Z"),
        ),
    ] {
        let mut lat = Vec::new();
        let mut count = 0;
        for _ in 0..100 {
            let (ms, c) = time(&format!("/images?{q}"));
            lat.push(ms);
            count = c;
        }
        println!(
            "ListImages {what}: {count} images a page, p50 {:.1} ms, p99 {:.1} ms",
            common::percentile(lat.clone(), 0.5),
            common::percentile(lat, 0.99)
        );
    }
    println!(
        "daemon RSS: {:.0} MiB now, {:.0} MiB peak",
        common::proc_status(child.id(), "VmRSS:") / 1024.0,
        common::proc_status(child.id(), "VmHWM:") / 1024.0
    );
    // DeleteImage finds dependents in the origin index; before it, every
    // delete decoded the whole images table under the commit lock.
    let mut del = Vec::new();
    for k in 0..100u64 {
        let i = (k * 7919 + 13) % n;
        let t = Instant::now();
        let r = http
            .delete(format!(
                "{url}/images/{}?account={}",
                Uuid::from_u128(u128::from(i) + 1),
                common::account(i % ACCOUNTS)
            ))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 204, "delete {i}");
        del.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "DeleteImage: p50 {:.2} ms, p99 {:.2} ms",
        common::percentile(del.clone(), 0.5),
        common::percentile(del, 0.99)
    );
    let _ = child.kill();
    let _ = child.wait();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            tables: imgapi::TABLES.to_vec(),
            ..StoreOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let all = store
        .scan_all::<Images>(&[])
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "decoding every image record (what each delete did before the index): {:.1} ms for {}",
        t.elapsed().as_secs_f64() * 1000.0,
        all.len()
    );
}
