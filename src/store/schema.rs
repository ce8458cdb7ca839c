//! The database's schema version: which of this build's migrations a
//! database has, which are pending, and whether a newer mailgate has
//! already upgraded it (then this build refuses to touch it).
//!
//! Migrations are sqlx's, embedded at build time; the applied ones are the
//! rows of `_sqlx_migrations`. Reading them needs no write, so `migrate
//! --check` can ask a database that a server is using.

use super::{ConnectOptions, Connection, FromStr, PgConnectOptions, SqliteConnectOptions, StoreError, StoreResult};
use sqlx::migrate::Migrator;

/// This build's SQLite migrations.
pub(super) static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
/// This build's PostgreSQL migrations.
pub(super) static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// One migration: its number and what it does (from its file name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    /// The number in the file name (`0020_...` is 20).
    pub version: i64,
    /// The rest of the file name, in words.
    pub description: String,
}

/// Where a database stands against this build's migrations.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaStatus {
    /// The newest migration applied (0: none, a new database).
    pub database_version: i64,
    /// The newest migration this build knows.
    pub known_version: i64,
    /// This build's migrations the database lacks, oldest first.
    pub pending: Vec<Migration>,
}

impl SchemaStatus {
    /// Whether a newer mailgate has migrated the database past what this
    /// build knows.
    pub fn is_newer(&self) -> bool {
        self.database_version > self.known_version
    }

    /// The refusal to run on a newer database, as one sentence.
    pub fn newer_error(&self) -> StoreError {
        StoreError::NewerSchema { found: self.database_version, known: self.known_version }
    }
}

/// Reads the schema status of the database at `url` without changing it
/// (a SQLite file that does not exist yet has every migration pending).
pub async fn status(url: &str) -> StoreResult<SchemaStatus> {
    let (migrator, applied) = if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?;
        let applied = if options.get_filename().exists() {
            let mut connection = options.read_only(true).connect().await?;
            let applied = applied_versions(&mut connection, SQLITE_TABLES).await;
            let _ = connection.close().await;
            applied?
        } else {
            Vec::new()
        };
        (&SQLITE, applied)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let mut connection = PgConnectOptions::from_str(url)?.connect().await?;
        let applied = applied_versions(&mut connection, POSTGRES_TABLES).await;
        let _ = connection.close().await;
        (&POSTGRES, applied?)
    } else {
        return Err(StoreError::Unsupported(
            "unsupported database URL: use sqlite://FILE or postgres://USER:PASSWORD@HOST/DATABASE".to_owned(),
        ));
    };
    Ok(compare(migrator, &applied))
}

/// [`status`] of the SQLite file at `path` (named as a path, never read as a URL).
pub async fn status_of_file(path: &std::path::Path) -> StoreResult<SchemaStatus> {
    let mut connection = SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
    let applied = applied_versions(&mut connection, SQLITE_TABLES).await;
    let _ = connection.close().await;
    Ok(compare(&SQLITE, &applied?))
}

/// Whether this build has migrations a database with `applied` lacks;
/// refuses a database that a newer mailgate has migrated (this build's code
/// would misread tables it does not know). With nothing pending, the
/// migrator is not run at all: a role with only the data privileges can
/// then serve.
pub(super) fn anything_pending(migrator: &Migrator, applied: &[i64]) -> StoreResult<bool> {
    let status = compare(migrator, applied);
    if status.is_newer() { Err(status.newer_error()) } else { Ok(!status.pending.is_empty()) }
}

fn compare(migrator: &Migrator, applied: &[i64]) -> SchemaStatus {
    let known: Vec<Migration> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Migration { version: m.version, description: m.description.to_string() })
        .collect();
    SchemaStatus {
        database_version: applied.iter().copied().max().unwrap_or(0),
        known_version: known.iter().map(|m| m.version).max().unwrap_or(0),
        pending: known.into_iter().filter(|m| !applied.contains(&m.version)).collect(),
    }
}

/// Where each backend lists its tables: (catalog, name column).
pub(super) const SQLITE_TABLES: (&str, &str) = ("sqlite_master", "name");
/// PostgreSQL's list of tables.
pub(super) const POSTGRES_TABLES: (&str, &str) = ("pg_tables", "tablename");

/// The versions recorded as applied; none when the table is not there yet.
pub(super) async fn applied_versions<C>(
    connection: &mut C,
    (catalog, name_column): (&str, &str),
) -> StoreResult<Vec<i64>>
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, C::Database>,
    for<'r> i64: sqlx::Decode<'r, C::Database> + sqlx::Type<C::Database>,
    for<'r> bool: sqlx::Decode<'r, C::Database> + sqlx::Type<C::Database>,
    usize: sqlx::ColumnIndex<<C::Database as sqlx::Database>::Row>,
{
    // The catalog names are ours, never input: formatting them in is safe.
    let exists: i64 =
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {catalog} WHERE {name_column} = '_sqlx_migrations'"))
            .fetch_one(&mut *connection)
            .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let versions: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut *connection)
        .await?;
    Ok(versions.into_iter().filter(|(_, success)| *success).map(|(version, _)| version).collect())
}
