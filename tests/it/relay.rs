//! Behind the mail system a desk already has (issue 32): the LMTP listener
//! (TCP and unix socket), XFORWARD and XCLIENT from trusted relays, the
//! client read from a trusted relay's Received: field or a trusted
//! verifier's Authentication-Results, the PROXY protocol, and what an
//! untrusted peer's claims change (nothing).

use crate::support::*;
use mailgate::config::{Config, ListenAddr};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The customer's domain sends only from 203.0.113.5 and rejects what
/// fails DMARC.
fn strict_customer_domain(config: &mut Config) {
    config.auth.records.insert("acme.example".to_owned(), "v=spf1 ip4:203.0.113.5 -all".to_owned());
    config.auth.records.insert("_dmarc.acme.example".to_owned(), "v=DMARC1; p=reject".to_owned());
}

fn trusting_loopback(config: &mut Config) {
    strict_customer_domain(config);
    config.auth.trusted_relays = mailgate::domain::Networks::parse(&["127.0.0.0/8".to_owned()]).unwrap();
}

/// LMTP on a TCP port, for the mail server on this host (a trusted relay).
fn with_lmtp(config: &mut Config) {
    config.lmtp_listen = Some(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()));
    config.auth.trusted_relays = mailgate::domain::Networks::parse(&["127.0.0.0/8".to_owned()]).unwrap();
}

/// A line-based client for LMTP or SMTP on any stream.
struct Client<S> {
    stream: BufReader<S>,
    greeting: String,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    async fn new(stream: S) -> Self {
        let mut client = Self { stream: BufReader::new(stream), greeting: String::new() };
        client.greeting = client.reply().await;
        client
    }

    /// One reply, all its lines; empty at EOF.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.read_line(&mut line))
                .await
                .expect("a reply within 20 s")
                .unwrap_or(0);
            reply.push_str(&line);
            if read == 0 || line.len() < 4 || line.as_bytes()[3] != b'-' {
                return reply;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.stream.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        self.reply().await
    }

    /// Sends the message after a `354`, and its final dot.
    async fn data(&mut self, message: &str) -> String {
        let go = self.cmd("DATA").await;
        assert!(go.starts_with("354"), "{go}");
        self.stream.get_mut().write_all(&dot_stuff(message)).await.unwrap();
        self.stream.get_mut().write_all(b".\r\n").await.unwrap();
        self.reply().await
    }
}

