//! Outbound delivery through a real SMTP relay (the capture receiver):
//! headers, bodies, threading, retries, permanent failures, crash recovery,
//! coalescing, DKIM, bounces, refusal notices and pages.

use crate::capture::Capture;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// An instance delivering through `relay`, retrying fast.
pub async fn app_with_relay(relay: &Capture, tweak: impl FnOnce(&mut mailgate::config::Config)) -> TestApp {
    let url = relay.url();
    spawn_app_with(move |c| {
        c.delivery.relay_url = Some(url);
        c.delivery.retry_base = Duration::from_millis(200);
        c.delivery.retry_max = Duration::from_millis(400);
        tweak(c);
    })
    .await
}

/// Polls the outbox API until `done` holds (the relay's 250 comes a moment
/// before the item is marked sent); returns the items.
async fn wait_outbox(app: &TestApp, done: impl Fn(&[serde_json::Value]) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        let (_, items) = app.get("/outbox").await;
        if items.as_array().is_some_and(|a| done(a)) {
            return items;
        }
        last = items;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the outbox never reached the expected state: {last}");
}

/// Waits for the first failed outbox item (Null if none within 5 s).
async fn first_failed(app: &TestApp) -> serde_json::Value {
    for _ in 0..100 {
        let (_, items) = app.get("/outbox?status=failed").await;
        if items.as_array().is_some_and(|a| !a.is_empty()) {
            return items[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serde_json::Value::Null
}

/// A chat opened by the owner; returns its id.
async fn chat(app: &TestApp, w: &World) -> i64 {
    let chat =
        app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Checkout fails"})).await;
    chat["id"].as_i64().unwrap()
}

#[tokio::test]
async fn notifications_carry_both_bodies_and_thread_in_mail_clients() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    relay.wait_for(2).await; // the agents
    for (i, text) in ["First <answer> & more", "Second answer", "Third answer"].iter().enumerate() {
        app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": text})).await;
        relay.wait_for(3 + i).await;
    }
    let to_owner: Vec<_> = relay.messages().into_iter().filter(|m| m.rcpt_to == [OWNER]).collect();
    assert_eq!(to_owner.len(), 3);
    let first = &to_owner[0];
    let parsed = first.parsed();
    assert!(
        first.mail_from.starts_with("bounces+") && first.mail_from.ends_with(&format!("@{DOMAIN}")),
        "VERP: {}",
        first.mail_from
    );
    assert_eq!(first.header("Auto-Submitted"), "auto-generated");
    assert!(first.header("Reply-To").contains("reply+"));
    assert!(first.header("Content-Type").starts_with("multipart/alternative"));
    assert!(parsed.body_text(0).unwrap().contains("First <answer> & more"));
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains("First &lt;answer&gt; &amp; more"), "HTML escapes what users wrote: {html}");
    // Threading: each notification answers the previous ones.
    let ids: Vec<String> = to_owner.iter().map(|m| m.header("Message-ID")).collect();
    assert!(first.header("In-Reply-To").is_empty());
    assert_eq!(to_owner[1].header("In-Reply-To"), ids[0]);
    assert_eq!(to_owner[2].header("In-Reply-To"), ids[1]);
    assert!(to_owner[2].header("References").contains(&ids[0]) && to_owner[2].header("References").contains(&ids[1]));
    let subjects: Vec<String> = to_owner.iter().map(|m| m.header("Subject")).collect();
    assert!(subjects.iter().all(|s| s == &subjects[0]), "a stable subject: {subjects:?}");
    // As Gmail groups: the same subject once reply prefixes are stripped.
    let stripped: Vec<String> = subjects
        .iter()
        .map(|s| s.trim_start_matches(|c: char| c.is_whitespace()).trim_start_matches("Re: ").to_owned())
        .collect();
    assert!(stripped.iter().all(|s| s == &stripped[0]));
    // As Outlook groups: one Thread-Topic, and Thread-Index blocks that share
    // their 22-byte header and grow by 5 bytes per notification.
    let topics: Vec<String> = to_owner.iter().map(|m| m.header("Thread-Topic")).collect();
    assert!(!topics[0].is_empty() && topics.iter().all(|t| t == &topics[0]), "{topics:?}");
    assert!(subjects[0].ends_with(&topics[0]), "{} / {}", subjects[0], topics[0]);
    let indexes: Vec<Vec<u8>> = to_owner
        .iter()
        .map(|m| data_encoding::BASE64.decode(m.header("Thread-Index").as_bytes()).expect("base64 Thread-Index"))
        .collect();
    for (n, index) in indexes.iter().enumerate() {
        assert_eq!(index.len(), 22 + 5 * n, "notification {n}");
        assert_eq!(index[..22], indexes[0][..22], "one conversation");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_421_is_retried_and_a_550_fails_for_good() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let w = app.world("sandbox", None).await;
    relay.fail_next("421 4.3.0 try again later");
    relay.fail_next("421 4.3.0 try again later");
    relay.fail_next("421 4.3.0 try again later");
    let chat_id = chat(&app, &w).await;
    relay.wait_for(2).await; // both agents got it in the end
    assert!(relay.attempts() >= 5, "{} attempts", relay.attempts());
    let outbox = wait_outbox(&app, |items| items.iter().all(|o| o["status"] == "sent")).await;
    assert!(outbox.as_array().unwrap().iter().any(|o| o["attempts"].as_i64().unwrap() > 1));

    relay.fail_next("550 5.1.1 no such user");
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hello?"})).await;
    let failed = first_failed(&app).await;
    assert_eq!(failed["status"], "failed", "a 5xx is permanent");
    assert!(failed["last_error"].as_str().unwrap().contains("permanent"), "{failed}");
    let attempts_before = relay.attempts();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(relay.attempts(), attempts_before, "no retry after a 5xx");

    // An operator retries it once the address is fixed.
    let (status, retried) = app.post(&format!("/outbox/{}/retry", failed["id"]), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    relay.wait_for(3).await;
    let (status, body) = app.post(&format!("/outbox/{}/retry", failed["id"]), json!({})).await;
    assert_eq!(status, 409, "only failed items can be retried: {body}");
    app.stop().await;
}

#[tokio::test]
async fn a_dead_relay_loses_nothing() {
    // A port where nothing listens: connection refused is transient.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app = spawn_app_with(move |c| {
        c.delivery.relay_url = Some(format!("smtp://{dead}"));
        c.delivery.retry_base = Duration::from_secs(3600);
    })
    .await;
    let w = app.world("sandbox", None).await;
    chat(&app, &w).await;
    let mut pending = 0;
    for _ in 0..100 {
        let (_, items) = app.get("/outbox").await;
        pending = items.as_array().unwrap().iter().filter(|o| o["status"] == "pending" && o["attempts"] == 1).count();
        if pending == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 2, "both notifications wait for the next attempt");
    app.stop().await;
}

#[tokio::test]
async fn mail_claimed_by_a_worker_that_died_is_sent_after_restart() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let w = app.world("sandbox", None).await;
    let store = app.app.as_ref().unwrap().store.clone();
    // Stop the instance, then fake a worker that claimed an item and died.
    chat(&app, &w).await;
    relay.wait_for(2).await;
    let app = app.restart().await;
    drop(store);
    execute_sql(
        &app.database_url,
        "UPDATE outbox SET status = 'sending', claimed_until = 0, sent_at = NULL WHERE id = 1",
    )
    .await;
    // The expired lease is taken over (the capture relay was not configured on restart: folder mode).
    app.wait_for_mail(1).await;
    wait_outbox(&app, |items| items.iter().all(|o| o["status"] == "sent")).await;
    app.stop().await;
}

