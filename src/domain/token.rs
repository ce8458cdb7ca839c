//! Reply tokens: the `TOKEN` in `reply+TOKEN@domain`.
//!
//! A token names one thread and one recipient and is signed with HMAC-SHA256
//! under a server secret, so it can be neither guessed nor altered: changing a
//! single character of it breaks the signature.
//!
//! Layout before encoding: `version (1) | key id (1) | thread id (LEB128) |
//! recipient id (LEB128) | day issued (LEB128) | MAC (12)`. The day makes
//! tokens expire (a configured lifetime); the key id lets the secret rotate:
//! new tokens are signed with the newest key, older keys still verify. The whole is written in lower-case
//! base32 without padding, because mail systems may change the case of a local
//! part and base32 survives that. The MAC is 96 bits: an attacker who does not
//! know the secret has a 2^-96 chance per guess.

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const VERSION: u8 = 2;
/// Days are counted from 2025-01-01, which keeps the number (and the token) short.
const EPOCH_DAY: i64 = 20_089;
const MAC_LEN: usize = 12;
/// Domain separation, so that a MAC made for another purpose never verifies here.
const CONTEXT: &[u8] = b"mailgate reply token v1";

/// What a valid token says: this recipient may reply in this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyToken {
    /// The chat or ticket (row id of `threads`).
    pub thread_id: i64,
    /// The user the notification carrying this token was sent to.
    pub recipient_id: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base32, or too short or long to be one of ours.
    #[error("malformed reply token")]
    Malformed,
    /// Signed with a key we do not hold, or of an unknown version.
    #[error("reply token of an unknown key")]
    UnknownKey,
    /// The signature does not match: forged or altered.
    #[error("reply token signature does not verify")]
    BadSignature,
    /// Genuine, but older than the configured lifetime.
    #[error("reply token has expired")]
    Expired,
    /// Signed with a key the desk has retired (`mailgate keys retire`),
    /// e.g. because its secret was stolen.
    #[error("reply token of a retired key")]
    Retired,
}

/// One signing secret with its id.
#[derive(Clone)]
pub struct TokenKey {
    /// Written into every token so that a rotated-out key can still verify.
    pub id: u8,
    secret: Vec<u8>,
}

impl TokenKey {
    /// A key from its id and secret bytes (at least 32 bytes of randomness).
    pub fn new(id: u8, secret: Vec<u8>) -> Self {
        Self { id, secret }
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// `bytes` random bytes as lower-case hex: token keys, API tokens, webhook secrets.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    data_encoding::HEXLOWER.encode(&buf)
}

/// The keys a signer holds at one moment.
#[derive(Debug)]
struct KeyRing {
    current: TokenKey,
    older: Vec<TokenKey>,
    /// Ids of keys taken out of service: their tokens are refused as
    /// [`TokenError::Retired`] rather than as unknown.
    retired: Vec<u8>,
}

impl KeyRing {
    /// (held ids, newest first; retired ids, sorted).
    fn ids(&self) -> (Vec<u8>, Vec<u8>) {
        let mut held: Vec<u8> = std::iter::once(self.current.id).chain(self.older.iter().map(|k| k.id)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        (held, self.retired.clone())
    }
}

/// Signs with the current key and verifies with any known key. Clones
/// share their keys: [`TokenSigner::replace_keys`] on one (a rotation or a
/// retirement read from the database) reaches every part of the server.
#[derive(Debug, Clone)]
pub struct TokenSigner {
    keys: std::sync::Arc<std::sync::RwLock<std::sync::Arc<KeyRing>>>,
    /// Tokens older than this many days are refused; `None`: never.
    lifetime_days: Option<i64>,
}

impl TokenSigner {
    /// A signer that signs with `current` and also accepts tokens of `older` keys.
    pub fn new(current: TokenKey, older: Vec<TokenKey>) -> Self {
        let ring = KeyRing { current, older, retired: Vec::new() };
        Self { keys: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(ring))), lifetime_days: None }
    }

    /// A signer with `retired` key ids besides (their tokens are refused as retired).
    pub fn with_retired(self, retired: Vec<u8>) -> Self {
        let ring = self.ring();
        self.replace_keys(ring.current.clone(), ring.older.clone(), retired);
        self
    }

