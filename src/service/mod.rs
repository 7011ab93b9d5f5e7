//! One running image service, below its HTTP faces: the IMGAPI rules with
//! what a running daemon adds to them, its log, its metrics and its upkeep
//! chores. The `http` and `cloudapi` layers answer requests against a
//! [`Service`]; the daemon builds it, starts its upkeep and serves it.
//! Nothing here speaks HTTP, so background work needs nothing from the
//! request side.
//!
//! | module | |
//! | --- | --- |
//! | [`log`] | bunyan lines |
//! | [`metrics`] | what `/metrics` reports, in Prometheus' text format |
//! | [`cluster`] | this daemon's role among its datacenter's members |
//! | [`upkeep`] | the chores: GC, recompression, the tier's steps, index pushes, orphan sweeps, copy jobs resumed |

pub mod cluster;
pub mod log;
pub mod metrics;
pub mod upkeep;

use std::sync::Arc;
use std::time::Instant;

use crate::imgapi::Imgapi;
use crate::store::{GcPlan, GcReport};
pub use log::Logger;
pub use metrics::Metrics;

/// The image service of one daemon.
pub struct Service {
    /// The IMGAPI rules over the store.
    pub api: Imgapi,
    pub log: Logger,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    /// When the upkeep chores run.
    pub schedule: upkeep::Schedule,
    /// This daemon's place in its datacenter's cluster (None: a daemon
    /// alone, without `cluster`).
    pub cluster: Option<Arc<cluster::Membership>>,
}

impl Service {
    pub fn new(
        api: Imgapi,
        log: Logger,
        metrics: Arc<Metrics>,
        schedule: upkeep::Schedule,
    ) -> Self {
        Service {
            api,
            log,
            metrics,
            started: Instant::now(),
            schedule,
            cluster: None,
        }
    }

    /// The same, as a member of a cluster.
    pub fn in_cluster(mut self, membership: Option<Arc<cluster::Membership>>) -> Self {
        self.cluster = membership;
        self
    }

    /// One GC pass at `threshold` on the live store: plans, executes,
    /// counts it in the metrics and logs what it freed and what it left.
    /// What both the gc chore and `POST /state?action=gc` run (blocking).
    pub fn collect_garbage(&self, threshold: f64) -> crate::Result<(GcPlan, GcReport)> {
        let store = self.api.store();
        let result = store
            .gc_plan(threshold)
            .and_then(|plan| store.gc_execute(&plan).map(|done| (plan, done)));
        self.metrics
            .gc(result.as_ref().map(|(_, done)| done).map_err(|_| ()));
        match &result {
            Ok((_, r)) => {
                if r.bytes_freed > 0 {
                    self.log.info(&format!(
                        "gc: {} segments deleted, {} rewritten, {} bytes freed",
                        r.segments_deleted, r.segments_rewritten, r.bytes_freed
                    ));
                }
                for f in &r.failed {
                    self.log.error(&format!(
                        "gc: segment {:012} left as it is: {}",
                        f.segment, f.error
                    ));
                }
            }
            Err(e) => self
                .log
                .error(&format!("gc failed: {}", crate::error::chain(e))),
        }
        result
    }
}
