//! Serving a member: its listeners hand each request to the copy current
//! when it arrives; the member's protocol runs beside on its own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Member;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::imgapi::{ApiError, Code};

/// The IMGAPI router over one copy of the store. With a CloudAPI face
/// configured, a request a follower's face forwarded (marked
/// [`FACE`](crate::http::cluster::FACE)) goes to this member's face: the
/// lease names each writer by its IMGAPI address only.
pub(super) fn imgapi_router(
    state: &Arc<AppState>,
    face: Option<&crate::cloudapi::Config>,
) -> axum::Router {
    let imgapi = crate::http::router(Arc::clone(state));
    let face = face.map(|config| face_router(state, config));
    axum::Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
        let marked = req.headers().contains_key(crate::http::cluster::FACE);
        let (imgapi, face) = (imgapi.clone(), face.clone());
        async move {
            use tower::ServiceExt;
            match (marked, face) {
                (true, Some(face)) => face.oneshot(req).await,
                (true, None) => Ok(crate::http::error::HttpError::from(ApiError::new(
                    Code::ServiceUnavailableError,
                    "the datacenter's writer has no CloudAPI face configured",
                ))
                .into_response()),
                (false, _) => imgapi.oneshot(req).await,
            }
        }
    }))
}

/// The CloudAPI face over one copy of the store.
pub(super) fn face_router(state: &Arc<AppState>, config: &crate::cloudapi::Config) -> axum::Router {
    crate::cloudapi::router(Arc::new(crate::cloudapi::Face {
        app: Arc::clone(state),
        config: config.clone(),
    }))
}

/// Serves a cluster member: IMGAPI on `listener`, the CloudAPI face on
/// `face` when configured, each request on the copy current when it
/// arrives, until `shutdown`; the member's protocol runs beside on its
/// own thread.
pub async fn serve_member(
    listener: tokio::net::TcpListener,
    face: Option<tokio::net::TcpListener>,
    member: Arc<Member>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let (m, stop) = (Arc::clone(&member), Arc::clone(&stop));
        std::thread::spawn(move || m.run(&stop))
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let cancelled = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancelled.cancel();
    });
    let limits = member.making.cfg.limits.clone();
    let face = match (face, &member.cloudapi) {
        (Some(l), Some((current, config))) => {
            let (router, limits, tls) = (current.router(), limits.clone(), config.tls.clone());
            let stopped = cancel.clone().cancelled_owned();
            Some(tokio::spawn(async move {
                crate::http::server::serve(l, router, &limits, tls, stopped).await
            }))
        }
        _ => None,
    };
    let served = crate::http::server::serve(
        listener,
        member.imgapi.router(),
        &limits,
        member.making.cfg.tls.clone(),
        cancel.cancelled_owned(),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || supervisor.join()).await;
    if let Some(face) = face {
        face.await
            .map_err(|e| std::io::Error::other(format!("the CloudAPI face failed: {e}")))??;
    }
    served
}
