//! Power loss, not only kill -9: the store runs a workload of puts, links,
//! unlinks, GC, background recompression and a transfer from another store
//! on the power-loss seam
//! (`imgstore::io::PowerLossIo`); the power is cut after every possible
//! number of segment operations in turn, the files become what the disk
//! would hold (unsynced tails cut or partly kept, undurable creations and
//! removals undone), and the reopened store must hold every file its
//! committed index names, byte for byte, with the same references, verify
//! clean, and take new writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use imgstore::io::PowerLossIo;
use imgstore::transfer::{Expect, LocalSource, Progress, receive_file};
use imgstore::{FileId, Store};

use crate::common::*;

/// The contents of the workload, by name.
fn contents() -> BTreeMap<&'static str, Vec<u8>> {
    let a = text(200_000, 1);
    let mut b = a[..100_000].to_vec();
    b.extend(bytes(100_000, 2));
    BTreeMap::from([
        ("a", a),
        ("b", b),
        ("c", text(150_000, 3)),
        ("d", bytes(120_000, 4)),
    ])
}

/// References each file has in the committed index (RocksDB's commits
/// are synced: what it acknowledged survives the cut).
fn refs(store: &Store, ids: &BTreeMap<&'static str, FileId>) -> BTreeMap<&'static str, u64> {
    ids.iter()
        .map(|(name, id)| (*name, store.stat(id).map_or(0, |r| r.refs)))
        .collect()
}

/// Runs the workload; each step may fail once the power is off. Returns
/// the references the committed index holds at the end.
fn workload(
    store: &Store,
    src: &Store,
    ids: &BTreeMap<&'static str, FileId>,
    data: &BTreeMap<&'static str, Vec<u8>>,
) -> BTreeMap<&'static str, u64> {
    let mut acked: Vec<String> = Vec::new();
    let mut step = |what: &str, ok: bool| {
        if ok {
            acked.push(what.to_string());
        }
    };
    step("put a", store.put(&data["a"][..]).is_ok());
    step("put b", store.put(&data["b"][..]).is_ok());
    step("link a", store.link(&ids["a"]).is_ok());
    let before = refs(store, ids);
    let unlinked = store.unlink(&ids["a"]).is_ok();
    // An acknowledged change is in the committed index at once.
    if unlinked {
        assert_eq!(refs(store, ids)["a"], before["a"] - 1, "{acked:?}");
    }
    step("unlink a", unlinked);
    step("unlink a", store.unlink(&ids["a"]).is_ok());
    let gc = store.gc_plan(0.0).and_then(|p| store.gc_execute(&p));
    step("gc", gc.is_ok());
    let source = LocalSource::new(src.clone(), ids["c"]).unwrap();
    let received = receive_file(
        store,
        &source,
        &[9u8; 16],
        &Expect::default(),
        &Progress::default(),
        &crate::transfer::opts(),
    );
    step("receive c", received.is_ok());
    step("put d", store.put(&data["d"][..]).is_ok());
    // Background recompression: cold segments rewritten, records settled.
    let mut memo = imgstore::store::ColdMemo::default();
    for _ in 0..2 {
        let r = store.recompress_step(9, std::time::Duration::ZERO, &mut memo);
        step("recompress", r.is_ok());
    }
    step("unlink b", store.unlink(&ids["b"]).is_ok());
    let gc = store.gc_plan(0.0).and_then(|p| store.gc_execute(&p));
    step("gc", gc.is_ok());
    refs(store, ids)
}

/// One trial: cut after `cut` operations (None: never), lose power,
/// reopen, check. Returns the operations the workload did.
fn trial(
    cut: Option<u64>,
    src: &Store,
    ids: &BTreeMap<&'static str, FileId>,
    data: &BTreeMap<&'static str, Vec<u8>>,
) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let io = PowerLossIo::new();
    let store = open_small_with_io(dir.path(), Box::new(Arc::clone(&io)));
    if let Some(n) = cut {
        io.cut_after(n);
    }
    let committed = workload(&store, src, ids, data);
    let ops = io.ops();
    drop(store);
    io.apply(cut.unwrap_or(0)).unwrap();

    let store = open_small(dir.path());
    let after = refs(&store, ids);
    assert_eq!(after, committed, "cut after {cut:?}: references changed");
    for (name, n) in &after {
        if *n > 0 {
            assert_eq!(
                read_all(&store, &ids[name]),
                data[name],
                "cut after {cut:?}: {name} differs"
            );
        }
    }
    // Chunks an interrupted transfer held go back; then all is clean,
    // collectable, and takes new writes.
    store.release_partial(&[9u8; 16]).unwrap();
    assert_clean(&store);
    store
        .gc_execute(&store.gc_plan(0.0).unwrap())
        .unwrap_or_else(|e| panic!("cut after {cut:?}: gc after the loss: {e}"));
    assert_clean(&store);
    let fresh = bytes(20_000, 99);
    let id = put(&store, &fresh);
    assert_eq!(read_all(&store, &id), fresh);
    ops
}

#[test]
fn every_cut_point_of_put_link_gc_and_transfer_keeps_what_was_committed() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = open_small(src_dir.path());
    let data = contents();
    let ids: BTreeMap<&'static str, FileId> =
        data.iter().map(|(name, d)| (*name, put(&src, d))).collect();
    // Without a cut: the whole workload, and how many operations it does.
    let total = trial(None, &src, &ids, &data);
    assert!(total > 20, "the workload did {total} operations");
    // Every cut point up to 300, then a spread of the rest.
    let step = (total / 300).max(1);
    let mut cuts = 0;
    for cut in (0..=total).step_by(step as usize) {
        trial(Some(cut), &src, &ids, &data);
        cuts += 1;
    }
    eprintln!("{cuts} power cuts over a workload of {total} segment operations");
}
