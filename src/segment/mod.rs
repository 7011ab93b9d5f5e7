//! Segment files: append, seal, read, recover a torn tail.
//!
//! Chunk records are appended to one *active* segment; when it passes the
//! size limit it is flushed, fsynced and *sealed* (never written again), and
//! the next segment is created. Only the highest-numbered segment can ever
//! have a torn tail, because a segment is fsynced before its successor is
//! created. This module owns every fsync of chunk data.
//!
//! Writers append through a [`WriteSession`]: it remembers the segments it
//! wrote to and keeps them *pinned* until it is dropped, so compaction never
//! rewrites a segment that holds records whose index entries are not yet
//! committed. [`WriteSession::sync`] makes the session's records durable; a
//! session whose records were lost to a failed write or fsync gets an error
//! from `sync`, never a false acknowledgement.

pub mod backend;
pub mod io;
pub mod layout;
mod read;
mod recover;
mod reserve;
pub mod scan;
mod tier;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, SegmentHeader, encode_segment_header};
use crate::id::SegmentId;
use io::{SegmentFile, SegmentIo};
pub use layout::{MARKER, ObjectLayout};
use read::Readers;
pub use recover::TailReport;
pub use tier::TierSetup;

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: SegmentId,
    /// Offset of the record header from the start of the file.
    pub offset: u64,
    /// Header plus payload.
    pub len: u32,
}

const WRITE_BUFFER: usize = 1 << 20;

/// What is known about a file's durability. Its mutex is held across each
/// fsync of the file, and `fail` takes it too, so "fsync succeeded, records
/// acknowledged" and "cut the file back after a failure" never interleave.
/// Lock order: the writer before this.
#[derive(Debug)]
struct SyncState {
    /// Bytes known durable.
    synced: u64,
    /// An fsync of this file failed: what the kernel dropped is unknown, so
    /// no later fsync of it may acknowledge anything.
    failed: bool,
    /// The file was cut back to this length after a failure; records past
    /// it are gone.
    cut_at: Option<u64>,
}

impl SyncState {
    fn new(synced: u64) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(SyncState {
            synced,
            failed: false,
            cut_at: None,
        }))
    }
}

struct Active {
    id: SegmentId,
    file: Arc<dyn SegmentFile>,
    /// Bytes handed to the file (the rest are in `buf`).
    flushed: u64,
    /// Every fsync of this file goes through here (see [`SyncState`]).
    sync_state: Arc<Mutex<SyncState>>,
    buf: Vec<u8>,
}

impl Active {
    fn len(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.flushed)?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

struct Broken {
    why: String,
    file: Arc<dyn SegmentFile>,
    id: SegmentId,
    durable_len: u64,
}

struct Writer {
    active: Option<Active>,
    next_id: u64,
    /// Bumped by every write or fsync failure: a session that appended in an
    /// earlier generation lost its unsynced records.
    generation: u64,
    /// Set when a failed segment could not yet be cut back to its durable
    /// length; every write first retries the cut, and fails while it fails.
    broken: Option<Broken>,
    /// Segments with records whose index entries are not committed yet.
    pins: HashMap<SegmentId, usize>,
}

/// All segment files of a store.
pub struct SegmentSet {
    dir: PathBuf,
    io: Box<dyn SegmentIo>,
    store_id: [u8; 16],
    max_segment_bytes: u64,
    /// Space only compaction may use ([`reserve`]).
    reserve_bytes: u64,
    reserve_lock: Mutex<()>,
    writer: Mutex<Writer>,
    /// Read handles of sealed segments.
    readers: RwLock<Readers>,
    /// Where sealed segments go once uploaded ([`tier`]).
    tier: Option<tier::Tier>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not wedge the store; the state under
    // these locks is kept consistent at every await-free step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SegmentSet {
    /// Starts a write session.
    pub fn session(&self) -> WriteSession<'_> {
        WriteSession {
            set: self,
            touched: Vec::new(),
            generation: None,
        }
    }

    /// Ids of every segment, local or remote, ascending.
    pub fn list(&self) -> Result<Vec<SegmentId>> {
        let mut ids = list_segments(&self.dir)?;
        if self.tier.is_some() {
            ids.extend(self.remote_segments().into_keys());
            ids.sort();
            ids.dedup();
        }
        Ok(ids)
    }

