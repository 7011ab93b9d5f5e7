//! Transactions: index changes that commit together in one RocksDB batch.
//!
//! Every change of refcounts happens inside a [`Txn`], under the store's
//! commit lock. A transaction reads through an overlay of its own pending
//! changes (chunk entries, file records, chunk lists it created, transfer
//! references, and the layers' table records), so several operations (put
//! one file, unlink another, update an image record of a layer above) see
//! each other and commit atomically: after a crash either all of them
//! happened or none did.

use std::collections::{HashMap, HashSet};

use super::put::StagedPut;
use super::table::Pending;
use super::{PutResult, SegmentDeltas, Store, now_ms};
use crate::error::{Error, Result};
use crate::id::{ChunkId, FileId};
use crate::index::{
    BLOCK_ENTRIES, Batch, ChunkEntry, ChunkRef, FileRecord, Index, Member, PartialId,
};
use crate::segment::Location;
use crate::segment::lock;

/// Pending index changes; see the module docs.
pub struct Txn<'a> {
    pub(super) index: &'a Index,
    pub(super) batch: Batch<'a>,
    /// Writes to the layers' tables, read back before the index.
    pub(super) pending: Pending,
    chunks: HashMap<ChunkId, ChunkEntry>,
    files: HashMap<FileId, Option<FileRecord>>,
    /// Chunk lists of files created in this transaction.
    new_lists: HashMap<FileId, Vec<ChunkRef>>,
    /// Transfer references added in this transaction.
    partial_keys: HashSet<(PartialId, ChunkId)>,
    segs: SegmentDeltas,
}

impl Store {
    /// Runs `f` under the commit lock and commits its changes in one batch
    /// if it returns `Ok`; on `Err` nothing is written and `f`'s error is
    /// returned as it is. The caller's error type only has to take the
    /// engine's ([`Error`]), so a layer above aborts with its own errors.
    pub fn transaction<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let inner = &*self.inner;
        let _c = lock(&inner.commit);
        self.check_fence()?;
        let mut txn = Txn {
            index: &inner.index,
            batch: inner.index.batch(),
            pending: Pending::default(),
            chunks: HashMap::new(),
            files: HashMap::new(),
            new_lists: HashMap::new(),
            partial_keys: HashSet::new(),
            segs: SegmentDeltas::default(),
        };
        let out = f(&mut txn)?;
        txn.commit()?;
        Ok(out)
    }
}

