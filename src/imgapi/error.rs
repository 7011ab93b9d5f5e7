//! IMGAPI errors as the wire contract names them: one [`Code`] per error
//! code, with its string and its HTTP status in one table, and the
//! [`ApiError`] that carries a code, a message, the failing fields and the
//! cause.
//!
//! The statuses are part of the contract (reference sections 1 and 4), so
//! they live with the codes; the HTTP layer only turns the number into a
//! response.

use std::sync::Arc;

use serde::Serialize;

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident => $status:literal, $kind:ident; )*) => {
        /// Every error code an answer of this server can carry.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The `code` string of the error body.
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$name => stringify!($name),)* }
            }

            /// The HTTP status an error with this code is answered with.
            pub const fn status(self) -> u16 {
                match self { $(Code::$name => $status,)* }
            }

            /// Where the code comes from: IMGAPI's own `lib/errors.js`, or
            /// the HTTP framework (restify) and our extensions.
            pub const fn origin(self) -> Origin {
                match self { $(Code::$name => Origin::$kind,)* }
            }
        }
    };
}

/// Where a [`Code`] is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// IMGAPI's `lib/errors.js` (what `GET /ping?error=NAME` knows).
    Imgapi,
    /// restify's built-in errors, as real clients see them.
    Restify,
    /// Codes only this server answers with.
    Imgstore,
}

codes! {
    /// Manifest validation; bad UpdateImage keys; clone of an unactivated
    /// or docker image; import parameter and state errors.
    ValidationFailed => 422, Imgapi;
    /// A bad query parameter or an extra create field.
    InvalidParameter => 422, Imgapi;
    ImageFilesImmutable => 422, Imgapi;
    ImageAlreadyActivated => 422, Imgapi;
    NoActivationNoFile => 422, Imgapi;
    OperatorOnly => 403, Imgapi;
    ImageUuidAlreadyExists => 409, Imgapi;
    /// Upload too big; bad icon type or size.
    Upload => 400, Imgapi;
    /// Empty upload; size or sha1 mismatch; a copy source that failed.
    Download => 400, Imgapi;
    StorageIsDown => 503, Imgapi;
    StorageUnsupported => 503, Imgapi;
    /// An unreachable source IMGAPI.
    RemoteSourceError => 503, Imgapi;
    OwnerDoesNotExist => 422, Imgapi;
    AccountDoesNotExist => 422, Imgapi;
    NotImageOwner => 422, Imgapi;
    ImageNotShared => 422, Imgapi;
    OriginDoesNotExist => 422, Imgapi;
    OriginIsNotActive => 422, Imgapi;
    ImageHasDependentImages => 422, Imgapi;
    /// A feature this server does not offer.
    NotAvailable => 501, Imgapi;
    NotImplemented => 400, Imgapi;
    InternalError => 500, Imgapi;
    ResourceNotFound => 404, Imgapi;
    InsufficientServerVersion => 422, Imgapi;
    UnauthorizedError => 401, Restify;
    /// CloudAPI: a request whose HTTP Signature does not check out.
    InvalidCredentials => 401, Restify;
    /// CloudAPI: a signed request for another account's resources.
    NotAuthorized => 403, Restify;
    ServiceUnavailableError => 503, Restify;
    NotFoundError => 404, Restify;
    BadRequestError => 400, Restify;
    MethodNotAllowedError => 405, Restify;
    InvalidArgument => 409, Restify;
    MissingParameter => 409, Restify;
    InvalidVersion => 400, Restify;
    InvalidHeader => 400, Restify;
    PreconditionFailed => 412, Restify;
    /// A body that is not valid JSON.
    InvalidContent => 400, Restify;
    UnsupportedMediaType => 415, Restify;
    /// A request body over the limit of its route.
    RequestEntityTooLarge => 413, Restify;
    RequestedRangeNotSatisfiable => 416, Restify;
}