    /// The size past which a segment is sealed.
    pub fn max_segment_bytes(&self) -> u64 {
        self.max_segment_bytes
    }

    /// The active segment, if any.
    pub fn active_id(&self) -> Option<SegmentId> {
        lock(&self.writer).active.as_ref().map(|a| a.id)
    }

    /// True when no write session holds uncommitted records in `id`.
    pub fn is_quiet(&self, id: SegmentId) -> bool {
        !lock(&self.writer).pins.contains_key(&id)
    }

    /// Seals `id` if it is the active segment and no session is writing to
    /// it, so that GC can reclaim its garbage. Returns whether `id` is now
    /// settled.
    pub fn seal_for_gc(&self, id: SegmentId) -> Result<bool> {
        let mut w = lock(&self.writer);
        if w.pins.contains_key(&id) {
            return Ok(false);
        }
        if w.active.as_ref().is_some_and(|a| a.id == id) {
            self.seal(&mut w)?;
        }
        Ok(id.0 < w.next_id && w.active.as_ref().map(|a| a.id) != Some(id))
    }

    /// Seals the active segment if no session is writing to it, so that
    /// whatever is appended next starts a new segment. Returns the ids of
    /// every sealed segment (a pinned active one is not among them).
    pub fn seal_active(&self) -> Result<Vec<SegmentId>> {
        let mut w = lock(&self.writer);
        if let Some(id) = w.active.as_ref().map(|a| a.id)
            && !w.pins.contains_key(&id)
        {
            self.seal(&mut w)?;
        }
        let active = w.active.as_ref().map(|a| a.id);
        drop(w);
        Ok(self
            .list()?
            .into_iter()
            .filter(|id| Some(*id) != active)
            .collect())
    }