async fn lmtp(app: &TestApp) -> Client<tokio::net::TcpStream> {
    let addr = app.app.as_ref().unwrap().lmtp_addr.expect("an LMTP listener on TCP");
    Client::new(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

async fn smtp(app: &TestApp) -> Client<tokio::net::TcpStream> {
    Client::new(tokio::net::TcpStream::connect(app.smtp).await.unwrap()).await
}

/// The checks the inbound log recorded for the newest entry.
async fn last_checks(app: &TestApp) -> String {
    let (_, log) = app.get("/inbound-log?limit=1").await;
    log[0]["auth"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn lmtp_answers_once_per_accepted_recipient_in_order_and_refuses_ehlo() {
    let app = spawn_app_with(with_lmtp).await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut client = lmtp(&app).await;
    assert!(client.greeting.starts_with("220 ") && client.greeting.contains("LMTP"), "{}", client.greeting);
    let ehlo = client.cmd("EHLO mx.desk.example").await;
    assert!(ehlo.starts_with("500 5.5.1") && ehlo.contains("LHLO"), "{ehlo}");
    assert!(client.cmd("HELO mx.desk.example").await.starts_with("500 5.5.1"));
    let lhlo = client.cmd("LHLO mx.desk.example").await;
    assert!(lhlo.starts_with("250-") && lhlo.contains("PIPELINING") && lhlo.contains("ENHANCEDSTATUSCODES"), "{lhlo}");
    assert!(lhlo.contains("XFORWARD"), "an LMTP client is the desk's own mail server: {lhlo}");
    assert!(client.cmd(&format!("MAIL FROM:<{OWNER}>")).await.starts_with("250"));
    assert!(client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await.starts_with("250"));
    assert!(client.cmd(&format!("RCPT TO:<support@{DOMAIN}>")).await.starts_with("250"));
    let forged = client.cmd(&format!("RCPT TO:<reply+AAAAAAAAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}>")).await;
    assert!(forged.starts_with("550"), "refused at RCPT: {forged}");
    let message = reply_mail(OWNER, &note.reply_address(), "Hello", "lmtp-1@acme.example", "", "Over LMTP");
    let first = client.data(&message).await;
    let second = client.reply().await;
    assert!(first.starts_with("250 2.0.0 <reply+") && first.contains(&format!("chat #{chat}")), "{first}");
    assert!(
        second.starts_with(&format!("550 5.7.1 <support@{DOMAIN}>")) && second.contains("can not be started"),
        "{second}"
    );
    // Exactly two: the next line answers the next command.
    assert!(client.cmd("NOOP").await.starts_with("250 2.0.0 OK"));
    let texts: Vec<String> = app
        .messages(&format!("/chats/{chat}"))
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(texts.iter().filter(|t| t.contains("Over LMTP")).count(), 1, "{texts:?}");
    // XCLIENT is not LMTP's; DATA with no recipient is 503 (RFC 2033 §4.2).
    assert!(client.cmd("XCLIENT ADDR=203.0.113.5").await.starts_with("502 5.5.1"));
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<nobody@{DOMAIN}>")).await;
    assert!(client.cmd("DATA").await.starts_with("503 5.5.1"));
    client.cmd("RSET").await;
    // Many recipients that are one target are read once, each answered.
    client.cmd("MAIL FROM:<>").await;
    for i in 0..5 {
        assert!(client.cmd(&format!("RCPT TO:<bounces+junk{i}@{DOMAIN}>")).await.starts_with("250"));
    }
    let report = "From: MAILER-DAEMON@elsewhere.example\r\nSubject: Undelivered\r\nMessage-ID: <b-group@elsewhere.example>\r\n\r\nIt failed.\r\n";
    let mut answers = vec![client.data(report).await];
    for _ in 0..4 {
        answers.push(client.reply().await);
    }
    assert!(answers.iter().all(|a| a.starts_with("250")), "{answers:?}");
    let (_, log) = app.get("/inbound-log?limit=5").await;
    let entries = log.as_array().unwrap().iter().filter(|e| e["message_id"] == "b-group@elsewhere.example").count();
    assert_eq!(entries, 1, "read and recorded once: {log}");
    assert!(client.cmd("NOOP").await.starts_with("250 2.0.0 OK"));
    // SMTP does not speak LMTP's greeting.
    let mut plain = smtp(&app).await;
    assert!(plain.cmd("LHLO mx").await.starts_with("500 5.5.1"));
    let metrics = app.metrics().await;
    assert!(metrics.contains("mailgate_lmtp_deliveries_total{outcome=\"accepted\",code=\"250\"} 1"), "{metrics}");
    assert!(metrics.contains("mailgate_lmtp_deliveries_total{outcome=\"rejected\",code=\"550\"} 1"), "{metrics}");
}

#[tokio::test]
async fn an_lmtp_client_on_tcp_must_be_a_trusted_relay() {
    let app = spawn_app_with(|config| config.lmtp_listen = Some(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))).await;
    let client = lmtp(&app).await;
    assert!(
        client.greeting.starts_with("554 5.7.0") && client.greeting.contains("trusted_relays"),
        "{}",
        client.greeting
    );
}

#[tokio::test]
async fn a_pipelining_lmtp_client_gets_every_answer_without_waiting() {
    let app = spawn_app_with(with_lmtp).await;
    let (_, _, note) = app.chat_with_note().await;
    let mut client = lmtp(&app).await;
    client.cmd("LHLO mx.desk.example").await;
    // Everything in one write, as Postfix's lmtp client pipelines it.
    let message = reply_mail(OWNER, &note.reply_address(), "Hi", "lmtp-pipe@acme.example", "", "Pipelined");
    let mut batch = format!("MAIL FROM:<{OWNER}>\r\n").into_bytes();
    for _ in 0..5 {
        batch.extend_from_slice(format!("RCPT TO:<{}>\r\n", note.reply_address()).as_bytes());
    }
    batch.extend_from_slice(format!("RCPT TO:<nobody@{DOMAIN}>\r\nDATA\r\n").as_bytes());
    client.stream.get_mut().write_all(&batch).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(client.reply().await);
    }
    assert!(
        answers[0].starts_with("250") && answers[6].starts_with("550") && answers[7].starts_with("354"),
        "{answers:?}"
    );
    client.stream.get_mut().write_all(&dot_stuff(&message)).await.unwrap();
    client.stream.get_mut().write_all(b".\r\nQUIT\r\n").await.unwrap();
    let mut after = Vec::new();
    for _ in 0..6 {
        after.push(client.reply().await);
    }
    // The same address five times is one delivery, answered five times.
    assert!(after[..5].iter().all(|a| a.starts_with("250 2.0.0 <reply+") && a.contains("Message added")), "{after:?}");
    assert!(after[5].starts_with("221"), "five answers, then QUIT's: {after:?}");
    let stored = app.messages("/chats/1").await;
    assert_eq!(stored.iter().filter(|m| m["text"].as_str().unwrap_or("").contains("Pipelined")).count(), 1);
}

#[tokio::test]
async fn a_storage_failure_after_data_is_451_for_every_recipient_and_a_retry_stores_once() {
    let app = spawn_app_with(with_lmtp).await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut client = lmtp(&app).await;
    client.cmd("LHLO mx.desk.example").await;
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    client.cmd(&format!("RCPT TO:<support@{DOMAIN}>")).await;
    // The database starts failing between RCPT and the end of the message.
    let (inject, heal) = if on_postgres() {
        (
            "CREATE FUNCTION injected_failure() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER injected BEFORE INSERT ON inbound_log FOR EACH ROW EXECUTE FUNCTION injected_failure()",
            "DROP TRIGGER injected ON inbound_log",
        )
    } else {
        (
            "CREATE TRIGGER injected BEFORE INSERT ON inbound_log BEGIN SELECT RAISE(ABORT, 'injected'); END",
            "DROP TRIGGER injected",
        )
    };
    for statement in
        inject.split("; CREATE").enumerate().map(|(i, s)| if i == 0 { s.to_owned() } else { format!("CREATE{s}") })
    {
        execute_sql(&app.database_url, &statement).await;
    }
    let message = reply_mail(OWNER, &note.reply_address(), "Hello", "lmtp-fail@acme.example", "", "Stored once");
    let first = client.data(&message).await;
    let second = client.reply().await;
    assert!(first.starts_with("451 4.3.0"), "{first}");
    assert!(second.starts_with("451 4.3.0"), "{second}");
    execute_sql(&app.database_url, heal).await;
    // The client retries the same bytes (twice, as after a lost answer).
    for _ in 0..2 {
        client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
        client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
        let again = client.data(&message).await;
        assert!(again.starts_with("250"), "{again}");
    }
    let stored = app.messages(&format!("/chats/{chat}")).await;
    assert_eq!(stored.iter().filter(|m| m["text"].as_str().unwrap_or("").contains("Stored once")).count(), 1);
}

#[tokio::test]
async fn lmtp_on_a_unix_socket_is_0660_replaces_a_stale_socket_and_is_removed_at_stop() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("lmtp.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a stale socket left by a process that died");
    let path = socket.clone();
    let app = spawn_app_with(move |config| {
        trusting_loopback(config);
        config.lmtp_listen = Some(ListenAddr::Unix(path));
    })
    .await;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);
    let (_, chat, note) = app.chat_with_note().await;
    let mut client = Client::new(tokio::net::UnixStream::connect(&socket).await.unwrap()).await;
    client.cmd("LHLO mx.desk.example").await;
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    // Postfix's Received: the client it took the message from.
    let received = "Received: from mail.acme.example (mail.acme.example [203.0.113.5])\r\n\tby mx.desk.example (Postfix) with ESMTPS id 4Q2x9\r\n\tfor <x>; Mon, 07 Dec 2026 10:00:00 +0000\r\n";
    let message = format!(
        "{received}{}",
        reply_mail(OWNER, &note.reply_address(), "Hello", "unix-1@acme.example", "", "Through the socket")
    );
    let answer = client.data(&message).await;
    assert!(answer.starts_with("250") && answer.contains(&format!("chat #{chat}")), "{answer}");
    let checks = last_checks(&app).await;
    assert!(
        checks.contains("spf=pass") && checks.contains("dmarc=pass") && checks.contains("via=received"),
        "{checks}"
    );
    let (_, entry) = app.get("/inbound-log?limit=1").await;
    assert!(entry[0]["peer"].as_str().unwrap().starts_with("unix:"), "{entry}");
    client.cmd("QUIT").await;
    app.stop().await;
    assert!(!socket.exists(), "the socket file is removed at a clean stop");
}