impl Code {
    /// The code a `code` string names, if it is one of ours.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The `code` of one entry of an error's `errors` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FieldCode {
    Invalid,
    MissingParameter,
    NotAllowed,
    Missing,
}

impl FieldCode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Invalid" => Some(FieldCode::Invalid),
            "MissingParameter" => Some(FieldCode::MissingParameter),
            "NotAllowed" => Some(FieldCode::NotAllowed),
            "Missing" => Some(FieldCode::Missing),
            _ => None,
        }
    }
}

/// One entry of an error's `errors` array.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: FieldCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FieldError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: FieldCode::Invalid,
            message: Some(message.into()),
        }
    }
    pub fn missing(field: &str) -> Self {
        Self {
            field: field.into(),
            code: FieldCode::MissingParameter,
            message: Some(format!("\"{field}\" is required")),
        }
    }
    pub fn not_allowed(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: FieldCode::NotAllowed,
            message: Some(message.into()),
        }
    }
    /// An entry with a code and no message.
    pub fn bare(field: &str, code: FieldCode) -> Self {
        Self {
            field: field.into(),
            code,
            message: None,
        }
    }
}

/// An error that another IMGAPI answered with and that is passed through
/// unchanged, although its code is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignCode {
    pub code: String,
    pub status: u16,
}

