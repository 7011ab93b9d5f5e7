//! Fetching batches of records from a source: each record checked
//! against its id, then appended as it came and indexed for the transfer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{ChunkSource, FileCheck, Progress, ReceiveOptions};
use crate::error::{Error, Result};
use crate::format::{self, Stored};
use crate::id::ChunkId;
use crate::store::{PartialId, Store};

/// Fetches every batch, several in flight, in any order: each record is
/// checked against its id and appended as it comes; nothing is hashed as
/// a whole ([`FileCheck::Later`]).
pub(super) fn fetch_only(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    batches: &[Vec<format::ListEntry>],
    progress: &Progress,
    opts: &ReceiveOptions,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let failed = || failure.lock().map(|f| f.is_some()).unwrap_or(true);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1) {
            s.spawn(|| {
                let fail = |e: Error| {
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert(e);
                };
                let mut dctx = match zstd::bulk::Decompressor::new() {
                    Ok(d) => d,
                    Err(e) => return fail(Error::io("creating a zstd context", e)),
                };
                while !failed() {
                    let Some(batch) = batches.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let got = fetch_retried(
                        (store, source, partial),
                        batch,
                        progress,
                        opts,
                        &mut dctx,
                        &failed,
                    );
                    if let Err(e) = got {
                        return fail(e);
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`fetch_batch`] tried up to `opts.attempts` times, the pause doubling
/// after each failure, unless `stop` says the transfer is over.
pub(super) fn fetch_retried(
    (store, source, partial): (&Store, &dyn ChunkSource, &PartialId),
    batch: &[format::ListEntry],
    progress: &Progress,
    opts: &ReceiveOptions,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    stop: &dyn Fn() -> bool,
) -> Result<HashMap<ChunkId, Arc<Vec<u8>>>> {
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    // Only the assembler (a check before the commit) takes the chunks.
    let keep = opts.check == FileCheck::Before;
    loop {
        attempt += 1;
        match fetch_batch(store, source, partial, batch, progress, (dctx, keep)) {
            Ok(c) => return Ok(c),
            Err(_) if attempt < opts.attempts && !stop() => {
                progress.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fetches one batch, checks every record, appends and indexes it;
/// returns its chunks when `keep` says the caller takes them (else none).
fn fetch_batch(
    store: &Store,
    source: &dyn ChunkSource,
    partial: &PartialId,
    batch: &[format::ListEntry],
    progress: &Progress,
    (dctx, keep): (&mut zstd::bulk::Decompressor<'static>, bool),
) -> Result<HashMap<ChunkId, Arc<Vec<u8>>>> {
    let ids: Vec<ChunkId> = batch.iter().map(|e| e.id).collect();
    let mut check = Checker {
        want: batch.iter().map(|e| (e.id, e.raw_len)).collect(),
        seen: HashSet::new(),
        chunks: HashMap::with_capacity(if keep { batch.len() } else { 0 }),
        keep,
        dctx,
    };
    let mut got: Vec<Got> = Vec::with_capacity(batch.len());
    source.fetch(&ids, &mut |bytes| {
        let stored = check.record(bytes)?;
        progress
            .wire_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        got.push((stored, bytes.to_vec()));
        Ok(())
    })?;
    if check.seen.len() != batch.len() {
        return Err(Error::bad_source(format!(
            "source sent {} of {} requested chunks",
            check.seen.len(),
            batch.len()
        )));
    }
    store.append_received(partial, &got)?;
    progress.bytes_fetched.fetch_add(
        batch.iter().map(|e| u64::from(e.raw_len)).sum(),
        Ordering::Relaxed,
    );
    progress
        .chunks_fetched
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    Ok(check.chunks)
}

/// A record as it came, with its decoded header (and a group's table).
type Got = (Stored, Vec<u8>);

/// What a batch's records are checked against: each chunk requested,
/// with its length, and sent once; its bytes hashing to its id.
struct Checker<'a> {
    want: HashMap<ChunkId, u32>,
    seen: HashSet<ChunkId>,
    chunks: HashMap<ChunkId, Arc<Vec<u8>>>,
    /// Whether `chunks` keeps what was checked (a group's members are
    /// then copied out of it).
    keep: bool,
    dctx: &'a mut zstd::bulk::Decompressor<'static>,
}

impl Checker<'_> {
    /// Checks a record from the source: a chunk's own, or a group record
    /// whose every member was requested; keeps the chunks' bytes.
    fn record(&mut self, bytes: &[u8]) -> Result<Stored> {
        let bad =
            |e: format::FormatError| Error::bad_source(format!("source sent a bad record: {e}"));
        let (stored, payload) = format::decode_stored(bytes).map_err(bad)?;
        if stored.record_len() != bytes.len() as u64 {
            return Err(Error::bad_source(format!(
                "source sent {} bytes for a record of {}",
                bytes.len(),
                stored.record_len()
            )));
        }
        match &stored {
            Stored::One(h) => {
                self.wanted(&h.chunk_id, h.raw_len)?;
                let mut chunk = Vec::with_capacity(h.raw_len as usize);
                format::decode_and_verify(h, payload, self.dctx, &mut chunk).map_err(damaged)?;
                if self.keep {
                    self.chunks.insert(h.chunk_id, Arc::new(chunk));
                }
            }
            Stored::Group(g) => {
                for m in &g.members {
                    self.wanted(&m.id, m.raw_len)?;
                }
                let mut raw = Vec::with_capacity(g.header.raw_len as usize);
                format::decode_and_verify_group(g, payload, self.dctx, &mut raw)
                    .map_err(damaged)?;
                if self.keep {
                    for m in &g.members {
                        let at = m.raw_offset as usize;
                        let chunk = raw.get(at..at + m.raw_len as usize).unwrap_or_default();
                        self.chunks.insert(m.id, Arc::new(chunk.to_vec()));
                    }
                }
            }
        }
        Ok(stored)
    }

    fn wanted(&mut self, id: &ChunkId, raw_len: u32) -> Result<()> {
        let Some(&want) = self.want.get(id) else {
            return Err(Error::bad_source(format!(
                "source sent chunk {id}, which was not requested"
            )));
        };
        if raw_len != want || !self.seen.insert(*id) {
            return Err(Error::bad_source(format!(
                "source sent chunk {id} twice or with the wrong length"
            )));
        }
        Ok(())
    }
}

fn damaged(e: format::FormatError) -> Error {
    Error::bad_source(format!("source sent a damaged chunk: {e}"))
}
