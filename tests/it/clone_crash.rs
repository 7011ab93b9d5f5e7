//! kill -9 of the daemon (the real binary) while it clones a deep chain,
//! then a restart: every clone chain is whole or absent.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::ALICE;

/// The daemon and where it listens.
struct Proc {
    proc: crate::procs::Proc,
    url: String,
}

fn start(dir: &std::path::Path) -> Proc {
    let listen = format!("127.0.0.1:{}", crate::procs::free_port());
    let url = format!("http://{listen}");
    let proc = crate::procs::spawn(
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
        ],
        &[format!("{url}/ping")],
    );
    Proc { proc, url }
}

fn kill9(p: Proc) {
    p.proc.kill();
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
    // One account a trial: a caller's later clone would keep its earlier
    // clones of the origins, and each trial must clone the whole chain.
    let trials = 12u64;
    let who = |trial: u64| format!("b0b00000-0000-4000-8000-{trial:012x}");
    let all: Vec<String> = (0..trials).map(who).collect();
    http.post(format!("{}/images/{top}/acl?account={ALICE}", p.url))
        .json(&json!(all))
        .send()
        .unwrap();
    kill9(p);

    let mut seed = 7u64;
    for trial in 0..trials {
        let p = start(dir.path());
        let url = p.url.clone();
        let t = top.clone();
        let bob = who(trial);
        let req = std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .post(format!("{url}/images/{t}/clone?account={bob}"))
                .json(&json!({}))
                .send()
                .map(|r| r.status().as_u16())
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 25));
        kill9(p);
        let acknowledged = matches!(req.join(), Ok(Ok(200)));
        // Restart and check: the caller's images are the whole chain or
        // nothing.
        let p = start(dir.path());
        let list: Vec<Value> = http
            .get(format!("{}/images?owner={}&state=all", p.url, who(trial)))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            list.is_empty() || list.len() == DEPTH,
            "trial {trial}: {} images is not a whole chain",
            list.len()
        );
        assert!(
            !acknowledged || list.len() == DEPTH,
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
