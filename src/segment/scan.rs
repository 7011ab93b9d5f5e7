//! Scanning a whole segment, front to back, through a bounded buffer: what
//! recovery, `verify` and compaction read. A mapping would make every page
//! of a 256 MiB segment resident while it is scanned; this keeps a scan to
//! one window ([`SCAN_WINDOW`], more for a record that does not fit).

use std::io;

use super::SegmentSet;
use crate::error::{Error, Result};
use crate::format::{self, FormatError, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, ScanEnd, Stored};
use crate::id::SegmentId;

/// Bytes read at a time.
pub const SCAN_WINDOW: usize = 8 << 20;

/// What a scan calls for each valid record: its offset in the file, its
/// header (a chunk's own, or a group's with its table), the whole record.
pub type OnRecord<'a> = dyn FnMut(u64, &Stored, &[u8]) -> Result<()> + 'a;

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
    scan_by(SCAN_WINDOW, len, read_at, f, None)
}

/// What a resyncing scan calls for a damaged stretch: from where to
/// where (the next valid record), and why the first record there failed.
pub type OnDamage<'a> = dyn FnMut(u64, u64, FormatError) + 'a;

/// [`scan`] that does not stop at damage: it looks for the next valid
/// record after it (a record magic whose header and payload check) and goes
/// on from there, calling `damaged` for each stretch it skipped. Damage
/// that runs to the end of the file is the scan's end, as in [`scan`].
pub fn scan_resync(
    len: u64,
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    f: &mut OnRecord<'_>,
    damaged: &mut OnDamage<'_>,
) -> Result<ScanEnd> {
    scan_by(SCAN_WINDOW, len, read_at, f, Some(damaged))
}

/// The first place at or after `from` where a record magic (of either
/// kind) starts.
fn next_magic(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(format::RECORD_MAGIC.len())
        .position(|w| w == format::RECORD_MAGIC || w == format::GROUP_MAGIC)
        .map(|p| p + from)
}

fn scan_by(
    window: usize,
    len: u64,
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    f: &mut OnRecord<'_>,
    mut damaged: Option<&mut OnDamage<'_>>,
) -> Result<ScanEnd> {
    let mut buf: Vec<u8> = Vec::new();
    // The file offset of buf[0], and of the first byte not yet read.
    let mut base = SEGMENT_HEADER_LEN as u64;
    let mut read_to = base;
    // A damaged stretch not yet closed by a valid record: where it starts.
    let mut open: Option<(u64, FormatError)> = None;
    loop {
        let mut pos = 0usize;
        let mut stop = None;
        {
            let mut scan_f = |off: u64, h: &Stored| {
                if stop.is_some() {
                    return;
                }
                if let (Some((from, why)), Some(d)) = (open.take(), damaged.as_deref_mut()) {
                    d(from, base + off, why);
                }
                let at = off as usize;
                let rec = buf
                    .get(at..at + h.record_len() as usize)
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
                    if truncated && read_to < len {
                        pos = offset as usize;
                    } else if damaged.is_none() {
                        return Ok(ScanEnd::Invalid {
                            offset: base + offset,
                            error,
                        });
                    } else {
                        // Damage: it starts here unless a stretch is open.
                        if open.is_none() {
                            open = Some((base + offset, error));
                        }
                        match next_magic(&buf, offset as usize + 1) {
                            Some(p) => pos = p,
                            None if read_to < len => {
                                // A magic may straddle the window's end.
                                pos = buf
                                    .len()
                                    .saturating_sub(format::RECORD_MAGIC.len() - 1)
                                    .max(offset as usize + 1);
                            }
                            None => pos = buf.len(),
                        }
                    }
                }
            }
        }
        if read_to >= len && pos >= buf.len() {
            return Ok(match open {
                Some((offset, error)) => ScanEnd::Invalid { offset, error },
                None => ScanEnd::Clean,
            });
        }
        // Keep what is not scanned yet, read the next window after it.
        buf.drain(..pos);
        base += pos as u64;
        if read_to >= len {
            continue; // resync within what was read
        }
        let want = (window as u64).max(buf.len() as u64 * 2).min(len - read_to) as usize;
        let filled = buf.len();
        buf.resize(filled + want, 0);
        read_at(read_to, buf.get_mut(filled..).unwrap_or_default())
            .map_err(|e| Error::io(format!("reading at offset {read_to}"), e))?;
        read_to += want as u64;
    }
}

