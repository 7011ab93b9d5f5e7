//! What a transfer between stores needs from the engine: on the source side
//! a file's chunk list and its records as stored; on the receiving side
//! appending verified records as they are (no recompression), holding them
//! for the transfer, and reading an assembled chunk list back.

use std::collections::HashSet;
use std::sync::Arc;

use super::Store;
use super::decode::GroupCache;
use crate::error::{Error, Result};
use crate::format::{
    self, ChunkList, GroupRun, ListEntry, RECORD_HEADER_LEN, RecordHeader, Stored,
};
use crate::id::{ChunkId, FileId};
use crate::index::{ChunkEntry, ChunkRef, Member, PartialId};
use crate::segment::Location;

impl Store {
    /// A stored file's chunk list with the stored size of each record, and
    /// (a list of version 2) the runs of entries that are whole group
    /// records.
    pub fn chunk_list(&self, file: &FileId) -> Result<ChunkList> {
        let rec = self.stat(file)?;
        let mut entries = Vec::with_capacity(rec.chunk_count as usize);
        let mut runs = Runs::default();
        self.inner.index.for_each_block(file, |_, refs| {
            for r in refs {
                let e = self.inner.index.chunk(&r.id)?.ok_or_else(|| {
                    Error::Inconsistent(format!("file {file} references unindexed chunk {}", r.id))
                })?;
                runs.next(entries.len() as u32, &e);
                // A group's member that travels as a record of its own
                // is compressed for the trip (`RecordStream`): its length
                // is known once it is made, so the list says what its
                // share of the group suggests (the receiver sizes its
                // batches by it and checks each record by itself).
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
            runs: Some(runs.done),
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

    /// Serves the records of `ids` (every one of them in `allowed`: nobody
    /// fetches content by guessing hashes), a few ids at a time
    /// ([`RecordStream::next_ids`]). `groups`: the receiver takes group
    /// records (transfer version 2).
    pub fn record_stream(
        &self,
        allowed: Arc<HashSet<ChunkId>>,
        ids: Vec<ChunkId>,
        groups: bool,
    ) -> RecordStream {
        RecordStream {
            store: self.clone(),
            allowed,
            asked: ids.iter().copied().collect(),
            ids,
            next: 0,
            groups,
            whole: HashSet::new(),
            split: HashSet::new(),
            members: None,
        }
    }

    /// Takes a reference for transfer `p` on each listed chunk this store
    /// has (from any file); returns which ones it has.
    pub fn claim_present(&self, p: &PartialId, ids: &[ChunkId]) -> Result<Vec<bool>> {
        self.transaction(|t| ids.iter().map(|id| t.claim(p, id)).collect())
    }

    /// Appends records that the caller has verified (CRCs, and every
    /// chunk's BLAKE3), makes them durable, and indexes them as held by
    /// transfer `p`: after this returns they survive a crash and are never
    /// fetched again. A group record is appended as it came and each of
    /// its members indexed with its share.
    pub fn append_received(&self, p: &PartialId, records: &[(Stored, Vec<u8>)]) -> Result<()> {
        let mut session = self.inner.segments.session();
        let mut placed: Vec<(ChunkId, Location, u32, Option<Member>)> =
            Vec::with_capacity(records.len());
        for rec in records {
            match rec {
                (Stored::One(h), bytes) => {
                    let (hdr, payload) = bytes.split_at(bytes.len().min(RECORD_HEADER_LEN));
                    let loc = session.append(hdr, payload)?;
                    placed.push((h.chunk_id, loc, h.raw_len, None));
                }
                (Stored::Group(g), bytes) => {
                    let (head, payload) = bytes.split_at(bytes.len().min(g.header.payload_at()));
                    let loc = session.append(head, payload)?;
                    for (m, share) in g.members.iter().zip(g.shares()) {
                        let member = Member {
                            raw_offset: m.raw_offset,
                            share,
                        };
                        placed.push((m.id, loc, m.raw_len, Some(member)));
                    }
                }
            }
        }
        session.sync()?;
        self.transaction(|t| {
            for (id, loc, raw, member) in &placed {
                t.add_received(p, id, *loc, *raw, *member)?;
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

/// Finds the runs of a chunk list's entries that are every member of one
/// group record in its order: members at raw offsets 0, 1's length, ...
/// of one place, whose shares add up to the record's length (every share
/// is more than zero, so only all the members do).
#[derive(Default)]
struct Runs {
    open: Option<(GroupRun, Location, u32, u64)>,
    done: Vec<GroupRun>,
}

impl Runs {
    /// Entry `i` of the list is stored as `e`.
    fn next(&mut self, i: u32, e: &ChunkEntry) {
        let Some(m) = e.member else {
            self.open = None;
            return;
        };
        let continues = self
            .open
            .as_ref()
            .is_some_and(|(_, loc, next, _)| *loc == e.location && *next == m.raw_offset);
        if !continues {
            self.open = (m.raw_offset == 0).then(|| {
                let run = GroupRun {
                    first: i,
                    count: 0,
                    record_len: e.location.len,
                };
                (run, e.location, 0, 0)
            });
        }
        if let Some((run, loc, next, shares)) = &mut self.open {
            run.count += 1;
            *next += e.raw_len;
            *shares += u64::from(m.share);
            if *shares == u64::from(loc.len) {
                self.done.push(*run);
                self.open = None;
            }
        }
    }
}

/// One fetch request being served: the records of the ids asked for, in
/// their order, each exactly as stored (CRCs checked). A member of a group
/// record travels in one of two ways:
///
/// - the group record whole, as stored, at the place of its first member
///   asked for, when the receiver takes groups and every member of the
///   group is among the ids of this request (its other members are then
///   not sent again). A group can hold chunks of other files, other
///   accounts' images among them; a request names only chunks of the
///   requested file, so a group with anything else in it never goes whole;
/// - else a record of its own, compressed at the store's ingest level
///   and not settled (the receiver's background pass groups it again).
pub struct RecordStream {
    store: Store,
    allowed: Arc<HashSet<ChunkId>>,
    ids: Vec<ChunkId>,
    next: usize,
    /// Every id of the request.
    asked: HashSet<ChunkId>,
    groups: bool,
    /// Groups sent whole, and groups whose members go one by one.
    whole: HashSet<Location>,
    split: HashSet<Location>,
    members: Option<Members>,
}

impl RecordStream {
    /// Sends the records of the next `n` ids to `out`; false once every
    /// id has been served.
    pub fn next_ids(&mut self, n: usize, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        let from = self.next;
        let to = (from + n).min(self.ids.len());
        self.next = to;
        for i in from..to {
            let Some(&id) = self.ids.get(i) else { break };
            self.serve(&id, out)?;
        }
        Ok(self.next < self.ids.len())
    }

    fn serve(&mut self, id: &ChunkId, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if !self.allowed.contains(id) {
            return Err(Error::InvalidInput(format!(
                "chunk {id} is not part of the requested file"
            )));
        }
        let whole = &self.whole;
        // Members of a group sent whole are not read again, nor the next
        // members of a group just decompressed.
        let held = self.members.as_ref().map(|m| &m.groups);
        let (entry, bytes) = self.store.read_place_unless(id, &|e| {
            e.member.is_some()
                && (whole.contains(&e.location) || held.is_some_and(|g| g.holds(e.location)))
        })?;
        if entry.member.is_none() {
            super::decode::checked(&bytes, id, &entry)?;
            return out(&bytes);
        }
        let loc = entry.location;
        if self.whole.contains(&loc) {
            return Ok(());
        }
        if self.groups && !self.split.contains(&loc) {
            if self.goes_whole(&bytes, id, &entry)? {
                self.whole.insert(loc);
                return out(&bytes);
            }
            self.split.insert(loc);
        }
        let m = match &mut self.members {
            Some(m) => m,
            None => self
                .members
                .insert(Members::new(&self.store, self.store.inner.zstd_level)?),
        };
        let (_, record) = m.record(&bytes, id, &entry)?;
        out(record)
    }

    /// Whether the group record `rec`, read from `entry`'s place, goes
    /// whole: checked (CRCs, length, its table naming `id` where the entry
    /// says), and every member asked for.
    fn goes_whole(&self, rec: &[u8], id: &ChunkId, entry: &ChunkEntry) -> Result<bool> {
        let g = super::decode::checked_group(rec, id, entry)?;
        Ok(g.members.iter().all(|m| self.asked.contains(&m.id)))
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
    fn new(store: &Store, level: i32) -> Result<Self> {
        Ok(Members {
            groups: store.group_cache(),
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
