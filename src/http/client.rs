//! The one IMGAPI client. The daemon's copies from other datacenters, the
//! command-line client and the tests all talk to IMGAPI servers (ours, or
//! upstream's) through it, so an error body is read one way everywhere:
//! its `code`, `message` and `errors[]`, with the URL and the status.
//!
//! Every answer is read into its wire type: the manifest, a job, the
//! lineage, settings, the daemon's state; only the payloads the spec leaves
//! free-form stay JSON.
//!
//! Blocking, because its callers run on threads (copies, the CLI).

use std::io::Read;
use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{Gc, Ping, State, Verify};
use crate::format::{self, ChunkList};
use crate::id::ChunkId;
use crate::imgapi::jobs::JobView;
use crate::imgapi::lineage::Lineage;
use crate::imgapi::manifest::Manifest;
use crate::imgapi::share::AccountSettings;
use crate::transfer::split_records;

/// What a receiver of transfer version 2 adds to its chunk protocol
/// requests: it takes group records and chunk lists of version 2. A
/// source of version 1 ignores it.
const GROUPS: (&str, &str) = ("groups", "true");

/// An error body as IMGAPI (and restify) sends it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub errors: Vec<ErrorField>,
}

/// One entry of an error body's `errors`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ErrorField {
    pub field: String,
    pub code: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// What can go wrong talking to an IMGAPI server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an IMGAPI error body.
    #[error("{} ({}): {}{}", url, body.code, body.message, details(&body.errors))]
    Api {
        url: String,
        status: u16,
        body: ErrorBody,
    },
    /// The server answered an error status without an IMGAPI body.
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    /// No answer: the connection failed, was refused or timed out.
    #[error("cannot reach {url}: {}", causes(source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that does not decode.
    #[error("bad answer from {url}: {detail}")]
    Decode { url: String, detail: String },
    /// The request could not be signed (the key is gone, ssh-agent
    /// refused).
    #[error("signing the request to {url}: {detail}")]
    Sign { url: String, detail: String },
    /// Not a usable server URL.
    #[error("{url:?} is not an http:// or https:// URL{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    BadUrl { url: String, reason: Option<String> },
}

impl ClientError {
    /// The error body's code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// ` (field: message; ...)` for an error body's fields.
fn details(errors: &[ErrorField]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|e| match &e.message {
            Some(m) => format!("{}: {m}", e.field),
            None => format!("{}: {}", e.field, e.code),
        })
        .collect();
    format!(" ({})", parts.join("; "))
}

/// An error and its causes, innermost last, without repeats: reqwest's
/// own text ("error sending request") says little; the cause
/// ("Connection refused") says what happened.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The answer to ImportFromDatacenter: the job, and where to poll it.
#[derive(Clone, Debug)]
pub struct ImportStarted {
    pub image_uuid: String,
    pub job_uuid: String,
    /// The `workflow-api` header: the server that runs the job.
    pub workflow_api: Option<String>,
}

/// ImportFromDatacenter's body.
#[derive(Deserialize)]
struct StartedBody {
    image_uuid: Option<String>,
    #[serde(default)]
    job_uuid: String,
}

/// A client for one IMGAPI server, acting as one account (or as operator).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    account: Option<String>,
    http: reqwest::blocking::Client,
    /// Signs every request (a server with `"authType": "signature"`).
    signer: Option<std::sync::Arc<super::sign::Signer>>,
}

/// Requests of one page of ListImages, and the page size IMGAPI caps.
pub const LIST_PAGE: usize = 1000;

/// `base` as a server URL: http or https with a host, no trailing slash.
fn parse_base(base: &str) -> ClientResult<Url> {
    let url = Url::parse(base.trim_end_matches('/')).map_err(|e| ClientError::BadUrl {
        url: base.to_string(),
        reason: Some(e.to_string()),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ClientError::BadUrl {
            url: base.to_string(),
            reason: None,
        });
    }
    Ok(url)
}

impl Client {
    /// A client for the server at `base` (`http://host:port`), with a
    /// connect timeout and `timeout` for each whole request (`None`: no
    /// limit, for long downloads).
    pub fn new(base: &str, timeout: Option<Duration>) -> ClientResult<Self> {
        let url = parse_base(base)?;
        let http = Self::pool(timeout).map_err(|e| ClientError::BadUrl {
            url: base.to_string(),
            reason: Some(causes(&e)),
        })?;
        Ok(Self {
            base: url,
            account: None,
            http,
            signer: None,
        })
    }

    /// A connection pool for [`Client::on_pool`]: a connect timeout and
    /// `timeout` for each whole request (`None`: no limit). reqwest's
    /// blocking client defaults to 30 s; a copy or an upload must be able
    /// to take longer.
    pub fn pool(timeout: Option<Duration>) -> reqwest::Result<reqwest::blocking::Client> {
        reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .build()
    }

