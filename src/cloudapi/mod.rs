//! CloudAPI's face for images: what the unmodified `triton` CLI calls to
//! list, get, share, clone, copy between datacenters, wait for and delete
//! images, served by the daemon on a second listener when configured.
//!
//! It is a second front end over the same IMGAPI rules, not a copy of
//! them: a handler authenticates the caller ([`auth`]), maps the login in
//! the path to the account uuid IMGAPI works with, calls the one
//! [`Imgapi`](crate::imgapi::Imgapi) rule through [`AppState::run`], and
//! translates the image as sdc-cloudapi's `translate()` does
//! ([`images::CloudImage`]). IMGAPI's errors pass through as upstream
//! CloudAPI passes them (`{code, message}` with their status); CloudAPI's
//! own are restify's: `InvalidCredentials` (401) for any signature that
//! does not check out, `NotAuthorized` (403) for another login's path,
//! `MissingParameter` / `InvalidArgument` (409), `ResourceNotFound` (404).
//!
//! | path | operation |
//! | --- | --- |
//! | `GET /--ping` | liveness, unauthenticated |
//! | `GET /:login` | GetAccount (`id`, `login`) |
//! | `GET /:login/datacenters` | ListDatacenters: the configured name → CloudAPI URL map |
//! | `GET /:login/images` | ListImages (name, os, version, public, state, owner, type; `type=!docker` by default; every page) |
//! | `POST /:login/images?action=import-from-datacenter&datacenter=DC&id=UUID` | ImportImageFromDatacenter, answered when the copy is done |
//! | `GET /:login/images/:id` | GetImage |
//! | `POST /:login/images/:id?action=update\|clone` | UpdateImage (share and unshare set `acl`), CloneImage |
//! | `DELETE /:login/images/:id` | DeleteImage |
//!
//! CreateImageFromMachine and ExportImage need a compute node and Manta:
//! they answer `NotAvailable` (501) saying so. Every answer carries
//! `Triton-Datacenter-Name` (what `triton image copy` reads to name the
//! source datacenter).

mod action;
pub mod images;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

pub use crate::http::auth::{self, KeyRing, Principal};
use crate::http::error::HttpError;
use crate::http::{
    AppState, Exchange, as_imgapi_error, json_response, method_not_allowed, not_found,
    version_allows,
};
use crate::imgapi::{ApiError, Code};

/// Where the CloudAPI face listens when configured without `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// CloudAPI versions whose image endpoints this face answers (restify's
/// `Accept-Version`; `triton` sends `~9||~8`).
const VERSIONS: [u32; 2] = [8, 9];
/// The version this face reports in `Api-Version`.
pub const API_VERSION: &str = "9.2.0";

/// The CloudAPI face's configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub datacenters: BTreeMap<String, String>,
    pub keys: Arc<KeyRing>,
    /// TLS on the face's listener (`cloudapi.tls`); None: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("datacenters", &self.datacenters)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.into(),
            datacenters: BTreeMap::new(),
            keys: Arc::new(KeyRing::default()),
            tls: None,
        }
    }
}

/// What the CloudAPI handlers share: the daemon's state and this face's
/// configuration.
pub struct Face {
    pub app: Arc<AppState>,
    pub config: Config,
}

type St = State<Arc<Face>>;

/// The CloudAPI router: the image endpoints behind signature checks.
pub fn router(face: Arc<Face>) -> Router {
    Router::new()
        .route("/--ping", get(ping))
        .route("/{login}", get(account))
        .route("/{login}/datacenters", get(datacenters))
        .route(
            "/{login}/images",
            get(images::list).head(images::list).post(images::create),
        )
        .route(
            "/{login}/images/{id}",
            get(images::get)
                .head(images::get)
                .post(images::action)
                .delete(images::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&face),
            front,
        ))
        .with_state(face)
}

/// Serves the face on `listener` within the daemon's limits until
/// `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    face: Arc<Face>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = face.app.limits.clone();
    let tls = face.config.tls.clone();
    crate::http::server::serve(listener, router(face), &limits, tls, shutdown).await
}

/// Checks the version and the signature before any handler runs, then
/// adds the common headers and logs the request.
async fn front(State(face): St, mut req: Request, next: Next) -> Response {
    let exchange = Exchange::of(&req);
    let resp = match admit(&face, &req) {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            // On a follower a write goes to the writer's face; on a writer
            // (or with remote durability) it is answered once published.
            let by = crate::http::cluster::Face::CloudApi;
            let routed = crate::http::cluster::route(Arc::clone(&face.app), by, req, next);
            as_imgapi_error(routed.await).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => HttpError::from(e).into_response(),
    };
    let mut resp = resp;
    let h = resp.headers_mut();
    let dc = &face.app.api.config().datacenter_name;
    if let Ok(v) = HeaderValue::from_str(dc) {
        h.insert(HeaderName::from_static("triton-datacenter-name"), v);
    }
    h.insert(
        HeaderName::from_static("api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    exchange.finish(&face.app, resp)
}

/// The signer of `req`, or None for the unauthenticated ping.
fn admit(face: &Face, req: &Request) -> Result<Option<Principal>, ApiError> {
    if req.uri().path() == "/--ping" {
        return Ok(None);
    }
    if let Some(v) = req
        .headers()
        .get("accept-version")
        .and_then(|v| v.to_str().ok())
        && !version_allows(v, &VERSIONS)
    {
        return Err(ApiError::new(
            Code::InvalidVersion,
            format!("{v} is not supported by this CloudAPI (it answers 8.x and 9.x)"),
        ));
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    face.config
        .keys
        .authenticate(req.method(), target, req.headers(), SystemTime::now())
        .map(Some)
        .map_err(|e| ApiError::new(Code::InvalidCredentials, e.0))
}

/// The account a request acts as: its signer, checked against the login
/// that starts the path (an account acts on its own resources only).
pub struct Account(pub Principal);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Account {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(signer) = parts.extensions.get::<Principal>() else {
            return Err(
                ApiError::new(Code::InvalidCredentials, "the request is not signed").into(),
            );
        };
        let login = parts.uri.path().split('/').nth(1).unwrap_or_default();
        if signer.login == login {
            Ok(Account(signer.clone()))
        } else {
            Err(ApiError::new(
                Code::NotAuthorized,
                format!("{} is not allowed to act as {login}", signer.login),
            )
            .into())
        }
    }
}

async fn ping() -> Response {
    json_response(StatusCode::OK, &json!({"ping": "pong"}))
}

/// GetAccount: what `triton image list` needs (`id`) for its flags.
async fn account(Account(who): Account) -> Response {
    json_response(StatusCode::OK, &json!({"id": who.uuid, "login": who.login}))
}

/// ListDatacenters.
async fn datacenters(State(face): St, _: Account) -> Response {
    json_response(StatusCode::OK, &json!(face.config.datacenters))
}
