//! Streaming put: a four-stage pipeline.
//!
//! 1. the caller's thread reads blocks and computes MD5 (the slowest hash,
//!    which cannot be split);
//! 2. a hasher thread computes SHA-1 and the file's BLAKE3 and cuts chunks;
//! 3. namer threads (one per core, at most [`MAX_NAMERS`]) take the cuts
//!    in turn, name each chunk (BLAKE3), claim it for this put or find it
//!    stored (and pin it), and compress the ones to store;
//! 4. a writer thread takes the named cuts back in order and appends the
//!    new records.
//!
//! Compression was the writer's, on one thread: perf of a put of v1.tar
//! (1.48 GB, nearly all new) found that thread busy for 49 % of the put's
//! CPU time, the most of any thread, so it set the put's pace. Spread over
//! the namers, the busiest thread is MD5's.
//!
//! Memory is bounded by the cuts in flight ([`CUTS_IN_FLIGHT`] of about
//! one block each, with their compressed records) plus 36 bytes of chunk
//! list per chunk (about 12 MiB for a 20 GiB file at 64 KiB chunks).

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

/// Namer threads at most: past MD5's pace more buy nothing.
const MAX_NAMERS: usize = 4;

/// Cuts between the hasher and the writer at once: taken by the hasher
/// before it hands a cut on, given back by the writer once it appended
/// it. This bounds the cuts the writer holds back for order.
const CUTS_IN_FLIGHT: usize = 2 * MAX_NAMERS + 2;

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
    /// Its place in the file: cuts are numbered from 0.
    seq: u64,
    buf: Arc<Vec<u8>>,
    chunks: Vec<Range<usize>>,
}

/// A cut once its chunks are named: what the writer appends, in order.
struct Named<'a> {
    cut: Cut,
    chunks: Vec<NamedChunk>,
    /// Pins on the chunks found stored (released if this is dropped).
    pins: PinGuard<'a>,
}

struct NamedChunk {
    id: ChunkId,
    raw_len: u32,
    /// The record to append: this put claimed the chunk and it was not
    /// stored. None when it is stored, or claimed by another chunk of
    /// this put (an earlier or a later one: the index learns of it only
    /// at commit, after every append).
    record: Option<([u8; crate::format::RECORD_HEADER_LEN], Payload)>,
}

enum Payload {
    Compressed(Vec<u8>),
    /// The chunk's own bytes, a range of the cut's buffer.
    Raw(Range<usize>),
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
        self.check_fence()?;
        self.check_local_room()?;
        let inner = &*self.inner;
        let mut pins = PinGuard {
            pins: &inner.pins,
            held: Vec::new(),
        };
        let mut session = inner.segments.session();
        let namers = std::thread::available_parallelism()
            .map_or(2, std::num::NonZeroUsize::get)
            .clamp(1, MAX_NAMERS);
        let (block_tx, block_rx) = sync_channel::<Vec<u8>>(2);
        let (cut_tx, cut_rx) = sync_channel::<Cut>(namers);
        // Owned by the namers together: once the last one stops, the
        // hasher's next send fails instead of waiting for a taker.
        let cut_rx = Arc::new(std::sync::Mutex::new(cut_rx));
        let (named_tx, named_rx) = sync_channel::<Result<Named<'_>>>(namers);
        let (credit_tx, credit_rx) = sync_channel::<()>(CUTS_IN_FLIGHT);
        for _ in 0..CUTS_IN_FLIGHT {
            credit_tx
                .send(())
                .map_err(|_| Error::Internal("put credits".into()))?;
        }
        let claimed = std::sync::Mutex::new(HashSet::new());

