//! The HTTP API's rules: authentication, validation, plans as data, who may
//! open and write what.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn every_api_route_needs_the_token() {
    let app = spawn_app().await;
    let url = format!("{}/plans", app.base);
    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = app.http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"mailgate\"");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("API token"));
    let health = app.http.get(format!("http://{}/healthz", app.app.as_ref().unwrap().http_addr)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn plans_are_seeded_rows() {
    let app = spawn_app().await;
    let (status, plans) = app.get("/plans").await;
    assert_eq!(status, 200);
    let plans = plans.as_array().unwrap();
    let plan = |id: &str| plans.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("plan {id}")).clone();
    assert_eq!(plan("sandbox")["chat"], true);
    assert_eq!(plan("sandbox")["tickets"], "none");
    assert_eq!(plan("business")["phone"], "scheduled");
    assert_eq!(plan("elite")["tickets"], "all");
    assert_eq!(plan("elite")["ticket_response_minutes"], 120);
    assert_eq!(plan("elite")["on_call_response_minutes"], 30);
    assert_eq!(plan("agencies")["tickets"], "business_and_above");
    assert_eq!(plan("priority_enterprise")["on_call"], true);
    assert_eq!(plan("diamond")["phone"], "premium");
    assert_eq!(plans.len(), 11);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let app = spawn_app().await;
    let (status, body) = app.post("/sites", json!({"name": "x", "plan": "gold"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not a site plan"), "{body}");
    let (status, body) = app.post("/users", json!({"email": "not an address", "name": "X", "role": "member"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app.post("/users", json!({"email": "x@example.org", "name": "X", "role": "king"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.post("/users", json!({"email": "x@example.org"})).await;
    assert_eq!(status, 400);
    let x = app.create("/users", json!({"email": "x@example.org", "name": "X", "role": "agent"})).await;
    let (status, body) = app.post("/users", json!({"email": "X@Example.org", "name": "X2", "role": "agent"})).await;
    assert_eq!(status, 409, "emails are unique regardless of case: {body}");
    assert_eq!(body["id"], x["id"], "the answer names the user who has the address (issue 20)");
    let (status, _) = app.get("/chats/999").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn tickets_only_where_the_plan_includes_them() {
    let app = spawn_app().await;
    let w = app.world("professional", Some("agencies")).await;
    let ticket = json!({"site_id": w.site, "customer_id": w.owner, "type": "Bug", "subject": "S", "description": "D"});
    let (status, body) = app.post("/tickets", ticket).await;
    assert_eq!(status, 403, "Agencies get tickets only for sites on Business and above: {body}");
    assert!(body["error"].as_str().unwrap().contains("not part of"));
    // Chat works on every plan.
    app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hi"})).await;

    let business = app.create("/sites", json!({"name": "b", "plan": "business", "organization_id": w.org})).await;
    let ticket =
        json!({"site_id": business["id"], "customer_id": w.owner, "type": "Bug", "subject": "S", "description": "D"});
    let created = app.create("/tickets", ticket).await;
    assert_eq!(created["ticket_number"], 1);
    assert_eq!(created["ticket_type"], "Bug");
    assert_eq!(created["messages"][0]["text"], "D");

    let ticket = json!({"site_id": business["id"], "customer_id": w.unprivileged, "type": "Bug", "subject": "S", "description": "D"});
    let (status, _) = app.post("/tickets", ticket).await;
    assert_eq!(status, 403, "Unprivileged users can not see tickets, so they can not open one");
    let ticket = json!({"site_id": business["id"], "customer_id": w.stranger, "type": "Bug", "subject": "S", "description": "D"});
    let (status, _) = app.post("/tickets", ticket).await;
    assert_eq!(status, 403, "not a member of the site's organization");
    app.stop().await;
}

#[tokio::test]
async fn only_participants_and_agents_may_post() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    let chat = app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hi"})).await;
    let path = format!("/chats/{}/messages", chat["id"]);
    let (status, _) = app.post(&path, json!({"author_id": w.stranger, "text": "me too"})).await;
    assert_eq!(status, 403);
    let (status, _) = app.post(&path, json!({"author_id": w.member, "text": "me too"})).await;
    assert_eq!(status, 403, "a chat belongs to its customer");
    let (status, _) = app.post(&path, json!({"author_id": w.agent2, "text": ""})).await;
    assert_eq!(status, 400);
    let posted = app.create(&path, json!({"author_id": w.agent2, "text": "On it"})).await;
    assert_eq!(posted["source"], "dashboard");
    assert_eq!(posted["author"]["role"], "agent");
    let (_, chat) = app.get(&format!("/chats/{}", chat["id"])).await;
    assert_eq!(chat["assigned_agent_id"], w.agent2, "the first agent to answer is assigned");
    app.stop().await;
}

#[tokio::test]
async fn the_admin_stats_count_what_was_committed_and_sent() {
    let app = spawn_app().await;
    let (_, _, note) = app.chat_with_note().await;
    let admin = app.admin_token();
    let url = format!("{}/admin/stats", app.base);
    let stats = |token: String| {
        let (http, url) = (app.http.clone(), url.clone());
        async move { http.get(&url).bearer_auth(token).send().await.unwrap() }
    };
    let before: serde_json::Value = stats(admin.clone()).await.json().await.unwrap();

    // Eight replies over eight connections at once.
    let to = note.reply_address();
    let mut sends = Vec::new();
    for n in 0..8 {
        let mail = reply_mail(OWNER, &to, "chat", &format!("stats-{n}@acme.example"), "", &format!("Reply {n}"));
        let (smtp, to) = (app.smtp, to.clone());
        sends.push(tokio::spawn(async move { Smtp::send_once(smtp, OWNER, &[&to], &mail).await }));
    }
    for send in sends {
        let answer = send.await.unwrap();
        assert!(answer.starts_with("250"), "{answer}");
    }

    // The agent's notifications about the eight replies go out: the outbound
    // worker counts what it sent and what those mails carried.
    let mut after = serde_json::Value::Null;
    let grew = |after: &serde_json::Value, section: &str, field: &str| {
        after[section][field].as_u64().unwrap() - before[section][field].as_u64().unwrap()
    };
    for _ in 0..200 {
        after = stats(admin.clone()).await.json().await.unwrap();
        if grew(&after, "outbound", "sent") + grew(&after, "outbound", "merged") >= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(grew(&after, "group_commit", "messages"), 8, "{before} -> {after}");
    let transactions = grew(&after, "group_commit", "transactions");
    assert!((1..=8).contains(&transactions), "{transactions} transactions for 8 replies");
    assert!(grew(&after, "group_commit", "commit_us") > 0, "{after}");
    if !on_postgres() {
        assert!(grew(&after, "group_commit", "syncs") >= 1, "SQLite's log synced before the 250s: {after}");
    }
    let sent = grew(&after, "outbound", "sent");
    assert!(sent >= 1 && sent + grew(&after, "outbound", "merged") >= 8, "{before} -> {after}");
    assert_eq!(grew(&after, "outbound", "not_sent"), 0, "{after}");
    assert!(grew(&after, "outbound", "passes") >= 1 && grew(&after, "outbound", "prepare_us") > 0, "{after}");
    assert_eq!(stats(app.token.clone()).await.status(), 401, "the Dashboard's token is not an admin credential");
    app.stop().await;
}

/// Issue 22: a token that an older release stored in plain text keeps
/// working after the upgrade, and only its hash is kept.
#[tokio::test]
async fn a_token_stored_in_plain_text_by_an_older_release_keeps_working_and_is_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let legacy = "legacy-token-0123456789abcdef";
    let store = mailgate::store::Store::open(&url).await.unwrap();
    store.put_setting("api_token", legacy).await.unwrap();
    store.close().await;
    let app = start_in(dir, url.clone(), |c| c.api_token = None).await;
    assert!(app.app.as_ref().unwrap().generated_api_token.is_none(), "a token exists: none is generated");
    let answer = app.http.get(format!("{}/plans", app.base)).bearer_auth(legacy).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(query_i64(&url, "SELECT COUNT(*) FROM settings WHERE key = 'api_token'").await, 0, "plain text gone");
    assert_eq!(query_i64(&url, "SELECT COUNT(*) FROM settings WHERE key = 'api_token_hash'").await, 1);
    app.stop().await;
}

/// Issue 20: the API description lists every route the server answers, and
/// every route it lists is served (and guarded by its credential).
#[tokio::test]
async fn the_api_description_lists_every_route_and_only_routes_that_exist() {
    let app = spawn_app().await;
    let http = app.app.as_ref().unwrap().http_addr;
    let response = app.http.get(format!("http://{http}/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200, "public, no token needed");
    let document: serde_json::Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let listed: usize = paths.values().map(|methods| methods.as_object().unwrap().len()).sum();
    assert_eq!(listed, mailgate::api::route_docs().len(), "every declared route is described");
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().unwrap() {
            let concrete = path.replace("{address}", "x@example.org").replace(['{', '}'], "").replace("/id", "/1");
            let concrete: String = concrete
                .split('/')
                .map(|s| if matches!(s, "number" | "kind") { "1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let url = format!("http://{http}{concrete}");
            let verb: reqwest::Method = method.to_uppercase().parse().unwrap();
            let status = app.http.request(verb.clone(), &url).send().await.unwrap().status().as_u16();
            assert_eq!(status, 401, "{method} {path} ({concrete}) is served and needs a token");
            // With the token, the method is one the path answers (on a fresh instance: nothing to harm).
            let token = if path.starts_with("/api/v1/admin") { app.admin_token() } else { app.token.clone() };
            let status = app.http.request(verb, &url).bearer_auth(token).send().await.unwrap().status().as_u16();
            assert_ne!(status, 405, "{method} {path} is a method the path answers");
            let scheme = if path.starts_with("/api/v1/admin") { "adminToken" } else { "apiToken" };
            assert!(operation["security"][0].get(scheme).is_some(), "{method} {path}: {operation}");
        }
    }
    // An undeclared path is 404, an undeclared method 405: the answers above are real routes.
    let unknown = app.http.get(format!("http://{http}/api/v1/no-such-route")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let wrong = app.http.put(format!("http://{http}/api/v1/chats")).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    for must in ["/api/v1/chats", "/api/v1/users/{id}", "/api/v1/admin/webhooks", "/api/v1/admin/held/{id}/release"] {
        assert!(paths.contains_key(must), "{must} is described");
    }
    app.stop().await;
}

/// Issue 21: `/metrics` needs the admin token and its counters move with traffic.
#[tokio::test]
async fn metrics_can_be_served_without_a_token_on_a_listener_of_their_own() {
    let app = spawn_app_with(|c| c.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let addr = app.app.as_ref().unwrap().metrics_addr.expect("a metrics listener");
    let response = app.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "no token on the metrics listener");
    assert!(response.text().await.unwrap().contains("mailgate_smtp_sessions_total"));
    // Nothing else is served there, and the API's /metrics still needs the token.
    let api = app.http.get(format!("http://{addr}/api/v1/plans")).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(api.status(), 404);
    let http = app.app.as_ref().unwrap().http_addr;
    assert_eq!(app.http.get(format!("http://{http}/metrics")).send().await.unwrap().status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn metrics_need_the_admin_token_and_move_with_traffic() {
    let app = spawn_app().await;
    let http = app.app.as_ref().unwrap().http_addr;
    let scrape = |token: Option<String>| {
        let request = app.http.get(format!("http://{http}/metrics"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(scrape(None).await.0, 401);
    assert_eq!(scrape(Some(app.token.clone())).await.0, 401, "the API token is not enough");
    let (status, before) = scrape(Some(app.admin_token())).await;
    assert_eq!(status, 200);
    for name in [
        "mailgate_smtp_sessions_total",
        "mailgate_outbox_items",
        "mailgate_held_messages",
        "mailgate_group_commits_total",
        "mailgate_dns_answers_total",
        "mailgate_sender_check_seconds_total",
    ] {
        assert!(before.contains(name), "{name} in {before}");
    }
    let (_, _, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let answer = app
        .send(OWNER, &[&to], &reply_mail(OWNER, &to, note.header("Subject"), "m-1@acme.example", "", "Thanks"))
        .await;
    assert!(answer.starts_with("250"));
    app.send(OWNER, &[&format!("support@{DOMAIN}")], &format!("From: {OWNER}\r\nSubject: new\r\n\r\nHi\r\n")).await;
    let (_, after) = scrape(Some(app.admin_token())).await;
    let value = |text: &str, line_start: &str| -> f64 {
        text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    assert_eq!(value(&after, "mailgate_smtp_transactions_total{outcome=\"accepted\",code=\"250\"}"), 1.0, "{after}");
    assert_eq!(value(&after, "mailgate_smtp_transactions_total{outcome=\"rejected\",code=\"550\"}"), 1.0, "{after}");
    assert!(value(&after, "mailgate_smtp_sessions_total") >= 2.0);
    assert_eq!(value(&after, "mailgate_smtp_data_answer_seconds_count"), 2.0, "{after}");
    assert!(value(&after, "mailgate_group_commit_messages_total") >= 1.0, "{after}");
    assert!(
        value(&after, "mailgate_outbox_items{status=\"pending\"}")
            + value(&after, "mailgate_outbox_items{status=\"sent\"}")
            >= 3.0,
        "{after}"
    );
    app.stop().await;
}

/// Issue 31: the log's text filters match `%` and `_` as themselves (they
/// were SQL wildcards), its entries carry the Subject, and recipients
/// refused at RCPT time are counted in the metrics, by why.
#[tokio::test]
async fn log_filters_are_literal_entries_carry_the_subject_and_rcpt_refusals_are_counted() {
    let app = spawn_app().await;
    let (_, _chat, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "Where is my invoice?", "lit@acme.example", "", "Any news?");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    let (status, log) = app.get("/inbound-log?sender=olivia").await;
    assert_eq!(status, 200);
    assert_eq!(log[0]["subject"], "Re: Where is my invoice?", "{log}");
    // A huge Subject is kept whole in the original, cut in the log.
    let long = "x".repeat(5000);
    let reply = reply_mail(OWNER, &note.reply_address(), &long, "long@acme.example", "", "Long");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    let (_, log) = app.get("/inbound-log?sender=olivia&limit=1").await;
    let logged = log[0]["subject"].as_str().unwrap_or_default();
    assert!(logged.starts_with("Re: xxx") && logged.chars().count() == 201 && logged.ends_with('…'), "{logged}");
    // `%` and `_` are letters, not wildcards.
    for filter in ["sender=%25", "sender=_", "sender=o_ivia", "recipient=%25", "rule=%25"] {
        let (status, log) = app.get(&format!("/inbound-log?{filter}")).await;
        assert_eq!((status, log.as_array().map(Vec::len)), (200, Some(0)), "{filter}: {log}");
    }
    let (_, held) = app.admin_get("/held?sender=%25").await;
    assert_eq!(held.as_array().map(Vec::len), Some(0), "{held}");
    let (_, outbox) = app.get("/outbox?to=_").await;
    assert_eq!(outbox.as_array().map(Vec::len), Some(0), "{outbox}");

    // Refused recipients: a forged reply address, a stranger's domain, no such mailbox.
    let forged = note.reply_address().replacen("reply+", "reply+A", 1);
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO client.example", "250").await;
    smtp.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    smtp.expect(&format!("RCPT TO:<{forged}>"), "550").await;
    smtp.expect("RCPT TO:<someone@elsewhere.example>", "550").await;
    smtp.expect(&format!("RCPT TO:<nobody@{DOMAIN}>"), "550").await;
    smtp.expect("QUIT", "221").await;
    let metrics = app.metrics().await;
    for reason in ["bad_token", "relay_denied", "unknown_mailbox"] {
        let line = format!("mailgate_smtp_recipients_refused_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    // The log says why in words, not in the code's names (the entry of a
    // transaction ended by QUIT is written as the session ends: wait for it).
    let mut reason = String::new();
    for _ in 0..100 {
        let (_, log) = app.get("/inbound-log?decision=rejected").await;
        reason = log[0]["reason"].as_str().unwrap_or_default().to_owned();
        if !reason.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reason.contains("no such mailbox") && reason.contains("relaying is refused"), "{reason}");
    assert!(!reason.contains("BadToken") && !reason.contains("RelayDenied"), "{reason}");
    app.stop().await;
}

/// Issue 31: every error is JSON with a sentence (an unknown route, a path
/// that is not a number, a wrong method, a bad query), `GET /` says where
/// things are, an oversized body is `413`, and `X-Forwarded-*` is believed
/// only from a configured proxy.
#[tokio::test]
async fn every_error_is_json_and_forwarded_headers_need_a_trusted_proxy() {
    let app =
        spawn_app_with(|c| c.trusted_proxies = mailgate::http::throttle::TrustedProxies::parse(&[]).unwrap()).await;
    let root = app.base.trim_end_matches("/api/v1").to_owned();
    let token = app.token.clone();
    let ask = |method: reqwest::Method, path: &str| {
        let token = if path.starts_with("/api/v1/admin/") { ADMIN_TOKEN } else { token.as_str() };
        app.http.request(method, format!("{root}{path}")).bearer_auth(token)
    };
    for (method, path, status, words) in [
        (reqwest::Method::GET, "/api/v1/nothing", 404, "no such route: GET /api/v1/nothing"),
        (reqwest::Method::GET, "/api/v1/users/abc", 400, "\"abc\" in the path is not a whole number"),
        (reqwest::Method::GET, "/api/v1/users/999999", 404, "not found"),
        (reqwest::Method::PUT, "/api/v1/plans", 405, "PUT is not a method of /api/v1/plans"),
        (reqwest::Method::GET, "/api/v1/users?limit=many", 400, "the query is not valid"),
        (reqwest::Method::GET, "/api/v1/admin/held/x", 400, "in the path is not a whole number"),
    ] {
        let response = ask(method.clone(), path).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{method} {path}: {error}");
    }
    let home: serde_json::Value = app.http.get(format!("{root}/")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (home["console"].as_str(), home["description"].as_str()),
        (Some("/admin/"), Some("/api/v1/openapi.json"))
    );
    // A body over the limit is 413, in JSON.
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(3 * 1024 * 1024));
    let response = ask(reqwest::Method::POST, "/api/v1/organizations")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    // No proxy is trusted here: a client's own X-Forwarded-Proto does not
    // make the console's cookie Secure-only (nor X-Forwarded-For its address).
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = no_redirects
        .post(format!("{root}/admin/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cookie.starts_with("mailgate_console=") && !cookie.contains("Secure"), "{cookie}");
    app.stop().await;

    // Behind the default (a proxy on this host), it is believed.
    let app = spawn_app().await;
    let root = app.base.trim_end_matches("/api/v1").to_owned();
    let login = no_redirects
        .post(format!("{root}/admin/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = login.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cookie.contains("Secure"), "{cookie}");
    app.stop().await;
}

/// Issue 31: plans are data an admin edits: a new plan can be named at once,
/// a change to what a plan includes is in force at once, bad values are
/// refused naming the allowed ones, and an unknown plan is refused with the
/// list of known ones.
#[tokio::test]
async fn an_admin_adds_and_changes_plans_and_an_unknown_plan_lists_the_known_ones() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    let (status, body) = app.post("/sites", json!({"name": "g.example", "plan": "gold"})).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"gold\" is not a site plan") && error.contains("sandbox") && error.contains("elite"),
        "{error}"
    );
    let put = |id: &str, body: serde_json::Value| {
        app.http.put(format!("{}/admin/plans/{id}", app.base)).bearer_auth(ADMIN_TOKEN).json(&body).send()
    };
    // A new plan, in use at once.
    let gold = put(
        "gold",
        json!({"name": "Gold", "scope": "site", "rank": 4, "tickets": "all", "ticket_response_minutes": 240}),
    )
    .await
    .unwrap();
    assert_eq!(gold.status(), 200);
    let (status, site) = app.post("/sites", json!({"name": "g.example", "plan": "gold"})).await;
    assert_eq!(status, 201, "{site}");
    // Sandbox has no tickets until an admin says it has.
    assert_eq!(crate::directory::open_ticket(&app, &w, "Before").await.0, 403);
    let sandbox =
        put("sandbox", json!({"name": "Sandbox", "scope": "site", "rank": 0, "tickets": "all"})).await.unwrap();
    assert_eq!(sandbox.status(), 200);
    assert_eq!(crate::directory::open_ticket(&app, &w, "After").await.0, 201, "in force at once");
    // Bad values name what is allowed; the Dashboard's token cannot edit plans.
    for (body, words) in [
        (json!({"name": "X", "scope": "galaxy"}), "scope: \"galaxy\" is not one of site, organization, account"),
        (json!({"name": "X", "scope": "site", "tickets": "some"}), "tickets: \"some\" is not one of"),
        (json!({"name": "X", "scope": "site", "ticket_response_minutes": 0}), "above 0"),
        (json!({"name": "X", "scope": "site", "colour": "gold"}), "unknown field"),
        (
            json!({"name": "X", "scope": "site", "tickets": "business_and_above"}),
            "business_and_above is for organization",
        ),
    ] {
        let response = put("x", body).await.unwrap();
        assert_eq!(response.status(), 400);
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap_or_default().contains(words), "{error}");
    }
    // A plan in use keeps its scope: its sites would be on a plan of the wrong kind.
    let rescoped = put("gold", json!({"name": "Gold", "scope": "organization"})).await.unwrap();
    assert_eq!(rescoped.status(), 409);
    let error: serde_json::Value = rescoped.json().await.unwrap();
    assert!(error["error"].as_str().unwrap_or_default().contains("used by 1 site(s)"), "{error}");
    let bad_id = put("Gold Plan", json!({"name": "X", "scope": "site"})).await.unwrap();
    assert_eq!(bad_id.status(), 400);
    let as_dashboard = app
        .http
        .put(format!("{}/admin/plans/x", app.base))
        .bearer_auth(&app.token)
        .json(&json!({"name": "X", "scope": "site"}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_dashboard.status(), 401);
    app.stop().await;
}

/// Issue 31: the API description is a contract a generated client can rely
/// on. A client that knows only the description calls every JSON route a
/// desk uses, with bodies that the description's request schemas accept,
/// and every answer the server gives is valid against the response schema
/// the description names (schemas generated from the handlers' own types).
#[tokio::test]
async fn every_answer_matches_the_schema_the_api_description_gives() {
    let app = spawn_app_with(|c| c.auth.hold_not_allowed = true).await;
    let root = app.base.trim_end_matches("/api/v1").to_owned();
    let doc: serde_json::Value =
        app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let check = |schema: &serde_json::Value, value: &serde_json::Value, what: &str| {
        let mut rooted = schema.clone();
        rooted["components"] = doc["components"].clone();
        let validator = jsonschema::validator_for(&rooted).unwrap_or_else(|e| panic!("{what}: a bad schema: {e}"));
        let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{what}: {errors:?}\n{value}");
    };
    // One call: the route as the description names it, a concrete path, a body.
    let call = |method: &'static str, template: &'static str, path: String, body: Option<serde_json::Value>| {
        let doc = &doc;
        let root = &root;
        let check = &check;
        let app = &app;
        async move {
            let operation = &doc["paths"][template][method];
            assert!(operation.is_object(), "{method} {template} is not described");
            if let Some(body) = &body {
                let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
                assert!(schema.is_object(), "{method} {template}: no schema for its body");
                check(schema, body, &format!("{method} {template} body"));
            }
            let token = if template.starts_with("/api/v1/admin/") { ADMIN_TOKEN.to_owned() } else { app.token.clone() };
            let mut request =
                app.http.request(method.to_uppercase().parse().unwrap(), format!("{root}{path}")).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let value: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
            assert!(status.is_success(), "{method} {path}: {status} {value}");
            let answer = &operation["responses"][status.as_str()];
            assert!(answer.is_object(), "{method} {template} answered {status}, which the description does not name");
            let schema = &answer["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{method} {template}: no schema for its answer");
            check(schema, &value, &format!("{method} {path}"));
            value
        }
    };
    let org = call(
        "post",
        "/api/v1/organizations",
        "/api/v1/organizations".into(),
        Some(json!({"name": "ACME", "plan": "enterprise"})),
    )
    .await;
    let org = org["id"].as_i64().unwrap();
    let site = call(
        "post",
        "/api/v1/sites",
        "/api/v1/sites".into(),
        Some(json!({"name": "acme.example", "plan": "elite", "organization_id": org})),
    )
    .await;
    let site = site["id"].as_i64().unwrap();
    let owner = call("post", "/api/v1/users", "/api/v1/users".into(), Some(json!({"email": OWNER, "name": "Olivia", "role": "owner", "organization_id": org, "time_zone": "Europe/Berlin"}))).await;
    let owner = owner["id"].as_i64().unwrap();
    let agent = call(
        "post",
        "/api/v1/users",
        "/api/v1/users".into(),
        Some(json!({"email": AGENT, "name": "Alex", "role": "agent"})),
    )
    .await;
    let agent = agent["id"].as_i64().unwrap();
    call("get", "/api/v1/plans", "/api/v1/plans".into(), None).await;
    call("get", "/api/v1/organizations/{id}", format!("/api/v1/organizations/{org}"), None).await;
    call(
        "patch",
        "/api/v1/organizations/{id}",
        format!("/api/v1/organizations/{org}"),
        Some(json!({"name": "ACME Inc."})),
    )
    .await;
    call("get", "/api/v1/sites/{id}", format!("/api/v1/sites/{site}"), None).await;
    call("patch", "/api/v1/sites/{id}", format!("/api/v1/sites/{site}"), Some(json!({"name": "www.acme.example"})))
        .await;
    call("get", "/api/v1/users", format!("/api/v1/users?organization_id={org}"), None).await;
    call("get", "/api/v1/users/{id}", format!("/api/v1/users/{owner}"), None).await;
    call("patch", "/api/v1/users/{id}", format!("/api/v1/users/{owner}"), Some(json!({"name": "Olivia O."}))).await;
    call("get", "/api/v1/users/{id}/unsubscribes", format!("/api/v1/users/{owner}/unsubscribes"), None).await;
    let chat = call(
        "post",
        "/api/v1/chats",
        "/api/v1/chats".into(),
        Some(json!({"site_id": site, "customer_id": owner, "message": "Hello"})),
    )
    .await;
    let chat = chat["id"].as_i64().unwrap();
    call(
        "post",
        "/api/v1/chats/{id}/messages",
        format!("/api/v1/chats/{chat}/messages"),
        Some(json!({"author_id": agent, "text": "Hi"})),
    )
    .await;
    call("get", "/api/v1/chats", "/api/v1/chats".into(), None).await;
    call("get", "/api/v1/chats/{id}", format!("/api/v1/chats/{chat}"), None).await;
    call("get", "/api/v1/chats/{id}/messages", format!("/api/v1/chats/{chat}/messages"), None).await;
    call("post", "/api/v1/chats/{id}/transcript", format!("/api/v1/chats/{chat}/transcript"), Some(json!({}))).await;
    let ticket = call("post", "/api/v1/tickets", "/api/v1/tickets".into(), Some(json!({"site_id": site, "customer_id": owner, "type": "Bug", "subject": "Slow", "description": "Slow pages"}))).await;
    let number = ticket["ticket_number"].as_i64().unwrap();
    call(
        "post",
        "/api/v1/tickets/{number}/messages",
        format!("/api/v1/tickets/{number}/messages"),
        Some(json!({"author_id": agent, "text": "Looking"})),
    )
    .await;
    call("get", "/api/v1/tickets", "/api/v1/tickets?status=open".into(), None).await;
    call("get", "/api/v1/tickets/{number}", format!("/api/v1/tickets/{number}"), None).await;
    call("get", "/api/v1/tickets/{number}/messages", format!("/api/v1/tickets/{number}/messages"), None).await;
    call("post", "/api/v1/tickets/{number}/close", format!("/api/v1/tickets/{number}/close"), None).await;
    call("post", "/api/v1/tickets/{number}/reopen", format!("/api/v1/tickets/{number}/reopen"), None).await;
    // Mail: a reply stored, a stranger's reply held, a reply to a closed chat refused.
    let note = app.wait_for_mail(3).await.into_iter().find(|m| m.to() == OWNER).expect("the owner's notification");
    let reply = reply_mail(OWNER, &note.reply_address(), "Hello", "schema-1@acme.example", "", "Only Live.");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    let held = reply_mail(STRANGER, &note.reply_address(), "Let me in", "schema-2@elsewhere.example", "", "Hi");
    assert!(app.send(STRANGER, &[&note.reply_address()], &held).await.starts_with("250"));
    call("post", "/api/v1/chats/{id}/close", format!("/api/v1/chats/{chat}/close"), None).await;
    let late = reply_mail(OWNER, &note.reply_address(), "Hello", "schema-3@acme.example", "", "Late");
    assert!(app.send(OWNER, &[&note.reply_address()], &late).await.starts_with("550"));
    call("post", "/api/v1/chats/{id}/reopen", format!("/api/v1/chats/{chat}/reopen"), None).await;
    let messages = call("get", "/api/v1/chats/{id}/messages", format!("/api/v1/chats/{chat}/messages"), None).await;
    let emailed = messages.as_array().unwrap().iter().find(|m| m["source"] == "email").unwrap()["id"].as_i64().unwrap();
    call("get", "/api/v1/messages/{id}", format!("/api/v1/messages/{emailed}"), None).await;
    call("get", "/api/v1/inbound-log", "/api/v1/inbound-log".into(), None).await;
    call("get", "/api/v1/outbox", "/api/v1/outbox?status=all".into(), None).await;
    call("get", "/api/v1/bounces", "/api/v1/bounces".into(), None).await;
    call("get", "/api/v1/held", "/api/v1/held".into(), None).await;
    // The admin's side.
    let items = call("get", "/api/v1/admin/held", "/api/v1/admin/held?status=held".into(), None).await;
    let item = items[0]["id"].as_i64().unwrap();
    call("get", "/api/v1/admin/held/{id}", format!("/api/v1/admin/held/{item}"), None).await;
    for (template, action) in [
        ("/api/v1/admin/held/{id}/discard", "discard"),
        ("/api/v1/admin/held/{id}/restore", "restore"),
        ("/api/v1/admin/held/{id}/release", "release"),
    ] {
        call("post", template, format!("/api/v1/admin/held/{item}/{action}"), Some(json!({"by": "anna"}))).await;
    }
    call(
        "post",
        "/api/v1/admin/held/bulk",
        "/api/v1/admin/held/bulk".into(),
        Some(json!({"ids": [item], "action": "discard", "by": "anna"})),
    )
    .await;
    call(
        "put",
        "/api/v1/admin/plans/{id}",
        "/api/v1/admin/plans/gold".into(),
        Some(json!({"name": "Gold", "scope": "site", "rank": 4, "tickets": "all"})),
    )
    .await;
    call("get", "/api/v1/admin/rules", "/api/v1/admin/rules".into(), None).await;
    call(
        "post",
        "/api/v1/admin/rules/check",
        "/api/v1/admin/rules/check".into(),
        Some(
            json!({"rules": "[[rules]]\nname = \"x\"\n[rules.when]\nkind = \"human\"\n[rules.then]\nqueue = \"q\"\n"}),
        ),
    )
    .await;
    call(
        "post",
        "/api/v1/admin/rules/test",
        "/api/v1/admin/rules/test".into(),
        Some(json!({"message": "From: a@b.example\r\nSubject: x\r\n\r\nHi\r\n"})),
    )
    .await;
    call("get", "/api/v1/admin/stats", "/api/v1/admin/stats".into(), None).await;
    call("get", "/api/v1/admin/suppressions", "/api/v1/admin/suppressions".into(), None).await;
    let hook = call(
        "post",
        "/api/v1/admin/webhooks",
        "/api/v1/admin/webhooks".into(),
        Some(json!({"url": "https://desk.example/hooks"})),
    )
    .await;
    assert!(hook["secret"].is_string());
    call("get", "/api/v1/admin/webhooks", "/api/v1/admin/webhooks".into(), None).await;
    call("delete", "/api/v1/users/{id}", format!("/api/v1/users/{owner}?messages=anonymise&by=dpo"), None).await;
    call("get", "/api/v1/admin/audit", "/api/v1/admin/audit".into(), None).await;
    // The client did not need us to know it: bodies the schema refuses exist.
    let body_schema = &doc["paths"]["/api/v1/chats"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let mut rooted = body_schema.clone();
    rooted["components"] = doc["components"].clone();
    assert!(
        !jsonschema::validator_for(&rooted).unwrap().is_valid(&json!({"site_id": "one"})),
        "a wrong body is refused"
    );
    app.stop().await;
}

/// Issue 31: a client generated from the API description (by
/// openapi-python-client, which `scripts/test` installs) drives the server
/// with the description's own types: opens a chat, posts in it, reads it
/// back, lists the log and the plans, and asks the admin API for the rules.
#[tokio::test]
async fn a_client_generated_from_the_description_drives_the_server() {
    let app = spawn_app().await;
    let root = app.base.trim_end_matches("/api/v1").to_owned();
    let doc = app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap().text().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("openapi.json"), doc).unwrap();
    let generated = std::process::Command::new("openapi-python-client")
        .args(["generate", "--path", "openapi.json", "--output-path", "gen", "--meta", "none"])
        .current_dir(work.path())
        .output()
        .expect("openapi-python-client is missing: pip install openapi-python-client (scripts/test does)");
    assert!(generated.status.success(), "generating a client: {}", String::from_utf8_lossy(&generated.stderr));
    let drive = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/client/drive.py");
    // Asynchronously: the server answers on this test's own runtime.
    let out = tokio::process::Command::new("python3")
        .arg(drive)
        .arg(work.path())
        .arg(&root)
        .arg(&app.token)
        .arg(ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "the generated client: {}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["texts"], json!(["Hello", "Hi there"]), "{seen}");
    assert_eq!(seen["authors"], json!(["Olivia", "Alex"]), "{seen}");
    assert_eq!((seen["plans"].as_u64(), seen["rules"].as_str()), (Some(11), Some("built-in")), "{seen}");
    let (_, chat) = app.get(&format!("/chats/{}", seen["chat"])).await;
    assert_eq!(chat["messages"].as_array().map(Vec::len), Some(2), "stored, as the server reads it");
    app.stop().await;
}

/// The lists build their statements from the filters given (issue 36): an
/// attacker's values are bound, never spliced, and every combination, an
/// out-of-range cursor or page size, and a filter naming nobody give an
/// answer, not an error.
#[tokio::test]
async fn list_filters_combined_or_hostile_are_values_not_sql() {
    let app = spawn_app().await;
    let w = app.world("sandbox", None).await;
    app.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hi"})).await;
    let all = format!(
        "/chats?site_id={}&organization_id={}&customer_id={}&status=open&updated_since=0&before_id=9223372036854775807&limit=1000",
        w.site, w.org, w.owner
    );
    let (status, chats) = app.get(&all).await;
    assert_eq!((status, chats.as_array().map(Vec::len)), (200, Some(1)), "{chats}");
    let (_, none) = app.get(&format!("/chats?customer_id={}", w.stranger)).await;
    assert_eq!(none, json!([]), "another customer's filter finds none of these");
    for hostile in [
        "/users?email=%27%20OR%201%3D1%20--",
        "/users?role=agent%27%3B%20DROP%20TABLE%20users%3B%20--",
        "/users?limit=-5&before_id=-1",
        "/chats?limit=0&before_id=0",
    ] {
        let (status, body) = app.get(hostile).await;
        assert_eq!(status, 200, "{hostile}: {body}");
        assert!(body.as_array().is_some_and(|rows| rows.len() <= 1), "{hostile} matched rows it should not: {body}");
    }
    let (status, _) = app.get("/chats?customer_id=1%20OR%201%3D1").await;
    assert_eq!(status, 400, "a number filter takes only a number");
    let (_, users) = app.get("/users?limit=1000").await;
    assert_eq!(users.as_array().map(Vec::len), Some(6), "the users table is whole: {users}");
    app.stop().await;
}
