//! Step 3: the text the person newly wrote, and the attachments worth keeping.
//!
//! What counts as the reply text: what the person newly wrote, including a
//! short sign-off ("Thanks, Anna"); without the quoted history, without a
//! `-- ` signature block, and without mobile footers. HTML-only mail is
//! turned into text first, with quotes removed by structure ([`html`]).
//! Then, on lines:
//!
//! 1. cut at the start of quoted history ([`quotes::history_start`]);
//! 2. drop `>` quotes; when the person answered inline, between quotes,
//!    keep what they answered: from the attribution to the last answer;
//! 3. cut the signature: a `-- ` delimiter, mobile footers ("Sent from my
//!    iPhone" in many languages), a trailing block that starts with the
//!    sender's name; unless the signature is all the message has.
//!
//! A mobile footer below the person's text ends what they wrote: whatever
//! follows it is the older messages their phone put below.
//!
//! Pure: no IO.

pub mod echo;
pub mod html;
mod quotes;
mod signature;

use super::parse::{ParsedAttachment, ParsedMail};
use crate::store::NewAttachment;
use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

pub use crate::domain::REPLY_ABOVE_MARKER;

/// Subject prefixes that mark a forward: Fwd, Fw (English and most), WG
/// (German), TR (French), RV (Spanish), Doorst (Dutch), VS (Nordic), Enc
/// (Portuguese), I and Inoltro (Italian), PD (Polish), Fs (Swedish, Danish).
static FORWARD_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(fwd?|wg|tr|rv|doorst|vs|enc|i|inoltro|pd|fs)\s*:").expect("valid forward regex")
});

/// Whether a message is a forward: its subject starts with a forward prefix.
pub fn is_forward(mail: &ParsedMail) -> bool {
    mail.subject.as_deref().is_some_and(|subject| FORWARD_SUBJECT.is_match(subject))
}

/// The text a message's reading starts from: the plain-text body, else its
/// HTML as text (with quote containers removed unless `keep_quotes`).
fn source_text(mail: &ParsedMail, keep_quotes: bool) -> Cow<'_, str> {
    match (&mail.text_body, &mail.html_body) {
        (Some(text), _) if !text.trim().is_empty() => Cow::Borrowed(text),
        (_, Some(html)) => Cow::Owned(html::to_text(html, !keep_quotes)),
        _ => Cow::Borrowed(&mail.readable_text),
    }
}

/// The new text of a reply. A forward keeps what it forwards (below the
/// note above it): it is the customer's evidence, not history.
pub fn reply_text(mail: &ParsedMail) -> String {
    let forward = is_forward(mail);
    let source = source_text(mail, forward);
    let text = normalized(&source);
    // Only the first lines are read (see MAX_READ_LINES); the rest follows as it is.
    let (head, rest) = split_at_line(&text, MAX_READ_LINES);
    let lines: Vec<&str> = head.lines().collect();
    let with_rest = |read: String| match rest.trim_end() {
        "" => read,
        rest => format!("{read}\n{rest}"),
    };
    let scan = quotes::scan(&lines);
    match forward_start(&lines, &scan, forward) {
        Some(start) => with_rest(with_forwarded(&lines, start, mail.from_name.as_deref())),
        // A forward without a banner or header block: what it quotes is
        // what it forwards, kept as it is.
        None if forward => with_rest(tidy(&lines)),
        // Read once: the lines and their scan are those `new_text` would make.
        None if rest.is_empty() => read_lines(&lines, scan, mail.from_name.as_deref()),
        None => new_text(&text, mail.from_name.as_deref()),
    }
}

/// `text` cut after its first `max` lines: those, and the rest (empty
/// when there are no more).
fn split_at_line(text: &str, max: usize) -> (&str, &str) {
    match text.match_indices('\n').nth(max.saturating_sub(1)) {
        Some((at, _)) if max > 0 => (&text[..at], &text[at + 1..]),
        _ => (text, ""),
    }
}

