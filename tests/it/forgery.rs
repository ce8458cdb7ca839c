//! Issue 29: nothing forged gets in. Every spelling and shape of `From:`
//! an attacker could use to be stored as the customer; threading without a
//! reply address needs an authenticated author; the SMTP envelope's own
//! forgeries; guessing credentials is slowed, then refused.

use crate::support::*;
use serde_json::json;
use std::collections::HashMap;

/// acme.example (the customer's domain) sends only from 192.0.2.1 and asks
/// receivers to reject what fails DMARC; evil.example lets anyone send.
fn hostile_dns() -> HashMap<String, String> {
    HashMap::from([
        ("acme.example".to_owned(), "v=spf1 ip4:192.0.2.1 -all".to_owned()),
        ("_dmarc.acme.example".to_owned(), "v=DMARC1; p=reject".to_owned()),
        ("evil.example".to_owned(), "v=spf1 +all".to_owned()),
    ])
}

/// Header sections that try to make the customer (olivia@acme.example) the
/// author of a message the attacker (mallory@evil.example) sends.
fn from_spellings() -> Vec<(&'static str, String)> {
    let o = OWNER;
    let m = "mallory@evil.example";
    vec![
        ("two fields, attacker first", format!("From: {m}\r\nFrom: {o}\r\n")),
        ("two fields, customer first", format!("From: {o}\r\nFrom: {m}\r\n")),
        ("upper and lower case", format!("FROM: {m}\r\nfrom: {o}\r\n")),
        ("mixed case", format!("fRoM: {o}\r\nFrom: {m}\r\n")),
        ("space before the colon", format!("From: {m}\r\nFrom : {o}\r\n")),
        ("tab before the colon", format!("From: {m}\r\nFrom\t: {o}\r\n")),
        ("spaces inside the name", format!("From: {m}\r\nF r o m: {o}\r\n")),
        ("folded value", format!("From: {m}\r\nFrom:\r\n {o}\r\n")),
        ("folded twice", format!("From:\r\n\t{o}\r\nFrom:\r\n {m}\r\n")),
        ("bare line feeds", format!("From: {m}\nFrom: {o}\n")),
        ("a list, attacker first", format!("From: {m}, {o}\r\n")),
        ("a list, customer first", format!("From: {o}, {m}\r\n")),
        ("a list in brackets", format!("From: <{o}>, <{m}>\r\n")),
        ("a list with names", format!("From: \"Olivia\" <{o}>, \"Mallory\" <{m}>\r\n")),
        ("semicolon list", format!("From: {o};{m}\r\n")),
        ("a group of two", format!("From: team: {o}, {m};\r\n")),
        ("a group of one", format!("From: team: {o};\r\n")),
        ("an empty group and the customer", format!("From: undisclosed-recipients:;\r\nFrom: {o}\r\n")),
        ("the same address twice", format!("From: {o}\r\nFrom: {o}\r\n")),
        ("an empty field and the customer", format!("From:\r\nFrom: {o}\r\n")),
        ("no From at all, Sender the customer", format!("Sender: {o}\r\n")),
        ("the customer alone (spoofed)", format!("From: {o}\r\n")),
        ("the customer in capitals", format!("From: {}\r\n", o.to_uppercase())),
        ("the customer, Sender the attacker", format!("From: {o}\r\nSender: {m}\r\n")),
        ("customer in the name, attacker's address", format!("From: \"{o}\" <{m}>\r\n")),
        ("attacker in the name, customer's address", format!("From: \"{m}\" <{o}>\r\n")),
        ("customer in a comment", format!("From: {m} ({o})\r\n")),
        ("attacker in a comment", format!("From: {o} ({m})\r\n")),
        ("encoded word holding the address", "From: =?utf-8?q?olivia=40acme=2Eexample?=\r\n".to_owned()),
        ("encoded name, attacker's address", format!("From: =?utf-8?b?b2xpdmlhQGFjbWUuZXhhbXBsZQ==?= <{m}>\r\n")),
        ("quoted local part with @", format!("From: \"{o}\"@evil.example\r\n")),
        ("look-alike Cyrillic letter", "From: olivia@acm\u{0435}.example\r\n".to_owned()),
        ("fullwidth at sign", "From: olivia\u{FF20}acme.example\r\n".to_owned()),
        ("trailing dot", format!("From: {o}.\r\n")),
        ("Resent-From the customer", format!("From: {m}\r\nResent-From: {o}\r\n")),
        ("Reply-To the customer", format!("From: {m}\r\nReply-To: {o}\r\n")),
        ("two brackets in one mailbox", format!("From: <{o}> <{m}>\r\n")),
    ]
}

