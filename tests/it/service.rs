//! Issue 35, the service: the systemd unit we ship passes `systemd-analyze
//! verify`, and `serve` tells systemd when it is ready and when it stops
//! (`Type=notify`).

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd/mailgate.service")).unwrap();
    for setting in [
        "Type=notify",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/mailgate",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "Restart=on-failure",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    // Verified with the binary this build made standing in for /usr/bin/mailgate.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailgate.service");
    std::fs::write(&path, unit.replace("/usr/bin/mailgate", env!("CARGO_BIN_EXE_mailgate"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (Debian's systemd; scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("MAILGATE_DOMAIN", "notify.example.test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = start_line(&mut child);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 arrives");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(started.contains("notify.example.test"), "{started}");
    signal(&child, "TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// `serve` with a log file for stderr; returns once it has logged its start
/// line: (the child, the log file, the SMTP address).
fn serve_logging_to(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, std::path::PathBuf, String) {
    let log = dir.join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(args)
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("MAILGATE_DOMAIN", "logs.example.test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("mailgate started")) {
            let line: serde_json::Value = serde_json::from_str(line).expect("the start line is JSON");
            let smtp = line["smtp"].as_str().expect("the start line names the SMTP address").to_owned();
            return (child, log, smtp);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve never logged its start: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_transactions_id_on_each_of_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (child, log, smtp) = serve_logging_to(dir.path(), &["--log-format", "json"]);
    let mut session = Smtp::connect(smtp.parse().unwrap()).await;
    session.expect("EHLO client.example", "250").await;
    // Two transactions, each with a refused recipient and a refused message: two lines each.
    for n in 0..2 {
        session.expect("MAIL FROM:<someone@client.example>", "250").await;
        session.expect("RCPT TO:<reply+aaaaaaaaaaaaaaaaaaaaaaaaaa@logs.example.test>", "550").await;
        session.expect("RCPT TO:<support@logs.example.test>", "250").await;
        session.expect("DATA", "354").await;
        let message = format!("From: someone@client.example\r\nSubject: new {n}\r\n\r\nHello\r\n.\r\n");
        session.write(message.as_bytes()).await;
        let answer = session.read_reply().await;
        assert!(answer.starts_with("550"), "{answer}");
    }
    session.cmd("QUIT").await;
    signal(&child, "TERM");
    let mut child = child;
    assert!(child.wait().unwrap().success());

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}")))
        .collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    let transaction_of = |line: &serde_json::Value| {
        line["spans"].as_array()?.iter().find(|s| s["name"] == "transaction")?["id"].as_str().map(str::to_owned)
    };
    let refused: Vec<_> = lines.iter().filter(|l| l["message"] == "recipient refused").collect();
    let not_posted: Vec<_> = lines.iter().filter(|l| l["message"] == "message not posted").collect();
    assert_eq!((refused.len(), not_posted.len()), (2, 2), "{text}");
    for (rcpt, data) in refused.iter().zip(&not_posted) {
        let id = transaction_of(rcpt).expect("the RCPT line names its transaction");
        assert_eq!(transaction_of(data).as_deref(), Some(id.as_str()), "one transaction, one id: {text}");
        assert!(rcpt["spans"][0]["peer"].is_string(), "and the session's peer: {rcpt}");
    }
    assert_ne!(transaction_of(refused[0]), transaction_of(refused[1]), "each transaction its own id");
}
