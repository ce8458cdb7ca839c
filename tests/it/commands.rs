//! Agents acting from their inbox: command lines at the top of an agent's
//! reply close, reopen, assign, prioritise, tag, or make the message an
//! internal note; an unknown one posts nothing and answers the agent once;
//! a forged agent's commands change nothing. Through SMTP in, a capture
//! relay out.

use crate::capture::{Capture, Captured};
use crate::delivery::app_with_relay;
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Mails to `address` so far.
fn mails_to(relay: &Capture, address: &str) -> Vec<Captured> {
    relay.messages().into_iter().filter(|m| m.rcpt_to.iter().any(|r| r == address)).collect()
}

/// Waits for the `count`th mail to `address`.
async fn nth_mail_to(relay: &Capture, address: &str, count: usize) -> Captured {
    for _ in 0..400 {
        if let Some(mail) = mails_to(relay, address).into_iter().nth(count - 1) {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mail {count} to {address} never came");
}

/// Lets the outbound worker catch up.
async fn settle(relay: &Capture) {
    let mut seen = relay.messages().len();
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if relay.messages().len() == seen {
            return;
        }
        seen = relay.messages().len();
    }
}

/// An agent's reply to `to`.
fn agent_reply(to: &str, id: &str, text: &str) -> String {
    reply_mail(AGENT, to, "Checkout", id, "", text)
}

async fn chat(app: &TestApp, chat_id: i64) -> Value {
    let (status, chat) = app.get(&format!("/chats/{chat_id}")).await;
    assert_eq!(status, 200, "{chat}");
    chat
}

/// A chat opened by the owner, and the agent's own reply address from the
/// notification they got of it.
async fn opened(app: &TestApp, relay: &Capture) -> (World, i64, String) {
    let w = app.world("sandbox", None).await;
    let chat =
        app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Checkout fails"})).await;
    let note = nth_mail_to(relay, AGENT, 1).await;
    (w, chat["id"].as_i64().unwrap(), note.reply_address())
}

#[tokio::test]
async fn an_agent_closes_notes_assigns_and_tags_from_their_inbox() {
    let relay = Capture::start().await;
    // The agents' domain publishes DMARC: their mail passes it (SPF aligned).
    let app = app_with_relay(&relay, |c| {
        c.auth.records.insert("_dmarc.agents.example".to_owned(), "v=DMARC1; p=reject".to_owned());
    })
    .await;
    let (w, chat_id, agent_address) = opened(&app, &relay).await;

    // #note: stored for agents, never mailed to the customer.
    let mail =
        agent_reply(&agent_address, "c1@agents.example", "#note\nThe customer is on the legacy plan; refund approved.");
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    let note = messages.last().unwrap();
    assert_eq!(
        (note["kind"].as_str(), note["text"].as_str()),
        (Some("note"), Some("The customer is on the legacy plan; refund approved."))
    );
    // The other agent hears of it; the customer does not.
    let to_bea = nth_mail_to(&relay, AGENT2, 2).await;
    assert!(to_bea.data.contains("refund approved"), "{}", to_bea.data);
    settle(&relay).await;
    assert!(mails_to(&relay, OWNER).is_empty(), "the customer got mail of an internal note");

    // A plain answer reaches the customer, without the note in its history.
    let mail = agent_reply(&agent_address, "c2@agents.example", "Please clear your cache and try again.");
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    let to_owner = nth_mail_to(&relay, OWNER, 1).await;
    assert!(
        to_owner.data.contains("clear your cache") && !to_owner.data.contains("refund approved"),
        "{}",
        to_owner.data
    );

    // Commands with text: the text goes to the customer, the commands act.
    let mail = agent_reply(
        &agent_address,
        "c3@agents.example",
        "#assign Bea Agent\n#priority high\n#tag billing\n\nI have asked a colleague to look at it.",
    );
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    let state = chat(&app, chat_id).await;
    assert_eq!(state["assigned_agent_id"], w.agent2, "{state}");
    assert_eq!(state["priority"], "high");
    assert_eq!(state["tags"], json!(["billing"]));
    let to_owner = nth_mail_to(&relay, OWNER, 2).await;
    assert!(to_owner.data.contains("asked a colleague") && !to_owner.data.contains("#priority"), "{}", to_owner.data);
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    let record = messages.iter().rev().find(|m| m["kind"] == "system").expect("the commands are recorded");
    assert!(record["text"].as_str().unwrap().contains("#assign Bea Agent, #priority high, #tag billing"), "{record}");

    // #close alone: the chat closes, the customer gets nothing.
    let mail = agent_reply(&agent_address, "c4@agents.example", "#close");
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    assert_eq!(chat(&app, chat_id).await["status"], "closed");
    settle(&relay).await;
    assert_eq!(mails_to(&relay, OWNER).len(), 2);
    let (_, audit) = app.admin_get("/audit").await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "thread.commands").count(), 3, "{audit}");

    // #reopen opens it again, even though it was closed.
    let mail = agent_reply(&agent_address, "c5@agents.example", "#reopen\nOne more thing: it is fixed now.");
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    assert_eq!(chat(&app, chat_id).await["status"], "open");

    // A command below the text, or in a customer's mail, is plain text.
    let mail = agent_reply(&agent_address, "c6@agents.example", "Thanks!\n#close");
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    assert_eq!(chat(&app, chat_id).await["status"], "open");
    let owner_address = nth_mail_to(&relay, OWNER, 3).await.reply_address();
    let mail = reply_mail(OWNER, &owner_address, "Checkout", "c7@acme.example", "", "#close");
    assert!(app.send(OWNER, &[&owner_address], &mail).await.starts_with("250"));
    assert_eq!(chat(&app, chat_id).await["status"], "open");
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.last().unwrap()["text"], "#close");
}

