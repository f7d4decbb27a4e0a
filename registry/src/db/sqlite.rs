//! Embedded SQLite storage of vendor metadata, for the quickstart, which
//! runs with no database server. It stores only vendors, and its vendor
//! operations follow the rules of the PostgreSQL [`Database`](super::Database).
//!
//! Diesel's SQLite connection is synchronous, so one connection sits behind
//! a mutex and every query runs on tokio's blocking thread pool.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use time::OffsetDateTime;
use voca_common::input::check_vendor_id;

use super::error::{is_unique_violation, BoxError};
use super::sqlite_schema::vendors;
use super::vendors::{check_page_size, vendor_not_found};
use super::{DbError, ListVendors, NewVendor, Vendor, VendorPage, VendorStatus, VendorUpdate};

/// The SQL files in `registry/migrations-sqlite`, compiled into the binary.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations-sqlite");

/// Time a statement waits for a lock held by another connection, such as
/// another process writing to the same file, before it fails with
/// "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between attempts to switch a file to write-ahead logging while
/// another connection holds a lock on it.
const WAL_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// SQLite's name for a database that lives in memory only.
const IN_MEMORY: &str = ":memory:";

/// The registry's embedded SQLite database: one connection to a file whose
/// schema is migrated to the version embedded in this crate.
///
/// Clones share the connection, so queries from all clones run one at a
/// time.
#[derive(Clone)]
pub struct SqliteDatabase {
    connection: Arc<Mutex<SqliteConnection>>,
    /// The file path as given to [`SqliteDatabase::open`], or `:memory:`.
    location: String,
}

impl fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDatabase")
            .field("location", &self.location)
            .finish()
    }
}

impl SqliteDatabase {
    /// Opens the database file at `path`, creating it when it is missing,
    /// enables write-ahead logging and a 5 s busy timeout, and applies the
    /// pending embedded migrations.
    ///
    /// Blocks the calling thread while it opens and migrates. The parent
    /// directory must exist.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let location = path.display().to_string();
        let mut connection = establish(&connection_url(path)?, &location)?;
        set_busy_timeout(&mut connection, &location)?;
        enable_wal(&mut connection, &location)?;
        Self::migrate(connection, location)
    }

    /// Opens a new database that lives in memory until the last clone of
    /// the returned value is dropped.
    pub fn open_in_memory() -> Result<Self, DbError> {
        let connection = establish(IN_MEMORY, IN_MEMORY)?;
        Self::migrate(connection, IN_MEMORY.to_owned())
    }

    /// Returns the file path as given to [`SqliteDatabase::open`], or
    /// `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn migrate(mut connection: SqliteConnection, location: String) -> Result<Self, DbError> {
        let applied = run_pending_migrations(&mut connection, &location)?;
        if applied.is_empty() {
            tracing::info!(%location, "SQLite schema is up to date");
        } else {
            tracing::info!(%location, migrations = ?applied, "applied SQLite migrations");
        }
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            location,
        })
    }

    /// Runs `operation` on the connection on a blocking thread.
    async fn run<T, F>(&self, operation: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, DbError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means that another operation panicked. Every
            // operation is one statement outside any transaction, so the
            // connection is still usable.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            operation(&mut connection)
        })
        .await
        .map_err(|error| DbError::other("the SQLite query task failed", error))?
    }

    /// Inserts a vendor and returns it as stored. Fails with
    /// [`DbError::AlreadyExists`] when the id is taken.
    pub async fn insert_vendor(&self, vendor: &NewVendor) -> Result<Vendor, DbError> {
        check_vendor_id(&vendor.id)?;
        let vendor = vendor.clone();
        self.run(move |connection| insert_vendor(connection, &vendor))
            .await
    }

    /// Returns the vendor with this id, or [`DbError::NotFound`].
    pub async fn get_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        check_vendor_id(id)?;
        let id = id.to_owned();
        self.run(move |connection| get_vendor(connection, &id))
            .await
    }

    /// Makes a pending vendor active without raising its version. Fails with
    /// [`DbError::NotFound`] when the vendor is not pending, such as one a
    /// delete marked while its registration ran.
    pub async fn activate_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        check_vendor_id(id)?;
        let id = id.to_owned();
        self.run(move |connection| activate_vendor(connection, &id))
            .await
    }

    /// Applies `update` to an active or suspended vendor, raises the
    /// character version by 1, sets `updated_at` and returns the new
    /// version. The version rises even when `update` changes no field, so
    /// that callers can announce a change of the vendor's files.
    pub async fn update_vendor(&self, id: &str, update: &VendorUpdate) -> Result<i64, DbError> {
        check_vendor_id(id)?;
        let id = id.to_owned();
        let update = update.clone();
        self.run(move |connection| update_vendor(connection, &id, &update))
            .await
    }

    /// Sets a vendor's status without raising its version, and returns the
    /// vendor as stored.
    pub async fn set_vendor_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<Vendor, DbError> {
        check_vendor_id(id)?;
        let id = id.to_owned();
        self.run(move |connection| set_vendor_status(connection, &id, status))
            .await
    }

    /// Deletes a vendor only while its status is `status`, and returns
    /// whether it did.
    pub async fn delete_vendor_in_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<bool, DbError> {
        check_vendor_id(id)?;
        let id = id.to_owned();
        self.run(move |connection| delete_vendor(connection, &id, Some(status)))
            .await
    }

    /// Deletes a vendor and returns whether a row was deleted, so deleting
    /// a missing vendor succeeds.
    pub async fn delete_vendor(&self, id: &str) -> Result<bool, DbError> {
        check_vendor_id(id)?;
        let id = id.to_owned();
        self.run(move |connection| delete_vendor(connection, &id, None))
            .await
    }

    /// Returns one page of vendors in id order (byte order), filtered by
    /// status and business type when those are set.
    pub async fn list_vendors(&self, request: &ListVendors) -> Result<VendorPage, DbError> {
        check_page_size(request.page_size)?;
        let request = request.clone();
        self.run(move |connection| list_vendors(connection, &request))
            .await
    }
}

