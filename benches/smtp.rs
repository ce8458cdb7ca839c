//! Throughput and latency of the real SMTP listener with the whole pipeline
//! (parse, classify, authenticate, thread, authorize, rules, extract, store
//! with its outbox rows), durable (SQLite WAL, synchronous=FULL), against a
//! receiver that does no work at all (Postfix's `smtp-sink`, when installed),
//! with the same load in the same run.
//!
//! `cargo bench --bench smtp [-- CONNECTIONS...]` (default: 1 10 50).

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports on the console")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DOMAIN: &str = "bench.example";

struct Load {
    messages: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// `connections` clients, each sending messages for `duration`, pipelining
/// MAIL, RCPT and DATA as MTAs do.
async fn drive(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    senders: &[(String, String)],
    body: &str,
) -> Load {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        // Each connection is another customer replying in their own chat.
        let (from, rcpt) = senders[c % senders.len()].clone();
        let body = body.to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            reply(&mut reader).await;
            write.write_all(b"EHLO load.example\r\n").await.unwrap();
            reply(&mut reader).await;
            let mut latencies = Vec::new();
            let mut n = 0;
            while start.elapsed() < duration {
                let sent = Instant::now();
                let message = format!(
                    "From: {from}\r\nTo: {rcpt}\r\nSubject: Re: load\r\nMessage-ID: <load-{c}-{n}-{}@bench.example>\r\n\r\n{body}\r\n.\r\n",
                    start.elapsed().as_nanos()
                );
                write.write_all(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes()).await.unwrap();
                for _ in 0..3 {
                    reply(&mut reader).await;
                }
                write.write_all(message.as_bytes()).await.unwrap();
                let answer = reply(&mut reader).await;
                assert!(answer.starts_with("250"), "{answer}");
                latencies.push(sent.elapsed());
                n += 1;
            }
            let _ = write.write_all(b"QUIT\r\n").await;
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load { messages: latencies.len(), elapsed: start.elapsed(), latencies }
}

fn report(name: &str, load: &mut Load) -> f64 {
    load.latencies.sort();
    let pct = |p: f64| {
        load.latencies
            .get(((load.latencies.len() as f64 * p) as usize).min(load.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let rate = load.messages as f64 / load.elapsed.as_secs_f64();
    println!(
        "  {name:<10} {rate:>9.0} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} messages)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        load.messages
    );
    rate
}

fn peak_memory_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let levels = if args.is_empty() { vec![1, 10, 50] } else { args };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = mailgate::config::Config::for_data_dir(dir.path(), DOMAIN);
        config.api_token = Some("bench".to_owned());
        // A benchmark sender writes far more than a person; the cap still bounds the counting.
        config.limits.max_messages_per_sender_per_hour = 1_000_000;
        config.limits.max_connections_per_ip = 10_000;
        let app = mailgate::app::start(config).await.unwrap();
        // Fifty customers, each with a chat: replies go to real threads.
        let store = app.store.clone();
        let site = store.create_site("bench", "sandbox", None).await.unwrap();
        let (_, signer) =
            mailgate::app::open_store(&mailgate::config::Config::for_data_dir(dir.path(), DOMAIN)).await.unwrap();
        let mut senders = Vec::new();
        for i in 0..50 {
            let email = format!("customer{i}@bench.example");
            let customer = store.create_user(&email, "C", mailgate::domain::Role::Owner, None).await.unwrap();
            let thread = mailgate::store::NewThread {
                kind: mailgate::domain::ThreadKind::Chat,
                site_id: site.id,
                customer_id: customer.id,
                ticket_type: None,
                subject: "s".into(),
            };
            let first = mailgate::store::NewMessage {
                thread_id: 0,
                author_id: customer.id,
                author_is_agent: false,
                body: "hi".into(),
                source: mailgate::domain::Source::Dashboard,
                rfc_message_id: None,
                attachments: vec![],
                notify: vec![],
                routing: None,
                extra_mail: vec![],
            };
            let (thread, _) = store.create_thread(thread, first, &[], None).await.unwrap();
            let token = signer.sign(mailgate::domain::ReplyToken { thread_id: thread.id, recipient_id: customer.id });
            senders.push((email, format!("reply+{token}@{DOMAIN}")));
        }
        let body = "Thanks, that fixed it. ".repeat(80); // about 2 KB
        let sink = std::process::Command::new("smtp-sink")
            .args(["-u", "nobody", "127.0.0.1:25251", "1000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let duration = Duration::from_secs(5);
        for connections in levels {
            println!("{connections} connection(s), 2 KB replies, {} s:", duration.as_secs());
            let mut ours = drive(app.smtp_addr, connections, duration, &senders, &body).await;
            let rate = report("mailgate", &mut ours);
            if sink.is_some() {
                let sink_addr = "127.0.0.1:25251".parse().unwrap();
                let mut theirs = drive(sink_addr, connections, duration, &senders, &body).await;
                let reference = report("smtp-sink", &mut theirs);
                println!("  ratio mailgate / smtp-sink: {:.2}x", rate / reference);
            } else {
                println!("  (smtp-sink not installed: apt-get install postfix for the reference receiver)");
            }
        }
        println!("peak memory of this process (server and load generator): {:.0} MB", peak_memory_mb());
        if let Some(mut sink) = sink {
            let _ = sink.kill();
        }
        app.shutdown().await;
    });
}