impl SegmentSet {
    /// [`scan_resync`] over segment `id` as its file is now.
    pub fn scan_segment_resync(
        &self,
        id: SegmentId,
        f: &mut OnRecord<'_>,
        damaged: &mut OnDamage<'_>,
    ) -> Result<ScanEnd> {
        let len = self.file_len(id)?;
        scan_resync(
            len,
            &|off, buf| {
                self.read_at(id, off, buf)
                    .map_err(|e| io::Error::other(e.to_string()))
            },
            f,
            damaged,
        )
    }

    /// The length and settled flag of each record of segment `id`, front
    /// to back, read from their fixed headers alone (each header's own CRC
    /// is checked, no table's or payload's): one small read per record
    /// instead of the whole file, for a census of what a segment holds.
    /// Stops quietly at the first header that does not decode; a scan is
    /// what finds and reports damage.
    pub fn walk_headers(&self, id: SegmentId, f: &mut dyn FnMut(u64, bool)) -> Result<()> {
        let len = self.file_len(id)?;
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut buf = [0u8; RECORD_HEADER_LEN];
        while off + RECORD_HEADER_LEN as u64 <= len {
            self.read_at(id, off, &mut buf)?;
            let Ok((record_len, settled)) = format::stored_summary(&buf) else {
                break;
            };
            f(record_len, settled);
            off += record_len;
        }
        Ok(())
    }

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
            None,
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

    #[test]
    fn a_resyncing_scan_finds_every_record_around_the_damage() {
        let seg = segment(40);
        let all = expected(&seg).0;
        // Damage inside the 10th record's payload, and the 25th's header.
        let mut damaged = seg.clone();
        let tenth = all[9] as usize + RECORD_HEADER_LEN + 1;
        damaged[tenth] ^= 1;
        let hdr25 = all[24] as usize + 9;
        damaged[hdr25] ^= 1;
        for window in [1, 64, 1000, 1 << 20] {
            let mut seen = Vec::new();
            let mut bad = Vec::new();
            let end = scan_by(
                window,
                damaged.len() as u64,
                &|off, buf| {
                    let at = off as usize;
                    buf.copy_from_slice(&damaged[at..at + buf.len()]);
                    Ok(())
                },
                &mut |off, _, _| {
                    seen.push(off);
                    Ok(())
                },
                Some(&mut |from, to, _| bad.push((from, to))),
            )
            .unwrap();
            assert_eq!(end, ScanEnd::Clean, "window {window}");
            let good: Vec<u64> = all
                .iter()
                .copied()
                .filter(|o| *o != all[9] && *o != all[24])
                .collect();
            assert_eq!(seen, good, "window {window}");
            assert_eq!(
                bad,
                [(all[9], all[10]), (all[24], all[25])],
                "window {window}"
            );
        }
        // Damage that runs to the end is the scan's end.
        let torn = &seg[..seg.len() - 5];
        let mut bad = 0;
        let end = scan_by(
            64,
            torn.len() as u64,
            &|off, buf| {
                let at = off as usize;
                buf.copy_from_slice(&torn[at..at + buf.len()]);
                Ok(())
            },
            &mut |_, _, _| Ok(()),
            Some(&mut |_, _, _| bad += 1),
        )
        .unwrap();
        assert!(matches!(end, ScanEnd::Invalid { offset, .. } if offset == all[39]));
        assert_eq!(bad, 0);
    }
}
