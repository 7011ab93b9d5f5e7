//! The answers of the daemon's own resources (`/ping`, `/state`), one type
//! for the route that sends each and the client that reads it.
//!
//! The store's reports (stats, the GC plan and report, verify) are the
//! engine's own types, on both ends.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The header of CloneImage's answer that tells what became of the
/// origins: an [`imgapi::share::CloneReport`](crate::imgapi::share::CloneReport)
/// as JSON.
pub const CLONE_ORIGINS: &str = "x-imgstore-clone-origins";

/// `GET /ping`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ping {
    pub ping: String,
    /// The IMGAPI version this server speaks.
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub imgapi: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// imgstore's version: present only on imgstore, which also speaks the
    /// chunk protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imgstore: Option<String>,
}

/// `GET /state`: the daemon and its store's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct State<S = crate::store::StoreStats> {
    pub pid: u32,
    pub uptime_s: u64,
    #[serde(rename = "datacenterName")]
    pub datacenter_name: String,
    pub mode: String,
    pub store: S,
    /// This daemon's place in its datacenter's cluster (`cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::service::cluster::Standing>,
}

/// `POST /state?action=gc`: what GC planned, and what it did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gc<P = crate::store::GcPlan, D = crate::store::GcReport> {
    pub plan: P,
    pub done: D,
}

/// `POST /state?action=verify`: the store's report, and the images its
/// damaged files belong to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verify<R = crate::store::VerifyReport> {
    #[serde(flatten)]
    pub report: R,
    pub damaged_images: Vec<Uuid>,
}
