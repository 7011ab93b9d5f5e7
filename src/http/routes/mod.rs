//! The IMGAPI routes, one file per resource. A handler takes its request
//! parts from the extractors, calls one `imgapi` rule through
//! [`AppState::run`], and shapes the answer with the helpers here.

mod chunks;
mod files;
mod icons;
mod images;
mod jobs;
mod sharing;
mod state;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::AppState;
use super::error::{HttpError, HttpResult};
use crate::imgapi::{ApiError, Code, Image};

type St = axum::extract::State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ping", get(state::ping))
        .route("/images", get(images::list).post(images::create))
        .route(
            "/images/{uuid}",
            get(images::get).post(images::action).delete(images::delete),
        )
        .route("/images/{uuid}/file", get(files::get).put(files::put))
        .route("/images/{uuid}/file/from-url", post(files::from_url))
        .route(
            "/images/{uuid}/file/chunks",
            get(chunks::list).post(chunks::fetch),
        )
        .route("/images/{uuid}/jobs", get(jobs::of_image))
        .route("/jobs/{uuid}", get(jobs::get))
        .route(
            "/images/{uuid}/icon",
            get(icons::get).put(icons::put).delete(icons::delete),
        )
        .route("/images/{uuid}/acl", post(sharing::acl))
        .route("/images/{uuid}/clone", post(sharing::clone))
        .route("/images/{uuid}/clone-plan", get(sharing::plan_clone))
        .route("/images/{uuid}/lineage", get(sharing::lineage))
        .route("/accounts/{uuid}", get(sharing::account))
        .route(
            "/accounts/{uuid}/settings",
            get(sharing::get_settings)
                .put(sharing::put_settings)
                .post(sharing::put_settings),
        )
        .route("/state", get(state::get).post(state::post))
        .route("/authkeys/reload", post(state::reload_auth_keys))
        .route("/metrics", get(state::metrics))
}

/// Unknown routes, as restify answers them.
pub async fn not_found(uri: OriginalUri) -> HttpError {
    ApiError::no_such_path(uri.path()).into()
}

pub async fn method_not_allowed(req: Request) -> HttpError {
    ApiError::new(
        Code::MethodNotAllowedError,
        format!("{} is not allowed", req.method()),
    )
    .into()
}

/// JSON indented by 2 spaces, as restify sends it.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha1::digest(bytes)))
}

fn etag_matches(header_value: Option<&HeaderValue>, etag: &str) -> Option<bool> {
    let v = header_value?.to_str().ok()?;
    Some(
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.trim_matches('"') == etag.trim_matches('"')),
    )
}

/// An image manifest with its Etag; honours If-None-Match.
fn image_response(img: &Image, admin: bool, headers: &HeaderMap) -> Response {
    let body = serde_json::to_vec_pretty(&img.manifest(admin)).unwrap_or_default();
    let etag = etag_of(&body);
    if etag_matches(headers.get(header::IF_NONE_MATCH), &etag) == Some(true) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    r
}

/// The manifest after a change (no conditional headers apply).
fn changed_image(img: &Image) -> Response {
    image_response(img, false, &HeaderMap::new())
}

/// A JSON request body: empty means `{}`; anything but JSON is refused.
pub(crate) fn json_body(headers: &HeaderMap, body: &Bytes) -> HttpResult<Value> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !body.is_empty() && mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                format!("content type {mime} is not supported; send application/json"),
            )
            .into());
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Code::InvalidContent, format!("Invalid JSON: {e}")).into())
}

/// Sets a header when the value is a valid header value.
fn set_header(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
