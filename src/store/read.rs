//! Reading files back: whole or a byte range, chunk by chunk, every record's
//! CRC checked. Corruption is an error naming the segment and offset.

use std::io::{self, Read};

use super::Store;
use crate::error::{Error, Result};
use crate::format::{self, FormatError, RecordHeader};
use crate::id::{ChunkId, FileId};
use crate::index::{ChunkEntry, ChunkRef};
use crate::segment::RecordBytes;

/// A streaming reader over a stored file or a range of it.
pub struct FileReader {
    store: Store,
    file: FileId,
    /// Next byte to return (absolute offset in the file).
    pos: u64,
    end: u64,
    /// Current block of the chunk list and where its first chunk starts.
    block: Vec<ChunkRef>,
    block_start: u64,
    /// Index in `block` of the chunk held in `buf`, and its start offset.
    next_chunk: usize,
    next_chunk_start: u64,
    buf: Vec<u8>,
    buf_start: u64,
    dctx: zstd::bulk::Decompressor<'static>,
    /// Reading a chunk list given by the caller, not a stored file's.
    fixed_list: bool,
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
        FileReader::new(self.clone(), *id, offset, end, Vec::new(), false)
    }

    /// The stored record of a chunk, CRC-checked, with its header. Retries
    /// once when compaction moved the chunk between look-up and read.
    pub fn read_record(&self, id: &ChunkId) -> Result<(RecordHeader, RecordBytes)> {
        let mut last_err = None;
        for _ in 0..3 {
            let entry = self
                .inner
                .index
                .chunk(id)?
                .ok_or_else(|| Error::Inconsistent(format!("chunk {id} is not indexed")))?;
            match self.read_record_at(id, &entry) {
                Ok(r) => return Ok(r),
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
        let (header, bytes) = self.read_record(id)?;
        let payload = bytes.get(format::RECORD_HEADER_LEN..).unwrap_or_default();
        format::decode_payload(&header, payload, dctx, out)
            .map_err(|e| Error::Inconsistent(format!("chunk {id} does not decompress: {e}")))
    }

    fn read_record_at(
        &self,
        id: &ChunkId,
        entry: &ChunkEntry,
    ) -> Result<(RecordHeader, RecordBytes)> {
        let loc = entry.location;
        let bytes = self.inner.segments.read(loc)?;
        let header = check_record(&bytes, id, entry.raw_len)
            .map_err(|e| Error::corrupt(loc.segment, loc.offset, format!("chunk {id}: {e}")))?;
        Ok((header, bytes))
    }
}

fn check_record(bytes: &[u8], id: &ChunkId, raw_len: u32) -> Result<RecordHeader, FormatError> {
    let (h, _) = format::decode_record(bytes)?;
    if h.chunk_id != *id {
        return Err(FormatError::WrongId {
            stored: *id,
            computed: h.chunk_id,
        });
    }
    if h.raw_len != raw_len || h.record_len() != bytes.len() as u64 {
        return Err(FormatError::BadLength {
            raw_len: h.raw_len,
            stored_len: h.stored_len,
        });
    }
    Ok(h)
}

impl FileReader {
    /// Reads the content of a chunk list (chunks must be indexed).
    pub(super) fn over_list(store: Store, refs: Vec<ChunkRef>) -> Result<Self> {
        let end = refs.iter().map(|r| u64::from(r.raw_len)).sum();
        Self::new(store, FileId([0; 32]), 0, end, refs, true)
    }

    fn new(
        store: Store,
        file: FileId,
        pos: u64,
        end: u64,
        block: Vec<ChunkRef>,
        fixed_list: bool,
    ) -> Result<Self> {
        Ok(FileReader {
            store,
            file,
            pos,
            end,
            block,
            block_start: 0,
            next_chunk: 0,
            next_chunk_start: 0,
            buf: Vec::new(),
            buf_start: 0,
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("creating a zstd context", e))?,
            fixed_list,
        })
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Loads the chunk that holds `self.pos` into `buf`.
    fn load(&mut self) -> Result<()> {
        let in_block = self.next_chunk < self.block.len() && self.next_chunk_start <= self.pos;
        if !in_block && self.fixed_list {
            return Err(Error::Inconsistent(format!(
                "chunk list ends before offset {}",
                self.pos
            )));
        }
        if !in_block {
            let (start, refs) = self
                .store
                .inner
                .index
                .block_at(&self.file, self.pos)?
                .ok_or_else(|| {
                    Error::Inconsistent(format!(
                        "file {} has no chunk list block for offset {}",
                        self.file, self.pos
                    ))
                })?;
            self.block = refs;
            self.block_start = start;
            self.next_chunk = 0;
            self.next_chunk_start = start;
        }
        // Skip chunks that end before `pos` (range reads start mid-block).
        loop {
            let Some(r) = self.block.get(self.next_chunk).copied() else {
                return Err(Error::Inconsistent(format!(
                    "chunk list of file {} ends before offset {}",
                    self.file, self.pos
                )));
            };
            let chunk_end = self.next_chunk_start + u64::from(r.raw_len);
            if chunk_end <= self.pos {
                self.next_chunk += 1;
                self.next_chunk_start = chunk_end;
                if self.next_chunk >= self.block.len() {
                    return self.load();
                }
                continue;
            }
            let (header, bytes) = self.store.read_record(&r.id)?;
            self.buf.clear();
            // `read_record` checked both CRCs and the length.
            let payload = bytes.get(format::RECORD_HEADER_LEN..).unwrap_or_default();
            format::decode_payload(&header, payload, &mut self.dctx, &mut self.buf).map_err(
                |e| Error::Inconsistent(format!("chunk {} does not decompress: {e}", r.id)),
            )?;
            self.buf_start = self.next_chunk_start;
            self.next_chunk += 1;
            self.next_chunk_start = chunk_end;
            return Ok(());
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || out.is_empty() {
            return Ok(0);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= buf_end {
            self.load().map_err(io::Error::other)?;
        }
        let from = (self.pos - self.buf_start) as usize;
        let avail = self.buf.get(from..).unwrap_or_default();
        let want = (self.end - self.pos).min(out.len() as u64) as usize;
        let n = want.min(avail.len());
        if n == 0 {
            return Err(io::Error::other(Error::Inconsistent(format!(
                "file {}: empty chunk at offset {}",
                self.file, self.pos
            ))));
        }
        out.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(avail.get(..n).unwrap_or_default());
        self.pos += n as u64;
        Ok(n)
    }
}
