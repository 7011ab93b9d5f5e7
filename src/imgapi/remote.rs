//! The source datacenter as the copy rules see it: what a copy asks of
//! another IMGAPI. The `http` layer implements it over the one client;
//! [`copy`](super::copy) and [`jobs`](super::jobs) use it.

use std::io::Read;

use uuid::Uuid;

use super::ApiResult;
use super::manifest::Manifest;
use crate::transfer::ChunkSource;

/// The source datacenter, as a copy needs it.
pub trait Remote: Send + Sync {
    /// GetImage at the source (errors pass through unchanged).
    fn get_image(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Manifest>;
    /// A chunk source for the image's file, or `None` when the source is a
    /// plain IMGAPI without the chunk protocol.
    fn chunk_source(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<Option<Box<dyn ChunkSource>>>;
    /// The whole file as a stream (the fallback for a plain IMGAPI).
    fn file_stream(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Box<dyn Read + Send>>;
}

/// Makes a [`Remote`] for an IMGAPI's URL.
pub trait RemoteFactory: Send + Sync {
    fn remote(&self, url: &str) -> ApiResult<Box<dyn Remote>>;
}
