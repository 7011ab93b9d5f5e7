//! `verify`: recompute what the index should say from ground truth and check
//! every stored byte.
//!
//! Ground truth is the file records (for refcounts) and the segment files
//! (for chunk data). Every record of every segment is decoded and its CRCs
//! checked; every indexed chunk is decompressed and hashed against its id.
//! Wrong refcounts and segment accounting can be repaired; a missing or
//! damaged chunk that a file needs cannot, and is reported with its place.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{SegmentDeltas, Store};
use crate::error::Result;
use crate::format::{self, SEGMENT_HEADER_LEN, ScanEnd};
use crate::id::{ChunkId, SegmentId};
use crate::index::{Batch, ChunkEntry, SegmentEntry};
use crate::segment::lock;

/// One thing `verify` found wrong.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// A stable short name: `corrupt_record`, `missing_chunk`,
    /// `bad_chunk`, `wrong_refcount`, `wrong_segment_accounting`,
    /// `bad_file_list`, `missing_segment`, `missing_object` (a remote
    /// segment's object, read from the bucket), `bad_object` (the bucket's
    /// copy of a segment that also has a cached copy).
    pub kind: std::borrow::Cow<'static, str>,
    pub detail: String,
    pub repairable: bool,
    pub repaired: bool,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct VerifyReport {
    pub files: u64,
    pub chunks: u64,
    pub segments: u64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// Remote segments left out of a sampled verify: their objects'
    /// existence and length were checked, not their records.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remote_segments_not_read: u64,
    pub problems: Vec<Problem>,
    /// Files that hold a damaged or missing chunk: what the damage costs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_files: Vec<crate::id::FileId>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl VerifyReport {
    /// True when nothing is wrong (or everything wrong was repaired).
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.repaired)
    }

    fn problem(&mut self, kind: &'static str, detail: String, repairable: bool) {
        self.problems.push(Problem {
            kind: kind.into(),
            detail,
            repairable,
            repaired: false,
        });
    }
}

/// A chunk's place: segment, record offset, raw offset in a group
/// (`u32::MAX` for a record of its own).
type Slot = (SegmentId, u64, u32);

/// What the steps of a verify learn and hand to the next.
struct Verify<'a> {
    store: &'a Store,
    report: VerifyReport,
    /// Refcounts as the file records and transfers say they should be.
    expected: HashMap<ChunkId, u64>,
    /// Every chunk entry of the index.
    entries: Vec<(ChunkId, ChunkEntry)>,
    /// Where the index says each chunk's record is (`ChunkEntry::slot`:
    /// segment, offset, raw offset in a group), and the record's length.
    wanted_at: BTreeMap<Slot, (ChunkId, u32)>,
    /// Chunks found valid where the index wants them.
    found: HashSet<Slot>,
    /// Segment accounting computed from the entries.
    live: HashMap<SegmentId, SegmentEntry>,
    /// Chunks whose data is damaged or gone.
    damaged: HashSet<ChunkId>,
    /// Chunks whose record was found and reported damaged (step 3).
    bad_records: HashSet<ChunkId>,
    fixes: Batch<'a>,
    /// The share of remote segments without a local copy whose records
    /// are read (1: all), and the seed that picks them.
    sample: (f64, u64),
    /// Segments whose records were all read and found sound.
    sound: HashSet<SegmentId>,
}

/// What a verify checks beyond every local record and refcount.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Fix what can be fixed: refcounts, segment accounting, and a bucket
    /// object that is missing or damaged while its cached copy is sound
    /// (uploaded again).
    pub repair: bool,
    /// The share (0 to 1) of the bucket's objects whose bytes are read:
    /// those of remote segments without a local copy record by record,
    /// those with one compared with it. The other objects are checked by
    /// existence and length.
    pub sample: f64,
    /// Read the bytes of the bucket's objects that have a cached copy (at
    /// `sample`), not only their length: a cached copy says nothing of
    /// the object a restore would read.
    pub read_objects: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            repair: false,
            sample: 1.0,
            read_objects: false,
        }
    }
}

