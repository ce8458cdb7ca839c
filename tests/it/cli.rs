//! The `mailgate` binary itself: help texts, `inspect`, and `serve` on the
//! embedded default.

use crate::support::{signal, start_line};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mailgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailgate"))
}

#[test]
fn help_explains_the_commands_and_flags() {
    let out = mailgate().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("serve") && text.contains("inspect"), "{text}");
    let out = mailgate().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--data-dir", "--smtp-listen", "--http-listen", "--domain", "MAILGATE_DATA_DIR"] {
        assert!(text.contains(flag), "serve --help lacks {flag}: {text}");
    }
}

#[test]
fn inspect_prints_what_the_pipeline_sees() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mail/gmail/reply_with_quote.eml");
    let out = mailgate().args(["inspect", "--json", fixture]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["from", "to", "subject", "message_id", "kind", "thread_token", "reply_text", "attachments"] {
        assert!(value.get(key).is_some(), "inspect lacks {key}: {value}");
    }
    assert_eq!(value["kind"], "human");
    assert_eq!(value["thread_token"]["via"], "in_reply_to");
    assert_eq!(value["reply_text"], "Yes, that fixed it. Thank you!\n\nAnna");
}

#[test]
fn inspect_refuses_a_missing_file_clearly() {
    let out = mailgate().args(["inspect", "/nonexistent/x.eml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/x.eml"));
}

#[test]
fn serve_runs_on_the_embedded_default_and_prints_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = mailgate()
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("MAILGATE_DOMAIN", "env.example.test")
        .env_remove("MAILGATE_API_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = start_line(&mut child);
    assert!(started.contains("env.example.test"), "domain from MAILGATE_DOMAIN: {started}");
    let data = dir.path().join("mailgate-data");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.join("mailgate.db").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(data.join("mailgate.db").exists() && data.join("outbox").is_dir());
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM stops it cleanly: {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("Generated API token"), "{stdout}");
}

#[test]
fn the_example_config_is_valid_and_broken_ones_are_named() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/mailgate.example.toml");
    let args = mailgate::config::ConfigArgs {
        store: mailgate::config::StoreArgs { config: Some(example.into()), ..Default::default() },
        ..Default::default()
    };
    let config = mailgate::config::Config::load(&args).expect("the example config loads");
    assert_eq!(config.limits.max_message_size, 26_214_400);

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "smtp_listen = \"not an address\"\n").unwrap();
    let out = mailgate().args(["serve", "--config"]).arg(&broken).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("smtp_listen"), "the error names the key: {stderr}");

    std::fs::write(&broken, "domian = \"typo.example\"\n").unwrap();
    let out = mailgate().args(["serve", "--config"]).arg(&broken).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("domian"), "unknown keys are named");
}

/// Issues 29 and 30: the new keys refuse what would open a hole, naming the
/// key; a guessable token in the file stops `serve` with how to make one.
#[test]
fn the_new_security_keys_refuse_bad_values_and_weak_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailgate.toml");
    for (text, key) in [
        ("[auth]\non_ambiguous_author = \"post\"\n", "auth.on_ambiguous_author"),
        ("[notify]\nmax_message_bytes = 100\n", "notify.max_message_bytes"),
        ("[notify]\nmax_size = 1\n", "max_size"),
        ("[limits]\nmin_data_rate = \"slow\"\n", "min_data_rate"),
        // Issue 31: a proxy list an attacker might slip in is checked too.
        ("trusted_proxies = [\"everyone\"]\n", "trusted_proxies"),
        ("trusted_proxies = [\"0.0.0.0/33\"]\n", "trusted_proxies"),
        ("trusted_proxies = \"127.0.0.1\"\n", "trusted_proxies"),
        ("smtp_listen = \"localhost\"\n", "smtp_listen"),
        // Issue 33: the desk's name and address on its mail.
        ("[notify]\nfrom_name = \"Acme\\r\\nBcc: x@evil.example\"\n", "notify.from_name"),
        ("[notify]\nfrom_name = \"\"\n", "notify.from_name"),
        ("[notify]\nfrom_address = \"not an address\"\n", "notify.from_address"),
        ("[policy]\nrefuse_support_address = \"yes\"\n", "refuse_support_address"),
    ] {
        std::fs::write(&file, text).unwrap();
        let args = mailgate::config::ConfigArgs {
            store: mailgate::config::StoreArgs { config: Some(file.clone()), ..Default::default() },
            ..Default::default()
        };
        let error = match mailgate::config::Config::load(&args) {
            Ok(_) => panic!("{text:?} loaded"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(key), "{text:?}: the error names {key}: {error}");
    }
    std::fs::write(&file, "admin_token = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
    let out = mailgate()
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("MAILGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("too easy to guess"), "{stderr}");
}

/// Issue 22: a command that reads a gateway's data, pointed at the wrong
/// folder, says so and creates nothing.
#[test]
fn read_only_commands_never_create_a_database() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let message = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mail/gmail/reply_with_quote.eml");
    for args in [
        vec!["log"],
        vec!["outbox", "list"],
        vec!["keys", "list"],
        vec!["held", "list"],
        vec!["explain", "1"],
        vec!["replay"],
        vec!["inspect", message],
    ] {
        let out =
            mailgate().args(&args).args(["--data-dir", dir]).env_remove("MAILGATE_DATABASE_URL").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("no mailgate database at"), "{args:?}: {stderr}");
        assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none(), "{args:?} created files");
    }
    // Issue 31: `rules test` works on a fresh machine, deciding against an
    // empty directory, says so in one line, and leaves nothing behind.
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.toml");
    let out = mailgate()
        .args(["rules", "test", message, "--rules", rules, "--data-dir", dir])
        .env_remove("MAILGATE_DATABASE_URL")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("deciding as if the directory were empty"), "{stderr}");
    assert!(stdout.contains("decision:") && stdout.contains("kind is auto_reply"), "{stdout}");
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none(), "rules test created files");
}

