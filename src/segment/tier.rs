//! The remote tier: sealed segments uploaded to an [`ObjectBackend`], their
//! local files kept as a cache.
//!
//! The segment layer knows which segments are remote (the store tells it at
//! open, from the index, and after each confirmed upload) and reads them
//! where they are: a local file when there is one, else range requests to
//! the backend. It never decides anything: uploading, marking, evicting and
//! deleting objects are the store's steps (`store/tier.rs`), which keep the
//! index in step.
//!
//! Object names come from the store's [`ObjectLayout`]: a segment id is
//! never reused while its object may still exist (`attach_tier` moves the
//! next id past every known one).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::backend::{BackendError, ObjectBackend};
use super::layout::ObjectLayout;
use super::{SegmentSet, lock, segment_path};
use crate::error::{Error, Result};
use crate::id::SegmentId;

/// What a remote segment's missing local file reports as its age: it is as
/// cold as a segment can be.
const REMOTE_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Remote segments being filled into the cache at once; a read of another
/// drops the oldest of them. Complete fills waiting for the tier step do
/// not count.
const FILLS: usize = 8;

/// Marks a cache file being filled, `NNN.seg.fill-K` (never listed as a
/// segment).
const FILL_SUFFIX: &str = ".seg.fill";

pub(super) struct Tier {
    pub(super) backend: Arc<dyn ObjectBackend>,
    layout: ObjectLayout,
    /// Remote segments and their lengths.
    remote: RwLock<BTreeMap<SegmentId, u64>>,
    /// Segments no larger than this are kept in the cache as they are read.
    cache_bytes: u64,
    /// Cache files being filled by remote reads ([`Fill`]).
    fills: Mutex<Fills>,
}

/// The cache files that remote reads are filling.
#[derive(Default)]
struct Fills {
    by_segment: HashMap<SegmentId, Fill>,
    /// Bumped per new fill, to drop the oldest.
    clock: u64,
}

/// A segment's cache file while reads fill it: every byte a range request
/// brought is written at its offset; once every byte is there (a file read
/// end to end covers its segments), the next tier step checks the file
/// like a scan checks any segment and renames it into place, and later
/// reads are local.
struct Fill {
    /// Shared with the reads writing to it outside the fills lock.
    file: Arc<dyn super::io::SegmentFile>,
    path: PathBuf,
    len: u64,
    /// Covered ranges, start to end, merged.
    covered: BTreeMap<u64, u64>,
    born: u64,
}

impl Fill {
    fn add(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        // Merge with every range that touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .covered
            .range(..=end)
            .filter(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.covered.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.covered.insert(start, end);
    }

    fn complete(&self) -> bool {
        self.covered.get(&0) == Some(&self.len)
    }
}

impl Tier {
    pub(super) fn name(&self, id: SegmentId) -> String {
        self.layout.segment(id)
    }

