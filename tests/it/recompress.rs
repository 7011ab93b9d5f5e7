//! Recompressing segments: denser records, the same bytes, garbage gone,
//! readers undisturbed.

use std::io::Read;

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

/// A step gives way to a shutdown: set before the step or while it runs,
/// the flag ends it with `Stopped`, and the segment it was rewriting is
/// as it was (copies made so far are garbage); the next steps finish the
/// job with every byte kept.
#[test]
fn a_stopped_step_leaves_its_segment_whole_and_the_next_one_finishes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let files: Vec<(imgstore::FileId, Vec<u8>)> = (0..6u64)
        .map(|i| {
            let d = text(300_000, 60 + i);
            (put(&store, &d), d)
        })
        .collect();
    let mut memo = imgstore::store::ColdMemo::default();
    let stop = AtomicBool::new(true);
    let before = store.size().unwrap().stored_bytes;
    match store.recompress_step_until(9, Duration::ZERO, &mut memo, &stop) {
        Err(imgstore::Error::Stopped(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.size().unwrap().stored_bytes, before);
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
    // Stopped from another thread while steps run: wherever it lands,
    // nothing is lost.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(5));
            stop.store(true, Ordering::SeqCst);
        });
        loop {
            match store.recompress_step_until(9, Duration::ZERO, &mut memo, &stop) {
                Ok(Some(_)) => {}
                Ok(None) | Err(imgstore::Error::Stopped(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
    });
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
    let mut steps = 0;
    while store
        .recompress_step(9, Duration::ZERO, &mut memo)
        .unwrap()
        .is_some()
    {
        steps += 1;
        assert!(steps < 500, "the pass does not converge");
    }
    assert!(store.size().unwrap().stored_bytes < before);
    drop(store);
    let store = open_small(dir.path());
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
}

/// The daemon's background pass, step by step: cold segments rewritten
/// denser and their records settled, so that further steps find nothing;
/// new uploads make new work, and only that.
#[test]
fn background_steps_settle_cold_segments_once() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let files: Vec<(imgstore::FileId, Vec<u8>)> = (0..4u64)
        .map(|i| {
            let d = text(150_000, 40 + i);
            (put(&store, &d), d)
        })
        .collect();
    let before = store.size().unwrap().stored_bytes;
    let mut memo = imgstore::store::ColdMemo::default();
    // Nothing is an hour old yet.
    assert!(
        store
            .recompress_step(9, Duration::from_secs(3600), &mut memo)
            .unwrap()
            .is_none()
    );
    let mut steps = Vec::new();
    while let Some(step) = store.recompress_step(9, Duration::ZERO, &mut memo).unwrap() {
        steps.push(step);
        assert!(steps.len() < 500, "the pass does not converge");
    }
    assert!(!steps.is_empty());
    let saved: u64 = steps
        .iter()
        .map(|s| s.bytes_before - s.bytes_after.min(s.bytes_before))
        .sum();
    let after = store.size().unwrap().stored_bytes;
    assert!(after < before, "{before} -> {after} ({steps:?})");
    assert!(saved > 0);
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
    // Converged: the rewritten records are settled, and stay put.
    assert!(
        store
            .recompress_step(9, Duration::ZERO, &mut imgstore::store::ColdMemo::default())
            .unwrap()
            .is_none()
    );

    // New data is new work; the old, settled data is not rewritten again.
    let fresh = text(150_000, 99);
    let fresh_id = put(&store, &fresh);
    let mut more = 0;
    while store
        .recompress_step(9, Duration::ZERO, &mut memo)
        .unwrap()
        .is_some()
    {
        more += 1;
        assert!(more < 500);
    }
    // The new data fits one segment; the settled ones are not touched.
    assert!((1..=2).contains(&more), "{more} steps for new data");
    assert_eq!(read_all(&store, &fresh_id), fresh);
    drop(store);
    let store = open_small(dir.path());
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
}

