//! The one mapping of errors to IMGAPI error responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::imgapi::ApiError;

/// The HTTP status of each IMGAPI error code (reference section 4 and the
/// restify built-ins of section 1).
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "ValidationFailed"
        | "InvalidParameter"
        | "ImageFilesImmutable"
        | "ImageAlreadyActivated"
        | "NoActivationNoFile"
        | "OwnerDoesNotExist"
        | "AccountDoesNotExist"
        | "NotImageOwner"
        | "ImageNotShared"
        | "OriginDoesNotExist"
        | "OriginIsNotActive"
        | "ImageHasDependentImages"
        | "InsufficientServerVersion" => StatusCode::UNPROCESSABLE_ENTITY,
        "OperatorOnly" => StatusCode::FORBIDDEN,
        "ImageUuidAlreadyExists" | "InvalidArgument" | "MissingParameter" => StatusCode::CONFLICT,
        "Upload" | "Download" | "NotImplemented" | "InvalidVersion" | "InvalidHeader"
        | "BadRequestError" | "InvalidContent" => StatusCode::BAD_REQUEST,
        "StorageIsDown"
        | "StorageUnsupported"
        | "RemoteSourceError"
        | "ServiceUnavailableError" => StatusCode::SERVICE_UNAVAILABLE,
        "NotAvailable" => StatusCode::NOT_IMPLEMENTED,
        "ResourceNotFound" | "NotFoundError" => StatusCode::NOT_FOUND,
        "UnauthorizedError" => StatusCode::UNAUTHORIZED,
        "PreconditionFailed" => StatusCode::PRECONDITION_FAILED,
        "MethodNotAllowedError" => StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedMediaType" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "RequestedRangeNotSatisfiable" => StatusCode::RANGE_NOT_SATISFIABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct HttpError {
    pub error: ApiError,
    /// A status that differs from the code's usual one (a remote error
    /// passed through unchanged).
    pub status: Option<StatusCode>,
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        HttpError {
            error,
            status: None,
        }
    }
}

impl From<crate::error::Error> for HttpError {
    fn from(e: crate::error::Error) -> Self {
        ApiError::from(e).into()
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

/// `{"code", "message"[, "errors"]}`, indented as restify sends it.
pub fn error_body(e: &ApiError) -> Value {
    let mut body = json!({ "code": e.code, "message": e.message });
    if let (Some(errors), Some(o)) = (&e.errors, body.as_object_mut()) {
        o.insert("errors".into(), json!(errors));
    }
    body
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| status_of(&self.error.code));
        let body = serde_json::to_vec_pretty(&error_body(&self.error)).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.extensions_mut().insert(self.error);
        r
    }
}
