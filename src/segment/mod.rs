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

pub mod io;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::format::{
    self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, ScanEnd, SegmentHeader, decode_segment_header,
    encode_segment_header,
};
use crate::id::SegmentId;
use io::{SegmentFile, SegmentIo};

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    writer: Mutex<Writer>,
    /// Read handles of sealed segments (mmapped).
    readers: RwLock<Readers>,
}

#[derive(Default)]
struct Readers {
    map: HashMap<SegmentId, Arc<Reader>>,
    /// Segments removed by GC: a reader that mapped one just before its
    /// removal must not cache the mapping (it would pin the deleted file).
    removed: std::collections::HashSet<SegmentId>,
}

enum Reader {
    Mapped(Mmap),
    /// The active segment grows, so it is read with `pread`.
    Open(Arc<dyn SegmentFile>),
}

/// The bytes of one record, borrowed from a mapping or read into memory.
pub struct RecordBytes(Bytes);

enum Bytes {
    Mapped(Arc<Reader>, usize, usize),
    Owned(Vec<u8>),
}

impl Drop for RecordBytes {
    /// Releases the pages of a mapped record from this process's resident
    /// set once it has been read, so that streaming a large file keeps the
    /// daemon's RSS flat (the kernel's page cache keeps them warm).
    fn drop(&mut self) {
        if let Bytes::Mapped(r, start, end) = &self.0
            && let Reader::Mapped(m) = &**r
        {
            // A page fault maps more than the faulting page: the fault-around
            // window, and with large page-cache folios the whole folio (up to
            // 2 MiB). Releasing only the record's own pages left two thirds
            // of a streamed segment resident (measured); releasing the
            // 2 MiB-aligned window around it keeps the RSS flat.
            const WINDOW: usize = 2 << 20;
            let lo = start & !(WINDOW - 1);
            let hi = (end.div_ceil(WINDOW) * WINDOW).min(m.len());
            // SAFETY: the mapping is read-only and backed by an immutable
            // sealed segment; dropping its pages only makes the next access
            // fault them in again from the file, with the same contents.
            let _ = unsafe {
                m.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    lo,
                    hi.saturating_sub(lo),
                )
            };
        }
    }
}

impl std::ops::Deref for RecordBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Mapped(r, start, end) => match &**r {
                Reader::Mapped(m) => m.get(*start..*end).unwrap_or_default(),
                Reader::Open(_) => &[],
            },
            Bytes::Owned(v) => v,
        }
    }
}

