//! Recompressing cold segments: records are written at a fast zstd level
//! while an upload waits for them, and rewritten later at a slower, denser
//! one. A rewrite is a compaction whose copies are compressed again (and
//! checked against their chunk ids on the way), so it has compaction's
//! crash safety: copies are durable before the index points at them, the
//! old segment goes only after the flip, and readers are never blocked.
//!
//! Two ways in:
//! - [`Store::recompress`] (`imgstore store recompress`): every segment,
//!   every record, at the level asked for.
//! - [`Store::recompress_step`] (the daemon, in the background): one
//!   segment per step, the oldest that has gone cold (sealed at least a
//!   given time ago) and whose records are mostly not settled yet. A
//!   rewritten record is marked settled ([`crate::format::RECORD_SETTLED`]); later
//!   steps copy it as it is, so no record is compressed twice by them,
//!   even though copies share the active segment with new uploads (a
//!   segment that is mostly settled is left alone).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use super::Store;
use super::gc::GcReport;
use super::pack::Recoder;
use crate::error::Result;
use crate::id::SegmentId;

/// Segments the background pass counts (their headers) in one step at
/// most, so that a step's reading stays bounded when many turn cold.
const CENSUS_PER_STEP: usize = 8;

/// The level cold segments are rewritten at when nothing else is said
/// (see the crate docs for the measurement behind it: with chunks
/// gathered into groups of 1 MiB, 17 stores 0.95 of what 14 does, where
/// zstd's level 14 uses weaker parameters above 256 KiB of input).
pub const DEFAULT_RECOMPRESS_LEVEL: i32 = 17;

/// What a recompression did.
#[derive(Clone, Debug, Serialize)]
pub struct RecompressReport {
    pub level: i32,
    pub segments: u64,
    pub records_rewritten: u64,
    /// All segment bytes before and after.
    pub stored_bytes_before: u64,
    pub stored_bytes_after: u64,
    /// Bytes of live records before and after.
    pub live_stored_bytes_before: u64,
    pub live_stored_bytes_after: u64,
}

impl Store {
    /// Rewrites every segment that exists now (the active one sealed
    /// first, unless an upload is writing to it) with its live records
    /// compressed at `level`; garbage goes on the way, as in GC. The
    /// rewrite fills new segments, which it leaves alone.
    pub fn recompress(&self, level: i32) -> Result<RecompressReport> {
        let _one = crate::segment::lock(&self.inner.compacting);
        let before = self.stats()?;
        let mut recoder = Recoder::new(level, false, None)?;
        let mut gc = GcReport::default();
        let mut segments = 0;
        for seg in self.inner.segments.seal_active()? {
            self.compact_segment(seg, Some(&mut recoder), &mut gc)?;
            segments += 1;
        }
        let after = self.stats()?;
        Ok(RecompressReport {
            level,
            segments,
            records_rewritten: gc.records_copied,
            stored_bytes_before: before.stored_bytes,
            stored_bytes_after: after.stored_bytes,
            live_stored_bytes_before: before.live_stored_bytes,
            live_stored_bytes_after: after.live_stored_bytes,
        })
    }
}

/// What the background pass learnt of sealed segments: whether each is
/// worth rewriting (a sealed segment never changes, so it is counted once).
#[derive(Default)]
pub struct ColdMemo {
    worth: HashMap<SegmentId, bool>,
}

/// One segment rewritten by [`Store::recompress_step`].
#[derive(Clone, Debug, Serialize)]
pub struct ColdStep {
    pub segment: u64,
    pub records_rewritten: u64,
    /// The segment's file before; the bytes its live records take after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
    /// One step of background recompression at `level`: rewrites the
    /// oldest segment that was last written at least `min_age` ago (the
    /// active one is sealed for it when no write is under way and it is at
    /// least a quarter full, so a quiet store's last data turns cold too)
    /// and whose record bytes are at least half unsettled. None when no
    /// such segment is known yet (counting the headers of at most eight
    /// new segments per step).
    pub fn recompress_step(
        &self,
        level: i32,
        min_age: Duration,
        memo: &mut ColdMemo,
    ) -> Result<Option<ColdStep>> {
        self.recompress_step_until(level, min_age, memo, &AtomicBool::new(false))
    }

    /// [`Store::recompress_step`], giving way once `stop` is set: a step
    /// at a dense level takes about a minute per 256 MiB segment on one
    /// core, too long for a shutdown to wait. The segment being rewritten
    /// is left as it was (the copies made so far are garbage for GC), and
    /// the step ends with [`Error::Stopped`]; the next step starts it
    /// again.
    pub fn recompress_step_until(
        &self,
        level: i32,
        min_age: Duration,
        memo: &mut ColdMemo,
        stop: &AtomicBool,
    ) -> Result<Option<ColdStep>> {
        self.check_fence()?;
        let inner = &*self.inner;
        // Ascending: oldest first, and a binary search finds a segment.
        let segments = inner.segments.list()?;
        memo.worth.retain(|s, _| segments.binary_search(s).is_ok());
        let active = inner.segments.active_id();
        let mut counted = 0;
        let mut chosen = None;
        for &seg in &segments {
            // Counted and not worth it: a sealed segment never changes, so
            // it needs no further look (not even at its age).
            if memo.worth.get(&seg) == Some(&false) || !inner.segments.is_quiet(seg) {
                continue;
            }
            // Remote segments are not rewritten: a census by range
            // requests (one per record), a second upload and the old
            // object's deletion cost more than the bytes it saves, and a
            // cached copy's file time says when it was fetched, not sealed.
            if inner.segments.is_remote(seg) {
                continue;
            }
            if inner.segments.age(seg)? < min_age {
                // Newer segments are younger still.
                break;
            }
            if Some(seg) == active {
                // A quiet store's last segment turns cold too, but only
                // once it is a quarter full: sealing small ones every idle
                // hour would leave a store of many small files.
                let small = inner.segments.file_len(seg)? < inner.segments.max_segment_bytes() / 4;
                if small || !inner.segments.seal_for_gc(seg)? {
                    continue;
                }
            }
            let worth = match memo.worth.get(&seg) {
                Some(w) => *w,
                None if counted < CENSUS_PER_STEP => {
                    counted += 1;
                    let w = self.mostly_unsettled(seg)?;
                    memo.worth.insert(seg, w);
                    w
                }
                None => break,
            };
            if worth {
                chosen = Some(seg);
                break;
            }
        }
        let Some(seg) = chosen else {
            return Ok(None);
        };
        let _one = crate::segment::lock(&inner.compacting);
        let bytes_before = inner.segments.file_len(seg)?;
        let mut recoder = Recoder::new(level, true, Some(stop))?;
        let mut gc = GcReport::default();
        self.compact_segment(seg, Some(&mut recoder), &mut gc)?;
        memo.worth.remove(&seg);
        Ok(Some(ColdStep {
            segment: seg.0,
            records_rewritten: gc.records_copied,
            bytes_before,
            bytes_after: gc.bytes_copied,
        }))
    }

    /// True when at least half of `seg`'s record bytes are not settled
    /// (from its headers alone: about one page read per record).
    fn mostly_unsettled(&self, seg: SegmentId) -> Result<bool> {
        let (mut all, mut unsettled) = (0u64, 0u64);
        self.inner.segments.walk_headers(seg, &mut |len, settled| {
            all += len;
            if !settled {
                unsettled += len;
            }
        })?;
        Ok(unsettled > 0 && unsettled * 2 >= all)
    }
}