#[tokio::test]
async fn replies_in_quick_succession_become_one_notification() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.delivery.coalesce_window = Duration::from_millis(700)).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    relay.wait_for(2).await;
    for text in ["One", "Two", "Three"] {
        app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": text})).await;
    }
    let mails = relay.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(relay.messages().len(), 3, "one notification for three replies");
    let text = mails[2].parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("One") && text.contains("Two") && text.contains("Three"), "{text}");
    wait_outbox(&app, |items| items.iter().filter(|o| o["status"] == "merged").count() == 2).await;
    app.stop().await;
}

/// A chat the owner opened and an agent answered: its id and the
/// notification that went to the owner (the agents' two came first).
pub async fn answered_chat(app: &TestApp, relay: &Capture, w: &World) -> (i64, crate::capture::Captured) {
    let chat_id = chat(app, w).await;
    relay.wait_for(2).await; // the agents
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "On it"})).await;
    let sent = relay.wait_for(3).await;
    (chat_id, sent.into_iter().find(|m| m.rcpt_to == [OWNER]).expect("the customer's notification"))
}

/// A delivery report about mail to `failed`, as a mail system sends it.
pub fn hard_bounce(failed: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.acme.example\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\r\nfailed\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; {failed}\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    )
}

#[tokio::test]
async fn addresses_that_hard_bounce_stop_getting_mail_until_lifted() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.delivery.max_hard_bounces = 1).await;
    let w = app.world("sandbox", None).await;
    let (chat_id, to_owner) = answered_chat(&app, &relay, &w).await;
    // The report comes back to the envelope sender the notification carried.
    let answer = app.send("", &[&to_owner.mail_from], &hard_bounce(OWNER)).await;
    assert!(answer.starts_with("250"), "{answer}");
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hello?"})).await;
    let failed = first_failed(&app).await;
    let why = failed["last_error"].as_str().unwrap_or("");
    assert!(why.contains("suppressed") && why.contains("suppressions lift"), "agents see why and what to do: {why}");
    assert_eq!(relay.messages().len(), 3);

    let (status, listed) = app.admin_get("/suppressions").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["address"], OWNER, "{listed}");
    assert!(listed[0]["expires_at"].is_string(), "a suppression ends by itself: {listed}");
    let (status, lifted) = app.admin_post(&format!("/suppressions/{OWNER}/lift"), json!({"by": "anna"})).await;
    assert_eq!((status, lifted["lifted_bounces"].as_i64()), (200, Some(1)), "{lifted}");
    assert_eq!(app.admin_get("/suppressions").await.1, json!([]));
    let (status, _) = app.admin_post(&format!("/suppressions/{OWNER}/lift"), json!({})).await;
    assert_eq!(status, 404, "nothing left to lift");

    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Back?"})).await;
    relay.wait_for(4).await;
    let (_, bounces) = app.get("/bounces").await;
    assert_eq!((bounces[0]["counted"].as_bool(), bounces[0]["lifted_by"].as_str()), (Some(true), Some("anna")));
    app.stop().await;
}

