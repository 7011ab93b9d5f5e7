//! The remote tier's steps: upload sealed segments, evict cached copies,
//! delete retired objects. Each step is a plan the index records before
//! anything is removed, so a crash between any two actions either repeats
//! an action (re-uploads the same bytes under the same name, deletes an
//! object already gone) or finds it done; never loses a byte.
//!
//! Order of one segment's life with a tier:
//! 1. sealed locally (fsynced, as without a tier);
//! 2. uploaded under its one object name, and the object's length
//!    confirmed against the file ([`crate::segment::SegmentSet::upload`]);
//! 3. marked `Remote` in the index (synced WAL), then in memory;
//! 4. its local file is cache from here on: evicted least-recently-read
//!    once cached copies pass `cache_bytes`;
//! 5. compaction (GC or recompression) copies its live records into the
//!    active segment and, in the same index batch that moves them, marks
//!    it `Retired` with a deadline `delete_grace` ahead;
//! 6. after the deadline its object is deleted, then its index entry.
//!
//! A step never runs while compaction does (the compaction lock), so a
//! segment is never uploaded and retired at once.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Store, unix_now};
use crate::error::Result;
use crate::id::SegmentId;
use crate::index::{Index, SegmentEntry, SegmentTier};
use crate::segment::backend::ObjectBackend;
use crate::segment::{SegmentSet, lock};

/// A cache fill that reads left at least this much covered is completed
/// by fetching its gaps (garbage records no file read touches).
const FILL_COMPLETE_AT: f64 = 0.75;

/// How a store uses its remote tier: the one validated tier
/// configuration (the daemon derives it from its `"storage"` object).
pub struct TierOptions {
    pub backend: Arc<dyn ObjectBackend>,
    /// Object name prefix shared by the stores in the bucket (`dc1/`).
    pub prefix: String,
    /// Local bytes kept as copies of remote segments.
    pub cache_bytes: u64,
    /// How long a retired segment's object outlives it.
    pub delete_grace: Duration,
    /// How long the active segment may sit quiet with data in it before it
    /// is sealed for upload (the bound on what only the local disk holds
    /// on an idle store).
    pub seal_after: Duration,
    /// Activations wait until the image is in the bucket, segments and
    /// index (`durability: "remote"`; `store/restore.rs`).
    pub remote_durability: bool,
    /// Puts are refused while segments not yet uploaded hold this many
    /// bytes or more (the bucket is unreachable or slower than ingest);
    /// 0: no limit but the disk.
    pub local_limit_bytes: u64,
}

/// A store's tier: its options, and what the store learns as it runs.
pub(super) struct TierPolicy {
    pub options: TierOptions,
    /// The index's sequence number right after the newest push: a push
    /// that finds it unchanged has nothing to publish.
    pub pushed_sequence: std::sync::atomic::AtomicU64,
    /// Index backup files known to be in the bucket under the epoch
    /// pushes go to (listed at that epoch's first push), and the lock
    /// that makes pushes one at a time.
    pub pushed: std::sync::Mutex<Option<super::restore::Pushed>>,
    /// When the newest index backup in the bucket was taken (seconds since
    /// the epoch; kept in the index's meta), if one ever was.
    pub last_push: std::sync::Mutex<Option<u64>>,
    /// The newest index backup pushed to the bucket under this store's
    /// lease (the pointer the next renewal writes).
    pub published: std::sync::Mutex<Option<super::lease::IndexRef>>,
    /// Tickets of [`Store::publish`], issued in order after the callers'
    /// commits.
    pub tickets: std::sync::atomic::AtomicU64,
    /// What publications have covered, held while one runs.
    pub publication: std::sync::Mutex<Publication>,
}

/// What publications to the bucket have covered.
#[derive(Default)]
pub(super) struct Publication {
    /// Every ticket up to this one is in the bucket.
    pub done: u64,
    /// The last publication that failed: the tickets it covered, and why.
    pub failed: Option<(u64, String)>,
}

