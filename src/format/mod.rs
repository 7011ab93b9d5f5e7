//! Pure codecs for the bytes imgstore writes: bytes in, values out; no files,
//! no RocksDB, no threads. The same record is the on-disk unit of a segment
//! and the frame of the chunk stream between datacenters, so this one parser
//! (and its fuzz target) guards both.
//!
#![doc = include_str!("FORMAT.md")]

mod chunk_list;
mod group;

pub use chunk_list::{
    CHUNK_LIST_ENTRY_LEN, CHUNK_LIST_HEADER_LEN, CHUNK_LIST_MAGIC, CHUNK_LIST_RUN_LEN,
    CHUNK_LIST_VERSION, CHUNK_LIST_VERSION_RUNS, ChunkList, GroupRun, ListEntry, decode_chunk_list,
    decode_id_list, encode_chunk_list, encode_id_list,
};

pub use group::{
    GROUP_HEADER_LEN, GROUP_MAGIC, GROUP_MAX_MEMBERS, GROUP_MAX_RAW, GROUP_MEMBER_LEN,
    GROUP_TARGET_RAW, GROUP_VERSION, Group, GroupHeader, GroupMember, decode_and_verify_group,
    decode_group, decode_group_header, decode_group_payload, encode_group_head, shares_of,
};

use crate::id::ChunkId;

/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 56;
/// First bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"IMGC";
/// Version of the record layout.
pub const RECORD_VERSION: u8 = 1;
/// Record flag (bytes 6..8, bit 0): the record was written by
/// recompression at the store's cold level. A background pass copies such
/// a record as it is instead of compressing it again.
pub const RECORD_SETTLED: u16 = 1;
/// Every record flag this version knows; any other bit is refused.
const RECORD_FLAGS: u16 = RECORD_SETTLED;
/// Largest chunk (uncompressed) and largest payload a record may hold.
pub use crate::chunker::MAX_CHUNK_LEN;

/// Length of a segment file header.
pub const SEGMENT_HEADER_LEN: usize = 48;
/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"IMGSTSEG";
/// Version of the segment file layout.
pub const SEGMENT_VERSION: u32 = 1;

/// How a record's payload encodes the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// The payload is the chunk.
    Raw,
    /// The payload is one zstd frame that decompresses to the chunk.
    Zstd,
}