#[tokio::test]
async fn a_trusted_relay_names_its_client_with_xforward() {
    let app = spawn_app_with(trusting_loopback).await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut client = smtp(&app).await;
    let ehlo = client.cmd("EHLO mx.desk.example").await;
    assert!(ehlo.contains("XFORWARD") && ehlo.contains("XCLIENT"), "{ehlo}");
    // Judged against the relay itself (127.0.0.1), the customer's own domain refuses it.
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    let refused = client
        .data(&reply_mail(OWNER, &note.reply_address(), "Hi", "xf-0@acme.example", "", "Judged on the relay"))
        .await;
    assert!(refused.starts_with("550 5.7.1") && refused.contains("DMARC"), "{refused}");
    for (addr, message_id, expected) in
        [("203.0.113.5", "xf-1@acme.example", "250"), ("IPv6:2001:db8::66", "xf-2@acme.example", "550 5.7.1")]
    {
        assert!(client.cmd(&format!("XFORWARD NAME=mail.acme.example ADDR={addr}")).await.starts_with("250"));
        assert!(client.cmd("XFORWARD HELO=mail.acme.example PROTO=ESMTP").await.starts_with("250"));
        client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
        client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
        let text = format!("Sent from {addr}");
        let answer = client.data(&reply_mail(OWNER, &note.reply_address(), "Hi", message_id, "", &text)).await;
        assert!(answer.starts_with(expected), "{addr}: {answer}");
        let checks = last_checks(&app).await;
        assert!(checks.contains("via=xforward"), "{checks}");
    }
    // explain says where the checks' client came from.
    let stored = app.messages(&format!("/chats/{chat}")).await;
    let id = stored.iter().find(|m| m["text"].as_str().unwrap_or("").contains("203.0.113.5")).unwrap()["id"]
        .as_i64()
        .unwrap();
    let out = tokio::process::Command::from(app.command(&["explain", &id.to_string()])).output().await.unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("judged for the client the trusted relay named with XFORWARD"), "{out}");
    // XFORWARD speaks for one transaction: the next is judged on the relay again.
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    let again =
        client.data(&reply_mail(OWNER, &note.reply_address(), "Hi", "xf-3@acme.example", "", "No XFORWARD")).await;
    assert!(again.starts_with("550 5.7.1"), "{again}");
    assert!(client.cmd("XFORWARD ADDR").await.starts_with("501"));
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    assert!(client.cmd("XFORWARD ADDR=203.0.113.5").await.starts_with("503"), "not inside a transaction");
    client.cmd("RSET").await;
    // Mail submitted on the relay's own host is judged for that host,
    // whatever Received: field the submitter wrote.
    client.cmd("XFORWARD ADDR=127.0.0.1 HELO=localhost").await;
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    let local = format!(
        "Received: from mail.acme.example (mail.acme.example [203.0.113.5]) by mx (Postfix) with ESMTPS id Z\r\n{}",
        reply_mail(OWNER, &note.reply_address(), "Hi", "xf-local@acme.example", "", "Submitted locally")
    );
    let answer = client.data(&local).await;
    assert!(answer.starts_with("550 5.7.1") && answer.contains("DMARC"), "{answer}");
    // A trusted relay's refused recipients are not its errors: eleven in a row keep the session.
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    for _ in 0..11 {
        assert!(client.cmd(&format!("RCPT TO:<nobody@{DOMAIN}>")).await.starts_with("550"));
    }
    assert!(client.cmd("RSET").await.starts_with("250"), "still open");
    // XCLIENT starts the session again as the client it names.
    let restarted = client.cmd("XCLIENT ADDR=203.0.113.5 HELO=mail.acme.example NAME=mail.acme.example").await;
    assert!(restarted.starts_with("220"), "{restarted}");
    client.cmd("EHLO mx.desk.example").await;
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    let answer =
        client.data(&reply_mail(OWNER, &note.reply_address(), "Hi", "xc-1@acme.example", "", "Via XCLIENT")).await;
    assert!(answer.starts_with("250"), "{answer}");
    assert!(last_checks(&app).await.contains("via=xclient"));
    // The client XCLIENT named is not a trusted relay: it cannot name another.
    let ehlo = client.cmd("EHLO mail.acme.example").await;
    assert!(!ehlo.contains("XFORWARD") && !ehlo.contains("XCLIENT"), "{ehlo}");
    assert!(client.cmd("XFORWARD ADDR=203.0.113.5").await.starts_with("550 5.7.0"));
    assert!(client.cmd("XCLIENT ADDR=203.0.113.5").await.starts_with("550 5.7.0"));
    let texts: Vec<Value> = app.messages(&format!("/chats/{chat}")).await;
    assert_eq!(texts.len(), 4, "Hello, Hi, and the two replies from the customer's server: {texts:?}");
}

