//! Reading files back: whole or a byte range, in batches of chunks read
//! ahead on the read pool (`readahead`) and taken back in order. Every
//! record's CRCs, chunk id and lengths are checked before its bytes are
//! used; corruption is an error naming the segment and offset.
//!
//! A batch is a run of consecutive chunks of the file (about
//! [`BATCH_BYTES`]); its records are looked up in the index, read with one
//! positioned read per stretch of adjacent records, checked and
//! decompressed into one buffer. The same batch is what a remote segment
//! backend will fetch with one range request.
//!
//! Chunks that recompression gathered into a group record are read by
//! decompressing the group: a batch that reaches into a group takes the
//! group's following members too (the planner looks them up), so each
//! group is decompressed by one batch, straight into its buffer when the
//! batch holds the whole group in order, else once into a cache the
//! batch's members are cut from.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use super::Store;
use super::decode::{GroupCache, chunk_bytes, whole_group};
use super::readahead::{Slot, Work};
use crate::error::{Error, Result};
use crate::id::{ChunkId, FileId};
use crate::index::{ChunkEntry, ChunkRef};

/// Uncompressed bytes per batch.
pub const BATCH_BYTES: u64 = 1 << 20;
/// Batches a reader keeps in flight ahead of the one it reads.
pub const READAHEAD_BATCHES: usize = 4;
/// Largest single positioned read (adjacent records are read together).
const MAX_RUN_BYTES: u64 = 4 << 20;

/// A streaming reader over a stored file or a range of it.
pub struct FileReader {
    store: Store,
    plan: Planner,
    /// Batches in flight, in file order, with the offset each starts at.
    window: VecDeque<(std::sync::Arc<Slot>, u64)>,
    /// A batch planned but not queued (the budget had no room for it).
    held: Option<(u64, Vec<ChunkRef>)>,
    /// The batch being read, and where it starts in the file.
    cur: Vec<u8>,
    cur_start: u64,
    /// Next byte to return (absolute offset in the file).
    pos: u64,
    end: u64,
    dctx: zstd::bulk::Decompressor<'static>,
}

/// Where the chunks come from: a stored file's list, block by block, or a
/// list the caller gave.
enum Source {
    File(FileId),
    Fixed,
}

/// Cuts the chunk list into batches, lazily, block by block.
struct Planner {
    source: Source,
    /// Chunks not yet planned; the first starts at `next_start`.
    pending: VecDeque<ChunkRef>,
    next_start: u64,
    /// Planning stops at this offset.
    end: u64,
}

impl Planner {
    /// Loads the block of the file's chunk list that holds `offset`,
    /// keeping the chunks from the one that holds it.
    fn load_at(&mut self, store: &Store, offset: u64) -> Result<()> {
        let Source::File(file) = self.source else {
            return Ok(()); // a fixed list is pending from the start
        };
        let (start, refs) = store.inner.index.block_at(&file, offset)?.ok_or_else(|| {
            Error::Inconsistent(format!(
                "file {file} has no chunk list block for offset {offset}"
            ))
        })?;
        let mut at = start;
        self.pending.clear();
        for r in refs {
            let chunk_end = at + u64::from(r.raw_len);
            if chunk_end > offset {
                if self.pending.is_empty() {
                    self.next_start = at;
                }
                self.pending.push_back(r);
            }
            at = chunk_end;
        }
        Ok(())
    }

    /// The next batch: the offset its first chunk starts at, its chunks.
    fn next(&mut self, store: &Store) -> Result<Option<(u64, Vec<ChunkRef>)>> {
        let start = self.next_start;
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while bytes < BATCH_BYTES && self.next_start < self.end {
            if self.pending.is_empty() {
                self.load_at(store, self.next_start)?;
            }
            let Some(r) = self.pending.pop_front() else {
                return Err(Error::Inconsistent(format!(
                    "chunk list ends at offset {}, before {}",
                    self.next_start, self.end
                )));
            };
            bytes += u64::from(r.raw_len);
            self.next_start += u64::from(r.raw_len);
            batch.push(r);
        }
        self.finish_group(store, &mut batch)?;
        Ok((!batch.is_empty()).then_some((start, batch)))
    }