#[tokio::test]
async fn forged_bounces_suppress_nobody() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.delivery.max_hard_bounces = 1).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    let sent = relay.wait_for(2).await;
    let to_agent = sent.iter().find(|m| m.rcpt_to != [OWNER]).expect("the agents' notification").clone();
    // Guessed ids, the bare address, and a real envelope sender of mail to
    // someone else: none of them may stop mail to the customer.
    for rcpt in ["bounces+1@", "bounces+2@", "bounces+3@", "bounces@"].map(|r| format!("{r}{DOMAIN}")) {
        let answer = app.send("", &[&rcpt], &hard_bounce(OWNER)).await;
        assert!(answer.starts_with("250"), "reports are taken, never refused: {answer}");
    }
    let answer = app.send("", &[&to_agent.mail_from], &hard_bounce(OWNER)).await;
    assert!(answer.starts_with("250"), "{answer}");
    let (_, bounces) = app.get("/bounces").await;
    assert_eq!(bounces.as_array().map(Vec::len), Some(5));
    assert!(bounces.as_array().unwrap().iter().all(|b| b["counted"] == false), "{bounces}");
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert!(log[0]["reason"].as_str().unwrap_or("").contains("does not count"), "{log}");

    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Still there?"})).await;
    let mails = relay.wait_for(3).await;
    assert!(mails.iter().any(|m| m.rcpt_to == [OWNER]), "the customer still gets mail");
    assert_eq!(app.admin_get("/suppressions").await.1, json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_suppression_ends_by_itself_after_its_window() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await; // suppressed after 3 hard bounces
    let w = app.world("sandbox", None).await;
    let (chat_id, to_owner) = answered_chat(&app, &relay, &w).await;
    // Three notifications, each reported failed: one counts per notification.
    let mut notes = vec![to_owner];
    for text in ["Second", "Third"] {
        app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": text})).await;
        let sent = relay.wait_for(2 + notes.len() + 1).await;
        notes.push(sent.last().expect("the next notification").clone());
    }
    let bounce_all = || async {
        for note in &notes {
            app.send("", &[&note.mail_from], &hard_bounce(OWNER)).await;
        }
    };
    bounce_all().await;
    let list = app.command(&["suppressions", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && listed.contains(OWNER), "{listed}");
    // Lifting by hand, then three reports again.
    let lift = app.command(&["suppressions", "lift", OWNER, "--by", "carol"]).output().unwrap();
    assert!(lift.status.success(), "{}", String::from_utf8_lossy(&lift.stderr));
    assert_eq!(app.admin_get("/suppressions").await.1, json!([]));
    let again = app.command(&["suppressions", "lift", OWNER]).output().unwrap();
    assert!(!again.status.success(), "nothing left to lift is an error");
    bounce_all().await;
    assert_eq!(app.admin_get("/suppressions").await.1.as_array().map(Vec::len), Some(1));
    // 31 days later (the window is 30 days by default): 31 * 86,400,000 ms.
    execute_sql(&app.database_url, "UPDATE bounces SET received_at = received_at - 2678400000").await;
    assert_eq!(app.admin_get("/suppressions").await.1, json!([]));
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hello again"})).await;
    let mails = relay.wait_for(6).await;
    assert!(mails.iter().filter(|m| m.rcpt_to == [OWNER]).count() >= 4, "mail flows again");
    app.stop().await;
}

/// A delivery report about mail to `failed` that returns the headers of
/// the message with `message_id`, as many mail systems send it.
fn hard_bounce_returning(failed: &str, message_id: &str) -> String {
    hard_bounce(failed).replace(
        "--b--\r\n",
        &format!(
            "--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\nTo: {failed}\r\n\r\n--b--\r\n"
        ),
    )
}

/// Issue 29: a report counts only at the notification's own verified VERP
/// address; its Message-ID proves nothing alone; one notification counts once.
#[tokio::test]
async fn reports_about_a_real_notification_count_only_at_its_own_bounce_address_and_once() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.delivery.max_hard_bounces = 2).await;
    let w = app.world("sandbox", None).await;
    let (chat_id, to_owner) = answered_chat(&app, &relay, &w).await;
    let message_id = to_owner.header("Message-ID");
    let token = to_owner.token();
    assert!(!message_id.contains(&token), "the Message-ID carries no reply token: {message_id}");
    assert!(
        !message_id.trim_matches(['<', '>']).split(['.', '@']).any(|part| part.parse::<i64>().is_ok()),
        "nor a sequence number: {message_id}"
    );
    // Whoever saw the notification (a forward, a Cc) knows its Message-ID
    // and its reply address; none of these reports may count.
    let verp = to_owner.mail_from.clone();
    let (verp_local, verp_domain) = verp.split_once('@').unwrap();
    let altered = {
        let mut chars: Vec<char> = verp_local.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
        format!("{}@{verp_domain}", chars.into_iter().collect::<String>())
    };
    let guessed_ids = [message_id.clone(), format!("<{token}.1@{DOMAIN}>"), format!("<{token}.7@{DOMAIN}>")];
    for rcpt in [format!("bounces@{DOMAIN}"), format!("support@{DOMAIN}"), to_owner.reply_address(), altered] {
        for id in &guessed_ids {
            let answer = app.send("", &[&rcpt], &hard_bounce_returning(OWNER, id)).await;
            assert!(answer.starts_with("250"), "{rcpt}: reports are taken, never refused: {answer}");
        }
    }
    let (_, bounces) = app.get("/bounces?limit=100").await;
    assert_eq!(bounces.as_array().map(Vec::len), Some(12), "{bounces}");
    assert!(bounces.as_array().unwrap().iter().all(|b| b["counted"] == false), "{bounces}");
    // Three genuine reports about the one notification count once.
    for _ in 0..3 {
        let answer = app.send("", &[&verp], &hard_bounce_returning(OWNER, &message_id)).await;
        assert!(answer.starts_with("250"), "{answer}");
    }
    let (_, bounces) = app.get("/bounces?limit=100").await;
    let counted = bounces.as_array().unwrap().iter().filter(|b| b["counted"] == true).count();
    assert_eq!(counted, 1, "{bounces}");
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert!(log[0]["reason"].as_str().unwrap_or("").contains("already counts"), "{log}");
    assert_eq!(app.admin_get("/suppressions").await.1, json!([]));
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Still there?"})).await;
    let mails = relay.wait_for(4).await;
    assert_eq!(mails.iter().filter(|m| m.rcpt_to == [OWNER]).count(), 2, "the customer still gets mail");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_new_chat_gets_one_notice_an_hour() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    app.world("sandbox", None).await;
    let support = format!("support@{DOMAIN}");
    for i in 0..2 {
        let message = format!(
            "From: {OWNER}\r\nTo: {support}\r\nSubject: Site down\r\nMessage-ID: <n{i}@acme.example>\r\n\r\nHelp\r\n"
        );
        let answer = app.send(OWNER, &[&support], &message).await;
        assert!(answer.starts_with("550 5.7.1"), "{answer}");
    }
    // A stranger and an auto-reply get nothing.
    let message = "From: nobody@elsewhere.example\r\nSubject: Hi\r\nMessage-ID: <n3@x>\r\n\r\nHelp\r\n";
    app.send("nobody@elsewhere.example", &[&support], message).await;
    let mails = relay.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay.messages().len(), 1, "one notice, only to the known sender");
    assert_eq!(mails[0].rcpt_to, [OWNER]);
    let text = mails[0].parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("Support > Launch Chat"), "{text}");
    assert_eq!(mails[0].header("Auto-Submitted"), "auto-generated");
    app.stop().await;
}

