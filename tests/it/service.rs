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

/// `GET /readyz` (no token): (status, body).
async fn readyz(http: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let url = format!("{}/readyz", base.trim_end_matches("/api/v1"));
    let response = http.get(url).send().await.expect("the HTTP side answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_stop_finishes_the_message_under_way_and_turns_new_connections_away_with_421() {
    let mut app = spawn_app_with(|c| c.limits.shutdown_grace = Duration::from_secs(30)).await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let (status, body) = readyz(&app.http, &app.base).await;
    assert_eq!((status, &body["ready"]), (200, &serde_json::json!(true)), "{body}");

    // A client in the middle of its message when the stop comes.
    let mut busy = app.smtp().await;
    busy.expect("EHLO acme.example", "250").await;
    busy.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    busy.expect(&format!("RCPT TO:<{reply_to}>"), "250").await;
    busy.expect("DATA", "354").await;
    let mail = reply_mail(OWNER, &reply_to, "Hello", "under-way@acme.example", "", "Sent while the server stopped");
    let (first, second) = mail.split_at(mail.len() / 2);
    busy.write(first.as_bytes()).await;

    let running = app.app.take().unwrap();
    let smtp = app.smtp;
    let stopping = tokio::spawn(running.shutdown());
    // New connections are told to come back later; the HTTP side says why it is not ready.
    let mut turned_away = String::new();
    for _ in 0..100 {
        turned_away = Smtp::connect(smtp).await.greeting;
        if turned_away.starts_with("421") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(turned_away.starts_with("421 4.3.2") && turned_away.contains("shutting down"), "{turned_away}");
    let (status, body) = readyz(&app.http, &app.base).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["why"].as_str().unwrap_or_default().contains("shutting down"), "{body}");

    // The message under way is finished, stored and acknowledged; then the session is closed.
    busy.write(second.as_bytes()).await;
    busy.write(b"\r\n.\r\n").await;
    let answer = busy.read_reply().await;
    assert!(answer.starts_with("250"), "the message under way is taken: {answer}");
    let next = busy.cmd("MAIL FROM:<someone@acme.example>").await;
    assert!(next.is_empty() || next.starts_with("421"), "{next}");
    tokio::time::timeout(Duration::from_secs(60), stopping).await.expect("the stop ends").unwrap();

    let app = app.restart().await;
    let texts = app.texts(&format!("/chats/{chat_id}")).await;
    assert!(texts.iter().any(|t| t == "Sent while the server stopped"), "{texts:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_stop_does_not_wait_longer_than_the_grace_for_a_client_that_never_finishes() {
    let mut app = spawn_app_with(|c| c.limits.shutdown_grace = Duration::from_secs(1)).await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let mut stuck = app.smtp().await;
    stuck.expect("EHLO acme.example", "250").await;
    stuck.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    stuck.expect(&format!("RCPT TO:<{reply_to}>"), "250").await;
    stuck.expect("DATA", "354").await;
    let mail = reply_mail(OWNER, &reply_to, "Hello", "never-finished@acme.example", "", "Never finished");
    stuck.write(&mail.as_bytes()[..mail.len() / 2]).await;

    // Bounded: the stop ends although the client never sends the end of its message
    // (the limit here only keeps a broken build from hanging the suite).
    let running = app.app.take().unwrap();
    tokio::time::timeout(Duration::from_secs(60), running.shutdown()).await.expect("the stop ends after its grace");
    drop(stuck);
    let app = app.restart().await;
    let texts = app.texts(&format!("/chats/{chat_id}")).await;
    assert!(!texts.iter().any(|t| t == "Never finished"), "never acknowledged, never stored half: {texts:?}");
    app.stop().await;
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?} runs: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?}: {text}");
    text
}

