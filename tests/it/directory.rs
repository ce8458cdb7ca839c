//! The directory changes (issue 20): a role, a plan or an organization
//! changed through the API takes effect at once, for who is notified and
//! who may write where. (Two instances on one PostgreSQL: `postgres.rs`.)

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Opens a ticket on `w`'s site as its owner; the ticket number.
pub async fn open_ticket(app: &TestApp, w: &World, subject: &str) -> (u16, serde_json::Value) {
    app.post(
        "/tickets",
        json!({"site_id": w.site, "customer_id": w.owner, "type": "Performance", "subject": subject,
               "description": "Pages take 10 s on Live since Monday."}),
    )
    .await
}

/// The outbox files once one satisfies `found` (at most 10 s).
pub async fn wait_for(app: &TestApp, found: impl Fn(&Eml) -> bool) -> Vec<Eml> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mails = app.read_outbox();
        if mails.iter().any(&found) || Instant::now() > deadline {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_demoted_member_stops_getting_ticket_mail_and_may_not_write_at_once() {
    let app = spawn_app().await;
    let w = app.world("elite", None).await;
    let (status, ticket) = open_ticket(&app, &w, "Slow pages").await;
    assert_eq!(status, 201, "{ticket}");
    let number = ticket["ticket_number"].as_i64().unwrap();
    app.create(&format!("/tickets/{number}/messages"), json!({"author_id": w.agent, "text": "First answer"})).await;
    let mails = wait_for(&app, |m| m.to() == MEMBER && m.body.contains("First answer")).await;
    let note = mails.iter().find(|m| m.to() == MEMBER && m.body.contains("First answer")).expect("the member is told");
    let to = note.reply_address();
    let subject = note.header("Subject").to_owned();
    let answer = app.send(MEMBER, &[&to], &reply_mail(MEMBER, &to, &subject, "m1@acme.example", "", "Thanks")).await;
    assert!(answer.starts_with("250"), "a member may write: {answer}");

    let (status, user) = app.patch(&format!("/users/{}", w.member), json!({"role": "unprivileged"})).await;
    assert_eq!((status, user["role"].as_str()), (200, Some("unprivileged")), "{user}");
    let answer = app.send(MEMBER, &[&to], &reply_mail(MEMBER, &to, &subject, "m2@acme.example", "", "Again")).await;
    assert!(answer.starts_with("550 5.7.1"), "an Unprivileged user may not, from the next message on: {answer}");

    app.create(&format!("/tickets/{number}/messages"), json!({"author_id": w.agent, "text": "Second answer"})).await;
    let mails = wait_for(&app, |m| m.to() == OWNER && m.body.contains("Second answer")).await;
    assert!(mails.iter().any(|m| m.to() == OWNER && m.body.contains("Second answer")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_member =
        app.read_outbox().into_iter().filter(|m| m.to() == MEMBER && m.body.contains("Second answer")).count();
    assert_eq!(to_member, 0, "nor is told of the ticket any more");
    app.stop().await;
}

#[tokio::test]
async fn a_site_upgraded_may_open_tickets_at_once_and_changes_are_validated() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    assert_eq!(open_ticket(&app, &w, "Before").await.0, 403, "Sandbox has no tickets");
    let (status, site) = app.patch(&format!("/sites/{}", w.site), json!({"plan": "elite"})).await;
    assert_eq!((status, site["plan_id"].as_str()), (200, Some("elite")), "{site}");
    assert_eq!(open_ticket(&app, &w, "After").await.0, 201, "Elite has, from now on");

    // What is refused, and how.
    assert_eq!(app.patch(&format!("/sites/{}", w.site), json!({"plan": "gold-plated"})).await.0, 400);
    assert_eq!(app.patch("/sites/999999", json!({"name": "x"})).await.0, 404);
    assert_eq!(app.patch(&format!("/users/{}", w.member), json!({"email": OWNER})).await.0, 409, "email taken");
    assert_eq!(app.patch(&format!("/users/{}", w.member), json!({"role": "boss"})).await.0, 400);
    assert_eq!(app.patch(&format!("/users/{}", w.agent), json!({"organization_id": w.org})).await.0, 400);
    assert_eq!(app.patch(&format!("/users/{}", w.member), json!({"colour": "red"})).await.0, 400, "unknown field");
    // `null` takes a member out of the organization; leaving a field out keeps it.
    let (status, user) = app.patch(&format!("/users/{}", w.member), json!({"organization_id": null})).await;
    assert_eq!((status, user["organization_id"].is_null(), user["name"].as_str()), (200, true, Some("Mike Member")));
    let (status, org) = app.patch(&format!("/organizations/{}", w.org), json!({"name": "Acme GmbH"})).await;
    assert_eq!((status, org["name"].as_str()), (200, Some("Acme GmbH")), "{org}");
    app.stop().await;
}
