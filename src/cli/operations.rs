//! The operator's commands: `migrate` (upgrade the schema, or say what an
//! upgrade would do), `backup` (a consistent copy while the server runs),
//! `restore` (a backup into an empty data folder) and `doctor` (the DNS).

use anyhow::{Context, bail};
use mailgate::config::{StoreArgs, ToolArgs};
use mailgate::store::schema;
use sqlx::{ConnectOptions, Connection};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

/// `mailgate migrate [--check]`: with `--check`, lists the pending
/// migrations and exits 1 when there are any (0: up to date); without, applies them.
pub(crate) async fn migrate(check: bool, json: bool, args: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let status = schema::status(&config.database_url)
        .await
        .with_context(|| format!("reading the schema of {}", config.database_url_for_logs()))?;
    if status.is_newer() {
        return Err(status.newer_error().into());
    }
    if check {
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else if status.pending.is_empty() {
            println!("the database is up to date (schema version {})", status.database_version);
        } else {
            println!(
                "schema version {}; {} migration(s) pending (`mailgate migrate` applies them):",
                status.database_version,
                status.pending.len()
            );
            for migration in &status.pending {
                println!("  {:04} {}", migration.version, migration.description);
            }
        }
        return Ok(if status.pending.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    // Opening the store applies what is pending (PostgreSQL: under sqlx's
    // advisory lock, so instances starting meanwhile wait their turn).
    let store = mailgate::app::open_database(&config).await?;
    store.close().await;
    if json {
        println!("{}", serde_json::json!({"applied": status.pending, "schema_version": status.known_version}));
    } else if status.pending.is_empty() {
        println!("the database is up to date (schema version {})", status.database_version);
    } else {
        for migration in &status.pending {
            println!("applied {:04} {}", migration.version, migration.description);
        }
        println!("the database is at schema version {}", status.known_version);
    }
    Ok(ExitCode::SUCCESS)
}

/// What a backup holds that an attacker wants, said every time one is made.
const SECRETS_WARNING: &str = "the backup holds the secrets that sign reply addresses, the webhook secrets and \
     every kept message: store it as you store the data folder (mode 0600, encrypted off this host)";

/// `mailgate backup FILE`: a consistent copy of the SQLite database, made
/// while the server runs and takes mail (`VACUUM INTO` reads one snapshot
/// and never blocks the writer), readable by its owner only.
pub(crate) async fn backup(file: PathBuf, args: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let Some(source) = sqlite_path(&config.database_url) else {
        bail!(
            "mailgate backup copies the SQLite database; for PostgreSQL use pg_dump --format=custom \
             (docs/operations.md, \"Backup and restore\")"
        )
    };
    mailgate::app::require_existing_database(&config)?;
    snapshot(&source, &file).await?;
    let (messages, size) = summary(&file).await.unwrap_or((0, 0));
    println!("backed up {messages} messages ({size} bytes) to {}", file.display());
    eprintln!("warning: {SECRETS_WARNING}");
    Ok(ExitCode::SUCCESS)
}

/// Copies the database `source` (with what its log holds) to the new file
/// `target`: one consistent snapshot by `VACUUM INTO`, into a file made
/// empty with mode 0600 first (never readable by others, not even for a
/// moment), synced with its folder. Never overwrites; removes what it made
/// when it fails.
async fn snapshot(source: &Path, target: &Path) -> anyhow::Result<()> {
    // SQLite reads a name starting with `file:` as a URI: an absolute path never does.
    let target = std::path::absolute(target).with_context(|| format!("{}", target.display()))?;
    if std::fs::symlink_metadata(&target).is_ok() {
        bail!("{} exists; a backup never overwrites a file", target.display());
    }
    create_private(&target)?;
    let made = async {
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(source)
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("opening {}", source.display()))?;
        let name = target.to_str().context("the file name is not UTF-8")?;
        sqlx::query("VACUUM INTO ?").bind(name).execute(&mut connection).await.context("copying the database")?;
        let _ = connection.close().await;
        std::fs::File::open(&target)?.sync_all()?;
        if let Some(parent) = target.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        anyhow::Ok(())
    }
    .await;
    if made.is_err() {
        let _ = std::fs::remove_file(&target);
    }
    made
}

/// `mailgate restore FILE`: a backup becomes the data folder's database.
/// Only into a folder without one (nor a log or journal left of one): a
/// restore never overwrites mail, and never mixes two databases.
pub(crate) async fn restore(file: PathBuf, args: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let Some(target) = sqlite_path(&config.database_url) else {
        bail!(
            "mailgate restore writes a SQLite database; for PostgreSQL use pg_restore \
             (docs/operations.md, \"Backup and restore\")"
        )
    };
    let leftovers =
        [target.clone(), with_suffix(&target, "-wal"), with_suffix(&target, "-shm"), with_suffix(&target, "-journal")];
    if let Some(found) = leftovers.iter().find(|f| std::fs::symlink_metadata(f).is_ok()) {
        bail!(
            "{} exists: restore only into an empty data folder (move the old folder aside whole, \
             with its -wal and -shm files)",
            found.display()
        );
    }
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    if let Some(folder) = target.parent() {
        std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    }
    // Copied as SQLite reads it (a live database's log included), then the copy is checked:
    // a mailgate schema this build can run, every page whole.
    let partial = with_suffix(&target, ".restoring");
    let _ = std::fs::remove_file(&partial);
    snapshot(&file, &partial).await.with_context(|| format!("{} is not a mailgate backup", file.display()))?;
    let checked = async {
        let status = schema::status_of_file(&partial).await?;
        if status.database_version == 0 {
            bail!("{} is not a mailgate backup (it has no mailgate schema)", file.display());
        }
        if status.is_newer() {
            return Err(status.newer_error().into());
        }
        check_integrity(&partial).await.with_context(|| format!("{} is damaged", file.display()))
    }
    .await;
    if let Err(error) = checked {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::rename(&partial, &target)?;
    if let Some(folder) = target.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    // Brought up to this build's schema now, not at the server's start; a
    // failure leaves the folder as it was.
    match mailgate::app::open_database(&config).await {
        Ok(store) => store.close().await,
        Err(error) => {
            for file in &leftovers {
                let _ = std::fs::remove_file(file);
            }
            return Err(
                error.context("bringing the restored database up to this version's schema; nothing was restored")
            );
        }
    }
    let (messages, _) = summary(&target).await?;
    println!("restored {messages} messages into {}; start the server with this data folder", target.display());
    Ok(ExitCode::SUCCESS)
}

/// `path` with `suffix` added to its file name (`mailgate.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The file of a `sqlite:` URL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    url.starts_with("sqlite:")
        .then(|| sqlx::sqlite::SqliteConnectOptions::from_str(url).ok().map(|o| o.get_filename().to_path_buf()))
        .flatten()
}

/// An empty file only its owner can read and write.
fn create_private(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.flush()?;
    Ok(())
}

/// SQLite's own check of every page of the backup.
async fn check_integrity(file: &Path) -> anyhow::Result<()> {
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new().filename(file).read_only(true).connect().await?;
    let verdict: String = sqlx::query_scalar("PRAGMA quick_check").fetch_one(&mut connection).await?;
    let _ = connection.close().await;
    if verdict != "ok" {
        bail!("{verdict}; nothing was restored");
    }
    Ok(())
}

/// (messages stored, file size) of a database file.
async fn summary(file: &Path) -> anyhow::Result<(i64, u64)> {
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new().filename(file).read_only(true).connect().await?;
    let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&mut connection).await?;
    let _ = connection.close().await;
    Ok((messages, std::fs::metadata(file)?.len()))
}

/// `mailgate doctor`: the DNS checks, one line each (or JSON); exit 1 on a fail.
pub(crate) async fn doctor(
    outbound_ip: Option<std::net::IpAddr>,
    json: bool,
    args: ToolArgs,
) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let report = mailgate::doctor::Setup::from_config(&config, outbound_ip)?.run().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
