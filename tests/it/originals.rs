//! Every message answered 250 is kept as it arrived: byte for byte, on both
//! backends, with what extraction removed, until its retention ends.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Sends `raw` (CRLF lines, not yet dot-stuffed) byte for byte; returns the answer to DATA.
async fn send_raw(app: &TestApp, from: &str, to: &str, raw: &[u8]) -> String {
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example", "250").await;
    smtp.expect(&format!("MAIL FROM:<{from}>"), "250").await;
    smtp.expect(&format!("RCPT TO:<{to}>"), "250").await;
    smtp.expect("DATA", "354").await;
    let mut stuffed = Vec::with_capacity(raw.len() + 64);
    for line in raw.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    smtp.write(&stuffed).await;
    smtp.write(b".\r\n").await;
    smtp.read_reply().await
}

/// The newest message of chat `chat`.
async fn last_message(app: &TestApp, chat: i64) -> Value {
    app.messages(&format!("/chats/{chat}")).await.pop().expect("a message")
}

#[tokio::test]
async fn an_8bit_reply_comes_back_byte_for_byte_with_what_extraction_removed() {
    let app = spawn_app().await;
    let (_, chat, note) = app.chat_with_note().await;
    let mut raw = format!(
        "From: Olivia Owner <{OWNER}>\r\nTo: {}\r\nSubject: Re: caf\u{e9} \u{2014} UTF-8 in a header\r\n\
         Message-ID: <eight-bit@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        note.reply_address()
    )
    .into_bytes();
    raw.extend_from_slice(
        b"Voil\xe0, it works again.\r\n.a line that starts with a dot\r\n  trailing spaces  \r\n\r\n",
    );
    raw.extend_from_slice(
        b"On Sun, 22 Nov 2026 at 09:00, Support <support@support.example.test> wrote:\r\n> Hello\r\n",
    );
    let answer = send_raw(&app, OWNER, &note.reply_address(), &raw).await;
    assert!(answer.starts_with("250"), "{answer}");
    let message = last_message(&app, chat).await;
    let id = message["id"].as_i64().unwrap();
    assert_eq!(message["raw"], format!("/api/v1/messages/{id}/raw"));
    let (status, bytes) = app.get_bytes(&format!("/messages/{id}/raw")).await;
    assert_eq!(status, 200);
    assert!(bytes == raw, "the original differs:\n{}", String::from_utf8_lossy(&bytes));

    let (status, detail) = app.get(&format!("/messages/{id}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["original"], "kept");
    assert!(detail["text"].as_str().unwrap().starts_with("Voilà, it works again."), "{detail}");
    let quoted = detail["quoted"].as_str().unwrap();
    assert!(quoted.contains("wrote:") && quoted.contains("> Hello"), "{detail}");
    assert_eq!(detail["cuts"][0]["what"], "history", "{detail}");

    // A message written in the Dashboard has no mail behind it.
    let first = app.messages(&format!("/chats/{chat}")).await[0]["id"].as_i64().unwrap();
    let (status, detail) = app.get(&format!("/messages/{first}")).await;
    assert_eq!((status, &detail["original"], &detail["quoted"]), (200, &json!("none"), &Value::Null));
    assert_eq!(app.get_bytes(&format!("/messages/{first}/raw")).await.0, 404);
}

#[tokio::test]
async fn a_20_mb_message_comes_back_byte_for_byte() {
    let app = spawn_app().await;
    let (_, chat, note) = app.chat_with_note().await;
    // 15 MB of varied bytes, base64 in lines of 76: about 20 MB of mail.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let content: Vec<u8> = (0..15_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let encoded = data_encoding::BASE64.encode(&content);
    let mut body = String::with_capacity(encoded.len() * 78 / 76 + 1024);
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).unwrap());
        body.push_str("\r\n");
    }
    let raw = format!(
        "From: {OWNER}\r\nTo: {}\r\nSubject: Re: the dump\r\nMessage-ID: <big@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe dump.\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"dump.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {body}--b--\r\n",
        note.reply_address()
    );
    assert!(raw.len() > 20_000_000, "{}", raw.len());
    let answer = send_raw(&app, OWNER, &note.reply_address(), raw.as_bytes()).await;
    assert!(answer.starts_with("250"), "{answer}");
    let id = last_message(&app, chat).await["id"].as_i64().unwrap();
    let (status, bytes) = app.get_bytes(&format!("/messages/{id}/raw")).await;
    assert_eq!((status, bytes.len()), (200, raw.len()));
    assert!(bytes == raw.as_bytes(), "the 20 MB original differs");
}

