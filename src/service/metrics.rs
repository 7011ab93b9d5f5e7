//! `GET /metrics`: the daemon in Prometheus' text format, with the
//! `prometheus-client` crate (the Prometheus project's own).
//!
//! | metric | labels | |
//! | --- | --- | --- |
//! | `imgstore_http_requests_total` | route, method, status | requests answered |
//! | `imgstore_http_request_duration_seconds` | route, method | latency histogram |
//! | `imgstore_http_received_bytes_total` | | upload bodies read |
//! | `imgstore_http_sent_bytes_total` | | download and chunk bodies written |
//! | `imgstore_store_*` | | files, references, logical, stored and index bytes, segments, reserve (read at scrape, without a chunk scan) |
//! | `imgstore_tier_{local,cached,remote}_bytes`, `imgstore_tier_waiting_segments` | | where segment bytes are, and what waits for the bucket |
//! | `imgstore_disk_{size,free}_bytes` | | the data directory's filesystem (statvfs) |
//! | `imgstore_gc_runs_total` | outcome | GC passes: ok, partial (a segment left as it was), failed |
//! | `imgstore_gc_reclaimed_bytes_total` | | bytes GC freed |
//! | `imgstore_recompressed_segments_total` | | cold segments the background pass rewrote |
//! | `imgstore_recompress_saved_bytes_total` | | bytes those rewrites saved |
//! | `imgstore_tier_uploaded_bytes_total` | | sealed segment bytes uploaded to the remote tier and confirmed |
//! | `imgstore_tier_evicted_bytes_total` | | local copies of remote segments dropped from the cache |
//! | `imgstore_tier_deleted_objects_total` | | objects of compacted segments deleted after their grace period |
//! | `imgstore_tier_errors_total` | | remote tier steps that failed (retried at the next step), and requests that failed on the bucket |
//! | `imgstore_copy_jobs_total` | outcome | copies between datacenters that ended: succeeded, failed |
//! | `imgstore_copy_fetched_bytes_total` | outcome | bytes those copies fetched |
//! | `imgstore_copy_checks_waiting` | | copied files waiting for their whole-file check |
//! | `imgstore_copy_check_failures_total` | | copied files that failed it (their images disabled) |
//! | `imgstore_cluster_writer` | | 1 while this member writes, 0 while it follows (absent without `cluster`) |
//! | `imgstore_cluster_epoch` | | the writer's epoch as this member knows it |
//! | `imgstore_cluster_lag_seconds` | | how far a follower's copy may be behind the newest publication |
//! | `imgstore_cluster_lease_renewals_total` | outcome | the writer's lease renewals: ok, failed |
//! | `imgstore_cluster_takeovers_total` | | leases this member took over from a writer that stopped renewing |
//! | `imgstore_cluster_step_downs_total` | | times this member lost the lease and became a follower |
//!
//! Like `/state`, it answers operators only: store-wide byte counts would
//! tell an account whether others store given bytes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{GcReport, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

