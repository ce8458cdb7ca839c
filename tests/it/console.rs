//! The admin console in a real browser: Debian's Chromium, headless, driven
//! through WebDriver (chromedriver) by fantoccini. `scripts/test` installs
//! both when missing. Set `MAILGATE_SCREENSHOTS=DIR` to keep the pages'
//! screenshots (the README's come from `MAILGATE_SCREENSHOTS=docs/screenshots`).

use crate::capture::Capture;
use crate::delivery::{answered_chat, app_with_relay, hard_bounce};
use crate::support::{ADMIN_TOKEN, DOMAIN, OWNER, STRANGER, TestApp, reply_mail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    /// Ends chromedriver and the Chromium it started (its own process group),
    /// also when a test fails before closing its session.
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: a plain kill(2) on the process group this test made.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Starts chromedriver and a headless Chromium session.
async fn browser() -> (Driver, Client) {
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is missing: install Debian's chromium and chromium-driver (scripts/test does)");
    let port = free_port();
    let child = Command::new(chromedriver)
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a profile folder");
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}"), _profile: profile };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }),
    );
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        if let Ok(client) = ClientBuilder::new(connector).capabilities(caps.clone()).connect(&driver.url).await {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start a Chromium session at {}", driver.url);
}

/// Keeps a screenshot of the page when `MAILGATE_SCREENSHOTS` names a folder.
async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("MAILGATE_SCREENSHOTS") else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
}

