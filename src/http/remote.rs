//! The other datacenter, through the one [`Client`]: GetImage, the chunk
//! protocol (a chunk list and batch fetches of records as stored) and, for
//! a plain IMGAPI without it, the whole file.

use std::io::Read;
use std::time::Duration;

use uuid::Uuid;

use super::client::{Client, ClientError};
use crate::error::Result;
use crate::format::ChunkList;
use crate::id::ChunkId;
use crate::imgapi::manifest::Manifest;
use crate::imgapi::remote::{Remote, RemoteFactory};
use crate::imgapi::{ApiError, ApiResult, Code, FieldCode, FieldError};
use crate::transfer::ChunkSource;

/// Makes [`HttpRemote`]s sharing one connection pool (and so one reqwest
/// runtime thread), whichever datacenter they reach.
pub struct HttpRemotes {
    /// The pool, or why it could not be built (reported by each copy).
    pool: std::result::Result<reqwest::blocking::Client, String>,
    /// Signs requests to sources that require signatures (`signingKey`).
    signer: Option<std::sync::Arc<super::sign::Signer>>,
}

impl HttpRemotes {
    /// `timeout` bounds each request, so a stalled source fails the batch
    /// (which is retried) instead of hanging the copy.
    pub fn new(timeout: Duration) -> Self {
        Self {
            pool: Client::pool(Some(timeout)).map_err(|e| e.to_string()),
            signer: None,
        }
    }

    /// The same, every request to a source signed by `signer`.
    pub fn signed_by(mut self, signer: Option<std::sync::Arc<super::sign::Signer>>) -> Self {
        self.signer = signer;
        self
    }
}

impl RemoteFactory for HttpRemotes {
    fn remote(&self, url: &str) -> ApiResult<Box<dyn Remote>> {
        let pool = self.pool.as_ref().map_err(|e| {
            ApiError::new(
                Code::RemoteSourceError,
                format!("no HTTP client for remote sources: {e}"),
            )
        })?;
        let client = Client::on_pool(url, pool.clone())
            .map_err(remote_error)?
            .signed_by(self.signer.clone());
        Ok(Box::new(HttpRemote { client }))
    }
}

/// One source datacenter.
pub struct HttpRemote {
    client: Client,
}

/// A remote's answer as our error: its own error passed through unchanged,
/// anything else RemoteSourceError.
pub fn remote_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Api { status, body, .. } => {
            let fields: Vec<FieldError> = body
                .errors
                .iter()
                .filter_map(|f| {
                    Some(FieldError {
                        field: f.field.clone(),
                        code: FieldCode::parse(&f.code)?,
                        message: f.message.clone(),
                    })
                })
                .collect();
            let mut err = ApiError::passthrough(status, &body.code, body.message);
            if !fields.is_empty() {
                err = err.with_errors(fields);
            }
            err
        }
        ClientError::Status { ref url, status } => ApiError::new(
            Code::RemoteSourceError,
            format!("remote source {url} answered {status}"),
        ),
        other => ApiError::new(
            Code::RemoteSourceError,
            format!("error contacting remote source: {other}"),
        )
        .caused_by(other),
    }
}

impl HttpRemote {
    fn as_account(&self, account: Option<&Uuid>) -> Client {
        self.client
            .as_account(account.map(Uuid::to_string).as_deref())
    }
}

impl Remote for HttpRemote {
    fn get_image(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Manifest> {
        self.as_account(account)
            .get_image(&uuid.to_string())
            .map_err(remote_error)
    }

    fn chunk_source(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<Option<Box<dyn ChunkSource>>> {
        if !self.client.speaks_chunk_protocol() {
            return Ok(None);
        }
        Ok(Some(Box::new(HttpChunkSource {
            client: self.as_account(account),
            uuid: uuid.to_string(),
        })))
    }

    fn file_stream(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Box<dyn Read + Send>> {
        let resp = self
            .as_account(account)
            .file_stream(&uuid.to_string())
            .map_err(remote_error)?;
        Ok(Box::new(resp))
    }
}

/// The chunk protocol of an imgstore source, for one image's file.
pub struct HttpChunkSource {
    client: Client,
    uuid: String,
}

impl ChunkSource for HttpChunkSource {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.client
            .chunk_list(&self.uuid)
            .map_err(|e| crate::Error::source_failed("fetching the chunk list", e))
    }

    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.client.fetch_chunks(&self.uuid, ids, out)
    }
}
