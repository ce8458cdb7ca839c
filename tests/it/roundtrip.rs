//! The whole loop: a notification goes out, the emailed reply lands in the
//! right chat or ticket, and the other side is told.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn chat_round_trip_by_email() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    let chat = app
        .create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "My site shows a 502"}))
        .await;
    let chat_id = chat["id"].as_i64().unwrap();
    // Opening the chat tells both agents.
    let mails = app.wait_for_mail(2).await;
    assert!(mails.iter().any(|m| m.to() == AGENT) && mails.iter().any(|m| m.to() == AGENT2));

    app.create(
        &format!("/chats/{chat_id}/messages"),
        json!({"author_id": w.agent, "text": "Which environment is affected?"}),
    )
    .await;
    let mails = app.wait_for_mail(3).await;
    let note = &mails[2];
    assert_eq!(note.to(), OWNER);
    assert!(note.body.contains("Which environment is affected?"), "{}", note.body);
    assert!(note.reply_address().starts_with("reply+") && note.reply_address().ends_with(&format!("@{DOMAIN}")));
    assert!(!note.header("Message-ID").contains(&note.token()), "the Message-ID tells nothing of the token");
    assert!(note.body.contains(&format!("[ref:{}]", note.token())), "body carries the reference marker");
    assert_eq!(note.header("Auto-Submitted"), "auto-generated");
    assert!(note.header("Subject").contains(&format!("[Chat #{chat_id}]")));

    let reply = reply_mail(
        &format!("Olivia Owner <{OWNER}>"),
        &note.reply_address(),
        note.header("Subject"),
        "reply-1@acme.example",
        &format!("In-Reply-To: {}\r\n", note.header("Message-ID")),
        "Only Live is affected, since 9:00.\r\n\r\nThanks, Olivia",
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250 2.0.0"), "{answer}");
    assert!(answer.contains(&format!("chat #{chat_id}")), "{answer}");

    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    let last = messages.last().unwrap();
    assert_eq!(last["text"], "Only Live is affected, since 9:00.\n\nThanks, Olivia");
    assert_eq!(last["source"], "email");
    assert_eq!(last["author"]["email"], OWNER);
    assert!(last["time"].as_str().unwrap().ends_with('Z'));

    // The agent who answered (now assigned) hears about the customer's reply, and only that agent.
    let mails = app.wait_for_mail(4).await;
    assert_eq!(mails.len(), 4, "one notification, to the assigned agent");
    assert_eq!(mails[3].to(), AGENT);
    assert!(mails[3].body.contains("Only Live is affected"));

    // The agent answers by email too; the customer is told, threaded after the first notification.
    let agent_note = &mails[3];
    let reply = reply_mail(
        AGENT,
        &agent_note.reply_address(),
        agent_note.header("Subject"),
        "agent-1@agents.example",
        "",
        "Fixed: the cache was full.",
    );
    let answer = app.send(AGENT, &[&agent_note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let mails = app.wait_for_mail(5).await;
    assert_eq!(mails[4].to(), OWNER);
    assert!(mails[4].body.contains("Fixed: the cache was full."));
    assert_eq!(mails[4].header("In-Reply-To"), note.header("Message-ID"), "threaded under the earlier notification");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    assert_eq!(messages.last().unwrap()["author"]["email"], AGENT);
    assert_eq!(messages.last().unwrap()["source"], "email");
    app.stop().await;
}

#[tokio::test]
async fn ticket_notifies_members_who_may_see_it_and_members_may_reply() {
    let app = spawn_app().await;
    let w = app.world("elite", None).await;
    let ticket = app
        .create(
            "/tickets",
            json!({"site_id": w.site, "customer_id": w.owner, "type": "Performance", "subject": "Slow pages",
                   "description": "Pages take 10 s on Live since Monday."}),
        )
        .await;
    let number = ticket["ticket_number"].as_i64().unwrap();
    // Both agents hear about the new ticket; the customer gets a receipt with the plan's promise.
    let mails = app.wait_for_mail(3).await;
    let receipt = mails.iter().find(|m| m.to() == OWNER).expect("a receipt to the customer");
    // One subject for every notification of the thread (Gmail groups by subject).
    assert_eq!(receipt.header("Subject"), format!("[Ticket #{number}] Slow pages"));
    assert!(receipt.body.contains("within 2 hours"), "{}", receipt.body);
    let opened: Vec<&Eml> = mails.iter().filter(|m| m.to() != OWNER).collect();
    assert_eq!(opened.len(), 2);
    assert!(opened[0].body.contains("Performance") && opened[0].body.contains("2 hours"), "{}", opened[0].body);
    app.create(
        &format!("/tickets/{number}/messages"),
        json!({"author_id": w.agent, "text": "Can you send a screenshot?"}),
    )
    .await;
    let mails = app.wait_for_mail(5).await;
    let mut to: Vec<String> = mails[3..].iter().map(Eml::to).collect();
    to.sort();
    assert_eq!(to, vec![MEMBER.to_owned(), OWNER.to_owned()], "owner and member; never the Unprivileged user");
    assert!(mails[3..].iter().all(|m| m.header("Subject") == receipt.header("Subject")), "one subject per thread");

    let note = mails[3..].iter().find(|m| m.to() == MEMBER).unwrap();
    let boundary = "b1";
    let message = format!(
        "From: {MEMBER}\r\nTo: {}\r\nSubject: Re: {}\r\nMessage-ID: <m-1@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n\
         Here it is.\r\n--{boundary}\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"../../etc/shot.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}--\r\n",
        note.reply_address(),
        note.header("Subject"),
        "iVBORw0KGgo".repeat(300)
    );
    let answer = app.send(MEMBER, &[&note.reply_address()], &message).await;
    assert!(answer.starts_with("250"), "{answer}");
    let messages = app.messages(&format!("/tickets/{number}")).await;
    let last = messages.last().unwrap();
    assert_eq!(last["text"], "Here it is.");
    assert_eq!(last["author"]["email"], MEMBER);
    let attachment = &last["attachments"][0];
    assert_eq!(attachment["filename"], "shot.png", "directories stripped from the name");
    assert_eq!(attachment["content_type"], "image/png");
    let download = attachment["download"].as_str().unwrap();
    let response = app.download(download).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len() as i64, attachment["size"].as_i64().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn new_chat_by_email_is_refused_with_directions() {
    let app = spawn_app().await;
    app.world("sandbox", None).await;
    let message = format!(
        "From: {OWNER}\r\nTo: support@{DOMAIN}\r\nSubject: Help!\r\nMessage-ID: <new@acme.example>\r\n\r\nMy site is down.\r\n"
    );
    let answer = app.send(OWNER, &[&format!("support@{DOMAIN}")], &message).await;
    assert!(answer.starts_with("550 5.7.1"), "{answer}");
    assert!(answer.contains("Support > Launch Chat"), "{answer}");
    let (_, log) = app.get("/inbound-log").await;
    assert_eq!(log[0]["decision"], "rejected");
    assert_eq!(log[0]["message_id"], "new@acme.example");
    assert!(log[0]["smtp_reply"].as_str().unwrap().starts_with("550 5.7.1"));
    app.stop().await;
}

#[tokio::test]
async fn reply_to_support_address_threads_by_message_id_and_body_marker() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hello"})).await;
    let chat_id = chat["id"].as_i64().unwrap();
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hi, how can I help?"}))
        .await;
    let mails = app.wait_for_mail(3).await;
    let note = &mails[2];
    let support = format!("support@{DOMAIN}");

    // A client that replied to From: instead of Reply-To, but kept In-Reply-To.
    let reply = reply_mail(
        OWNER,
        &support,
        "x",
        "r-1@acme.example",
        &format!("In-Reply-To: {}\r\n", note.header("Message-ID")),
        "By Message-ID",
    );
    let answer = app.send(OWNER, &[&support], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");

    // A mail service that dropped both Reply-To and the Message-IDs: the quoted body marker remains.
    let text = format!("By marker\r\n\r\n> [ref:{}]", note.token());
    let reply = reply_mail(OWNER, &support, "x", "r-2@acme.example", "", &text);
    let answer = app.send(OWNER, &[&support], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");

    // The same marker from a stranger counts for nothing.
    let reply = reply_mail(STRANGER, &support, "x", "r-3@elsewhere.example", "", &text);
    let answer = app.send(STRANGER, &[&support], &reply).await;
    assert!(answer.starts_with("550 5.7.1"), "{answer}");

    let texts: Vec<String> = app
        .messages(&format!("/chats/{chat_id}"))
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["Hello", "Hi, how can I help?", "By Message-ID", "By marker"]);
    app.stop().await;
}

#[tokio::test]
async fn subject_ticket_tag_only_lets_in_people_who_may_see_the_ticket() {
    let app = spawn_app().await;
    let w = app.world("business", Some("agencies")).await;
    let ticket = app
        .create("/tickets", json!({"site_id": w.site, "customer_id": w.owner, "type": "Billing", "subject": "Invoice", "description": "Wrong amount"}))
        .await;
    let number = ticket["ticket_number"].as_i64().unwrap();
    let support = format!("support@{DOMAIN}");
    let subject = format!("[Ticket #{number}] Invoice");

    let reply = reply_mail(MEMBER, &support, &subject, "t-1@acme.example", "", "Adding: it was March.");
    let answer = app.send(MEMBER, &[&support], &reply).await;
    assert!(answer.starts_with("250"), "a member who may see the ticket: {answer}");

    for (who, id) in [(STRANGER, "t-2@x"), (UNPRIVILEGED, "t-3@x")] {
        let reply = reply_mail(who, &support, &subject, id, "", "Let me in");
        let answer = app.send(who, &[&support], &reply).await;
        assert!(answer.starts_with("550 5.7.1"), "{who}: {answer}");
    }
    let messages = app.messages(&format!("/tickets/{number}")).await;
    assert_eq!(messages.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn someone_elses_token_is_refused() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    // Spoofed From: the stranger uses the owner's reply address.
    let reply = reply_mail(STRANGER, &note.reply_address(), "x", "s-1@x", "", "I am in your chat");
    let answer = app.send(STRANGER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("550 5.7.1"), "{answer}");
    assert!(answer.contains("not allowed"), "{answer}");
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_same_message_delivered_twice_is_stored_once() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "dup-1@acme.example", "", "Once only");
    for _ in 0..2 {
        let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
        assert!(answer.starts_with("250"), "{answer}");
    }
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    assert_eq!(messages.iter().filter(|m| m["text"] == "Once only").count(), 1);
    let (_, log) = app.get("/inbound-log").await;
    assert_eq!(log[0]["decision"], "duplicate");
    assert_eq!(log[1]["decision"], "accepted");
    // One notification for the reply, not two.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.read_outbox().len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn auto_replies_and_bounces_are_recorded_never_posted() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let ooo = reply_mail(
        OWNER,
        &note.reply_address(),
        "x",
        "ooo@acme.example",
        "Auto-Submitted: auto-replied\r\n",
        "I am out of the office.",
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &ooo).await;
    assert!(answer.starts_with("250"), "{answer}");
    let bounce = format!(
        "From: MAILER-DAEMON@mx.acme.example\r\nTo: {}\r\nSubject: Undelivered Mail\r\n\r\nThe mail could not be delivered.\r\n",
        note.reply_address()
    );
    let answer = app.send("", &[&note.reply_address()], &bounce).await;
    assert!(answer.starts_with("250"), "{answer}");
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), 2, "nothing posted");
    let (_, log) = app.get("/inbound-log").await;
    assert_eq!(log[0]["decision"], "dropped");
    assert!(log[0]["reason"].as_str().unwrap().starts_with("bounce"));
    assert_eq!(log[1]["decision"], "dropped");
    assert_eq!(log[1]["rules"], "drop-auto-replies", "the shipped rule decided: {}", log[1]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.read_outbox().len(), 3, "never answered");
    app.stop().await;
}

