//! How compaction writes the records it keeps: copied as they are, or
//! compressed again and gathered into groups (`format::Group`).
//!
//! - Plain GC ([`Packer`] without a [`Recoder`]) copies every live record
//!   as it is, and a group whose members all live. A group that lost
//!   members is decompressed (each member checked against its id) and its
//!   live members gathered into a new group at the store's ingest level,
//!   not settled: the background pass makes it dense again later. Copying
//!   it whole would keep the dead members' bytes for ever, and make the
//!   segment it lands in look worth compacting again at once.
//! - Recompression (with a [`Recoder`]) decompresses every record (each
//!   chunk checked against its id on the way) and gathers adjacent chunks,
//!   in segment order, into groups of about [`format::GROUP_TARGET_RAW`]
//!   compressed at its level as one frame and marked settled. Adjacent
//!   records of a segment are mostly adjacent chunks of one file (a put
//!   writes its new chunks in order), which reads take together. The
//!   background pass copies settled records and whole settled groups as
//!   they are, so nothing is compressed twice by it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::format::{self, Group, RecordHeader};
use crate::id::{ChunkId, SegmentId};
use crate::index::Member;
use crate::segment::{Location, WriteSession};

/// A record compaction kept: which of the segment's found chunks (by
/// index), where it is now, and its place when in a group.
pub(super) type Copy = (usize, Location, Option<Member>);

/// Compresses chunks again at another level and gathers them into groups
/// (cold segments, which are read often and written never, pay for a
/// slower level once).
pub(super) struct Recoder<'s> {
    /// Copy settled records as they are (the background pass) instead of
    /// compressing them again (an operator's explicit recompression).
    keep_settled: bool,
    /// Mark what it writes settled (false for plain GC's regrouping at
    /// the ingest level).
    settle: bool,
    /// Once set, the next record ends the rewrite with `Error::Stopped`
    /// (a daemon shutting down does not wait for a whole segment).
    stop: Option<&'s AtomicBool>,
    dctx: zstd::bulk::Decompressor<'static>,
    cctx: zstd::bulk::Compressor<'static>,
    /// The chunks gathered for the next group, back to back, and who they
    /// are (found index, id, length).
    raw: Vec<u8>,
    pending: Vec<(usize, ChunkId, u32)>,
    /// A decompressed group being taken apart.
    group_raw: Vec<u8>,
    out: Vec<u8>,
}

impl<'s> Recoder<'s> {
    pub(super) fn new(
        level: i32,
        keep_settled: bool,
        stop: Option<&'s AtomicBool>,
    ) -> Result<Self> {
        Ok(Self {
            keep_settled,
            settle: true,
            stop,
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("creating a zstd context", e))?,
            cctx: zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::io("creating a zstd context", e))?,
            raw: Vec::new(),
            pending: Vec::new(),
            group_raw: Vec::new(),
            out: Vec::new(),
        })
    }

    fn check_stop(&self, seg: SegmentId) -> Result<()> {
        if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(Error::Stopped(format!("rewriting segment {seg}")));
        }
        Ok(())
    }

    /// Makes room for a chunk of `raw_len` bytes: writes what is gathered
    /// when the chunk would take the group past its limits.
    fn room_for(
        &mut self,
        raw_len: u32,
        session: &mut WriteSession<'_>,
        copies: &mut Vec<Copy>,
    ) -> Result<()> {
        let full = self.raw.len() + raw_len as usize > format::GROUP_MAX_RAW as usize
            || self.pending.len() >= format::GROUP_MAX_MEMBERS as usize;
        if full {
            self.flush(session, copies)?;
        }
        Ok(())
    }

    /// Counts the chunk just appended to `raw`; writes the group once it
    /// holds its target.
    fn gathered(
        &mut self,
        found: usize,
        id: ChunkId,
        raw_len: u32,
        session: &mut WriteSession<'_>,
        copies: &mut Vec<Copy>,
    ) -> Result<()> {
        self.pending.push((found, id, raw_len));
        if self.raw.len() >= format::GROUP_TARGET_RAW as usize {
            self.flush(session, copies)?;
        }
        Ok(())
    }

    /// Writes what is gathered: one chunk as a record of its own, more as
    /// a group; zstd unless that saves less than 1/32 (then raw).
    fn flush(&mut self, session: &mut WriteSession<'_>, copies: &mut Vec<Copy>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let flags = if self.settle {
            format::RECORD_SETTLED
        } else {
            0
        };
        let codec = format::compress_payload(&mut self.cctx, &self.raw, &mut self.out)
            .map_err(|e| Error::io("compressing a chunk", e))?;
        match self.pending.as_slice() {
            [] => {}
            [(found, id, raw_len)] => {
                let head =
                    format::encode_record_header_flags(codec, flags, id, *raw_len, &self.out);
                let loc = session.append(&head, &self.out)?;
                copies.push((*found, loc, None));
            }
            members => {
                let table: Vec<(ChunkId, u32)> = members.iter().map(|m| (m.1, m.2)).collect();
                let head = format::encode_group_head(codec, flags, &table, &self.out);
                let loc = session.append(&head, &self.out)?;
                let lens: Vec<u32> = table.iter().map(|m| m.1).collect();
                let shares = format::shares_of(self.out.len() as u32, &lens);
                let mut raw_offset = 0u32;
                for ((found, _, raw_len), share) in members.iter().zip(shares) {
                    copies.push((*found, loc, Some(Member { raw_offset, share })));
                    raw_offset += raw_len;
                }
            }
        }
        self.pending.clear();
        self.raw.clear();
        Ok(())
    }
}

