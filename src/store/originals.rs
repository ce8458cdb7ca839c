//! Messages kept exactly as they arrived.
//!
//! Every message mailgate answers `250` (stored in a thread, held for an
//! admin, or recorded and dropped) keeps its raw bytes in `originals`,
//! compressed with lz4 by mailgate (PostgreSQL is told not to compress it
//! again), written in the same transaction as the message or log entry that
//! refers to it. The message, its inbound-log entry and a held item refer to
//! it by its key ([`Original::key`]): the time it was kept, then the SHA-256
//! of the raw bytes. Keys grow with time, so that each new original goes at
//! the end of the key's index instead of on a random page of it.
//!
//! Retention deletes rows older than `retention.raw_days`, a few hundred at
//! a time in short transactions, so that a purge never holds the writer for
//! long; the originals of held items still waiting for an admin are never
//! purged.

#[allow(unused_imports, reason = "the reading!/writing! macros name these")]
use super::{
    Backend, InboundLogEntry, MESSAGE_COLUMNS, Readers, Store, StoreError, StoreResult, StoredMessage, hex,
    postgres_writes, sqlite_writes,
};
use sha2::{Digest, Sha256};
use sqlx::Connection;

/// A received message's raw bytes, ready to store.
#[derive(Debug, Clone)]
pub struct Original {
    /// How everything refers to it: the time it was kept (Unix ms, 12
    /// lower-case hex digits), then the SHA-256 of the raw bytes (64).
    pub key: String,
    /// Size of the raw bytes.
    pub size: i64,
    /// `lz4`, or `none` when compressing would not make it smaller.
    pub compression: &'static str,
    /// The bytes as stored: the raw bytes less the holes, compressed.
    pub content: Vec<u8>,
    /// The holes, as JSON (`None`: the bytes are whole).
    pub holes: Option<String>,
}

/// A key for `raw` kept now: the time (Unix ms, 12 hex digits), then the
/// SHA-256 of the bytes.
fn new_key(raw: &[u8]) -> String {
    format!("{:012x}{}", super::now_ms().max(0), hex(&Sha256::digest(raw)))
}

/// The SHA-256 at the end of an original's key (keys written before issue
/// 36 are the SHA-256 alone).
fn content_sha256(key: &str) -> &str {
    key.get(key.len().saturating_sub(64)..).unwrap_or(key)
}

/// A stretch of a message left out of its stored bytes: the base64 body of
/// an attachment whose decoded content is stored in `blobs` anyway. It is
/// rebuilt by encoding that content again, in lines of `width` characters
/// each followed by `eol` (the last one only when `last_eol`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Hole {
    /// Where it goes in the stored bytes.
    at: usize,
    /// The blob holding the decoded content.
    sha256: String,
    /// Characters per line.
    width: usize,
    /// The line ending: `\r\n` or `\n`.
    eol: String,
    /// Whether the last line has its line ending too.
    last_eol: bool,
}

impl Original {
    /// The raw bytes of a message, hashed and compressed.
    pub fn of(raw: &[u8]) -> Self {
        Self::stored(new_key(raw), raw.len(), raw, Vec::new())
    }

    /// The raw bytes of a message whose `attachments` are stored with it:
    /// the base64 body of each is left out when encoding its content again
    /// gives exactly those bytes (most mail clients' output), so that an
    /// attachment is not written twice.
    pub fn of_message(raw: &[u8], attachments: &[super::NewAttachment]) -> Self {
        let key = new_key(raw);
        let mut spans: Vec<(usize, usize, Hole)> = attachments
            .iter()
            .filter_map(|a| {
                let (start, end) = a.base64_body?;
                let region = raw.get(start..end.min(raw.len()))?;
                let (len, shape) = encoded_span(region, &a.content)?;
                Some((start, start + len, Hole { sha256: a.sha256.clone(), ..shape }))
            })
            .collect();
        if spans.is_empty() {
            return Self::stored(key, raw.len(), raw, Vec::new());
        }
        spans.sort_unstable_by_key(|(start, _, _)| *start);
        let left_out: usize = spans.iter().map(|(start, end, _)| end - start).sum();
        let mut stripped = Vec::with_capacity(raw.len().saturating_sub(left_out));
        let mut holes = Vec::with_capacity(spans.len());
        let mut copied = 0;
        for (start, end, hole) in spans {
            if start < copied {
                continue; // overlapping spans: keep the bytes
            }
            stripped.extend_from_slice(&raw[copied..start]);
            holes.push(Hole { at: stripped.len(), ..hole });
            copied = end;
        }
        stripped.extend_from_slice(&raw[copied..]);
        Self::stored(key, raw.len(), &stripped, holes)
    }

