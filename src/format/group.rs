//! Group records: the adjacent chunks of a segment compressed as one zstd
//! frame, written only by recompression. A chunk on its own starts its
//! frame without context, and chunks of 64 KiB compress worse than the
//! 2 MiB pieces a tool without dedup compresses; a group of about
//! [`GROUP_TARGET_RAW`] gives zstd that context back, and each member
//! keeps its own id, so dedup, refcounts and the chunk protocol are
//! unchanged (see `benches/density.rs` for the measurement).
//!
//! ```text
//! offset  size  field
//! 0       4     magic "IMGG"
//! 4       1     group version (1)
//! 5       1     codec: 0 = raw (the members back to back), 1 = zstd (one frame)
//! 6       2     flags, u16: bit 0 = settled; other bits 0
//! 8       4     member count M, 1 ..= 1024
//! 12      4     raw_len: the members' lengths added up, 1 ..= 16 MiB
//! 16      4     stored_len: payload length, 1 ..= 16 MiB; equal to raw_len when raw
//! 20      4     CRC32 of the payload
//! 24      4     CRC32 of the member table
//! 28      4     CRC32 of bytes 0..28
//! 32      36*M  member table: chunk id (32), raw length u32, in payload order
//! 32+36M  stored_len  payload
//! ```

use super::{Codec, FormatError, MAX_CHUNK_LEN, RECORD_FLAGS, check_head, le_u32};
use crate::id::ChunkId;

/// First bytes of every group record.
pub const GROUP_MAGIC: [u8; 4] = *b"IMGG";
/// Version of the group layout.
pub const GROUP_VERSION: u8 = 1;
/// Length of a group's fixed header (before its member table).
pub const GROUP_HEADER_LEN: usize = 32;
/// Length of one member table entry.
pub const GROUP_MEMBER_LEN: usize = 36;
/// Most members a group may have.
pub const GROUP_MAX_MEMBERS: u32 = 1024;
/// Largest uncompressed group (and payload).
pub const GROUP_MAX_RAW: u32 = MAX_CHUNK_LEN;
/// Uncompressed bytes recompression gathers into one group: 1 MiB stored
/// 0.90 of one frame per chunk at the same level in the density
/// benchmark, 2 MiB 0.87 but with twice the bytes decompressed to read one
/// chunk.
pub const GROUP_TARGET_RAW: u32 = 1 << 20;

/// A group's fixed header, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupHeader {
    pub codec: Codec,
    pub settled: bool,
    pub count: u32,
    pub raw_len: u32,
    pub stored_len: u32,
    pub payload_crc: u32,
    pub table_crc: u32,
}

impl GroupHeader {
    /// Header, table and payload.
    pub fn record_len(&self) -> u64 {
        (GROUP_HEADER_LEN + GROUP_MEMBER_LEN * self.count as usize) as u64
            + u64::from(self.stored_len)
    }

    /// Where the payload starts in the record.
    pub fn payload_at(&self) -> usize {
        GROUP_HEADER_LEN + GROUP_MEMBER_LEN * self.count as usize
    }
}

/// One member of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupMember {
    pub id: ChunkId,
    pub raw_len: u32,
    /// Where the member starts in the decompressed payload.
    pub raw_offset: u32,
}

/// A decoded group: its header and member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub header: GroupHeader,
    pub members: Vec<GroupMember>,
}

impl Group {
    pub fn record_len(&self) -> u64 {
        self.header.record_len()
    }

    /// The member starting at `raw_offset`.
    pub fn member_at(&self, raw_offset: u32) -> Option<&GroupMember> {
        self.members.iter().find(|m| m.raw_offset == raw_offset)
    }

    /// The record bytes each member accounts for (a segment's live bytes
    /// add up the shares of live members): its table entry, plus the
    /// fixed header and payload shared in proportion to raw length, the
    /// rounding left to the last. The shares add up to the record length.
    pub fn shares(&self) -> Vec<u32> {
        let lens: Vec<u32> = self.members.iter().map(|m| m.raw_len).collect();
        shares_of(self.header.stored_len, &lens)
    }
}

