//! How the daemon starts and stops as an operator meets it: a start that
//! cannot listen leaves nothing behind; the first SIGINT drains requests
//! in flight, a second one stops at once, and a cut upload is not stored.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::ALICE;
use crate::procs::free_port;

#[test]
fn a_start_that_cannot_listen_leaves_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(!data.exists(), "a failed start made {}", data.display());
}

#[test]
fn a_second_signal_stops_at_once_and_a_cut_upload_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let start = Instant::now();
    while http.get(format!("{url}/ping")).send().is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "no answer");
        std::thread::sleep(Duration::from_millis(25));
    }
    let img: serde_json::Value = http
        .post(format!("{url}/images?account={ALICE}"))
        .json(&json!({"name": "cut", "version": "1", "type": "other", "os": "other"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let uuid = img["uuid"].as_str().unwrap().to_string();
    // An upload that sends part of its body and then nothing.
    let mut upload = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "PUT /images/{uuid}/file?compression=none&account={ALICE} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).unwrap();
    upload.write_all(&vec![7u8; 200_000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    let signal = || {
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal();
    // Draining: still alive while the upload hangs.
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal stopped it at once"
    );
    let second = Instant::now();
    signal();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            second.elapsed() < Duration::from_secs(20),
            "a second signal did not stop it"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("again to stop now"), "{log}");
    drop(upload);
    // Started again: the image is there, without a file.
    let mut again = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let got = loop {
        if let Ok(r) = http.get(format!("{url}/images/{uuid}")).send() {
            break r.json::<serde_json::Value>().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no answer after restart"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(got["state"], "unactivated", "{got}");
    assert_eq!(got["files"], json!([]), "a cut upload was stored: {got}");
}
