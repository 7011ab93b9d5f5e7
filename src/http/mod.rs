//! The HTTP face of IMGAPI: routes by resource, the extractors for what
//! every request carries, the one error mapping, the bridge to the
//! engine's blocking I/O, request logging, and the one IMGAPI client. Rules
//! live in `imgapi` and the running service (its log, metrics and upkeep)
//! in `service`; this layer only translates.
//!
//! | module | |
//! | --- | --- |
//! | `routes` | one file per resource: images, files, icons, sharing, chunks, jobs, state |
//! | [`auth`] | HTTP Signature checks, for the IMGAPI port and the CloudAPI face |
//! | [`authkeys`] | the IMGAPI port's keys: config, key files, reloads |
//! | [`sign`] | signing requests as a client (key files, ssh-agent) |
//! | [`extract`] | query pairs, the caller (`?account=`), the path uuid |
//! | [`error`] | [`ApiError`] as a response |
//! | [`server`] | connections: limits, timeouts, graceful shutdown |
//! | [`tls`] | TLS on the listeners (rustls) |
//! | [`body`] | upload bodies as blocking readers (put slots), response bodies pulled in blocks (send budget) |
//! | [`client`] | the one IMGAPI client (copies, the CLI, tests) |
//! | [`remote`] | another datacenter through the client, for `imgapi::copy` |

pub mod auth;
pub mod authkeys;
pub mod body;
pub mod client;
pub(crate) mod cluster;
pub mod error;
pub mod extract;
pub mod remote;
mod routes;
pub(crate) use routes::{json_body, json_response, method_not_allowed, not_found};
pub mod server;
pub mod sign;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::imgapi::{ApiError, ApiResult, Code, Imgapi};
use crate::service::Service;
use error::{HttpError, HttpResult};

/// What every handler shares: the service, and what answering over HTTP
/// adds to it (limits, put slots, the send budget). Derefs to the
/// [`Service`], so a handler reads `st.api`, `st.log`, `st.metrics`.
pub struct AppState {
    pub service: Arc<Service>,
    /// Connection and body limits.
    pub limits: server::Limits,
    /// Put slots for uploads.
    pub uploads: body::Uploads,
    /// The budget of response bytes in flight.
    pub sender: body::Sender,
    /// Signed requests on this port (`"authType": "signature"`); None:
    /// anyone who reaches the port is an operator, as in upstream's dc
    /// mode.
    pub auth: Option<Arc<authkeys::ImgapiAuth>>,
    /// TLS on the IMGAPI port (`tls`); None: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The client a follower forwards writes with (`http::cluster`).
    pub forwarder: reqwest::Client,
}

impl std::ops::Deref for AppState {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.service
    }
}

impl AppState {
    /// The HTTP side of `service` within `limits`.
    pub fn new(service: Arc<Service>, limits: server::Limits) -> Self {
        AppState {
            uploads: body::Uploads::new(
                limits.max_uploads,
                limits.idle_timeout,
                Arc::clone(&service.metrics),
            ),
            sender: body::Sender::new(limits.send_buffer_bytes, Arc::clone(&service.metrics)),
            limits,
            service,
            auth: None,
            tls: None,
            forwarder: reqwest::Client::builder()
                .connect_timeout(FORWARD_CONNECT_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// The same, served over TLS with `tls`.
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// The same, with every request but `GET /ping` signed by `auth`'s
    /// keys.
    pub fn with_auth(mut self, auth: Option<Arc<authkeys::ImgapiAuth>>) -> Self {
        self.auth = auth;
        self
    }

    /// Runs IMGAPI work on the blocking pool (the engine does synchronous
    /// I/O); the one bridge every handler uses.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Imgapi) -> ApiResult<T> + Send + 'static,
    ) -> HttpResult<T> {
        let api = self.api.clone();
        tokio::task::spawn_blocking(move || f(&api))
            .await
            .map_err(|e| HttpError::from(ApiError::internal(format!("worker failed: {e}"))))?
            .map_err(HttpError::from)
    }
}

/// Versions of the API this server speaks (restify's `Accept-Version`).
const VERSIONS: [u32; 2] = [1, 2];
/// How long a follower waits to reach the writer it forwards a write to
/// before answering 503 (a writer's machine gone leaves no one to refuse
/// the connection).
const FORWARD_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The `Server` header.
pub fn server_header() -> String {
    format!("imgstore/{}", env!("CARGO_PKG_VERSION"))
}

/// The router with every IMGAPI route, the common headers and logging.
pub fn router(state: Arc<AppState>) -> Router {
    routes::routes()
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            common_headers,
        ))
        .with_state(state)
}

