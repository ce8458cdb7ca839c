//! Test harness: a real mailgate on free loopback ports with a temporary
//! data directory, a raw SMTP client, and API helpers.

use mailgate::app::App;
use mailgate::config::Config;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Our mail domain in tests.
pub const DOMAIN: &str = "support.example.test";

/// A running instance and what a test needs to talk to it.
pub struct TestApp {
    pub app: Option<App>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub smtp: std::net::SocketAddr,
    /// The instance's database: a SQLite file in `dir`, or a PostgreSQL database.
    pub database_url: String,
}

/// Names the environment variable with the test PostgreSQL server's URL.
pub const POSTGRES_ENV: &str = "MAILGATE_TEST_POSTGRES";

/// Whether the suite runs on PostgreSQL (`MAILGATE_TEST_BACKEND=postgres`)
/// rather than on SQLite files. scripts/test runs it both ways.
pub fn on_postgres() -> bool {
    std::env::var("MAILGATE_TEST_BACKEND").is_ok_and(|backend| backend == "postgres")
}

/// A new, empty database for one test instance: a SQLite file in `dir`, or a
/// fresh database on the test PostgreSQL server when the suite runs there.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    if on_postgres() { postgres_database().await } else { format!("sqlite://{}", dir.join("mailgate.db").display()) }
}

/// A new, empty database on the test PostgreSQL server. Panics (the test
/// fails, it is never skipped) when no server is configured.
pub async fn postgres_database() -> String {
    use sqlx::Connection;
    let server = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: this test needs PostgreSQL. Run scripts/test, which starts a \
             throw-away server, or set {POSTGRES_ENV}=postgres://USER@HOST:PORT"
        )
    });
    let server = server.trim_end_matches('/');
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {server}: {e}"));
    let name = format!("mailgate_test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("CREATE DATABASE");
    admin.close().await.ok();
    format!("{server}/{name}")
}