    /// The SHA-256 of its raw bytes (the end of its key).
    pub fn sha256(&self) -> &str {
        content_sha256(&self.key)
    }

    /// An original of `size` raw bytes under `key`, stored as `bytes` (the
    /// raw bytes less `holes`), compressed when that helps.
    fn stored(key: String, size: usize, bytes: &[u8], holes: Vec<Hole>) -> Self {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let holes = (!holes.is_empty()).then(|| serde_json::to_string(&holes).unwrap_or_default());
        let compressed = lz4_flex::block::compress_prepend_size(bytes);
        if compressed.len() < bytes.len() {
            Self { key, size, compression: "lz4", content: compressed, holes }
        } else {
            Self { key, size, compression: "none", content: bytes.to_vec(), holes }
        }
    }
}

/// How `content` encoded in base64 lies at the start of `region`: its
/// length there and the shape of its lines; `None` when encoding it again
/// does not give those bytes exactly. Encodes a line at a time, so that a
/// large attachment is compared without a copy of its encoding.
fn encoded_span(region: &[u8], content: &[u8]) -> Option<(usize, Hole)> {
    let width = region.iter().position(|b| *b == b'\r' || *b == b'\n').unwrap_or(region.len());
    // Whole lines of base64 are whole groups of three bytes.
    if width == 0 || width % 4 != 0 || content.is_empty() {
        return None;
    }
    let eol: &[u8] = if region[width..].starts_with(b"\r\n") { b"\r\n" } else { b"\n" };
    let mut line = vec![0u8; width];
    let mut at = 0;
    let mut last_eol = false;
    let chunks = content.chunks(width / 4 * 3);
    let count = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        let encoded = &mut line[..data_encoding::BASE64.encode_len(chunk.len())];
        data_encoding::BASE64.encode_mut(chunk, encoded);
        if region.get(at..at + encoded.len())? != &encoded[..] {
            return None;
        }
        at += encoded.len();
        last_eol = region[at..].starts_with(eol);
        match (last_eol, i + 1 == count) {
            (true, _) => at += eol.len(),
            (false, true) => {}
            (false, false) => return None,
        }
    }
    let eol = String::from_utf8_lossy(eol).into_owned();
    Some((at, Hole { at: 0, sha256: String::new(), width, eol, last_eol }))
}

/// The raw bytes of an original again: `stored` with each hole filled by
/// encoding its blob's content (`blob` reads one by SHA-256).
async fn fill_holes<F, Fut>(stored: Vec<u8>, holes: &str, blob: F) -> StoreResult<Vec<u8>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Option<Vec<u8>>>>,
{
    let holes: Vec<Hole> = serde_json::from_str(holes)
        .map_err(|error| StoreError::Corrupt(format!("a stored original's holes do not read: {error}")))?;
    let mut raw = Vec::with_capacity(stored.len() * 2);
    let mut copied = 0;
    for hole in holes {
        let content = blob(hole.sha256.clone()).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("an attachment of a stored original is gone ({})", hole.sha256))
        })?;
        let piece = stored
            .get(copied..hole.at)
            .ok_or_else(|| StoreError::Corrupt("a stored original's holes are out of order".to_owned()))?;
        raw.extend_from_slice(piece);
        copied = hole.at;
        let encoded = data_encoding::BASE64.encode(&content);
        let lines: Vec<&[u8]> = encoded.as_bytes().chunks(hole.width.max(1)).collect();
        for (i, line) in lines.iter().enumerate() {
            raw.extend_from_slice(line);
            if i + 1 < lines.len() || hole.last_eol {
                raw.extend_from_slice(hole.eol.as_bytes());
            }
        }
    }
    raw.extend_from_slice(stored.get(copied..).unwrap_or_default());
    Ok(raw)
}

/// The raw bytes of a stored original.
fn decompress(compression: &str, content: &[u8]) -> StoreResult<Vec<u8>> {
    match compression {
        "none" => Ok(content.to_vec()),
        "lz4" => lz4_flex::block::decompress_size_prepended(content)
            .map_err(|error| StoreError::Corrupt(format!("a stored original does not decompress: {error}"))),
        other => Err(StoreError::Corrupt(format!("a stored original uses an unknown compression {other:?}"))),
    }
}

