//! Garbage collection and compaction, online, in two steps: a plan that can
//! be inspected, then its execution, which re-checks every decision under
//! the commit lock.
//!
//! A segment's garbage is every byte not covered by a live record: records of
//! chunks whose refcount fell to zero, records a crash or a failed put left
//! unindexed, duplicates written by racing puts. A segment with no live bytes
//! is deleted; one whose garbage ratio passes the threshold is rewritten:
//! its live records are copied (as stored, CRC-checked) to the active
//! segment, fsynced, the index flipped in one batch, and only then the old
//! file removed.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::{SegmentDeltas, Store};
use crate::error::{Error, Result};
use crate::format::{self, SEGMENT_HEADER_LEN, ScanEnd};
use crate::id::{ChunkId, SegmentId};
use crate::segment::{Location, WriteSession, lock};

/// Default garbage ratio at which a segment is rewritten.
pub const DEFAULT_THRESHOLD: f64 = 0.3;

#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SegmentAction {
    /// No live bytes: remove the file.
    Delete,
    /// Copy the live records forward, then remove the file.
    Rewrite,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SegmentPlan {
    pub segment: u64,
    pub file_bytes: u64,
    pub live_bytes: u64,
    pub garbage_bytes: u64,
    pub action: SegmentAction,
}

/// What GC would do.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GcPlan {
    pub threshold: f64,
    pub segments: Vec<SegmentPlan>,
    /// Bytes the plan frees (garbage of the planned segments).
    pub reclaimable_bytes: u64,
    /// Garbage left in segments below the threshold (or still being written).
    pub garbage_left_bytes: u64,
}

/// What GC did.
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct GcReport {
    pub segments_deleted: u64,
    pub segments_rewritten: u64,
    pub records_copied: u64,
    pub bytes_copied: u64,
    pub chunks_dropped: u64,
    pub bytes_freed: u64,
    /// Segments left as they were, and why (damage, a failed write): each
    /// segment is its own step, so one failure stops no other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<SegmentFailure>,
    /// Bytes of the space reserve this pass released to rewrite on a full
    /// disk.
    pub reserve_released: u64,
    /// Bytes the reserve holds after the pass (less than its target when
    /// the disk is still too full to fill it).
    pub reserve_held: u64,
}

/// A segment a pass could not compact.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SegmentFailure {
    pub segment: u64,
    pub error: String,
}

struct Found {
    id: ChunkId,
    offset: u64,
    len: u32,
}

impl Store {
    /// Computes what a collection at `threshold` would do; changes nothing.
    pub fn gc_plan(&self, threshold: f64) -> Result<GcPlan> {
        let inner = &*self.inner;
        let mut plan = GcPlan {
            threshold,
            segments: Vec::new(),
            reclaimable_bytes: 0,
            garbage_left_bytes: 0,
        };
        for id in inner.segments.list()? {
            let file_bytes = inner.segments.file_len(id)?;
            let live = inner.index.segment(id)?.map_or(0, |e| e.live_bytes);
            let body = file_bytes.saturating_sub(SEGMENT_HEADER_LEN as u64);
            let garbage = body.saturating_sub(live);
            // The active segment qualifies too when no put is writing to
            // it: execution seals it first.
            let settled = inner.segments.is_quiet(id);
            let action = if !settled {
                None
            } else if live == 0 {
                Some(SegmentAction::Delete)
            } else if body > 0 && garbage as f64 / body as f64 >= threshold {
                Some(SegmentAction::Rewrite)
            } else {
                None
            };
            match action {
                Some(action) => {
                    plan.reclaimable_bytes += garbage
                        + if action == SegmentAction::Delete {
                            SEGMENT_HEADER_LEN as u64
                        } else {
                            0
                        };
                    plan.segments.push(SegmentPlan {
                        segment: id.0,
                        file_bytes,
                        live_bytes: live,
                        garbage_bytes: garbage,
                        action,
                    });
                }
                None => plan.garbage_left_bytes += garbage,
            }
        }
        // Deleting a dead segment needs no space; rewriting one does. On a
        // full disk the deletes free what the rewrites then need.
        plan.segments.sort_by_key(|p| {
            (
                p.action == SegmentAction::Rewrite,
                std::cmp::Reverse(p.garbage_bytes),
            )
        });
        Ok(plan)
    }

