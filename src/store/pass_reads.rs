//! What one pass of the outbound worker reads about the items it claimed,
//! read for all of them together. Asked per mail, a notification cost six
//! reads (the recipient's standing, the replies it carries, the thread, the
//! Message-IDs it follows, the messages it shows and their attachments),
//! each a hand-off to a SQLite reader thread or a round trip to PostgreSQL;
//! with a backlog that was most of PostgreSQL's work. Here a pass of any size
//! costs seven queries, and the worker takes its answers from [`PassReads`].
//!
//! Lists of ids are padded to a power of two with values no row has (`-1`,
//! the empty address), so that each connection prepares a handful of
//! statements, not one per pass size.
//!
//! Each backend gets the form its planner cannot get wrong. SQLite searches
//! the outbox by `(thread_id, to_address, status) IN (SELECT ...)` rather
//! than by a join: without statistics, SQLite 3.46 planned the join along
//! `outbox_due (status)`, reading every pending row of a backlog for each
//! pair (42 ms a pass instead of about 1). PostgreSQL reads each key's rows
//! with `CROSS JOIN LATERAL (... OFFSET 0)`: without statistics for rows
//! added since the last analyze (a desk filling up, the benchmark), it
//! hash-joined the keys to a sequential scan of all messages (43 ms a pass on
//! 300,000 messages, growing with them); a plain LATERAL subquery is pulled
//! up into the same join, and `OFFSET 0` keeps it a per-key index scan
//! (1.5 ms). SQLite has no LATERAL.

use super::{
    Attachment, Backend, MESSAGE_COLUMNS, MESSAGE_FIELDS, OutboxItem, Readers, Store, StoreResult, StoredMessage,
    Thread, padded, push_wanted,
};
use sqlx::QueryBuilder;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The notification kinds whose pending items a sent mail carries along.
pub const COALESCED_KINDS: [&str; 2] = ["agent_replied", "customer_replied"];

/// What the items of one pass need from the database, read at once by
/// [`Store::read_for_pass`].
#[derive(Debug, Default)]
pub struct PassReads {
    threads: HashMap<i64, Thread>,
    hard_bounces: HashMap<String, i64>,
    opted_out: HashSet<(i64, String)>,
    /// Pending reply notifications to the pass's (thread, address) pairs, by id.
    pending_replies: Vec<OutboxItem>,
    /// The Message-IDs last sent to each (thread, address), oldest first.
    sent_ids: HashMap<(i64, String), Vec<String>>,
    /// Each thread's messages from a little before the earliest new one, oldest first.
    messages: HashMap<i64, Vec<StoredMessage>>,
}

impl PassReads {
    /// The thread an item is about.
    pub fn thread(&self, id: i64) -> Option<&Thread> {
        self.threads.get(&id)
    }

    /// The hard bounces recorded for the item's address, and whether its
    /// recipient opted out of its kind.
    pub fn standing(&self, item: &OutboxItem) -> (i64, bool) {
        let bounces = self.hard_bounces.get(&item.to_address).copied().unwrap_or(0);
        let opted_out = item.recipient_id.is_some_and(|id| self.opted_out.contains(&(id, item.kind.clone())));
        (bounces, opted_out)
    }

    /// The other pending reply notifications to the same person about the
    /// same thread, which `item` carries when it goes out (oldest first).
    pub fn coalescible(&self, item: &OutboxItem) -> Vec<OutboxItem> {
        self.pending_replies
            .iter()
            .filter(|other| {
                other.id != item.id && other.thread_id == item.thread_id && other.to_address == item.to_address
            })
            .cloned()
            .collect()
    }

    /// The Message-IDs of the latest mails sent to `address` about a thread,
    /// oldest first: the References of the next one.
    pub fn sent_ids(&self, thread_id: i64, address: &str) -> &[String] {
        self.sent_ids.get(&(thread_id, address.to_owned())).map_or(&[], Vec::as_slice)
    }

    /// A thread's messages from a few before the earliest one any item of the
    /// pass brings to the end of the thread, oldest first, with attachments.
    pub fn messages(&self, thread_id: i64) -> &[StoredMessage] {
        self.messages.get(&thread_id).map_or(&[], Vec::as_slice)
    }
}

/// `column IN (...)` over `values`, as bound parameters.
fn push_in_list<'a, DB: sqlx::Database, T>(query: &mut QueryBuilder<'a, DB>, column: &str, values: &'a [T])
where
    T: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB> + Send + Sync,
{
    query.push(column).push(" IN (");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    query.push(")");
}