#[test]
fn the_debian_package_installs_the_binary_the_unit_and_a_configuration_dpkg_keeps() {
    if on_postgres() {
        return; // The package is the same on either backend; built once, on the SQLite pass.
    }
    // cargo-deb packages target/release/mailgate: the binary this test run built, stripped, stands in.
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    run_ok(Command::new("strip").arg("-o").arg(target.join("release/mailgate")).arg(env!("CARGO_BIN_EXE_mailgate")));
    let out = work.path().join("out");
    run_ok(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["deb", "--no-build", "--fast", "--output"])
            .arg(&out)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target),
    );
    let deb = std::fs::read_dir(&out).unwrap().next().expect("a .deb was written").unwrap().path();

    // The control data: a conffile dpkg keeps when the admin changed it, and adduser for the user.
    let control = work.path().join("control");
    run_ok(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == "/etc/mailgate/mailgate.toml"), "{conffiles}");
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Package: mailgate") && fields.contains("adduser"), "{fields}");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    run_ok(Command::new("sh").arg("-n").arg(control.join("postinst")));
    for step in ["adduser --system --group", "install -d -o mailgate -g mailgate -m 0700 /var/lib/mailgate"] {
        assert!(postinst.contains(step), "postinst lacks {step}: {postinst}");
    }
    assert!(postinst.contains("dpkg-statoverride --update --add root mailgate 0640 /etc/mailgate/mailgate.toml"));
    let writes_config = postinst.lines().any(|l| {
        let l = l.replace(' ', "");
        l.contains(">/etc/mailgate")
            || (l.contains("mailgate.toml") && ["cp", "mv", "sed-i", "tee"].iter().any(|w| l.contains(w)))
    });
    assert!(!writes_config, "postinst never writes the configuration: {postinst}");
    assert!(
        !postinst.contains("systemctl start") && !postinst.contains("--now"),
        "not started before it is configured"
    );

    // The files, where the unit and the guide say they are.
    let root = work.path().join("root");
    run_ok(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&root));
    for file in [
        "usr/bin/mailgate",
        "etc/mailgate/mailgate.toml",
        "usr/lib/systemd/system/mailgate.service",
        "usr/share/doc/mailgate/operations.md",
        "usr/share/doc/mailgate/mailgate.example.toml",
        "usr/share/doc/mailgate/copyright",
    ] {
        assert!(root.join(file).exists(), "the package lacks /{file}");
    }
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/mailgate.service")).unwrap();
    assert!(unit.contains("--config /etc/mailgate/mailgate.toml --data-dir /var/lib/mailgate"), "{unit}");
    // The packaged binary runs and reads the packaged configuration.
    let binary = root.join("usr/bin/mailgate");
    assert!(run_ok(Command::new(&binary).arg("--version")).contains(env!("CARGO_PKG_VERSION")));
    let data = work.path().join("data");
    let out = Command::new(&binary)
        .args(["migrate", "--check", "--config"])
        .arg(root.join("etc/mailgate/mailgate.toml"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("migration(s) pending"), "{said}{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_published_crate_holds_what_cargo_install_needs_and_no_test_mail() {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["package", "--list", "--locked", "--allow-dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "LICENSE",
        "Cargo.lock",
        "src/main.rs",
        "rules/default.toml",
        "migrations/sqlite/0001_initial.sql",
        "migrations/postgres/0001_initial.sql",
        "contrib/systemd/mailgate.service",
    ] {
        assert!(list.lines().any(|l| l == file), "the crate lacks {file}");
    }
    // Every file the build reads (migrations, templates) is in it.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for folder in ["migrations/sqlite", "migrations/postgres", "templates", "src/console/templates"] {
        let mut stack = vec![root.join(folder)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    assert!(list.lines().any(|l| l == name), "the crate lacks {name}");
                }
            }
        }
    }
    assert!(!list.lines().any(|l| l.starts_with("fixtures/") || l.starts_with("tests/")), "no test mail: {list}");
}

#[tokio::test]
async fn during_a_stop_the_lmtp_socket_answers_421_while_an_smtp_session_finishes() {
    use tokio::io::AsyncBufReadExt;
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("lmtp.sock");
    let path = socket.clone();
    let mut app = spawn_app_with(move |c| c.lmtp_listen = Some(mailgate::config::ListenAddr::Unix(path))).await;
    let (_, _, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let mut busy = app.smtp().await;
    busy.expect("EHLO acme.example", "250").await;
    busy.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    busy.expect(&format!("RCPT TO:<{reply_to}>"), "250").await;
    busy.expect("DATA", "354").await;
    busy.write(b"Subject: half\r\n").await;

    let stopping = tokio::spawn(app.app.take().unwrap().shutdown());
    let mut greeting = String::new();
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
            greeting.clear();
            let _ = tokio::io::BufReader::new(stream).read_line(&mut greeting).await;
            if greeting.starts_with("421") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(greeting.starts_with("421 4.3.2"), "the LMTP socket is there and says why: {greeting:?}");
    busy.write(b"\r\nStill here\r\n.\r\n").await;
    assert!(busy.read_reply().await.starts_with("250"));
    tokio::time::timeout(Duration::from_secs(60), stopping).await.expect("the stop ends").unwrap();
    assert!(!socket.exists(), "a clean stop removes the socket");
}

#[tokio::test]
async fn addresses_built_to_forge_json_fields_stay_inside_their_own_value() {
    let dir = tempfile::tempdir().unwrap();
    let (child, log, smtp) = serve_logging_to(dir.path(), &["--log-format", "json"]);
    let mut session = Smtp::connect(smtp.parse().unwrap()).await;
    session.expect("EHLO client.example", "250").await;
    session.expect(r#"MAIL FROM:<"x\"},\"level\":\"ERROR\",\"y\":{\""@client.example>"#, "250").await;
    let forged = r#"RCPT TO:<"q\"}\n{\"level\":\"ERROR\",\"message\":\"forged\""@logs.example.test>"#;
    let answer = session.cmd(forged).await;
    assert!(answer.starts_with('5'), "{answer}");
    session.cmd("QUIT").await;
    signal(&child, "TERM");
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert_ne!(object["level"], "ERROR", "{line}");
        assert_ne!(object["message"], "forged", "{line}");
    }
}