    /// Carries out a plan, re-checking each decision. Each segment is its
    /// own step: one that fails (damage, a full disk) is reported in
    /// [`GcReport::failed`] and the others go on. One pass runs at a time.
    ///
    /// A rewrite that fails for lack of space is tried once more after the
    /// space reserve is released (`segment/reserve.rs`); the reserve is
    /// filled again at the end of the pass, as far as the space allows.
    pub fn gc_execute(&self, plan: &GcPlan) -> Result<GcReport> {
        self.check_fence()?;
        let _one = lock(&self.inner.compacting);
        let segments = &self.inner.segments;
        let mut report = GcReport::default();
        for s in &plan.segments {
            let seg = SegmentId(s.segment);
            let mut result = self.compact_segment(seg, None, &mut report);
            if let Err(e) = &result
                && e.is_disk_full()
                && segments.reserve_held() > 0
            {
                report.reserve_released += segments.release_reserve()?;
                result = self.compact_segment(seg, None, &mut report);
            }
            if let Err(e) = result {
                report.failed.push(SegmentFailure {
                    segment: seg.0,
                    error: e.to_string(),
                });
            }
        }
        if report.reserve_released > 0 {
            report.reserve_held = segments.fill_reserve()?;
        } else {
            report.reserve_held = segments.reserve_held();
        }
        Ok(report)
    }

    /// Plans at the default threshold and executes.
    pub fn gc(&self) -> Result<GcReport> {
        let plan = self.gc_plan(DEFAULT_THRESHOLD)?;
        self.gc_execute(&plan)
    }

    /// Rewrites `seg`'s live records forward and removes it; with `recode`,
    /// each record is compressed again at that zstd level on the way.
    pub(super) fn compact_segment(
        &self,
        seg: SegmentId,
        recode: Option<&mut Recoder<'_>>,
        report: &mut GcReport,
    ) -> Result<()> {
        let mut recode = recode;
        let inner = &*self.inner;
        // An earlier pass (or this one's plan twice) removed it already.
        if !inner.segments.list()?.contains(&seg) || !inner.segments.seal_for_gc(seg)? {
            return Ok(());
        }
        let freed = inner.segments.file_len(seg)?;
        // One pass: note every record, and copy (without locks) every one
        // the index points at that is live or pinned now. Records that die
        // before the flip are dropped there.
        let mut found = Vec::new();
        let mut copies: Vec<(usize, Location)> = Vec::new();
        let mut session = inner.segments.session();
        let end = inner.segments.scan_segment(seg, &mut |offset, h, rec| {
            let f = Found {
                id: h.chunk_id,
                offset,
                len: rec.len() as u32,
            };
            if self.still_wanted_at(seg, &f)? {
                let loc = match recode.as_deref_mut() {
                    Some(r) => {
                        let (hdr, payload) = r.recode(seg, offset, h, rec)?;
                        session.append(&hdr, payload)?
                    }
                    None => {
                        let (hdr, payload) = rec.split_at(rec.len().min(format::RECORD_HEADER_LEN));
                        session.append(hdr, payload)?
                    }
                };
                copies.push((found.len(), loc));
            }
            found.push(f);
            Ok(())
        })?;
        if let ScanEnd::Invalid { offset, error } = end {
            return Err(Error::corrupt(
                seg,
                offset,
                format!("{error}; segment left as it is, run `imgstore store verify`"),
            ));
        }
        session.sync()?;
        let records = Records { seg, found };
        let (copied_here, copied_bytes) = self.flip(&records, copies, &mut session, report)?;
        drop(session);

        inner.segments.remove(seg)?;
        report.records_copied += copied_here;
        report.bytes_copied += copied_bytes;
        if copied_here == 0 {
            report.segments_deleted += 1;
        } else {
            report.segments_rewritten += 1;
        }
        report.bytes_freed += freed.saturating_sub(copied_bytes);
        Ok(())
    }

