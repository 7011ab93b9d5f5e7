//! Decoding a chunk from the bytes at its place: a record of its own
//! (checked and decompressed), or a member of a group record (its group
//! decompressed once and the member cut out of it). What `read.rs`'s
//! batches and a transfer's source (`exchange.rs`) share.

use crate::error::{Error, Result};
use crate::format::{self, FormatError, RecordHeader};
use crate::id::ChunkId;
use crate::index::{ChunkEntry, ChunkRef};
use crate::segment::Location;

/// The last group record a reader decompressed: the chunks of a file
/// that recompression grouped are read one after another, and their
/// group is decompressed once. A location's bytes never change (records
/// are never rewritten in place, segment ids never reused), so the
/// location names what is held.
#[derive(Default)]
pub(crate) struct GroupCache {
    at: Option<Location>,
    group: Option<format::Group>,
    raw: Vec<u8>,
}

impl GroupCache {
    /// True when the group held is the one at `loc`.
    pub(super) fn holds(&self, loc: Location) -> bool {
        self.at == Some(loc)
    }

    /// Member `id` of the group record `rec` read from `entry`'s place:
    /// the group's CRCs checked, its length the entry's, its table naming
    /// `id` with the entry's length at the entry's raw offset. `rec` is
    /// not looked at when the group held is that place's.
    pub(crate) fn member(
        &mut self,
        rec: &[u8],
        id: &ChunkId,
        entry: &ChunkEntry,
        dctx: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<&[u8]> {
        let loc = entry.location;
        let corrupt =
            |e: FormatError| Error::corrupt(loc.segment, loc.offset, format!("chunk {id}: {e}"));
        if self.at != Some(loc) {
            self.at = None;
            let (g, payload) = format::decode_group(rec).map_err(corrupt)?;
            if g.record_len() != rec.len() as u64 {
                return Err(corrupt(FormatError::BadLength {
                    raw_len: g.header.raw_len,
                    stored_len: g.header.stored_len,
                }));
            }
            self.raw.clear();
            format::decode_group_payload(&g.header, payload, dctx, &mut self.raw)
                .map_err(corrupt)?;
            self.group = Some(g);
            self.at = Some(loc);
        }
        let raw_offset = entry.member.map_or(u32::MAX, |m| m.raw_offset);
        let m = self
            .group
            .as_ref()
            .and_then(|g| g.member_at(raw_offset))
            .filter(|m| m.id == *id && m.raw_len == entry.raw_len)
            .ok_or_else(|| {
                corrupt(FormatError::BadLength {
                    raw_len: entry.raw_len,
                    stored_len: raw_offset,
                })
            })?;
        let at = m.raw_offset as usize;
        Ok(self
            .raw
            .get(at..at + m.raw_len as usize)
            .unwrap_or_default())
    }
}

/// When `refs` start with every member of the group record `rec`, in
/// its order (a file read from a group's first chunk: what a batch that
/// starts at a group boundary sees), decompresses the group straight into
/// `out` and returns how many chunks it took; else 0, and nothing read.
pub(super) fn whole_group(
    rec: &[u8],
    refs: &[ChunkRef],
    entries: &[ChunkEntry],
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<usize> {
    let Some(head) = entries.first() else {
        return Ok(0);
    };
    if head.member.is_none_or(|m| m.raw_offset != 0) {
        return Ok(0);
    }
    // A group that does not decode is the slow path's to report.
    let Ok((g, payload)) = format::decode_group(rec) else {
        return Ok(0);
    };
    let n = g.members.len();
    let (Some(refs), Some(entries)) = (refs.get(..n), entries.get(..n)) else {
        return Ok(0);
    };
    let all = g.members.iter().zip(refs).zip(entries).all(|((m, r), e)| {
        m.id == r.id
            && e.location == head.location
            && e.raw_len == m.raw_len
            && e.member.is_some_and(|x| x.raw_offset == m.raw_offset)
    });
    if !all || g.record_len() != rec.len() as u64 {
        return Ok(0);
    }
    let loc = head.location;
    format::decode_group_payload(&g.header, payload, dctx, out).map_err(|e| {
        Error::corrupt(loc.segment, loc.offset, format!("group of {n} chunks: {e}"))
    })?;
    Ok(n)
}

/// Appends chunk `id`, read from `entry`'s place as `rec`, to `out`: a
/// record of its own checked and decoded, a group's member cut out of its
/// decompressed group.
pub(super) fn chunk_bytes(
    rec: &[u8],
    id: &ChunkId,
    entry: &ChunkEntry,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    groups: &mut GroupCache,
    out: &mut Vec<u8>,
) -> Result<()> {
    if entry.member.is_some() {
        out.extend_from_slice(groups.member(rec, id, entry, dctx)?);
        return Ok(());
    }
    let header = checked(rec, id, entry)?;
    let payload = rec.get(format::RECORD_HEADER_LEN..).unwrap_or_default();
    format::decode_payload(&header, payload, dctx, out).map_err(|err| {
        Error::corrupt(
            entry.location.segment,
            entry.location.offset,
            format!("chunk {id}: {err}"),
        )
    })
}

/// Decodes a record read from `entry`'s place and checks that it is that
/// chunk's: CRCs, id, lengths.
pub(crate) fn checked(bytes: &[u8], id: &ChunkId, entry: &ChunkEntry) -> Result<RecordHeader> {
    let loc: Location = entry.location;
    let check = || -> std::result::Result<RecordHeader, FormatError> {
        let (h, _) = format::decode_record(bytes)?;
        if h.chunk_id != *id {
            return Err(FormatError::WrongId {
                stored: *id,
                computed: h.chunk_id,
            });
        }
        if h.raw_len != entry.raw_len || h.record_len() != bytes.len() as u64 {
            return Err(FormatError::BadLength {
                raw_len: h.raw_len,
                stored_len: h.stored_len,
            });
        }
        Ok(h)
    };
    check().map_err(|e| Error::corrupt(loc.segment, loc.offset, format!("chunk {id}: {e}")))
}
