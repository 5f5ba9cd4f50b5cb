//! One error type for the service, and the one place it becomes a `tonic::Status`.

use tonic::{Code, Status};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed. `field` is its path, e.g. `devices[3].os_version`.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to take it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// The store failed before anything was written; the detail is logged, not returned.
    #[error("storage: {0}")]
    Storage(String),
    /// The store failed while committing: the write may or may not have been made.
    #[error("storage: commit outcome unknown: {0}")]
    CommitUnknown(String),
    /// Concurrent writes through other replicas kept this one from committing.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A position (a watch cursor) outside what this server can serve.
    #[error("{0}")]
    OutOfRange(String),
    /// The caller used more than its share (a watch stream that fell too far behind).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The change log no longer holds the revisions asked for: they were compacted away, and
    /// the oldest kept is `oldest`. A follower then reloads the store's state instead.
    #[error("the change log was compacted: its oldest revision is now {oldest}")]
    LogCompacted { oldest: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), message: message.into() }
    }

    /// The same error with the path of the message it was found in before its field:
    /// `os_version` within `devices[3]` is `devices[3].os_version`.
    pub fn within(self, path: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } => {
                Error::InvalidArgument { field: format!("{path}.{field}"), message }
            }
            other => other,
        }
    }
}

/// The store refused to grow: SQLite's SQLITE_FULL (13), PostgreSQL's disk_full (53100). The
/// transaction is rolled back: nothing of it was written, even when COMMIT is what failed.
pub(crate) fn disk_full(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("13" | "53100")))
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // A full disk is not an outage: the store answers, and refuses to grow.
        if disk_full(&e) {
            tracing::error!(detail = %e, "the store's disk is full");
            return Error::ResourceExhausted(
                "the store's disk is full: nothing was written; decisions are still answered from memory. Free \
                 space on the store's volume and retry"
                    .into(),
            );
        }
        Error::Storage(e.to_string())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Storage(detail) => {
                tracing::error!(%detail, "storage failure");
                return Status::unavailable("the store is unavailable; nothing was written: retry later");
            }
            Error::CommitUnknown(detail) => {
                tracing::error!(%detail, "storage failure while committing");
                return Status::unavailable(
                    "the store failed while committing: the write may or may not have been made; read it back \
                     (or retry: reports are idempotent) once the store is available",
                );
            }
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::LogCompacted { .. } => Code::OutOfRange,
        };
        Status::new(code, bounded(e.to_string()))
    }
}

/// A status message travels in a header: keep it to what a person reads (and what every
/// client accepts), whatever an error quotes.
fn bounded(mut message: String) -> String {
    const MAX: usize = 1024;
    if message.len() > MAX {
        let mut at = MAX;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        message.push('…');
    }
    message
}

/// The status code as gRPC names it (`PERMISSION_DENIED`): for metrics labels, logs and the
/// audit trail.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
