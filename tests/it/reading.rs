//! Issue 34: a reply that brings our own notification back without quote
//! marks (re-wrapped, its marker lost) has that text removed by matching
//! what was sent, and `explain` says so.

use crate::support::*;

/// The words of `text` wrapped again at `width` columns, as a client that
/// re-flows a quote does, without quote marks and without our marker line.
fn rewrapped(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.lines().filter(|l| !l.contains("Reply above this line")).flat_map(str::split_whitespace) {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out + &line + "\r\n"
}

/// Waits until a notification to `address` is recorded as sent.
async fn sent_to(app: &TestApp, address: &str) {
    for _ in 0..200 {
        let (_, items) = app.get("/outbox?status=sent").await;
        let items = items.as_array().cloned().unwrap_or_default();
        if items.iter().any(|i| i["to_address"] == address || i["to"] == address) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no notification to {address} recorded as sent");
}

#[tokio::test]
async fn our_notification_coming_back_unquoted_is_removed_by_matching_it() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    let chat = app
        .create("/chats", serde_json::json!({"site_id": w.site, "customer_id": w.owner, "message": "Export is empty"}))
        .await;
    let chat_id = chat["id"].as_i64().unwrap();
    let text =
        "We restarted the export job on the live server. Could you check whether last night's file is complete now?";
    app.create(&format!("/chats/{chat_id}/messages"), serde_json::json!({"author_id": w.agent, "text": text})).await;
    let note = app.wait_for_mail(3).await.remove(2);
    assert_eq!(note.to(), OWNER);
    assert!(note.body.contains("Could you check whether"), "{}", note.body);
    // The mail file is written before its delivery is recorded with its text.
    sent_to(&app, OWNER).await;

    // The notification as some clients return it: below the answer, no quote
    // marks, no marker, wrapped at another width.
    let reply = format!(
        "From: Olivia Owner <{OWNER}>\r\nTo: {}\r\nSubject: Re: {}\r\nMessage-ID: <echo-1@acme.example>\r\n\
         Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Yes, the file is complete now.\r\n\r\nThanks,\r\nOlivia\r\n\r\n{}",
        note.reply_address(),
        note.header("Subject"),
        rewrapped(&note.body, 47)
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    assert_eq!(messages.last().unwrap()["text"], "Yes, the file is complete now.\n\nThanks,\nOlivia");

    // explain names the notification it matched and how much went.
    let id = messages.last().unwrap()["id"].as_i64().unwrap();
    let out = tokio::process::Command::from(app.command(&["explain", &id.to_string()])).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(regex::Regex::new(r"removed \d+ lines matching notification \d+").unwrap().is_match(&stdout), "{stdout}");

    // A reply that only repeats a sentence of ours in its own line keeps it.
    let own = format!(
        "From: Olivia Owner <{OWNER}>\r\nTo: {}\r\nSubject: Re: {}\r\nMessage-ID: <echo-2@acme.example>\r\n\
         Date: Mon, 07 Dec 2026 10:05:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         You asked whether last night's file is complete now: it is not, sorry.\r\n",
        note.reply_address(),
        note.header("Subject"),
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &own).await;
    assert!(answer.starts_with("250"), "{answer}");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    assert_eq!(
        messages.last().unwrap()["text"],
        "You asked whether last night's file is complete now: it is not, sorry."
    );
    app.stop().await;
}

/// The kept text of a notification goes when its reply address expires:
/// after that, the purge has cleared it, and nothing is matched any more.
#[tokio::test]
async fn a_notifications_text_is_kept_only_as_long_as_its_reply_address() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let app = start_in(dir, url.clone(), |c| {
        c.retention.notification_text = Some(std::time::Duration::from_millis(1500));
        c.retention.purge_interval = std::time::Duration::from_millis(300);
    })
    .await;
    let (_, _, note) = app.chat_with_note().await;
    assert!(!note.reply_address().is_empty());
    sent_to(&app, OWNER).await;
    let kept = "SELECT COUNT(*) FROM outbox WHERE sent_text IS NOT NULL";
    assert!(query_i64(&url, kept).await >= 1, "the notification's text is kept");
    let mut left = 1;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = query_i64(&url, kept).await;
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "the text outlived its reply address");
    app.stop().await;
}
