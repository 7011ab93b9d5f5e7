//! The other datacenter, over HTTP: GetImage, the chunk protocol (a chunk
//! list and batch fetches of records as stored) and, for a plain IMGAPI
//! without it, the whole file. Blocking, because transfers run on their own
//! threads.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::{self, ChunkList};
use crate::id::ChunkId;
use crate::imgapi::import::{Remote, RemoteFactory};
use crate::imgapi::{ApiError, ApiResult};
use crate::transfer::{ChunkSource, split_records};

/// Makes [`HttpRemote`]s sharing one connection pool.
pub struct HttpRemotes {
    client: reqwest::blocking::Client,
}

impl HttpRemotes {
    /// `timeout` bounds each request, so a stalled source fails the batch
    /// (which is retried) instead of hanging the copy.
    pub fn new(timeout: Duration) -> std::result::Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(timeout)
                .build()?,
        })
    }
}

impl RemoteFactory for HttpRemotes {
    fn remote(&self, url: &str) -> Box<dyn Remote> {
        Box::new(HttpRemote {
            base: url.trim_end_matches('/').to_string(),
            client: self.client.clone(),
        })
    }
}

/// One source datacenter.
pub struct HttpRemote {
    base: String,
    client: reqwest::blocking::Client,
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        "RemoteSourceError",
        format!("error contacting remote source {url}: {e}"),
    )
}

/// A remote error body, passed through with its code.
fn remote_error(resp: reqwest::blocking::Response) -> ApiError {
    let status = resp.status();
    let body: Option<Value> = resp.json().ok();
    let code = body
        .as_ref()
        .and_then(|b| b.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("RemoteSourceError")
        .to_string();
    let message = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("remote answered {status}"));
    ApiError::new(code, message)
}

fn with_account(url: String, account: Option<&Uuid>) -> String {
    match account {
        Some(a) => format!("{url}?account={a}"),
        None => url,
    }
}

impl Remote for HttpRemote {
    fn get_image(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Value> {
        let url = with_account(format!("{}/images/{uuid}", self.base), account);
        let resp = self
            .client
            .get(&url)
            .header("accept-version", "*")
            .send()
            .map_err(|e| unreachable(&url, e))?;
        if !resp.status().is_success() {
            return Err(remote_error(resp));
        }
        resp.json().map_err(|e| unreachable(&url, e))
    }

    fn chunk_source(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<Option<Box<dyn ChunkSource>>> {
        let url = format!("{}/ping", self.base);
        let ping: Value = self
            .client
            .get(&url)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| unreachable(&url, e))?;
        if ping.get("imgstore").is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(HttpChunkSource {
            files: with_account(format!("{}/images/{uuid}/file/chunks", self.base), account),
            client: self.client.clone(),
        })))
    }

    fn file_stream(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Box<dyn Read + Send>> {
        let url = with_account(format!("{}/images/{uuid}/file", self.base), account);
        // The whole file may take long: no overall timeout here.
        let resp = self
            .client
            .get(&url)
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .map_err(|e| unreachable(&url, e))?;
        if !resp.status().is_success() {
            return Err(remote_error(resp));
        }
        Ok(Box::new(resp))
    }
}

/// The chunk protocol of an imgstore source, for one image's file.
pub struct HttpChunkSource {
    files: String,
    client: reqwest::blocking::Client,
}

fn io_err(url: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!("talking to {url}"),
        std::io::Error::other(e.to_string()),
    )
}

impl ChunkSource for HttpChunkSource {
    fn chunk_list(&self) -> Result<ChunkList> {
        let resp = self
            .client
            .get(&self.files)
            .send()
            .map_err(|e| io_err(&self.files, e))?;
        if !resp.status().is_success() {
            return Err(io_err(&self.files, remote_error(resp)));
        }
        let body = resp.bytes().map_err(|e| io_err(&self.files, e))?;
        format::decode_chunk_list(&body)
            .map_err(|e| Error::InvalidInput(format!("source sent a bad chunk list: {e}")))
    }

    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let resp = self
            .client
            .post(&self.files)
            .header("content-type", "application/octet-stream")
            .body(format::encode_id_list(ids))
            .send()
            .map_err(|e| io_err(&self.files, e))?;
        if !resp.status().is_success() {
            return Err(io_err(&self.files, remote_error(resp)));
        }
        // Large reads: each read of a blocking response crosses threads.
        split_records(std::io::BufReader::with_capacity(1 << 20, resp), out)
    }
}
