//! The cost of routing: 1,000 rules evaluated against a realistic reply,
//! next to the cost of parsing that reply with mail-parser, in one run.
//!
//! Run with `cargo bench --bench rules`.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use mailgate::pipeline::{analyze, classify::MailKind};
use mailgate::rules::{RuleInput, compile};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// 1,000 rules of the shapes admins write: subject and sender patterns,
/// header checks, plan and role conditions, with `continue` here and there.
fn thousand_rules() -> String {
    let words = ["invoice", "refund", "outage", "migration", "ssl", "dns", "cache", "backup", "login", "php"];
    let mut text = String::from("ticket_addresses = [\"downtime\"]\n");
    for i in 0..1000 {
        let word = words[i % words.len()];
        text.push_str(&format!("\n[[rules]]\nname = \"rule-{i}\"\n"));
        if i % 7 == 0 {
            text.push_str("continue = true\n");
        }
        text.push_str("[rules.when]\n");
        match i % 5 {
            0 => text.push_str(&format!("subject = '(?i)\\b{word}-{i}\\b'\n")),
            1 => text.push_str(&format!("sender = '@customer{i}\\.example$'\n")),
            2 => text.push_str(&format!("header = {{ \"X-Customer-Id\" = '^{i}$' }}\nplan = \"elite\"\n")),
            3 => text.push_str(&format!("text = '(?i)order number {i}\\b'\nrole = [\"owner\", \"admin\"]\n")),
            _ => text.push_str(&format!("to = '^team{i}@'\nkind = \"human\"\n")),
        }
        text.push_str(&format!("[rules.then]\nqueue = \"queue-{}\"\ntags = [\"{word}\"]\n", i % 13));
    }
    text
}

fn measure(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut count = 0u32;
    while start.elapsed() < budget {
        for _ in 0..100 {
            f();
        }
        count += 100;
    }
    start.elapsed() / count
}

fn main() {
    let raw =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mail/gmail/gen_reply_de.eml")).expect("fixture");
    let text = thousand_rules();
    let compile_start = Instant::now();
    let rules = compile(&text, "bench").expect("the generated rules compile");
    let compile_time = compile_start.elapsed();
    let analysis = analyze("customer@acme.example", &[], &raw).expect("parses");
    let input = RuleInput {
        sender: "customer.de@acme.example".to_owned(),
        recipients: vec!["reply+aeaqcanljlyhz5giqsz4ratieq@support.example.test".to_owned()],
        from: analysis.from.clone().unwrap_or_default(),
        to: analysis.to.clone(),
        subject: analysis.subject.clone().unwrap_or_default(),
        headers: vec![("x-customer-id".to_owned(), "7777".to_owned()), ("date".to_owned(), "Mon".to_owned())],
        text: analysis.reply_text.clone(),
        kind: Some(MailKind::Human),
        thread: "ticket".to_owned(),
        plan: Some("elite".to_owned()),
        has_tickets: true,
        has_on_call: true,
        role: Some(mailgate::domain::Role::Owner),
        now: chrono::Utc::now(),
    };
    let budget = Duration::from_secs(3);
    let mut parse = Vec::new();
    let mut evaluate = Vec::new();
    for _ in 0..2 {
        parse.push(measure(budget, || {
            black_box(mail_parser::MessageParser::default().parse(black_box(&raw)));
        }));
        evaluate.push(measure(budget, || {
            black_box(rules.evaluate(black_box(&input), false));
        }));
    }
    let parse = parse.into_iter().min().unwrap_or_default();
    let evaluate = evaluate.into_iter().min().unwrap_or_default();
    println!("{} rules compiled in {:.1} ms", rules.rules.len(), compile_time.as_secs_f64() * 1e3);
    println!("message: {} bytes", raw.len());
    println!("mail-parser parse of the message:  {:>8.1} µs", parse.as_secs_f64() * 1e6);
    println!("evaluating 1,000 rules:            {:>8.1} µs", evaluate.as_secs_f64() * 1e6);
    println!("ratio rules / parse:               {:>8.2}x", evaluate.as_secs_f64() / parse.as_secs_f64());
}