impl Txn<'_> {
    fn chunk(&mut self, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        if let Some(e) = self.chunks.get(id) {
            return Ok(Some(*e));
        }
        self.index.chunk(id)
    }

    fn set_chunk(&mut self, id: ChunkId, e: ChunkEntry) -> Result<()> {
        self.batch.put_chunk(&id, &e)?;
        self.chunks.insert(id, e);
        Ok(())
    }

    /// A file's record as this transaction sees it.
    pub fn file(&mut self, id: &FileId) -> Result<Option<FileRecord>> {
        if let Some(f) = self.files.get(id) {
            return Ok(*f);
        }
        self.index.file(id)
    }

    fn set_file(&mut self, id: FileId, rec: FileRecord) -> Result<()> {
        self.batch.put_file(&id, &rec)?;
        self.files.insert(id, Some(rec));
        Ok(())
    }

    /// Every committed file with its reference count (the commit lock
    /// keeps them still; this transaction's own changes are not included).
    pub fn committed_files(&self) -> Result<Vec<(FileId, u64)>> {
        let mut out = Vec::new();
        self.index.for_each_file(|id, r| {
            out.push((id, r.refs));
            Ok(())
        })?;
        Ok(out)
    }

    /// Every committed transfer that holds chunk references, with how
    /// many.
    pub fn committed_partials(&self) -> Result<Vec<(PartialId, u64)>> {
        self.index.partials()
    }

    /// Adds a reference to a stored file: one key whatever its size.
    pub fn link(&mut self, id: &FileId) -> Result<u64> {
        let mut rec = self.file(id)?.ok_or(Error::FileNotFound(*id))?;
        rec.refs += 1;
        self.set_file(*id, rec)?;
        Ok(rec.refs)
    }

    /// Drops a reference; the last one releases the file's chunks.
    pub fn unlink(&mut self, id: &FileId) -> Result<u64> {
        let mut rec = self.file(id)?.ok_or(Error::FileNotFound(*id))?;
        if rec.refs > 1 {
            rec.refs -= 1;
            self.set_file(*id, rec)?;
            return Ok(rec.refs);
        }
        let mut counts: HashMap<ChunkId, u64> = HashMap::new();
        match self.new_lists.remove(id) {
            Some(list) => {
                for r in list {
                    *counts.entry(r.id).or_insert(0) += 1;
                }
            }
            None => self.index.for_each_block(id, |_, refs| {
                for r in refs {
                    *counts.entry(r.id).or_insert(0) += 1;
                }
                Ok(())
            })?,
        }
        for (cid, n) in counts {
            let Some(mut e) = self.chunk(&cid)? else {
                return Err(Error::Inconsistent(format!(
                    "file {id} references chunk {cid}, which is not indexed"
                )));
            };
            let before = e.refcount;
            e.refcount = e.refcount.saturating_sub(n);
            if before > 0 && e.refcount == 0 {
                self.segs
                    .add_live(self.index, e.location.segment, -i64::from(e.stored_len()))?;
            }
            self.set_chunk(cid, e)?;
        }
        self.batch.delete_file(id)?;
        self.files.insert(*id, None);
        Ok(0)
    }

    /// Indexes a staged put: a new reference to the file, and for a file
    /// seen for the first time, its chunk list and chunk references.
    pub fn commit_put(&mut self, staged: &StagedPut<'_>) -> Result<PutResult> {
        let w = &staged.written;
        let mut r = self.commit_file(
            staged.file_id,
            staged.size,
            staged.sha1,
            staged.md5,
            &w.refs,
            &w.new,
        )?;
        r.new_stored_bytes = w.new_stored_bytes;
        Ok(r)
    }

    /// A new reference to `file_id` with the chunk list `refs`; chunks not
    /// indexed yet must be in `new` (appended and made durable already).
    fn commit_file(
        &mut self,
        file_id: FileId,
        size: u64,
        sha1: [u8; 20],
        md5: [u8; 16],
        refs: &[ChunkRef],
        new: &HashMap<ChunkId, (Location, u32)>,
    ) -> Result<PutResult> {
        let mut result = PutResult {
            file_id,
            size,
            sha1: hex::encode(sha1),
            md5: hex::encode(md5),
            blake3: file_id.to_hex(),
            chunk_count: refs.len() as u64,
            new_chunks: 0,
            new_stored_bytes: 0,
            existed: false,
            refs: 1,
        };
        if let Some(mut rec) = self.file(&file_id)? {
            // Same content already stored: one more reference. Chunks this
            // put appended anyway stay unindexed and count as garbage.
            rec.refs += 1;
            self.set_file(file_id, rec)?;
            result.existed = true;
            result.refs = rec.refs;
            return Ok(result);
        }
        let mut counts: HashMap<ChunkId, u64> = HashMap::new();
        for r in refs {
            *counts.entry(r.id).or_insert(0) += 1;
        }
        for (id, n) in counts {
            let entry = match self.chunk(&id)? {
                Some(mut e) => {
                    if e.refcount == 0 {
                        self.segs.add_live(
                            self.index,
                            e.location.segment,
                            i64::from(e.stored_len()),
                        )?;
                    }
                    e.refcount += n;
                    e
                }
                None => {
                    let Some(&(location, raw_len)) = new.get(&id) else {
                        return Err(Error::Inconsistent(format!(
                            "chunk {id} was pinned for reuse but is no longer indexed"
                        )));
                    };
                    result.new_chunks += 1;
                    self.index_new_location(location)?;
                    ChunkEntry {
                        location,
                        raw_len,
                        refcount: n,
                        member: None,
                    }
                }
            };
            self.set_chunk(id, entry)?;
        }
        let mut start = 0u64;
        for block in refs.chunks(BLOCK_ENTRIES) {
            self.batch.put_block(&file_id, start, block)?;
            start += block.iter().map(|r| u64::from(r.raw_len)).sum::<u64>();
        }
        self.set_file(
            file_id,
            FileRecord {
                size,
                sha1,
                md5,
                chunk_count: refs.len() as u64,
                refs: 1,
                created_ms: now_ms(),
            },
        )?;
        self.new_lists.insert(file_id, refs.to_vec());
        Ok(result)
    }

    fn index_new_location(&mut self, location: Location) -> Result<()> {
        self.segs
            .add_live(self.index, location.segment, i64::from(location.len))?;
        self.segs.extend_indexed(
            self.index,
            location.segment,
            location.offset + u64::from(location.len),
        )
    }

    fn partial_has(&mut self, p: &PartialId, id: &ChunkId) -> Result<bool> {
        if self.partial_keys.contains(&(*p, *id)) {
            return Ok(true);
        }
        self.index.partial_has(p, id)
    }

    fn add_partial_ref(&mut self, p: &PartialId, id: ChunkId, mut e: ChunkEntry) -> Result<()> {
        if e.refcount == 0 {
            self.segs
                .add_live(self.index, e.location.segment, i64::from(e.stored_len()))?;
        }
        e.refcount += 1;
        self.set_chunk(id, e)?;
        self.batch.put_partial(p, &id)?;
        self.partial_keys.insert((*p, id));
        Ok(())
    }

    /// A transfer in progress holds one reference on each chunk it has
    /// (found locally or received), so GC leaves them alone until the file
    /// is committed or the transfer given up. Returns whether `id` is
    /// stored (and so now held).
    pub fn claim(&mut self, p: &PartialId, id: &ChunkId) -> Result<bool> {
        if self.partial_has(p, id)? {
            return Ok(true);
        }
        match self.chunk(id)? {
            Some(e) => {
                self.add_partial_ref(p, *id, e)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Indexes a verified record that a transfer appended at `location`.
    pub fn add_received(
        &mut self,
        p: &PartialId,
        id: &ChunkId,
        location: Location,
        raw_len: u32,
        member: Option<Member>,
    ) -> Result<()> {
        if self.claim(p, id)? {
            // Already had it: the appended copy (or, for a group's
            // member, its share of the group) is garbage.
            return Ok(());
        }
        self.segs.extend_indexed(
            self.index,
            location.segment,
            location.offset + u64::from(location.len),
        )?;
        let e = ChunkEntry {
            location,
            raw_len,
            refcount: 0,
            member,
        };
        // Counts the record's live bytes (a member's share) as its
        // refcount leaves 0.
        self.add_partial_ref(p, *id, e)
    }

    /// Drops every reference a transfer holds.
    pub fn release_partial(&mut self, p: &PartialId) -> Result<()> {
        let mut ids: Vec<ChunkId> = self.index.partial_chunks(p)?;
        ids.extend(
            self.partial_keys
                .iter()
                .filter(|(q, _)| q == p)
                .map(|(_, id)| *id),
        );
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Some(mut e) = self.chunk(&id)? {
                let before = e.refcount;
                e.refcount = e.refcount.saturating_sub(1);
                if before > 0 && e.refcount == 0 {
                    self.segs.add_live(
                        self.index,
                        e.location.segment,
                        -i64::from(e.stored_len()),
                    )?;
                }
                self.set_chunk(id, e)?;
            }
            self.batch.delete_partial(p, &id)?;
            self.partial_keys.remove(&(*p, id));
        }
        Ok(())
    }

    /// Commits a transferred file whose chunks the transfer `p` holds, and
    /// releases the transfer's own references, in this one transaction.
    pub fn commit_assembled(
        &mut self,
        p: &PartialId,
        file_id: FileId,
        size: u64,
        sha1: [u8; 20],
        md5: [u8; 16],
        refs: &[ChunkRef],
    ) -> Result<PutResult> {
        let r = self.commit_file(file_id, size, sha1, md5, refs, &HashMap::new())?;
        self.release_partial(p)?;
        Ok(r)
    }

    fn commit(self) -> Result<()> {
        let mut batch = self.batch;
        self.segs.write(&mut batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        batch.commit()
    }
}