#[tokio::test]
async fn emergencies_on_on_call_plans_page_the_on_call_address() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.on_call_address = "pager@ops.example".to_owned()).await;
    let w = app.world("elite", None).await;
    let ticket = json!({"site_id": w.site, "customer_id": w.owner, "type": "Emergency", "subject": "Site down",
                        "description": "Live returns 503 everywhere"});
    app.create("/tickets", ticket).await;
    let mails = relay.wait_for(4).await; // two agents, the receipt, the page
    let page = mails.iter().find(|m| m.rcpt_to == ["pager@ops.example"]).expect("an on-call page");
    assert!(page.header("Subject").starts_with("[ON-CALL]"), "{}", page.header("Subject"));
    assert!(page.parsed().body_text(0).unwrap().contains("30 minutes"));

    // A plan without on-call pages nobody.
    let site = app.create("/sites", json!({"name": "small", "plan": "sandbox", "organization_id": w.org})).await;
    let chat = app.create("/chats", json!({"site_id": site["id"], "customer_id": w.owner, "message": "down!"})).await;
    assert!(chat["id"].as_i64().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(relay.messages().iter().filter(|m| m.rcpt_to == ["pager@ops.example"]).count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_chat_transcript_is_mailed_on_request() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Fixed it"})).await;
    relay.wait_for(3).await;
    let (status, body) = app.post(&format!("/chats/{chat_id}/transcript"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let mails = relay.wait_for(4).await;
    let transcript = &mails[3];
    assert_eq!(transcript.rcpt_to, [OWNER]);
    let text = transcript.parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("Checkout fails") && text.contains("Fixed it"), "{text}");
    let (status, _) = app.post(&format!("/chats/{chat_id}/transcript"), json!({"recipient_id": w.stranger})).await;
    assert_eq!(status, 403);
    app.stop().await;
}

/// A DNS cache holding the test's DKIM record, so that mail-auth (an
/// independent implementation) verifies without any network.
#[derive(Default)]
struct StaticTxt(std::sync::Mutex<std::collections::HashMap<String, mail_auth::Txt>>);

impl mail_auth::ResolverCache<String, mail_auth::Txt> for StaticTxt {
    fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        String: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        String: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: String, value: mail_auth::Txt, _valid_until: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

#[tokio::test]
async fn notifications_are_dkim_signed_and_verify_independently() {
    use mail_auth::common::parse::TxtRecordParser;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("dkim.pem");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    openssl(&["genrsa", "-traditional", "-out", key.to_str().unwrap(), "2048"]);
    let public_der = openssl(&["rsa", "-in", key.to_str().unwrap(), "-pubout", "-outform", "DER"]);
    let record = format!("v=DKIM1; k=rsa; p={}", data_encoding::BASE64.encode(&public_der));

    let relay = Capture::start().await;
    let key_path = key.clone();
    let app = app_with_relay(&relay, move |c| {
        c.delivery.dkim = Some(mailgate::config::DkimSettings {
            selector: "mg2026".to_owned(),
            domain: DOMAIN.to_owned(),
            private_key: key_path,
            algorithm: "rsa".to_owned(),
        });
    })
    .await;
    let w = app.world("sandbox", None).await;
    chat(&app, &w).await;
    let mails = relay.wait_for(1).await;
    let raw = mails[0].data.replace("\r\n", "\n").replace('\n', "\r\n");
    assert!(mails[0].header("DKIM-Signature").contains("s=mg2026"), "signed with our selector");
    // dkimpy, an implementation independent of ours, verifies it.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/dkim_verify.py");
    let mut child = std::process::Command::new("python3")
        .args([script, &record])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), raw.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy says {} {} (needs `pip install dkimpy`, which .ci/run does)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let cache = StaticTxt::default();
    let domain_key = mail_auth::common::verify::DomainKey::parse(record.as_bytes()).expect("our DNS record parses");
    let txt = mail_auth::Txt::DomainKey(std::sync::Arc::new(domain_key));
    for name in [format!("mg2026._domainkey.{DOMAIN}."), format!("mg2026._domainkey.{DOMAIN}")] {
        mail_auth::ResolverCache::insert(&cache, name, txt.clone(), std::time::Instant::now());
    }
    let authenticator = mail_auth::MessageAuthenticator::new_cloudflare().unwrap();
    let message = mail_auth::AuthenticatedMessage::parse(raw.as_bytes()).unwrap();
    let results = authenticator.verify_dkim(mail_auth::Parameters::new(&message).with_txt_cache(&cache)).await;
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| r.result() == &mail_auth::DkimResult::Pass), "{results:?}");

    // Altering the body breaks the signature: the verifier is really checking.
    let tampered = raw.replacen("Checkout fails", "Checkout works", 1);
    let message = mail_auth::AuthenticatedMessage::parse(tampered.as_bytes()).unwrap();
    let results = authenticator.verify_dkim(mail_auth::Parameters::new(&message).with_txt_cache(&cache)).await;
    assert!(results.iter().all(|r| r.result() != &mail_auth::DkimResult::Pass), "{results:?}");
    app.stop().await;
}