#[tokio::test]
async fn tokens_and_messages_survive_a_restart() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let app = app.restart().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "after-restart@acme.example", "", "Still works");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "the token secret persisted: {answer}");
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn empty_reply_is_refused_with_an_explanation() {
    let app = spawn_app().await;
    let (_, _, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "empty@acme.example", "", "");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("550 5.6.0"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn a_bounce_is_tied_to_the_notification_it_answers() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let bounce = format!(
        "From: MAILER-DAEMON@mx.acme.example\r\nTo: bounces@{DOMAIN}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.acme.example\r\n\r\nFinal-Recipient: rfc822; {OWNER}\r\nAction: failed\r\nStatus: 5.2.1\r\n\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {}\r\nSubject: x\r\n\r\n--b--\r\n",
        note.header("Message-ID")
    );
    let answer = app.send("", &[&format!("bounces@{DOMAIN}")], &bounce).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, bounces) = app.get("/bounces").await;
    assert_eq!(bounces[0]["recipient"], OWNER);
    assert_eq!(bounces[0]["status"], "5.2.1");
    assert_eq!(bounces[0]["severity"], "hard");
    let (_, outbox) = app.get("/outbox").await;
    let notified = outbox
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["rfc_message_id"].as_str().is_some_and(|id| note.header("Message-ID").contains(id)));
    assert_eq!(bounces[0]["outbox_id"], notified.unwrap()["id"], "tied to the notification by its Message-ID");
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), 2, "never posted");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.read_outbox().len(), 3, "never answered");
    app.stop().await;
}