/// Writes the records a compaction keeps (see the module docs).
pub(super) struct Packer<'r, 's> {
    recode: Option<&'r mut Recoder<'s>>,
    /// Plain GC's regrouping of groups that lost members, made when first
    /// needed, at `ingest_level`.
    regroup: Option<Recoder<'s>>,
    ingest_level: i32,
    copies: Vec<Copy>,
}

impl<'r, 's> Packer<'r, 's> {
    pub(super) fn new(recode: Option<&'r mut Recoder<'s>>, ingest_level: i32) -> Self {
        Packer {
            recode,
            regroup: None,
            ingest_level,
            copies: Vec::new(),
        }
    }

    /// Keeps the live record `rec` (found chunk `found`, at `offset`).
    pub(super) fn one(
        &mut self,
        session: &mut WriteSession<'_>,
        found: usize,
        (seg, offset): (SegmentId, u64),
        h: &RecordHeader,
        rec: &[u8],
    ) -> Result<()> {
        let (head, payload) = rec.split_at(rec.len().min(format::RECORD_HEADER_LEN));
        let r = match self.recode.as_deref_mut() {
            Some(r) if !(r.keep_settled && h.settled) => r,
            Some(r) => {
                r.check_stop(seg)?;
                return self.copy_one(session, found, head, payload);
            }
            None => return self.copy_one(session, found, head, payload),
        };
        r.check_stop(seg)?;
        r.room_for(h.raw_len, session, &mut self.copies)?;
        format::decode_and_verify(h, payload, &mut r.dctx, &mut r.raw)
            .map_err(|e| Error::corrupt(seg, offset, format!("chunk {}: {e}", h.chunk_id)))?;
        r.gathered(found, h.chunk_id, h.raw_len, session, &mut self.copies)
    }

    fn copy_one(
        &mut self,
        session: &mut WriteSession<'_>,
        found: usize,
        head: &[u8],
        payload: &[u8],
    ) -> Result<()> {
        let loc = session.append(head, payload)?;
        self.copies.push((found, loc, None));
        Ok(())
    }

    /// Keeps the live members of group `g` (the record `rec` at `offset`,
    /// whose members are found chunks `first..`; `live` says which live).
    pub(super) fn group(
        &mut self,
        session: &mut WriteSession<'_>,
        first: usize,
        (seg, offset): (SegmentId, u64),
        (g, rec): (&Group, &[u8]),
        live: &[bool],
    ) -> Result<()> {
        if !live.iter().any(|&l| l) {
            return Ok(());
        }
        if let Some(r) = self.recode.as_deref() {
            r.check_stop(seg)?;
        }
        let whole = live.iter().all(|&l| l)
            && self
                .recode
                .as_deref()
                .is_none_or(|r| r.keep_settled && g.header.settled);
        if whole {
            let (head, payload) = rec.split_at(rec.len().min(g.header.payload_at()));
            let loc = session.append(head, payload)?;
            for (k, (m, share)) in g.members.iter().zip(g.shares()).enumerate() {
                let member = Member {
                    raw_offset: m.raw_offset,
                    share,
                };
                self.copies.push((first + k, loc, Some(member)));
            }
            return Ok(());
        }
        let r = match self.recode.as_deref_mut() {
            Some(r) => r,
            None => match &mut self.regroup {
                Some(r) => r,
                slot => {
                    let mut r = Recoder::new(self.ingest_level, true, None)?;
                    r.settle = false;
                    slot.insert(r)
                }
            },
        };
        let payload = rec.get(g.header.payload_at()..).unwrap_or_default();
        let mut group_raw = std::mem::take(&mut r.group_raw);
        group_raw.clear();
        let checked = format::decode_and_verify_group(g, payload, &mut r.dctx, &mut group_raw)
            .map_err(|e| {
                Error::corrupt(
                    seg,
                    offset,
                    format!("group of {} chunks: {e}", g.members.len()),
                )
            });
        if checked.is_ok() {
            for (k, m) in g.members.iter().enumerate() {
                if live.get(k) != Some(&true) {
                    continue;
                }
                r.room_for(m.raw_len, session, &mut self.copies)?;
                let at = m.raw_offset as usize;
                let bytes = group_raw
                    .get(at..at + m.raw_len as usize)
                    .unwrap_or_default();
                r.raw.extend_from_slice(bytes);
                r.gathered(first + k, m.id, m.raw_len, session, &mut self.copies)?;
            }
        }
        // The buffer is kept for the next group (lost only on an error).
        r.group_raw = group_raw;
        checked
    }

    /// Writes what is still gathered; every copy made.
    pub(super) fn finish(mut self, session: &mut WriteSession<'_>) -> Result<Vec<Copy>> {
        if let Some(r) = self.recode.as_deref_mut() {
            r.flush(session, &mut self.copies)?;
        }
        if let Some(r) = &mut self.regroup {
            r.flush(session, &mut self.copies)?;
        }
        Ok(self.copies)
    }
}
