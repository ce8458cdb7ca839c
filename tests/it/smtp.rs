//! The SMTP listener as a client sees it: capabilities, pipelining,
//! dot-stuffing, limits, refusals and malformed input.

use crate::support::*;

use tokio::io::AsyncReadExt;

/// A chat with one agent notification sent to the owner; returns (chat id, notification).
async fn chat_with_notification(app: &TestApp) -> (i64, Eml) {
    let (_, chat_id, note) = app.chat_with_note().await;
    (chat_id, note)
}

#[tokio::test]
async fn greets_and_advertises_extensions() {
    let app = spawn_app().await;
    let mut smtp = app.smtp().await;
    assert!(smtp.greeting.starts_with("220 "), "{}", smtp.greeting);
    let ehlo = smtp.expect("EHLO client.example.org", "250").await;
    for ext in ["PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}: {ehlo}");
    }
    smtp.expect("NOOP", "250").await;
    smtp.expect("VRFY someone", "252").await;
    smtp.expect("RSET", "250").await;
    smtp.expect("QUIT", "221").await;
    app.stop().await;
}

#[tokio::test]
async fn refuses_commands_out_of_order_and_unknown_ones() {
    let app = spawn_app().await;
    let mut smtp = app.smtp().await;
    smtp.expect("MAIL FROM:<a@example.org>", "503").await;
    smtp.expect("EHLO client.example.org", "250").await;
    smtp.expect(&format!("RCPT TO:<support@{DOMAIN}>"), "503").await;
    smtp.expect("DATA", "503").await;
    smtp.expect("FROB the widget", "500").await;
    smtp.expect("MAIL FROM:a@example.org", "501").await;
    smtp.expect("MAIL FROM:<a@example.org>", "250").await;
    smtp.expect("MAIL FROM:<a@example.org>", "503").await;
    smtp.expect("DATA", "554").await; // no valid recipient yet
    smtp.expect("BDAT 10 LAST", "502").await;
    smtp.expect("STARTTLS", "502").await;
    smtp.expect("QUIT", "221").await;
    app.stop().await;
}

#[tokio::test]
async fn refuses_bad_recipients_at_rcpt_time() {
    let app = spawn_app().await;
    let (_, note) = chat_with_notification(&app).await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example.org", "250").await;
    smtp.expect("MAIL FROM:<olivia@acme.example>", "250").await;
    let relay = smtp.expect("RCPT TO:<someone@gmail.example>", "550 5.7.1").await;
    assert!(relay.to_lowercase().contains("relay denied"), "{relay}");
    smtp.expect(&format!("RCPT TO:<nobody@{DOMAIN}>"), "550 5.1.1").await;
    smtp.expect(&format!("RCPT TO:<reply+garbage@{DOMAIN}>"), "550 5.1.1").await;
    // Altered token: one character changed.
    let token = note.token();
    let mut altered = token.clone().into_bytes();
    altered[5] = if altered[5] == b'a' { b'b' } else { b'a' };
    let altered = String::from_utf8(altered).unwrap();
    smtp.expect(&format!("RCPT TO:<reply+{altered}@{DOMAIN}>"), "550 5.1.1").await;
    // Truncated token.
    smtp.expect(&format!("RCPT TO:<reply+{}@{DOMAIN}>", &token[..token.len() - 3]), "550 5.1.1").await;
    // The real one, in upper case (some systems change the case of local parts).
    smtp.expect(&format!("RCPT TO:<REPLY+{}@{}>", token.to_uppercase(), DOMAIN.to_uppercase()), "250").await;
    smtp.expect(&format!("RCPT TO:<postmaster@{DOMAIN}>"), "250").await;
    smtp.expect("QUIT", "221").await;
    drop(smtp);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, log) = app.get("/inbound-log").await;
    let entry = &log[0];
    assert_eq!(entry["decision"], "rejected", "{entry}");
    assert!(entry["rcpt_to"].as_str().unwrap().contains("someone@gmail.example"));
    app.stop().await;
}