    /// When a batch ends inside a group record, the group's next members
    /// join it (as far as the file takes them in order), so that no group
    /// is decompressed by two batches. Only a look-up per chunk: a chunk
    /// moved by compaction meanwhile costs a second decompression, not a
    /// wrong byte.
    fn finish_group(&mut self, store: &Store, batch: &mut Vec<ChunkRef>) -> Result<()> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let Some(group) = store
            .inner
            .index
            .chunk(&last.id)?
            .filter(|e| e.member.is_some())
        else {
            return Ok(());
        };
        while self.next_start < self.end {
            if self.pending.is_empty() {
                self.load_at(store, self.next_start)?;
            }
            let Some(&r) = self.pending.front() else {
                return Ok(());
            };
            let same = store
                .inner
                .index
                .chunk(&r.id)?
                .is_some_and(|e| e.member.is_some() && e.location == group.location);
            if !same {
                return Ok(());
            }
            self.pending.pop_front();
            self.next_start += u64::from(r.raw_len);
            batch.push(r);
        }
        Ok(())
    }
}

fn sum_len(refs: &[ChunkRef]) -> u64 {
    refs.iter().map(|r| u64::from(r.raw_len)).sum()
}

impl Store {
    /// Opens a stored file for reading from the start.
    pub fn open_file(&self, id: &FileId) -> Result<FileReader> {
        let size = self.stat(id)?.size;
        self.open_range(id, 0, size)
    }

