//! The RocksDB index: the only module that imports `rocksdb`.
//!
//! Column families of the engine (keys big-endian so they sort, values
//! little-endian, each value led by a version byte; see `format/FORMAT.md`):
//!
//! | cf | key | value |
//! | --- | --- | --- |
//! | `meta` | name (utf-8) | store parameters (JSON) |
//! | `chunks` | chunk id (32) | [`ChunkEntry`] |
//! | `files` | file id (32) | [`FileRecord`] |
//! | `file_chunks` | file id (32) + start offset (u64 BE) | a block of up to [`BLOCK_ENTRIES`] chunk refs |
//! | `segments` | segment id (u64 BE) | [`SegmentEntry`] |
//! | `partials` | transfer id (16) + chunk id (32) | empty: the transfer holds one reference on the chunk |
//!
//! The layers above never see this module: they keep their records in typed
//! tables (`store::Table`) that the store maps onto column families of
//! their own, opened here by name.

mod backup;
mod values;

pub use values::{ChunkEntry, ChunkRef, FileRecord, Member, SegmentEntry, SegmentTier};
use values::{decode_block, encode_block};

use std::path::Path;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, MultiThreaded, Options,
};

use crate::error::{Error, Result};
use crate::id::{ChunkId, FileId, SegmentId};

type Db = DBWithThreadMode<MultiThreaded>;

const CF_META: &str = "meta";
const CF_CHUNKS: &str = "chunks";
const CF_FILES: &str = "files";
const CF_FILE_CHUNKS: &str = "file_chunks";
const CF_SEGMENTS: &str = "segments";
const CF_PARTIALS: &str = "partials";
const ENGINE_CFS: [&str; 6] = [
    CF_META,
    CF_CHUNKS,
    CF_FILES,
    CF_FILE_CHUNKS,
    CF_SEGMENTS,
    CF_PARTIALS,
];

/// Names a transfer in progress (its job's 16 bytes); see `partials`.
pub type PartialId = [u8; 16];

/// Chunk references per `file_chunks` block.
pub const BLOCK_ENTRIES: usize = 1024;
/// The write-ahead log's bound: past it RocksDB flushes the column
/// families that hold its oldest writes. A backup carries the log since
/// the last flush (`backup_to`), so this bounds what each publication of
/// the index uploads beyond new table files.
pub const WAL_BYTES: u64 = 1 << 20;

/// The RocksDB instance.
pub struct Index {
    db: Db,
}

fn db_err(e: rocksdb::Error) -> Error {
    Error::Index(Box::new(e))
}

fn bad(table: &'static str, key: &[u8]) -> Error {
    Error::BadRecord {
        table,
        key: hex::encode(key),
        detail: "wrong length or version".into(),
        source: None,
    }
}

fn partial_key(p: &PartialId, id: &ChunkId) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(p);
    k[16..].copy_from_slice(id.as_bytes());
    k
}

fn block_key(file: &FileId, start: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(file.as_bytes());
    k[32..].copy_from_slice(&start.to_be_bytes());
    k
}

/// A group of index changes that commit atomically.
pub struct Batch<'a> {
    index: &'a Index,
    wb: rocksdb::WriteBatch,
}