impl Store {
    /// Checks the whole store; with `repair`, fixes what can be fixed.
    /// Holds the commit lock throughout, so writers wait.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        self.verify_with(VerifyOptions {
            repair,
            ..VerifyOptions::default()
        })
    }

    /// [`Store::verify`] that reads the records of only a `share` (0 to 1)
    /// of the remote segments with no local copy, picked at random; of the
    /// others it checks that the object exists with its recorded length
    /// (one HEAD each). Everything local is checked whole.
    pub fn verify_sampled(&self, repair: bool, share: f64) -> Result<VerifyReport> {
        self.verify_with(VerifyOptions {
            repair,
            sample: share,
            read_objects: false,
        })
    }

    /// [`Store::verify`] with every option.
    pub fn verify_with(&self, o: VerifyOptions) -> Result<VerifyReport> {
        let (repair, share) = (o.repair, o.sample);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let _c = lock(&self.inner.commit);
        let mut v = Verify {
            store: self,
            report: VerifyReport::default(),
            expected: HashMap::new(),
            entries: Vec::new(),
            wanted_at: BTreeMap::new(),
            found: HashSet::new(),
            live: HashMap::new(),
            damaged: HashSet::new(),
            bad_records: HashSet::new(),
            fixes: self.inner.index.batch(),
            sample: (share.clamp(0.0, 1.0), seed),
            sound: HashSet::new(),
        };
        v.expected_refcounts()?;
        v.chunk_entries(repair)?;
        v.segment_records()?;
        v.bucket_copies(repair, o.read_objects)?;
        v.unfound_records()?;
        v.damaged_files()?;
        let segs = v.segment_accounting()?;
        let Verify {
            mut report,
            mut fixes,
            ..
        } = v;
        if repair {
            segs.write(&mut fixes)?;
            if !fixes.is_empty() {
                fixes.commit()?;
            }
            for p in &mut report.problems {
                p.repaired = p.repairable;
            }
        }
        Ok(report)
    }
}