/// [`Group::shares`] of a group whose payload is `stored_len` bytes and
/// whose members are `raw_lens` long.
pub fn shares_of(stored_len: u32, raw_lens: &[u32]) -> Vec<u32> {
    let common = (GROUP_HEADER_LEN as u64) + u64::from(stored_len);
    let raw = raw_lens.iter().map(|&l| u64::from(l)).sum::<u64>().max(1);
    let mut left = common + (GROUP_MEMBER_LEN * raw_lens.len()) as u64;
    let mut out = Vec::with_capacity(raw_lens.len());
    for (i, &len) in raw_lens.iter().enumerate() {
        let share = if i + 1 == raw_lens.len() {
            left
        } else {
            GROUP_MEMBER_LEN as u64 + common * u64::from(len) / raw
        };
        left -= share;
        out.push(share as u32);
    }
    out
}

/// Encodes a group's header and member table for `payload`, which holds
/// `members` (id, raw length) back to back, raw or as one zstd frame.
pub fn encode_group_head(
    codec: Codec,
    flags: u16,
    members: &[(ChunkId, u32)],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; GROUP_HEADER_LEN];
    let raw: u32 = members.iter().map(|m| m.1).sum();
    for (id, len) in members {
        b.extend_from_slice(id.as_bytes());
        b.extend_from_slice(&len.to_le_bytes());
    }
    let table_crc = crc32fast::hash(b.get(GROUP_HEADER_LEN..).unwrap_or_default());
    let mut h = [0u8; GROUP_HEADER_LEN];
    h[0..4].copy_from_slice(&GROUP_MAGIC);
    h[4] = GROUP_VERSION;
    h[5] = codec.to_byte();
    h[6..8].copy_from_slice(&(flags & RECORD_FLAGS).to_le_bytes());
    h[8..12].copy_from_slice(&(members.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&raw.to_le_bytes());
    h[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[20..24].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[24..28].copy_from_slice(&table_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    if let Some(head) = b.get_mut(..GROUP_HEADER_LEN) {
        head.copy_from_slice(&h);
    }
    b
}

/// Decodes and checks a group's fixed header (not its table or payload).
pub fn decode_group_header(buf: &[u8]) -> Result<GroupHeader, FormatError> {
    let (h, codec, settled) = check_head(buf, GROUP_HEADER_LEN, GROUP_MAGIC, GROUP_VERSION)?;
    let (count, raw_len, stored_len) = (le_u32(h, 8), le_u32(h, 12), le_u32(h, 16));
    let ok = (1..=GROUP_MAX_MEMBERS).contains(&count)
        && raw_len >= count
        && raw_len <= GROUP_MAX_RAW
        && stored_len > 0
        && stored_len <= GROUP_MAX_RAW
        && (codec != Codec::Raw || stored_len == raw_len);
    if !ok {
        return Err(FormatError::BadLength {
            raw_len,
            stored_len,
        });
    }
    Ok(GroupHeader {
        codec,
        settled,
        count,
        raw_len,
        stored_len,
        payload_crc: le_u32(h, 20),
        table_crc: le_u32(h, 24),
    })
}

/// Decodes the group record at the start of `buf`, checking its three
/// CRCs and that the members' lengths add up. Returns the group and the
/// payload (still compressed when the codec says so).
pub fn decode_group(buf: &[u8]) -> Result<(Group, &[u8]), FormatError> {
    let header = decode_group_header(buf)?;
    let at = header.payload_at();
    let end = at + header.stored_len as usize;
    let truncated = || FormatError::Truncated {
        needed: end as u64,
        available: buf.len() as u64,
    };
    let table = buf.get(GROUP_HEADER_LEN..at).ok_or_else(truncated)?;
    let computed = crc32fast::hash(table);
    if computed != header.table_crc {
        return Err(FormatError::HeaderCrc {
            stored: header.table_crc,
            computed,
        });
    }
    let payload = buf.get(at..end).ok_or_else(truncated)?;
    let computed = crc32fast::hash(payload);
    if computed != header.payload_crc {
        return Err(FormatError::PayloadCrc {
            stored: header.payload_crc,
            computed,
        });
    }
    let mut members = Vec::with_capacity(header.count as usize);
    let mut raw_offset = 0u64;
    for entry in table.chunks_exact(GROUP_MEMBER_LEN) {
        let mut id = [0u8; 32];
        id.copy_from_slice(entry.get(..32).unwrap_or(&[0u8; 32]));
        let raw_len = le_u32(entry, 32);
        if raw_len == 0 || raw_len > MAX_CHUNK_LEN {
            return Err(FormatError::BadLength {
                raw_len,
                stored_len: header.stored_len,
            });
        }
        members.push(GroupMember {
            id: ChunkId(id),
            raw_len,
            raw_offset: raw_offset as u32,
        });
        raw_offset += u64::from(raw_len);
    }
    if raw_offset != u64::from(header.raw_len) {
        return Err(FormatError::BadLength {
            raw_len: header.raw_len,
            stored_len: header.stored_len,
        });
    }
    Ok((Group { header, members }, payload))
}

/// Decompresses a checked group payload, appending its `raw_len` bytes to
/// `out` (the members back to back, in table order).
pub fn decode_group_payload(
    header: &GroupHeader,
    payload: &[u8],
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    super::decompress_into(header.codec, header.raw_len, payload, dctx, out)
}

/// [`decode_group_payload`], then every member hashed against its id:
/// the full check of `verify` and of recompression.
pub fn decode_and_verify_group(
    group: &Group,
    payload: &[u8],
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let start = out.len();
    decode_group_payload(&group.header, payload, dctx, out)?;
    for m in &group.members {
        let at = start + m.raw_offset as usize;
        let bytes = out.get(at..at + m.raw_len as usize).unwrap_or_default();
        let computed = ChunkId::of(bytes);
        if computed != m.id {
            out.truncate(start);
            return Err(FormatError::WrongId {
                stored: m.id,
                computed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RECORD_SETTLED;

    fn group(chunks: &[Vec<u8>], codec: Codec, settled: bool) -> Vec<u8> {
        let raw: Vec<u8> = chunks.concat();
        let payload = match codec {
            Codec::Raw => raw,
            Codec::Zstd => zstd::bulk::compress(&raw, 3).unwrap(),
        };
        let members: Vec<(ChunkId, u32)> = chunks
            .iter()
            .map(|c| (ChunkId::of(c), c.len() as u32))
            .collect();
        let flags = if settled { RECORD_SETTLED } else { 0 };
        [encode_group_head(codec, flags, &members, &payload), payload].concat()
    }

    fn chunks() -> Vec<Vec<u8>> {
        (0..5u8)
            .map(|i| {
                (0..(1000 + 317 * usize::from(i)))
                    .map(|j| (j % 97) as u8 ^ i)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_group_round_trips_and_its_shares_add_up_to_its_length() {
        let cs = chunks();
        for codec in [Codec::Raw, Codec::Zstd] {
            let rec = group(&cs, codec, true);
            let (g, payload) = decode_group(&rec).unwrap();
            assert_eq!(g.record_len() as usize, rec.len());
            assert!(g.header.settled);
            assert_eq!(g.members.len(), cs.len());
            let mut dctx = zstd::bulk::Decompressor::new().unwrap();
            let mut out = Vec::new();
            decode_and_verify_group(&g, payload, &mut dctx, &mut out).unwrap();
            assert_eq!(out, cs.concat());
            let shares = g.shares();
            assert_eq!(
                shares.iter().map(|&s| u64::from(s)).sum::<u64>(),
                g.record_len()
            );
            assert!(shares.iter().all(|&s| s as usize >= GROUP_MEMBER_LEN));
            let third = g.members[2];
            assert_eq!(g.member_at(third.raw_offset), Some(&third));
        }
    }

    #[test]
    fn every_damaged_byte_and_every_cut_of_a_group_is_refused() {
        let rec = group(&chunks(), Codec::Zstd, false);
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x40;
            assert!(decode_group(&bad).is_err(), "byte {i} flipped");
        }
        for n in 0..rec.len() {
            assert!(
                matches!(decode_group(&rec[..n]), Err(FormatError::Truncated { .. })),
                "cut at {n}"
            );
        }
    }

    #[test]
    fn a_member_that_does_not_hash_to_its_id_fails_the_full_check() {
        let cs = chunks();
        let raw = cs.concat();
        let mut members: Vec<(ChunkId, u32)> = cs
            .iter()
            .map(|c| (ChunkId::of(c), c.len() as u32))
            .collect();
        members[3].0 = ChunkId::of(b"another chunk");
        let rec = [encode_group_head(Codec::Raw, 0, &members, &raw), raw].concat();
        let (g, payload) = decode_group(&rec).unwrap();
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            decode_and_verify_group(&g, payload, &mut dctx, &mut out),
            Err(FormatError::WrongId { .. })
        ));
        assert!(out.is_empty());
    }
}
