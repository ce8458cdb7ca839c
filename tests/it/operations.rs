//! Issue 35, running in production: schema upgrades (`migrate`, a newer
//! database refused), backup while mail arrives and restore into a fresh
//! folder.

use crate::support::*;
use std::time::Instant;

/// A database made by the first migration only, as the oldest mailgate left
/// it, with one conversation in it.
async fn oldest_database(url: &str) {
    use sqlx::Connection;
    let backend = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let only_first = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{}/migrations/{backend}/0001_initial.sql", env!("CARGO_MANIFEST_DIR")),
        only_first.path().join("0001_initial.sql"),
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(only_first.path()).await.unwrap();
    let rows = [
        "INSERT INTO organizations (name, created_at) VALUES ('Old Co', 1700000000)",
        "INSERT INTO sites (name, plan_id, organization_id, created_at) VALUES ('old.example', 'sandbox', 1, 1700000000)",
        "INSERT INTO users (email, name, role, organization_id, created_at) \
         VALUES ('olga@old.example', 'Olga', 'owner', 1, 1700000000)",
        "INSERT INTO threads (kind, site_id, customer_id, subject, status, created_at, updated_at) \
         VALUES ('chat', 1, 1, 'From the first version', 'open', 1700000000, 1700000000)",
        "INSERT INTO messages (thread_id, author_id, body, source, created_at) \
         VALUES (1, 1, 'written in the first version', 'dashboard', 1700000000)",
    ];
    if backend == "sqlite" {
        let mut connection = {
            use sqlx::ConnectOptions;
            use std::str::FromStr;
            sqlx::sqlite::SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true).connect().await.unwrap()
        };
        migrator.run(&mut connection).await.unwrap();
        for row in rows {
            sqlx::query(row).execute(&mut connection).await.unwrap();
        }
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        migrator.run(&mut connection).await.unwrap();
        for row in rows {
            sqlx::query(row).execute(&mut connection).await.unwrap();
        }
    }
}

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let out = command.output().expect("mailgate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mailgate(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"));
    command.args(args).arg("--data-dir").arg(dir).env("MAILGATE_DATABASE_URL", url).env("RUST_LOG", "warn");
    command
}

