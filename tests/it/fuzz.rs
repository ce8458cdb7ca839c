//! Property tests in place of coverage-guided fuzzing (cargo fuzz needs a
//! nightly toolchain, which this project can not install): arbitrary and
//! mutated input into the message pipeline, the SMTP session and the rules
//! compiler. Nothing may panic, and the session answers only in SMTP.
//!
//! `scripts/fuzz` runs these with many more cases (PROPTEST_CASES); a
//! failing case is kept by proptest under `proptest-regressions/` and becomes
//! a regression test.

use mailgate::config::Limits;
use mailgate::pipeline::Pipeline;
use mailgate::smtp::session::{SessionContext, run};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The fixture corpus: seeds for the mutations.
fn corpus() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(std::fs::read(path).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail"), &mut out);
    out
}

/// A byte-level mutation of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn mutate(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len().max(1);
        match m {
            Mutation::Flip(at, byte) => {
                if !data.is_empty() {
                    data[at % len] ^= byte;
                }
            }
            Mutation::Truncate(at) => data.truncate(at % len),
            Mutation::Insert(at, bytes) => {
                let at = (at % len).min(data.len());
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n % 4096).min(data.len());
                let copy = data[at.min(data.len())..end].to_vec();
                data.splice(end..end, copy);
            }
        }
    }
    data
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
        // The shapes that break parsers: boundaries, encodings, CR/LF/NUL.
        (
            any::<usize>(),
            prop::sample::select(vec![
                b"\r\n--".to_vec(),
                b"\r\n\r\n".to_vec(),
                b"=?utf-8?B?".to_vec(),
                b"\0".to_vec(),
                b"\r".to_vec(),
                b"Content-Type: multipart/mixed; boundary=x\r\n".to_vec(),
                b"=\r\n".to_vec(),
                b"\xff\xfe".to_vec(),
            ])
        )
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

/// Cases per property: 64 in the test suite, more under `scripts/fuzz`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn the_pipeline_reads_any_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = mailgate::pipeline::analyze("", &[], &data);
    }

    #[test]
    fn the_pipeline_reads_mutated_real_mail(seed in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..8)) {
        let corpus = corpus();
        let data = mutate(corpus[seed.index(corpus.len())].clone(), &mutations);
        if let Some(analysis) = mailgate::pipeline::analyze("a@example.org", &[], &data) {
            // What comes out is valid UTF-8 by construction; it must also be bounded.
            prop_assert!(analysis.reply_text.len() <= data.len() * 4 + 64);
        }
    }

    #[test]
    fn the_relay_readers_take_any_received_and_authentication_results(
        fields in prop::collection::vec((prop::sample::select(vec!["received", "authentication-results"]), relay_field()), 0..40)
    ) {
        use mailgate::pipeline::relayed::{checked_client, ClientSource, Relay};
        let headers: Vec<(String, String)> = fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let relay = Relay { trusted: true, ..Relay::default() };
        let peer = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        let client = checked_client(&relay, peer, Some("mx"), &headers, &["mx.trusted.example".to_owned()]);
        let client = client.expect("a trusted relay's connection is always a client");
        // A client read from Received: fields is the topmost one's, never one below it.
        if client.source == ClientSource::Received {
            let top = headers.iter().find(|(n, _)| n == "received").and_then(|(_, v)| mailgate::pipeline::parse::received_hop(v));
            prop_assert_eq!(client.ip, top.and_then(|hop| hop.ip));
        }
        // From a peer that is not trusted, the fields are never read.
        let stranger = Some(std::net::IpAddr::from([198, 51, 100, 7]));
        let client = checked_client(&Relay::default(), stranger, None, &headers, &["mx.trusted.example".to_owned()]).unwrap();
        prop_assert_eq!(client.source, ClientSource::Connection);
        prop_assert_eq!(client.ip, stranger);
    }

    #[test]
    fn the_rules_compiler_takes_any_text(text in "(\\[\\[rules\\]\\]|name = \"x\"|\\[rules\\.(when|then|unless)\\]|subject = '[^']{0,8}'|drop = true|kind = \"[a-z_]{0,10}\"|\n){0,30}") {
        let _ = mailgate::rules::compile(&text, "fuzz.toml");
    }
}

