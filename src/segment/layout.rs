//! Where a store's objects live in its bucket: every name is made and read
//! back here, and nowhere else.
//!
//! ```text
//! {prefix}{store id}/IMGSTORE                  the data directory's marker
//! {prefix}{store id}/LEASE                     the writer's lease (JSON)
//! {prefix}{store id}/members/{holder}.json     what a cluster member says of itself
//! {prefix}{store id}/segments/{segment}.seg    a sealed segment (12 digits or more)
//! {prefix}{store id}/index/e{epoch}/{file}     the index's backups of one writer's epoch (`meta/N` last)
//! {prefix}{store id}/index/{file}              the same, as stores wrote them before epochs
//! {prefix}CLUSTER                              the store id a cluster's members share
//! ```
//!
//! Backups live under their writer's epoch (`store::lease`), so a writer
//! that lost its lease and does not know it yet writes only where nobody
//! reads: the lease names the one backup that counts (its `index`).
//!
//! The store id is random per data directory (32 lower-case hex digits),
//! so datacenters and daemons can share one bucket and one prefix; a
//! segment id is never reused while its object may exist.

use crate::id::SegmentId;

/// The marker's file name, in the data directory and in the bucket.
pub const MARKER: &str = "IMGSTORE";
const SEGMENTS: &str = "segments/";
const INDEX: &str = "index/";
const SEGMENT_SUFFIX: &str = ".seg";

/// The object names of one store under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLayout {
    /// `{prefix}{store id}/`.
    base: String,
}

impl ObjectLayout {
    /// The store with id `store_id` under `prefix` (empty, or a path
    /// ending in `/`).
    pub fn new(prefix: &str, store_id: &[u8; 16]) -> Self {
        Self::of(prefix, &hex::encode(store_id))
    }

    /// [`new`](Self::new) with the id in hex, as a listing shows it.
    pub fn of(prefix: &str, store_id_hex: &str) -> Self {
        ObjectLayout {
            base: format!("{prefix}{store_id_hex}/"),
        }
    }

    /// The marker object (the data directory's `IMGSTORE`).
    /// Every object of the store starts with this.
    pub fn root(&self) -> &str {
        &self.base
    }

