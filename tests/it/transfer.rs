//! The chunk-diff transfer through the `ChunkSource` contract, against a
//! local source and through lying, failing and slow wrappers. The HTTP
//! source runs the same suite in `xdc.rs`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use imgstore::error::Result;
use imgstore::format::{self, ChunkList};
use imgstore::transfer::{
    ChunkSource, Expect, LocalSource, Progress, ReceiveOptions, receive_file,
};
use imgstore::{ChunkId, Store};

use crate::common::*;

pub fn opts() -> ReceiveOptions {
    ReceiveOptions {
        batch_bytes: 64 * 1024,
        parallel: 2,
        window_bytes: 32 << 20,
        attempts: 2,
        retry_delay: Duration::from_millis(5),
        verify_md5: true,
        check: imgstore::transfer::FileCheck::Before,
    }
}

/// Flips a payload byte and fixes up the CRCs: only BLAKE3 can tell.
pub struct Lying<S>(pub S);
impl<S: ChunkSource> ChunkSource for Lying<S> {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.0.fetch(ids, &mut |rec| {
            let (h, payload) = format::decode_record(rec).unwrap();
            let mut p = payload.to_vec();
            let last = p.len() - 1;
            p[last] ^= 1;
            let mut forged =
                format::encode_record_header(h.codec, &h.chunk_id, h.raw_len, &p).to_vec();
            forged.extend_from_slice(&p);
            out(&forged)
        })
    }
}

/// Answers every request with the records of other chunks.
pub struct WrongIds<S>(pub S, pub Vec<ChunkId>);
impl<S: ChunkSource> ChunkSource for WrongIds<S> {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let others: Vec<ChunkId> = self
            .1
            .iter()
            .filter(|i| !ids.contains(i))
            .take(ids.len())
            .copied()
            .collect();
        self.0.fetch(&others, out)
    }
}

/// Drops the last record of every answer.
pub struct Truncating<S>(pub S);
impl<S: ChunkSource> ChunkSource for Truncating<S> {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.0.fetch(&ids[..ids.len() - 1], out)
    }
}

/// Serves `ok` fetches, then fails every one (a source that went away).
pub struct Vanishing<S>(pub S, pub AtomicU32);
impl<S: ChunkSource> ChunkSource for Vanishing<S> {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if self.1.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.1.store(0, Ordering::SeqCst);
            return Err(imgstore::Error::InvalidInput("connection reset".into()));
        }
        self.0.fetch(ids, out)
    }
}

/// Slow but honest.
pub struct Slow<S>(pub S);
impl<S: ChunkSource> ChunkSource for Slow<S> {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        std::thread::sleep(Duration::from_millis(20));
        self.0.fetch(ids, out)
    }
}

/// Counts fetches in flight, and the most there ever were.
pub struct Overlap<S> {
    inner: S,
    now: AtomicU32,
    most: AtomicU32,
}
impl<S: ChunkSource> ChunkSource for Overlap<S> {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.inner.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        // Long enough that fetchers the window let through would overlap.
        std::thread::sleep(Duration::from_millis(10));
        let r = self.inner.fetch(ids, out);
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

fn store(dir: &std::path::Path) -> Store {
    open_small(dir)
}

/// A source store holding `data`; returns its store and file id.
pub fn source_with(dir: &std::path::Path, data: &[u8]) -> (Store, imgstore::FileId) {
    let s = store(dir);
    let id = put(&s, data);
    (s, id)
}

const P: [u8; 16] = [7; 16];

/// A source serving `data`, its file id, and what must live as long as it.
pub type MakeSource = dyn Fn(
    &[u8],
) -> (
    Box<dyn ChunkSource>,
    imgstore::FileId,
    Box<dyn std::any::Any>,
);

/// A local store holding `data`, served by `wrap(LocalSource)`.
pub fn local(wrap: fn(LocalSource) -> Box<dyn ChunkSource>) -> Box<MakeSource> {
    Box::new(move |data: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let (src, id) = source_with(dir.path(), data);
        (
            wrap(LocalSource::new(src.clone(), id).unwrap()),
            id,
            Box::new((dir, src)) as Box<dyn std::any::Any>,
        )
    })
}

