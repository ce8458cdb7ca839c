//! Step 6: the text the person newly wrote, and the attachments worth keeping.
//!
//! A first, line-based version: it cuts at our "reply above this line"
//! marker, at the common "On ... wrote:" / "-----Original Message-----" /
//! "From: ... Sent: ..." headers of quoted history, drops `>` quoted lines and
//! `-- ` signatures and mobile footers. Pure.

use super::parse::{ParsedAttachment, ParsedMail};
use crate::store::NewAttachment;
use regex::Regex;
use std::sync::LazyLock;

/// The line above which customers are asked to write.
pub const REPLY_ABOVE_MARKER: &str = "-- Reply above this line --";

/// Lines that start quoted history: everything from here on is dropped.
static QUOTE_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\s*(",
        r"on\s.{1,200}\swrote:\s*$",            // English
        r"|am\s.{1,200}\sschrieb.{0,100}:\s*$", // German
        r"|le\s.{1,200}\sa\sécrit\s*:\s*$",     // French
        r"|el\s.{1,200}\sescribió\s*:\s*$",     // Spanish
        r"|em\s.{1,200}\sescreveu\s*:\s*$",     // Portuguese
        r"|il\s.{1,200}\sha\sscritto\s*:\s*$",  // Italian
        r"|op\s.{1,200}\sschreef.{0,100}:\s*$", // Dutch
        r"|-{2,}\s*original message\s*-{2,}",
        r"|-{2,}\s*forwarded message\s*-{2,}",
        r"|_{10,}\s*$", // Outlook's rule above From:/Sent:
        r")"
    ))
    .expect("valid quote header regex")
});

/// "On Mon, 1 Jan 2026 at 10:00, Anna Agent <" wrapped before "...> wrote:".
static WRAPPED_ON: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*on\s.{1,200}$").expect("valid regex"));
static WRAPPED_WROTE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^.{0,200}wrote:\s*$").expect("valid regex"));
/// Outlook's header block: a From: line with Sent:/Date: right after.
static OUTLOOK_FROM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?(from|von|de|da|van|från|od|от)\s*:\*?\s").expect("valid regex")
});
static OUTLOOK_SENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?(sent|date|gesendet|datum|envoyé|enviado|inviato|verzonden|skickat|wysłano|отправлено)\s*:").expect("valid regex")
});
static MOBILE_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(sent from my |get outlook for |sent from outlook|sent from mail for windows|von meinem .* gesendet|envoyé de mon |enviado desde mi |enviado do meu |inviato da )").expect("valid regex")
});

/// The new text of a reply: quotes, quoted history, signatures and mobile
/// footers removed, trailing blank lines trimmed.
pub fn reply_text(mail: &ParsedMail) -> String {
    let text = mail.readable_text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.lines().collect();
    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let lower = line.to_lowercase();
        if lower.contains("reply above this line") || QUOTE_HEADER.is_match(line) {
            break;
        }
        if WRAPPED_ON.is_match(line)
            && lines
                .get(i + 1)
                .is_some_and(|next| WRAPPED_WROTE.is_match(next))
        {
            break;
        }
        if OUTLOOK_FROM.is_match(line)
            && lines[i + 1..]
                .iter()
                .take(3)
                .any(|next| OUTLOOK_SENT.is_match(next))
        {
            break;
        }
        if line == "-- " || line == "--" {
            break;
        }
        if line.trim_start().starts_with('>') {
            i += 1;
            continue;
        }
        kept.push(line);
        i += 1;
    }
    while kept
        .last()
        .is_some_and(|l| l.trim().is_empty() || MOBILE_FOOTER.is_match(l))
    {
        kept.pop();
    }
    let start = kept
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(kept.len());
    kept[start..]
        .iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Largest attachment kept, in bytes.
pub const MAX_ATTACHMENT_SIZE: usize = 20 * 1024 * 1024;

/// Attachments worth storing, with sanitized names: tiny inline images
/// (tracking pixels, signature logos) and oversized parts are left out.
pub fn attachments(mail: &ParsedMail) -> Vec<NewAttachment> {
    mail.attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            !(a.inline && a.content_type.starts_with("image/") && a.content.len() < 2048)
        })
        .filter(|(_, a)| !a.content.is_empty() && a.content.len() <= MAX_ATTACHMENT_SIZE)
        .map(|(i, a)| NewAttachment {
            filename: sanitize_filename(a, i),
            content_type: a.content_type.clone(),
            content: a.content.clone(),
        })
        .collect()
}

/// A file name safe to show and to offer for download: no directories, no
/// control characters, no leading dots, at most 200 characters.
fn sanitize_filename(attachment: &ParsedAttachment, index: usize) -> String {
    let raw = attachment.filename.as_deref().unwrap_or("");
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | ':' | '|' | '?' | '*'))
        .take(200)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        let ext = attachment.content_type.split('/').nth(1).unwrap_or("bin");
        format!("attachment-{}.{ext}", index + 1)
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::reply_text;
    use crate::pipeline::parse::parse;

    fn text(body: &str) -> String {
        let raw = format!("From: a@example.com\r\nSubject: Re: x\r\n\r\n{body}");
        reply_text(&parse(raw.as_bytes()).unwrap())
    }

    #[test]
    fn cuts_quoted_history() {
        assert_eq!(
            text(
                "Works now, thanks!\r\n\r\nOn Mon, 2 Nov 2026 at 10:00, Support <support@x.com> wrote:\r\n> old\r\n"
            ),
            "Works now, thanks!"
        );
        assert_eq!(
            text(
                "Yes.\r\n\r\nOn Mon, 2 Nov 2026 at 10:00, Anna Agent <\r\nsupport@x.com> wrote:\r\n> old\r\n"
            ),
            "Yes."
        );
        assert_eq!(
            text("Top\r\n\r\n-----Original Message-----\r\nFrom: x\r\n"),
            "Top"
        );
        assert_eq!(
            text("Hi\r\n\r\nFrom: Support <s@x.com>\r\nSent: Monday\r\nTo: me\r\n"),
            "Hi"
        );
        assert_eq!(
            text("New text\r\n-- Reply above this line --\r\nold\r\n"),
            "New text"
        );
    }

    #[test]
    fn cuts_signatures_and_footers() {
        assert_eq!(
            text("Thanks, Anna\r\n\r\nSent from my iPhone\r\n"),
            "Thanks, Anna"
        );
        assert_eq!(
            text("Thanks\r\n-- \r\nAnna Example\r\nACME Inc.\r\n"),
            "Thanks"
        );
    }
}
