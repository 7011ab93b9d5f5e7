//! A datacenter as a cluster on its bucket (real SeaweedFS, three real
//! daemons): one writer, followers that serve reads and forward writes;
//! the writer killed (-9) while clients write and read, then stopped past
//! its lease (SIGSTOP) and resumed. Every acknowledged image is on every
//! member at the end, and no read on a follower failed.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::daemon::{ALICE, create_image, sj};
use crate::procs::{Proc, free_port, start};
use crate::seaweed::Seaweed;

/// The `storage` object of every daemon on the test's SeaweedFS: bucket
/// `images`, prefix `dc1/`, remote durability, quick to give up.
pub fn bucket_storage(endpoint: &str) -> Value {
    json!({
        "type": "s3", "endpoint": endpoint, "bucket": "images", "prefix": "dc1/",
        "accessKeyId": crate::seaweed::KEY, "secretAccessKey": crate::seaweed::SECRET,
        "durability": "remote", "requestTimeoutSeconds": 5, "retries": 1
    })
}

/// A member's config: the same bucket and prefix, its own data dir and
/// port, a lease of `lease` seconds.
pub fn member_config(
    dir: &std::path::Path,
    name: &str,
    endpoint: &str,
    lease: u64,
) -> (std::path::PathBuf, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({
            "listen": format!("127.0.0.1:{port}"),
            "dataDir": dir.join(name),
            "storage": bucket_storage(endpoint),
            "cluster": {"advertiseUrl": url, "leaseSeconds": lease}
        }))
        .unwrap(),
    )
    .unwrap();
    (path, url)
}

/// `GET /state`'s `cluster` object.
pub fn standing(http: &Client, url: &str) -> Option<Value> {
    let r = http.get(format!("{url}/state")).send().ok()?;
    let v: Value = r.json().ok()?;
    v.get("cluster").cloned()
}

