//! Damaged segments, truncated files, missing or foreign directories.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use imgstore::{Error, Store, StoreOptions};

use crate::common::*;

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &std::path::Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn a_corrupt_byte_in_a_sealed_segment_is_an_error_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(300_000, 1);
    let id = {
        let store = open_small(dir.path());
        let id = put(&store, &data);
        put(&store, &bytes(100_000, 2));
        id
    };
    let first = &segments(dir.path())[0];
    flip_byte(first, 30_000);
    let store = open_small(dir.path());
    let mut out = Vec::new();
    let err = std::io::Read::read_to_end(&mut store.open_file(&id).unwrap(), &mut out)
        .unwrap_err()
        .into_inner()
        .unwrap()
        .downcast::<Error>()
        .unwrap();
    match *err {
        Error::Corrupt(c) => {
            assert_eq!(c.segment.0, 1);
            assert!(c.offset <= 30_000 && c.offset + 70_000 > 30_000, "{c}");
        }
        other => panic!("{other}"),
    }
    let report = store.verify(false).unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.detail.contains("000000000001")),
        "{:#?}",
        report.problems
    );
}

#[test]
fn damage_before_the_indexed_end_of_the_last_segment_is_reported_never_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = open_small(dir.path());
        (
            put(&store, &bytes(20_000, 1)),
            put(&store, &bytes(20_000, 2)),
        )
    };
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    flip_byte(&last, 1000);
    let store = open_small(dir.path());
    let tail = store.recovery_report().unwrap();
    assert!(tail.damaged, "{tail:?}");
    assert!(tail.invalid.as_ref().unwrap().1.contains("not a torn tail"));
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len, "truncated");
    // The undamaged file still reads; the damaged one fails loudly.
    assert_eq!(read_all(&store, &b), bytes(20_000, 2));
    let mut out = Vec::new();
    assert!(std::io::Read::read_to_end(&mut store.open_file(&a).unwrap(), &mut out).is_err());
    assert!(!store.verify(false).unwrap().is_clean());
    // New writes go to a new segment.
    put(&store, &bytes(5_000, 3));
    assert!(segments(dir.path()).len() >= 2);
}

#[test]
fn a_torn_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(20_000, 1);
    let id = {
        let store = open_small(dir.path());
        put(&store, &data)
    };
    let last = segments(dir.path()).pop().unwrap();
    let good_len = std::fs::metadata(&last).unwrap().len();
    // Half a record and some garbage, as a crash mid-append leaves.
    let f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all_at(&[b'I', b'M', b'G', b'C', 1, 0, 0, 0, 9, 9, 9], good_len)
        .unwrap();
    let store = open_small(dir.path());
    let tail = store.recovery_report().unwrap();
    assert_eq!(tail.valid_len, good_len);
    assert!(tail.invalid.is_some());
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good_len);
    assert_eq!(read_all(&store, &id), data);
    assert_clean(&store);
}

#[test]
fn a_truncated_sealed_segment_is_reported_not_papered_over() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open_small(dir.path());
        let id = put(&store, &bytes(300_000, 1));
        put(&store, &bytes(100_000, 2));
        id
    };
    let first = &segments(dir.path())[0];
    let f = OpenOptions::new().write(true).open(first).unwrap();
    f.set_len(10_000).unwrap();
    let store = open_small(dir.path());
    let mut out = Vec::new();
    assert!(std::io::Read::read_to_end(&mut store.open_file(&id).unwrap(), &mut out).is_err());
    assert!(!store.verify(false).unwrap().is_clean());
}

#[test]
fn a_missing_directory_is_refused_unless_creating() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        create: false,
        ..StoreOptions::default()
    };
    match Store::open_with(dir.path().join("nope"), opts) {
        Err(Error::NotAStore { reason, .. }) => assert!(reason.contains("does not exist")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a missing directory"),
    }
}

#[test]
fn a_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("family-photos.jpg"), b"not ours").unwrap();
    match Store::open(dir.path()) {
        Err(Error::NotAStore { reason, .. }) => assert!(reason.contains("IMGSTORE"), "{reason}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("took over a foreign directory"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_segment_from_another_store_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    {
        put(&open_small(a.path()), &bytes(1000, 1));
        put(&open_small(b.path()), &bytes(1000, 2));
    }
    let from_b = segments(b.path()).pop().unwrap();
    std::fs::copy(
        &from_b,
        a.path().join("segments").join(from_b.file_name().unwrap()),
    )
    .unwrap();
    match Store::open(a.path()) {
        Err(Error::Corrupt(c)) => assert!(c.detail.contains("belongs to store"), "{c}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted a foreign segment"),
    }
}

#[test]
fn a_second_opener_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open_small(dir.path());
    match Store::open(dir.path()) {
        Err(e @ Error::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("in use by another process"), "{msg}");
            assert!(
                msg.contains(&format!("pid {}", std::process::id())),
                "{msg}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two openers"),
    }
}

#[test]
fn garbage_file_ids_are_invalid_input() {
    let err = "../../etc/passwd".parse::<imgstore::FileId>().unwrap_err();
    assert!(matches!(Error::from(err), Error::InvalidInput(_)));
}

#[test]
fn verify_reports_exactly_the_damaged_chunks_and_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    let files: Vec<_> = (0..6u64)
        .map(|i| {
            let d = bytes(40_000, 200 + i);
            (put(&store, &d), d)
        })
        .collect();
    drop(store);
    // Two flipped bytes, far apart, in the first segment.
    let seg = dir.path().join("segments/000000000001.seg");
    let mut raw = std::fs::read(&seg).unwrap();
    let (a, b) = (raw.len() / 3, 2 * raw.len() / 3);
    raw[a] ^= 0x10;
    raw[b] ^= 0x01;
    std::fs::write(&seg, raw).unwrap();
    let store = open_small(dir.path());
    let report = store.verify(false).unwrap();
    let bad: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == "bad_chunk")
        .collect();
    assert!(
        (1..=2).contains(&bad.len()),
        "two flipped bytes damage at most two chunks: {:#?}",
        report.problems
    );
    assert!(
        (1..=2).contains(&report.damaged_files.len()),
        "{:?}",
        report.damaged_files
    );
    // Every file verify does not name reads back whole.
    for (id, d) in &files {
        if !report.damaged_files.contains(id) {
            assert_eq!(&read_all(&store, id), d);
        }
    }
}
