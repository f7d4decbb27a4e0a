//! PostgreSQL storage of vendor metadata, through diesel-async on a bounded
//! bb8 pool of tokio-postgres connections (no libpq), and an embedded SQLite
//! store of vendors for the quickstart ([`SqliteDatabase`]).

mod error;
mod migrate;
mod pool;
mod routes;
pub mod schema;
mod sqlite;
pub mod sqlite_schema;
mod vendors;

use std::fmt;
use std::time::Duration;

use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use tokio::time::Instant;
use url::Url;

use pool::LastConnectError;

pub use error::DbError;
pub use routes::{MessageRoute, NewMessageRoute};
pub use sqlite::SqliteDatabase;
pub use vendors::{
    ListVendors, NewVendor, Vendor, VendorPage, VendorStatus, VendorUpdate, MAX_PAGE_SIZE,
};

/// Connection settings of a [`Database`].
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Maximum number of pooled connections.
    pub max_connections: u32,
    /// Time allowed to check out or open a connection before the operation
    /// fails with [`DbError::Unavailable`].
    pub connect_timeout: Duration,
    /// Time allowed to wait for another process that is applying the
    /// migrations.
    pub migration_lock_timeout: Duration,
}

impl DatabaseConfig {
    /// Settings with 10 connections, a 5 s connect timeout and a 60 s
    /// migration lock timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            migration_lock_timeout: Duration::from_secs(60),
        }
    }
}

/// Prints the server address and leaves out the URL, which may contain a
/// password.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("address", &server_address(&self.url).ok())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("migration_lock_timeout", &self.migration_lock_timeout)
            .finish()
    }
}

/// The registry's PostgreSQL database: a connection pool whose schema is
/// migrated to the version embedded in this crate.
#[derive(Clone)]
pub struct Database {
    pool: Pool<AsyncPgConnection>,
    /// `host:port`, for error messages.
    address: String,
    connect_timeout: Duration,
    last_connect_error: LastConnectError,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("address", &self.address)
            .field("state", &self.pool.state())
            .finish()
    }
}

impl Database {
    /// Connects to PostgreSQL and applies the pending embedded migrations.
    ///
    /// Fails with [`DbError::Unavailable`] when the server cannot be reached
    /// within `connect_timeout`.
    pub async fn connect(config: DatabaseConfig) -> Result<Self, DbError> {
        if config.max_connections == 0 {
            return Err(DbError::InvalidConfig(
                "max_connections is 0; use 1 or more".to_owned(),
            ));
        }
        let address = server_address(&config.url)?;
        let applied = migrate::run_pending(&config, &address).await?;
        if applied.is_empty() {
            tracing::info!(%address, "database schema is up to date");
        } else {
            tracing::info!(%address, migrations = ?applied, "applied database migrations");
        }

        let connect_timeout = config.connect_timeout;
        let last_connect_error = LastConnectError::new(address.clone());
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(config.url);
        // bb8 retries a failed connect until `connect_timeout` and then
        // returns a bare timeout, so the sink keeps the reason.
        let pool = Pool::builder()
            .max_size(config.max_connections)
            .connection_timeout(config.connect_timeout)
            .error_sink(Box::new(last_connect_error.clone()))
            .build_unchecked(manager);
        Ok(Self {
            pool,
            address,
            connect_timeout,
            last_connect_error,
        })
    }

    /// Server address, `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Checks out a pooled connection.
    async fn connection(&self) -> Result<PooledConnection<'_, AsyncPgConnection>, DbError> {
        let started = Instant::now();
        self.pool.get().await.map_err(|error| match error {
            RunError::User(error) => self.unavailable(error),
            RunError::TimedOut => {
                let timeout = self.connect_timeout;
                match self.last_connect_error.since(started) {
                    Some(reason) => self.unavailable(format!(
                        "no connection within {timeout:?}, last error: {reason}"
                    )),
                    // Every connection stayed busy, or the connects hung.
                    None => self.unavailable(format!("no connection within {timeout:?}")),
                }
            }
        })
    }

    fn unavailable(&self, reason: impl fmt::Display) -> DbError {
        DbError::Unavailable {
            address: self.address.clone(),
            reason: reason.to_string(),
        }
    }

    fn query_error(&self, error: diesel::result::Error, context: impl Into<String>) -> DbError {
        DbError::from_query(error, &self.address, context)
    }
}

/// Returns `host:port` of a PostgreSQL URL, with port 5432 when the URL has
/// none. The error never contains the URL, which may contain a password.
fn server_address(url: &str) -> Result<String, DbError> {
    let parsed = Url::parse(url).map_err(|error| {
        DbError::InvalidConfig(format!(
            "the database URL does not parse ({error}); use postgres://USER:PASSWORD@HOST:PORT/DATABASE"
        ))
    })?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(DbError::InvalidConfig(format!(
            "the database URL has scheme {:?}; use postgres://",
            parsed.scheme()
        )));
    }
    let host = parsed.host_str().unwrap_or("localhost");
    let port = parsed.port().unwrap_or(5432);
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_has_default_port() {
        let address = server_address("postgres://voca@db.internal/registry").unwrap();
        assert_eq!(address, "db.internal:5432");
    }

    #[test]
    fn invalid_url_error_omits_password() {
        let error = server_address("postgres://voca:s3cret@db:port/registry").unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("does not parse"), "{message}");
    }

    #[test]
    fn debug_omits_password() {
        let config = DatabaseConfig::new("postgres://voca:s3cret@127.0.0.1:6543/registry");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("127.0.0.1:6543"), "{debug}");
    }

    #[test]
    fn non_postgres_scheme_rejected() {
        let error = server_address("mysql://127.0.0.1/registry").unwrap_err();
        assert!(matches!(error, DbError::InvalidConfig(_)), "{error}");
    }
}
