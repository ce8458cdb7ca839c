//! `mailgate explain` and `mailgate replay` on the real binary: reading kept
//! originals again, writing nothing.

use crate::support::*;
use serde_json::json;

fn run(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = app.command(args).output().expect("mailgate runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn explain_prints_every_step_of_a_stored_reply() {
    let app = spawn_app().await;
    let (_, chat, note) = app.chat_with_note().await;
    let reply = reply_mail(OWNER, &note.reply_address(), "x", "explain@acme.example", "", "Live only.\n\n-- \nOlivia");
    assert!(app.send(OWNER, &[&note.reply_address()], &reply).await.starts_with("250"));
    let id = app.messages(&format!("/chats/{chat}")).await.last().unwrap()["id"].as_i64().unwrap();
    let (ok, out, err) = run(&app, &["explain", &id.to_string()]);
    assert!(ok, "{err}");
    for step in ["1. parse", "2. classify      human", "3. authenticate", "4. thread", "5. authorize     allowed"] {
        assert!(out.contains(step), "{step} missing:\n{out}");
    }
    assert!(out.contains("recipient    ") && out.contains("verified: thread"), "{out}");
    assert!(out.contains("history: quoted history starts at line"), "{out}");
    assert!(out.contains("signature:") && out.contains("| Olivia"), "{out}");
    assert!(out.contains("| Live only.") && out.contains("8. decision now  accepted: 250"), "{out}");
    // JSON too, and a message written in the Dashboard has no mail to explain.
    let (ok, out, _) = run(&app, &["explain", &id.to_string(), "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && value["now"]["decision"] == "accepted" && value["stored_text"] == "Live only.", "{value}");
    let first = app.messages(&format!("/chats/{chat}")).await[0]["id"].as_i64().unwrap();
    let (ok, _, err) = run(&app, &["explain", &first.to_string()]);
    assert!(!ok && err.contains("written in the Dashboard"), "{err}");
}

#[tokio::test]
async fn replay_reports_the_decisions_a_new_rules_file_changes_and_nothing_else() {
    let app = spawn_app().await;
    let (_, chat, note) = app.chat_with_note().await;
    for (i, subject) in ["Re: my invoice is wrong", "Re: the site is down", "Re: thanks"].iter().enumerate() {
        let message = format!(
            "From: {OWNER}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <replay-{i}@acme.example>\r\n\r\nText {i}\r\n",
            note.reply_address()
        );
        assert!(app.send(OWNER, &[&note.reply_address()], &message).await.starts_with("250"));
    }
    let auto =
        reply_mail(OWNER, &note.reply_address(), "x", "ooo@acme.example", "Auto-Submitted: auto-replied\r\n", "Away");
    assert!(app.send(OWNER, &[&note.reply_address()], &auto).await.starts_with("250"));
    let stored = app.messages(&format!("/chats/{chat}")).await.len();

    // Today's rules change nothing.
    let (ok, out, err) = run(&app, &["replay", "--since", "1h", "--diff"]);
    assert!(ok, "{err}");
    assert!(out.contains("replayed 4 messages"), "{out}");
    assert!(out.contains("decisions that would change: 0") && out.contains("texts that would change:     0"), "{out}");

    // The shipped rules plus one refusing invoices change exactly that one decision.
    let rules = app.dir.path().join("billing.toml");
    std::fs::write(
        &rules,
        include_str!("../../rules/default.toml").to_owned()
            + "\n[[rules]]\nname = \"no-invoices-by-mail\"\n[rules.when]\nsubject = '(?i)invoice'\n\
         [rules.then]\nreject = { code = 550, status = \"5.7.1\", text = \"Billing questions go to the Dashboard\" }\n",
    )
    .unwrap();
    let (ok, out, err) = run(&app, &["replay", "--since", "1h", "--rules", rules.to_str().unwrap(), "--diff"]);
    assert!(ok, "{err}");
    assert!(out.contains("decisions that would change: 1") && out.contains("texts that would change:     0"), "{out}");
    assert!(out.contains("my invoice is wrong") && !out.contains("the site is down"), "{out}");
    assert!(out.contains("- decision: accepted") && out.contains("+ decision: rejected"), "{out}");
    assert!(out.contains("[rules: no-invoices-by-mail]"), "{out}");
    let (_, out, _) = run(&app, &["replay", "--since", "1h", "--rules", rules.to_str().unwrap(), "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&value["replayed"], &value["decisions_changed"]), (&json!(4), &json!(1)), "{value}");
    // Nothing was written.
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), stored);
}
