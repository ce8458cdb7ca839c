//! Issue 30: slow clients keep nobody out. A command line, a DATA section
//! and a session each have a lifetime that no trickle of bytes extends,
//! DATA must keep a minimum rate, connections are capped per network, and
//! when every slot is taken the session that made no progress for longest
//! is closed to make room for a client that sends mail.

use crate::support::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `local` (a loopback address of its own).
async fn connect_from(local: IpAddr, server: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(local, 0)).ok()?;
    socket.connect(server).await.ok()
}

/// Reads what the server says until it closes (or `limit` passes).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn trickling_commands_data_and_sessions_end_at_their_limits() {
    let app = spawn_app_with(|c| {
        c.limits.command_line_timeout = Duration::from_secs(2);
        c.limits.data_rate_window = Duration::from_secs(2);
        c.limits.min_data_rate = 1024;
        c.limits.session_lifetime = Duration::from_secs(3);
    })
    .await;
    let note = app.chat_with_note().await.2;
    // A command line sent a byte at a time.
    let mut slow = TcpStream::connect(app.smtp).await.unwrap();
    let (mut read, mut write) = slow.split();
    let said =
        trickle(&mut read, &mut write, b"EHLO slow.example.org", Duration::from_millis(200), Duration::from_secs(15))
            .await;
    assert!(said.contains("421 4.4.2 A command line took longer than 2 s"), "{said}");
    // DATA at ten bytes a second.
    let mut smtp = app.smtp().await;
    smtp.expect("EHLO slow.example", "250").await;
    smtp.expect(&format!("MAIL FROM:<{OWNER}>"), "250").await;
    smtp.expect(&format!("RCPT TO:<{}>", note.reply_address()), "250").await;
    smtp.expect("DATA", "354").await;
    let said = smtp.trickle(b"Subject: slow\r\n\r\nhello ", Duration::from_millis(100), Duration::from_secs(15)).await;
    assert!(said.contains("421 4.4.2 The message is arriving slower than 1024 bytes a second"), "{said}");
    // A session kept busy with NOOPs still ends.
    let mut busy = app.smtp().await;
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(15) {
        last = busy.cmd("NOOP").await;
        if !last.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(last.contains("421 4.4.2 The session lasted longer than 3 s"), "{last}");
    let metrics = app.metrics().await;
    for reason in ["command_line", "data_too_slow", "session_lifetime"] {
        assert!(
            metrics.contains(&format!("mailgate_smtp_sessions_closed_total{{reason=\"{reason}\"}} 1")),
            "{metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn six_hundred_trickling_connections_keep_no_mail_out() {
    raise_file_limit(4096);
    let app = spawn_app_with(|c| c.limits.command_line_timeout = Duration::from_secs(6)).await;
    let note = app.chat_with_note().await.2;
    let server = app.smtp;
    // 600 connections from 120 networks of 127.1.0.0/16, five per address,
    // each sending a command a byte every half second.
    let mut tricklers = Vec::new();
    for i in 0..600u32 {
        let local = IpAddr::from([127, 1, (i / 5) as u8, (i % 5 + 1) as u8]);
        tricklers.push(tokio::spawn(async move {
            let started = Instant::now();
            let Some(mut stream) = connect_from(local, server).await else { return (String::new(), Duration::ZERO) };
            let (mut read, mut write) = stream.split();
            let said =
                trickle(&mut read, &mut write, b"EHLO x", Duration::from_millis(500), Duration::from_secs(40)).await;
            (said, started.elapsed())
        }));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Meanwhile a client that sends mail comes every second and is served.
    for n in 0..12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let reply =
            reply_mail(OWNER, &note.reply_address(), "Hi", &format!("through-{n}@acme.example"), "", "Still here");
        // A sending server tries again when it is told to (`421` at the
        // greeting); it is served within seconds.
        let mut answer = String::new();
        for _ in 0..30 {
            let mut smtp = Smtp::connect(app.smtp).await;
            if smtp.greeting.starts_with("220") {
                smtp.expect("EHLO mail.acme.example", "250").await;
                answer = smtp.send(OWNER, &[&note.reply_address()], &reply).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(answer.starts_with("250 2.0.0"), "delivery {n} while 600 connections trickle: {answer}");
    }
    // Every trickling session was closed: at its limit, to make room, or at connect.
    for trickler in tricklers {
        let (said, lasted) = trickler.await.unwrap();
        assert!(said.is_empty() || said.contains("421"), "{said}");
        assert!(lasted < Duration::from_secs(40), "closed within its limits: {lasted:?}");
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("mailgate_smtp_sessions_closed_total{reason=\"evicted\"}"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn one_network_cannot_take_every_slot() {
    let app = spawn_app_with(|c| c.limits.max_connections_per_network = 4).await;
    let mut open = Vec::new();
    for host in 1..=4u8 {
        open.push(connect_from(IpAddr::from([127, 2, 0, host]), app.smtp).await.unwrap());
    }
    let mut fifth = connect_from(IpAddr::from([127, 2, 0, 9]), app.smtp).await.unwrap();
    let said = read_until_closed(&mut fifth, Duration::from_secs(5)).await;
    assert!(said.starts_with("421 4.7.0 Too many connections from your network"), "{said}");
    let mut elsewhere = connect_from(IpAddr::from([127, 2, 1, 9]), app.smtp).await.unwrap();
    let mut greeting = [0u8; 3];
    elsewhere.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220", "another network is served");
    drop(open);
    app.stop().await;
}

/// Lets this process open `wanted` files at once (600 connections are
/// 1,200 sockets in one process).
fn raise_file_limit(wanted: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit on a struct of our own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