impl Verify<'_> {
    /// Step 1: refcounts from the file records (and transfers in progress,
    /// which hold one reference on each chunk they have); each file's chunk
    /// list against its record.
    fn expected_refcounts(&mut self) -> Result<()> {
        let index = &self.store.inner.index;
        let mut files = Vec::new();
        index.for_each_file(|id, rec| {
            files.push((id, rec));
            Ok(())
        })?;
        for (id, rec) in &files {
            self.report.files += 1;
            let (mut size, mut count, mut next) = (0u64, 0u64, 0u64);
            let mut ordered = true;
            let expected = &mut self.expected;
            index.for_each_block(id, |start, refs| {
                ordered &= start == next;
                for r in refs {
                    *expected.entry(r.id).or_insert(0) += 1;
                    size += u64::from(r.raw_len);
                    count += 1;
                }
                next = size;
                Ok(())
            })?;
            if size != rec.size || count != rec.chunk_count || !ordered || rec.refs == 0 {
                self.report.problem(
                    "bad_file_list",
                    format!(
                        "file {id}: record says {} bytes in {} chunks with {} refs, chunk list has {size} bytes in {count} chunks{}",
                        rec.size,
                        rec.chunk_count,
                        rec.refs,
                        if ordered { "" } else { " (blocks out of order)" }
                    ),
                    false,
                );
            }
        }
        for (p, _) in index.partials()? {
            for id in index.partial_chunks(&p)? {
                *self.expected.entry(id).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    /// Step 2: chunk entries against the expected refcounts; the accounting
    /// of segments they imply.
    fn chunk_entries(&mut self, repair: bool) -> Result<()> {
        let mut entries = Vec::new();
        self.store.inner.index.for_each_chunk(|id, e| {
            entries.push((id, e));
            Ok(())
        })?;
        self.report.chunks = entries.len() as u64;
        for (id, e) in &entries {
            let want = self.expected.remove(id).unwrap_or(0);
            if want != e.refcount {
                self.report.problem(
                    "wrong_refcount",
                    format!(
                        "chunk {id}: refcount {} but files reference it {want} times",
                        e.refcount
                    ),
                    true,
                );
                if repair {
                    let mut fixed = *e;
                    fixed.refcount = want;
                    self.fixes.put_chunk(id, &fixed)?;
                }
            }
            let s = self.live.entry(e.location.segment).or_default();
            if want > 0 {
                s.live_bytes += u64::from(e.stored_len());
            }
            s.indexed_end = s
                .indexed_end
                .max(e.location.offset + u64::from(e.location.len));
            self.wanted_at.insert(e.slot(), (*id, e.location.len));
        }
        for (id, n) in std::mem::take(&mut self.expected) {
            self.damaged.insert(id);
            self.report.problem(
                "missing_chunk",
                format!(
                    "chunk {id} is referenced {n} times by files but is not indexed: data lost"
                ),
                false,
            );
        }
        self.entries = entries;
        Ok(())
    }

    /// True when a sampled verify leaves remote segment `seg` unread: its
    /// object is checked by length, and the records the index wants there
    /// count as found.
    fn left_out(&mut self, seg: SegmentId) -> Result<bool> {
        let inner = &*self.store.inner;
        if !inner.segments.is_remote(seg) || inner.segments.is_local(seg) || self.sampled(seg) {
            return Ok(false);
        }
        self.report.remote_segments_not_read += 1;
        match inner.segments.remote_object_len(seg)? {
            Some(len) if Some(len) == inner.segments.remote_len(seg) => {}
            got => self.report.problem(
                "missing_object",
                format!(
                    "segment {seg}: its object holds {got:?} bytes, the index says {:?}",
                    inner.segments.remote_len(seg)
                ),
                false,
            ),
        }
        // The records the index wants in this segment: one range of the
        // ordered map (not a pass over every chunk per segment left out).
        let wanted = self
            .wanted_at
            .range((seg, 0, 0)..=(seg, u64::MAX, u32::MAX))
            .map(|(k, _)| *k);
        self.found.extend(wanted);
        Ok(true)
    }

    /// Step 3: every record of every segment: CRCs, and for indexed chunks
    /// the decompressed bytes against their id.
    fn segment_records(&mut self) -> Result<()> {
        let mut dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| crate::error::Error::io("creating a zstd context", e))?;
        let mut out = Vec::new();
        for seg in self.store.inner.segments.list()? {
            self.report.segments += 1;
            if self.left_out(seg)? {
                continue;
            }
            let before = self.report.problems.len();
            self.segment(seg, &mut dctx, &mut out)?;
            if self.report.problems.len() == before {
                self.sound.insert(seg);
            }
        }
        Ok(())
    }

    /// The records of segment `seg` (step 3).
    fn segment(
        &mut self,
        seg: SegmentId,
        dctx: &mut zstd::bulk::Decompressor<'static>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let inner = &*self.store.inner;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        if let Err(e) = inner.segments.read_at(seg, 0, &mut head) {
            self.report
                .problem("corrupt_record", format!("segment {seg}: {e}"), false);
            return Ok(());
        }
        if let Err(e) = format::decode_segment_header(&head) {
            self.report.problem(
                "corrupt_record",
                format!("segment {seg} header: {e}"),
                false,
            );
            return Ok(());
        }
        let mut bad = Vec::new();
        let mut stretches = Vec::new();
        let (report, wanted_at, found) = (&mut self.report, &self.wanted_at, &mut self.found);
        let mut on_damage = |from: u64, to: u64, why: format::FormatError| {
            stretches.push(format!(
                "segment {seg} from offset {from} to {to} is damaged ({why}); the records after it were checked"
            ));
        };
        let scanned = inner.segments.scan_segment_resync(
            seg,
            &mut |offset, stored, rec| {
                report.records_checked += 1;
                let h = match stored {
                    format::Stored::One(h) => h,
                    format::Stored::Group(g) => {
                        let payload = rec.get(g.header.payload_at()..).unwrap_or_default();
                        let place = (seg, offset, rec.len() as u64);
                        group_members(place, (g, payload), wanted_at, dctx, out, &mut |m, ok| {
                            match ok {
                                Ok(()) => {
                                    report.bytes_checked += u64::from(m.raw_len);
                                    found.insert((seg, offset, m.raw_offset));
                                }
                                Err(e) => bad.push((m.id, format!("segment {seg} at offset {offset}: chunk {} of a group: {e}", m.id))),
                            }
                        });
                        return Ok(());
                    }
                };
                let Some(&(want_id, len)) = wanted_at.get(&(seg, offset, u32::MAX)) else {
                    return Ok(()); // garbage: not referenced by the index
                };
                if want_id != h.chunk_id || u64::from(len) != h.record_len() {
                    return Ok(()); // the index entry points at a different record
                }
                let payload = rec.get(format::RECORD_HEADER_LEN..).unwrap_or_default();
                out.clear();
                match format::decode_and_verify(h, payload, dctx, out) {
                    Ok(()) => {
                        report.bytes_checked += u64::from(h.raw_len);
                        found.insert((seg, offset, u32::MAX));
                    }
                    Err(e) => bad.push((
                        h.chunk_id,
                        format!(
                            "segment {seg} at offset {offset}: chunk {}: {e}",
                            h.chunk_id
                        ),
                    )),
                }
                Ok(())
            },
            &mut on_damage,
        );
        for d in stretches {
            self.report.problem("corrupt_record", d, false);
        }
        for (id, d) in bad {
            self.damaged.insert(id);
            self.bad_records.insert(id);
            self.report.problem("bad_chunk", d, false);
        }
        let end = match scanned {
            Ok(end) => end,
            Err(e) => {
                self.report
                    .problem("corrupt_record", format!("segment {seg}: {e}"), false);
                return Ok(());
            }
        };
        if let ScanEnd::Invalid { offset: at, error } = end {
            // The active segment's tail may be a write in progress.
            let indexed_end = inner.index.segment(seg)?.map_or(0, |e| e.indexed_end);
            if Some(seg) == inner.segments.active_id() && at >= indexed_end {
                return Ok(());
            }
            self.report.problem(
                "corrupt_record",
                format!("segment {seg} at offset {at}: {error}"),
                false,
            );
        }
        Ok(())
    }

    /// Step 3b: the bucket's copy of every remote segment that has a local
    /// copy (step 3 read the local copy, which says nothing of the object
    /// a restore reads): the object exists with its recorded length, and
    /// with `read_objects` (at the sample's share) its bytes are the local
    /// copy's. A missing or damaged object whose local copy was found
    /// sound is repairable: `repair` uploads the local copy again.
    /// Otherwise the chunks it holds count as damaged.
    fn bucket_copies(&mut self, repair: bool, read_objects: bool) -> Result<()> {
        let inner = &*self.store.inner;
        for (seg, len) in inner.segments.remote_segments() {
            if !inner.segments.is_local(seg) {
                continue; // read from the bucket itself in step 3
            }
            let why = match inner.segments.remote_object_len(seg)? {
                None => Some("is missing".to_string()),
                Some(got) if got != len => Some(format!("holds {got} bytes, not {len}")),
                Some(_) if read_objects && self.sampled(seg) => self.object_differs(seg, len)?,
                Some(_) => None,
            };
            let Some(why) = why else {
                continue;
            };
            let sound = self.sound.contains(&seg);
            self.report.problem(
                "bad_object",
                format!(
                    "segment {seg}: its object in the bucket {why}{}",
                    if sound {
                        "; the cached copy is sound"
                    } else {
                        ""
                    }
                ),
                sound,
            );
            if sound && repair {
                inner.segments.upload(seg)?;
            } else {
                // What a restore from the bucket would lose.
                let lost = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.location.segment == seg)
                    .map(|(id, _)| *id);
                self.damaged.extend(lost);
            }
        }
        Ok(())
    }

    /// True when the sample reads segment `seg` (all of them at share 1).
    fn sampled(&self, seg: SegmentId) -> bool {
        let (share, seed) = self.sample;
        if share >= 1.0 {
            return true;
        }
        // splitmix64 of the id and the seed: a fresh sample each run.
        let mut z = seg.0 ^ seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z % 1_000_000) as f64 / 1_000_000.0) < share
    }

    /// How remote segment `seg`'s object differs from its local copy (None:
    /// byte for byte the same).
    fn object_differs(&self, seg: SegmentId, len: u64) -> Result<Option<String>> {
        const PIECE: u64 = 8 << 20;
        let segs = &self.store.inner.segments;
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < len {
            let n = (len - at).min(PIECE) as usize;
            local.resize(n, 0);
            remote.resize(n, 0);
            segs.read_at(seg, at, &mut local)?;
            segs.read_object_at(seg, at, &mut remote)?;
            if let Some(i) = local.iter().zip(&remote).position(|(a, b)| a != b) {
                return Ok(Some(format!(
                    "differs from the cached copy at byte {}",
                    at + i as u64
                )));
            }
            at += n as u64;
        }
        Ok(None)
    }

    /// Indexed chunks whose record was not found valid where the index says.
    fn unfound_records(&mut self) -> Result<()> {
        let on_disk = self.store.inner.segments.list()?;
        for (id, e) in &self.entries {
            let key = e.slot();
            // Found sound, or already reported as a bad record of its own.
            if self.found.contains(&key) || self.bad_records.contains(id) {
                continue;
            }
            self.damaged.insert(*id);
            let kind = if on_disk.contains(&e.location.segment) {
                "bad_chunk"
            } else {
                "missing_segment"
            };
            self.report.problem(
                kind,
                format!(
                    "chunk {id}: no valid record at segment {} offset {} (refcount {})",
                    e.location.segment, e.location.offset, e.refcount
                ),
                false,
            );
        }
        Ok(())
    }

    /// The files that hold a damaged or missing chunk (a second pass over
    /// the chunk lists, only when something is damaged).
    fn damaged_files(&mut self) -> Result<()> {
        if self.damaged.is_empty() {
            return Ok(());
        }
        let index = &self.store.inner.index;
        let mut files = Vec::new();
        index.for_each_file(|id, _| {
            files.push(id);
            Ok(())
        })?;
        for id in files {
            let mut hit = false;
            index.for_each_block(&id, |_, refs| {
                hit |= refs.iter().any(|r| self.damaged.contains(&r.id));
                Ok(())
            })?;
            if hit {
                self.report.damaged_files.push(id);
            }
        }
        Ok(())
    }

    /// Step 4: segment accounting against what the entries imply; the fixes.
    fn segment_accounting(&mut self) -> Result<SegmentDeltas> {
        let mut segs = SegmentDeltas::default();
        for (id, s) in &self.store.inner.index.segments()? {
            let want = self.live.remove(id).unwrap_or_default();
            if want.live_bytes != s.live_bytes || want.indexed_end > s.indexed_end {
                self.report.problem(
                    "wrong_segment_accounting",
                    format!(
                        "segment {id}: {} live bytes recorded, {} computed; indexed end {} recorded, {} computed",
                        s.live_bytes, want.live_bytes, s.indexed_end, want.indexed_end
                    ),
                    true,
                );
                segs.entries.insert(
                    *id,
                    SegmentEntry {
                        live_bytes: want.live_bytes,
                        indexed_end: want.indexed_end.max(s.indexed_end),
                        tier: s.tier,
                    },
                );
            }
        }
        for (id, want) in std::mem::take(&mut self.live) {
            self.report.problem(
                "wrong_segment_accounting",
                format!(
                    "segment {id}: no accounting entry, {} live bytes computed",
                    want.live_bytes
                ),
                true,
            );
            segs.entries.insert(id, want);
        }
        Ok(segs)
    }
}