/// Line endings made `\n`, invisible characters (U+FEFF, U+200B)
/// removed; in one pass, and without a copy when there is nothing to change.
fn normalized(text: &str) -> Cow<'_, str> {
    const BOM: &[u8] = "\u{feff}".as_bytes();
    const ZWSP: &[u8] = "\u{200b}".as_bytes();
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // `text[copied..]` is not in `out` yet; `at` is always on a character boundary.
    let (mut copied, mut at) = (0, 0);
    while let Some(found) = memchr::memchr3(b'\r', BOM[0], ZWSP[0], &bytes[at..]) {
        let i = at + found;
        let (length, put) = match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => (2, "\n"),
            b'\r' => (1, "\n"),
            _ if bytes[i..].starts_with(BOM) || bytes[i..].starts_with(ZWSP) => (3, ""),
            _ => {
                // Another three-byte character with the same first byte: kept.
                at = i + 3;
                continue;
            }
        };
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..i]);
        out.push_str(put);
        (copied, at) = (i + length, i + length);
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

/// Where the forwarded part of a message starts: the first history marker
/// when the subject says it is a forward, or a forwarded-message banner that
/// is the first history marker in the text (below a separator rule, if any).
fn forward_start(lines: &[&str], scan: &quotes::Scan, forward_subject: bool) -> Option<usize> {
    let at = (scan.end < lines.len()).then_some(scan.end)?;
    let marker = lines[at..].iter().find(|l| !is_blank(l) && !quotes::is_rule(l)).copied().unwrap_or("");
    (forward_subject || quotes::is_forward_banner(marker)).then_some(at)
}

/// Whether a character shows nothing: the invisible formatting characters
/// a file name loses ([`is_invisible_format`]), and soft hyphens, the
/// combining grapheme joiner and the Mongolian vowel separator (tracking
/// glyphs are made of these).
pub(super) fn is_invisible(c: char) -> bool {
    is_invisible_format(c) || matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}')
}

/// Whether a line shows nothing: only spaces and invisible characters.
pub(super) fn is_blank(line: &str) -> bool {
    line.chars().all(|c| c.is_whitespace() || is_invisible(c))
}

/// The note above a forward, read like a reply, then the forwarded part as
/// it is (only its blank lines tidied).
fn with_forwarded(lines: &[&str], start: usize, sender_name: Option<&str>) -> String {
    let note = new_text(&lines[..start].join("\n"), sender_name);
    let forwarded = tidy(&lines[start..]);
    match note.is_empty() {
        true => forwarded,
        false => format!("{note}\n\n{forwarded}"),
    }
}

/// What extraction did to a message, for `explain` and the API's "show
/// quoted text": the text kept, the text removed, and each cut with why.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Extraction {
    /// The text posted (what [`reply_text`] returns).
    pub text: String,
    /// What was removed (history, quotes, signature), in order; empty when nothing.
    pub quoted: String,
    /// Each cut: what was removed and why.
    pub cuts: Vec<Cut>,
    /// Whether the message was read as a forward (its forwarded part kept).
    pub forward: bool,
    /// Whether the text came from the HTML body.
    pub from_html: bool,
}

impl Extraction {
    /// The account with our own notification's text removed from what is
    /// posted (see [`echo`]): `posted` is the text without it.
    pub fn with_notification_removed(mut self, posted: &str, removed: &super::NotificationRemoved) -> Self {
        self.text = posted.to_owned();
        let why = format!("removed {} lines matching notification {}", removed.lines, removed.outbox_id);
        self.cuts.push(Cut { what: "notification", why, text: removed.text.clone() });
        self.quoted = self.cuts.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join("\n\n");
        self
    }
}

/// One piece that extraction removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cut {
    /// `history`, `quote`, `signature`, `html_quote` or `notification`.
    pub what: &'static str,
    /// Why, in words.
    pub why: String,
    /// The text removed.
    pub text: String,
}