/// The daemon recompresses by itself once data has gone cold, counts it in
/// `/metrics`, and every byte reads back; its config keys parse and are
/// bounded.
#[test]
fn the_daemon_recompresses_cold_data_in_the_background() {
    use crate::daemon::{ALICE, Daemon};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), |c| {
        c.gc_interval = None;
        c.recompress.after = Duration::ZERO;
        c.recompress.idle = Duration::from_millis(100);
        c.segment_bytes = 1 << 20;
    });
    let data = text(3_000_000, 77);
    let uuid = d.image(ALICE, "cold", serde_json::json!({}), &data, true);
    let start = Instant::now();
    let metric =
        |name: &str| crate::metrics::value(&crate::metrics::scrape(&d), name, &[]).unwrap_or(0.0);
    while metric("imgstore_recompressed_segments_total") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing recompressed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric("imgstore_recompress_saved_bytes_total") > 0.0);
    let got = d.get(&format!("/images/{uuid}/file")).bytes().unwrap();
    assert_eq!(got.to_vec(), data);
    let (s, v) = crate::daemon::sj(d.post("/state?action=verify", &serde_json::json!({})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");

    // The config keys: 0 turns the pass off, levels are zstd's, segment
    // sizes are bounded.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(&path, br#"{"recompressLevel": 0}"#).unwrap();
    let c = imgstore::daemon::DaemonConfig::from_file(&path).unwrap();
    assert!(c.recompress.level.is_none());
    std::fs::write(&path, br#"{"recompressLevel": 23}"#).unwrap();
    assert!(imgstore::daemon::DaemonConfig::from_file(&path).is_err());
    std::fs::write(
        &path,
        br#"{"recompressLevel": 12, "recompressAfterSeconds": 60}"#,
    )
    .unwrap();
    let c = imgstore::daemon::DaemonConfig::from_file(&path).unwrap();
    assert_eq!(
        (c.recompress.level, c.recompress.after),
        (Some(12), Duration::from_secs(60))
    );
}

/// Recompression gathers adjacent chunks into group records: they read
/// back, verify, and survive GC after a file whose chunks shared their
/// groups is gone (the groups that lost members are gathered again, and
/// the accounting adds up), and a reopen.
#[test]
fn grouped_chunks_read_verify_and_lose_their_dead_members_to_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let files: Vec<(imgstore::FileId, Vec<u8>)> = (0..3u64)
        .map(|i| {
            let d = text(250_000, 200 + i);
            (put(&store, &d), d)
        })
        .collect();
    let before = store.stats().unwrap();
    assert_eq!(before.grouped_chunks, 0);
    let r = store.recompress(9).unwrap();
    assert!(r.records_rewritten > 0, "{r:?}");
    let grouped = store.stats().unwrap();
    assert!(
        grouped.grouped_chunks * 10 > grouped.live_chunks * 9,
        "most chunks are in groups: {grouped:?}"
    );
    assert!(grouped.live_stored_bytes < before.live_stored_bytes);
    for (id, d) in &files {
        assert_eq!(&read_all(&store, id), d);
    }
    // A range that starts and ends inside groups.
    let (id, d) = &files[1];
    let mut part = Vec::new();
    store
        .open_range(id, 12_345, 100_000)
        .unwrap()
        .read_to_end(&mut part)
        .unwrap();
    assert_eq!(part, d[12_345..112_345]);
    assert_clean(&store);

    // The middle file goes: its groups shared with the others lose
    // members, and GC takes them apart.
    store.unlink(&files[1].0).unwrap();
    let gc = store.gc().unwrap();
    assert!(gc.failed.is_empty(), "{gc:?}");
    let after = store.stats().unwrap();
    assert!(after.stored_bytes < grouped.stored_bytes, "{after:?}");
    for (id, d) in [&files[0], &files[2]] {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
    // Recompressed again, and reopened: the same bytes.
    store.recompress(9).unwrap();
    drop(store);
    let store = open_small(dir.path());
    for (id, d) in [&files[0], &files[2]] {
        assert_eq!(&read_all(&store, id), d);
    }
    assert_clean(&store);
    assert!(store.stats().unwrap().grouped_chunks > 0);
}

/// The offsets of the group records in a store's segment files.
fn groups_in(dir: &std::path::Path) -> Vec<(std::path::PathBuf, usize, usize)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("segments")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut at = imgstore::format::SEGMENT_HEADER_LEN;
        while at < bytes.len() {
            match imgstore::format::decode_stored(&bytes[at..]) {
                Ok((imgstore::format::Stored::Group(g), _)) => {
                    out.push((path.clone(), at, g.header.payload_at()));
                    at += g.record_len() as usize;
                }
                Ok((s, _)) => at += s.record_len() as usize,
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }
    out
}

/// A damaged byte in a group's payload fails the reads of its members
/// with the place, and verify names the chunks and the file.
#[test]
fn a_damaged_group_fails_its_reads_and_verify_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let data = text(200_000, 300);
    let id = put(&store, &data);
    store.recompress(9).unwrap();
    assert_eq!(read_all(&store, &id), data);
    let groups = groups_in(dir.path());
    assert!(!groups.is_empty());
    let (path, at, payload_at) = &groups[0];
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at + payload_at + 7] ^= 0x10;
    std::fs::write(path, &bytes).unwrap();
    let mut out = Vec::new();
    let err = store
        .open_file(&id)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum"), "{err}");
    let report = store.verify(false).unwrap();
    assert!(!report.is_clean());
    assert!(
        report.problems.iter().any(|p| p.kind == "corrupt_record"),
        "{:#?}",
        report.problems
    );
    assert_eq!(report.damaged_files, vec![id], "{:#?}", report.problems);
}

/// A file that repeats its chunks far apart sends reads back to groups
/// decompressed earlier (the store keeps a few): every repeat reads right,
/// whole, in ranges and by concurrent readers, after a restart too.
#[test]
fn a_file_that_repeats_grouped_chunks_far_apart_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let a = text(300_000, 91);
    let b = text(300_000, 92);
    let mut data = Vec::new();
    for part in [&a, &b, &a, &b, &a] {
        data.extend_from_slice(part);
    }
    let id = put(&store, &data);
    store.recompress(9).unwrap();
    assert!(store.stats().unwrap().grouped_chunks > 0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| assert!(read_all(&store, &id) == data));
        }
    });
    for (from, len) in [(250_000u64, 400_000u64), (899_999, 2), (1_200_000, 299_999)] {
        let mut got = Vec::new();
        store
            .open_range(&id, from, len)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(
            got == data[from as usize..(from + len) as usize],
            "{from}+{len}"
        );
    }
    assert_clean(&store);
    drop(store);
    let store = open_small(dir.path());
    assert!(read_all(&store, &id) == data);
}