#[tokio::test]
async fn an_html_only_reply_lands_as_readable_text() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let html = format!(
        "From: {OWNER}\r\nTo: {}\r\nSubject: Re: x\r\nMessage-ID: <html-1@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>It is <b>fixed</b>, see <a href=\"https://acme.example/ok\">the page</a>.</p>\
         <div class=\"gmail_quote\">On Mon, Support wrote:<blockquote>old</blockquote></div></body></html>\r\n",
        note.reply_address()
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &html).await;
    assert!(answer.starts_with("250"), "{answer}");
    let last = app.messages(&format!("/chats/{chat_id}")).await.pop().unwrap();
    assert_eq!(last["text"], "It is fixed, see the page (https://acme.example/ok).");
    app.stop().await;
}

#[tokio::test]
async fn inspect_with_the_instance_data_dir_says_what_would_happen() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let file = app.dir.path().join("reply.eml");
    std::fs::write(&file, reply_mail(OWNER, &note.reply_address(), "x", "insp@acme.example", "", "Looks good"))
        .unwrap();
    let run = |rcpt: String, from: &str| {
        let out = app
            .command(&["inspect", "--json", "--domain", DOMAIN, "--mail-from", from, "--rcpt", &rcpt])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let value = run(note.reply_address(), OWNER);
    assert_eq!(value["thread_token"]["verified"], true);
    assert_eq!(value["thread_token"]["via"], "recipient");
    assert_eq!(value["decision"]["decision"], "accepted");
    assert_eq!(value["decision"]["thread_id"], chat_id);
    assert!(value["decision"]["smtp_reply"].as_str().unwrap().starts_with("250"));
    let value = run(format!("support@{DOMAIN}"), OWNER);
    // Sent to the support address with nothing that names a thread: a new chat, refused.
    assert_eq!(value["decision"]["decision"], "rejected");
    assert!(value["decision"]["smtp_reply"].as_str().unwrap().contains("Launch Chat"));
    // Issue 22: without --domain, a tool judges as the server does, with the
    // domain the server runs with (not `localhost`, which would refuse it).
    let out =
        app.command(&["inspect", "--json", "--mail-from", OWNER, "--rcpt", &note.reply_address()]).arg(&file).output();
    let value: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap();
    assert_eq!(value["decision"]["decision"], "accepted", "{value}");
    // Nothing was stored by any run.
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn replies_to_a_closed_conversation_are_refused_until_it_reopens() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let (status, closed) = app.post(&format!("/chats/{chat_id}/close"), json!({})).await;
    assert_eq!((status, closed["status"].as_str()), (200, Some("closed")));
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "late@acme.example", "", "One more thing");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("550 5.7.1") && answer.contains("closed"), "{answer}");
    // The sender is told once, by mail.
    let notice = app.wait_for_mail(4).await.remove(3);
    assert_eq!(notice.to(), OWNER);
    assert!(notice.header("Subject").contains("closed"), "{}", notice.header("Subject"));
    app.post(&format!("/chats/{chat_id}/reopen"), json!({})).await;
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    app.stop().await;
}

