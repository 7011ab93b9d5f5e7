//! IMGAPI errors as the wire contract names them. The HTTP status of each
//! code is decided in one place, `http::error`.

use std::borrow::Cow;

use serde::Serialize;

/// One entry of an error's `errors` array.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FieldError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: "Invalid",
            message: Some(message.into()),
        }
    }
    pub fn missing(field: &str) -> Self {
        Self {
            field: field.into(),
            code: "MissingParameter",
            message: Some(format!("\"{field}\" is required")),
        }
    }
    pub fn not_allowed(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: "NotAllowed",
            message: Some(message.into()),
        }
    }
}

/// An IMGAPI error: the `code` string clients branch on, a message, and for
/// validation errors the failing fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: Cow<'static, str>,
    pub message: String,
    pub errors: Option<Vec<FieldError>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            errors: None,
        }
    }
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = Some(errors);
        self
    }
    pub fn validation(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::new("ValidationFailed", message).with_errors(errors)
    }
    pub fn invalid_param(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new("InvalidParameter", message.clone())
            .with_errors(vec![FieldError::invalid(field, message)])
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFound", message)
    }
    pub fn image_not_found() -> Self {
        Self::not_found("image not found")
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("InternalError", message)
    }
    pub fn not_owner(account: &uuid::Uuid, image: &uuid::Uuid) -> Self {
        Self::new(
            "NotImageOwner",
            format!("account {account} is not the owner of image {image}"),
        )
    }
}

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        match e {
            E::Io { .. } if e.is_disk_full() => {
                Self::new("StorageIsDown", format!("storage is full: {e}"))
            }
            E::WritesFailed(_) | E::Io { .. } => Self::new("StorageIsDown", e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}
