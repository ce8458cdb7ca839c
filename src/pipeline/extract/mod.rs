//! Step 6: the text the person newly wrote, and the attachments worth keeping.
//!
//! What counts as the reply text: what the person newly wrote, including a
//! short sign-off ("Thanks, Anna"); without the quoted history, without a
//! `-- ` signature block, and without mobile footers. HTML-only mail is
//! turned into text first, with quotes removed by structure ([`html`]).
//! Then, on lines:
//!
//! 1. cut at the start of quoted history ([`quotes::history_start`]);
//! 2. drop `>` quotes; when the person answered inline, between quotes,
//!    keep the answers with the quoted line each one answers;
//! 3. cut the signature: a `-- ` delimiter, mobile footers ("Sent from my
//!    iPhone" in many languages), a trailing block that starts with the
//!    sender's name; unless the signature is all the message has.
//!
//! Pure: no IO.

pub mod html;
mod quotes;
mod signature;

use super::parse::{ParsedAttachment, ParsedMail};
use crate::store::NewAttachment;

/// The line above which customers are asked to write.
pub const REPLY_ABOVE_MARKER: &str = "-- Reply above this line --";

/// The new text of a reply.
pub fn reply_text(mail: &ParsedMail) -> String {
    let text = match (&mail.text_body, &mail.html_body) {
        (Some(text), _) if !text.trim().is_empty() => text.clone(),
        (_, Some(html)) => html::to_text(html, true),
        _ => mail.readable_text.clone(),
    };
    new_text(&text, mail.from_name.as_deref())
}

/// The new text of a plain-text reply from a sender called `sender_name`.
pub fn new_text(text: &str, sender_name: Option<&str>) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n").replace(['\u{feff}', '\u{200b}'], "");
    let lines: Vec<&str> = text.lines().collect();
    let scan = quotes::scan(&lines);
    let lines: Vec<&str> =
        lines[..scan.end].iter().enumerate().filter(|(i, _)| !scan.drop.contains(i)).map(|(_, l)| *l).collect();
    let written = without_quotes(&lines);
    let trimmed = signature::strip(&written, sender_name);
    let result = tidy(&trimmed);
    if result.is_empty() {
        // The signature (or what precedes the history) is all there is: keep it.
        let fallback = tidy(&written);
        if !fallback.is_empty() {
            return fallback;
        }
    }
    result
}

/// Drops `>` quoted lines. When the person wrote between quotes (inline
/// answers), each answer keeps the last quoted line before it, for context.
fn without_quotes<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let is_quote = |l: &str| l.trim_start().starts_with('>');
    let is_text = |l: &str| !l.trim().is_empty() && !is_quote(l);
    // Interleaved: text above and below some quote, or several answered quote
    // blocks. A single quote followed by the answer (bottom posting) is not.
    let answered_blocks = (0..lines.len())
        .filter(|&i| is_quote(lines[i]) && lines.get(i + 1).is_none_or(|n| !is_quote(n)))
        .filter(|&i| lines[i + 1..].iter().take_while(|l| !is_quote(l)).any(|l| is_text(l)))
        .count();
    let first_text = lines.iter().position(|l| is_text(l));
    let first_quote = lines.iter().position(|l| is_quote(l));
    let text_above_a_quote = matches!((first_text, first_quote), (Some(t), Some(q)) if t < q);
    let interleaved = answered_blocks >= 2 || text_above_a_quote && answered_blocks >= 1;
    let mut kept = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if !is_quote(line) {
            kept.push(*line);
            continue;
        }
        // Keep a quoted line only when it is the last of its block and an answer follows.
        let last_of_block = lines.get(i + 1).is_none_or(|next| !is_quote(next));
        let answered = lines[i + 1..].iter().take_while(|l| !is_quote(l)).any(|l| is_text(l));
        let has_words = line.trim_start().trim_start_matches('>').trim().chars().any(char::is_alphanumeric);
        if interleaved && last_of_block && answered && has_words {
            kept.push(*line);
        }
    }
    kept
}

/// Trims blank lines at both ends and trailing spaces, and folds runs of
/// blank lines into one.
fn tidy(lines: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for line in lines {
        let line = line.trim_end();
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
/// Images smaller than this are tracking pixels, spacers or logos.
pub const MIN_IMAGE_SIZE: usize = 2048;

/// Attachments worth storing, with sanitized names. Left out: empty and
/// oversized parts, tiny images, and inline images shown only in a signature.
pub fn attachments(mail: &ParsedMail) -> Vec<NewAttachment> {
    // Parsing the HTML again is only worth it when an image could be a signature logo.
    let has_cid_images =
        mail.attachments.iter().any(|a| a.content_id.is_some() && a.content_type.starts_with("image/"));
    let signature_cids = match (&mail.html_body, has_cid_images) {
        (Some(html), true) => html::signature_only_cids(html),
        _ => Default::default(),
    };
    mail.attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.content.is_empty() && a.content.len() <= MAX_ATTACHMENT_SIZE)
        .filter(|(_, a)| !(a.content_type.starts_with("image/") && a.content.len() < MIN_IMAGE_SIZE))
        .filter(|(_, a)| {
            let cid = a.content_id.as_deref().map(|c| c.trim_matches(['<', '>']).to_ascii_lowercase());
            !cid.is_some_and(|c| signature_cids.contains(&c))
        })
        .map(|(i, a)| NewAttachment {
            filename: sanitize_filename(a, i),
            content_type: a.content_type.clone(),
            content: a.content.clone(),
        })
        .collect()
}

/// A file name safe to show and to offer for download: no directories, no
/// control or shell-special characters, no leading dots, at most 200 characters.
pub fn sanitize_filename(attachment: &ParsedAttachment, index: usize) -> String {
    let raw = attachment.filename.as_deref().unwrap_or("");
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | ':' | '|' | '?' | '*'))
        .take(200)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim().to_owned();
    if cleaned.is_empty() {
        let ext: String = attachment
            .content_type
            .split('/')
            .nth(1)
            .unwrap_or("bin")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect();
        format!("attachment-{}.{ext}", index + 1)
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::new_text;

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