#[tokio::test]
async fn a_trusted_verifiers_authentication_results_are_believed_over_lmtp() {
    let app = spawn_app_with(|config| {
        strict_customer_domain(config);
        with_lmtp(config);
        config.auth.trusted_authserv_ids = vec!["mx.trusted.example".to_owned()];
    })
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut client = lmtp(&app).await;
    client.cmd("LHLO mx.desk.example").await;
    let send = |verifier: &'static str, id: &'static str| {
        format!(
            "Authentication-Results: {verifier};\r\n spf=pass (sender designated) smtp.mailfrom={OWNER}\r\n{}",
            reply_mail(OWNER, &note.reply_address(), "Hi", id, "", &format!("Verified by {verifier}"))
        )
    };
    for (verifier, id, expected) in
        [("mx.trusted.example", "ar-1@acme.example", "250"), ("mx.forged.example", "ar-2@acme.example", "550 5.7.1")]
    {
        client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
        client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
        let answer = client.data(&send(verifier, id)).await;
        assert!(answer.starts_with(expected), "{verifier}: {answer}");
    }
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), 3);
}

#[tokio::test]
async fn an_untrusted_peers_xforward_received_and_authentication_results_change_nothing() {
    let app = spawn_app_with(|config| {
        strict_customer_domain(config);
        config.auth.trusted_authserv_ids = vec!["mx.google.com".to_owned()];
    })
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut client = smtp(&app).await;
    let ehlo = client.cmd("EHLO attacker.example").await;
    assert!(!ehlo.contains("XFORWARD") && !ehlo.contains("XCLIENT"), "{ehlo}");
    let xforward = client.cmd("XFORWARD ADDR=203.0.113.5 HELO=mail.acme.example").await;
    assert!(xforward.starts_with("550 5.7.0"), "{xforward}");
    assert!(client.cmd("XCLIENT ADDR=203.0.113.5").await.starts_with("550 5.7.0"));
    let forged = format!(
        "Received: from mail.acme.example (mail.acme.example [203.0.113.5]) by mx.desk.example (Postfix) with ESMTPS id F\r\n\
         Authentication-Results: mx.google.com; spf=pass smtp.mailfrom={OWNER}; dmarc=pass header.from=acme.example\r\n{}",
        reply_mail(OWNER, &note.reply_address(), "Hi", "forged-1@acme.example", "", "Forged claims")
    );
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    let answer = client.data(&forged).await;
    assert!(answer.starts_with("550 5.7.1") && answer.contains("DMARC"), "{answer}");
    assert!(!last_checks(&app).await.contains("via="), "judged on the connection");
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), 2);
}

