//! Throughput, latency, CPU time and memory of the real `mailgate serve`
//! process doing the whole pipeline (parse, classify, authenticate, thread,
//! authorize, rules, extract, store with its outbox rows, and the outbound
//! worker sending the notifications), durable (SQLite WAL with
//! synchronous=FULL, or PostgreSQL with synchronous_commit=on), against a
//! receiver that does no work at all (Postfix's `smtp-sink`) with the same load
//! in the same run.
//!
//! `cargo bench --bench smtp [-- [--backend sqlite|postgres] [--size 2|50] [--repeat N] [--lmtp] [--prefill N] [--instances 2] [CONNECTIONS...]]`
//! (`--lmtp`: the same server also takes the load over LMTP, reported beside SMTP)
//! (`--instances 2`, PostgreSQL only: a second `serve` on the same database,
//! each with its own data folder and database connections, then each level
//! measured on one instance and on both at once, in turn)
//! (default: both backends, 2 KB and 50 KB replies, 1 10 50 connections, each
//! measured once; with `--repeat N`, N rounds of mailgate then smtp-sink per
//! level and the median of their ratios).
//! PostgreSQL is a throw-away cluster from `scripts/postgres`.
//! `--prefill N` first fills the fresh store with N messages and all that
//! surrounds them, as years of traffic leave it (`support/prefill.rs`), and
//! reports the time it took, the bytes on disk and the server's start-up.
//! `MAILGATE_BENCH_RAW_DAYS=30` with it keeps originals for 30 days instead
//! of 90, so that the retention purge deletes a backlog during the load.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports on the console")]

#[path = "support/prefill.rs"]
mod prefill;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DOMAIN: &str = "bench.example";
const SINK_ADDR: &str = "127.0.0.1:25251";
const SECONDS_PER_LEVEL: u64 = 5;
/// Enough customers that none sends more than the loop breaker's 120 an hour
/// (twice as many with `--instances 2`, which sends twice the mail).
const CUSTOMERS: usize = 2_000;

