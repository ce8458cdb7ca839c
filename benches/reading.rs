//! The cost of reading one message: mail-parser's parse alone, against the
//! whole reading step (parse, classify, find thread tokens, extract the
//! reply text and attachments, read bounces), over the fixture corpus; and
//! the whole step with a notification's text to match in the reply (what a
//! reply to a reply address costs, see `extract::echo`).
//!
//! Run with `cargo bench --bench reading`. Figures are per message, and the
//! ratio of the two is measured in the same run, so it holds on a noisy machine.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            fixtures(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            out.push(path);
        }
    }
}

/// Runs `f` over every message until `budget` is spent; returns time per message.
fn measure(messages: &[Vec<u8>], budget: Duration, mut f: impl FnMut(&[u8])) -> Duration {
    for m in messages {
        f(m); // warm up
    }
    let start = Instant::now();
    let mut count = 0u32;
    while start.elapsed() < budget {
        for m in messages {
            f(m);
        }
        count += messages.len() as u32;
    }
    start.elapsed() / count
}

fn main() {
    let mut paths = Vec::new();
    fixtures(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail"), &mut paths);
    paths.sort();
    let messages: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).expect("read")).collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!("{} fixture messages, {} bytes on average", messages.len(), bytes / messages.len());
    let budget = Duration::from_secs(3);
    // Interleave the two measurements twice so that drift affects both alike.
    let mut parse = Vec::new();
    let mut read = Vec::new();
    let mut matched = Vec::new();
    let notification = notification();
    for _ in 0..2 {
        parse.push(measure(&messages, budget, |m| {
            black_box(mail_parser::MessageParser::default().parse(black_box(m)));
        }));
        read.push(measure(&messages, budget, |m| {
            black_box(mailgate::pipeline::analyze("sender@example.org", &[], black_box(m)));
        }));
        matched.push(measure(&messages, budget, |m| {
            if let Some(analysis) = mailgate::pipeline::analyze("sender@example.org", &[], black_box(m)) {
                black_box(mailgate::pipeline::extract::echo::remove(&analysis.reply_text, &notification));
            }
        }));
    }
    let parse = parse.iter().min().copied().unwrap_or_default();
    let read = read.iter().min().copied().unwrap_or_default();
    let matched = matched.iter().min().copied().unwrap_or_default();
    println!("mail-parser parse alone:   {:>8.1} µs/message", parse.as_secs_f64() * 1e6);
    println!("whole reading step:        {:>8.1} µs/message", read.as_secs_f64() * 1e6);
    println!("ratio reading / parse:     {:>8.2}x", read.as_secs_f64() / parse.as_secs_f64());
    println!("with a notification:       {:>8.1} µs/message", matched.as_secs_f64() * 1e6);
    println!("ratio with it / parse:     {:>8.2}x", matched.as_secs_f64() / parse.as_secs_f64());
}

/// A notification's text as the shipped template writes it, about 1.5 KB.
fn notification() -> String {
    let mut text = String::from(
        "-- Reply above this line --\n\nHello Olivia,\n\nAlex Agent from the support team wrote in chat #4:\n\n",
    );
    for _ in 0..6 {
        text.push_str(
            "We restarted the export job on the live server and cleared the cache. Could you check whether \
             last night's file is complete now, and tell us the time you see on the first line?\n\n",
        );
    }
    text.push_str("Also in this conversation: Bob Jones\n\nhttps://dashboard.example/chats/4\n\n[ref:aeaqcanljlyhz5giqsz4ratieq]\n");
    text
}
