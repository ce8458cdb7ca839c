//! Issue 36, part 3: no statement mailgate runs reads a whole table that
//! grows with mail. The statements are not listed by hand: a real
//! `mailgate serve` runs with sqlx's statement log on while the test takes
//! mail over SMTP (replies, a duplicate, a held one, refusals, a delivery
//! report), sends the notifications, purges, and reads every list and item
//! of the API (every GET its own OpenAPI description names, with each filter
//! and a second page) and every console page it can reach by following
//! links; the admin CLI's read commands run the same way. Each distinct
//! statement is then planned by the database: `EXPLAIN QUERY PLAN` on
//! SQLite, `EXPLAIN` of a generic plan with sequential scans priced out on
//! PostgreSQL. A plan that scans a growing table fails the test, unless it
//! walks the table in the order asked for and stops after `LIMIT` rows (a
//! page, newest first).

use crate::support::*;
use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::{BTreeSet, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Tables whose rows grow with mail, conversations or people. (Settings,
/// plans, webhooks, console sessions, the audit of erasures and the like stay
/// small.)
const GROWING: &[&str] = &[
    "messages",
    "attachments",
    "blobs",
    "originals",
    "inbound_log",
    "held_messages",
    "outbox",
    "notices_sent",
    "bounces",
    "threads",
    "participants",
    "users",
    "organizations",
    "sites",
    "sender_email_windows",
    "notification_optouts",
];

#[tokio::test]
async fn no_statement_scans_a_table_that_grows_with_mail() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database_url(dir.path()).await;
    let config = dir.path().join("mailgate.toml");
    let records: String = test_records().iter().map(|(name, txt)| format!("\"{name}\" = \"{txt}\"\n")).collect();
    std::fs::write(
        &config,
        format!(
            "[auth]\nresolver = \"static\"\non_not_allowed = \"hold\"\n\n[auth.records]\n{records}\n\
             [delivery]\ncoalesce_window_secs = 0\n\n[retention]\npurge_interval_secs = 1\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["--log-format", "json", "serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .env("MAILGATE_DOMAIN", DOMAIN)
        .env("MAILGATE_DATABASE_URL", &database_url)
        .env("MAILGATE_API_TOKEN", "test-api-token-5f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e")
        .env("MAILGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn,mailgate=info,sqlx::query=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = wait_for_start(&log);
    let address = |name: &str| started[name].as_str().expect("the start line names its addresses").to_owned();
    let (http, smtp) = (address("http"), address("smtp"));
    let app = TestApp {
        app: None,
        base: format!("http://{http}/api/v1"),
        smtp: smtp.parse().unwrap(),
        token: "test-api-token-5f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e".to_owned(),
        http: reqwest::Client::new(),
        dir,
        database_url: database_url.clone(),
    };

    take_mail_of_every_kind(&app).await;
    read_every_list_and_item(&app).await;
    visit_every_console_page(&app, &http).await;
    let mut logs = vec![std::fs::read_to_string(&log).unwrap()];
    for args in [&["log", "--limit", "5"][..], &["outbox", "list"], &["held", "list"], &["replay", "--since", "7d"]] {
        logs.push(admin_command(&app, args));
    }
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    logs[0] = std::fs::read_to_string(&log).unwrap();

    let statements: BTreeSet<String> = logs.iter().flat_map(|text| statements_in(text)).collect();
    assert!(statements.len() > 60, "sqlx's statement log was read: {} statements", statements.len());
    let mut scans = Vec::new();
    for sql in &statements {
        let plan = plan_of(&database_url, sql).await;
        if let Some(table) = full_scan(sql, &plan) {
            scans.push(format!("{table}:\n  {sql}\n  {}", plan.join("\n  ")));
        }
    }
    assert!(
        scans.is_empty(),
        "{} of {} statements read a whole growing table:\n\n{}",
        scans.len(),
        statements.len(),
        scans.join("\n\n")
    );
}

/// Waits for the JSON start line of a `serve` logging to `log`.
fn wait_for_start(log: &std::path::Path) -> Value {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("mailgate started")) {
            return serde_json::from_str(line).expect("the start line is JSON");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("serve never logged its start: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Mail of every kind a desk receives, over SMTP, and its notifications sent.
async fn take_mail_of_every_kind(app: &TestApp) {
    let (w, chat, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let reply = reply_mail(OWNER, &to, "Hello", "reply-1@acme.example", "", "Thanks, that works.");
    assert!(app.send(OWNER, &[&to], &reply).await.starts_with("250"));
    // The same mail again (a duplicate), a stranger's (held), a new chat
    // (refused), a guessed reply address (refused).
    assert!(app.send(OWNER, &[&to], &reply).await.starts_with("250"));
    let stranger = reply_mail(STRANGER, &to, "Hello", "stranger-1@elsewhere.example", "", "Let me in");
    assert!(app.send(STRANGER, &[&to], &stranger).await.contains("held"));
    let new_chat = format!("From: {OWNER}\r\nTo: support@{DOMAIN}\r\nSubject: new\r\n\r\nHello\r\n");
    assert!(app.send(OWNER, &[&format!("support@{DOMAIN}")], &new_chat).await.starts_with("5"));
    let guessed = format!("reply+aaaaaaaaaaaaaaaaaaaaaaaaaa@{DOMAIN}");
    assert!(app.send(OWNER, &[&guessed], &reply).await.starts_with("5"));
    // A ticket, an agent's answer in it, and a delivery report about a notification.
    let business = app.create("/sites", json!({"name": "b", "plan": "elite", "organization_id": w.org})).await;
    let ticket =
        json!({"site_id": business["id"], "customer_id": w.owner, "type": "Bug", "subject": "S", "description": "D"});
    let ticket = app.create("/tickets", ticket).await;
    let number = ticket["ticket_number"].as_i64().unwrap();
    app.create(&format!("/tickets/{number}/messages"), json!({"author_id": w.agent, "text": "Looking"})).await;
    app.create(&format!("/chats/{chat}/messages"), json!({"author_id": w.agent, "text": "Anything else?"})).await;
    let mails = app.wait_for_mail(6).await;
    let bounce_to = mails.iter().map(|m| address_in(m.header("Return-Path"))).find(|a| !a.is_empty());
    if let Some(bounce_to) = bounce_to {
        let report = crate::delivery::hard_bounce(OWNER);
        assert!(app.send("", &[&bounce_to], &report).await.starts_with("250"));
    }
    // Someone copied in, waiting for an agent.
    app.post(&format!("/chats/{chat}/participants"), json!({"email": "pat@outside.example", "name": "Pat"})).await;
}

/// Every GET of the API's description, with ids that exist, each list with
/// each of its filters and a second page.
async fn read_every_list_and_item(app: &TestApp) {
    let (_, description) = app.get("/openapi.json").await;
    let (_, chats) = app.get("/chats").await;
    let chat = chats[0]["id"].as_i64().unwrap();
    let (_, messages) = app.get(&format!("/chats/{chat}/messages")).await;
    let message = messages[0]["id"].as_i64().unwrap_or(1);
    let (_, log) = app.get("/inbound-log").await;
    let entry = log[0]["id"].as_i64().unwrap_or(1);
    let (_, held) = app.admin_get("/held").await;
    let held = held[0]["id"].as_i64().unwrap_or(1);
    let (_, users) = app.get("/users").await;
    let user = users[0]["id"].as_i64().unwrap();
    let organization = users.as_array().unwrap().iter().find_map(|u| u["organization_id"].as_i64()).unwrap();
    let id_for = |path: &str| match path.split('/').nth(1).unwrap_or("") {
        "chats" => chat,
        "tickets" => 1,
        "messages" => message,
        "inbound-log" => entry,
        "held" => held,
        "users" => user,
        "organizations" => organization,
        _ => 1,
    };
    let paths = description["paths"].as_object().expect("the description lists its paths");
    let mut read = 0;
    for (path, methods) in paths {
        if methods.get("get").is_none() {
            continue;
        }
        let path = path.strip_prefix("/api/v1").unwrap_or(path);
        let (admin, rest) = match path.strip_prefix("/admin") {
            Some(rest) => (true, rest),
            None => (false, path),
        };
        let id = id_for(rest);
        let concrete: String = rest
            .split('/')
            .map(|segment| match segment.starts_with('{') {
                true if segment == "{kind}" => "agent_replied".to_owned(),
                true => id.to_string(),
                false => segment.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        for query in filters_of(rest, id, organization) {
            let target = format!("{concrete}{query}");
            let (status, body) = match admin {
                true => app.admin_get(&target).await,
                false => app.get(&target).await,
            };
            assert!(status < 500, "GET {path} answered {status}: {body}");
            read += 1;
        }
    }
    assert!(read > 60, "the description's reads were made: {read}");
}

/// The query strings a list is read with: none, a second page, and each of
/// its filters on its own; items are read once.
fn filters_of(path: &str, id: i64, organization: i64) -> Vec<String> {
    let each: Vec<String> = match path {
        "/chats" | "/tickets" => vec![
            format!("site_id={id}"),
            format!("organization_id={organization}"),
            format!("customer_id={id}"),
            "status=open".into(),
            "updated_since=1".into(),
        ],
        "/users" => {
            vec![format!("email={OWNER}"), format!("organization_id={organization}"), "role=agent".into()]
        }
        "/inbound-log" => vec![
            "sender=acme".into(),
            "recipient=reply".into(),
            "decision=accepted".into(),
            "rule=built-in".into(),
            "since=1".into(),
            "until=99999999999999".into(),
        ],
        "/outbox" => vec!["status=sent".into(), "kind=agent_replied".into(), "to=acme".into()],
        "/bounces" => vec!["recipient=acme".into(), "counted=true".into()],
        "/held" => vec!["status=held".into(), "reason=not_allowed".into(), "sender=elsewhere".into(), "since=1".into()],
        "/participants/pending" | "/audit" | "/suppressions" | "/webhooks" | "/plans" => vec![],
        _ => return vec![String::new()],
    };
    let mut queries = vec![String::new(), "?limit=1".into(), "?limit=1&before_id=2".into()];
    queries.extend(each.into_iter().map(|filter| format!("?{filter}&limit=2")));
    queries
}

/// Logs in to the console and follows every link under `/admin/` it finds.
async fn visit_every_console_page(app: &TestApp, http: &str) {
    let origin = format!("http://{http}");
    let (client, cookie) = console_login(&origin, &app.admin_token()).await;
    let link = regex::Regex::new(r##"href="(/admin/[^"#]*)""##).unwrap();
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue = vec!["/admin/log".to_owned()];
    while let Some(page) = queue.pop() {
        if !seen.insert(page.clone()) || seen.len() > 300 {
            continue;
        }
        let response = client.get(format!("{origin}{page}")).header("cookie", &cookie).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(status < 500, "{page} answered {status}");
        let body = response.text().await.unwrap_or_default();
        for found in link.captures_iter(&body) {
            let href = found[1].replace("&amp;", "&");
            if !href.contains("logout") && !seen.contains(&href) {
                queue.push(href);
            }
        }
    }
    assert!(seen.len() >= 12, "the console's pages were reached: {seen:?}");
}

/// A CLI command's stderr with its statements logged.
fn admin_command(app: &TestApp, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["--log-format", "json"])
        .args(args)
        .arg("--data-dir")
        .arg(app.dir.path())
        .env("MAILGATE_DATABASE_URL", &app.database_url)
        .env("MAILGATE_DOMAIN", DOMAIN)
        .env("RUST_LOG", "warn,mailgate=info,sqlx::query=debug")
        .output()
        .unwrap();
    assert!(output.status.success(), "mailgate {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The statements reading or changing rows that sqlx logged, each once.
fn statements_in(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "sqlx::query")
        .filter_map(|line| {
            let full = line["db.statement"].as_str().filter(|s| !s.trim().is_empty());
            Some(full.or(line["summary"].as_str())?.trim().to_owned())
        })
        .filter(|sql| {
            let head = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            matches!(head.as_str(), "SELECT" | "UPDATE" | "DELETE" | "INSERT" | "WITH")
                && !sql.contains("_sqlx_migrations")
                && !sql.contains("pg_catalog")
                && !sql.contains("sqlite_master")
        })
        .collect()
}

/// The plan of `sql`, one line per step.
async fn plan_of(database_url: &str, sql: &str) -> Vec<String> {
    if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN QUERY PLAN failed ({e}): {sql}"));
        rows.into_iter().map(|(_, _, _, detail)| detail).collect()
    } else {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        // The generic plan (parameters unknown), with sequential scans priced
        // out: a table small in the test is planned as one of millions of rows.
        for setting in ["SET plan_cache_mode = force_generic_plan", "SET enable_seqscan = off"] {
            sqlx::query(setting).execute(&mut conn).await.unwrap();
        }
        let parameters = regex::Regex::new(r"\$(\d+)").unwrap();
        let count = parameters.captures_iter(sql).filter_map(|c| c[1].parse::<usize>().ok()).max().unwrap_or(0);
        // The server infers most parameters' types from where they stand;
        // one it cannot (`$1 IS NULL OR id < $1`) the client names, as sqlx
        // does from the value bound: tried as bigint, then text, then boolean.
        let could_not_infer = regex::Regex::new(r"could not determine data type of parameter \$(\d+)").unwrap();
        let mut types = vec![0usize; count];
        let mut guessed: Vec<usize> = Vec::new();
        const GUESSES: [&str; 4] = ["unknown", "bigint", "text", "boolean"];
        loop {
            let named: Vec<&str> = types.iter().map(|&t| GUESSES[t]).collect();
            let prepare = match count {
                0 => format!("PREPARE planned AS {sql}"),
                _ => format!("PREPARE planned({}) AS {sql}", named.join(", ")),
            };
            let error = match sqlx::raw_sql(&prepare).execute(&mut conn).await {
                Ok(_) => break,
                Err(error) => error.to_string(),
            };
            if let Some(k) = could_not_infer.captures(&error).and_then(|c| c[1].parse::<usize>().ok()) {
                types[k - 1] = 1;
                guessed.push(k - 1);
                continue;
            }
            match guessed.last() {
                Some(&k) if types[k] + 1 < GUESSES.len() => types[k] += 1,
                // A batch written from a VALUES list needs the types the
                // client sends (the server reads untyped VALUES as text);
                // SQLite's pass plans it.
                _ if sql.contains("VALUES (") => return Vec::new(),
                _ => panic!("PREPARE failed ({error}): {sql}"),
            }
        }
        let nulls = vec!["NULL"; count].join(", ");
        let explain = match count {
            0 => "EXPLAIN EXECUTE planned".to_owned(),
            _ => format!("EXPLAIN EXECUTE planned({nulls})"),
        };
        let lines: Vec<(String,)> = sqlx::query_as(&explain)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN failed ({e}): {sql}"));
        lines.into_iter().map(|(line,)| line).collect()
    }
}

/// The growing table `plan` reads whole, if any. A scan that walks a table
/// (or an index) in the order the statement asks for, with no sort of its
/// own, under a `LIMIT`, stops after a page: that is not a full scan.
/// But a statement that asks for the rows of one thing (an equality on a
/// `..._id` column: a customer's threads, an organization's users) must find
/// them through an index: walking newest first to find a customer's three
/// threads among a million is a full scan.
fn full_scan(sql: &str, plan: &[String]) -> Option<String> {
    let of_one = regex::Regex::new(r"(?i)\b\w+_id\s*(=\s*(\?|\$\d+)|IN\s*\(\s*SELECT)").unwrap().is_match(sql);
    let paged = sql.to_ascii_uppercase().contains(" LIMIT ")
        && !of_one
        && !plan
            .iter()
            .any(|line| line.contains("USE TEMP B-TREE FOR ORDER BY") || line.trim_start().starts_with("->  Sort"));
    // SQLite names a table by its alias in the statement (`SCAN o`).
    let aliases = regex::Regex::new(r"(?i)\b(?:FROM|JOIN|UPDATE|INTO)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?").unwrap();
    let table_of = |name: &str| -> String {
        aliases
            .captures_iter(sql)
            .find(|c| c.get(2).is_some_and(|alias| alias.as_str() == name))
            .map_or_else(|| name.to_owned(), |c| c[1].to_owned())
    };
    plan.iter().find_map(|line| {
        let line = line.trim_start().trim_start_matches("->").trim_start();
        let table = if let Some(rest) = line.strip_prefix("SCAN ") {
            table_of(rest.split_whitespace().next()?)
        } else if let Some(rest) = line.strip_prefix("Seq Scan on ") {
            rest.split_whitespace().next()?.to_owned()
        } else {
            return None;
        };
        let table = table.as_str();
        // An INSERT's plan lists the lookups of rows that refer to the new
        // one (foreign keys), which SQLite makes only while a deferred
        // violation is outstanding, never in mailgate: only tables the
        // statement names count.
        let named =
            !sql.starts_with("INSERT") || sql.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == table);
        (GROWING.contains(&table) && !paged && named).then(|| table.to_owned())
    })
}
