//! The parts every route reads, as extractors: the query pairs, the caller
//! (`?account=`, a uuid or a login), and for image routes the path uuid. Each refuses a bad
//! value as IMGAPI does before the handler runs.

use axum::extract::{FromRequestParts, OriginalUri, Path, Query};
use std::sync::Arc;

use axum::http::request::Parts;
use uuid::Uuid;

use super::AppState;
use super::error::HttpError;
use crate::imgapi::{self, ApiError, Code, FieldCode, FieldError, parse_uuid};

/// The query string as pairs, in order; repeated keys are kept.
#[derive(Clone, Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of `key`, owned.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }

    /// `inclAdminFields=true`.
    pub fn admin_fields(&self) -> bool {
        self.get("inclAdminFields") == Some("true")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(Code::BadRequestError, e.body_text()))?;
        Ok(QueryPairs(pairs))
    }
}

/// `?account=`: an account uuid or a login of the daemon's account table,
/// or none for an operator.
fn account_of(q: &QueryPairs, accounts: &imgapi::Config) -> Result<Option<Uuid>, HttpError> {
    match q.get("account") {
        None => Ok(None),
        Some(a) => accounts.account(a).map(Some).ok_or_else(|| {
            ApiError::new(
                Code::InvalidParameter,
                accounts.unknown_account("account", a),
            )
            .with_errors(vec![FieldError::bare("account", FieldCode::Invalid)])
            .into()
        }),
    }
}

/// Who asks, and the rest of the query.
pub struct Caller {
    pub account: Option<Uuid>,
    pub query: QueryPairs,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let query = QueryPairs::from_request_parts(parts, state).await?;
        Ok(Caller {
            account: account_of(&query, state.api.config())?,
            query,
        })
    }
}

/// A route under `/images/:uuid` (or any `/:resource/:uuid`): the path
/// uuid, who asks, and the query. A path segment that is not a uuid is a
/// path that does not exist (404), as restify answers.
pub struct ImageReq {
    pub uuid: Uuid,
    pub account: Option<Uuid>,
    pub query: QueryPairs,
}

impl ImageReq {
    pub fn account(&self) -> Option<&Uuid> {
        self.account.as_ref()
    }
}

impl FromRequestParts<Arc<AppState>> for ImageReq {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.path().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string());
        let raw = Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| p)
            .unwrap_or_default();
        let uuid = parse_uuid(&raw).ok_or_else(|| ApiError::no_such_path(&path))?;
        let Caller { account, query } = Caller::from_request_parts(parts, state).await?;
        Ok(ImageReq {
            uuid,
            account,
            query,
        })
    }
}
