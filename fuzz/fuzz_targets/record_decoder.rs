//! Arbitrary bytes through the record, group and segment-header decoders:
//! they must return an error or a value, never panic, and a record or
//! group that decodes must re-encode to the same bytes.
#![no_main]

use imgstore::format::{
    self, RECORD_HEADER_LEN, RECORD_SETTLED, Stored, decode_record, decode_segment_header,
    encode_group_head, encode_record_header_flags,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_segment_header(data);
    let mut dctx = zstd::bulk::Decompressor::new().unwrap();
    let mut out = Vec::new();
    if let Ok((h, payload)) = decode_record(data) {
        let flags = if h.settled { RECORD_SETTLED } else { 0 };
        let again = encode_record_header_flags(h.codec, flags, &h.chunk_id, h.raw_len, payload);
        assert_eq!(&again[..], &data[..RECORD_HEADER_LEN]);
        let _ = format::decode_and_verify(&h, payload, &mut dctx, &mut out);
    }
    if let Ok((Stored::Group(g), payload)) = format::decode_stored(data) {
        let flags = if g.header.settled { RECORD_SETTLED } else { 0 };
        let members: Vec<_> = g.members.iter().map(|m| (m.id, m.raw_len)).collect();
        let head = encode_group_head(g.header.codec, flags, &members, payload);
        assert_eq!(&head[..], &data[..g.header.payload_at()]);
        let shares: u64 = g.shares().iter().map(|&s| u64::from(s)).sum();
        assert_eq!(shares, g.record_len());
        let _ = format::decode_and_verify_group(&g, payload, &mut dctx, &mut out);
    }
    let _ = format::stored_summary(data);
    let _ = format::scan_records(data, |_, _| {});
});
