//! Recompressing segments: denser records, the same bytes, garbage gone,
//! readers undisturbed.

use crate::common::*;

#[test]
fn recompression_keeps_every_byte_and_stores_less() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let keep = text(400_000, 1);
    let drop_me = text(300_000, 2);
    let a = put(&store, &keep);
    let b = put(&store, &drop_me);
    store.unlink(&b).unwrap();
    let before = store.stats().unwrap();
    let r = store.recompress(9).unwrap();
    assert!(r.segments > 0 && r.records_rewritten > 0, "{r:?}");
    assert!(
        r.live_stored_bytes_after < r.live_stored_bytes_before,
        "{r:?}"
    );
    assert!(r.stored_bytes_after < before.stored_bytes, "{r:?}");
    assert_eq!(read_all(&store, &a), keep);
    assert_clean(&store);
    // Again: nothing left to gain, nothing lost.
    store.recompress(9).unwrap();
    assert_eq!(read_all(&store, &a), keep);
    assert_clean(&store);
    drop(store);
    let store = open_small(dir.path());
    assert_eq!(read_all(&store, &a), keep);
    assert_clean(&store);
}

#[test]
fn readers_and_writers_go_on_while_segments_are_recompressed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let files: Vec<(imgstore::FileId, Vec<u8>)> = (0..6u64)
        .map(|i| {
            let d = text(200_000, 10 + i);
            (put(&store, &d), d)
        })
        .collect();
    std::thread::scope(|s| {
        let st = &store;
        let files = &files;
        let reader = s.spawn(move || {
            for _ in 0..20 {
                for (id, d) in files {
                    assert_eq!(&read_all(st, id), d);
                }
            }
        });
        let writer = s.spawn(move || {
            for i in 0..10u64 {
                let d = bytes(50_000, 100 + i);
                let id = put(st, &d);
                assert_eq!(read_all(st, &id), d);
            }
        });
        store.recompress(6).unwrap();
        reader.join().unwrap();
        writer.join().unwrap();
    });
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
}