    /// Where cluster member `holder` says who it is (`daemon::cluster`).
    pub fn member(&self, holder: &str) -> String {
        let safe: String = holder
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}members/{safe}.json", self.base)
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.base)
    }

    pub fn marker(&self) -> String {
        format!("{}{MARKER}", self.base)
    }

    /// The writer's lease (`store::lease`).
    pub fn lease(&self) -> String {
        format!("{}LEASE", self.base)
    }

    /// Where the segment objects are (a listing prefix).
    pub fn segments(&self) -> String {
        format!("{}{SEGMENTS}", self.base)
    }

    /// Segment `id`'s object.
    pub fn segment(&self, id: SegmentId) -> String {
        format!("{}{SEGMENTS}{id}{SEGMENT_SUFFIX}", self.base)
    }

    /// The segment an object name is the object of; None for any other
    /// name (not one this store writes: not ours to judge).
    pub fn parse_segment(&self, name: &str) -> Option<SegmentId> {
        let digits = name
            .strip_prefix(&self.base)?
            .strip_prefix(SEGMENTS)?
            .strip_suffix(SEGMENT_SUFFIX)?;
        let id = SegmentId(digits.parse().ok()?);
        // Only the one spelling this layout writes.
        (self.segment(id) == name).then_some(id)
    }

    /// Where the index backups are (a listing prefix).
    pub fn index_prefix(&self) -> String {
        format!("{}{INDEX}", self.base)
    }

    /// The object of index backup file `rel` (a path relative to the
    /// backup directory).
    pub fn index_file(&self, rel: &str) -> String {
        format!("{}{INDEX}{rel}", self.base)
    }

    /// The backup file an index object holds, relative to the backup
    /// directory.
    /// Where the writer of `epoch` keeps its index backups.
    pub fn index_epoch(&self, epoch: u64) -> String {
        format!("{}{INDEX}e{epoch}/", self.base)
    }

    /// The epoch of an epoch's index object, and its path in that epoch's
    /// backup directory.
    pub fn parse_epoch_file<'n>(&self, name: &'n str) -> Option<(u64, &'n str)> {
        let rest = name.strip_prefix(&self.base)?.strip_prefix(INDEX)?;
        let (dir, rel) = rest.split_once('/')?;
        let epoch = dir.strip_prefix('e')?.parse().ok()?;
        (format!("e{epoch}") == dir && !rel.is_empty()).then_some((epoch, rel))
    }

    /// The object a cluster's first member claims for its store id
    /// (create-only): every later member joins that store.
    pub fn cluster_claim(prefix: &str) -> String {
        format!("{prefix}CLUSTER")
    }

    pub fn parse_index_file<'n>(&self, name: &'n str) -> Option<&'n str> {
        if self.parse_epoch_file(name).is_some() {
            return None;
        }
        name.strip_prefix(&self.base)?
            .strip_prefix(INDEX)
            .filter(|rel| !rel.is_empty())
    }

    /// The ids (hex) of the stores whose markers a listing of `prefix`
    /// holds.
    pub fn stores_in<'n>(prefix: &str, names: impl IntoIterator<Item = &'n str>) -> Vec<String> {
        names
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_prefix(prefix)?.strip_suffix(MARKER)?;
                let id = id.strip_suffix('/')?;
                (id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .then(|| id.to_owned())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_what_it_names() {
        let id = [0xab; 16];
        for prefix in ["", "dc1/", "a/b/"] {
            let l = ObjectLayout::new(prefix, &id);
            let base = format!("{prefix}{}/", "ab".repeat(16));
            assert_eq!(l.marker(), format!("{base}IMGSTORE"));
            for seg in [0, 1, 42, 999_999_999_999, u64::MAX] {
                let name = l.segment(SegmentId(seg));
                assert!(name.starts_with(&l.segments()), "{name}");
                assert_eq!(l.parse_segment(&name), Some(SegmentId(seg)), "{name}");
            }
            assert_eq!(
                l.segment(SegmentId(7)),
                format!("{base}segments/000000000007.seg")
            );
            let f = l.index_file("shared_checksum/12_34.sst");
            assert!(f.starts_with(&l.index_prefix()));
            assert_eq!(l.parse_index_file(&f), Some("shared_checksum/12_34.sst"));
            let e = format!("{}meta/3", l.index_epoch(12));
            assert!(e.starts_with(&l.index_prefix()));
            assert_eq!(l.parse_epoch_file(&e), Some((12, "meta/3")));
            assert_eq!(
                l.parse_index_file(&e),
                None,
                "an epoch's file is not a legacy one"
            );
            assert_eq!(l.parse_epoch_file(&f), None);
            assert_eq!(
                ObjectLayout::stores_in(prefix, [l.marker().as_str()]),
                vec!["ab".repeat(16)]
            );
        }
    }

    #[test]
    fn names_of_other_writers_are_not_taken_for_ours() {
        let l = ObjectLayout::new("dc1/", &[1; 16]);
        let other = ObjectLayout::new("dc1/", &[2; 16]);
        for name in [
            other.segment(SegmentId(3)),
            format!("{}7.seg", l.segments()),
            format!("{}000000000007.seg.tmp", l.segments()),
            format!("{}00000000000x.seg", l.segments()),
            l.marker(),
            l.index_file("meta/1"),
        ] {
            assert_eq!(l.parse_segment(&name), None, "{name}");
        }
        assert_eq!(l.parse_index_file(&l.index_prefix()), None);
        assert!(ObjectLayout::stores_in("dc1/", ["dc1/zz/IMGSTORE", "dc1/IMGSTORE"]).is_empty());
    }
}
