//! Opening the segment directory after a restart or a crash: every header
//! checked, the last segment scanned, a torn tail cut, damage within
//! indexed data reported and left untouched.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use super::io::{SegmentFile, SegmentIo};
use super::read::Readers;
use super::scan::scan;
use super::{Active, SegmentSet, SyncState, WRITE_BUFFER, Writer, list_segments, segment_path};
use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, ScanEnd, decode_segment_header};
use crate::id::SegmentId;

/// What opening found in the last segment.
#[derive(Debug, Clone)]
pub struct TailReport {
    pub segment: SegmentId,
    /// Length of the valid prefix (header plus whole records).
    pub valid_len: u64,
    /// File length before any truncation.
    pub file_len: u64,
    /// The first invalid record, if any.
    pub invalid: Option<(u64, String)>,
    /// True when the invalid record lies within indexed data: the segment
    /// was left as it is (no truncation) and sealed.
    pub damaged: bool,
}

/// What a segment's header says about it.
enum Header {
    Ours,
    /// Unreadable or torn.
    Bad,
}

/// Checks a segment's header: ours, damaged, or another store's (an error).
fn check_header(
    file: &dyn SegmentFile,
    len: u64,
    id: SegmentId,
    store_id: &[u8; 16],
) -> Result<Header> {
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let head_ok =
        len >= SEGMENT_HEADER_LEN as u64 && file.file().read_exact_at(&mut head, 0).is_ok();
    match head_ok.then(|| decode_segment_header(&head).ok()).flatten() {
        Some(h) if h.segment_id == id.0 && h.store_id == *store_id => Ok(Header::Ours),
        Some(h) if h.store_id != *store_id => Err(Error::corrupt(
            id,
            0,
            format!(
                "segment belongs to store {}, not this one ({})",
                hex::encode(h.store_id),
                hex::encode(store_id)
            ),
        )),
        _ => Ok(Header::Bad),
    }
}

/// Scans the last segment and cuts a torn tail; damage before
/// `indexed_end` is reported and kept.
fn scan_tail(
    file: &dyn SegmentFile,
    len: u64,
    id: SegmentId,
    indexed_end: impl Fn(SegmentId) -> Result<u64>,
) -> Result<TailReport> {
    let mut tail = TailReport {
        segment: id,
        valid_len: len,
        file_len: len,
        invalid: None,
        damaged: false,
    };
    let end = scan(
        len,
        &|off, buf| file.file().read_exact_at(buf, off),
        &mut |_, _, _| Ok(()),
    )?;
    let ScanEnd::Invalid { offset: at, error } = end else {
        return Ok(tail);
    };
    let needed = indexed_end(id)?;
    tail.valid_len = at;
    if at < needed {
        // Acknowledged data is damaged: keep every byte, write no more to
        // this segment, and report it. Reads of the damaged chunks fail
        // with the location; verify lists them.
        tail.damaged = true;
        tail.invalid = Some((
            at,
            format!(
                "{error}; the index references this segment up to offset {needed}, so this is damage, not a torn tail: nothing was truncated"
            ),
        ));
    } else {
        file.set_len(at)
            .and_then(|()| file.sync())
            .map_err(|e| Error::io(format!("truncating torn tail of segment {id}"), e))?;
        tail.invalid = Some((at, error.to_string()));
    }
    Ok(tail)
}

impl SegmentSet {
    /// Opens the segment directory. `indexed_end(segment)` tells how far the
    /// index references the segment: a bad record before that point is
    /// corruption of acknowledged data (an error), after it a torn tail
    /// (truncated).
    pub fn open(
        dir: &Path,
        io: Box<dyn SegmentIo>,
        store_id: [u8; 16],
        max_segment_bytes: u64,
        reserve_bytes: u64,
        indexed_end: impl Fn(SegmentId) -> Result<u64>,
    ) -> Result<(Self, Option<TailReport>)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ids = list_segments(dir)?;
        let mut report = None;
        let mut active = None;
        let mut next_id = 1;
        for &id in &ids {
            let path = segment_path(dir, id);
            let is_last = Some(&id) == ids.last();
            let file: Arc<dyn SegmentFile> = Arc::from(
                io.open(&path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?,
            );
            let len = file
                .file()
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .len();
            next_id = id.0 + 1;
            if let Header::Bad = check_header(file.as_ref(), len, id, &store_id)? {
                // A header torn while the segment was being created is
                // harmless when nothing was ever indexed in it.
                if !is_last || indexed_end(id)? != 0 {
                    return Err(Error::corrupt(id, 0, "invalid segment header"));
                }
                io.remove(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                io.sync_dir(dir)
                    .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
                report = Some(TailReport {
                    segment: id,
                    valid_len: 0,
                    file_len: len,
                    invalid: Some((0, "torn segment header; file removed".into())),
                    damaged: false,
                });
                continue;
            }
            if !is_last {
                continue;
            }
            let tail = scan_tail(file.as_ref(), len, id, &indexed_end)?;
            if !tail.damaged && tail.valid_len < max_segment_bytes {
                active = Some(Active {
                    id,
                    file,
                    flushed: tail.valid_len,
                    sync_state: SyncState::new(tail.valid_len),
                    buf: Vec::with_capacity(WRITE_BUFFER),
                });
            }
            report = Some(tail);
        }
        let set = SegmentSet {
            dir: dir.to_path_buf(),
            io,
            store_id,
            max_segment_bytes,
            reserve_bytes,
            reserve_lock: Mutex::new(()),
            writer: Mutex::new(Writer {
                active,
                next_id,
                generation: 0,
                broken: None,
                pins: HashMap::new(),
            }),
            readers: RwLock::new(Readers::default()),
            tier: None,
        };
        Ok((set, report))
    }
}
