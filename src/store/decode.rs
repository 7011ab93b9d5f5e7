//! Decoding a chunk from the bytes at its place: a record of its own
//! (checked and decompressed), or a member of a group record (its group
//! decompressed once and the member cut out of it). What `read.rs`'s
//! batches and a transfer's source (`exchange.rs`) share.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::{self, FormatError, RecordHeader};
use crate::id::ChunkId;
use crate::index::{ChunkEntry, ChunkRef};
use crate::segment::Location;

/// A group record decompressed: its table, and its members back to back.
pub(crate) struct Decoded {
    group: format::Group,
    raw: Vec<u8>,
}

/// Decompressed bytes of the groups [`RecentGroups`] keeps.
pub const RECENT_GROUP_BYTES: usize = 16 << 20;

/// The groups decompressed lately for a chunk or a few (not a batch's
/// whole groups, which go straight into its buffer), shared by every
/// reader of the store. A file that repeats a chunk sends its reader back
/// to a group it read moments ago: on v1 of the Debian tree, grouped,
/// 788 repeated chunks made reads decompress 434 groups of about 1 MiB
/// again, a quarter more than the file, for only 143 distinct groups. A
/// location's bytes never change (records are never rewritten in place,
/// segment ids never reused), so the location names what is kept.
#[derive(Default)]
pub(crate) struct RecentGroups {
    held: Mutex<VecDeque<(Location, Arc<Decoded>)>>,
}

impl RecentGroups {
    fn get(&self, loc: Location) -> Option<Arc<Decoded>> {
        let mut held = crate::segment::lock(&self.held);
        let at = held.iter().position(|(l, _)| *l == loc)?;
        let hit = held.remove(at)?;
        let d = Arc::clone(&hit.1);
        held.push_front(hit);
        Some(d)
    }

    fn put(&self, loc: Location, d: Arc<Decoded>) {
        let mut held = crate::segment::lock(&self.held);
        if held.iter().any(|(l, _)| *l == loc) {
            return;
        }
        held.push_front((loc, d));
        let mut bytes: usize = held.iter().map(|(_, d)| d.raw.len()).sum();
        while bytes > RECENT_GROUP_BYTES && held.len() > 1 {
            if let Some((_, gone)) = held.pop_back() {
                bytes -= gone.raw.len();
            }
        }
    }
}

/// The group a reader cuts members from: the chunks of a file that
/// recompression grouped are read one after another, and their group is
/// decompressed once; a group decompressed lately for another reader (or
/// an earlier batch) is taken from the store's [`RecentGroups`].
pub(crate) struct GroupCache {
    at: Option<Location>,
    held: Option<Arc<Decoded>>,
    recent: Arc<RecentGroups>,
}

impl GroupCache {
    pub(crate) fn new(recent: Arc<RecentGroups>) -> Self {
        Self {
            at: None,
            held: None,
            recent,
        }
    }

    /// True when the group held is the one at `loc`.
    pub(super) fn holds(&self, loc: Location) -> bool {
        self.at == Some(loc)
    }

    /// Member `id` of the group record `rec` read from `entry`'s place:
    /// the group's CRCs checked, its length the entry's, its table naming
    /// `id` with the entry's length at the entry's raw offset. `rec` is
    /// not looked at when the group held (or one decompressed lately) is
    /// that place's.
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
            let d = match self.recent.get(loc) {
                Some(d) => d,
                None => {
                    let d = Arc::new(decompress_group(rec, dctx).map_err(corrupt)?);
                    self.recent.put(loc, Arc::clone(&d));
                    d
                }
            };
            self.held = Some(d);
            self.at = Some(loc);
        }
        let Some(d) = self.held.as_ref() else {
            return Err(Error::Internal("a group cache holds no group".into()));
        };
        let m = named(&d.group, id, entry).map_err(corrupt)?;
        let at = m.raw_offset as usize;
        Ok(d.raw.get(at..at + m.raw_len as usize).unwrap_or_default())
    }
}