/// The conformance suite: any source must let these pass.
pub fn conformance(make: &MakeSource) {
    let data = text(600_000, 1);
    let (source, id, _keep) = make(&data);

    // The list describes the file.
    let list = source.chunk_list().unwrap();
    assert_eq!(list.size, data.len() as u64);
    assert_eq!(list.file_id, *id.as_bytes());
    // Records come back as stored, in order.
    let ids: Vec<ChunkId> = list.entries.iter().take(5).map(|e| e.id).collect();
    let mut got = Vec::new();
    source
        .fetch(&ids, &mut |r| {
            got.push(format::decode_record(r).unwrap().0.chunk_id);
            Ok(())
        })
        .unwrap();
    assert_eq!(got, ids);
    // Ids of other files are refused.
    assert!(
        source
            .fetch(&[ChunkId([0xee; 32])], &mut |_| Ok(()))
            .is_err()
    );

    // A full copy, every chunk verified.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    let progress = Progress::default();
    let r = receive_file(
        &dst,
        source.as_ref(),
        &P,
        &Expect::default(),
        &progress,
        &opts(),
    )
    .unwrap();
    assert_eq!(r.file_id, id);
    assert_eq!(read_all(&dst, &id), data);
    let p = progress.report();
    assert_eq!(p.bytes_local, 0);
    assert_eq!(p.bytes_fetched, p.bytes_to_fetch);
    assert_eq!(
        p.wire_bytes,
        list.entries
            .iter()
            .map(|e| u64::from(e.record_len))
            .sum::<u64>()
            - dup_bytes(&list)
    );
    assert_eq!(
        dst.partial_len(&P).unwrap(),
        0,
        "the transfer's hold was released"
    );
    assert_clean(&dst);
}

fn dup_bytes(list: &ChunkList) -> u64 {
    let mut seen = std::collections::HashSet::new();
    list.entries
        .iter()
        .filter(|e| !seen.insert(e.id))
        .map(|e| u64::from(e.record_len))
        .sum()
}

#[test]
fn a_local_source_passes_the_conformance_suite() {
    conformance(&local(|s| Box::new(s)));
}

#[test]
fn a_slow_source_passes_the_conformance_suite() {
    conformance(&local(|s| Box::new(Slow(s))));
}

#[test]
fn only_missing_chunks_travel_in_an_incremental_copy() {
    let src_dir = tempfile::tempdir().unwrap();
    let v1 = bytes(800_000, 1);
    let mut v2 = v1.clone();
    v2.splice(400_000..400_000, bytes(50_000, 2));
    let (src, id1) = source_with(src_dir.path(), &v1);
    let id2 = put(&src, &v2);
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    let p1 = Progress::default();
    receive_file(
        &dst,
        &LocalSource::new(src.clone(), id1).unwrap(),
        &P,
        &Expect::default(),
        &p1,
        &opts(),
    )
    .unwrap();
    let p2 = Progress::default();
    receive_file(
        &dst,
        &LocalSource::new(src.clone(), id2).unwrap(),
        &[8; 16],
        &Expect::default(),
        &p2,
        &opts(),
    )
    .unwrap();
    let r = p2.report();
    assert!(r.bytes_local > 790_000, "{r:?}");
    assert!(r.bytes_fetched < 60_000, "{r:?}");
    assert_eq!(read_all(&dst, &id2), v2);
    assert_clean(&dst);
}

#[test]
fn fetched_chunks_wait_for_the_assembler_only_within_the_window() {
    let src_dir = tempfile::tempdir().unwrap();
    let data = bytes(1_500_000, 3);
    let (src, id) = source_with(src_dir.path(), &data);
    let source = Overlap {
        inner: LocalSource::new(src.clone(), id).unwrap(),
        now: AtomicU32::new(0),
        most: AtomicU32::new(0),
    };
    // A window smaller than any batch: only the batch the assembler needs
    // may be fetched, however many fetchers there are.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    let narrow = ReceiveOptions {
        parallel: 4,
        window_bytes: 1,
        ..opts()
    };
    let p = Progress::default();
    receive_file(&dst, &source, &P, &Expect::default(), &p, &narrow).unwrap();
    assert!(p.report().chunks_fetched > 8, "{:?}", p.report());
    assert_eq!(source.most.load(Ordering::SeqCst), 1);
    assert_eq!(read_all(&dst, &id), data);
    assert_clean(&dst);
}