/// The tier's part of opening a store: the segments the index knows as
/// remote or retired are handed to the segment layer, and the options
/// kept. Without options, a store whose index names remote segments is
/// refused (it cannot read them).
pub(super) fn open_tier(
    dir: &std::path::Path,
    index: &Index,
    segments: &mut SegmentSet,
    options: Option<TierOptions>,
) -> Result<Option<TierPolicy>> {
    let Some(t) = options else {
        if index
            .segments()?
            .into_iter()
            .any(|(_, e)| e.tier != SegmentTier::Local)
        {
            return Err(crate::Error::InvalidInput(format!(
                "the segments of {} are in a remote tier: open it with its \
                 \"storage\" configuration",
                dir.display()
            )));
        }
        return Ok(None);
    };
    let mut remote = std::collections::BTreeMap::new();
    let mut retired = Vec::new();
    let mut highest = None;
    for (id, e) in index.segments()? {
        highest = highest.max(Some(id));
        match e.tier {
            SegmentTier::Local => {}
            SegmentTier::Remote { len } => {
                remote.insert(id, len);
            }
            SegmentTier::Retired { .. } => retired.push(id),
        }
    }
    segments.attach_tier(crate::segment::TierSetup {
        backend: Arc::clone(&t.backend),
        prefix: t.prefix.clone(),
        remote,
        retired,
        highest,
        cache_bytes: t.cache_bytes,
    })?;
    let last_push = index
        .get_meta(super::META_LAST_PUSH)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes);
    Ok(Some(TierPolicy {
        options: t,
        pushed: std::sync::Mutex::new(None),
        last_push: std::sync::Mutex::new(last_push),
        published: std::sync::Mutex::new(None),
        pushed_sequence: std::sync::atomic::AtomicU64::new(u64::MAX),
        tickets: std::sync::atomic::AtomicU64::new(0),
        publication: std::sync::Mutex::new(Publication::default()),
    }))
}

/// What one [`Store::tier_step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierReport {
    /// Segments uploaded and marked remote, with their lengths.
    pub uploaded: Vec<(SegmentId, u64)>,
    /// Cache fills put in place (checked and synced): those reads
    /// completed, and those they left nearly complete, completed here.
    pub filled: Vec<SegmentId>,
    /// Local copies dropped, with the bytes freed.
    pub evicted: Vec<(SegmentId, u64)>,
    /// Retired segments whose objects were deleted.
    pub deleted: Vec<SegmentId>,
}

/// Where the store's segment bytes are.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TierSizes {
    /// Bytes of segments only on the local disk (not uploaded yet).
    pub local_bytes: u64,
    /// Bytes of local copies of remote segments.
    pub cached_bytes: u64,
    /// Bytes of remote segments.
    pub remote_bytes: u64,
    /// Segments waiting for upload, the active one included.
    pub local_segments: u64,
    pub remote_segments: u64,
    /// Retired objects waiting out their grace period.
    pub retired_segments: u64,
}

impl Store {
    /// True when this store has a remote tier.
    pub fn has_tier(&self) -> bool {
        self.inner.tier.is_some()
    }

    /// A follower's part of the tier step: cache fills placed, cached
    /// copies past the cache size evicted. Nothing is uploaded, committed
    /// or deleted in the bucket.
    pub fn cache_step(&self) -> Result<TierReport> {
        let mut report = TierReport::default();
        if self.inner.tier.is_none() {
            return Ok(report);
        }
        report.filled = self.inner.segments.finish_fills(FILL_COMPLETE_AT)?;
        report.evicted = self.evict()?;
        Ok(report)
    }

    /// Uploads every sealed segment not yet remote, evicts cached copies
    /// past the cache size, deletes retired objects whose grace is over.
    /// Stops at the first failure (the next step retries it), after
    /// recording what it finished.
    pub fn tier_step(&self) -> Result<TierReport> {
        let mut report = TierReport::default();
        if self.inner.tier.is_none() {
            return Ok(report);
        }
        self.check_fence()?;
        // Fills first: reads wait on them, and an upload that fails ends
        // the step.
        report.filled = self.inner.segments.finish_fills(FILL_COMPLETE_AT)?;
        while let Some(up) = self.upload_one()? {
            report.uploaded.push(up);
        }
        report.evicted = self.evict()?;
        report.deleted = self.delete_retired(unix_now())?;
        Ok(report)
    }