/// Returns the name that SQLite opens as `path`. A relative path gets a
/// leading `./`, so that SQLite never reads it as a `file:` URI or as
/// `:memory:`.
fn connection_url(path: &Path) -> Result<String, DbError> {
    let path = if path.is_relative() {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    path.to_str().map(str::to_owned).ok_or_else(|| {
        DbError::InvalidConfig(format!(
            "the SQLite path {} is not valid UTF-8; use a UTF-8 path",
            path.display()
        ))
    })
}

fn establish(url: &str, location: &str) -> Result<SqliteConnection, DbError> {
    SqliteConnection::establish(url)
        .map_err(|error| DbError::other(format!("opening the SQLite database {location}"), error))
}

fn set_busy_timeout(connection: &mut SqliteConnection, location: &str) -> Result<(), DbError> {
    let pragma = format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis());
    connection
        .batch_execute(&pragma)
        .map_err(|error| DbError::other(format!("setting the busy timeout of {location}"), error))
}

/// The row that `PRAGMA journal_mode` returns.
#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

/// Switches the file to write-ahead logging, so that readers in other
/// processes do not block the writer. The mode is stored in the file.
fn enable_wal(connection: &mut SqliteConnection, location: &str) -> Result<(), DbError> {
    let started = Instant::now();
    let mode = loop {
        match diesel::sql_query("PRAGMA journal_mode = WAL").get_result::<JournalMode>(connection) {
            Ok(mode) => break mode,
            // While another connection switches or migrates the same new
            // file, the switch can fail with SQLITE_BUSY at once instead of
            // waiting for the busy timeout, so it is retried here.
            Err(error) if is_busy(&error) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(WAL_RETRY_INTERVAL);
            }
            Err(error) => {
                return Err(DbError::other(
                    format!("enabling write-ahead logging in {location}"),
                    error,
                ))
            }
        }
    };
    // SQLite returns the old mode, without an error, when it cannot switch,
    // such as on a file system without the shared memory that WAL needs.
    if !mode.journal_mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            %location,
            journal_mode = %mode.journal_mode,
            "SQLite did not switch to write-ahead logging; readers in other processes block writes"
        );
    }
    Ok(())
}

/// Returns true if `error` is SQLite's SQLITE_BUSY, which diesel reports
/// with an unknown kind and SQLite's message for that code.
fn is_busy(error: &QueryError) -> bool {
    matches!(
        error,
        QueryError::DatabaseError(DatabaseErrorKind::Unknown, info)
            if info.message() == "database is locked"
    )
}

/// Applies the pending migrations and returns their versions.
fn run_pending_migrations(
    connection: &mut SqliteConnection,
    location: &str,
) -> Result<Vec<String>, DbError> {
    // BEGIN IMMEDIATE takes the write lock before the harness reads which
    // migrations are applied, so processes that open the same file at once
    // apply each migration once between them.
    connection
        .immediate_transaction(|connection| -> Result<_, BoxError> {
            let versions = connection.run_pending_migrations(MIGRATIONS)?;
            Ok(versions.iter().map(ToString::to_string).collect())
        })
        .map_err(|error| DbError::other(format!("applying SQLite migrations to {location}"), error))
}

/// Returns the current UTC time truncated to microseconds, the precision of
/// PostgreSQL's `timestamptz`.
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("a nanosecond value rounded down stays below one second")
}