/// Issue 22: an attachment's name keeps every letter of every script, and the
/// download names it so that browsers show the real name (RFC 6266 `filename*`).
#[tokio::test]
async fn attachment_names_keep_their_letters_and_download_under_their_real_name() {
    let app = spawn_app().await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let message = format!(
        "From: {OWNER}\r\nTo: {}\r\nSubject: Re: {}\r\nMessage-ID: <names@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nQuote attached.\r\n\
         --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*=UTF-8''%E8%A6%8B%E7%A9%8D%E6%9B%B8%20M%C3%A4rz%20%281%29.pdf\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        note.reply_address(),
        note.header("Subject"),
        "JVBERi0xLjQK".repeat(20)
    );
    let answer = app.send(OWNER, &[&note.reply_address()], &message).await;
    assert!(answer.starts_with("250"), "{answer}");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    let attachment = &messages.last().unwrap()["attachments"][0];
    assert_eq!(attachment["filename"], "見積書 März (1).pdf", "{attachment}");
    let download = attachment["download"].as_str().unwrap();
    let response = app.download(download).await;
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.contains("filename*=UTF-8''%E8%A6%8B%E7%A9%8D%E6%9B%B8%20M%C3%A4rz%20%281%29.pdf"),
        "{disposition}"
    );
    assert!(disposition.contains("filename=\"___ M_rz (1).pdf\""), "an ASCII name for old clients: {disposition}");
    app.stop().await;
}
