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

/// Issue 20: lists with filters, a page at a time; the pages stay right while
/// new rows arrive.
#[tokio::test]
async fn lists_filter_and_page_stably_while_rows_arrive() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    let open = |n: usize| {
        app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": format!("Problem {n}")}))
    };
    let mut first = Vec::new();
    for n in 0..25 {
        first.push(open(n).await["id"].as_i64().unwrap());
    }
    let ids = |page: &serde_json::Value| -> Vec<i64> {
        page.as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect()
    };
    let (status, page1) = app.get("/chats?limit=10").await;
    assert_eq!(status, 200, "{page1}");
    let page1 = ids(&page1);
    assert_eq!(page1.len(), 10);
    for n in 25..30 {
        open(n).await; // newer rows arrive between pages
    }
    let mut seen = page1.clone();
    let mut cursor = *page1.last().unwrap();
    loop {
        let (_, page) = app.get(&format!("/chats?limit=10&before_id={cursor}")).await;
        let page = ids(&page);
        if page.is_empty() {
            break;
        }
        cursor = *page.last().unwrap();
        seen.extend(page);
    }
    first.reverse();
    assert_eq!(seen, first, "every chat of the first listing once, in order, none of the newer ones");

    // Filters.
    app.post(&format!("/chats/{}/close", first[0]), json!({})).await;
    let (_, closed) = app.get("/chats?status=closed").await;
    assert_eq!(ids(&closed), vec![first[0]]);
    let (_, mine) = app.get(&format!("/chats?customer_id={}&limit=1000", w.stranger)).await;
    assert_eq!(mine, json!([]), "the stranger has none");
    let (_, found) = app.get("/users?email=OLIVIA@acme.example").await;
    assert_eq!((found.as_array().map(Vec::len), found[0]["id"].as_i64()), (Some(1), Some(w.owner)), "a user by email");
    let (_, agents) = app.get("/users?role=agent").await;
    assert_eq!(agents.as_array().map(Vec::len), Some(2));
    let (_, tickets) = app.get(&format!("/tickets?organization_id={}", w.org)).await;
    assert_eq!(tickets, json!([]));
    let refused =
        format!("From: {OWNER}\r\nTo: support@{DOMAIN}\r\nSubject: New\r\nMessage-ID: <l1@acme.example>\r\n\r\nHi\r\n");
    app.send(OWNER, &[&format!("support@{DOMAIN}")], &refused).await;
    let (_, log) = app.get("/inbound-log?decision=rejected&sender=OLIVIA").await;
    assert_eq!(log.as_array().map(Vec::len), Some(1), "{log}");
    let (_, none) = app.get("/inbound-log?decision=accepted").await;
    assert_eq!(none, json!([]));
    let (status, error) = app.get("/chats?colour=red").await;
    assert_eq!(status, 400, "an unknown filter is an error, not everything: {error}");
    let (status, _) = app.get("/outbox?status=lost").await;
    assert_eq!(status, 400);
    app.stop().await;
}