async fn text(client: &Client, css: &str) -> String {
    client.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

/// Clicks something that does not load a page (a checkbox).
async fn tick(client: &Client, css: &str) {
    client.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Clicks a link or a form's button and waits for the page it loads: the
/// old page is marked first, and the wait ends only once a document without
/// the mark has finished loading. Waiting for an element instead would find
/// it on the old page when the new one is slow (the old page often has it).
async fn click(client: &Client, css: &str) {
    client.execute("document.documentElement.dataset.leaving = '1'", vec![]).await.expect("the old page is marked");
    tick(client, css).await;
    let loaded = "return document.readyState === 'complete' && document.documentElement.dataset.leaving === undefined";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // While the new page replaces the old one a script may fail: try again.
        if let Ok(serde_json::Value::Bool(true)) = client.execute(loaded, vec![]).await {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "clicking {css} loaded no new page within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The console's base URL.
fn console(app: &TestApp) -> String {
    app.base.trim_end_matches("/api/v1").to_owned() + "/admin"
}

/// Waits until the outbox has an item in `status`; its id.
async fn outbox_item(app: &TestApp, status: &str) -> i64 {
    for _ in 0..100 {
        let (_, items) = app.get(&format!("/outbox?status={status}")).await;
        if let Some(id) = items[0]["id"].as_i64() {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {status} outbox item");
}

#[tokio::test]
async fn an_admin_finds_reads_tries_retries_lifts_and_logs_out_in_a_real_browser() {
    let relay = Capture::start().await;
    let app = app_with_relay(&relay, |c| c.delivery.max_hard_bounces = 1).await;
    let w = app.world("sandbox", None).await;
    let (chat_id, to_owner) = answered_chat(&app, &relay, &w).await;
    // A reply whose subject and text carry markup: it must show as text.
    let hostile = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
    let reply_to = to_owner.parsed().reply_to().and_then(|r| r.first()).and_then(|a| a.address()).unwrap().to_owned();
    let answer = app
        .send(OWNER, &[&reply_to], &reply_mail(OWNER, &reply_to, hostile, "hostile@acme.example", "", hostile))
        .await;
    assert!(answer.starts_with("250"), "{answer}");
    // Mail that tries to start a chat is refused.
    let refused = app
        .send(
            "newbie@acme.example",
            &[&format!("support@{DOMAIN}")],
            "From: newbie@acme.example\r\nSubject: Help\r\n\r\nhi\r\n",
        )
        .await;
    assert!(refused.starts_with("550"), "{refused}");
    // The customer's address bounces: mail to it stops, the next notification fails.
    app.send("", &[&to_owner.mail_from], &hard_bounce(OWNER)).await;
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Still there?"})).await;
    let first_failed = outbox_item(&app, "failed").await;
    app.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hello?"})).await;
    let failed = loop {
        let id = outbox_item(&app, "failed").await;
        if id != first_failed {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mailed_before = relay.messages().len();

    let (_driver, b) = browser().await;
    let base = console(&app);

    // Logged out: the console sends you to its login; a wrong token is refused.
    b.goto(&format!("{base}/log")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/admin/login"));
    b.find(Locator::Css("#token")).await.unwrap().send_keys("not-the-token").await.unwrap();
    click(&b, "#login").await;
    assert!(text(&b, "#flash").await.contains("not the admin token"));
    screenshot(&b, "login").await;
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    b.wait().for_element(Locator::Css("table#log")).await.unwrap();
    let url = b.current_url().await.unwrap();
    assert!(!url.as_str().contains(ADMIN_TOKEN), "no token in a URL: {url}");
    screenshot(&b, "inbound-log").await;

    // Find the refused message and read why.
    b.find(Locator::Css("select[name=decision]")).await.unwrap().select_by_value("rejected").await.unwrap();
    click(&b, "#filter").await;
    assert!(b.current_url().await.unwrap().query().unwrap_or_default().contains("decision=rejected"));
    let rows = b.find_all(Locator::Css("table#log td a")).await.unwrap();
    assert_eq!(rows.len(), 1, "one refused transaction");
    click(&b, "table#log td a").await;
    let reason = text(&b, "#reason").await;
    assert!(reason.contains("can not be started by email"), "{reason}");
    assert!(text(&b, "#answer").await.starts_with("550 5.7.1"));
    screenshot(&b, "refused-entry").await;

    // The reply with markup: every field shows it as text, nothing runs.
    b.goto(&format!("{base}/log?decision=accepted")).await.unwrap();
    click(&b, "table#log td a").await;
    assert!(text(&b, "#subject").await.contains("<script>document.title='pwned'</script>"));
    assert!(text(&b, "#source").await.contains("<img src=x onerror="));
    assert!(text(&b, "#extracted").await.contains("<script>"), "the text posted shows the markup as text");
    assert_eq!(b.title().await.unwrap(), format!("Inbound log entry {} · mailgate console", accepted_id(&b).await));
    assert!(b.source().await.unwrap().contains("&lt;script&gt;"));
    assert!(!text(&b, "#steps").await.is_empty());
    let link = b.find(Locator::Css("#download")).await.unwrap().attr("href").await.unwrap().unwrap_or_default();
    assert!(link.starts_with("/admin/log/") && link.ends_with("/raw"), "{link}");
    screenshot(&b, "log-entry").await;
    let entry_url = b.current_url().await.unwrap();

    // The rules playground: a rule that drops such mail changes its decision.
    click(&b, "a[href^='/admin/rules?log=']").await;
    let rules = b.find(Locator::Css("#rules")).await.unwrap().prop("value").await.unwrap().unwrap_or_default();
    let edited = rules.replacen(
        "[[rules]]",
        "[[rules]]\nname = \"drop-markup\"\n[rules.when]\nsubject = \"(?i)<script\"\n[rules.then]\ndrop = true\n\n[[rules]]",
        1,
    );
    // The message picker names each message by its Subject.
    assert!(text(&b, "#pick").await.contains(hostile), "{}", text(&b, "#pick").await);
    set_value(&b, "#rules", "broken = [").await;
    click(&b, "#check").await;
    assert!(text(&b, ".rule-error").await.contains("line 1"), "an error is shown at its line");
    assert!(text(&b, "#listing").await.contains("broken = ["));
    // Every error of a file is reported, not only the first.
    let every_error =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/rules/broken/every_error.toml"));
    set_value(&b, "#rules", &every_error.unwrap()).await;
    click(&b, "#check").await;
    let errors = texts(&b, ".rule-error").await;
    assert_eq!(errors.len(), 4, "{errors:?}");
    // A rule that tags and routes: the dry run says what it does.
    let routed = rules.replacen(
        "[[rules]]",
        "[[rules]]\nname = \"tag-markup\"\ncontinue = true\n[rules.when]\nsubject = \"(?i)<script\"\n[rules.then]\nqueue = \"security\"\npriority = \"high\"\ntags = [\"xss\"]\n\n[[rules]]",
        1,
    );
    set_value(&b, "#rules", &routed).await;
    click(&b, "#run").await;
    let effects = text(&b, "#effects").await;
    assert!(
        effects.contains("queue security") && effects.contains("priority high") && effects.contains("tags xss"),
        "{effects}"
    );
    assert!(text(&b, "#source").await.contains("Message-ID:"), "the message as it arrived, not the rules' source");
    set_value(&b, "#rules", &edited).await;
    click(&b, "#check").await;
    assert!(text(&b, "#checked").await.contains("all good"));
    click(&b, "#run").await;
    assert_eq!(text(&b, "#edited-decision").await, "dropped");
    assert_eq!(text(&b, "#live-decision").await, "accepted");
    assert!(text(&b, "#trace").await.contains("drop-markup"));
    click(&b, "#diff").await;
    assert!(text(&b, "#compared").await.starts_with("1 of the last"), "{}", text(&b, "#compared").await);
    assert!(text(&b, "#changes").await.contains("dropped [drop-markup]"));
    b.execute("document.querySelector('h2#results').scrollIntoView()", vec![]).await.unwrap();
    screenshot(&b, "rules-playground").await;

    // The suppression: lift it.
    b.goto(&format!("{base}/bounces")).await.unwrap();
    assert!(text(&b, "#suppressions").await.contains(OWNER));
    screenshot(&b, "bounces").await;
    click(&b, "#lift-1").await;
    assert!(text(&b, "#flash").await.contains(&format!("Mail goes to {OWNER} again")));
    assert!(text(&b, "#suppressions").await.contains("No address is suppressed"));

    // The failed notification: retry it, and it goes out.
    b.goto(&format!("{base}/outbox?status=failed")).await.unwrap();
    assert_eq!(text(&b, "#failed-badge").await, "2 failed", "the menu counts what waits for an admin");
    assert!(text(&b, "#outbox").await.contains("suppressed"), "the last error says why");
    screenshot(&b, "outbox").await;
    click(&b, &format!("#retry-{failed}")).await;
    assert!(text(&b, "#flash").await.contains(&format!("Item {failed} is queued")));
    let mails = relay.wait_for(mailed_before + 1).await;
    assert!(mails.iter().skip(mailed_before).any(|m| m.rcpt_to == [OWNER]), "the retried notification was sent");
    // The other one with a bulk retry of the chosen items.
    b.goto(&format!("{base}/outbox?status=failed")).await.unwrap();
    tick(&b, &format!("input[name=id][value='{first_failed}']")).await;
    click(&b, "#retry-chosen").await;
    assert!(text(&b, "#flash").await.contains(&format!("Item {first_failed} is queued")));
    relay.wait_for(mailed_before + 2).await;

    // Templates: every notification previewed, and the check passes.
    b.goto(&format!("{base}/templates")).await.unwrap();
    assert!(text(&b, "#check").await.contains("all good"));
    assert!(text(&b, "#kind-agent_replied").await.contains("agent_replied"));
    screenshot(&b, "templates").await;

    // Forms need the session's token and this site's origin.
    let cookie = b.get_named_cookie(mailgate::console::SESSION_COOKIE).await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let session = format!("{}={}", cookie.name(), cookie.value());
    let post = |form: Vec<(&'static str, String)>, origin: Option<String>| {
        let mut request = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{base}/bounces/lift"))
            .header("cookie", session.clone())
            .form(&form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let address = || ("address", OWNER.to_owned());
    assert_eq!(post(vec![address()], None).await.unwrap().status(), 422, "no CSRF token: refused");
    assert_eq!(post(vec![("csrf", "guess".into()), address()], None).await.unwrap().status(), 403);
    let csrf = b.find(Locator::Css("input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let foreign = Some("http://evil.example".to_owned());
    assert_eq!(post(vec![("csrf", csrf.clone()), address()], foreign).await.unwrap().status(), 403, "another site");
    assert_eq!(post(vec![("csrf", csrf.clone()), address()], None).await.unwrap().status(), 303, "the real form works");
    // The kept mail downloads as it arrived, with the session only.
    let download = format!("{base}/log/{}/raw", entry_url.path().rsplit('/').next().unwrap());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let raw = http.get(&download).header("cookie", &session).send().await.unwrap();
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    assert!(raw.text().await.unwrap().contains(&format!("Subject: Re: {hostile}")));
    assert_eq!(http.get(&download).send().await.unwrap().status(), 303, "no session, no mail");

    // Log out: the session is over, here and for anyone holding its cookie.
    b.goto(entry_url.as_ref()).await.unwrap();
    click(&b, "#logout").await;
    assert!(text(&b, "#flash").await.contains("Logged out"));
    b.goto(&format!("{base}/log")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/admin/login"));
    let stale = post(vec![("csrf", csrf), address()], None).await.unwrap();
    assert_eq!(stale.headers()["location"], "/admin/login", "the old cookie is worth nothing");

    b.close().await.unwrap();
    app.stop().await;
}

/// The id in the page's heading ("Inbound log entry N").
async fn accepted_id(b: &Client) -> String {
    text(b, "h1").await.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// Sets a form field's value (typing a whole rules file key by key is slow).
async fn set_value(b: &Client, css: &str, value: &str) {
    b.execute("document.querySelector(arguments[0]).value = arguments[1];", vec![json!(css), json!(value)])
        .await
        .unwrap();
}

#[tokio::test]
async fn sessions_are_cookies_with_the_right_flags_and_end_when_the_admin_token_is_reset() {
    // The admin token is generated and stored (hashed), so that it can be reset.
    let app = crate::support::spawn_app_with(|c| c.admin_token = None).await;
    let admin_token = app.app.as_ref().and_then(|a| a.generated_admin_token.clone()).expect("a generated admin token");
    let base = console(&app);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = |proto: Option<&'static str>| {
        let mut request = http.post(format!("{base}/login")).form(&[("token", admin_token.as_str())]);
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        request.send()
    };
    let plain = login(None).await.unwrap();
    assert_eq!(plain.status(), 303);
    let cookie = plain.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/admin"));
    assert!(!cookie.contains("Secure"), "plain HTTP: a Secure cookie would never come back");
    let behind_tls = login(Some("https")).await.unwrap();
    assert!(behind_tls.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
    // Every page is marked: no caching, no framing, no scripts.
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = http.get(format!("{base}/log")).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    // A forged cookie is nobody.
    let forged = http.get(format!("{base}/log")).header("cookie", "mailgate_console=00").send().await.unwrap();
    assert_eq!(forged.headers()["location"], "/admin/login");

    // A reset of the admin token ends every session made with the old one.
    let store = mailgate::store::Store::open(&app.database_url).await.unwrap();
    mailgate::http::credentials::reset(&store, mailgate::http::credentials::TokenKind::Admin, None).await.unwrap();
    store.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = || async { http.get(format!("{base}/log")).header("cookie", &session).send().await.unwrap().status() };
    while status().await == 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status().await, 303, "the session ended with its token");
    app.stop().await;
}

#[tokio::test]
async fn held_mail_unsubscribes_and_broken_templates_in_the_browser_with_markup_shown_as_text() {
    let templates = tempfile::tempdir().unwrap();
    let folder = templates.path().to_owned();
    let app = crate::support::spawn_app_with(move |c| {
        c.auth.hold_not_allowed = true;
        c.templates_dir = Some(folder);
    })
    .await;
    let (w, _chat, note) = app.chat_with_note().await;
    // A stranger's reply is held; its subject carries markup.
    let hostile = "<script>document.title='pwned'</script>";
    let reply = reply_mail(STRANGER, &note.reply_address(), hostile, "held@elsewhere.example", "", "Let me in");
    let answer = app.send(STRANGER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("250"), "{answer}");
    let spam = reply_mail(STRANGER, &note.reply_address(), "Cheap pills", "spam@elsewhere.example", "", "Buy now");
    app.send(STRANGER, &[&note.reply_address()], &spam).await;
    let spam_id = app.admin_get("/held").await.1[0]["id"].as_i64().expect("the newest held item");
    // A delivery report whose diagnostic carries markup.
    let report =
        hard_bounce(OWNER).replace("Status: 5.1.1", &format!("Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 {hostile}"));
    app.send("", &[&format!("bounces@{DOMAIN}")], &report).await;
    // The owner turned off customer-reply mail.
    let store = mailgate::store::Store::open(&app.database_url).await.unwrap();
    store.opt_out(w.owner, "agent_replied").await.unwrap();
    store.close().await;

    let (_driver, b) = browser().await;
    let base = console(&app);
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    b.find(Locator::Css("#name")).await.unwrap().send_keys("Anna <anna@desk.example>").await.unwrap();
    click(&b, "#login").await;
    assert_eq!(text(&b, "#actor").await, "Anna <anna@desk.example> (console)", "who is logged in, as text");

    b.goto(&format!("{base}/held")).await.unwrap();
    assert_eq!(text(&b, "#held-badge").await, "2");
    assert!(text(&b, "#held").await.contains(hostile), "the subject shows as text");
    screenshot(&b, "held").await;
    // Several at once: the chosen ones only.
    tick(&b, &format!("#held input[value='{spam_id}']")).await;
    click(&b, "#discard-chosen").await;
    assert!(text(&b, "#flash").await.starts_with(&format!("Held item {spam_id} discarded;")));
    assert!(!text(&b, "#held").await.contains("Cheap pills"), "gone from the queue");
    // Issue 31: a discard can be undone while the message is kept.
    b.goto(&format!("{base}/held/{spam_id}")).await.unwrap();
    assert!(text(&b, "#outcome").await.starts_with("Discarded by Anna <anna@desk.example> (console) at"));
    click(&b, "#restore").await;
    assert!(text(&b, "#flash").await.contains("put back in the queue"));
    assert_eq!(text(&b, "#status").await, "held");
    let history = text(&b, "#history").await;
    assert!(["held", "discarded", "restored"].iter().all(|d| history.contains(d)), "{history}");
    // Its arrival in the log links back to it, with the Subject.
    click(&b, "#history a").await;
    assert_eq!(text(&b, "#held-link").await, format!("held item {spam_id}"));
    assert_eq!(text(&b, "#log-subject").await, "Re: Cheap pills");
    click(&b, "#held-link").await;
    click(&b, "#discard").await;
    assert_eq!(text(&b, "#status").await, "discarded");
    b.goto(&format!("{base}/held")).await.unwrap();
    click(&b, "#held td a").await;
    assert!(text(&b, "#reason").await.contains("may not write"));
    assert!(text(&b, "#subject").await.contains(hostile));
    click(&b, "#release").await;
    assert!(text(&b, "#flash").await.contains("released into its conversation"));
    assert_eq!(text(&b, "#status").await, "released");
    // What became of it, not what would happen to it today.
    let outcome = text(&b, "#outcome").await;
    assert!(
        outcome.starts_with("Released by Anna <anna@desk.example> (console) at")
            && outcome.contains("into chat #")
            && outcome.contains(", message "),
        "{outcome}"
    );
    assert!(!text(&b, "#steps").await.contains("Decision today"), "the explanation does not call it held today");
    let (_, item) = app.admin_get("/held?status=released").await;
    assert_eq!(item[0]["acted_by"], "Anna <anna@desk.example> (console)", "recorded with who did it");

    b.goto(&format!("{base}/bounces")).await.unwrap();
    assert!(text(&b, "#bounces").await.contains(hostile), "the diagnostic shows as text");

    b.goto(&format!("{base}/unsubscribes")).await.unwrap();
    assert!(text(&b, "#unsubscribes").await.contains(OWNER));
    click(&b, "#unsubscribes button").await;
    assert!(text(&b, "#flash").await.contains("gets agent replied notifications again"));
    assert!(text(&b, "#unsubscribes").await.contains("Nobody has unsubscribed"));

    // An override edited while the server runs is checked before a restart.
    b.goto(&format!("{base}/templates")).await.unwrap();
    assert!(text(&b, "#check").await.contains("all good"));
    std::fs::write(templates.path().join("agent_replied.txt"), "Hello {{ recipient.nmae }}\n").unwrap();
    b.refresh().await.unwrap();
    let error = text(&b, ".template-error").await;
    assert!(error.contains("agent_replied.txt:1") && error.contains("recipient.nmae"), "{error}");
    assert_eq!(b.title().await.unwrap(), "Templates · mailgate console", "nothing ran");
    b.close().await.unwrap();
    app.stop().await;
}

/// Issue 29: guessing the admin token at the login form is slowed, then
/// refused with `429` and a sentence, for that client only.
#[tokio::test]
async fn guessing_the_admin_token_in_the_browser_is_slowed_then_refused() {
    let app = crate::support::spawn_app().await;
    let (_driver, b) = browser().await;
    let base = console(&app);
    for i in 0..10 {
        b.goto(&format!("{base}/login")).await.unwrap();
        b.find(Locator::Css("#token")).await.unwrap().send_keys(&format!("guess-{i}")).await.unwrap();
        click(&b, "#login").await;
        assert!(text(&b, "#flash").await.contains("not the admin token"), "attempt {i}");
    }
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    let flash = text(&b, "#flash").await;
    assert!(flash.contains("Too many wrong tokens") && flash.contains("Try again in"), "{flash}");
    assert!(b.current_url().await.unwrap().path().ends_with("/admin/login"), "not logged in while locked out");
    screenshot(&b, "login-locked").await;
    // Another client logs in at once.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let other = http
        .post(format!("{base}/login"))
        .header("x-forwarded-for", "198.51.100.20")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 303);
    let locked = http.post(format!("{base}/login")).form(&[("token", ADMIN_TOKEN)]).send().await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    b.close().await.unwrap();
    app.stop().await;
}

/// The text of every element `css` matches on the page.
async fn texts(client: &Client, css: &str) -> Vec<String> {
    let script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim())";
    let found = client.execute(script, vec![json!(css)]).await.expect("the page answers a script");
    serde_json::from_value(found).expect("a list of texts")
}

/// Follows a list page's "Older" links to the end; the text of every row's
/// `css` cell, page after page, and how many pages there were.
async fn every_page(client: &Client, url: &str, css: &str) -> (Vec<String>, usize) {
    client.goto(url).await.unwrap();
    let (mut rows, mut pages) = (Vec::new(), 0);
    loop {
        pages += 1;
        let title = client.title().await.unwrap();
        assert!(title.ends_with("· mailgate console") && !title.starts_with("Error"), "page {pages} of {url}: {title}");
        rows.extend(texts(client, css).await);
        if client.find(Locator::Css("#older")).await.is_err() {
            return (rows, pages);
        }
        click(client, "#older").await;
    }
}

/// Issue 31: every list page works with several pages of rows (it answered
/// 500 past the first 50), and its "Older" links reach every row once.
#[tokio::test]
async fn every_list_page_pages_through_several_pages_to_the_last_row() {
    let app = crate::support::spawn_app_with(|c| c.auth.hold_not_allowed = true).await;
    let (_w, _chat, note) = app.chat_with_note().await;
    // 120 held strangers' replies: 120 held items, and as many log entries.
    for i in 0..120 {
        let reply = reply_mail(
            STRANGER,
            &note.reply_address(),
            &format!("Page test {i}"),
            &format!("p{i}@x.example"),
            "",
            "Let me in",
        );
        let answer = app.send(STRANGER, &[&note.reply_address()], &reply).await;
        assert!(answer.starts_with("250"), "{answer}");
    }
    // 130 outbox rows and 130 bounces, as years of sending leave them.
    let now = chrono::Utc::now().timestamp_millis();
    let numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 130)";
    crate::support::execute_sql(
        &app.database_url,
        &format!(
            "{numbers} INSERT INTO outbox (kind, to_address, status, attempts, next_attempt_at, expires_at, created_at, sent_at) \
             SELECT 'agent_replied', 'person' || i || '@acme.example', 'sent', 1, {now}, {now}, {now} - i, {now} FROM n"
        ),
    )
    .await;
    crate::support::execute_sql(
        &app.database_url,
        &format!(
            "{numbers} INSERT INTO bounces (received_at, recipient, status, severity, diagnostic) \
             SELECT {now} - i, 'gone' || i || '@acme.example', '5.1.1', 'hard', 'no such user' FROM n"
        ),
    )
    .await;
    let count = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    let log_rows = crate::support::query_i64(&app.database_url, &count("inbound_log")).await as usize;
    let outbox_rows = crate::support::query_i64(&app.database_url, &count("outbox")).await as usize;

    let (_driver, b) = browser().await;
    let base = console(&app);
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    let lists = [
        ("log", "#log td:first-child", log_rows),
        ("held", "#held td:nth-child(2)", 120),
        ("outbox?status=all", "#outbox td:nth-child(2)", outbox_rows),
        ("bounces", "#bounces td:nth-child(2)", 130),
    ];
    for (page, cell, expected) in lists {
        let (rows, pages) = every_page(&b, &format!("{base}/{page}"), cell).await;
        assert!(pages >= 3, "{page}: {pages} pages for {expected} rows");
        let unique: std::collections::HashSet<_> = rows.iter().collect();
        assert_eq!((rows.len(), unique.len()), (expected, expected), "{page}: every row once");
    }
    b.close().await.unwrap();
    app.stop().await;
}

/// Issue 31: a refused message's log entry keeps its header fields (not its
/// body) and links to the notice the sender got, whose outbox page opens
/// with what it is about; the log lists the Subject.
#[tokio::test]
async fn a_refused_message_keeps_its_header_fields_and_links_to_the_notice_sent() {
    let app = crate::support::spawn_app().await;
    let (_w, chat_id, note) = app.chat_with_note().await;
    app.post(&format!("/chats/{chat_id}/close"), json!({})).await;
    let reply = reply_mail(OWNER, &note.reply_address(), "Late question", "late@acme.example", "", "Secret body text");
    let answer = app.send(OWNER, &[&note.reply_address()], &reply).await;
    assert!(answer.starts_with("550"), "{answer}");
    app.wait_for_mail(4).await;

    let (_driver, b) = browser().await;
    let base = console(&app);
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    b.goto(&format!("{base}/log?decision=rejected")).await.unwrap();
    assert!(text(&b, "#log").await.contains("Re: Late question"), "the Subject in the list");
    click(&b, "#log td a").await;
    let headers = text(&b, "#refused-headers").await;
    assert!(headers.contains("Subject: Re: Late question") && headers.contains("Message-ID: <late@acme.example>"));
    assert!(!headers.contains("Secret body text"), "the body is not kept: {headers}");
    assert!(text(&b, "#notice").await.starts_with("queued as outbox item"));
    click(&b, "#notice-link").await;
    assert!(text(&b, "#to").await.starts_with(OWNER));
    assert!(text(&b, "#about").await.contains("Late question"), "{}", text(&b, "#about").await);
    assert_eq!(text(&b, "#status").await, "sent");
    screenshot(&b, "outbox-item").await;
    b.close().await.unwrap();
    app.stop().await;
}

/// Issue 31: an admin changes what a plan includes in the console, and the
/// rules playground refuses a `plan =` that names no plan.
#[tokio::test]
async fn an_admin_edits_a_plan_in_the_console() {
    let app = crate::support::spawn_app().await;
    let (_driver, b) = browser().await;
    let base = console(&app);
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    b.goto(&format!("{base}/plans")).await.unwrap();
    assert_eq!(texts(&b, "#plans td:first-child").await.len(), 11, "the seeded plans");
    click(&b, "#edit-sandbox").await;
    assert_eq!(
        b.find(Locator::Css("#plan-id")).await.unwrap().prop("value").await.unwrap().as_deref(),
        Some("sandbox")
    );
    b.find(Locator::Css("#plan-tickets")).await.unwrap().select_by_value("all").await.unwrap();
    tick(&b, "#plan-on-call").await;
    click(&b, "#save-plan").await;
    assert_eq!(text(&b, "#flash").await, "Plan sandbox (Sandbox) saved; it is in force now.");
    let (_, plans) = app.get("/plans").await;
    let sandbox = plans.as_array().unwrap().iter().find(|p| p["id"] == "sandbox").unwrap().clone();
    assert_eq!((sandbox["tickets"].as_str(), sandbox["on_call"].as_bool()), (Some("all"), Some(true)));
    // A bad value is refused with a sentence, and nothing changes.
    set_value(&b, "#plan-id", "Bad Id").await;
    set_value(&b, "#plan-name", "Bad").await;
    click(&b, "#save-plan").await;
    assert!(text(&b, "#flash").await.contains("was not saved"), "{}", text(&b, "#flash").await);
    screenshot(&b, "plans").await;
    // The playground checks plan names against the plans.
    b.goto(&format!("{base}/rules")).await.unwrap();
    set_value(
        &b,
        "#rules",
        "[[rules]]\nname = \"gold\"\n[rules.when]\nplan = \"gold\"\n[rules.then]\npriority = \"high\"\n",
    )
    .await;
    click(&b, "#check").await;
    assert!(text(&b, ".rule-error").await.contains("\"gold\" is not a plan"));
    b.close().await.unwrap();
    app.stop().await;
}

/// Issue 31, as an attacker: the console's new forms (a plan saved, a held
/// item restored) refuse a post without the session's CSRF token, or from
/// another site's page, and change nothing.
#[tokio::test]
async fn the_new_forms_refuse_forged_posts() {
    let app = crate::support::spawn_app().await;
    let base = console(&app);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = http.post(format!("{base}/login")).form(&[("token", ADMIN_TOKEN)]).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = http.get(format!("{base}/plans")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    let plan = [("id", "evil"), ("name", "Evil"), ("scope", "site"), ("tickets", "all"), ("phone", "none")];
    type Fields<'a> = Vec<(&'a str, &'a str)>;
    let forged: [(Fields, Option<&str>); 3] = [
        (plan.to_vec(), None),
        ([plan.as_slice(), &[("csrf", "not-the-token")]].concat(), None),
        ([plan.as_slice(), &[("csrf", csrf.as_str())]].concat(), Some("https://evil.example")),
    ];
    for (form, origin) in forged {
        let mut request = http.post(format!("{base}/plans")).header("cookie", &cookie).form(&form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let status = request.send().await.unwrap().status();
        assert!(status == 403 || status == 422, "a forged plan post answered {status}");
    }
    let (_, plans) = app.get("/plans").await;
    assert!(plans.as_array().unwrap().iter().all(|p| p["id"] != "evil"), "no plan was made");
    let restore =
        http.post(format!("{base}/held/1/restore")).header("cookie", &cookie).form(&[("csrf", "nope")]).send().await;
    assert_eq!(restore.unwrap().status(), 403);
    // The real form, with its token, from its own page, works.
    let made = http
        .post(format!("{base}/plans"))
        .header("cookie", &cookie)
        .form(&[plan.as_slice(), &[("csrf", csrf.as_str())]].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 303);
    let (_, plans) = app.get("/plans").await;
    assert!(plans.as_array().unwrap().iter().any(|p| p["id"] == "evil"), "the genuine form saved it");
    app.stop().await;
}

/// Issue 33: outsiders copied on a reply wait on their own page, several
/// pages of them; an agent lets one in and declines another there.
#[tokio::test]
async fn an_admin_lets_in_and_declines_people_waiting_to_join() {
    let app = crate::support::spawn_app_with(|c| {
        c.participants.max_per_conversation = 100;
        c.participants.max_new_outsiders_per_org_per_day = 100;
    })
    .await;
    let (_, chat_id, note) = app.chat_with_note().await;
    let address = note.reply_address();
    let outsiders: Vec<String> = (1..=55).map(|i| format!("Guest {i} <guest{i}@partner.example>")).collect();
    let mail = reply_mail(
        OWNER,
        &address,
        "Hello",
        "wait1@acme.example",
        &format!("Cc: {}\r\n", outsiders.join(", ")),
        "See this",
    );
    assert!(app.send(OWNER, &[&address], &mail).await.starts_with("250"));
    let (_driver, b) = browser().await;
    let base = console(&app);
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    let (rows, pages) = every_page(&b, &format!("{base}/participants"), "#participants td:nth-child(3)").await;
    assert_eq!((rows.len(), pages), (55, 2), "{rows:?}");
    let mut unique = rows.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 55, "each person once");
    b.goto(&format!("{base}/participants")).await.unwrap();
    assert_eq!(text(&b, "#participants tr:nth-child(2) td:nth-child(1)").await, format!("chat #{chat_id}"));
    click(&b, "#participants tr:nth-child(2) button").await;
    assert_eq!(text(&b, "#flash").await, "guest1@partner.example joined the conversation.");
    click(&b, "#participants tr:nth-child(2) button.quiet").await;
    assert_eq!(text(&b, "#flash").await, "guest2@partner.example was declined.");
    screenshot(&b, "participants").await;
    let (_, list) = app.get(&format!("/chats/{chat_id}/participants")).await;
    let status = |email: &str| list.as_array().unwrap().iter().find(|p| p["email"] == email).unwrap()["status"].clone();
    assert_eq!(
        (status("guest1@partner.example"), status("guest2@partner.example")),
        (json!("active"), json!("declined"))
    );
    b.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_admin_reads_the_dns_checks_with_the_record_to_publish() {
    let keys = tempfile::tempdir().unwrap();
    let (key, ours) = crate::doctor::dkim_key(keys.path(), "ours");
    let (_, theirs) = crate::doctor::dkim_key(keys.path(), "theirs");
    // DNS data is anyone's: markup in a record is shown as text.
    let hostile = "v=STSv1; id=<script>document.title='owned'</script><img src=x onerror=alert(1)>";
    let app = crate::support::spawn_app_with(|c| {
        crate::doctor::static_dns(c, &key, &theirs);
        let record = mailgate::config::RecordSet { txt: vec![hostile.to_owned()], ..Default::default() };
        c.auth.dns_records.insert("_mta-sts.support.example.com".to_owned(), record);
    })
    .await;
    let (_driver, b) = browser().await;
    let base = console(&app);
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    click(&b, "#login").await;
    b.goto(&format!("{base}/doctor")).await.unwrap();
    assert!(text(&b, "#doctor tr[data-check='mta-sts']").await.contains("<script>"), "shown as text");
    assert!(b.find(Locator::Css("#doctor script, #doctor img")).await.is_err(), "never as markup");
    assert_ne!(b.title().await.unwrap(), "owned");
    assert!(text(&b, "#doctor-failed").await.contains("Some checks fail"));
    let statuses = texts(&b, "#doctor tr[data-check] td:first-child").await;
    assert_eq!(statuses.len(), 8, "{statuses:?}");
    assert_eq!(text(&b, "#doctor tr[data-check='dkim'] td:first-child").await, "fail");
    assert_eq!(text(&b, "#doctor tr[data-check='spf'] td:first-child").await, "ok");
    let fix = text(&b, "#doctor tr[data-check='dkim'] code.fix").await;
    assert_eq!(fix, format!("mg._domainkey.support.example.com. TXT \"v=DKIM1; k=rsa; p={ours}\""));
    screenshot(&b, "doctor").await;
    app.stop().await;
}

#[tokio::test]
async fn the_menu_counts_a_flood_of_failed_mail_as_999_plus_without_reading_it_all() {
    use crate::support::{console_login, execute_sql, spawn_app};
    let app = spawn_app().await;
    let (_, chat_id, _) = app.chat_with_note().await;
    // An attacker's bounces (or years of dead addresses) leave thousands of
    // failed notifications: every page shows the count, so it must stay cheap.
    let mut sql = String::from(
        "INSERT INTO outbox (kind, thread_id, recipient_id, to_address, status, next_attempt_at, expires_at, created_at) VALUES ",
    );
    let rows: Vec<String> = (0..1_200)
        .map(|n| format!("('new_message', {chat_id}, 1, 'dead{n}@elsewhere.example', 'failed', 0, 0, 0)"))
        .collect();
    sql.push_str(&rows.join(", "));
    execute_sql(&app.database_url, &sql).await;
    let origin = app.base.trim_end_matches("/api/v1").to_owned();
    let (client, cookie) = console_login(&origin, &app.admin_token()).await;
    let page = client.get(format!("{origin}/admin/log")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"id="failed-badge">999+ failed</span>"#), "{html}");
    app.stop().await;
}
