//! The index in the bucket, and a store rebuilt from the bucket alone.
//!
//! Segments reach the bucket by the tier's steps (`store/tier.rs`); the
//! index (chunk locations, files and their chunk lists, segment accounting,
//! and the layers' tables: images, ACLs, settings, jobs) reaches it as
//! RocksDB backups. [`Store::push_index`] takes a backup with RocksDB's
//! backup engine into `index-backup/` beside the index (table files are
//! immutable and shared between backups, so each push copies only what is
//! new) and mirrors that directory to `{prefix}{store id}/index/`: new files
//! first, each backup's `meta/N` (the file that makes it a backup) last,
//! then objects of purged backups deleted, their `meta/N` first. The data
//! directory's marker (its store id) goes to `{prefix}{store id}/IMGSTORE`.
//!
//! With remote durability ([`TierOptions::remote_durability`]), an image's
//! activation first seals and uploads every segment (so its chunks are in
//! the bucket), then commits, then pushes the index (so its chunk lists and
//! manifest are): it returns only when the image can be restored.
//!
//! [`restore`] builds a new data directory from the bucket: the marker, the
//! newest index backup restored as the index, and no segment files (every
//! segment the backup knows as remote is read from the bucket and cached
//! as it is read).
//!
//! [`TierOptions::remote_durability`]: super::TierOptions

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::lease::IndexRef;
use super::{MARKER, META_BACKUP_TAKEN, META_LAST_PUSH, Store};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::segment::backend::ObjectBackend;
use crate::segment::{ObjectLayout, lock};

/// Backups kept (locally and in the bucket); the newest is restored. More
/// than one: a cluster's follower copying the backup the lease points at
/// while the writer publishes more still finds its files.
const KEEP_BACKUPS: usize = 4;
/// ... and every backup taken within this many seconds of the newest: a
/// writer under load publishes several times a second, faster than a
/// follower copies one (the soak saw copies retried for files purged
/// under them).
const KEEP_BACKUPS_WITHIN_S: u64 = 30;
/// Where the backups are staged, beside the index.
const STAGING: &str = "index-backup";
/// Objects are fetched in pieces of this size.
const FETCH_BYTES: u64 = 8 << 20;

/// What one [`Store::push_index`] did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct IndexPush {
    /// Files uploaded, and their bytes.
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Objects of purged backups deleted.
    pub deleted: u64,
}

/// What [`restore`] did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    pub store_id: String,
    pub data_dir: PathBuf,
    /// Index backup files fetched, and their bytes.
    pub index_files: u64,
    pub index_bytes: u64,
    /// Segments the backup named as local that were uploaded after it,
    /// now read from the bucket.
    pub segments_found_in_bucket: u64,
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn files_under(dir: &Path) -> Result<BTreeMap<String, (PathBuf, u64)>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let rd =
            std::fs::read_dir(&d).map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel.to_string_lossy().into_owned();
                // The engine's own temporaries are never part of a backup.
                if !rel.ends_with(".tmp") {
                    out.insert(rel, (path, meta.len()));
                }
            }
        }
    }
    Ok(out)
}

/// A backup's `meta/N` makes it one: uploaded last, deleted first.
fn is_meta(rel: &str) -> bool {
    rel.starts_with("meta/")
}

impl Store {
    /// True when activations wait for the bucket (`durability: "remote"`).
    pub fn remote_durability(&self) -> bool {
        self.inner
            .tier
            .as_ref()
            .is_some_and(|t| t.options.remote_durability)
    }

