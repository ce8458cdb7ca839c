//! Hostile input: forged senders (SPF, DKIM, DMARC), and the limits that
//! keep the listener up.

use crate::support::*;
use mail_auth::common::crypto::{Ed25519Key, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use serde_json::json;
use std::collections::HashMap;

/// DNS as the tests see it: acme.example allows only 192.0.2.1 to send and
/// asks receivers to reject what fails DMARC.
fn acme_records() -> HashMap<String, String> {
    HashMap::from([
        ("acme.example".to_owned(), "v=spf1 ip4:192.0.2.1 -all".to_owned()),
        ("_dmarc.acme.example".to_owned(), "v=DMARC1; p=reject".to_owned()),
    ])
}

async fn chat_note(app: &TestApp) -> Eml {
    app.chat_with_note().await.2
}

#[tokio::test]
async fn a_spoofed_from_failing_dmarc_is_refused_and_recorded() {
    let app = spawn_app_with(|c| c.auth.records = acme_records()).await;
    let note = chat_note(&app).await;
    // Sent from 127.0.0.1, which acme.example's SPF does not allow, unsigned.
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "spoof-1@acme.example", "", "I am Olivia, honest");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("550 5.7.1") && answer.contains("DMARC"), "{answer}");
    let (_, log) = app.get("/inbound-log").await;
    assert!(log[0]["auth"].as_str().unwrap().contains("spf=fail"), "{}", log[0]);
    assert!(log[0]["auth"].as_str().unwrap().contains("dmarc=fail"), "{}", log[0]);
    app.stop().await;
}

#[tokio::test]
async fn a_dkim_signed_reply_passes_dmarc_even_when_spf_fails() {
    let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
    let public = data_encoding::BASE64.encode(&key.public_key());
    let mut records = acme_records();
    records.insert("s1._domainkey.acme.example".to_owned(), format!("v=DKIM1; k=ed25519; p={public}"));
    let app = spawn_app_with(move |c| c.auth.records = records).await;
    let note = chat_note(&app).await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "signed-1@acme.example", "", "Signed by my domain");
    let signer =
        DkimSigner::from_key(key).domain("acme.example").selector("s1").headers(["From", "Subject", "Message-ID"]);
    let signature = signer.sign(reply.as_bytes()).unwrap().to_header();
    let signed = format!("{signature}{reply}");
    let answer = app.send(OWNER, &[&note.reply_address()], &signed).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, log) = app.get("/inbound-log").await;
    assert!(log[0]["auth"].as_str().unwrap().contains("dkim=pass"), "{}", log[0]);
    assert!(log[0]["auth"].as_str().unwrap().contains("dmarc=pass"), "{}", log[0]);
    let _ = Sha256; // the signer's hash for RSA keys; Ed25519 needs none
    app.stop().await;
}

#[tokio::test]
async fn with_hold_a_dmarc_failure_is_kept_for_an_agent() {
    let app = spawn_app_with(|c| {
        c.auth.records = acme_records();
        c.auth.on_dmarc_fail = mailgate::pipeline::authenticate::OnDmarcFail::Hold;
    })
    .await;
    let note = chat_note(&app).await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "held-1@acme.example", "", "Held?");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, held) = app.get("/held").await;
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    assert!(held[0]["reason"].as_str().unwrap().contains("DMARC"));
    let (_, log) = app.get("/inbound-log").await;
    assert_eq!(log[0]["decision"], "held");
    app.stop().await;
}

