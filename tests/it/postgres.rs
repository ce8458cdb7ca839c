//! Several instances on one PostgreSQL database. These tests need the server
//! named by `MAILGATE_TEST_POSTGRES` (scripts/test starts a throw-away one)
//! and fail, never skip, without it.

use crate::capture::Capture;
use crate::store::{customer_with_chat, message};
use crate::support::*;
use mailgate::domain::Role;
use mailgate::store::{Inserted, NewOutbox, Store};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

/// An instance on `database_url` whose notifications go to `relay`.
async fn instance(database_url: &str, relay: &Capture) -> TestApp {
    let relay = relay.url();
    start_in(tempfile::tempdir().unwrap(), database_url.to_owned(), move |c| {
        c.delivery.relay_url = Some(relay);
        c.delivery.coalesce_window = Duration::ZERO;
        c.delivery.retry_base = Duration::from_millis(200);
        c.limits.max_messages_per_sender_per_hour = 10_000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_take_mail_at_once_and_send_each_notification_once() {
    let database_url = postgres_database().await;
    let relay = Capture::start().await;
    let a = instance(&database_url, &relay).await;
    let b = instance(&database_url, &relay).await;
    let w = a.world("sandbox", None).await;

    // Four chats, each answered by an agent through instance A: the owner's
    // notifications carry reply tokens that instance B must honour too (one
    // key, shared through the database).
    let mut chats = Vec::new();
    for i in 0..4 {
        let chat = a
            .create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": format!("Problem {i}")}))
            .await;
        let id = chat["id"].as_i64().unwrap();
        a.create(&format!("/chats/{id}/messages"), json!({"author_id": w.agent, "text": format!("Answer {i}")})).await;
        chats.push(id);
    }
    // 4 x (2 agents told of the new chat + the owner told of the answer).
    let notes: Vec<_> = relay.wait_for(12).await.into_iter().filter(|m| m.rcpt_to == [OWNER]).collect();
    assert_eq!(notes.len(), 4);
    let reply_to = |chat: i64| -> String {
        let note = notes.iter().find(|m| m.header("Subject").contains(&format!("[Chat #{chat}]"))).unwrap();
        let value = note.header("Reply-To");
        value[value.find('<').unwrap() + 1..value.rfind('>').unwrap()].to_owned()
    };

    // Every reply is delivered to both instances at the same moment, as a
    // sending MTA retrying against two MX hosts may do.
    let mut sends = Vec::new();
    for &chat in &chats {
        let to = reply_to(chat);
        for n in 0..5 {
            let mail = reply_mail(
                OWNER,
                &to,
                "Re: chat",
                &format!("c{chat}-r{n}@acme.example"),
                "",
                &format!("Reply {n} in chat {chat}"),
            );
            for app in [&a, &b] {
                let (smtp, to, mail) = (app.smtp, to.clone(), mail.clone());
                sends.push(tokio::spawn(async move { Smtp::send_once(smtp, OWNER, &[&to], &mail).await }));
            }
        }
    }
    for send in sends {
        let answer = send.await.unwrap();
        assert!(answer.starts_with("250"), "both instances accept, the second as a duplicate: {answer}");
    }

    // Each reply is stored exactly once, seen the same from either instance.
    for &chat in &chats {
        for app in [&a, &b] {
            let messages = app.messages(&format!("/chats/{chat}")).await;
            let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
            assert_eq!(texts.len(), 7, "first message, answer, 5 replies once each: {texts:?}");
            assert_eq!(texts.iter().collect::<HashSet<_>>().len(), 7, "{texts:?}");
        }
    }

    // Every notification (the assigned agent hears of each reply; replies
    // close together travel in one mail) goes out once, whichever instance
    // claimed it.
    let mut items = Vec::new();
    for _ in 0..400 {
        let (_, outbox) = b.get("/outbox?limit=1000").await;
        items = outbox.as_array().unwrap().clone();
        if items.iter().all(|o| o["status"] == "sent" || o["status"] == "merged") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(items.len(), 12 + 20, "one notification per new chat, answer and reply: {items:?}");
    let sent = items.iter().filter(|o| o["status"] == "sent").count();
    assert_eq!(items.iter().filter(|o| o["status"] == "merged").count() + sent, 32, "{items:?}");
    // A notification sent twice would arrive just after the first copy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = relay.messages();
    let ids: HashSet<String> = mails.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!(mails.len(), sent, "each sent notification reached the relay once");
    assert_eq!(ids.len(), sent, "no notification was sent twice");
    let to_agent: String = mails.iter().filter(|m| m.rcpt_to == [AGENT]).map(|m| m.data.clone()).collect();
    for &chat in &chats {
        for n in 0..5 {
            assert!(to_agent.contains(&format!("Reply {n} in chat {chat}")), "the agent heard of reply {n} in {chat}");
        }
    }
    a.stop().await;
    b.stop().await;
}

/// Two stores (two instances' worth) on one fresh database, with a chat.
async fn two_stores() -> (Store, Store, i64, i64) {
    let url = postgres_database().await;
    let here = Store::open(&url).await.unwrap();
    let there = Store::open(&url).await.unwrap();
    let (thread, user, _) = customer_with_chat(&here, "c@example.org").await;
    (here, there, thread, user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_message_stored_by_two_instances_at_once_is_stored_once() {
    let (here, there, thread, user) = two_stores().await;
    let mut races = Vec::new();
    for i in 0..50 {
        let id = format!("race-{i}@x");
        let (one, two) = (here.clone(), there.clone());
        let (m1, m2) = (message(thread, user, &id), message(thread, user, &id));
        races.push(tokio::spawn(
            async move { tokio::join!(one.insert_message(m1, None), two.insert_message(m2, None)) },
        ));
    }
    for race in races {
        let (first, second) = race.await.unwrap();
        let outcomes = [first.unwrap(), second.unwrap()];
        let new = outcomes.iter().filter(|o| matches!(o, Inserted::New(_))).count();
        assert_eq!(new, 1, "one stores it, the other finds it stored: {outcomes:?}");
        assert_eq!(outcomes[0].id(), outcomes[1].id(), "both name the same message");
    }
    assert_eq!(here.messages(thread).await.unwrap().len(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_items_are_claimed_by_one_instance_and_taken_over_when_it_dies() {
    let (here, there, thread, _) = two_stores().await;
    for i in 0..300 {
        let mail = NewOutbox {
            kind: "test".into(),
            thread_id: Some(thread),
            recipient_id: None,
            to_address: format!("r{i}@example.org"),
            context: json!({}),
        };
        here.enqueue(&mail, None).await.unwrap();
    }
    // Both claim at once, in small bites, until nothing is left.
    let claim_all = |store: Store| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(7, 60_000, "test").await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|item| item.id));
            }
        })
    };
    let (one, two) = (claim_all(here.clone()), claim_all(there.clone()));
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    let (one, two): (HashSet<i64>, HashSet<i64>) = (one.into_iter().collect(), two.into_iter().collect());
    assert!(one.is_disjoint(&two), "no item claimed by both");
    assert_eq!(one.len() + two.len(), 300, "every item claimed");
    assert!(!one.is_empty() && !two.is_empty(), "both instances got work: {} / {}", one.len(), two.len());

    // An instance that claims and dies: its lease runs out and the other takes the items over.
    let mail = NewOutbox {
        kind: "test".into(),
        thread_id: None,
        recipient_id: None,
        to_address: "late@example.org".into(),
        context: json!({}),
    };
    let id = here.enqueue(&mail, None).await.unwrap();
    assert_eq!(here.claim_due(10, 1, "test").await.unwrap().iter().map(|i| i.id).collect::<Vec<_>>(), [id]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(there.claim_due(10, 60_000, "test").await.unwrap().iter().map(|i| i.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_recovers_when_postgresql_drops_its_connections() {
    let url = postgres_database().await;
    let store = Store::open(&url).await.unwrap();
    let site = store.create_site("s", "sandbox", None).await.unwrap();
    // The server ends every session on this database (as a restart or a
    // failover would).
    let database = url.rsplit('/').next().unwrap().to_owned();
    let server = url.trim_end_matches(&format!("/{database}")).to_owned();
    execute_sql(
        &format!("{server}/postgres"),
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"),
    )
    .await;
    // A read may fail once per lost connection (the SMTP side answers 451 and
    // the sender retries); each lost connection is then opened again, so the
    // reads soon succeed in a row.
    let (mut failures, mut in_a_row) = (0, 0);
    for _ in 0..60 {
        match store.thread(999_999).await {
            Ok(None) => in_a_row += 1,
            _ => {
                failures += 1;
                in_a_row = 0;
            }
        }
        if in_a_row == 16 {
            break;
        }
    }
    assert_eq!(in_a_row, 16, "reads work again after {failures} failures");
    let _ = site;
    let user = store.create_user("after@example.org", "After", Role::Owner, None).await;
    let user = match user {
        Ok(user) => user,
        Err(_) => store.create_user("after@example.org", "After", Role::Owner, None).await.expect("writes work again"),
    };
    assert_eq!(store.user(user.id).await.unwrap().unwrap().email, "after@example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_mail_released_on_two_instances_at_once_lands_once() {
    let database_url = postgres_database().await;
    let a = start_in(tempfile::tempdir().unwrap(), database_url.clone(), |c| c.auth.hold_not_allowed = true).await;
    // B writes its notifications into A's folder, so A's folder shows them all.
    let folder = a.outbox_dir();
    let b = start_in(tempfile::tempdir().unwrap(), database_url.clone(), move |c| {
        c.auth.hold_not_allowed = true;
        c.outbox_dir = folder;
    })
    .await;
    let (_, chat, note) = a.chat_with_note().await;
    for i in 0..5 {
        let reply =
            reply_mail(STRANGER, &note.reply_address(), "x", &format!("race-{i}@elsewhere.example"), "", "Me too");
        assert!(a.send(STRANGER, &[&note.reply_address()], &reply).await.contains("held for review"));
    }
    let (_, items) = b.admin_get("/held").await;
    let ids: Vec<i64> = items.as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 5, "{items}");
    let before = a.messages(&format!("/chats/{chat}")).await.len();
    for id in &ids {
        let path = format!("/held/{id}/release");
        let (first, second) =
            tokio::join!(a.admin_post(&path, json!({"by": "a"})), b.admin_post(&path, json!({"by": "b"})));
        let mut statuses = [first.0, second.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{first:?} {second:?}");
    }
    assert_eq!(a.messages(&format!("/chats/{chat}")).await.len(), before + ids.len());
}

/// Issue 20: a plan change, a role change and an erasure made through one
/// instance are in force on another at once (it kept the rows in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_change_on_one_instance_is_in_force_on_another_at_once() {
    let database_url = postgres_database().await;
    let relay = Capture::start().await;
    let a = instance(&database_url, &relay).await;
    let b = instance(&database_url, &relay).await;
    let w = a.world("sandbox", None).await;
    let ticket = json!({"site_id": w.site, "customer_id": w.owner, "type": "Performance", "subject": "Slow",
                        "description": "Pages take 10 s."});
    assert_eq!(b.post("/tickets", ticket.clone()).await.0, 403, "B reads (and keeps) the Sandbox plan");
    assert_eq!(a.patch(&format!("/sites/{}", w.site), json!({"plan": "elite"})).await.0, 200);
    // The notice travels through PostgreSQL (LISTEN/NOTIFY): allow it a moment.
    let since = std::time::Instant::now();
    let (status, opened) = loop {
        let (status, opened) = b.post("/tickets", ticket.clone()).await;
        if status == 201 || since.elapsed() > Duration::from_secs(5) {
            break (status, opened);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 201, "B sees the upgrade within a moment: {opened}");
    let number = opened["ticket_number"].as_i64().unwrap();

    a.create(&format!("/tickets/{number}/messages"), json!({"author_id": w.agent, "text": "Answer"})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let note = loop {
        let found = relay.messages().into_iter().find(|m| m.rcpt_to == [MEMBER]);
        match found {
            Some(note) => break note,
            None if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("the member was not told of the answer"),
        }
    };
    let value = note.header("Reply-To");
    let to = value[value.find('<').unwrap() + 1..value.rfind('>').unwrap()].to_owned();
    let subject = note.header("Subject").clone();
    let reply = |n: u32| reply_mail(MEMBER, &to, &subject, &format!("pg-member-{n}@acme.example"), "", "Noted");
    assert!(b.send(MEMBER, &[&to], &reply(0)).await.starts_with("250"), "B reads (and keeps) the member");
    assert_eq!(a.patch(&format!("/users/{}", w.member), json!({"role": "unprivileged"})).await.0, 200);
    // The same for a role change.
    let since = std::time::Instant::now();
    let mut n = 1;
    let answer = loop {
        let answer = b.send(MEMBER, &[&to], &reply(n)).await;
        if answer.starts_with("550") || since.elapsed() > Duration::from_secs(5) {
            break answer;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answer.starts_with("550 5.7.1"), "B refuses the demoted member: {answer}");
    // An erasure through A: B refuses the erased person's reply address itself.
    let erase = a.http.delete(format!("{}/users/{}", a.base, w.member)).bearer_auth(&a.token);
    assert_eq!(erase.send().await.unwrap().status(), 200);
    let since = std::time::Instant::now();
    let answer = loop {
        n += 1;
        let answer = b.send(MEMBER, &[&to], &reply(n)).await;
        if answer.contains("no longer in our directory") || since.elapsed() > Duration::from_secs(5) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answer.contains("550 5.1.1"), "B refuses the erased member's token: {answer}");
    a.stop().await;
    b.stop().await;
}

/// The CA that signed the test server's certificate (scripts/postgres makes both).
fn test_server_ca() -> String {
    std::env::var("MAILGATE_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!(
            "MAILGATE_TEST_POSTGRES_CA is not set: this test needs the CA of the test PostgreSQL's certificate. \
             Run scripts/test, whose throw-away server takes TLS"
        )
    })
}

#[tokio::test]
async fn mailgate_talks_to_postgresql_over_tls_and_refuses_a_server_it_cannot_verify() {
    let ca = test_server_ca();
    let plain = postgres_database().await;
    let name = plain.rsplit('/').next().unwrap().to_owned();
    // verify-full: the certificate must chain to the CA and name the host.
    let tls = format!("{}?sslmode=verify-full&sslrootcert={ca}", plain.replace("127.0.0.1", "localhost"));
    let app = start_in(tempfile::tempdir().unwrap(), tls.clone(), |_| {}).await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "Hello", "over-tls@acme.example", "", "Over TLS");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    assert!(app.messages(&format!("/chats/{chat_id}")).await.iter().any(|m| m["text"] == "Over TLS"));
    let encrypted = query_i64(
        &plain,
        &format!(
            "SELECT COUNT(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = '{name}' AND ssl AND pid <> pg_backend_pid()"
        ),
    )
    .await;
    let unencrypted = query_i64(
        &plain,
        &format!(
            "SELECT COUNT(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = '{name}' AND NOT ssl AND pid <> pg_backend_pid()"
        ),
    )
    .await;
    assert!(encrypted >= 8, "every connection of the instance is encrypted: {encrypted}");
    assert_eq!(unencrypted, 0);
    app.stop().await;

    // Another CA: the server cannot be verified, and nothing is sent to it.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=another CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    let wrong = tls.replace(&ca, other_ca.to_str().unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["migrate", "--check", "--database-url", &wrong, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "the error names the certificate: {stderr}");
}

#[tokio::test]
async fn an_instance_serves_as_a_role_with_only_the_data_privileges_the_guide_grants() {
    let database = postgres_database().await;
    // Migrated by the owner...
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["migrate", "--database-url", &database, "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ...served by a role with the grants of docs/operations.md, and nothing else.
    let role = format!("mailgate_app_{:08x}", rand::random::<u32>());
    let name = database.rsplit('/').next().unwrap();
    for grant in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE {name} TO {role}"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        execute_sql(&database, &grant).await;
    }
    let as_app = database.replacen("postgres@", &format!("{role}@"), 1);
    let app = start_in(tempfile::tempdir().unwrap(), as_app.clone(), |_| {}).await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply =
        reply_mail(OWNER, &note.reply_address(), "Hello", "as-app-role@acme.example", "", "With few privileges");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    assert!(app.messages(&format!("/chats/{chat_id}")).await.iter().any(|m| m["text"] == "With few privileges"));
    app.stop().await;
    // The role cannot change the schema: a pending migration needs the owner.
    execute_sql(&database, "DELETE FROM _sqlx_migrations WHERE version = 20").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["migrate", "--database-url", &as_app, "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the app role migrates nothing");
    execute_sql(&database, &format!("DROP OWNED BY {role}")).await;
}

/// Sends MAIL and RCPT to `smtp` until RCPT is refused (at most 30 s); the refusal.
async fn refused_within_seconds(smtp: std::net::SocketAddr, rcpt: &str) -> String {
    let mut session = Smtp::connect(smtp).await;
    session.expect("EHLO acme.example", "250").await;
    for _ in 0..100 {
        session.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
        let answer = session.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        session.expect("RSET", "250").await;
        if !answer.starts_with("250") {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{rcpt} was still taken after 30 s");
}

#[tokio::test]
async fn a_key_retired_from_one_host_is_refused_by_every_instance_without_a_restart() {
    let database_url = postgres_database().await;
    let a = start_in(tempfile::tempdir().unwrap(), database_url.clone(), |_| {}).await;
    let b = start_in(tempfile::tempdir().unwrap(), database_url.clone(), |_| {}).await;
    let (_, _, note) = a.chat_with_note().await;
    let stolen = note.reply_address();
    for args in [&["keys", "rotate"][..], &["keys", "retire", "1"]] {
        let out = a.command(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for instance in [&a, &b] {
        let refusal = refused_within_seconds(instance.smtp, &stolen).await;
        assert!(refusal.starts_with("550 5.7.1") && refusal.contains("latest notification"), "{refusal}");
    }
    a.stop().await;
    b.stop().await;
}
