//! Byte progress of a transfer: atomics the fetchers bump, and a snapshot
//! the jobs API shows.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Byte progress of a transfer, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Size of the file.
    pub total_bytes: AtomicU64,
    /// Bytes of the chunks that must travel (known once the lists are compared).
    pub bytes_to_fetch: AtomicU64,
    /// Of those, bytes received and verified.
    pub bytes_fetched: AtomicU64,
    /// Bytes of chunks found in this store already.
    pub bytes_local: AtomicU64,
    /// Record bytes received (what crossed the wire, compressed as stored).
    pub wire_bytes: AtomicU64,
    pub chunks_total: AtomicU64,
    pub chunks_to_fetch: AtomicU64,
    pub chunks_fetched: AtomicU64,
    pub chunks_local: AtomicU64,
    /// Batches that failed and were fetched again.
    pub retries: AtomicU64,
}

/// A snapshot of [`Progress`], as the jobs API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ProgressReport {
    pub total_bytes: u64,
    pub bytes_to_fetch: u64,
    pub bytes_fetched: u64,
    pub bytes_local: u64,
    pub wire_bytes: u64,
    pub chunks_total: u64,
    pub chunks_to_fetch: u64,
    pub chunks_fetched: u64,
    pub chunks_local: u64,
    pub retries: u64,
}

impl Progress {
    pub fn report(&self) -> ProgressReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProgressReport {
            total_bytes: g(&self.total_bytes),
            bytes_to_fetch: g(&self.bytes_to_fetch),
            bytes_fetched: g(&self.bytes_fetched),
            bytes_local: g(&self.bytes_local),
            wire_bytes: g(&self.wire_bytes),
            chunks_total: g(&self.chunks_total),
            chunks_to_fetch: g(&self.chunks_to_fetch),
            chunks_fetched: g(&self.chunks_fetched),
            chunks_local: g(&self.chunks_local),
            retries: g(&self.retries),
        }
    }
}