/// An IMGAPI error: the code clients branch on, a message, for validation
/// errors the failing fields, and what caused it.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub errors: Option<Vec<FieldError>>,
    /// Set when passing through another server's error with a code we do
    /// not know; the body and status then are that server's.
    pub foreign: Option<ForeignCode>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.wire_code(), self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            errors: None,
            foreign: None,
            cause: None,
        }
    }

    /// Another server's error as it answered it: its code when we know it,
    /// else kept as a [`ForeignCode`] with its status.
    pub fn passthrough(status: u16, code: &str, message: impl Into<String>) -> Self {
        match Code::parse(code) {
            Some(c) => Self::new(c, message),
            None => Self {
                foreign: Some(ForeignCode {
                    code: code.to_string(),
                    status,
                }),
                ..Self::new(Code::InternalError, message)
            },
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Keeps `cause` as this error's source.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// The `code` string of the body.
    pub fn wire_code(&self) -> &str {
        match &self.foreign {
            Some(f) => &f.code,
            None => self.code.as_str(),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match &self.foreign {
            Some(f) => f.status,
            None => self.code.status(),
        }
    }

    pub fn validation(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::new(Code::ValidationFailed, message).with_errors(errors)
    }
    pub fn invalid_param(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(Code::InvalidParameter, message.clone())
            .with_errors(vec![FieldError::invalid(field, message)])
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceNotFound, message)
    }
    pub fn image_not_found() -> Self {
        Self::not_found("image not found")
    }
    /// restify's answer to a path that does not exist (also a path uuid
    /// that is not a uuid).
    pub fn no_such_path(path: &str) -> Self {
        Self::not_found(format!("{path} does not exist"))
    }
    /// An upload whose body failed (cut, stalled, unreadable).
    pub fn upload_failed(uuid: &uuid::Uuid, why: impl std::fmt::Display) -> Self {
        Self::new(
            Code::Download,
            format!("upload of image {uuid} failed: {why}"),
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
    }
    pub fn operator_only() -> Self {
        Self::new(Code::OperatorOnly, "this endpoint is for operators only")
    }
    pub fn not_owner(account: &uuid::Uuid, image: &uuid::Uuid) -> Self {
        Self::new(
            Code::NotImageOwner,
            format!("account {account} is not the owner of image {image}"),
        )
    }
    pub fn already_exists(uuid: &uuid::Uuid) -> Self {
        Self::new(
            Code::ImageUuidAlreadyExists,
            format!("image uuid {uuid} already exists"),
        )
    }
    /// An `action` query parameter this route does not know.
    pub fn bad_action(action: &str) -> Self {
        Self::invalid_param("action", format!("\"{action}\" is not a valid action"))
    }
}

impl From<crate::error::Error> for ApiError {
    /// The engine's error in the client's terms: what happened, never
    /// where (paths, segments, offsets, object keys and library texts stay
    /// in the cause, which the request log prints whole).
    fn from(e: crate::error::Error) -> Self {
        let (code, message) = client_terms(&e);
        Self::new(code, message).caused_by(e)
    }
}

/// The code and the message a client is told for an engine error.
fn client_terms(e: &crate::error::Error) -> (Code, String) {
    use crate::error::Error as E;
    let (code, text): (Code, &str) = match e {
        E::Io { .. } if e.is_disk_full() => (Code::StorageIsDown, "storage is full"),
        E::Io { .. } => (Code::StorageIsDown, "the store's disk failed"),
        E::WritesFailed(_) => (
            Code::StorageIsDown,
            "storage is refusing writes after a disk failure",
        ),
        E::Remote { .. } => (Code::StorageIsDown, "the object store is unreachable"),
        E::Fenced(_) => (
            Code::StorageIsDown,
            "another daemon writes this store now: this one takes no changes",
        ),
        E::Backlog { .. } => (
            Code::StorageIsDown,
            "the object store is behind: uploads resume once it has caught up",
        ),
        E::Corrupt(_) | E::Inconsistent(_) | E::FileNotFound(_) => {
            (Code::InternalError, "the image's file is damaged")
        }
        E::BadRecord { .. } | E::Index(_) => (Code::InternalError, "the store's index is damaged"),
        // A stream from a copy source broke, or the source sent something
        // wrong: upstream's "remote fetch error" code.
        E::Input(_) => (Code::Download, "the file broke off while it was read"),
        E::Source { .. } => (
            Code::Download,
            "the source datacenter failed or sent damaged data",
        ),
        E::Stopped(_) => (Code::ServiceUnavailableError, "the daemon is shutting down"),
        _ => (Code::InternalError, "an internal error occurred"),
    };
    (code, text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_has_an_error_status() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()), "{c}");
        }
        assert_eq!(Code::parse("NoSuchCode"), None);
    }

    #[test]
    fn engine_errors_keep_their_meaning_and_their_cause() {
        use std::error::Error as _;
        let full = crate::Error::io(
            "writing segment 000000000001",
            std::io::Error::from_raw_os_error(28),
        );
        let e = ApiError::from(full);
        assert_eq!(e.code, Code::StorageIsDown);
        // The client's terms only; the path and the OS error go to the log.
        assert_eq!(e.message, "storage is full");
        let cause = crate::error::chain(e.source().unwrap());
        assert!(cause.contains("segment 000000000001"), "{cause}");
        assert!(cause.contains("os error 28"), "{cause}");
        let bucket = ApiError::from(crate::Error::remote(
            "uploading segment 7 to s3://images at http://10.0.0.9:8333",
            std::io::Error::other("connection refused"),
        ));
        assert_eq!(bucket.code, Code::StorageIsDown);
        assert_eq!(bucket.message, "the object store is unreachable");
        let damaged = ApiError::from(crate::Error::corrupt(crate::SegmentId(3), 4096, "bad CRC"));
        assert_eq!(damaged.message, "the image's file is damaged");
        let lying = ApiError::from(crate::Error::bad_source("a damaged chunk"));
        assert_eq!(lying.code, Code::Download);
        let bug = ApiError::from(crate::Error::Internal("a thread panicked".into()));
        assert_eq!(bug.code, Code::InternalError);
    }

    #[test]
    fn a_foreign_error_keeps_its_code_and_status() {
        let e = ApiError::passthrough(418, "Teapot", "short and stout");
        assert_eq!(e.wire_code(), "Teapot");
        assert_eq!(e.status(), 418);
        let known = ApiError::passthrough(404, "ResourceNotFound", "gone");
        assert_eq!(known.code, Code::ResourceNotFound);
        assert!(known.foreign.is_none());
    }
}
