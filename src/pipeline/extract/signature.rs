//! Signatures at the end of a reply: the `-- ` delimiter, mobile footers,
//! and a trailing block that begins with the sender's name.

use regex::Regex;
use std::sync::LazyLock;

/// "Sent from my iPhone" and its relatives, in the languages we read.
static MOBILE_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\s*(",
        r"sent from my \S|sent from (outlook|mail|yahoo mail|samsung|my mobile)|sent via |sent with blackberry|get outlook for |sent from proton",
        r"|von meinem .{1,40} gesendet|gesendet von meinem |gesendet mit |von meinem .{1,40} gesendet",
        r"|envoyé de mon |envoyé depuis mon |envoyé depuis l'application |obtenir outlook pour ",
        r"|enviado desde mi |enviado desde |obtener outlook para ",
        r"|enviado do meu |enviado de meu |obter o outlook para ",
        r"|inviato da |scarica outlook per ",
        r"|verzonden (vanaf|met) mijn |verstuurd vanaf mijn |outlook voor ",
        r"|skickat från min |skickades från min |hämta outlook för ",
        r"|wysłane z (mojego )?|pobierz outlook dla ",
        r"|отправлено с |отправлено из |получить outlook для ",
        r"|.{0,20}から送信\s*$|.{0,20}から送信されました",
        r"|发自我的|从我的.{0,20}发送|從我的.{0,20}傳送|寄件自我的",
        r")"
    ))
    .expect("valid footer regex")
});

/// Where the signature delimiter is: the last `-- ` line (RFC 3676), or a
/// bare `--` when little follows it.
pub(super) fn delimiter(lines: &[&str]) -> Option<usize> {
    let i = lines.iter().rposition(|l| *l == "-- " || (*l == "--"))?;
    (lines[i] == "-- " || lines.len() - i - 1 <= 10).then_some(i)
}

/// Removes the signature from the end of `lines`.
pub(super) fn strip<'a>(lines: &[&'a str], sender_name: Option<&str>) -> Vec<&'a str> {
    let mut lines: Vec<&str> = lines.to_vec();
    if let Some(i) = delimiter(&lines) {
        lines.truncate(i);
    }
    drop_trailing_footers(&mut lines);
    if let Some(name) = sender_name.map(str::trim).filter(|n| n.chars().filter(|c| c.is_alphabetic()).count() >= 3) {
        strip_name_block(&mut lines, name);
    }
    drop_trailing_footers(&mut lines);
    lines
}

/// Whether `line` is a mobile footer ("Sent from my iPhone", ...): the
/// device phrase and a few words naming the device or app, perhaps a link,
/// perhaps "please excuse typos"; not a sentence of the writer's own that
/// happens to start the same way ("Sent from my phone at the airport, so
/// ...").
pub(super) fn is_mobile_footer(line: &str) -> bool {
    could_be_footer(line) && MOBILE_FOOTER.is_match(line) && footer_shaped(line)
}

/// A cheap test before the footer regex, which every line of a reply may
/// meet: a footer is short and starts with one of the letters its phrases
/// start with (Japanese ones end in から送信).
fn could_be_footer(line: &str) -> bool {
    let line = line.trim_start();
    line.len() <= 300
        && (line.chars().next().is_some_and(|c| {
            matches!(
                c.to_ascii_lowercase(),
                's' | 'g' | 'v' | 'e' | 'o' | 'i' | 'h' | 'w' | 'p' | 'п' | 'П' | 'о' | 'О' | '发' | '从' | '從' | '寄'
            )
        }) || line.contains("から送信"))
}

/// Links (`<https://...>`, bare URLs, `(www...)`) in a footer line.
static LINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<[^<>]*>|\((?:https?://|www\.)[^()]*\)|https?://\S+").expect("valid regex"));
/// What a footer may say after the device: an apology for its brevity.
static EXCUSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)excuse|typo|brevity|brief|entschuldig|tippfehler|kürze|fautes|concision|disculp|errores|scusa|refuso|desculp")
        .expect("valid regex")
});