/// Waits (a minute at most) until `url` has `role`.
pub fn wait_role(http: &Client, url: &str, role: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(c) = standing(http, url)
            && c["role"] == role
        {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} did not become the {role}: {:?}",
            standing(http, url)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates, uploads and activates an image; Some(uuid) only when every
/// step was acknowledged.
pub(crate) fn try_create(http: &Client, url: &str, name: &str, data: &[u8]) -> Option<String> {
    let body = json!({"name": name, "version": "1.0.0", "type": "other", "os": "other"});
    let r = http
        .post(format!("{url}/images?account={ALICE}"))
        .json(&body)
        .send()
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let uuid = r.json::<Value>().ok()?["uuid"].as_str()?.to_string();
    let r = http
        .put(format!(
            "{url}/images/{uuid}/file?compression=none&account={ALICE}"
        ))
        .body(data.to_vec())
        .send()
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let r = http
        .post(format!(
            "{url}/images/{uuid}?action=activate&account={ALICE}"
        ))
        .json(&json!({}))
        .send()
        .ok()?;
    (r.status() == 200).then_some(uuid)
}

/// Waits (30 s at most) until every image of `uuids` is active on `url`
/// with its file whole.
pub(crate) fn all_there(http: &Client, url: &str, uuids: &[String]) {
    let start = Instant::now();
    for uuid in uuids {
        loop {
            let (s, img) = sj(http.get(format!("{url}/images/{uuid}")).send().unwrap());
            if s == 200 && img["state"] == "active" {
                let r = http
                    .get(format!("{url}/images/{uuid}/file"))
                    .send()
                    .unwrap();
                let status = r.status();
                let got = r.bytes().unwrap();
                assert_eq!(
                    status,
                    200,
                    "{url}: the file of {uuid}: {}",
                    String::from_utf8_lossy(&got)
                );
                assert_eq!(got.len(), 20_000, "{url}: the file of {uuid}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{url} does not have acknowledged image {uuid}: {s} {img}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `imgstore admin cluster --url URL`'s output (it must succeed).
fn admin_cluster(url: &str) -> String {
    // Members write their records every few seconds.
    let start = Instant::now();
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .args(["admin", "cluster", "--url", url])
            .env_remove("IMGSTORE_ACCOUNT")
            .env("HOME", "/nonexistent")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.matches("follower").count() == 2 {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Clients that write through `urls` (round robin) and read what was
/// acknowledged back from them, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    failed_reads: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(writers: Vec<String>, readers: Vec<String>, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed_reads = Arc::new(Mutex::new(Vec::new()));
        let data = crate::common::bytes(20_000, 3);
        let w = {
            let (stop, acked, tag) = (Arc::clone(&stop), Arc::clone(&acked), tag.to_string());
            std::thread::spawn(move || {
                let http = Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let url = &writers[i % writers.len()];
                    if let Some(u) = try_create(&http, url, &format!("{tag}-{i}"), &data) {
                        acked.lock().unwrap().push(u);
                    }
                    i += 1;
                }
            })
        };
        let r = {
            let (stop, acked, failed) = (
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&failed_reads),
            );
            std::thread::spawn(move || {
                let http = Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                // Images acknowledged before the load began are on every
                // follower: reads of them must never fail.
                let known: Vec<String> = acked.lock().unwrap().clone();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let url = &readers[i % readers.len()];
                    for uuid in &known {
                        let ok = http
                            .get(format!("{url}/images/{uuid}"))
                            .send()
                            .is_ok_and(|r| r.status() == 200);
                        if !ok {
                            failed.lock().unwrap().push(format!("{url} {uuid}"));
                        }
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Load {
            stop,
            acked,
            failed_reads,
            threads: vec![w, r],
        }
    }

    fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed_reads.lock().unwrap().clone();
        (acked, failed)
    }
}

#[test]
fn a_cluster_keeps_every_acknowledged_write_through_a_kill_and_a_stopped_writer() {
    let sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let cfg: Vec<(std::path::PathBuf, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| member_config(dir.path(), n, &sw.endpoint(), 3))
        .collect();
    let urls: Vec<String> = cfg.iter().map(|c| c.1.clone()).collect();
    let a = start(&cfg[0].0, &urls[0]);
    wait_role(&http, &urls[0], "writer");
    let b = start(&cfg[1].0, &urls[1]);
    let c = start(&cfg[2].0, &urls[2]);
    for u in &urls[1..] {
        wait_role(&http, u, "follower");
    }

    // A write through a follower is forwarded to the writer; once
    // acknowledged, every member serves it.
    let data = crate::common::bytes(20_000, 3);
    let first = create_image(&http, &urls[1], ALICE, "first", json!({}), &data, true);
    all_there(&http, &urls[0], std::slice::from_ref(&first));
    all_there(&http, &urls[1], std::slice::from_ref(&first));
    all_there(&http, &urls[2], std::slice::from_ref(&first));
    let st = standing(&http, &urls[2]).unwrap();
    assert_eq!(st["writer"], json!(urls[0]), "{st}");
    // The operator's view, from any member: the writer first.
    let out = admin_cluster(&urls[2]);
    let first_member = out.lines().nth(1).unwrap_or_default();
    assert!(
        first_member.contains("writer") && first_member.contains(&urls[0]),
        "{out}"
    );
    assert_eq!(out.matches("follower").count(), 2, "{out}");

    // kill -9 of the writer while a client writes through the followers
    // and another reads from them.
    let load = Load::start(urls[1..].to_vec(), urls[1..].to_vec(), "kill");
    load.acked.lock().unwrap().push(first.clone());
    std::thread::sleep(Duration::from_secs(2));
    a.kill();
    let killed = Instant::now();
    let new_writer = loop {
        if let Some(i) =
            (1..3).find(|&i| standing(&http, &urls[i]).is_some_and(|c| c["role"] == "writer"))
        {
            break i;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no follower took over"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2));
    let (acked, failed) = load.finish();
    assert!(failed.is_empty(), "reads failed on followers: {failed:?}");
    assert!(
        acked.len() > 2,
        "writes went on after the failover: {acked:?}"
    );
    let survivors = [&urls[1], &urls[2]];
    for u in survivors {
        all_there(&http, u, &acked);
    }

    // The new writer stopped past its lease: the other survivor takes
    // over; the old one, resumed, is refused at its next publication and
    // follows. Nothing either acknowledged is lost.
    let (procs, other) = if new_writer == 1 {
        ((b, c), 2)
    } else {
        ((c, b), 1)
    };
    let (stopped, running) = procs;
    signal(&stopped, "-STOP");
    wait_role(&http, &urls[other], "writer");
    let after =
        try_create(&http, &urls[other], "after-stop", &data).expect("the new writer writes");
    signal(&stopped, "-CONT");
    let st = wait_role(&http, &urls[new_writer], "follower");
    assert_eq!(
        st["writer"],
        json!(urls[other]),
        "it follows the new writer: {st}"
    );
    let via_old = create_image(
        &http,
        &urls[new_writer],
        ALICE,
        "via-old",
        json!({}),
        &data,
        true,
    );
    let mut everything = acked.clone();
    everything.extend([after, via_old]);
    for u in survivors {
        all_there(&http, u, &everything);
    }
    drop(running);
    drop(stopped);
}
