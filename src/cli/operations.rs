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
    if file.exists() {
        bail!("{} exists; a backup never overwrites a file", file.display());
    }
    // Made empty with its final mode first: the copy is never readable by others, not even for a moment.
    create_private(&file)?;
    let made = async {
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&source)
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("opening {}", source.display()))?;
        let target = file.to_str().context("the backup's file name is not UTF-8")?;
        sqlx::query("VACUUM INTO ?").bind(target).execute(&mut connection).await.context("copying the database")?;
        let _ = connection.close().await;
        std::fs::File::open(&file)?.sync_all()?;
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = made {
        let _ = std::fs::remove_file(&file);
        return Err(error);
    }
    let (messages, size) = summary(&file).await?;
    println!("backed up {messages} messages ({size} bytes) to {}", file.display());
    eprintln!("warning: {SECRETS_WARNING}");
    Ok(ExitCode::SUCCESS)
}

/// `mailgate restore FILE`: a backup becomes the data folder's database.
/// Only into a folder without one: a restore never overwrites mail.
pub(crate) async fn restore(file: PathBuf, args: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let Some(target) = sqlite_path(&config.database_url) else {
        bail!(
            "mailgate restore writes a SQLite database; for PostgreSQL use pg_restore \
             (docs/operations.md, \"Backup and restore\")"
        )
    };
    if target.exists() {
        bail!("{} exists: restore only into an empty data folder (move the old one aside first)", target.display());
    }
    // A backup of ours, whole, and of a schema this build can run.
    let url = format!("sqlite://{}", file.to_str().context("the backup's file name is not UTF-8")?);
    let status = schema::status(&url).await.with_context(|| format!("{} is not a mailgate backup", file.display()))?;
    if status.database_version == 0 {
        bail!("{} is not a mailgate backup (it has no mailgate schema)", file.display());
    }
    if status.is_newer() {
        return Err(status.newer_error().into());
    }
    check_integrity(&file).await?;
    if let Some(folder) = target.parent() {
        std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    }
    let partial = target.with_extension("db.restoring");
    let _ = std::fs::remove_file(&partial);
    create_private(&partial)?;
    let mut from = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let mut to = std::fs::OpenOptions::new().write(true).open(&partial)?;
    std::io::copy(&mut from, &mut to).context("copying the backup")?;
    to.sync_all()?;
    std::fs::rename(&partial, &target)?;
    if let Some(folder) = target.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    // Brought up to this build's schema now, not at the server's start.
    let store = mailgate::app::open_database(&config).await?;
    store.close().await;
    let (messages, _) = summary(&target).await?;
    println!("restored {messages} messages into {}; start the server with this data folder", target.display());
    Ok(ExitCode::SUCCESS)
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
        bail!("{} is damaged ({verdict}); nothing was restored", file.display());
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
