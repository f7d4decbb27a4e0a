//! Embedded migrations, applied under a PostgreSQL advisory lock so that
//! processes starting at once apply each migration once between them.

use diesel::sql_types::BigInt;
use diesel::RunQueryDsl;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{DatabaseConfig, DbError};

/// The SQL files in `registry/migrations`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Key of the session-level advisory lock held while migrating: the bytes
/// "vocareg1" as a big-endian integer. Other code on the same database must
/// not use this key.
const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"vocareg1");

/// Applies the pending migrations and returns their versions.
///
/// Diesel's migration harness is synchronous, so it runs on a blocking
/// thread over an [`AsyncConnectionWrapper`], as diesel-async documents.
pub(super) async fn run_pending(
    config: &DatabaseConfig,
    address: &str,
) -> Result<Vec<String>, DbError> {
    let unavailable = |reason: String| DbError::Unavailable {
        address: address.to_owned(),
        reason,
    };
    let connection = tokio::time::timeout(
        config.connect_timeout,
        AsyncPgConnection::establish(&config.url),
    )
    .await
    .map_err(|_| unavailable(format!("no connection within {:?}", config.connect_timeout)))?
    .map_err(|error| unavailable(error.to_string()))?;

    let mut wrapper = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
    let lock_timeout_ms = config.migration_lock_timeout.as_millis();
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || {
        // lock_timeout also bounds the wait for the advisory lock.
        diesel::sql_query(format!("SET lock_timeout = {lock_timeout_ms}"))
            .execute(&mut wrapper)
            .map_err(|error| DbError::from_query(error, &address, "setting lock_timeout"))?;
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
            .execute(&mut wrapper)
            .map_err(|error| DbError::from_query(error, &address, "taking the migration lock"))?;
        let applied = wrapper
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|error| DbError::other("applying database migrations", error));
        // Closing the connection also releases the lock, so a failed unlock
        // only delays other processes until the wrapper is dropped below.
        if let Err(error) = diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
            .execute(&mut wrapper)
        {
            tracing::warn!(%address, %error, "releasing the migration lock failed");
        }
        applied
    })
    .await
    .map_err(|error| DbError::other("the migration task failed", error))?
}
