//! Fetching and assembling together: fetchers verify and store batches
//! in any order, several in flight, while one thread walks the chunk list
//! in order and hashes the whole file (the check done before a file is
//! committed, [`FileCheck::Before`](super::receive::FileCheck)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::fetch::fetch_retried;
use super::{ChunkSource, Progress, ReceiveOptions};
use crate::error::{Error, Result};
use crate::format::{self, ChunkList};
use crate::id::{ChunkId, FileDigests, Md5Hasher, Sha1Hasher};
use crate::store::{ChunkRef, PartialId, Store};

/// Fetchers verify and store batches in any order, several in flight; this
/// thread walks the list in order and hashes the whole file as it goes,
/// taking fetched chunks from the fetchers (already decompressed: nothing
/// is decompressed twice) and present ones from the store.
///
/// Fetchers take their turns in batch order, each within the byte window
/// ([`ReceiveOptions::window_bytes`]). The window is counted in chunk
/// bytes, which the list gives before anything is fetched; a count of
/// batches ahead was no bound, as the same batch of records holds 1x to
/// 10x its size once decompressed. On loopback (v1.tar of 1.48 GB, 4 MiB
/// batches, 3 fetchers) a 32 MiB window kept the full copy's speed; 16 MiB
/// slowed it by a third.
pub(super) fn fetch_and_assemble(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    list: &ChunkList,
    batches: &[Vec<format::ListEntry>],
    progress: &Progress,
    opts: &ReceiveOptions,
) -> Result<FileDigests> {
    let mut batch_of: HashMap<ChunkId, usize> = HashMap::new();
    for (i, b) in batches.iter().enumerate() {
        for e in b {
            batch_of.insert(e.id, i);
        }
    }
    let parallel = opts.parallel.max(1);
    let shared = Assembly {
        state: Mutex::new(AssemblyState::default()),
        changed: Condvar::new(),
        chunk_bytes: batches
            .iter()
            .map(|b| b.iter().map(|e| u64::from(e.raw_len)).sum())
            .collect(),
        window: opts.window_bytes,
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                fetcher(
                    store, source, partial, batches, &next, &shared, progress, opts,
                )
            });
        }
        let res = assemble(store, list, &batch_of, &shared, opts.verify_md5);
        // Stop the fetchers whatever happened.
        shared.lock().stopped = true;
        shared.changed.notify_all();
        res
    })
}

/// Batches fetched and verified, waiting for the assembler.
#[derive(Default)]
struct AssemblyState {
    ready: HashMap<usize, HashMap<ChunkId, Arc<Vec<u8>>>>,
    /// The batch the assembler is in.
    assembling: usize,
    /// The next batch a fetcher may take (they take turns in order).
    turn: usize,
    /// Chunk bytes of batches taken and not yet passed by the assembler.
    held: u64,
    /// The first fetcher's failure, for the assembler to return.
    failure: Option<Error>,
    /// Set on a failure and when assembly ends: fetchers stop.
    stopped: bool,
}

struct Assembly {
    state: Mutex<AssemblyState>,
    changed: Condvar,
    /// Chunk bytes of each batch.
    chunk_bytes: Vec<u64>,
    /// Bound on `held`, the batch the assembler needs aside.
    window: u64,
}

