//! The index's backups (RocksDB's backup engine): what a store pushes to
//! its bucket and what a restore or a cluster follower builds from.

use std::path::Path;

use super::{Index, db_err};
use crate::error::{Error, Result};

/// Backups kept at most, however many were taken within the time asked.
pub const MOST_BACKUPS: usize = 64;

impl Index {
    /// Takes a consistent backup of the whole index (every column family,
    /// the layers' tables included) into `dir` with RocksDB's backup
    /// engine: table files copied once and shared by later backups, the
    /// write-ahead log since the last flush copied into the backup (no
    /// flush per backup: a flush per publication left one tiny table file
    /// per column family each time, which RocksDB moves down without ever
    /// merging, so a cluster's index grew to over a thousand files in a
    /// few hundred publications; the log is bounded by [`WAL_BYTES`]).
    /// All but the newest `keep` backups, or those taken within the last
    /// `keep_within_s` seconds if more (at most [`MOST_BACKUPS`]), are
    /// purged. The files of `dir` are then exactly the live backups:
    /// `meta/N` names a backup's files, written last.
    ///
    /// [`WAL_BYTES`]: super::WAL_BYTES
    pub fn backup_to(&self, dir: &Path, keep: usize, keep_within_s: u64) -> Result<u32> {
        use rocksdb::backup::{BackupEngine, BackupEngineOptions};
        let opts = BackupEngineOptions::new(dir).map_err(db_err)?;
        let env = rocksdb::Env::new().map_err(db_err)?;
        let mut engine = BackupEngine::open(&opts, &env).map_err(db_err)?;
        engine
            .create_new_backup_flush(&self.db, false)
            .map_err(db_err)?;
        let infos = engine.get_backup_info();
        let newest = infos.iter().map(|b| b.timestamp).max().unwrap_or_default();
        let recent = infos
            .iter()
            .filter(|b| newest.saturating_sub(b.timestamp) <= keep_within_s as i64)
            .count();
        let kept = keep.max(recent).clamp(1, MOST_BACKUPS);
        engine.purge_old_backups(kept).map_err(db_err)?;
        let live: Vec<u32> = engine
            .get_backup_info()
            .iter()
            .map(|b| b.backup_id)
            .collect();
        remove_empty_private_dirs(dir, &live);
        live.iter()
            .copied()
            .max()
            .ok_or_else(|| Error::Internal(format!("no backup in {} after one", dir.display())))
    }

    /// Restores backup `id` (the newest when None) in `backup_dir` as a
    /// new index at `path` (which must not hold one).
    pub fn restore_from(backup_dir: &Path, id: Option<u32>, path: &Path) -> Result<()> {
        use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
        let opts = BackupEngineOptions::new(backup_dir).map_err(db_err)?;
        let env = rocksdb::Env::new().map_err(db_err)?;
        let mut engine = BackupEngine::open(&opts, &env).map_err(db_err)?;
        let ropts = RestoreOptions::default();
        match id {
            Some(id) => engine.restore_from_backup(path, path, &ropts, id),
            None => engine.restore_from_latest_backup(path, path, &ropts),
        }
        .map_err(db_err)
    }

    /// The sequence number of the newest write: unchanged means nothing
    /// was committed since.
    pub fn sequence(&self) -> u64 {
        self.db.latest_sequence_number()
    }
}

/// RocksDB's purge deletes a purged backup's `private/N/` files but leaves
/// the directory: one more empty directory per publication, forever (and
/// every push walks them). Removes those of backups no longer `live`.
fn remove_empty_private_dirs(dir: &Path, live: &[u32]) {
    let Ok(entries) = std::fs::read_dir(dir.join("private")) else {
        return;
    };
    for e in entries.flatten() {
        let purged = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|id| !live.contains(&id));
        if purged {
            // Only an empty one goes: remove_dir refuses anything else.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}