/// How much the kept originals take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct OriginalsStats {
    /// Originals kept.
    pub count: i64,
    /// Their raw size, in bytes.
    pub raw_bytes: i64,
    /// What they take in the database (after compression), in bytes.
    pub stored_bytes: i64,
}

/// Most originals one purge transaction deletes.
const PURGE_BATCH: i64 = 200;

/// A purge takes at most one part in this many of the writer's time: after
/// each batch it waits nineteen times as long as the batch took. A backlog
/// (a retention just turned on or shortened: a million originals) then goes
/// out over minutes instead of taking the writer from the mail arriving
/// (issue 36: unpaced, such a purge cut the 2 KB rate to 0.41x; at one part
/// in ten it still cost PostgreSQL 0.84x to 0.88x, the database's CPU being
/// what bounds it there).
const PURGE_SHARE: u32 = 20;

impl Store {
    /// The raw bytes of the original with this key; `None` when there is
    /// none (never kept, or purged after its retention).
    pub async fn original(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let row: Option<(String, Vec<u8>, Option<String>)> = reading!(self, |db| sqlx::query_as(
            "SELECT compression, content, holes FROM originals WHERE original_key = $1"
        )
        .bind(key)
        .fetch_optional(db)
        .await)?;
        let Some((compression, content, holes)) = row else { return Ok(None) };
        let stored = decompress(&compression, &content)?;
        let Some(holes) = holes else { return Ok(Some(stored)) };
        let raw = fill_holes(stored, &holes, |blob| async move {
            Ok(reading!(self, |db| sqlx::query_scalar("SELECT content FROM blobs WHERE sha256 = $1")
                .bind(&blob)
                .fetch_optional(db)
                .await)?)
        })
        .await?;
        if hex(&Sha256::digest(&raw)) != content_sha256(key) {
            return Err(StoreError::Corrupt(format!("the original {key} does not rebuild to its own bytes")));
        }
        Ok(Some(raw))
    }

    /// How many originals are kept and what they take.
    pub async fn originals_stats(&self) -> StoreResult<OriginalsStats> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) AS count, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS raw_bytes, \
             CAST(COALESCE(SUM(LENGTH(content)), 0) AS BIGINT) AS stored_bytes FROM originals"
        )
        .fetch_one(db)
        .await)?)
    }

    /// Deletes originals stored before `before` (Unix ms), except those of
    /// held items still waiting for an admin, and held items that were acted
    /// on before `held_before`, and the text of notifications sent before
    /// `texts_before` (their reply addresses no longer verify); in short
    /// transactions of a few hundred rows, so that ingest never waits long
    /// behind a purge. Returns how many originals, held items and
    /// notification texts went.
    pub async fn purge(
        &self,
        before: Option<i64>,
        held_before: Option<i64>,
        texts_before: Option<i64>,
    ) -> StoreResult<(u64, u64, u64)> {
        let mut originals = 0;
        if let Some(before) = before {
            originals = self
                .in_batches(
                    "DELETE FROM originals WHERE id IN (SELECT o.id FROM originals o WHERE o.stored_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM held_messages h WHERE h.original = o.original_key AND h.status = 'held') \
                     ORDER BY o.stored_at LIMIT $2)",
                    before,
                )
                .await?;
            // Refused mail's header fields go when originals of its age do.
            self.in_batches(
                "UPDATE inbound_log SET headers = NULL WHERE id IN (SELECT id FROM inbound_log \
                 WHERE headers IS NOT NULL AND received_at < $1 ORDER BY received_at LIMIT $2)",
                before,
            )
            .await?;
        }
        let mut held = 0;
        if let Some(before) = held_before {
            loop {
                let started = std::time::Instant::now();
                let deleted = writing!(self, |db| {
                    let mut tx = db.begin().await?;
                    let gone: Vec<(Option<String>, super::HeldStatus)> = sqlx::query_as(
                        "DELETE FROM held_messages WHERE id IN (SELECT id FROM held_messages \
                         WHERE status <> 'held' AND acted_at < $1 ORDER BY id LIMIT $2) RETURNING original, status",
                    )
                    .bind(before)
                    .bind(PURGE_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                    // A released item's original now belongs to its message;
                    // a discarded or answered one's goes with the item.
                    for (original, _) in
                        gone.iter().filter(|(o, status)| o.is_some() && *status != super::HeldStatus::Released)
                    {
                        sqlx::query(
                            "DELETE FROM originals WHERE original_key = $1 AND NOT EXISTS \
                             (SELECT 1 FROM held_messages h WHERE h.original = $1)",
                        )
                        .bind(original)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(gone.len() as u64)
                })?;
                held += deleted;
                if deleted < PURGE_BATCH as u64 {
                    break;
                }
                tokio::time::sleep(started.elapsed() * (PURGE_SHARE - 1)).await;
            }
        }
        let mut texts = 0;
        if let Some(before) = texts_before {
            texts = self
                .in_batches(
                    "UPDATE outbox SET sent_text = NULL WHERE id IN (SELECT id FROM outbox \
                     WHERE sent_text IS NOT NULL AND sent_at < $1 ORDER BY sent_at LIMIT $2)",
                    before,
                )
                .await?;
        }
        Ok((originals, held, texts))
    }

    /// Runs `sql` (a statement on at most `$2` rows older than `$1`) in
    /// transactions of [`PURGE_BATCH`] rows until fewer are left, pausing
    /// between them (see [`PURGE_SHARE`]); returns how many rows it touched.
    async fn in_batches(&self, sql: &'static str, before: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let touched = writing!(self, |db| sqlx::query(sql)
                .bind(before)
                .bind(PURGE_BATCH)
                .execute(db)
                .await
                .map(|done| done.rows_affected()))?;
            total += touched;
            if touched < PURGE_BATCH as u64 {
                return Ok(total);
            }
            tokio::time::sleep(started.elapsed() * (PURGE_SHARE - 1)).await;
        }
    }
}

