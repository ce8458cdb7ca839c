//! Everyone in the conversation: colleagues a customer copies join it,
//! outsiders wait for an agent, the desk's own and role addresses never
//! join, limits hold, each participant gets their own reply address and a
//! way out, and nobody hears twice of a message sent to them directly.
//! Through SMTP in, and the real outbound path (a capture relay) out.

use crate::capture::{Capture, Captured};
use crate::delivery::app_with_relay;
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const COLLEAGUE: &str = "carla@acme.example";
const PUBLIC_URL: &str = "https://mailgate.example.com";

/// A chat opened by the owner, the organization owning `acme.example`, and
/// the owner's notification of an agent's answer.
async fn chat_with_answer(app: &TestApp, relay: &Capture) -> (World, i64, Captured) {
    let w = app.world("sandbox", None).await;
    let (status, org) = app.patch(&format!("/organizations/{}", w.org), json!({"domains": ["acme.example"]})).await;
    assert_eq!(status, 200, "{org}");
    let chat =
        app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Checkout fails"})).await;
    let chat_id = chat["id"].as_i64().unwrap();
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Which browser?"})).await;
    let note = mail_to(relay, OWNER, 1).await;
    (w, chat_id, note)
}

/// Waits until `count` mails went to `address`; the last of them.
async fn mail_to(relay: &Capture, address: &str, count: usize) -> Captured {
    for _ in 0..400 {
        let mails: Vec<Captured> =
            relay.messages().into_iter().filter(|m| m.rcpt_to.iter().any(|r| r == address)).collect();
        if mails.len() >= count {
            return mails.into_iter().last().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{count} mails to {address} never came");
}

/// How many mails went to `address` so far.
fn mails_to(relay: &Capture, address: &str) -> usize {
    relay.messages().iter().filter(|m| m.rcpt_to.iter().any(|r| r == address)).count()
}

/// The participants of a chat.
async fn participants(app: &TestApp, chat_id: i64) -> Vec<Value> {
    let (status, list) = app.get(&format!("/chats/{chat_id}/participants")).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

/// A reply with `cc` in its Cc field.
fn reply_with_cc(from: &str, to: &str, cc: &str, id: &str, text: &str) -> String {
    reply_mail(from, to, "Checkout", id, &format!("Cc: {cc}\r\n"), text)
}

/// Lets the outbound worker catch up: no new mail for a moment.
async fn settle(relay: &Capture) {
    let mut seen = relay.messages().len();
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = relay.messages().len();
        if now == seen {
            return;
        }
        seen = now;
    }
}

#[tokio::test]
async fn a_colleague_on_cc_joins_gets_their_own_address_and_replies_as_themselves() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.public_url = Some(PUBLIC_URL.to_owned())).await;
    let (w, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();

    // The owner answers and copies a colleague the directory does not know,
    // from the organization's own domain: she joins.
    let mail = reply_with_cc(
        OWNER,
        &owner_address,
        &format!("Carla D\u{ed}az <{COLLEAGUE}>"),
        "p1@acme.example",
        "Chrome. Carla sees it too.",
    );
    let answer = app.send(OWNER, &[&owner_address], &mail).await;
    assert!(answer.starts_with("250"), "{answer}");
    let list = participants(&app, chat_id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0]["email"].as_str(), list[0]["status"].as_str()), (Some(COLLEAGUE), Some("active")));
    assert_eq!(list[0]["outsider"], false);
    // She had that message directly: no notification of it.
    settle(&relay).await;
    assert_eq!(mails_to(&relay, COLLEAGUE), 0);

    // The agent answers: the owner and Carla each get their own notification.
    app.create(
        &format!("/chats/{chat_id}/messages"),
        json!({"author_id": w.agent, "text": "Fixed, please try again."}),
    )
    .await;
    let to_carla = mail_to(&relay, COLLEAGUE, 1).await;
    let to_owner = mail_to(&relay, OWNER, 2).await;
    let carla_address = to_carla.reply_address();
    assert_ne!(carla_address, to_owner.reply_address(), "each participant has a reply address of their own");
    assert!(to_carla.header("Cc").is_empty() && to_carla.rcpt_to == [COLLEAGUE], "nobody else is addressed");
    let text = to_carla.parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("Also in this conversation: Olivia Owner"), "{text}");
    let owner_text = to_owner.parsed().body_text(0).unwrap().into_owned();
    assert!(owner_text.contains("Also in this conversation: Carla D\u{ed}az"), "{owner_text}");
    let leave = to_carla.header("List-Unsubscribe");
    assert!(leave.starts_with(&format!("<{PUBLIC_URL}/leave/")), "{leave}");
    assert!(!to_owner.header("List-Unsubscribe").contains("/leave/"), "the customer does not leave her own chat");

    // Carla answers to all from her own mail client, to the owner's
    // address: her domain is authenticated and she is in: stored as hers.
    let mail = reply_with_cc(COLLEAGUE, &owner_address, OWNER, "p2@acme.example", "Works for me now.");
    let answer = app.send(COLLEAGUE, &[&owner_address], &mail).await;
    assert!(answer.starts_with("250"), "{answer}");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    let last = messages.last().unwrap();
    assert_eq!(last["author"]["email"], COLLEAGUE, "{last}");
    assert_eq!(last["text"], "Works for me now.");

    // She leaves with her one-click link: only she is gone.
    let path = leave.trim_matches(['<', '>']).trim_start_matches(PUBLIC_URL).to_owned();
    let url = format!("http://{}{path}", app.app.as_ref().unwrap().http_addr);
    let response = app.http.post(&url).body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(participants(&app, chat_id).await[0]["status"], "left");
    let before = mails_to(&relay, COLLEAGUE);
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Anything else?"})).await;
    mail_to(&relay, OWNER, 3).await;
    settle(&relay).await;
    assert_eq!(mails_to(&relay, COLLEAGUE), before, "who left gets no more mail");
    // And her reply address no longer lets her in.
    let mail = reply_mail(COLLEAGUE, &carla_address, "Checkout", "p3@acme.example", "", "One more thing");
    let answer = app.send(COLLEAGUE, &[&carla_address], &mail).await;
    assert!(answer.starts_with("550"), "{answer}");
    // A second copy does not bring her back.
    let mail = reply_with_cc(OWNER, &owner_address, COLLEAGUE, "p4@acme.example", "Thanks all");
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    assert_eq!(participants(&app, chat_id).await[0]["status"], "left");
}