#[tokio::test]
async fn ten_thousand_recipients_get_clear_answers() {
    let app = spawn_app().await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO load.example", "250").await;
    smtp.expect("MAIL FROM:<a@example.org>", "250").await;
    let mut batch = String::new();
    for i in 0..10_000 {
        batch.push_str(&format!("RCPT TO:<user{i}@{DOMAIN}>\r\n"));
    }
    smtp.write(batch.as_bytes()).await;
    let mut answered = 0;
    let mut closed = false;
    while answered < 10_000 {
        let reply = smtp.read_reply().await;
        if reply.is_empty() {
            closed = true;
            break;
        }
        assert!(reply.starts_with('4') || reply.starts_with('5'), "{reply}");
        answered += 1;
    }
    assert!(closed || answered == 10_000, "every recipient answered, or the session closed after too many errors");
    let mut other = app.smtp().await;
    other.expect("EHLO still.up", "250").await;
    app.stop().await;
}

#[tokio::test]
async fn a_mime_bomb_is_refused_without_harm() {
    let app = spawn_app().await;
    let note = chat_note(&app).await;
    // 5,000 parts, and multiparts nested 200 deep.
    let mut wide = String::from(
        "From: olivia@acme.example\r\nSubject: Re: x\r\nMessage-ID: <bomb-1@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
    );
    for i in 0..5000 {
        wide.push_str(&format!("--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"));
    }
    wide.push_str("--b--\r\n");
    let answer = app.send(OWNER, &[&note.reply_address()], &wide).await;
    assert!(answer.starts_with("552") || answer.starts_with("554") || answer.starts_with("550"), "{answer}");
    let mut deep =
        String::from("From: olivia@acme.example\r\nSubject: Re: x\r\nMessage-ID: <bomb-2@x>\r\nMIME-Version: 1.0\r\n");
    for i in 0..200 {
        deep.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"));
    }
    deep.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
    let answer = app.send(OWNER, &[&note.reply_address()], &deep).await;
    assert!(answer.starts_with('2') || answer.starts_with('5'), "a clear answer: {answer}");
    let mut other = app.smtp().await;
    other.expect("EHLO still.up", "250").await;
    app.stop().await;
}

#[tokio::test]
async fn header_injection_through_names_and_subjects_goes_nowhere() {
    let app = spawn_app().await;
    let w = app.world("elite", None).await;
    let evil = "Help\r\nBcc: victim@evil.example\r\nX-Injected: 1";
    let ticket = app
        .create(
            "/tickets",
            json!({"site_id": w.site, "customer_id": w.owner, "type": "Bug", "subject": evil, "description": "D"}),
        )
        .await;
    assert!(!ticket["subject"].as_str().unwrap().contains('\n'));
    let (status, _) =
        app.post("/users", json!({"email": "x@y.example\r\nBcc: v@evil.example", "name": "X", "role": "member"})).await;
    assert_eq!(status, 400);
    let mails = app.wait_for_mail(3).await;
    for mail in mails {
        assert!(mail.header("Bcc").is_empty() && mail.header("X-Injected").is_empty(), "{:?}", mail.headers);
    }
    app.stop().await;
}

