//! Chunk lists (a file's digests and every chunk in order) and fetch
//! requests (chunk ids back to back): the transfer protocol's messages
//! besides the records themselves (`FORMAT.md`).

use super::{
    FormatError, GROUP_HEADER_LEN, GROUP_MAX_MEMBERS, GROUP_MAX_RAW, GROUP_MEMBER_LEN,
    MAX_CHUNK_LEN, RECORD_HEADER_LEN, le_u32, le_u64,
};
use crate::id::ChunkId;

/// First bytes of an encoded chunk list.
pub const CHUNK_LIST_MAGIC: [u8; 4] = *b"IMGL";
/// Version of the chunk list layout a receiver of transfer version 1
/// reads: entries only.
pub const CHUNK_LIST_VERSION: u8 = 1;
/// Version 2 (transfer version 2): entries, then the runs of entries
/// that are whole group records.
pub const CHUNK_LIST_VERSION_RUNS: u8 = 2;
/// Bytes per run of a version 2 list.
pub const CHUNK_LIST_RUN_LEN: usize = 12;
/// Fixed part of an encoded chunk list (before the entries).
pub const CHUNK_LIST_HEADER_LEN: usize = 88;
/// Bytes per chunk list entry.
pub const CHUNK_LIST_ENTRY_LEN: usize = 40;

/// One entry of a chunk list: a chunk and the sizes of its stored record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub id: ChunkId,
    pub raw_len: u32,
    /// Length of the whole record (header plus payload) as stored.
    pub record_len: u32,
}

/// A file's chunk list as the transfer protocol sends it: the file's
/// digests, then every chunk in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkList {
    /// BLAKE3 of the whole file (its file id).
    pub file_id: [u8; 32],
    pub size: u64,
    pub sha1: [u8; 20],
    pub md5: [u8; 16],
    pub entries: Vec<ListEntry>,
    /// Version 2 only: the runs of consecutive entries that are every
    /// member of one group record, in its order (the source may send the
    /// group whole when all of them are asked for in one request), in
    /// entry order, not overlapping. `None`: a version 1 list.
    pub runs: Option<Vec<GroupRun>>,
}

/// Entries `first .. first + count` of a chunk list are every member of
/// one group record of `record_len` bytes, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupRun {
    pub first: u32,
    pub count: u32,
    pub record_len: u32,
}

