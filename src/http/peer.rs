//! The client for other IMGAPI servers (a source of `import?source=` and
//! `file?source=`). Remote errors keep their status and body.

use axum::http::StatusCode;
use futures_util::TryStreamExt;
use serde_json::Value;

use super::error::HttpError;
use crate::imgapi::ApiError;

/// A remote IMGAPI (or imgstore) at `base`.
#[derive(Clone)]
pub struct Peer {
    base: String,
    client: reqwest::Client,
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> HttpError {
    ApiError::new(
        "RemoteSourceError",
        format!("error contacting remote source {url}: {e}"),
    )
    .into()
}

impl Peer {
    pub fn new(base: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn pass_through(url: &str, resp: reqwest::Response) -> HttpError {
        let status = resp.status();
        let body: Option<Value> = resp.json().await.ok();
        let code = body
            .as_ref()
            .and_then(|b| b.get("code"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("remote error")
            .to_string();
        let code = code.unwrap_or_else(|| "RemoteSourceError".to_string());
        let _ = url;
        HttpError {
            error: ApiError::new(code, message),
            status: StatusCode::from_u16(status.as_u16()).ok(),
        }
    }

    /// `GET /images/:uuid[?account=]` at the peer.
    pub async fn get_image(
        &self,
        uuid: &uuid::Uuid,
        account: Option<&uuid::Uuid>,
    ) -> Result<Value, HttpError> {
        let mut url = format!("{}/images/{uuid}", self.base);
        if let Some(a) = account {
            url.push_str(&format!("?account={a}"));
        }
        let resp = self
            .client
            .get(&url)
            .header("accept-version", "*")
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        if !resp.status().is_success() {
            return Err(Self::pass_through(&url, resp).await);
        }
        resp.json().await.map_err(|e| unreachable(&url, e))
    }

    /// `GET /images/:uuid/file` at the peer, as a byte stream.
    pub async fn get_file(
        &self,
        uuid: &uuid::Uuid,
    ) -> Result<
        impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + use<>,
        HttpError,
    > {
        let url = format!("{}/images/{uuid}/file", self.base);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        if !resp.status().is_success() {
            return Err(Self::pass_through(&url, resp).await);
        }
        Ok(resp.bytes_stream().map_err(std::io::Error::other))
    }
}
