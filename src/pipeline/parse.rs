//! Step 1: raw bytes to an owned [`ParsedMail`] (mail-parser does the MIME work).
//!
//! mail-parser's types stay inside this module; the rest of the pipeline
//! works on plain owned values. Parsing is lenient: broken MIME or charsets
//! degrade into whatever text can be recovered, never into a failure. The one
//! failure is input with no header at all.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

/// The parts of a message the pipeline looks at.
#[derive(Debug, Clone, Default)]
pub struct ParsedMail {
    /// From: address, lower case.
    pub from: Option<String>,
    /// From: display name.
    pub from_name: Option<String>,
    /// Why the message has no single author, when it has not: RFC 5322
    /// §3.6 allows one `From:` field holding one mailbox, and only such a
    /// message can be authorized as written by someone (see [`author`]).
    pub ambiguous_author: Option<String>,
    /// To: and Cc: addresses.
    pub to: Vec<String>,
    /// To: and Cc: mailboxes: (address, display name or "").
    pub copied: Vec<(String, String)>,
    /// Subject, decoded.
    pub subject: Option<String>,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// In-Reply-To Message-IDs, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// References Message-IDs, without angle brackets, oldest first.
    pub references: Vec<String>,
    /// Top-level header fields as (lower-case name, raw value).
    pub headers: Vec<(String, String)>,
    /// `type/subtype` of the top-level part, lower case.
    pub content_type: String,
    /// The `report-type` parameter of a `multipart/report`.
    pub report_type: Option<String>,
    /// The first text/plain body, decoded to UTF-8.
    pub text_body: Option<String>,
    /// The first text/html body, decoded to UTF-8.
    pub html_body: Option<String>,
    /// Text for reading: the text body, else the HTML converted to text.
    pub readable_text: String,
    /// Attachments and inline parts that are not the body.
    pub attachments: Vec<ParsedAttachment>,
    /// The text of a `message/delivery-status` part (bounces).
    pub delivery_status: Option<String>,
    /// Message-IDs of messages returned inside this one (a bounce's
    /// `message/rfc822` or `text/rfc822-headers` part).
    pub returned_message_ids: Vec<String>,
    /// How many MIME parts the message has.
    pub part_count: usize,
    /// How deeply its multiparts nest.
    pub depth: usize,
    /// Bytes of the top-level header section.
    pub header_bytes: usize,
}

/// One attachment, decoded.
#[derive(Debug, Clone)]
pub struct ParsedAttachment {
    /// File name as given by the sender (not yet sanitized).
    pub filename: Option<String>,
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// Decoded bytes.
    pub content: Vec<u8>,
    /// Marked `Content-Disposition: inline`.
    pub inline: bool,
    /// Marked `Content-Disposition: attachment`: a file the sender attached.
    pub attached: bool,
    /// `Content-ID`, without angle brackets, for `cid:` references.
    pub content_id: Option<String>,
    /// Where its base64-encoded body lies in the raw message (start, end),
    /// when it is a base64 part of the message itself (not of a message
    /// inside it).
    pub base64_body: Option<(usize, usize)>,
}

