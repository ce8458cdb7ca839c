//! A real Postfix in front of mailgate (issue 32), configured with the
//! blocks of docs/deployment.md, read from the page: LMTP over a unix socket
//! with the policy service, SMTP through Postfix's before-queue proxy and
//! after its queue with XFORWARD, and pipe(8) to `mailgate deliver`. Postfix
//! runs from a throw-away folder on free ports (scripts/test installs
//! Debian's postfix when missing); customers' mail comes from 127.0.0.2 (the
//! address the customer's SPF names) or 127.0.0.3.

use crate::support::*;
use mailgate::config::ListenAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The address the customer's domain sends from.
const CUSTOMER_SERVER: &str = "127.0.0.2";
/// Another address, not in the customer's SPF record.
const ELSEWHERE: &str = "127.0.0.3";

/// One Postfix instance in a folder of its own; stopped when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
}

/// A free TCP port on the loopback address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A folder the postfix user (and pipe's `nobody`) may enter.
fn open_folder() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("mailgate-postfix").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

impl Postfix {
    /// Starts Postfix for the desk's domain with `main` added to main.cf and
    /// `master` to master.cf.
    async fn start(main: &str, master: &str) -> Self {
        let dir = open_folder();
        let port = free_port();
        let root = dir.path().display().to_string();
        for sub in ["queue", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        chown(&dir.path().join("data"), "postfix", "postfix");
        let main_cf = format!(
            "compatibility_level = 3.6\nqueue_directory = {root}/queue\ndata_directory = {root}/data\n\
             mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = mx.desk.example\nmydomain = desk.example\n\
             myorigin = desk.example\nmydestination =\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
             mynetworks = 127.0.0.1/32\nmaillog_file = {root}/maillog\n\
             maillog_file_prefixes = {root}\nsmtp_host_lookup = native\nlmtp_host_lookup = native\n\
             alias_maps =\nalias_database =\nsmtpd_banner = $myhostname ESMTP\n\
             bounce_queue_lifetime = 0\nmaximal_queue_lifetime = 1h\n{main}\n"
        );
        std::fs::write(dir.path().join("main.cf"), main_cf).unwrap();
        // The guide's own smtpd, when it has one, listens here instead.
        let smtpd = match master.contains(GUIDE_SMTPD) {
            true => String::new(),
            false => format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
        };
        let master = master.replace(GUIDE_SMTPD, &format!("127.0.0.1:{port}"));
        std::fs::write(dir.path().join("master.cf"), format!("{smtpd}{MASTER_CF}{master}\n")).unwrap();
        let status = tokio::process::Command::new("postfix")
            .args(["-c", &root, "start"])
            .status()
            .await
            .expect("Postfix is installed (scripts/test installs Debian's postfix)");
        let postfix = Self { dir, port };
        assert!(status.success(), "postfix start failed: {}", postfix.log());
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return postfix;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Postfix did not listen on {port}: {}", postfix.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`; that line.
    async fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..300 {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {needle:?} in Postfix's log:\n{}", self.log());
    }

    /// Sends `message` from `source` to Postfix: every reply of the
    /// conversation.
    async fn send(&self, source: &str, from: &str, to: &str, message: &str) -> Vec<String> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(format!("127.0.0.1:{}", self.port).parse().unwrap()).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut replies = vec![reply(&mut stream).await];
        for line in ["EHLO mail.acme.example".to_owned(), format!("MAIL FROM:<{from}>"), format!("RCPT TO:<{to}>")] {
            stream.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
            replies.push(reply(&mut stream).await);
        }
        if replies[3].starts_with('2') {
            stream.get_mut().write_all(b"DATA\r\n").await.unwrap();
            replies.push(reply(&mut stream).await);
            stream.get_mut().write_all(&dot_stuff(message)).await.unwrap();
            stream.get_mut().write_all(b".\r\n").await.unwrap();
            replies.push(reply(&mut stream).await);
        }
        stream.get_mut().write_all(b"QUIT\r\n").await.unwrap();
        replies
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = std::process::Command::new("postfix")
            .args(["-c", &self.dir.path().display().to_string(), "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn reply(stream: &mut BufReader<tokio::net::TcpStream>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_line(&mut line)).await.unwrap().unwrap();
        reply.push_str(&line);
        if read == 0 || line.len() < 4 || line.as_bytes()[3] != b'-' {
            return reply;
        }
    }
}

fn chown(path: &Path, user: &str, group: &str) {
    let status = std::process::Command::new("chown").arg(format!("{user}:{group}")).arg(path).status().unwrap();
    assert!(status.success());
}

/// The address of the guide's own smtpd (the reply domain's MX).
const GUIDE_SMTPD: &str = "192.0.2.25:smtp";

/// What the guide's blocks name, and what stands for it here.
#[derive(Default)]
struct Here {
    lmtp: String,
    policy: String,
    smtp: String,
    binary: String,
    config: String,
}

/// The block of docs/deployment.md whose first line is `title`, made to run
/// here: the guide's domain, sockets, ports and paths replaced by the test's.
fn guide(title: &str, here: &Here) -> String {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployment.md")).unwrap();
    let block = page
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|block| block.split_once('\n').map(|(_, body)| body))
        .find(|body| body.lines().next() == Some(title))
        .unwrap_or_else(|| panic!("docs/deployment.md has no block starting {title:?}"));
    block
        .replace("support.example.com", DOMAIN)
        .replace("/run/mailgate/lmtp.sock", &here.lmtp)
        .replace("/run/mailgate/policy.sock", &here.policy)
        .replace("[127.0.0.1]:2525", &here.smtp.replace("127.0.0.1:", "[127.0.0.1]:"))
        .replace("127.0.0.1:2525", &here.smtp)
        .replace("/usr/bin/mailgate", &here.binary)
        .replace("/etc/mailgate/mailgate.toml", &here.config)
        .replace("user=mailgate", "user=nobody")
}

/// Postfix's own services (Debian's master.cf, nothing chrooted).
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// The customer's domain sends only from [`CUSTOMER_SERVER`] and rejects
/// what fails DMARC; Postfix, on 127.0.0.1, is mailgate's trusted relay.
fn behind_postfix(config: &mut mailgate::config::Config) {
    config.auth.records.insert("acme.example".to_owned(), format!("v=spf1 ip4:{CUSTOMER_SERVER} -all"));
    config.auth.records.insert("_dmarc.acme.example".to_owned(), "v=DMARC1; p=reject".to_owned());
    config.auth.trusted_relays = mailgate::domain::Networks::parse(&["127.0.0.1/32".to_owned()]).unwrap();
}

/// Lets the postfix user connect to a socket mailgate made (mode 0660).
fn socket_for_postfix(path: &Path) {
    chown(path, "root", "postfix");
}

/// The newest inbound-log entry about `message_id`.
async fn logged(app: &TestApp, message_id: &str, postfix: &Postfix) -> serde_json::Value {
    for _ in 0..300 {
        let (_, log) = app.get("/inbound-log?limit=20").await;
        if let Some(entry) = log.as_array().unwrap().iter().find(|e| e["message_id"] == message_id) {
            return entry.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{message_id} never reached mailgate; Postfix's log:\n{}", postfix.log());
}

#[tokio::test]
async fn behind_postfix_over_lmtp_with_the_policy_service() {
    let sockets = open_folder();
    let (lmtp, policy) = (sockets.path().join("lmtp.sock"), sockets.path().join("policy.sock"));
    let (l, p) = (lmtp.clone(), policy.clone());
    let app = spawn_app_with(move |config| {
        behind_postfix(config);
        config.lmtp_listen = Some(ListenAddr::Unix(l));
        config.policy_listen = Some(ListenAddr::Unix(p));
    })
    .await;
    socket_for_postfix(&lmtp);
    socket_for_postfix(&policy);
    let here = Here { lmtp: lmtp.display().to_string(), policy: policy.display().to_string(), ..Here::default() };
    // This Postfix also serves another domain: the policy service leaves it alone.
    let main = format!("{}\nrelay_domains = {DOMAIN}, other.example\n", guide("# /etc/postfix/main.cf (LMTP)", &here));
    let postfix = Postfix::start(&main, "").await;
    let (_, chat, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let genuine = reply_mail(OWNER, &to, "Hello", "pf-lmtp-1@acme.example", "", "Through Postfix and LMTP");
    let replies = postfix.send(CUSTOMER_SERVER, OWNER, &to, &genuine).await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    let entry = logged(&app, "pf-lmtp-1@acme.example", &postfix).await;
    let checks = entry["auth"].as_str().unwrap();
    assert!(checks.contains("spf=pass") && checks.contains("dmarc=pass"), "{entry}");
    assert_eq!(entry["decision"], "accepted", "{entry}");
    assert!(
        app.messages(&format!("/chats/{chat}"))
            .await
            .iter()
            .any(|m| m["text"].as_str().unwrap_or("").contains("Through Postfix"))
    );
    // The same From from another address: mailgate refuses it over LMTP.
    let forged = reply_mail(OWNER, &to, "Hello", "pf-lmtp-2@acme.example", "", "Forged");
    postfix.send(ELSEWHERE, OWNER, &to, &forged).await;
    let refused = postfix.wait_for_log("said: 550 5.7.1").await;
    assert!(refused.contains("DMARC") && refused.contains("in reply to end of DATA command"), "{refused}");
    assert_eq!(logged(&app, "pf-lmtp-2@acme.example", &postfix).await["decision"], "rejected");
    // A forged reply address never reaches mailgate: Postfix refuses it at RCPT.
    let bad = format!("reply+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}");
    let replies = postfix.send(CUSTOMER_SERVER, OWNER, &bad, &genuine).await;
    assert!(replies[3].starts_with("5") && replies[3].contains("5.1.1"), "{replies:?}");
    let line = postfix.wait_for_log("NOQUEUE: reject: RCPT").await;
    assert!(line.contains(&bad), "{line}");
    let other = postfix.send(CUSTOMER_SERVER, OWNER, "ceo@other.example", &genuine).await;
    assert!(other[3].starts_with("250"), "another domain's mail is not refused: {other:?}");
}

#[tokio::test]
async fn behind_postfix_over_smtp_before_the_queue_refusals_stay_in_the_conversation() {
    let sockets = open_folder();
    let policy = sockets.path().join("policy.sock");
    let p = policy.clone();
    let app = spawn_app_with(move |config| {
        behind_postfix(config);
        config.policy_listen = Some(ListenAddr::Unix(p));
    })
    .await;
    socket_for_postfix(&policy);
    let here = Here { policy: policy.display().to_string(), smtp: app.smtp.to_string(), ..Here::default() };
    let postfix = Postfix::start(
        &guide("# /etc/postfix/main.cf (SMTP, before the queue)", &here),
        &guide("# /etc/postfix/master.cf (SMTP, before the queue)", &here),
    )
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let genuine = reply_mail(OWNER, &to, "Hello", "pf-smtp-1@acme.example", "", "Through Postfix over SMTP");
    let replies = postfix.send(CUSTOMER_SERVER, OWNER, &to, &genuine).await;
    assert!(replies[5].starts_with("250") && replies[5].contains("Message added"), "{replies:?}");
    let entry = logged(&app, "pf-smtp-1@acme.example", &postfix).await;
    let checks = entry["auth"].as_str().unwrap();
    assert!(checks.contains("spf=pass") && checks.contains("dmarc=pass") && checks.contains("via=xforward"), "{entry}");
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), 3);
    // From elsewhere: the customer's server hears mailgate's refusal itself.
    let forged = reply_mail(OWNER, &to, "Hello", "pf-smtp-2@acme.example", "", "Forged");
    let replies = postfix.send(ELSEWHERE, OWNER, &to, &forged).await;
    assert!(replies[5].starts_with("550 5.7.1") && replies[5].contains("DMARC"), "{replies:?}");
    postfix.wait_for_log("proxy-reject: END-OF-MESSAGE").await;
    // And a forged reply address is refused at RCPT by the policy service.
    let bad = format!("reply+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}");
    let replies = postfix.send(CUSTOMER_SERVER, OWNER, &bad, &genuine).await;
    assert!(replies[3].starts_with("5") && replies[3].contains("5.1.1"), "{replies:?}");
    assert!(!postfix.log().contains("status=bounced"), "refusals, no bounce: {}", postfix.log());
}

#[tokio::test]
async fn behind_postfix_over_smtp_after_the_queue_with_xforward() {
    let app = spawn_app_with(behind_postfix).await;
    let here = Here { smtp: app.smtp.to_string(), ..Here::default() };
    let postfix = Postfix::start(&guide("# /etc/postfix/main.cf (SMTP, after the queue)", &here), "").await;
    let (_, chat, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let genuine = reply_mail(OWNER, &to, "Hello", "pf-relay-1@acme.example", "", "Relayed after the queue");
    let replies = postfix.send(CUSTOMER_SERVER, OWNER, &to, &genuine).await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    let entry = logged(&app, "pf-relay-1@acme.example", &postfix).await;
    let checks = entry["auth"].as_str().unwrap();
    assert!(checks.contains("dmarc=pass") && checks.contains("via=xforward"), "{entry}");
    postfix.wait_for_log("status=sent").await;
    assert_eq!(app.messages(&format!("/chats/{chat}")).await.len(), 3);
}

#[tokio::test]
async fn behind_postfix_through_a_pipe_to_mailgate_deliver() {
    let app = spawn_app_with(behind_postfix).await;
    // pipe(8) runs the command as an unprivileged user: it must reach the
    // configuration and (on SQLite) write the database.
    std::fs::set_permissions(app.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for entry in std::fs::read_dir(app.dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("mailgate.db") {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
    let config = app.dir.path().join("mailgate.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ndatabase_url = {:?}\ndomain = {DOMAIN:?}\n[auth]\nresolver = \"static\"\n\
             trusted_relays = [\"127.0.0.1/32\"]\n[auth.records]\n\"acme.example\" = \"v=spf1 ip4:{CUSTOMER_SERVER} -all\"\n\
             \"_dmarc.acme.example\" = \"v=DMARC1; p=reject\"\n\"agents.example\" = \"v=spf1 ip4:127.0.0.0/8 -all\"\n",
            app.dir.path().display().to_string(),
            app.database_url
        ),
    )
    .unwrap();
    // A copy where the pipe's user may run it, wherever the build is.
    let bin_dir = open_folder();
    let binary: PathBuf = bin_dir.path().join("mailgate");
    std::fs::copy(env!("CARGO_BIN_EXE_mailgate"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let here = Here { binary: binary.display().to_string(), config: config.display().to_string(), ..Here::default() };
    let postfix = Postfix::start(
        &guide("# /etc/postfix/main.cf (pipe)", &here),
        &guide("# /etc/postfix/master.cf (pipe)", &here),
    )
    .await;
    let (_, chat, note) = app.chat_with_note().await;
    let to = note.reply_address();
    let genuine = reply_mail(OWNER, &to, "Hello", "pf-pipe-1@acme.example", "", "Through Postfix and a pipe");
    let replies = postfix.send(CUSTOMER_SERVER, OWNER, &to, &genuine).await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    let entry = logged(&app, "pf-pipe-1@acme.example", &postfix).await;
    assert!(entry["auth"].as_str().unwrap().contains("dmarc=pass"), "{entry}\n{}", postfix.log());
    postfix.wait_for_log("status=sent (delivered via mailgate service").await;
    assert!(
        app.messages(&format!("/chats/{chat}"))
            .await
            .iter()
            .any(|m| m["text"].as_str().unwrap_or("").contains("and a pipe"))
    );
    let forged = reply_mail(OWNER, &to, "Hello", "pf-pipe-2@acme.example", "", "Forged");
    postfix.send(ELSEWHERE, OWNER, &to, &forged).await;
    let line = postfix.wait_for_log("status=bounced").await;
    assert!(line.contains("5.7.1") && line.contains("DMARC"), "exit 77, with mailgate's reason: {line}");
}
