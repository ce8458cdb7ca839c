//! Fills a fresh mailgate database with `N` messages the way years of real
//! traffic leave it, in bulk (multi-row INSERTs in large transactions, not
//! through SMTP), for `cargo bench --bench smtp -- --prefill N`:
//!
//! - one organization per 20 customers (tens of thousands of users across
//!   thousands of organizations for a million messages), a site each;
//! - conversations of 2 to 40 messages (chats, one in ten a ticket), the
//!   customer's emailed replies alternating with agents' answers;
//! - every emailed reply with its inbound-log entry, and for those of the
//!   last 90 days (the default retention) its kept original (a reply above
//!   the quoted notification, lz4 as mailgate stores it);
//!   one in ten with an attachment (its own 1 KB blob);
//! - a refused transaction in the log for every ten accepted ones;
//! - a notification in the outbox for every agent answer: most sent, some
//!   failed, merged, pending; one in two hundred bounced;
//! - one held item per thousand messages.
//!
//! The answers are written by 20 staff accounts that are not agents, so that
//! the bench's own replies notify the same one agent as on an empty store:
//! the load measured is the same, only the data around it grows.
//!
//! Times spread over the last three years, oldest first. Rows get explicit
//! ids; PostgreSQL's sequences are moved past them at the end.

use sqlx::Connection;

/// Either backend's connection, taking plain SQL text.
pub(crate) enum Bulk {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Bulk {
    pub(crate) async fn connect(database_url: &str) -> Bulk {
        if database_url.starts_with("sqlite:") {
            Bulk::Sqlite(sqlx::SqliteConnection::connect(database_url).await.expect("the SQLite file opens"))
        } else {
            Bulk::Postgres(sqlx::PgConnection::connect(database_url).await.expect("PostgreSQL answers"))
        }
    }

    async fn run(&mut self, sql: &str) {
        let result = match self {
            Bulk::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
            Bulk::Postgres(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
        };
        result.unwrap_or_else(|e| panic!("prefill statement failed ({e}): {}", &sql[..sql.len().min(300)]));
    }
}

/// A binary literal in SQLite's syntax or PostgreSQL's.
fn bytes_literal(sqlite: bool, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match sqlite {
        true => format!("X'{hex}'"),
        false => format!("'\\x{hex}'::bytea"),
    }
}

/// A text literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Rows of one table, made into a statement 500 rows at a time.
struct Rows {
    head: String,
    rows: Vec<String>,
}

impl Rows {
    fn new(table_and_columns: &str) -> Rows {
        Rows { head: format!("INSERT INTO {table_and_columns} VALUES "), rows: Vec::new() }
    }

    /// Adds a row; the statement to run once 500 are waiting.
    fn push(&mut self, row: String) -> Option<String> {
        self.rows.push(row);
        (self.rows.len() == 500).then(|| self.flush()).flatten()
    }

    /// The statement for the rows waiting, if any.
    fn flush(&mut self) -> Option<String> {
        let statement = (!self.rows.is_empty()).then(|| format!("{}{}", self.head, self.rows.join(",")));
        self.rows.clear();
        statement
    }
}

/// Runs statements as they are made, 40 to a transaction.
struct Writer {
    db: Bulk,
    in_transaction: usize,
}

impl Writer {
    async fn put(&mut self, statement: Option<String>) {
        let Some(statement) = statement else { return };
        if self.in_transaction == 0 {
            self.db.run("BEGIN").await;
        }
        self.db.run(&statement).await;
        self.in_transaction += 1;
        if self.in_transaction == 40 {
            self.db.run("COMMIT").await;
            self.in_transaction = 0;
        }
    }

