//! The store on a real database (a SQLite file, or PostgreSQL when the suite
//! runs there): group commit keeps each message's fate its own.

use crate::support::{execute_sql, fresh_database_url};
use mailgate::domain::{Role, Source, ThreadKind};
use mailgate::store::{Delivery, Inserted, NewMessage, NewThread, NotificationKind, OutboxItem, Store};

/// A customer's emailed message with Message-ID `id`.
pub fn message(thread_id: i64, author_id: i64, id: &str) -> NewMessage {
    NewMessage {
        thread_id,
        author_id,
        author_is_agent: false,
        body: format!("body of {id}"),
        source: Source::Email,
        rfc_message_id: Some(id.to_owned()),
        attachments: Vec::new(),
        notify: Vec::new(),
        routing: None,
        extra_mail: Vec::new(),
        original: None,
        extras: None,
    }
}

/// A customer with a chat on a new Sandbox site: (thread id, customer id, id
/// of the chat's first message).
pub async fn customer_with_chat(store: &Store, email: &str) -> (i64, i64, i64) {
    let site = store.create_site("s", "sandbox", None).await.unwrap();
    let user = store.create_user(email, "C", Role::Owner, None).await.unwrap();
    let new = NewThread {
        kind: ThreadKind::Chat,
        site_id: site.id,
        customer_id: user.id,
        ticket_type: None,
        subject: "s".into(),
    };
    let (thread, first) =
        store.create_thread(new, message(0, user.id, &format!("first-{email}")), &[], None).await.unwrap();
    (thread.id, user.id, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_commit_together_and_one_failure_undoes_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let (thread, user, _) = customer_with_chat(&store, "c@example.org").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        // Message 13 names an author that does not exist: a foreign-key failure.
        let author = if i == 13 { 999_999 } else { user };
        tasks.push(tokio::spawn(async move {
            store.insert_message(message(thread, author, &format!("m{i}@x")), None).await
        }));
    }
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Inserted::New(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(failed, 1, "only the broken message fails");
    assert_eq!(store.messages(thread).await.unwrap().len(), 40, "the first and the 39 good ones are stored");
    // The same Message-ID again is a duplicate, whatever batch it lands in.
    let again = store.insert_message(message(thread, user, "m1@x"), None).await.unwrap();
    assert!(matches!(again, Inserted::Duplicate(_)));
}

/// On SQLite a commit does not wait for the disk; a message is reported
/// stored only after a sync of the log that began after its commit. On
/// PostgreSQL the commit itself waits (no syncs of our own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_reported_stored_only_after_its_log_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let (thread, user, _) = customer_with_chat(&store, "c@example.org").await;
    for i in 0..3 {
        let before = store.group_commit_stats();
        store.insert_message(message(thread, user, &format!("synced-{i}@x")), None).await.unwrap();
        let after = store.group_commit_stats();
        assert_eq!(after.transactions, before.transactions + 1);
        if crate::support::on_postgres() {
            assert_eq!(after.syncs, 0);
        } else {
            assert!(after.syncs > before.syncs, "answered before a sync: {before:?} -> {after:?}");
            assert!(after.sync_us > before.sync_us);
        }
    }
}

/// When SQLite's log cannot be synced (here: its file is gone), nothing is
/// reported stored: the message's sender is told to try again, and the
/// store's other writes fail too rather than pretend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_synced_fails_the_write_instead_of_confirming_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("mailgate.db");
    let store = Store::open(&format!("sqlite://{}", database.display())).await.unwrap();
    let (thread, user, _) = customer_with_chat(&store, "c@example.org").await;
    std::fs::remove_file(dir.path().join("mailgate.db-wal")).unwrap();
    let error = store.insert_message(message(thread, user, "lost@x"), None).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("syncing the database's log"), "{error}");
    assert!(store.create_user("late@example.org", "Late", Role::Owner, None).await.is_err());
}