    /// Opens bytes `offset .. offset + len` of a stored file.
    pub fn open_range(&self, id: &FileId, offset: u64, len: u64) -> Result<FileReader> {
        let size = self.stat(id)?.size;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "range {offset}+{len} is outside file {id} of {size} bytes"
                ))
            })?;
        let mut plan = Planner {
            source: Source::File(*id),
            pending: VecDeque::new(),
            next_start: offset,
            end,
        };
        if offset < end {
            plan.load_at(self, offset)?;
        }
        FileReader::new(self.clone(), plan, offset, end)
    }

    /// The bytes at a chunk's place (its own record, or the whole group
    /// record it is a member of), not yet checked, with the entry that
    /// named the place. Retries when compaction moved the chunk between
    /// look-up and read.
    pub(crate) fn read_place(&self, id: &ChunkId) -> Result<(ChunkEntry, Vec<u8>)> {
        self.read_place_unless(id, &|_| false)
    }

    /// [`Store::read_place`], reading nothing (empty bytes) when `skip`
    /// says the caller needs no bytes for that entry (it holds the group
    /// decompressed, or has sent it).
    pub(crate) fn read_place_unless(
        &self,
        id: &ChunkId,
        skip: &dyn Fn(&ChunkEntry) -> bool,
    ) -> Result<(ChunkEntry, Vec<u8>)> {
        let mut last_err = None;
        for _ in 0..3 {
            let entry = self.entry(id)?;
            if skip(&entry) {
                return Ok((entry, Vec::new()));
            }
            let mut bytes = vec![0u8; entry.location.len as usize];
            match self.inner.segments.read_at(
                entry.location.segment,
                entry.location.offset,
                &mut bytes,
            ) {
                Ok(()) => return Ok((entry, bytes)),
                Err(e @ Error::Inconsistent(_)) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Inconsistent(format!("chunk {id} unreadable"))))
    }

    /// Appends the uncompressed bytes of a stored chunk to `out`, every
    /// check of a read applied.
    pub fn read_chunk(
        &self,
        id: &ChunkId,
        dctx: &mut zstd::bulk::Decompressor<'static>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let (entry, bytes) = self.read_place(id)?;
        chunk_bytes(&bytes, id, &entry, dctx, &mut self.group_cache(), out)
    }

    /// A reader's cache of the group it cuts members from, backed by the
    /// store's groups decompressed lately.
    pub(crate) fn group_cache(&self) -> GroupCache {
        GroupCache::new(Arc::clone(&self.inner.recent_groups))
    }

    fn entry(&self, id: &ChunkId) -> Result<ChunkEntry> {
        self.inner
            .index
            .chunk(id)?
            .ok_or_else(|| Error::Inconsistent(format!("chunk {id} is not indexed")))
    }

    /// Reads, checks and decompresses `refs` into one buffer: one
    /// positioned read per stretch of adjacent records.
    fn read_batch(
        &self,
        refs: &[ChunkRef],
        dctx: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<Vec<u8>> {
        let mut last_err = None;
        for _ in 0..3 {
            match self.try_read_batch(refs, dctx) {
                // A segment compaction removed between look-up and read.
                Err(e @ Error::Inconsistent(_)) => last_err = Some(e),
                other => return other,
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Internal("batch read without an attempt".into())))
    }

    fn try_read_batch(
        &self,
        refs: &[ChunkRef],
        dctx: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<Vec<u8>> {
        let entries: Vec<ChunkEntry> = refs
            .iter()
            .map(|r| self.entry(&r.id))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(sum_len(refs) as usize);
        let mut buf = Vec::new();
        let mut groups = self.group_cache();
        let mut i = 0;
        while i < refs.len() {
            // The stretch of records adjacent to this one in its segment.
            let first = entries.get(i).map(|e| e.location);
            let Some(first) = first else { break };
            let mut j = i + 1;
            let mut run_end = first.offset + u64::from(first.len);
            let mut last = first;
            while let Some(e) = entries.get(j) {
                let l = e.location;
                if l == last {
                    // The next member of the same group.
                    j += 1;
                    continue;
                }
                if l.segment != first.segment
                    || l.offset != run_end
                    || run_end - first.offset + u64::from(l.len) > MAX_RUN_BYTES
                {
                    break;
                }
                run_end += u64::from(l.len);
                last = l;
                j += 1;
            }
            buf.resize((run_end - first.offset) as usize, 0);
            self.inner
                .segments
                .read_at(first.segment, first.offset, &mut buf)?;
            let mut k = i;
            while k < j {
                let (Some(r), Some(e)) = (refs.get(k), entries.get(k)) else {
                    break;
                };
                let at = (e.location.offset - first.offset) as usize;
                let rec = buf
                    .get(at..at + e.location.len as usize)
                    .unwrap_or_default();
                let rest = (refs.get(k..j), entries.get(k..j));
                if let (Some(refs), Some(entries)) = rest {
                    let n = whole_group(rec, refs, entries, dctx, &mut out)?;
                    if n > 0 {
                        k += n;
                        continue;
                    }
                }
                chunk_bytes(rec, &r.id, e, dctx, &mut groups, &mut out)?;
                k += 1;
            }
            i = j;
        }
        Ok(out)
    }
}

impl FileReader {
    /// Reads the content of a chunk list (chunks must be indexed).
    pub(crate) fn over_list(store: Store, refs: Vec<ChunkRef>) -> Result<Self> {
        let end = sum_len(&refs);
        let plan = Planner {
            source: Source::Fixed,
            pending: refs.into(),
            next_start: 0,
            end,
        };
        Self::new(store, plan, 0, end)
    }

    fn new(store: Store, plan: Planner, pos: u64, end: u64) -> Result<Self> {
        Ok(FileReader {
            store,
            plan,
            window: VecDeque::new(),
            held: None,
            cur: Vec::new(),
            cur_start: pos,
            pos,
            end,
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("creating a zstd context", e))?,
        })
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Queues batches until the window is full (or the budget says stop).
    fn fill(&mut self) -> Result<()> {
        while self.window.len() <= READAHEAD_BATCHES {
            let planned = match self.held.take() {
                Some(b) => Some(b),
                None => self.plan.next(&self.store)?,
            };
            let Some((start, refs)) = planned else {
                return Ok(());
            };
            let bytes = sum_len(&refs);
            // The first batch in flight is always allowed: progress.
            let budgeted = !self.window.is_empty();
            if budgeted && !self.store.inner.reads.reserve(bytes) {
                self.held = Some((start, refs));
                return Ok(());
            }
            let store = self.store.clone();
            let work: Work = Box::new(move |dctx| store.read_batch(&refs, dctx));
            let slot = self
                .store
                .inner
                .reads
                .submit(work, if budgeted { bytes } else { 0 });
            self.window.push_back((slot, start));
        }
        Ok(())
    }

    /// Makes the batch holding `pos` current.
    fn advance(&mut self) -> Result<()> {
        loop {
            self.fill()?;
            let Some((slot, start)) = self.window.pop_front() else {
                return Err(Error::Inconsistent(format!(
                    "chunk list ends before offset {}",
                    self.pos
                )));
            };
            self.store.inner.reads.release(&slot);
            let bytes = slot.take(&mut self.dctx)?;
            self.cur = bytes;
            self.cur_start = start;
            if self.pos < self.cur_start + self.cur.len() as u64 {
                return Ok(());
            }
        }
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        for (slot, _) in self.window.drain(..) {
            slot.cancel();
            self.store.inner.reads.release(&slot);
        }
    }
}

impl FileReader {
    /// The current batch's bytes from `pos` up to `end`, as a range of
    /// `cur`, first fetching the batch that holds `pos` when it is not the
    /// current one. Only for `pos < end`; an empty range means the store
    /// gave an empty chunk.
    fn current_range(&mut self) -> Result<(usize, usize)> {
        if self.pos < self.cur_start || self.pos >= self.cur_start + self.cur.len() as u64 {
            self.advance()?;
        }
        let from = (self.pos - self.cur_start) as usize;
        let to = ((self.end - self.cur_start) as usize).min(self.cur.len());
        Ok((from, to))
    }

    /// The next bytes of the file as one owned buffer (a whole batch, cut
    /// only at the ends of a range): a consumer that hands buffers on (a
    /// response body, a write) needs no copy. `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let (from, to) = self.current_range()?;
        let block = if from == 0 && to == self.cur.len() {
            self.cur_start += self.cur.len() as u64;
            std::mem::take(&mut self.cur)
        } else {
            self.cur.get(from..to).unwrap_or_default().to_vec()
        };
        if block.is_empty() {
            return Err(Error::Inconsistent(format!(
                "empty chunk at offset {}",
                self.pos
            )));
        }
        self.pos += block.len() as u64;
        Ok(Some(block))
    }
}

