//! Failing writes and fsyncs through the I/O seam.

use imgstore::Error;
use imgstore::io::{EIO, ENOSPC, FaultyIo};

use crate::common::*;

#[test]
fn a_full_disk_fails_the_put_cleanly_and_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultyIo::new();
    let store = open_small_with_io(dir.path(), Box::new(faults.clone()));
    let kept = bytes(200_000, 1);
    let kept_id = put(&store, &kept);

    faults.fail_writes_after(50_000, ENOSPC);
    let err = store.put(&bytes(2_000_000, 2)[..]).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    // The cause is said once: "... segment N: No space left on device".
    let text = err.to_string();
    assert_eq!(text.matches("os error 28").count(), 1, "{text}");
    assert!(text.contains("segment 0"), "{text}");
    // Further writes fail too while the disk is full ...
    assert!(store.put(&bytes(300_000, 3)[..]).is_err());
    // ... and work again once space is freed, without a restart.
    faults.heal();
    let later = bytes(300_000, 4);
    let later_id = put(&store, &later);
    assert_eq!(read_all(&store, &kept_id), kept);
    assert_eq!(read_all(&store, &later_id), later);
    assert_clean(&store);
    drop(store);

    let store = open_small(dir.path());
    assert_eq!(read_all(&store, &kept_id), kept);
    assert_eq!(read_all(&store, &later_id), later);
    assert_clean(&store);
}

#[test]
fn a_put_that_fails_with_many_blocks_in_flight_returns_its_error() {
    // 24 MiB: more blocks than the put lets be in flight between its
    // stages, all of them held up when the writer fails at once.
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultyIo::new();
    let store = open_small_with_io(dir.path(), Box::new(faults.clone()));
    faults.fail_writes_after(10_000, ENOSPC);
    let err = store.put(&bytes(24 << 20, 5)[..]).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    faults.heal();
    let later = bytes(300_000, 6);
    let later_id = put(&store, &later);
    assert_eq!(read_all(&store, &later_id), later);
    assert_clean(&store);
}

#[test]
fn a_failing_fsync_is_an_error_never_an_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultyIo::new();
    let store = open_small_with_io(dir.path(), Box::new(faults.clone()));
    let kept = text(100_000, 1);
    let kept_id = put(&store, &kept);

    faults.fail_syncs_after(0, EIO);
    let lost = bytes(150_000, 2);
    let err = store.put(&lost[..]).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::WritesFailed(_)),
        "{err}"
    );
    let lost_id = imgstore::FileId(*blake3::hash(&lost).as_bytes());
    assert!(matches!(store.stat(&lost_id), Err(Error::FileNotFound(_))));

    faults.heal();
    let after = bytes(120_000, 3);
    let after_id = put(&store, &after);
    assert_clean(&store);
    drop(store);
    let store = open_small(dir.path());
    assert_eq!(read_all(&store, &kept_id), kept);
    assert_eq!(read_all(&store, &after_id), after);
    assert_clean(&store);
}

#[test]
fn failures_at_every_point_of_a_put_leave_a_verifiable_store() {
    // Fail the n-th fsync and a write after k bytes, for a spread of n and k.
    for n in 0..4u64 {
        for k in [0u64, 100, 30_000, 70_000] {
            let dir = tempfile::tempdir().unwrap();
            let faults = FaultyIo::new();
            let store = open_small_with_io(dir.path(), Box::new(faults.clone()));
            let first = put(&store, &bytes(90_000, 100 + n));
            faults.fail_syncs_after(n, EIO);
            faults.fail_writes_after(k, ENOSPC);
            let _ = store.put(&bytes(200_000, 200 + k)[..]);
            faults.heal();
            assert_clean(&store);
            drop(store);
            let store = open_small(dir.path());
            assert_eq!(read_all(&store, &first), bytes(90_000, 100 + n));
            assert_clean(&store);
        }
    }
}

#[test]
fn failed_writes_on_a_full_disk_leave_no_empty_segments_behind() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultyIo::new();
    let store = open_small_with_io(dir.path(), Box::new(faults.clone()));
    let kept = bytes(100_000, 1);
    let kept_id = put(&store, &kept);
    let segments = || {
        std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .count()
    };
    let before = segments();
    for i in 0..10u64 {
        // Each attempt gets just enough for a new segment's header.
        faults.fail_writes_after(48, ENOSPC);
        assert!(store.put(&bytes(200_000, 10 + i)[..]).is_err());
    }
    assert!(
        segments() <= before + 1,
        "{} segments after ten failed writes, {before} before",
        segments()
    );
    faults.heal();
    let later = bytes(150_000, 30);
    let later_id = put(&store, &later);
    assert_eq!(read_all(&store, &kept_id), kept);
    assert_eq!(read_all(&store, &later_id), later);
    assert_clean(&store);
    drop(store);
    let store = open_small(dir.path());
    assert_eq!(read_all(&store, &later_id), later);
    assert_clean(&store);
}

#[test]
fn gc_on_a_full_disk_rewrites_with_the_reserve_and_uploads_work_again() {
    // Without a reserve the same store cannot compact: the control.
    for reserve in [0u64, 256 * 1024] {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultyIo::new();
        let store = imgstore::Store::open_with(
            dir.path(),
            imgstore::StoreOptions {
                io: Box::new(faults.clone()),
                reserve_bytes: reserve,
                ..small_options()
            },
        )
        .unwrap();
        // Kept and dropped files alternate, so segments hold both: every
        // byte GC frees needs a rewrite first.
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for i in 0..12u64 {
            let data = bytes(20_000, 100 + i);
            let id = put(&store, &data);
            if i % 2 == 0 {
                kept.push((id, data));
            } else {
                dropped.push(id);
            }
        }
        // The disk fills up: uploads fail.
        faults.fail_writes_after(0, ENOSPC);
        let err = store.put(&bytes(30_000, 7)[..]).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        for id in &dropped {
            store.unlink(id).unwrap();
        }
        let report = store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
        if reserve == 0 {
            assert!(!report.failed.is_empty(), "{report:?}");
            assert_clean(&store);
            continue;
        }
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(report.reserve_released > 0, "{report:?}");
        assert!(report.segments_rewritten > 0, "{report:?}");
        assert!(report.reserve_held > 0, "{report:?}");
        // Uploads work again; nothing acknowledged was lost.
        let later = bytes(30_000, 7);
        let later_id = put(&store, &later);
        assert_eq!(read_all(&store, &later_id), later);
        for (id, data) in &kept {
            assert_eq!(&read_all(&store, id), data);
        }
        assert_clean(&store);
    }
}
