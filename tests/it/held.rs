//! The held queue as a workflow: held mail says nothing to its sender,
//! can be listed, opened, released into its thread once, discarded (and is
//! gone after retention) or answered with the refusal notice.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// An instance that holds mail from senders who may not write in a thread,
/// a chat, and a stranger's message to it held: (app, chat id, held id).
async fn with_held_stranger(tweak: impl FnOnce(&mut mailgate::config::Config)) -> (TestApp, i64, i64) {
    let app = spawn_app_with(|c| {
        c.auth.hold_not_allowed = true;
        tweak(c);
    })
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let reply = reply_mail(STRANGER, &note.reply_address(), "x", "stranger@elsewhere.example", "", "Please let me in");
    let answer = app.send(STRANGER, &[&note.reply_address()], &reply).await;
    assert_eq!(answer.trim(), "250 2.0.0 Message received; it is held for review");
    let (status, items) = app.admin_get("/held").await;
    assert_eq!(status, 200, "{items}");
    (app, chat, items[0]["id"].as_i64().unwrap())
}

#[tokio::test]
async fn held_mail_tells_the_sender_nothing_about_the_thread() {
    let (app, chat, id) = with_held_stranger(|_| {}).await;
    let (_, log) = app.get("/inbound-log?limit=1").await;
    let answer = log[0]["smtp_reply"].as_str().unwrap();
    assert!(!answer.contains("chat") && !answer.contains(&chat.to_string()), "{answer}");
    // The admin sees why, with the reason code and the thread.
    let (status, item) = app.admin_get(&format!("/held/{id}")).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(
        (&item["reason_code"], &item["status"], &item["thread_id"]),
        (&json!("not_allowed"), &json!("held"), &json!(chat))
    );
    assert!(item["reason"].as_str().unwrap().contains("may not write"), "{item}");
    assert!(item["headers"].as_array().unwrap().iter().any(|h| h[0] == "subject"), "{item}");
    let explanation = &item["explanation"];
    assert!(explanation["authorization"].as_str().unwrap().starts_with("denied"), "{explanation}");
    assert_eq!(explanation["now"]["decision"], "held", "{explanation}");
    // Filters.
    assert_eq!(app.admin_get("/held?reason=dmarc_fail").await.1, json!([]));
    assert_eq!(app.admin_get("/held?sender=elsewhere").await.1.as_array().unwrap().len(), 1);
    // The Dashboard token does not reach the admin's queue.
    assert_eq!(app.get(&format!("/admin/held/{id}")).await.0, 401);
}

#[tokio::test]
async fn a_released_message_lands_in_its_thread_exactly_once() {
    let (app, chat, id) = with_held_stranger(|_| {}).await;
    let before = app.messages(&format!("/chats/{chat}")).await.len();
    let (status, released) = app.admin_post(&format!("/held/{id}/release"), json!({"by": "alice"})).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["thread_id"], chat);
    let messages = app.messages(&format!("/chats/{chat}")).await;
    assert_eq!(messages.len(), before + 1);
    let last = messages.last().unwrap();
    assert_eq!((&last["text"], &last["author"]["email"]), (&json!("Please let me in"), &json!(STRANGER)));
    assert_eq!(last["raw"], format!("/api/v1/messages/{}/raw", last["id"]));
    // Recorded: who, when, which message; a second release is refused.
    let (_, item) = app.admin_get(&format!("/held/{id}")).await;
    assert_eq!((&item["status"], &item["acted_by"]), (&json!("released"), &json!("alice")));
    assert_eq!(item["released_message"], last["id"]);
    let (status, again) = app.admin_post(&format!("/held/{id}/release"), json!({})).await;
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].as_str().unwrap().contains("released already by alice"), "{again}");
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), before + 1);
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert_eq!(log[0]["decision"], "released", "{log}");
}

#[tokio::test]
async fn a_discarded_message_is_gone_after_retention() {
    let (app, _, id) = with_held_stranger(|c| {
        c.retention.held = Some(Duration::from_millis(500));
        c.retention.purge_interval = Duration::from_millis(200);
    })
    .await;
    // The name recorded is one line of at most 60 characters, whatever is sent.
    let by = format!("bob\r\nX-Injected: yes {}", "b".repeat(500));
    let (status, item) = app.admin_post(&format!("/held/{id}/discard"), json!({"by": by})).await;
    assert_eq!((status, &item["status"]), (200, &json!("discarded")), "{item}");
    let acted_by = item["acted_by"].as_str().unwrap_or_default();
    assert!(acted_by.starts_with("bob") && acted_by.chars().count() <= 60 && !acted_by.contains('\n'), "{acted_by}");
    let mut status = 200;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.admin_get(&format!("/held/{id}")).await.0;
        if status == 404 {
            break;
        }
    }
    assert_eq!(status, 404, "the discarded item outlived its retention");
    let (_, log) = app.get("/inbound-log?limit=5").await;
    let held_entry = log.as_array().unwrap().iter().find(|e| e["decision"] == "held").unwrap();
    let entry = held_entry["id"].as_i64().unwrap();
    assert_eq!(app.get_bytes(&format!("/inbound-log/{entry}/raw")).await.0, 410, "its mail went with it");
}

