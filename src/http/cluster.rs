//! What a cluster member's IMGAPI port does with a request beyond the
//! routes: on a follower, a write is forwarded to the writer, its body
//! streamed through and the writer's answer streamed back; on a writer
//! (and on any daemon with `"durability": "remote"`), a write is answered
//! only once the bucket has it ([`Store::publish`], which batches the
//! writes that wait at once into one publication).
//!
//! Reads never leave the member: a follower serves them from its copy of
//! the newest publication (`daemon::cluster`).
//!
//! The CloudAPI face goes through the same [`route`] once it has checked
//! the signature: a follower's face forwards a write to the writer's
//! IMGAPI port marked [`FACE`], and the writer hands it to its own face,
//! which checks the signature again and answers once published.
//!
//! [`Store::publish`]: crate::store::Store::publish

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::HttpError;
use crate::imgapi::{ApiError, Code};
use crate::service::cluster::{Membership, Role};

/// Set on a forwarded request: a member never forwards one twice (two
/// members that each think the other writes would bounce it forever).
const FORWARDED: &str = "x-imgstore-forwarded-by";

/// Set on a CloudAPI request a follower's face forwards: the writer's
/// IMGAPI port (the one address the lease names) hands it to its own
/// CloudAPI face, whose signature check it then passes like any other.
pub(crate) const FACE: &str = "x-imgstore-face";

/// Which of a member's faces a request came in by: a forwarded request
/// goes to the same face on the writer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Face {
    Imgapi,
    CloudApi,
}

/// How often a forwarded request looks whether its writer was superseded.
const WATCH_WRITER: std::time::Duration = std::time::Duration::from_millis(250);

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a request that changes what the datacenter holds (every
/// method but GET and HEAD), apart from the member's own operations
/// (`/ping`, key reloads, dropping caches), which concern only it. GC and
/// verify (`POST /state`) run where the writer is.
pub(crate) fn is_write(req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return false;
    }
    match req.uri().path() {
        "/ping" | "/authkeys/reload" => false,
        "/state" => !req
            .uri()
            .query()
            .unwrap_or("")
            .contains("action=dropcaches"),
        _ => true,
    }
}

/// Runs `req`, which came in by `face`, here; forwards it; or runs it and
/// publishes before the answer, as the module docs say.
pub(crate) async fn route(state: Arc<AppState>, face: Face, req: Request, next: Next) -> Response {
    if !is_write(&req) {
        return next.run(req).await;
    }
    if let Some(m) = &state.cluster
        && m.role() == Role::Follower
    {
        return forward(&state, face, m, req).await;
    }
    let own_operation = req.uri().path() == "/state";
    let resp = next.run(req).await;
    if own_operation || !resp.status().is_success() || !publishes(&state) {
        return resp;
    }
    let api = state.api.clone();
    match tokio::task::spawn_blocking(move || api.store().publish()).await {
        Ok(Ok(())) => resp,
        Ok(Err(e)) => {
            let mut err = ApiError::from(e);
            err.message = format!(
                "{}: the change was made but is not acknowledged (it did not reach the bucket); retry",
                err.message
            );
            HttpError::from(err).into_response()
        }
        Err(e) => {
            HttpError::from(ApiError::internal(format!("worker failed: {e}"))).into_response()
        }
    }
}

/// True when writes are acknowledged only once in the bucket: remote
/// durability, or a cluster (whose followers and failover read only
/// what was published).
fn publishes(state: &AppState) -> bool {
    state.cluster.is_some() || state.api.store().remote_durability()
}

/// Sends `req` to the writer at `writer` (to its CloudAPI face through
/// its IMGAPI port when `face` says so) and its answer back.
async fn forward(state: &AppState, face: Face, m: &Membership, req: Request) -> Response {
    let (writer, holder) = (m.writer(), m.holder());
    let unavailable = |msg: &str| {
        HttpError::from(ApiError::new(Code::ServiceUnavailableError, msg)).into_response()
    };
    if req.headers().contains_key(FORWARDED) {
        return unavailable(
            "the datacenter's writer is changing (a forwarded write reached another follower); retry shortly",
        );
    }
    let Some(writer) = writer else {
        return unavailable(
            "the datacenter has no writer at the moment (a failover is under way); retry shortly",
        );
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("{}{target}", writer.trim_end_matches('/'));
    let (parts, body) = req.into_parts();
    let mut out = state
        .forwarder
        .request(parts.method.clone(), &url)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    out = out.header(HeaderName::from_static(FORWARDED), holder);
    if face == Face::CloudApi {
        out = out.header(HeaderName::from_static(FACE), "cloudapi");
    }
    // A writer stopped mid-request (a paused VM) never answers: once the
    // lease names another, the client hears so and retries there.
    let superseded = async {
        loop {
            tokio::time::sleep(WATCH_WRITER).await;
            if m.writer().as_deref() != Some(writer.as_str()) {
                return;
            }
        }
    };
    let sent = tokio::select! {
        sent = out.send() => sent,
        () = superseded => {
            return unavailable(
                "the datacenter's writer changed while this write was forwarded to it; retry",
            );
        }
    };
    match sent {
        Ok(answer) if answer.status().as_u16() >= 400 => writers_error(answer).await,
        Ok(answer) => {
            let mut resp = Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    resp = resp.header(name.as_str(), value.as_bytes());
                }
            }
            resp.body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|e| unavailable(&format!("the writer's answer: {e}")))
        }
        Err(e) => {
            let err = ApiError::new(
                Code::ServiceUnavailableError,
                "the datacenter's writer did not answer; retry shortly",
            )
            .caused_by(crate::Error::remote(format!("forwarding to {url}"), e));
            HttpError::from(err).into_response()
        }
    }
}

/// The writer's error answer as this member's: the same code and message
/// (without the writer's request id: this member adds its own).
async fn writers_error(answer: reqwest::Response) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    let status = answer.status().as_u16();
    let body = answer.bytes().await.unwrap_or_default();
    let err = match serde_json::from_slice::<Body>(&body) {
        Ok(b) => {
            let message = match b.message.rfind(" (request ") {
                Some(at) if b.message.ends_with(')') => b.message[..at].to_string(),
                _ => b.message,
            };
            ApiError::passthrough(status, &b.code, message)
        }
        Err(_) => ApiError::passthrough(
            status,
            "InternalError",
            String::from_utf8_lossy(&body).trim().to_string(),
        ),
    };
    HttpError::from(err).into_response()
}
