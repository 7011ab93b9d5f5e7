//! Hostile load on the connection layer: clients that stall mid-upload,
//! send half their headers, or never read a download. The daemon's threads
//! stay bounded, the API keeps answering, stalls are cut after the idle
//! timeout, and shutdown keeps its deadline without storing a cut upload.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use imgstore::daemon::DaemonConfig;
use serde_json::json;

use crate::common::bytes;
use crate::daemon::*;

/// Threads of this test process (the daemon runs in it).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (a minute at most) until `done` holds: the daemon has taken what
/// the clients sent, however slow the machine.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Upload body bytes the daemon has read.
fn received(d: &Daemon) -> f64 {
    let s = crate::metrics::scrape(d);
    crate::metrics::value(&s, "imgstore_http_received_bytes_total", &[]).unwrap_or(0.0)
}

fn addr(d: &Daemon) -> String {
    d.url.trim_start_matches("http://").to_string()
}

/// A PUT of an image file that promises `promised` bytes and sends `sent`.
fn stalled_put(d: &Daemon, uuid: &str, promised: usize, sent: usize) -> TcpStream {
    let a = addr(d);
    let mut s = TcpStream::connect(&a).unwrap();
    write!(
        s,
        "PUT /images/{uuid}/file?compression=none&account={ALICE} HTTP/1.1\r\nHost: {a}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {promised}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&bytes(sent, 7)).unwrap();
    s
}

/// What the server sends until it closes the connection, or `None` when
/// it kept the connection open and silent for `wait`.
fn until_closed(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(got), // reset: closed as well
        }
    }
}

fn with_limits(
    tweak: impl FnOnce(&mut imgstore::daemon::Limits),
) -> impl FnOnce(&mut DaemonConfig) {
    move |c: &mut DaemonConfig| {
        c.gc_interval = None;
        tweak(&mut c.limits);
    }
}

#[test]
fn stalled_uploads_hold_no_thread_and_the_api_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        dir.path(),
        with_limits(|l| {
            l.max_uploads = 2;
            l.idle_timeout = Duration::from_secs(120);
        }),
    );
    let active = d.image(ALICE, "base", json!({}), &bytes(100_000, 1), true);
    let target = d.image(ALICE, "target", json!({}), &[], false);
    let before = threads();
    // 300 uploads that send 1 KiB of 10 MiB, and 4 that send 100 KiB (past
    // the admission threshold: they take both put slots) and stall.
    let mut stalled: Vec<TcpStream> = (0..300)
        .map(|_| stalled_put(&d, &target, 10 << 20, 1024))
        .collect();
    stalled.extend((0..4).map(|_| stalled_put(&d, &target, 10 << 20, 100 * 1024)));
    // The daemon has read what every stalled upload sent (and the first
    // image's file).
    let sent = 100_000 + 300 * 1024 + 4 * 100 * 1024;
    wait_until("the stalled uploads' bytes", || {
        received(&d) >= f64::from(sent)
    });
    for _ in 0..5 {
        let (s, img) = sj(d.get(&format!("/images/{active}?account={ALICE}")));
        assert_eq!((s, img["state"].as_str()), (200, Some("active")));
        let (s, list) = sj(d.get(&format!("/images?account={ALICE}&state=all")));
        assert_eq!(s, 200);
        assert!(list.as_array().is_some_and(|l| l.len() == 2), "{list}");
    }
    // Two puts run (three threads each) and the rest wait without one.
    let grown = threads().saturating_sub(before);
    assert!(grown < 40, "{grown} more threads for 304 stalled uploads");
    drop(stalled);
}

#[test]
fn a_stalled_upload_is_cut_after_the_idle_timeout_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        dir.path(),
        with_limits(|l| {
            l.max_uploads = 1;
            l.idle_timeout = Duration::from_secs(1);
        }),
    );
    let stuck = d.image(ALICE, "stuck", json!({}), &[], false);
    let other = d.image(ALICE, "other", json!({}), &[], false);
    let mut s = stalled_put(&d, &stuck, 10 << 20, 200 * 1024);
    // The only put slot is the stalled one's until the timeout frees it.
    let r = d.put_bytes(
        &format!("/images/{other}/file?compression=none&account={ALICE}"),
        bytes(1_000_000, 3),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let answer = until_closed(&mut s, Duration::from_secs(60)).expect("the stall was never cut");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || (text.contains(" 400 ") && text.contains("sent nothing")),
        "{text}"
    );
    let (_, img) = sj(d.get(&format!("/images/{stuck}?account={ALICE}")));
    assert_eq!(img["files"], json!([]));
}