    fn remote(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<SegmentId, u64>> {
        self.remote.read().unwrap_or_else(|p| p.into_inner())
    }

    fn remote_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<SegmentId, u64>> {
        self.remote.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Maps a backend failure on segment `id` to the engine's errors: a
    /// missing object is an inconsistency, a short one corruption, both
    /// naming the segment and the object.
    pub(super) fn error(&self, id: SegmentId, offset: u64, e: BackendError) -> Error {
        let name = self.name(id);
        match e {
            BackendError::NotFound(_) => Error::Inconsistent(format!(
                "segment {id} is remote but its object {name} is missing from {}",
                self.backend.describe()
            )),
            BackendError::Short {
                wanted_end, len, ..
            } => Error::corrupt(
                id,
                offset,
                format!("object {name} holds {len} bytes, the read needs {wanted_end}"),
            ),
            e => e.into_error(format!(
                "reading segment {id} from {}",
                self.backend.describe()
            )),
        }
    }
}

/// The remote tier of one store, as the store sets it up at open.
pub struct TierSetup {
    pub backend: Arc<dyn ObjectBackend>,
    /// Object name prefix shared by every store in the bucket (`dc1/`).
    pub prefix: String,
    /// Segments the index marks remote, and their lengths.
    pub remote: BTreeMap<SegmentId, u64>,
    /// Segments compacted away whose objects wait out their grace
    /// period: a local file of one is what a crash left before its
    /// removal, and is removed now.
    pub retired: Vec<SegmentId>,
    /// The highest segment id the index has an entry for (a restored
    /// index names segments whose files are gone: their ids stay taken).
    pub highest: Option<SegmentId>,
    /// The cache size: a remote segment no larger is kept as it is read.
    pub cache_bytes: u64,
}

impl SegmentSet {
    /// Puts sealed segments behind a remote tier. A last segment reopened
    /// as active that is already remote is sealed again (it must never be
    /// appended to), and new segment ids start past every id the index
    /// knows, so no object name is ever reused while its object may exist.
    pub fn attach_tier(&mut self, t: TierSetup) -> Result<()> {
        let layout = ObjectLayout::new(&t.prefix, &self.store_id);
        {
            let mut w = lock(&self.writer);
            if w.active
                .as_ref()
                .is_some_and(|a| t.remote.contains_key(&a.id) || t.retired.contains(&a.id))
            {
                w.active = None;
            }
            let highest = t.remote.keys().chain(&t.retired).chain(&t.highest).max();
            if let Some(h) = highest {
                w.next_id = w.next_id.max(h.0 + 1);
            }
        }
        // Cache files a crash left half filled: what they cover is unknown.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(FILL_SUFFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for &id in &t.retired {
            let path = segment_path(&self.dir, id);
            match self.io.remove(&path) {
                Ok(()) => self
                    .io
                    .sync_dir(&self.dir)
                    .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        self.tier = Some(Tier {
            backend: t.backend,
            layout,
            remote: RwLock::new(t.remote),
            cache_bytes: t.cache_bytes,
            fills: Mutex::new(Fills::default()),
        });
        Ok(())
    }

    /// Keeps what a range request of remote segment `id` brought in its
    /// cache file. Best effort: a full disk or any other failure drops the
    /// fill and the reads go on from the bucket.
    ///
    /// The read pays for one positioned write and nothing else: the write
    /// happens outside the fills lock (parallel read-ahead workers write
    /// side by side), and a fill that is complete is checked, synced and
    /// put in place by the tier step ([`finish_fills`](Self::finish_fills)),
    /// not by the read that completed it (a whole segment's check and
    /// fsync stalled that read for a second).
    pub(super) fn keep_remote_read(&self, id: SegmentId, offset: u64, buf: &[u8]) {
        let Some(t) = &self.tier else {
            return;
        };
        let Some(len) = t.remote().get(&id).copied() else {
            return;
        };
        if buf.is_empty() || len > t.cache_bytes {
            return;
        }
        let (file, born) = {
            let mut fills = lock(&t.fills);
            // Checked again under the fills lock: `forget_remote` takes the
            // segment off the remote list before it takes this lock, so a
            // segment retired meanwhile is seen here and gets no fill.
            if !t.remote().contains_key(&id) {
                return;
            }
            if !fills.by_segment.contains_key(&id) && !self.start_fill(&mut fills, id, len) {
                return;
            }
            let Some(fill) = fills.by_segment.get(&id) else {
                return;
            };
            if fill.complete() {
                return; // waiting for the tier step
            }
            (Arc::clone(&fill.file), fill.born)
        };
        let written = file.write_all_at(buf, offset).is_ok();
        let mut fills = lock(&t.fills);
        // Dropped (or dropped and started again) while this wrote: the
        // bytes went to a file nobody will read.
        let Some(fill) = fills.by_segment.get_mut(&id).filter(|f| f.born == born) else {
            return;
        };
        if written {
            fill.add(offset, offset + buf.len() as u64);
        } else if let Some(f) = fills.by_segment.remove(&id) {
            let _ = std::fs::remove_file(&f.path);
        }
    }

    /// Starts segment `id`'s cache file (under the fills lock), dropping
    /// the oldest fill when [`FILLS`] are in progress. False when there
    /// is a local file already or the cache file cannot be made.
    fn start_fill(&self, fills: &mut Fills, id: SegmentId, len: u64) -> bool {
        if self.is_local(id) {
            return false;
        }
        // Complete fills (waiting for the tier step) do not count: they
        // are cache like any placed copy, evicted past `cache_bytes`.
        if fills.by_segment.values().filter(|f| !f.complete()).count() >= FILLS {
            let oldest = fills
                .by_segment
                .iter()
                .filter(|(_, f)| !f.complete())
                .min_by_key(|(_, f)| f.born)
                .map(|(k, _)| *k);
            if let Some(f) = oldest.and_then(|k| fills.by_segment.remove(&k)) {
                let _ = std::fs::remove_file(&f.path);
            }
        }
        fills.clock += 1;
        let born = fills.clock;
        // A name of its own: a fill being checked outside the lock must
        // never find its path taken by a newer fill.
        let path = self.dir.join(format!("{id}{FILL_SUFFIX}-{born}"));
        // The segment header is known without a request: only the records
        // need to come from the bucket.
        let header = crate::format::encode_segment_header(&crate::format::SegmentHeader {
            segment_id: id.0,
            store_id: self.store_id,
        });
        let file = self.io.create(&path).and_then(|f| {
            f.set_len(len)?;
            f.write_all_at(&header, 0)?;
            Ok(f)
        });
        let Ok(file) = file else {
            let _ = std::fs::remove_file(&path);
            return false;
        };
        fills.by_segment.insert(
            id,
            Fill {
                file: Arc::from(file),
                path,
                len,
                covered: BTreeMap::from([(0, header.len() as u64)]),
                born,
            },
        );
        true
    }

    /// Puts complete fill `born` in place as segment `id`'s local file,
    /// once it is checked (every record) and synced, both outside the
    /// fills lock; it leaves the map and is renamed under the lock. After
    /// a crash a cached copy is whole or absent, never a torn file that
    /// opening would take for a torn tail; and a segment retired meanwhile
    /// (`forget_remote` then `remove`, which takes this lock in between)
    /// never gets its file back. True when the file is in place.
    fn settle_fill(
        &self,
        t: &Tier,
        id: SegmentId,
        born: u64,
        file: &dyn super::io::SegmentFile,
        len: u64,
    ) -> bool {
        let sound = self.check_fill(id, file, len).is_ok() && file.sync().is_ok();
        let mut fills = lock(&t.fills);
        if fills.by_segment.get(&id).is_none_or(|f| f.born != born) {
            return false; // dropped meanwhile, with its file
        }
        let Some(fill) = fills.by_segment.remove(&id) else {
            return false;
        };
        let placed = sound
            && t.remote().contains_key(&id)
            && !self.is_local(id)
            && std::fs::rename(&fill.path, segment_path(&self.dir, id)).is_ok();
        drop(fills);
        if !placed {
            let _ = std::fs::remove_file(&fill.path);
        }
        placed
    }

    /// A filled cache file is the segment it claims to be, every record
    /// whole and checked, before reads trust it.
    fn check_fill(&self, id: SegmentId, file: &dyn super::io::SegmentFile, len: u64) -> Result<()> {
        use crate::format::{self, SEGMENT_HEADER_LEN, ScanEnd};
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        file.file()
            .read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("reading a cache fill", e))?;
        let h = format::decode_segment_header(&head)
            .map_err(|e| Error::corrupt(id, 0, e.to_string()))?;
        if h.segment_id != id.0 || h.store_id != self.store_id {
            return Err(Error::corrupt(id, 0, "the object is another segment"));
        }
        let end = super::scan::scan(
            len,
            &|off, buf| file.file().read_exact_at(buf, off),
            &mut |_, _, _| Ok(()),
        )?;
        match end {
            ScanEnd::Clean => Ok(()),
            ScanEnd::Invalid { offset, error } => {
                Err(Error::corrupt(id, offset, error.to_string()))
            }
        }
    }

    /// Completes the cache fills that reads left at least `min_covered`
    /// (a fraction) covered (reads of files skip the garbage records of a
    /// segment, so a segment read end to end may still miss a few ranges:
    /// this fetches the gaps), and puts every complete fill in place.
    /// Returns the segments cached by this call.
    pub fn finish_fills(&self, min_covered: f64) -> Result<Vec<SegmentId>> {
        let Some(t) = &self.tier else {
            return Ok(Vec::new());
        };
        let todo: Vec<(SegmentId, Vec<(u64, u64)>)> = {
            let fills = lock(&t.fills);
            fills
                .by_segment
                .iter()
                .filter(|(_, f)| {
                    let covered: u64 = f.covered.iter().map(|(s, e)| e - s).sum();
                    covered as f64 >= min_covered * f.len as f64
                })
                .map(|(id, f)| {
                    let mut gaps = Vec::new();
                    let mut at = 0;
                    for (&s, &e) in &f.covered {
                        if s > at {
                            gaps.push((at, s));
                        }
                        at = e;
                    }
                    if at < f.len {
                        gaps.push((at, f.len));
                    }
                    (*id, gaps)
                })
                .collect()
        };
        let mut done = Vec::new();
        for (id, gaps) in todo {
            let mut ok = t.remote().contains_key(&id);
            for (start, end) in gaps {
                if !ok {
                    break;
                }
                let mut buf = vec![0u8; (end - start) as usize];
                ok = t.backend.read_at(&t.name(id), start, &mut buf).is_ok();
                if ok {
                    self.keep_remote_read(id, start, &buf);
                }
            }
            // Best effort, like every fill: one that cannot complete (its
            // segment retired, the bucket unreachable) is dropped, never
            // allowed to stop the step's evictions and deletions.
            if !ok {
                self.drop_fill(id);
            }
        }
        // Complete fills stay in the map while they are checked (reads see
        // them complete and leave them alone; no second fill starts).
        let complete: Vec<(SegmentId, u64, Arc<dyn super::io::SegmentFile>, u64)> = lock(&t.fills)
            .by_segment
            .iter()
            .filter(|(_, f)| f.complete())
            .map(|(id, f)| (*id, f.born, Arc::clone(&f.file), f.len))
            .collect();
        for (id, born, file, len) in complete {
            if self.settle_fill(t, id, born, file.as_ref(), len) {
                done.push(id);
            }
        }
        Ok(done)
    }

    /// Drops a fill in progress (the segment was removed).
    fn drop_fill(&self, id: SegmentId) {
        if let Some(t) = &self.tier
            && let Some(f) = lock(&t.fills).by_segment.remove(&id)
        {
            let _ = std::fs::remove_file(&f.path);
        }
    }

    /// Ids of the segments with a local file, ascending.
    pub fn local_ids(&self) -> Result<Vec<SegmentId>> {
        super::list_segments(&self.dir)
    }

    /// Seals the active segment if it holds any record, even while puts
    /// are writing to it (their later appends go to the next segment), so
    /// that it can be uploaded.
    pub fn seal_now(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.active
            .as_ref()
            .is_some_and(|a| a.len() > crate::format::SEGMENT_HEADER_LEN as u64)
        {
            self.seal(&mut w)?;
        }
        Ok(())
    }

    /// New segments get ids from `first` on (if past the next one): a
    /// writer's epoch gives it a range of ids no other writer uses
    /// (`store::lease`). An active segment (this data dir's own, reopened
    /// after a restart) is finished under its id: only this data dir
    /// ever wrote it.
    pub fn start_ids_at(&self, first: u64) {
        let mut w = lock(&self.writer);
        w.next_id = w.next_id.max(first);
    }

    /// Fills `buf` from remote segment `id`'s object at `offset`, in the
    /// bucket whatever the cache holds (verify compares the two).
    pub fn read_object_at(&self, id: SegmentId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some(t) = &self.tier else {
            return Err(Error::InvalidInput("this store has no remote tier".into()));
        };
        t.backend
            .read_at(&t.name(id), offset, buf)
            .map_err(|e| t.error(id, offset, e))
    }

    /// The length of remote segment `id`'s object as the backend has it
    /// now (None: it is missing).
    pub fn remote_object_len(&self, id: SegmentId) -> Result<Option<u64>> {
        let Some(t) = &self.tier else {
            return Ok(None);
        };
        t.backend.len(&t.name(id)).map_err(|e| t.error(id, 0, e))
    }

    /// True when `id` is a failed segment not yet cut back to its durable
    /// length: its file may hold a garbage tail.
    pub fn is_broken(&self, id: SegmentId) -> bool {
        lock(&self.writer)
            .broken
            .as_ref()
            .is_some_and(|b| b.id == id)
    }

    /// This store's object names and the backend (with a tier).
    pub fn object_base(&self) -> Option<(&ObjectLayout, &Arc<dyn ObjectBackend>)> {
        self.tier.as_ref().map(|t| (&t.layout, &t.backend))
    }

    /// Remote segments and their lengths.
    pub fn remote_segments(&self) -> BTreeMap<SegmentId, u64> {
        self.tier
            .as_ref()
            .map(|t| t.remote().clone())
            .unwrap_or_default()
    }

    /// True when segment `id` is in the remote tier.
    pub fn is_remote(&self, id: SegmentId) -> bool {
        self.tier
            .as_ref()
            .is_some_and(|t| t.remote().contains_key(&id))
    }

    /// True when segment `id` has a local file (the active segment, one not
    /// uploaded yet, or a cached copy of a remote one).
    pub fn is_local(&self, id: SegmentId) -> bool {
        segment_path(&self.dir, id).exists()
    }

    /// The cache size: cached copies of remote segments past it are
    /// evicted, and a remote segment larger is never cached (0 without a
    /// tier).
    pub fn cache_bytes(&self) -> u64 {
        self.tier.as_ref().map_or(0, |t| t.cache_bytes)
    }

    /// The length of remote segment `id`'s object.
    pub fn remote_len(&self, id: SegmentId) -> Option<u64> {
        self.tier
            .as_ref()
            .and_then(|t| t.remote().get(&id).copied())
    }

    pub(super) fn remote_age() -> Duration {
        REMOTE_AGE
    }

    /// Uploads sealed segment `id` under its object name and confirms the
    /// object holds exactly the file's bytes; returns the length. Marks
    /// nothing: the store records the upload in the index, then calls
    /// [`SegmentSet::mark_remote`].
    pub fn upload(&self, id: SegmentId) -> Result<u64> {
        let Some(t) = &self.tier else {
            return Err(Error::InvalidInput("this store has no remote tier".into()));
        };
        if self.active_id() == Some(id) {
            return Err(Error::Internal(format!(
                "segment {id} is active and cannot be uploaded"
            )));
        }
        let path = segment_path(&self.dir, id);
        let len = self.file_len(id)?;
        t.backend.put_file(&t.name(id), &path).map_err(|e| {
            e.into_error(format!(
                "uploading segment {id} to {}",
                t.backend.describe()
            ))
        })?;
        Ok(len)
    }

    /// Records that segment `id` is remote with `len` bytes (after the
    /// index says so).
    pub fn mark_remote(&self, id: SegmentId, len: u64) {
        if let Some(t) = &self.tier {
            t.remote_mut().insert(id, len);
        }
    }

    /// Drops the local copy of remote segment `id`; reads go to the
    /// backend from now on. Returns the bytes freed.
    pub fn evict(&self, id: SegmentId) -> Result<u64> {
        if !self.is_remote(id) {
            return Err(Error::Internal(format!(
                "segment {id} is not remote: its local file is its only copy"
            )));
        }
        let path = segment_path(&self.dir, id);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        self.forget_reader(id);
        match self.io.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        // A reader that opened the file before the unlink may have cached
        // its handle since: dropped, so the space goes back (the reader's
        // own copy of the handle finishes its read of the same bytes, and
        // `handle` checks the path after caching).
        self.forget_reader(id);
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        Ok(len)
    }

    /// Local copies of remote segments: id, bytes, and when each was last
    /// read (a clock value; higher is more recent, 0 never since open).
    pub fn cached(&self) -> Result<Vec<(SegmentId, u64, u64)>> {
        let remote = self.remote_segments();
        let used = self.last_used();
        let mut out = Vec::new();
        for id in self.local_ids()? {
            if remote.contains_key(&id) {
                let len = std::fs::metadata(segment_path(&self.dir, id)).map_or(0, |m| m.len());
                out.push((id, len, used.get(&id).copied().unwrap_or(0)));
            }
        }
        Ok(out)
    }

    /// Deletes the object of a segment that is no longer remote (retired
    /// by compaction, its grace period over).
    pub fn delete_object(&self, id: SegmentId) -> Result<()> {
        let Some(t) = &self.tier else {
            return Ok(());
        };
        if t.remote().contains_key(&id) {
            return Err(Error::Internal(format!(
                "segment {id} is still remote; its object must stay"
            )));
        }
        t.backend
            .delete(&t.name(id))
            .map_err(|e| e.into_error(format!("deleting segment {id}'s object")))
    }

    /// Forgets that `id` is remote (compaction retired it).
    pub(super) fn forget_remote(&self, id: SegmentId) {
        if let Some(t) = &self.tier {
            t.remote_mut().remove(&id);
        }
        self.drop_fill(id);
    }
}