/// A `Received:` or `Authentication-Results` value as an attacker might
/// write it: real shapes, nested comments, brackets, addresses, junk.
fn relay_field() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("from mail.acme.example (mail.acme.example [203.0.113.5]) by mx (Postfix) with ESMTPS id X".to_owned()),
        Just("from [127.0.0.1] (helo=localhost) by mx with esmtp (Exim 4.96)".to_owned()),
        Just("mx.trusted.example; spf=pass smtp.mailfrom=a@acme.example".to_owned()),
        Just("mx.trusted.example 1; spf=fail (x (y (z".to_owned()),
        Just("[IPv6:2001:db8::1]".to_owned()),
        Just(";".to_owned()),
        Just("\"".to_owned()),
        "\\(".prop_map(|open| open.repeat(50)),
        "[ -~\t]{0,120}",
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.join(" "))
}

/// Runs one SMTP session over an in-memory pipe, feeding `input` in chunks;
/// returns everything the server said.
async fn converse(ctx: Arc<SessionContext>, input: Vec<u8>, chunk: usize) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    // A fresh address per conversation, so the bad-token tarpit of one case
    // does not slow down the next.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let peer = std::net::SocketAddr::from(([127, (n >> 16) as u8, (n >> 8) as u8, n as u8], 40000));
    let session = tokio::spawn(run(
        server,
        mailgate::smtp::session::Peer::tcp(peer),
        ctx,
        tokio_util::sync::CancellationToken::new(),
        None,
    ));
    let (mut read, mut write) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        for piece in input.chunks(chunk.max(1)) {
            if write.write_all(piece).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read.read_to_end(&mut out)).await;
    let _ = writer.await;
    session.await.expect("the session never panics");
    out
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO fuzz.example\r\n".to_vec()),
        Just(b"HELO x\r\n".to_vec()),
        Just(b"MAIL FROM:<a@example.org>\r\n".to_vec()),
        Just(b"MAIL FROM:<> SIZE=99999999999999999999\r\n".to_vec()),
        Just(b"RCPT TO:<support@fuzz.test>\r\n".to_vec()),
        Just(b"RCPT TO:<postmaster@fuzz.test>\r\n".to_vec()),
        Just(b"RCPT TO:<reply+aaaaaaaaaaaaaaaaaaaaaaaaaa@fuzz.test>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"Subject: x\r\n\r\nbody\r\n.\r\n".to_vec()),
        Just(b"BDAT 10 LAST\r\n".to_vec()),
        Just(b"RSET\r\nNOOP\r\n".to_vec()),
        Just(b"LHLO fuzz.example\r\n".to_vec()),
        Just(b"XFORWARD ADDR=203.0.113.5 HELO=mail.acme.example NAME=[UNAVAILABLE]\r\n".to_vec()),
        Just(b"XFORWARD ADDR=IPv6:2001:db8::1 PROTO=ESMTP SOURCE=REMOTE\r\n".to_vec()),
        Just(b"XFORWARD HELO=a+2Bb+0A\r\n".to_vec()),
        Just(b"XCLIENT ADDR=203.0.113.9 HELO=x\r\n".to_vec()),
        Just(b"XCLIENT\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn the_smtp_session_answers_any_conversation_in_smtp() {
    answers_any_conversation(false, Default::default());
}

#[test]
fn the_lmtp_session_from_a_trusted_relay_answers_any_conversation_in_lmtp() {
    let trusted = mailgate::domain::Networks::parse(&["127.0.0.0/8".to_owned()]).unwrap();
    answers_any_conversation(true, trusted);
}

/// Every line a session writes is a reply line, whatever it is sent, in
/// whatever pieces; the session never panics. `lmtp`: the LMTP session;
/// `trusted`: the relays whose XFORWARD and XCLIENT are taken.
fn answers_any_conversation(lmtp: bool, trusted: mailgate::domain::Networks) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = runtime.block_on(async {
        let (store, signer) =
            mailgate::app::open_store(&mailgate::config::Config::for_data_dir(dir.path(), "fuzz.test")).await.unwrap();
        let rules = Arc::new(mailgate::rules::LiveRules::new(mailgate::rules::RuleSet::built_in()));
        let pipeline = Pipeline::new(store, signer, "fuzz.test".to_owned(), rules, "oncall@fuzz.test".to_owned());
        let limits = Limits {
            max_message_size: 64 * 1024,
            command_timeout: std::time::Duration::from_secs(5),
            ..Limits::default()
        };
        Arc::new(SessionContext {
            open_sessions: Default::default(),
            hostname: "fuzz.test".to_owned(),
            domain: "fuzz.test".to_owned(),
            limits,
            pipeline,
            metrics: Default::default(),
            bad_tokens: Default::default(),
            tls: None,
            lmtp,
            trusted_relays: trusted,
            proxy_protocol_from: Default::default(),
        })
    });
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(48), ..ProptestConfig::default() });
    runner
        .run(&(prop::collection::vec(command(), 0..24), 1usize..64), |(commands, chunk)| {
            let input: Vec<u8> = commands.concat();
            let out = runtime.block_on(converse(Arc::clone(&ctx), input, chunk));
            let text = String::from_utf8_lossy(&out);
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                let code_ok = line.len() >= 4
                    && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                    && (line.as_bytes()[3] == b' ' || line.as_bytes()[3] == b'-');
                prop_assert!(code_ok, "not an SMTP reply line: {line:?}");
            }
            Ok(())
        })
        .unwrap();
}

