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

use std::collections::HashMap;

use serde::Serialize;

use super::pack::{Copy, Packer, Recoder};
use super::{SegmentDeltas, Store};
use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, ScanEnd, Stored};
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

/// A chunk found in a segment being compacted: its record (a group's,
/// for a member) and, in a group, its raw offset.
struct Found {
    id: ChunkId,
    offset: u64,
    len: u32,
    member: Option<u32>,
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
        let inner = &*self.inner;
        // An earlier pass (or this one's plan twice) removed it already.
        if !inner.segments.list()?.contains(&seg) || !inner.segments.seal_for_gc(seg)? {
            return Ok(());
        }
        let freed = inner.segments.file_len(seg)?;
        // One pass: note every chunk, and copy (without locks) every one
        // the index points at that is live or pinned now. Records that die
        // before the flip are dropped there.
        let mut found = Vec::new();
        let mut session = inner.segments.session();
        let mut pack = Packer::new(recode, inner.zstd_level);
        let end = inner
            .segments
            .scan_segment(seg, &mut |offset, stored, rec| {
                let len = rec.len() as u32;
                match stored {
                    Stored::One(h) => {
                        let f = Found {
                            id: h.chunk_id,
                            offset,
                            len,
                            member: None,
                        };
                        if self.still_wanted_at(seg, &f)? {
                            pack.one(&mut session, found.len(), (seg, offset), h, rec)?;
                        }
                        found.push(f);
                    }
                    Stored::Group(g) => {
                        let first = found.len();
                        let mut live = Vec::with_capacity(g.members.len());
                        for m in &g.members {
                            let f = Found {
                                id: m.id,
                                offset,
                                len,
                                member: Some(m.raw_offset),
                            };
                            live.push(self.still_wanted_at(seg, &f)?);
                            found.push(f);
                        }
                        pack.group(&mut session, first, (seg, offset), (g, rec), &live)?;
                    }
                }
                Ok(())
            })?;
        if let ScanEnd::Invalid { offset, error } = end {
            return Err(Error::corrupt(
                seg,
                offset,
                format!("{error}; segment left as it is, run `imgstore store verify`"),
            ));
        }
        let copies = pack.finish(&mut session)?;
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
        if !f.is(&e, seg) {
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
        copies: Vec<Copy>,
        session: &mut WriteSession<'_>,
        report: &mut GcReport,
    ) -> Result<(u64, u64)> {
        let inner = &*self.inner;
        let _c = lock(&inner.commit);
        let pins = lock(&inner.pins);
        let mut b = inner.index.batch();
        let mut segs = SegmentDeltas::default();
        let mut copied = vec![None; records.found.len()];
        for (i, loc, member) in copies {
            if let Some(slot) = copied.get_mut(i) {
                *slot = Some((loc, member));
            }
        }
        // Records copied late, by their old offset (a group's once).
        let mut late: HashMap<u64, Location> = HashMap::new();
        let (mut copied_here, mut copied_bytes) = (0u64, 0u64);
        for (i, f) in records.found.iter().enumerate() {
            let Some(mut e) = inner.index.chunk(&f.id)? else {
                continue;
            };
            if !f.is(&e, records.seg) {
                continue;
            }
            if e.refcount == 0 && !pins.contains_key(&f.id) {
                b.delete_chunk(&f.id)?;
                report.chunks_dropped += 1;
                continue;
            }
            let (new, member) = match copied.get(i).copied().flatten() {
                Some(c) => c,
                None => {
                    // Revived (by a put) after the copy pass: its record
                    // (a whole group, for a member) is copied now, as it
                    // is, so the member keeps its place and share.
                    let loc = match late.get(&f.offset) {
                        Some(&loc) => loc,
                        None => {
                            let mut rec = vec![0u8; f.len as usize];
                            inner.segments.read_at(records.seg, f.offset, &mut rec)?;
                            let loc = session.append(&rec, &[])?;
                            session.sync()?;
                            late.insert(f.offset, loc);
                            loc
                        }
                    };
                    (loc, e.member)
                }
            };
            e.location = new;
            e.member = member;
            if e.refcount > 0 {
                segs.add_live(&inner.index, new.segment, i64::from(e.stored_len()))?;
            }
            segs.extend_indexed(&inner.index, new.segment, new.offset + u64::from(new.len))?;
            b.put_chunk(&f.id, &e)?;
            copied_here += 1;
            copied_bytes += u64::from(e.stored_len());
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
    /// True when index entry `e` names this chunk's place in `seg`.
    fn is(&self, e: &crate::index::ChunkEntry, seg: SegmentId) -> bool {
        let at = Location {
            segment: seg,
            offset: self.offset,
            len: self.len,
        };
        e.location == at && e.member.map(|m| m.raw_offset) == self.member
    }
}