/// Issue 20: erasing a person (GDPR) leaves no personal data, keeps or
/// removes their messages as asked, stops their tokens, and is audited.
#[tokio::test]
async fn an_erased_user_leaves_no_personal_data_and_their_tokens_stop() {
    let app = spawn_app().await;
    let (w, chat_id, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let reply = format!(
        "From: {OWNER}\r\nTo: {to}\r\nSubject: Re: {}\r\nMessage-ID: <erase-1@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nMy phone is 555-0100.\r\n\
         --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"passport.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        note.header("Subject"),
        "JVBERi0xLjQK".repeat(50)
    );
    assert!(app.send(OWNER, &[&to], &reply).await.starts_with("250"));
    let before = app.messages(&format!("/chats/{chat_id}")).await;
    let emailed = before.last().unwrap()["id"].as_i64().unwrap();
    assert_eq!(app.get_bytes(&format!("/messages/{emailed}/raw")).await.0, 200);

    let erase =
        app.http.delete(format!("{}/users/{}?messages=anonymise&by=dpo", app.base, w.owner)).bearer_auth(&app.token);
    let response = erase.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["attachments_removed"], 1, "{report}");
    assert!(report["originals_removed"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["messages_anonymised"], 2, "the opening message and the emailed reply: {report}");

    let (_, user) = app.get(&format!("/users/{}", w.owner)).await;
    assert_eq!(user["name"], "Erased user");
    assert!(user["email"].as_str().unwrap().ends_with("@erased.invalid") && user["erased_at"].is_string(), "{user}");
    let after = app.messages(&format!("/chats/{chat_id}")).await;
    assert_eq!(after.len(), before.len(), "anonymised, not removed");
    let text = serde_json::to_string(&after).unwrap();
    assert!(!text.contains(OWNER) && !text.contains("Olivia") && !text.contains("passport.pdf"), "{text}");
    assert_ne!(app.get_bytes(&format!("/messages/{emailed}/raw")).await.0, 200, "the original is gone");
    let (_, log) = app.get("/inbound-log?sender=olivia").await;
    assert_eq!(log, json!([]), "their address is out of the inbound log");
    let (_, found) = app.get(&format!("/users?email={OWNER}")).await;
    assert_eq!(found, json!([]));

    // Their reply address stops at once, and says why.
    let again = reply.replace("erase-1@", "erase-2@");
    let answer = app.send(OWNER, &[&to], &again).await;
    assert!(answer.contains("550 5.1.1") && answer.contains("no longer in our directory"), "{answer}");
    let (_, audit) = app.admin_get("/audit").await;
    assert_eq!(
        (audit[0]["action"].as_str(), audit[0]["actor"].as_str()),
        (Some("user.erased"), Some("dpo")),
        "{audit}"
    );
    let twice = app.http.delete(format!("{}/users/{}", app.base, w.owner)).bearer_auth(&app.token);
    assert_eq!(twice.send().await.unwrap().status(), 404);

    // An erased person can open nothing; removing instead of anonymising
    // takes a member's message out of their chat.
    let (status, _) = app.post("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "x"})).await;
    assert_ne!(status, 201, "an erased user opens nothing");
    let theirs = app.create("/chats", json!({"site_id": w.site, "customer_id": w.member, "message": "Call me"})).await;
    let remove = app.http.delete(format!("{}/users/{}?messages=remove", app.base, w.member)).bearer_auth(&app.token);
    let report: serde_json::Value = remove.send().await.unwrap().json().await.unwrap();
    assert_eq!(report["messages_removed"], 1, "{report}");
    assert_eq!(app.messages(&format!("/chats/{}", theirs["id"])).await.len(), 0);
    app.stop().await;
}

/// Issue 33: an organization's mail domains, checked, unique across
/// organizations, never the desk's own.
#[tokio::test]
async fn organizations_have_mail_domains_that_are_theirs_alone() {
    let app = spawn_app().await;
    let (status, acme) = app
        .post(
            "/organizations",
            json!({"name": "Acme", "domains": ["ACME.example", "acme.example", "acme-mail.example."]}),
        )
        .await;
    assert_eq!(status, 201, "{acme}");
    assert_eq!(acme["domains"], json!(["acme-mail.example", "acme.example"]), "lower case, once, sorted");
    let id = acme["id"].as_i64().unwrap();
    let (_, read) = app.get(&format!("/organizations/{id}")).await;
    assert_eq!(read["domains"], acme["domains"]);
    // Another organization cannot take one of them, and nothing of it is created.
    let (status, refused) =
        app.post("/organizations", json!({"name": "Copycat", "domains": ["other.example", "acme.example"]})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains(&format!("acme.example belongs to organization {id}")),
        "{refused}"
    );
    let (status, other) = app.post("/organizations", json!({"name": "Other", "domains": ["other.example"]})).await;
    assert_eq!(status, 201, "other.example was not kept by the refused request: {other}");
    // Bad names and the desk's own domain are refused, naming the field.
    for bad in ["not a domain", "localhost", "-acme.example", DOMAIN, &format!("mail.{DOMAIN}"), ""] {
        let (status, answer) = app.post("/organizations", json!({"name": "Bad", "domains": [bad]})).await;
        assert_eq!(status, 400, "{bad:?}: {answer}");
        assert!(answer["error"].as_str().unwrap().starts_with("domains:"), "{answer}");
    }
    let many: Vec<String> = (0..51).map(|i| format!("d{i}.example")).collect();
    assert_eq!(app.post("/organizations", json!({"name": "Many", "domains": many})).await.0, 400);
    // PATCH replaces the list; a domain freed is free for another organization.
    let (status, patched) = app.patch(&format!("/organizations/{id}"), json!({"domains": ["acme.example"]})).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["domains"], json!(["acme.example"]));
    let other_id = other["id"].as_i64().unwrap();
    let (status, taken) = app
        .patch(&format!("/organizations/{other_id}"), json!({"domains": ["other.example", "acme-mail.example"]}))
        .await;
    assert_eq!(status, 200, "{taken}");
    let (status, clash) = app.patch(&format!("/organizations/{other_id}"), json!({"domains": ["acme.example"]})).await;
    assert_eq!(status, 409, "{clash}");
    let (_, unchanged) = app.get(&format!("/organizations/{other_id}")).await;
    assert_eq!(unchanged["domains"], json!(["acme-mail.example", "other.example"]), "a refused change changes nothing");
    let (_, renamed) = app.patch(&format!("/organizations/{id}"), json!({"name": "Acme GmbH"})).await;
    assert_eq!(renamed["domains"], json!(["acme.example"]), "a rename keeps the domains");
}
