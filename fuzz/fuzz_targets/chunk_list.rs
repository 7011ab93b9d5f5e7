//! Arbitrary bytes through the transfer protocol's decoders (chunk lists and
//! fetch requests): an error or a value, never a panic; what decodes
//! re-encodes to the same bytes.
#![no_main]

use imgstore::format::{decode_chunk_list, decode_id_list, encode_chunk_list, encode_id_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = decode_chunk_list(data) {
        assert_eq!(encode_chunk_list(&list), data);
    }
    if let Ok(ids) = decode_id_list(data) {
        assert_eq!(encode_id_list(&ids), data);
    }
});