    /// A client for the server at `base` on an existing pool, as operator:
    /// many servers, one set of connections and one runtime thread.
    pub fn on_pool(base: &str, http: reqwest::blocking::Client) -> ClientResult<Self> {
        Ok(Self {
            base: parse_base(base)?,
            account: None,
            http,
            signer: None,
        })
    }

    /// The same server, as `account` (`None`: operator).
    pub fn as_account(&self, account: Option<&str>) -> Self {
        Self {
            account: account.map(str::to_string),
            ..self.clone()
        }
    }

    /// The same server, every request signed by `signer` (a server with
    /// `"authType": "signature"`).
    pub fn signed_by(&self, signer: Option<std::sync::Arc<super::sign::Signer>>) -> Self {
        Self {
            signer,
            ..self.clone()
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// `path` on this server with `query` and the account.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> ClientResult<Url> {
        let mut url =
            Url::parse(&format!("{}{path}", self.base())).map_err(|e| ClientError::BadUrl {
                url: format!("{}{path}", self.base()),
                reason: Some(e.to_string()),
            })?;
        if !query.is_empty() || self.account.is_some() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            if let Some(a) = &self.account {
                q.append_pair("account", a);
            }
        }
        Ok(url)
    }

    /// Sends a request; an error status becomes a [`ClientError`].
    pub fn send(&self, req: RequestBuilder, url: &Url) -> ClientResult<Response> {
        let transport = |source| ClientError::Transport {
            url: url.to_string(),
            source,
        };
        let mut req = req
            .header("accept-version", "*")
            .header("accept", "application/json")
            .build()
            .map_err(transport)?;
        if let Some(signer) = &self.signer {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let target = match req.url().query() {
                Some(q) => format!("{}?{q}", req.url().path()),
                None => req.url().path().to_string(),
            };
            let auth = signer
                .authorization(req.method().as_str(), &target, &date)
                .map_err(|e| ClientError::Sign {
                    url: url.to_string(),
                    detail: e.0,
                })?;
            let h = req.headers_mut();
            for (name, value) in [("date", date), ("authorization", auth)] {
                if let Ok(v) = reqwest::header::HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
        }
        let resp = self.http.execute(req).map_err(transport)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_of(url, resp))
        }
    }

    fn json<T: DeserializeOwned>(&self, resp: Response, url: &Url) -> ClientResult<T> {
        let bytes = resp.bytes().map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: causes(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    /// GET `path`, its answer read as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> ClientResult<T> {
        let url = self.url(path, query)?;
        let resp = self.send(self.http.get(url.clone()), &url)?;
        self.json(resp, &url)
    }

    /// POST a JSON body to `path`; the answer read as `T` (an empty one as
    /// `null`), with its headers.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &(impl Serialize + ?Sized),
    ) -> ClientResult<(T, reqwest::header::HeaderMap)> {
        let url = self.url(path, query)?;
        let resp = self.send(self.http.post(url.clone()).json(body), &url)?;
        let headers = resp.headers().clone();
        let bytes = resp.bytes().map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: causes(&e),
        })?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let v = serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        Ok((v, headers))
    }

    /// AdminImportImage from another IMGAPI: manifest and file of `uuid`
    /// at `source`.
    pub fn admin_import_from(&self, uuid: &str, source: &str) -> ClientResult<Manifest> {
        self.post(
            &format!("/images/{uuid}"),
            &[("action", "import"), ("source", source)],
            &Value::Null,
        )
        .map(|(v, _)| v)
    }

    /// `GET /state`: the daemon's store-wide figures (operators).
    pub fn state(&self) -> ClientResult<State> {
        self.get("/state", &[])
    }

    /// `POST /state?action=ACTION` with more query pairs (operators), the
    /// answer read as `T` (`()` for an action that answers nothing).
    pub fn state_action<T: DeserializeOwned>(
        &self,
        action: &str,
        query: &[(&str, &str)],
    ) -> ClientResult<T> {
        let mut q = vec![("action", action)];
        q.extend_from_slice(query);
        self.post("/state", &q, &Value::Null).map(|(v, _)| v)
    }

    /// Garbage collection now, at `threshold` (the server's default if
    /// `None`).
    pub fn gc(&self, threshold: Option<f64>) -> ClientResult<Gc> {
        let t = threshold.map(|t| t.to_string());
        let q: Vec<(&str, &str)> = t.iter().map(|t| ("threshold", t.as_str())).collect();
        self.state_action("gc", &q)
    }

    /// Checks every record and refcount of the live store, and every
    /// object in the bucket (`read_data`: their bytes too; `repair`: fixes
    /// what can be fixed).
    pub fn verify(&self, read_data: bool, repair: bool) -> ClientResult<Verify> {
        let mut q = Vec::new();
        if read_data {
            q.push(("read_data", "true"));
        }
        if repair {
            q.push(("repair", "true"));
        }
        self.state_action("verify", &q)
    }

    /// An account's settings (`image_share_trusted_accounts`).
    pub fn settings(&self, account: &str) -> ClientResult<AccountSettings> {
        self.get(&format!("/accounts/{account}/settings"), &[])
    }

    /// Replaces the settings `body` names.
    pub fn put_settings(&self, account: &str, body: &Value) -> ClientResult<AccountSettings> {
        self.post(&format!("/accounts/{account}/settings"), &[], body)
            .map(|(v, _)| v)
    }

    pub fn ping(&self) -> ClientResult<Ping> {
        self.get("/ping", &[])
    }

    /// The server's datacenter name, from the `x-server-name` header every
    /// imgstore answer carries (`None` from a server that does not send it).
    pub fn datacenter_name(&self) -> ClientResult<Option<String>> {
        let url = self.url("/ping", &[])?;
        let resp = self.send(self.http.get(url.clone()), &url)?;
        Ok(resp
            .headers()
            .get("x-server-name")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    pub fn get_image(&self, uuid: &str) -> ClientResult<Manifest> {
        self.get(&format!("/images/{uuid}"), &[])
    }

    /// One page of ListImages.
    pub fn list_images(&self, query: &[(&str, &str)]) -> ClientResult<Vec<Manifest>> {
        self.get("/images", query)
    }

    /// Every image ListImages finds, following its inclusive `marker` page
    /// by page as sdc-clients does.
    pub fn list_all_images(&self, query: &[(&str, &str)]) -> ClientResult<Vec<Manifest>> {
        let mut out: Vec<Manifest> = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = query
                .iter()
                .filter(|(k, _)| *k != "marker" && *k != "limit")
                .copied()
                .collect();
            if let Some(m) = &marker {
                q.push(("marker", m));
            }
            let page = self.list_images(&q)?;
            let full = page.len() >= LIST_PAGE;
            let mut fresh = page.into_iter().peekable();
            // The marker is inclusive: the page starts with the last image
            // of the previous one.
            if marker.is_some() && fresh.peek().map(|i| i.uuid.to_string()) == marker {
                fresh.next();
            }
            let before = out.len();
            out.extend(fresh);
            let next = out.last().map(|i| i.uuid.to_string());
            if !full || out.len() == before || next == marker {
                return Ok(out);
            }
            marker = next;
        }
    }

    pub fn create_image(&self, manifest: &Value) -> ClientResult<Manifest> {
        Ok(self.post("/images", &[], manifest)?.0)
    }

    /// AddImageFile with `source`: the daemon pulls the file of `uuid`
    /// from another IMGAPI.
    pub fn add_file_from_source(&self, uuid: &str, source: &str) -> ClientResult<Manifest> {
        let url = self.url(&format!("/images/{uuid}/file"), &[("source", source)])?;
        let resp = self.send(self.http.put(url.clone()), &url)?;
        self.json(resp, &url)
    }

    /// AddImageFile from a stream of `len` bytes.
    pub fn add_file(
        &self,
        uuid: &str,
        compression: &str,
        body: impl Read + Send + 'static,
        len: u64,
    ) -> ClientResult<Manifest> {
        let url = self.url(
            &format!("/images/{uuid}/file"),
            &[("compression", compression)],
        )?;
        let req = self
            .http
            .put(url.clone())
            .header("content-type", "application/octet-stream")
            .body(reqwest::blocking::Body::sized(body, len));
        let resp = self.send(req, &url)?;
        self.json(resp, &url)
    }

    /// `POST /images/:uuid?action=ACTION`.
    pub fn image_action(&self, uuid: &str, action: &str, body: &Value) -> ClientResult<Manifest> {
        Ok(self
            .post(&format!("/images/{uuid}"), &[("action", action)], body)?
            .0)
    }

    /// AddImageAcl (`add`) or RemoveImageAcl.
    pub fn change_acl(&self, uuid: &str, add: bool, accounts: &[&str]) -> ClientResult<Manifest> {
        let action = if add { "add" } else { "remove" };
        Ok(self
            .post(
                &format!("/images/{uuid}/acl"),
                &[("action", action)],
                &serde_json::json!(accounts),
            )?
            .0)
    }

    pub fn delete_image(&self, uuid: &str) -> ClientResult<()> {
        let url = self.url(&format!("/images/{uuid}"), &[])?;
        self.send(self.http.delete(url.clone()), &url).map(|_| ())
    }

    pub fn clone_image(&self, uuid: &str) -> ClientResult<Manifest> {
        Ok(self
            .post(
                &format!("/images/{uuid}/clone"),
                &[],
                &serde_json::json!({}),
            )?
            .0)
    }

    /// ImportFromDatacenter: this server pulls `uuid` from `datacenter`.
    pub fn import_from_datacenter(
        &self,
        uuid: &str,
        datacenter: &str,
    ) -> ClientResult<ImportStarted> {
        let (v, headers): (StartedBody, _) = self.post(
            &format!("/images/{uuid}"),
            &[
                ("action", "import-from-datacenter"),
                ("datacenter", datacenter),
            ],
            &serde_json::json!({}),
        )?;
        Ok(ImportStarted {
            image_uuid: v.image_uuid.unwrap_or_else(|| uuid.to_string()),
            job_uuid: v.job_uuid,
            workflow_api: headers
                .get("workflow-api")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
        })
    }

    pub fn job(&self, uuid: &str) -> ClientResult<JobView> {
        self.get(&format!("/jobs/{uuid}"), &[])
    }

    pub fn image_jobs(&self, uuid: &str) -> ClientResult<Vec<JobView>> {
        self.get(&format!("/images/{uuid}/jobs"), &[])
    }

    pub fn lineage(&self, uuid: &str) -> ClientResult<Lineage> {
        self.get(&format!("/images/{uuid}/lineage"), &[])
    }

    /// GetImageFile as a stream (no overall timeout: files are large).
    pub fn file_stream(&self, uuid: &str) -> ClientResult<Response> {
        let url = self.url(&format!("/images/{uuid}/file"), &[])?;
        self.send(
            self.http
                .get(url.clone())
                .timeout(Duration::from_secs(24 * 3600)),
            &url,
        )
    }

    /// GetImageFile from byte `offset` on (a `Range` request when it is
    /// not 0: the answer is 206 with the rest, or 200 with the whole file
    /// from a server that ignores ranges).
    pub fn file_from(&self, uuid: &str, offset: u64) -> ClientResult<Response> {
        let url = self.url(&format!("/images/{uuid}/file"), &[])?;
        let mut req = self
            .http
            .get(url.clone())
            .timeout(Duration::from_secs(24 * 3600));
        if offset > 0 {
            req = req.header("range", format!("bytes={offset}-"));
        }
        self.send(req, &url)
    }

    /// The chunk protocol: the chunk list of an image's file.
    pub fn chunk_list(&self, uuid: &str) -> ClientResult<ChunkList> {
        let url = self.url(&format!("/images/{uuid}/file/chunks"), &[GROUPS])?;
        let resp = self.send(self.http.get(url.clone()), &url)?;
        let body = resp.bytes().map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: causes(&e),
        })?;
        format::decode_chunk_list(&body).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: format!("bad chunk list: {e}"),
        })
    }

    /// The chunk protocol: records of `ids` (group records among them:
    /// this client takes transfer version 2), handed to `out` one by one.
    pub fn fetch_chunks(
        &self,
        uuid: &str,
        ids: &[ChunkId],
        out: &mut dyn FnMut(&[u8]) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let url = self
            .url(&format!("/images/{uuid}/file/chunks"), &[GROUPS])
            .map_err(|e| crate::Error::source_failed("fetching chunks", e))?;
        let req = self
            .http
            .post(url.clone())
            .header("content-type", "application/octet-stream")
            .body(format::encode_id_list(ids));
        let resp = self
            .send(req, &url)
            .map_err(|e| crate::Error::source_failed("fetching chunks", e))?;
        // Large reads: each read of a blocking response crosses threads.
        split_records(std::io::BufReader::with_capacity(1 << 20, resp), out)
    }

    /// Whether the server speaks imgstore's chunk protocol. A probe, not a
    /// requirement: only a clear yes (a ping answered with the `imgstore`
    /// field) counts; anything else (an error status, a missing route, a
    /// proxy that does not forward `/ping`, a body that is not ours, no
    /// answer) is a no, and a copy goes through the plain file download as
    /// upstream IMGAPI's own does.
    pub fn speaks_chunk_protocol(&self) -> bool {
        let Ok(url) = self.url("/ping", &[]) else {
            return false;
        };
        let answer = self
            .send(self.http.get(url.clone()), &url)
            .and_then(|resp| self.json::<Value>(resp, &url));
        answer.is_ok_and(|v| v.get("imgstore").is_some_and(Value::is_string))
    }
}

/// The one way an error answer is read.
fn error_of(url: &Url, resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let url = url.to_string();
    match resp
        .bytes()
        .ok()
        .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok())
    {
        Some(body) => ClientError::Api { url, status, body },
        None => ClientError::Status { url, status },
    }
}
