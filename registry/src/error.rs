//! Errors of registry operations and the gRPC status each becomes.

use std::time::Duration;

use tonic::Status;
use voca_common::input::InvalidInput;
use voca_storage::hot::SharedStateError;
use voca_storage::store::StoreError;

use crate::db::DbError;

/// A failed registry operation. Every message names the value at fault and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A request field breaks its rules.
    #[error("invalid {field} {value}: {reason}")]
    Invalid {
        /// Path of the field in the request, such as `knowledge[2].name`.
        field: String,
        /// The value, quoted and shortened.
        value: String,
        reason: String,
    },
    #[error("vendor {0:?} already exists; choose another vendor_id, or leave it empty to have one generated")]
    AlreadyExists(String),
    #[error(
        "vendor {0:?} is not registered; check the vendor_id, or register it with RegisterVendor"
    )]
    NotFound(String),
    /// The vendor id was erased so recently that pool nodes may still hold
    /// writes for it in flight.
    #[error("vendor {vendor_id:?} was deleted moments ago; its id can be registered again in {} s", retry_in.as_secs().max(1))]
    RecentlyDeleted {
        vendor_id: String,
        retry_in: Duration,
    },
    #[error("registration of vendor {0:?} is still in progress; wait for it, or delete the vendor to cancel it")]
    RegistrationInProgress(String),
    /// The vendor was erased while the call wrote its files, which were
    /// then removed.
    #[error("vendor {0:?} was deleted while this request ran, so nothing of it was kept")]
    DeletedMeanwhile(String),
    #[error(transparent)]
    Database(DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state shared with the pool nodes (Redis) could not be reached;
    /// `consequence` describes what happened to the operation.
    #[error("{error}; {consequence}")]
    SharedState {
        error: SharedStateError,
        consequence: &'static str,
    },
    /// A failure that no request can cause, such as a stored template that
    /// stopped parsing.
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// Builds an invalid-field error with the value quoted.
    pub fn invalid(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            value: voca_common::input::quote(value),
            reason: reason.into(),
        }
    }
}

impl From<InvalidInput> for RegistryError {
    fn from(error: InvalidInput) -> Self {
        Self::Invalid {
            field: error.field.to_owned(),
            value: error.value,
            reason: error.reason,
        }
    }
}

impl From<DbError> for RegistryError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::AlreadyExists { key, .. } => Self::AlreadyExists(key),
            DbError::NotFound { key, .. } => Self::NotFound(key),
            DbError::InvalidInput(invalid) => invalid.into(),
            other => Self::Database(other),
        }
    }
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Self {
        let message = error.to_string();
        match error {
            RegistryError::Invalid { .. } => Status::invalid_argument(message),
            RegistryError::AlreadyExists(_) => Status::already_exists(message),
            RegistryError::NotFound(_) => Status::not_found(message),
            RegistryError::DeletedMeanwhile(_) => Status::aborted(message),
            RegistryError::RecentlyDeleted { .. } | RegistryError::RegistrationInProgress(_) => {
                Status::failed_precondition(message)
            }
            RegistryError::Database(DbError::Unavailable { .. })
            | RegistryError::SharedState { .. } => {
                tracing::warn!(error = %message, "registry storage unavailable");
                Status::unavailable(message)
            }
            // A document name that clashes with a file or folder already in
            // the vendor's knowledge base.
            RegistryError::Store(StoreError::NotARegularFile { .. }) => Status::invalid_argument(
                format!("{message}; a knowledge document name clashes with an existing file or folder of the vendor, so choose another name"),
            ),
            RegistryError::Store(store) if !store.is_permanent() => {
                tracing::warn!(error = %message, "character store unavailable");
                Status::unavailable(message)
            }
            RegistryError::Store(_) | RegistryError::Database(_) | RegistryError::Internal(_) => {
                tracing::error!(error = %message, "registry operation failed");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn statuses_follow_the_error() {
        let cases = [
            (
                RegistryError::invalid("profile.business_type", "florist!", "use letters"),
                Code::InvalidArgument,
            ),
            (
                RegistryError::AlreadyExists("rosies-bakery".to_owned()),
                Code::AlreadyExists,
            ),
            (
                RegistryError::NotFound("rosies-bakery".to_owned()),
                Code::NotFound,
            ),
            (
                RegistryError::RecentlyDeleted {
                    vendor_id: "v".to_owned(),
                    retry_in: Duration::from_millis(300),
                },
                Code::FailedPrecondition,
            ),
            (
                DbError::Unavailable {
                    address: "127.0.0.1:5432".to_owned(),
                    reason: "connection refused".to_owned(),
                }
                .into(),
                Code::Unavailable,
            ),
            (
                StoreError::S3Unreachable {
                    endpoint: "http://127.0.0.1:3900".to_owned(),
                    bucket: "voca".to_owned(),
                    message: "connection refused".to_owned(),
                }
                .into(),
                Code::Unavailable,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn messages_name_the_value() {
        let error = RegistryError::invalid("knowledge[1].name", "../etc", "stay inside");
        assert_eq!(
            error.to_string(),
            "invalid knowledge[1].name \"../etc\": stay inside"
        );
        let error = RegistryError::RecentlyDeleted {
            vendor_id: "v1".to_owned(),
            retry_in: Duration::from_millis(300),
        };
        assert!(error.to_string().ends_with("again in 1 s"), "{error}");
    }
}
