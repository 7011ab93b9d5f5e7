//! Hostile and heavy load on the real daemon binary (issue 14's goals):
//!
//! 1. **Stalled clients.** 1,000 uploads that send 1 KiB of 10 MiB and go
//!    idle, and 1,000 downloads of a 64 MiB image that read nothing; then
//!    GetImage and ListImages latencies (p50, p99) while they stall, with
//!    the daemon's threads and RSS.
//! 2. **200 + 20.** 200 concurrent downloads of a 64 MiB image and 20
//!    concurrent 64 MiB uploads: wall time, throughput, the daemon's peak
//!    RSS and peak thread count (sampled every 20 ms), errors.
//!
//!     cargo build && cargo bench --profile dev --bench load
//!
//! `IMGSTORE_BIN` names the daemon binary (default: `imgstore` beside the
//! bench), so an older build can be measured in the same run;
//! `IMGSTORE_BENCH_STALLED=N` and `IMGSTORE_BENCH_DOWNLOADS=N`,
//! `IMGSTORE_BENCH_UPLOADS=N` change the counts; `IMGSTORE_BENCH_CONFIG`
//! adds keys to the daemon's config (`{"limits": {...}}`). Clients are plain
//! threads on raw sockets, so the bench itself stays light.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const MIB: usize = 1 << 20;
const ACCOUNT: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";

/// Bytes that compress about 2:1, different for each seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        v.extend_from_slice(&b[..4]);
        v.extend_from_slice(&[b[4] & 0x0f; 4]);
    }
    v.truncate(len);
    v
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body
/// length (the body is read and dropped).
fn exchange(addr: &str, head: &str, body: &[u8]) -> std::io::Result<(u16, u64)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = Vec::new();
    let header_end = loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the headers"));
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..header_end]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut read = (got.len() - header_end) as u64;
    while read < len {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(format!("cut at {read} of {len}")));
        }
        read += n as u64;
    }
    Ok((status, read))
}

struct Daemon {
    child: Child,
    url: String,
    addr: String,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("127.0.0.1:{}", common::free_port());
        let config = dir.path().join("config.json");
        let mut cfg = json!({"adminUuid": "00000000-0000-0000-0000-00000000ad01",
            "listen": addr, "dataDir": dir.path().join("data")});
        if let Ok(extra) = std::env::var("IMGSTORE_BENCH_CONFIG")
            && let (Ok(Value::Object(extra)), Some(c)) =
                (serde_json::from_str::<Value>(&extra), cfg.as_object_mut())
        {
            c.extend(extra);
        }
        std::fs::write(&config, cfg.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{addr}");
        let child = common::spawn_daemon(
            &["serve".as_ref(), "--config".as_ref(), config.as_os_str()],
            &[format!("{url}/ping")],
        );
        let http = reqwest::blocking::Client::new();
        Daemon {
            child,
            url,
            addr,
            http,
            _dir: dir,
        }
    }

    fn create(&self, name: &str) -> String {
        let body = json!({"name": name, "version": "1.0.0", "type": "zone-dataset",
            "os": "smartos", "public": true});
        let r = self
            .http
            .post(format!("{}/images?account={ACCOUNT}", self.url))
            .json(&body)
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = r.json().unwrap_or_else(|e| panic!("{e}"));
        v["uuid"].as_str().unwrap_or_default().to_string()
    }

    fn upload_head(&self, uuid: &str, len: usize) -> String {
        format!(
            "PUT /images/{uuid}/file?compression=none&account={ACCOUNT} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
            self.addr
        )
    }