/// What opening found in the last segment.
#[derive(Debug, Clone)]
pub struct TailReport {
    pub segment: SegmentId,
    /// Length of the valid prefix (header plus whole records).
    pub valid_len: u64,
    /// File length before any truncation.
    pub file_len: u64,
    /// The first invalid record, if any.
    pub invalid: Option<(u64, String)>,
    /// True when the invalid record lies within indexed data: the segment
    /// was left as it is (no truncation) and sealed.
    pub damaged: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not wedge the store; the state under
    // these locks is kept consistent at every await-free step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SegmentSet {
    /// Opens the segment directory. `indexed_end(segment)` tells how far the
    /// index references the segment: a bad record before that point is
    /// corruption of acknowledged data (an error), after it a torn tail
    /// (truncated).
    pub fn open(
        dir: &Path,
        io: Box<dyn SegmentIo>,
        store_id: [u8; 16],
        max_segment_bytes: u64,
        indexed_end: impl Fn(SegmentId) -> Result<u64>,
    ) -> Result<(Self, Option<TailReport>)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ids = list_segments(dir)?;
        let mut report = None;
        let mut active = None;
        let mut next_id = 1;
        for &id in &ids {
            let path = segment_path(dir, id);
            let is_last = Some(&id) == ids.last();
            let file: Arc<dyn SegmentFile> = Arc::from(
                io.open(&path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?,
            );
            let len = file
                .file()
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .len();
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let head_ok =
                len >= SEGMENT_HEADER_LEN as u64 && file.file().read_exact_at(&mut head, 0).is_ok();
            let header = if head_ok {
                decode_segment_header(&head).ok()
            } else {
                None
            };
            match header {
                Some(h) if h.segment_id == id.0 && h.store_id == store_id => {}
                Some(h) if h.store_id != store_id => {
                    return Err(Error::corrupt(
                        id,
                        0,
                        format!(
                            "segment belongs to store {}, not this one ({})",
                            hex::encode(h.store_id),
                            hex::encode(store_id)
                        ),
                    ));
                }
                _ => {
                    // A header torn while the segment was being created is
                    // harmless when nothing was ever indexed in it.
                    if is_last && indexed_end(id)? == 0 {
                        io.remove(&path)
                            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                        io.sync_dir(dir)
                            .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
                        report = Some(TailReport {
                            segment: id,
                            valid_len: 0,
                            file_len: len,
                            invalid: Some((0, "torn segment header; file removed".into())),
                            damaged: false,
                        });
                        next_id = id.0 + 1;
                        continue;
                    }
                    return Err(Error::corrupt(id, 0, "invalid segment header"));
                }
            }
            next_id = id.0 + 1;
            if !is_last {
                continue;
            }
            // Scan the last segment and cut a torn tail.
            let map = map_file(file.file(), id)?;
            let body = map.get(SEGMENT_HEADER_LEN..).unwrap_or_default();
            let end = format::scan_records(body, |_, _| {});
            let mut tail = TailReport {
                segment: id,
                valid_len: len,
                file_len: len,
                invalid: None,
                damaged: false,
            };
            if let ScanEnd::Invalid { offset, error } = end {
                let at = SEGMENT_HEADER_LEN as u64 + offset;
                let needed = indexed_end(id)?;
                if at < needed {
                    // Acknowledged data is damaged: keep every byte, write
                    // no more to this segment, and report it. Reads of the
                    // damaged chunks fail with the location; verify lists them.
                    tail.valid_len = at;
                    tail.damaged = true;
                    tail.invalid = Some((
                        at,
                        format!(
                            "{error}; the index references this segment up to offset {needed}, so this is damage, not a torn tail: nothing was truncated"
                        ),
                    ));
                } else {
                    file.set_len(at).and_then(|()| file.sync()).map_err(|e| {
                        Error::io(format!("truncating torn tail of segment {id}"), e)
                    })?;
                    tail.valid_len = at;
                    tail.invalid = Some((at, error.to_string()));
                }
            }
            report = Some(tail.clone());
            if !tail.damaged && tail.valid_len < max_segment_bytes {
                active = Some(Active {
                    id,
                    file,
                    flushed: tail.valid_len,
                    sync_state: SyncState::new(tail.valid_len),
                    buf: Vec::with_capacity(WRITE_BUFFER),
                });
            }
        }
        let set = SegmentSet {
            dir: dir.to_path_buf(),
            io,
            store_id,
            max_segment_bytes,
            writer: Mutex::new(Writer {
                active,
                next_id,
                generation: 0,
                broken: None,
                pins: HashMap::new(),
            }),
            readers: RwLock::new(Readers::default()),
        };
        Ok((set, report))
    }

