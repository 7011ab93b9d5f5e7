//! How a member gets the copy of the store it serves: the cluster's store
//! claimed or found, this data dir's own store led again, or a new copy of
//! the newest publication built from the bucket (`gen-{n}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{BUILD_ATTEMPTS, Generation};
use crate::daemon::{DaemonConfig, StartError};
use crate::http::AppState;
use crate::http::authkeys::ImgapiAuth;
use crate::service::cluster::{Membership, Role};
use crate::service::{Logger, Metrics};
use crate::store::backend::{Conditional, ObjectBackend};
use crate::store::{BucketCopy, IndexRef, ObjectLayout, Store};

/// What a member needs to make new copies of the store.
pub(super) struct Making {
    pub(super) cfg: DaemonConfig,
    pub(super) log: Logger,
    pub(super) metrics: Arc<Metrics>,
    pub(super) auth: Option<Arc<ImgapiAuth>>,
    pub(super) backend: Arc<dyn ObjectBackend>,
    pub(super) prefix: String,
    pub(super) holder: String,
    pub(super) lease_seconds: u64,
    pub(super) advertise: Option<String>,
}

impl Making {
    /// The cluster's store id, claimed by the first member on an empty
    /// prefix (create-only: of members starting at once, one wins and the
    /// others join its store), and this data dir's own newest copy when it
    /// is of that store.
    #[allow(clippy::type_complexity)]
    pub(super) fn claim(&self) -> Result<(String, Option<(u64, PathBuf, Store)>), StartError> {
        let claim = ObjectLayout::cluster_claim(&self.prefix);
        let remote = |e| StartError::Store(crate::Error::remote(format!("reading {claim}"), e));
        let own = generations(&self.cfg.data_dir)
            .into_iter()
            .next_back()
            .filter(|(_, dir)| dir.join(crate::store::MARKER).exists());
        let claimed = self
            .backend
            .get_versioned(&claim)
            .map_err(remote)?
            .map(|(raw, _)| String::from_utf8_lossy(&raw).trim().to_string());
        if let Some(id) = claimed {
            let Some((n, dir)) = own else {
                return Ok((id, None));
            };
            let store = Store::open_with(&dir, self.cfg.store_options()?)?;
            let mine = store.params().store_id == id;
            return Ok((id, mine.then_some((n, dir, store))));
        }
        // An empty prefix: this member creates the store and claims it.
        let (n, dir, made) = match own {
            Some((n, dir)) => (n, dir, false),
            None => (1, gen_dir(&self.cfg.data_dir, 1), true),
        };
        let store = Store::open_with(&dir, self.cfg.store_options()?)?;
        let id = store.params().store_id.clone();
        match self
            .backend
            .put_if_absent(&claim, id.as_bytes())
            .map_err(remote)?
        {
            Conditional::Written(_) => Ok((id, Some((n, dir, store)))),
            Conditional::Refused => {
                // Another member claimed first: its store is the cluster's.
                drop(store);
                if made {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                self.claim()
            }
        }
    }

    /// This data dir's own store: its writer again if the lease is free
    /// (or was its own), else a follower from a fresh copy.
    pub(super) fn lead_or_follow(
        &self,
        n: u64,
        dir: PathBuf,
        store: Store,
        membership: &Arc<Membership>,
    ) -> Result<Generation, StartError> {
        match store.take_lease(&self.holder, self.advertise.as_deref(), self.lease_seconds)? {
            Ok(lease) => {
                membership.lead(lease.epoch);
                self.metrics.cluster(Role::Writer, lease.epoch, 0.0);
                // The first publication is the publish chore's, once the
                // lease renewals run (see `Member::take_over`).
                self.log.info(&format!(
                    "cluster: this daemon writes (epoch {}, lease {} s)",
                    lease.epoch, lease.seconds
                ));
                let state = self.state_over(store, membership)?;
                Ok(Generation {
                    n,
                    dir,
                    state,
                    pointer: None,
                    stop: Arc::new(AtomicBool::new(false)),
                    rooms: Vec::new(),
                })
            }
            Err(_) => {
                let id = store.params().store_id.clone();
                drop(store);
                self.follower_generation_of(&id, n + 1, Some(&dir), membership)
            }
        }
    }

    /// A new copy, number `n`, of the newest publication, as a follower.
    pub(super) fn follower_generation(
        &self,
        n: u64,
        previous: Option<&Store>,
        membership: &Arc<Membership>,
    ) -> crate::Result<Generation> {
        let id = match previous {
            Some(s) => s.params().store_id.clone(),
            None => {
                let claim = ObjectLayout::cluster_claim(&self.prefix);
                self.backend
                    .get_versioned(&claim)
                    .map_err(|e| crate::Error::remote(format!("reading {claim}"), e))?
                    .map(|(raw, _)| String::from_utf8_lossy(&raw).trim().to_string())
                    .ok_or_else(|| crate::Error::Internal(format!("{claim} is gone")))?
            }
        };
        let from = previous.map(|s| s.dir().to_path_buf());
        self.follower_generation_of(&id, n, from.as_deref(), membership)
            .map_err(|e| match e {
                StartError::Store(e) => e,
                other => crate::Error::Internal(other.to_string()),
            })
    }

    /// Copy `n` of store `id`'s newest publication, served as a follower;
    /// cache files are linked from `cache_from` (an earlier copy).
    pub(super) fn follower_generation_of(
        &self,
        id: &str,
        n: u64,
        cache_from: Option<&Path>,
        membership: &Arc<Membership>,
    ) -> Result<Generation, StartError> {
        let layout = ObjectLayout::of(&self.prefix, id);
        let dir = gen_dir(&self.cfg.data_dir, n);
        // The writer may publish (and purge an old backup's files) while
        // this copy is made: a file gone is a newer publication to copy.
        let mut attempt = 0;
        let pointer = loop {
            attempt += 1;
            match self.copy_once(&layout, &dir, cache_from) {
                Ok(pointer) => break pointer,
                Err(e) if attempt < BUILD_ATTEMPTS => {
                    self.log.info(&format!(
                        "cluster: copy {n} of the store, attempt {attempt}: {}; trying again",
                        crate::error::chain(&e)
                    ));
                    std::thread::sleep(Duration::from_millis(200 * attempt as u64));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let store = Store::open_with(&dir, self.cfg.store_options()?)?;
        let state = self.state_over(store, membership)?;
        // Set once the service is built: building it may commit to this
        // copy (a catalog migration), never to the bucket.
        state
            .api
            .store()
            .follow("this daemon follows the datacenter's writer".into());
        Ok(Generation {
            n,
            dir,
            state,
            pointer,
            stop: Arc::new(AtomicBool::new(false)),
            rooms: Vec::new(),
        })
    }
}

impl Making {
    /// The service and HTTP state of a member over `store`: the metrics,
    /// keys and standing its generations share.
    fn state_over(
        &self,
        store: Store,
        membership: &Arc<Membership>,
    ) -> Result<Arc<AppState>, StartError> {
        self.cfg.state_over(
            store,
            self.log.clone(),
            Arc::clone(&self.metrics),
            self.auth.clone(),
            Some(Arc::clone(membership)),
        )
    }

    /// One attempt at copying the newest publication into `dir`.
    fn copy_once(
        &self,
        layout: &ObjectLayout,
        dir: &Path,
        cache_from: Option<&Path>,
    ) -> crate::Result<Option<IndexRef>> {
        // The index objects and the marker; not every segment object.
        let mut listed = self
            .backend
            .list(&layout.index_prefix())
            .map_err(|e| e.into_error(format!("listing {}", layout.index_prefix())))?;
        let marker = layout.marker();
        if let Some(len) = self
            .backend
            .len(&marker)
            .map_err(|e| e.into_error(format!("reading {marker}")))?
        {
            listed.push(crate::store::backend::ObjectInfo { name: marker, len });
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| crate::Error::io(format!("removing {}", dir.display()), e))?;
        }
        let copy = BucketCopy {
            backend: self.backend.as_ref(),
            layout,
            listed: &listed,
            lists_segments: false,
        };
        copy.build(&self.cfg.data_dir.join("staging"), dir, cache_from)
            .map(|(_, pointer)| pointer)
    }
}

/// `{data_dir}/gen-{n}`.
pub(super) fn gen_dir(data_dir: &Path, n: u64) -> PathBuf {
    data_dir.join(format!("gen-{n}"))
}

pub(super) fn gen_number(dir: &Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("gen-")?
        .parse()
        .ok()
}

/// The copies in `data_dir`, oldest first.
pub(super) fn generations(data_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(data_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((gen_number(&e.path())?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
