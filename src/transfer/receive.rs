//! The receiving end of the chunk-diff protocol: compare the source's
//! chunk list with what this store has, claim what is here, fetch the rest
//! in verified batches (several in flight), hash the whole file in order as
//! batches arrive, and commit the file with the caller's own changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::{ChunkSource, FileCheck, MAX_IDS_PER_FETCH, Progress, ReceiveOptions};
use crate::error::{Error, Result};
use crate::format::{self, ChunkList};
use crate::id::{ChunkId, FileDigests, FileId};
use crate::store::{ChunkRef, PartialId};
use crate::store::{PutResult, Store, Txn};

/// Chunks claimed per transaction while comparing lists.
const CLAIM_GROUP: usize = 4096;

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
    let units = units_of(missing, list.runs.as_deref().unwrap_or_default());
    let batches = batches_of(units, opts.batch_bytes, opts.window_bytes / 2);
    let digests = match opts.check {
        FileCheck::Before => {
            let d = super::assemble::fetch_and_assemble(
                store, source, partial, &list, &batches, progress, opts,
            )?;
            check_digests(&list, expect, &d)?;
            d
        }
        FileCheck::Later => {
            super::fetch::fetch_only(store, source, partial, &batches, progress, opts)?;
            check_list(&list, expect)?;
            FileDigests {
                size: list.size,
                sha1: list.sha1,
                md5: list.md5,
                blake3: list.file_id,
            }
        }
    };
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
/// the others (each distinct chunk once, with its place in the list).
fn claim_present(
    store: &Store,
    list: &ChunkList,
    partial: &PartialId,
    progress: &Progress,
) -> Result<Vec<(u32, format::ListEntry)>> {
    let mut distinct: Vec<(u32, &format::ListEntry)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in list.entries.iter().enumerate() {
        if seen.insert(e.id) {
            distinct.push((i as u32, e));
        }
    }
    let mut missing = Vec::new();
    for group in distinct.chunks(CLAIM_GROUP) {
        let ids: Vec<ChunkId> = group.iter().map(|(_, e)| e.id).collect();
        let have = store.claim_present(partial, &ids)?;
        for ((i, e), has) in group.iter().zip(have) {
            if has {
                progress
                    .bytes_local
                    .fetch_add(u64::from(e.raw_len), Ordering::Relaxed);
                progress.chunks_local.fetch_add(1, Ordering::Relaxed);
            } else {
                missing.push((*i, **e));
            }
        }
    }
    progress.bytes_to_fetch.fetch_add(
        missing.iter().map(|(_, e)| u64::from(e.raw_len)).sum(),
        Ordering::Relaxed,
    );
    progress
        .chunks_to_fetch
        .fetch_add(missing.len() as u64, Ordering::Relaxed);
    Ok(missing)
}

/// What one fetch request never splits: a missing chunk, or the chunks
/// of a run of the list (transfer version 2) that are all missing, which
/// the source sends as one group record of `record_bytes`.
#[derive(Debug)]
struct Unit {
    entries: Vec<format::ListEntry>,
    record_bytes: u64,
}

/// The missing entries (in list order, with their places) as units.
fn units_of(missing: Vec<(u32, format::ListEntry)>, runs: &[format::GroupRun]) -> Vec<Unit> {
    let run_at: HashMap<u32, &format::GroupRun> = runs.iter().map(|r| (r.first, r)).collect();
    let mut units = Vec::with_capacity(missing.len());
    let mut i = 0;
    while let Some(&(at, e)) = missing.get(i) {
        let whole = run_at.get(&at).and_then(|r| {
            let these = missing.get(i..i + r.count as usize)?;
            let all = these
                .iter()
                .zip(at..)
                .all(|((place, _), want)| *place == want);
            all.then_some((these, r.record_len))
        });
        if let Some((these, record_len)) = whole {
            units.push(Unit {
                entries: these.iter().map(|(_, e)| *e).collect(),
                record_bytes: u64::from(record_len),
            });
            i += these.len();
        } else {
            units.push(Unit {
                entries: vec![e],
                record_bytes: u64::from(e.record_len),
            });
            i += 1;
        }
    }
    units
}