/// One `From:` field as an attacker might write it: a spelling of the
/// name, and one or more mailboxes, perhaps as a group.
fn from_field() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["From", "FROM", "from", "From ", "F r o m", "From\t"]);
    let mailbox = prop::sample::select(vec![
        "olivia@acme.example",
        "mike@acme.example",
        "pat@plain.example",
        "mallory@evil.example",
        "\"olivia@acme.example\" <mallory@evil.example>",
        "Pat <pat@plain.example>",
        "pat@plain.example (olivia@acme.example)",
        "=?utf-8?q?pat=40plain=2Eexample?=",
    ]);
    (name, prop::collection::vec(mailbox, 1..3), any::<bool>(), any::<bool>()).prop_map(
        |(name, boxes, group, folded)| {
            let list = boxes.join(", ");
            let value = if group { format!("team: {list};") } else { list };
            let gap = if folded { "\r\n " } else { " " };
            format!("{name}:{gap}{value}\r\n")
        },
    )
}

/// Issue 29's property: whenever a message is stored as author A, A's
/// domain was authenticated, or A's own reply address was used and A's
/// domain publishes no DMARC record. Here acme.example (Olivia, Mike)
/// publishes `p=reject` and sends only from 192.0.2.1, so nothing may be
/// stored as them; plain.example (Pat) publishes nothing, so Pat's mail may
/// be stored only through Pat's own reply address, from Pat alone.
#[test]
fn a_message_is_stored_as_its_author_only_when_proven() {
    use crate::support::*;
    use serde_json::json;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (app, olivia_note, pat_note, ticket) = runtime.block_on(async {
        let app = spawn_app_with(|c| {
            c.auth.records = std::collections::HashMap::from([
                ("acme.example".to_owned(), "v=spf1 ip4:192.0.2.1 -all".to_owned()),
                ("_dmarc.acme.example".to_owned(), "v=DMARC1; p=reject".to_owned()),
                ("evil.example".to_owned(), "v=spf1 +all".to_owned()),
            ]);
        })
        .await;
        let w = app.world("business", Some("agencies")).await;
        let pat = app
            .create("/users", json!({"email": "pat@plain.example", "name": "Pat", "role": "member", "organization_id": w.org}))
            .await["id"]
            .as_i64()
            .unwrap();
        let mut notes = Vec::new();
        for customer in [w.owner, pat] {
            let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": customer, "message": "Hello"})).await;
            let id = chat["id"].as_i64().unwrap();
            let before = app.wait_for_mail(0).await.len();
            app.create(&format!("/chats/{id}/messages"), json!({"author_id": w.agent, "text": "Hi"})).await;
            let mails = app.wait_for_mail(before + 3).await;
            notes.push(mails.into_iter().rev().find(|m| m.to() != AGENT && m.to() != AGENT2).unwrap());
        }
        let ticket = app
            .create(
                "/tickets",
                json!({"site_id": w.site, "customer_id": w.owner, "type": "Billing", "subject": "Invoice", "description": "x"}),
            )
            .await["ticket_number"]
            .as_i64()
            .unwrap();
        let pat_note = notes.pop().unwrap();
        (app, notes.pop().unwrap(), pat_note, ticket)
    });
    // The control: Pat alone, through Pat's own reply address, is stored.
    let control = format!(
        "From: pat@plain.example\r\nTo: {0}\r\nSubject: Re: Hi\r\nMessage-ID: <control@x.example>\r\n\r\nHi back\r\n",
        pat_note.reply_address()
    );
    let answer = runtime.block_on(app.send("pat@plain.example", &[&pat_note.reply_address()], &control));
    assert!(answer.starts_with("250 2.0.0 Stored") || answer.starts_with("250 2.0.0"), "{answer}");
    assert_eq!(runtime.block_on(app.get("/inbound-log?limit=1")).1[0]["decision"], "accepted");
    let support = format!("support@{DOMAIN}");
    let paths = vec![olivia_note.reply_address(), pat_note.reply_address(), support.clone()];
    let envelope_senders = vec!["mallory@evil.example", "olivia@acme.example", "pat@plain.example"];
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(64), ..ProptestConfig::default() });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(
            &(
                prop::collection::vec(from_field(), 0..3),
                prop::sample::select(paths),
                prop::sample::select(envelope_senders),
                any::<bool>(),
            ),
            |(fields, path, mail_from, in_reply_to)| {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let threading = match (path == support, in_reply_to) {
                    (true, true) => format!("In-Reply-To: {}\r\n", pat_note.header("Message-ID")),
                    _ => String::new(),
                };
                let message = format!(
                    "{}To: {path}\r\nSubject: Re: [Ticket #{ticket}] Hi\r\nMessage-ID: <prop-{n}@x.example>\r\n{threading}\r\nNew text {n}\r\n",
                    fields.concat()
                );
                let (answer, log) = runtime.block_on(async {
                    let answer = app.send(mail_from, &[&path], &message).await;
                    (answer, app.get("/inbound-log?limit=1").await.1)
                });
                if answer.starts_with("250 2.0.0") && log[0]["decision"] == "accepted" {
                    let thread = log[0]["thread_id"].as_i64().unwrap();
                    let stored = runtime.block_on(async {
                        let (_, thread_json) = app.get(&format!("/chats/{thread}")).await;
                        let kind = if thread_json["id"].is_null() { "tickets" } else { "chats" };
                        let key = if kind == "tickets" { ticket } else { thread };
                        app.messages(&format!("/{kind}/{key}")).await
                    });
                    let author = stored.last().unwrap()["author"]["email"].as_str().unwrap().to_owned();
                    prop_assert_eq!(&author, "pat@plain.example", "only Pat can be proven here: {}", message);
                    prop_assert_eq!(&path, &pat_note.reply_address(), "through Pat's own reply address: {}", message);
                }
                Ok(())
            },
        )
        .unwrap();
    runtime.block_on(app.stop());
}

