//! Threads putting overlapping content, linking and unlinking while GC runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::*;

#[test]
fn concurrent_puts_links_unlinks_and_gc_leave_a_clean_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    // Content that overlaps: every file is built from a small pool of blocks.
    let block = |i: u64| bytes(20_000, i % 12);
    let gc = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                let plan = store.gc_plan(0.1).unwrap();
                store.gc_execute(&plan).unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..40u64 {
                    let data: Vec<u8> = (0..6).flat_map(|j| block(t * 7 + i * 3 + j)).collect();
                    let id = store.put(&data[..]).unwrap().file_id;
                    if i % 3 == 0 {
                        store.link(&id).unwrap();
                        store.unlink(&id).unwrap();
                    }
                    if i % 2 == 0 {
                        store.unlink(&id).unwrap();
                    } else {
                        kept.push((id, data));
                    }
                }
                kept
            })
        })
        .collect();
    let mut kept = Vec::new();
    for w in workers {
        kept.extend(w.join().unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    assert!(gc.join().unwrap() > 0);
    store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
    for (id, data) in &kept {
        assert_eq!(&read_all(&store, id), data);
    }
    assert_clean(&store);
}

#[test]
fn a_put_deduplicating_against_chunks_being_collected_stays_correct() {
    // Each round makes a file's chunks garbage and then races a put of the
    // same content (which revives them) against a GC that rewrites every
    // segment; whichever wins, the file must read back.
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    for round in 0..30u64 {
        let data = bytes(120_000, round);
        let id = put(&store, &data);
        put(&store, &bytes(70_000, 1000 + round)); // seal its segment
        store.unlink(&id).unwrap();
        let s2 = store.clone();
        let gc = std::thread::spawn(move || {
            let plan = s2.gc_plan(0.0).unwrap();
            s2.gc_execute(&plan).unwrap();
        });
        let again = store.put(&data[..]).unwrap();
        gc.join().unwrap();
        assert_eq!(again.file_id, id);
        assert_eq!(read_all(&store, &id), data, "round {round}");
        store.unlink(&id).unwrap();
    }
    assert_clean(&store);
}