#[tokio::test]
async fn the_sender_can_be_answered_with_the_refusal_notice() {
    let (app, _, id) = with_held_stranger(|_| {}).await;
    let sent = app.read_outbox().len();
    let (status, item) = app.admin_post(&format!("/held/{id}/notice"), json!({})).await;
    assert_eq!((status, &item["status"], &item["acted_by"]), (200, &json!("noticed"), &json!("admin-api")), "{item}");
    let mail = app.wait_for_mail(sent + 1).await.pop().unwrap();
    assert_eq!(mail.to(), STRANGER);
    assert_eq!(app.admin_post(&format!("/held/{id}/discard"), json!({})).await.0, 409);
}

#[tokio::test]
async fn bulk_actions_report_each_item() {
    let (app, _, id) = with_held_stranger(|_| {}).await;
    let (status, results) = app.admin_post("/held/bulk", json!({"ids": [id, 999], "action": "discard"})).await;
    assert_eq!(status, 200, "{results}");
    assert_eq!((&results[0]["ok"], &results[1]["ok"]), (&json!(true), &json!(false)), "{results}");
    assert!(results[1]["error"].as_str().unwrap().contains("not found"), "{results}");
    let (status, _) = app.admin_post("/held/bulk", json!({"ids": [id], "action": "burn"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_attachment_too_large_to_keep_holds_the_message_and_release_says_so() {
    let app = spawn_app_with(|c| c.limits.max_message_size = 40 * 1024 * 1024).await;
    let (_, chat, note) = app.chat_with_note().await;
    let big = data_encoding::BASE64.encode(&vec![7u8; 21 * 1024 * 1024]);
    let message = format!(
        "From: {OWNER}\r\nTo: {}\r\nSubject: Re: logs\r\nMessage-ID: <huge@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe full log.\r\n\
         --b\r\nContent-Type: text/plain; name=\"huge.log\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{big}\r\n--b--\r\n",
        note.reply_address()
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &message).await;
    assert!(answer.starts_with("250") && answer.contains("held"), "{answer}");
    let (_, items) = app.admin_get("/held").await;
    assert_eq!(items[0]["reason_code"], "attachment_too_large", "{items}");
    let id = items[0]["id"].as_i64().unwrap();
    let (status, released) = app.admin_post(&format!("/held/{id}/release"), json!({})).await;
    assert_eq!(status, 200, "{released}");
    let text = app.messages(&format!("/chats/{chat}")).await.pop().unwrap()["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("The full log.") && text.contains("huge.log") && text.contains("too large"), "{text}");
}

#[tokio::test]
async fn the_cli_lists_shows_and_releases_held_mail() {
    let (app, chat, id) = with_held_stranger(|_| {}).await;
    let list = app.command(&["held", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && text.contains("not_allowed") && text.contains(STRANGER), "{text}");
    let show = app.command(&["held", "show", &id.to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success() && text.contains("4. thread") && text.contains("denied"), "{text}");
    let release = app.command(&["held", "release", &id.to_string(), "--by", "carol"]).output().unwrap();
    let text = String::from_utf8_lossy(&release.stdout);
    assert!(release.status.success() && text.contains(&format!("chat #{chat}")), "{text}");
    let again = app.command(&["held", "release", &id.to_string()]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("released already by carol"));
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.last().unwrap()["author"]["email"], STRANGER);
}

#[tokio::test]
async fn the_same_held_mail_delivered_again_is_the_same_item_and_its_original_is_kept_once() {
    let app = spawn_app_with(|c| c.auth.hold_not_allowed = true).await;
    let (_, _, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let reply = reply_mail(STRANGER, &to, "x", "twice@elsewhere.example", "", "Please let me in");
    // A sending server's retry after a lost answer: the same bytes, the same envelope.
    for _ in 0..2 {
        let answer = app.send(STRANGER, &[&to], &reply).await;
        assert_eq!(answer.trim(), "250 2.0.0 Message received; it is held for review");
    }
    let (_, items) = app.admin_get("/held").await;
    assert_eq!(items.as_array().map(Vec::len), Some(1), "one item: {items}");
    let (_, stats) = app.admin_get("/stats?storage=true").await;
    assert_eq!(stats["originals"]["count"], 1, "one original: {stats}");
    // Other bytes from the same sender are an item of their own.
    let other = reply_mail(STRANGER, &to, "x", "other@elsewhere.example", "", "Please let me in");
    assert!(app.send(STRANGER, &[&to], &other).await.starts_with("250"));
    assert_eq!(app.admin_get("/held").await.1.as_array().map(Vec::len), Some(2));
    app.stop().await;
}