/// What one load run measured on the client side.
struct Load {
    messages: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// What the server process spent during a run.
struct Cost {
    cpu_seconds: f64,
    peak_rss_mb: f64,
    /// CPU time of the PostgreSQL server's processes, when it is the database.
    database_cpu_seconds: Option<f64>,
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

/// `len` bytes that do not compress, as a real PDF's (its streams are
/// deflated already) or a photo's: an xorshift sequence. (An earlier version
/// of the benchmark used a multiplicative sequence that compressed 16 to 1,
/// which PostgreSQL then compressed on every insert.)
fn pdf_like_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A customer's reply: about 2 KB of text, or (`size_kb` 50) a short text with
/// a PDF of about 36 KB attached (50 KB on the wire), different in every message.
fn reply_message(from: &str, rcpt: &str, id: &str, size_kb: usize, attachment_b64: &str) -> String {
    let head = format!("From: {from}\r\nTo: {rcpt}\r\nSubject: Re: load\r\nMessage-ID: <{id}@bench.example>\r\n");
    if size_kb < 50 {
        let body = "Thanks, that fixed it. ".repeat(80);
        return format!("{head}\r\n{body}\r\n.\r\n");
    }
    // Every attachment differs (its first characters carry the message id), as
    // customers' files do: no help from storing identical files once.
    let unique = format!("{:A<32}", id.replace(['-', '@', '.'], "A"));
    let mut content = String::with_capacity(attachment_b64.len());
    content.push_str(&unique[..32]);
    content.push_str(&attachment_b64[32..]);
    let lines: Vec<&str> = content.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!(
        "{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere is the log you asked for.\r\n\r\nOlivia\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"log.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"log.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--b1--\r\n.\r\n",
        lines.join("\r\n")
    )
}

/// `connections` clients, each sending messages for `duration`, pipelining
/// MAIL, RCPT and DATA as MTAs do.
async fn drive(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    senders: &[(String, String)],
    size_kb: usize,
    greeting: &'static str,
) -> Load {
    let start = Instant::now();
    let attachment = data_encoding::BASE64.encode(&pdf_like_bytes(36_000));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let senders = senders.to_vec();
        let attachment = attachment.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            reply(&mut reader).await;
            write.write_all(format!("{greeting} load.example\r\n").as_bytes()).await.unwrap();
            reply(&mut reader).await;
            let mut latencies = Vec::new();
            let mut n = 0;
            while start.elapsed() < duration {
                // Each message comes from another customer replying in their
                // own chat, so that no one sends more than a person could
                // (the loop breaker keeps its production limit).
                let (from, rcpt) = &senders[(c + n * connections) % senders.len()];
                let id = format!("load-{c}-{n}-{}", start.elapsed().as_nanos());
                let message = reply_message(from, rcpt, &id, size_kb, &attachment);
                let sent = Instant::now();
                write
                    .write_all(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())
                    .await
                    .unwrap();
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

/// Runs `drive` against the process `pid`, measuring its CPU time and peak
/// memory (and the CPU time of the database server `database`, if any).
async fn measured(
    pid: u32,
    database: Option<u32>,
    addr: SocketAddr,
    connections: usize,
    senders: &[(String, String)],
    size_kb: usize,
    greeting: &'static str,
) -> (Load, Cost) {
    // Writing 5 to clear_refs resets the peak resident size (VmHWM).
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = cpu_seconds(pid);
    let database_before = database.map(process_tree_cpu_seconds);
    let load = drive(addr, connections, Duration::from_secs(SECONDS_PER_LEVEL), senders, size_kb, greeting).await;
    let cost = Cost {
        cpu_seconds: cpu_seconds(pid) - before,
        peak_rss_mb: proc_status_mb(pid, "VmHWM:"),
        database_cpu_seconds: database
            .zip(database_before)
            .map(|(root, before)| process_tree_cpu_seconds(root) - before),
    };
    (load, cost)
}

/// CPU time of a process and its children (PostgreSQL's postmaster and its
/// backends), in seconds.
fn process_tree_cpu_seconds(root: u32) -> f64 {
    let mut total = cpu_seconds(root);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat.rsplit_once(") ").and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(root) {
            total += cpu_seconds(pid);
        }
    }
    total
}

/// Prints one line; returns (messages per second, CPU seconds per message).
fn report(name: &str, load: &mut Load, cost: &Cost) -> (f64, f64) {
    load.latencies.sort();
    let pct = |p: f64| {
        load.latencies
            .get(((load.latencies.len() as f64 * p) as usize).min(load.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let rate = load.messages as f64 / load.elapsed.as_secs_f64();
    let cpu_per_message = cost.cpu_seconds / load.messages.max(1) as f64;
    println!(
        "  {name:<10} {rate:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms   CPU {:>6.1} us/msg   peak RSS {:>5.0} MB   ({} messages)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        cpu_per_message * 1e6,
        cost.peak_rss_mb,
        load.messages
    );
    if let Some(database) = cost.database_cpu_seconds {
        println!(
            "  {:<10} PostgreSQL's processes: CPU {:>6.1} us/msg",
            "",
            database / load.messages.max(1) as f64 * 1e6
        );
    }
    (rate, cpu_per_message)
}

/// User plus system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `ours` as a multiple of `reference`; /proc counts CPU time in clock ticks,
/// so a reference that used less than one measured none.
fn times(ours: f64, reference: f64) -> String {
    if reference > 0.0 {
        format!("{:.1}x", ours / reference)
    } else {
        "n/a (smtp-sink's CPU time below /proc's resolution)".to_owned()
    }
}

/// One level of load against one mailgate server.
struct Level {
    /// The `mailgate serve` process.
    server: u32,
    /// PostgreSQL's postmaster, whose processes' CPU time is counted too.
    postmaster: Option<u32>,
    /// The server's SMTP and HTTP addresses, and its LMTP one with `--lmtp`.
    smtp: SocketAddr,
    http: SocketAddr,
    lmtp: Option<SocketAddr>,
    /// Concurrent connections, and the replies' size in KB.
    connections: usize,
    size: usize,
}

/// One round of a level: mailgate, then smtp-sink (`sink` at `sink_addr`),
/// each reported; returns the ratios of messages per second and of CPU time
/// per message (none when smtp-sink's CPU time was below /proc's resolution).
async fn compare(level: &Level, sink: u32, sink_addr: SocketAddr, senders: &[(String, String)]) -> (f64, Option<f64>) {
    let before = admin_stats(level.http).await;
    let (mut ours, our_cost) =
        measured(level.server, level.postmaster, level.smtp, level.connections, senders, level.size, "EHLO").await;
    let (rate, cpu) = report("mailgate", &mut ours, &our_cost);
    report_server_stats(&before, &admin_stats(level.http).await);
    if let Some(lmtp) = level.lmtp {
        let (mut load, cost) =
            measured(level.server, level.postmaster, lmtp, level.connections, senders, level.size, "LHLO").await;
        let (lmtp_rate, lmtp_cpu) = report("LMTP", &mut load, &cost);
        println!(
            "  LMTP / SMTP: {:.2}x the messages per second, {:.2}x the CPU time per message",
            lmtp_rate / rate,
            lmtp_cpu / cpu
        );
    }
    let (mut theirs, their_cost) =
        measured(sink, None, sink_addr, level.connections, senders, level.size, "EHLO").await;
    let (reference, reference_cpu) = report("smtp-sink", &mut theirs, &their_cost);
    println!(
        "  mailgate / smtp-sink: {:.2}x the messages per second, {} the CPU time per message",
        rate / reference,
        times(cpu, reference_cpu)
    );
    if let Some(database) = our_cost.database_cpu_seconds {
        let with_database = cpu + database / ours.messages.max(1) as f64;
        println!(
            "  with PostgreSQL's CPU time counted: {} the CPU time per message",
            times(with_database, reference_cpu)
        );
    }
    (rate / reference, (reference_cpu > 0.0).then(|| cpu / reference_cpu))
}

/// A `mailgate serve` process under load and its SMTP address.
#[derive(Clone, Copy)]
struct Instance {
    pid: u32,
    smtp: SocketAddr,
}

/// One round of part 5 of issue 36: the first instance alone with
/// `connections` clients, then every instance at once with as many each;
/// prints both and the ratio of their total messages per second.
async fn one_against_two(
    instances: &[Instance],
    postmaster: Option<u32>,
    connections: usize,
    size: usize,
    senders: &[(String, String)],
) {
    let (first, _) = instances.split_first().expect("an instance");
    let (mut alone, cost) = measured(first.pid, postmaster, first.smtp, connections, senders, size, "EHLO").await;
    let (one_rate, _) = report("one", &mut alone, &cost);
    let runs = futures_util::future::join_all(
        instances.iter().map(|i| measured(i.pid, postmaster, i.smtp, connections, senders, size, "EHLO")),
    )
    .await;
    let mut together = Load { messages: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    let mut cost = Cost { cpu_seconds: 0.0, peak_rss_mb: 0.0, database_cpu_seconds: None };
    for (load, each) in runs {
        together.messages += load.messages;
        together.elapsed = together.elapsed.max(load.elapsed);
        together.latencies.extend(load.latencies);
        cost.cpu_seconds += each.cpu_seconds;
        cost.peak_rss_mb = cost.peak_rss_mb.max(each.peak_rss_mb);
        // Each run counted the whole PostgreSQL server over the same time.
        cost.database_cpu_seconds = each.database_cpu_seconds;
    }
    let (both_rate, _) = report(&format!("{} at once", instances.len()), &mut together, &cost);
    println!("  {} instances / one: {:.2}x the messages per second", instances.len(), both_rate / one_rate);
}

/// The middle value (the mean of the two middle ones for an even count);
/// NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

/// A size line of /proc/PID/status (`VmHWM:`, `RssAnon:`, ...), in MB.
fn proc_status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The admin credential the benchmark gives `mailgate serve`.
const ADMIN_TOKEN: &str = "bench-admin-token-3e7a1c5f9b2d4e6a8c0f1b3d5e7a9c2f";
const API_TOKEN: &str = "bench-api-token-6a2c4e8f1b3d5f7a9c0e2b4d6f8a1c3e";

/// The server's running totals, from the admin API (`null` if it did not answer).
async fn admin_stats(http: SocketAddr) -> serde_json::Value {
    async {
        let response = reqwest::Client::new()
            .get(format!("http://{http}/api/v1/admin/stats"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        response.json().await
    }
    .await
    .unwrap_or_default()
}

/// What the kept originals take (`null` from a server that keeps none).
async fn storage(http: SocketAddr) -> serde_json::Value {
    async {
        let response = reqwest::Client::new()
            .get(format!("http://{http}/api/v1/admin/stats?storage=true"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        response.json::<serde_json::Value>().await
    }
    .await
    .map(|stats| stats["originals"].clone())
    .unwrap_or_default()
}

/// Bytes per message the originals stored since `before` take, raw and as
/// stored (lz4).
fn report_storage(before: &serde_json::Value, after: &serde_json::Value, size: usize) {
    let grew = |field: &str| after[field].as_i64().unwrap_or(0) - before[field].as_i64().unwrap_or(0);
    let count = grew("count");
    if count > 0 {
        println!(
            "  originals of the {size} KB replies: {count} kept, {:.0} bytes each as received, {:.0} bytes each as stored ({:.2}x)",
            grew("raw_bytes") as f64 / count as f64,
            grew("stored_bytes") as f64 / count as f64,
            grew("stored_bytes") as f64 / grew("raw_bytes").max(1) as f64
        );
    }
}

/// How much `field` of `section` grew between two readings of the totals.
fn grew(before: &serde_json::Value, after: &serde_json::Value, section: &str, field: &str) -> u64 {
    let read = |stats: &serde_json::Value| stats[section][field].as_u64().unwrap_or(0);
    read(after).saturating_sub(read(before))
}

/// How the messages of one measurement were committed, and what the outbound
/// worker sent meanwhile, from the totals before and after.
fn report_server_stats(before: &serde_json::Value, after: &serde_json::Value) {
    let commit = |field| grew(before, after, "group_commit", field);
    let transactions = commit("transactions");
    if transactions > 0 {
        let per = |total: u64| total as f64 / transactions as f64 / 1000.0;
        println!(
            "  group commit: {:.1} messages per transaction; per transaction {:.2} ms of statements, {:.2} ms committing",
            commit("messages") as f64 / transactions as f64,
            per(commit("statements_us")),
            per(commit("commit_us"))
        );
        let syncs = commit("syncs");
        if syncs > 0 {
            println!(
                "  log syncs (SQLite): {syncs}, {:.1} transactions per sync, {:.2} ms each",
                transactions as f64 / syncs as f64,
                commit("sync_us") as f64 / syncs as f64 / 1000.0
            );
        }
    }
    let outbound = |field| grew(before, after, "outbound", field);
    let (passes, sent) = (outbound("passes"), outbound("sent"));
    if passes > 0 {
        let mails = (sent + outbound("not_sent")).max(1) as f64;
        let per_mail = |field| outbound(field) as f64 / mails / 1000.0;
        let per_pass = |field| outbound(field) as f64 / passes as f64 / 1000.0;
        println!(
            "  outbound meanwhile: {sent} mails carrying {} more replies, in {passes} passes; per mail {:.2} ms preparing, \
             {:.2} ms sending; per pass {:.2} ms claiming, {:.2} ms syncing, {:.2} ms recording",
            outbound("merged"),
            per_mail("prepare_us"),
            per_mail("send_us"),
            per_pass("claim_us"),
            per_pass("sync_us"),
            per_pass("record_us")
        );
    }
}

/// Lets the outbound worker send what the last level queued, with nothing
/// else running, and reports what a mail cost: the levels' figures mix
/// receiving with sending, this one is sending alone.
async fn measure_drain(pid: u32, database: Option<u32>, http: SocketAddr) {
    let before = admin_stats(http).await;
    let cpu_before = cpu_seconds(pid);
    let database_before = database.map(process_tree_cpu_seconds);
    let start = Instant::now();
    let (mut sent, mut cpu_at_last, mut database_at_last) = (0, cpu_before, database_before);
    let mut last_change = Instant::now();
    // The last level's notifications fall due within the coalescing window
    // (10 s) after it; done when nothing more went out for two seconds.
    while start.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = grew(&before, &admin_stats(http).await, "outbound", "sent");
        if now != sent {
            (sent, last_change) = (now, Instant::now());
            cpu_at_last = cpu_seconds(pid);
            database_at_last = database.map(process_tree_cpu_seconds);
        } else if start.elapsed() > Duration::from_secs(12) && last_change.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let after = admin_stats(http).await;
    if sent == 0 {
        return;
    }
    let per_mail = |seconds: f64| seconds / sent as f64 * 1e6;
    let database = database_at_last
        .zip(database_before)
        .map(|(after, before)| format!(" + {:.0} us PostgreSQL's", per_mail(after - before)))
        .unwrap_or_default();
    let mails = (sent + grew(&before, &after, "outbound", "not_sent")).max(1) as f64;
    println!(
        "  sending the last level's notifications, nothing else running: {sent} mails carrying {} more replies; \
         per mail {:.0} us CPU{database}, {:.2} ms preparing, {:.2} ms sending",
        grew(&before, &after, "outbound", "merged"),
        per_mail(cpu_at_last - cpu_before),
        grew(&before, &after, "outbound", "prepare_us") as f64 / mails / 1000.0,
        grew(&before, &after, "outbound", "send_us") as f64 / mails / 1000.0,
    );
}

/// `mailgate serve` on `database_url`, as a process of its own: (process,
/// SMTP address, HTTP address).
fn serve(
    data: &std::path::Path,
    database_url: &str,
    lmtp: bool,
) -> (Child, SocketAddr, SocketAddr, Option<SocketAddr>) {
    let config = data.join("mailgate.toml");
    // All load comes from one address, and there is no DNS on this machine.
    // Everything else is the default configuration.
    let retention = std::env::var("MAILGATE_BENCH_RAW_DAYS").map(|days| format!("\n[retention]\nraw_days = {days}\n"));
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_connections_per_ip = 10000\n\n[auth]\nresolver = \"static\"\n{}",
            retention.unwrap_or_default()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--domain", DOMAIN])
        .args(if lmtp { &["--lmtp-listen", "127.0.0.1:0"][..] } else { &[][..] })
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .env("MAILGATE_DATABASE_URL", database_url)
        .env("MAILGATE_API_TOKEN", API_TOKEN)
        .env("MAILGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn,mailgate=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mailgate serve starts");
    use std::io::BufRead;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let started = lines_rx.iter().find(|l| l.contains("mailgate started")).expect("a start line");
    let field = |name: &str| -> SocketAddr {
        let rest = &started[started.find(name).unwrap() + name.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let lmtp = lmtp.then(|| field(" lmtp="));
    (child, field("smtp="), field("http="), lmtp)
}

/// Customers, each with a chat, and one agent (so that every reply queues a
/// notification); returns (sender, reply address) pairs.
async fn seed(database_url: &str, data: &std::path::Path, customers: usize) -> Vec<(String, String)> {
    let mut config = mailgate::config::Config::for_data_dir(data, DOMAIN);
    config.database_url = database_url.to_owned();
    let (store, signer) = mailgate::app::open_store(&config).await.unwrap();
    let site = store.create_site("bench", "sandbox", None).await.unwrap();
    store.create_user("agent@agents.example", "Agent", mailgate::domain::Role::Agent, None).await.unwrap();
    let mut senders = Vec::new();
    for i in 0..customers {
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
            original: None,
            extras: None,
        };
        let (thread, _) = store.create_thread(thread, first, &[], None).await.unwrap();
        let token = signer.sign(mailgate::domain::ReplyToken { thread_id: thread.id, recipient_id: customer.id });
        senders.push((email, format!("reply+{token}@{DOMAIN}")));
    }
    store.close().await;
    senders
}

/// The API's lists and the console's pages, each read 40 times in turn
/// (first page and a page further back): their p99 in ms.
async fn measure_reads(http: SocketAddr) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let origin = format!("http://{http}");
    let login = client
        .post(format!("{origin}/admin/login"))
        .header("origin", &origin)
        .form(&[("token", ADMIN_TOKEN), ("name", "bench")])
        .send()
        .await
        .unwrap();
    let cookie: String = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ");
    let api = |path: &str| (format!("{origin}/api/v1{path}"), false);
    let mut targets: Vec<(String, bool)> = [
        "/chats",
        "/chats?before_id=1500000",
        "/tickets",
        "/users",
        "/users?before_id=1010000",
        "/inbound-log",
        "/inbound-log?before_id=1500000",
        "/inbound-log?decision=rejected",
        "/outbox",
        "/outbox?status=failed",
        "/bounces",
        "/participants/pending",
        "/admin/held",
        "/admin/suppressions",
        "/admin/audit",
        "/admin/stats",
    ]
    .iter()
    .map(|p| api(p))
    .collect();
    for page in ["log", "held", "outbox", "bounces", "unsubscribes", "participants", "plans"] {
        targets.push((format!("{origin}/admin/{page}"), true));
    }
    // The lists under one thing, and the pages of one item: the newest of
    // each (none on an empty store: those are left out).
    let first = |path: &'static str, field: &'static str| {
        let (client, url) = (client.clone(), format!("{origin}/api/v1{path}"));
        async move {
            let token = if path.starts_with("/admin/") { ADMIN_TOKEN } else { API_TOKEN };
            let list: serde_json::Value =
                client.get(&url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            list[0][field].as_i64()
        }
    };
    let (chat, ticket, user) =
        (first("/chats", "id").await, first("/tickets", "ticket_number").await, first("/users", "id").await);
    let (log, held, outbox) =
        (first("/inbound-log", "id").await, first("/admin/held", "id").await, first("/outbox", "id").await);
    let under = |id: Option<i64>, paths: &[&str]| -> Vec<String> {
        id.map(|id| paths.iter().map(|p| p.replace("ID", &id.to_string())).collect()).unwrap_or_default()
    };
    let mut paths = vec!["/plans".to_owned(), "/admin/rules".to_owned(), "/admin/webhooks".to_owned()];
    paths.extend(under(user, &["/users/ID/unsubscribes"]));
    paths.extend(under(chat, &["/chats/ID", "/chats/ID/messages", "/chats/ID/participants"]));
    paths.extend(under(ticket, &["/tickets/ID/messages", "/tickets/ID/participants"]));
    targets.extend(paths.iter().map(|p| api(p)));
    // (`/admin` itself sends the browser to the log.)
    let mut pages = vec!["/rules".to_owned(), "/templates".to_owned(), "/doctor".to_owned()];
    pages.extend(under(log, &["/log/ID"]));
    pages.extend(under(held, &["/held/ID"]));
    pages.extend(under(outbox, &["/outbox/ID"]));
    targets.extend(pages.iter().map(|page| (format!("{origin}/admin{page}"), true)));
    let mut worst: Vec<(f64, String)> = Vec::new();
    println!("  reads (p99 of 40, ms):");
    let mut line = String::new();
    for (url, console) in &targets {
        let mut times = Vec::new();
        for _ in 0..40 {
            let request = match console {
                true => client.get(url).header("cookie", &cookie),
                false => client.get(url).bearer_auth(if url.contains("/admin/") { ADMIN_TOKEN } else { API_TOKEN }),
            };
            let start = Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status();
            let _ = response.bytes().await;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            assert!(status.is_success(), "{url}: {status}");
        }
        times.sort_by(f64::total_cmp);
        let p99 = times[times.len() * 99 / 100];
        let name = url.trim_start_matches(&origin).trim_start_matches("/api/v1").to_owned();
        line.push_str(&format!("{name} {p99:.1}; "));
        worst.push((p99, name));
    }
    println!("    {line}");
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("    slowest: {} at {:.1} ms", worst[0].1, worst[0].0);
}

/// `mailgate replay --since 7d` on the server's data: seconds and peak
/// resident memory, from `/usr/bin/time`.
fn measure_replay(data: &std::path::Path, database_url: &str) {
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(env!("CARGO_BIN_EXE_mailgate"))
        .args(["replay", "--since", "7d", "--data-dir"])
        .arg(data)
        .env("MAILGATE_DATABASE_URL", database_url)
        .env("MAILGATE_DOMAIN", DOMAIN)
        .stdout(Stdio::null())
        .output()
        .expect("/usr/bin/time runs (apt-get install time)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or("");
    let mut fields = last.split_whitespace();
    let (seconds, kb) =
        (fields.next().unwrap_or("?"), fields.next().and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0));
    println!("  replay --since 7d: {seconds} s, peak {:.0} MB", kb / 1024.0);
}

/// The bytes the database takes on disk: the SQLite file and its log, or
/// PostgreSQL's database size.
async fn database_bytes(database_url: &str, data: &std::path::Path) -> u64 {
    if database_url.starts_with("sqlite:") {
        ["mailgate.db", "mailgate.db-wal"]
            .iter()
            .filter_map(|name| std::fs::metadata(data.join(name)).ok())
            .map(|m| m.len())
            .sum()
    } else {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(database_url).await.unwrap();
        let size: i64 =
            sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&mut connection).await.unwrap();
        size as u64
    }
}

/// Bytes the kept originals take in the database, their indexes included
/// (SQLite: the pages of `originals` and its indexes, from `dbstat`).
async fn originals_bytes(database_url: &str) -> u64 {
    use sqlx::Connection;
    let size: i64 = if database_url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(pgsize), 0) AS INTEGER) FROM dbstat WHERE name = 'originals' \
             OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'originals' AND type = 'index')",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap()
    } else {
        let mut connection = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar("SELECT pg_total_relation_size('originals')").fetch_one(&mut connection).await.unwrap()
    };
    size as u64
}

/// A throw-away PostgreSQL cluster: (its directory, the server URL).
fn start_postgres() -> (String, String) {
    let out = Command::new("scripts/postgres").arg("start").output().expect("scripts/postgres runs");
    assert!(out.status.success(), "scripts/postgres start: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (dir, url) = line.split_once(' ').expect("DIR URL");
    (dir.to_owned(), url.to_owned())
}

/// What to measure, from the command line.
struct Options {
    backends: Vec<String>,
    sizes: Vec<usize>,
    levels: Vec<usize>,
    /// How many times each level is measured (mailgate, then smtp-sink, in turn).
    repeat: usize,
    /// Also measure the same server over LMTP.
    lmtp: bool,
    /// Messages written into the store before the server starts (`--prefill N`).
    prefill: u64,
    /// Instances on one PostgreSQL database to compare with one (`--instances 2`).
    instances: usize,
}

fn options() -> Options {
    let mut options = Options {
        backends: Vec::new(),
        sizes: Vec::new(),
        levels: Vec::new(),
        repeat: 1,
        lmtp: false,
        prefill: 0,
        instances: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => options.backends.push(args.next().expect("--backend sqlite|postgres")),
            "--lmtp" => options.lmtp = true,
            "--prefill" => options.prefill = args.next().and_then(|n| n.parse().ok()).expect("--prefill N"),
            "--instances" => {
                options.instances =
                    args.next().and_then(|n| n.parse().ok()).filter(|&n| n == 2).expect("--instances 2");
            }
            "--size" => options.sizes.push(args.next().and_then(|s| s.parse().ok()).expect("--size 2|50")),
            "--repeat" => {
                options.repeat = args.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0).expect("--repeat N");
            }
            // cargo bench adds --bench; numbers are connection counts.
            other => options.levels.extend(other.parse::<usize>().ok()),
        }
    }
    if options.backends.is_empty() {
        options.backends = vec!["sqlite".into(), "postgres".into()];
    }
    if options.sizes.is_empty() {
        options.sizes = vec![2, 50];
    }
    if options.levels.is_empty() {
        options.levels = vec![1, 10, 50];
    }
    options
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // A smtp-sink left over from an interrupted run would share the port with
    // ours (it binds with SO_REUSEPORT) and take part of the load unmeasured.
    if std::net::TcpStream::connect_timeout(&SINK_ADDR.parse().unwrap(), Duration::from_millis(200)).is_ok() {
        panic!("something already listens on {SINK_ADDR} (a smtp-sink left running by an interrupted run?)");
    }
    let mut sink = Command::new("smtp-sink")
        .args(["-u", "nobody", SINK_ADDR, "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink, the reference receiver, is installed (apt-get install postfix)");
    std::thread::sleep(Duration::from_millis(300));
    let sink_addr: SocketAddr = SINK_ADDR.parse().unwrap();
    println!("{SECONDS_PER_LEVEL} s per measurement; mailgate and smtp-sink each run as a process of their own.");
    // Each backend's data folder (the database and thousands of .eml files)
    // is removed only at the end: on an ext4 without a journal (this machine's),
    // creating a file steps over every inode deleted in the last minute, so
    // removing one backend's files would slow the next one's mail.
    let mut finished = Vec::new();
    for backend in &options.backends {
        let data = tempfile::tempdir().unwrap();
        let mut postgres = None;
        let mut postmaster = None;
        let database_url = if backend == "postgres" {
            let (dir, server) = start_postgres();
            let pid_file = std::fs::read_to_string(format!("{dir}/data/postmaster.pid")).unwrap_or_default();
            postmaster = pid_file.lines().next().and_then(|line| line.trim().parse::<u32>().ok());
            postgres = Some(dir);
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await.unwrap();
                sqlx::query("CREATE DATABASE mailgate_bench").execute(&mut admin).await.unwrap();
            });
            format!("{server}/mailgate_bench")
        } else {
            format!("sqlite://{}", data.path().join("mailgate.db").display())
        };
        if options.prefill > 0 {
            let migrated = Command::new(env!("CARGO_BIN_EXE_mailgate"))
                .args(["migrate", "--data-dir"])
                .arg(data.path())
                .env("MAILGATE_DATABASE_URL", &database_url)
                .env("MAILGATE_DOMAIN", DOMAIN)
                .output()
                .expect("mailgate migrate runs");
            assert!(migrated.status.success(), "migrate: {}", String::from_utf8_lossy(&migrated.stderr));
            let filled = runtime.block_on(prefill::prefill(&database_url, options.prefill, DOMAIN));
            println!(
                "{backend}: prefilled {} messages in {} conversations, {} users, {} organizations in {:.0} s; \
                 {:.0} MB on disk, {:.0} MB of it the kept originals",
                filled.messages,
                filled.threads,
                filled.users,
                filled.organizations,
                filled.seconds,
                runtime.block_on(database_bytes(&database_url, data.path())) as f64 / 1e6,
                runtime.block_on(originals_bytes(&database_url)) as f64 / 1e6
            );
        }
        let starting = Instant::now();
        let (mut server, smtp, http, lmtp) = serve(data.path(), &database_url, options.lmtp);
        println!("{backend}: mailgate serve started in {} ms", starting.elapsed().as_millis());
        let senders = runtime.block_on(seed(&database_url, data.path(), CUSTOMERS * options.instances));
        let mut kept_before = runtime.block_on(storage(http));
        for &size in &options.sizes {
            for &connections in &options.levels {
                println!("{backend}, {connections} connection(s), {size} KB replies:");
                let level = Level { server: server.id(), postmaster, smtp, http, lmtp, connections, size };
                let ratios: Vec<(f64, Option<f64>)> = (0..options.repeat)
                    .map(|_| runtime.block_on(compare(&level, sink.id(), sink_addr, &senders)))
                    .collect();
                if ratios.len() > 1 {
                    let rates = median(ratios.iter().map(|(rate, _)| *rate).collect());
                    let cpu = median(ratios.iter().filter_map(|(_, cpu)| *cpu).collect());
                    println!(
                        "  median of {} rounds: {rates:.2}x the messages per second, {cpu:.1}x the CPU time per message",
                        ratios.len()
                    );
                }
            }
            runtime.block_on(measure_drain(server.id(), postmaster, http));
            if options.instances == 2 && postmaster.is_some() {
                let other_data = tempfile::tempdir().unwrap();
                let (mut other, other_smtp, _, _) = serve(other_data.path(), &database_url, false);
                for &connections in &options.levels {
                    println!(
                        "{backend}, {size} KB replies: one instance against two, {connections} connection(s) each:"
                    );
                    let one = Instance { pid: server.id(), smtp };
                    let two = [one, Instance { pid: other.id(), smtp: other_smtp }];
                    for _ in 0..options.repeat {
                        runtime.block_on(one_against_two(&two, postmaster, connections, size, &senders));
                    }
                }
                let _ = Command::new("kill").args(["-TERM", &other.id().to_string()]).status();
                let _ = other.wait();
                finished.push(other_data);
            }
            if options.prefill > 0 {
                runtime.block_on(measure_reads(http));
                measure_replay(data.path(), &database_url);
            }
            let kept = runtime.block_on(storage(http));
            report_storage(&kept_before, &kept, size);
            kept_before = kept;
        }
        let pid = server.id();
        println!(
            "  mailgate at the end: resident {:.0} MB, of which {:.0} MB its own memory and {:.0} MB mapped files",
            proc_status_mb(pid, "VmRSS:"),
            proc_status_mb(pid, "RssAnon:"),
            proc_status_mb(pid, "RssFile:")
        );
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let _ = server.wait();
        if let Some(dir) = postgres {
            let _ = Command::new("scripts/postgres").args(["stop", &dir]).status();
        }
        finished.push(data);
    }
    let _ = sink.kill();
    let _ = sink.wait();
    drop(finished);
}