    /// Makes everything committed before the call durable in the bucket:
    /// every segment uploaded, then the index pushed (what an activation
    /// with remote durability waits for). Calls that overlap share one
    /// publication instead of queueing: a call waits for the one running,
    /// and when that one began after this call's commits it counts for
    /// both, its success and its failure alike (a failed publication that
    /// covered a call fails it without a second try, so no caller waits
    /// for more than the publication running when it came plus one).
    pub fn publish(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let Some(policy) = &self.inner.tier else {
            return Ok(());
        };
        // Taken after the caller's commits: any publication that reads
        // the counter later backs them up.
        let ticket = policy.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut p = lock(&policy.publication);
        if p.done >= ticket {
            return Ok(());
        }
        if let Some((upto, why)) = &p.failed
            && *upto >= ticket
        {
            return Err(Error::remote(
                "publishing to the object store",
                std::io::Error::other(why.clone()),
            ));
        }
        let upto = policy.tickets.load(Ordering::SeqCst);
        match self.upload_all().and_then(|_| self.push_index()) {
            Ok(_) => {
                p.done = upto;
                Ok(())
            }
            Err(e) => {
                p.failed = Some((upto, crate::error::chain(&e)));
                Err(e)
            }
        }
    }

    /// Seals the active segment (also while puts are writing to it: their
    /// records are bytes like any other, and a session's later appends go
    /// to the next segment) and uploads every sealed segment, so every
    /// record committed before the call is in the bucket.
    pub fn upload_all(&self) -> Result<u64> {
        if self.inner.tier.is_none() {
            return Ok(0);
        }
        self.inner.segments.seal_now()?;
        let mut n = 0;
        while self.upload_one()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Backs the index up and mirrors the backups to the bucket (module
    /// docs). One push at a time; a failed push is repeated whole by the
    /// next (what it uploaded is found there by name and length).
    pub fn push_index(&self) -> Result<IndexPush> {
        use std::sync::atomic::Ordering;
        let inner = &*self.inner;
        let (Some(policy), Some((layout, backend))) = (&inner.tier, inner.segments.object_base())
        else {
            return Ok(IndexPush::default());
        };
        self.check_fence()?;
        let mut pushed = lock(&policy.pushed);
        // No renewal first: the backup goes under this writer's epoch,
        // where no other writer writes, and only the conditional renewal
        // at the end makes it count.
        let epoch = self.lease().map_or(0, |l| l.epoch);
        // Nothing committed since the last push under this epoch: the
        // bucket has it all, and followers need no new copy.
        let sequence = policy.pushed_sequence.load(Ordering::SeqCst);
        if sequence == inner.index.sequence()
            && pushed.as_ref().is_some_and(|p| p.epoch == epoch)
            && lock(&policy.published).is_some_and(|p| p.epoch == epoch)
        {
            return Ok(IndexPush::default());
        }
        let staging = inner.dir.join(STAGING);
        // Taken before the backup: a segment retired before this second is
        // absent from it (see `delete_retired`).
        let taken_at = super::unix_now();
        let backed_up = {
            // The backup says when it was taken: a store restored from it
            // knows how new its index is (see `store::lease`).
            let _commit = lock(&inner.commit);
            let mut b = inner.index.batch();
            b.put_meta(META_BACKUP_TAKEN, &taken_at.to_le_bytes())?;
            b.commit()?;
            // The backup below holds every write up to here.
            inner.index.sequence()
        };
        let backup = inner
            .index
            .backup_to(&staging, KEEP_BACKUPS, KEEP_BACKUPS_WITHIN_S)?;
        let local = files_under(&staging)?;
        if pushed.as_ref().is_none_or(|p| p.epoch != epoch) {
            *pushed = Some(Pushed::list(layout, backend.as_ref(), epoch)?);
        }
        let Some(remote) = pushed.as_mut() else {
            return Err(Error::Internal("the pushed files were just listed".into()));
        };
        let report = mirror(layout, backend.as_ref(), epoch, &local, remote)?;
        // The marker never changes: once per epoch's pushes is enough.
        if !remote.marker_pushed {
            let marker = inner.dir.join(MARKER);
            backend
                .put_file(&layout.marker(), &marker)
                .map_err(|e| e.into_error(format!("uploading {}", layout.marker())))?;
            remote.marker_pushed = true;
        }
        {
            let _commit = lock(&inner.commit);
            let mut b = inner.index.batch();
            b.put_meta(META_LAST_PUSH, &taken_at.to_le_bytes())?;
            b.commit()?;
            // Only this batch's one write since the backup: the bucket
            // has everything. Otherwise a commit slipped in between, and
            // the next push must not be skipped.
            let now = inner.index.sequence();
            let covered = if now == backed_up + 1 { now } else { backed_up };
            policy.pushed_sequence.store(covered, Ordering::SeqCst);
        }
        *lock(&policy.last_push) = Some(taken_at);
        *lock(&policy.published) = Some(IndexRef { epoch, backup });
        // The lease's pointer moves to this backup (a conditional write: a
        // writer whose epoch was superseded is refused here), and says how
        // new the bucket's index is, so no older data dir takes over.
        self.renew_lease()?;
        // Backups of earlier epochs (and of stores before epochs) are
        // nobody's pointer any more.
        for name in std::mem::take(&mut remote.superseded) {
            backend
                .delete(&name)
                .map_err(|e| e.into_error(format!("deleting {name}")))?;
        }
        Ok(report)
    }
}

/// What one store's pushes found in the bucket: the files of the epoch
/// they write to, and the index objects of earlier epochs, deleted once
/// this epoch's first backup is the pointer.
pub(super) struct Pushed {
    epoch: u64,
    files: BTreeMap<String, u64>,
    /// The files of `meta/` and `private/` this process uploaded. A
    /// backup's files are written once, so they are sent once; but their
    /// names are not their content (a staging directory begun anew
    /// numbers its backups from 1 again, and a stale `meta/1` of the same
    /// length must not stand for the new one), so one listed but not sent
    /// by this process is sent again. `shared*/` names carry their
    /// checksum and size.
    sent_here: BTreeSet<String>,
    superseded: Vec<String>,
    marker_pushed: bool,
}

impl Pushed {
    fn list(layout: &ObjectLayout, backend: &dyn ObjectBackend, epoch: u64) -> Result<Self> {
        let prefix = layout.index_prefix();
        let listed = backend
            .list(&prefix)
            .map_err(|e| e.into_error(format!("listing {prefix}")))?;
        let mut out = Pushed {
            epoch,
            files: BTreeMap::new(),
            sent_here: BTreeSet::new(),
            superseded: Vec::new(),
            marker_pushed: false,
        };
        for o in listed {
            match layout.parse_epoch_file(&o.name) {
                Some((e, rel)) if e == epoch => {
                    out.files.insert(rel.to_owned(), o.len);
                }
                Some((e, _)) if e > epoch => {}
                _ => out.superseded.push(o.name),
            }
        }
        // `meta/N` first: a backup stops being one before its files go.
        out.superseded.sort_by_key(|n| !n.contains("/meta/"));
        Ok(out)
    }
}

/// Mirrors the local backup directory's files (`local`) to the bucket
/// under `epoch`: new files first, each backup's `meta/N` last, then the
/// objects of purged backups deleted, their `meta/N` first.
fn mirror(
    layout: &ObjectLayout,
    backend: &dyn ObjectBackend,
    epoch: u64,
    local: &BTreeMap<String, (PathBuf, u64)>,
    pushed: &mut Pushed,
) -> Result<IndexPush> {
    let (remote, sent) = (&mut pushed.files, &mut pushed.sent_here);
    let dir = layout.index_epoch(epoch);
    let mut report = IndexPush::default();
    let order = local
        .iter()
        .filter(|(rel, _)| !is_meta(rel))
        .chain(local.iter().filter(|(rel, _)| is_meta(rel)));
    for (rel, (path, len)) in order {
        let named_by_content = rel.starts_with("shared");
        if remote.get(rel) == Some(len) && (named_by_content || sent.contains(rel)) {
            continue;
        }
        let name = format!("{dir}{rel}");
        backend
            .put_file(&name, path)
            .map_err(|e| e.into_error(format!("uploading {name}")))?;
        remote.insert(rel.clone(), *len);
        if !named_by_content {
            sent.insert(rel.clone());
        }
        report.uploaded += 1;
        report.uploaded_bytes += len;
    }
    let stale: Vec<String> = remote
        .keys()
        .filter(|rel| !local.contains_key(*rel))
        .cloned()
        .collect();
    let order = stale
        .iter()
        .filter(|rel| is_meta(rel))
        .chain(stale.iter().filter(|rel| !is_meta(rel)));
    for rel in order {
        let name = format!("{dir}{rel}");
        backend
            .delete(&name)
            .map_err(|e| e.into_error(format!("deleting {name}")))?;
        remote.remove(rel);
        sent.remove(rel);
        report.deleted += 1;
    }
    Ok(report)
}

/// Builds a new data directory at `dest` from the bucket alone: the store
/// under `prefix` (its id; needed only when several stores share the
/// prefix). Open it with the same tier to serve what the bucket holds.
pub fn restore(
    backend: &Arc<dyn ObjectBackend>,
    prefix: &str,
    store_id: Option<&str>,
    dest: &Path,
) -> Result<RestoreReport> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(|e| Error::io(format!("reading {}", dest.display()), e))?
            .next()
            .is_some()
    {
        return Err(Error::InvalidInput(format!(
            "{} is not empty: restore builds a new data directory",
            dest.display()
        )));
    }
    let listed = backend
        .list(prefix)
        .map_err(|e| e.into_error(format!("listing {prefix}")))?;
    let ids = ObjectLayout::stores_in(prefix, listed.iter().map(|o| o.name.as_str()));
    let id = match (store_id, ids.as_slice()) {
        (Some(want), _) if ids.iter().any(|i| i == want) => want.to_owned(),
        (Some(want), _) => {
            return Err(Error::InvalidInput(format!(
                "no store {want} under {prefix:?} in {} (found: {ids:?})",
                backend.describe()
            )));
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(Error::InvalidInput(format!(
                "no store under {prefix:?} in {}: nothing was ever pushed there",
                backend.describe()
            )));
        }
        (None, many) => {
            return Err(Error::InvalidInput(format!(
                "several stores under {prefix:?}: name one with --store-id ({many:?})"
            )));
        }
    };
    let layout = ObjectLayout::of(prefix, &id);
    let copy = BucketCopy {
        backend: backend.as_ref(),
        layout: &layout,
        listed: &listed,
        lists_segments: true,
    };
    let staging = dest.join("restore-staging");
    let built = copy.build(&staging, dest, None).map(|(r, _)| r)?;
    std::fs::remove_dir_all(&staging)
        .map_err(|e| Error::io(format!("removing {}", staging.display()), e))?;
    Ok(built)
}

/// The published index of one store in the bucket, copied into data
/// directories: what [`restore`] builds once and a follower builds again
/// each time the writer publishes (`daemon::cluster`).
pub struct BucketCopy<'a> {
    pub backend: &'a dyn ObjectBackend,
    pub layout: &'a ObjectLayout,
    /// The store's objects, as listed now: its index objects and marker
    /// at least.
    pub listed: &'a [crate::segment::backend::ObjectInfo],
    /// True when `listed` holds the segment objects too.
    pub lists_segments: bool,
}