    /// Starts a write session.
    pub fn session(&self) -> WriteSession<'_> {
        WriteSession {
            set: self,
            touched: Vec::new(),
            generation: None,
        }
    }

    /// Ids of every segment file, ascending.
    pub fn list(&self) -> Result<Vec<SegmentId>> {
        list_segments(&self.dir)
    }

    /// The active segment, if any.
    pub fn active_id(&self) -> Option<SegmentId> {
        lock(&self.writer).active.as_ref().map(|a| a.id)
    }

    /// True when compaction may rewrite `id`: it is sealed and no write
    /// session holds uncommitted records in it. Once true it stays true.
    pub fn is_settled(&self, id: SegmentId) -> bool {
        let w = lock(&self.writer);
        let active = w.active.as_ref().map(|a| a.id);
        id.0 < w.next_id && active != Some(id) && !w.pins.contains_key(&id)
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

    /// Current file length of a segment.
    pub fn file_len(&self, id: SegmentId) -> Result<u64> {
        let path = segment_path(&self.dir, id);
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }

    /// The bytes of the record at `loc` (not yet checked).
    pub fn read(&self, loc: Location) -> Result<RecordBytes> {
        let reader = self.reader(loc.segment)?;
        let start = loc.offset as usize;
        let end = start + loc.len as usize;
        match &*reader {
            Reader::Mapped(m) => {
                if end > m.len() {
                    return Err(Error::corrupt(
                        loc.segment,
                        loc.offset,
                        format!(
                            "record of {} bytes runs past the end of the segment ({} bytes)",
                            loc.len,
                            m.len()
                        ),
                    ));
                }
                Ok(RecordBytes(Bytes::Mapped(reader, start, end)))
            }
            Reader::Open(f) => {
                let mut buf = vec![0u8; loc.len as usize];
                f.file().read_exact_at(&mut buf, loc.offset).map_err(|e| {
                    Error::corrupt(
                        loc.segment,
                        loc.offset,
                        format!("reading a record of {} bytes: {e}", loc.len),
                    )
                })?;
                Ok(RecordBytes(Bytes::Owned(buf)))
            }
        }
    }

    /// The whole segment mapped, for scans (verify, compaction).
    pub fn map(&self, id: SegmentId) -> Result<Arc<Mmap>> {
        let path = segment_path(&self.dir, id);
        let f = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(Arc::new(map_file(&f, id)?))
    }

    fn reader(&self, id: SegmentId) -> Result<Arc<Reader>> {
        if let Some(r) = self
            .readers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(&id)
        {
            return Ok(Arc::clone(r));
        }
        let active = {
            let w = lock(&self.writer);
            w.active
                .as_ref()
                .filter(|a| a.id == id)
                .map(|a| Arc::clone(&a.file))
        };
        let reader = match active {
            Some(file) => Arc::new(Reader::Open(file)),
            None => {
                let path = segment_path(&self.dir, id);
                let f = std::fs::File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::Inconsistent(format!("segment file {} is missing", path.display()))
                    } else {
                        Error::io(format!("opening {}", path.display()), e)
                    }
                })?;
                let r = Arc::new(Reader::Mapped(map_file(&f, id)?));
                let mut readers = self.readers.write().unwrap_or_else(|p| p.into_inner());
                if !readers.removed.contains(&id) {
                    readers.map.insert(id, Arc::clone(&r));
                }
                r
            }
        };
        Ok(reader)
    }

    /// Removes a segment file that nothing references any more.
    pub fn remove(&self, id: SegmentId) -> Result<()> {
        {
            let mut readers = self.readers.write().unwrap_or_else(|p| p.into_inner());
            readers.map.remove(&id);
            readers.removed.insert(id);
        }
        let path = segment_path(&self.dir, id);
        match self.io.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))
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
                    self.readers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .map
                        .remove(&a.id);
                }
                Err(e) => {
                    let msg = format!("sealing segment {}: {e}", a.id);
                    self.fail(w, a, &msg);
                    return Err(Error::io(msg, e));
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
        self.readers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .remove(&a.id);
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
                self.readers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .map
                    .remove(&b.id);
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
            let msg = format!("writing segment {}: {e}", a.id);
            if let Some(a) = w.active.take() {
                set.fail(&mut w, a, &msg);
            }
            return Err(Error::io(msg, e));
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
                let msg = format!("writing segment {}: {e}", a.id);
                if let Some(a) = w.active.take() {
                    set.fail(&mut w, a, &msg);
                }
                return Err(Error::io(msg, e));
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
                let msg = format!("fsync of segment {id}: {e}");
                let mut w = lock(&set.writer);
                if w.active.as_ref().is_some_and(|a| a.id == id)
                    && let Some(a) = w.active.take()
                {
                    set.fail(&mut w, a, &msg);
                } else {
                    // Sealed meanwhile: sessions that wrote to it must not
                    // count on it.
                    w.generation += 1;
                }
                Err(Error::io(msg, e))
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

fn map_file(f: &std::fs::File, id: SegmentId) -> Result<Mmap> {
    // SAFETY: segment files are only ever appended to by this process (the
    // data directory is locked) and sealed segments are never modified; a
    // mapping stays valid after the file is removed.
    unsafe { Mmap::map(f) }.map_err(|e| Error::io(format!("mapping segment {id}"), e))
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
        if let Some(num) = name.strip_suffix(".seg")
            && num.len() == 12
            && let Ok(n) = num.parse::<u64>()
        {
            ids.push(SegmentId(n));
        }
    }
    ids.sort();
    Ok(ids)
}

/// Record header length, re-exported for the layers above.
pub const HEADER_LEN: usize = RECORD_HEADER_LEN;