/// [`reply_text`] with an account of what it removed and why.
pub fn explain(mail: &ParsedMail) -> Extraction {
    let forward = is_forward(mail);
    let from_html = !matches!(&mail.text_body, Some(text) if !text.trim().is_empty()) && mail.html_body.is_some();
    let text = reply_text(mail);
    let mut cuts = Vec::new();
    if from_html && !forward {
        let all = html::to_text(mail.html_body.as_deref().unwrap_or(""), false);
        let kept = html::to_text(mail.html_body.as_deref().unwrap_or(""), true);
        let removed = removed_lines(&normalized(&all), &normalized(&kept));
        if !removed.is_empty() {
            let why = "quote containers of the HTML (Gmail, Apple Mail, Outlook, ...)".to_owned();
            cuts.push(Cut { what: "html_quote", why, text: removed });
        }
    }
    let source = source_text(mail, forward);
    let source = normalized(&source);
    let lines: Vec<&str> = source.lines().collect();
    let scan = quotes::scan(&lines);
    let forward_at = forward_start(&lines, &scan, forward);
    let history = signature::footer_cut(&lines, scan.end);
    let end = forward_at.unwrap_or(history);
    if forward_at.is_none() && history < lines.len() {
        let what = match history < scan.end {
            true => "a mobile footer (\"Sent from my ...\") and the older messages below it",
            false => quotes::describe_start(&lines, end),
        };
        let why = format!("quoted history starts at line {}: {what}", history + 1);
        cuts.push(Cut { what: "history", why, text: tidy(&lines[history..]) });
    }
    let Steps { above, written, signed } = Steps::of(&lines, end, &scan.drop, mail.from_name.as_deref());
    let dropped_quotes = removed_lines(&above.join("\n"), &written.join("\n"));
    if !dropped_quotes.is_empty() {
        let why = "lines quoted with \">\" and their attribution lines".to_owned();
        cuts.push(Cut { what: "quote", why, text: dropped_quotes });
    }
    if signed.len() < written.len() && !tidy(&signed).is_empty() {
        let removed = &written[signed.len()..];
        let tail = tidy(removed);
        if !tail.is_empty() {
            let why = if removed.iter().any(|l| l.trim_end() == "--") {
                "the \"-- \" signature delimiter and what follows it"
            } else if removed.iter().any(|l| signature::is_mobile_footer(l)) {
                "a mobile footer (\"Sent from my ...\")"
            } else {
                "a signature block under the sender's name (title, company, phone)"
            };
            cuts.push(Cut { what: "signature", why: why.to_owned(), text: tail });
        }
    }
    let quoted = cuts.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join("\n\n");
    Extraction { text, quoted, cuts, forward, from_html }
}

/// The lines of `all` that are not in `kept` (matched in order), tidied.
fn removed_lines(all: &str, kept: &str) -> String {
    let mut kept = kept.lines().map(str::trim_end).peekable();
    let mut removed = Vec::new();
    for line in all.lines() {
        if kept.peek().is_some_and(|k| *k == line.trim_end()) {
            kept.next();
        } else {
            removed.push(line);
        }
    }
    tidy(&removed)
}

/// Lines of a text that are read for quotes and signatures: what lies
/// beyond them is kept as it is, unless the history started before (a
/// text of millions of short lines would otherwise take memory many times
/// its size: every step keeps its own list of lines).
pub const MAX_READ_LINES: usize = 100_000;

/// The new text of a plain-text reply from a sender called `sender_name`.
pub fn new_text(text: &str, sender_name: Option<&str>) -> String {
    let text = normalized(text);
    let (head, rest) = split_at_line(&text, MAX_READ_LINES);
    if !rest.is_empty() {
        let read = new_text(head, sender_name);
        let lines: Vec<&str> = head.lines().collect();
        if quotes::scan(&lines).end < lines.len() {
            return read;
        }
        return format!("{read}\n{}", rest.trim_end());
    }
    let lines: Vec<&str> = text.lines().collect();
    let scan = quotes::scan(&lines);
    read_lines(&lines, scan, sender_name)
}