#[tokio::test]
async fn a_trusted_proxys_proxy_header_names_the_client() {
    let app = spawn_app_with(|config| {
        strict_customer_domain(config);
        config.auth.proxy_protocol_from = mailgate::domain::Networks::parse(&["127.0.0.1".to_owned()]).unwrap();
    })
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut stream = tokio::net::TcpStream::connect(app.smtp).await.unwrap();
    stream.write_all(b"PROXY TCP4 203.0.113.5 192.0.2.1 40000 25\r\n").await.unwrap();
    let mut client = Client::new(stream).await;
    assert!(client.greeting.starts_with("220"), "{}", client.greeting);
    client.cmd("EHLO mail.acme.example").await;
    client.cmd(&format!("MAIL FROM:<{OWNER}>")).await;
    client.cmd(&format!("RCPT TO:<{}>", note.reply_address())).await;
    let answer =
        client.data(&reply_mail(OWNER, &note.reply_address(), "Hi", "proxy-1@acme.example", "", "Proxied")).await;
    assert!(answer.starts_with("250"), "{answer}");
    assert!(last_checks(&app).await.contains("via=proxy"));
    let (_, entry) = app.get("/inbound-log?limit=1").await;
    assert_eq!(entry[0]["peer"], "203.0.113.5:40000");
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), 3);
    // Without the header, a trusted proxy's connection is closed unanswered.
    let mut bare = tokio::net::TcpStream::connect(app.smtp).await.unwrap();
    bare.write_all(b"EHLO x\r\n").await.unwrap();
    let mut said = String::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_string(&mut bare, &mut said),
    )
    .await;
    assert_eq!(said, "", "no greeting to a connection that is not what the proxy promised");
}