    /// Puts new keys in place for this signer and all its clones: `current`
    /// signs from now on, `older` still verify, tokens of `retired` ids are
    /// refused as retired. Says whether anything changed (keys are told
    /// apart by id: an id never names another secret).
    pub fn replace_keys(&self, current: TokenKey, older: Vec<TokenKey>, mut retired: Vec<u8>) -> bool {
        retired.sort_unstable();
        let ring = KeyRing { current, older, retired };
        let mut held = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.ids() == held.ids() {
            return false;
        }
        *held = std::sync::Arc::new(ring);
        true
    }

    /// The ids of the keys held now, newest first (the first signs), and the retired ids.
    pub fn key_ids(&self) -> (Vec<u8>, Vec<u8>) {
        self.ring().ids()
    }

    fn ring(&self) -> std::sync::Arc<KeyRing> {
        std::sync::Arc::clone(&self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The same signer, refusing tokens older than `days`.
    pub fn with_lifetime_days(mut self, days: Option<u32>) -> Self {
        self.lifetime_days = days.map(i64::from);
        self
    }

    /// The id of the key new tokens are signed with.
    pub fn current_key_id(&self) -> u8 {
        self.ring().current.id
    }

    /// A reply token as if issued `days_ago` days ago (tests of expiry).
    pub fn sign_issued_days_ago(&self, token: ReplyToken, days_ago: i64) -> String {
        self.sign_pair_on(Purpose::Reply, token.thread_id, token.recipient_id, today() - days_ago)
    }

    /// The token for `token`, ready to put in a local part.
    pub fn sign(&self, token: ReplyToken) -> String {
        self.sign_pair(Purpose::Reply, token.thread_id, token.recipient_id)
    }

    /// Checks a reply token and says what it names.
    pub fn verify(&self, text: &str) -> Result<ReplyToken, TokenError> {
        let (thread_id, recipient_id) = self.verify_pair(Purpose::Reply, text)?;
        Ok(ReplyToken { thread_id, recipient_id })
    }

    /// The token of an unsubscribe link: user `user_id` opts out of
    /// notification kind number `kind`.
    pub fn sign_unsubscribe(&self, user_id: i64, kind: i64) -> String {
        self.sign_pair(Purpose::Unsubscribe, user_id, kind)
    }

    /// Checks an unsubscribe token: (user id, notification kind number).
    pub fn verify_unsubscribe(&self, text: &str) -> Result<(i64, i64), TokenError> {
        self.verify_pair(Purpose::Unsubscribe, text)
    }

    /// The token of a notification's envelope sender (`bounces+TOKEN@`):
    /// names outbox item `outbox_id`, so that a delivery report sent back to
    /// it is known to be about that notification and no other.
    pub fn sign_bounce(&self, outbox_id: i64) -> String {
        self.sign_pair(Purpose::Bounce, outbox_id, 0)
    }

    /// Checks a bounce address token: the outbox item it names.
    pub fn verify_bounce(&self, text: &str) -> Result<i64, TokenError> {
        self.verify_pair(Purpose::Bounce, text).map(|(outbox_id, _)| outbox_id)
    }

    /// The token of a participant's one-click link that takes user
    /// `user_id` out of conversation `thread_id` (and nobody else).
    pub fn sign_leave(&self, thread_id: i64, user_id: i64) -> String {
        self.sign_pair(Purpose::Leave, thread_id, user_id)
    }

    /// Checks a leave token: (thread id, user id).
    pub fn verify_leave(&self, text: &str) -> Result<(i64, i64), TokenError> {
        self.verify_pair(Purpose::Leave, text)
    }

    /// The token of a download link for attachment `attachment_id`, good
    /// for `days` days from today.
    pub fn sign_download(&self, attachment_id: i64, days: u32) -> String {
        self.sign_pair(Purpose::Download, attachment_id, today() + i64::from(days))
    }

    /// Checks a download token: the attachment it names, unless its days are over.
    pub fn verify_download(&self, text: &str) -> Result<i64, TokenError> {
        let (attachment_id, last_day) = self.verify_pair(Purpose::Download, text)?;
        if today() > last_day {
            return Err(TokenError::Expired);
        }
        Ok(attachment_id)
    }

    /// A download token as if signed `days_ago` days ago (tests of expiry).
    pub fn sign_download_issued_days_ago(&self, attachment_id: i64, days: u32, days_ago: i64) -> String {
        let day = today() - days_ago;
        self.sign_pair_on(Purpose::Download, attachment_id, day + i64::from(days), day)
    }

    fn sign_pair(&self, purpose: Purpose, a: i64, b: i64) -> String {
        self.sign_pair_on(purpose, a, b, today())
    }

    fn sign_pair_on(&self, purpose: Purpose, a: i64, b: i64, day: i64) -> String {
        let ring = self.ring();
        let mut bytes = Vec::with_capacity(24);
        bytes.push(VERSION);
        bytes.push(ring.current.id);
        write_varint(&mut bytes, a as u64);
        write_varint(&mut bytes, b as u64);
        write_varint(&mut bytes, (day - EPOCH_DAY).max(0) as u64);
        let mac = compute_mac(&ring.current, purpose, &bytes);
        bytes.extend_from_slice(&mac[..MAC_LEN]);
        BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
    }

    fn verify_pair(&self, purpose: Purpose, text: &str) -> Result<(i64, i64), TokenError> {
        if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TokenError::Malformed);
        }
        let bytes = BASE32_NOPAD.decode(text.to_ascii_uppercase().as_bytes()).map_err(|_| TokenError::Malformed)?;
        if bytes.len() < 2 + 2 + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        if payload[0] != VERSION {
            return Err(TokenError::UnknownKey);
        }
        let ring = self.ring();
        if ring.retired.contains(&payload[1]) {
            return Err(TokenError::Retired);
        }
        let key = std::iter::once(&ring.current)
            .chain(&ring.older)
            .find(|key| key.id == payload[1])
            .ok_or(TokenError::UnknownKey)?;
        let mut verifier = mac_for(key, purpose);
        verifier.update(payload);
        verifier.verify_truncated_left(mac).map_err(|_| TokenError::BadSignature)?;
        let mut rest = &payload[2..];
        let a = read_varint(&mut rest).ok_or(TokenError::Malformed)?;
        let b = read_varint(&mut rest).ok_or(TokenError::Malformed)?;
        let issued = read_varint(&mut rest).ok_or(TokenError::Malformed)? as i64 + EPOCH_DAY;
        if !rest.is_empty() {
            return Err(TokenError::Malformed);
        }
        if self.lifetime_days.is_some_and(|days| today() - issued > days) {
            return Err(TokenError::Expired);
        }
        Ok((i64::try_from(a).map_err(|_| TokenError::Malformed)?, i64::try_from(b).map_err(|_| TokenError::Malformed)?))
    }
}

