//! Arbitrary bytes through the record and segment-header decoders: they
//! must return an error or a value, never panic, and a record that decodes
//! must re-encode to the same bytes.
#![no_main]

use imgstore::format::{
    self, RECORD_HEADER_LEN, RECORD_SETTLED, decode_record, decode_segment_header,
    encode_record_header_flags,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_segment_header(data);
    if let Ok((h, payload)) = decode_record(data) {
        let flags = if h.settled { RECORD_SETTLED } else { 0 };
        let again = encode_record_header_flags(h.codec, flags, &h.chunk_id, h.raw_len, payload);
        assert_eq!(&again[..], &data[..RECORD_HEADER_LEN]);
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::new();
        let _ = format::decode_and_verify(&h, payload, &mut dctx, &mut out);
    }
    let _ = format::scan_records(data, |_, _| {});
});