/// Asks the policy service one question, as Postfix does.
async fn ask(client: &mut BufReader<tokio::net::TcpStream>, state: &str, sender: &str, recipient: &str) -> String {
    let request = format!(
        "request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\nclient_address=203.0.113.5\n\
         helo_name=mail.acme.example\nsender={sender}\nrecipient={recipient}\ninstance=1a2b.3c\n\n"
    );
    client.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    client.read_line(&mut answer).await.unwrap();
    let mut blank = String::new();
    client.read_line(&mut blank).await.unwrap();
    assert_eq!(blank, "\n", "each answer ends with an empty line");
    answer.trim_end().to_owned()
}

#[tokio::test]
async fn the_policy_service_refuses_at_rcpt_what_mailgate_would_refuse() {
    let app =
        spawn_app_with(|config| config.policy_listen = Some(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))).await;
    let (_, _, note) = app.chat_with_note().await;
    let addr = app.app.as_ref().unwrap().policy_addr.unwrap();
    let mut client = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let support = format!("support@{DOMAIN}");
    let forged = format!("reply+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}");
    let cases = [
        ("RCPT", OWNER, note.reply_address(), "action=DUNNO"),
        ("RCPT", OWNER, forged.clone(), "action=REJECT 5.1.1"),
        ("RCPT", OWNER, format!("nobody@{DOMAIN}"), "action=REJECT 5.1.1"),
        // Another domain is Postfix's business, not ours.
        ("RCPT", OWNER, "someone@elsewhere.example".to_owned(), "action=DUNNO"),
        // The support address: the message decides (a reply may thread by its
        // references), and who asks learns nothing about who is a customer.
        ("RCPT", "stranger@unknown.example", support.clone(), "action=DUNNO"),
        ("RCPT", OWNER, support.clone(), "action=DUNNO"),
        ("RCPT", "", support.clone(), "action=DUNNO"),
        ("DATA", OWNER, forged.clone(), "action=DUNNO"),
    ];
    for (state, sender, recipient, expected) in cases {
        let answer = ask(&mut client, state, sender, &recipient).await;
        assert!(answer.starts_with(expected), "{state} {sender} → {recipient}: {answer}");
        assert!(!answer.contains('\r'), "{answer}");
    }
    // The database cannot be asked: Postfix is told to try later, never to refuse.
    execute_sql(&app.database_url, "ALTER TABLE threads RENAME TO threads_away").await;
    let answer = ask(&mut client, "RCPT", OWNER, &note.reply_address()).await;
    execute_sql(&app.database_url, "ALTER TABLE threads_away RENAME TO threads").await;
    assert!(answer.starts_with("action=DEFER_IF_PERMIT 4.3.0"), "{answer}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("mailgate_policy_answers_total{action=\"reject\",reason=\"bad_token\"} 1"), "{metrics}");
    assert!(metrics.contains("mailgate_policy_answers_total{action=\"dunno\",reason=\"other_domain\"} 1"), "{metrics}");
    // A request past the limits ends the connection; nothing else changes.
    client.get_mut().write_all(format!("recipient={}\n\n", "x".repeat(10_000)).as_bytes()).await.unwrap();
    let mut rest = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), client.read_line(&mut rest)).await;
    assert_eq!(rest, "");
    // At most 256 connections at once: past them, closed at once; the service goes on.
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut extra, &mut byte))
            .await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the 257th is closed: {closed:?}");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut again = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    assert!(ask(&mut again, "RCPT", OWNER, &note.reply_address()).await.starts_with("action=DUNNO"));
}