    async fn finish(&mut self) {
        if self.in_transaction > 0 {
            self.db.run("COMMIT").await;
            self.in_transaction = 0;
        }
    }
}

/// What a prefill wrote.
pub(crate) struct Filled {
    pub(crate) messages: u64,
    pub(crate) threads: u64,
    pub(crate) users: u64,
    pub(crate) organizations: u64,
    pub(crate) seconds: f64,
}

const DAY_MS: i64 = 86_400_000;

/// How long originals are kept by default (`[retention] raw_days`): the
/// prefill writes them for the last 90 days only, as the purge leaves them,
/// so that the bench does not measure a backlog purge of years of mail.
const RAW_DAYS: i64 = 90;

/// A small deterministic generator (xorshift), so that runs compare.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes `messages` messages (and everything around them) into the
/// database at `database_url`, whose schema is up to date and which holds
/// no conversations yet.
pub(crate) async fn prefill(database_url: &str, messages: u64, domain: &str) -> Filled {
    let started = std::time::Instant::now();
    let mut w = Writer { db: Bulk::connect(database_url).await, in_transaction: 0 };
    let sqlite = matches!(w.db, Bulk::Sqlite(_));
    match sqlite {
        true => w.db.run("PRAGMA synchronous = OFF; PRAGMA foreign_keys = OFF").await,
        // Rows go in table by table as their batches fill, not parents first.
        false => w.db.run("SET session_replication_role = replica").await,
    }
    let literal = |bytes: &[u8]| bytes_literal(sqlite, bytes);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let start = now - 3 * 365 * DAY_MS;
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let threads_wanted = (messages / 21).max(1);
    let customers = (threads_wanted / 2).max(10);
    let organizations = (customers / 20).max(1);
    let agents = 20u64;
    // Ids above what the bench's own seed makes (it starts at 1 on a fresh store).
    let (first_org, first_user, first_thread) = (1_000_000u64, 1_000_000u64, 1_000_000u64);

    let mut orgs = Rows::new("organizations (id, name, plan_id, created_at)");
    let mut sites = Rows::new("sites (id, name, plan_id, organization_id, created_at)");
    for o in 0..organizations {
        let id = first_org + o;
        w.put(orgs.push(format!("({id}, 'Organization {o}', NULL, {start})"))).await;
        let plan = if o % 10 == 0 { "'business'" } else { "'sandbox'" };
        w.put(sites.push(format!("({id}, 'site{o}.example', {plan}, {id}, {start})"))).await;
    }
    let mut users = Rows::new("users (id, email, name, role, organization_id, created_at)");
    for a in 0..agents {
        w.put(
            users.push(format!("({}, 'staff{a}@staff.example', 'Staff {a}', 'member', NULL, {start})", first_user + a)),
        )
        .await;
    }
    for c in 0..customers {
        let org = first_org + c % organizations;
        w.put(users.push(format!(
            "({}, 'person{c}@org{}.example', 'Person {c}', 'owner', {org}, {start})",
            first_user + agents + c,
            c % organizations
        )))
        .await;
    }

    let mut threads = Rows::new(
        "threads (id, kind, site_id, customer_id, ticket_number, ticket_type, subject, status, created_at, updated_at)",
    );
    let mut rows = Rows::new("messages (id, thread_id, author_id, body, source, rfc_message_id, created_at, original)");
    let mut originals = Rows::new("originals (id, original_key, size, compression, content, holes, stored_at)");
    let mut log = Rows::new(
        "inbound_log (id, received_at, peer, helo, mail_from, rcpt_to, message_id, decision, reason, smtp_reply, \
         thread_id, stored_message, rules, auth, original, subject)",
    );
    let mut blobs = Rows::new("blobs (sha256, content)");
    let mut attachments = Rows::new("attachments (id, message_id, filename, content_type, size, sha256)");
    let mut outbox = Rows::new(
        "outbox (id, kind, thread_id, message_id, recipient_id, to_address, status, attempts, next_attempt_at, \
         expires_at, last_error, rfc_message_id, created_at, sent_at)",
    );
    let mut bounces =
        Rows::new("bounces (id, received_at, outbox_id, recipient, status, severity, diagnostic, counted)");
    let mut held = Rows::new(
        "held_messages (id, received_at, mail_from, rcpt_to, reason, raw, reason_code, status, peer, from_address, subject)",
    );
    let (mut message_id, mut log_id, mut outbox_id, mut bounce_id, mut held_id, mut attachment_id, mut original_id) =
        (1_000_000u64, 1_000_000u64, 1_000_000u64, 1u64, 1u64, 1u64, 1u64);
    let span = (now - start) as u64;
    let mut written = 0u64;
    let mut t = 0u64;
    while written < messages {
        let thread = first_thread + t;
        let customer_index = dice.below(customers);
        let customer = first_user + agents + customer_index;
        let email = format!("person{customer_index}@org{}.example", customer_index % organizations);
        let site = first_org + customer_index % organizations;
        let length = (2 + dice.below(39)).min(messages - written);
        let opened = start + (span * written / messages) as i64;
        let ticket = t % 10 == 9;
        let (kind, number, kind_of) = match ticket {
            true => ("'ticket'", (t / 10 + 1).to_string(), "'Question'"),
            false => ("'chat'", "NULL".to_owned(), "NULL"),
        };
        let status = if written + length * 20 < messages { "'closed'" } else { "'open'" };
        let last = opened + length as i64 * 3_600_000;
        w.put(threads.push(format!(
            "({thread}, {kind}, {site}, {customer}, {number}, {kind_of}, 'Conversation {t}', {status}, {opened}, {last})"
        ))).await;
        for m in 0..length {
            let at = opened + m as i64 * 3_600_000;
            let id = message_id;
            message_id += 1;
            if m % 2 == 1 {
                // The customer's emailed reply, as received and kept.
                let rfc = format!("reply-{id}@org.example");
                let body = format!(
                    "Thanks, message {id} in conversation {t}: the invoice for {} still shows the old address.\n\n\
                     Best regards,\nPerson {customer_index}",
                    at % 997
                );
                let raw = format!(
                    "From: Person <{email}>\r\nTo: reply+token{id}@{domain}\r\nSubject: Re: Conversation {t}\r\n\
                     Message-ID: <{rfc}>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
                     Content-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\r\nOn Monday, Support <support@{domain}> wrote:\r\n\
                     > -- Reply above this line --\r\n> An agent answered in conversation {t}.\r\n> {}\r\n",
                    body.replace('\n', "\r\n"),
                    "Earlier text of the conversation, quoted back as mail clients do. ".repeat(20)
                );
                let original = mailgate::store::Original::of(raw.as_bytes());
                w.put(rows.push(format!(
                    "({id}, {thread}, {customer}, {}, 'email', {}, {at}, {})",
                    text(&body),
                    text(&rfc),
                    text(&original.key)
                )))
                .await;
                // Kept for the default 90 days (`[retention] raw_days`): older
                // ones were purged, their messages still name them.
                if at >= now - RAW_DAYS * DAY_MS {
                    w.put(originals.push(format!(
                        "({original_id}, {}, {}, '{}', {}, NULL, {at})",
                        text(&original.key),
                        original.size,
                        original.compression,
                        literal(&original.content)
                    )))
                    .await;
                    original_id += 1;
                }
                w.put(log.push(format!(
                    "({log_id}, {at}, '203.0.113.{}', 'mail.org.example', {}, 'reply+token{id}@{domain}', {}, 'accepted', \
                     'stored', '250 2.0.0 Message received', {thread}, {id}, '', 'spf=pass dkim=pass dmarc=pass', {}, \
                     'Re: Conversation {t}')",
                    id % 250,
                    text(&email),
                    text(&format!("<{rfc}>")),
                    text(&original.key)
                ))).await;
                log_id += 1;
                if dice.below(10) == 0 {
                    let content: Vec<u8> = (0..1024).map(|_| dice.next() as u8).collect();
                    let sha = format!("{:064x}", u128::from(dice.next()) << 64 | u128::from(id));
                    w.put(blobs.push(format!("({}, {})", text(&sha), literal(&content)))).await;
                    w.put(attachments.push(format!(
                        "({attachment_id}, {id}, 'screenshot-{id}.png', 'image/png', 1024, {})",
                        text(&sha)
                    )))
                    .await;
                    attachment_id += 1;
                }
                if dice.below(10) == 0 {
                    // A refused transaction beside it: a new chat, or a guessed address.
                    w.put(log.push(format!(
                        "({log_id}, {at}, '198.51.100.{}', 'spam.example', 'someone{id}@spam.example', \
                         'support@{domain}', NULL, 'rejected', 'no new conversations by email', \
                         '550 5.7.1 Please start a conversation in the Dashboard', NULL, NULL, '', '', NULL, 'Hello')",
                        id % 250
                    )))
                    .await;
                    log_id += 1;
                }
                if dice.below(1000) == 0 {
                    w.put(held.push(format!(
                        "({held_id}, {at}, 'stranger{id}@elsewhere.example', 'reply+token{id}@{domain}', \
                         'not a participant', {}, 'not_allowed', 'held', '192.0.2.1', 'stranger{id}@elsewhere.example', \
                         'Re: Conversation {t}')",
                        literal(raw.as_bytes())
                    ))).await;
                    held_id += 1;
                }
            } else {
                // A staff answer from the Dashboard, and its notification.
                let agent = first_user + dice.below(agents);
                w.put(rows.push(format!(
                    "({id}, {thread}, {agent}, 'We are looking into it (message {id}).', 'dashboard', NULL, {at}, NULL)"
                )))
                .await;
                let (status, error, sent) = match dice.below(100) {
                    0..=1 => ("'failed'", "'550 5.1.1 no such user'", "NULL".to_owned()),
                    2..=9 => ("'merged'", "NULL", "NULL".to_owned()),
                    _ if written + m + 50 >= messages => ("'pending'", "NULL", "NULL".to_owned()),
                    _ => ("'sent'", "NULL", (at + 2_000).to_string()),
                };
                w.put(outbox.push(format!(
                    "({outbox_id}, 'agent_replied', {thread}, {id}, {customer}, {}, {status}, 1, {at}, {}, {error}, \
                     'n{outbox_id}@{domain}', {at}, {sent})",
                    text(&email),
                    at + 7 * DAY_MS
                )))
                .await;
                if dice.below(200) == 0 {
                    w.put(bounces.push(format!(
                        "({bounce_id}, {}, {outbox_id}, {}, '5.1.1', 'hard', 'mailbox unknown', TRUE)",
                        at + 60_000,
                        text(&email)
                    )))
                    .await;
                    bounce_id += 1;
                }
                outbox_id += 1;
            }
        }
        written += length;
        t += 1;
    }
    for mut table in [orgs, sites, users, threads, rows, originals, log, blobs, attachments, outbox, bounces, held] {
        let rest = table.flush();
        w.put(rest).await;
    }
    w.finish().await;
    let mut db = w.db;
    if let Bulk::Postgres(_) = db {
        for table in [
            "organizations",
            "sites",
            "users",
            "threads",
            "messages",
            "originals",
            "inbound_log",
            "attachments",
            "outbox",
            "bounces",
            "held_messages",
        ] {
            db.run(&format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"))
                .await;
        }
        db.run("ANALYZE").await;
    } else {
        db.run("PRAGMA wal_checkpoint(TRUNCATE)").await;
    }
    Filled {
        messages: written,
        threads: t,
        users: agents + customers,
        organizations,
        seconds: started.elapsed().as_secs_f64(),
    }
}