/// Users and sites are kept in memory once read; a user another instance
/// creates after a miss must still be found (misses are never remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_by_another_instance_after_a_miss_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let here = Store::open(&url).await.unwrap();
    let there = Store::open(&url).await.unwrap();
    assert!(here.user_by_email("late@example.org").await.unwrap().is_none());
    let created = there.create_user("late@example.org", "Late", Role::Owner, None).await.unwrap();
    let found = here.user_by_email("late@example.org").await.unwrap().expect("found after the miss");
    assert_eq!(found.id, created.id);
    assert_eq!(here.user_by_email("late@example.org").await.unwrap().map(|u| u.id), Some(created.id));

    let site = there.create_site("s", "business", None).await.unwrap();
    assert_eq!(here.site(site.id).await.unwrap().map(|s| s.plan_id), Some("business".to_owned()));
    assert_eq!(here.site_features(site.id).await.unwrap(), there.site_features(site.id).await.unwrap());
}

/// A pass of the outbound worker reads, for a notification, only the new
/// messages and the few before them, however long the thread has grown, and
/// the pending replies it carries.
#[tokio::test]
async fn a_pass_reads_the_new_messages_and_five_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let agent = store.create_user("agent@agents.example", "A", Role::Agent, None).await.unwrap();
    let (thread, user, first) = customer_with_chat(&store, "c@example.org").await;
    let mut ids = vec![first];
    for i in 1..20 {
        // The last five queue a notification to the agent each.
        let notify = if i >= 15 { vec![(NotificationKind::CustomerReplied, agent.id)] } else { Vec::new() };
        let new = NewMessage { notify, ..message(thread, user, &format!("m{i}@x")) };
        ids.push(store.insert_message(new, None).await.unwrap().id());
    }
    let claimed = store.claim_due(10, 60_000, "test").await.unwrap();
    assert_eq!(claimed.iter().map(|i| i.message_id).collect::<Vec<_>>(), [Some(ids[15])], "the oldest goes");

    let reads = store.read_for_pass(&claimed, 5, 20, 0).await.unwrap();
    let carried: Vec<Option<i64>> = reads.coalescible(&claimed[0]).iter().map(|i| i.message_id).collect();
    assert_eq!(carried, ids[16..].iter().copied().map(Some).collect::<Vec<_>>(), "it carries the other four");
    let read: Vec<i64> = reads.messages(thread).iter().map(|m| m.id).collect();
    assert_eq!(read, ids[10..].to_vec(), "the new messages and the five before them");
    assert_eq!(reads.thread(thread).map(|t| t.id), Some(thread));

    // A notification that brings no message shows the thread's last ones.
    let about_the_thread = OutboxItem { message_id: None, kind: "chat_closed".into(), ..claimed[0].clone() };
    let reads = store.read_for_pass(&[about_the_thread], 5, 20, 0).await.unwrap();
    let read: Vec<i64> = reads.messages(thread).iter().map(|m| m.id).collect();
    assert_eq!(read, ids[15..].to_vec());
}

