//! Reading records back: sealed segments are mapped (and pages released
//! after each record, so streaming keeps the RSS flat), the active one is
//! read with `pread`; a segment GC removed is never cached again.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use memmap2::Mmap;

use super::io::SegmentFile;
use super::{Location, SegmentSet, lock, segment_path};
use crate::error::{Error, Result};
use crate::id::SegmentId;

#[derive(Default)]
pub(super) struct Readers {
    pub(super) map: HashMap<SegmentId, Arc<Reader>>,
    /// Segments removed by GC: a reader that mapped one just before its
    /// removal must not cache the mapping (it would pin the deleted file).
    pub(super) removed: std::collections::HashSet<SegmentId>,
}

pub(super) enum Reader {
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

impl SegmentSet {
    /// Drops the cached read handle of a segment whose file changed.
    pub(super) fn forget_reader(&self, id: SegmentId) {
        self.readers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .remove(&id);
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
}

pub(super) fn map_file(f: &std::fs::File, id: SegmentId) -> Result<Mmap> {
    // SAFETY: segment files are only ever appended to by this process (the
    // data directory is locked) and sealed segments are never modified; a
    // mapping stays valid after the file is removed.
    unsafe { Mmap::map(f) }.map_err(|e| Error::io(format!("mapping segment {id}"), e))
}
