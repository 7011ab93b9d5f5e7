//! Copying a file from another store as a chunk diff.
//!
//! The receiving side asks a [`ChunkSource`] for the file's chunk list,
//! keeps every chunk it already has (from any file), fetches only the
//! missing ones in batches (several in flight), and checks each record's
//! CRC and BLAKE3 before it appends the record as it came (no
//! recompression) and indexes it. A source whose chunks recompression
//! grouped sends a group record whole when a batch asks for every member
//! of it (transfer version 2: the list's runs tell the receiver where
//! groups are, so it never cuts one between batches); the receiver checks
//! each member against its id and keeps the group as it came. Every verified batch is durable and held
//! for the transfer (see `Txn::claim`), so an interrupted transfer resumes
//! where it stopped: on the next attempt those chunks count as present.
//! With [`FileCheck::Before`], as batches arrive the whole file is hashed
//! in order, and its size, SHA-1 and BLAKE3 are checked before the file is
//! committed (its MD5 is taken from the source unless `verify_md5` asks for
//! it to be recomputed). With [`FileCheck::Later`] the copy moves and
//! checks only what crosses the link, and the caller checks the whole file
//! afterwards (the daemon's background queue).
//!
//! This layer holds both ends of the protocol, transport-agnostic:
//!
//! | module | end |
//! | --- | --- |
//! | [`ChunkSource`] | the contract of a source: a chunk list, records by id |
//! | [`serve`] | the serving end over a local store ([`LocalSource`]), with the cache of which chunks a file may serve |
//! | [`receive`] | the receiving end: diff, claim, verified batches, commit |
//! | `assemble` | the whole file hashed in list order as batches arrive (a check before the commit) |
//! | [`progress`] | byte progress, live while a transfer runs |
//!
//! The HTTP layer carries the same two calls between daemons
//! (`src/format/FORMAT.md` describes the bytes).

mod assemble;
mod fetch;
pub mod progress;
pub mod receive;
pub mod serve;

use std::io::Read;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{self, ChunkList, GROUP_HEADER_LEN, GROUP_MAGIC, RECORD_HEADER_LEN};
use crate::id::ChunkId;

pub use progress::{Progress, ProgressReport};
pub use receive::{Expect, receive_file, receive_file_with};
pub use serve::{ChunkServer, LocalSource};

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
    /// When the file is checked as a whole.
    pub check: FileCheck,
}

/// When a received file is checked as a whole (its BLAKE3, SHA-1 and MD5
/// over every byte, in order). Every fetched chunk is checked against its
/// id either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileCheck {
    /// Before the file is committed: every chunk, the ones the store had
    /// included, is read and hashed in list order. The copy then costs the
    /// destination a pass over the whole file.
    #[default]
    Before,
    /// After: the chunks the store holds are trusted (each was checked
    /// against its id when stored, and `verify` checks them again), the
    /// list's file id and digests are recorded, and the caller checks the
    /// whole file later (the daemon queues it). The copy then costs what
    /// crosses the link.
    Later,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            // Many small batches in flight: over a link each request's
            // turnaround leaves the link idle unless enough others are on
            // it. Measured with `tools/bench-transfer.sh --rate 1gbit`
            // (Debian v1 then v2, 2 cores): 4 MiB x 3 used 0.80 of the
            // link and the update took 1.29x its floor (wire bytes / rate
            // + 0.5 s); 4 MiB x 8 0.96 and 0.93x, but a peak RSS of 187
            // MiB; 1 MiB x 8 0.96 and 0.88x with 96 MiB (108 before), a
            // resume after kill -9 re-sending 6.7 MB (13.3 before), and
            // the same speed on unlimited loopback (903 vs 916 MB/s).
            batch_bytes: 1 << 20,
            parallel: 8,
            // See `fetch_and_assemble`.
            window_bytes: 32 << 20,
            attempts: 4,
            retry_delay: Duration::from_millis(200),
            verify_md5: false,
            check: FileCheck::Before,
        }
    }
}

/// Most chunk ids one fetch may ask for: the receiver never asks for more
/// and a server refuses more.
pub const MAX_IDS_PER_FETCH: usize = 4096;

/// Where chunks come from.
///
/// Guarantees an implementation must keep (the conformance tests check
/// them): `chunk_list` describes exactly one file; `fetch` yields the
/// records of the requested ids, each as stored, and errors on ids that
/// are not part of that file. A group record may come in place of its
/// members (transfer version 2) only when every one of them was requested,
/// at the place of the first, and a chunk comes once. A source may lie or
/// fail; the receiver never trusts it.
pub trait ChunkSource: Send + Sync {
    fn chunk_list(&self) -> Result<ChunkList>;
    /// Calls `out` with the bytes of each requested record.
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
}

/// Splits a stream of back-to-back records (a chunk's own, or a group
/// record: told apart by their magic) into records, each fixed header
/// checked (the rest is checked by the caller). A stream that ends inside
/// a record is an error.
pub fn split_records(mut r: impl Read, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // The shorter of the two fixed headers first, then the rest of
        // whichever it is.
        if !read_head(&mut r, &mut buf, GROUP_HEADER_LEN, true)? {
            return Ok(());
        }
        let len = if buf.get(..4) == Some(&GROUP_MAGIC[..]) {
            let h = format::decode_group_header(&buf)
                .map_err(|e| Error::bad_source(format!("bad group in the chunk stream: {e}")))?;
            h.record_len()
        } else {
            read_head(&mut r, &mut buf, RECORD_HEADER_LEN, false)?;
            let h = format::decode_record_header(&buf)
                .map_err(|e| Error::bad_source(format!("bad record in the chunk stream: {e}")))?;
            h.record_len()
        };
        let have = buf.len();
        buf.resize(len as usize, 0);
        r.read_exact(buf.get_mut(have..).unwrap_or_default())
            .map_err(|e| Error::source_failed("reading a record from the chunk stream", e))?;
        out(&buf)?;
    }
}

/// Reads `buf` up to `len` bytes; false when the stream ended cleanly
/// before the first byte (only where `may_end`).
fn read_head(r: &mut impl Read, buf: &mut Vec<u8>, len: usize, may_end: bool) -> Result<bool> {
    let mut got = buf.len();
    buf.resize(len, 0);
    while got < len {
        let dst = buf.get_mut(got..).unwrap_or_default();
        match r.read(dst) {
            Ok(0) if got == 0 && may_end => return Ok(false),
            Ok(0) => {
                return Err(Error::bad_source(format!(
                    "chunk stream ended inside a record header ({got} of {len} bytes)"
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::source_failed("reading the chunk stream", e)),
        }
    }
    Ok(true)
}
