//! Copying a file from another store as a chunk diff.
//!
//! The receiving side asks a [`ChunkSource`] for the file's chunk list,
//! keeps every chunk it already has (from any file), fetches only the
//! missing ones in batches (several in flight), and checks each record's
//! CRC and BLAKE3 before it appends the record as it came (no
//! recompression) and indexes it. Every verified batch is durable and held
//! for the transfer (see `Txn::claim`), so an interrupted transfer resumes
//! where it stopped: on the next attempt those chunks count as present.
//! As batches arrive the whole file is hashed in order, and its size,
//! SHA-1 and BLAKE3 are checked before the file is committed (its MD5 is
//! taken from the source unless `verify_md5` asks for it to be recomputed).
//!
//! This layer holds both ends of the protocol, transport-agnostic:
//!
//! | module | end |
//! | --- | --- |
//! | [`ChunkSource`] | the contract of a source: a chunk list, records by id |
//! | [`serve`] | the serving end over a local store ([`LocalSource`]), with the cache of which chunks a file may serve |
//! | [`receive`] | the receiving end: diff, claim, verified batches, in-order hashing, commit |
//! | [`progress`] | byte progress, live while a transfer runs |
//!
//! The HTTP layer carries the same two calls between daemons
//! (`src/format/FORMAT.md` describes the bytes).

pub mod progress;
pub mod receive;
pub mod serve;

use std::io::Read;

use crate::error::{Error, Result};
use crate::format::{self, ChunkList, RECORD_HEADER_LEN};
use crate::id::ChunkId;

pub use progress::{Progress, ProgressReport};
pub use receive::{Expect, ReceiveOptions, receive_file, receive_file_with};
pub use serve::{ChunkServer, LocalSource};

/// Most chunk ids one fetch may ask for: the receiver never asks for more
/// and a server refuses more.
pub const MAX_IDS_PER_FETCH: usize = 4096;

/// Where chunks come from.
///
/// Guarantees an implementation must keep (the conformance tests check
/// them): `chunk_list` describes exactly one file; `fetch` yields records
/// in the requested order, each as stored, and errors on ids that are not
/// part of that file. A source may lie or fail; the receiver never trusts it.
pub trait ChunkSource: Send + Sync {
    fn chunk_list(&self) -> Result<ChunkList>;
    /// Calls `out` with the bytes of each requested record.
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
}

/// Splits a stream of back-to-back records into records (header checked;
/// the payload is checked by the caller). A stream that ends inside a
/// record is an error.
pub fn split_records(mut r: impl Read, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        buf.resize(RECORD_HEADER_LEN, 0);
        let mut got = 0;
        while got < RECORD_HEADER_LEN {
            let dst = buf.get_mut(got..).unwrap_or_default();
            match r.read(dst) {
                Ok(0) if got == 0 => return Ok(()),
                Ok(0) => {
                    return Err(Error::bad_source(format!(
                        "chunk stream ended inside a record header ({got} of {RECORD_HEADER_LEN} bytes)"
                    )));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::source_failed("reading the chunk stream", e)),
            }
        }
        let h = format::decode_record_header(&buf)
            .map_err(|e| Error::bad_source(format!("bad record in the chunk stream: {e}")))?;
        buf.resize(RECORD_HEADER_LEN + h.stored_len as usize, 0);
        r.read_exact(buf.get_mut(RECORD_HEADER_LEN..).unwrap_or_default())
            .map_err(|e| {
                Error::source_failed("reading a record payload from the chunk stream", e)
            })?;
        out(&buf)?;
    }
}