type ByteGauge = Gauge<i64, std::sync::atomic::AtomicI64>;

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    received: Counter<u64, AtomicU64>,
    sent: Counter<u64, AtomicU64>,
    gc_runs: Family<Outcome, Counter>,
    gc_reclaimed: Counter,
    recompressed: Counter,
    recompress_saved: Counter,
    /// Uploaded bytes, evicted bytes, deleted objects, failed steps.
    tier: [Counter; 4],
    jobs: Family<Outcome, Counter>,
    job_bytes: Family<Outcome, Counter>,
    /// Copied files whose check after the copy failed, and those waiting.
    check_failures: Counter,
    checks_waiting: ByteGauge,
    store: [(&'static str, ByteGauge); 14],
    cluster: ClusterMetrics,
}

/// A cluster member's figures (`daemon::cluster`).
struct ClusterMetrics {
    writer: ByteGauge,
    epoch: ByteGauge,
    lag: Gauge<f64, AtomicU64>,
    renewals: Family<Outcome, Counter>,
    takeovers: Counter,
    step_downs: Counter,
}

impl ClusterMetrics {
    fn new(r: &mut Registry) -> Self {
        ClusterMetrics {
            writer: register(
                r,
                "imgstore_cluster_writer",
                "1 while this member writes, 0 while it follows",
                ByteGauge::default(),
            ),
            epoch: register(
                r,
                "imgstore_cluster_epoch",
                "The writer's epoch as this member knows it",
                ByteGauge::default(),
            ),
            lag: register(
                r,
                "imgstore_cluster_lag_seconds",
                "How far this follower's copy may be behind the newest publication",
                Gauge::default(),
            ),
            renewals: register(
                r,
                "imgstore_cluster_lease_renewals",
                "The writer's lease renewals by outcome: ok, failed",
                Family::<Outcome, Counter>::default(),
            ),
            takeovers: register(
                r,
                "imgstore_cluster_takeovers",
                "Leases this member took over from a writer that stopped renewing",
                Counter::default(),
            ),
            step_downs: register(
                r,
                "imgstore_cluster_step_downs",
                "Times this member lost the lease and became a follower",
                Counter::default(),
            ),
        }
    }
}

/// The tier's counters: uploaded bytes, evicted bytes, deleted objects,
/// failed steps.
const TIER_COUNTERS: [(&str, &str); 4] = [
    (
        "imgstore_tier_uploaded_bytes",
        "Sealed segment bytes uploaded to the remote tier and confirmed",
    ),
    (
        "imgstore_tier_evicted_bytes",
        "Bytes of local copies of remote segments dropped from the cache",
    ),
    (
        "imgstore_tier_deleted_objects",
        "Objects of compacted segments deleted after their grace period",
    ),
    (
        "imgstore_tier_errors",
        "Remote tier steps that failed (retried at the next step)",
    ),
];

/// The store's figures, read at scrape.
const STORE_GAUGES: [(&str, &str); 14] = [
    ("imgstore_store_files", "Distinct files stored"),
    ("imgstore_store_file_references", "References to them"),
    ("imgstore_store_logical_bytes", "Bytes as images see them"),
    (
        "imgstore_store_distinct_file_bytes",
        "Each distinct file's size once",
    ),
    ("imgstore_store_stored_bytes", "Segment file bytes on disk"),
    ("imgstore_store_segments", "Segment files"),
    ("imgstore_store_index_bytes", "RocksDB table file bytes"),
    (
        "imgstore_store_reserve_bytes",
        "Disk space held back for GC on a full disk",
    ),
    (
        "imgstore_tier_local_bytes",
        "Segment bytes only on the local disk (not uploaded yet)",
    ),
    (
        "imgstore_tier_cached_bytes",
        "Bytes of local copies of remote segments",
    ),
    ("imgstore_tier_remote_bytes", "Segment bytes in the bucket"),
    (
        "imgstore_tier_waiting_segments",
        "Segments waiting for upload, the active one included",
    ),
    (
        "imgstore_disk_size_bytes",
        "Size of the data directory's filesystem",
    ),
    (
        "imgstore_disk_free_bytes",
        "Bytes free on the data directory's filesystem",
    ),
];

fn latency_histogram() -> Histogram {
    // 0.5 ms .. about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and hands it back (the registry keeps
/// a clone; both count the same).
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = register(
            &mut r,
            "imgstore_http_requests",
            "Requests answered, by route, method and status",
            Family::<RequestLabels, Counter>::default(),
        );
        let latency = register(
            &mut r,
            "imgstore_http_request_duration_seconds",
            "Time to answer a request (until the response head), by route and method",
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            ),
        );
        let received = register(
            &mut r,
            "imgstore_http_received_bytes",
            "Bytes of upload bodies read",
            Counter::<u64, AtomicU64>::default(),
        );
        let sent = register(
            &mut r,
            "imgstore_http_sent_bytes",
            "Bytes of file and chunk bodies written",
            Counter::<u64, AtomicU64>::default(),
        );
        let gc_runs = register(
            &mut r,
            "imgstore_gc_runs",
            "GC passes by outcome: ok, partial (a segment left as it was), failed",
            Family::<Outcome, Counter>::default(),
        );
        let gc_reclaimed = register(
            &mut r,
            "imgstore_gc_reclaimed_bytes",
            "Bytes GC freed",
            Counter::default(),
        );
        let recompressed = register(
            &mut r,
            "imgstore_recompressed_segments",
            "Cold segments the background pass rewrote at the denser level",
            Counter::default(),
        );
        let recompress_saved = register(
            &mut r,
            "imgstore_recompress_saved_bytes",
            "Bytes the background pass's rewrites saved",
            Counter::default(),
        );
        let tier =
            TIER_COUNTERS.map(|(name, help)| register(&mut r, name, help, Counter::default()));
        let jobs = register(
            &mut r,
            "imgstore_copy_jobs",
            "Copies between datacenters that ended, by outcome",
            Family::<Outcome, Counter>::default(),
        );
        let job_bytes = register(
            &mut r,
            "imgstore_copy_fetched_bytes",
            "Bytes fetched by copies that ended, by outcome",
            Family::<Outcome, Counter>::default(),
        );
        let check_failures = register(
            &mut r,
            "imgstore_copy_check_failures",
            "Copied files that failed their whole-file check after the copy (their images disabled)",
            Counter::default(),
        );
        let checks_waiting = register(
            &mut r,
            "imgstore_copy_checks_waiting",
            "Copied files waiting for their whole-file check",
            ByteGauge::default(),
        );
        let store = STORE_GAUGES
            .map(|(name, help)| (name, register(&mut r, name, help, ByteGauge::default())));
        let cluster = ClusterMetrics::new(&mut r);
        Metrics {
            cluster,
            registry: r,
            requests,
            latency,
            received,
            sent,
            gc_runs,
            gc_reclaimed,
            recompressed,
            recompress_saved,
            tier,
            jobs,
            job_bytes,
            check_failures,
            checks_waiting,
            store,
        }
    }

    /// This member's role, the epoch it knows and its lag.
    pub fn cluster(&self, role: super::cluster::Role, epoch: u64, lag_seconds: f64) {
        let c = &self.cluster;
        c.writer
            .set(i64::from(role == super::cluster::Role::Writer));
        c.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        c.lag.set(lag_seconds);
    }

    /// One renewal of the writer's lease.
    pub fn lease_renewal(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.cluster
            .renewals
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    pub fn cluster_took_over(&self) {
        self.cluster.takeovers.inc();
    }

    pub fn cluster_stepped_down(&self) {
        self.cluster.step_downs.inc();
    }

    /// A copied file failed its check after the copy.
    pub fn copy_check_failed(&self) {
        self.check_failures.inc();
    }

    /// Copied files waiting for their check (set at scrape).
    pub fn set_checks_waiting(&self, n: u64) {
        self.checks_waiting
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One answered request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }

    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    pub fn sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }

    /// One GC pass: its report, or that it failed.
    pub fn gc(&self, result: Result<&GcReport, ()>) {
        let outcome = match result {
            Ok(r) if r.failed.is_empty() => "ok",
            Ok(_) => "partial",
            Err(()) => "failed",
        };
        self.gc_runs.get_or_create(&Outcome { outcome }).inc();
        if let Ok(r) = result {
            self.gc_reclaimed.inc_by(r.bytes_freed);
        }
    }

    /// The background pass rewrote a segment of `before` bytes into `after`.
    pub fn recompressed(&self, before: u64, after: u64) {
        self.recompressed.inc();
        self.recompress_saved.inc_by(before.saturating_sub(after));
    }

    /// One step of the remote tier.
    pub fn tier_step(&self, r: &crate::store::TierReport) {
        let [uploaded, evicted, deleted, _] = &self.tier;
        uploaded.inc_by(r.uploaded.iter().map(|u| u.1).sum());
        evicted.inc_by(r.evicted.iter().map(|e| e.1).sum());
        deleted.inc_by(r.deleted.len() as u64);
    }

    /// A step of the remote tier failed.
    pub fn tier_failed(&self) {
        self.tier[3].inc();
    }

    /// A copy job ended.
    pub fn job_ended(&self, succeeded: bool, fetched_bytes: u64) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.jobs.get_or_create(&Outcome { outcome }).inc();
        self.job_bytes
            .get_or_create(&Outcome { outcome })
            .inc_by(fetched_bytes);
    }

    /// The text exposition, with the store's size read now.
    pub fn render(&self, store: &Store) -> crate::Result<String> {
        let size = store.size()?;
        let tier = if store.has_tier() {
            store.tier_sizes()?
        } else {
            crate::store::TierSizes::default()
        };
        let disk = store.disk_space();
        let values = [
            size.files,
            size.file_references,
            size.logical_bytes,
            size.distinct_file_bytes,
            size.stored_bytes,
            size.segments,
            size.index_bytes,
            store.reserve_held(),
            tier.local_bytes,
            tier.cached_bytes,
            tier.remote_bytes,
            tier.local_segments,
            disk.map_or(0, |d| d.size_bytes),
            disk.map_or(0, |d| d.free_bytes),
        ];
        for ((_, g), v) in self.store.iter().zip(values) {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| crate::Error::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}