    fn download_head(&self, uuid: &str) -> String {
        format!(
            "GET /images/{uuid}/file HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
    }

    /// An active public image of `len` bytes.
    fn image(&self, len: usize, seed: u64) -> String {
        let uuid = self.create("served");
        let (status, _) = exchange(&self.addr, &self.upload_head(&uuid, len), &data(len, seed))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200);
        let r = self
            .http
            .post(format!(
                "{}/images/{uuid}?action=activate&account={ACCOUNT}",
                self.url
            ))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status().is_success());
        uuid
    }

    fn report(&self, when: &str) {
        println!(
            "  daemon {when}: {:.0} threads, RSS {:.0} MiB, peak RSS {:.0} MiB",
            common::proc_status(self.child.id(), "Threads:"),
            common::proc_status(self.child.id(), "VmRSS:") / 1024.0,
            common::proc_status(self.child.id(), "VmHWM:") / 1024.0
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stalled_clients(d: &Daemon, served: &str) {
    let n = common::env_num("IMGSTORE_BENCH_STALLED", 1000);
    let target = d.create("never-finished");
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect(&d.addr) {
            let _ = s.write_all(d.upload_head(&target, 10 * MIB).as_bytes());
            let _ = s.write_all(&[7u8; 1024]);
            held.push(s);
        }
        if let Ok(mut s) = TcpStream::connect(&d.addr) {
            let _ = s.write_all(d.download_head(served).as_bytes());
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "stalled clients: {} connections open ({n} uploads sent 1 KiB of 10 MiB, {n} readers read nothing)",
        held.len()
    );
    d.report("with them");
    let time = |path: &str, timeout: &mut u32| -> Option<f64> {
        let t = Instant::now();
        let r = d
            .http
            .get(format!("{}{path}", d.url))
            .timeout(Duration::from_secs(5))
            .send();
        match r.and_then(|r| r.bytes()) {
            Ok(_) => Some(t.elapsed().as_secs_f64() * 1000.0),
            Err(_) => {
                *timeout += 1;
                None
            }
        }
    };
    for (what, path) in [
        ("GetImage", format!("/images/{served}?account={ACCOUNT}")),
        ("ListImages", format!("/images?account={ACCOUNT}")),
    ] {
        // Ten timeouts are enough to tell: stop there.
        let (mut timeouts, mut tried) = (0, 0);
        let mut lat = Vec::new();
        while tried < 300 && timeouts < 10 {
            tried += 1;
            lat.extend(time(&path, &mut timeouts));
        }
        println!(
            "  {what} while they stall: p50 {:.2} ms, p99 {:.2} ms, {timeouts} of {tried} timed out (5 s)",
            common::percentile(lat.clone(), 0.5),
            common::percentile(lat, 0.99)
        );
    }
    drop(held);
}

fn heavy(d: &Daemon, served: &str) {
    let downloads = common::env_num("IMGSTORE_BENCH_DOWNLOADS", 200);
    let uploads = common::env_num("IMGSTORE_BENCH_UPLOADS", 20);
    let size = 64 * MIB;
    let targets: Vec<String> = (0..uploads).map(|i| d.create(&format!("up-{i}"))).collect();
    let bodies: Vec<Arc<Vec<u8>>> = (0..uploads)
        .map(|i| Arc::new(data(size, 1000 + i as u64)))
        .collect();
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let pid = d.child.id();
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(Ordering::SeqCst) {
                let threads = common::proc_status(pid, "Threads:");
                peak = peak.max(threads);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..downloads {
        let (addr, head) = (d.addr.clone(), d.download_head(served));
        let (bytes, errors) = (Arc::clone(&bytes), Arc::clone(&errors));
        workers.push(std::thread::spawn(move || {
            match exchange(&addr, &head, &[]) {
                Ok((200, n)) => {
                    bytes.fetch_add(n, Ordering::SeqCst);
                }
                _ => {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for (uuid, body) in targets.iter().zip(&bodies) {
        let (addr, head) = (d.addr.clone(), d.upload_head(uuid, size));
        let (bytes, errors, body) = (Arc::clone(&bytes), Arc::clone(&errors), Arc::clone(body));
        workers.push(std::thread::spawn(move || {
            match exchange(&addr, &head, &body) {
                Ok((200, _)) => {
                    bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
                }
                _ => {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let peak_threads = sampler.join().unwrap_or(f64::NAN);
    let total = bytes.load(Ordering::SeqCst) as f64 / MIB as f64;
    println!(
        "{downloads} downloads + {uploads} uploads of 64 MiB: {secs:.1} s, {:.0} MiB/s, {} errors, peak {peak_threads:.0} threads",
        total / secs,
        errors.load(Ordering::SeqCst)
    );
    d.report("after");
}

fn main() {
    println!("daemon: {}", common::daemon_binary().display());
    if common::env_num("IMGSTORE_BENCH_STALLED", 1000) > 0 {
        let d = Daemon::start();
        let served = d.image(64 * MIB, 1);
        stalled_clients(&d, &served);
    }
    // A fresh daemon, so its peak RSS is the heavy load's own.
    let d = Daemon::start();
    let served = d.image(64 * MIB, 1);
    d.report("idle, one 64 MiB image");
    heavy(&d, &served);
}