/// The group record `rec` decoded, its CRCs checked and its length the
/// one its header gives; with its payload.
fn open_group(rec: &[u8]) -> std::result::Result<(format::Group, &[u8]), FormatError> {
    let (group, payload) = format::decode_group(rec)?;
    if group.record_len() != rec.len() as u64 {
        return Err(FormatError::BadLength {
            raw_len: group.header.raw_len,
            stored_len: group.header.stored_len,
        });
    }
    Ok((group, payload))
}

/// The member of `group` that `entry` names as chunk `id`: at the entry's
/// raw offset, with that id and the entry's length.
fn named<'g>(
    group: &'g format::Group,
    id: &ChunkId,
    entry: &ChunkEntry,
) -> std::result::Result<&'g format::GroupMember, FormatError> {
    let raw_offset = entry.member.map_or(u32::MAX, |m| m.raw_offset);
    group
        .member_at(raw_offset)
        .filter(|m| m.id == *id && m.raw_len == entry.raw_len)
        .ok_or(FormatError::BadLength {
            raw_len: entry.raw_len,
            stored_len: raw_offset,
        })
}

/// The group record `rec`, read from `entry`'s place, checked ([`open_group`])
/// and naming chunk `id` where the entry says: what a source checks before
/// it sends a group whole.
pub(crate) fn checked_group(rec: &[u8], id: &ChunkId, entry: &ChunkEntry) -> Result<format::Group> {
    let loc = entry.location;
    let check = || {
        let (group, _) = open_group(rec)?;
        named(&group, id, entry)?;
        Ok(group)
    };
    check().map_err(|e: FormatError| {
        Error::corrupt(loc.segment, loc.offset, format!("chunk {id}: {e}"))
    })
}

/// The group record `rec`, checked ([`open_group`]) and decompressed.
fn decompress_group(
    rec: &[u8],
    dctx: &mut zstd::bulk::Decompressor<'static>,
) -> std::result::Result<Decoded, FormatError> {
    let (group, payload) = open_group(rec)?;
    let mut raw = Vec::with_capacity(group.header.raw_len as usize);
    format::decode_group_payload(&group.header, payload, dctx, &mut raw)?;
    Ok(Decoded { group, raw })
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
    let Ok((g, payload)) = open_group(rec) else {
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
    if !all {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SegmentId;

    fn decoded(n: usize) -> Arc<Decoded> {
        Arc::new(Decoded {
            group: format::Group {
                header: format::GroupHeader {
                    codec: format::Codec::Raw,
                    settled: true,
                    count: 1,
                    raw_len: n as u32,
                    stored_len: n as u32,
                    payload_crc: 0,
                    table_crc: 0,
                },
                members: Vec::new(),
            },
            raw: vec![0; n],
        })
    }

    fn at(offset: u64) -> Location {
        Location {
            segment: SegmentId(1),
            offset,
            len: 100,
        }
    }

    #[test]
    fn recent_groups_keep_the_latest_within_their_bytes() {
        let recent = RecentGroups::default();
        for i in 0..40 {
            recent.put(at(i), decoded(1 << 20));
            // A group in use stays: taking it makes it the latest.
            assert!(recent.get(at(0)).is_some(), "after {i}");
        }
        let held = crate::segment::lock(&recent.held);
        let bytes: usize = held.iter().map(|(_, d)| d.raw.len()).sum();
        assert!(bytes <= RECENT_GROUP_BYTES, "{bytes}");
        assert_eq!(held.len(), RECENT_GROUP_BYTES >> 20);
        drop(held);
        assert!(recent.get(at(39)).is_some());
        assert!(recent.get(at(1)).is_none(), "the oldest went first");
        // One group larger than the whole budget is still kept, alone.
        recent.put(at(99), decoded(RECENT_GROUP_BYTES + 1));
        assert!(recent.get(at(99)).is_some());
        assert_eq!(crate::segment::lock(&recent.held).len(), 1);
    }
}