#[test]
fn half_sent_headers_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        dir.path(),
        with_limits(|l| l.header_timeout = Duration::from_secs(1)),
    );
    let mut s = TcpStream::connect(addr(&d)).unwrap();
    s.write_all(b"GET /images HTTP/1.1\r\nHost: x\r\nAccept: app")
        .unwrap();
    assert!(
        until_closed(&mut s, Duration::from_secs(60)).is_some(),
        "a connection with half its headers stayed open"
    );
    // An idle keep-alive connection is closed the same way.
    let mut s = TcpStream::connect(addr(&d)).unwrap();
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = until_closed(&mut s, Duration::from_secs(60)).expect("idle connection kept open");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[test]
fn readers_that_never_read_hold_no_thread_and_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        dir.path(),
        with_limits(|l| {
            l.idle_timeout = Duration::from_secs(1);
            l.send_buffer_bytes = 8 << 20;
        }),
    );
    let size = 24 << 20;
    let uuid = d.image(ALICE, "big", json!({"public": true}), &bytes(size, 5), true);
    let before = threads();
    let a = addr(&d);
    let mut readers: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&a).unwrap();
            write!(s, "GET /images/{uuid}/file HTTP/1.1\r\nHost: {a}\r\n\r\n").unwrap();
            s
        })
        .collect();
    // The stalled readers hold the whole send budget but a block.
    let sender = &d.state.sender;
    wait_until("the readers to take the send budget", || {
        sender.in_flight() >= (8 << 20) - imgstore::http::body::BLOCK
    });
    // The send budget is taken by readers that read nothing: metadata
    // still answers, and no thread waits on a reader.
    let (s, list) = sj(d.get(&format!("/images?account={BOB}")));
    assert_eq!(s, 200, "{list}");
    let grown = threads().saturating_sub(before);
    assert!(grown < 40, "{grown} more threads for 100 stalled readers");
    // Each is cut after the idle timeout, a budget's worth at a time, and
    // gives its share of the budget back: in the end nothing is in flight.
    let mut idle_checks = 0;
    for _ in 0..1200 {
        idle_checks = if sender.in_flight() == 0 {
            idle_checks + 1
        } else {
            0
        };
        if idle_checks == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        idle_checks,
        20,
        "{} bytes still in flight",
        sender.in_flight()
    );
    for r in &mut readers {
        let got = until_closed(r, Duration::from_secs(60)).expect("never cut");
        assert!(got.len() < size, "a stalled reader got the whole file");
    }
    drop(readers);
    // A reader that reads gets all of it.
    let r = d.get(&format!("/images/{uuid}/file"));
    assert_eq!(r.bytes().unwrap().len(), size);
}

#[test]
fn shutdown_keeps_its_deadline_and_stores_no_cut_upload() {
    let dir = tempfile::tempdir().unwrap();
    let tweak = || {
        with_limits(|l| {
            l.shutdown_deadline = Duration::from_secs(1);
            l.idle_timeout = Duration::from_secs(300);
        })
    };
    let d = Daemon::start_with(dir.path(), tweak());
    let uuid = d.image(ALICE, "cut", json!({}), &[], false);
    // A chunked body, so only the daemon knows it did not end.
    let a = addr(&d);
    let mut s = TcpStream::connect(&a).unwrap();
    write!(
        s,
        "PUT /images/{uuid}/file?compression=none&account={ALICE} HTTP/1.1\r\nHost: {a}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let piece = bytes(100 * 1024, 9);
    for _ in 0..3 {
        write!(s, "{:x}\r\n", piece.len()).unwrap();
        s.write_all(&piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    wait_until("the upload's first bytes", || {
        received(&d) >= f64::from(300 * 1024)
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        d.stop();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon did not stop with an upload stalled");
    drop(s);
    let d = Daemon::start_with(dir.path(), tweak());
    let (_, img) = sj(d.get(&format!("/images/{uuid}?account={ALICE}")));
    assert_eq!(img["files"], json!([]), "a cut upload was stored");
    assert_eq!(d.state.api.store().stats().unwrap().files, 0);
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), with_limits(|l| l.max_connections = 4));
    let a = addr(&d);
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(
        quick.get(format!("{}/ping", d.url)).send().is_err(),
        "a fifth connection was served"
    );
    drop(idle);
    let r = d.get("/ping");
    assert_eq!(r.status(), 200);
}

#[test]
fn the_limits_are_read_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"limits": {"maxConnections": 100, "maxUploads": 3, "sendBufferBytes": 33554432,
            "headerTimeoutSeconds": 5, "idleTimeoutSeconds": 7, "shutdownSeconds": 9}}"#,
    )
    .unwrap();
    let c = DaemonConfig::from_file(&path).unwrap();
    assert_eq!(c.limits.max_connections, 100);
    assert_eq!(c.limits.max_uploads, 3);
    assert_eq!(c.limits.send_buffer_bytes, 32 << 20);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(7));
    assert_eq!(c.limits.shutdown_deadline, Duration::from_secs(9));
    std::fs::write(&path, r#"{"limits": {"maxConection": 1}}"#).unwrap();
    let e = DaemonConfig::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("maxConection"), "{e}");
}
