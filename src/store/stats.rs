//! Usage figures: for the store, and per file the bytes unique to it versus
//! shared with other files.

use std::collections::HashMap;

use serde::Serialize;

use super::Store;
use crate::error::Result;
use crate::format::SEGMENT_HEADER_LEN;
use crate::id::{ChunkId, FileId};

#[derive(Clone, Debug, Serialize, serde::Deserialize, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Distinct files stored.
    pub files: u64,
    /// References to them (puts plus links minus unlinks).
    pub file_references: u64,
    /// What users see: each file's size times its references.
    pub logical_bytes: u64,
    /// Each distinct file's size once.
    pub distinct_file_bytes: u64,
    /// Chunks indexed (live and garbage).
    pub chunks: u64,
    /// Chunks with at least one reference.
    pub live_chunks: u64,
    /// Live chunks stored as members of group records (recompression
    /// gathers adjacent chunks into one frame: `FORMAT.md`).
    #[serde(default)]
    pub grouped_chunks: u64,
    /// Uncompressed bytes of the live chunks: logical bytes after dedup.
    pub unique_uncompressed_bytes: u64,
    /// Bytes of live records in segments: after dedup and compression.
    pub live_stored_bytes: u64,
    /// All segment file bytes (live, garbage and headers).
    pub stored_bytes: u64,
    /// Segment bytes that GC can reclaim.
    pub garbage_bytes: u64,
    pub segments: u64,
    /// The index on disk: table files, write-ahead log, manifest.
    pub index_bytes: u64,
    /// Local, cached and remote bytes, with a remote tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<super::TierSizes>,
    /// The data directory's filesystem: its size and the bytes free to
    /// the daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSpace>,
}

/// A filesystem's size and free bytes.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DiskSpace {
    pub size_bytes: u64,
    /// Free to an unprivileged process (what a put can use).
    pub free_bytes: u64,
}

impl super::Store {
    /// The data directory's filesystem (None where statvfs fails).
    pub fn disk_space(&self) -> Option<DiskSpace> {
        let v = rustix::fs::statvfs(self.dir()).ok()?;
        Some(DiskSpace {
            size_bytes: v.f_blocks.saturating_mul(v.f_frsize),
            free_bytes: v.f_bavail.saturating_mul(v.f_frsize),
        })
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileUsage {
    pub file_id: FileId,
    pub size: u64,
    pub refs: u64,
    pub chunks: u64,
    /// Uncompressed bytes of chunks no other file uses.
    pub unique_bytes: u64,
    /// Uncompressed bytes of chunks other files use too.
    pub shared_bytes: u64,
    /// Stored (compressed) bytes of the unique chunks: what deleting the
    /// file's last reference frees.
    pub unique_stored_bytes: u64,
    /// Stored bytes of the shared chunks.
    pub shared_stored_bytes: u64,
}

/// Bytes of the files in `dir` (the index: table files, the write-ahead
/// log, the manifest; a live index keeps recent writes in its log, so
/// table files alone would say 0 for a while).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The store's size without a scan of every chunk: cheap enough for a
/// metrics scrape (files are one per image file; segments are files).
#[derive(Clone, Debug, Serialize, Default, PartialEq, Eq)]
pub struct StoreSize {
    pub files: u64,
    pub file_references: u64,
    pub logical_bytes: u64,
    pub distinct_file_bytes: u64,
    pub segments: u64,
    pub stored_bytes: u64,
    pub index_bytes: u64,
}

impl Store {
    /// [`StoreSize`]: files and segments, not chunks.
    pub fn size(&self) -> Result<StoreSize> {
        let inner = &*self.inner;
        let mut s = StoreSize::default();
        inner.index.for_each_file(|_, r| {
            s.files += 1;
            s.file_references += r.refs;
            s.logical_bytes += r.size * r.refs;
            s.distinct_file_bytes += r.size;
            Ok(())
        })?;
        for id in inner.segments.list()? {
            s.segments += 1;
            s.stored_bytes += inner.segments.file_len(id)?;
        }
        s.index_bytes = dir_bytes(&inner.dir.join("index"));
        Ok(s)
    }

    /// Store-wide figures: [`Store::size`] plus a scan of every chunk.
    pub fn stats(&self) -> Result<StoreStats> {
        let size = self.size()?;
        let mut s = StoreStats {
            files: size.files,
            file_references: size.file_references,
            logical_bytes: size.logical_bytes,
            distinct_file_bytes: size.distinct_file_bytes,
            stored_bytes: size.stored_bytes,
            segments: size.segments,
            index_bytes: size.index_bytes,
            tier: self.has_tier().then(|| self.tier_sizes()).transpose()?,
            disk: self.disk_space(),
            ..StoreStats::default()
        };
        self.inner.index.for_each_chunk(|_, e| {
            s.chunks += 1;
            if e.refcount > 0 {
                s.live_chunks += 1;
                s.unique_uncompressed_bytes += u64::from(e.raw_len);
                s.live_stored_bytes += u64::from(e.stored_len());
                s.grouped_chunks += u64::from(e.member.is_some());
            }
            Ok(())
        })?;
        s.garbage_bytes = s
            .stored_bytes
            .saturating_sub(s.live_stored_bytes + s.segments * SEGMENT_HEADER_LEN as u64);
        Ok(s)
    }

    /// Every stored file with its reference count.
    pub fn files(&self) -> Result<Vec<(FileId, u64)>> {
        let mut out = Vec::new();
        self.inner.index.for_each_file(|id, r| {
            out.push((id, r.refs));
            Ok(())
        })?;
        Ok(out)
    }

    /// How much of a file is its own and how much it shares.
    pub fn file_usage(&self, id: &FileId) -> Result<FileUsage> {
        let rec = self.stat(id)?;
        let mut counts: HashMap<ChunkId, u64> = HashMap::new();
        self.inner.index.for_each_block(id, |_, refs| {
            for r in refs {
                *counts.entry(r.id).or_insert(0) += 1;
            }
            Ok(())
        })?;
        let mut u = FileUsage {
            file_id: *id,
            size: rec.size,
            refs: rec.refs,
            chunks: rec.chunk_count,
            unique_bytes: 0,
            shared_bytes: 0,
            unique_stored_bytes: 0,
            shared_stored_bytes: 0,
        };
        for (cid, n) in counts {
            let Some(e) = self.inner.index.chunk(&cid)? else {
                continue;
            };
            let raw = u64::from(e.raw_len) * n;
            if e.refcount <= n {
                u.unique_bytes += raw;
                u.unique_stored_bytes += u64::from(e.stored_len());
            } else {
                u.shared_bytes += raw;
                u.shared_stored_bytes += u64::from(e.stored_len());
            }
        }
        Ok(u)
    }
}
