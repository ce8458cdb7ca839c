//! Issue 36, pushing back under pressure: when the database falls behind
//! (another connection holds SQLite's write lock, or a PostgreSQL table
//! lock), new messages get `451 4.3.2` at DATA instead of waiting without
//! bound, those already waiting get it after `[limits] store_stall_secs`,
//! `deliver` exits 75, nothing is half-stored, and every retry afterwards is
//! stored once. Writes outside the group commit (held mail) are bounded the
//! same way: many sessions waiting at once all get their answer.

use crate::support::*;
use sqlx::Connection;
use std::time::Duration;

/// A connection of another client holding the lock every message's
/// transaction needs, until it is dropped or rolled back.
enum Lock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Lock {
    async fn hold(database_url: &str) -> Lock {
        if database_url.starts_with("sqlite:") {
            let mut connection = sqlx::SqliteConnection::connect(database_url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await.unwrap();
            Lock::Sqlite(connection)
        } else {
            let mut connection = sqlx::PgConnection::connect(database_url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
            // Every table a message's writes touch first: replies (messages),
            // held mail (held_messages) and every log entry (inbound_log).
            sqlx::query("LOCK TABLE messages, held_messages, inbound_log IN EXCLUSIVE MODE")
                .execute(&mut connection)
                .await
                .unwrap();
            Lock::Postgres(connection)
        }
    }

    async fn release(self) {
        match self {
            Lock::Sqlite(mut c) => sqlx::query("ROLLBACK").execute(&mut c).await.map(drop).unwrap(),
            Lock::Postgres(mut c) => sqlx::query("ROLLBACK").execute(&mut c).await.map(drop).unwrap(),
        }
    }
}

#[tokio::test]
async fn a_stalled_database_gets_451_at_data_and_every_retry_is_stored_once() {
    let app = spawn_app_with(|c| c.limits.store_stall = Duration::from_secs(2)).await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let mail = |n: usize| {
        reply_mail(OWNER, &reply_to, "Hello", &format!("stall-{n}@acme.example"), "", &format!("During the stall {n}"))
    };

    let lock = Lock::hold(&app.database_url).await;
    // The first waits for its commit as long as the limit allows, then is told to come back.
    let first = app.send(OWNER, &[&reply_to], &mail(0)).await;
    assert!(first.starts_with("451 4.3.2"), "{first}");
    // The database is known to be behind now: the next is turned away at once.
    let second = app.send(OWNER, &[&reply_to], &mail(1)).await;
    assert!(second.starts_with("451 4.3.2"), "{second}");
    // A pipe delivery beside the server: exit 75, the mail server's "try again later".
    let config = app.dir.path().join("stall.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"{DOMAIN}\"\n[limits]\nstore_stall_secs = 2\n[auth]\nresolver = \"static\"\n[auth.records]\n\
             \"acme.example\" = \"v=spf1 ip4:127.0.0.0/8 -all\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut deliver = app
        .command(&[
            "deliver",
            "--sender",
            OWNER,
            "--recipient",
            &reply_to,
            "--client-address",
            "127.0.0.1",
            "--config",
            config,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut deliver.stdin.take().unwrap(), mail(2).as_bytes()).unwrap();
    let out = deliver.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{said}");
    assert!(said.contains("4.3.2") && said.contains("busy"), "{said}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("outcome=\"busy\",code=\"451\""), "the metrics show it");
    let pushed_back = metrics.lines().find(|l| l.starts_with("mailgate_store_pushed_back_total")).unwrap_or_default();
    assert!(pushed_back.ends_with(" 2") || pushed_back.ends_with(" 3"), "{pushed_back}");

    // Once the database catches up, every retry is taken and each message is there once.
    lock.release().await;
    for n in 0..3 {
        let mut answer = String::new();
        for _ in 0..40 {
            answer = app.send(OWNER, &[&reply_to], &mail(n)).await;
            if answer.starts_with("250") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(answer.starts_with("250"), "retry {n}: {answer}");
    }
    let texts = app.texts(&format!("/chats/{chat_id}")).await;
    for n in 0..3 {
        let count = texts.iter().filter(|t| **t == format!("During the stall {n}")).count();
        assert_eq!(count, 1, "message {n} stored once: {texts:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn over_lmtp_each_recipient_gets_451_4_3_2_while_the_database_is_stalled() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("lmtp.sock");
    let path = socket.clone();
    let app = spawn_app_with(move |c| {
        c.limits.store_stall = Duration::from_secs(2);
        c.lmtp_listen = Some(mailgate::config::ListenAddr::Unix(path));
    })
    .await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let mail = reply_mail(OWNER, &reply_to, "Hello", "lmtp-stall@acme.example", "", "Over LMTP in a stall");

    let lock = Lock::hold(&app.database_url).await;
    let (read, mut write) = tokio::net::UnixStream::connect(&socket).await.unwrap().into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220"), "{line}");
    let commands = format!("LHLO relay.example\r\nMAIL FROM:<{OWNER}>\r\nRCPT TO:<{reply_to}>\r\nDATA\r\n");
    write.write_all(commands.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 4 {
        line.clear();
        read.read_line(&mut line).await.unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            answers.push(line.clone());
        }
    }
    assert!(answers[3].starts_with("354"), "{answers:?}");
    write.write_all(&dot_stuff(&mail)).await.unwrap();
    write.write_all(b".\r\n").await.unwrap();
    line.clear();
    tokio::time::timeout(Duration::from_secs(30), read.read_line(&mut line)).await.unwrap().unwrap();
    assert!(line.starts_with("451 4.3.2"), "the recipient's answer: {line}");
    lock.release().await;

    // The mail server's retry, once the database is back, is stored once.
    let mut answer = String::new();
    for _ in 0..40 {
        answer = app.send(OWNER, &[&reply_to], &mail).await;
        if answer.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answer.starts_with("250"), "{answer}");
    let texts = app.texts(&format!("/chats/{chat_id}")).await;
    assert_eq!(texts.iter().filter(|t| *t == "Over LMTP in a stall").count(), 1, "{texts:?}");
    app.stop().await;
}

#[tokio::test]
async fn many_sessions_waiting_at_once_in_a_stall_all_get_451_and_their_retries_are_stored_once() {
    const REPLIES: usize = 12;
    const STRANGERS: usize = 4;
    let app = spawn_app_with(|c| {
        c.limits.store_stall = Duration::from_secs(2);
        // A stranger's reply is held for an admin: written outside the group commit.
        c.auth.hold_not_allowed = true;
    })
    .await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let mail = |from: &str, n: usize| {
        reply_mail(from, &reply_to, "Hello", &format!("crowd-{n}@acme.example"), "", &format!("In the crowd {n}"))
    };
    let senders: Vec<(&str, String)> = (0..REPLIES + STRANGERS)
        .map(|n| {
            let from = if n < REPLIES { OWNER } else { STRANGER };
            (from, mail(from, n))
        })
        .collect();

    let lock = Lock::hold(&app.database_url).await;
    // All at once, each in its own session; none may wait without bound
    // (the lock is never given up while they wait).
    let answers =
        futures_util::future::join_all(
            senders.iter().map(|(from, message)| {
                let (addr, to) = (app.smtp, reply_to.as_str());
                async move {
                    tokio::time::timeout(Duration::from_secs(30), Smtp::send_once(addr, from, &[to], message)).await
                }
            }),
        )
        .await;
    for (n, answer) in answers.iter().enumerate() {
        let answer = answer.as_ref().unwrap_or_else(|_| panic!("session {n} was not answered within 30 s"));
        assert!(answer.starts_with("451 4.3.2"), "session {n}: {answer}");
    }
    let metrics = app.metrics().await;
    let busy = metrics
        .lines()
        .find(|l| l.starts_with("mailgate_smtp_transactions_total") && l.contains("outcome=\"busy\""))
        .unwrap_or_default();
    assert!(busy.ends_with(&format!(" {}", REPLIES + STRANGERS)), "every one counted as busy: {busy}");
    lock.release().await;

    // Each sender's mail server tries again until it is taken.
    for (n, (from, message)) in senders.iter().enumerate() {
        let mut answer = String::new();
        for _ in 0..40 {
            answer = app.send(from, &[&reply_to], message).await;
            if answer.starts_with("250") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(answer.starts_with("250"), "retry {n}: {answer}");
    }
    let texts = app.texts(&format!("/chats/{chat_id}")).await;
    for n in 0..REPLIES {
        let count = texts.iter().filter(|t| **t == format!("In the crowd {n}")).count();
        assert_eq!(count, 1, "reply {n} stored once: {texts:?}");
    }
    let (status, held) = app.admin_get("/held").await;
    assert_eq!(status, 200, "{held}");
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), STRANGERS, "each stranger's message held once: {held:?}");
    app.stop().await;
}
