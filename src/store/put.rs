//! Streaming put: a three-stage pipeline.
//!
//! 1. the caller's thread reads blocks and computes MD5 (the slowest hash,
//!    which cannot be split);
//! 2. a hasher thread computes SHA-1 and the file's BLAKE3 and cuts chunks;
//! 3. a writer thread names each chunk (BLAKE3), reuses it if stored, and
//!    otherwise compresses and appends it.
//!
//! Memory is bounded by the channel depths (a few blocks) plus 36 bytes of
//! chunk list per chunk (about 12 MiB for a 20 GiB file at 64 KiB chunks).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde::Serialize;

use super::{PinGuard, Store};
use crate::error::{Error, Result};
use crate::format::{Codec, encode_record_header};
use crate::id::{ChunkId, FileHasher, FileId, Md5Hasher};
use crate::index::ChunkRef;
use crate::segment::{Location, WriteSession, lock};

const READ_BLOCK: usize = 1 << 20;

/// What a put stored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PutResult {
    pub file_id: FileId,
    pub size: u64,
    /// Hex SHA-1 of the whole file (IMGAPI's `files[].sha1`).
    pub sha1: String,
    /// Hex MD5 of the whole file (Content-MD5 is its base64).
    pub md5: String,
    /// Hex BLAKE3 of the whole file (the file id).
    pub blake3: String,
    pub chunk_count: u64,
    /// Chunks this put had to store.
    pub new_chunks: u64,
    /// Bytes this put appended to segments.
    pub new_stored_bytes: u64,
    /// True when the same content was already stored (only a reference was added).
    pub existed: bool,
    /// References the file has now.
    pub refs: u64,
}

struct Cut {
    buf: Arc<Vec<u8>>,
    chunks: Vec<Range<usize>>,
}

/// A put whose data is durable but not yet indexed. Holds its pins and its
/// segment pins until dropped, so GC leaves its chunks alone meanwhile.
pub struct StagedPut<'a> {
    pub file_id: FileId,
    pub size: u64,
    pub sha1: [u8; 20],
    pub md5: [u8; 16],
    pub(super) written: Written,
    _session: WriteSession<'a>,
    _pins: PinGuard<'a>,
}

pub(super) struct Written {
    /// The chunk list of the file.
    pub(super) refs: Vec<ChunkRef>,
    /// Chunks this put appended, by id.
    pub(super) new: HashMap<ChunkId, (Location, u32)>,
    pub(super) new_stored_bytes: u64,
}

impl Store {
    /// Stores everything `input` yields as one file and takes one reference
    /// to it. Returns after the data and the index entries are durable.
    pub fn put(&self, input: impl Read) -> Result<PutResult> {
        let staged = self.put_staged(input)?;
        self.transaction(|t| t.commit_put(&staged))
    }

    /// The heavy half of a put: reads, chunks, hashes, compresses and
    /// appends the data and makes it durable, without indexing it. Commit it
    /// with [`Txn::commit_put`](super::Txn::commit_put), possibly together
    /// with other changes; dropped uncommitted, its bytes become garbage.
    pub fn put_staged(&self, input: impl Read) -> Result<StagedPut<'_>> {
        self.check_local_room()?;
        let inner = &*self.inner;
        let mut pins = PinGuard {
            pins: &inner.pins,
            held: Vec::new(),
        };
        let mut session = inner.segments.session();
        let (block_tx, block_rx) = sync_channel::<Vec<u8>>(2);
        let (cut_tx, cut_rx) = sync_channel::<Cut>(4);

