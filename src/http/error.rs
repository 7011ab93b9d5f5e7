//! The one mapping of errors to IMGAPI error responses: the status is the
//! code's own ([`Code::status`](crate::imgapi::Code::status)), the body
//! `{"code", "message"[, "errors"]}` indented as restify sends it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::imgapi::ApiError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        HttpError(error)
    }
}

impl From<crate::error::Error> for HttpError {
    fn from(e: crate::error::Error) -> Self {
        HttpError(ApiError::from(e))
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

/// `{"code", "message"[, "errors"]}`.
pub fn error_body(e: &ApiError) -> Value {
    let mut body = json!({ "code": e.wire_code(), "message": e.message });
    if let (Some(errors), Some(o)) = (&e.errors, body.as_object_mut()) {
        o.insert("errors".into(), json!(errors));
    }
    body
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec_pretty(&error_body(&self.0)).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The request log line reads it back.
        r.extensions_mut().insert(self.0);
        r
    }
}
