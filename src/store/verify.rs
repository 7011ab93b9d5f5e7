//! `verify`: recompute what the index should say from ground truth and check
//! every stored byte.
//!
//! Ground truth is the file records (for refcounts) and the segment files
//! (for chunk data). Every record of every segment is decoded and its CRCs
//! checked; every indexed chunk is decompressed and hashed against its id.
//! Wrong refcounts and segment accounting can be repaired; a missing or
//! damaged chunk that a file needs cannot, and is reported with its place.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{SegmentDeltas, Store};
use crate::error::Result;
use crate::format::{self, SEGMENT_HEADER_LEN, ScanEnd};
use crate::id::{ChunkId, SegmentId};
use crate::index::SegmentEntry;
use crate::segment::lock;

/// One thing `verify` found wrong.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// A stable short name: `corrupt_record`, `missing_chunk`,
    /// `bad_chunk`, `wrong_refcount`, `wrong_segment_accounting`,
    /// `bad_file_list`, `missing_segment`.
    pub kind: &'static str,
    pub detail: String,
    pub repairable: bool,
    pub repaired: bool,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct VerifyReport {
    pub files: u64,
    pub chunks: u64,
    pub segments: u64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong (or everything wrong was repaired).
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.repaired)
    }

    fn problem(&mut self, kind: &'static str, detail: String, repairable: bool) {
        self.problems.push(Problem {
            kind,
            detail,
            repairable,
            repaired: false,
        });
    }
}

impl Store {
    /// Checks the whole store; with `repair`, fixes what can be fixed.
    /// Holds the commit lock throughout, so writers wait.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let inner = &*self.inner;
        let _c = lock(&inner.commit);
        let mut report = VerifyReport::default();

        // 1. Refcounts from the file records.
        let mut expected: HashMap<ChunkId, u64> = HashMap::new();
        let mut files = Vec::new();
        inner.index.for_each_file(|id, rec| {
            files.push((id, rec));
            Ok(())
        })?;
        for (id, rec) in &files {
            report.files += 1;
            let (mut size, mut count, mut next) = (0u64, 0u64, 0u64);
            let mut ordered = true;
            inner.index.for_each_block(id, |start, refs| {
                ordered &= start == next;
                for r in refs {
                    *expected.entry(r.id).or_insert(0) += 1;
                    size += u64::from(r.raw_len);
                    count += 1;
                }
                next = size;
                Ok(())
            })?;
            if size != rec.size || count != rec.chunk_count || !ordered || rec.refs == 0 {
                report.problem(
                    "bad_file_list",
                    format!(
                        "file {id}: record says {} bytes in {} chunks with {} refs, chunk list has {size} bytes in {count} chunks{}",
                        rec.size,
                        rec.chunk_count,
                        rec.refs,
                        if ordered { "" } else { " (blocks out of order)" }
                    ),
                    false,
                );
            }
        }

        // Transfers in progress hold one reference on each chunk they have.
        for (p, _) in inner.index.partials()? {
            for id in inner.index.partial_chunks(&p)? {
                *expected.entry(id).or_insert(0) += 1;
            }
        }

        // 2. Chunk entries against the expectation; segment accounting.
        let mut entries = Vec::new();
        inner.index.for_each_chunk(|id, e| {
            entries.push((id, e));
            Ok(())
        })?;
        report.chunks = entries.len() as u64;
        let mut live: HashMap<SegmentId, SegmentEntry> = HashMap::new();
        let mut fixes = inner.index.batch();
        let mut wanted_at: HashMap<(SegmentId, u64), (ChunkId, u32)> = HashMap::new();
        for (id, e) in &entries {
            let want = expected.remove(id).unwrap_or(0);
            if want != e.refcount {
                report.problem(
                    "wrong_refcount",
                    format!(
                        "chunk {id}: refcount {} but files reference it {want} times",
                        e.refcount
                    ),
                    true,
                );
                if repair {
                    let mut fixed = *e;
                    fixed.refcount = want;
                    fixes.put_chunk(id, &fixed)?;
                }
            }
            let s = live.entry(e.location.segment).or_default();
            if want > 0 {
                s.live_bytes += u64::from(e.location.len);
            }
            s.indexed_end = s
                .indexed_end
                .max(e.location.offset + u64::from(e.location.len));
            wanted_at.insert(
                (e.location.segment, e.location.offset),
                (*id, e.location.len),
            );
        }
        for (id, n) in expected {
            report.problem(
                "missing_chunk",
                format!(
                    "chunk {id} is referenced {n} times by files but is not indexed: data lost"
                ),
                false,
            );
        }