#[tokio::test]
async fn pipelined_transaction_gets_every_reply_in_order() {
    let app = spawn_app().await;
    let (chat_id, note) = chat_with_notification(&app).await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example.org", "250").await;
    let message = reply_mail(OLIVIA, &note.reply_address(), "x", "pipe-1@acme.example", "", "Pipelined hello");
    let mut batch =
        format!("MAIL FROM:<{OLIVIA}>\r\nRCPT TO:<nobody@{DOMAIN}>\r\nRCPT TO:<{}>\r\nDATA\r\n", note.reply_address())
            .into_bytes();
    smtp.write(&batch).await;
    assert!(smtp.read_reply().await.starts_with("250"));
    assert!(smtp.read_reply().await.starts_with("550"));
    assert!(smtp.read_reply().await.starts_with("250"));
    assert!(smtp.read_reply().await.starts_with("354"));
    batch = dot_stuff(&message);
    batch.extend_from_slice(b".\r\nNOOP\r\nQUIT\r\n");
    smtp.write(&batch).await;
    assert!(smtp.read_reply().await.starts_with("250 2.0.0"));
    assert!(smtp.read_reply().await.starts_with("250"));
    assert!(smtp.read_reply().await.starts_with("221"));
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.last().unwrap()["text"], "Pipelined hello");
    app.stop().await;
}

const OLIVIA: &str = OWNER;

#[tokio::test]
async fn dot_stuffed_lines_come_back_unstuffed() {
    let app = spawn_app().await;
    let (chat_id, note) = chat_with_notification(&app).await;
    let text = "Steps:\r\n.htaccess was changed\r\n..and then\r\n.\r\nend";
    let message = format!("From: {OWNER}\r\nSubject: Re: x\r\nMessage-ID: <dots@acme.example>\r\n\r\n{text}\r\n");
    let answer = app.send(OWNER, &[&note.reply_address()], &message).await;
    assert!(answer.starts_with("250"), "{answer}");
    let last = app.messages(&format!("/chats/{chat_id}")).await.pop().unwrap();
    assert_eq!(last["text"], "Steps:\n.htaccess was changed\n..and then\n.\nend");
    app.stop().await;
}

