//! Arbitrary bytes as the last segment file of a store: opening must cut a
//! torn tail or report corruption, never panic, and what it keeps must scan
//! cleanly.
#![no_main]

use imgstore::SegmentId;
use imgstore::format::{self, SEGMENT_HEADER_LEN, ScanEnd, SegmentHeader, encode_segment_header};
use imgstore::segment::SegmentSet;
use imgstore::segment::io::FsIo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let store_id = [7u8; 16];
    // Half the inputs get a valid header so the fuzzer reaches the records.
    let mut file = Vec::new();
    let (indexed_end, body) = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => {
            file.extend_from_slice(&encode_segment_header(&SegmentHeader {
                segment_id: 1,
                store_id,
            }));
            (u64::from(b >> 1) * 64, rest)
        }
        Some((_, rest)) => (0, rest),
        None => (0, data),
    };
    file.extend_from_slice(body);
    std::fs::write(dir.path().join("000000000001.seg"), &file).unwrap();
    let opened = SegmentSet::open(
        dir.path(),
        Box::new(FsIo),
        store_id,
        1 << 30,
        0,
        |_: SegmentId| Ok(indexed_end),
    );
    if let Ok((_, Some(tail))) = opened {
        let kept = std::fs::read(dir.path().join("000000000001.seg")).unwrap_or_default();
        if tail.damaged {
            // Damage within indexed data is reported, never truncated.
            assert_eq!(kept, file);
        } else if kept.len() >= SEGMENT_HEADER_LEN {
            assert_eq!(kept.len() as u64, tail.valid_len);
            assert_eq!(
                format::scan_records(&kept[SEGMENT_HEADER_LEN..], |_, _| {}),
                ScanEnd::Clean
            );
        }
    }
});
