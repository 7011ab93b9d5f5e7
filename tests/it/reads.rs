//! The read path: batches read ahead on the shared pool, taken back in
//! order, every record checked; ranges; readers that stop early; damage.

use std::io::Read;

use imgstore::{Store, StoreOptions};

use crate::common::*;

/// Big enough for many batches with small chunks.
fn store_with(dir: &std::path::Path, threads: usize) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            read_threads: threads,
            ..small_options()
        },
    )
    .unwrap()
}

#[test]
fn concurrent_readers_of_ranges_get_exactly_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 2);
    let data = text(6_000_000, 11);
    let id = put(&store, &data);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (store, data) = (&store, &data);
            s.spawn(move || {
                for k in 0..5u64 {
                    let off = (t * 731_003 + k * 1_048_573) % data.len() as u64;
                    let len = ((t + 1) * 377_777 + k * 4099).min(data.len() as u64 - off);
                    let mut got = Vec::new();
                    store
                        .open_range(&id, off, len)
                        .unwrap()
                        .read_to_end(&mut got)
                        .unwrap();
                    assert_eq!(got, data[off as usize..(off + len) as usize]);
                }
            });
        }
    });
    assert_eq!(
        store.readahead_bytes(),
        0,
        "every reader gave its budget back"
    );
}

#[test]
fn readers_dropped_midway_give_back_what_they_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 1);
    let data = bytes(5_000_000, 3);
    let id = put(&store, &data);
    for n in 0..50usize {
        let mut r = store.open_file(&id).unwrap();
        let mut buf = vec![0u8; 10_000 + n * 997];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, data[..buf.len()]);
    }
    assert_eq!(store.readahead_bytes(), 0);
    // Still reads, with or without pool threads.
    assert_eq!(read_all(&store, &id), data);
    drop(store);
    let store = store_with(dir.path(), 1);
    assert_eq!(read_all(&store, &id), data);
}

#[test]
fn a_damaged_record_in_the_middle_of_a_file_names_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 2);
    let data = bytes(2_000_000, 9);
    let id = put(&store, &data);
    drop(store);
    // Flip a byte in the middle of the first segment.
    let seg = dir.path().join("segments/000000000001.seg");
    let mut raw = std::fs::read(&seg).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x40;
    std::fs::write(&seg, raw).unwrap();
    let store = store_with(dir.path(), 2);
    let mut out = Vec::new();
    let err = store
        .open_file(&id)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("segment 000000000001"), "{text}");
    assert!(out.len() < data.len());
    // What came before the damage is exactly the file's bytes.
    assert_eq!(out, data[..out.len()]);
}