/// What a pass reads about a recipient: hard bounces, opt-outs, and the
/// Message-IDs of the latest mails about the thread (for References).
#[tokio::test]
async fn a_pass_reads_its_recipients_standing_and_latest_references() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let store = Store::open(&url).await.unwrap();
    let agent = store.create_user("agent@agents.example", "A", Role::Agent, None).await.unwrap();
    let (thread, user, _) = customer_with_chat(&store, "c@example.org").await;
    let mut notify_agent = {
        let store = store.clone();
        let mut n = 0;
        move || {
            n += 1;
            let new = NewMessage {
                notify: vec![(NotificationKind::CustomerReplied, agent.id)],
                ..message(thread, user, &format!("r{n}@x"))
            };
            let store = store.clone();
            async move {
                store.insert_message(new, None).await.unwrap();
                store.claim_due(10, 60_000, "test").await.unwrap().remove(0)
            }
        }
    };
    // Twenty-two notifications sent about the thread, one after another.
    for n in 0..22 {
        let item = notify_agent().await;
        let sent =
            Delivery::Sent { id: item.id, rfc_message_id: format!("sent-{n}@x"), merged: vec![], sent_text: None };
        store.record_deliveries(&[sent]).await.unwrap();
    }
    let next = notify_agent().await;
    let reads = store.read_for_pass(std::slice::from_ref(&next), 5, 20, 10).await.unwrap();
    let expected: Vec<String> = (2..22).map(|n| format!("sent-{n}@x")).collect();
    assert_eq!(reads.sent_ids(thread, &next.to_address), expected, "the latest twenty, oldest first");
    assert_eq!(reads.standing(&next), (0, false));

    store.opt_out(agent.id, "customer_replied").await.unwrap();
    execute_sql(
        &url,
        &format!(
            "INSERT INTO bounces (received_at, outbox_id, recipient, status, severity, counted, lifted_at) VALUES \
             (11, 1, '{0}', '5.1.1', 'hard', TRUE, NULL), (12, 2, '{0}', '5.1.1', 'hard', TRUE, NULL), \
             (12, 2, '{0}', '5.1.1', 'hard', TRUE, NULL), \
             (13, 3, '{0}', '4.2.2', 'soft', FALSE, NULL), (14, 4, '{0}', '5.1.1', 'hard', FALSE, NULL), \
             (15, 5, '{0}', '5.1.1', 'hard', TRUE, 20), (5, 6, '{0}', '5.1.1', 'hard', TRUE, NULL)",
            next.to_address
        ),
    )
    .await;
    let reads = store.read_for_pass(std::slice::from_ref(&next), 5, 20, 10).await.unwrap();
    assert_eq!(
        reads.standing(&next),
        (2, true),
        "two notifications' counted hard bounces in the window (the second counted once; not the soft, the uncounted, the lifted or the old one), opted out"
    );
}

