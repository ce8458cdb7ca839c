//! Routing rules: table-driven dry runs (message + rules -> decision) against
//! a live instance, actions applied to threads, the error messages of
//! `rules check` (golden files), the admin API, and reloading under load.

use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

/// An instance routed by `fixtures/rules/routing.toml`, with an Elite site
/// (tickets, on-call) in ACME and a Sandbox site for a second organization.
async fn routed_app() -> (TestApp, World) {
    let rules = fixture("rules/routing.toml");
    let app = spawn_app_with(move |c| c.rules_file = Some(rules)).await;
    let w = app.world("elite", None).await;
    (app, w)
}

/// One row of the table: case, message, envelope sender, recipient, decision,
/// rules that matched, and how the SMTP answer starts.
type Case<'a> = (&'a str, String, &'a str, &'a str, &'a str, Vec<&'a str>, &'a str);

async fn dry_run(app: &TestApp, message: &str, from: &str, rcpt: &str) -> Value {
    let response = app
        .http
        .post(format!("{}/admin/rules/test", app.base))
        .bearer_auth(app.admin_token())
        .json(&json!({"message": message, "mail_from": from, "rcpt": [rcpt]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn decisions_follow_the_rules_table() {
    let (app, w) = routed_app().await;
    let ticket = app
        .create(
            "/tickets",
            json!({"site_id": w.site, "customer_id": w.owner, "type": "Bug", "subject": "S", "description": "D"}),
        )
        .await;
    let number = ticket["ticket_number"].as_i64().unwrap();
    app.create(&format!("/tickets/{number}/messages"), json!({"author_id": w.agent, "text": "Hi"})).await;
    let mails = app.wait_for_mail(5).await;
    let note = mails
        .iter()
        .find(|m| m.to() == OWNER && m.header("Subject").contains(&format!("[Ticket #{number}] S")))
        .unwrap();
    let reply_to = note.reply_address();
    let support = format!("support@{DOMAIN}");
    let downtime = format!("downtime@{DOMAIN}");
    let msg = |from: &str, subject: &str, headers: &str, text: &str| {
        format!(
            "From: {from}\r\nSubject: {subject}\r\nMessage-ID: <{}@x>\r\n{headers}\r\n{text}\r\n",
            subject.len() + text.len()
        )
    };
    // (case, message, envelope from, rcpt, decision, rules that matched, SMTP reply start)
    let table: Vec<Case<'_>> = vec![
        (
            "new chat by email",
            msg(OWNER, "Help", "", "Site down"),
            OWNER,
            &support,
            "rejected",
            vec!["refuse-new-chats"],
            "550 5.7.1",
        ),
        (
            "auto-reply",
            msg(OWNER, "Away", "Auto-Submitted: auto-replied\r\n", "Back Monday"),
            OWNER,
            &reply_to,
            "dropped",
            vec!["drop-auto-replies"],
            "250",
        ),
        (
            "spam words",
            msg(OWNER, "Re: x", "", "cheap viagra"),
            OWNER,
            &reply_to,
            "rejected",
            vec!["block-spammy-words"],
            "554 5.7.1",
        ),
        (
            "billing on elite",
            msg(OWNER, "Re: invoice", "", "Wrong amount"),
            OWNER,
            &reply_to,
            "accepted",
            vec!["billing-to-billing-queue", "vip-priority"],
            "250",
        ),
        (
            "urgent header",
            msg(OWNER, "Re: x", "X-Priority: 1 (Highest)\r\n", "Now!"),
            OWNER,
            &reply_to,
            "accepted",
            vec!["vip-priority", "urgent-header"],
            "250",
        ),
        (
            "downtime address",
            msg(MEMBER, "Live is down", "", "503 everywhere"),
            MEMBER,
            &downtime,
            "accepted",
            vec!["downtime-opens-ticket"],
            "250",
        ),
        ("stranger on a token", msg(STRANGER, "Re: x", "", "hi"), STRANGER, &reply_to, "rejected", vec![], "550 5.7.1"),
    ];
    for (case, message, from, rcpt, decision, rules, reply) in table {
        let result = dry_run(&app, &message, from, rcpt).await;
        assert_eq!(result["decision"], decision, "{case}: {result}");
        let matched: Vec<&str> =
            result["routing"]["rules"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert_eq!(matched, rules, "{case}: {result}");
        assert!(result["smtp_reply"].as_str().unwrap().starts_with(reply), "{case}: {result}");
    }
    // The billing case explains every rule considered.
    let result = dry_run(&app, &msg(OWNER, "Re: invoice", "", "Wrong amount"), OWNER, &reply_to).await;
    let trace = result["routing"]["trace"].as_array().unwrap();
    assert_eq!(trace.len(), 7, "every rule is listed: {result}");
    assert_eq!(trace[2]["rule"], "billing-to-billing-queue");
    assert_eq!(trace[2]["matched"], true);
    assert_eq!(result["routing"]["actions"]["queue"], "billing");
    assert_eq!(result["routing"]["actions"]["priority"], "high");
    // Dry runs store nothing.
    assert_eq!(app.messages(&format!("/tickets/{number}")).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn actions_are_applied_and_recorded_with_the_rule_name() {
    let (app, w) = routed_app().await;
    let ticket = app
        .create(
            "/tickets",
            json!({"site_id": w.site, "customer_id": w.owner, "type": "Bug", "subject": "S", "description": "D"}),
        )
        .await;
    let number = ticket["ticket_number"].as_i64().unwrap();
    app.create(&format!("/tickets/{number}/messages"), json!({"author_id": w.agent, "text": "Hi"})).await;
    let mails = app.wait_for_mail(5).await;
    let note = mails.iter().find(|m| m.to() == OWNER && m.header("Subject").contains("] S")).unwrap();
    let reply =
        reply_mail(OWNER, &note.reply_address(), "invoice question", "bill-1@acme.example", "", "Refund please");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, thread) = app.get(&format!("/tickets/{number}")).await;
    assert_eq!(thread["queue"], "billing");
    assert_eq!(thread["priority"], "high");
    assert_eq!(thread["tags"], json!(["billing", "vip"]));
    let (_, log) = app.get("/inbound-log?rule=billing-to-billing-queue").await;
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["rules"], "billing-to-billing-queue,vip-priority");

    // downtime@ opens a ticket and pages on-call.
    let down = format!(
        "From: {MEMBER}\r\nSubject: Live is down\r\nMessage-ID: <down-1@acme.example>\r\n\r\n503 on every page\r\n"
    );
    let answer = app.send(MEMBER, &[&format!("downtime@{DOMAIN}")], &down).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, opened) = app.get(&format!("/tickets/{}", number + 1)).await;
    assert_eq!(opened["ticket_type"], "Downtime");
    assert_eq!(opened["subject"], "Live is down");
    assert_eq!(opened["messages"][0]["text"], "503 on every page");
    assert_eq!(opened["messages"][0]["source"], "email");
    let (_, outbox) = app.get("/outbox").await;
    assert!(outbox.as_array().unwrap().iter().any(|o| o["kind"] == "on_call_page"), "{outbox}");
    let out = app.command(&["log", "--rule", "downtime-opens-ticket", "--json"]).output().unwrap();
    assert!(out.status.success(), "mailgate log: {}", String::from_utf8_lossy(&out.stderr));
    let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    // Issue 31: the log records the answer the client got, naming the ticket,
    // and the Subject.
    assert_eq!(entries[0]["smtp_reply"], answer.trim_end(), "{entries}");
    assert!(answer.contains(&format!("ticket #{}", number + 1)), "{answer}");
    assert_eq!(entries[0]["subject"], "Live is down");
    app.stop().await;
}

#[test]
fn check_errors_match_their_golden_files() {
    let dir = fixture("rules/broken");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
            .args(["rules", "check"])
            .arg(relative)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{} should be refused", path.display());
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{}", path.display());
        cases += 1;
    }
    assert!(cases >= 4);
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let (app, _) = routed_app().await;
    let url = format!("{}/admin/rules/check", app.base);
    let with_api_token = app.http.post(&url).bearer_auth(&app.token).json(&json!({"rules": ""})).send().await.unwrap();
    assert_eq!(with_api_token.status(), 401, "the Dashboard's token is not an admin credential");
    let admin = &app.admin_token();
    let bad = std::fs::read_to_string(fixture("rules/broken/bad_regex.toml")).unwrap();
    let checked: Value =
        app.http.post(&url).bearer_auth(admin).json(&json!({"rules": bad})).send().await.unwrap().json().await.unwrap();
    assert_eq!(checked["ok"], false);
    assert_eq!(checked["errors"][0]["rule"], "bad-regex");
    assert_eq!(checked["errors"][0]["field"], "when.subject");
    assert_eq!(checked["errors"][0]["line"], 4);
    let good: Value = app
        .http
        .post(&url)
        .bearer_auth(admin)
        .json(&json!({"rules": include_str!("../../rules/default.toml")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(good["ok"], true, "{good}");
    app.stop().await;
}

#[tokio::test]
async fn rules_reload_under_load_and_a_broken_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    let rules = |text: &str| {
        format!(
            "[[rules]]\nname = \"block\"\n[rules.when]\nsubject = '{text}'\n[rules.then]\nreject = {{ code = 550, status = \"5.7.1\", text = \"blocked\" }}\n"
        )
    };
    std::fs::write(&file, rules("alpha")).unwrap();
    let path = file.clone();
    let app = spawn_app_with(move |c| c.rules_file = Some(path)).await;
    let w = app.world("sandbox", None).await;
    let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hello"})).await;
    app.create(&format!("/chats/{}/messages", chat["id"]), json!({"author_id": w.agent, "text": "Hi"})).await;
    let reply_to = app.wait_for_mail(3).await.remove(2).reply_address();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // A sender that keeps going while the file changes under it.
    let smtp = app.smtp;
    let sender_reply = reply_to.clone();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while !*stop_rx.borrow_and_update() {
            let mut client = Smtp::connect(smtp).await;
            client.expect("EHLO load.example", "250").await;
            let message =
                format!("From: {OWNER}\r\nSubject: load {sent}\r\nMessage-ID: <load-{sent}@x>\r\n\r\nping\r\n");
            let answer = client.send(OWNER, &[&sender_reply], &message).await;
            assert!(answer.starts_with("250"), "under load: {answer}");
            client.cmd("QUIT").await;
            sent += 1;
        }
        sent
    });
    let probe = |subject: &str| {
        format!("From: {OWNER}\r\nSubject: {subject}\r\nMessage-ID: <{subject}-{}@x>\r\n\r\ntext\r\n", rand_suffix())
    };
    assert!(app.send(OWNER, &[&reply_to], &probe("alpha")).await.starts_with("550"));
    // Good -> bad: the bad file is refused; alpha stays blocked.
    std::fs::write(&file, "[[rules]\nbroken").unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(app.send(OWNER, &[&reply_to], &probe("alpha")).await.starts_with("550"), "the previous rules keep serving");
    // Bad -> good: beta is blocked now, alpha passes.
    std::fs::write(&file, rules("beta")).unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(app.send(OWNER, &[&reply_to], &probe("beta")).await.starts_with("550"));
    assert!(app.send(OWNER, &[&reply_to], &probe("alpha")).await.starts_with("250"));
    stop_tx.send(true).unwrap();
    let sent = sender.await.unwrap();
    assert!(sent > 5, "the load kept flowing through the reloads ({sent} messages)");
    app.stop().await;
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Issue 31, as an attacker: a rules text of a thousand blocks, every other
/// one broken in its TOML and the rest in their meaning, is checked in one
/// answer that names every error (each block read once; no error counted twice).
#[tokio::test]
async fn a_rules_text_with_a_thousand_broken_blocks_gets_every_error_in_one_answer() {
    let app = crate::support::spawn_app().await;
    let mut text = String::new();
    for i in 0..1000 {
        if i % 2 == 0 {
            text.push_str(&format!(
                "[[rules]]\nname = \"r{i}\"\n[rules.when]\nsubject = \"unclosed\n[rules.then]\ndrop = true\n\n"
            ));
        } else {
            text.push_str(&format!(
                "[[rules]]\nname = \"r{i}\"\n[rules.when]\nkind = \"robot\"\n[rules.then]\ndrop = true\n\n"
            ));
        }
    }
    let (status, answer) = app.admin_post("/rules/check", json!({ "rules": text })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], false);
    let errors = answer["errors"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(errors, 1000, "one error per block: {}", &answer.to_string()[..400]);
    app.stop().await;
}