#[tokio::test]
async fn an_unknown_command_posts_nothing_and_answers_the_agent_once() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| {
        c.auth.records.insert("_dmarc.agents.example".to_owned(), "v=DMARC1; p=reject".to_owned());
    })
    .await;
    let (_, chat_id, agent_address) = opened(&app, &relay).await;
    let before = app.messages(&format!("/chats/{chat_id}")).await.len();
    let mail = agent_reply(&agent_address, "u1@agents.example", "#commnd\nThis is meant for agents only.");
    let answer = app.send(AGENT, &[&agent_address], &mail).await;
    assert!(answer.starts_with("250"), "{answer}");
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), before, "nothing is posted");
    let told = nth_mail_to(&relay, AGENT, 2).await;
    assert!(told.header("Subject").starts_with("Not posted"), "{}", told.header("Subject"));
    let text = told.parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("#commnd") && text.contains("#priority low|normal|high|urgent"), "{text}");
    settle(&relay).await;
    assert_eq!(mails_to(&relay, AGENT).len(), 2, "one answer");
    assert!(mails_to(&relay, OWNER).is_empty(), "nothing reached the customer");
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert!(log[0]["reason"].as_str().unwrap().contains("#commnd"), "{log}");
}

#[tokio::test]
async fn a_forged_agent_cannot_close_a_conversation() {
    let relay = Capture::start().await;
    // The agents' domain passes nothing from this host, and publishes DMARC.
    let app = app_with_relay(&relay, |c| {
        c.auth.records.insert("agents.example".to_owned(), "v=spf1 ip4:203.0.113.9 -all".to_owned());
        c.auth.records.insert("_dmarc.agents.example".to_owned(), "v=DMARC1; p=reject".to_owned());
    })
    .await;
    let (_, chat_id, agent_address) = opened(&app, &relay).await;
    let mail = agent_reply(&agent_address, "f1@agents.example", "#close");
    let answer = app.send(AGENT, &[&agent_address], &mail).await;
    assert_eq!(chat(&app, chat_id).await["status"], "open", "{answer}");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    assert!(messages.iter().all(|m| m["text"] != "#close"), "{messages:?}");
}

#[tokio::test]
async fn an_agents_command_lines_that_do_not_count_are_held_never_posted() {
    let relay = Capture::start().await;
    // The agents' domain publishes no DMARC and signs nothing: their mail
    // is theirs (SPF), but that is not proof enough for commands.
    let app = app_with_relay(&relay, |_| {}).await;
    let (_, chat_id, agent_address) = opened(&app, &relay).await;
    let before = app.messages(&format!("/chats/{chat_id}")).await.len();
    let mail = agent_reply(&agent_address, "h1@agents.example", "#note\nThe customer owes us money.");
    assert!(app.send(AGENT, &[&agent_address], &mail).await.starts_with("250"));
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), before, "nothing posted");
    let (_, held) = app.admin_get("/held").await;
    assert_eq!(held[0]["reason_code"], "unproven_command", "{held}");
    // Released by an admin, it is a note for agents, never the customer's.
    let id = held[0]["id"].as_i64().unwrap();
    let (status, released) = app.admin_post(&format!("/held/{id}/release"), json!({"by": "admin"})).await;
    assert_eq!(status, 200, "{released}");
    let messages = app.messages(&format!("/chats/{chat_id}")).await;
    assert_eq!(messages.last().unwrap()["kind"], "note");
    settle(&relay).await;
    assert!(mails_to(&relay, OWNER).is_empty(), "the customer got mail of it");
}