impl io::BufRead for FileReader {
    /// The rest of the current batch (empty at the end).
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.end {
            return Ok(&[]);
        }
        let (from, to) = self.current_range().map_err(io::Error::other)?;
        Ok(self.cur.get(from..to).unwrap_or_default())
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n as u64).min(self.end);
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || out.is_empty() {
            return Ok(0);
        }
        let (from, to) = self.current_range().map_err(io::Error::other)?;
        let avail = self.cur.get(from..to).unwrap_or_default();
        let n = out.len().min(avail.len());
        if n == 0 {
            return Err(io::Error::other(Error::Inconsistent(format!(
                "empty chunk at offset {}",
                self.pos
            ))));
        }
        out.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(avail.get(..n).unwrap_or_default());
        self.pos += n as u64;
        Ok(n)
    }
}

impl Store {
    /// A stored file's digests, from its bytes (every chunk read and
    /// checked as any read checks it): what a copy whose whole-file check
    /// came after its commit compares with what it recorded. SHA-1 and MD5 run on threads of their own, fed
    /// the same blocks, so the slowest digest sets the pace.
    pub fn file_digests(&self, id: &FileId) -> Result<crate::id::FileDigests> {
        use crate::id::{Md5Hasher, Sha1Hasher};
        let mut reader = self.open_file(id)?;
        let (sha1_tx, sha1_rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(8);
        let (md5_tx, md5_rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(8);
        std::thread::scope(|s| {
            let sha1 = s.spawn(move || {
                let mut h = Sha1Hasher::default();
                for b in sha1_rx {
                    h.update(&b);
                }
                h.finish()
            });
            let md5 = s.spawn(move || {
                let mut h = Md5Hasher::default();
                for b in md5_rx {
                    h.update(&b);
                }
                h.finish()
            });
            let mut blake3 = blake3::Hasher::new();
            let mut size = 0u64;
            let read = (|| {
                while let Some(block) = reader.next_block()? {
                    let block = Arc::new(block);
                    blake3.update(&block);
                    size += block.len() as u64;
                    let gone = || Error::Internal("a digest thread stopped".into());
                    sha1_tx.send(Arc::clone(&block)).map_err(|_| gone())?;
                    md5_tx.send(block).map_err(|_| gone())?;
                }
                Ok::<_, Error>(())
            })();
            drop((sha1_tx, md5_tx));
            let sha1 = sha1
                .join()
                .map_err(|_| Error::Internal("the sha1 thread panicked".into()))?;
            let md5 = md5
                .join()
                .map_err(|_| Error::Internal("the md5 thread panicked".into()))?;
            read?;
            Ok(crate::id::FileDigests {
                size,
                sha1,
                md5,
                blake3: *blake3.finalize().as_bytes(),
            })
        })
    }
}
