//! kill -9 of the daemon (the real binary) while it clones a deep chain,
//! then a restart: every clone chain is whole or absent.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::{ALICE, BOB};

struct Proc {
    child: Child,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path) -> Proc {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    for _ in 0..200 {
        if client.get(format!("{url}/ping")).send().is_ok() {
            return Proc { child, url };
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("daemon did not start");
}

fn kill9(mut p: Proc) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

#[test]
fn sigkill_during_a_deep_chain_clone_leaves_all_or_nothing() {
    const DEPTH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::blocking::Client::new();
    let p = start(dir.path());
    let mut origin: Option<String> = None;
    for i in 0..DEPTH {
        let mut body = json!({"name": format!("layer{i}"), "version": "1", "type": "zone-dataset", "os": "smartos"});
        if let Some(o) = &origin {
            body["origin"] = json!(o);
        }
        let img: Value = http
            .post(format!("{}/images?account={ALICE}", p.url))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let u = img["uuid"].as_str().unwrap().to_string();
        let r = http
            .put(format!("{}/images/{u}/file?compression=none", p.url))
            .body(bytes(3000, i as u64))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .post(format!("{}/images/{u}?action=activate", p.url))
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        origin = Some(u);
    }
    let top = origin.unwrap();
    http.post(format!("{}/images/{top}/acl?account={ALICE}", p.url))
        .json(&json!([BOB]))
        .send()
        .unwrap();
    kill9(p);

    let mut acknowledged = 0usize;
    let mut seed = 7u64;
    for trial in 0..12 {
        let p = start(dir.path());
        let url = p.url.clone();
        let t = top.clone();
        let req = std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .post(format!("{url}/images/{t}/clone?account={BOB}"))
                .json(&json!({}))
                .send()
                .map(|r| r.status().as_u16())
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 25));
        kill9(p);
        if let Ok(Ok(200)) = req.join() {
            acknowledged += 1;
        }
        // Restart and check: Bob's images form whole chains only.
        let p = start(dir.path());
        let list: Vec<Value> = http
            .get(format!("{}/images?owner={BOB}&state=all", p.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            list.len() % DEPTH,
            0,
            "trial {trial}: {} of Bob's images is not whole chains",
            list.len()
        );
        assert!(
            list.len() / DEPTH >= acknowledged,
            "trial {trial}: an acknowledged clone is gone"
        );
        for img in &list {
            if let Some(o) = img["origin"].as_str() {
                let r = http.get(format!("{}/images/{o}", p.url)).send().unwrap();
                assert_eq!(
                    r.status(),
                    200,
                    "trial {trial}: a clone's origin is missing"
                );
            }
        }
        kill9(p);
    }
    let store = imgstore::Store::open_with(
        dir.path(),
        imgstore::StoreOptions {
            tables: imgstore::imgapi::TABLES.to_vec(),
            ..imgstore::StoreOptions::default()
        },
    )
    .unwrap();
    assert!(store.verify(false).unwrap().is_clean());
}