impl ParsedMail {
    /// The raw value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses `raw`; `None` when the input has no message header at all, or
/// when mail-parser cannot read it. mail-parser 0.11 can panic on some
/// malformed MIME structures (found by `tests/it/fuzz.rs`; the case is kept
/// in `tests/proptest-regressions/`): a message from the network must never
/// take its session down, so such a message is treated as unreadable.
pub fn parse(raw: &[u8]) -> Option<ParsedMail> {
    // mail-parser builds a message inside a message inside a message as
    // nested values and drops them recursively: thousands of them take the
    // thread's stack, which no catch survives. A message naming more
    // containers than any real one is only counted, not parsed.
    let containers = container_types(raw);
    if containers > MAX_CONTAINER_TYPES {
        tracing::warn!(bytes = raw.len(), containers, "a message with too many multiparts or messages inside");
        return Some(ParsedMail { part_count: containers, depth: containers, ..ParsedMail::default() });
    }
    match std::panic::catch_unwind(|| read_repaired(raw)) {
        Ok(parsed) => parsed,
        Err(_) => {
            tracing::warn!(bytes = raw.len(), "mail-parser gave up on a malformed message");
            None
        }
    }
}

/// More `multipart/` and `message/` types than this in one message and it
/// is not parsed (the complexity limits refuse it; they allow 500 parts).
const MAX_CONTAINER_TYPES: usize = 2_000;

/// Lines starting with `--` (an upper bound on MIME parts) beyond which a
/// message is not parsed: mail-parser keeps some 800 bytes for every part.
const MAX_DELIMITER_LINES: usize = 20_000;

/// How many times `raw` names a `multipart/...` or `message/...` type, in
/// any letter case (an upper bound on its containers), or, when that is
/// more, how many of its lines start with `--` over [`MAX_DELIMITER_LINES`]
/// (an upper bound on its parts); counted in one pass.
fn container_types(raw: &[u8]) -> usize {
    let ends_with =
        |end: usize, word: &[u8]| end >= word.len() && raw[end - word.len()..end].eq_ignore_ascii_case(word);
    let (mut types, mut delimiters) = (0, 0);
    for i in memchr::memchr2_iter(b'/', b'\n', raw) {
        match raw[i] {
            b'/' if ends_with(i, b"multipart") || ends_with(i, b"message") => types += 1,
            b'\n' if raw.get(i + 1..i + 3) == Some(b"--") => delimiters += 1,
            _ => {}
        }
    }
    match delimiters > MAX_DELIMITER_LINES {
        true => types.max(delimiters),
        false => types,
    }
}

/// The text of a part that says it is in another charset (or says none)
/// but whose bytes, once the transfer encoding is undone, are valid UTF-8
/// with non-ASCII characters, as UTF-8: the label is wrong (a Big5 or
/// Latin-1 label on UTF-8 bytes is a common client bug), and decoding by it
/// would garble every character. `None` when the label is right or the
/// bytes are not UTF-8.
fn utf8_despite_label(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Option<String> {
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    let charset = part.content_type().and_then(|ct| ct.attribute("charset")).unwrap_or("").to_ascii_lowercase();
    if matches!(charset.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
        return None;
    }
    let body = raw.get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)?;
    let bytes = match part.encoding {
        mail_parser::Encoding::None => std::borrow::Cow::Borrowed(body),
        mail_parser::Encoding::Base64 => std::borrow::Cow::Owned(base64_decode(body)?),
        mail_parser::Encoding::QuotedPrintable => std::borrow::Cow::Owned(quoted_printable_decode(body)?),
    };
    let text = std::str::from_utf8(&bytes).ok()?;
    (!text.is_ascii()).then(|| text.to_owned())
}

/// [`read`], after the repairs other readers make without a word: lines
/// that are blank or hold only spaces before the header fields are
/// skipped, and a message whose lines end in a bare CR (old Mac clients,
/// some web forms; more bare CRs than line feeds in its first 4 KB, as a relay's CRLF
/// `Received:` field or the CRLF before SMTP's final dot leave a few) is
/// read with CRLF line ends.
fn read_repaired(raw: &[u8]) -> Option<ParsedMail> {
    let skip = leading_blank_lines(raw);
    let rest = &raw[skip..];
    // Judged on the first 4 KB (the header section at least): a bare-CR
    // message has them everywhere, and a large message is not read twice.
    let head = &rest[..rest.len().min(4096)];
    let lf = memchr::memchr_iter(b'\n', head).count();
    let bare_cr = memchr::memchr_iter(b'\r', head).filter(|&i| rest.get(i + 1) != Some(&b'\n')).count();
    if bare_cr > lf {
        let mut lines = Vec::with_capacity(rest.len() + rest.len() / 32);
        for (i, &byte) in rest.iter().enumerate() {
            lines.push(byte);
            if byte == b'\r' && rest.get(i + 1) != Some(&b'\n') {
                lines.push(b'\n');
            }
        }
        // Offsets into the copy are not offsets into the message as it arrived.
        let mut parsed = read(&lines)?;
        parsed.attachments.iter_mut().for_each(|a| a.base64_body = None);
        return Some(parsed);
    }
    let mut parsed = read(rest)?;
    parsed.header_bytes += skip;
    for attachment in &mut parsed.attachments {
        attachment.base64_body = attachment.base64_body.map(|(start, end)| (start + skip, end + skip));
    }
    Some(parsed)
}

/// How many bytes of blank lines (or lines of only spaces and tabs) come
/// before the first header field.
fn leading_blank_lines(raw: &[u8]) -> usize {
    let mut skip = 0;
    while let Some(end) = raw[skip..].iter().position(|&b| b == b'\n').map(|at| skip + at + 1) {
        match raw[skip..end].iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
            true => skip = end,
            false => break,
        }
    }
    skip
}