#[tokio::test]
async fn an_outsider_waits_for_an_agent_and_the_desks_own_and_role_addresses_never_join() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let (w, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();
    let cc = format!(
        "Sam <{STRANGER}>, postmaster@acme.example, No Reply <noreply@acme.example>, MAILER-DAEMON@acme.example, \
         support@{DOMAIN}, downtime@{DOMAIN}, {AGENT}, {OWNER}"
    );
    let mail = reply_with_cc(OWNER, &owner_address, &cc, "o1@acme.example", "Looping in our contractor.");
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    let list = participants(&app, chat_id).await;
    assert_eq!(list.len(), 1, "only the outsider is recorded: {list:?}");
    assert_eq!((list[0]["email"].as_str(), list[0]["status"].as_str()), (Some(STRANGER), Some("pending")));
    assert_eq!(list[0]["outsider"], true);

    // Pending, the outsider may not write in the chat.
    let mail = reply_mail(STRANGER, &owner_address, "Checkout", "o2@elsewhere.example", "", "Hi, contractor here");
    let answer = app.send(STRANGER, &[&owner_address], &mail).await;
    assert!(answer.starts_with("550"), "{answer}");

    // An agent sees them waiting and lets them in; then they may.
    let (status, pending) = app.get("/participants/pending").await;
    assert_eq!(status, 200);
    let pending_id = pending[0]["id"].as_i64().unwrap();
    assert_eq!(pending[0]["thread_id"], chat_id);
    let (status, admitted) = app.post(&format!("/participants/{pending_id}/admit"), json!({})).await;
    assert_eq!((status, admitted["status"].as_str()), (200, Some("active")), "{admitted}");
    let mail = reply_mail(STRANGER, &owner_address, "Checkout", "o3@elsewhere.example", "", "Hi, contractor here");
    let answer = app.send(STRANGER, &[&owner_address], &mail).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, after) = app.get("/participants/pending").await;
    assert_eq!(after, json!([]));

    // Agents add and remove people through the API; the desk's own and
    // role addresses are refused there too, with a sentence.
    for refused in [format!("support@{DOMAIN}"), "postmaster@acme.example".to_owned(), AGENT.to_owned()] {
        let (status, body) = app.post(&format!("/chats/{chat_id}/participants"), json!({"email": refused})).await;
        assert_eq!(status, 400, "{refused}: {body}");
        assert!(body["error"].as_str().unwrap().contains(&refused), "{body}");
    }
    let (status, added) =
        app.post(&format!("/chats/{chat_id}/participants"), json!({"email": MEMBER, "added_by": w.agent})).await;
    assert_eq!((status, added["status"].as_str(), added["outsider"].as_bool()), (201, Some("active"), Some(false)));
    let id = added["id"].as_i64().unwrap();
    let (status, removed) = app.delete(&format!("/participants/{id}")).await;
    assert_eq!((status, removed["status"].as_str()), (200, Some("removed")));

    // With outsiders = "never", an outsider on Cc is not even recorded.
    app.stop().await;
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| {
        c.participants.outsiders = mailgate::pipeline::participants::Outsiders::Never;
    })
    .await;
    let (_, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();
    let mail = reply_with_cc(OWNER, &owner_address, STRANGER, "o4@acme.example", "FYI");
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    assert!(participants(&app, chat_id).await.is_empty());
}

