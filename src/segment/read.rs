//! Reading records back with positioned reads (`pread`) into the caller's
//! buffers: nothing a reader touches stays mapped into the process, so a
//! stream of any length keeps the resident set flat, and a range of
//! adjacent records is one read (the shape a remote segment's range
//! request has too). Whole-segment scans go through `scan`.
//!
//! Open handles of sealed segments are cached (a bounded number); a segment
//! GC removed is never cached again, and a handle already open keeps
//! reading the removed file's bytes, which are the same.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::io::SegmentFile;
use super::{SegmentSet, lock, segment_path};
use crate::error::{Error, Result};
use crate::id::SegmentId;

/// Sealed segments kept open for reads.
const OPEN_HANDLES: usize = 128;

/// Open read handles, by segment.
#[derive(Default)]
pub(super) struct Readers {
    map: HashMap<SegmentId, (Arc<Handle>, AtomicU64)>,
    /// Segments removed by GC: a reader that opened one just before its
    /// removal must not cache the handle.
    removed: HashSet<SegmentId>,
    /// Bumped by every use, for evicting the least recently used handle.
    clock: AtomicU64,
}

pub(super) enum Handle {
    Sealed(File),
    /// The active segment: read through the writer's own file.
    Active(Arc<dyn SegmentFile>),
    /// A remote segment with no local copy: range requests.
    Remote,
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

    /// Reads `buf.len()` bytes of segment `id` at `offset` (not checked:
    /// the caller decodes them). A read past the end of the file is
    /// corruption at that place.
    pub fn read_at(&self, id: SegmentId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let handle = self.handle(id)?;
        let res = match &*handle {
            Handle::Sealed(f) => f.read_exact_at(buf, offset),
            Handle::Active(f) => f.file().read_exact_at(buf, offset),
            Handle::Remote => {
                let Some(t) = &self.tier else {
                    return Err(Error::Internal(format!(
                        "segment {id} is remote without a tier"
                    )));
                };
                t.backend
                    .read_at(&t.name(id), offset, buf)
                    .map_err(|e| t.error(id, offset, e))?;
                self.keep_remote_read(id, offset, buf);
                return Ok(());
            }
        };
        res.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    id,
                    offset,
                    format!("{} bytes run past the end of the segment", buf.len()),
                )
            } else {
                Error::io(format!("reading segment {id} at {offset}"), e)
            }
        })
    }

    fn handle(&self, id: SegmentId) -> Result<Arc<Handle>> {
        {
            let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
            if let Some((h, used)) = readers.map.get(&id) {
                used.store(
                    readers.clock.fetch_add(1, Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                return Ok(Arc::clone(h));
            }
        }
        // A remote segment is never the active one: its reads skip the
        // writer's lock (an uncached remote segment comes here per read).
        let remote = self.is_remote(id);
        let active = if remote {
            None
        } else {
            let w = lock(&self.writer);
            w.active
                .as_ref()
                .filter(|a| a.id == id)
                .map(|a| Arc::clone(&a.file))
        };
        if let Some(file) = active {
            // Not cached: the active segment is sealed (and then read as a
            // sealed file) while readers come and go.
            return Ok(Arc::new(Handle::Active(file)));
        }
        let path = segment_path(&self.dir, id);
        let f = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && remote {
                // Not cached either: a remote handle is only a name, and
                // a later read finds the local copy once one exists.
                return None;
            }
            Some(if e.kind() == std::io::ErrorKind::NotFound {
                Error::Inconsistent(format!("segment file {} is missing", path.display()))
            } else {
                Error::io(format!("opening {}", path.display()), e)
            })
        });
        let f = match f {
            Ok(f) => f,
            Err(None) => return Ok(Arc::new(Handle::Remote)),
            Err(Some(e)) => return Err(e),
        };
        let h = Arc::new(Handle::Sealed(f));
        let mut readers = self.readers.write().unwrap_or_else(|p| p.into_inner());
        if !readers.removed.contains(&id) {
            if readers.map.len() >= OPEN_HANDLES {
                let oldest = readers
                    .map
                    .iter()
                    .min_by_key(|(_, (_, used))| used.load(Ordering::Relaxed))
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    readers.map.remove(&k);
                }
            }
            let now = readers.clock.fetch_add(1, Ordering::Relaxed);
            readers
                .map
                .insert(id, (Arc::clone(&h), AtomicU64::new(now)));
            // A cached copy of a remote segment evicted between the open
            // and here: keep no handle that pins an unlinked file.
            if self.is_remote(id) && !path.exists() {
                readers.map.remove(&id);
            }
        }
        Ok(h)
    }

    /// When each open segment was last read (a clock value).
    pub(super) fn last_used(&self) -> HashMap<SegmentId, u64> {
        let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
        readers
            .map
            .iter()
            .map(|(id, (_, used))| (*id, used.load(Ordering::Relaxed)))
            .collect()
    }

    /// Removes a segment that nothing references any more: its local file,
    /// and its place in the remote tier (the store has recorded the
    /// object's deletion, which waits out a grace period).
    pub fn remove(&self, id: SegmentId) -> Result<()> {
        self.forget_remote(id);
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