/// [`parse`] without the guard and the repairs.
fn read(raw: &[u8]) -> Option<ParsedMail> {
    let message = MessageParser::default().parse(raw)?;
    if message.headers().is_empty() {
        return None;
    }
    let (from, from_name) = match message.from().and_then(Address::first) {
        Some(addr) => (addr.address().map(str::to_lowercase), addr.name().map(str::to_owned)),
        None => (None, None),
    };
    let parser_from_fields = message.headers().iter().filter(|h| h.name == mail_parser::HeaderName::From).count();
    let ambiguous_author = author_problem(raw, parser_from_fields, message.from());
    let mut copied = Vec::new();
    for list in [message.to(), message.cc()].into_iter().flatten() {
        copied.extend(list.iter().filter_map(|a| {
            let address = a.address()?.to_lowercase();
            Some((address, a.name().unwrap_or("").trim().to_owned()))
        }));
    }
    let to = copied.iter().map(|(address, _)| address.clone()).collect();
    let (content_type, report_type) = match message.root_part().content_type() {
        Some(ct) => (
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase(),
            ct.attribute("report-type").map(str::to_ascii_lowercase),
        ),
        None => ("text/plain".to_owned(), None),
    };
    let text_part = message.text_bodies().next().filter(|p| !p.is_text_html());
    let text_body = text_part.and_then(|p| utf8_despite_label(raw, p).or_else(|| p.text_contents().map(str::to_owned)));
    let html_part = message.html_bodies().next().filter(|p| p.is_text_html());
    let html_body = html_part.and_then(|p| utf8_despite_label(raw, p).or_else(|| p.text_contents().map(str::to_owned)));
    let readable_text = match &text_body {
        Some(text) => text.clone(),
        None => message.body_text(0).map(std::borrow::Cow::into_owned).unwrap_or_default(),
    };
    let mut attachments: Vec<ParsedAttachment> = message
        .attachments()
        .map(|part| ParsedAttachment {
            // A name (read again from the raw header when it was 8-bit
            // text in no declared charset), or else the last path segment
            // of Content-Location.
            filename: part
                .attachment_name()
                .map(|name| match name.contains('\u{FFFD}') {
                    true => eight_bit_name(raw, part).unwrap_or_else(|| name.to_owned()),
                    false => name.to_owned(),
                })
                .or_else(|| {
                    let location = part.content_location()?;
                    let last = location.trim().trim_end_matches('/').rsplit('/').next()?;
                    (!last.is_empty()).then(|| last.to_owned())
                }),
            content_type: part
                .content_type()
                .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream")).to_ascii_lowercase())
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            content: part.contents().to_vec(),
            inline: part.content_disposition().is_some_and(|cd| cd.ctype().eq_ignore_ascii_case("inline")),
            attached: part.content_disposition().is_some_and(|cd| cd.ctype().eq_ignore_ascii_case("attachment")),
            content_id: part.content_id().map(|id| id.trim_matches(['<', '>']).to_owned()),
            base64_body: (part.encoding == mail_parser::Encoding::Base64)
                .then(|| (part.raw_body_offset() as usize, part.raw_end_offset() as usize)),
        })
        .collect();
    unwrap_tnef(&mut attachments);
    let mut delivery_status = None;
    let mut returned_message_ids = Vec::new();
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase();
        match (kind.as_str(), &part.body) {
            (_, PartType::Message(returned)) => {
                returned_message_ids.extend(returned.message_id().map(str::to_owned));
            }
            // A disposition notification carries the same fields (Final-Recipient).
            ("message/delivery-status" | "message/global-delivery-status" | "message/disposition-notification", _) => {
                delivery_status.get_or_insert_with(|| String::from_utf8_lossy(part.contents()).into_owned());
            }
            ("text/rfc822-headers" | "message/rfc822-headers", _) => {
                let headers = MessageParser::default().parse_headers(part.contents());
                returned_message_ids.extend(headers.as_ref().and_then(|h| h.message_id()).map(str::to_owned));
            }
            _ => {}
        }
    }
    Some(ParsedMail {
        from,
        from_name,
        ambiguous_author,
        to,
        copied,
        subject: message.subject().map(str::to_owned),
        message_id: message.message_id().map(str::to_owned),
        in_reply_to: message_ids(message.in_reply_to()),
        references: message_ids(message.references()),
        headers: message.headers_raw().map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned())).collect(),
        content_type,
        report_type,
        text_body,
        html_body,
        readable_text,
        attachments,
        delivery_status,
        returned_message_ids,
        part_count: message.parts.len(),
        header_bytes: message.root_part().raw_body_offset() as usize,
        depth: depth(&message),
    })
}

