//! Scanning a whole segment, front to back, through a bounded buffer: what
//! recovery, `verify` and compaction read. A mapping would make every page
//! of a 256 MiB segment resident while it is scanned; this keeps a scan to
//! one window ([`SCAN_WINDOW`], more for a record that does not fit).

use std::io;

use super::SegmentSet;
use crate::error::{Error, Result};
use crate::format::{
    self, FormatError, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, ScanEnd,
};
use crate::id::SegmentId;

/// Bytes read at a time.
pub const SCAN_WINDOW: usize = 8 << 20;

/// What a scan calls for each valid record: its offset in the file, its
/// header, the whole record.
pub type OnRecord<'a> = dyn FnMut(u64, &RecordHeader, &[u8]) -> Result<()> + 'a;

/// Walks the records of a segment of `len` bytes that `read_at` reads,
/// calling `f(offset, header, record)` for each valid one, and stops at the
/// first invalid one, as [`format::scan_records`] does on a slice. Every
/// offset, also the one in [`ScanEnd::Invalid`], is from the start of the
/// file.
pub fn scan(
    len: u64,
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    f: &mut OnRecord<'_>,
) -> Result<ScanEnd> {
    scan_by(SCAN_WINDOW, len, read_at, f)
}

fn scan_by(
    window: usize,
    len: u64,
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    f: &mut OnRecord<'_>,
) -> Result<ScanEnd> {
    let mut buf: Vec<u8> = Vec::new();
    // The file offset of buf[0], and of the first byte not yet read.
    let mut base = SEGMENT_HEADER_LEN as u64;
    let mut read_to = base;
    loop {
        let mut pos = 0usize;
        let mut stop = None;
        {
            let mut scan_f = |off: u64, h: &RecordHeader| {
                if stop.is_some() {
                    return;
                }
                let at = off as usize;
                let rec = buf
                    .get(at..at + RECORD_HEADER_LEN + h.stored_len as usize)
                    .unwrap_or_default();
                if let Err(e) = f(base + off, h, rec) {
                    stop = Some(e);
                }
                pos = at + rec.len();
            };
            let end = format::scan_records(&buf, &mut scan_f);
            if let Some(e) = stop {
                return Err(e);
            }
            match end {
                ScanEnd::Clean => pos = buf.len(),
                ScanEnd::Invalid { offset, error } => {
                    let truncated = matches!(error, FormatError::Truncated { .. });
                    if !truncated || read_to >= len {
                        return Ok(ScanEnd::Invalid {
                            offset: base + offset,
                            error,
                        });
                    }
                    pos = offset as usize;
                }
            }
        }
        if read_to >= len {
            return Ok(ScanEnd::Clean);
        }
        // Keep the incomplete record, read the next window after it.
        buf.drain(..pos);
        base += pos as u64;
        let want = (window as u64).max(buf.len() as u64 * 2).min(len - read_to) as usize;
        let filled = buf.len();
        buf.resize(filled + want, 0);
        read_at(read_to, buf.get_mut(filled..).unwrap_or_default())
            .map_err(|e| Error::io(format!("reading at offset {read_to}"), e))?;
        read_to += want as u64;
    }
}

impl SegmentSet {
    /// [`scan`] over segment `id` as its file is now.
    pub fn scan_segment(&self, id: SegmentId, f: &mut OnRecord<'_>) -> Result<ScanEnd> {
        let len = self.file_len(id)?;
        scan(
            len,
            &|off, buf| {
                self.read_at(id, off, buf)
                    .map_err(|e| io::Error::other(e.to_string()))
            },
            f,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Codec, encode_record_header};
    use crate::id::ChunkId;

    /// A segment (header then records) with records of varied sizes.
    fn segment(n: usize) -> Vec<u8> {
        let mut seg = vec![0u8; SEGMENT_HEADER_LEN];
        for i in 0..n {
            let chunk = vec![i as u8; 1 + (i * 37) % 300];
            let h =
                encode_record_header(Codec::Raw, &ChunkId::of(&chunk), chunk.len() as u32, &chunk);
            seg.extend_from_slice(&h);
            seg.extend_from_slice(&chunk);
        }
        seg
    }

    fn scan_small(seg: &[u8], window: usize) -> (Vec<u64>, ScanEnd) {
        let mut seen = Vec::new();
        let end = scan_by(
            window,
            seg.len() as u64,
            &|off, buf| {
                let at = off as usize;
                buf.copy_from_slice(&seg[at..at + buf.len()]);
                Ok(())
            },
            &mut |off, _, rec| {
                assert!(format::decode_record(rec).is_ok());
                seen.push(off);
                Ok(())
            },
        )
        .unwrap();
        (seen, end)
    }

    /// What a scan of the whole slice in memory finds, with file offsets.
    fn expected(seg: &[u8]) -> (Vec<u64>, ScanEnd) {
        let mut seen = Vec::new();
        let body = &seg[SEGMENT_HEADER_LEN..];
        let end =
            match format::scan_records(body, |off, _| seen.push(off + SEGMENT_HEADER_LEN as u64)) {
                ScanEnd::Invalid { offset, error } => ScanEnd::Invalid {
                    offset: offset + SEGMENT_HEADER_LEN as u64,
                    error,
                },
                clean => clean,
            };
        (seen, end)
    }

    #[test]
    fn a_windowed_scan_finds_what_a_whole_scan_finds() {
        let seg = segment(40);
        for window in [1, 7, 56, 100, 333, 1 << 20] {
            assert_eq!(scan_small(&seg, window), expected(&seg), "window {window}");
        }
        // A torn tail, and damage in the middle.
        let torn = &seg[..seg.len() - 5];
        let mut damaged = seg.clone();
        damaged[SEGMENT_HEADER_LEN + 1000] ^= 1;
        for window in [1, 64, 1000] {
            assert_eq!(
                scan_small(torn, window),
                expected(torn),
                "torn, window {window}"
            );
            assert_eq!(
                scan_small(&damaged, window),
                expected(&damaged),
                "damaged, window {window}"
            );
        }
    }
}
