//! Mail in each person's language: the person's own, else their
//! organization's, else the desk's, else English; `pt-BR` falls back to
//! `pt`; dates written the language's way; `Content-Language` set; and
//! `templates check` names a translation that lacks a template.

use crate::capture::{Capture, Captured};
use crate::delivery::app_with_relay;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// Waits for the `count`th mail to `address`.
async fn nth_mail_to(relay: &Capture, address: &str, count: usize) -> Captured {
    for _ in 0..400 {
        let mails: Vec<Captured> =
            relay.messages().into_iter().filter(|m| m.rcpt_to.iter().any(|r| r == address)).collect();
        if let Some(mail) = mails.into_iter().nth(count - 1) {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mail {count} to {address} never came");
}

/// The text and HTML bodies of a mail.
fn bodies(mail: &Captured) -> (String, String) {
    let parsed = mail.parsed();
    (parsed.body_text(0).unwrap().into_owned(), parsed.body_html(0).unwrap().into_owned())
}

/// A chat opened by `customer`, answered by the agent: its id.
async fn answered(app: &TestApp, w: &World, customer: i64) -> i64 {
    let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": customer, "message": "Help"})).await;
    let chat_id = chat["id"].as_i64().unwrap();
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Done."})).await;
    chat_id
}

#[tokio::test]
async fn a_german_user_reads_german_and_a_member_reads_the_organizations_language() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let w = app.world("sandbox", None).await;
    let (status, user) =
        app.patch(&format!("/users/{}", w.owner), json!({"locale": "de", "time_zone": "Europe/Berlin"})).await;
    assert_eq!((status, user["locale"].as_str()), (200, Some("de")), "{user}");
    let (status, refused) = app.patch(&format!("/users/{}", w.owner), json!({"locale": "Deutsch"})).await;
    assert_eq!(status, 400, "{refused}");

    answered(&app, &w, w.owner).await;
    let mail = nth_mail_to(&relay, OWNER, 1).await;
    assert_eq!(mail.header("Content-Language"), "de");
    let (text, html) = bodies(&mail);
    assert!(text.contains("Hallo Olivia Owner") && text.contains("das Support-Team hat in Ihrem Chat #"), "{text}");
    assert!(text.contains("Alex Agent schrieb ("), "{text}");
    // 23.11.2026, 11:04 CET: the German way, in her zone.
    let date = regex::Regex::new(r"\(\d{2}\.\d{2}\.\d{4}, \d{2}:\d{2} CES?T\)").unwrap();
    assert!(date.is_match(&text), "{text}");
    assert!(html.contains("lang=\"de\"") && html.contains("geantwortet"), "{html}");
    // Her refusal notice is German, subject included.
    let support = format!("support@{DOMAIN}");
    let message =
        format!("From: {OWNER}\r\nTo: {support}\r\nSubject: Hilfe\r\nMessage-ID: <de1@acme.example>\r\n\r\nHallo\r\n");
    assert!(app.send(OWNER, &[&support], &message).await.starts_with("550"));
    let notice = nth_mail_to(&relay, OWNER, 2).await;
    assert_eq!(notice.header("Subject"), "Ihre E-Mail hat keinen Chat gestartet: Hilfe");

    // A member who chose no language reads the organization's.
    let (status, org) = app.patch(&format!("/organizations/{}", w.org), json!({"locale": "es"})).await;
    assert_eq!((status, org["locale"].as_str()), (200, Some("es")), "{org}");
    answered(&app, &w, w.member).await;
    let mail = nth_mail_to(&relay, MEMBER, 1).await;
    assert_eq!(mail.header("Content-Language"), "es");
    assert!(bodies(&mail).0.contains("Hola, Mike Member:"), "{}", bodies(&mail).0);
    // And agents read the desk's language (English here).
    let to_agent = nth_mail_to(&relay, AGENT, 1).await;
    assert_eq!(to_agent.header("Content-Language"), "en");
}

#[tokio::test]
async fn pt_br_falls_back_to_pt_then_to_the_desks_language() {
    let templates = tempfile::tempdir().unwrap();
    let pt = templates.path().join("pt");
    std::fs::create_dir(&pt).unwrap();
    std::fs::write(pt.join("agent_replied.subject"), "{{ thread.label_tag }} {{ thread.subject }}\n").unwrap();
    std::fs::write(
        pt.join("agent_replied.txt"),
        "Olá {{ recipient.name }},\n{% include \"_messages.txt\" %}\n{{ ref_marker }}\n",
    )
    .unwrap();
    std::fs::write(pt.join("agent_replied.html"), "<p>Olá {{ recipient.name }},</p>\n").unwrap();
    let dir = templates.path().to_owned();
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, move |c| {
        c.templates_dir = Some(dir);
        c.delivery.locale = "fr".to_owned();
    })
    .await;
    let w = app.world("sandbox", None).await;
    app.patch(&format!("/users/{}", w.owner), json!({"locale": "pt-br"})).await;
    let (_, owner) = app.get(&format!("/users/{}", w.owner)).await;
    assert_eq!(owner["locale"], "pt-BR", "stored in its usual spelling");
    answered(&app, &w, w.owner).await;
    let mail = nth_mail_to(&relay, OWNER, 1).await;
    assert_eq!(mail.header("Content-Language"), "pt");
    assert!(bodies(&mail).0.starts_with("Olá Olivia Owner"), "{}", bodies(&mail).0);
    // A language the desk has no templates for: the desk's default, French.
    app.patch(&format!("/users/{}", w.owner), json!({"locale": "it"})).await;
    answered(&app, &w, w.owner).await;
    let mail = nth_mail_to(&relay, OWNER, 2).await;
    assert_eq!(mail.header("Content-Language"), "fr");
    assert!(bodies(&mail).0.contains("Bonjour Olivia Owner,"), "{}", bodies(&mail).0);

    // `templates check` names what the Portuguese translation lacks.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["templates", "check", "--templates-dir"])
        .arg(templates.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("templates for pt lack") && stderr.contains("customer_replied.txt"), "{stderr}");
    assert!(!stderr.contains("templates for de lack"), "the shipped translations are complete: {stderr}");
    // A misspelt variable in a translation is caught too, with its file.
    std::fs::write(pt.join("agent_replied.html"), "<p>Olá {{ recipient.nome }},</p>\n").unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["templates", "check", "--templates-dir"])
        .arg(templates.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("pt/agent_replied.html:1") && stderr.contains("recipient.nome"), "{stderr}");
}