/// Why `raw` has no single author, or `None` when it has one: exactly one
/// `From:` field, as every reader sees it, holding exactly one mailbox with
/// a plain `local@domain` address.
///
/// The fields are counted twice: as mail-parser reads them
/// (`parser_from_fields`), and by [`from_fields`], which reads a field name
/// the loosest way any reader does (mail-auth, which judges DMARC, ignores
/// spaces inside it), so that no spelling is a `From:` to one reader and
/// something else to another.
fn author_problem(raw: &[u8], parser_from_fields: usize, value: Option<&Address<'_>>) -> Option<String> {
    let fields = from_fields(raw).max(parser_from_fields);
    if fields != 1 {
        return Some(match fields {
            0 => "it has no From: field".to_owned(),
            n => format!("it has {n} From: fields"),
        });
    }
    let mailbox = match value {
        None => return Some("its From: field holds no address".to_owned()),
        Some(Address::Group(_)) => return Some("its From: field is a group".to_owned()),
        Some(Address::List(list)) if list.len() != 1 => {
            return Some(format!("its From: field lists {} mailboxes", list.len()));
        }
        Some(Address::List(list)) => &list[0],
    };
    let address = mailbox.address().unwrap_or("");
    let plain = address.matches('@').count() == 1 && crate::domain::EmailAddress::parse(address).is_some();
    (!plain)
        .then(|| format!("its From: address {:?} is not a plain address", address.chars().take(80).collect::<String>()))
}

/// How many header fields of the top-level header section are named
/// `From` once spaces and tabs inside the name are ignored and letter case
/// is folded. Reads the section line by line, the way mail-auth does: a
/// field runs until a line break not followed by a space or tab; the
/// section ends at the first empty line. Linear in the section's size.
pub fn from_fields(raw: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = raw;
    loop {
        // One field: up to a line feed not followed by a space or tab.
        let mut end = 0;
        let field_end = loop {
            match rest[end..].iter().position(|&b| b == b'\n') {
                Some(at) => {
                    let lf = end + at;
                    if matches!(rest.get(lf + 1), Some(b' ' | b'\t')) {
                        end = lf + 1;
                        continue;
                    }
                    break lf + 1;
                }
                None => break rest.len(),
            }
        };
        let field = &rest[..field_end];
        if field.is_empty() || field == b"\n" || field == b"\r\n" {
            return count;
        }
        let name = match field.iter().position(|&b| b == b':') {
            Some(colon) => &field[..colon],
            None => field,
        };
        let mut letters = name.iter().filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        let is_from = letters.by_ref().take(4).map(u8::to_ascii_lowercase).eq(b"from".iter().copied())
            && letters.next().is_none();
        count += usize::from(is_from);
        rest = &rest[field_end..];
    }
}

