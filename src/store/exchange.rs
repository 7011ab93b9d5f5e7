//! What a transfer between stores needs from the engine: on the source side
//! a file's chunk list and its records as stored; on the receiving side
//! appending verified records as they are (no recompression), holding them
//! for the transfer, and reading an assembled chunk list back.

use std::collections::HashSet;

use super::Store;
use super::decode::GroupCache;
use crate::error::{Error, Result};
use crate::format::{self, ChunkList, ListEntry, RECORD_HEADER_LEN, RecordHeader};
use crate::id::{ChunkId, FileId};
use crate::index::{ChunkRef, PartialId};
use crate::segment::Location;

impl Store {
    /// A stored file's chunk list with the stored size of each record.
    pub fn chunk_list(&self, file: &FileId) -> Result<ChunkList> {
        let rec = self.stat(file)?;
        let mut entries = Vec::with_capacity(rec.chunk_count as usize);
        self.inner.index.for_each_block(file, |_, refs| {
            for r in refs {
                let e = self.inner.index.chunk(&r.id)?.ok_or_else(|| {
                    Error::Inconsistent(format!("file {file} references unindexed chunk {}", r.id))
                })?;
                // A group's member travels as a record of its own,
                // compressed for the trip (`read_records`): its length is
                // known once it is made, so the list says what its share
                // of the group suggests (the receiver sizes its batches
                // by it and checks each record by itself).
                let record_len = match e.member {
                    None => e.location.len,
                    Some(m) => (RECORD_HEADER_LEN as u32 + m.share)
                        .min(RECORD_HEADER_LEN as u32 + r.raw_len),
                };
                entries.push(ListEntry {
                    id: r.id,
                    raw_len: r.raw_len,
                    record_len,
                });
            }
            Ok(())
        })?;
        Ok(ChunkList {
            file_id: file.0,
            size: rec.size,
            sha1: rec.sha1,
            md5: rec.md5,
            entries,
        })
    }

    /// The distinct chunk ids of a file (what a source may serve for it).
    pub fn chunk_set(&self, file: &FileId) -> Result<HashSet<ChunkId>> {
        self.stat(file)?;
        let mut set = HashSet::new();
        self.inner.index.for_each_block(file, |_, refs| {
            set.extend(refs.into_iter().map(|r| r.id));
            Ok(())
        })?;
        Ok(set)
    }

    /// Calls `out` with each requested record exactly as stored (CRC
    /// checked); a member of a group record as a record of its own,
    /// compressed at the store's ingest level (and not settled: the
    /// receiver's background pass groups it again). Only chunks in
    /// `allowed` are served: nobody fetches content by guessing hashes.
    pub fn read_records(
        &self,
        allowed: &HashSet<ChunkId>,
        ids: &[ChunkId],
        out: &mut dyn FnMut(&RecordHeader, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut members: Option<Members> = None;
        let mut no_groups = GroupCache::default();
        for id in ids {
            if !allowed.contains(id) {
                return Err(Error::InvalidInput(format!(
                    "chunk {id} is not part of the requested file"
                )));
            }
            // The next members of a group just decompressed are cut from
            // it, not read again.
            let held = members.as_mut().map_or(&mut no_groups, |m| &mut m.groups);
            let (entry, bytes) = self.read_place_unless(id, held)?;
            if entry.member.is_none() {
                let header = super::decode::checked(&bytes, id, &entry)?;
                out(&header, &bytes)?;
                continue;
            }
            let m = match &mut members {
                Some(m) => m,
                None => members.insert(Members::new(self.inner.zstd_level)?),
            };
            let (header, record) = m.record(&bytes, id, &entry)?;
            out(&header, record)?;
        }
        Ok(())
    }

    /// Takes a reference for transfer `p` on each listed chunk this store
    /// has (from any file); returns which ones it has.
    pub fn claim_present(&self, p: &PartialId, ids: &[ChunkId]) -> Result<Vec<bool>> {
        self.transaction(|t| ids.iter().map(|id| t.claim(p, id)).collect())
    }

    /// Appends records that the caller has verified (CRC and BLAKE3), makes
    /// them durable, and indexes them as held by transfer `p`: after this
    /// returns they survive a crash and are never fetched again.
    pub fn append_received(&self, p: &PartialId, records: &[(RecordHeader, &[u8])]) -> Result<()> {
        let mut session = self.inner.segments.session();
        let mut placed: Vec<(ChunkId, Location, u32)> = Vec::with_capacity(records.len());
        for (h, bytes) in records {
            let (hdr, payload) = bytes.split_at(bytes.len().min(crate::format::RECORD_HEADER_LEN));
            let loc = session.append(hdr, payload)?;
            placed.push((h.chunk_id, loc, h.raw_len));
        }
        session.sync()?;
        self.transaction(|t| {
            for (id, loc, raw) in &placed {
                t.add_received(p, id, *loc, *raw)?;
            }
            Ok(())
        })
    }

    /// How many chunks transfer `p` holds.
    pub fn partial_len(&self, p: &PartialId) -> Result<usize> {
        Ok(self.inner.index.partial_chunks(p)?.len())
    }

    /// Drops every reference transfer `p` holds (the transfer gave up).
    pub fn release_partial(&self, p: &PartialId) -> Result<()> {
        self.transaction(|t| t.release_partial(p))
    }

    /// Reads the content a chunk list describes from this store.
    pub fn open_chunks(&self, refs: Vec<ChunkRef>) -> Result<super::FileReader> {
        super::read::FileReader::over_list(self.clone(), refs)
    }
}

/// What a source needs to send group members as records of their own.
struct Members {
    groups: GroupCache,
    dctx: zstd::bulk::Decompressor<'static>,
    cctx: zstd::bulk::Compressor<'static>,
    payload: Vec<u8>,
    record: Vec<u8>,
}

impl Members {
    fn new(level: i32) -> Result<Self> {
        Ok(Members {
            groups: GroupCache::default(),
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("creating a zstd context", e))?,
            cctx: zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::io("creating a zstd context", e))?,
            payload: Vec::new(),
            record: Vec::new(),
        })
    }

    /// Member `id` of the group record `rec` (read from `entry`'s place)
    /// as a record of its own.
    fn record(
        &mut self,
        rec: &[u8],
        id: &ChunkId,
        entry: &crate::index::ChunkEntry,
    ) -> Result<(RecordHeader, &[u8])> {
        let raw = self.groups.member(rec, id, entry, &mut self.dctx)?;
        let codec = format::compress_payload(&mut self.cctx, raw, &mut self.payload)
            .map_err(|e| Error::io("compressing a chunk", e))?;
        let head = format::encode_record_header(codec, id, entry.raw_len, &self.payload);
        self.record.clear();
        self.record.extend_from_slice(&head);
        self.record.extend_from_slice(&self.payload);
        let header = format::decode_record_header(&head)
            .map_err(|e| Error::Internal(format!("a record made here does not decode: {e}")))?;
        Ok((header, &self.record))
    }
}
