//! `/ping` and `/state`: liveness, and the operator's view of the store
//! (stats, GC and verify on the live store).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{St, json_response};
use crate::http::error::HttpResult;
use crate::http::extract::QueryPairs;
use crate::http::wire;
use crate::imgapi::error::Origin;
use crate::imgapi::{ApiError, Code};
use crate::store::gc::DEFAULT_THRESHOLD;

/// `GET /ping`; `?error=NAME` answers IMGAPI's error NAME, as upstream's
/// test harness expects.
pub(super) async fn ping(q: QueryPairs) -> HttpResult<Response> {
    if let Some(name) = q.get("error") {
        return Err(match Code::parse(name) {
            Some(Code::ValidationFailed) => ApiError::validation("boom", vec![]),
            Some(c) if c.origin() == Origin::Imgapi => ApiError::internal("boom"),
            _ => ApiError::invalid_param("error", format!("unknown error name {name:?}")),
        }
        .into());
    }
    Ok(json_response(
        StatusCode::OK,
        &wire::Ping {
            ping: "pong".into(),
            version: "4.13.1".into(),
            imgapi: true,
            pid: Some(std::process::id()),
            imgstore: Some(env!("CARGO_PKG_VERSION").into()),
        },
    ))
}

/// `GET /state`: store-wide figures, for operators only (byte counts of
/// the whole store would tell an account about others' images).
pub(super) async fn get(State(st): St, q: QueryPairs) -> HttpResult<Response> {
    if q.get("account").is_some() {
        return Err(ApiError::operator_only().into());
    }
    let stats = st.run(|api| Ok(api.store().stats()?)).await?;
    let cluster = match st.cluster.clone() {
        None => None,
        Some(m) => Some(
            tokio::task::spawn_blocking(move || {
                let mut standing = m.standing();
                standing.members = m.members();
                standing
            })
            .await
            .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?,
        ),
    };
    Ok(json_response(
        StatusCode::OK,
        &wire::State {
            pid: std::process::id(),
            uptime_s: st.started.elapsed().as_secs(),
            datacenter_name: st.api.config().datacenter_name.clone(),
            mode: st.api.config().mode.as_str().into(),
            store: stats,
            cluster,
        },
    ))
}

/// `POST /state?action=dropcaches|gc|verify`. `gc` collects garbage now
/// (`threshold`, default 0.3) and answers the plan and what was done;
/// `verify` checks every record and refcount and every object in the
/// bucket (`read_data=true`: their bytes too; `repair=true`: fixes what it
/// can), and audits that images explain every reference (writers wait
/// meanwhile).
/// Operators only: any `account` is refused.
pub(super) async fn post(State(st): St, q: QueryPairs) -> HttpResult<Response> {
    if q.get("account").is_some() {
        return Err(ApiError::operator_only().into());
    }
    match q.get("action") {
        Some("dropcaches") => Ok(StatusCode::ACCEPTED.into_response()),
        Some("gc") => {
            let threshold = match q.get("threshold") {
                None => DEFAULT_THRESHOLD,
                Some(t) => t
                    .parse::<f64>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid_param("threshold", "threshold must be between 0 and 1")
                    })?,
            };
            let service = std::sync::Arc::clone(&st.service);
            let (plan, done) = st
                .run(move |_| Ok(service.collect_garbage(threshold)?))
                .await?;
            Ok(json_response(StatusCode::OK, &wire::Gc { plan, done }))
        }
        Some("verify") => {
            let flag = |k: &str| q.get(k) == Some("true");
            let opts = crate::store::VerifyOptions {
                repair: flag("repair"),
                read_objects: flag("read_data"),
                ..crate::store::VerifyOptions::default()
            };
            let body = st
                .run(move |api| {
                    let mut report = api.store().verify_with(opts)?;
                    // References no image explains, files images lack.
                    report
                        .problems
                        .extend(crate::imgapi::audit::audit(api.store())?);
                    let damaged_images = api.images_holding(&report.damaged_files)?;
                    Ok(wire::Verify {
                        report,
                        damaged_images,
                    })
                })
                .await?;
            Ok(json_response(StatusCode::OK, &body))
        }
        other => Err(ApiError::bad_action(other.unwrap_or_default()).into()),
    }
}

/// `GET /metrics`: Prometheus' text format (`service::metrics`), for
/// operators only.
pub(super) async fn metrics(State(st): St, q: QueryPairs) -> HttpResult<Response> {
    if q.get("account").is_some() {
        return Err(ApiError::operator_only().into());
    }
    let metrics = std::sync::Arc::clone(&st.metrics);
    let text = st
        .run(move |api| {
            metrics.set_checks_waiting(api.checks_waiting()?);
            Ok(metrics.render(api.store())?)
        })
        .await?;
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// `POST /authkeys/reload` (upstream's AdminReloadAuthKeys): reads the
/// signing keys again (`authKeys`, `authKeysDir`); answers `{}`. On a
/// daemon without signatures there is nothing to reload. Operators only.
pub(super) async fn reload_auth_keys(State(st): St, q: QueryPairs) -> HttpResult<Response> {
    if q.get("account").is_some() {
        return Err(ApiError::operator_only().into());
    }
    if let Some(auth) = &st.auth {
        let logins = auth.reload().map_err(|e| {
            st.log.error(&format!("reloading auth keys: {e}"));
            ApiError::internal("the signing keys did not load; the keys in use stay")
        })?;
        st.log
            .info(&format!("auth keys reloaded: {logins} logins with keys"));
    }
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}
