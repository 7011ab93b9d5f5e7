//! Bench input: a slice of real data when `IMGSTORE_BENCH_DATA` names a file
//! (for example peer-bench's `v1.tar`, a tar of a Debian tree), otherwise
//! synthetic text of similar compressibility. `IMGSTORE_BENCH_MB` sets the
//! size (default 256).

#![allow(dead_code)]

use imgstore::imgapi::{self, Image, ImageFile, Images};
use imgstore::{Store, StoreOptions};
use serde_json::json;
use uuid::Uuid;

/// Small files the built stores' images share.
const FILES: u64 = 1000;

pub fn bench_mb() -> usize {
    std::env::var("IMGSTORE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// How many bytes of input to take: a file named by `IMGSTORE_BENCH_DATA`
/// whole, unless `IMGSTORE_BENCH_MB` says otherwise.
pub fn bench_len() -> usize {
    match std::env::var("IMGSTORE_BENCH_DATA") {
        Ok(f) if std::env::var("IMGSTORE_BENCH_MB").is_err() => std::fs::metadata(&f)
            .map(|m| m.len() as usize)
            .unwrap_or_else(|e| panic!("{f}: {e}")),
        _ => bench_mb() << 20,
    }
}

/// (name of the source, bytes)
pub fn compressible(len: usize) -> (String, Vec<u8>) {
    if let Ok(path) = std::env::var("IMGSTORE_BENCH_DATA") {
        let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut out = Vec::with_capacity(len);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, len as u64), &mut out)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        return (path, out);
    }
    ("synthetic text".into(), text(len))
}

pub fn incompressible(len: usize) -> Vec<u8> {
    let mut s = 0x243f_6a88_85a3_08d3u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Words from a small vocabulary with random numbers mixed in: compresses
/// about 3x with zstd, like an OS tree.
pub fn text(len: usize) -> Vec<u8> {
    let words: [&str; 16] = [
        "usr", "lib", "share", "doc", "include", "bin", "x86_64", "linux", "gnu", "python3",
        "config", "static", "const", "return", "struct", "void",
    ];
    let r = incompressible(len / 2 + 64);
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0;
    while out.len() < len {
        let a = r[i % r.len()];
        let b = r[(i + 1) % r.len()];
        out.extend_from_slice(words[(a % 16) as usize].as_bytes());
        if b.is_multiple_of(4) {
            out.extend_from_slice(format!("{:x}", u16::from_le_bytes([a, b])).as_bytes());
        }
        out.push(if b.is_multiple_of(7) { b'\n' } else { b'/' });
        i += 2;
    }
    out.truncate(len);
    out
}

/// A number from the environment (`name`), or `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the daemon binary (`imgstore ARGS`, stdout discarded) and waits,
/// a minute at most, until every URL of `ping` answers.
pub fn spawn_daemon<S: AsRef<std::ffi::OsStr>>(args: &[S], ping: &[String]) -> std::process::Child {
    let child = std::process::Command::new(daemon_binary())
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", daemon_binary().display()));
    let http = reqwest::blocking::Client::new();
    let t = std::time::Instant::now();
    while ping.iter().any(|u| http.get(u).send().is_err()) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "the daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

/// The daemon binary the process benches start: `IMGSTORE_BIN`, else
/// `imgstore` beside the bench (target/debug/deps/NAME-HASH ->
/// target/debug/imgstore).
pub fn daemon_binary() -> std::path::PathBuf {
    if let Ok(b) = std::env::var("IMGSTORE_BIN") {
        return b.into();
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("imgstore"))
        .unwrap_or_else(|| "imgstore".into())
}

/// The `p` quantile (0-1) of `v`.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// A number from a process's `/proc/PID/status` line `key` (VmRSS:,
/// VmHWM: in KiB, Threads:), or NaN.
pub fn proc_status(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// The `i`th account of a built store.
pub fn account(i: u64) -> Uuid {
    Uuid::from_u128(0xaaaa_0000_0000_4000_8000_0000_0000_0000 | u128::from(i))
}

/// Builds an IMGAPI store of `n` active images owned in turn by
/// `accounts` accounts, sharing 1,000 small files; directly through the
/// engine, a thousand images a transaction (the daemon's own API would make
/// each one a synced commit).
pub fn build_images(dir: &std::path::Path, n: u64, accounts: u64) {
    let store = Store::open_with(
        dir,
        StoreOptions {
            tables: imgapi::TABLES.to_vec(),
            ..StoreOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<_> = (0..FILES)
        .map(|i| {
            let data = format!("small file {i}\n").repeat(200);
            store.put(data.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let base_ms = 1_700_000_000_000u64;
    for start in (0..n).step_by(1000) {
        store
            .transaction(|t| {
                for i in start..(start + 1000).min(n) {
                    let owner = account(i % accounts);
                    let m = json!({
                        "v": 2, "owner": owner, "name": format!("svc-{}", i % 500),
                        "version": format!("1.0.{i}"), "type": if i % 7 == 0 { "zvol" } else { "zone-dataset" },
                        "os": if i % 3 == 0 { "linux" } else { "smartos" },
                        "public": i % 100 == 0,
                        "acl": if i % 20 == 0 { vec![account((i + 1) % accounts)] } else { vec![] },
                    });
                    let mut m = m.as_object().cloned().unwrap_or_default();
                    if i % 7 == 0 {
                        for (k, v) in [("nic_driver", json!("virtio")), ("disk_driver", json!("virtio")),
                            ("cpu_type", json!("host")), ("image_size", json!(10240))] {
                            m.insert(k.into(), v);
                        }
                    }
                    let mut img = Image::from_map(Uuid::from_u128(u128::from(i) + 1), &m)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let f = &files[(i % FILES) as usize];
                    t.link(&f.file_id)?;
                    img.activated = true;
                    img.published_at = Some(imgapi::time::iso8601(base_ms + i * 1000));
                    img.files = vec![ImageFile {
                        sha1: f.sha1.clone(),
                        size: f.size,
                        compression: "none".into(),
                        dataset_guid: None,
                        content_md5: imgapi::base64_encode(&[0; 16]),
                        mtime_ms: base_ms,
                        stor: "local".into(),
                        file_id: f.file_id,
                    }];
                    t.put::<Images>(&img.uuid, &img)?;
                }
                Ok::<_, imgstore::Error>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    store.close().unwrap_or_else(|e| panic!("{e}"));
}
