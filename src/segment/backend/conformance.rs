//! The contract of [`ObjectBackend`], as a suite any backend must pass.
//!
//! The tests run it against the in-memory store, [`super::LocalDir`] and a
//! real SeaweedFS; run it against another S3 server before trusting it
//! (`tests/it/object_backends.rs` shows how). Every object it writes is
//! under `base`, and it deletes them again on success.

use super::{BackendError, ObjectBackend, ObjectInfo};

/// A deterministic byte pattern, different per `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn read(b: &dyn ObjectBackend, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0; len];
    b.read_at(name, offset, &mut buf)
        .map_err(|e| format!("reading {name} {offset}+{len}: {e}"))?;
    Ok(buf)
}

/// Runs every check under `base` (a fresh `dir/` prefix); `large` is the
/// size of the large object (make it larger than a multipart part, 8 MiB,
/// to exercise multipart uploads), written first to a file in `scratch`.
/// The first failure is the error.
pub fn run(
    b: &dyn ObjectBackend,
    base: &str,
    large: usize,
    scratch: &std::path::Path,
) -> Result<(), String> {
    ensure!(base.ends_with('/'), "base {base:?} must end in '/'");
    let name = |n: &str| format!("{base}{n}");
    missing_and_bad_names(b, &name("missing"))?;
    small_objects(b, &name("small/one"), &name("small/empty"))?;
    let (big, large_name) = large_object(b, &name("large/object.seg"), large, scratch)?;
    concurrent_reads(b, &large_name, &big)?;
    listing_and_deletes(b, base, &large_name)
}

/// A missing object: no length, NotFound naming it, deleted without
/// error; bad names refused before anything is sent.
fn missing_and_bad_names(b: &dyn ObjectBackend, missing: &str) -> Result<(), String> {
    // Missing objects.
    ensure!(
        b.len(missing).map_err(|e| e.to_string())?.is_none(),
        "len of a missing object must be None"
    );
    let mut one = [0u8; 1];
    match b.read_at(missing, 0, &mut one) {
        Err(BackendError::NotFound(n)) => ensure!(n == *missing, "NotFound names {n}"),
        other => return Err(format!("read of a missing object gave {other:?}")),
    }
    b.delete(missing)
        .map_err(|e| format!("deleting a missing object must succeed: {e}"))?;

    // Bad names are refused before anything is sent.
    for bad in ["", "/abs", "a//b", "../up", "a/../b", "sp ace", "pct%41"] {
        match b.put_bytes(bad, b"x") {
            Err(BackendError::BadName(_)) => {}
            other => return Err(format!("name {bad:?} must be refused, got {other:?}")),
        }
    }

    Ok(())
}

/// A small object: ranges at the start, the middle and the end, reads past
/// its end, replacement; and an empty object.
fn small_objects(b: &dyn ObjectBackend, small: &str, empty: &str) -> Result<(), String> {
    let body = pattern(1000, 1);
    b.put_bytes(small, &body).map_err(|e| e.to_string())?;
    ensure!(
        b.len(small).map_err(|e| e.to_string())? == Some(1000),
        "len of a 1000-byte object"
    );
    for (off, len) in [(0, 1000), (0, 1), (999, 1), (100, 300)] {
        let got = read(b, small, off, len)?;
        ensure!(
            Some(&got[..]) == body.get(off as usize..off as usize + len),
            "bytes of {small} at {off}+{len} differ"
        );
    }
    for (off, len) in [(990, 20), (1000, 1), (5000, 10)] {
        let mut buf = vec![0; len];
        match b.read_at(small, off, &mut buf) {
            Err(BackendError::Short { wanted_end, .. }) => ensure!(
                wanted_end == off + len as u64,
                "Short must name the wanted end"
            ),
            other => return Err(format!("read past the end at {off}+{len} gave {other:?}")),
        }
    }

    // Replacing an object replaces every byte.
    let body2 = pattern(10, 2);
    b.put_bytes(small, &body2).map_err(|e| e.to_string())?;
    ensure!(
        read(b, small, 0, 10)? == body2,
        "a replaced object must read back as the new bytes"
    );
    ensure!(
        b.len(small).map_err(|e| e.to_string())? == Some(10),
        "a replaced object has the new length"
    );

    // An empty object.
    b.put_bytes(empty, &[]).map_err(|e| e.to_string())?;
    ensure!(
        b.len(empty).map_err(|e| e.to_string())? == Some(0),
        "an empty object has length 0"
    );

    Ok(())
}