impl BucketCopy<'_> {
    /// The lease's pointer: the publication to copy (None: the store
    /// never held a lease, or no backup was published under it yet).
    fn pointer(&self) -> Result<Option<IndexRef>> {
        let name = self.layout.lease();
        match self
            .backend
            .get_versioned(&name)
            .map_err(|e| Error::remote(format!("reading {name}"), e))?
        {
            Some((raw, _)) => Ok(serde_json::from_slice::<super::Lease>(&raw)
                .map_err(|e| Error::bad_record("lease", name, e))?
                .index),
            None => Ok(None),
        }
    }

    /// A writer that published between the listing and the lease read
    /// moved the pointer to a backup the listing lacks: its epoch listed
    /// again, now that the pointer was read (its files were all in the
    /// bucket before it moved, and stay there for 30 s). None: the
    /// listing has it.
    fn relisted(
        &self,
        pointer: Option<IndexRef>,
    ) -> Result<Option<Vec<crate::segment::backend::ObjectInfo>>> {
        let Some(p) = pointer else {
            return Ok(None);
        };
        let dir = self.layout.index_epoch(p.epoch);
        let meta = format!("{dir}meta/{}", p.backup);
        if self.listed.iter().any(|o| o.name == meta) {
            return Ok(None);
        }
        self.backend
            .list(&dir)
            .map(Some)
            .map_err(|e| e.into_error(format!("listing {dir}")))
    }

    /// Builds a data directory at `dest` (new) from the publication the
    /// lease points at (or, for a store that never held a lease, the
    /// newest backup). `staging` keeps the backup files between builds
    /// (one directory per epoch): only what is new is fetched. Complete cache files of segments the
    /// index reads from the bucket are linked from `cache_from` (the
    /// previous copy's data directory), so a follower's cache survives.
    /// Returns what the copy holds: the publication, if the lease named
    /// one.
    pub fn build(
        &self,
        staging: &Path,
        dest: &Path,
        cache_from: Option<&Path>,
    ) -> Result<(RestoreReport, Option<IndexRef>)> {
        let (layout, backend) = (self.layout, self.backend);
        let id = layout_store_id(layout, self.listed)?;
        let mut report = RestoreReport {
            store_id: id.clone(),
            data_dir: dest.to_path_buf(),
            index_files: 0,
            index_bytes: 0,
            segments_found_in_bucket: 0,
        };
        let pointer = self.pointer()?;
        let relisted = self.relisted(pointer)?;
        let listed = relisted.as_deref().unwrap_or(self.listed);
        // The pointer's epoch; else the newest epoch's newest backup;
        // else the backups stores wrote before epochs.
        let newest = listed
            .iter()
            .filter_map(|o| layout.parse_epoch_file(&o.name).map(|(e, _)| e))
            .max();
        let epoch = pointer.map(|p| p.epoch).or(newest);
        let files: BTreeMap<&str, u64> = listed
            .iter()
            .filter_map(|o| {
                let rel = match epoch {
                    Some(want) => layout
                        .parse_epoch_file(&o.name)
                        .filter(|(e, _)| *e == want)
                        .map(|(_, rel)| rel),
                    None => layout.parse_index_file(&o.name),
                }?;
                Some((rel, o.len))
            })
            .collect();
        if files.is_empty() {
            return Err(Error::InvalidInput(format!(
                "store {id} has no index backup in {}",
                backend.describe()
            )));
        }
        // One directory per epoch: backup numbers start again in each.
        let name = epoch.map_or_else(|| "before-epochs".to_string(), |e| format!("e{e}"));
        if let Ok(rd) = std::fs::read_dir(staging) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy() != name.as_str() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let staging = &staging.join(name);
        let have = if staging.exists() {
            files_under(staging)?
        } else {
            BTreeMap::new()
        };
        for (rel, (path, len)) in &have {
            if files.get(rel.as_str()) != Some(len) {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            }
        }
        for (rel, len) in &files {
            if have.get(*rel).map(|h| h.1) == Some(*len) {
                continue;
            }
            let name = match epoch {
                Some(e) => format!("{}{rel}", layout.index_epoch(e)),
                None => layout.index_file(rel),
            };
            fetch(backend, &name, *len, &staging.join(rel))?;
            report.index_files += 1;
            report.index_bytes += len;
        }
        std::fs::create_dir_all(dest)
            .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
        Index::restore_from(staging, pointer.map(|p| p.backup), &dest.join("index"))?;
        report.segments_found_in_bucket =
            remote_if_uploaded(&dest.join("index"), self, cache_from, dest)?;
        // The listing found the store by its marker, so the marker is listed
        // (an object that went since then fails the fetch).
        let marker = layout.marker();
        let len = self
            .listed
            .iter()
            .find(|o| o.name == marker)
            .map(|o| o.len)
            .ok_or_else(|| Error::Internal(format!("{marker} was listed and is gone")))?;
        fetch(backend, &marker, len, &dest.join(MARKER))?;
        std::fs::File::open(dest)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", dest.display()), e))?;
        Ok((report, pointer))
    }
}