    /// Current file length of a segment.
    pub fn file_len(&self, id: SegmentId) -> Result<u64> {
        let path = segment_path(&self.dir, id);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) => match self.remote_len(id) {
                Some(len) if e.kind() == std::io::ErrorKind::NotFound => Ok(len),
                _ => Err(Error::io(format!("reading {}", path.display()), e)),
            },
        }
    }

    /// How long ago segment `id` was last written (for a sealed segment:
    /// since it was sealed; sealed segments are never written again).
    pub fn age(&self, id: SegmentId) -> Result<std::time::Duration> {
        let path = segment_path(&self.dir, id);
        let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.is_remote(id) => {
                return Ok(Self::remote_age());
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Ok(modified.elapsed().unwrap_or_default())
    }

    /// Flushes and fsyncs the active segment (used on close).
    pub fn sync_all(&self) -> Result<()> {
        let mut s = self.session();
        {
            let mut w = lock(&self.writer);
            let Some(id) = w.active.as_ref().map(|a| a.id) else {
                return Ok(());
            };
            // Pinned like an append, so the session's drop balances it.
            *w.pins.entry(id).or_insert(0) += 1;
            s.touched.push(id);
            s.generation = Some(w.generation);
        }
        s.sync()
    }

    fn create_segment(&self, w: &mut Writer) -> Result<()> {
        let id = SegmentId(w.next_id);
        let path = segment_path(&self.dir, id);
        let file: Arc<dyn SegmentFile> = Arc::from(
            self.io
                .create(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?,
        );
        w.next_id += 1;
        let header = encode_segment_header(&SegmentHeader {
            segment_id: id.0,
            store_id: self.store_id,
        });
        let res = file
            .write_all_at(&header, 0)
            .and_then(|()| file.sync())
            .and_then(|()| self.io.sync_dir(&self.dir));
        if let Err(e) = res {
            // Leave no half-made segment behind: it would become the last one.
            let _ = self.io.remove(&path);
            return Err(Error::io(format!("creating {}", path.display()), e));
        }
        w.active = Some(Active {
            id,
            file,
            flushed: SEGMENT_HEADER_LEN as u64,
            sync_state: SyncState::new(SEGMENT_HEADER_LEN as u64),
            buf: Vec::with_capacity(WRITE_BUFFER),
        });
        Ok(())
    }

    /// Flushes, fsyncs and retires the active segment; the next append
    /// creates a new one.
    fn seal(&self, w: &mut Writer) -> Result<()> {
        if let Some(mut a) = w.active.take() {
            let res = a.flush().and_then(|()| {
                let mut st = lock(&a.sync_state);
                if st.failed || st.cut_at.is_some() {
                    return Err(std::io::Error::other(
                        "an earlier fsync of this segment failed",
                    ));
                }
                match a.file.sync() {
                    Ok(()) => {
                        st.synced = st.synced.max(a.flushed);
                        Ok(())
                    }
                    Err(e) => {
                        st.failed = true;
                        Err(e)
                    }
                }
            });
            match res {
                Ok(()) => {
                    self.forget_reader(a.id);
                }
                Err(e) => {
                    let what = format!("sealing segment {}", a.id);
                    self.fail(w, a, &format!("{what}: {e}"));
                    return Err(Error::io(what, e));
                }
            }
        }
        Ok(())
    }

    /// After a failed write or fsync: cut the segment back to what is known
    /// durable, so it holds only whole records, and start afresh in a new
    /// segment. Sessions with unsynced records learn of the loss through the
    /// generation. If even the cut fails, writes stop until reopen.
    fn fail(&self, w: &mut Writer, a: Active, why: &str) {
        w.generation += 1;
        // Waits for an fsync in progress, so its records count as durable
        // (and are kept) or fail with it.
        let mut st = lock(&a.sync_state);
        let synced = st.synced;
        st.cut_at = Some(synced);
        let cut = a.file.set_len(synced).and_then(|()| a.file.sync());
        drop(st);
        self.forget_reader(a.id);
        if cut.is_ok() && synced <= SEGMENT_HEADER_LEN as u64 {
            // Nothing in it was ever durable, so nothing refers to it: a
            // full disk must not leave one empty segment per failed write.
            let path = segment_path(&self.dir, a.id);
            if self.io.remove(&path).is_ok() {
                let _ = self.io.sync_dir(&self.dir);
            }
        }
        if let Err(e) = cut {
            w.broken = Some(Broken {
                why: format!("{why}; cutting segment {} back failed: {e}", a.id),
                file: a.file,
                id: a.id,
                durable_len: synced,
            });
        }
    }

    /// Errors while a failed segment cannot be cut back; retries the cut.
    fn check_writable(&self, w: &mut Writer) -> Result<()> {
        let Some(b) = &w.broken else {
            return Ok(());
        };
        match b.file.set_len(b.durable_len).and_then(|()| b.file.sync()) {
            Ok(()) => {
                self.forget_reader(b.id);
                w.broken = None;
                Ok(())
            }
            Err(e) => Err(Error::WritesFailed(format!("{}; retry: {e}", b.why))),
        }
    }
}

/// A sequence of appends whose records become durable together.
pub struct WriteSession<'a> {
    set: &'a SegmentSet,
    touched: Vec<SegmentId>,
    generation: Option<u64>,
}