/// A large object from a file (multipart where the backend has it), read
/// back by ranges; returns its bytes and name.
fn large_object(
    b: &dyn ObjectBackend,
    large_name: &str,
    large: usize,
    scratch: &std::path::Path,
) -> Result<(Vec<u8>, String), String> {
    let src = scratch.join("conformance-large-object");
    let big = pattern(large, 3);
    std::fs::write(&src, &big).map_err(|e| e.to_string())?;
    let put = b.put_file(large_name, &src);
    let _ = std::fs::remove_file(&src);
    put.map_err(|e| format!("put_file of {large} bytes: {e}"))?;
    ensure!(
        b.len(large_name).map_err(|e| e.to_string())? == Some(large as u64),
        "len of the large object"
    );
    let ranges = [
        (0, 4096),
        (large as u64 - 4096, 4096),
        (large as u64 / 2 - 77, 1 << 20),
        ((8 << 20) - 100, 200), // across a part boundary
    ];
    for (off, len) in ranges {
        if off as usize + len > large {
            continue;
        }
        let got = read(b, large_name, off, len)?;
        ensure!(
            Some(&got[..]) == big.get(off as usize..off as usize + len),
            "bytes of the large object at {off}+{len} differ"
        );
    }

    Ok((big, large_name.to_string()))
}

/// Concurrent readers of one object see the right bytes each.
fn concurrent_reads(b: &dyn ObjectBackend, large_name: &str, big: &[u8]) -> Result<(), String> {
    let large = big.len();
    std::thread::scope(|s| -> Result<(), String> {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                s.spawn(move || -> Result<(), String> {
                    for i in 0..8u64 {
                        let len = 64 << 10;
                        let off = (t * 7919 + i * 104_729) * 97 % (large as u64 - len as u64);
                        let got = read(b, large_name, off, len)?;
                        ensure!(
                            Some(&got[..]) == big.get(off as usize..off as usize + len),
                            "concurrent read at {off} differs"
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a reader panicked".to_string())??;
        }
        Ok(())
    })
}

/// Listing by whole path parts, sorted, with lengths; deleting, also
/// twice.
fn listing_and_deletes(b: &dyn ObjectBackend, base: &str, large_name: &str) -> Result<(), String> {
    let name = |n: &str| format!("{base}{n}");
    b.put_bytes(&name("smallish/x"), b"abc")
        .map_err(|e| e.to_string())?;
    let listed = b.list(&name("small/")).map_err(|e| e.to_string())?;
    let want = vec![
        ObjectInfo {
            name: name("small/empty"),
            len: 0,
        },
        ObjectInfo {
            name: name("small/one"),
            len: 10,
        },
    ];
    ensure!(
        listed == want,
        "listing small/ gave {listed:?}, want {want:?}"
    );
    let all = b.list(base).map_err(|e| e.to_string())?;
    ensure!(all.len() == 4, "listing the base gave {all:?}");
    ensure!(
        all.windows(2)
            .all(|w| w.first().map(|o| &o.name) < w.get(1).map(|o| &o.name)),
        "a listing must be sorted"
    );

    // Deleting: gone, and deleting again succeeds.
    for o in &all {
        b.delete(&o.name).map_err(|e| e.to_string())?;
    }
    ensure!(
        b.len(large_name).map_err(|e| e.to_string())?.is_none(),
        "a deleted object must be gone"
    );
    b.delete(large_name)
        .map_err(|e| format!("deleting twice must succeed: {e}"))?;
    let left = b.list(base).map_err(|e| e.to_string())?;
    ensure!(left.is_empty(), "objects left after deletes: {left:?}");
    Ok(())
}