/// A row of `vendors` as stored, before its status is parsed.
#[derive(Queryable, Selectable)]
#[diesel(table_name = vendors, check_for_backend(diesel::sqlite::Sqlite))]
struct VendorRow {
    id: String,
    name: String,
    business_type: String,
    status: String,
    character_path: String,
    character_version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl TryFrom<VendorRow> for Vendor {
    type Error = DbError;

    fn try_from(row: VendorRow) -> Result<Self, DbError> {
        let status = row.status.parse().map_err(|reason: String| {
            DbError::other(format!("reading vendor {}", row.id), reason)
        })?;
        Ok(Self {
            id: row.id,
            name: row.name,
            business_type: row.business_type,
            status,
            character_path: row.character_path,
            character_version: row.character_version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = vendors)]
struct VendorChangeset<'a> {
    name: Option<&'a str>,
    business_type: Option<&'a str>,
    status: Option<&'static str>,
    character_path: Option<&'a str>,
}

fn insert_vendor(connection: &mut SqliteConnection, vendor: &NewVendor) -> Result<Vendor, DbError> {
    let now = now();
    let row = diesel::insert_into(vendors::table)
        .values((
            vendors::id.eq(&vendor.id),
            vendors::name.eq(&vendor.name),
            vendors::business_type.eq(&vendor.business_type),
            vendors::status.eq(vendor.status.as_str()),
            vendors::character_path.eq(&vendor.character_path),
            vendors::created_at.eq(now),
            vendors::updated_at.eq(now),
        ))
        .returning(VendorRow::as_returning())
        .get_result(connection)
        .map_err(|error| {
            if is_unique_violation(&error) {
                DbError::AlreadyExists {
                    entity: "vendor",
                    key: vendor.id.clone(),
                }
            } else {
                DbError::other(format!("inserting vendor {}", vendor.id), error)
            }
        })?;
    row.try_into()
}

fn get_vendor(connection: &mut SqliteConnection, id: &str) -> Result<Vendor, DbError> {
    vendors::table
        .find(id)
        .select(VendorRow::as_select())
        .first(connection)
        .optional()
        .map_err(|error| DbError::other(format!("reading vendor {id}"), error))?
        .ok_or_else(|| vendor_not_found(id))?
        .try_into()
}

fn update_vendor(
    connection: &mut SqliteConnection,
    id: &str,
    update: &VendorUpdate,
) -> Result<i64, DbError> {
    let changeset = VendorChangeset {
        name: update.name.as_deref(),
        business_type: update.business_type.as_deref(),
        status: update.status.map(VendorStatus::as_str),
        character_path: update.character_path.as_deref(),
    };
    diesel::update(
        vendors::table
            .find(id)
            .filter(vendors::status.eq_any(UPDATABLE_STATUSES)),
    )
    .set((
        changeset,
        vendors::character_version.eq(vendors::character_version + 1),
        vendors::updated_at.eq(now()),
    ))
    .returning(vendors::character_version)
    .get_result(connection)
    .optional()
    .map_err(|error| DbError::other(format!("updating vendor {id}"), error))?
    .ok_or_else(|| vendor_not_found(id))
}

/// Statuses of the vendors that an update may change.
const UPDATABLE_STATUSES: [&str; 2] = ["active", "suspended"];

fn activate_vendor(connection: &mut SqliteConnection, id: &str) -> Result<Vendor, DbError> {
    diesel::update(
        vendors::table
            .find(id)
            .filter(vendors::status.eq(VendorStatus::Pending.as_str())),
    )
    .set((
        vendors::status.eq(VendorStatus::Active.as_str()),
        vendors::updated_at.eq(now()),
    ))
    .returning(VendorRow::as_returning())
    .get_result(connection)
    .optional()
    .map_err(|error| DbError::other(format!("activating vendor {id}"), error))?
    .ok_or_else(|| vendor_not_found(id))?
    .try_into()
}

fn set_vendor_status(
    connection: &mut SqliteConnection,
    id: &str,
    status: VendorStatus,
) -> Result<Vendor, DbError> {
    diesel::update(vendors::table.find(id))
        .set((
            vendors::status.eq(status.as_str()),
            vendors::updated_at.eq(now()),
        ))
        .returning(VendorRow::as_returning())
        .get_result(connection)
        .optional()
        .map_err(|error| DbError::other(format!("setting the status of vendor {id}"), error))?
        .ok_or_else(|| vendor_not_found(id))?
        .try_into()
}

/// Deletes the vendor, only while its status is `status` when that is set,
/// and returns whether a row was deleted.
fn delete_vendor(
    connection: &mut SqliteConnection,
    id: &str,
    status: Option<VendorStatus>,
) -> Result<bool, DbError> {
    let deleted = match status {
        Some(status) => diesel::delete(
            vendors::table
                .find(id)
                .filter(vendors::status.eq(status.as_str())),
        )
        .execute(connection),
        None => diesel::delete(vendors::table.find(id)).execute(connection),
    }
    .map_err(|error| DbError::other(format!("deleting vendor {id}"), error))?;
    Ok(deleted > 0)
}

fn list_vendors(
    connection: &mut SqliteConnection,
    request: &ListVendors,
) -> Result<VendorPage, DbError> {
    let mut query = vendors::table
        .select(VendorRow::as_select())
        .order(vendors::id.asc())
        // The row after the page shows whether another page follows.
        .limit(i64::from(request.page_size) + 1)
        .into_boxed();
    if let Some(status) = request.status {
        query = query.filter(vendors::status.eq(status.as_str()));
    }
    if let Some(business_type) = &request.business_type {
        query = query.filter(vendors::business_type.eq(business_type));
    }
    if let Some(token) = &request.page_token {
        query = query.filter(vendors::id.gt(token));
    }

    let mut rows: Vec<VendorRow> = query
        .load(connection)
        .map_err(|error| DbError::other("listing vendors", error))?;
    let page_size = request.page_size as usize;
    let next_page_token = if rows.len() > page_size {
        rows.truncate(page_size);
        rows.last().map(|row| row.id.clone())
    } else {
        None
    };
    let vendors = rows
        .into_iter()
        .map(Vendor::try_from)
        .collect::<Result<_, _>>()?;
    Ok(VendorPage {
        vendors,
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use diesel::sql_types::BigInt;
    use tempfile::TempDir;

    use super::*;
    use crate::db::MAX_PAGE_SIZE;
    use crate::repository::VendorRepository;

    fn database_path(directory: &TempDir) -> PathBuf {
        directory.path().join("registry.sqlite")
    }

    fn open_temporary() -> (TempDir, SqliteDatabase) {
        let directory = tempfile::tempdir().expect("creating a temporary directory");
        let database =
            SqliteDatabase::open(&database_path(&directory)).expect("opening the test database");
        (directory, database)
    }

    fn new_vendor(id: &str, business_type: &str, status: VendorStatus) -> NewVendor {
        NewVendor {
            id: id.to_owned(),
            name: format!("Vendor {id}"),
            business_type: business_type.to_owned(),
            status,
            character_path: format!("vendors/{id}/character.json"),
        }
    }

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }

    /// Runs a `SELECT count(*) AS count ...` query on the database's
    /// connection.
    async fn count(database: &SqliteDatabase, query: &'static str) -> i64 {
        database
            .run(move |connection| {
                diesel::sql_query(query)
                    .get_result::<Count>(connection)
                    .map(|row| row.count)
                    .map_err(|error| DbError::other(query, error))
            })
            .await
            .unwrap()
    }

    /// Runs one SQL statement on the database's connection, bypassing the
    /// checks of the vendor methods.
    async fn execute(database: &SqliteDatabase, statement: String) -> QueryResult<usize> {
        database
            .run(move |connection| Ok(diesel::sql_query(statement).execute(connection)))
            .await
            .unwrap()
    }

    async fn journal_mode(database: &SqliteDatabase) -> String {
        database
            .run(|connection| {
                diesel::sql_query("PRAGMA journal_mode")
                    .get_result::<JournalMode>(connection)
                    .map(|row| row.journal_mode)
                    .map_err(|error| DbError::other("reading journal_mode", error))
            })
            .await
            .unwrap()
    }

    /// Lists every page and returns the page sizes and all ids in order.
    async fn list_all(
        database: &SqliteDatabase,
        mut request: ListVendors,
    ) -> (Vec<usize>, Vec<String>) {
        let mut sizes = Vec::new();
        let mut ids = Vec::new();
        loop {
            let VendorPage {
                vendors,
                next_page_token,
            } = database.list_vendors(&request).await.unwrap();
            sizes.push(vendors.len());
            ids.extend(vendors.into_iter().map(|vendor| vendor.id));
            match next_page_token {
                Some(token) => request.page_token = Some(token),
                None => return (sizes, ids),
            }
            assert!(sizes.len() <= 100, "listing does not end: {sizes:?}");
        }
    }

    fn embedded_migration_count() -> i64 {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations-sqlite");
        let count = std::fs::read_dir(folder).unwrap().count();
        i64::try_from(count).unwrap()
    }

    #[tokio::test]
    async fn open_twice_migrates_once() {
        let directory = tempfile::tempdir().unwrap();
        let path = database_path(&directory);
        let first = SqliteDatabase::open(&path).unwrap();
        assert!(path.is_file(), "open creates the file");
        let vendor = new_vendor("rosies-bakery", "bakery", VendorStatus::Active);
        let inserted = first.insert_vendor(&vendor).await.unwrap();

        let second = SqliteDatabase::open(&path).unwrap();
        assert_eq!(second.get_vendor("rosies-bakery").await.unwrap(), inserted);
        drop(first);
        drop(second);

        let reopened = SqliteDatabase::open(&path).unwrap();
        assert_eq!(
            reopened.get_vendor("rosies-bakery").await.unwrap(),
            inserted,
            "data survives closing every connection"
        );
        let applied = count(
            &reopened,
            "SELECT count(*) AS count FROM __diesel_schema_migrations",
        )
        .await;
        assert_eq!(
            applied,
            embedded_migration_count(),
            "each migration is recorded once"
        );
    }

    #[tokio::test]
    async fn concurrent_opens_migrate_once() {
        let directory = tempfile::tempdir().unwrap();
        let path = database_path(&directory);
        let databases: Vec<SqliteDatabase> = std::thread::scope(|scope| {
            let opens: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| SqliteDatabase::open(&path)))
                .collect();
            opens
                .into_iter()
                .map(|open| open.join().unwrap().unwrap())
                .collect()
        });
        let applied = count(
            &databases[0],
            "SELECT count(*) AS count FROM __diesel_schema_migrations",
        )
        .await;
        assert_eq!(applied, embedded_migration_count());
    }

    #[tokio::test]
    async fn open_sets_wal_and_busy_timeout() {
        let (_directory, database) = open_temporary();
        assert_eq!(journal_mode(&database).await, "wal");
        let timeout = database
            .run(|connection| {
                diesel::sql_query("PRAGMA busy_timeout")
                    .get_result::<BusyTimeout>(connection)
                    .map(|row| row.timeout)
                    .map_err(|error| DbError::other("reading busy_timeout", error))
            })
            .await
            .unwrap();
        assert_eq!(timeout, 5000);
    }

    #[derive(QueryableByName)]
    struct BusyTimeout {
        #[diesel(sql_type = BigInt)]
        timeout: i64,
    }

    #[tokio::test]
    async fn open_in_missing_directory_fails() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("missing").join("registry.sqlite");
        let error = SqliteDatabase::open(&path).unwrap_err();
        assert!(matches!(error, DbError::Other { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn relative_path_gets_dot_prefix() {
        let url = connection_url(Path::new("file:registry.sqlite")).unwrap();
        assert_eq!(url, "./file:registry.sqlite");
        let url = connection_url(Path::new(":memory:")).unwrap();
        assert_eq!(url, "./:memory:");
        let url = connection_url(Path::new("/var/lib/voca/registry.sqlite")).unwrap();
        assert_eq!(url, "/var/lib/voca/registry.sqlite");
    }

    #[tokio::test]
    async fn insert_and_get_round_trip() {
        let (_directory, database) = open_temporary();
        let before = OffsetDateTime::now_utc();
        let vendor = new_vendor("rosies-bakery", "bakery", VendorStatus::Pending);
        let inserted = database.insert_vendor(&vendor).await.unwrap();
        let after = OffsetDateTime::now_utc();

        assert_eq!(inserted.id, "rosies-bakery");
        assert_eq!(inserted.name, "Vendor rosies-bakery");
        assert_eq!(inserted.business_type, "bakery");
        assert_eq!(inserted.status, VendorStatus::Pending);
        assert_eq!(
            inserted.character_path,
            "vendors/rosies-bakery/character.json"
        );
        assert_eq!(inserted.character_version, 1);
        assert!(inserted.created_at >= before.replace_nanosecond(0).unwrap());
        assert!(
            inserted.created_at <= after,
            "{} > {after}",
            inserted.created_at
        );
        assert_eq!(
            inserted.created_at.nanosecond() % 1_000,
            0,
            "microsecond precision"
        );
        assert_eq!(inserted.updated_at, inserted.created_at);

        let stored = database.get_vendor("rosies-bakery").await.unwrap();
        assert_eq!(stored, inserted);
    }

    #[tokio::test]
    async fn duplicate_id_already_exists() {
        let (_directory, database) = open_temporary();
        let vendor = new_vendor("rosies-bakery", "bakery", VendorStatus::Active);
        database.insert_vendor(&vendor).await.unwrap();

        let second = NewVendor {
            name: "Another bakery".to_owned(),
            ..vendor
        };
        let error = database.insert_vendor(&second).await.unwrap_err();
        assert!(
            matches!(
                &error,
                DbError::AlreadyExists { entity: "vendor", key } if key == "rosies-bakery"
            ),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "vendor rosies-bakery already exists");
        let stored = database.get_vendor("rosies-bakery").await.unwrap();
        assert_eq!(stored.name, "Vendor rosies-bakery", "the first row stays");
    }

    #[tokio::test]
    async fn invalid_id_rejected() {
        let database = SqliteDatabase::open_in_memory().unwrap();
        for id in ["", ".hidden", "a/b", "bäckerei", &"x".repeat(129)] {
            let vendor = new_vendor(id, "bakery", VendorStatus::Active);
            let errors = [
                database.insert_vendor(&vendor).await.map(drop),
                database.get_vendor(id).await.map(drop),
                database
                    .update_vendor(id, &VendorUpdate::default())
                    .await
                    .map(drop),
                database
                    .set_vendor_status(id, VendorStatus::Active)
                    .await
                    .map(drop),
                database.delete_vendor(id).await.map(drop),
                database
                    .delete_vendor_in_status(id, VendorStatus::Pending)
                    .await
                    .map(drop),
            ];
            for (operation, result) in errors.into_iter().enumerate() {
                let error = result.unwrap_err();
                assert!(
                    matches!(&error, DbError::InvalidInput(input) if input.field == "vendor_id"),
                    "operation {operation} on {id:?}: {error:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn missing_vendor_not_found() {
        let database = SqliteDatabase::open_in_memory().unwrap();
        let error = database.get_vendor("no-such-vendor").await.unwrap_err();
        assert!(matches!(error, DbError::NotFound { .. }), "{error:?}");
        assert_eq!(error.to_string(), "vendor no-such-vendor not found");

        let update = VendorUpdate {
            name: Some("Nobody".to_owned()),
            ..VendorUpdate::default()
        };
        let error = database
            .update_vendor("no-such-vendor", &update)
            .await
            .unwrap_err();
        assert!(matches!(error, DbError::NotFound { .. }), "{error:?}");

        let error = database
            .set_vendor_status("no-such-vendor", VendorStatus::Suspended)
            .await
            .unwrap_err();
        assert!(matches!(error, DbError::NotFound { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn update_raises_version_and_applies_fields() {
        let (_directory, database) = open_temporary();
        let vendor = new_vendor("rosies-bakery", "bakery", VendorStatus::Active);
        let inserted = database.insert_vendor(&vendor).await.unwrap();

        let update = VendorUpdate {
            name: Some("Rosie's Bakery".to_owned()),
            status: Some(VendorStatus::Suspended),
            ..VendorUpdate::default()
        };
        let version = database
            .update_vendor("rosies-bakery", &update)
            .await
            .unwrap();
        assert_eq!(version, 2);
        let version = database
            .update_vendor("rosies-bakery", &VendorUpdate::default())
            .await
            .unwrap();
        assert_eq!(version, 3, "the version rises with no field changed");

        let updated = database.get_vendor("rosies-bakery").await.unwrap();
        assert_eq!(updated.name, "Rosie's Bakery");
        assert_eq!(updated.status, VendorStatus::Suspended);
        assert_eq!(
            updated.business_type, "bakery",
            "unset fields keep their value"
        );
        assert_eq!(
            updated.character_path,
            "vendors/rosies-bakery/character.json"
        );
        assert_eq!(updated.character_version, 3);
        assert_eq!(updated.created_at, inserted.created_at);
        assert!(updated.updated_at > inserted.updated_at);

        let update = VendorUpdate {
            business_type: Some("cafe".to_owned()),
            character_path: Some("vendors/rosies-bakery/v4/character.json".to_owned()),
            ..VendorUpdate::default()
        };
        let version = database
            .update_vendor("rosies-bakery", &update)
            .await
            .unwrap();
        assert_eq!(version, 4);
        let updated = database.get_vendor("rosies-bakery").await.unwrap();
        assert_eq!(updated.business_type, "cafe");
        assert_eq!(
            updated.character_path,
            "vendors/rosies-bakery/v4/character.json"
        );
        assert_eq!(updated.name, "Rosie's Bakery");
    }

    #[tokio::test]
    async fn set_status_keeps_version() {
        let (_directory, database) = open_temporary();
        let vendor = new_vendor("bike-fix", "repair", VendorStatus::Pending);
        let inserted = database.insert_vendor(&vendor).await.unwrap();

        let active = database
            .set_vendor_status("bike-fix", VendorStatus::Active)
            .await
            .unwrap();
        assert_eq!(active.status, VendorStatus::Active);
        assert_eq!(active.character_version, 1);
        assert_eq!(active.name, inserted.name);
        assert_eq!(active.created_at, inserted.created_at);
        assert!(active.updated_at > inserted.updated_at);
        assert_eq!(database.get_vendor("bike-fix").await.unwrap(), active);

        database
            .update_vendor("bike-fix", &VendorUpdate::default())
            .await
            .unwrap();
        let suspended = database
            .set_vendor_status("bike-fix", VendorStatus::Suspended)
            .await
            .unwrap();
        assert_eq!(suspended.status, VendorStatus::Suspended);
        assert_eq!(suspended.character_version, 2);
    }

    #[tokio::test]
    async fn delete_twice_returns_true_then_false() {
        let (_directory, database) = open_temporary();
        let vendor = new_vendor("bike-fix", "repair", VendorStatus::Active);
        database.insert_vendor(&vendor).await.unwrap();

        assert!(database.delete_vendor("bike-fix").await.unwrap());
        assert!(!database.delete_vendor("bike-fix").await.unwrap());
        let error = database.get_vendor("bike-fix").await.unwrap_err();
        assert!(matches!(error, DbError::NotFound { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn delete_in_status_needs_matching_status() {
        let (_directory, database) = open_temporary();
        let vendor = new_vendor("bike-fix", "repair", VendorStatus::Pending);
        database.insert_vendor(&vendor).await.unwrap();

        let deleted = database
            .delete_vendor_in_status("bike-fix", VendorStatus::Active)
            .await
            .unwrap();
        assert!(!deleted, "an active-only delete leaves a pending row");
        let stored = database.get_vendor("bike-fix").await.unwrap();
        assert_eq!(stored.status, VendorStatus::Pending);

        let deleted = database
            .delete_vendor_in_status("bike-fix", VendorStatus::Pending)
            .await
            .unwrap();
        assert!(deleted);
        let error = database.get_vendor("bike-fix").await.unwrap_err();
        assert!(matches!(error, DbError::NotFound { .. }), "{error:?}");
        let deleted = database
            .delete_vendor_in_status("bike-fix", VendorStatus::Pending)
            .await
            .unwrap();
        assert!(!deleted, "a missing vendor is not deleted");
    }

    /// Inserts `vendor-00` to `vendor-24` in reverse order: even numbers are
    /// bakeries, odd numbers plumbers, multiples of 5 suspended.
    async fn insert_25_vendors(database: &SqliteDatabase) {
        for i in (0..25).rev() {
            let business_type = if i % 2 == 0 { "bakery" } else { "plumber" };
            let status = if i % 5 == 0 {
                VendorStatus::Suspended
            } else {
                VendorStatus::Active
            };
            let vendor = new_vendor(&format!("vendor-{i:02}"), business_type, status);
            database.insert_vendor(&vendor).await.unwrap();
        }
    }

    #[tokio::test]
    async fn listing_pages_in_id_order() {
        let (_directory, database) = open_temporary();
        insert_25_vendors(&database).await;

        let all = ListVendors {
            page_size: 10,
            ..ListVendors::default()
        };
        let first = database.list_vendors(&all).await.unwrap();
        assert_eq!(first.vendors.len(), 10);
        assert_eq!(first.next_page_token.as_deref(), Some("vendor-09"));

        let (sizes, ids) = list_all(&database, all).await;
        assert_eq!(sizes, vec![10, 10, 5]);
        let expected: Vec<String> = (0..25).map(|i| format!("vendor-{i:02}")).collect();
        assert_eq!(ids, expected, "pages are in id order");
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), 25, "no vendor is listed twice");

        let exact = ListVendors {
            page_size: 5,
            ..ListVendors::default()
        };
        let (sizes, _) = list_all(&database, exact).await;
        assert_eq!(sizes, vec![5; 5], "no empty page after an exact fit");

        let whole = ListVendors {
            page_size: 25,
            ..ListVendors::default()
        };
        let page = database.list_vendors(&whole).await.unwrap();
        assert_eq!(page.vendors.len(), 25);
        assert_eq!(page.next_page_token, None);
    }

    #[tokio::test]
    async fn listing_filters_by_status_and_type() {
        let (_directory, database) = open_temporary();
        insert_25_vendors(&database).await;

        let suspended = ListVendors {
            status: Some(VendorStatus::Suspended),
            page_size: 2,
            ..ListVendors::default()
        };
        let (sizes, ids) = list_all(&database, suspended).await;
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(
            ids,
            [
                "vendor-00",
                "vendor-05",
                "vendor-10",
                "vendor-15",
                "vendor-20"
            ]
        );

        let bakeries = ListVendors {
            business_type: Some("bakery".to_owned()),
            page_size: 10,
            ..ListVendors::default()
        };
        let (sizes, ids) = list_all(&database, bakeries).await;
        assert_eq!(sizes, vec![10, 3]);
        let expected: Vec<String> = (0..25)
            .step_by(2)
            .map(|i| format!("vendor-{i:02}"))
            .collect();
        assert_eq!(ids, expected);

        let suspended_bakeries = ListVendors {
            status: Some(VendorStatus::Suspended),
            business_type: Some("bakery".to_owned()),
            page_size: 10,
            ..ListVendors::default()
        };
        let (sizes, ids) = list_all(&database, suspended_bakeries).await;
        assert_eq!(sizes, vec![3]);
        assert_eq!(ids, ["vendor-00", "vendor-10", "vendor-20"]);

        let no_match = ListVendors {
            business_type: Some("florist".to_owned()),
            page_size: 10,
            ..ListVendors::default()
        };
        let page = database.list_vendors(&no_match).await.unwrap();
        assert!(page.vendors.is_empty());
        assert_eq!(page.next_page_token, None);
    }

    #[tokio::test]
    async fn listing_orders_ids_by_byte() {
        let database = SqliteDatabase::open_in_memory().unwrap();
        for id in ["a", "_", "B", "0", "-", "A.b"] {
            let vendor = new_vendor(id, "bakery", VendorStatus::Active);
            database.insert_vendor(&vendor).await.unwrap();
        }
        let request = ListVendors {
            page_size: 10,
            ..ListVendors::default()
        };
        let (_, ids) = list_all(&database, request).await;
        assert_eq!(ids, ["-", "0", "A.b", "B", "_", "a"]);
    }

    #[tokio::test]
    async fn page_size_out_of_range_rejected() {
        let database = SqliteDatabase::open_in_memory().unwrap();
        for page_size in [0, MAX_PAGE_SIZE + 1] {
            let request = ListVendors {
                page_size,
                ..ListVendors::default()
            };
            let error = database.list_vendors(&request).await.unwrap_err();
            assert!(
                matches!(&error, DbError::InvalidInput(input) if input.field == "page_size"),
                "page_size {page_size}: {error:?}"
            );
        }
        let largest = ListVendors {
            page_size: MAX_PAGE_SIZE,
            ..ListVendors::default()
        };
        database.list_vendors(&largest).await.unwrap();
    }

    #[tokio::test]
    async fn schema_rejects_invalid_rows() {
        let database = SqliteDatabase::open_in_memory().unwrap();
        let long_id = "x".repeat(129);
        let rows = [
            ("", "active", 1),
            (".hidden", "active", 1),
            ("a/b", "active", 1),
            ("bäckerei", "active", 1),
            (long_id.as_str(), "active", 1),
            ("bike-fix", "unknown", 1),
            ("bike-fix", "active", 0),
        ];
        for (id, status, version) in rows {
            let statement = format!(
                "INSERT INTO vendors \
                 (id, name, business_type, status, character_path, character_version) \
                 VALUES ('{id}', 'Bike Fix', 'repair', '{status}', 'vendors/x/character.json', {version})"
            );
            let error = execute(&database, statement).await.unwrap_err();
            assert!(
                matches!(
                    error,
                    QueryError::DatabaseError(DatabaseErrorKind::CheckViolation, _)
                ),
                "id {id}, status {status}, version {version}: {error:?}"
            );
        }

        for id in ["x".repeat(128), "A_b-9.z".to_owned()] {
            let statement = format!(
                "INSERT INTO vendors (id, name, business_type, character_path) \
                 VALUES ('{id}', 'Bike Fix', 'repair', 'vendors/x/character.json')"
            );
            let inserted = execute(&database, statement).await;
            assert_eq!(inserted.ok(), Some(1), "id {id} is valid");
        }
    }

    #[tokio::test]
    async fn schema_defaults_are_readable() {
        let database = SqliteDatabase::open_in_memory().unwrap();
        let statement = "INSERT INTO vendors (id, name, business_type, character_path) \
                         VALUES ('bike-fix', 'Bike Fix', 'repair', 'vendors/bike-fix/character.json')";
        execute(&database, statement.to_owned()).await.unwrap();

        let vendor = database.get_vendor("bike-fix").await.unwrap();
        assert_eq!(vendor.status, VendorStatus::Active);
        assert_eq!(vendor.character_version, 1);
        let age = OffsetDateTime::now_utc() - vendor.created_at;
        assert!(age >= time::Duration::ZERO, "{age}");
        assert!(age < time::Duration::minutes(1), "{age}");
        assert_eq!(vendor.updated_at, vendor.created_at);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_all_stored() {
        let (_directory, database) = open_temporary();
        let inserts = (0..16).map(|i| {
            let database = database.clone();
            tokio::spawn(async move {
                let vendor = new_vendor(&format!("vendor-{i:02}"), "bakery", VendorStatus::Active);
                database.insert_vendor(&vendor).await
            })
        });
        for result in futures::future::join_all(inserts).await {
            result.unwrap().unwrap();
        }
        let stored = count(&database, "SELECT count(*) AS count FROM vendors").await;
        assert_eq!(stored, 16);
    }

    #[tokio::test]
    async fn repository_describes_path() {
        let (directory, database) = open_temporary();
        let repository: Arc<dyn VendorRepository> = Arc::new(database);
        let expected = format!("SQLite at {}", database_path(&directory).display());
        assert_eq!(repository.describe(), expected);

        let vendor = new_vendor("bike-fix", "repair", VendorStatus::Active);
        let inserted = repository.insert_vendor(&vendor).await.unwrap();
        assert_eq!(repository.get_vendor("bike-fix").await.unwrap(), inserted);

        let in_memory = SqliteDatabase::open_in_memory().unwrap();
        assert_eq!(VendorRepository::describe(&in_memory), "SQLite at :memory:");
    }
}