/// A `filename=` or `name=` parameter written as raw 8-bit text (no
/// RFC 2231 or RFC 2047 encoding, which mail-parser reads itself), from the
/// part's raw header: UTF-8 when it is, else Windows-1252, the usual
/// charset of the clients that do this.
fn eight_bit_name(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Option<String> {
    let header = raw.get(part.raw_header_offset() as usize..part.raw_body_offset() as usize)?;
    let lower = header.to_ascii_lowercase();
    let start = ["filename=", "name="]
        .iter()
        .find_map(|key| lower.windows(key.len()).position(|w| w == key.as_bytes()).map(|at| at + key.len()))?;
    let rest = &header[start..];
    let value = match rest.first() {
        Some(b'"') => rest[1..].split(|b| *b == b'"').next()?,
        _ => rest.split(|b| matches!(b, b';' | b'\r' | b'\n')).next()?,
    };
    let text = match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(value).0.into_owned(),
    };
    let text = text.trim();
    (!text.is_empty() && !text.contains('\u{FFFD}')).then(|| text.to_owned())
}

/// Replaces each Outlook `winmail.dat` (TNEF) whose files can be read by
/// those files; one that cannot be read stays as it is.
fn unwrap_tnef(attachments: &mut Vec<ParsedAttachment>) {
    let is_container = |a: &ParsedAttachment| {
        (matches!(a.content_type.as_str(), "application/ms-tnef" | "application/vnd.ms-tnef")
            || a.filename.as_deref().is_some_and(|n| n.eq_ignore_ascii_case("winmail.dat")))
            && super::tnef::is_tnef(&a.content)
    };
    if !attachments.iter().any(is_container) {
        return;
    }
    let mut unwrapped = Vec::with_capacity(attachments.len());
    for attachment in attachments.drain(..) {
        match is_container(&attachment).then(|| super::tnef::files(&attachment.content)).flatten() {
            Some(files) => unwrapped.extend(files.into_iter().map(|file| {
                ParsedAttachment {
                    content_type: file
                        .content_type
                        .filter(|t| t.contains('/'))
                        .unwrap_or_else(|| content_type_of_name(file.name.as_deref().unwrap_or("")).to_owned()),
                    filename: file.name,
                    inline: file.content_id.is_some(),
                    attached: file.content_id.is_none(),
                    content_id: file.content_id,
                    content: file.data,
                    base64_body: None,
                }
            })),
            None => unwrapped.push(attachment),
        }
    }
    *attachments = unwrapped;
}

