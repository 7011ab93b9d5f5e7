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