    /// Uploads the oldest sealed segment that is not remote yet, sealing a
    /// quiet active segment first once it has sat for `seal_after`.
    pub fn upload_one(&self) -> Result<Option<(SegmentId, u64)>> {
        let inner = &*self.inner;
        let Some(policy) = &inner.tier else {
            return Ok(None);
        };
        self.check_fence()?;
        let _compacting = lock(&inner.compacting);
        let segs = &inner.segments;
        let mut pending = segs.local_ids()?;
        pending.retain(|id| !segs.is_remote(*id));
        let active = segs.active_id();
        if pending.iter().all(|id| Some(*id) == active)
            && let Some(a) = active
            && segs.file_len(a)? > crate::format::SEGMENT_HEADER_LEN as u64
            && segs.age(a)? >= policy.options.seal_after
        {
            segs.seal_for_gc(a)?;
        }
        let active = segs.active_id();
        let mut next = None;
        for id in pending {
            if Some(id) == active || segs.is_broken(id) {
                continue;
            }
            // A retired segment's local file is what a failed removal
            // left: its records live elsewhere; it must not come back.
            let tier = inner.index.segment(id)?.map(|e| e.tier);
            if matches!(tier, Some(SegmentTier::Retired { .. })) {
                segs.remove(id)?;
                continue;
            }
            next = Some(id);
            break;
        }
        let Some(id) = next else {
            return Ok(None);
        };
        let len = segs.upload(id)?;
        {
            let _commit = lock(&inner.commit);
            let mut e = inner.index.segment(id)?.unwrap_or_default();
            e.tier = SegmentTier::Remote { len };
            let mut b = inner.index.batch();
            b.put_segment(id, &e)?;
            b.commit()?;
        }
        segs.mark_remote(id, len);
        Ok(Some((id, len)))
    }

    /// Drops local copies of remote segments, least recently read first,
    /// until they hold at most `cache_bytes`.
    pub fn evict(&self) -> Result<Vec<(SegmentId, u64)>> {
        let inner = &*self.inner;
        if inner.tier.is_none() {
            return Ok(Vec::new());
        }
        let _compacting = lock(&inner.compacting);
        let cache_bytes = inner.segments.cache_bytes();
        let mut cached = inner.segments.cached()?;
        let mut total: u64 = cached.iter().map(|c| c.1).sum();
        // Least recently read first; never read since open counts as
        // oldest, and among equals the older segment goes first.
        cached.sort_by_key(|&(id, _, used)| (used, id));
        let mut out = Vec::new();
        for (id, len, _) in cached {
            if total <= cache_bytes {
                break;
            }
            let freed = inner.segments.evict(id)?;
            total = total.saturating_sub(len);
            out.push((id, freed));
        }
        Ok(out)
    }

    /// Deletes the objects of retired segments whose grace period ended
    /// before `now` (seconds since the epoch), then their index entries.
    /// Once an index backup was ever pushed, only segments retired before
    /// the last push go: the newest backup in the bucket must never name
    /// a segment whose object is gone.
    pub fn delete_retired(&self, now: u64) -> Result<Vec<SegmentId>> {
        let inner = &*self.inner;
        let Some(policy) = &inner.tier else {
            return Ok(Vec::new());
        };
        let _compacting = lock(&inner.compacting);
        let last_push = *lock(&policy.last_push);
        let mut out = Vec::new();
        for (id, e) in inner.index.segments()? {
            let SegmentTier::Retired { retired_at, .. } = e.tier else {
                continue;
            };
            if retired_at + policy.options.delete_grace.as_secs() > now
                || last_push.is_some_and(|pushed| retired_at >= pushed)
            {
                continue;
            }
            inner.segments.delete_object(id)?;
            let _commit = lock(&inner.commit);
            let mut b = inner.index.batch();
            b.delete_segment(id)?;
            b.commit()?;
            out.push(id);
        }
        Ok(out)
    }

    /// Deletes segment objects of this store that the index knows nothing
    /// of: an upload whose mark a crash cut, of a segment GC then removed
    /// while it was still local. Objects of segments that are local (an
    /// upload to repeat), remote or retired stay. Runs under the compaction
    /// lock, so no upload is between its put and its mark. Returns the
    /// names deleted.
    pub fn sweep_orphans(&self) -> Result<Vec<String>> {
        let inner = &*self.inner;
        let Some((layout, backend)) = inner.segments.object_base() else {
            return Ok(Vec::new());
        };
        self.check_fence()?;
        let prefix = layout.segments();
        let _compacting = lock(&inner.compacting);
        // Every segment the index has an entry for, whatever its tier: a
        // local entry without a local file is a segment uploaded after the
        // backup a restore came from, and its object is its only copy.
        let mut known: std::collections::HashSet<SegmentId> =
            inner.segments.local_ids()?.into_iter().collect();
        known.extend(inner.index.segments()?.into_iter().map(|(id, _)| id));
        let listed = backend
            .list(&prefix)
            .map_err(|e| e.into_error(format!("listing {prefix}")))?;
        let mut deleted = Vec::new();
        for o in listed {
            let Some(id) = layout.parse_segment(&o.name) else {
                continue; // not a name this store writes: not ours to judge
            };
            if !known.contains(&id) {
                backend
                    .delete(&o.name)
                    .map_err(|e| e.into_error(format!("deleting {}", o.name)))?;
                deleted.push(o.name);
            }
        }
        deleted.extend(self.sweep_superseded_epochs(layout, backend.as_ref())?);
        Ok(deleted)
    }