impl Batch<'_> {
    pub fn put_chunk(&mut self, id: &ChunkId, e: &ChunkEntry) -> Result<()> {
        let cf = self.index.cf(CF_CHUNKS)?;
        self.wb.put_cf(&cf, id.as_bytes(), e.encode());
        Ok(())
    }
    pub fn delete_chunk(&mut self, id: &ChunkId) -> Result<()> {
        let cf = self.index.cf(CF_CHUNKS)?;
        self.wb.delete_cf(&cf, id.as_bytes());
        Ok(())
    }
    pub fn put_file(&mut self, id: &FileId, r: &FileRecord) -> Result<()> {
        let cf = self.index.cf(CF_FILES)?;
        self.wb.put_cf(&cf, id.as_bytes(), r.encode());
        Ok(())
    }
    pub fn delete_file(&mut self, id: &FileId) -> Result<()> {
        let cf = self.index.cf(CF_FILES)?;
        self.wb.delete_cf(&cf, id.as_bytes());
        let cf = self.index.cf(CF_FILE_CHUNKS)?;
        self.wb
            .delete_range_cf(&cf, block_key(id, 0), block_key(id, u64::MAX));
        self.wb.delete_cf(&cf, block_key(id, u64::MAX));
        Ok(())
    }
    /// Stores a block of `file`'s chunk list starting at byte `start`.
    pub fn put_block(&mut self, file: &FileId, start: u64, refs: &[ChunkRef]) -> Result<()> {
        let cf = self.index.cf(CF_FILE_CHUNKS)?;
        self.wb
            .put_cf(&cf, block_key(file, start), encode_block(refs));
        Ok(())
    }
    pub fn put_segment(&mut self, id: SegmentId, e: &SegmentEntry) -> Result<()> {
        let cf = self.index.cf(CF_SEGMENTS)?;
        self.wb.put_cf(&cf, id.0.to_be_bytes(), e.encode());
        Ok(())
    }
    pub fn delete_segment(&mut self, id: SegmentId) -> Result<()> {
        let cf = self.index.cf(CF_SEGMENTS)?;
        self.wb.delete_cf(&cf, id.0.to_be_bytes());
        Ok(())
    }
    pub fn put_partial(&mut self, p: &PartialId, id: &ChunkId) -> Result<()> {
        let cf = self.index.cf(CF_PARTIALS)?;
        self.wb.put_cf(&cf, partial_key(p, id), []);
        Ok(())
    }
    pub fn delete_partial(&mut self, p: &PartialId, id: &ChunkId) -> Result<()> {
        let cf = self.index.cf(CF_PARTIALS)?;
        self.wb.delete_cf(&cf, partial_key(p, id));
        Ok(())
    }
    pub fn put_meta(&mut self, name: &str, value: &[u8]) -> Result<()> {
        let cf = self.index.cf(CF_META)?;
        self.wb.put_cf(&cf, name.as_bytes(), value);
        Ok(())
    }
    /// A key in a column family of a layer above the engine.
    pub fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.index.cf(cf)?;
        self.wb.put_cf(&cf, key, value);
        Ok(())
    }
    pub fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        let cf = self.index.cf(cf)?;
        self.wb.delete_cf(&cf, key);
        Ok(())
    }
    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
    /// Commits, with the WAL fsynced before returning.
    pub fn commit(self) -> Result<()> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.index.db.write_opt(self.wb, &opts).map_err(db_err)
    }
}

