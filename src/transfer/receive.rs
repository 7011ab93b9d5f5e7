//! The receiving end of the chunk-diff protocol: compare the source's
//! chunk list with what this store has, claim what is here, fetch the rest
//! in verified batches (several in flight), hash the whole file in order as
//! batches arrive, and commit the file with the caller's own changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{ChunkSource, MAX_IDS_PER_FETCH, Progress};
use crate::error::{Error, Result};
use crate::format::{self, ChunkList, RecordHeader};
use crate::id::{ChunkId, FileDigests, FileId, Md5Hasher, Sha1Hasher};
use crate::store::{ChunkRef, PartialId};
use crate::store::{PutResult, Store, Txn};

/// Chunks claimed per transaction while comparing lists.
const CLAIM_GROUP: usize = 4096;

/// Tuning of a transfer.
#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    /// Record bytes per fetch request.
    pub batch_bytes: u64,
    /// Fetch requests in flight.
    pub parallel: usize,
    /// Chunk bytes (decompressed) that fetched batches may hold while they
    /// wait for the assembler, the batch it needs next aside. A fetcher
    /// waits for room before it asks the source for its batch, so on a
    /// fast link memory stays within this however large batches or
    /// `parallel` are; on a slow link batches are taken as soon as they
    /// arrive and the window is never full.
    pub window_bytes: u64,
    /// Attempts per batch before the transfer fails.
    pub attempts: u32,
    /// Pause before a retry (doubles each time).
    pub retry_delay: Duration,
    /// Recompute the file's MD5 instead of taking the source's. MD5 only
    /// feeds `Content-MD5`; the bytes are proven by each chunk's BLAKE3 and
    /// the whole file's SHA-1 and BLAKE3 either way. Recomputing costs
    /// about 40% of the receiver's CPU (measured), so it is off by default.
    pub verify_md5: bool,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            // A fetched batch is held decompressed (about 3x) until the
            // assembler reaches it: 4 MiB batches kept the destination's
            // peak RSS at 155 MiB where 8 MiB ones reached 236, at the same
            // speed (416 vs 439 MB/s full copy in one run, within noise).
            batch_bytes: 4 << 20,
            // Measured between two daemons on 2 cores: 2 in flight copied
            // 374-460 MB/s, 3 copied 508-528 MB/s.
            parallel: 3,
            // See `fetch_and_assemble`.
            window_bytes: 32 << 20,
            attempts: 4,
            retry_delay: Duration::from_millis(200),
            verify_md5: false,
        }
    }
}

/// What the file must turn out to be (from the manifest, not the source).
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub size: Option<u64>,
    pub sha1: Option<[u8; 20]>,
}

/// Copies the file `source` describes into `store` and takes one reference
/// to it. `partial` names the transfer: chunks received under the same name
/// by an earlier, interrupted attempt are not fetched again.
pub fn receive_file(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    expect: &Expect,
    progress: &Progress,
    opts: &ReceiveOptions,
) -> Result<PutResult> {
    receive_file_with(
        store,
        source,
        partial,
        expect,
        progress,
        opts,
        &mut |_, _| Ok(()),
    )
}