/// The customer's chat, answered (its id and the notification she got),
/// and a ticket of hers (its number), on a plan with tickets.
async fn chat_and_ticket(app: &TestApp) -> (i64, Eml, i64) {
    let w = app.world("business", Some("agencies")).await;
    let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hello"})).await;
    let chat_id = chat["id"].as_i64().unwrap();
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hi"})).await;
    let note = app.wait_for_mail(3).await.remove(2);
    (chat_id, note, ticket_of_owner(app, &w).await)
}

/// A new ticket of the owner's: its number.
async fn ticket_of_owner(app: &TestApp, w: &World) -> i64 {
    let ticket = app
        .create(
            "/tickets",
            json!({"site_id": w.site, "customer_id": w.owner, "type": "Billing", "subject": "Invoice", "description": "x"}),
        )
        .await;
    ticket["ticket_number"].as_i64().unwrap()
}

/// The rest of a message after its From spelling.
fn message(from_fields: &str, to: &str, subject: &str, id: usize) -> String {
    format!(
        "{from_fields}To: {to}\r\nSubject: {subject}\r\nMessage-ID: <forged-{id}@evil.example>\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Please send the invoice to my new address.\r\n"
    )
}

#[tokio::test]
async fn no_spelling_of_from_gets_a_message_stored_as_the_customer() {
    let app = spawn_app_with(|c| c.auth.records = hostile_dns()).await;
    let (chat_id, note, number) = chat_and_ticket(&app).await;
    let (chat_before, ticket_before) = (
        app.messages(&format!("/chats/{chat_id}")).await.len(),
        app.messages(&format!("/tickets/{number}")).await.len(),
    );
    let support = format!("support@{DOMAIN}");
    let spellings = from_spellings();
    assert!(spellings.len() >= 30);
    let mut answers = Vec::new();
    for (i, (case, fields)) in spellings.iter().enumerate() {
        let to_chat = message(fields, &note.reply_address(), "Re: Hi", 2 * i);
        let answer = app.send("mallory@evil.example", &[&note.reply_address()], &to_chat).await;
        assert!(answer.starts_with("250") || answer.starts_with("550 5.7.1"), "{case} (reply address): {answer}");
        answers.push((case, "reply address", answer));
        let tagged = message(fields, &support, &format!("Re: [Ticket #{number}] Invoice"), 2 * i + 1);
        let answer = app.send("mallory@evil.example", &[&support], &tagged).await;
        assert!(answer.starts_with("250") || answer.starts_with("550 5.7.1"), "{case} (ticket tag): {answer}");
        answers.push((case, "ticket tag", answer));
    }
    assert_eq!(app.messages(&format!("/chats/{chat_id}")).await.len(), chat_before, "nothing posted in the chat");
    assert_eq!(app.messages(&format!("/tickets/{number}")).await.len(), ticket_before, "nothing posted in the ticket");
    // What was answered 250 is held for an admin, with the reason.
    let (_, log) = app.get("/inbound-log?limit=200").await;
    let entries = log.as_array().unwrap();
    assert!(entries.iter().all(|e| e["decision"] != "accepted"), "{log}");
    let (_, held) = app.admin_get("/held?limit=200").await;
    let codes: Vec<&str> = held.as_array().unwrap().iter().filter_map(|h| h["reason_code"].as_str()).collect();
    assert!(codes.contains(&"ambiguous_author"), "{held}");
    let held_count = answers.iter().filter(|(_, _, a)| a.starts_with("250")).count();
    assert_eq!(held.as_array().unwrap().len(), held_count, "every 250 is a held item: {answers:?}");
    // A message with no single author cannot be released as anyone's.
    let ambiguous = held.as_array().unwrap().iter().find(|h| h["reason_code"] == "ambiguous_author").unwrap();
    let (status, refused) = app.admin_post(&format!("/held/{}/release", ambiguous["id"]), json!({"by": "anna"})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("no single author"), "{refused}");
    app.stop().await;
}

