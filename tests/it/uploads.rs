//! Uploads that go wrong: a client that vanishes, a body shorter than its
//! Content-Length, two uploads racing, a restart mid-upload.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;

use crate::common::bytes;
use crate::daemon::*;

fn raw_put(url: &str, path: &str, content_length: u64, body: &[u8]) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.write_all(body).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_client_that_disconnects_halfway_leaves_nothing_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &[], false);
    let data = bytes(6_000_000, 1);
    // Promise 10 MB, send 6 MB, hang up.
    let answer = raw_put(
        &d.url,
        &format!("/images/{uuid}/file?compression=none"),
        10_000_000,
        &data,
    );
    assert!(answer.is_empty() || answer.contains(" 400 "), "{answer}");
    let (_, img) = sj(d.get(&format!("/images/{uuid}")));
    assert_eq!(img["files"], json!([]));
    let store = d.state.api.store();
    let stats = store.stats().unwrap();
    assert_eq!(stats.files, 0);
    // What was written is garbage, and GC reclaims it.
    store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
    assert_eq!(store.stats().unwrap().live_stored_bytes, 0);
    assert!(store.verify(false).unwrap().is_clean());
    // The image still takes a good upload.
    let r = d.put_bytes(
        &format!("/images/{uuid}/file?compression=none"),
        bytes(1000, 2),
    );
    assert_eq!(r.status(), 200);
}

#[test]
fn a_body_longer_than_content_length_is_cut_at_the_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &[], false);
    let data = bytes(5000, 1);
    let answer = raw_put(
        &d.url,
        &format!("/images/{uuid}/file?compression=none"),
        4000,
        &data,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, img) = sj(d.get(&format!("/images/{uuid}")));
    assert_eq!(img["files"][0]["size"], 4000);
    let got = d.file(&uuid);
    assert_eq!(got, data[..4000].to_vec());
}

#[test]
fn two_concurrent_uploads_leave_exactly_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &[], false);
    let url = d.url.clone();
    let handles: Vec<_> = (0..2u64)
        .map(|i| {
            let url = url.clone();
            let uuid = uuid.clone();
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .put(format!("{url}/images/{uuid}/file?compression=none"))
                    .body(bytes(2_000_000, 10 + i))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let (_, img) = sj(d.get(&format!("/images/{uuid}")));
    let sha = img["files"][0]["sha1"].as_str().unwrap().to_string();
    let got = d.file(&uuid);
    assert_eq!(hex::encode(<sha1::Sha1 as sha1::Digest>::digest(&got)), sha);
    let stats = d.state.api.store().stats().unwrap();
    assert_eq!(stats.files, 1, "the losing upload's file was released");
    assert!(d.state.api.store().verify(false).unwrap().is_clean());
}

#[test]
fn a_restart_mid_upload_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, pending) = {
        let d = Daemon::start(dir.path());
        let kept = d.image(ALICE, "kept", json!({}), &bytes(300_000, 1), true);
        let pending = d.image(ALICE, "pending", json!({}), &[], false);
        // Start an upload that never finishes, then stop the daemon.
        let addr = d.url.trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "PUT /images/{pending}/file?compression=none HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 9000000\r\n\r\n"
        )
        .unwrap();
        s.write_all(&bytes(5_000_000, 2)).unwrap();
        drop(s);
        d.stop();
        (kept, pending)
    };
    let d = Daemon::start(dir.path());
    assert_eq!(d.file(&kept), bytes(300_000, 1));
    let (_, img) = sj(d.get(&format!("/images/{pending}")));
    assert_eq!(img["files"], json!([]));
    assert!(d.state.api.store().verify(false).unwrap().is_clean());
}