impl Index {
    /// Opens (creating if needed) the index at `path` with the engine's
    /// column families plus `extra_cfs` for the layers above.
    pub fn open(path: &Path, extra_cfs: &[&str]) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(WAL_BYTES);
        let mut names: Vec<&str> = ENGINE_CFS.to_vec();
        names.extend_from_slice(extra_cfs);
        // Keep any column family a newer build created, so opening never
        // drops data we do not understand.
        if let Ok(existing) = Db::list_cf(&opts, path) {
            for n in existing {
                if n != "default" && !names.contains(&n.as_str()) {
                    names.push(Box::leak(n.into_boxed_str()));
                }
            }
        }
        let cfs = names.iter().map(|n| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*n, o)
        });
        let db = Db::open_cf_descriptors(&opts, path, cfs).map_err(db_err)?;
        Ok(Index { db })
    }

    fn cf(&self, name: &str) -> Result<std::sync::Arc<BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Index(format!("column family {name} is not open").into()))
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            index: self,
            wb: rocksdb::WriteBatch::default(),
        }
    }

    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get_cf(CF_META, name.as_bytes())
    }

    pub fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(cf)?;
        self.db.get_cf(&cf, key).map_err(db_err)
    }

    /// Every (key, value) of a column family whose key starts with `prefix`.
    pub fn scan_cf(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_cf(cf, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Calls `f` with each (key, value) of a column family whose key starts
    /// with `prefix`, in key order, until `f` breaks.
    pub fn for_each_cf(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<std::ops::ControlFlow<()>>,
    ) -> Result<()> {
        let handle = self.cf(cf)?;
        let mut it = self.db.raw_iterator_cf(&handle);
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            if f(k, v)?.is_break() {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(db_err)
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        let cf = self.cf(CF_CHUNKS)?;
        match self.db.get_pinned_cf(&cf, id.as_bytes()).map_err(db_err)? {
            None => Ok(None),
            Some(v) => ChunkEntry::decode(&v)
                .map(Some)
                .ok_or_else(|| bad("chunk", id.as_bytes())),
        }
    }

    pub fn file(&self, id: &FileId) -> Result<Option<FileRecord>> {
        let cf = self.cf(CF_FILES)?;
        match self.db.get_pinned_cf(&cf, id.as_bytes()).map_err(db_err)? {
            None => Ok(None),
            Some(v) => FileRecord::decode(&v)
                .map(Some)
                .ok_or_else(|| bad("file", id.as_bytes())),
        }
    }

    pub fn segment(&self, id: SegmentId) -> Result<Option<SegmentEntry>> {
        let cf = self.cf(CF_SEGMENTS)?;
        match self
            .db
            .get_pinned_cf(&cf, id.0.to_be_bytes())
            .map_err(db_err)?
        {
            None => Ok(None),
            Some(v) => SegmentEntry::decode(&v)
                .map(Some)
                .ok_or_else(|| bad("segment", &id.0.to_be_bytes())),
        }
    }

    /// The block of `file`'s chunk list that covers byte `offset`, with the
    /// offset its first chunk starts at.
    pub fn block_at(&self, file: &FileId, offset: u64) -> Result<Option<(u64, Vec<ChunkRef>)>> {
        let cf = self.cf(CF_FILE_CHUNKS)?;
        let key = block_key(file, offset);
        let mut it = self.db.raw_iterator_cf(&cf);
        it.seek_for_prev(key);
        it.status().map_err(db_err)?;
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            return Ok(None);
        };
        if k.get(..32) != Some(file.as_bytes().as_slice()) {
            return Ok(None);
        }
        let start = k
            .get(32..40)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| bad("file_chunks key", k))?;
        let refs = decode_block(v).ok_or_else(|| bad("file_chunks", k))?;
        Ok(Some((start, refs)))
    }

    /// Calls `f(start, refs)` for each block of `file`'s chunk list in order.
    pub fn for_each_block(
        &self,
        file: &FileId,
        mut f: impl FnMut(u64, Vec<ChunkRef>) -> Result<()>,
    ) -> Result<()> {
        let cf = self.cf(CF_FILE_CHUNKS)?;
        let mut it = self.db.raw_iterator_cf(&cf);
        it.seek(block_key(file, 0));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.get(..32) != Some(file.as_bytes().as_slice()) {
                break;
            }
            let start = k
                .get(32..40)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| bad("file_chunks key", k))?;
            let refs = decode_block(v).ok_or_else(|| bad("file_chunks", k))?;
            f(start, refs)?;
            it.next();
        }
        it.status().map_err(db_err)
    }

    /// True when transfer `p` holds a reference on `id`.
    pub fn partial_has(&self, p: &PartialId, id: &ChunkId) -> Result<bool> {
        let cf = self.cf(CF_PARTIALS)?;
        Ok(self
            .db
            .get_pinned_cf(&cf, partial_key(p, id))
            .map_err(db_err)?
            .is_some())
    }

    /// Every chunk transfer `p` holds.
    pub fn partial_chunks(&self, p: &PartialId) -> Result<Vec<ChunkId>> {
        Ok(self
            .scan_cf(CF_PARTIALS, p)?
            .into_iter()
            .filter_map(|(k, _)| k.get(16..48).and_then(|b| b.try_into().ok()).map(ChunkId))
            .collect())
    }

    /// Every transfer id that holds references, with how many.
    pub fn partials(&self) -> Result<Vec<(PartialId, u64)>> {
        let mut out: Vec<(PartialId, u64)> = Vec::new();
        for (k, _) in self.scan_cf(CF_PARTIALS, &[])? {
            let Some(p) = k.get(..16).and_then(|b| <PartialId>::try_from(b).ok()) else {
                continue;
            };
            match out.last_mut() {
                Some((q, n)) if *q == p => *n += 1,
                _ => out.push((p, 1)),
            }
        }
        Ok(out)
    }

    /// Calls `f` for every chunk entry.
    pub fn for_each_chunk(
        &self,
        mut f: impl FnMut(ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()> {
        let cf = self.cf(CF_CHUNKS)?;
        for item in self.db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            let id: [u8; 32] = (*k).try_into().map_err(|_| bad("chunk key", &k))?;
            let e = ChunkEntry::decode(&v).ok_or_else(|| bad("chunk", &k))?;
            f(ChunkId(id), e)?;
        }
        Ok(())
    }

    /// Calls `f` for every file record.
    pub fn for_each_file(&self, mut f: impl FnMut(FileId, FileRecord) -> Result<()>) -> Result<()> {
        let cf = self.cf(CF_FILES)?;
        for item in self.db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            let id: [u8; 32] = (*k).try_into().map_err(|_| bad("file key", &k))?;
            let r = FileRecord::decode(&v).ok_or_else(|| bad("file", &k))?;
            f(FileId(id), r)?;
        }
        Ok(())
    }

    /// Every segment entry.
    pub fn segments(&self) -> Result<Vec<(SegmentId, SegmentEntry)>> {
        let cf = self.cf(CF_SEGMENTS)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            let id: [u8; 8] = (*k).try_into().map_err(|_| bad("segment key", &k))?;
            let e = SegmentEntry::decode(&v).ok_or_else(|| bad("segment", &k))?;
            out.push((SegmentId(u64::from_be_bytes(id)), e));
        }
        Ok(out)
    }

    /// Flushes memtables (used on close so the WAL stays short).
    pub fn flush(&self) -> Result<()> {
        for n in ENGINE_CFS {
            let cf = self.cf(n)?;
            self.db.flush_cf(&cf).map_err(db_err)?;
        }
        Ok(())
    }
}
