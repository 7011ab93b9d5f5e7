//! The values of the engine's column families and their byte layouts
//! (`FORMAT.md`, "Index"): every value starts with its version byte.

use super::BLOCK_ENTRIES;
use crate::id::{ChunkId, SegmentId};
use crate::segment::Location;

const V1: u8 = 1;
const V2: u8 = 2;

/// Where a chunk is stored and how many file references it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// The chunk's record, or the group record it is a member of.
    pub location: Location,
    pub raw_len: u32,
    /// Occurrences of this chunk in all stored files. Zero means garbage
    /// that compaction may drop (unless a writer pins it first).
    pub refcount: u64,
    /// Set when `location` is a group record (`format::Group`).
    pub member: Option<Member>,
}

/// A chunk's place in the group record it is a member of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Where the chunk starts in the group's decompressed payload.
    pub raw_offset: u32,
    /// The record bytes it accounts for (`format::Group::shares`).
    pub share: u32,
}

impl ChunkEntry {
    /// The record bytes this chunk accounts for in its segment's live
    /// bytes: its record's, or its share of its group's.
    pub fn stored_len(&self) -> u32 {
        self.member.map_or(self.location.len, |m| m.share)
    }

    /// What tells this chunk's place apart from every other: its
    /// record's, and within a group its raw offset (`u32::MAX` for a
    /// record of its own).
    pub fn slot(&self) -> (SegmentId, u64, u32) {
        let at = self.member.map_or(u32::MAX, |m| m.raw_offset);
        (self.location.segment, self.location.offset, at)
    }
}

/// A stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub size: u64,
    pub sha1: [u8; 20],
    pub md5: [u8; 16],
    pub chunk_count: u64,
    /// References (puts plus links minus unlinks). At zero the file goes.
    pub refs: u64,
    /// Milliseconds since the Unix epoch when the file first appeared.
    pub created_ms: u64,
}

/// Per-segment accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentEntry {
    /// Bytes of records that index entries with refcount > 0 point at.
    pub live_bytes: u64,
    /// End of the furthest record ever indexed in this segment: a bad record
    /// before it is corruption, after it a torn tail.
    pub indexed_end: u64,
    /// Where the segment's bytes are (the remote tier).
    pub tier: SegmentTier,
}

/// Where a segment's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SegmentTier {
    /// Only in the local file.
    #[default]
    Local,
    /// Uploaded and confirmed: the object holds `len` bytes; a local file,
    /// if any, is cache.
    Remote { len: u64 },
    /// Compacted away while remote at `retired_at` (seconds since the
    /// Unix epoch): its object is deleted once a grace period has passed
    /// (a reader holding an old location never finds it gone) and an index
    /// backup newer than the retirement is in the bucket (a restore never
    /// looks for it).
    Retired { len: u64, retired_at: u64 },
}

/// One chunk reference in a file's chunk list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub raw_len: u32,
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.buf.get(..n)?, self.buf.get(n..)?);
        self.buf = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

impl ChunkEntry {
    /// Version 1 for a record of its own (every entry before groups);
    /// version 2, the same and then the member's raw offset and share, for
    /// a group's member.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41);
        v.push(if self.member.is_some() { V2 } else { V1 });
        v.extend_from_slice(&self.location.segment.0.to_le_bytes());
        v.extend_from_slice(&self.location.offset.to_le_bytes());
        v.extend_from_slice(&self.location.len.to_le_bytes());
        v.extend_from_slice(&self.raw_len.to_le_bytes());
        v.extend_from_slice(&self.refcount.to_le_bytes());
        if let Some(m) = self.member {
            v.extend_from_slice(&m.raw_offset.to_le_bytes());
            v.extend_from_slice(&m.share.to_le_bytes());
        }
        v
    }
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        let mut c = Cursor { buf: b };
        let version = c.u8()?;
        (version == V1 || version == V2).then_some(())?;
        let mut e = ChunkEntry {
            location: Location {
                segment: SegmentId(c.u64()?),
                offset: c.u64()?,
                len: c.u32()?,
            },
            raw_len: c.u32()?,
            refcount: c.u64()?,
            member: None,
        };
        if version == V2 {
            e.member = Some(Member {
                raw_offset: c.u32()?,
                share: c.u32()?,
            });
        }
        c.buf.is_empty().then_some(e)
    }
}