/// Days since the Unix epoch, today (UTC).
fn today() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86_400)
}

/// What a token is for; part of the MAC, so that a token made for one
/// purpose never verifies for another.
#[derive(Clone, Copy)]
enum Purpose {
    Reply,
    Unsubscribe,
    Bounce,
    Leave,
    Download,
}

fn mac_for(key: &TokenKey, purpose: Purpose) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).expect("HMAC accepts keys of any length");
    mac.update(match purpose {
        Purpose::Reply => CONTEXT,
        Purpose::Unsubscribe => b"mailgate unsubscribe token v1",
        Purpose::Bounce => b"mailgate bounce address v1",
        Purpose::Leave => b"mailgate leave link v1",
        Purpose::Download => b"mailgate download link v1",
    });
    mac
}

fn compute_mac(key: &TokenKey, purpose: Purpose, payload: &[u8]) -> [u8; 32] {
    let mut mac = mac_for(key, purpose);
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a canonical LEB128 integer (no redundant trailing zero groups).
fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return None;
            }
            *input = &input[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{ReplyToken, TokenError, TokenKey, TokenSigner};

    fn signer() -> TokenSigner {
        TokenSigner::new(TokenKey::new(1, vec![7; 32]), vec![])
    }

    #[test]
    fn round_trips_and_ignores_case() {
        let token = ReplyToken { thread_id: 42, recipient_id: 1_000_000 };
        let text = signer().sign(token);
        assert!(text.len() <= 40, "{text} is too long for a comfortable local part");
        assert_eq!(signer().verify(&text), Ok(token));
        assert_eq!(signer().verify(&text.to_uppercase()), Ok(token));
    }

    #[test]
    fn a_key_replaced_on_one_clone_is_replaced_on_all_and_a_retired_key_verifies_nothing() {
        let first = signer();
        let clone = first.clone();
        let token = ReplyToken { thread_id: 7, recipient_id: 8 };
        let (old_reply, old_link) = (first.sign(token), first.sign_download(3, 5));
        first.replace_keys(TokenKey::new(2, vec![9; 32]), vec![TokenKey::new(1, vec![7; 32])], vec![]);
        assert_eq!(clone.current_key_id(), 2, "a clone signs with the new key at once");
        assert_eq!(clone.verify(&old_reply), Ok(token), "the older key still verifies");
        clone.replace_keys(TokenKey::new(2, vec![9; 32]), vec![], vec![1]);
        assert_eq!(first.verify(&old_reply), Err(TokenError::Retired));
        assert_eq!(first.verify_download(&old_link), Err(TokenError::Retired), "links too");
        assert_eq!(first.verify(&first.sign(token)), Ok(token));
        assert_eq!(first.key_ids(), (vec![2], vec![1]));
    }

    #[test]
    fn bounce_tokens_name_one_notification_and_are_no_other_kind_of_token() {
        let text = signer().sign_bounce(41);
        assert_eq!(signer().verify_bounce(&text), Ok(41));
        assert!(signer().verify(&text).is_err(), "a bounce token is not a reply token");
        let reply = signer().sign(ReplyToken { thread_id: 41, recipient_id: 0 });
        assert!(signer().verify_bounce(&reply).is_err(), "a reply token is not a bounce token");
        assert!(signer().verify_bounce("41").is_err(), "a bare outbox id is not a bounce token");
    }

    #[test]
    fn download_and_leave_tokens_are_their_own_kind_and_downloads_expire() {
        let signer = signer();
        let link = signer.sign_download(7, 30);
        assert_eq!(signer.verify_download(&link), Ok(7));
        assert_eq!(signer.verify_download(&signer.sign_download_issued_days_ago(7, 30, 29)), Ok(7));
        assert_eq!(signer.verify_download(&signer.sign_download_issued_days_ago(7, 30, 31)), Err(TokenError::Expired));
        assert!(signer.verify_leave(&link).is_err() && signer.verify(&link).is_err());
        let leave = signer.sign_leave(3, 9);
        assert_eq!(signer.verify_leave(&leave), Ok((3, 9)));
        assert!(signer.verify_download(&leave).is_err() && signer.verify_unsubscribe(&leave).is_err());
    }

    #[test]
    fn refuses_every_single_character_change() {
        let text = signer().sign(ReplyToken { thread_id: 3, recipient_id: 9 });
        for i in 0..text.len() {
            let mut altered = text.clone().into_bytes();
            altered[i] = if altered[i] == b'a' { b'b' } else { b'a' };
            let altered = String::from_utf8(altered).unwrap();
            assert!(signer().verify(&altered).is_err(), "{altered} verified");
        }
    }

    #[test]
    fn refuses_other_keys_and_garbage() {
        let other = TokenSigner::new(TokenKey::new(1, vec![8; 32]), vec![]);
        let text = other.sign(ReplyToken { thread_id: 3, recipient_id: 9 });
        assert_eq!(signer().verify(&text), Err(TokenError::BadSignature));
        assert_eq!(signer().verify(""), Err(TokenError::Malformed));
        assert_eq!(signer().verify("abc"), Err(TokenError::Malformed));
        assert_eq!(signer().verify("not-base32!"), Err(TokenError::Malformed));
        assert!(signer().verify(&text[..text.len() - 2]).is_err());
    }

    #[test]
    fn a_reply_token_is_no_unsubscribe_token() {
        let reply = signer().sign(ReplyToken { thread_id: 3, recipient_id: 9 });
        assert_eq!(signer().verify_unsubscribe(&reply), Err(TokenError::BadSignature));
        let unsubscribe = signer().sign_unsubscribe(9, 1);
        assert_eq!(signer().verify(&unsubscribe), Err(TokenError::BadSignature));
        assert_eq!(signer().verify_unsubscribe(&unsubscribe), Ok((9, 1)));
    }

    #[test]
    fn tokens_expire_after_their_lifetime() {
        let signer = signer().with_lifetime_days(Some(30));
        let token = ReplyToken { thread_id: 1, recipient_id: 2 };
        assert_eq!(signer.verify(&signer.sign_issued_days_ago(token, 29)), Ok(token));
        assert_eq!(signer.verify(&signer.sign_issued_days_ago(token, 31)), Err(TokenError::Expired));
    }

    #[test]
    fn old_keys_still_verify() {
        let old = TokenSigner::new(TokenKey::new(1, vec![1; 32]), vec![]);
        let text = old.sign(ReplyToken { thread_id: 5, recipient_id: 6 });
        let rotated = TokenSigner::new(TokenKey::new(2, vec![2; 32]), vec![TokenKey::new(1, vec![1; 32])]);
        assert_eq!(rotated.verify(&text), Ok(ReplyToken { thread_id: 5, recipient_id: 6 }));
    }
}