impl Store {
    /// Everything the items of one outbound pass need from the database, in
    /// seven queries however many items there are: their threads, their
    /// recipients' standing, the pending replies they may carry, the last
    /// `references` Message-IDs sent to each, and each thread's messages from
    /// `history` (at least one) before the earliest new one on.
    ///
    /// A recipient's standing counts the hard bounces that count (see
    /// [`Bounce::counted`]), are not lifted and arrived since `bounces_since`.
    pub async fn read_for_pass(
        &self,
        items: &[OutboxItem],
        history: i64,
        references: i64,
        bounces_since: i64,
    ) -> StoreResult<PassReads> {
        let mut reads = PassReads::default();
        if items.is_empty() {
            return Ok(reads);
        }
        let thread_ids: Vec<i64> =
            items.iter().filter_map(|i| i.thread_id).collect::<HashSet<_>>().into_iter().collect();
        let addresses: Vec<String> =
            items.iter().map(|i| i.to_address.clone()).collect::<HashSet<_>>().into_iter().collect();
        let user_ids: Vec<i64> =
            items.iter().filter_map(|i| i.recipient_id).collect::<HashSet<_>>().into_iter().collect();
        let pairs: Vec<(i64, String)> = items
            .iter()
            .filter_map(|i| Some((i.thread_id?, i.to_address.clone())))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (thread_ids, addresses, user_ids) =
            (padded(thread_ids, -1), padded(addresses, String::new()), padded(user_ids, -1));
        let pairs = padded(pairs, (-1, String::new()));

        let threads: Vec<Thread> = reading!(self, |db| {
            let mut query = QueryBuilder::new("SELECT * FROM threads WHERE ");
            push_in_list(&mut query, "id", &thread_ids);
            query.build_query_as().fetch_all(db).await
        })?;
        reads.threads = threads.into_iter().map(|t| (t.id, t)).collect();

        let bounces: Vec<(String, i64)> = reading!(self, |db| {
            let mut query = QueryBuilder::new(
                "SELECT recipient, COUNT(DISTINCT outbox_id) FROM bounces \
                 WHERE counted = TRUE AND lifted_at IS NULL AND received_at >= ",
            );
            query.push_bind(bounces_since);
            query.push(" AND ");
            push_in_list(&mut query, "recipient", &addresses);
            query.push(" GROUP BY recipient");
            query.build_query_as().fetch_all(db).await
        })?;
        reads.hard_bounces = bounces.into_iter().collect();

        let optouts: Vec<(i64, String)> = reading!(self, |db| {
            let mut query = QueryBuilder::new("SELECT user_id, kind FROM notification_optouts WHERE ");
            push_in_list(&mut query, "user_id", &user_ids);
            query.build_query_as().fetch_all(db).await
        })?;
        reads.opted_out = optouts.into_iter().collect();

        let postgres = matches!(self.backend, Backend::Postgres { .. });
        reads.pending_replies = reading!(self, |db| {
            let mut query = QueryBuilder::new("");
            push_wanted(&mut query, "to_address", "TEXT", &pairs);
            query.push(if postgres {
                " SELECT o.* FROM wanted w CROSS JOIN LATERAL (SELECT * FROM outbox x \
                   WHERE x.thread_id = w.thread_id AND x.to_address = w.to_address AND x.status = 'pending' \
                   AND x.kind IN ('agent_replied', 'customer_replied') OFFSET 0) o ORDER BY o.id"
            } else {
                " SELECT o.* FROM outbox o WHERE (o.thread_id, o.to_address, o.status) IN \
                   (SELECT thread_id, to_address, 'pending' FROM wanted) \
                 AND o.kind IN ('agent_replied', 'customer_replied') ORDER BY o.id"
            });
            query.build_query_as().fetch_all(db).await
        })?;

        let sent: Vec<(i64, String, String)> = reading!(self, |db| {
            let mut query = QueryBuilder::new("");
            push_wanted(&mut query, "to_address", "TEXT", &pairs);
            if postgres {
                query.push(
                    " SELECT o.thread_id, o.to_address, o.rfc_message_id FROM wanted w CROSS JOIN LATERAL ( \
                       SELECT x.id, x.thread_id, x.to_address, x.rfc_message_id FROM outbox x \
                       WHERE x.thread_id = w.thread_id AND x.to_address = w.to_address AND x.status = 'sent' \
                       AND x.rfc_message_id IS NOT NULL ORDER BY x.id DESC LIMIT ",
                );
                query.push_bind(references).push(") o ORDER BY o.id");
            } else {
                query.push(
                    " SELECT thread_id, to_address, rfc_message_id FROM ( \
                       SELECT o.id, o.thread_id, o.to_address, o.rfc_message_id, ROW_NUMBER() OVER ( \
                         PARTITION BY o.thread_id, o.to_address ORDER BY o.id DESC) AS latest \
                       FROM outbox o WHERE (o.thread_id, o.to_address, o.status) IN \
                         (SELECT thread_id, to_address, 'sent' FROM wanted) \
                       AND o.rfc_message_id IS NOT NULL) AS sent \
                     WHERE latest <= ",
                );
                query.push_bind(references).push(" ORDER BY id");
            }
            query.build_query_as().fetch_all(db).await
        })?;
        for (thread_id, address, message_id) in sent {
            reads.sent_ids.entry((thread_id, address)).or_default().push(message_id);
        }

        // Per thread, the earliest message any of the pass's items brings
        // (its own or one it carries); an item that brings none shows the
        // thread's latest messages.
        let mut first_new: BTreeMap<i64, i64> = BTreeMap::new();
        for item in items {
            let Some(thread_id) = item.thread_id else { continue };
            let carried = if COALESCED_KINDS.contains(&item.kind.as_str()) { reads.coalescible(item) } else { vec![] };
            let earliest = item
                .message_id
                .into_iter()
                .chain(carried.iter().filter_map(|m| m.message_id))
                .min()
                .unwrap_or(i64::MAX);
            let first = first_new.entry(thread_id).or_insert(earliest);
            *first = (*first).min(earliest);
        }
        reads.messages = self.messages_of_pass(first_new, history).await?;
        Ok(reads)
    }