#[tokio::test]
async fn large_messages_are_taken_and_oversized_ones_refused_after_reading_them() {
    let app = spawn_app_with(|c| c.limits.max_message_size = 200_000).await;
    let (chat_id, note) = chat_with_notification(&app).await;
    let line = "x".repeat(76);
    let big_body: String = std::iter::repeat_n(format!("{line}\r\n"), 2000).collect(); // ~156 KB
    let message =
        format!("From: {OWNER}\r\nSubject: Re: x\r\nMessage-ID: <big@acme.example>\r\n\r\nBig one\r\n{big_body}");
    let answer = app.send(OWNER, &[&note.reply_address()], &message).await;
    assert!(answer.starts_with("250"), "{answer}");
    assert!(
        app.messages(&format!("/chats/{chat_id}")).await.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .starts_with("Big one")
    );

    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example.org", "250").await;
    // Declared too large up front.
    smtp.expect(&format!("MAIL FROM:<{OWNER}> SIZE=300000"), "552 5.3.4").await;
    // Undeclared: the whole message is read, then refused, and the session goes on.
    let huge_body: String = std::iter::repeat_n(format!("{line}\r\n"), 4000).collect(); // ~312 KB
    let message = format!("From: {OWNER}\r\nSubject: Re: x\r\nMessage-ID: <huge@acme.example>\r\n\r\n{huge_body}");
    let answer = smtp.send(OWNER, &[&note.reply_address()], &message).await;
    assert!(answer.starts_with("552 5.3.4"), "{answer}");
    smtp.expect("NOOP", "250").await;
    smtp.expect("QUIT", "221").await;
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn too_many_recipients_are_refused() {
    let app = spawn_app_with(|c| c.limits.max_recipients = 3).await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example.org", "250").await;
    smtp.expect("MAIL FROM:<a@example.org>", "250").await;
    for _ in 0..3 {
        smtp.expect(&format!("RCPT TO:<support@{DOMAIN}>"), "250").await;
    }
    smtp.expect(&format!("RCPT TO:<support@{DOMAIN}>"), "452 4.5.3").await;
    app.stop().await;
}

#[tokio::test]
async fn garbage_input_gets_errors_then_the_door() {
    let app = spawn_app().await;
    let mut smtp = app.smtp().await;
    // Binary noise, NUL bytes, bare CR and an overlong line: errors, no crash.
    smtp.write(b"\x00\x01\x02\xff\xfe garbage\r\n").await;
    assert!(smtp.read_reply().await.starts_with('5'));
    smtp.write(b"EHLO a\rb\r\n").await;
    let _ = smtp.read_reply().await;
    smtp.write(format!("NOOP {}\r\n", "A".repeat(10_000)).as_bytes()).await;
    assert!(smtp.read_reply().await.starts_with("500"));
    let mut closed = false;
    for _ in 0..12 {
        smtp.write(b"BOGUS\r\n").await;
        let reply = smtp.read_reply().await;
        if reply.is_empty() || reply.contains("421") {
            closed = true;
            break;
        }
    }
    assert!(closed, "too many errors closes the session");
    // The server still serves others.
    let mut other = app.smtp().await;
    other.expect("EHLO client.example.org", "250").await;
    app.stop().await;
}

#[tokio::test]
async fn a_message_without_headers_is_held_with_its_bytes_never_lost() {
    let app = spawn_app().await;
    let (_, note) = chat_with_notification(&app).await;
    let body = "\r\n\r\njust a body without any header\r\n";
    let answer = app.send(OWNER, &[&note.reply_address()], body).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, held) = app.admin_get("/held").await;
    assert_eq!(held[0]["reason_code"], "reading_failed", "{held}");
    assert!(held[0]["reason"].as_str().unwrap().contains("could not read"), "{held}");
    // Blank lines before the header fields are damage other readers take in
    // their stride: such a reply is read and posted.
    let reply = format!(
        "\r\n  \r\nFrom: {OWNER}\r\nTo: {}\r\nSubject: Re: x\r\nMessage-ID: <blank-first@acme.example>\r\n\r\nLive only.\r\n",
        note.reply_address()
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250 2.0.0"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn silent_clients_are_dropped() {
    let app = spawn_app_with(|c| c.limits.command_timeout = std::time::Duration::from_millis(300)).await;
    let mut smtp = app.smtp().await;
    let reply = smtp.read_reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_get_421() {
    let app = spawn_app_with(|c| c.limits.max_connections = 2).await;
    // Two sessions working through transactions (NOOP alone is no progress).
    let mut a = app.smtp().await;
    let mut b = app.smtp().await;
    a.expect("EHLO a.example", "250").await;
    b.expect("EHLO b.example", "250").await;
    let read_greeting = || async {
        let mut stream = tokio::net::TcpStream::connect(app.smtp).await.unwrap();
        let mut buf = vec![0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        (stream, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // A third connection waits while both are busy, then is refused, or
    // takes the slot of one that has made no progress for two seconds.
    let busy = async {
        for _ in 0..20 {
            for client in [&mut a, &mut b] {
                client.expect("MAIL FROM:<olivia@acme.example>", "250").await;
                client.expect("RSET", "250").await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let ((_, refused), ()) = tokio::join!(read_greeting(), busy);
    assert!(refused.starts_with("421 4.3.2 Too many connections"), "{refused}");
    // Idle for two seconds, `a` gives up its slot to a newcomer.
    let ((_third, greeting), ()) = tokio::join!(read_greeting(), async {
        for _ in 0..40 {
            b.expect("MAIL FROM:<olivia@acme.example>", "250").await;
            b.expect("RSET", "250").await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    assert!(greeting.starts_with("220"), "{greeting}");
    let closed = a.read_reply().await;
    assert!(closed.starts_with("421 4.3.2 Every connection slot is taken"), "{closed}");
    app.stop().await;
}
