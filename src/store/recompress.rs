//! Recompressing cold segments: records are written at a fast zstd level
//! while an upload waits for them, and rewritten later at a slower, denser
//! one. A rewrite is a compaction whose copies are compressed again (and
//! checked against their chunk ids on the way), so it has compaction's
//! crash safety: copies are durable before the index points at them, the
//! old segment goes only after the flip, and readers are never blocked.

use serde::Serialize;

use super::Store;
use super::gc::{GcReport, Recoder};
use crate::error::Result;

/// The level cold segments are rewritten at when nothing else is said
/// (see the crate docs for the measurement behind it).
pub const DEFAULT_RECOMPRESS_LEVEL: i32 = 9;

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
        let mut recoder = Recoder::new(level)?;
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
