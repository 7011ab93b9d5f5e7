//! Helpers shared by the tests.

use std::io::Read;
use std::path::Path;

use imgstore::io::SegmentIo;
use imgstore::{ChunkerParams, FileId, Store, StoreOptions};

/// Small chunks (avg 1 KiB) and small segments (64 KiB) so that tests with
/// little data still rotate segments and share chunks.
pub fn small_options() -> StoreOptions {
    StoreOptions {
        chunker: ChunkerParams::with_average(1024),
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    }
}

pub fn open_small(dir: &Path) -> Store {
    Store::open_with(dir, small_options()).unwrap_or_else(|e| panic!("open: {e}"))
}

pub fn open_small_with_io(dir: &Path, io: Box<dyn SegmentIo>) -> Store {
    let opts = StoreOptions {
        io,
        ..small_options()
    };
    Store::open_with(dir, opts).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Compressible text-like bytes.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let words: [&[u8]; 8] = [
        b"image ",
        b"store ",
        b"chunk ",
        b"segment ",
        b"triton ",
        b"zone ",
        b"kvm ",
        b"lx\n",
    ];
    let r = bytes(n, seed);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(words[(r[i % r.len()] % 8) as usize]);
        i += 1;
    }
    out.truncate(n);
    out
}

pub fn read_all(store: &Store, id: &FileId) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open_file(id)
        .unwrap_or_else(|e| panic!("open {id}: {e}"))
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read {id}: {e}"));
    out
}

pub fn assert_clean(store: &Store) {
    let report = store
        .verify(false)
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(
        report.is_clean(),
        "verify found problems: {:#?}",
        report.problems
    );
}

pub fn put(store: &Store, data: &[u8]) -> FileId {
    store
        .put(data)
        .unwrap_or_else(|e| panic!("put: {e}"))
        .file_id
}
