//! Issue 30: no message takes the server down or holds it. The worst shapes
//! of `benches/support/shapes.rs` (deep nesting of every kind, huge
//! attribute lists, entities, thousands of quote levels, one long line,
//! many parts) go through SMTP to a running server, as a stranger to the
//! support address and as the customer to her reply address; the server
//! answers each (the client waits 20 s at most) and stays up.

#[path = "../../benches/support/shapes.rs"]
mod shapes;

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn the_worst_shapes_are_answered_and_the_server_stays_up() {
    let app = spawn_app().await;
    let note = app.chat_with_note().await.2;
    let support = format!("support@{DOMAIN}");
    for shape in shapes::all() {
        let raw = String::from_utf8((shape.build)(300 * 1024)).unwrap();
        for (from, to) in [(STRANGER, support.as_str()), (OWNER, note.reply_address().as_str())] {
            let message = raw.replace("From: olivia@acme.example", &format!("From: {from}"));
            let answer = app.send(from, &[to], &message).await;
            assert!(
                answer.starts_with('2') || answer.starts_with('5'),
                "{} to {to}: a clear answer, got {answer:?}",
                shape.name
            );
            let alive = app.smtp().await;
            assert!(alive.greeting.starts_with("220"), "{}: the server is up", shape.name);
        }
    }
    // The 50 KB message of ten thousand nested elements that used to
    // overflow a worker's stack, for every element, read into a reply.
    for element in ["div", "blockquote", "b", "span", "li", "dl", "dd", "table", "td", "font", "center"] {
        let body = format!("{}Deep{}", format!("<{element}>").repeat(10_000), format!("</{element}>").repeat(10_000));
        let message = format!(
            "From: {OWNER}\r\nSubject: Re: Hi\r\nMessage-ID: <deep-{element}@acme.example>\r\nContent-Type: text/html\r\n\r\n{body}\r\n"
        );
        let answer = app.send(OWNER, &[&note.reply_address()], &message).await;
        // Text inside ten thousand blockquotes is all quote: nothing new.
        let empty = element == "blockquote" && answer.starts_with("550 5.6.0");
        assert!(answer.starts_with("250 2.0.0") || empty, "{element}: {answer}");
    }
    let (_, log) = app.get("/inbound-log?decision=accepted&limit=100").await;
    assert!(log.as_array().unwrap().len() >= 10, "the deep replies were read and posted");
    app.stop().await;
}

#[tokio::test]
async fn a_message_whose_reading_runs_over_its_budget_is_held_and_kept() {
    let app = spawn_app_with(|c| c.limits.mime.reading_budget = Duration::ZERO).await;
    let note = app.chat_with_note().await.2;
    let raw = String::from_utf8((shapes::all()[0].build)(200 * 1024)).unwrap();
    let answer = app.send(OWNER, &[&note.reply_address()], &raw).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, held) = app.admin_get("/held").await;
    assert_eq!(held[0]["reason_code"], "reading_failed", "{held}");
    assert!(held[0]["reason"].as_str().unwrap().contains("budget"), "{held}");
    let id = held[0]["id"].as_i64().unwrap();
    let response =
        app.http.get(format!("{}/admin/held/{id}/raw", app.base)).bearer_auth(app.admin_token()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap().len() > 200 * 1024, "kept as it arrived");
    app.stop().await;
}