/// [`receive_file`], with `on_commit` adding the caller's own changes (an
/// image record that now holds the file) to the transaction that commits
/// the file, so both happen or neither does.
pub fn receive_file_with<E: From<Error>>(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    expect: &Expect,
    progress: &Progress,
    opts: &ReceiveOptions,
    on_commit: &mut dyn FnMut(&mut Txn<'_>, &PutResult) -> Result<(), E>,
) -> Result<PutResult, E> {
    let list = source.chunk_list()?;
    if expect.size.is_some_and(|s| s != list.size) {
        return Err(Error::bad_source(format!(
            "source lists {} bytes, the image says {}",
            list.size,
            expect.size.unwrap_or_default()
        ))
        .into());
    }
    // Totals add up, so one Progress can follow the files of a whole job.
    progress.total_bytes.fetch_add(list.size, Ordering::Relaxed);
    progress
        .chunks_total
        .fetch_add(list.entries.len() as u64, Ordering::Relaxed);
    let missing = claim_present(store, &list, partial, progress)?;
    let batches = batches_of(missing, opts.batch_bytes, opts.window_bytes / 2);
    let digests = fetch_and_assemble(store, source, partial, &list, &batches, progress, opts)?;
    check_digests(&list, expect, &digests)?;
    let refs: Vec<ChunkRef> = list
        .entries
        .iter()
        .map(|e| ChunkRef {
            id: e.id,
            raw_len: e.raw_len,
        })
        .collect();
    let d = digests;
    store.transaction(|t| {
        let r = t.commit_assembled(partial, FileId(d.blake3), d.size, d.sha1, d.md5, &refs)?;
        on_commit(t, &r)?;
        Ok(r)
    })
}

/// Claims, for this transfer, every listed chunk the store has; returns
/// the others (each distinct chunk once).
fn claim_present(
    store: &Store,
    list: &ChunkList,
    partial: &PartialId,
    progress: &Progress,
) -> Result<Vec<format::ListEntry>> {
    let mut distinct: Vec<&format::ListEntry> = Vec::new();
    let mut seen = HashSet::new();
    for e in &list.entries {
        if seen.insert(e.id) {
            distinct.push(e);
        }
    }
    let mut missing = Vec::new();
    for group in distinct.chunks(CLAIM_GROUP) {
        let ids: Vec<ChunkId> = group.iter().map(|e| e.id).collect();
        let have = store.claim_present(partial, &ids)?;
        for (e, has) in group.iter().zip(have) {
            if has {
                progress
                    .bytes_local
                    .fetch_add(u64::from(e.raw_len), Ordering::Relaxed);
                progress.chunks_local.fetch_add(1, Ordering::Relaxed);
            } else {
                missing.push(**e);
            }
        }
    }
    progress.bytes_to_fetch.fetch_add(
        missing.iter().map(|e| u64::from(e.raw_len)).sum(),
        Ordering::Relaxed,
    );
    progress
        .chunks_to_fetch
        .fetch_add(missing.len() as u64, Ordering::Relaxed);
    Ok(missing)
}

/// Fetch requests of at most `batch_bytes` of records, `chunk_bytes` of
/// chunks (a batch of highly compressible chunks is small on the wire and
/// large in memory) and [`MAX_IDS_PER_FETCH`] ids, in list order.
fn batches_of(
    missing: Vec<format::ListEntry>,
    batch_bytes: u64,
    chunk_bytes: u64,
) -> Vec<Vec<format::ListEntry>> {
    let mut batches: Vec<Vec<format::ListEntry>> = Vec::new();
    let mut cur = Vec::new();
    let (mut cur_records, mut cur_chunks) = (0u64, 0u64);
    for e in missing {
        if !cur.is_empty()
            && (cur_records + u64::from(e.record_len) > batch_bytes
                || cur_chunks + u64::from(e.raw_len) > chunk_bytes
                || cur.len() >= MAX_IDS_PER_FETCH)
        {
            batches.push(std::mem::take(&mut cur));
            (cur_records, cur_chunks) = (0, 0);
        }
        cur_records += u64::from(e.record_len);
        cur_chunks += u64::from(e.raw_len);
        cur.push(e);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

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
fn fetch_and_assemble(
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

/// The assembled file must be what the list and the manifest say.
fn check_digests(list: &ChunkList, expect: &Expect, d: &FileDigests) -> Result<()> {
    if d.size != list.size || d.blake3 != list.file_id {
        return Err(Error::bad_source(format!(
            "assembled file does not match the source's list ({} bytes, BLAKE3 {})",
            d.size,
            hex::encode(d.blake3)
        )));
    }
    if d.md5 != list.md5 {
        return Err(Error::bad_source(format!(
            "assembled file has MD5 {}, the source says {}",
            hex::encode(d.md5),
            hex::encode(list.md5)
        )));
    }
    if expect.sha1.is_some_and(|s| s != d.sha1) || d.sha1 != list.sha1 {
        return Err(Error::bad_source(format!(
            "assembled file has SHA-1 {}, expected {}",
            hex::encode(d.sha1),
            hex::encode(expect.sha1.unwrap_or(list.sha1))
        )));
    }
    Ok(())
}

/// Fetches one batch, checks every record, appends and indexes it.
fn fetch_batch(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    batch: &[format::ListEntry],
    progress: &Progress,
    dctx: &mut zstd::bulk::Decompressor<'static>,
) -> Result<HashMap<ChunkId, Arc<Vec<u8>>>> {
    let ids: Vec<ChunkId> = batch.iter().map(|e| e.id).collect();
    let want: HashMap<ChunkId, u32> = batch.iter().map(|e| (e.id, e.raw_len)).collect();
    let mut got: Vec<(RecordHeader, Vec<u8>)> = Vec::with_capacity(batch.len());
    let mut seen = HashSet::new();
    let mut chunks: HashMap<ChunkId, Arc<Vec<u8>>> = HashMap::with_capacity(batch.len());
    source.fetch(&ids, &mut |bytes| {
        let (h, payload) = format::decode_record(bytes)
            .map_err(|e| Error::bad_source(format!("source sent a bad record: {e}")))?;
        let Some(&raw_len) = want.get(&h.chunk_id) else {
            return Err(Error::bad_source(format!(
                "source sent chunk {}, which was not requested",
                h.chunk_id
            )));
        };
        if h.raw_len != raw_len || !seen.insert(h.chunk_id) {
            return Err(Error::bad_source(format!(
                "source sent chunk {} twice or with the wrong length",
                h.chunk_id
            )));
        }
        let mut chunk = Vec::with_capacity(h.raw_len as usize);
        format::decode_and_verify(&h, payload, dctx, &mut chunk)
            .map_err(|e| Error::bad_source(format!("source sent a damaged chunk: {e}")))?;
        chunks.insert(h.chunk_id, Arc::new(chunk));
        progress
            .wire_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        got.push((h, bytes.to_vec()));
        Ok(())
    })?;
    if got.len() != batch.len() {
        return Err(Error::bad_source(format!(
            "source sent {} of {} requested chunks",
            got.len(),
            batch.len()
        )));
    }
    let records: Vec<(RecordHeader, &[u8])> = got.iter().map(|(h, b)| (*h, b.as_slice())).collect();
    store.append_received(partial, &records)?;
    progress.bytes_fetched.fetch_add(
        batch.iter().map(|e| u64::from(e.raw_len)).sum(),
        Ordering::Relaxed,
    );
    progress
        .chunks_fetched
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    Ok(chunks)
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
        let mut delay = opts.retry_delay;
        let mut attempt = 0;
        let chunks = loop {
            attempt += 1;
            match fetch_batch(store, source, partial, batch, progress, &mut dctx) {
                Ok(c) => break c,
                Err(_) if attempt < opts.attempts => {
                    progress.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return fail(e),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, raw_len: u32, record_len: u32) -> format::ListEntry {
        format::ListEntry {
            id: ChunkId::of(&[n]),
            raw_len,
            record_len,
        }
    }

    #[test]
    fn batches_are_cut_by_records_and_by_chunk_bytes() {
        // Highly compressible chunks: small on the wire, large in memory.
        let squeezed: Vec<_> = (0..20).map(|n| entry(n, 10_000, 100)).collect();
        let b = batches_of(squeezed, 1 << 20, 64_000);
        assert!(b.len() >= 4, "{}", b.len());
        for batch in &b {
            let chunks: u64 = batch.iter().map(|e| u64::from(e.raw_len)).sum();
            assert!(chunks <= 64_000, "{chunks}");
        }
        // Incompressible ones: the record bytes cut first.
        let raw: Vec<_> = (0..20).map(|n| entry(n, 10_000, 10_040)).collect();
        let b = batches_of(raw, 30_000, 1 << 20);
        assert!(b.iter().all(|x| x.len() <= 2), "{b:?}");
        // One chunk larger than either bound still travels, alone.
        let big = vec![entry(1, 5_000_000, 5_000_040), entry(2, 10, 50)];
        let b = batches_of(big, 30_000, 64_000);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        // Order is kept.
        let ids: Vec<_> = b.iter().flatten().map(|e| e.id).collect();
        assert_eq!(ids, [ChunkId::of(&[1]), ChunkId::of(&[2])]);
    }
}
