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
    let args = mailgate::config::ConfigArgs { config: Some(example.into()), ..Default::default() };
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
        vec!["rules", "test", message],
        vec!["inspect", message],
    ] {
        let out =
            mailgate().args(&args).args(["--data-dir", dir]).env_remove("MAILGATE_DATABASE_URL").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("no mailgate database at"), "{args:?}: {stderr}");
        assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none(), "{args:?} created files");
    }
}

#[test]
fn inspect_fails_on_something_that_is_not_mail() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"just some words, no header section\n").unwrap();
    let out = mailgate().args(["inspect", file.path().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an email"));
}
