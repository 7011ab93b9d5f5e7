//! Fetching batches of records from a source: each record checked
//! against its id, then appended as it came and indexed for the transfer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{ChunkSource, Progress, ReceiveOptions};
use crate::error::{Error, Result};
use crate::format::{self, RecordHeader};
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
    loop {
        attempt += 1;
        match fetch_batch(store, source, partial, batch, progress, dctx) {
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