/// What [`new_text`] posts from a text's lines (normalized, at most
/// [`MAX_READ_LINES`]) and their scan for history.
fn read_lines(lines: &[&str], scan: quotes::Scan, sender_name: Option<&str>) -> String {
    let end = signature::footer_cut(lines, scan.end);
    let steps = Steps::of(lines, end, &scan.drop, sender_name);
    let result = tidy(&steps.signed);
    if result.is_empty() {
        // The signature (or what precedes the history) is all there is: keep it.
        let fallback = tidy(&steps.written);
        if !fallback.is_empty() {
            return fallback;
        }
    }
    result
}

/// What reading a plain-text reply does to its lines above the history,
/// step by step: what [`new_text`] posts and [`explain`] accounts for.
struct Steps<'a> {
    /// The lines above the history.
    above: Vec<&'a str>,
    /// Those without their quotes (an inline answer keeps its context line).
    written: Vec<&'a str>,
    /// Those without the signature.
    signed: Vec<&'a str>,
}

impl<'a> Steps<'a> {
    /// The steps for `lines` whose history starts at `end`, with the
    /// attribution lines `attributions` (of answered quotes), from a sender
    /// called `sender_name`.
    fn of(lines: &[&'a str], end: usize, attributions: &[usize], sender_name: Option<&str>) -> Self {
        let mut attribution = vec![false; end];
        for &i in attributions.iter().filter(|&&i| i < end) {
            attribution[i] = true;
        }
        let above: Vec<&str> = lines[..end].to_vec();
        // A signature below a quote is not an answer to it: quotes are judged
        // on the lines above the delimiter, and the signature goes after.
        let body_end = signature::delimiter(&above).unwrap_or(above.len());
        let mut written = without_quotes(&above[..body_end], &attribution[..body_end]);
        written.extend_from_slice(&above[body_end..]);
        let signed = signature::strip(&written, sender_name);
        Self { above, written, signed }
    }
}

/// Drops `>` quoted lines and the attribution lines (`attribution`) that
/// introduce them. When the person wrote between quotes (inline answers),
/// what they answered stays: from the attribution to the last answer, the
/// quotes as they are; nothing below the last answer. A line between two
/// quoted lines that is the rest of a long link wrapped by the mail client
/// (no spaces, right after a quoted line with a link) is part of the quote,
/// not an answer.
fn without_quotes<'a>(lines: &[&'a str], attribution: &[bool]) -> Vec<&'a str> {
    let starts_quoted = |l: &str| l.trim_start().starts_with('>');
    let quote: Vec<bool> = (0..lines.len())
        .map(|i| {
            let line = lines[i].trim();
            let wrapped_link = i > 0
                && !line.is_empty()
                && !line.contains(char::is_whitespace)
                && line.contains(['/', '=', '&', '?', '#', '%'])
                && starts_quoted(lines[i - 1])
                && lines[i - 1].split_whitespace().last().is_some_and(|word| word.contains("://"))
                && lines.get(i + 1).is_some_and(|next| starts_quoted(next));
            starts_quoted(line) || wrapped_link || attribution[i]
        })
        .collect();
    // Below a separator rule that no quote follows (a mailing list's
    // footer) nothing answers a quote.
    let footer_rule = (0..lines.len())
        .rev()
        .take_while(|&i| !quote[i])
        .filter(|&i| quotes::is_rule(lines[i]))
        .last()
        .unwrap_or(lines.len());
    let text: Vec<bool> = (0..lines.len()).map(|i| i < footer_rule && !is_blank(lines[i]) && !quote[i]).collect();
    // A quote block: quoted lines, with the blank lines between them. It is
    // answered when the next line that is neither blank nor quoted is text.
    let mut next_nonblank = vec![lines.len(); lines.len() + 1];
    for i in (0..lines.len()).rev() {
        next_nonblank[i] = if is_blank(lines[i]) { next_nonblank[i + 1] } else { i };
    }
    let ends_answered_block = |i: usize| quote[i] && next_nonblank[i + 1] < lines.len() && text[next_nonblank[i + 1]];
    // Interleaved: text above and below some quote, or several answered quote
    // blocks. A single quote followed by the answer (bottom posting) is not.
    let answered_blocks = (0..lines.len()).filter(|&i| ends_answered_block(i)).count();
    let first_text = text.iter().position(|t| *t);
    let first_quote = quote.iter().position(|q| *q);
    let last_text = text.iter().rposition(|t| *t);
    let text_above_a_quote = matches!((first_text, first_quote), (Some(t), Some(q)) if t < q);
    let interleaved = answered_blocks >= 2 || text_above_a_quote && answered_blocks >= 1;
    lines
        .iter()
        .enumerate()
        .filter(|&(i, _)| !quote[i] || interleaved && last_text.is_some_and(|last| i < last))
        .map(|(_, line)| *line)
        .collect()
}