impl Assembly {
    fn lock(&self) -> std::sync::MutexGuard<'_, AssemblyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until batch `i` may be fetched: its turn has come, and its
    /// chunks fit in the window or the assembler needs them now. False
    /// once the transfer stopped.
    fn take_turn(&self, i: usize) -> bool {
        let bytes = self.chunk_bytes.get(i).copied().unwrap_or_default();
        let mut st = self.lock();
        while !st.stopped && (st.turn != i || (i > st.assembling && st.held + bytes > self.window))
        {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.stopped {
            return false;
        }
        st.turn += 1;
        st.held += bytes;
        drop(st);
        self.changed.notify_all();
        true
    }
}

#[expect(clippy::too_many_arguments, reason = "one worker's whole context")]
fn fetcher(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    batches: &[Vec<format::ListEntry>],
    next: &AtomicUsize,
    shared: &Assembly,
    progress: &Progress,
    opts: &ReceiveOptions,
) {
    let fail = |e: Error| {
        let mut st = shared.lock();
        if !st.stopped {
            st.failure = Some(e);
            st.stopped = true;
        }
        drop(st);
        shared.changed.notify_all();
    };
    let mut dctx = match zstd::bulk::Decompressor::new() {
        Ok(d) => d,
        Err(e) => return fail(Error::io("creating a zstd context", e)),
    };
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(batch) = batches.get(i) else { return };
        if !shared.take_turn(i) {
            return;
        }
        let got = fetch_retried(
            (store, source, partial),
            batch,
            progress,
            opts,
            &mut dctx,
            &|| false,
        );
        let chunks = match got {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        shared.lock().ready.insert(i, chunks);
        shared.changed.notify_all();
    }
}

/// A piece of the file on its way to a hashing thread: a shared buffer
/// (a fetched chunk, or a block of chunks read from the store) and the
/// bytes of it that come next in the file.
type Piece = (Arc<Vec<u8>>, std::ops::Range<usize>);

/// Takes the next piece of the file: the bytes `range` of a shared buffer.
type HashPiece<'a> = dyn FnMut(&Arc<Vec<u8>>, std::ops::Range<usize>) -> Result<()> + 'a;

/// Pieces queued per hashing thread. A piece pins its buffer, so this
/// bounds what the hashers hold: a few read blocks or fetched chunks.
const PIECES_QUEUED: usize = 32;

/// Walks the list in order and hashes the file: BLAKE3 here, SHA-1 on a
/// thread of its own (and MD5 on another when asked), each fed the same
/// shared buffers, so the slowest digest sets the pace rather than their
/// sum. Fetched chunks come from the fetchers; chunks the store had before
/// the copy come from a reader over just those, read ahead on the store's
/// read pool; a fetched chunk the list repeats is kept until its last use.
fn assemble(
    store: &Store,
    list: &ChunkList,
    batch_of: &HashMap<ChunkId, usize>,
    shared: &Assembly,
    verify_md5: bool,
) -> Result<FileDigests> {
    // Uses of each fetched chunk, and the chunks that were here already.
    let mut uses: HashMap<ChunkId, usize> = HashMap::new();
    let mut present: Vec<ChunkRef> = Vec::new();
    for e in &list.entries {
        if batch_of.contains_key(&e.id) {
            *uses.entry(e.id).or_insert(0) += 1;
        } else {
            present.push(ChunkRef {
                id: e.id,
                raw_len: e.raw_len,
            });
        }
    }
    let mut here = Present {
        reader: store.open_chunks(present)?,
        block: Arc::new(Vec::new()),
        at: 0,
    };
    let (sha1_tx, sha1_rx) = std::sync::mpsc::sync_channel::<Piece>(PIECES_QUEUED);
    let (md5_tx, md5_rx) = std::sync::mpsc::sync_channel::<Piece>(PIECES_QUEUED);
    std::thread::scope(|s| {
        let sha1 = s.spawn(move || {
            let mut h = Sha1Hasher::default();
            for (buf, r) in sha1_rx {
                h.update(buf.get(r).unwrap_or_default());
            }
            h.finish()
        });
        let md5 = s.spawn(move || {
            let mut h = Md5Hasher::default();
            for (buf, r) in md5_rx {
                h.update(buf.get(r).unwrap_or_default());
            }
            h.finish()
        });
        let mut blake3 = blake3::Hasher::new();
        let mut size = 0u64;
        let mut hash = |buf: &Arc<Vec<u8>>, r: std::ops::Range<usize>| -> Result<()> {
            let bytes = buf.get(r.clone()).unwrap_or_default();
            blake3.update(bytes);
            size += bytes.len() as u64;
            if verify_md5 {
                md5_tx
                    .send((Arc::clone(buf), r.clone()))
                    .map_err(|_| Error::Internal("md5 thread stopped".into()))?;
            }
            sha1_tx
                .send((Arc::clone(buf), r))
                .map_err(|_| Error::Internal("sha1 thread stopped".into()))
        };
        let mut repeats: HashMap<ChunkId, Arc<Vec<u8>>> = HashMap::new();
        let res = (|| {
            for e in &list.entries {
                let Some(&b) = batch_of.get(&e.id) else {
                    here.take(e, &mut hash)?;
                    continue;
                };
                let bytes = match repeats.get(&e.id) {
                    Some(kept) => Arc::clone(kept),
                    None => wait_fetched(shared, b, &e.id)?,
                };
                if bytes.len() != e.raw_len as usize {
                    return Err(Error::bad_source(format!(
                        "chunk {} has {} bytes, the list says {}",
                        e.id,
                        bytes.len(),
                        e.raw_len
                    )));
                }
                if let Some(n) = uses.get_mut(&e.id) {
                    *n -= 1;
                    if *n == 0 {
                        repeats.remove(&e.id);
                    } else {
                        repeats.insert(e.id, Arc::clone(&bytes));
                    }
                }
                hash(&bytes, 0..bytes.len())?;
            }
            Ok(())
        })();
        drop(sha1_tx);
        drop(md5_tx);
        let sha1 = sha1
            .join()
            .map_err(|_| Error::Internal("sha1 thread panicked".into()))?;
        let md5 = md5
            .join()
            .map_err(|_| Error::Internal("md5 thread panicked".into()))?;
        res?;
        Ok(FileDigests {
            size,
            sha1,
            md5: if verify_md5 { md5 } else { list.md5 },
            blake3: *blake3.finalize().as_bytes(),
        })
    })
}

/// A fetched chunk of batch `b`, once a fetcher has verified it.
fn wait_fetched(shared: &Assembly, b: usize, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
    let mut st = shared.lock();
    if st.assembling != b {
        let passed: u64 = shared
            .chunk_bytes
            .get(st.assembling..b)
            .map(|p| p.iter().sum())
            .unwrap_or_default();
        st.held = st.held.saturating_sub(passed);
        st.ready.retain(|k, _| *k >= b);
        st.assembling = b;
        shared.changed.notify_all();
    }
    loop {
        if let Some(c) = st.ready.get(&b).and_then(|m| m.get(id)) {
            return Ok(Arc::clone(c));
        }
        if st.stopped {
            return Err(st
                .failure
                .take()
                .unwrap_or_else(|| Error::Internal("fetchers stopped".into())));
        }
        st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// The chunks the store had before the copy, in list order: whole blocks
/// from the read-ahead reader (no copy), shared with the hashing threads.
struct Present {
    reader: crate::store::FileReader,
    block: Arc<Vec<u8>>,
    /// Next unused byte of `block`.
    at: usize,
}

impl Present {
    /// Hands the next chunk's bytes, `e.raw_len` of them, to `hash`.
    fn take(&mut self, e: &format::ListEntry, hash: &mut HashPiece<'_>) -> Result<()> {
        let mut need = e.raw_len as usize;
        while need > 0 {
            if self.at >= self.block.len() {
                let Some(block) = self.reader.next_block()? else {
                    return Err(Error::Inconsistent(format!(
                        "chunk {} ends early in the store",
                        e.id
                    )));
                };
                self.block = Arc::new(block);
                self.at = 0;
            }
            let n = need.min(self.block.len() - self.at);
            hash(&self.block, self.at..self.at + n)?;
            self.at += n;
            need -= n;
        }
        Ok(())
    }
}