/// Encodes a chunk list: header, entries, CRC32 of everything before it.
pub fn encode_chunk_list(l: &ChunkList) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(CHUNK_LIST_HEADER_LEN + l.entries.len() * CHUNK_LIST_ENTRY_LEN + 4);
    v.extend_from_slice(&CHUNK_LIST_MAGIC);
    v.push(match l.runs {
        None => CHUNK_LIST_VERSION,
        Some(_) => CHUNK_LIST_VERSION_RUNS,
    });
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&l.file_id);
    v.extend_from_slice(&l.size.to_le_bytes());
    v.extend_from_slice(&l.sha1);
    v.extend_from_slice(&l.md5);
    v.extend_from_slice(&(l.entries.len() as u32).to_le_bytes());
    for e in &l.entries {
        v.extend_from_slice(e.id.as_bytes());
        v.extend_from_slice(&e.raw_len.to_le_bytes());
        v.extend_from_slice(&e.record_len.to_le_bytes());
    }
    if let Some(runs) = &l.runs {
        v.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for r in runs {
            v.extend_from_slice(&r.first.to_le_bytes());
            v.extend_from_slice(&r.count.to_le_bytes());
            v.extend_from_slice(&r.record_len.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes and checks a chunk list (CRC, lengths, sizes adding up).
pub fn decode_chunk_list(b: &[u8]) -> Result<ChunkList, FormatError> {
    if b.len() < CHUNK_LIST_HEADER_LEN + 4 {
        return Err(FormatError::Truncated {
            needed: (CHUNK_LIST_HEADER_LEN + 4) as u64,
            available: b.len() as u64,
        });
    }
    let magic = b.get(0..4).unwrap_or_default();
    if magic != CHUNK_LIST_MAGIC {
        return Err(FormatError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let body_len = b.len() - 4;
    let stored = le_u32(b, body_len);
    let computed = crc32fast::hash(b.get(..body_len).unwrap_or_default());
    if stored != computed {
        return Err(FormatError::HeaderCrc { stored, computed });
    }
    let version = b.get(4).copied().unwrap_or_default();
    if version != CHUNK_LIST_VERSION && version != CHUNK_LIST_VERSION_RUNS {
        return Err(FormatError::BadVersion(u32::from(version)));
    }
    if b.get(5..8) != Some(&[0, 0, 0][..]) {
        return Err(FormatError::Reserved);
    }
    let arr = |r: std::ops::Range<usize>| b.get(r).unwrap_or_default();
    let mut file_id = [0u8; 32];
    file_id.copy_from_slice(arr(8..40));
    let size = le_u64(b, 40);
    let mut sha1 = [0u8; 20];
    sha1.copy_from_slice(arr(48..68));
    let mut md5 = [0u8; 16];
    md5.copy_from_slice(arr(68..84));
    let count = le_u32(b, 84) as usize;
    let entries_end = CHUNK_LIST_HEADER_LEN + count * CHUNK_LIST_ENTRY_LEN;
    let truncated = |needed: usize| FormatError::Truncated {
        needed: needed as u64 + 4,
        available: b.len() as u64,
    };
    let runs = if version == CHUNK_LIST_VERSION {
        if body_len != entries_end {
            return Err(truncated(entries_end));
        }
        None
    } else {
        if body_len < entries_end + 4 {
            return Err(truncated(entries_end + 4));
        }
        let n = le_u32(b, entries_end) as usize;
        let end = entries_end + 4 + n * CHUNK_LIST_RUN_LEN;
        if body_len != end {
            return Err(truncated(end));
        }
        Some(decode_runs(b, entries_end + 4, n, count)?)
    };
    let mut entries = Vec::with_capacity(count);
    let mut total = 0u64;
    for i in 0..count {
        let at = CHUNK_LIST_HEADER_LEN + i * CHUNK_LIST_ENTRY_LEN;
        let mut id = [0u8; 32];
        id.copy_from_slice(arr(at..at + 32));
        let raw_len = le_u32(b, at + 32);
        let record_len = le_u32(b, at + 36);
        let ok = raw_len > 0
            && raw_len <= MAX_CHUNK_LEN
            && record_len as usize > RECORD_HEADER_LEN
            && record_len as usize <= RECORD_HEADER_LEN + MAX_CHUNK_LEN as usize;
        if !ok {
            return Err(FormatError::BadLength {
                raw_len,
                stored_len: record_len,
            });
        }
        total += u64::from(raw_len);
        entries.push(ListEntry {
            id: ChunkId(id),
            raw_len,
            record_len,
        });
    }
    if total != size {
        return Err(FormatError::BadLength {
            raw_len: 0,
            stored_len: 0,
        });
    }
    Ok(ChunkList {
        file_id,
        size,
        sha1,
        md5,
        entries,
        runs,
    })
}

/// The `n` runs of a version 2 list at `at`: each of 1 ..= 1024 members
/// within the list's `entries`, after the one before, and long enough to
/// be a group record of that many members.
fn decode_runs(
    b: &[u8],
    at: usize,
    n: usize,
    entries: usize,
) -> Result<Vec<GroupRun>, FormatError> {
    let mut runs = Vec::with_capacity(n);
    let mut next = 0u64;
    for i in 0..n {
        let p = at + i * CHUNK_LIST_RUN_LEN;
        let r = GroupRun {
            first: le_u32(b, p),
            count: le_u32(b, p + 4),
            record_len: le_u32(b, p + 8),
        };
        let table = GROUP_HEADER_LEN as u64 + GROUP_MEMBER_LEN as u64 * u64::from(r.count);
        let end = u64::from(r.first) + u64::from(r.count);
        let ok = (1..=GROUP_MAX_MEMBERS).contains(&r.count)
            && u64::from(r.first) >= next
            && end <= entries as u64
            && u64::from(r.record_len) > table
            && u64::from(r.record_len) <= table + u64::from(GROUP_MAX_RAW);
        if !ok {
            return Err(FormatError::BadLength {
                raw_len: r.count,
                stored_len: r.record_len,
            });
        }
        next = end;
        runs.push(r);
    }
    Ok(runs)
}

/// Encodes a fetch request: chunk ids back to back.
pub fn encode_id_list(ids: &[ChunkId]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.0).collect()
}

/// Decodes a fetch request.
pub fn decode_id_list(b: &[u8]) -> Result<Vec<ChunkId>, FormatError> {
    if !b.len().is_multiple_of(32) {
        return Err(FormatError::Truncated {
            needed: b.len().div_ceil(32) as u64 * 32,
            available: b.len() as u64,
        });
    }
    Ok(b.chunks_exact(32)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            ChunkId(id)
        })
        .collect())
}

#[cfg(test)]
mod list_tests {
    use super::*;

    fn list_with_runs(runs: Vec<GroupRun>) -> Vec<u8> {
        let entry = |n: u8| ListEntry {
            id: ChunkId([n; 32]),
            raw_len: 100,
            record_len: 120,
        };
        encode_chunk_list(&ChunkList {
            file_id: [1; 32],
            size: 400,
            sha1: [2; 20],
            md5: [3; 16],
            entries: (0..4).map(entry).collect(),
            runs: Some(runs),
        })
    }

    #[test]
    fn runs_must_be_in_order_within_the_list_and_long_enough_for_their_group() {
        let run = |first, count, record_len| GroupRun {
            first,
            count,
            record_len,
        };
        assert!(decode_chunk_list(&list_with_runs(vec![])).is_ok());
        assert!(decode_chunk_list(&list_with_runs(vec![run(0, 2, 500), run(2, 2, 500)])).is_ok());
        for bad in [
            vec![run(0, 2, 500), run(1, 2, 500)], // overlapping
            vec![run(2, 2, 500), run(0, 1, 500)], // out of order
            vec![run(3, 2, 500)],                 // past the last entry
            vec![run(0, 0, 500)],                 // empty
            vec![run(0, 2, 104)],                 // shorter than its header and table
        ] {
            assert!(
                decode_chunk_list(&list_with_runs(bad.clone())).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chunk_lists_round_trip_and_reject_every_flipped_byte() {
        let l = ChunkList {
            file_id: [1; 32],
            size: 300,
            sha1: [2; 20],
            md5: [3; 16],
            entries: vec![
                ListEntry {
                    id: ChunkId([4; 32]),
                    raw_len: 100,
                    record_len: 120,
                },
                ListEntry {
                    id: ChunkId([5; 32]),
                    raw_len: 200,
                    record_len: 90,
                },
            ],
            runs: None,
        };
        let v2 = ChunkList {
            runs: Some(vec![GroupRun {
                first: 0,
                count: 2,
                record_len: 200,
            }]),
            ..l.clone()
        };
        for l in [l, v2] {
            let b = encode_chunk_list(&l);
            assert_eq!(decode_chunk_list(&b), Ok(l));
            for i in 0..b.len() {
                let mut bad = b.clone();
                bad[i] ^= 0x40;
                assert!(decode_chunk_list(&bad).is_err(), "byte {i}");
            }
            assert!(decode_chunk_list(&b[..b.len() - 1]).is_err());
        }
        let ids = vec![ChunkId([9; 32]), ChunkId([8; 32])];
        assert_eq!(decode_id_list(&encode_id_list(&ids)), Ok(ids));
        assert!(decode_id_list(&[0; 33]).is_err());
    }
}