#[tokio::test]
async fn mail_answered_250_and_not_posted_is_kept_too() {
    let app = spawn_app().await;
    let (_, _, note) = app.chat_with_note().await;
    let auto = reply_mail(
        OWNER,
        &note.reply_address(),
        "x",
        "ooo@acme.example",
        "Auto-Submitted: auto-replied\r\n",
        "I am away.",
    );
    assert!(app.send(OWNER, &[&note.reply_address()], &auto).await.starts_with("250"));
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert_eq!(log[0]["decision"], "dropped", "{log}");
    let id = log[0]["id"].as_i64().unwrap();
    let (status, bytes) = app.get_bytes(&format!("/inbound-log/{id}/raw")).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8(bytes).unwrap().contains("I am away."));

    // A refused message is not kept: its sender has it.
    let refused = "From: x@elsewhere.example\r\nSubject: hi\r\n\r\nNew chat?\r\n";
    assert!(app.send("x@elsewhere.example", &[&format!("support@{DOMAIN}")], refused).await.starts_with("550"));
    let (_, log) = app.get("/inbound-log?limit=1").await;
    let id = log[0]["id"].as_i64().unwrap();
    assert_eq!(app.get_bytes(&format!("/inbound-log/{id}/raw")).await.0, 404);
}

#[tokio::test]
async fn a_forwarded_alert_keeps_what_it_forwards() {
    let app = spawn_app().await;
    let (_, chat, note) = app.chat_with_note().await;
    let message = format!(
        "From: {OWNER}\r\nTo: {}\r\nSubject: Fwd: [ALERT] disk full on web-3\r\nMessage-ID: <fwd-1@acme.example>\r\n\r\n\
         This came in overnight, is it related?\r\n\r\n---------- Forwarded message ---------\r\n\
         From: monitor <monitor@acme.example>\r\nDate: Sun, 22 Nov 2026 at 03:12\r\nSubject: [ALERT] disk full on web-3\r\n\r\n\
         /var is 100% full\r\nlargest: /var/log/php-fpm.log (41 GB)\r\n",
        note.reply_address()
    );
    assert!(app.send(OWNER, &[&note.reply_address()], &message).await.starts_with("250"));
    let text = last_message(&app, chat).await["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("This came in overnight, is it related?"), "{text}");
    assert!(text.contains("/var is 100% full") && text.contains("php-fpm.log (41 GB)"), "{text}");
}

#[tokio::test]
async fn originals_past_retention_are_purged_and_the_rest_kept() {
    let app = spawn_app_with(|c| {
        c.retention.raw = Some(Duration::from_millis(1500));
        c.retention.purge_interval = Duration::from_millis(300);
        c.auth.hold_not_allowed = true;
    })
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "old@acme.example", "", "Soon gone.");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    let id = last_message(&app, chat).await["id"].as_i64().unwrap();
    let held = reply_mail(STRANGER, &note.reply_address(), "x", "held@x", "", "Waiting for an admin");
    assert!(app.send(STRANGER, &[&note.reply_address()], &held).await.starts_with("250"));
    assert_eq!(app.get_bytes(&format!("/messages/{id}/raw")).await.0, 200);
    let mut status = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.get_bytes(&format!("/messages/{id}/raw")).await.0;
        if status == 410 {
            break;
        }
    }
    assert_eq!(status, 410, "the original outlived its retention");
    let (_, detail) = app.get(&format!("/messages/{id}")).await;
    assert_eq!((&detail["original"], &detail["text"]), (&json!("purged"), &json!("Soon gone.")), "{detail}");
    // Mail still waiting for an admin is never purged.
    let (_, items) = app.admin_get("/held").await;
    let held_id = items[0]["id"].as_i64().unwrap();
    let (status, bytes) = app.get_bytes(&format!("/admin/held/{held_id}/raw")).await;
    assert_eq!(status, 401, "the held queue is the admin's");
    let admin = app.admin_token();
    let response = app.http.get(format!("{}/admin/held/{held_id}/raw", app.base)).bearer_auth(admin).send().await;
    let response = response.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{bytes:?}");
    assert!(String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap().contains("Waiting for an admin"));
}

#[tokio::test]
async fn the_admin_stats_report_what_originals_take() {
    let app = spawn_app().await;
    let (_, _, note) = app.chat_with_note().await;
    let text = "The same words again and again. ".repeat(100);
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "stats@acme.example", "", &text);
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    let (status, stats) = app.admin_get("/stats?storage=true").await;
    assert_eq!(status, 200, "{stats}");
    let originals = &stats["originals"];
    assert_eq!(originals["count"], 1, "{stats}");
    let (raw, stored) = (originals["raw_bytes"].as_i64().unwrap(), originals["stored_bytes"].as_i64().unwrap());
    assert!(raw > 3200 && stored < raw / 4, "lz4 should shrink repeated text: {stats}");
}
