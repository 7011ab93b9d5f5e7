use std::io::Read;

use imgstore::{Error, FileId};

use crate::common::*;

#[test]
fn put_and_read_back_round_trip_for_various_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    for (i, n) in [0usize, 1, 255, 1024, 5000, 300_000]
        .into_iter()
        .enumerate()
    {
        let data = bytes(n, i as u64);
        let r = store.put(&data[..]).unwrap();
        assert_eq!(r.size, n as u64);
        assert_eq!(r.file_id, FileId(*blake3::hash(&data).as_bytes()));
        assert_eq!(read_all(&store, &r.file_id), data, "size {n}");
    }
    assert_clean(&store);
}

#[test]
fn put_reports_sha1_and_md5_of_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let r = store.put(&b"abc"[..]).unwrap();
    assert_eq!(r.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_eq!(r.md5, "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(r.chunk_count, 1);
}

#[test]
fn identical_content_is_stored_once_with_two_references() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let data = text(200_000, 3);
    let a = store.put(&data[..]).unwrap();
    let before = store.stats().unwrap();
    let b = store.put(&data[..]).unwrap();
    assert!(b.existed);
    assert_eq!(b.refs, 2);
    assert_eq!(a.file_id, b.file_id);
    let after = store.stats().unwrap();
    assert_eq!(before.live_stored_bytes, after.live_stored_bytes);
    assert_eq!(after.logical_bytes, 2 * data.len() as u64);
}

#[test]
fn shared_chunks_are_stored_once_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let base = bytes(400_000, 1);
    let mut edited = base.clone();
    edited.splice(200_000..200_000, b"a small insertion".iter().copied());
    let a = store.put(&base[..]).unwrap();
    let b = store.put(&edited[..]).unwrap();
    assert!(a.new_chunks > 100);
    assert!(b.new_chunks <= 6, "edit stored {} new chunks", b.new_chunks);
    let usage = store.file_usage(&b.file_id).unwrap();
    assert!(usage.shared_bytes > 390_000, "{usage:?}");
    assert!(usage.unique_bytes < 20_000, "{usage:?}");
    assert_eq!(usage.unique_bytes + usage.shared_bytes, edited.len() as u64);
}

#[test]
fn chunks_repeated_across_the_file_are_stored_once_and_read_back_in_place() {
    // 48 copies of one random stretch (the small store's chunks are about
    // 1 KiB): the same chunks recur in every 1 MiB block the put cuts, which
    // the namers take in parallel, so any of them may claim a chunk first,
    // and the writer must still put the list together in file order.
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let stretch = bytes(96 * 1024, 7);
    let mut data = Vec::new();
    for i in 0..48u8 {
        data.extend_from_slice(&stretch);
        data.extend_from_slice(&[i; 3]); // a seam of its own per copy
    }
    let r = store.put(&data[..]).unwrap();
    assert_eq!(r.file_id, FileId(*blake3::hash(&data).as_bytes()));
    assert!(
        r.new_stored_bytes < 3 * stretch.len() as u64,
        "{} bytes stored for {} distinct",
        r.new_stored_bytes,
        stretch.len()
    );
    assert!(r.chunk_count > 10 * r.new_chunks, "{r:?}");
    assert_eq!(read_all(&store, &r.file_id), data);
    assert_clean(&store);
    // A second put of the same bytes finds every chunk stored.
    let again = store.put(&data[..]).unwrap();
    assert!(again.existed);
    assert_eq!(again.new_stored_bytes, 0);
    assert_clean(&store);
}

#[test]
fn range_reads_return_exactly_the_requested_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let data = bytes(3_000_000, 5);
    let id = put(&store, &data);
    for (off, len) in [
        (0u64, 1u64),
        (1, 0),
        (1023, 2),
        (4096, 70_000),
        (1_500_000, 1_500_000),
        (2_999_999, 1),
    ] {
        let mut out = Vec::new();
        store
            .open_range(&id, off, len)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data[off as usize..(off + len) as usize], "{off}+{len}");
    }
    assert!(matches!(
        store.open_range(&id, 2_999_999, 2),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn link_is_one_reference_and_unlink_of_the_last_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let id = put(&store, &bytes(100_000, 9));
    assert_eq!(store.link(&id).unwrap(), 2);
    assert_eq!(store.unlink(&id).unwrap(), 1);
    assert_eq!(store.stat(&id).unwrap().refs, 1);
    assert_eq!(store.unlink(&id).unwrap(), 0);
    assert!(matches!(store.stat(&id), Err(Error::FileNotFound(_))));
    assert!(matches!(store.open_file(&id), Err(Error::FileNotFound(_))));
    assert!(matches!(store.unlink(&id), Err(Error::FileNotFound(_))));
    let s = store.stats().unwrap();
    assert_eq!((s.files, s.live_chunks, s.live_stored_bytes), (0, 0, 0));
    assert_clean(&store);
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = text(500_000, 7);
    let id = {
        let store = open_small(dir.path());
        put(&store, &data)
    };
    let store = open_small(dir.path());
    assert_eq!(read_all(&store, &id), data);
    assert_clean(&store);
}

#[test]
fn chunker_parameters_are_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_small(dir.path()));
    let store = imgstore::Store::open(dir.path()).unwrap();
    assert_eq!(store.params().chunk_avg, 1024);
}

#[test]
fn compressible_data_is_stored_compressed_and_random_data_raw() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let t = store.put(&text(1_000_000, 1)[..]).unwrap();
    assert!(t.new_stored_bytes < 500_000, "{t:?}");
    let r = store.put(&bytes(1_000_000, 1)[..]).unwrap();
    // Raw records: only the 56-byte headers on top.
    assert!(
        r.new_stored_bytes < 1_000_000 + 56 * r.new_chunks + 1,
        "{r:?}"
    );
    assert!(r.new_stored_bytes >= 1_000_000);
}