/// The columns of an [`InboundLogEntry`] in a list: all but the refused
/// mail's header fields.
pub(super) const LOG_LIST_COLUMNS: &str = "SELECT id, received_at, peer, helo, mail_from, rcpt_to, message_id, \
     decision, reason, smtp_reply, thread_id, stored_message, rules, auth, original, subject, held_id, notice_id \
     FROM inbound_log";

/// The columns of an [`InboundLogEntry`].
const LOG_COLUMNS: &str = "SELECT id, received_at, peer, helo, mail_from, rcpt_to, message_id, decision, reason, \
     smtp_reply, thread_id, stored_message, rules, auth, original, subject, held_id, notice_id, headers FROM inbound_log";

impl Store {
    /// One inbound-log entry.
    pub async fn inbound_entry(&self, id: i64) -> StoreResult<Option<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(&format!("{LOG_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await)?)
    }

    /// The inbound-log entry that stored message `id` (created at
    /// `created_at`): looked for among the entries of the minutes around
    /// it, through the log's time index.
    pub async fn inbound_entry_of_message(&self, id: i64, created_at: i64) -> StoreResult<Option<InboundLogEntry>> {
        const AROUND_MS: i64 = 10 * 60 * 1000;
        Ok(reading!(self, |db| sqlx::query_as(&format!(
            "{LOG_COLUMNS} WHERE received_at BETWEEN $1 AND $2 AND stored_message = $3 \
             AND decision IN ('accepted', 'released') ORDER BY id LIMIT 1"
        ))
        .bind(created_at - AROUND_MS)
        .bind(created_at + AROUND_MS)
        .bind(id)
        .fetch_optional(db)
        .await)?)
    }

    /// One stored message with its attachments.
    pub async fn message(&self, id: i64) -> StoreResult<Option<StoredMessage>> {
        let message: Option<StoredMessage> =
            reading!(self, |db| sqlx::query_as(&format!("{MESSAGE_COLUMNS} WHERE m.id = $1"))
                .bind(id)
                .fetch_optional(db)
                .await)?;
        let Some(message) = message else { return Ok(None) };
        Ok(self.with_attachments(message.thread_id, vec![message]).await?.pop())
    }

    /// Inbound-log entries received from `since` on (Unix ms) whose message
    /// was kept, oldest first, after entry `after_id`, at most `limit`: what
    /// The newest `limit` transactions whose mail is kept and was taken in
    /// (accepted, dropped or held), newest first.
    pub async fn recent_replayable(&self, limit: i64) -> StoreResult<Vec<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(&format!(
            "{LOG_COLUMNS} WHERE original IS NOT NULL AND decision IN ('accepted', 'dropped', 'held') \
             ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// `replay` reads again. Admins' actions on held mail are left out.
    pub async fn replayable(&self, since: i64, after_id: i64, limit: i64) -> StoreResult<Vec<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(&format!(
            "{LOG_COLUMNS} WHERE received_at >= $1 AND id > $2 AND original IS NOT NULL \
             AND decision IN ('accepted', 'dropped', 'held') ORDER BY id LIMIT $3"
        ))
        .bind(since)
        .bind(after_id)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::{Original, content_sha256, encoded_span, fill_holes};
    use crate::store::NewAttachment;
    use sha2::Digest;

    #[test]
    fn keys_grow_with_time_and_end_with_the_bytes_sha256() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; // of no bytes
        let first = Original::of(b"");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = Original::of(b"");
        assert_eq!((first.key.len(), first.sha256(), second.sha256()), (76, sha, sha));
        assert!(first.key < second.key, "{} then {}", first.key, second.key);
        assert!(first.key[..12].bytes().all(|b| b.is_ascii_hexdigit()), "{}", first.key);
        // Keys from before issue 36 are the SHA-256 alone; a short one is itself.
        assert_eq!((content_sha256(sha), content_sha256("abc")), (sha, "abc"));
        let attached = Original::of_message(b"x", &[]);
        assert_eq!(attached.sha256(), super::hex(&sha2::Sha256::digest(b"x")));
    }

    /// A message with `body` as the base64 body of its attachment of `content`.
    fn message(body: &str) -> Vec<u8> {
        format!("Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n{body}--b--\r\n")
            .into_bytes()
    }

    async fn rebuilt(original: &Original, content: &[u8]) -> Vec<u8> {
        let stored = lz4_flex::block::decompress_size_prepended(&original.content).unwrap_or(original.content.clone());
        let content = content.to_vec();
        match &original.holes {
            Some(holes) => fill_holes(stored, holes, |_| {
                let content = content.clone();
                async move { Ok(Some(content)) }
            })
            .await
            .unwrap(),
            None => stored,
        }
    }

    #[tokio::test]
    async fn a_base64_body_is_left_out_and_rebuilt_byte_for_byte() {
        let content: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let encoded = data_encoding::BASE64.encode(&content);
        for (width, eol, last_eol) in [(76, "\r\n", true), (72, "\n", true), (76, "\r\n", false), (4000, "\r\n", true)]
        {
            let lines: Vec<&str> = encoded.as_bytes().chunks(width).map(|l| std::str::from_utf8(l).unwrap()).collect();
            let mut body = lines.join(eol);
            if last_eol {
                body.push_str(eol);
            }
            let body = if last_eol { body } else { format!("{body}\r\n") };
            let raw = message(&body);
            let start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let start = start + raw[start..].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let mut attachment = NewAttachment::new("a.bin".into(), "application/octet-stream".into(), content.clone());
            attachment.base64_body = Some((start, start + body.len()));
            let original = Original::of_message(&raw, &[attachment]);
            assert!(original.holes.is_some(), "width {width}");
            assert!(original.content.len() < 200, "the attachment is left out ({})", original.content.len());
            assert_eq!(rebuilt(&original, &content).await, raw, "width {width} eol {eol:?} last {last_eol}");
            assert_eq!(original.size as usize, raw.len());
        }
    }

    #[test]
    fn bytes_that_do_not_encode_again_the_same_are_kept_whole() {
        let content = b"hello world, this is an attachment".to_vec();
        let encoded = data_encoding::BASE64.encode(&content);
        // Lines of uneven length, and a stray character.
        let uneven = format!("{}\r\n{}\r\n", &encoded[..10], &encoded[10..]);
        assert!(encoded_span(uneven.as_bytes(), &content).is_none());
        let altered = encoded.replacen('a', "b", 1) + "\r\n";
        assert!(encoded_span(altered.as_bytes(), &content).is_none() || !encoded.contains('a'));
        let raw = message(&uneven);
        let mut attachment = NewAttachment::new("a".into(), "a/b".into(), content);
        attachment.base64_body = Some((0, raw.len()));
        assert!(Original::of_message(&raw, &[attachment]).holes.is_none());
    }
}