#[test]
fn a_lying_source_never_gets_a_bad_chunk_indexed_and_an_honest_one_resumes() {
    let src_dir = tempfile::tempdir().unwrap();
    let data = bytes(300_000, 3);
    let (src, id) = source_with(src_dir.path(), &data);
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    let honest = || LocalSource::new(src.clone(), id).unwrap();
    let all: Vec<ChunkId> = src
        .chunk_list(&id)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id)
        .collect();
    for liar in [
        Box::new(Lying(honest())) as Box<dyn ChunkSource>,
        Box::new(WrongIds(honest(), all.clone())),
        Box::new(Truncating(honest())),
    ] {
        let err = receive_file(
            &dst,
            liar.as_ref(),
            &P,
            &Expect::default(),
            &Progress::default(),
            &opts(),
        );
        assert!(err.is_err());
        assert_eq!(dst.stats().unwrap().files, 0);
        assert_clean(&dst);
    }
    let r = receive_file(
        &dst,
        &honest(),
        &P,
        &Expect::default(),
        &Progress::default(),
        &opts(),
    )
    .unwrap();
    assert_eq!(read_all(&dst, &r.file_id), data);
    assert_clean(&dst);
}

#[test]
fn an_interrupted_copy_resumes_without_fetching_again() {
    let src_dir = tempfile::tempdir().unwrap();
    let data = bytes(1_000_000, 4);
    let (src, id) = source_with(src_dir.path(), &data);
    let dst_dir = tempfile::tempdir().unwrap();
    {
        let dst = store(dst_dir.path());
        let vanishing = Vanishing(
            LocalSource::new(src.clone(), id).unwrap(),
            AtomicU32::new(6),
        );
        let p = Progress::default();
        assert!(receive_file(&dst, &vanishing, &P, &Expect::default(), &p, &opts()).is_err());
        assert!(p.report().chunks_fetched > 0);
        assert!(dst.partial_len(&P).unwrap() > 0);
        assert_clean(&dst); // held chunks are accounted for
    }
    // Reopened (as after a crash): held chunks survive GC and count as present.
    let dst = store(dst_dir.path());
    dst.gc_execute(&dst.gc_plan(0.0).unwrap()).unwrap();
    let held = dst.partial_len(&P).unwrap();
    let p = Progress::default();
    receive_file(
        &dst,
        &LocalSource::new(src.clone(), id).unwrap(),
        &P,
        &Expect::default(),
        &p,
        &opts(),
    )
    .unwrap();
    let r = p.report();
    assert_eq!(r.chunks_local as usize, held, "{r:?}");
    assert_eq!(r.chunks_fetched + r.chunks_local, r.chunks_total);
    assert_eq!(read_all(&dst, &id), data);
    assert_clean(&dst);
}

#[test]
fn a_given_up_transfer_releases_what_it_held() {
    let src_dir = tempfile::tempdir().unwrap();
    let (src, id) = source_with(src_dir.path(), &bytes(500_000, 5));
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    let vanishing = Vanishing(
        LocalSource::new(src.clone(), id).unwrap(),
        AtomicU32::new(3),
    );
    assert!(
        receive_file(
            &dst,
            &vanishing,
            &P,
            &Expect::default(),
            &Progress::default(),
            &opts()
        )
        .is_err()
    );
    dst.release_partial(&P).unwrap();
    dst.gc_execute(&dst.gc_plan(0.0).unwrap()).unwrap();
    assert_eq!(dst.stats().unwrap().live_stored_bytes, 0);
    assert_clean(&dst);
}

#[test]
fn the_expected_sha1_and_size_are_enforced() {
    let src_dir = tempfile::tempdir().unwrap();
    let (src, id) = source_with(src_dir.path(), &bytes(100_000, 6));
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    let source = LocalSource::new(src.clone(), id).unwrap();
    let wrong = Expect {
        size: None,
        sha1: Some([0; 20]),
    };
    assert!(receive_file(&dst, &source, &P, &wrong, &Progress::default(), &opts()).is_err());
    let wrong = Expect {
        size: Some(5),
        sha1: None,
    };
    assert!(receive_file(&dst, &source, &P, &wrong, &Progress::default(), &opts()).is_err());
    assert_eq!(dst.stats().unwrap().files, 0);
}

#[test]
fn a_split_stream_that_ends_mid_record_is_an_error() {
    let src_dir = tempfile::tempdir().unwrap();
    let (src, id) = source_with(src_dir.path(), &bytes(20_000, 7));
    let list = src.chunk_list(&id).unwrap();
    let mut stream = Vec::new();
    LocalSource::new(src.clone(), id)
        .unwrap()
        .fetch(
            &list.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            &mut |r| {
                stream.extend_from_slice(r);
                Ok(())
            },
        )
        .unwrap();
    let mut n = 0;
    imgstore::transfer::split_records(&stream[..], &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, list.entries.len());
    assert!(
        imgstore::transfer::split_records(&stream[..stream.len() - 3], &mut |_| Ok(())).is_err()
    );
    assert!(imgstore::transfer::split_records(&stream[..30], &mut |_| Ok(())).is_err());
}