    /// Deletes the index objects of epochs before this writer's, once the
    /// lease's pointer names a backup of its own epoch. The first push of
    /// an epoch deletes them too, but a superseded writer that had not yet
    /// learnt it (stopped, cut from the bucket) may upload into its old
    /// epoch's directory afterwards; nobody reads those files (the pointer
    /// moved on, and a fenced writer cannot move it back).
    fn sweep_superseded_epochs(
        &self,
        layout: &crate::segment::ObjectLayout,
        backend: &dyn ObjectBackend,
    ) -> Result<Vec<String>> {
        let Some(lease) = self.lease() else {
            return Ok(Vec::new());
        };
        if lease.index.is_none_or(|p| p.epoch != lease.epoch) {
            return Ok(Vec::new());
        }
        let prefix = layout.index_prefix();
        let listed = backend
            .list(&prefix)
            .map_err(|e| e.into_error(format!("listing {prefix}")))?;
        let mut deleted = Vec::new();
        for o in listed {
            if layout
                .parse_epoch_file(&o.name)
                .is_some_and(|(e, _)| e >= lease.epoch)
            {
                continue;
            }
            backend
                .delete(&o.name)
                .map_err(|e| e.into_error(format!("deleting {}", o.name)))?;
            deleted.push(o.name);
        }
        Ok(deleted)
    }

    /// Refuses a put while segments waiting for the bucket hold
    /// `local_limit_bytes` or more: a clear error the client can retry,
    /// instead of a disk that fills while the bucket is away.
    pub(super) fn check_local_room(&self) -> Result<()> {
        let Some(policy) = &self.inner.tier else {
            return Ok(());
        };
        let limit = policy.options.local_limit_bytes;
        if limit == 0 {
            return Ok(());
        }
        // Every put asks: the directory and the remote set only, not the
        // whole of `tier_sizes`.
        let (_, waiting) = self.waiting()?;
        if waiting >= limit {
            return Err(crate::Error::Backlog { waiting, limit });
        }
        Ok(())
    }

    /// Segments only on the local disk (not uploaded yet, the active one
    /// included): how many, and their bytes.
    fn waiting(&self) -> Result<(u64, u64)> {
        let segs = &self.inner.segments;
        let (mut n, mut bytes) = (0, 0);
        for id in segs.local_ids()? {
            if !segs.is_remote(id) {
                n += 1;
                bytes += segs.file_len(id)?;
            }
        }
        Ok((n, bytes))
    }

    /// Where the segment bytes are.
    pub fn tier_sizes(&self) -> Result<TierSizes> {
        let inner = &*self.inner;
        let mut s = TierSizes::default();
        let remote = inner.segments.remote_segments();
        (s.local_segments, s.local_bytes) = self.waiting()?;
        s.cached_bytes = inner.segments.cached()?.iter().map(|c| c.1).sum();
        s.remote_segments = remote.len() as u64;
        s.remote_bytes = remote.values().sum();
        for (_, e) in inner.index.segments()? {
            if matches!(e.tier, SegmentTier::Retired { .. }) {
                s.retired_segments += 1;
            }
        }
        Ok(s)
    }

    /// The index entry that replaces a compacted segment's: deleted when
    /// it was local, `Retired` when its object must outlive it.
    pub(super) fn retired_entry(&self, seg: SegmentId) -> Option<SegmentEntry> {
        self.inner.tier.as_ref()?;
        let len = self.inner.segments.remote_len(seg)?;
        Some(SegmentEntry {
            live_bytes: 0,
            indexed_end: 0,
            tier: SegmentTier::Retired {
                len,
                retired_at: unix_now(),
            },
        })
    }
}