        let (read_res, hash_res, write_res) = std::thread::scope(|s| {
            let hasher = s.spawn(|| self.hash_and_cut(block_rx, cut_tx, credit_rx));
            for _ in 0..namers {
                let (cut_rx, named_tx, claimed) = (Arc::clone(&cut_rx), named_tx.clone(), &claimed);
                s.spawn(move || self.name_cuts(&cut_rx, named_tx, claimed));
            }
            drop((cut_rx, named_tx));
            let writer = s.spawn(|| self.write_named(named_rx, credit_tx, &mut session, &mut pins));
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
        credits: Receiver<()>,
    ) -> Result<(u64, [u8; 20], [u8; 32])> {
        let mut seq = 0;
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
                    seq,
                    buf: Arc::new(buf),
                    chunks,
                };
                seq += 1;
                // No credit or no taker: a later stage failed and reports
                // why.
                if credits.recv().is_err() || out.send(cut).is_err() {
                    break;
                }
            }
        }
        Ok(hasher.finish())
    }

    /// A namer: takes cuts until there are none, names and compresses
    /// their chunks (see the module docs), and hands them to the writer.
    fn name_cuts<'a>(
        &'a self,
        cuts: &std::sync::Mutex<Receiver<Cut>>,
        out: SyncSender<Result<Named<'a>>>,
        claimed: &std::sync::Mutex<HashSet<ChunkId>>,
    ) {
        let mut compressor = match zstd::bulk::Compressor::new(self.inner.zstd_level) {
            Ok(c) => c,
            Err(e) => {
                let _ = out.send(Err(Error::io("creating a zstd context", e)));
                return;
            }
        };
        loop {
            let Ok(cut) = lock(cuts).recv() else {
                return; // the hasher is done (or failed)
            };
            // A panic here would leave the writer waiting for this cut
            // (and everything before it in the pipeline) forever: it
            // becomes the put's error instead.
            let named = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.name_cut(cut, &mut compressor, claimed)
            }))
            .unwrap_or_else(|_| Err(Error::Internal("a namer thread panicked".into())));
            let failed = named.is_err();
            if out.send(named).is_err() || failed {
                return;
            }
        }
    }

    fn name_cut(
        &self,
        cut: Cut,
        compressor: &mut zstd::bulk::Compressor<'_>,
        claimed: &std::sync::Mutex<HashSet<ChunkId>>,
    ) -> Result<Named<'_>> {
        let mut pins = PinGuard {
            pins: &self.inner.pins,
            held: Vec::new(),
        };
        let mut chunks = Vec::with_capacity(cut.chunks.len());
        for r in &cut.chunks {
            let data = cut.buf.get(r.clone()).unwrap_or_default();
            let id = ChunkId::of(data);
            let raw_len = data.len() as u32;
            // Each distinct chunk is looked up (and stored) once per put.
            let first = lock(claimed).insert(id);
            if !first || self.pin_if_stored(&id, &mut pins)? {
                chunks.push(NamedChunk {
                    id,
                    raw_len,
                    record: None,
                });
                continue;
            }
            // Compressed into the spare capacity: no zero fill first.
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
            let compressed = compressor
                .compress_to_buffer(data, &mut out)
                .map_err(|e| Error::io("compressing a chunk", e))?;
            // Keep the raw bytes unless compression saves at least 1/32.
            let (header, payload) = if compressed + compressed / 32 < data.len() {
                out.truncate(compressed);
                let header = encode_record_header(Codec::Zstd, &id, raw_len, &out);
                (header, Payload::Compressed(out))
            } else {
                let header = encode_record_header(Codec::Raw, &id, raw_len, data);
                (header, Payload::Raw(r.clone()))
            };
            chunks.push(NamedChunk {
                id,
                raw_len,
                record: Some((header, payload)),
            });
        }
        Ok(Named { cut, chunks, pins })
    }

    /// The writer: appends the named cuts' new records in file order,
    /// holding back the ones that arrive early, and gives a credit back
    /// per cut.
    fn write_named<'a>(
        &'a self,
        named: Receiver<Result<Named<'a>>>,
        credits: SyncSender<()>,
        session: &mut WriteSession<'_>,
        pins: &mut PinGuard<'a>,
    ) -> Result<Written> {
        let mut w = Written {
            refs: Vec::new(),
            new: HashMap::new(),
            new_stored_bytes: 0,
        };
        let mut early: std::collections::BTreeMap<u64, Named<'a>> = Default::default();
        let mut next = 0;
        for n in named {
            let n = n?;
            early.insert(n.cut.seq, n);
            while let Some(mut n) = early.remove(&next) {
                pins.held.append(&mut n.pins.held);
                for c in n.chunks {
                    w.refs.push(ChunkRef {
                        id: c.id,
                        raw_len: c.raw_len,
                    });
                    let Some((header, payload)) = c.record else {
                        continue;
                    };
                    let bytes = match &payload {
                        Payload::Compressed(v) => v.as_slice(),
                        Payload::Raw(r) => n.cut.buf.get(r.clone()).unwrap_or_default(),
                    };
                    let loc = session.append(&header, bytes)?;
                    w.new_stored_bytes += u64::from(loc.len);
                    w.new.insert(c.id, (loc, c.raw_len));
                }
                next += 1;
                let _ = credits.send(());
            }
        }
        if !early.is_empty() {
            return Err(Error::Internal(format!(
                "put: cut {next} never came back from the namers"
            )));
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
                Err(e) => return Err(Error::Input(e)),
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
