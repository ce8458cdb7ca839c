//! Webhooks (issue 20): events POSTed to a real HTTP receiver started here,
//! signed, retried through the outbox when the receiver fails.

use crate::support::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: its headers of interest and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: String,
    pub delivery: String,
    pub signature: String,
    pub body: String,
    pub answered: u16,
}

/// An HTTP receiver that answers 500 to its first `failures` requests, then 200.
pub async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let state = Arc::clone(&seen);
    let handler = move |headers: axum::http::HeaderMap, body: String| {
        let state = Arc::clone(&state);
        async move {
            let mut seen = state.lock().unwrap();
            let answered = if seen.len() < failures { 500 } else { 200 };
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            seen.push(Received {
                event: header("mailgate-event"),
                delivery: header("mailgate-delivery"),
                signature: header("mailgate-signature"),
                body,
                answered,
            });
            axum::http::StatusCode::from_u16(answered).unwrap()
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Waits (at most 15 s) until `done` holds for what the receiver got.
pub async fn wait_until(seen: &Arc<Mutex<Vec<Received>>>, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = seen.lock().unwrap().clone();
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `signature` (`t=...,v1=...`) signs `body` with `secret`.
fn signed(secret: &str, signature: &str, body: &str) -> bool {
    let Some((t, v1)) = signature.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let fresh = t.parse::<i64>().is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    expected == v1 && fresh
}

#[tokio::test]
async fn events_reach_a_receiver_signed_and_survive_two_failures() {
    let (url, seen) = receiver(2).await;
    let app = spawn_app_with(|c| c.delivery.retry_base = Duration::from_millis(200)).await;
    let (status, hook) =
        app.admin_post("/webhooks", json!({"url": url, "events": ["message.created", "thread.closed"]})).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert_eq!(app.admin_get("/webhooks").await.1[0]["url"], url);
    assert!(app.admin_get("/webhooks").await.1[0].get("secret").is_none(), "the secret is shown once");

    // A chat opened and answered in the Dashboard, then a reply by email.
    let (_, chat_id, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let reply = reply_mail(OWNER, &to, note.header("Subject"), "hook-1@acme.example", "", "Works now");
    assert!(app.send(OWNER, &[&to], &reply).await.starts_with("250"));
    app.post(&format!("/chats/{chat_id}/close"), json!({})).await;

    let delivered = |all: &[Received]| -> Vec<Value> {
        all.iter().filter(|r| r.answered == 200).map(|r| serde_json::from_str(&r.body).unwrap()).collect()
    };
    let all = wait_until(&seen, |all| delivered(all).len() >= 4).await;
    let events = delivered(&all);
    let sources: Vec<&str> = events.iter().filter_map(|e| e["data"]["source"].as_str()).collect();
    assert!(sources.contains(&"dashboard") && sources.contains(&"email"), "{events:?}");
    assert!(events.iter().any(|e| e["event"] == "thread.closed" && e["data"]["thread_id"] == chat_id), "{events:?}");
    assert!(
        events.iter().all(|e| e["event"] == "message.created" || e["event"] == "thread.closed"),
        "only what it asked for"
    );
    // The two deliveries that met a 500 were retried, under the same id, and arrived.
    let failed: Vec<&str> = all.iter().filter(|r| r.answered == 500).map(|r| r.delivery.as_str()).collect();
    assert_eq!(failed.len(), 2);
    for id in &failed {
        assert!(all.iter().any(|r| r.answered == 200 && r.delivery == *id), "delivery {id} retried and delivered");
    }
    for received in &all {
        assert!(signed(&secret, &received.signature, &received.body), "signature of {received:?}");
        assert_eq!(received.event, serde_json::from_str::<Value>(&received.body).unwrap()["event"]);
    }
    assert!(!signed("another secret", &all[0].signature, &all[0].body));
    // The worker records the delivery once the receiver has answered: wait for it.
    let mut first = Value::Null;
    for _ in 0..200 {
        let (_, outbox) = app.get("/outbox?kind=webhook").await;
        first = outbox
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"].as_i64().map(|id| id.to_string()).as_deref() == Some(failed[0]))
            .unwrap()
            .clone();
        if first["status"] == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first["status"], "sent", "{first}");
    assert!(first["attempts"].as_i64().unwrap() >= 2, "{first}");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_refuses_for_good_leaves_a_dead_letter_that_can_be_retried() {
    let (url, seen) = receiver(usize::MAX).await;
    let app = spawn_app_with(|c| c.delivery.retry_base = Duration::from_millis(100)).await;
    let (status, _) = app.admin_post("/webhooks", json!({"url": url, "events": ["thread.closed"]})).await;
    assert_eq!(status, 201);
    assert_eq!(app.admin_post("/webhooks", json!({"url": "ftp://x", "events": []})).await.0, 400);
    assert_eq!(app.admin_post("/webhooks", json!({"url": url, "events": ["message.eaten"]})).await.0, 400);
    let w = app.world("sandbox", None).await;
    let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hi"})).await;
    app.post(&format!("/chats/{}/close", chat["id"]), json!({})).await;
    wait_until(&seen, |all| all.len() >= 3).await;
    // Retried, not lost; an operator sees it waiting and can send it now.
    let (_, outbox) = app.get("/outbox?kind=webhook").await;
    let item = &outbox[0];
    assert!(item["last_error"].as_str().unwrap_or("").contains("500"), "{item}");
    let (status, _) = app.post(&format!("/outbox/{}/retry", item["id"]), json!({})).await;
    assert_eq!(status, 200);
    let hooks = app.admin_get("/webhooks").await.1;
    let id = hooks[0]["id"].as_i64().unwrap();
    let removed = app.http.delete(format!("{}/admin/webhooks/{id}", app.base)).bearer_auth(app.admin_token());
    assert_eq!(removed.send().await.unwrap().status(), 204);
    app.stop().await;
}