    /// For each (thread, first new message id): the thread's messages from
    /// `history` before that one on, with their attachments (two queries).
    async fn messages_of_pass(
        &self,
        first_new: BTreeMap<i64, i64>,
        history: i64,
    ) -> StoreResult<HashMap<i64, Vec<StoredMessage>>> {
        let postgres = matches!(self.backend, Backend::Postgres { .. });
        let mut by_thread: HashMap<i64, Vec<StoredMessage>> = HashMap::new();
        if first_new.is_empty() {
            return Ok(by_thread);
        }
        let wanted = padded(first_new.into_iter().collect(), (-1, -1));
        // Where each thread's window starts: the `history`-th message before
        // the first new one, or the thread's first message when it has fewer.
        let messages: Vec<StoredMessage> = reading!(self, |db| {
            let mut query = QueryBuilder::new("");
            push_wanted(&mut query, "first_new", "BIGINT", &wanted);
            query.push(
                ", starts AS MATERIALIZED (SELECT w.thread_id, COALESCE( \
                   (SELECT e.id FROM messages e WHERE e.thread_id = w.thread_id AND e.id < w.first_new \
                    ORDER BY e.id DESC LIMIT 1 OFFSET ",
            );
            query.push_bind(history.max(1) - 1).push(
                "), (SELECT MIN(e.id) FROM messages e WHERE e.thread_id = w.thread_id)) AS first_id FROM wanted w) ",
            );
            // Sorted below, thread by thread: an ORDER BY would have SQLite
            // copy every body of the pass into a sorter first.
            if postgres {
                query.push(format!(
                    "SELECT {MESSAGE_FIELDS} FROM starts s CROSS JOIN LATERAL (SELECT * FROM messages x \
                     WHERE x.thread_id = s.thread_id AND x.id >= s.first_id OFFSET 0) m JOIN users u ON u.id = m.author_id"
                ));
            } else {
                query.push(MESSAGE_COLUMNS).push(" JOIN starts s ON s.thread_id = m.thread_id AND m.id >= s.first_id");
            }
            query.build_query_as().fetch_all(db).await
        })?;
        let mut starts: BTreeMap<i64, i64> = BTreeMap::new();
        for message in &messages {
            let first = starts.entry(message.thread_id).or_insert(message.id);
            *first = (*first).min(message.id);
        }
        if starts.is_empty() {
            return Ok(by_thread);
        }
        let starts = padded(starts.into_iter().collect(), (-1, -1));
        let attachments: Vec<Attachment> = reading!(self, |db| {
            let mut query = QueryBuilder::new("");
            push_wanted(&mut query, "first_id", "BIGINT", &starts);
            query.push(if postgres {
                " SELECT a.* FROM wanted w CROSS JOIN LATERAL (SELECT x.id FROM messages x \
                   WHERE x.thread_id = w.thread_id AND x.id >= w.first_id OFFSET 0) m \
                 JOIN attachments a ON a.message_id = m.id ORDER BY a.id"
            } else {
                " SELECT a.* FROM wanted w JOIN messages m ON m.thread_id = w.thread_id AND m.id >= w.first_id \
                 JOIN attachments a ON a.message_id = m.id ORDER BY a.id"
            });
            query.build_query_as().fetch_all(db).await
        })?;
        let mut attachments_of: HashMap<i64, Vec<Attachment>> = HashMap::new();
        for attachment in attachments {
            attachments_of.entry(attachment.message_id).or_default().push(attachment);
        }
        for mut message in messages {
            message.attachments = attachments_of.remove(&message.id).unwrap_or_default();
            by_thread.entry(message.thread_id).or_default().push(message);
        }
        for messages in by_thread.values_mut() {
            messages.sort_unstable_by_key(|m| m.id);
        }
        Ok(by_thread)
    }
}