impl Codec {
    pub fn to_byte(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub codec: Codec,
    pub chunk_id: ChunkId,
    /// Uncompressed chunk length.
    pub raw_len: u32,
    /// Payload length as stored.
    pub stored_len: u32,
    /// CRC32 (IEEE) of the payload.
    pub payload_crc: u32,
    /// [`RECORD_SETTLED`]: recompressed already.
    pub settled: bool,
}

impl RecordHeader {
    /// Header plus payload.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

/// Why bytes are not a valid record or segment header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated { needed: u64, available: u64 },
    #[error("bad magic {found:02x?}")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported version {0}")]
    BadVersion(u32),
    #[error("header checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("payload checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    PayloadCrc { stored: u32, computed: u32 },
    #[error("unknown codec {0}")]
    BadCodec(u8),
    #[error("bad lengths: raw {raw_len}, stored {stored_len}")]
    BadLength { raw_len: u32, stored_len: u32 },
    #[error("nonzero reserved field or unknown flag")]
    Reserved,
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("chunk hashes to {computed}, record names {stored}")]
    WrongId { stored: ChunkId, computed: ChunkId },
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

/// Encodes a record header for `payload` (no flags: as ingest writes it).
pub fn encode_record_header(
    codec: Codec,
    chunk_id: &ChunkId,
    raw_len: u32,
    payload: &[u8],
) -> [u8; RECORD_HEADER_LEN] {
    encode_record_header_flags(codec, 0, chunk_id, raw_len, payload)
}

/// Encodes a record header with `flags` ([`RECORD_SETTLED`]).
pub fn encode_record_header_flags(
    codec: Codec,
    flags: u16,
    chunk_id: &ChunkId,
    raw_len: u32,
    payload: &[u8],
) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    let stored_len = payload.len() as u32;
    h[0..4].copy_from_slice(&RECORD_MAGIC);
    h[4] = RECORD_VERSION;
    h[5] = codec.to_byte();
    h[6..8].copy_from_slice(&(flags & RECORD_FLAGS).to_le_bytes());
    h[8..40].copy_from_slice(chunk_id.as_bytes());
    h[40..44].copy_from_slice(&raw_len.to_le_bytes());
    h[44..48].copy_from_slice(&stored_len.to_le_bytes());
    h[48..52].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let crc = crc32fast::hash(&h[0..52]);
    h[52..56].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The checks a record header and a group header share: `len` bytes,
/// `magic` in bytes 0..4, the CRC32 of the bytes before the last four in
/// the last four, `version` in byte 4, a known codec in byte 5 and known
/// flags in bytes 6..8. Returns the header's bytes, its codec and whether
/// it is settled.
fn check_head(
    buf: &[u8],
    len: usize,
    magic: [u8; 4],
    version: u8,
) -> Result<(&[u8], Codec, bool), FormatError> {
    let h = buf.get(..len).ok_or(FormatError::Truncated {
        needed: len as u64,
        available: buf.len() as u64,
    })?;
    let found = h.get(0..4).unwrap_or_default();
    if found != magic {
        return Err(FormatError::BadMagic {
            found: found.to_vec(),
        });
    }
    let stored = le_u32(h, len - 4);
    let computed = crc32fast::hash(h.get(0..len - 4).unwrap_or_default());
    if stored != computed {
        return Err(FormatError::HeaderCrc { stored, computed });
    }
    let v = h.get(4).copied().unwrap_or_default();
    if v != version {
        return Err(FormatError::BadVersion(u32::from(v)));
    }
    let codec_byte = h.get(5).copied().unwrap_or_default();
    let codec = Codec::from_byte(codec_byte).ok_or(FormatError::BadCodec(codec_byte))?;
    let flags = u16::from_le_bytes([
        h.get(6).copied().unwrap_or_default(),
        h.get(7).copied().unwrap_or_default(),
    ]);
    if flags & !RECORD_FLAGS != 0 {
        return Err(FormatError::Reserved);
    }
    Ok((h, codec, flags & RECORD_SETTLED != 0))
}

/// Decodes and checks a record header (not the payload).
pub fn decode_record_header(buf: &[u8]) -> Result<RecordHeader, FormatError> {
    let (h, codec, settled) = check_head(buf, RECORD_HEADER_LEN, RECORD_MAGIC, RECORD_VERSION)?;
    let mut id = [0u8; 32];
    id.copy_from_slice(h.get(8..40).unwrap_or(&[0u8; 32]));
    let raw_len = le_u32(h, 40);
    let stored_len = le_u32(h, 44);
    let lengths_ok = raw_len > 0
        && raw_len <= MAX_CHUNK_LEN
        && stored_len > 0
        && stored_len <= MAX_CHUNK_LEN
        && (codec != Codec::Raw || stored_len == raw_len);
    if !lengths_ok {
        return Err(FormatError::BadLength {
            raw_len,
            stored_len,
        });
    }
    Ok(RecordHeader {
        codec,
        chunk_id: ChunkId(id),
        raw_len,
        stored_len,
        payload_crc: le_u32(h, 48),
        settled,
    })
}

/// Decodes the record at the start of `buf`, checking both CRCs. Returns the
/// header and the payload (still compressed when the codec says so).
pub fn decode_record(buf: &[u8]) -> Result<(RecordHeader, &[u8]), FormatError> {
    let header = decode_record_header(buf)?;
    let end = RECORD_HEADER_LEN + header.stored_len as usize;
    let payload = buf
        .get(RECORD_HEADER_LEN..end)
        .ok_or(FormatError::Truncated {
            needed: end as u64,
            available: buf.len() as u64,
        })?;
    let computed = crc32fast::hash(payload);
    if computed != header.payload_crc {
        return Err(FormatError::PayloadCrc {
            stored: header.payload_crc,
            computed,
        });
    }
    Ok((header, payload))
}

/// Turns a checked payload back into the chunk, appending it to `out`.
/// `dctx` is reused across calls; creating one per chunk is expensive.
pub fn decode_payload(
    header: &RecordHeader,
    payload: &[u8],
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    decompress_into(header.codec, header.raw_len, payload, dctx, out)
}

/// Appends `payload` decoded by `codec` to `out`; it must come to exactly
/// `raw_len` bytes (else `out` is left as it was).
fn decompress_into(
    codec: Codec,
    raw_len: u32,
    payload: &[u8],
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    match codec {
        Codec::Raw => out.extend_from_slice(payload),
        Codec::Zstd => {
            let start = out.len();
            out.reserve(raw_len as usize);
            // Decompress into the spare capacity after `start` (no zero
            // fill first: that memset cost as much as a tenth of a read).
            let mut at = std::io::Cursor::new(&mut *out);
            at.set_position(start as u64);
            let n = dctx.decompress_to_buffer(payload, &mut at);
            if !matches!(n, Ok(n) if n == raw_len as usize) {
                out.truncate(start);
                return Err(match n {
                    Err(e) => FormatError::Decompress(e.to_string()),
                    Ok(_) => FormatError::BadLength {
                        raw_len,
                        stored_len: payload.len() as u32,
                    },
                });
            }
        }
    }
    Ok(())
}

/// Compresses `raw` with `cctx` into `out` (cleared first) and says which
/// codec the record carries: zstd when that saves at least 1/32, else raw
/// (and `out` holds the raw bytes).
pub fn compress_payload(
    cctx: &mut zstd::bulk::Compressor<'_>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<Codec> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    let n = cctx.compress_to_buffer(raw, out)?;
    if n + n / 32 < raw.len() {
        return Ok(Codec::Zstd);
    }
    out.clear();
    out.extend_from_slice(raw);
    Ok(Codec::Raw)
}

/// Decodes the payload and checks that the chunk hashes to its id: the full
/// check used by `verify` and by the receiving side of a transfer.
pub fn decode_and_verify(
    header: &RecordHeader,
    payload: &[u8],
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let start = out.len();
    decode_payload(header, payload, dctx, out)?;
    let computed = ChunkId::of(out.get(start..).unwrap_or_default());
    if computed != header.chunk_id {
        out.truncate(start);
        return Err(FormatError::WrongId {
            stored: header.chunk_id,
            computed,
        });
    }
    Ok(())
}

/// A segment file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: u64,
    pub store_id: [u8; 16],
}

pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    // 12..16 flags, zero
    b[16..24].copy_from_slice(&h.segment_id.to_le_bytes());
    b[24..40].copy_from_slice(&h.store_id);
    // 40..44 reserved, zero
    let crc = crc32fast::hash(&b[0..44]);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, FormatError> {
    let b = buf
        .get(..SEGMENT_HEADER_LEN)
        .ok_or(FormatError::Truncated {
            needed: SEGMENT_HEADER_LEN as u64,
            available: buf.len() as u64,
        })?;
    let magic = b.get(0..8).unwrap_or_default();
    if magic != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let stored = le_u32(b, 44);
    let computed = crc32fast::hash(b.get(0..44).unwrap_or_default());
    if stored != computed {
        return Err(FormatError::HeaderCrc { stored, computed });
    }
    let version = le_u32(b, 8);
    if version != SEGMENT_VERSION {
        return Err(FormatError::BadVersion(version));
    }
    if le_u32(b, 12) != 0 || le_u32(b, 40) != 0 {
        return Err(FormatError::Reserved);
    }
    let mut store_id = [0u8; 16];
    store_id.copy_from_slice(b.get(24..40).unwrap_or(&[0u8; 16]));
    Ok(SegmentHeader {
        segment_id: le_u64(b, 16),
        store_id,
    })
}

/// Where a forward scan of segment bytes stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// A record starting at `offset` is invalid or incomplete.
    Invalid { offset: u64, error: FormatError },
}

/// One record of a segment as a scan finds it: a chunk's own record, or
/// a group of chunks (written by recompression).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    One(RecordHeader),
    Group(Group),
}

impl Stored {
    /// Header, table (a group's) and payload.
    pub fn record_len(&self) -> u64 {
        match self {
            Stored::One(h) => h.record_len(),
            Stored::Group(g) => g.record_len(),
        }
    }
}

/// Decodes the record of either kind at the start of `buf` (told apart
/// by its magic), every CRC checked; returns it and its payload.
pub fn decode_stored(buf: &[u8]) -> Result<(Stored, &[u8]), FormatError> {
    if buf.get(..4) == Some(&GROUP_MAGIC[..]) {
        let (g, payload) = decode_group(buf)?;
        return Ok((Stored::Group(g), payload));
    }
    let (h, payload) = decode_record(buf)?;
    Ok((Stored::One(h), payload))
}

/// The length and the settled flag of the record of either kind at the
/// start of `buf`, from its fixed header alone (its own CRC checked: no
/// table, no payload): what a census of a segment reads.
pub fn stored_summary(buf: &[u8]) -> Result<(u64, bool), FormatError> {
    if buf.get(..4) == Some(&GROUP_MAGIC[..]) {
        let g = decode_group_header(buf)?;
        return Ok((g.record_len(), g.settled));
    }
    let h = decode_record_header(buf)?;
    Ok((h.record_len(), h.settled))
}