    /// True when the index points at this record and it is live or pinned.
    fn still_wanted_at(&self, seg: SegmentId, f: &Found) -> Result<bool> {
        let inner = &*self.inner;
        let Some(e) = inner.index.chunk(&f.id)? else {
            return Ok(false);
        };
        if e.location != f.at(seg) {
            return Ok(false);
        }
        Ok(e.refcount > 0 || lock(&inner.pins).contains_key(&f.id))
    }

    /// Points the index at the copies (and drops dead chunks) in one batch
    /// under the commit lock; the pin lock is held through the batch so no
    /// put can pin a chunk this batch deletes. Returns records and bytes
    /// copied.
    fn flip(
        &self,
        records: &Records,
        copies: Vec<(usize, Location)>,
        session: &mut WriteSession<'_>,
        report: &mut GcReport,
    ) -> Result<(u64, u64)> {
        let inner = &*self.inner;
        let _c = lock(&inner.commit);
        let pins = lock(&inner.pins);
        let mut b = inner.index.batch();
        let mut segs = SegmentDeltas::default();
        let mut copied = vec![None; records.found.len()];
        for (i, loc) in copies {
            if let Some(slot) = copied.get_mut(i) {
                *slot = Some(loc);
            }
        }
        let (mut copied_here, mut copied_bytes) = (0u64, 0u64);
        for (i, f) in records.found.iter().enumerate() {
            let Some(mut e) = inner.index.chunk(&f.id)? else {
                continue;
            };
            if e.location != f.at(records.seg) {
                continue;
            }
            if e.refcount == 0 && !pins.contains_key(&f.id) {
                b.delete_chunk(&f.id)?;
                report.chunks_dropped += 1;
                continue;
            }
            let new = match copied.get(i).copied().flatten() {
                Some(loc) => loc,
                None => {
                    // Revived (by a put) after the copy pass: copy it now.
                    let mut rec = vec![0u8; f.len as usize];
                    inner.segments.read_at(records.seg, f.offset, &mut rec)?;
                    let (hdr, payload) = rec.split_at(rec.len().min(format::RECORD_HEADER_LEN));
                    let loc = session.append(hdr, payload)?;
                    session.sync()?;
                    loc
                }
            };
            if e.refcount > 0 {
                segs.add_live(&inner.index, new.segment, i64::from(new.len))?;
            }
            segs.extend_indexed(&inner.index, new.segment, new.offset + u64::from(new.len))?;
            e.location = new;
            b.put_chunk(&f.id, &e)?;
            copied_here += 1;
            copied_bytes += u64::from(new.len);
        }
        segs.entries.remove(&records.seg);
        segs.write(&mut b)?;
        // A remote segment's object outlives it by the grace period
        // (`store/tier.rs`); a local one's entry just goes.
        match self.retired_entry(records.seg) {
            Some(retired) => b.put_segment(records.seg, &retired)?,
            None => b.delete_segment(records.seg)?,
        }
        b.commit()?;
        Ok((copied_here, copied_bytes))
    }
}

/// The records of a segment being compacted.
struct Records {
    seg: SegmentId,
    found: Vec<Found>,
}

impl Found {
    fn at(&self, seg: SegmentId) -> Location {
        Location {
            segment: seg,
            offset: self.offset,
            len: self.len,
        }
    }
}

/// Compresses records again at another level (cold segments, which are
/// read often and written never, pay for a slower level once).
pub(super) struct Recoder<'s> {
    /// Copy settled records as they are (the background pass) instead of
    /// compressing them again (an operator's explicit recompression).
    keep_settled: bool,
    /// Once set, the next record ends the rewrite with `Error::Stopped`
    /// (a daemon shutting down does not wait for a whole segment).
    stop: Option<&'s AtomicBool>,
    dctx: zstd::bulk::Decompressor<'static>,
    cctx: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
    out: Vec<u8>,
}

