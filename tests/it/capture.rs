//! A real SMTP receiver for the tests: listens on a free loopback port,
//! records every message it accepts, and can be told to answer the next
//! transactions with a failure (`421`, `550`) to exercise retries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as the receiver got it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
}

impl Captured {
    /// The parsed message.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(self.data.as_bytes()).expect("captured mail parses")
    }

    pub fn header(&self, name: &str) -> String {
        self.parsed().header_raw(name).map(|v| v.trim().to_owned()).unwrap_or_default()
    }

    /// The address in Reply-To.
    pub fn reply_address(&self) -> String {
        crate::support::address_in(&self.header("Reply-To"))
    }

    /// The reply token in Reply-To.
    pub fn token(&self) -> String {
        crate::support::token_in(&self.reply_address())
    }
}

#[derive(Default)]
struct State {
    messages: Vec<Captured>,
    /// Replies to give at the end of DATA, before accepting again.
    failures: VecDeque<String>,
    /// DATA transactions seen, accepted or not.
    attempts: usize,
}

/// The receiver's handle.
#[derive(Clone)]
pub struct Capture {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Capture {
    /// Starts a receiver on a free port.
    pub async fn start() -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind capture");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Capture { addr, state }
    }

    /// The relay URL of this receiver.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Answers the next DATA with `reply` (e.g. `"421 4.3.0 try later"`) instead of accepting.
    pub fn fail_next(&self, reply: &str) {
        self.state.lock().unwrap().failures.push_back(reply.to_owned());
    }

    pub fn messages(&self) -> Vec<Captured> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }

    /// Waits until `count` messages were accepted.
    pub async fn wait_for(&self, count: usize) -> Vec<Captured> {
        for _ in 0..400 {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {count} messages at the relay, got {}", self.messages().len());
    }
}

async fn serve(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let _ = write.write_all(b"220 capture.test ESMTP\r\n").await;
    let mut current = Captured { mail_from: String::new(), rcpt_to: Vec::new(), data: String::new() };
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-capture.test\r\n250-PIPELINING\r\n250 8BITMIME".to_owned()
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 OK".to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            current = Captured { mail_from: addr(&line[10..]), rcpt_to: Vec::new(), data: String::new() };
            "250 OK".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            current.rcpt_to.push(addr(&line[8..]));
            "250 OK".to_owned()
        } else if upper.starts_with("DATA") {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).await.unwrap_or(0) == 0 {
                    return;
                }
                if l == ".\r\n" || l == ".\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            current.data = data;
            let mut state = state.lock().unwrap();
            state.attempts += 1;
            match state.failures.pop_front() {
                Some(failure) => failure,
                None => {
                    state.messages.push(current.clone());
                    "250 2.0.0 queued".to_owned()
                }
            }
        } else if upper.starts_with("RSET") {
            "250 OK".to_owned()
        } else if upper.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "502 not implemented".to_owned()
        };
        if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

fn addr(rest: &str) -> String {
    let rest = rest.trim();
    let start = rest.find('<').map_or(0, |i| i + 1);
    let end = rest.find('>').unwrap_or(rest.len());
    rest[start..end].to_owned()
}