#[tokio::test]
async fn list_unsubscribe_by_mail_and_by_one_click() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.public_url = Some("https://mailgate.example.com".to_owned())).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    let mails = relay.wait_for(2).await;
    // The agents' notification offers both ways out.
    let header = mails[0].header("List-Unsubscribe");
    assert!(
        header.contains("<mailto:unsubscribe+") && header.contains("https://mailgate.example.com/unsubscribe/"),
        "{header}"
    );
    assert_eq!(mails[0].header("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");

    // Agent 1 unsubscribes by mail, agent 2 with one click.
    let mailto = header.split("<mailto:").nth(1).unwrap().split('>').next().unwrap().to_owned();
    let by_mail = mails.iter().find(|m| m.rcpt_to == [AGENT]).unwrap().header("List-Unsubscribe");
    let mailto_agent = by_mail.split("<mailto:").nth(1).unwrap().split('>').next().unwrap().to_owned();
    let answer = app.send(AGENT, &[&mailto_agent], "Subject: unsubscribe\r\n\r\n").await;
    assert!(answer.starts_with("250"), "{answer}");
    let click = mails.iter().find(|m| m.rcpt_to == [AGENT2]).unwrap().header("List-Unsubscribe");
    let url = click.split('<').nth(1).unwrap().split('>').next().unwrap();
    let path = url.trim_start_matches("https://mailgate.example.com");
    let http = format!("http://{}{path}", app.app.as_ref().unwrap().http_addr);
    let page = app.http.get(&http).send().await.unwrap();
    assert_eq!(page.status(), 200, "GET only shows a button");
    let done = app.http.post(&http).body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(!mailto.is_empty());

    // The customer writes again: no agent gets mail now.
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.owner, "text": "Anyone?"})).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(relay.messages().len(), 2, "both agents opted out of customer replies");
    // A forged link does nothing.
    let bad =
        app.http.post(format!("http://{}/unsubscribe/aaaaaaaaaaaaaaaaaaaaaaaaaa", app.app.as_ref().unwrap().http_addr));
    assert_eq!(bad.send().await.unwrap().status(), 404);
    app.stop().await;
}

/// A backlog several passes long, in folder mode with two delivery slots
/// (eight mails a pass): every item is sent once, as one file named after
/// it, and no temporary file is left behind.
#[tokio::test]
async fn a_backlog_goes_out_in_passes_each_mail_once() {
    let app = spawn_app_with(|c| c.delivery.concurrency = 2).await;
    let w = app.world("sandbox", None).await;
    for i in 0..20 {
        let id = chat(&app, &w).await;
        app.create(&format!("/chats/{id}/messages"), json!({"author_id": w.agent, "text": format!("Answer {i}")}))
            .await;
    }
    let mut items = serde_json::Value::Null;
    for _ in 0..400 {
        let (_, now) = app.get("/outbox?limit=1000").await;
        let all = now.as_array().cloned().unwrap_or_default();
        if all.len() >= 20 && all.iter().all(|i| i["status"] == "sent") {
            items = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let items = items.as_array().expect("every item sent").clone();
    let mut sent: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    sent.sort_unstable();
    let mut files: Vec<i64> = std::fs::read_dir(app.outbox_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|name| name.strip_suffix(".eml").unwrap_or_else(|| panic!("left behind: {name}")).parse().unwrap())
        .collect();
    files.sort_unstable();
    assert_eq!(files, sent, "one file per sent item");
    let answers = items.iter().filter(|i| i["kind"] == "agent_replied").count();
    assert_eq!(answers, 20, "each answer notified once: {items:?}");
}

/// In folder mode a mail the folder cannot take is not recorded as sent:
/// it waits for its next attempt with the error, and once the folder can
/// be written the same items go out, each once, with no temporary file
/// left behind.
#[tokio::test]
async fn an_unwritable_folder_loses_nothing() {
    let app = spawn_app_with(|c| {
        c.delivery.retry_base = Duration::from_millis(300);
        c.delivery.retry_max = Duration::from_millis(600);
    })
    .await;
    let w = app.world("sandbox", None).await;
    // A file where the folder should be: every write under it fails.
    std::fs::remove_dir_all(app.outbox_dir()).unwrap();
    std::fs::write(app.outbox_dir(), b"not a folder").unwrap();
    chat(&app, &w).await;
    let failed = wait_outbox(&app, |items| {
        items.len() == 2 && items.iter().all(|o| o["status"] == "pending" && o["attempts"].as_i64() >= Some(1))
    })
    .await;
    assert!(
        failed
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["last_error"].as_str().unwrap_or("").contains("outgoing-mail folder")),
        "the error names the folder: {failed}"
    );
    // The folder comes back; the next attempts write both mails.
    std::fs::remove_file(app.outbox_dir()).unwrap();
    std::fs::create_dir(app.outbox_dir()).unwrap();
    wait_outbox(&app, |items| items.iter().all(|o| o["status"] == "sent")).await;
    assert_eq!(app.read_outbox().len(), 2, "each mail written once");
    let names: Vec<String> =
        std::fs::read_dir(app.outbox_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| n.ends_with(".eml") && !n.starts_with('.')), "no temporary file left: {names:?}");
    app.stop().await;
}