impl<'s> Recoder<'s> {
    pub(super) fn new(
        level: i32,
        keep_settled: bool,
        stop: Option<&'s AtomicBool>,
    ) -> Result<Self> {
        Ok(Self {
            keep_settled,
            stop,
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("creating a zstd context", e))?,
            cctx: zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::io("creating a zstd context", e))?,
            raw: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The record as it will be written: header and payload, compressed
    /// at the new level unless that saves less than 1/32 (then raw), and
    /// marked settled. The chunk is checked against its id on the way, so
    /// a record rewritten here is as verified as one received from another
    /// datacenter. A settled record is copied as it is when the recoder
    /// keeps them.
    fn recode<'r>(
        &'r mut self,
        seg: SegmentId,
        offset: u64,
        h: &format::RecordHeader,
        rec: &'r [u8],
    ) -> Result<([u8; format::RECORD_HEADER_LEN], &'r [u8])> {
        if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(Error::Stopped(format!("rewriting segment {seg}")));
        }
        let (header, payload) = rec.split_at(rec.len().min(format::RECORD_HEADER_LEN));
        if self.keep_settled
            && h.settled
            && let Ok(header) = <[u8; format::RECORD_HEADER_LEN]>::try_from(header)
        {
            return Ok((header, payload));
        }
        self.raw.clear();
        format::decode_and_verify(h, payload, &mut self.dctx, &mut self.raw)
            .map_err(|e| Error::corrupt(seg, offset, format!("chunk {}: {e}", h.chunk_id)))?;
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        let n = self
            .cctx
            .compress_to_buffer(&self.raw, &mut self.out)
            .map_err(|e| Error::io("compressing a chunk", e))?;
        let (codec, body) = if n + n / 32 < self.raw.len() {
            (format::Codec::Zstd, self.out.get(..n).unwrap_or_default())
        } else {
            (format::Codec::Raw, self.raw.as_slice())
        };
        let header = format::encode_record_header_flags(
            codec,
            format::RECORD_SETTLED,
            &h.chunk_id,
            h.raw_len,
            body,
        );
        Ok((header, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;

    fn record(settled: bool, chunk: &[u8]) -> (format::RecordHeader, Vec<u8>) {
        let flags = if settled { format::RECORD_SETTLED } else { 0 };
        let h = format::encode_record_header_flags(
            format::Codec::Raw,
            flags,
            &ChunkId::of(chunk),
            chunk.len() as u32,
            chunk,
        );
        let rec = [&h[..], chunk].concat();
        (format::decode_record_header(&rec).unwrap(), rec)
    }

    #[test]
    fn the_background_recoder_copies_settled_records_as_they_are() {
        let chunk = b"abcabcabc".repeat(200);
        let (h, rec) = record(true, &chunk);
        assert!(h.settled);
        let mut keep = Recoder::new(9, true, None).unwrap();
        let (hdr, payload) = keep.recode(SegmentId(1), 48, &h, &rec).unwrap();
        assert_eq!([&hdr[..], payload].concat(), rec, "copied as it is");
        // An operator's recompression compresses it again, settled.
        let mut all = Recoder::new(9, false, None).unwrap();
        let (hdr, payload) = all.recode(SegmentId(1), 48, &h, &rec).unwrap();
        let again = format::decode_record_header(&hdr).unwrap();
        assert!(again.settled && again.codec == format::Codec::Zstd);
        assert!(payload.len() < chunk.len());
        // An unsettled record is compressed and settled by both.
        let (h, rec) = record(false, &chunk);
        let (hdr, _) = keep.recode(SegmentId(1), 48, &h, &rec).unwrap();
        assert!(format::decode_record_header(&hdr).unwrap().settled);
    }
}
