//! Errors of the storage layer. The service maps them to gRPC statuses.

use diesel::result::{DatabaseErrorKind, Error as QueryError};
use voca_common::input::InvalidInput;

/// Boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed storage operation. No variant contains the database password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist, such as a vendor id with no vendor.
    #[error("{entity} {key} not found")]
    NotFound { entity: &'static str, key: String },
    /// A row with the same unique key already exists.
    #[error("{entity} {key} already exists")]
    AlreadyExists { entity: &'static str, key: String },
    /// PostgreSQL could not be reached, or it closed the connection.
    #[error("PostgreSQL at {address} is unavailable: {reason}")]
    Unavailable {
        /// `host:port` from the database URL.
        address: String,
        reason: String,
    },
    /// An id or field breaks the mesh's input rules.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The configuration is unusable, such as a URL that does not parse.
    #[error("invalid database configuration: {0}")]
    InvalidConfig(String),
    /// Any other failure: a rejected query, a failed migration, a row that
    /// does not match the model.
    #[error("{context}: {source}")]
    Other {
        context: String,
        #[source]
        source: BoxError,
    },
}

impl DbError {
    /// Wraps `source` as [`DbError::Other`] with what was being done.
    pub(crate) fn other(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Other {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Maps a query error that the caller did not handle itself: a closed
    /// or broken connection becomes [`DbError::Unavailable`] and everything
    /// else [`DbError::Other`].
    pub(crate) fn from_query(error: QueryError, address: &str, context: impl Into<String>) -> Self {
        match error {
            QueryError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable {
                address: address.to_owned(),
                reason: info.message().to_owned(),
            },
            error => Self::other(context, error),
        }
    }
}

/// Returns true if `error` is a unique constraint violation.
pub(crate) fn is_unique_violation(error: &QueryError) -> bool {
    matches!(
        error,
        QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Returns true if `error` is a foreign key violation.
pub(crate) fn is_foreign_key_violation(error: &QueryError) -> bool {
    matches!(
        error,
        QueryError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)
    )
}