/// Whether a line that starts like a footer is shaped like one: at most
/// eight words once links are left out, and no second clause unless it
/// excuses the brevity.
fn footer_shaped(line: &str) -> bool {
    let bare = LINK.replace_all(line, " ");
    let bare = bare.trim().trim_end_matches(['.', '!']);
    let (device, rest) = match bare.find([',', '.', ';', ':', '?', '!', '，', '。']) {
        Some(at) => bare.split_at(at),
        None => (bare, ""),
    };
    let rest = rest.trim_start_matches([',', '.', ';', ':', '?', '!', '，', '。']).trim();
    device.split_whitespace().count() <= 8 && (rest.is_empty() || EXCUSE.is_match(rest)) && !bare.contains('?')
}

/// Where the person's text ends, given that quoted history starts at
/// `end`: at the first mobile footer that stands as a paragraph of its own
/// below something they wrote, when older messages follow it (the history
/// starts below it, the next line is quoted or names a sender with their
/// address, or another footer comes further down: a phone's chain); else
/// `end`. A footer followed only by
/// more of the person's text (a PS) ends nothing.
pub(super) fn footer_cut(lines: &[&str], end: usize) -> usize {
    let mut wrote = false;
    let mut footers = (0..end).filter(|&i| {
        let starts_paragraph = i == 0 || super::is_blank(lines[i - 1]);
        starts_paragraph && starts_capitalized(lines[i]) && is_mobile_footer(lines[i])
    });
    let first = footers.next();
    let another = footers.next().is_some();
    for (i, line) in lines[..end].iter().enumerate() {
        if Some(i) == first {
            let next = lines[i + 1..].iter().find(|l| !super::is_blank(l));
            // What follows is older when it is quoted, or names a sender
            // as `Name <address>` (Yahoo's one-line "On ..., X<x@y> wrote: ...").
            let older = end < lines.len()
                || another
                || next.is_some_and(|l| l.trim_start().starts_with('>') || l.contains('<') && l.contains('@'));
            return if wrote && older { i } else { end };
        }
        wrote |= !super::is_blank(line) && !line.trim_start().starts_with('>');
    }
    end
}

/// Whether a line starts with a capital letter or a letter of a script
/// without case, as a footer does ("Sent from ..."), not with a lower-case
/// one, as the middle of a wrapped sentence does ("... you\nsent from my
/// account page ..."). `iPhoneから送信` is a footer too.
fn starts_capitalized(line: &str) -> bool {
    let line = line.trim_start();
    line.chars().next().is_some_and(|c| !c.is_lowercase()) || line.contains("から送信")
}

fn drop_trailing_footers(lines: &mut Vec<&str>) {
    while let Some(last) = lines.last() {
        let footer_below = |i: usize| i > 0 && is_footer_link(lines[i]) && is_mobile_footer(lines[i - 1]);
        if super::is_blank(last) || is_mobile_footer(last) || footer_below(lines.len() - 1) {
            lines.pop();
        } else {
            break;
        }
    }
}

/// A line that is only a link in parentheses, as BlackBerry puts below its
/// footer: `(www.blackberry.com)`.
fn is_footer_link(line: &str) -> bool {
    let line = line.trim();
    line.starts_with('(') && line.ends_with(')') && LINK.replace_all(line, "").trim().is_empty()
}

/// In the last paragraph: a line that is the sender's name followed by more
/// lines (title, company, phone) is a signature. When the name opens the
/// paragraph and something precedes it, the whole paragraph goes; after a
/// sign-off ("Thanks,") the name stays and what follows it goes.
fn strip_name_block(lines: &mut Vec<&str>, name: &str) {
    let start = lines.iter().rposition(|l| l.trim().is_empty()).map_or(0, |i| i + 1);
    let name = name.to_lowercase();
    let Some(offset) = lines[start..].iter().position(|l| {
        let line = l.trim().trim_end_matches([',', '.']).to_lowercase();
        line == name
            || (line.starts_with(&name)
                && line.len() <= name.len() + 40
                && !line[name.len()..].starts_with(char::is_alphanumeric))
    }) else {
        return;
    };
    let at = start + offset;
    if at + 1 >= lines.len() || lines.len() - at > 8 {
        return; // the name ends the message (a sign-off), or too much follows to be a signature
    }
    if offset == 0 && start > 0 {
        lines.truncate(start);
    } else {
        lines.truncate(at + 1);
    }
}