/// Issue 22: after fixing a relay, an admin need not wait out the backoff.
#[tokio::test]
async fn a_pending_item_waiting_out_its_backoff_can_be_retried_now() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| {
        c.delivery.retry_base = Duration::from_secs(3600);
        c.delivery.retry_max = Duration::from_secs(3600);
    })
    .await;
    let w = app.world("sandbox", None).await;
    // The two agents' notifications of the new chat both meet a 421.
    relay.fail_next("421 4.3.0 try again later");
    relay.fail_next("421 4.3.0 try again later");
    chat(&app, &w).await;
    let items = wait_outbox(&app, |items| {
        items.len() == 2 && items.iter().all(|o| o["status"] == "pending" && o["attempts"] == 1)
    })
    .await;
    let waiting = items.as_array().unwrap().iter().find(|o| o["attempts"] == 1).unwrap().clone();
    let before = relay.messages().len();
    let (status, retried) = app.post(&format!("/outbox/{}/retry", waiting["id"]), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    relay.wait_for(before + 1).await;
    wait_outbox(&app, |items| items.iter().any(|o| o["id"] == waiting["id"] && o["status"] == "sent")).await;
}

/// Issue 22: a customer who unsubscribed gets nothing, and agents see why;
/// the unsubscribe can be undone and the skipped notification sent after all.
#[tokio::test]
async fn an_unsubscribed_customer_gets_a_skipped_item_agents_can_see_and_undo() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.public_url = Some("https://mailgate.example.com".to_owned())).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    relay.wait_for(2).await;
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "First answer"})).await;
    let mails = relay.wait_for(3).await;
    let header = mails.iter().find(|m| m.rcpt_to == [OWNER]).unwrap().header("List-Unsubscribe");
    let url = header.split('<').find(|p| p.starts_with("https://")).unwrap().split('>').next().unwrap();
    let http = format!(
        "http://{}{}",
        app.app.as_ref().unwrap().http_addr,
        url.trim_start_matches("https://mailgate.example.com")
    );
    assert_eq!(app.http.post(&http).body("List-Unsubscribe=One-Click").send().await.unwrap().status(), 200);
    let (_, unsubscribed) = app.get(&format!("/users/{}/unsubscribes", w.owner)).await;
    assert_eq!(unsubscribed[0]["kind"], "agent_replied", "{unsubscribed}");

    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Second answer"})).await;
    let skipped = wait_outbox(&app, |items| items.iter().any(|o| o["status"] == "skipped")).await;
    let item = skipped.as_array().unwrap().iter().find(|o| o["status"] == "skipped").unwrap().clone();
    assert_eq!(item["to_address"], OWNER);
    let why = item["last_error"].as_str().unwrap_or("");
    assert!(why.starts_with("skipped (unsubscribed)") && why.contains("DELETE /api/v1/users/"), "{why}");
    assert_eq!(relay.messages().len(), 3, "nothing was sent");

    // Undo, then send the skipped one after all.
    let undo =
        app.http.delete(format!("{}/users/{}/unsubscribes/agent_replied", app.base, w.owner)).bearer_auth(&app.token);
    assert_eq!(undo.send().await.unwrap().status(), 204);
    let again =
        app.http.delete(format!("{}/users/{}/unsubscribes/agent_replied", app.base, w.owner)).bearer_auth(&app.token);
    assert_eq!(again.send().await.unwrap().status(), 404, "nothing left to undo");
    let (status, retried) = app.post(&format!("/outbox/{}/retry", item["id"]), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    let mails = relay.wait_for(4).await;
    assert!(mails[3].data.contains("Second answer"), "the skipped notification went out");
    app.stop().await;
}