impl FileRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(69);
        v.push(V1);
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&self.sha1);
        v.extend_from_slice(&self.md5);
        v.extend_from_slice(&self.chunk_count.to_le_bytes());
        v.extend_from_slice(&self.refs.to_le_bytes());
        v.extend_from_slice(&self.created_ms.to_le_bytes());
        v
    }
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        let mut c = Cursor { buf: b };
        (c.u8()? == V1).then_some(())?;
        let r = FileRecord {
            size: c.u64()?,
            sha1: c.arr()?,
            md5: c.arr()?,
            chunk_count: c.u64()?,
            refs: c.u64()?,
            created_ms: c.u64()?,
        };
        c.buf.is_empty().then_some(r)
    }
}

impl SegmentEntry {
    /// Version 1 for local segments (what stores without a remote tier
    /// have always written); version 2 adds the tier.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(34);
        v.push(if self.tier == SegmentTier::Local {
            V1
        } else {
            V2
        });
        v.extend_from_slice(&self.live_bytes.to_le_bytes());
        v.extend_from_slice(&self.indexed_end.to_le_bytes());
        let (tag, len, after) = match self.tier {
            SegmentTier::Local => return v,
            SegmentTier::Remote { len } => (1u8, len, 0),
            SegmentTier::Retired { len, retired_at } => (2, len, retired_at),
        };
        v.push(tag);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&after.to_le_bytes());
        v
    }
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        let mut c = Cursor { buf: b };
        let version = c.u8()?;
        (version == V1 || version == V2).then_some(())?;
        let mut s = SegmentEntry {
            live_bytes: c.u64()?,
            indexed_end: c.u64()?,
            tier: SegmentTier::Local,
        };
        if version == V2 {
            let (tag, len, after) = (c.u8()?, c.u64()?, c.u64()?);
            s.tier = match tag {
                0 => SegmentTier::Local,
                1 => SegmentTier::Remote { len },
                2 => SegmentTier::Retired {
                    len,
                    retired_at: after,
                },
                _ => return None,
            };
        }
        c.buf.is_empty().then_some(s)
    }
}

pub(super) fn encode_block(refs: &[ChunkRef]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + refs.len() * 36);
    v.push(V1);
    v.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    for r in refs {
        v.extend_from_slice(r.id.as_bytes());
        v.extend_from_slice(&r.raw_len.to_le_bytes());
    }
    v
}

pub(super) fn decode_block(b: &[u8]) -> Option<Vec<ChunkRef>> {
    let mut c = Cursor { buf: b };
    (c.u8()? == V1).then_some(())?;
    let n = c.u32()? as usize;
    if n > BLOCK_ENTRIES || c.buf.len() != n * 36 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(ChunkRef {
            id: ChunkId(c.arr()?),
            raw_len: c.u32()?,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_reject_garbage() {
        let c = ChunkEntry {
            location: Location {
                segment: SegmentId(3),
                offset: 48,
                len: 100,
            },
            raw_len: 44,
            refcount: 2,
            member: None,
        };
        assert_eq!(c.encode().len(), 33, "a record of its own: version 1");
        assert_eq!(ChunkEntry::decode(&c.encode()), Some(c));
        assert_eq!(ChunkEntry::decode(&c.encode()[1..]), None);
        let m = ChunkEntry {
            member: Some(Member {
                raw_offset: 65536,
                share: 30000,
            }),
            ..c
        };
        assert_eq!(m.encode()[0], V2);
        assert_eq!(ChunkEntry::decode(&m.encode()), Some(m));
        assert_eq!(ChunkEntry::decode(&m.encode()[..37]), None);
        assert_eq!((m.stored_len(), c.stored_len()), (30000, 100));
        let f = FileRecord {
            size: 1,
            sha1: [1; 20],
            md5: [2; 16],
            chunk_count: 1,
            refs: 1,
            created_ms: 5,
        };
        assert_eq!(FileRecord::decode(&f.encode()), Some(f));
        let refs = vec![ChunkRef {
            id: ChunkId([7; 32]),
            raw_len: 9,
        }];
        assert_eq!(decode_block(&encode_block(&refs)), Some(refs));
        assert_eq!(decode_block(&[1, 5, 0, 0, 0]), None);
    }
}