/// Replies arriving together are written with a few multi-row statements:
/// each still gets its own id, notification and log entry, and the same mail
/// twice in one batch is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_written_together_each_get_their_notification_and_log_entry() {
    use mailgate::store::{InboundLogEntry, NotificationKind};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let agent = store.create_user("agent@example.org", "A", Role::Agent, None).await.unwrap();
    let mut threads = Vec::new();
    for i in 0..4 {
        let (thread, user, _) = customer_with_chat(&store, &format!("c{i}@example.org")).await;
        threads.push((thread, user));
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let (thread, user) = threads[i % 4];
        // Every tenth mail is delivered twice at once.
        let copies = if i % 10 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let store = store.clone();
            let mut reply = message(thread, user, &format!("r{i}@x"));
            reply.notify = vec![(NotificationKind::CustomerReplied, agent.id)];
            let log =
                InboundLogEntry { decision: "accepted".into(), rcpt_to: "x".into(), ..InboundLogEntry::default() };
            tasks.push(tokio::spawn(async move { (i, store.insert_message(reply, Some(log)).await.unwrap()) }));
        }
    }
    let mut by_mail: std::collections::HashMap<usize, Vec<Inserted>> = std::collections::HashMap::new();
    for task in tasks {
        let (i, inserted) = task.await.unwrap();
        by_mail.entry(i).or_default().push(inserted);
    }
    for (i, outcomes) in &by_mail {
        let new = outcomes.iter().filter(|o| matches!(o, Inserted::New(_))).count();
        assert_eq!(new, 1, "mail {i} stored once: {outcomes:?}");
        assert!(outcomes.iter().all(|o| o.id() == outcomes[0].id()), "{outcomes:?}");
    }
    let ids: std::collections::HashSet<i64> = by_mail.values().map(|o| o[0].id()).collect();
    assert_eq!(ids.len(), 40, "forty distinct messages");
    let outbox = store.outbox(false, 1000).await.unwrap();
    let mut notified: Vec<i64> = outbox.iter().filter_map(|o| o.message_id).collect();
    notified.sort_unstable();
    let mut expected: Vec<i64> = ids.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(notified, expected, "one notification per new message");
    assert!(outbox.iter().all(|o| o.to_address == "agent@example.org" && o.recipient_id == Some(agent.id)));
    let log = store.inbound_log(None, 1000).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.decision == "accepted").count(), 40);
    assert_eq!(log.iter().filter(|e| e.decision == "duplicate").count(), 4);
    assert!(log.iter().all(|e| e.stored_message.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_lookups_asked_at_once_each_get_their_own_thread_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    // Customer i has 1 + i emailed messages in their own chat.
    let mut chats = Vec::new();
    for i in 0..12 {
        let (thread, customer, _) = customer_with_chat(&store, &format!("c{i}@example.org")).await;
        for n in 0..i {
            store.insert_message(message(thread, customer, &format!("m{i}-{n}")), None).await.unwrap();
        }
        chats.push((thread, customer));
    }
    let since = mailgate::store::now_ms() - 3_600_000;
    // Everyone's own thread, a thread asked about with another author, a
    // thread that does not exist, and a small cap, all at the same moment.
    let mut asks = chats.iter().map(|&(thread, customer)| (thread, customer, 100)).collect::<Vec<_>>();
    asks.push((chats[0].0, chats[5].1, 100));
    asks.push((999_999, chats[1].1, 100));
    asks.push((chats[9].0, chats[9].1, 3));
    let tasks: Vec<_> = asks
        .iter()
        .map(|&(thread, author, cap)| {
            let store = store.clone();
            tokio::spawn(async move { store.thread_with_recent(thread, author, since, cap).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    for (i, &(thread, customer)) in chats.iter().enumerate() {
        let (found, recent, _) = answers[i].clone().expect("the thread exists");
        assert_eq!((found.id, found.customer_id, recent.author_id), (thread, customer, customer));
        assert_eq!((recent.by_author, recent.in_thread), (1 + i as i64, 1 + i as i64), "customer {i}");
    }
    let (found, recent, _) = answers[12].clone().expect("thread 0 exists");
    assert_eq!((found.id, recent.author_id, recent.by_author, recent.in_thread), (chats[0].0, chats[5].1, 6, 1));
    assert!(answers[13].is_none(), "an unknown thread is not found");
    let (_, recent, _) = answers[14].clone().unwrap();
    assert_eq!((recent.by_author, recent.in_thread), (3, 3), "counted up to the cap asked");
}

/// Replies with attachments written in one batch: each keeps its own
/// attachments, the same content is stored once, and a duplicate delivery
/// adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_with_attachments_written_together_keep_their_own_files() {
    use mailgate::store::NewAttachment;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let (thread, user, _) = customer_with_chat(&store, "c@example.org").await;
    let file = |name: &str, content: &[u8]| {
        NewAttachment::new(name.to_owned(), "application/pdf".to_owned(), content.to_vec())
    };
    let mut tasks = Vec::new();
    for i in 0..30 {
        // Two of each mail's three files are its own; the third is the same in all.
        let mut reply = message(thread, user, &format!("a{}@x", i % 25));
        reply.attachments =
            vec![file(&format!("own-{i}.pdf"), format!("content {i}").as_bytes()), file("shared.pdf", b"shared")];
        reply.attachments.push(file(&format!("more-{i}.pdf"), format!("more {i}").as_bytes()));
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.insert_message(reply, None).await.unwrap() }));
    }
    let mut new = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Inserted::New(_)) {
            new += 1;
        }
    }
    assert_eq!(new, 25, "mails 25..30 are deliveries of 0..5 again");
    let messages = store.messages(thread).await.unwrap();
    let replies: Vec<_> =
        messages.iter().filter(|m| m.rfc_message_id.as_deref().is_some_and(|id| id.starts_with('a'))).collect();
    assert_eq!(replies.len(), 25);
    for reply in &replies {
        let names: Vec<&str> = reply.attachments.iter().map(|a| a.filename.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"shared.pdf"));
        let own = names.iter().find(|n| n.starts_with("own-")).unwrap();
        let i: usize = own.trim_start_matches("own-").trim_end_matches(".pdf").parse().unwrap();
        let stored =
            store.attachment(reply.attachments.iter().find(|a| a.filename == *own).unwrap().id).await.unwrap().unwrap();
        assert_eq!(stored.1, format!("content {i}").into_bytes(), "each file keeps its own bytes");
    }
}