#[test]
fn lmtp_on_port_25_and_a_broken_relay_list_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
            .arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = run(&["--lmtp-listen", "127.0.0.1:25"]);
    assert!(said.contains("lmtp_listen") && said.contains("RFC 2033"), "{said}");
    let said = run(&["--lmtp-listen", "unix:"]);
    assert!(said.contains("lmtp_listen") && said.contains("unix:/path/to/socket"), "{said}");
    for (key, value) in [
        ("trusted_relays", "[\"10.0.0.0/33\"]"),
        ("trusted_proxies", "[\"proxy.example\"]"),
        ("trusted_authserv_ids", "[\"mx google\"]"),
    ] {
        let file = dir.path().join("broken.toml");
        std::fs::write(&file, format!("[auth]\n{key} = {value}\n")).unwrap();
        let said = run(&["--config", file.to_str().unwrap()]);
        assert!(said.contains(&format!("auth.{key}")), "{key}: {said}");
    }
}

#[tokio::test]
async fn a_desk_that_takes_no_mail_at_the_support_address_refuses_it_at_rcpt_with_one_notice() {
    let app = spawn_app_with(|config| {
        config.policy_listen = Some(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()));
        config.policy_refuses_support = true;
    })
    .await;
    let (_, _, note) = app.chat_with_note().await;
    let addr = app.app.as_ref().unwrap().policy_addr.unwrap();
    let mut client = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let support = format!("support@{DOMAIN}");
    for sender in ["stranger@unknown.example", OWNER, OWNER] {
        let answer = ask(&mut client, "RCPT", sender, &support).await;
        assert!(answer.starts_with("action=REJECT 5.7.1 A chat can not be started by email"), "{sender}: {answer}");
    }
    assert!(ask(&mut client, "RCPT", OWNER, &note.reply_address()).await.starts_with("action=DUNNO"));
    // The known customer is told once (the two notifications of the chat, then the notice).
    let mail = app.wait_for_mail(4).await;
    assert_eq!(mail.len(), 4);
    assert_eq!(mail[3].to(), OWNER, "the notice goes to the customer");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.read_outbox().len(), 4, "once: the second refusal in the hour sends nothing");
}

/// `mailgate policy --listen`: the same service as a process of its own,
/// beside the server, on the server's database.
#[tokio::test]
async fn the_policy_command_answers_beside_the_server() {
    let app = spawn_app().await;
    let (_, _, note) = app.chat_with_note().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = app.command(&["policy", "--listen", &format!("127.0.0.1:{port}"), "--domain", DOMAIN]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = tokio::process::Command::from(command).kill_on_drop(true).spawn().unwrap();
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(connected) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            stream = Some(connected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut client = BufReader::new(stream.expect("mailgate policy listens"));
    assert_eq!(ask(&mut client, "RCPT", OWNER, &note.reply_address()).await, "action=DUNNO");
    let forged = format!("reply+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}");
    assert!(ask(&mut client, "RCPT", OWNER, &forged).await.starts_with("action=REJECT 5.1.1"));
    child.kill().await.unwrap();
}