#[tokio::test]
async fn the_twenty_first_participant_is_refused_with_one_note() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let (_, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();
    // The customer and 19 colleagues: 20, the limit.
    let nineteen: Vec<String> = (1..=19).map(|i| format!("colleague{i}@acme.example")).collect();
    let mail = reply_with_cc(OWNER, &owner_address, &nineteen.join(", "), "l1@acme.example", "Everyone, see this");
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    assert_eq!(participants(&app, chat_id).await.len(), 19);
    // One more would be the 21st: nobody is added, and one note says so.
    for (i, extra) in ["late1@acme.example", "late2@acme.example"].iter().enumerate() {
        let mail = reply_with_cc(OWNER, &owner_address, extra, &format!("l{}@acme.example", i + 2), "And you");
        assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    }
    assert_eq!(participants(&app, chat_id).await.len(), 19);
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    let notes: Vec<&Value> = messages.iter().filter(|m| m["kind"] == "system").collect();
    assert_eq!(notes.len(), 1, "one note an hour: {messages:?}");
    let text = notes[0]["text"].as_str().unwrap();
    assert!(text.contains("late1@acme.example") && text.contains("at most 20"), "{text}");
    // The customer never sees it.
    settle(&relay).await;
    for mail in relay.messages().iter().filter(|m| m.rcpt_to == [OWNER]) {
        assert!(!mail.data.contains("Not added to this conversation"), "{}", mail.data);
    }
    // Through the API the 21st is refused as well.
    let (status, body) =
        app.post(&format!("/chats/{chat_id}/participants"), json!({"email": "late3@acme.example"})).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn mail_not_proved_its_authors_copies_nobody_in_and_limits_hold_for_messages_at_once() {
    let relay = Capture::start().await;
    // The customer's domain passes nothing from this host and publishes no
    // DMARC: her own reply address still takes her reply, unproved.
    let app = app_with_relay(&relay, |c| {
        c.auth.records.insert("acme.example".to_owned(), "v=spf1 ip4:203.0.113.7 -all".to_owned());
    })
    .await;
    let (_, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();
    let mail = reply_with_cc(OWNER, &owner_address, COLLEAGUE, "u1@acme.example", "Carla, see this");
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    let list = participants(&app, chat_id).await;
    assert_eq!((list.len(), list[0]["status"].as_str()), (1, Some("pending")), "an agent decides: {list:?}");
    app.stop().await;

    // Ten messages at once, each copying 19 colleagues: the limit of 20 holds.
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let (_, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();
    let sends = (0..10).map(|batch| {
        let cc: Vec<String> = (0..19).map(|i| format!("b{batch}c{i}@acme.example")).collect();
        let mail =
            reply_with_cc(OWNER, &owner_address, &cc.join(", "), &format!("race{batch}@acme.example"), "All of you");
        let (app, address) = (&app, owner_address.clone());
        async move { app.send(OWNER, &[&address], &mail).await }
    });
    for answer in futures_util::future::join_all(sends).await {
        assert!(answer.starts_with("250"), "{answer}");
    }
    let list = participants(&app, chat_id).await;
    assert!(list.len() <= 19, "{} people in one chat", list.len());
    let (_, chat) = app.get(&format!("/chats/{chat_id}")).await;
    assert_eq!(chat["participants"].as_i64(), Some(list.len() as i64));
}

#[tokio::test]
async fn who_leaves_the_organization_or_is_erased_is_out_of_its_conversations() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let (w, chat_id, note) = chat_with_answer(&app, &relay).await;
    let owner_address = note.reply_address();
    let mail = reply_with_cc(
        OWNER,
        &owner_address,
        &format!("Mike <{MEMBER}>, Carla <{COLLEAGUE}>"),
        "s1@acme.example",
        "Both of you",
    );
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    assert_eq!(participants(&app, chat_id).await.iter().filter(|p| p["status"] == "active").count(), 2);
    // Mike leaves the organization: he is out of the chat he joined as its member.
    app.patch(&format!("/users/{}", w.member), json!({"organization_id": null})).await;
    let list = participants(&app, chat_id).await;
    let mike = list.iter().find(|p| p["email"] == MEMBER).unwrap();
    assert_eq!(mike["status"], "removed");
    // Carla is erased: her row, and her address in mailgate's notes, are gone.
    let carla = list.iter().find(|p| p["email"] == COLLEAGUE).unwrap()["user_id"].as_i64().unwrap();
    let (status, _) = app.delete(&format!("/users/{carla}?by=dpo")).await;
    assert_eq!(status, 200);
    let list = participants(&app, chat_id).await;
    assert!(list.iter().all(|p| p["email"] != COLLEAGUE), "{list:?}");
    let (_, chat) = app.get(&format!("/chats/{chat_id}")).await;
    assert_eq!(chat["participants"], 0);
}
