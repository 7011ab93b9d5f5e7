//! Chunk lists (a file's digests and every chunk in order) and fetch
//! requests (chunk ids back to back): the transfer protocol's messages
//! besides the records themselves (`FORMAT.md`).

use super::{FormatError, MAX_CHUNK_LEN, RECORD_HEADER_LEN, le_u32, le_u64};
use crate::id::ChunkId;

/// First bytes of an encoded chunk list.
pub const CHUNK_LIST_MAGIC: [u8; 4] = *b"IMGL";
/// Version of the chunk list layout.
pub const CHUNK_LIST_VERSION: u8 = 1;
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
}

/// Encodes a chunk list: header, entries, CRC32 of everything before it.
pub fn encode_chunk_list(l: &ChunkList) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(CHUNK_LIST_HEADER_LEN + l.entries.len() * CHUNK_LIST_ENTRY_LEN + 4);
    v.extend_from_slice(&CHUNK_LIST_MAGIC);
    v.push(CHUNK_LIST_VERSION);
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
    if version != CHUNK_LIST_VERSION {
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
    if body_len != CHUNK_LIST_HEADER_LEN + count * CHUNK_LIST_ENTRY_LEN {
        return Err(FormatError::Truncated {
            needed: (CHUNK_LIST_HEADER_LEN + count * CHUNK_LIST_ENTRY_LEN + 4) as u64,
            available: b.len() as u64,
        });
    }
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
    })
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
        };
        let b = encode_chunk_list(&l);
        assert_eq!(decode_chunk_list(&b), Ok(l));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(decode_chunk_list(&bad).is_err(), "byte {i}");
        }
        assert!(decode_chunk_list(&b[..b.len() - 1]).is_err());
        let ids = vec![ChunkId([9; 32]), ChunkId([8; 32])];
        assert_eq!(decode_id_list(&encode_id_list(&ids)), Ok(ids));
        assert!(decode_id_list(&[0; 33]).is_err());
    }
}
