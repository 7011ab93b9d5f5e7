use imgstore::store::SegmentAction;

use crate::common::*;

#[test]
fn gc_plan_changes_nothing_and_execution_reclaims_space() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let keep = bytes(300_000, 1);
    let drop_me = bytes(300_000, 2);
    let k = put(&store, &keep);
    let d = put(&store, &drop_me);
    // Fill and seal more segments so both files sit in sealed ones.
    let filler = put(&store, &bytes(200_000, 3));
    store.unlink(&d).unwrap();
    let before = store.stats().unwrap();
    assert!(before.garbage_bytes >= 290_000, "{before:?}");

    let plan = store.gc_plan(0.3).unwrap();
    assert!(!plan.segments.is_empty());
    assert!(plan.reclaimable_bytes > 250_000, "{plan:?}");
    assert_eq!(store.stats().unwrap(), before, "planning changed the store");

    let report = store.gc_execute(&plan).unwrap();
    assert!(report.bytes_freed > 250_000, "{report:?}");
    let after = store.stats().unwrap();
    assert!(after.stored_bytes < before.stored_bytes - 250_000);
    assert_eq!(read_all(&store, &k), keep);
    assert_eq!(read_all(&store, &filler), bytes(200_000, 3));
    assert_clean(&store);
}

#[test]
fn a_segment_with_no_live_bytes_is_deleted_outright() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let a = put(&store, &bytes(200_000, 1));
    put(&store, &bytes(200_000, 2));
    store.unlink(&a).unwrap();
    let plan = store.gc_plan(0.5).unwrap();
    assert!(
        plan.segments
            .iter()
            .any(|s| s.action == SegmentAction::Delete),
        "{plan:?}"
    );
    let report = store.gc_execute(&plan).unwrap();
    assert!(report.segments_deleted >= 1);
    assert_clean(&store);
}

#[test]
fn a_put_revives_garbage_chunks_it_deduplicates_against() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let data = bytes(300_000, 4);
    let id = put(&store, &data);
    put(&store, &bytes(100_000, 5)); // seal the first segments
    store.unlink(&id).unwrap();
    // The chunks are garbage now but still indexed: the put reuses them.
    let again = store.put(&data[..]).unwrap();
    assert_eq!(again.new_chunks, 0);
    assert_clean(&store);
    // Rewriting everything keeps the revived chunks.
    let report = store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
    assert!(report.records_copied > 0);
    assert_eq!(read_all(&store, &id), data);
    assert_clean(&store);
}

#[test]
fn gc_after_reopen_collects_what_a_failed_put_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_small(dir.path());
        put(&store, &bytes(150_000, 1));
        // A put whose input fails midway leaves unindexed records.
        // Blocks are 4 MiB: fail in the third so two reach the writer.
        let failing = FailingReader {
            data: bytes(10_000_000, 2),
            pos: 0,
            fail_at: 9_000_000,
        };
        assert!(store.put(failing).is_err());
        put(&store, &bytes(100_000, 3));
    }
    let store = open_small(dir.path());
    let s = store.stats().unwrap();
    assert!(s.garbage_bytes > 5_000_000, "{s:?}");
    store.gc_execute(&store.gc_plan(0.3).unwrap()).unwrap();
    assert!(store.stats().unwrap().garbage_bytes < s.garbage_bytes / 2);
    assert_clean(&store);
}

pub struct FailingReader {
    pub data: Vec<u8>,
    pub pos: usize,
    pub fail_at: usize,
}

impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            ));
        }
        let n = buf.len().min(self.fail_at - self.pos).min(8192);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn gcs_started_together_run_one_after_the_other_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let mut ids = Vec::new();
    for i in 0..12u64 {
        ids.push(put(&store, &bytes(60_000, 50 + i)));
    }
    let keep = ids.split_off(6);
    for id in &ids {
        store.unlink(id).unwrap();
    }
    // Every thread plans first, so the plans overlap.
    let plans: Vec<_> = (0..4).map(|_| store.gc_plan(0.1).unwrap()).collect();
    std::thread::scope(|s| {
        for plan in &plans {
            let st = &store;
            s.spawn(move || {
                let r = st.gc_execute(plan).unwrap();
                assert!(r.failed.is_empty(), "{r:?}");
            });
        }
    });
    for (i, id) in keep.iter().enumerate() {
        assert_eq!(read_all(&store, id), bytes(60_000, 56 + i as u64));
    }
    assert_clean(&store);
}

#[test]
fn a_damaged_segment_is_skipped_and_the_rest_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let mut ids = Vec::new();
    for i in 0..8u64 {
        ids.push(put(&store, &bytes(60_000, 70 + i)));
    }
    for id in &ids {
        store.unlink(id).unwrap();
    }
    drop(store);
    // Damage the middle of the second segment.
    let seg = dir.path().join("segments/000000000002.seg");
    let mut raw = std::fs::read(&seg).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0xff;
    std::fs::write(&seg, raw).unwrap();
    let store = open_small(dir.path());
    let before = store.stats().unwrap().segments;
    let plan = store.gc_plan(0.0).unwrap();
    let r = store.gc_execute(&plan).unwrap();
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(r.failed[0].segment, 2);
    assert!(r.failed[0].error.contains("000000000002"), "{r:?}");
    assert!(r.segments_deleted >= before - 2, "{r:?} of {before}");
    assert!(dir.path().join("segments/000000000002.seg").exists());
}

#[test]
fn a_plan_deletes_dead_segments_before_it_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let a = put(&store, &bytes(150_000, 1));
    let b = put(&store, &text(150_000, 2));
    let _c = put(&store, &bytes(150_000, 3));
    store.unlink(&a).unwrap();
    store.unlink(&b).unwrap();
    let plan = store.gc_plan(0.01).unwrap();
    let first_rewrite = plan
        .segments
        .iter()
        .position(|s| s.action == SegmentAction::Rewrite)
        .unwrap_or(plan.segments.len());
    assert!(
        plan.segments[first_rewrite..]
            .iter()
            .all(|s| s.action == SegmentAction::Rewrite),
        "{plan:?}"
    );
}