/// Runs one SQL statement against a test database (to stage what a test
/// cannot reach through the product, e.g. a worker that died mid-send).
pub async fn execute_sql(database_url: &str, sql: &str) {
    use sqlx::Connection;
    if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

/// Sends a request; its status and JSON body (`null` when not JSON).
async fn json_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One number from a test database (to check what a test cannot see
/// through the product, e.g. rows a purge left).
pub async fn query_i64(database_url: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// Starts a fresh instance (empty database) with `tweak` applied to its config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = fresh_database_url(dir.path()).await;
    start_in(dir, database_url, tweak).await
}

/// Starts a fresh instance with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts an instance on `database_url` that keeps its other state in `dir`.
pub async fn start_in(dir: tempfile::TempDir, database_url: String, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_data_dir(dir.path(), DOMAIN);
    config.database_url = database_url.clone();
    config.api_token = Some("test-api-token-5f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e".to_owned());
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    config.auth.records = test_records();
    tweak(&mut config);
    let token = config.api_token.clone().unwrap_or_default();
    let app = mailgate::app::start(config).await.expect("app starts");
    TestApp {
        base: format!("http://{}/api/v1", app.http_addr),
        smtp: app.smtp_addr,
        token: app.generated_api_token.clone().unwrap_or(token),
        app: Some(app),
        dir,
        http: reqwest::Client::new(),
        database_url,
    }
}

impl TestApp {
    /// Stops the instance and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        start_in(self.dir, self.database_url, |_| {}).await
    }

    /// Stops the instance.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// The configuration a second process on this instance's state would use.
    pub fn config(&self) -> Config {
        let mut config = Config::for_data_dir(self.dir.path(), DOMAIN);
        config.database_url = self.database_url.clone();
        config
    }

    /// `mailgate ARGS --data-dir DIR` on this instance's state and database.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"));
        command.args(args).arg("--data-dir").arg(self.dir.path()).env("MAILGATE_DATABASE_URL", &self.database_url);
        command
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        json_of(self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        json_of(self.http.patch(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        json_of(self.http.delete(format!("{}{path}", self.base)).bearer_auth(&self.token)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        json_of(self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token)).await
    }

    /// The admin token of the running instance.
    pub fn admin_token(&self) -> String {
        ADMIN_TOKEN.to_owned()
    }

    /// GET with the admin token (`/admin/...`).
    /// `GET /metrics` with the admin token: the text.
    pub async fn metrics(&self) -> String {
        let http = self.app.as_ref().expect("a running instance").http_addr;
        let response = self.http.get(format!("http://{http}/metrics")).bearer_auth(self.admin_token()).send();
        response.await.expect("metrics").text().await.expect("metrics text")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        json_of(self.http.get(format!("{}/admin{path}", self.base)).bearer_auth(self.admin_token())).await
    }

    /// POST with the admin token (`/admin/...`).
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        json_of(self.http.post(format!("{}/admin{path}", self.base)).bearer_auth(self.admin_token()).json(&body)).await
    }

    /// The bytes at an API path (a download), with its status.
    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let response =
            self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// GETs a path of the HTTP listener (such as an attachment's `download`)
    /// with the API token; the whole response.
    pub async fn download(&self, path: &str) -> reqwest::Response {
        let url = format!("http://{}{path}", self.app.as_ref().expect("running").http_addr);
        self.http.get(url).bearer_auth(&self.token).send().await.expect("request")
    }

    /// POSTs and insists on 201, returning the body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.post(path, body).await;
        assert_eq!(status, 201, "POST {path} answered {status}: {value}");
        value
    }

    /// The messages of a chat or ticket (`/chats/1` or `/tickets/1`).
    pub async fn messages(&self, thread: &str) -> Vec<Value> {
        let (status, value) = self.get(&format!("{thread}/messages")).await;
        assert_eq!(status, 200, "{value}");
        value.as_array().cloned().unwrap_or_default()
    }

    /// The texts of a chat's or ticket's messages, oldest first.
    pub async fn texts(&self, thread: &str) -> Vec<String> {
        self.messages(thread).await.iter().map(|m| m["text"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// Waits until the outbox folder holds `count` .eml files (up to 15 s:
    /// on a loaded 2-core machine running the whole suite, 5 s was once too
    /// short); returns them (parsed into headers and body) ordered by
    /// outbox id.
    pub async fn wait_for_mail(&self, count: usize) -> Vec<Eml> {
        for _ in 0..600 {
            let mails = self.read_outbox();
            if mails.len() >= count {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {count} notifications, found {}", self.read_outbox().len());
    }

    /// The .eml files written so far, ordered by outbox id.
    pub fn read_outbox(&self) -> Vec<Eml> {
        let Ok(entries) = std::fs::read_dir(self.outbox_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<(i64, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
            .collect();
        files.sort();
        files.into_iter().map(|(_, path)| Eml::parse(&std::fs::read(path).expect("read eml"))).collect()
    }

    /// An SMTP client connected to the instance, past the greeting.
    pub async fn smtp(&self) -> Smtp {
        Smtp::connect(self.smtp).await
    }

    /// Sends one message in a fresh session; returns the reply to DATA (or the
    /// first refusal before it).
    pub async fn send(&self, from: &str, to: &[&str], message: &str) -> String {
        Smtp::send_once(self.smtp, from, to, message).await
    }
}

/// Logs in to the console at `origin` (`http://HOST:PORT`) with the admin
/// token: a client that does not follow redirects, and the session's cookie.
pub async fn console_login(origin: &str, token: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = client
        .post(format!("{origin}/admin/login"))
        .header("origin", origin)
        .form(&[("token", token), ("name", "test")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303, "the console takes the admin token");
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ");
    (client, cookie)
}

/// The address of a header value like `Name <address>` (or a bare address).
pub fn address_in(value: &str) -> String {
    let start = value.find('<').map_or(0, |i| i + 1);
    let end = value.rfind('>').unwrap_or(value.len());
    value[start..end].to_owned()
}

/// The reply token of a reply address (`reply+TOKEN@...`).
pub fn token_in(reply_address: &str) -> String {
    reply_address.trim_start_matches("reply+").split('@').next().unwrap_or("").to_owned()
}

/// A notification read back from the outbox folder.
#[derive(Debug, Clone)]
pub struct Eml {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Eml {
    fn parse(raw: &[u8]) -> Self {
        let message = mail_parser::MessageParser::default().parse(raw).expect("notification parses");
        let headers = message.headers_raw().map(|(n, v)| (n.to_owned(), v.trim().to_owned())).collect();
        let body = message.body_text(0).map(std::borrow::Cow::into_owned).unwrap_or_default();
        Self { headers, body }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    /// The address in Reply-To (`reply+TOKEN@domain`).
    pub fn reply_address(&self) -> String {
        address_in(self.header("Reply-To"))
    }

    /// The TOKEN of the reply address.
    pub fn token(&self) -> String {
        token_in(&self.reply_address())
    }

    /// The recipient address in To.
    pub fn to(&self) -> String {
        let value = self.header("To");
        let start = value.find('<').map_or(0, |i| i + 1);
        let end = value.rfind('>').unwrap_or(value.len());
        value[start..end].to_owned()
    }
}

/// A raw SMTP client: one command, one reply.
pub struct Smtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub greeting: String,
}

impl Smtp {
    /// Sends one message to `addr` in a session of its own; returns the
    /// reply to DATA (or the first refusal before it).
    pub async fn send_once(addr: std::net::SocketAddr, from: &str, to: &[&str], message: &str) -> String {
        let mut smtp = Smtp::connect(addr).await;
        smtp.expect("EHLO client.example.org", "250").await;
        let reply = smtp.send(from, to, message).await;
        smtp.cmd("QUIT").await;
        reply
    }

    pub async fn connect(addr: std::net::SocketAddr) -> Smtp {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (read, writer) = stream.into_split();
        let mut smtp = Smtp { reader: BufReader::new(read), writer, greeting: String::new() };
        smtp.greeting = smtp.read_reply().await;
        smtp
    }

    /// Reads one (possibly multi-line) reply; empty string on EOF.
    pub async fn read_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line))
                .await
                .expect("reply within 20 s")
                .unwrap_or(0);
            if read == 0 {
                return reply;
            }
            reply.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return reply;
            }
        }
    }

    /// [`trickle`] on this session.
    pub async fn trickle(&mut self, bytes: &[u8], every: Duration, limit: Duration) -> String {
        trickle(&mut self.reader, &mut self.writer, bytes, every, limit).await
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Sends a command line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// Sends a command and asserts the reply starts with `code`.
    pub async fn expect(&mut self, line: &str, code: &str) -> String {
        let reply = self.cmd(line).await;
        assert!(reply.starts_with(code), "{line:?} answered {reply:?}, expected {code}");
        reply
    }

    /// MAIL, RCPTs and DATA; returns the reply to the end of data, or the
    /// first refusal.
    pub async fn send(&mut self, from: &str, to: &[&str], message: &str) -> String {
        let reply = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if !reply.starts_with('2') {
            return reply;
        }
        let mut accepted = 0;
        let mut refusal = String::new();
        for rcpt in to {
            let reply = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if reply.starts_with('2') {
                accepted += 1;
            } else if refusal.is_empty() {
                refusal = reply;
            }
        }
        if accepted == 0 {
            self.cmd("RSET").await;
            return refusal;
        }
        let reply = self.cmd("DATA").await;
        if !reply.starts_with("354") {
            return reply;
        }
        self.write(&dot_stuff(message)).await;
        self.write(b".\r\n").await;
        self.read_reply().await
    }
}

/// Sends `bytes` one at a time, `every` apart (over and over), until the
/// server closes or `limit` passes; what the server said meanwhile.
pub async fn trickle<R, W>(reader: &mut R, writer: &mut W, bytes: &[u8], every: Duration, limit: Duration) -> String
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let deadline = std::time::Instant::now() + limit;
    let mut said = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in bytes.iter().cycle() {
        if std::time::Instant::now() > deadline || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        match tokio::time::timeout(every, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => said.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// CRLF line endings and dot-stuffing, as a client does before DATA's end.
pub fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    for line in message.replace("\r\n", "\n").split_inclusive('\n') {
        let line = line.trim_end_matches('\n');
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A customer organization with one site and people in every role, plus two agents.
pub struct World {
    pub org: i64,
    pub site: i64,
    pub owner: i64,
    pub member: i64,
    pub unprivileged: i64,
    pub agent: i64,
    pub agent2: i64,
    pub stranger: i64,
}

/// DNS as most tests see it: the test domains send from this machine
/// (SPF for the loopback addresses) and publish no DMARC policy, so that
/// their mail is authenticated by an aligned SPF pass.
pub fn test_records() -> std::collections::HashMap<String, String> {
    ["acme.example", "agents.example", "elsewhere.example", "other.example"]
        .into_iter()
        .map(|domain| (domain.to_owned(), "v=spf1 ip4:127.0.0.0/8 ip6:::1 -all".to_owned()))
        .collect()
}

/// The admin token test instances are configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-8d2f4b6a1c3e5f7a9b0d2c4e6f8a1b3c";
pub const OWNER: &str = "olivia@acme.example";
pub const MEMBER: &str = "mike@acme.example";
pub const UNPRIVILEGED: &str = "uma@acme.example";
pub const AGENT: &str = "alex@agents.example";
pub const AGENT2: &str = "bea@agents.example";
pub const STRANGER: &str = "sam@elsewhere.example";

impl TestApp {
    /// Creates the [`World`] with a site on `site_plan` in an organization on `org_plan`.
    pub async fn world(&self, site_plan: &str, org_plan: Option<&str>) -> World {
        let org =
            self.create("/organizations", json!({"name": "ACME", "plan": org_plan})).await["id"].as_i64().unwrap();
        let site =
            self.create("/sites", json!({"name": "acme.example", "plan": site_plan, "organization_id": org})).await;
        let user = |email: &str, name: &str, role: &str, org: Option<i64>| json!({"email": email, "name": name, "role": role, "organization_id": org});
        let owner = self.create("/users", user(OWNER, "Olivia Owner", "owner", Some(org))).await;
        let member = self.create("/users", user(MEMBER, "Mike Member", "member", Some(org))).await;
        let unprivileged =
            self.create("/users", user(UNPRIVILEGED, "Uma Unprivileged", "unprivileged", Some(org))).await;
        let agent = self.create("/users", user(AGENT, "Alex Agent", "agent", None)).await;
        let agent2 = self.create("/users", user(AGENT2, "Bea Agent", "agent", None)).await;
        let other_org = self.create("/organizations", json!({"name": "Elsewhere"})).await["id"].as_i64().unwrap();
        let stranger = self.create("/users", user(STRANGER, "Sam Stranger", "owner", Some(other_org))).await;
        let id = |v: Value| v["id"].as_i64().unwrap();
        World {
            org,
            site: id(site),
            owner: id(owner),
            member: id(member),
            unprivileged: id(unprivileged),
            agent: id(agent),
            agent2: id(agent2),
            stranger: id(stranger),
        }
    }
}

impl TestApp {
    /// A Sandbox world, a chat opened by the owner, and the notification the
    /// owner got when an agent answered: (world, chat id, notification).
    pub async fn chat_with_note(&self) -> (World, i64, Eml) {
        let w = self.world("sandbox", None).await;
        let chat = self.create("/chats", json!({"site_id": w.site, "customer_id": w.owner, "message": "Hello"})).await;
        let chat_id = chat["id"].as_i64().unwrap();
        self.create(&format!("/chats/{chat_id}/messages"), json!({"author_id": w.agent, "text": "Hi"})).await;
        let note = self.wait_for_mail(3).await.remove(2);
        (w, chat_id, note)
    }
}

/// A reply as a mail client writes it: new text on top, the notification quoted below.
pub fn reply_mail(from: &str, to: &str, subject: &str, message_id: &str, extra_headers: &str, text: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra_headers}\r\n{text}\r\n\r\n\
         On Sun, 22 Nov 2026 at 09:00, Support <support@{DOMAIN}> wrote:\r\n> -- Reply above this line --\r\n> Hello,\r\n> earlier text\r\n"
    )
}

/// Waits for a spawned `mailgate serve` to log its start line and returns
/// it; its stderr keeps being drained so the server never writes into a
/// closed pipe.
pub fn start_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr is piped"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    lines_rx.iter().find(|l| l.contains("mailgate started")).expect("a start line in the log")
}

/// Sends the signal `name` (`TERM`, `KILL`) to a spawned process.
pub fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
    assert!(status.expect("kill runs").success());
}

/// A name server of the test's own, on UDP: TXT answers for the names in
/// `records`, and `SERVFAIL` (what a resolver answers when a domain's own
/// servers are down) for every other question.
pub async fn name_server_failing_but(records: std::collections::HashMap<String, String>) -> std::net::SocketAddr {
    use mail_auth::hickory_resolver::proto::op::{Message, ResponseCode};
    use mail_auth::hickory_resolver::proto::rr::{RData, Record, RecordType, rdata::TXT};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..n]) else { continue };
            let mut answer = Message::response(query.id(), query.op_code());
            answer.set_recursion_desired(true).set_recursion_available(true);
            for question in query.queries() {
                answer.add_query(question.clone());
                let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
                match records.get(&name) {
                    Some(value) if question.query_type() == RecordType::TXT => {
                        let txt = RData::TXT(TXT::new(vec![value.clone()]));
                        answer.add_answer(Record::from_rdata(question.name().clone(), 60, txt));
                    }
                    _ => {
                        answer.set_response_code(ResponseCode::ServFail);
                    }
                }
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer).await;
        }
    });
    address
}
