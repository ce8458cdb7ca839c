//! `mailgate deliver`, the pipe transport's command (issue 32): exit codes
//! as a mail server reads them, one line on stderr, and a retry of the same
//! bytes stored once, with a server running on the same database.

use crate::support::*;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// The customer's domain sends only from 203.0.113.5 and rejects what fails DMARC.
fn strict(config: &mut mailgate::config::Config) {
    config.auth.records.insert("acme.example".to_owned(), "v=spf1 ip4:203.0.113.5 -all".to_owned());
    config.auth.records.insert("_dmarc.acme.example".to_owned(), "v=DMARC1; p=reject".to_owned());
}

/// The configuration file the mail server's pipe command is given: the
/// server's domain, DNS and database.
fn config_file(app: &TestApp) -> std::path::PathBuf {
    let mut records: Vec<String> = test_records().iter().map(|(name, value)| format!("{name:?} = {value:?}")).collect();
    records.retain(|r| !r.starts_with("\"acme.example\""));
    records.push("\"acme.example\" = \"v=spf1 ip4:203.0.113.5 -all\"".to_owned());
    records.push("\"_dmarc.acme.example\" = \"v=DMARC1; p=reject\"".to_owned());
    let text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndomain = {DOMAIN:?}\n[auth]\nresolver = \"static\"\n[auth.records]\n{}\n",
        app.dir.path().display().to_string(),
        app.database_url,
        records.join("\n")
    );
    let path = app.dir.path().join("deliver.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `mailgate deliver ARGS` with `message` on stdin: (exit code, stderr).
async fn deliver(args: &[&str], message: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .arg("deliver")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MAILGATE_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // As Postfix's pipe(8) hands it on: bare LF line ends.
    let _ = stdin.write_all(message.replace("\r\n", "\n").as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// One row of the exit-code table: what, the arguments, the message, the
/// environment, the exit code and what stderr says.
type Case = (&'static str, Vec<String>, String, Vec<(&'static str, &'static str)>, i32, &'static str);

#[tokio::test]
async fn deliver_exit_codes_are_what_a_mail_server_reads_and_a_retry_stores_once() {
    let app = spawn_app_with(strict).await;
    let (_, chat, note) = app.chat_with_note().await;
    let config = config_file(&app);
    let config = config.to_str().unwrap();
    let reply_address = note.reply_address();
    let genuine = reply_mail(OWNER, &reply_address, "Hello", "pipe-1@acme.example", "", "Through the pipe");
    let from_customer = ["--client-address", "203.0.113.5", "--client-helo", "mail.acme.example"];
    let base = |recipient: &str| -> Vec<String> {
        ["--config", config, "--sender", OWNER, "--recipient", recipient].map(str::to_owned).to_vec()
    };
    let run = |args: Vec<String>, message: String, env: Vec<(&'static str, &'static str)>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        deliver(&args, &message, &env).await
    };
    let mut stored = base(&reply_address);
    stored.extend(from_customer.map(str::to_owned));
    let cases: Vec<Case> = vec![
        ("a genuine reply", stored.clone(), genuine.clone(), vec![], 0, "2.0.0 Message added to chat"),
        ("the same bytes again", stored.clone(), genuine.clone(), vec![], 0, "already received"),
        (
            "a forged reply address",
            [
                base(&format!("reply+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}")),
                from_customer.map(str::to_owned).to_vec(),
            ]
            .concat(),
            genuine.clone(),
            vec![],
            67,
            "5.1.1",
        ),
        ("no such mailbox", base(&format!("nobody@{DOMAIN}")), genuine.clone(), vec![], 67, "5.1.1"),
        (
            "a new chat by email",
            [base(&format!("support@{DOMAIN}")), from_customer.map(str::to_owned).to_vec()].concat(),
            reply_mail(OWNER, &format!("support@{DOMAIN}"), "New", "pipe-2@acme.example", "", "Start a chat?"),
            vec![],
            77,
            "5.7.1 A chat can not be started by email",
        ),
        (
            "the customer's From sent from elsewhere",
            [base(&reply_address), ["--client-address", "198.51.100.1"].map(str::to_owned).to_vec()].concat(),
            reply_mail(OWNER, &reply_address, "Hello", "pipe-3@acme.example", "", "Forged"),
            vec![],
            77,
            "DMARC",
        ),
        (
            "a missing configuration file",
            ["--config", "/nonexistent/mailgate.toml", "--sender", OWNER, "--recipient", &reply_address]
                .map(str::to_owned)
                .to_vec(),
            genuine.clone(),
            vec![],
            75,
            "4.3.0 the configuration is broken",
        ),
        (
            "an unreachable database",
            [
                base(&reply_address),
                ["--database-url", "postgres://mailgate@127.0.0.1:1/mailgate"].map(str::to_owned).to_vec(),
            ]
            .concat(),
            genuine.clone(),
            vec![],
            75,
            "4.3.0 the database could not be opened",
        ),
        (
            "a crash",
            stored.clone(),
            reply_mail(OWNER, &reply_address, "Hello", "pipe-4@acme.example", "", "Crashed"),
            vec![("MAILGATE_FAULT_INJECT", "deliver-panic")],
            75,
            "4.3.0 mailgate stopped on an internal error",
        ),
        (
            "no --recipient",
            ["--config", config, "--sender", OWNER].map(str::to_owned).to_vec(),
            genuine.clone(),
            vec![],
            75,
            "4.3.0 mailgate deliver was called wrongly",
        ),
        (
            "a HELO name that looks like an option",
            [
                base(&reply_address),
                ["--client-address", "203.0.113.5", "--client-helo", "-x"].map(str::to_owned).to_vec(),
            ]
            .concat(),
            reply_mail(OWNER, &reply_address, "Hello", "pipe-5@acme.example", "", "Odd HELO"),
            vec![],
            0,
            "2.0.0 Message added",
        ),
        (
            "--help in the HELO's place, written as one argument",
            [
                base(&reply_address),
                ["--client-address=203.0.113.5", "--client-helo=--help"].map(str::to_owned).to_vec(),
            ]
            .concat(),
            reply_mail(OWNER, &reply_address, "Hello", "pipe-6@acme.example", "", "Helpful HELO"),
            vec![],
            0,
            "2.0.0 Message added",
        ),
        (
            // Not an email at all: held with its bytes, as over SMTP, never bounced.
            "a message with no header section",
            base(&reply_address),
            "\r\n  \r\njust words, no header section\r\n".to_owned(),
            vec![],
            0,
            "2.0.0 Message received; it is held for review",
        ),
        (
            "--help itself",
            vec!["--help".to_owned()],
            genuine.clone(),
            vec![],
            75,
            "printed its help and stored nothing",
        ),
        (
            "a configuration file that is not TOML",
            ["--config", "/etc/hostname", "--sender", OWNER, "--recipient", &reply_address].map(str::to_owned).to_vec(),
            genuine.clone(),
            vec![],
            75,
            "4.3.0 the configuration is broken",
        ),
    ];
    for (what, args, message, env, code, says) in cases {
        let (exit, stderr) = run(args, message, env).await;
        assert_eq!(exit, code, "{what}: {stderr}");
        assert!(stderr.contains(says), "{what}: {stderr:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: one line: {stderr:?}");
    }
    // The crashed delivery is stored once when the mail server tries again.
    let (exit, _) =
        run(stored.clone(), reply_mail(OWNER, &reply_address, "Hello", "pipe-4@acme.example", "", "Crashed"), vec![])
            .await;
    assert_eq!(exit, 0);
    let texts: Vec<String> = app
        .messages(&format!("/chats/{chat}"))
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts.iter().filter(|t| t.contains("Through the pipe")).count(), 1, "{texts:?}");
    assert_eq!(texts.iter().filter(|t| t.contains("Crashed")).count(), 1, "{texts:?}");
    let (_, log) = app.get("/inbound-log?sender=olivia&limit=50").await;
    let entry = log.as_array().unwrap().iter().find(|e| e["message_id"] == "pipe-1@acme.example").cloned().unwrap();
    assert_eq!(entry["peer"], "pipe");
    assert!(entry["auth"].as_str().unwrap().contains("dmarc=pass"), "{entry}");
    assert!(entry["auth"].as_str().unwrap().contains("via=pipe"), "{entry}");
    let metrics = app.metrics().await;
    let line =
        metrics.lines().find(|l| l.starts_with("mailgate_pipe_deliveries_total{outcome=\"accepted\"}")).unwrap_or("");
    assert_eq!(line, "mailgate_pipe_deliveries_total{outcome=\"accepted\"} 4", "{metrics}");
    assert!(metrics.contains("mailgate_pipe_deliveries_total{outcome=\"duplicate\"} 1"), "{metrics}");
    assert!(metrics.contains("mailgate_pipe_deliveries_total{outcome=\"rejected\"} 2"), "{metrics}");
}

#[tokio::test]
async fn held_mail_handed_in_twice_is_held_once() {
    let app = spawn_app_with(strict).await;
    let (_, _, note) = app.chat_with_note().await;
    let config = config_file(&app);
    // Two From fields: no single author; held for an admin.
    let ambiguous = format!(
        "From: {MEMBER}\r\n{}",
        reply_mail(OWNER, &note.reply_address(), "Hi", "pipe-held@acme.example", "", "Who wrote this?")
    );
    for _ in 0..2 {
        let (exit, stderr) = deliver(
            &[
                "--config",
                config.to_str().unwrap(),
                "--sender",
                OWNER,
                "--recipient",
                &note.reply_address(),
                "--client-address",
                "203.0.113.5",
            ],
            &ambiguous,
            &[],
        )
        .await;
        assert_eq!(exit, 0, "{stderr}");
        assert!(stderr.contains("held for review"), "{stderr}");
    }
    let (_, held) = app.admin_get("/held").await;
    assert_eq!(held.as_array().map(Vec::len), Some(1), "{held}");
}

/// The pipe while DNS fails (every answer SERVFAIL): a reply to the
/// customer's own reply address is a temporary failure (exit 75, which the
/// mail server retries), never stored as if the domain published nothing.
#[tokio::test]
async fn a_reply_piped_while_dns_fails_exits_75_and_is_not_stored() {
    let server = name_server_failing_but(std::collections::HashMap::new()).await;
    let app = spawn_app().await;
    let (_, chat, note) = app.chat_with_note().await;
    let config = app.dir.path().join("deliver-dns-down.toml");
    let text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndomain = {DOMAIN:?}\n[auth]\nresolver = \"{server}\"\n",
        app.dir.path().display().to_string(),
        app.database_url,
    );
    std::fs::write(&config, text).unwrap();
    let reply_address = note.reply_address();
    let message = reply_mail(OWNER, &reply_address, "Hello", "pipe-dns-1@acme.example", "", "While DNS is down");
    let args = ["--config", config.to_str().unwrap(), "--sender", OWNER, "--recipient", &reply_address];
    let (code, stderr) = deliver(&[&args[..], &["--client-address", "203.0.113.5"]].concat(), &message, &[]).await;
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("4.4.3"), "{stderr}");
    let (_, messages) = app.get(&format!("/chats/{chat}/messages")).await;
    assert!(!messages.to_string().contains("While DNS is down"), "{messages}");
    app.stop().await;
}