/// Issue 31: each command's help lists the flags it uses, once, with its own
/// description; addresses may be names; a wrong one says how to write it.
#[test]
fn each_command_lists_its_own_flags_and_addresses_may_be_names() {
    let help = |args: &[&str]| {
        let out = mailgate().args(args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&[]);
    let line = |name: &str| top.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_default().to_owned();
    assert!(line("suppressions").contains("bounced") && line("outbox").contains("outgoing mail"), "{top}");
    for tool in [&["keys", "list"][..], &["tokens", "reset"], &["outbox", "list"], &["suppressions", "list"], &["log"]]
    {
        let text = help(tool);
        for serve_only in
            ["--smtp-listen", "--http-listen", "--relay", "--tls-cert", "--public-url", "--max-message-size"]
        {
            assert!(!text.contains(serve_only), "{tool:?} lists {serve_only}: {text}");
        }
        assert!(text.contains("--data-dir") && text.contains("--database-url"), "{tool:?}: {text}");
    }
    let replay = help(&["replay"]);
    assert_eq!(replay.matches("[default: 7d]").count(), 1, "{replay}");
    assert!(help(&["rules", "test"]).contains("--rules <FILE>"));

    // A listening address may be a name; a wrong one names the way to write it.
    let dir = tempfile::tempdir().unwrap();
    let mut child = mailgate()
        .args(["serve", "--smtp-listen", "localhost:0", "--http-listen", "localhost:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = start_line(&mut child);
    assert!(started.contains("the admin console is at http://127.0.0.1:"), "{started}");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let out = mailgate().args(["serve", "--smtp-listen", "2525"]).current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("write it as IP:PORT"), "{stderr}");
    // An unreachable PostgreSQL is named at once, with the reason.
    let out = mailgate()
        .args(["serve", "--database-url", "postgres://mailgate:secret@127.0.0.1:1/mailgate"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:1") && stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn inspect_says_what_the_server_does_with_something_that_is_not_mail() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"just some words, no header section\n").unwrap();
    let out = mailgate().args(["inspect", file.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an email"));
    let out = mailgate().args(["inspect", "--json", file.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON object");
    assert_eq!(value["readable"], false, "{value}");
    assert_eq!(value["held"]["reason_code"], "reading_failed", "{value}");
}

/// Issue 22: the API and admin tokens are generated only by a start that
/// worked, shown once, stored as hashes only, and can be reset live.
#[tokio::test]
async fn tokens_come_from_a_start_that_worked_are_stored_hashed_and_reset_live() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let serve = |smtp: &str| {
        let mut command = mailgate();
        command
            .args(["serve", "--smtp-listen", smtp, "--http-listen", "127.0.0.1:0", "--domain", "tokens.example"])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("MAILGATE_API_TOKEN")
            .env_remove("MAILGATE_ADMIN_TOKEN")
            .env("RUST_LOG", "info");
        command
    };
    let database = format!("sqlite://{}", dir.path().join("mailgate.db").display());
    let token_settings = || async {
        crate::support::query_i64(
            &database,
            "SELECT COUNT(*) FROM settings WHERE key LIKE '%token%' AND key NOT LIKE 'token_key.%'",
        )
        .await
    };

    // A start that fails (the SMTP port is taken) leaves no token behind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = serve(&taken.local_addr().unwrap().to_string()).output().unwrap();
    assert!(!out.status.success(), "a taken port stops the start");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Generated"), "no token shown");
    assert_eq!(token_settings().await, 0, "and none stored");

    // The next start that works generates both and shows them once.
    let mut child = serve("127.0.0.1:0").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = start_line(&mut child);
    let http =
        started.split("http=").nth(1).and_then(|r| r.split_whitespace().next()).expect("http address").to_owned();
    let mut shown = std::io::BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut token_after = |label: &str| {
        shown.find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label} shown"));
        shown.next().expect("the token line").trim().to_owned()
    };
    let api_token = token_after("Generated API token");
    let admin_token = token_after("Generated admin token");
    let stored: Vec<(String, String)> = {
        let store = mailgate::store::Store::open(&database).await.unwrap();
        let found = store.settings_with_prefix("").await.unwrap();
        store.close().await;
        found
    };
    assert!(stored.iter().any(|(k, _)| k == "api_token_hash") && stored.iter().any(|(k, _)| k == "admin_token_hash"));
    assert!(
        stored.iter().all(|(_, v)| !v.contains(&api_token) && !v.contains(&admin_token)),
        "no token is stored in plain text"
    );

    let http_client = reqwest::Client::new();
    let status = |token: String| {
        let request = http_client.get(format!("http://{http}/api/v1/plans")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(api_token.clone()).await, 200);
    assert_eq!(status(admin_token.clone()).await, 401, "the admin token is not the API token");

    // Reset while it runs: the new token works and the old one stops, within seconds.
    let reset = mailgate().args(["tokens", "reset", "api", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let printed = String::from_utf8_lossy(&reset.stdout).into_owned();
    let new_token = printed.lines().nth(1).expect("the new token").trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(api_token.clone()).await != 401 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(api_token).await, 401, "the old token stopped working");
    assert_eq!(status(new_token).await, 200, "the new one works");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