        let (read_res, hash_res, write_res) = std::thread::scope(|s| {
            let hasher = s.spawn(|| self.hash_and_cut(block_rx, cut_tx));
            let writer = s.spawn(|| self.name_and_write(cut_rx, &mut session, &mut pins));
            let read_res = read_blocks(input, block_tx);
            let hash_res = hasher
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("hasher thread panicked".into())));
            let write_res = writer
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("writer thread panicked".into())));
            (read_res, hash_res, write_res)
        });
        // The reader's error is the root cause when there is one; a closed
        // channel downstream is its consequence.
        let md5 = read_res?;
        let written = write_res?;
        let (size, sha1, b3) = hash_res?;
        session.sync()?;
        Ok(StagedPut {
            file_id: FileId(b3),
            size,
            sha1,
            md5,
            written,
            _session: session,
            _pins: pins,
        })
    }

    fn hash_and_cut(
        &self,
        blocks: Receiver<Vec<u8>>,
        out: SyncSender<Cut>,
    ) -> Result<(u64, [u8; 20], [u8; 32])> {
        let chunker = self.inner.chunker;
        let max = chunker.max as usize;
        let mut hasher = FileHasher::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut eof = false;
        while !eof {
            let mut buf = std::mem::take(&mut carry);
            match blocks.recv() {
                Ok(block) => {
                    hasher.update(&block);
                    if buf.is_empty() {
                        buf = block;
                    } else {
                        buf.extend_from_slice(&block);
                    }
                }
                Err(_) => eof = true,
            }
            let mut chunks = Vec::new();
            let mut pos = 0;
            while pos < buf.len() {
                let rest = buf.get(pos..).unwrap_or_default();
                if rest.len() < max && !eof {
                    break;
                }
                let n = chunker.cut(rest);
                chunks.push(pos..pos + n);
                pos += n;
            }
            carry = buf.get(pos..).unwrap_or_default().to_vec();
            if !chunks.is_empty() {
                let cut = Cut {
                    buf: Arc::new(buf),
                    chunks,
                };
                if out.send(cut).is_err() {
                    break; // the writer failed; it reports why
                }
            }
        }
        Ok(hasher.finish())
    }

    fn name_and_write(
        &self,
        cuts: Receiver<Cut>,
        session: &mut WriteSession<'_>,
        pins: &mut PinGuard<'_>,
    ) -> Result<Written> {
        let inner = &*self.inner;
        let mut compressor = zstd::bulk::Compressor::new(inner.zstd_level)
            .map_err(|e| Error::io("creating a zstd context", e))?;
        let mut out = Vec::new();
        let mut w = Written {
            refs: Vec::new(),
            new: HashMap::new(),
            new_stored_bytes: 0,
        };
        let mut seen: HashSet<ChunkId> = HashSet::new();
        for cut in cuts {
            for r in cut.chunks {
                let data = cut.buf.get(r).unwrap_or_default();
                let id = ChunkId::of(data);
                let raw_len = data.len() as u32;
                w.refs.push(ChunkRef { id, raw_len });
                // Each distinct chunk is looked up (and stored) once per put.
                if !seen.insert(id) {
                    continue;
                }
                if self.pin_if_stored(&id, pins)? {
                    continue;
                }
                out.clear();
                out.reserve(zstd::zstd_safe::compress_bound(data.len()));
                let compressed = compressor
                    .compress_to_buffer(data, &mut out)
                    .map_err(|e| Error::io("compressing a chunk", e))?;
                // Keep the raw bytes unless compression saves at least 1/32.
                let (codec, payload) = if compressed + compressed / 32 < data.len() {
                    (Codec::Zstd, out.get(..compressed).unwrap_or_default())
                } else {
                    (Codec::Raw, data)
                };
                let header = encode_record_header(codec, &id, raw_len, payload);
                let loc = session.append(&header, payload)?;
                w.new_stored_bytes += u64::from(loc.len);
                w.new.insert(id, (loc, raw_len));
            }
        }
        Ok(w)
    }

    /// Pins `id` if it is indexed (atomically with the look-up, so GC cannot
    /// drop it in between). Returns whether it was.
    fn pin_if_stored(&self, id: &ChunkId, pins: &mut PinGuard<'_>) -> Result<bool> {
        let mut p = lock(&self.inner.pins);
        if self.inner.index.chunk(id)?.is_none() {
            return Ok(false);
        }
        *p.entry(*id).or_insert(0) += 1;
        pins.held.push(*id);
        Ok(true)
    }
}

fn read_blocks(mut input: impl Read, out: SyncSender<Vec<u8>>) -> Result<[u8; 16]> {
    let mut md5 = Md5Hasher::default();
    loop {
        let mut block = vec![0u8; READ_BLOCK];
        let mut filled = 0;
        while filled < block.len() {
            let dst = block.get_mut(filled..).unwrap_or_default();
            match input.read(dst) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the input", e)),
            }
        }
        if filled == 0 {
            return Ok(md5.finish());
        }
        block.truncate(filled);
        md5.update(&block);
        let last = filled < READ_BLOCK;
        if out.send(block).is_err() {
            // A later stage failed and reports the cause.
            return Ok(md5.finish());
        }
        if last {
            return Ok(md5.finish());
        }
    }
}
