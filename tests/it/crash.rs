//! The real binary under SIGTERM and SIGKILL: a graceful drain, and no
//! acknowledged message lost or doubled across a crash.

use crate::support::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `mailgate serve` process on free ports; returns it with its SMTP and HTTP addresses.
fn serve(data: &std::path::Path, database_url: &str) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    serve_with(data, database_url, "")
}

/// [`serve`] with more configuration (TOML sections) in its file.
fn serve_with(
    data: &std::path::Path,
    database_url: &str,
    extra: &str,
) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    let config = data.join("mailgate.toml");
    // No DNS in tests: sender checks answer from (empty) configured records.
    std::fs::write(
        &config,
        format!(
            "[delivery]\ncoalesce_window_secs = 0\nretry_base_secs = 1\n\n[auth]\nresolver = \"static\"\n\n{extra}"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--domain", DOMAIN])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .env("MAILGATE_DATABASE_URL", database_url)
        .env("MAILGATE_API_TOKEN", "crash-api-token-2c8e4a6f1b3d5e7a9c0b2d4f6a8c1e3b")
        .env("MAILGATE_ADMIN_TOKEN", "crash-admin-token-7b1d3f5a9c2e4b6d8f0a1c3e5b7d9f2a")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = start_line(&mut child);
    let field = |name: &str| -> std::net::SocketAddr {
        let rest = &started[started.find(&format!("{name}=")).unwrap() + name.len() + 1..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (child, field("smtp"), field("http"))
}

async fn api(http: std::net::SocketAddr, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/api/v1{path}");
    let request = if method == "POST" { client.post(url).json(&body) } else { client.get(url) };
    request.bearer_auth("crash-api-token-2c8e4a6f1b3d5e7a9c0b2d4f6a8c1e3b").send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn sigterm_lets_a_message_in_flight_finish_and_refuses_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database_url(dir.path()).await;
    let (mut child, smtp, _) = serve(dir.path(), &database_url);
    let mut idle = Smtp::connect(smtp).await;
    idle.expect("EHLO idle.example", "250").await;
    let mut busy = Smtp::connect(smtp).await;
    busy.expect("EHLO busy.example", "250").await;
    busy.expect("MAIL FROM:<a@example.org>", "250").await;
    busy.expect(&format!("RCPT TO:<postmaster@{DOMAIN}>"), "250").await;
    busy.expect("DATA", "354").await;
    busy.write(b"From: a@example.org\r\nSubject: in flight\r\n\r\nhalf of it").await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The idle session is told to come back later.
    assert!(idle.read_reply().await.starts_with("421"));
    // The message in flight completes.
    busy.write(b"\r\nand the rest\r\n.\r\n").await;
    assert!(busy.read_reply().await.starts_with("250"));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(tokio::net::TcpStream::connect(smtp).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn after_sigkill_under_load_every_acknowledged_message_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database_url(dir.path()).await;
    let (mut child, smtp, http) = serve(dir.path(), &database_url);
    let org = api(http, "POST", "/organizations", json!({"name": "ACME"})).await;
    let site = api(http, "POST", "/sites", json!({"name": "s", "plan": "sandbox", "organization_id": org["id"]})).await;
    let owner = api(
        http,
        "POST",
        "/users",
        json!({"email": OWNER, "name": "O", "role": "owner", "organization_id": org["id"]}),
    )
    .await;
    let agent = api(http, "POST", "/users", json!({"email": AGENT, "name": "A", "role": "agent"})).await;
    let chat =
        api(http, "POST", "/chats", json!({"site_id": site["id"], "customer_id": owner["id"], "message": "Hi"})).await;
    api(http, "POST", &format!("/chats/{}/messages", chat["id"]), json!({"author_id": agent["id"], "text": "Hello"}))
        .await;
    // The reply address from the notification file.
    let outbox = dir.path().join("outbox");
    let mut reply_to = String::new();
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(outbox.join("2.eml")) {
            reply_to = text
                .lines()
                .find(|l| l.starts_with("Reply-To:"))
                .unwrap_or("")
                .split('<')
                .nth(1)
                .unwrap_or("")
                .trim_end_matches('>')
                .to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reply_to.starts_with("reply+"), "{reply_to}");

    // Eight clients send as fast as they can; the server is killed under them.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let acknowledged = std::sync::Arc::clone(&acknowledged);
        let reply_to = reply_to.clone();
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let Ok(stream) = tokio::net::TcpStream::connect(smtp).await else { return };
                drop(stream);
                let mut client = Smtp::connect(smtp).await;
                if !client.cmd("EHLO load.example").await.starts_with("250") {
                    return;
                }
                let id = format!("crash-{c}-{n}@acme.example");
                let message =
                    format!("From: {OWNER}\r\nSubject: Re: x\r\nMessage-ID: <{id}>\r\n\r\nmessage {c}/{n}\r\n");
                let answer = client.send(OWNER, &[&reply_to], &message).await;
                if answer.starts_with("250") {
                    acknowledged.lock().unwrap().push(id);
                } else if answer.is_empty() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "KILL");
    let _ = child.wait();
    for client in clients {
        let _ = client.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 10, "the load ran ({} acknowledged)", acknowledged.len());

    let (mut child, _, http) = serve(dir.path(), &database_url);
    let messages = api(http, "GET", &format!("/chats/{}/messages", chat["id"]), json!({})).await;
    let stored: Vec<String> =
        messages.as_array().unwrap().iter().filter_map(|m| m["message_id"].as_str().map(str::to_owned)).collect();
    for id in &acknowledged {
        assert_eq!(
            stored.iter().filter(|s| *s == id).count(),
            1,
            "{id} was acknowledged, so it is stored exactly once"
        );
    }
    // Notifications queued before the crash are all delivered after it, at
    // once: those the killed process had claimed are taken back at the
    // restart (issue 31), not after their 5-minute lease.
    let mut pending = usize::MAX;
    for _ in 0..200 {
        let items = api(http, "GET", "/outbox?limit=1000", json!({})).await;
        pending =
            items.as_array().unwrap().iter().filter(|o| o["status"] == "pending" || o["status"] == "sending").count();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "every queued notification went out after the restart");
    signal(&child, "TERM");
    let _ = child.wait();
}

#[tokio::test]
async fn sigkill_during_a_purge_loses_nothing_still_in_retention() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database_url(dir.path()).await;
    // Twenty replies, kept as they arrived.
    let app = start_in(tempfile::tempdir().unwrap(), database_url.clone(), |_| {}).await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let reply =
            reply_mail(OWNER, &note.reply_address(), "x", &format!("keep-{i}@acme.example"), "", &format!("Reply {i}"));
        assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
        sent.push(dot_stuff(&reply));
    }
    let ids: Vec<i64> =
        app.messages(&format!("/chats/{chat}")).await[2..].iter().map(|m| m["id"].as_i64().unwrap()).collect();
    app.stop().await;
    // 20,000 originals from long ago: past any retention.
    let old = if on_postgres() {
        "INSERT INTO originals (original_key, size, compression, content, stored_at) SELECT lpad(i::text, 64, '0'), 2000, \
         'none', decode(repeat(md5(i::text), 62), 'hex'), 0 FROM generate_series(1, 20000) AS i"
    } else {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO originals (original_key, size, compression, content, stored_at) \
         SELECT printf('%064d', i), 2000, 'none', randomblob(2000), 0 FROM n"
    };
    execute_sql(&database_url, old).await;
    let count_old = "SELECT COUNT(*) FROM originals WHERE stored_at = 0";
    assert_eq!(query_i64(&database_url, count_old).await, 20_000);

    // The server purges at start; it is killed in the middle of it.
    let retention = "[retention]\nraw_days = 1\npurge_interval_secs = 1\n";
    let (mut child, _, _) = serve_with(dir.path(), &database_url, retention);
    tokio::time::sleep(Duration::from_millis(40)).await;
    signal(&child, "KILL");
    let _ = child.wait();
    let left = query_i64(&database_url, count_old).await;
    eprintln!("old originals left after the kill: {left} of 20000");

    // Every reply still within retention comes back byte for byte; the purge
    // goes on at the next start.
    let (mut child, _, http) = serve_with(dir.path(), &database_url, retention);
    for (id, raw) in ids.iter().zip(&sent) {
        let response = reqwest::Client::new()
            .get(format!("http://{http}/api/v1/messages/{id}/raw"))
            .bearer_auth("crash-api-token-2c8e4a6f1b3d5e7a9c0b2d4f6a8c1e3b")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "message {id}");
        assert!(response.bytes().await.unwrap().as_ref() == raw.as_slice(), "message {id} differs");
    }
    // It is paced (a tenth of the writer's time): 100 batches take seconds.
    let mut left = i64::MAX;
    for _ in 0..900 {
        left = query_i64(&database_url, count_old).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the purge finished after the restart");
    signal(&child, "TERM");
    let _ = child.wait();
}

/// Issue 20: a webhook delivery that failed once is sent after mailgate is
/// killed and started again: it waits in the outbox, not in memory.
#[tokio::test]
async fn a_webhook_delivery_survives_a_sigkill_between_attempts() {
    let (url, seen) = crate::webhooks::receiver(1).await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database_url(dir.path()).await;
    let (mut child, _, http) = serve(dir.path(), &database_url);
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("http://{http}/api/v1/admin/webhooks"))
        .bearer_auth("crash-admin-token-7b1d3f5a9c2e4b6d8f0a1c3e5b7d9f2a")
        .json(&json!({"url": url, "events": ["thread.closed"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let site = api(http, "POST", "/sites", json!({"name": "Acme", "plan": "sandbox"})).await;
    let user = api(http, "POST", "/users", json!({"email": OWNER, "name": "Olivia", "role": "owner"})).await;
    let chat =
        api(http, "POST", "/chats", json!({"site_id": site["id"], "customer_id": user["id"], "message": "Hi"})).await;
    api(http, "POST", &format!("/chats/{}/close", chat["id"]), json!({})).await;
    let first = crate::webhooks::wait_until(&seen, |all| !all.is_empty()).await;
    assert_eq!(first[0].answered, 500, "the first attempt fails");
    signal(&child, "KILL");
    let _ = child.wait();
    let (mut child, _, _) = serve(dir.path(), &database_url);
    let all = crate::webhooks::wait_until(&seen, |all| all.iter().any(|r| r.answered == 200)).await;
    let delivered = all.iter().find(|r| r.answered == 200).expect("delivered after the restart");
    assert_eq!(delivered.delivery, first[0].delivery, "the same delivery, retried");
    assert_eq!(delivered.event, "thread.closed");
    signal(&child, "TERM");
    let _ = child.wait();
}

/// Issue 31 (review): a second instance under the same name (here a second
/// server on the same data folder, as two containers with one host name and
/// folder path would be on one PostgreSQL) does not take the first one's
/// live claims: only a restart after the first is gone sends them at once.
#[tokio::test]
async fn a_second_instance_with_the_same_name_leaves_the_first_ones_claims_alone() {
    let app = spawn_app().await;
    let config = app.config();
    let name = config.instance_name();
    // A notification the first instance is sending right now.
    execute_sql(
        &app.database_url,
        &format!(
            "INSERT INTO outbox (kind, to_address, status, attempts, next_attempt_at, expires_at, created_at, \
             claimed_until, claimed_by) VALUES ('agent_replied', 'busy@acme.example', 'sending', 0, 0, \
             9999999999999, 0, 9999999999999, '{name}')"
        ),
    )
    .await;
    let second = mailgate::app::start(config.clone()).await.expect("a second instance starts");
    // The first instance's lease, as it set it (a new claim sets another).
    let status = "SELECT COUNT(*) FROM outbox WHERE to_address = 'busy@acme.example' AND claimed_until = 9999999999999";
    assert_eq!(query_i64(&app.database_url, status).await, 1, "the first instance's claim stands");
    second.shutdown().await;
    // The first instance goes; a new life of it takes its claims back at once.
    let database_url = app.database_url.clone();
    let app = app.restart().await;
    assert_eq!(query_i64(&database_url, status).await, 0, "taken back at the restart");
    app.stop().await;
}
