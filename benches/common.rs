//! Bench input: a slice of real data when `IMGSTORE_BENCH_DATA` names a file
//! (for example peer-bench's `v1.tar`, a tar of a Debian tree), otherwise
//! synthetic text of similar compressibility. `IMGSTORE_BENCH_MB` sets the
//! size (default 256).

#![allow(dead_code)]

pub fn bench_mb() -> usize {
    std::env::var("IMGSTORE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
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
