//! With `"durability": "remote"` a change that makes an image available
//! (an activation, a clone) is done only once the bucket holds it: with the
//! real SeaweedFS stopped (SIGSTOP) mid-request the answer is 503
//! `StorageIsDown`, the image stays as it was, and the same request
//! succeeds once the bucket answers again. A bucket that cannot be used is
//! found at start.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::{ALICE, BOB, create_image, sj};
use crate::seaweed::Seaweed;

fn config(dir: &std::path::Path, listen: &str, endpoint: &str, bucket: &str) -> std::path::PathBuf {
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({
            "listen": listen,
            "dataDir": dir.join("data"),
            "segmentBytes": 1 << 20,
            "storage": {
                "type": "s3",
                "endpoint": endpoint,
                "bucket": bucket,
                "prefix": "dc1/",
                "accessKeyId": crate::seaweed::KEY,
                "secretAccessKey": crate::seaweed::SECRET,
                "sealAfterSeconds": 86400,
                "indexPushSeconds": 0,
                "requestTimeoutSeconds": 2,
                "retries": 1,
                "durability": "remote"
            }
        }))
        .unwrap(),
    )
    .unwrap();
    path
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn state_of(http: &reqwest::blocking::Client, url: &str, uuid: &str) -> Value {
    let (s, img) = sj(http
        .get(format!("{url}/images/{uuid}?account={ALICE}"))
        .send()
        .unwrap());
    assert_eq!(s, 200, "{img}");
    img["state"].clone()
}

fn tier_errors(http: &reqwest::blocking::Client, url: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("imgstore_tier_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn activations_and_clones_with_the_bucket_stopped_are_not_done_and_their_retries_are() {
    let sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", crate::procs::free_port());
    let url = format!("http://{listen}");
    let cfg = config(dir.path(), &listen, &sw.endpoint(), "images");
    let _daemon = crate::procs::start(&cfg, &url);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let images: Vec<String> = (0..3)
        .map(|i| {
            create_image(
                &http,
                &url,
                ALICE,
                &format!("d{i}"),
                json!({}),
                &bytes(300_000, 60 + i),
                false,
            )
        })
        .collect();
    let shared = create_image(
        &http,
        &url,
        ALICE,
        "shared",
        json!({"acl": [BOB]}),
        &bytes(200_000, 70),
        true,
    );

    signal(sw.pid(), "-STOP");
    // Concurrent activations share one publication: each fails in about
    // one publication's time, not one after another.
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|uuid| {
                let (http, url) = (&http, &url);
                s.spawn(move || {
                    sj(http
                        .post(format!(
                            "{url}/images/{uuid}?action=activate&account={ALICE}"
                        ))
                        .json(&json!({}))
                        .send()
                        .unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    for (s, body) in &answers {
        assert_eq!(*s, 503, "{body}");
        assert_eq!(body["code"], "StorageIsDown", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("the object store is unreachable"),
            "{message}"
        );
        assert!(
            !message.contains("127.0.0.1"),
            "an endpoint told: {message}"
        );
    }
    let (s, body) = sj(http
        .post(format!("{url}/images/{shared}/clone?account={BOB}"))
        .json(&json!({}))
        .send()
        .unwrap());
    assert_eq!(s, 503, "{body}");
    signal(sw.pid(), "-CONT");
    // Nothing was done: the images are as they were, Bob has no clone.
    for uuid in &images {
        assert_eq!(state_of(&http, &url, uuid), "unactivated");
    }
    let (_, bobs) = sj(http
        .get(format!("{url}/images?account={BOB}&owner={BOB}&state=all"))
        .send()
        .unwrap());
    assert_eq!(bobs, json!([]), "a clone was left behind");
    assert!(tier_errors(&http, &url) >= 1.0, "failures not counted");
    // Three requests failed in the time of two publications at most (one
    // may have been running when they came).
    assert!(
        took < Duration::from_secs(120),
        "three failed activations took {took:?}"
    );

    // The same requests, the bucket back: done.
    for uuid in &images {
        let (s, body) = sj(http
            .post(format!(
                "{url}/images/{uuid}?action=activate&account={ALICE}"
            ))
            .json(&json!({}))
            .send()
            .unwrap());
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["state"], "active");
    }
    let (s, body) = sj(http
        .post(format!("{url}/images/{shared}/clone?account={BOB}"))
        .json(&json!({}))
        .send()
        .unwrap());
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["owner"], BOB);
}

#[test]
fn a_bucket_that_cannot_be_used_stops_the_start_with_one_line_naming_it() {
    let sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", crate::procs::free_port());
    let closed = format!("http://127.0.0.1:{}", crate::procs::free_port());
    for (endpoint, bucket, why) in [
        (sw.endpoint(), "no-such-bucket", "missing bucket"),
        (closed.clone(), "images", "wrong endpoint"),
        (sw.endpoint(), "images", "wrong credentials"),
    ] {
        let cfg = config(dir.path(), &listen, &endpoint, bucket);
        if why == "wrong credentials" {
            let mut c: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
            c["storage"]["secretAccessKey"] = json!("not-the-secret");
            std::fs::write(&cfg, c.to_string()).unwrap();
        }
        for args in [vec!["serve", "--check-config"], vec!["serve"]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgstore"))
                .args(&args)
                .arg("--config")
                .arg(&cfg)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{why}: {args:?} started");
            assert!(
                err.contains(bucket) && err.contains(&endpoint),
                "{why}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{why}: {err}");
        }
    }
    let cfg = config(dir.path(), &listen, &sw.endpoint(), "images");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