#[tokio::test]
async fn a_claim_reaches_past_notifications_waiting_behind_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let agent = store.create_user("agent@agents.example", "A", Role::Agent, None).await.unwrap();
    let (busy, busy_customer, _) = customer_with_chat(&store, "busy@example.org").await;
    let (quiet, quiet_customer, _) = customer_with_chat(&store, "quiet@example.org").await;
    let notify = |thread, author, id: &str| NewMessage {
        notify: vec![(NotificationKind::CustomerReplied, agent.id)],
        ..message(thread, author, id)
    };
    // Five replies in one thread queue five notifications to the agent, then
    // one in another thread: the five fell due first.
    for n in 0..5 {
        store.insert_message(notify(busy, busy_customer, &format!("busy-{n}@x")), None).await.unwrap();
    }
    store.insert_message(notify(quiet, quiet_customer, "quiet@x"), None).await.unwrap();

    let claimed = store.claim_due(2, 60_000, "test").await.unwrap();
    let threads: Vec<Option<i64>> = claimed.iter().map(|item| item.thread_id).collect();
    assert_eq!(threads, [Some(busy), Some(quiet)], "the busy thread's oldest, then the other thread's");
    let carried = store.read_for_pass(&claimed, 5, 20, 0).await.unwrap().coalescible(&claimed[0]);
    assert_eq!(carried.len(), 4, "the busy thread's other four go with its oldest");
    assert!(store.claim_due(10, 60_000, "test").await.unwrap().is_empty(), "nothing else may go on its own");
}

#[tokio::test]
async fn the_loop_breaker_counts_emailed_messages_per_hour_window() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let store = Store::open(&url).await.unwrap();
    let (thread, customer, _) = customer_with_chat(&store, "loop@example.org").await;
    let (other_thread, _, _) = customer_with_chat(&store, "other@example.org").await;
    let counts = |store: Store| async move {
        let since = mailgate::store::now_ms() - mailgate::store::EMAIL_WINDOW_MS;
        let direct = store.recent_email(customer, thread, since, 120).await.unwrap();
        let (_, at_rcpt, _) = store.thread_with_recent(thread, customer, since, 120).await.unwrap().unwrap();
        assert_eq!(direct, (at_rcpt.by_author, at_rcpt.in_thread), "RCPT time and deciding read the same counts");
        direct
    };

    for n in 0..3 {
        store.insert_message(message(thread, customer, &format!("m{n}@x")), None).await.unwrap();
    }
    // Delivered again: a duplicate, not another message.
    store.insert_message(message(thread, customer, "m0@x"), None).await.unwrap();
    // Written in the Dashboard: not mail.
    let typed = NewMessage { source: Source::Dashboard, rfc_message_id: None, ..message(thread, customer, "typed") };
    store.insert_message(typed, None).await.unwrap();
    // The same sender in another thread counts for the sender, not for this thread.
    store.insert_message(message(other_thread, customer, "elsewhere@x"), None).await.unwrap();
    // The chat's first message (emailed, as `customer_with_chat` writes it)
    // and three replies in the thread; one more by the sender elsewhere.
    assert_eq!(counts(store.clone()).await, (5, 4));
    assert_eq!(store.recent_email(customer, thread, 0, 2).await.unwrap(), (2, 2), "capped");

    // An hour later the windows start again with the next message.
    let hour_ago = mailgate::store::now_ms() - mailgate::store::EMAIL_WINDOW_MS - 1;
    execute_sql(&url, &format!("UPDATE threads SET email_window_start = {hour_ago}")).await;
    execute_sql(&url, &format!("UPDATE sender_email_windows SET window_start = {hour_ago}")).await;
    assert_eq!(counts(store.clone()).await, (0, 0));
    store.insert_message(message(thread, customer, "later@x"), None).await.unwrap();
    assert_eq!(counts(store.clone()).await, (1, 1));
}