/// Walks the records of a segment body (the bytes after the header),
/// calling `f(offset_in_body, record)` for each valid one, and stops at
/// the first invalid one. Pure: recovery and `verify` decide what a stop
/// means.
pub fn scan_records(body: &[u8], mut f: impl FnMut(u64, &Stored)) -> ScanEnd {
    let mut pos = 0usize;
    while pos < body.len() {
        let rest = body.get(pos..).unwrap_or_default();
        match decode_stored(rest) {
            Ok((s, _)) => {
                f(pos as u64, &s);
                pos += s.record_len() as usize;
            }
            Err(error) => {
                return ScanEnd::Invalid {
                    offset: pos as u64,
                    error,
                };
            }
        }
    }
    ScanEnd::Clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(codec: Codec, chunk: &[u8], payload: &[u8]) -> Vec<u8> {
        let id = ChunkId::of(chunk);
        let mut r = encode_record_header(codec, &id, chunk.len() as u32, payload).to_vec();
        r.extend_from_slice(payload);
        r
    }

    fn dctx() -> zstd::bulk::Decompressor<'static> {
        zstd::bulk::Decompressor::new().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn raw_record_round_trips() {
        let chunk = b"some chunk bytes".to_vec();
        let r = record(Codec::Raw, &chunk, &chunk);
        let (h, payload) = decode_record(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.record_len() as usize, r.len());
        let mut out = Vec::new();
        decode_and_verify(&h, payload, &mut dctx(), &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, chunk);
    }

    #[test]
    fn the_settled_flag_round_trips_and_unknown_flags_are_refused() {
        let chunk = b"settled chunk".to_vec();
        let h = encode_record_header_flags(
            Codec::Raw,
            RECORD_SETTLED,
            &ChunkId::of(&chunk),
            chunk.len() as u32,
            &chunk,
        );
        let r = [&h[..], &chunk[..]].concat();
        let (d, _) = decode_record(&r).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.settled);
        let (plain, _) =
            decode_record(&record(Codec::Raw, &chunk, &chunk)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!plain.settled);
        // Any other flag bit, with a valid header CRC, is refused.
        for bit in 1..16 {
            let mut bad = h;
            bad[6..8].copy_from_slice(&(1u16 << bit).to_le_bytes());
            let crc = crc32fast::hash(&bad[0..52]);
            bad[52..56].copy_from_slice(&crc.to_le_bytes());
            let r = [&bad[..], &chunk[..]].concat();
            assert_eq!(
                decode_record(&r).err(),
                Some(FormatError::Reserved),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn zstd_record_round_trips() {
        let chunk = vec![7u8; 10_000];
        let payload = zstd::bulk::compress(&chunk, 1).unwrap_or_else(|e| panic!("{e}"));
        let r = record(Codec::Zstd, &chunk, &payload);
        let (h, p) = decode_record(&r).unwrap_or_else(|e| panic!("{e}"));
        let mut out = b"prefix".to_vec();
        decode_and_verify(&h, p, &mut dctx(), &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&out[6..], &chunk[..]);
    }

    #[test]
    fn every_single_byte_corruption_of_a_record_is_detected() {
        let chunk: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let payload = zstd::bulk::compress(&chunk, 1).unwrap_or_else(|e| panic!("{e}"));
        for (codec, payload) in [(Codec::Raw, chunk.clone()), (Codec::Zstd, payload)] {
            let good = record(codec, &chunk, &payload);
            for i in 0..good.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] ^= flip;
                    let outcome = decode_record(&bad).and_then(|(h, p)| {
                        decode_and_verify(&h, p, &mut dctx(), &mut Vec::new()).map(|_| ())
                    });
                    assert!(
                        outcome.is_err(),
                        "{codec:?}: flip {flip:#x} at byte {i} undetected"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_records_are_reported_as_truncated() {
        let chunk = b"0123456789".to_vec();
        let r = record(Codec::Raw, &chunk, &chunk);
        for n in 0..r.len() {
            assert!(matches!(
                decode_record(&r[..n]),
                Err(FormatError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn a_lying_record_is_caught_by_its_id() {
        let chunk = b"real bytes".to_vec();
        let id = ChunkId::of(b"other bytes");
        let mut r = encode_record_header(Codec::Raw, &id, chunk.len() as u32, &chunk).to_vec();
        r.extend_from_slice(&chunk);
        let (h, p) = decode_record(&r).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            decode_and_verify(&h, p, &mut dctx(), &mut Vec::new()),
            Err(FormatError::WrongId { .. })
        ));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_corruption() {
        let h = SegmentHeader {
            segment_id: 42,
            store_id: [9; 16],
        };
        let b = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&b), Ok(h));
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(decode_segment_header(&bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn scan_stops_at_the_first_bad_record() {
        let a = record(Codec::Raw, b"aaaa", b"aaaa");
        let b = record(Codec::Raw, b"bbbb", b"bbbb");
        let mut body = [a.clone(), b.clone()].concat();
        let mut seen = Vec::new();
        assert_eq!(scan_records(&body, |o, _| seen.push(o)), ScanEnd::Clean);
        assert_eq!(seen, vec![0, a.len() as u64]);
        body.truncate(a.len() + 10);
        match scan_records(&body, |_, _| {}) {
            ScanEnd::Invalid { offset, .. } => assert_eq!(offset, a.len() as u64),
            other => panic!("{other:?}"),
        }
    }
}