#[tokio::test]
async fn a_database_of_the_first_version_is_upgraded_by_migrate_and_keeps_its_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    oldest_database(&url).await;

    let (code, out, err) = run(mailgate(dir.path(), &url, &["migrate", "--check"]).arg("--json"));
    assert_eq!(code, 1, "pending migrations make --check exit 1: {out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["database_version"], 1, "{out}");
    let pending = status["pending"].as_array().unwrap();
    assert!(pending.len() >= 18, "{out}");
    assert!(pending.iter().any(|m| m["description"] == "outbox sent text"), "{out}");
    // --check changed nothing.
    let (code, out, _) = run(&mut mailgate(dir.path(), &url, &["migrate", "--check"]));
    assert_eq!(code, 1);
    assert!(out.contains("schema version 1;") && out.contains("0020 outbox sent text"), "{out}");

    let (code, out, err) = run(&mut mailgate(dir.path(), &url, &["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied 0020 outbox sent text"), "{out}");
    let (code, out, _) = run(&mut mailgate(dir.path(), &url, &["migrate", "--check"]));
    assert_eq!((code, out.contains("up to date")), (0, true), "{out}");

    // The server starts on it and the old conversation reads as before.
    let app = start_in(dir, url, |_| {}).await;
    let (status, thread) = app.get("/chats/1").await;
    assert_eq!(status, 200, "{thread}");
    assert_eq!(thread["subject"], "From the first version");
    let messages = app.messages("/chats/1").await;
    assert_eq!(messages[0]["text"], "written in the first version", "{messages:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_database_upgraded_by_a_newer_mailgate_is_refused_with_a_sentence_that_says_so() {
    // The database outlives the instance, whose own folder goes when it stops.
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    start_in(tempfile::tempdir().unwrap(), url.clone(), |_| {}).await.stop().await;
    let dir = dir.path();
    let checksum = if url.starts_with("sqlite:") { "X'00'" } else { "decode('00', 'hex')" };
    let future = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, {checksum}, 1)"
    );
    execute_sql(&url, &future).await;
    let expected = "this database was upgraded by a newer mailgate (schema version 9999";
    let (code, _, err) = run(&mut mailgate(dir, &url, &["migrate", "--check"]));
    assert_eq!(code, 1);
    assert!(err.contains(expected), "{err}");
    let (code, _, err) = run(mailgate(dir, &url, &["serve"])
        .args(["--smtp-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"]));
    assert_eq!(code, 1, "serve refuses to start: {err}");
    assert!(err.contains(expected) && err.contains("restore the backup made before the upgrade"), "{err}");
    let (code, _, err) = run(mailgate(dir, &url, &["log"]).arg("--json"));
    assert_eq!(code, 1, "every tool refuses: {err}");
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_into_a_fresh_folder_with_every_acknowledged_message() {
    let app = spawn_app().await;
    if on_postgres() {
        let (code, _, err) = run(&mut app.command(&["backup", "/tmp/never-written.db"]));
        assert_eq!(code, 1);
        assert!(err.contains("pg_dump"), "PostgreSQL is backed up with its own tools: {err}");
        app.stop().await;
        return;
    }
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();

    // Four clients send replies until told to stop; each remembers when
    // every 250 came.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for client in 0..4 {
        let (smtp, reply_to, stop) = (app.smtp, reply_to.clone(), std::sync::Arc::clone(&stop));
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..25 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let id = format!("load-{client}-{n}@acme.example");
                let mail = reply_mail(OWNER, &reply_to, "Hello", &id, "", &format!("Reply {client}-{n}"));
                let answer = Smtp::send_once(smtp, OWNER, &[&reply_to], &mail).await;
                assert!(answer.starts_with("250"), "{answer}");
                acknowledged.push((id, Instant::now()));
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let backup = app.dir.path().join("backup.db");
    let began = Instant::now();
    let (code, out, err) = run(&mut app.command(&["backup", backup.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backed up"), "{out}");
    assert!(err.contains("holds the secrets that sign reply addresses"), "the backup warns: {err}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut before, mut after) = (Vec::new(), 0);
    for sender in senders {
        for (id, at) in sender.await.unwrap() {
            if at < began { before.push(id) } else { after += 1 }
        }
    }
    assert!(!before.is_empty(), "some replies were acknowledged before the backup began");
    assert!(after > 0, "and mail kept coming while it was made");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only its owner reads a backup");
    }
    let (code, _, err) = run(&mut app.command(&["backup", backup.to_str().unwrap()]));
    assert_eq!(code, 1, "a backup never overwrites a file");
    assert!(err.contains("never overwrites"), "{err}");

    // Restore into a fresh folder; a second restore there is refused.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_url = format!("sqlite://{}", fresh.path().join("mailgate.db").display());
    let (code, out, err) = run(&mut mailgate(fresh.path(), &fresh_url, &["restore", backup.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(&mut mailgate(fresh.path(), &fresh_url, &["restore", backup.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("restore only into an empty data folder"), "{err}");

    // Restoring straight from the live database file takes what its log holds too (the keys).
    let live = app.dir.path().join("mailgate.db");
    let copy = tempfile::tempdir().unwrap();
    let copy_url = format!("sqlite://{}", copy.path().join("mailgate.db").display());
    let (code, out, err) = run(&mut mailgate(copy.path(), &copy_url, &["restore", live.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let keys = query_i64(&copy_url, "SELECT COUNT(*) FROM settings WHERE key LIKE 'token_key.%'").await;
    assert!(keys >= 1, "the signing keys came along");
    // A log left of another database in the target folder is never applied to the backup.
    let other = tempfile::tempdir().unwrap();
    let other_url = format!("sqlite://{}", other.path().join("mailgate.db").display());
    std::fs::write(other.path().join("mailgate.db-wal"), b"not ours").unwrap();
    let (code, _, err) = run(&mut mailgate(other.path(), &other_url, &["restore", backup.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("mailgate.db-wal exists"), "{err}");
    assert!(!other.path().join("mailgate.db").exists());
    app.stop().await;

    let restored = start_in(fresh, fresh_url.clone(), |_| {}).await;
    for id in &before {
        let found = query_i64(
            &fresh_url,
            &format!("SELECT COUNT(*) FROM messages WHERE rfc_message_id = '<{id}>' OR rfc_message_id = '{id}'"),
        )
        .await;
        assert_eq!(found, 1, "{id} was acknowledged before the backup began and is in it");
    }
    // A reply address issued before the backup still verifies.
    let mail = reply_mail(OWNER, &reply_to, "Hello", "after-restore@acme.example", "", "After the restore");
    let answer = restored.send(OWNER, &[&reply_to], &mail).await;
    assert!(answer.starts_with("250"), "{answer}");
    let texts = restored.texts(&format!("/chats/{chat_id}")).await;
    assert!(texts.iter().any(|t| t == "After the restore"), "{texts:?}");
    restored.stop().await;
}

#[tokio::test]
async fn backup_and_restore_take_file_names_as_names() {
    let app = spawn_app().await;
    if on_postgres() {
        app.stop().await;
        return;
    }
    // `file:` would be a URI to SQLite, `%41` an escape to a URL parser: here both are names.
    let dir = tempfile::tempdir().unwrap();
    for name in ["file:snap.db", "pct%41 and 'quotes'.db"] {
        let mut command = app.command(&["backup", name]);
        let (code, out, err) = run(command.current_dir(dir.path()));
        assert_eq!(code, 0, "{name}: {out}{err}");
        let written = dir.path().join(name);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&written).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        assert!(std::fs::metadata(&written).unwrap().len() > 0, "{name} holds the copy");
        let target = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", target.path().join("mailgate.db").display());
        let (code, out, err) = run(&mut mailgate(target.path(), &url, &["restore", written.to_str().unwrap()]));
        assert_eq!(code, 0, "{name}: {out}{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no other file was written");
    app.stop().await;
}

#[tokio::test]
async fn restore_refuses_a_file_that_is_not_a_backup_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_backup = dir.path().join("notes.txt");
    std::fs::write(&not_a_backup, "just some text, not a database").unwrap();
    let target = dir.path().join("data");
    let url = format!("sqlite://{}", target.join("mailgate.db").display());
    let (code, _, err) = run(&mut mailgate(&target, &url, &["restore", not_a_backup.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("is not a mailgate backup"), "{err}");
    assert!(!target.join("mailgate.db").exists(), "nothing written");

    // An empty SQLite database is no backup either.
    let empty = dir.path().join("empty.db");
    execute_sql(&format!("sqlite://{}?mode=rwc", empty.display()), "CREATE TABLE t (x)").await;
    let (code, _, err) = run(&mut mailgate(&target, &url, &["restore", empty.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("has no mailgate schema"), "{err}");
    assert!(!target.join("mailgate.db").exists(), "nothing written");
}