/// The store id a layout was made for, checked against the listing.
fn layout_store_id(
    layout: &ObjectLayout,
    listed: &[crate::segment::backend::ObjectInfo],
) -> Result<String> {
    let marker = layout.marker();
    marker
        .strip_suffix(MARKER)
        .and_then(|base| base.strip_suffix('/'))
        .and_then(|base| base.rsplit('/').next())
        .filter(|_| listed.iter().any(|o| o.name == marker))
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidInput(format!("no store at {marker}")))
}

/// Marks remote the segments the restored index names as local whose
/// object is in the bucket: with `"durability": "local"` a backup can be
/// pushed while a segment (the active one, say) is still local, and that
/// segment be sealed and uploaded afterwards. Its object is then its only
/// copy, and the rebuilt store reads it from there. Links the complete
/// cache files of remote segments from `cache_from` into `dest`. Returns
/// how many segments were marked.
fn remote_if_uploaded(
    index: &Path,
    copy: &BucketCopy<'_>,
    cache_from: Option<&Path>,
    dest: &Path,
) -> Result<u64> {
    use crate::index::SegmentTier;
    let layout = copy.layout;
    let index = Index::open(index, &[])?;
    let entries = index.segments()?;
    // The segments' objects are listed only when the backup names a
    // local segment (a follower's copy of a published index names none,
    // and a listing of every segment object would cost it each time).
    let listed_segments;
    let listed = if entries
        .iter()
        .any(|(_, e)| matches!(e.tier, SegmentTier::Local))
        && !copy.lists_segments
    {
        listed_segments = copy
            .backend
            .list(&layout.segments())
            .map_err(|e| e.into_error(format!("listing {}", layout.segments())))?;
        &listed_segments
    } else {
        copy.listed
    };
    let objects: std::collections::HashMap<&str, u64> =
        listed.iter().map(|o| (o.name.as_str(), o.len)).collect();
    let segments = dest.join("segments");
    std::fs::create_dir_all(&segments)
        .map_err(|e| Error::io(format!("creating {}", segments.display()), e))?;
    let mut b = index.batch();
    // The backup restored is in the bucket: its time is the last push.
    if let Some(taken) = index.get_meta(META_BACKUP_TAKEN)? {
        b.put_meta(META_LAST_PUSH, &taken)?;
    }
    let mut marked = 0;
    for (seg, mut e) in entries {
        let object = layout.segment(seg);
        if let (SegmentTier::Local, Some(&len)) = (e.tier, objects.get(object.as_str())) {
            e.tier = SegmentTier::Remote { len };
            b.put_segment(seg, &e)?;
            marked += 1;
        }
        if let (SegmentTier::Remote { len }, Some(from)) = (e.tier, cache_from) {
            let cached = crate::segment::segment_path(&from.join("segments"), seg);
            if std::fs::metadata(&cached).is_ok_and(|m| m.len() == len) {
                // Best effort: a cache file that cannot be linked is read
                // from the bucket again.
                let _ = std::fs::hard_link(&cached, crate::segment::segment_path(&segments, seg));
            }
        }
    }
    b.commit()?;
    Ok(marked)
}

/// Object `name` of `len` bytes into a new file at `path`, fsynced.
fn fetch(backend: &dyn ObjectBackend, name: &str, len: u64, path: &Path) -> Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let mut f = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let mut at = 0;
    while at < len {
        let mut buf = vec![0u8; (len - at).min(FETCH_BYTES) as usize];
        backend
            .read_at(name, at, &mut buf)
            .map_err(|e| e.into_error(format!("fetching {name}")))?;
        f.write_all(&buf)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        at += buf.len() as u64;
    }
    f.sync_all()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