/// Issue 22: times in a notification are the recipient's (when known), else
/// the desk's, with the zone named; never bare UTC for everyone.
#[tokio::test]
async fn notification_times_are_in_the_recipients_zone_or_the_desks() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.time_zone = chrono_tz::Europe::Berlin).await;
    let w = app.world("sandbox", None).await;
    let (status, refused) = app
        .post("/users", json!({"email": "x@acme.example", "name": "X", "role": "member", "time_zone": "Mars/Olympus"}))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().unwrap_or("").contains("Mars/Olympus"), "{refused}");
    let tokyo = app
        .create(
            "/users",
            json!({"email": "kenji@acme.example", "name": "Kenji", "role": "member", "organization_id": w.org, "time_zone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(tokyo["time_zone"], "Asia/Tokyo");
    for customer in [w.owner, tokyo["id"].as_i64().unwrap()] {
        let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": customer, "message": "Hello"})).await;
        app.create(&format!("/chats/{}/messages", chat["id"]), json!({"author_id": w.agent, "text": "Hi there"})).await;
    }
    let mails = relay.wait_for(6).await;
    let text_to = |address: &str| {
        let mail = mails.iter().find(|m| m.rcpt_to == [address]).expect("a notification");
        mail.parsed().body_text(0).unwrap().into_owned()
    };
    let owner = text_to(OWNER);
    assert!(owner.contains(" CET") || owner.contains(" CEST"), "the desk's zone, named: {owner}");
    let kenji = text_to("kenji@acme.example");
    assert!(kenji.contains(" JST"), "the recipient's own zone: {kenji}");
    assert!(!owner.contains(" UTC") && !kenji.contains(" UTC"));
    app.stop().await;
}

/// Issue 20: the Dashboard link follows the configured template, and with
/// no Dashboard configured there is no link (never one to a route that does
/// not exist).
#[tokio::test]
async fn dashboard_links_follow_the_template_and_are_left_out_without_one() {
    let app =
        spawn_app_with(|c| c.dashboard_url = Some("https://app.example.com/support/{kind}/{id}".to_owned())).await;
    let (_, chat_id, note) = app.chat_with_note().await;
    assert!(note.body.contains(&format!("https://app.example.com/support/chat/{chat_id}")), "{}", note.body);
    app.stop().await;

    let app = spawn_app().await;
    let (_, _, note) = app.chat_with_note().await;
    assert!(!note.body.contains("http://") && !note.body.contains("https://"), "no link: {}", note.body);
    assert!(note.body.contains("reply to this email"), "{}", note.body);
    app.stop().await;
}

/// Issue 30: a notification is never larger than `[notify] max_message_bytes`.
#[tokio::test]
async fn a_reply_near_the_size_limit_makes_a_notification_under_the_cap() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| {
        c.limits.max_message_size = 4 * 1024 * 1024;
        c.delivery.max_message_bytes = 1024 * 1024;
    })
    .await;
    let w = app.world("sandbox", None).await;
    let (_, to_owner) = answered_chat(&app, &relay, &w).await;
    let reply_to = to_owner.reply_address();
    // 3.8 MB of text, quoted-printable-hostile: every line ends in spaces and '='.
    let text = "Logs follow = = =   \r\n".repeat(190_000);
    let mail = reply_mail(OWNER, &reply_to, "Hi", "huge-1@acme.example", "", &text);
    assert!(mail.len() > 3_800_000 && mail.len() < 4 * 1024 * 1024);
    let answer = app.send(OWNER, &[&reply_to], &mail).await;
    assert!(answer.starts_with("250 2.0.0"), "{answer}");
    let sent = relay.wait_for(4).await;
    for mail in &sent[3..] {
        assert!(mail.data.len() <= 1024 * 1024, "{} bytes", mail.data.len());
        let text = mail.parsed().body_text(0).unwrap().into_owned();
        assert!(text.contains("the rest is not shown here"), "{}", &text[text.len().saturating_sub(300)..]);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_two_thousand_replies_makes_one_notification_under_the_cap() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.delivery.coalesce_window = Duration::from_secs(15)).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    let posts: Vec<_> = (0..8)
        .map(|t| {
            let (base, token, http) = (app.base.clone(), app.token.clone(), app.http.clone());
            let owner = w.owner;
            tokio::spawn(async move {
                for n in 0..250 {
                    let body = json!({"author_id": owner, "text": format!("Reply {t}-{n}: still broken")});
                    let url = format!("{base}/chats/{chat_id}/messages");
                    let response = http.post(url).bearer_auth(&token).json(&body).send().await.unwrap();
                    assert!(response.status().is_success());
                }
            })
        })
        .collect();
    for post in posts {
        post.await.unwrap();
    }
    // The first reply's notification falls due 15 s after it and carries
    // the replies that came by then; the rest go in the next.
    for _ in 0..300 {
        let seen: usize = relay.messages().iter().map(|m| shown(m).1).sum();
        let omitted: usize = relay.messages().iter().map(|m| shown(m).0).sum();
        if seen + omitted >= 4_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let merged: Vec<_> = relay.messages().into_iter().filter(|m| shown(m).1 > 0).collect();
    assert!(merged.iter().any(|m| shown(m).0 > 0), "a merge says how many it leaves out");
    for mail in &merged {
        assert!(mail.data.len() < 10 * 1024 * 1024 && mail.data.len() < 200_000, "{} bytes", mail.data.len());
        assert!(shown(mail).1 <= 20, "the first and last messages shown, at most twenty");
    }
    app.stop().await;
}

/// Of a notification about a burst: the replies it counts as left out, and
/// those it shows.
fn shown(mail: &crate::capture::Captured) -> (usize, usize) {
    let whole = mail.parsed().body_text(0).map(std::borrow::Cow::into_owned).unwrap_or_default();
    // The new messages; what follows is the earlier conversation.
    let text = whole.split("Earlier in this conversation").next().unwrap_or_default();
    let omitted = text.split("[... ").skip(1).filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok()).sum();
    (omitted, text.matches("still broken").count())
}

/// Issue 33: the From shows who wrote. An agent's message comes from
/// "Name (Desk)", automatic mail from the desk's name (`[notify] from_name`),
/// always at the support address (or `[notify] from_address`).
#[tokio::test]
async fn the_from_name_shows_the_agent_who_wrote_and_the_desk_otherwise() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |config| config.delivery.from_name = "Acme Support".to_owned()).await;
    let w = app.world("sandbox", None).await;
    let chat_id = chat(&app, &w).await;
    relay.wait_for(2).await; // the agents hear of the new chat
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "On it"})).await;
    relay.wait_for(3).await;
    let mail = relay.messages();
    let to_agent = mail.iter().find(|m| m.rcpt_to == [AGENT]).expect("the agent heard of the chat");
    let decoded = |m: &crate::capture::Captured| {
        let parsed = m.parsed();
        let from = parsed.from().and_then(|a| a.first()).unwrap();
        (from.name().unwrap_or_default().to_owned(), from.address().unwrap_or_default().to_owned())
    };
    assert_eq!(decoded(to_agent), ("Acme Support".to_owned(), format!("support@{DOMAIN}")), "the customer wrote it");
    let to_owner = mail.iter().find(|m| m.rcpt_to == [OWNER]).expect("the customer heard of the answer");
    assert_eq!(decoded(to_owner), ("Alex Agent (Acme Support)".to_owned(), format!("support@{DOMAIN}")));
    assert!(
        to_owner.header("Reply-To").starts_with("\"Acme Support\"")
            || to_owner.header("Reply-To").starts_with("Acme Support")
    );
}