/// One piece of an HTML document an attacker builds: elements of every
/// kind opened (often never closed), text, entities, stray end tags, long
/// attribute lists, quote containers.
fn html_piece() -> impl Strategy<Value = String> {
    let element = prop::sample::select(vec![
        "div",
        "blockquote",
        "b",
        "span",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "table",
        "tr",
        "td",
        "p",
        "pre",
        "a",
        "font",
        "center",
        "h1",
        "script",
        "style",
        "br",
        "img",
        "hr",
        "select",
        "option",
        "textarea",
        "title",
    ]);
    prop_oneof![
        4 => (element.clone(), 1usize..3000).prop_map(|(e, n)| format!("<{e}>").repeat(n)),
        2 => (element.clone(), 1usize..3000).prop_map(|(e, n)| format!("</{e}>").repeat(n)),
        1 => (1usize..500).prop_map(|n| "<blockquote type=\"cite\"><div class=\"gmail_quote\">".repeat(n)),
        1 => (1usize..2000).prop_map(|n| format!("<div{}>", " a=\"b\"".repeat(n))),
        1 => (1usize..2000).prop_map(|n| "&amp;&#x263A;&nbsp;&lt;".repeat(n)),
        2 => "[a-z <>/=\"'&;#\\n]{0,200}",
        1 => Just("<div id=\"divRplyFwdMsg\">From: x</div>".to_owned()),
    ]
}

/// Nested multiparts and messages inside messages, `depth` deep.
fn nested_mime(depth: usize, message_inside: bool) -> String {
    let mut out = String::from("From: a@example.org\r\nSubject: x\r\n");
    for i in 0..depth {
        if message_inside && i % 2 == 1 {
            out.push_str("Content-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\n");
        } else {
            out.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"));
        }
    }
    out.push_str("Content-Type: text/html\r\n\r\n<div>inner</div>\r\n");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// Structure-aware: deep and wide HTML of every element, read as a
    /// reply's body, never panics (a stack overflow would abort the whole
    /// test binary), and its text stays within twice its size.
    #[test]
    fn deeply_nested_html_of_any_shape_reads_in_bounds(pieces in prop::collection::vec(html_piece(), 1..12)) {
        let html = pieces.concat();
        let text = mailgate::pipeline::extract::html::to_text(&html, true);
        prop_assert!(text.len() <= html.len() * 2 + 64 * 1024);
        let raw = format!("From: a@example.org\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n{html}\r\n");
        if let Some(analysis) = mailgate::pipeline::analyze("a@example.org", &[], raw.as_bytes()) {
            prop_assert!(analysis.reply_text.len() <= raw.len() * 2 + 64 * 1024);
        }
    }

    /// Multiparts and messages nested up to thousands deep are parsed, or
    /// counted and left unparsed, without taking the stack.
    #[test]
    fn deeply_nested_mime_reads_in_bounds(depth in 1usize..6000, message_inside in any::<bool>()) {
        let raw = nested_mime(depth, message_inside);
        let _ = mailgate::pipeline::analyze("a@example.org", &[], raw.as_bytes());
    }
}

