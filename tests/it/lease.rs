//! The writer's lease in the bucket (real SeaweedFS, real daemons): a
//! second daemon on the same store is refused while the first renews its
//! lease; after a kill -9 the lease runs out and another takes it; a
//! writer stopped past its lease (SIGSTOP) and resumed finds itself fenced
//! and writes nothing more.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::bytes;
use crate::daemon::{ALICE, create_image, sj};
use crate::procs::{Proc, free_port, start};
use crate::seaweed::Seaweed;

fn config(dir: &std::path::Path, name: &str, endpoint: &str) -> (std::path::PathBuf, String) {
    let port = free_port();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({
            "listen": format!("127.0.0.1:{port}"),
            "dataDir": dir.join(name),
            "storage": {
                "type": "s3", "endpoint": endpoint, "bucket": "images", "prefix": "dc1/",
                "accessKeyId": crate::seaweed::KEY, "secretAccessKey": crate::seaweed::SECRET,
                "durability": "remote", "indexPushSeconds": 0, "requestTimeoutSeconds": 5,
                "retries": 1
            },
            "cluster": {"advertiseUrl": format!("http://127.0.0.1:{port}"), "leaseSeconds": 3}
        }))
        .unwrap(),
    )
    .unwrap();
    (path, format!("http://127.0.0.1:{port}"))
}

/// `imgstore store restore --config CONFIG`: a data dir from the bucket.
fn restore(config: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["store", "restore", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `imgstore serve` that is expected to be refused: its status and stderr.
fn refused(config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second writer started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn one_writer_per_store_a_second_is_refused_a_dead_one_replaced_a_stopped_one_fenced() {
    let sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let (a_cfg, a_url) = config(dir.path(), "a", &sw.endpoint());
    let (b_cfg, b_url) = config(dir.path(), "b", &sw.endpoint());
    let http = reqwest::blocking::Client::new();
    let a = start(&a_cfg, &a_url);
    let data = bytes(300_000, 5);
    let uuid = create_image(&http, &a_url, ALICE, "leased", json!({}), &data, true);
    // B is the same store, rebuilt from the bucket beside the running A.
    restore(&b_cfg);
    let err = refused(&b_cfg);
    assert!(
        err.contains("another daemon holds the writer's lease"),
        "{err}"
    );
    assert!(err.contains(&a_url), "the holder's address is named: {err}");

    // A dies: its lease runs out, B takes it (epoch 2) and serves.
    a.kill();
    let b = start(&b_cfg, &b_url);
    let (s, img) = sj(http.get(format!("{b_url}/images/{uuid}")).send().unwrap());
    assert_eq!((s, img["state"].clone()), (200, json!("active")), "{img}");
    let second = create_image(
        &http,
        &b_url,
        ALICE,
        "by-b",
        json!({}),
        &bytes(1000, 6),
        true,
    );

    // B stopped past its lease. A's old data dir is refused: its index is
    // older than what B pushed. A data dir rebuilt from the bucket (C)
    // takes over, with B's image.
    signal(&b, "-STOP");
    let err = refused(&a_cfg);
    assert!(err.contains("older than the one"), "{err}");
    let (c_cfg, c_url) = config(dir.path(), "c", &sw.endpoint());
    restore(&c_cfg);
    let c = start(&c_cfg, &c_url);
    let (s, img) = sj(http.get(format!("{c_url}/images/{second}")).send().unwrap());
    assert_eq!(s, 200, "what B acknowledged is there: {img}");
    signal(&b, "-CONT");
    // B may not write any more: it finds its lease ran out, and taken.
    let start_wait = Instant::now();
    let (s, body) = loop {
        let r = sj(http
            .post(format!("{b_url}/images?account={ALICE}"))
            .json(&json!({"name": "late", "version": "1", "type": "other", "os": "other"}))
            .send()
            .unwrap());
        if r.0 != 200 || start_wait.elapsed() > Duration::from_secs(30) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["code"], "StorageIsDown", "{body}");
    // C writes on.
    create_image(
        &http,
        &c_url,
        ALICE,
        "by-c",
        json!({}),
        &bytes(1000, 7),
        true,
    );
    drop(c);
}