impl WriteSession<'_> {
    /// Appends one record (`header` then `payload`).
    pub fn append(&mut self, header: &[u8], payload: &[u8]) -> Result<Location> {
        let set = self.set;
        let len = (header.len() + payload.len()) as u64;
        let mut w = lock(&set.writer);
        set.check_writable(&mut w)?;
        match self.generation {
            Some(g) if g != w.generation => {
                return Err(Error::WritesFailed(
                    "records of this write were lost to an I/O failure".into(),
                ));
            }
            Some(_) => {}
            None => self.generation = Some(w.generation),
        }
        let full = w.active.as_ref().is_some_and(|a| {
            a.len() + len > set.max_segment_bytes && a.len() > SEGMENT_HEADER_LEN as u64
        });
        if full {
            set.seal(&mut w)?;
        }
        if w.active.is_none() {
            set.create_segment(&mut w)?;
        }
        let Writer { active, pins, .. } = &mut *w;
        let Some(a) = active.as_mut() else {
            return Err(Error::WritesFailed("no active segment".into()));
        };
        let loc = Location {
            segment: a.id,
            offset: a.len(),
            len: len as u32,
        };
        if !self.touched.contains(&a.id) {
            self.touched.push(a.id);
            *pins.entry(a.id).or_insert(0) += 1;
        }
        a.buf.extend_from_slice(header);
        a.buf.extend_from_slice(payload);
        if a.buf.len() >= WRITE_BUFFER
            && let Err(e) = a.flush()
        {
            let what = format!("writing segment {}", a.id);
            if let Some(a) = w.active.take() {
                set.fail(&mut w, a, &format!("{what}: {e}"));
            }
            return Err(Error::io(what, e));
        }
        Ok(loc)
    }

    /// Makes every record appended so far durable (group commit: one fsync
    /// covers all sessions' records written before it).
    pub fn sync(&mut self) -> Result<()> {
        let set = self.set;
        let (file, state, target, id) = {
            let mut w = lock(&set.writer);
            set.check_writable(&mut w)?;
            if self.generation.is_some_and(|g| g != w.generation) {
                return Err(Error::WritesFailed(
                    "records of this write were lost to an I/O failure".into(),
                ));
            }
            let Some(a) = w.active.as_mut() else {
                return Ok(()); // every touched segment was sealed, hence synced
            };
            if !self.touched.contains(&a.id) {
                return Ok(());
            }
            if let Err(e) = a.flush() {
                let what = format!("writing segment {}", a.id);
                if let Some(a) = w.active.take() {
                    set.fail(&mut w, a, &format!("{what}: {e}"));
                }
                return Err(Error::io(what, e));
            }
            (
                Arc::clone(&a.file),
                Arc::clone(&a.sync_state),
                a.flushed,
                a.id,
            )
        };
        // fsync outside the writer lock so other sessions keep appending;
        // fsyncs of one file are serialised by its sync state.
        let mut st = lock(&state);
        if let Some(cut) = st.cut_at
            && target > cut
        {
            return Err(Error::WritesFailed(format!(
                "records of this write in segment {id} were lost to an I/O failure"
            )));
        }
        if st.failed {
            return Err(Error::WritesFailed(format!(
                "an earlier fsync of segment {id} failed"
            )));
        }
        if st.synced >= target {
            return Ok(());
        }
        match file.sync() {
            Ok(()) => {
                st.synced = target;
                Ok(())
            }
            Err(e) => {
                st.failed = true;
                drop(st);
                let what = format!("fsync of segment {id}");
                let mut w = lock(&set.writer);
                if w.active.as_ref().is_some_and(|a| a.id == id)
                    && let Some(a) = w.active.take()
                {
                    set.fail(&mut w, a, &format!("{what}: {e}"));
                } else {
                    // Sealed meanwhile: sessions that wrote to it must not
                    // count on it.
                    w.generation += 1;
                }
                Err(Error::io(what, e))
            }
        }
    }
}

impl Drop for WriteSession<'_> {
    fn drop(&mut self) {
        let mut w = lock(&self.set.writer);
        for id in &self.touched {
            if let Some(n) = w.pins.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    w.pins.remove(id);
                }
            }
        }
    }
}

pub(crate) fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{id}.seg"))
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentId>> {
    let mut ids = Vec::new();
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only the one spelling segment files get: at least 12 digits,
        // zero-padded (ids of later writer epochs are longer).
        if let Some(num) = name.strip_suffix(".seg")
            && let Ok(n) = num.parse::<u64>()
            && SegmentId(n).to_string() == num
        {
            ids.push(SegmentId(n));
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::io::{EIO, FaultyIo};
    use super::*;

    #[test]
    fn an_fsync_error_is_never_absorbed_by_a_later_fsync_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultyIo::new();
        let (set, _) = SegmentSet::open(
            dir.path(),
            Box::new(faults.clone()),
            [1; 16],
            1 << 20,
            0,
            |_| Ok(0),
        )
        .unwrap();
        let mut a = set.session();
        let mut b = set.session();
        a.append(b"header-a", b"payload-a").unwrap();
        b.append(b"header-b", b"payload-b").unwrap();
        faults.fail_syncs_after(0, EIO);
        assert!(a.sync().is_err());
        // The disk "recovers": an fsync would now succeed, but what the failed
        // one dropped is unknown, so b's records must not be acknowledged.
        faults.heal();
        assert!(b.sync().is_err());
        // New writes go to a fresh segment and are durable again.
        let mut c = set.session();
        c.append(b"header-c", b"payload-c").unwrap();
        c.sync().unwrap();
    }
}