        // 3. Every record of every segment.
        let on_disk = inner.segments.list()?;
        let mut dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| crate::error::Error::io("creating a zstd context", e))?;
        let mut out = Vec::new();
        let mut found: HashSet<(SegmentId, u64)> = HashSet::new();
        for seg in &on_disk {
            report.segments += 1;
            let map = match inner.segments.map(*seg) {
                Ok(m) => m,
                Err(e) => {
                    report.problem("corrupt_record", format!("segment {seg}: {e}"), false);
                    continue;
                }
            };
            if let Err(e) = format::decode_segment_header(&map) {
                report.problem(
                    "corrupt_record",
                    format!("segment {seg} header: {e}"),
                    false,
                );
                continue;
            }
            let body = map.get(SEGMENT_HEADER_LEN..).unwrap_or_default();
            let mut bad = Vec::new();
            let end = format::scan_records(body, |off, h| {
                let offset = SEGMENT_HEADER_LEN as u64 + off;
                report.records_checked += 1;
                let Some(&(want_id, len)) = wanted_at.get(&(*seg, offset)) else {
                    return; // garbage: not referenced by the index
                };
                if want_id != h.chunk_id || u64::from(len) != h.record_len() {
                    return; // the index entry points at a different record
                }
                let start = offset as usize + format::RECORD_HEADER_LEN;
                let payload = map
                    .get(start..start + h.stored_len as usize)
                    .unwrap_or_default();
                out.clear();
                match format::decode_and_verify(h, payload, &mut dctx, &mut out) {
                    Ok(()) => {
                        report.bytes_checked += u64::from(h.raw_len);
                        found.insert((*seg, offset));
                    }
                    Err(e) => bad.push(format!(
                        "segment {seg} at offset {offset}: chunk {}: {e}",
                        h.chunk_id
                    )),
                }
            });
            for d in bad {
                report.problem("bad_chunk", d, false);
            }
            if let ScanEnd::Invalid { offset, error } = end {
                let at = SEGMENT_HEADER_LEN as u64 + offset;
                // The active segment's tail may be a write in progress.
                let indexed_end = inner.index.segment(*seg)?.map_or(0, |e| e.indexed_end);
                if Some(*seg) == inner.segments.active_id() && at >= indexed_end {
                    continue;
                }
                report.problem(
                    "corrupt_record",
                    format!("segment {seg} at offset {at}: {error}"),
                    false,
                );
            }
        }
        for (id, e) in &entries {
            let key = (e.location.segment, e.location.offset);
            if !found.contains(&key)
                && !report
                    .problems
                    .iter()
                    .any(|p| p.kind == "bad_chunk" && p.detail.contains(&id.to_hex()))
            {
                let kind = if on_disk.contains(&e.location.segment) {
                    "bad_chunk"
                } else {
                    "missing_segment"
                };
                report.problem(
                    kind,
                    format!(
                        "chunk {id}: no valid record at segment {} offset {} (refcount {})",
                        e.location.segment, e.location.offset, e.refcount
                    ),
                    false,
                );
            }
        }

        // 4. Segment accounting.
        let mut segs = SegmentDeltas::default();
        let stored = inner.index.segments()?;
        for (id, s) in &stored {
            let want = live.remove(id).unwrap_or_default();
            if want.live_bytes != s.live_bytes || want.indexed_end > s.indexed_end {
                report.problem(
                    "wrong_segment_accounting",
                    format!(
                        "segment {id}: {} live bytes recorded, {} computed; indexed end {} recorded, {} computed",
                        s.live_bytes, want.live_bytes, s.indexed_end, want.indexed_end
                    ),
                    true,
                );
                segs.entries.insert(
                    *id,
                    SegmentEntry {
                        live_bytes: want.live_bytes,
                        indexed_end: want.indexed_end.max(s.indexed_end),
                    },
                );
            }
        }
        for (id, want) in live {
            report.problem(
                "wrong_segment_accounting",
                format!(
                    "segment {id}: no accounting entry, {} live bytes computed",
                    want.live_bytes
                ),
                true,
            );
            segs.entries.insert(id, want);
        }
        if repair {
            segs.write(&mut fixes)?;
            if !fixes.is_empty() {
                fixes.commit()?;
            }
            for p in &mut report.problems {
                p.repaired = p.repairable;
            }
        }
        Ok(report)
    }
}