/// Fetch requests of at most `batch_bytes` of records, `chunk_bytes` of
/// chunks (a batch of highly compressible chunks is small on the wire and
/// large in memory) and [`MAX_IDS_PER_FETCH`] ids, in list order, units
/// kept whole.
fn batches_of(units: Vec<Unit>, batch_bytes: u64, chunk_bytes: u64) -> Vec<Vec<format::ListEntry>> {
    let mut batches: Vec<Vec<format::ListEntry>> = Vec::new();
    let mut cur = Vec::new();
    let (mut cur_records, mut cur_chunks) = (0u64, 0u64);
    for u in units {
        let chunks: u64 = u.entries.iter().map(|e| u64::from(e.raw_len)).sum();
        if !cur.is_empty()
            && (cur_records + u.record_bytes > batch_bytes
                || cur_chunks + chunks > chunk_bytes
                || cur.len() + u.entries.len() > MAX_IDS_PER_FETCH)
        {
            batches.push(std::mem::take(&mut cur));
            (cur_records, cur_chunks) = (0, 0);
        }
        cur_records += u.record_bytes;
        cur_chunks += chunks;
        cur.extend(u.entries);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// What a copy checked later commits on the list's word: the list must
/// agree with what the manifest says of the file.
fn check_list(list: &ChunkList, expect: &Expect) -> Result<()> {
    if expect.sha1.is_some_and(|s| s != list.sha1) {
        return Err(Error::bad_source(format!(
            "the source's chunk list names SHA-1 {}, the image {}",
            hex::encode(list.sha1),
            hex::encode(expect.sha1.unwrap_or_default())
        )));
    }
    Ok(())
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

    fn alone(entries: Vec<format::ListEntry>) -> Vec<Unit> {
        let places = (0..).zip(entries).collect();
        units_of(places, &[])
    }

    #[test]
    fn a_run_whose_chunks_are_all_missing_is_one_unit_and_never_cut() {
        let run = |first, count| format::GroupRun {
            first,
            count,
            record_len: 700,
        };
        let list: Vec<_> = (0..6).map(|n| entry(n, 1000, 300)).collect();
        // Entries 0..3 and 3..6 are runs; entry 4 is here already.
        let missing: Vec<_> = (0..6u32)
            .filter(|&i| i != 4)
            .map(|i| (i, list[i as usize]))
            .collect();
        let units = units_of(missing, &[run(0, 3), run(3, 3)]);
        let shape: Vec<_> = units
            .iter()
            .map(|u| (u.entries.len(), u.record_bytes))
            .collect();
        assert_eq!(shape, [(3, 700), (1, 300), (1, 300)]);
        // A batch bound below the run's length still takes it whole.
        let b = batches_of(units, 500, 1 << 20);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1, 1]);
    }

    #[test]
    fn batches_are_cut_by_records_and_by_chunk_bytes() {
        // Highly compressible chunks: small on the wire, large in memory.
        let squeezed: Vec<_> = (0..20).map(|n| entry(n, 10_000, 100)).collect();
        let b = batches_of(alone(squeezed), 1 << 20, 64_000);
        assert!(b.len() >= 4, "{}", b.len());
        for batch in &b {
            let chunks: u64 = batch.iter().map(|e| u64::from(e.raw_len)).sum();
            assert!(chunks <= 64_000, "{chunks}");
        }
        // Incompressible ones: the record bytes cut first.
        let raw: Vec<_> = (0..20).map(|n| entry(n, 10_000, 10_040)).collect();
        let b = batches_of(alone(raw), 30_000, 1 << 20);
        assert!(b.iter().all(|x| x.len() <= 2), "{b:?}");
        // One chunk larger than either bound still travels, alone.
        let big = vec![entry(1, 5_000_000, 5_000_040), entry(2, 10, 50)];
        let b = batches_of(alone(big), 30_000, 64_000);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        // Order is kept.
        let ids: Vec<_> = b.iter().flatten().map(|e| e.id).collect();
        assert_eq!(ids, [ChunkId::of(&[1]), ChunkId::of(&[2])]);
    }
}