#[tokio::test]
async fn with_refuse_a_message_of_two_authors_is_refused_with_a_sentence() {
    let app = spawn_app_with(|c| {
        c.auth.records = hostile_dns();
        c.auth.refuse_ambiguous_author = true;
    })
    .await;
    let note = app.chat_with_note().await.2;
    let fields = format!("From: mallory@evil.example\r\nFrom: {OWNER}\r\n");
    let answer = app.send("mallory@evil.example", &[&note.reply_address()], &message(&fields, "x", "Re: Hi", 1)).await;
    assert!(answer.starts_with("550 5.7.1") && answer.contains("exactly one author"), "{answer}");
    assert!(answer.contains("2 From: fields"), "{answer}");
    app.stop().await;
}

/// Threading by anything but the author's own reply address needs the
/// author's domain authenticated; without it the message waits for an admin.
#[tokio::test]
async fn threading_without_a_reply_address_needs_an_authenticated_author() {
    // acme.example publishes nothing: its mail is not authenticated.
    let app = spawn_app_with(|c| c.auth.records = HashMap::new()).await;
    let (chat_id, note, number) = chat_and_ticket(&app).await;
    let support = format!("support@{DOMAIN}");

    // The customer's own reply address: enough, since acme.example has no DMARC policy.
    let own = reply_mail(OWNER, &note.reply_address(), "Hi", "own-1@acme.example", "", "By my reply address");
    assert!(app.send(OWNER, &[&note.reply_address()], &own).await.starts_with("250 2.0.0"));
    // A Message-ID, a subject tag, someone else's reply address: held.
    let by_id = reply_mail(
        OWNER,
        &support,
        "Hi",
        "id-1@acme.example",
        &format!("In-Reply-To: {}\r\n", note.header("Message-ID")),
        "By Message-ID",
    );
    let tagged =
        reply_mail(MEMBER, &support, &format!("[Ticket #{number}] Invoice"), "tag-1@acme.example", "", "By tag");
    let others = reply_mail(MEMBER, &note.reply_address(), "Hi", "other-1@acme.example", "", "Olivia's address");
    for (from, to, mail) in
        [(OWNER, &support, by_id), (MEMBER, &support, tagged), (MEMBER, &note.reply_address(), others)]
    {
        let answer = app.send(from, &[to], &mail).await;
        assert!(answer.starts_with("250"), "{answer}");
    }
    let (_, held) = app.admin_get("/held").await;
    let codes: Vec<&str> = held.as_array().unwrap().iter().filter_map(|h| h["reason_code"].as_str()).collect();
    assert_eq!(codes, ["unauthenticated_fallback"; 3], "{held}");
    let texts: Vec<String> = app
        .messages(&format!("/chats/{chat_id}"))
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(texts, ["Hello", "Hi", "By my reply address"]);
    // An admin releases one: it lands where it pointed.
    let id = held[0]["id"].as_i64().unwrap();
    let (status, _) = app.admin_post(&format!("/held/{id}/release"), json!({"by": "anna"})).await;
    assert_eq!(status, 200);
    app.stop().await;

    // With SPF aligned for the domain (the suite's usual DNS) the same
    // signals thread at once.
    let app = spawn_app().await;
    let w = app.world("business", Some("agencies")).await;
    let number = ticket_of_owner(&app, &w).await;
    let tagged = reply_mail(MEMBER, &support, &format!("[Ticket #{number}] Invoice"), "tag-2@acme.example", "", "Ok");
    assert!(app.send(MEMBER, &[&support], &tagged).await.starts_with("250 2.0.0"));
    app.stop().await;
}