#[tokio::test]
async fn an_upgrade_keeps_the_last_hours_counts_for_the_loop_breaker() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let folder = if crate::support::on_postgres() { "migrations/postgres" } else { "migrations/sqlite" };
    // The schema as it was before the counts were kept: every migration but
    // the one that introduced them.
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(folder)).await.unwrap();
    let counts_version = before
        .migrations
        .iter()
        .find(|m| m.description.contains("loop breaker counters"))
        .map(|m| m.version)
        .expect("the migration that keeps the loop breaker's counts");
    before.migrations =
        before.migrations.iter().filter(|m| m.version < counts_version).cloned().collect::<Vec<_>>().into();
    let now = mailgate::store::now_ms();
    let rows = [
        "INSERT INTO sites (name, plan_id, created_at) VALUES ('s', 'sandbox', 0)".to_owned(),
        "INSERT INTO users (email, name, role, created_at) VALUES ('c@example.org', 'C', 'owner', 0)".to_owned(),
        "INSERT INTO threads (kind, site_id, customer_id, subject, status, created_at, updated_at) \
         VALUES ('chat', 1, 1, 's', 'open', 0, 0)"
            .to_owned(),
        // Two emailed in the last hour, one before it, one typed in the Dashboard.
        format!(
            "INSERT INTO messages (thread_id, author_id, body, source, rfc_message_id, created_at) VALUES \
             (1, 1, 'a', 'email', 'a@x', {}), (1, 1, 'b', 'email', 'b@x', {}), \
             (1, 1, 'old', 'email', 'old@x', {}), (1, 1, 'typed', 'dashboard', NULL, {now})",
            now - 600_000,
            now - 60_000,
            now - 7_200_000
        ),
    ];
    if url.starts_with("sqlite:") {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap();
        let mut conn = sqlx::SqliteConnection::connect_with(&options.create_if_missing(true)).await.unwrap();
        before.run(&mut conn).await.unwrap();
        for sql in &rows {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        before.run(&mut conn).await.unwrap();
        for sql in &rows {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
    }

    let store = Store::open(&url).await.unwrap();
    let since = now - mailgate::store::EMAIL_WINDOW_MS;
    assert_eq!(store.recent_email(1, 1, since, 120).await.unwrap(), (2, 2));
}

/// Issue 31: an instance taking back its claims at start takes back its own
/// only; another instance's lease stands.
#[tokio::test]
async fn a_restarted_instance_takes_back_only_its_own_claims() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database_url(dir.path()).await).await.unwrap();
    let mail = |to: &str| mailgate::store::NewOutbox {
        kind: "test".into(),
        thread_id: None,
        recipient_id: None,
        to_address: to.into(),
        context: serde_json::json!({}),
    };
    let mine = store.enqueue(&mail("mine@example.org"), None).await.unwrap();
    assert_eq!(store.claim_due(1, 300_000, "host-a:/var/lib/mailgate").await.unwrap()[0].id, mine);
    let theirs = store.enqueue(&mail("theirs@example.org"), None).await.unwrap();
    assert_eq!(store.claim_due(1, 300_000, "host-b:/var/lib/mailgate").await.unwrap()[0].id, theirs);
    assert_eq!(store.release_claims_of("host-a:/var/lib/mailgate").await.unwrap(), 1);
    assert_eq!(store.outbox_item(mine).await.unwrap().unwrap().status.as_str(), "pending", "due again at once");
    assert_eq!(
        store.outbox_item(theirs).await.unwrap().unwrap().status.as_str(),
        "sending",
        "the other's lease stands"
    );
    assert_eq!(store.claim_due(10, 300_000, "host-a:/var/lib/mailgate").await.unwrap()[0].id, mine);
    store.close().await;
}