/// The MIME type a file name's extension usually means
/// (`application/octet-stream` when it says nothing known).
fn content_type_of_name(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "txt" | "log" => "text/plain",
        "htm" | "html" => "text/html",
        "csv" => "text/csv",
        "ics" => "text/calendar",
        "eml" => "message/rfc822",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

fn message_ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(ids) => ids.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The nesting depth of multiparts (bounded by the part count), walked
/// with a stack of our own: a message of thousands of nested multiparts
/// must not take the thread's stack.
fn depth(message: &mail_parser::Message<'_>) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(0u32, 0usize)];
    let mut visited = 0;
    while let Some((id, level)) = pending.pop() {
        visited += 1;
        if visited > message.parts.len() {
            break;
        }
        match message.parts.get(id as usize).and_then(|p| p.sub_parts()) {
            Some(children) => {
                deepest = deepest.max(level + 1);
                pending.extend(children.iter().map(|c| (*c, level + 1)));
            }
            None => deepest = deepest.max(level),
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_message_of_thousands_of_nested_messages_is_counted_not_parsed() {
        let mut raw = String::from("From: a@example.com\r\nSubject: x\r\n");
        for _ in 0..30_000 {
            raw.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        raw.push_str("\r\nbody\r\n");
        let mail = parse(raw.as_bytes()).expect("counted");
        assert!(mail.part_count > 2_000 && mail.from.is_none());
        let mut nested = String::from("From: a@example.com\r\n");
        for i in 0..30_000 {
            nested.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"));
        }
        assert!(parse(nested.as_bytes()).expect("counted").depth > 2_000);
    }

    #[test]
    fn utf8_bytes_under_a_wrong_label_are_read_as_utf8() {
        let text = "Caf\u{e9} \u{fc}ber \u{65e5}\u{672c}";
        for header in ["Content-Type: text/plain; charset=big5\r\n", "Content-Type: text/plain\r\n", ""] {
            let raw = format!(
                "From: a@example.com\r\nSubject: x\r\n{header}Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
            );
            let mail = parse(raw.as_bytes()).unwrap();
            assert_eq!(mail.text_body.as_deref().map(str::trim), Some(text), "{header:?}");
        }
        // Encoded the same way, base64 or quoted-printable.
        for (encoding, body) in [
            ("base64", data_encoding::BASE64.encode(text.as_bytes())),
            (
                "quoted-printable",
                text.bytes()
                    .map(|b| if b.is_ascii() { char::from(b).to_string() } else { format!("={b:02X}") })
                    .collect(),
            ),
        ] {
            let raw = format!(
                "From: a@example.com\r\nContent-Type: text/plain; charset=big5\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n"
            );
            let mail = parse(raw.as_bytes()).unwrap();
            assert_eq!(mail.text_body.as_deref().map(str::trim), Some(text), "{encoding}");
        }
        // A file name in raw 8-bit Latin-1 is read as such.
        let mut raw =
            b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n\
            Content-Disposition: attachment; filename=\"Fr"
                .to_vec();
        raw.extend_from_slice(b"\xf6sche.txt\"\r\n\r\nxx\r\n--b--\r\n");
        assert_eq!(parse(&raw).unwrap().attachments[0].filename.as_deref(), Some("Fr\u{f6}sche.txt"));
        // Latin-1 bytes under a Latin-1 label stay Latin-1.
        let mut raw = b"From: a@example.com\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nCaf".to_vec();
        raw.extend_from_slice(b"\xe9\r\n");
        assert_eq!(parse(&raw).unwrap().text_body.as_deref().map(str::trim), Some("Caf\u{e9}"));
    }
}

/// What one `Received:` field says of the client its server took the
/// message from (mail-parser reads Postfix's, Exim's and Sendmail's forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedHop {
    /// The client's address, from the brackets (`[192.0.2.1]`, `[IPv6:…]`).
    pub ip: Option<std::net::IpAddr>,
    /// The name the client gave in HELO or EHLO (Exim's `helo=`, or the
    /// name after `from`).
    pub helo: Option<String>,
}

/// Reads the value of one `Received:` field; `None` when it names no client.
pub fn received_hop(value: &str) -> Option<ReceivedHop> {
    // Bounded: a field is read only as far as its first 4 KiB.
    let value = value.get(..value.len().min(4096)).unwrap_or(value);
    let field = format!("Received: {}\r\n\r\n", value.replace(['\r', '\n'], " "));
    let read = std::panic::catch_unwind(|| {
        let parsed = MessageParser::default().parse_headers(field.as_bytes())?;
        let received = parsed.received()?;
        let name = |host: &mail_parser::Host<'_>| match host {
            mail_parser::Host::Name(name) => Some(name.to_string()),
            mail_parser::Host::IpAddr(ip) => Some(format!("[{ip}]")),
        };
        let ip = received.from_ip.or(match &received.from {
            Some(mail_parser::Host::IpAddr(ip)) => Some(*ip),
            _ => None,
        });
        let helo = received.helo.as_ref().and_then(name).or_else(|| received.from.as_ref().and_then(name));
        Some(ReceivedHop { ip, helo })
    });
    read.ok().flatten().filter(|hop| hop.ip.is_some())
}