#[tokio::test]
async fn the_envelope_cannot_smuggle_utf8_or_an_absurd_size() {
    let app = spawn_app().await;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example", "250").await;
    smtp.expect("MAIL FROM:<ol\u{00ef}via@acme.example>", "553 5.6.7").await;
    smtp.expect("MAIL FROM:<ol\u{00ef}via@acme.example> SMTPUTF8", "250").await;
    smtp.expect("RSET", "250").await;
    smtp.expect("MAIL FROM:<olivia@acme.example>", "250").await;
    smtp.expect(&format!("RCPT TO:<s\u{00fc}pport@{DOMAIN}>"), "553 5.6.7").await;
    smtp.expect("RSET", "250").await;
    for size in ["99999999999999999999999999", "18446744073709551616", "184467440737095516160000001", "26214401"] {
        smtp.expect(&format!("MAIL FROM:<olivia@acme.example> SIZE={size}"), "552 5.3.4").await;
    }
    smtp.expect("MAIL FROM:<olivia@acme.example> SIZE=1000", "250").await;
    app.stop().await;
}

/// Issue 30 §3: a server that pipelines more recipients than allowed gets
/// `452` for the extra ones and delivers the message to the others.
#[tokio::test]
async fn eighty_pipelined_recipients_deliver_to_the_first_fifty() {
    let app = spawn_app().await;
    let note = app.chat_with_note().await.2;
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO relay.example", "250").await;
    let mut batch = format!("MAIL FROM:<{OWNER}>\r\n");
    for _ in 0..80 {
        batch.push_str(&format!("RCPT TO:<{}>\r\n", note.reply_address()));
    }
    batch.push_str("DATA\r\n");
    smtp.write(batch.as_bytes()).await;
    assert!(smtp.read_reply().await.starts_with("250"));
    let mut answers = Vec::new();
    for _ in 0..80 {
        answers.push(smtp.read_reply().await);
    }
    assert!(answers[..50].iter().all(|a| a.starts_with("250")), "{answers:?}");
    assert!(answers[50..].iter().all(|a| a.starts_with("452 4.5.3")), "{answers:?}");
    assert!(smtp.read_reply().await.starts_with("354"));
    let mail = reply_mail(OWNER, &note.reply_address(), "Hi", "many-1@acme.example", "", "Fifty of me");
    smtp.write(&dot_stuff(&mail)).await;
    let answer = smtp.cmd(".").await;
    assert!(answer.starts_with("250 2.0.0"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn guessing_tokens_is_slowed_then_refused_per_client_and_counted() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let api = |token: &str, client: &str| {
        http.get(format!("{}/plans", app.base)).bearer_auth(token).header("x-forwarded-for", client).send()
    };
    let guesser = "198.51.100.7";
    let mut statuses = Vec::new();
    for i in 0..11 {
        statuses.push(api(&format!("guess-{i}"), guesser).await.unwrap().status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
    let locked = api(&app.token, guesser).await.unwrap();
    assert_eq!(locked.status(), 429, "even the right token waits");
    let retry: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Anyone else is served at once.
    assert_eq!(api(&app.token, "198.51.100.8").await.unwrap().status(), 200);
    // The admin API's Bearer check is guarded the same way.
    let admin = http
        .get(format!("{}/admin/held", app.base))
        .bearer_auth("wrong")
        .header("x-forwarded-for", guesser)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 429);
    let http_addr = app.app.as_ref().unwrap().http_addr;
    let scrape = http.get(format!("http://{http_addr}/metrics")).bearer_auth(app.admin_token()).send();
    let metrics = scrape.await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("mailgate_credential_failures_total{credential=\"api\",result=\"wrong\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"locked\""), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn weak_configured_tokens_are_refused_at_start_with_how_to_make_one() {
    for (api, admin) in [(Some("dev-token"), None), (None, Some("passwordpasswordpasswordpassword"))] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = mailgate::config::Config::for_data_dir(dir.path(), DOMAIN);
        config.api_token = api.map(str::to_owned);
        config.admin_token = admin.map(str::to_owned);
        let error = match mailgate::app::start(config).await {
            Ok(_) => panic!("started with a weak token"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("too easy to guess") && error.contains("openssl rand -hex 24"), "{error}");
    }
}