/// One line of a plain-text reply as clients shape them: the person's
/// text, quotes, attributions in several languages, header blocks, rules,
/// mobile footers (alone or as a sentence), signature delimiters, lines of
/// invisible characters, our marker.
fn reply_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-zäöüß ,.!?]{0,60}".prop_map(|t| t.trim().to_owned()),
        3 => "[a-z ,.]{0,50}".prop_map(|t| format!("> {t}")),
        1 => Just(">".to_owned()),
        1 => Just("On Mon, 23 Nov 2026 at 10:00, Support <s@x.example> wrote:".to_owned()),
        1 => Just("Op ma 23 nov. 2026 om 10:00 schreef Support <s@x.example>:".to_owned()),
        1 => Just("2016-03-03 17:21 GMT+01:00 Support <s@x.example>:".to_owned()),
        1 => Just("From: Support <s@x.example>".to_owned()),
        1 => Just("Van: de boekhouding kreeg ik de vraag.".to_owned()),
        1 => Just("Sent: Monday".to_owned()),
        1 => Just("________________________________".to_owned()),
        1 => Just("———".to_owned()),
        1 => Just("Sent from my iPhone".to_owned()),
        1 => Just("Sent from my phone at the airport, so later.".to_owned()),
        1 => Just("Get Outlook for iOS<https://aka.ms/o0ukef>".to_owned()),
        1 => Just("-- ".to_owned()),
        1 => Just("\u{200b}\u{200c}\u{034f}".to_owned()),
        1 => Just("-- Reply above this line --".to_owned()),
        1 => Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Structure-aware: a reply of any shape reads to lines of its own
    /// (never text that was not there), and removing a notification's echo
    /// never empties it nor invents a line.
    #[test]
    fn replies_of_any_shape_read_to_their_own_lines(lines in prop::collection::vec(reply_line(), 0..60), sent in prop::collection::vec(reply_line(), 0..30)) {
        let text = lines.join("\n");
        let read = mailgate::pipeline::extract::new_text(&text, Some("Anna Example"));
        for line in read.lines().filter(|l| !l.is_empty()) {
            prop_assert!(lines.iter().any(|l| l.trim_end() == line), "{line:?} is not a line of {text:?}");
        }
        let sent = sent.join("\n");
        if let Some(removed) = mailgate::pipeline::extract::echo::remove(&read, &sent) {
            prop_assert!(!removed.text.trim().is_empty());
            prop_assert!(removed.lines > 0);
            for line in removed.text.lines().filter(|l| !l.is_empty()) {
                prop_assert!(read.lines().any(|l| l == line));
            }
        }
    }
}

/// `inspect --json` answers every message of the fixture suite and 120
/// mutations of them with one JSON object and exit status 0: what the
/// server would store, or that it would hold what it cannot read.
#[test]
fn inspect_prints_a_json_object_for_every_fixture_and_mutation() {
    use std::io::Write;
    let binary = env!("CARGO_BIN_EXE_mailgate");
    let mut inputs = corpus();
    // Deterministic mutations (a small linear congruential generator), so
    // that a failure names the same input every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let seeds = inputs.len();
    for _ in 0..120 {
        let seed = inputs[next() % seeds].clone();
        let mutations: Vec<Mutation> = (0..1 + next() % 6)
            .map(|_| match next() % 4 {
                0 => Mutation::Flip(next(), (next() % 255 + 1) as u8),
                1 => Mutation::Truncate(next()),
                2 => Mutation::Insert(
                    next(),
                    [b"\r\n--".as_slice(), b"\r\n\r\n", b"\0", b"\r", b"\n\n"][next() % 5].to_vec(),
                ),
                _ => Mutation::Duplicate(next(), next()),
            })
            .collect();
        inputs.push(mutate(seed, &mutations));
    }
    inputs.push(Vec::new());
    inputs.push(b"just words, no header section\n".to_vec());
    for (i, input) in inputs.iter().enumerate() {
        let mut child = std::process::Command::new(binary)
            .args(["inspect", "--json", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mailgate runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "input {i}: {}", String::from_utf8_lossy(&out.stderr));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("input {i}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        assert!(value.is_object(), "input {i}: {value}");
    }
}