/// Issue 33: a customer whose plan pages on-call, refused a new chat by
/// email, is told the emergency route (in the answer and the notice);
/// others are not, nor is a forged From.
#[tokio::test]
async fn a_refused_new_chat_names_the_emergency_route_to_customers_with_on_call_only() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |config| {
        config.auth.records.insert("_dmarc.acme.example".to_owned(), "v=DMARC1; p=none".to_owned());
    })
    .await;
    app.world("elite", None).await;
    let support = format!("support@{DOMAIN}");
    let emergency = format!("downtime@{DOMAIN}");
    let message = format!(
        "From: {OWNER}\r\nTo: {support}\r\nSubject: Site down\r\nMessage-ID: <oc1@acme.example>\r\n\r\nHelp\r\n"
    );
    let answer = app.send(OWNER, &[&support], &message).await;
    let (_, log) = app.get("/inbound-log?limit=1").await;
    assert!(answer.starts_with("550 5.7.1") && answer.contains(&emergency), "{answer} {log}");
    let mails = relay.wait_for(1).await;
    let text = mails[0].parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains(&format!("write to {emergency}")) && text.contains("pages the on-call engineers"), "{text}");
    // The stranger on the same plan's domain is told nothing of it.
    let stranger = format!(
        "From: {STRANGER}\r\nTo: {support}\r\nSubject: Down\r\nMessage-ID: <oc2@elsewhere.example>\r\n\r\nHelp\r\n"
    );
    let answer = app.send(STRANGER, &[&support], &stranger).await;
    assert!(answer.starts_with("550 5.7.1") && !answer.contains("downtime@"), "{answer}");
    app.stop().await;

    // A From that is not proved (SPF fails, no DMARC record) is not told either.
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |config| {
        config.auth.records.insert("acme.example".to_owned(), "v=spf1 ip4:203.0.113.5 -all".to_owned());
    })
    .await;
    app.world("elite", None).await;
    let answer = app.send(OWNER, &[&support], &message).await;
    assert!(answer.starts_with("550 5.7.1") && !answer.contains("downtime@"), "{answer}");
    app.stop().await;

    // On a plan without on-call, nobody is told of the route.
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |_| {}).await;
    app.world("business", None).await;
    let answer = app.send(OWNER, &[&support], &message).await;
    assert!(answer.starts_with("550 5.7.1") && !answer.contains("downtime@"), "{answer}");
    let mails = relay.wait_for(1).await;
    assert!(!mails[0].parsed().body_text(0).unwrap().contains("downtime@"));
}

/// Waits for the `n`th mail to `address`.
async fn nth_to(relay: &Capture, address: &str, n: usize) -> crate::capture::Captured {
    for _ in 0..400 {
        let mails: Vec<_> = relay.messages().into_iter().filter(|m| m.rcpt_to == [address]).collect();
        if let Some(mail) = mails.into_iter().nth(n - 1) {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no mail {n} to {address}");
}

/// A reply from the owner to `to` carrying PDF files (name, bytes).
fn reply_with_files(to: &str, subject: &str, id: &str, files: &[(&str, &[u8])]) -> String {
    let mut message = format!(
        "From: {OWNER}\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=files\r\n\r\n--files\r\nContent-Type: text/plain\r\n\r\nThe logs.\r\n"
    );
    for (name, content) in files {
        let encoded = data_encoding::BASE64.encode(content);
        let lines: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
        message.push_str(&format!(
            "--files\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        ));
    }
    message.push_str("--files--\r\n");
    message
}

/// Issue 33: an agent's notification carries the customer's files when
/// together they are small enough, else a signed download link for each.
#[tokio::test]
async fn an_agent_gets_the_customers_files_attached_or_as_download_links() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| {
        c.public_url = Some("https://mailgate.example.com".to_owned());
        c.delivery.attach_max_bytes = 100_000;
    })
    .await;
    let w = app.world("sandbox", None).await;
    let (_, note) = answered_chat(&app, &relay, &w).await;
    let address = note.reply_address();
    let subject = note.header("Subject");
    let small: Vec<u8> = (0..5_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mail = reply_with_files(&address, &subject, "f1@acme.example", &[("small.pdf", &small)]);
    assert!(app.send(OWNER, &[&address], &mail).await.starts_with("250"));
    // The agents heard of the chat (1); the reply with a small file (2).
    let mail = nth_to(&relay, AGENT, 2).await;
    let parsed = mail.parsed();
    let attached = parsed.attachments().next().expect("the file is attached");
    let name = mail_parser::MimeHeaders::attachment_name(attached);
    assert_eq!((name, attached.contents()), (Some("small.pdf"), &small[..]));
    assert!(parsed.body_text(0).unwrap().contains("small.pdf (application/pdf, 5000 bytes) [attached]"));

    // Two files over the limit together: listed with links, none attached.
    let big: Vec<u8> = (0..60_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let mail = reply_with_files(&address, &subject, "f2@acme.example", &[("a.pdf", &big), ("b.pdf", &big[..50_000])]);
    assert!(app.send(OWNER, &[&address], &mail).await.starts_with("250"));
    let mail = nth_to(&relay, AGENT, 3).await;
    let parsed = mail.parsed();
    assert_eq!(parsed.attachments().count(), 0);
    let text = parsed.body_text(0).unwrap().into_owned();
    let links: Vec<&str> =
        text.split_whitespace().filter(|w| w.starts_with("https://mailgate.example.com/download/")).collect();
    assert_eq!(links.len(), 2, "{text}");
    let http = app.app.as_ref().unwrap().http_addr;
    let fetch = |link: &str| {
        let url = link.replacen("https://mailgate.example.com", &format!("http://{http}"), 1);
        async move { reqwest::get(url).await.unwrap() }
    };
    let response = fetch(links[0]).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains("a.pdf"));
    assert_eq!(response.bytes().await.unwrap(), big);
    // A link changed by one letter downloads nothing.
    let mut forged = links[1].to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(fetch(&forged).await.status(), 404);
    // The customer's own notifications never carry files or links.
    assert!(relay.messages().iter().filter(|m| m.rcpt_to == [OWNER]).all(|m| !m.data.contains("/download/")));
}