#[tokio::test]
async fn one_address_can_not_take_every_connection() {
    let app = spawn_app_with(|c| c.limits.max_connections_per_ip = 2).await;
    let _a = app.smtp().await;
    let _b = app.smtp().await;
    let third = app.smtp().await;
    assert!(third.greeting.starts_with("421 4.7.0"), "{}", third.greeting);
    drop(_a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again = app.smtp().await;
    assert!(again.greeting.starts_with("220"), "a slot frees when a connection ends: {}", again.greeting);
    app.stop().await;
}

#[tokio::test]
async fn guessing_tokens_gets_slower() {
    let app = spawn_app().await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO guesser.example", "250").await;
    smtp.expect("MAIL FROM:<g@guesser.example>", "250").await;
    let started = std::time::Instant::now();
    for i in 0..6 {
        let reply = smtp.cmd(&format!("RCPT TO:<reply+aeaqcaaaaaaaaaaaaaaaaaaa{i}q@{DOMAIN}>")).await;
        assert!(reply.starts_with("550 5.1.1"), "{reply}");
    }
    // Three free guesses, then 250 + 500 + 1000 ms of tarpit at least.
    assert!(started.elapsed() >= std::time::Duration::from_millis(1700), "{:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_mail_loop_is_deferred_after_the_hourly_cap() {
    let app = spawn_app_with(|c| c.limits.max_messages_per_sender_per_hour = 3).await;
    let note = chat_note(&app).await;
    for i in 0..3 {
        let reply = reply_mail(OWNER, &note.reply_address(), "x", &format!("loop-{i}@acme.example"), "", "again");
        assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    }
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "loop-9@acme.example", "", "again");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("451 4.7.1"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn rotated_keys_keep_old_tokens_working_and_expired_tokens_are_refused() {
    let app = spawn_app().await;
    let note = chat_note(&app).await;
    let out = app.command(&["keys", "rotate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let app = app.restart().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "after-rotation@acme.example", "", "Still mine");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "a token of the old key still verifies: {answer}");
    let list = app.command(&["keys", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("key 2: signs new tokens") && list.contains("key 1: verifies"), "{list}");

    // A genuine token, issued 200 days ago, is past the 180-day lifetime.
    let (store, signer) = mailgate::app::open_store(&app.config()).await.unwrap();
    let token = signer.verify(&note.token()).unwrap();
    let old = signer.sign_issued_days_ago(token, 200);
    store.close().await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO old.example", "250").await;
    smtp.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    let reply = smtp.expect(&format!("RCPT TO:<reply+{old}@{DOMAIN}>"), "550 5.1.1").await;
    assert!(reply.contains("expired"), "{reply}");
    app.stop().await;
}

/// The id of the key that signed a reply token (its second byte).
fn key_of(token: &str) -> u8 {
    data_encoding::BASE32_NOPAD.decode(token.to_ascii_uppercase().as_bytes()).unwrap()[1]
}

/// `mailgate ARGS` on the app's data: (success, stdout + stderr).
fn keys_command(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = app.command(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn a_stolen_key_is_rotated_out_and_retired_on_the_running_server_without_a_restart() {
    let app = spawn_app().await;
    let (w, chat_id, note) = app.chat_with_note().await;
    let stolen_address = note.reply_address();
    assert_eq!(key_of(&note.token()), 1);

    let (ok, said) = keys_command(&app, &["keys", "rotate"]);
    assert!(ok && said.contains("token key 2 added"), "{said}");
    let (ok, said) = keys_command(&app, &["keys", "retire", "2"]);
    assert!(!ok && said.contains("rotate` first"), "the newest key is never retired: {said}");

    // The running server signs with key 2 within seconds: new notifications carry it.
    let mut mails = 3;
    let new_address = loop {
        let text = format!("Answer {mails}");
        app.create(&format!("/chats/{chat_id}/messages"), serde_json::json!({"author_id": w.agent, "text": text}))
            .await;
        mails += 1;
        let note = app.wait_for_mail(mails).await.pop().unwrap();
        if key_of(&note.token()) == 2 {
            break note.reply_address();
        }
        assert!(mails < 40, "the running server never signed with the rotated key");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };

    let (ok, said) = keys_command(&app, &["keys", "retire", "1"]);
    assert!(ok && said.contains("token key 1 retired"), "{said}");
    // Within seconds, the stolen key's addresses are refused, with a sentence for the customer.
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO acme.example", "250").await;
    let mut tries = 0;
    let refusal = loop {
        smtp.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
        let answer = smtp.cmd(&format!("RCPT TO:<{stolen_address}>")).await;
        smtp.expect("RSET", "250").await;
        if !answer.starts_with("250") {
            break answer;
        }
        tries += 1;
        assert!(tries < 60, "the running server still takes the retired key's addresses");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert!(refusal.starts_with("550 5.7.1"), "{refusal}");
    assert!(refusal.contains("answer the latest notification"), "{refusal}");
    // The new key's address still works, and so does the whole reply.
    let reply = reply_mail(OWNER, &new_address, "x", "after-retirement@acme.example", "", "Still here");
    let answer = app.send(OWNER, &[&new_address], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (ok, list) = keys_command(&app, &["keys", "list"]);
    assert!(ok && list.contains("key 1: retired") && list.contains("key 2: signs new tokens"), "{list}");
    let (ok, said) = keys_command(&app, &["keys", "retire", "1"]);
    assert!(!ok && said.contains("already retired"), "{said}");
    // A restart keeps it retired (and makes no new key 1).
    let app = app.restart().await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO acme.example", "250").await;
    smtp.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    smtp.expect(&format!("RCPT TO:<{stolen_address}>"), "550 5.7.1").await;
    app.stop().await;
}

#[tokio::test]
async fn starttls_with_a_real_tls_client() {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let keys = tempfile::tempdir().unwrap();
    let (cert, key) = (keys.path().join("cert.pem"), keys.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (c, k) = (cert.clone(), key.clone());
    let app = spawn_app_with(move |config| config.tls = Some((c, k))).await;
    let note = chat_note(&app).await;

    // STARTTLS is offered, and refused inside a transaction.
    let mut smtp = app.smtp().await;
    let ehlo = smtp.expect("EHLO tls.example", "250").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    smtp.expect("MAIL FROM:<a@example.org>", "250").await;
    smtp.expect("STARTTLS", "503").await;

    // lettre, with our certificate as its only root, requires TLS and sends a reply.
    let pem = std::fs::read(&cert).unwrap();
    let tls = TlsParameters::builder("localhost".to_owned())
        .add_root_certificate(Certificate::from_pem(&pem).unwrap())
        .build_rustls()
        .unwrap();
    let client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(app.smtp.port())
        .tls(Tls::Required(tls))
        .build();
    let envelope =
        lettre::address::Envelope::new(Some(OWNER.parse().unwrap()), vec![note.reply_address().parse().unwrap()])
            .unwrap();
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "tls-1@acme.example", "", "Sent over TLS");
    let response = client.send_raw(&envelope, reply.as_bytes()).await.expect("delivered over STARTTLS");
    assert!(response.is_positive());
    let texts: Vec<String> =
        app.messages("/chats/1").await.iter().map(|m| m["text"].as_str().unwrap_or("").to_owned()).collect();
    assert!(texts.iter().any(|t| t == "Sent over TLS"), "{texts:?}");

    // Commands pipelined after STARTTLS were sent in the clear: they are dropped, not run.
    let mut raw = tokio::net::TcpStream::connect(app.smtp).await.unwrap();
    let mut greeting = vec![0u8; 512];
    let _ = tokio::io::AsyncReadExt::read(&mut raw, &mut greeting).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut raw, &mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.contains("220 2.0.0 Ready to start TLS") && !answer.contains("2.1.0"), "{answer}");
    drop(raw);
    app.stop().await;
}

#[tokio::test]
async fn a_200_mb_message_is_read_to_its_end_and_refused() {
    let app = spawn_app().await;
    let note = chat_note(&app).await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO big.example", "250").await;
    smtp.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    smtp.expect(&format!("RCPT TO:<{}>", note.reply_address()), "250").await;
    smtp.expect("DATA", "354").await;
    smtp.write(format!("From: {OWNER}\r\nSubject: huge\r\nMessage-ID: <huge@acme.example>\r\n\r\n").as_bytes()).await;
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk: String = std::iter::repeat_n(line.as_str(), 1024).collect(); // 1 MiB
    for _ in 0..200 {
        smtp.write(chunk.as_bytes()).await;
    }
    smtp.write(b".\r\n").await;
    let answer = smtp.read_reply().await;
    assert!(answer.starts_with("552 5.3.4"), "{answer}");
    smtp.expect("NOOP", "250").await;
    assert_eq!(app.messages("/chats/1").await.len(), 2, "nothing stored");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_at_once_get_clear_answers() {
    let app = spawn_app_with(|c| {
        c.limits.max_connections = 512;
        c.limits.max_connections_per_ip = 2000;
        c.limits.max_connections_per_network = 2000;
    })
    .await;
    let addr = app.smtp;
    // A thousand sockets held open at the same time, then every greeting read.
    let greetings = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut streams: Vec<std::net::TcpStream> =
            (0..1000).map(|_| std::net::TcpStream::connect(addr).expect("the listener takes the connection")).collect();
        let mut counts = (0, 0);
        // Read through references: every socket stays open until all are
        // counted (closing one would free a session for a connection the
        // server has not accepted yet, and the count would drift).
        for stream in &mut streams {
            stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            let mut buf = [0u8; 128];
            let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("an answer within 20 s (after {counts:?}): {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("220") {
                counts.0 += 1;
            } else {
                assert!(text.starts_with("421 4.3.2"), "{text}");
                counts.1 += 1;
            }
        }
        counts
    })
    .await
    .unwrap();
    // Every connection got a clear answer: a session, or 421 4.3.2 once the
    // cap is reached and no session can be closed to make room (idle ones
    // are, after two seconds; see smtp::connections_beyond_the_limit_get_421).
    assert_eq!(greetings.0 + greetings.1, 1000);
    assert!(greetings.0 >= 512, "{greetings:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO after.flood", "250").await;
    app.stop().await;
}

#[tokio::test]
async fn a_stranger_on_a_token_can_be_held_for_an_agent_instead_of_refused() {
    let app = spawn_app_with(|c| c.auth.hold_not_allowed = true).await;
    let note = chat_note(&app).await;
    let reply = reply_mail(STRANGER, &note.reply_address(), "x", "stranger-held@x", "", "Let me in");
    let answer = app.send(STRANGER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, held) = app.get("/held").await;
    assert!(held[0]["reason"].as_str().unwrap().contains("may not write"), "{held}");
    assert_eq!(app.messages("/chats/1").await.len(), 2, "not posted");
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_header_section_is_refused() {
    let app = spawn_app().await;
    let note = chat_note(&app).await;
    let long = format!("X-Padding: {}\r\n", "p".repeat(900)).repeat(400); // ~360 KB of headers in 400 fields
    let reply = format!("From: {OWNER}\r\nSubject: Re: x\r\nMessage-ID: <hdr@x>\r\n{long}\r\nbody\r\n");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("552 5.3.4") && answer.contains("header section"), "{answer}");
    app.stop().await;
}

/// With `resolver = "static"` the records given are the whole of DNS: a
/// domain without any is "no record" (DMARC none, the reply posted), not a
/// failed lookup that would defer every reply with a 451 (which the tests'
/// mock DNS once hid: a release build deferred them all).
#[tokio::test]
async fn with_the_static_resolver_a_domain_without_records_has_none_and_its_reply_is_posted() {
    // acme.example, the customer's domain, publishes nothing at all.
    let app = spawn_app_with(|c| c.auth.records = HashMap::new()).await;
    let note = chat_note(&app).await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "no-records-1@acme.example", "", "Plain reply");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250 2.0.0 Message added"), "{answer}");
    let (_, log) = app.get("/inbound-log").await;
    let auth = log[0]["auth"].as_str().unwrap();
    assert!(auth.contains("spf=none") && auth.contains("dmarc=none"), "{}", log[0]);
    assert!(!auth.contains("temperror"), "{}", log[0]);
    app.stop().await;
}

/// DNS that fails is never "no record": acme.example's DMARC policy
/// (`p=reject`) cannot be read, and a forged reply (SPF fails: 127.0.0.1 is
/// not acme.example's sender) is deferred, not posted as if acme.example
/// published no policy.
#[tokio::test]
async fn a_dmarc_policy_dns_fails_to_give_is_a_temporary_error_not_no_policy() {
    let server =
        name_server_failing_but(HashMap::from([("acme.example".to_owned(), "v=spf1 ip4:192.0.2.1 -all".to_owned())]))
            .await;
    let app = spawn_app_with(move |c| {
        c.auth.resolver = server.to_string();
        c.auth.records = HashMap::new();
    })
    .await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "servfail-1@acme.example", "", "I am Olivia, honest");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("451 4.4.3 "), "{answer}");
    let (_, log) = app.get("/inbound-log").await;
    let auth = log[0]["auth"].as_str().unwrap();
    assert!(auth.contains("spf=fail") && auth.contains("dmarc=temperror"), "{}", log[0]);
    assert_eq!(log[0]["decision"], "deferred", "{}", log[0]);
    let (_, messages) = app.get(&format!("/chats/{chat_id}/messages")).await;
    assert!(!messages.to_string().contains("I am Olivia, honest"), "{messages}");
    app.stop().await;
}

/// An emergency ticket by mail (`downtime@`, which pages on-call) from a
/// customer whose domain DNS cannot check right now is deferred, so the
/// sending server tries again, not refused for good.
#[tokio::test]
async fn an_emergency_ticket_while_dns_fails_is_deferred_not_refused() {
    let server = name_server_failing_but(HashMap::new()).await;
    let app = spawn_app_with(move |c| {
        c.auth.resolver = server.to_string();
        c.auth.records = HashMap::new();
    })
    .await;
    app.world("elite", None).await;
    let emergency = format!("downtime@{DOMAIN}");
    let message = format!(
        "From: {OWNER}\r\nTo: {emergency}\r\nSubject: Site down\r\nMessage-ID: <dns-down-1@acme.example>\r\n\r\nHelp\r\n"
    );
    let answer = app.send(OWNER, &[&emergency], &message).await;
    assert!(answer.starts_with("451 4.4.3 "), "{answer}");
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert_eq!(log[0]["decision"], "deferred", "{}", log[0]);
    assert!(log[0]["auth"].as_str().unwrap().contains("temperror"), "{}", log[0]);
    app.stop().await;
}

/// Over LMTP (the mail server in front hands the reply on) while DNS fails:
/// the recipient gets 451 4.4.3, so the mail server keeps the mail and
/// retries, and nothing is posted.
#[tokio::test]
async fn over_lmtp_a_reply_while_dns_fails_gets_451_for_its_recipient() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let server = name_server_failing_but(HashMap::new()).await;
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("lmtp.sock");
    let path = socket.clone();
    let app = spawn_app_with(move |c| {
        c.auth.resolver = server.to_string();
        c.auth.records = HashMap::new();
        c.lmtp_listen = Some(mailgate::config::ListenAddr::Unix(path));
    })
    .await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply_to = note.reply_address();
    let mail = reply_mail(OWNER, &reply_to, "Hello", "lmtp-dns@acme.example", "", "Over LMTP without DNS");
    let (read, mut write) = tokio::net::UnixStream::connect(&socket).await.unwrap().into_split();
    let mut read = tokio::io::BufReader::new(read);
    let commands = format!("LHLO relay.example\r\nMAIL FROM:<{OWNER}>\r\nRCPT TO:<{reply_to}>\r\nDATA\r\n");
    write.write_all(commands.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    let mut line = String::new();
    while answers.len() < 5 {
        line.clear();
        read.read_line(&mut line).await.unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            answers.push(line.clone());
        }
    }
    assert!(answers[4].starts_with("354"), "{answers:?}");
    write.write_all(&dot_stuff(&mail)).await.unwrap();
    write.write_all(b".\r\n").await.unwrap();
    line.clear();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("451 4.4.3"), "the recipient's answer: {line}");
    let texts = app.texts(&format!("/chats/{chat_id}")).await;
    assert!(!texts.iter().any(|t| t == "Over LMTP without DNS"), "{texts:?}");
    app.stop().await;
}