/// The members of group `g` (its record at `(seg, offset)`, `len` bytes
/// long) that the index wants there, each checked against its id:
/// `each(member, outcome)`. Members nobody wants are garbage and not
/// reported (a group that fails to decompress fails every wanted member).
fn group_members(
    (seg, offset, len): (SegmentId, u64, u64),
    (g, payload): (&format::Group, &[u8]),
    wanted_at: &BTreeMap<Slot, (ChunkId, u32)>,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
    each: &mut dyn FnMut(&format::GroupMember, std::result::Result<(), format::FormatError>),
) {
    let wanted: Vec<&format::GroupMember> = g
        .members
        .iter()
        .filter(|m| {
            wanted_at
                .get(&(seg, offset, m.raw_offset))
                .is_some_and(|&(id, l)| id == m.id && u64::from(l) == len)
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    out.clear();
    if let Err(e) = format::decode_group_payload(&g.header, payload, dctx, out) {
        for m in wanted {
            each(m, Err(e.clone()));
        }
        return;
    }
    for m in wanted {
        let at = m.raw_offset as usize;
        let bytes = out.get(at..at + m.raw_len as usize).unwrap_or_default();
        let computed = ChunkId::of(bytes);
        if computed == m.id {
            each(m, Ok(()));
        } else {
            each(
                m,
                Err(format::FormatError::WrongId {
                    stored: m.id,
                    computed,
                }),
            );
        }
    }
}
