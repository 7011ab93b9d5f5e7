//! The space reserve: a file in the segment directory that holds space
//! which only compaction may use.
//!
//! On a full disk, deleting images frees nothing until GC runs, and GC
//! frees a segment with live records only after copying them forward,
//! which needs space. Segments with no live records go first (they need
//! none); when a rewrite then still fails for lack of space, GC removes
//! the reserve and tries that segment again, and fills the reserve back
//! once the pass is over. Ingest never touches it, so a disk that uploads
//! filled always keeps room for one compaction.
//!
//! The reserve is written with incompressible bytes and fsynced: a sparse
//! file, or zeros on a compressing file system (ZFS), would hold nothing.

use std::io;

use super::{SegmentSet, lock};
use crate::error::{Error, Result};

/// The reserve's file name (not a segment: `list` ignores it).
const RESERVE: &str = "reserve";

const BLOCK: usize = 1 << 20;

impl SegmentSet {
    /// Bytes the reserve holds now.
    pub fn reserve_held(&self) -> u64 {
        std::fs::metadata(self.dir.join(RESERVE)).map_or(0, |m| m.len())
    }

    /// Grows the reserve to its target. On a full disk it keeps what fit
    /// and returns; other errors are returned. Returns the bytes held.
    pub fn fill_reserve(&self) -> Result<u64> {
        let _one = lock(&self.reserve_lock);
        let path = self.dir.join(RESERVE);
        let held = self.reserve_held();
        if held >= self.reserve_bytes {
            return Ok(held);
        }
        let ctx = || format!("filling the space reserve {}", path.display());
        let existed = path.exists();
        let file = if existed {
            self.io.open(&path)
        } else {
            self.io.create(&path)
        }
        .map_err(|e| Error::io(ctx(), e))?;
        let mut block = vec![0u8; BLOCK];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        let mut at = held;
        let mut full = false;
        while at < self.reserve_bytes {
            let n = (self.reserve_bytes - at).min(BLOCK as u64) as usize;
            match file.write_all_at(block.get(..n).unwrap_or_default(), at) {
                Ok(()) => at += n as u64,
                Err(e) if e.raw_os_error() == Some(super::io::ENOSPC) => {
                    full = true;
                    break;
                }
                Err(e) => return Err(Error::io(ctx(), e)),
            }
        }
        if full {
            // A partial write may have left a part of a block: keep whole
            // blocks only, so the size says what is held.
            let _ = file.set_len(at);
        }
        file.sync().map_err(|e| Error::io(ctx(), e))?;
        if !existed {
            self.io
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(ctx(), e))?;
        }
        Ok(at)
    }

    /// Removes the reserve, giving its space to the compaction that needs
    /// it. Returns the bytes freed.
    pub fn release_reserve(&self) -> Result<u64> {
        let _one = lock(&self.reserve_lock);
        let path = self.dir.join(RESERVE);
        let held = self.reserve_held();
        match self.io.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        Ok(held)
    }
}
