//! The index's backups (RocksDB's backup engine): what a store pushes to
//! its bucket and what a restore or a cluster follower builds from.

use std::path::Path;

use super::{Index, db_err};
use crate::error::{Error, Result};

impl Index {
    /// Takes a consistent backup of the whole index (every column family,
    /// the layers' tables included) into `dir` with RocksDB's backup
    /// engine: memtables flushed, table files copied once and shared by
    /// later backups, all but the newest `keep` backups purged. The files
    /// of `dir` are then exactly the live backups: `meta/N` names a
    /// backup's files, written last.
    pub fn backup_to(&self, dir: &Path, keep: usize) -> Result<u32> {
        use rocksdb::backup::{BackupEngine, BackupEngineOptions};
        let opts = BackupEngineOptions::new(dir).map_err(db_err)?;
        let env = rocksdb::Env::new().map_err(db_err)?;
        let mut engine = BackupEngine::open(&opts, &env).map_err(db_err)?;
        engine
            .create_new_backup_flush(&self.db, true)
            .map_err(db_err)?;
        engine.purge_old_backups(keep.max(1)).map_err(db_err)?;
        engine
            .get_backup_info()
            .iter()
            .map(|b| b.backup_id)
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