/// Trims blank lines at both ends and trailing spaces, and folds runs of
/// blank lines into one.
fn tidy(lines: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for line in lines {
        let line = if is_blank(line) { "" } else { line.trim_end() };
        if line.is_empty() && out.last().is_none_or(|l: &&str| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// Largest attachment kept, in bytes.
pub const MAX_ATTACHMENT_SIZE: usize = 20 * 1024 * 1024;

/// Whether an image is a tracking pixel or a spacer: a GIF or PNG at most
/// two pixels wide or high. Other images, and images whose size cannot be
/// read, are kept.
fn is_pixel(content_type: &str, bytes: &[u8]) -> bool {
    let dimensions = match content_type {
        "image/gif" if bytes.len() >= 10 && bytes.starts_with(b"GIF8") => Some((
            u32::from(u16::from_le_bytes([bytes[6], bytes[7]])),
            u32::from(u16::from_le_bytes([bytes[8], bytes[9]])),
        )),
        "image/png" if bytes.len() >= 24 && bytes.starts_with(b"\x89PNG") => Some((
            u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]),
            u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
        )),
        _ => None,
    };
    dimensions.is_some_and(|(width, height)| width <= 2 || height <= 2)
}

/// Attachments worth storing, with sanitized names. Left out: empty and
/// oversized parts, tracking pixels and spacers not attached as a file, and
/// inline images shown only in a signature.
///
/// The kept attachments' bytes are moved out of `mail` (its copies are left
/// empty), not copied: a reply's attachment is in memory once.
pub fn take_attachments(mail: &mut ParsedMail) -> Vec<NewAttachment> {
    // Parsing the HTML again is only worth it when an image could be a signature logo.
    let has_cid_images =
        mail.attachments.iter().any(|a| a.content_id.is_some() && a.content_type.starts_with("image/"));
    let signature_cids = match (&mail.html_body, has_cid_images) {
        (Some(html), true) => html::signature_only_cids(html),
        _ => Default::default(),
    };
    let kept: Vec<usize> = mail
        .attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.content.is_empty() && a.content.len() <= MAX_ATTACHMENT_SIZE)
        .filter(|(_, a)| a.attached || !is_pixel(&a.content_type, &a.content))
        .filter(|(_, a)| {
            let cid = a.content_id.as_deref().map(|c| c.trim_matches(['<', '>']).to_ascii_lowercase());
            !cid.is_some_and(|c| signature_cids.contains(&c))
        })
        .map(|(i, _)| i)
        .collect();
    kept.into_iter()
        .map(|i| {
            let a = &mut mail.attachments[i];
            let content = std::mem::take(&mut a.content);
            NewAttachment {
                base64_body: a.base64_body,
                ..NewAttachment::new(sanitize_filename(a, i), a.content_type.clone(), content)
            }
        })
        .collect()
}

/// Attachments larger than [`MAX_ATTACHMENT_SIZE`], with their index among
/// the message's attachments.
pub fn oversized_attachments(mail: &ParsedMail) -> impl Iterator<Item = (usize, &ParsedAttachment)> {
    mail.attachments.iter().enumerate().filter(|(_, a)| a.content.len() > MAX_ATTACHMENT_SIZE)
}