/// True when `Accept-Version` (a restify semver range) allows 1.0.0 or 2.0.0.
fn version_ok(range: &str) -> bool {
    version_allows(range, &VERSIONS)
}

/// True when a restify semver range allows one of the major `versions`.
pub(crate) fn version_allows(range: &str, versions: &[u32]) -> bool {
    let r = range.trim();
    if r.is_empty() || r == "*" || r == "x" {
        return true;
    }
    let newest = versions.iter().copied().max().unwrap_or_default();
    r.split("||").any(|alt| {
        let alt = alt.trim().trim_start_matches(['~', '^', '=', 'v']);
        if let Some(min) = alt.strip_prefix(">=") {
            return min
                .trim()
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .is_some_and(|m| m <= newest);
        }
        let major = alt.split('.').next().unwrap_or_default();
        major == "*" || major == "x" || major.parse::<u32>().is_ok_and(|m| versions.contains(&m))
    })
}

/// What the request log line and the metrics need of a request, taken
/// before it is handled; [`Exchange::finish`] completes both faces'
/// answers (IMGAPI's and CloudAPI's) the same way.
pub(crate) struct Exchange {
    start: Instant,
    pub req_id: String,
    pub method: Method,
    url: String,
    pub route: String,
}

impl Exchange {
    pub fn of(req: &Request) -> Self {
        Exchange {
            start: Instant::now(),
            req_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 128)
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            method: req.method().clone(),
            url: req.uri().to_string(),
            // Labels of the metrics: a route, never a caller's raw path
            // (each new label is a series kept for good).
            route: req.extensions().get::<MatchedPath>().map_or_else(
                || "(unmatched)".to_string(),
                |p| p.as_str().replace('{', ":").replace('}', ""),
            ),
        }
    }

    /// Adds `Server`, `x-request-id`, `x-response-time`, counts the
    /// request in the metrics and logs it as a bunyan line.
    pub fn finish(self, state: &AppState, mut resp: Response) -> Response {
        let elapsed = self.start.elapsed();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&server_header()) {
            h.insert(header::SERVER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.req_id) {
            h.insert(HeaderName::from_static("x-request-id"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&elapsed.as_millis().to_string()) {
            h.insert(HeaderName::from_static("x-response-time"), v);
        }
        let status = resp.status().as_u16();
        let err = resp.extensions().get::<ApiError>().cloned();
        if let Some(e) = err.as_ref().filter(|e| e.status() >= 500) {
            // A failure the client cannot fix: its message names the
            // request, so an operator finds the whole cause in the log.
            let mut told = e.clone();
            told.message = format!("{} (request {})", e.message, self.req_id);
            if let Ok(body) = serde_json::to_vec_pretty(&error::error_body(&told)) {
                resp.headers_mut().remove(header::CONTENT_LENGTH);
                *resp.body_mut() = axum::body::Body::from(body);
            }
        }
        // Methods hyper accepts are any token: only the standard ones name
        // a series.
        let method = match self.method {
            Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::OPTIONS => self.method.as_str(),
            _ => "OTHER",
        };
        state
            .metrics
            .request(&self.route, method, status, elapsed.as_secs_f64());
        // bunyan levels: 5xx ERROR, 4xx WARN, the rest INFO.
        let level = match status {
            500.. => 50,
            400..=499 => 40,
            _ => 30,
        };
        let mut fields = serde_json::Map::new();
        fields.insert("req_id".into(), self.req_id.into());
        fields.insert("route".into(), self.route.into());
        fields.insert("method".into(), self.method.as_str().into());
        fields.insert("url".into(), self.url.into());
        fields.insert("statusCode".into(), status.into());
        fields.insert("latency".into(), (elapsed.as_millis() as u64).into());
        if let Some(e) = &err
            && failed_on_the_bucket(e)
        {
            state.metrics.tier_failed();
        }
        if let Some(e) = err {
            let mut logged = serde_json::json!({ "code": e.wire_code(), "message": e.message });
            // The whole cause, with the paths, keys and library texts the
            // client is not told.
            if let (Some(cause), Some(o)) = (std::error::Error::source(&e), logged.as_object_mut())
            {
                o.insert("cause".into(), crate::error::chain(cause).into());
            }
            fields.insert("err".into(), logged);
        }
        let msg = if self.method == Method::HEAD || status < 400 {
            "handled"
        } else {
            "handled: error"
        };
        state.log.log(level, msg, fields);
        resp
    }
}

/// With `"authType": "signature"`, every request but `GET /ping` must be
/// signed by a configured key (the signer is an operator; `account` means
/// what it always means).
fn signed(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(auth) = &state.auth else {
        return Ok(());
    };
    if req.method() == Method::GET && req.uri().path() == "/ping" {
        return Ok(());
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    auth.authenticate(
        req.method(),
        target,
        req.headers(),
        std::time::SystemTime::now(),
    )
    .map(|_| ())
    .map_err(|e| ApiError::new(Code::InvalidCredentials, e.0))
}

/// True when a request failed because the remote tier's object store did
/// (an activation that could not publish, a read of an object that did not
/// come): such failures count with the tier's own in `/metrics`.
fn failed_on_the_bucket(e: &ApiError) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if matches!(
            c.downcast_ref::<crate::Error>(),
            Some(crate::Error::Remote { .. })
        ) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Checks `Accept-Version`, adds the common headers and IMGAPI's
/// `x-server-name`, and logs the request.
async fn common_headers(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let exchange = Exchange::of(&req);
    let version = req
        .headers()
        .get("accept-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = match version {
        Some(v) if !version_ok(&v) => HttpError::from(ApiError::new(
            Code::InvalidVersion,
            format!(
                "{v} is not supported by {} {}",
                exchange.method, exchange.route
            ),
        ))
        .into_response(),
        _ => match signed(&state, &req) {
            Ok(()) => {
                let routed = cluster::route(Arc::clone(&state), cluster::Face::Imgapi, req, next);
                as_imgapi_error(routed.await).await
            }
            Err(e) => HttpError::from(e).into_response(),
        },
    };
    if let Ok(v) = HeaderValue::from_str(&state.api.config().datacenter_name) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-server-name"), v);
    }
    exchange.finish(&state, resp)
}

/// An error answer the framework made (a body over the limit, a malformed
/// request part) as an IMGAPI error body with a code, like every other:
/// clients branch on `code`.
pub(crate) async fn as_imgapi_error(resp: Response) -> Response {
    let status = resp.status();
    if status.as_u16() < 400 || resp.extensions().get::<ApiError>().is_some() {
        return resp;
    }
    let code = match status.as_u16() {
        400 => Code::BadRequestError,
        404 => Code::ResourceNotFound,
        405 => Code::MethodNotAllowedError,
        413 => Code::RequestEntityTooLarge,
        415 => Code::UnsupportedMediaType,
        _ => Code::InternalError,
    };
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut err = ApiError::new(code, message);
    if code.status() != status.as_u16() {
        // A status without a code of its own keeps its status.
        err.foreign = Some(crate::imgapi::error::ForeignCode {
            code: code.as_str().to_string(),
            status: status.as_u16(),
        });
    }
    let mut resp = HttpError::from(err).into_response();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was never read: the connection cannot carry
        // another request, so the client must not reuse it.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_version_ranges() {
        for ok in [
            "*", "~1", "~2", "1.0.0", "2.0.0", "~1 || ~2", ">=1", "^2.0.0",
        ] {
            assert!(super::version_ok(ok), "{ok}");
        }
        for bad in ["~99", "3.0.0", "~0.1"] {
            assert!(!super::version_ok(bad), "{bad}");
        }
    }
}