/// A file name safe to show and to offer for download. Every letter of
/// every script is kept; removed are directories (everything up to the last
/// `/` or `\\`), control and invisible formatting characters (a right-to-left
/// override can disguise `exe.pdf` as `fdp.exe`), the characters Windows
/// forbids in a name (`" < > : | ? *`), leading dots and trailing dots and
/// spaces; at most 200 characters. Shell characters stay: a name is never
/// given to a shell, and downloads carry it encoded (RFC 6266).
pub fn sanitize_filename(attachment: &ParsedAttachment, index: usize) -> String {
    let raw = attachment.filename.as_deref().unwrap_or("");
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| {
            !c.is_control() && !is_invisible_format(*c) && !matches!(c, '"' | '<' | '>' | ':' | '|' | '?' | '*')
        })
        .take(200)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim_end_matches(['.', ' ']).trim().to_owned();
    if cleaned.is_empty() {
        format!("attachment-{}.{}", index + 1, extension(&attachment.content_type))
    } else {
        cleaned
    }
}

/// Unicode format characters that change how a name displays without
/// showing: bidirectional embeddings, overrides and isolates, zero-width
/// characters and the byte order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

/// The usual file name extension of a MIME type, for a part that has no
/// name (`bin` when the type says nothing more).
pub fn extension(content_type: &str) -> String {
    let known = match content_type {
        "application/octet-stream" => "bin",
        "message/rfc822" | "message/global" => "eml",
        "text/plain" => "txt",
        "text/html" => "html",
        "text/calendar" => "ics",
        "text/csv" => "csv",
        "text/rfc822-headers" | "message/rfc822-headers" => "txt",
        "message/delivery-status" | "message/global-delivery-status" => "txt",
        "application/pdf" => "pdf",
        "application/zip" | "application/x-zip-compressed" => "zip",
        "application/gzip" | "application/x-gzip" => "gz",
        "application/json" => "json",
        "application/xml" | "text/xml" => "xml",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/ms-tnef" | "application/vnd.ms-tnef" => "dat",
        "application/pgp-signature" => "asc",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "image/tiff" => "tif",
        "image/bmp" => "bmp",
        "audio/mpeg" => "mp3",
        "video/mp4" => "mp4",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    // Otherwise the subtype, when it is a plausible extension (`x-foo` -> `foo`).
    let subtype = content_type.split('/').nth(1).unwrap_or("").trim_start_matches("x-");
    match subtype.len() {
        1..=5 if subtype.chars().all(|c| c.is_ascii_alphanumeric()) => subtype.to_owned(),
        _ => "bin".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::new_text;

    /// What `normalized` does, written the plain way (three passes).
    fn normalized_slowly(text: &str) -> String {
        text.replace("\r\n", "\n").replace('\r', "\n").replace(['\u{feff}', '\u{200b}'], "")
    }

    #[test]
    fn normalizing_in_one_pass_gives_what_three_replacements_give() {
        for text in [
            "",
            "plain\nlines",
            "a\r\nb\rc\r\r\nd\r",
            "\u{feff}start\u{200b}mid\r\u{feff}\nend\u{200b}",
            "€ and ℃ and \u{200c} and \u{fefe} kept\r\n",
        ] {
            assert_eq!(super::normalized(text), normalized_slowly(text), "{text:?}");
        }
        assert!(matches!(super::normalized("nothing to change\n"), std::borrow::Cow::Borrowed(_)));
    }

    proptest::proptest! {
        #[test]
        fn normalizing_any_text_in_one_pass_gives_what_three_replacements_give(
            text in "(\r|\n|\u{feff}|\u{200b}|\u{200c}|\u{fffe}|€|a| ){0,40}"
        ) {
            proptest::prop_assert_eq!(super::normalized(&text), normalized_slowly(&text));
        }
    }

    #[test]
    fn unnamed_parts_get_the_usual_extension() {
        use super::extension;
        for (content_type, ext) in [
            ("application/octet-stream", "bin"),
            ("message/rfc822", "eml"),
            ("image/jpeg", "jpg"),
            ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
            ("application/x-tar", "tar"),
            ("application/vnd.something-very-long", "bin"),
        ] {
            assert_eq!(extension(content_type), ext, "{content_type}");
        }
    }

    #[test]
    fn file_names_keep_every_letter_and_lose_what_could_mislead() {
        use super::sanitize_filename;
        use crate::pipeline::parse::ParsedAttachment;
        let named = |name: &str| ParsedAttachment {
            filename: Some(name.to_owned()),
            content_type: "application/pdf".to_owned(),
            content: Vec::new(),
            inline: false,
            attached: true,
            content_id: None,
            base64_body: None,
        };
        for (given, kept) in [
            ("見積書.pdf", "見積書.pdf"),
            ("März-Rechnung.pdf", "März-Rechnung.pdf"),
            ("отчёт 2026.pdf", "отчёт 2026.pdf"),
            ("invoice (1) $x;.pdf", "invoice (1) $x;.pdf"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\me\\report.pdf", "report.pdf"),
            ("invoice\u{202E}fdp.exe", "invoicefdp.exe"),
            ("a<b>c:d|e?f*g\"h.txt", "abcdefgh.txt"),
            (".hidden", "hidden"),
            ("trailing. . ", "trailing"),
            ("line\r\nbreak.txt", "linebreak.txt"),
        ] {
            assert_eq!(sanitize_filename(&named(given), 0), kept, "{given:?}");
        }
        assert_eq!(sanitize_filename(&named("///"), 2), "attachment-3.pdf");
    }

    #[test]
    fn cuts_quoted_history() {
        let cases = [
            (
                "Works now, thanks!\n\nOn Mon, 2 Nov 2026 at 10:00, Support <support@x.com> wrote:\n> old\n",
                "Works now, thanks!",
            ),
            ("Yes.\n\nOn Mon, 2 Nov 2026 at 10:00, Anna Agent <\nsupport@x.com> wrote:\n> old\n", "Yes."),
            ("Top\n\n-----Original Message-----\nFrom: x\n", "Top"),
            ("Hi\n\nFrom: Support <s@x.com>\nSent: Monday\nTo: me\n", "Hi"),
            ("New text\n-- Reply above this line --\nold\n", "New text"),
        ];
        for (input, expected) in cases {
            assert_eq!(new_text(input, None), expected, "{input:?}");
        }
    }

    #[test]
    fn a_link_wrapped_inside_a_quote_stays_in_the_quote() {
        let text = "Thanks, that worked.\n\n> see https://example.com/a/very/long/path/that/the/client\n/wrapped/here.html\n> and more\n";
        assert_eq!(new_text(text, None), "Thanks, that worked.");
    }

    #[test]
    fn keeps_inline_answers_with_context() {
        let text = "> Which environment?\nLive.\n\n> Since when?\nSince Monday.\n\n> Thanks\n";
        assert_eq!(new_text(text, None), "> Which environment?\nLive.\n\n> Since when?\nSince Monday.");
    }

    #[test]
    fn cuts_signatures_and_footers() {
        assert_eq!(new_text("Thanks, Anna\n\nSent from my iPhone\n", None), "Thanks, Anna");
        assert_eq!(new_text("Thanks\n-- \nAnna Example\nACME Inc.\n", None), "Thanks");
        assert_eq!(
            new_text("Works now.\n\nThanks,\nAnna Example\nCTO | ACME Inc.\n+1 555 0100\n", Some("Anna Example")),
            "Works now.\n\nThanks,\nAnna Example"
        );
        assert_eq!(
            new_text("Works now.\n\nAnna Example\nACME Inc. | +1 555 0100\n", Some("Anna Example")),
            "Works now."
        );
        // A signature that is all the message has is kept.
        assert_eq!(new_text("-- \nAnna Example\nACME Inc.\n", None), "--\nAnna Example\nACME Inc.");
    }
}
