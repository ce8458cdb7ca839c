//! Where quoted history starts in a plain-text reply.
//!
//! Real clients introduce the quoted message in a few shapes, in many
//! languages: an attribution line ("On <date>, <name> wrote:"), possibly
//! wrapped over two lines; Outlook's "-----Original Message-----" or a rule
//! of underscores followed by a From:/Sent:/To:/Subject: block; a
//! forwarded-message banner; and our own "reply above this line" marker.

use regex::{Regex, RegexSet};
use std::sync::LazyLock;

/// Verbs that end an attribution line, per language (lower case, before the colon).
const ATTRIBUTION_ENDINGS: &[&str] = &[
    "wrote",            // English
    "writes",           // English (older clients)
    "schrieb",          // German
    "a écrit",          // French
    "escribió",         // Spanish
    "escreveu",         // Portuguese
    "ha scritto",       // Italian
    "scrive",           // Italian (older)
    "schreef",          // Dutch
    "geschreven",       // Dutch ("heeft ... het volgende geschreven")
    "kirjoitti",        // Finnish
    "írta",             // Hungarian
    "napsal",           // Czech
    "napísal",          // Slovak
    "yazdı",            // Turkish
    "έγραψε",           // Greek
    "a scris",          // Romanian
    "написав",          // Ukrainian
    "skrev",            // Swedish, Norwegian, Danish
    "napisał(a)",       // Polish
    "napisał",          // Polish
    "napisała",         // Polish
    "pisze",            // Polish (older)
    "пишет",            // Russian
    "написал(а)",       // Russian
    "написал",          // Russian
    "написала",         // Russian
    "のメッセージ",     // Japanese
    "さんは書きました", // Japanese
    "写道",             // Chinese (simplified)
    "寫道",             // Chinese (traditional)
];

/// An attribution: ends with one of the verbs and a colon (ASCII or full
/// width), and mentions a date, a time or an address, so that "Here is what
/// I wrote:" in a customer's own text is not mistaken for one. Gmail's
/// Japanese and Russian attributions have no verb: a date and `<address>:`.
static ATTRIBUTION: LazyLock<Regex> = LazyLock::new(|| {
    let verbs = ATTRIBUTION_ENDINGS.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|");
    Regex::new(&format!(
        r"(?i)(?:{verbs})\s*[:：]\s*$|@[^\s<>]+>\s*[:：]\s*$|(?-u:\b)(?:schrieb|schreef|skrev)\s.{{1,120}}[:：]\s*$"
    ))
    .expect("valid attribution regex")
});
/// How attributions begin, for recognising one wrapped over two lines.
static LEAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*(on|am|le|el|em|il|op|den|w dniu)\s").expect("valid regex"));
/// Gmail's older attribution, with no verb: a date like `2011/4/7` or
/// `2016-03-03 17:21 GMT+01:00`, then the sender with their address (with
/// or without a colon) or their name and a colon.
static DATED_SENDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b.{0,120}(<[^<>\s]+@[^<>\s]+>\s*[:：]?|\D[:：])\s*$")
        .expect("valid regex")
});
static ADDRESS_TAIL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*\S*@\S*>").expect("valid regex"));
static HAS_DATE_OR_ADDRESS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d|@").expect("valid regex"));

/// "-----Original Message-----" and its translations; also "Forwarded message" banners.
static BANNERS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"(?i)^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|mensaje original|mensagem original|messaggio originale|oorspronkelijk bericht|ursprungligt meddelande|wiadomość oryginalna|oryginalna wiadomość|исходное сообщение|исходное письмо|元のメッセージ|原始邮件|原始郵件)\s*-{2,}\s*$",
        r"(?i)^\s*-{2,}\s*(forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|mensagem encaminhada|messaggio inoltrato|doorgestuurd bericht|vidarebefordrat meddelande|przekazana wiadomość|wiadomość przekazana|пересылаемое сообщение|転送されたメッセージ|转发的邮件|轉寄的郵件)\s*-{2,}\s*$",
        r"(?i)^\s*(begin forwarded message|anfang der weitergeleiteten nachricht|début du message réenvoyé|inicio del mensaje reenviado)\s*:\s*$",
        // Android's and Samsung's "---- John Smith wrote ----" and "-------- Originalnachricht --------".
        r"(?i)^\s*-{2,}\s*.{1,100}\b(wrote|schrieb|a écrit|escribió|escreveu|ha scritto|schreef|skrev|napisał|написал)\s*-{2,}\s*$",
        r"(?i)^\s*-{2,}\s*(originalnachricht|original-nachricht|mensaje original|messaggio originale|oorspronkelijk bericht|opprinnelig melding|oprindelig meddelelse|alkuperäinen viesti)\s*-{2,}\s*$",
        r"^\s*_{10,}\s*$",
    ])
    .expect("valid banner regexes")
});

/// Header labels of a quoted-message block, localized (Outlook and others).
static FROM_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?\s*(from|von|de|da|van|från|fra|od|от|від|lähettäjä|feladó|kimden|από|差出人|发件人|寄件者)\s*\*?\s*[:：]")
        .expect("valid regex")
});
static SENT_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*\*?\s*(sent|date|gesendet|datum|envoyé|date d'envoi|enviado|enviado el|fecha|inviato|data|verzonden|skickat|wysłano|отправлено|дата|送信日時|日時|发送时间|時間|寄件日期|to|an|à|para|a|aan|till|do|кому|宛先|收件人|subject|betreff|objet|asunto|assunto|oggetto|onderwerp|ämne|temat|тема|件名|主题|sendt|til|emne|dato|lähetetty|vastaanottaja|aihe|päivämäärä|elküldve|címzett|tárgy|dátum|gönderildi|kime|konu|tarih|відправлено|тема|дата|στάλθηκε|προς|θέμα)\s*\*?\s*[:：]",
    )
    .expect("valid regex")
});

/// Whether `line` is a forwarded-message banner ("---------- Forwarded
/// message ---------", "Begin forwarded message:", and translations).
pub(super) fn is_forward_banner(line: &str) -> bool {
    line.contains([':', '-']) && BANNERS.matches(line).iter().any(|i| i == 1 || i == 2)
}

/// What the line where history starts is, in words (for `explain`).
pub(super) fn describe_start(lines: &[&str], at: usize) -> &'static str {
    let Some(line) = lines.get(at) else { return "nothing" };
    if is_our_marker(line) {
        "our \"reply above this line\" marker"
    } else if is_forward_banner(line) {
        "a forwarded-message banner"
    } else if BANNERS.is_match(line) || is_rule(line) {
        "an original-message banner or separator rule"
    } else if header_block_at(lines, at) {
        "a From:/Sent:/To:/Subject: header block"
    } else {
        "an attribution line (\"On ... wrote:\")"
    }
}

/// Our own marker, quoted or not, in any case.
fn is_our_marker(line: &str) -> bool {
    line.to_lowercase().contains("reply above this line")
}

fn is_attribution(line: &str) -> bool {
    let line = line.trim();
    // Every attribution ends with a colon: a cheap test before the regexes.
    line.ends_with([':', '：'])
        && !line.starts_with('>')
        && line.len() < 400
        && HAS_DATE_OR_ADDRESS.is_match(line)
        && ATTRIBUTION.is_match(line)
}

/// Where quoted history starts, and the attribution lines that introduce
/// quotes the person answered below (inline or bottom posting).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Scan {
    /// The first line of trailing history (`lines.len()` when none): a
    /// separator rule right above it counts as history too.
    pub(super) end: usize,
    /// Attribution lines above quotes that were answered: they go with
    /// their quote (kept for an interleaved reply, dropped otherwise).
    pub(super) drop: Vec<usize>,
}

/// Scans a reply for the start of quoted history.
///
/// Linear in the number of lines: what lies below a line (the next line
/// that is not blank, the next the person wrote) is worked out once for all
/// lines, from the bottom up, not searched again from each line.
pub(super) fn scan(lines: &[&str]) -> Scan {
    let Scan { end, drop } = scan_markers(lines);
    Scan { end: with_separator(lines, end), drop }
}

/// [`scan`] without the separator above the history.
fn scan_markers(lines: &[&str]) -> Scan {
    let below = Below::of(lines);
    let mut drop = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if i % 4096 == 4095 && crate::pipeline::budget::exhausted() {
            return Scan { end: i, drop };
        }
        if let Some(span) = attribution_at(lines, i, &below) {
            // Answered when a quote follows it and the person wrote below
            // that. Unquoted text right below a full attribution (an
            // address and a time) is an earlier message pasted in, which is
            // history like the rest; below a weaker one ("On 3 March you
            // wrote:") it is the person's own text, and the line is theirs.
            let quoted = below.quote_follows(lines, i + span);
            if quoted && below.answered(i + span) {
                drop.extend(i..i + span);
                i += span;
                continue;
            }
            if quoted || below.next_nonblank(lines, i + span).is_none() || is_full_attribution(&lines[i..i + span]) {
                return Scan { end: i, drop };
            }
            i += span;
            continue;
        }
        if is_our_marker(lines[i]) {
            if lines[i].trim_start().starts_with('>') && below.answered(i + 1) {
                i += 1;
                continue;
            }
            // The line introducing the quote (an attribution) goes too.
            return Scan { end: attribution_before(lines, i).unwrap_or(i), drop };
        }
        if let Some(end) = block_start_at(lines, i) {
            return Scan { end, drop };
        }
        i += 1;
    }
    Scan { end: lines.len(), drop }
}

/// The index of the first line of quoted history, if any.
#[cfg(test)]
pub(super) fn history_start(lines: &[&str]) -> Option<usize> {
    let scan = scan(lines);
    (scan.end < lines.len()).then_some(scan.end)
}

/// A time like `10:00` or `17.21`, as attributions name the hour.
static TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d{1,2}[:.]\d{2}\b").expect("valid regex"));

/// Whether attribution lines name the sender's address (in angle brackets
/// or as a `mailto:`) and a time: what a client writes, not a person.
fn is_full_attribution(lines: &[&str]) -> bool {
    let text = lines.join(" ");
    let address = text.contains("mailto:") || text.contains('<') && text.contains('@') && text.contains('>');
    address && TIME.is_match(&text)
}

/// What lies below each line, worked out once from the bottom up.
struct Below {
    /// For each line, the first line at or after it that is not blank.
    nonblank: Vec<usize>,
    /// For each line, the first line at or after it that is neither blank
    /// nor quoted: something the person wrote.
    written: Vec<usize>,
}

impl Below {
    fn of(lines: &[&str]) -> Self {
        let n = lines.len();
        let (mut nonblank, mut written) = (vec![n; n + 1], vec![n; n + 1]);
        for i in (0..n).rev() {
            let blank = lines[i].trim().is_empty();
            nonblank[i] = if blank { nonblank[i + 1] } else { i };
            written[i] = if blank || lines[i].trim_start().starts_with('>') { written[i + 1] } else { i };
        }
        Self { nonblank, written }
    }

    /// Whether the person wrote something below the quote block starting at `from`.
    fn answered(&self, from: usize) -> bool {
        let n = self.written.len() - 1;
        self.written[from.min(n)] < n
    }

    /// Whether the first line at or after `from` that is not blank is quoted.
    fn quote_follows(&self, lines: &[&str], from: usize) -> bool {
        self.next_nonblank(lines, from).is_some_and(|l| l.trim_start().starts_with('>'))
    }

    /// The first line at or after `from` that is not blank, if any.
    fn next_nonblank<'a>(&self, lines: &[&'a str], from: usize) -> Option<&'a str> {
        lines.get(self.nonblank[from.min(lines.len())]).copied()
    }
}

/// An attribution at line `i`: how many lines it spans (1, or 2 when wrapped).
fn attribution_at(lines: &[&str], i: usize, below: &Below) -> Option<usize> {
    let line = lines[i];
    if let Some(next) = lines.get(i + 1).filter(|n| n.trim_end().ends_with([':', '：']) && !line.trim().is_empty()) {
        let wrapped = line.trim_end().ends_with(['<', '('])
            || line.trim_end().ends_with(',') && line.contains(|c: char| c.is_ascii_digit())
            || ADDRESS_TAIL.is_match(next)
            || LEAD.is_match(line) && !is_attribution(line);
        if wrapped && is_attribution(&format!("{} {}", line.trim_end(), next.trim_start())) {
            return Some(2);
        }
    }
    // Wrapped over three lines (Polymail's `<\naddress\n<mailto:address>> wrote:`,
    // long French and German attributions), when it starts like one.
    if let (Some(second), Some(third)) = (lines.get(i + 1), lines.get(i + 2))
        && third.trim_end().ends_with([':', '：'])
        && LEAD.is_match(line)
        && !is_attribution(line)
        && !second.trim().is_empty()
        && is_attribution(&format!("{} {} {}", line.trim_end(), second.trim(), third.trim_start()))
    {
        return Some(3);
    }
    if is_attribution(line) {
        return Some(1);
    }
    // Without a date or an address, the quote right below it is the proof.
    let trimmed = line.trim();
    let quote_follows = below.next_nonblank(lines, i + 1).is_some_and(|l| l.trim_start().starts_with('>'));
    if quote_follows && DATED_SENDER.is_match(line) {
        return Some(1);
    }
    (trimmed.ends_with([':', '：'])
        && !trimmed.starts_with('>')
        && trimmed.len() < 400
        && quote_follows
        && ATTRIBUTION.is_match(trimmed))
    .then_some(1)
}

/// A banner or header block that starts history at `i`.
fn block_start_at(lines: &[&str], i: usize) -> Option<usize> {
    let line = lines[i];
    if !line.contains([':', '-', '_', '：']) {
        return None;
    }
    {
        if BANNERS.is_match(line) {
            let rule = line.trim_start().starts_with('_');
            // A rule of underscores is only a separator when a header block follows.
            if !rule || header_block_at(lines, i + 1) {
                return Some(i);
            }
        }
        if header_block_at(lines, i) {
            return Some(i);
        }
    }
    None
}

/// A quoted line of ours may be preceded by its attribution; find it.
fn attribution_before(lines: &[&str], marker: usize) -> Option<usize> {
    let mut i = marker;
    while i > 0 {
        i -= 1;
        let line = lines[i].trim();
        if line.is_empty() || line.trim_start_matches('>').trim().is_empty() {
            continue;
        }
        if is_attribution(lines[i]) {
            return Some(i);
        }
        if i > 0 && is_attribution(&format!("{} {}", lines[i - 1].trim_end(), line)) {
            return Some(i - 1);
        }
        return None;
    }
    None
}

/// A From: line that names a sender, followed within four lines by another
/// header label; or a block that starts with its Date: line (Outlook for
/// Mac, some webmails) followed within two lines by the From: line.
fn header_block_at(lines: &[&str], at: usize) -> bool {
    let mut i = at;
    while lines.get(i).is_some_and(|l| l.trim().is_empty()) && i < at + 2 {
        i += 1;
    }
    let Some(line) = lines.get(i) else {
        return false;
    };
    if let Some(label) = FROM_LABEL.find(line) {
        return names_a_sender(&line[label.end()..])
            && lines.iter().skip(i + 1).take(4).any(|next| SENT_LABEL.is_match(next));
    }
    DATE_LABEL.is_match(line) && lines.iter().skip(i + 1).take(2).any(|next| FROM_LABEL.is_match(next))
}

/// Whether the value of a From: label reads as a sender, not as a sentence
/// that happens to start with the label's word (Dutch "Van: de boekhouding
/// kreeg ik de vraag ..."): an address, or a name of a few words.
fn names_a_sender(value: &str) -> bool {
    let value = value.trim().trim_matches('*').trim();
    value.contains('@')
        || (!value.is_empty() && value.split_whitespace().count() <= 6 && !value.ends_with(['?', '!', '？', '！']))
}

/// A separator rule: a line of at least three dashes, underscores, equals
/// signs, em or en dashes, box-drawing lines or asterisks (and spaces).
pub(super) fn is_rule(line: &str) -> bool {
    let line = line.trim_matches(|c: char| c.is_whitespace() || super::is_invisible(c));
    line.chars().count() >= 3
        && line.chars().all(|c| matches!(c, '-' | '_' | '=' | '—' | '–' | '─' | '━' | '*' | '~' | ' '))
}

/// `end` moved up over the blank lines and the separator rule right above
/// it, when there is such a rule: the rule Outlook and others put above
/// the quoted header block belongs to the history.
fn with_separator(lines: &[&str], end: usize) -> usize {
    if end >= lines.len() {
        return end;
    }
    let mut i = end;
    while i > 0 && super::is_blank(lines[i - 1]) {
        i -= 1;
    }
    match i > 0 && is_rule(lines[i - 1]) {
        true => i - 1,
        false => end,
    }
}

/// The Date: label of a quoted header block, localized.
static DATE_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?\s*(date|datum|fecha|data|dato|päivämäärä|дата|日付|日期)\s*\*?\s*[:：]")
        .expect("valid regex")
});

#[cfg(test)]
mod tests {
    use super::history_start;

    fn start(text: &str) -> Option<usize> {
        history_start(&text.lines().collect::<Vec<_>>())
    }

    #[test]
    fn attributions_in_many_languages() {
        for line in [
            "On Sun, Nov 22, 2026 at 9:59 AM Support <support@x.example> wrote:",
            "Am 25.11.26 um 10:02 schrieb Support:",
            "Le lun. 23 nov. 2026 à 10:00, Support <support@x.example> a écrit :",
            "El lun, 23 nov 2026 a las 10:00, Support (<support@x.example>) escribió:",
            "Em seg., 23 de nov. de 2026 às 10:00, Support <support@x.example> escreveu:",
            "Il giorno lun 23 nov 2026 alle ore 10:00 Support <support@x.example> ha scritto:",
            "Op ma 23 nov. 2026 om 10:00 schreef Support <support@x.example>:",
            "Den mån 23 nov. 2026 kl 10:00 skrev Support <support@x.example>:",
            "W dniu pon., 23 lis 2026 o 10:00 Support <support@x.example> napisał(a):",
            "23 ноября 2026 г., в 10:00, Support <support@x.example> пишет:",
            "пн, 23 нояб. 2026 г. в 10:00, Support <support@x.example>:",
            "2026年11月23日(月) 10:00 Support <support@x.example>:",
            "Support <support@x.example> 于2026年11月23日周一 10:00写道：",
        ] {
            assert_eq!(start(&format!("Answer\n\n{line}\n> old")), Some(2), "{line}");
        }
    }

    #[test]
    fn attributions_over_three_lines_and_date_first_blocks() {
        assert_eq!(
            start(
                "Sure.\n\nOn Mon, Dec 4, 2026 at 10:00 AM Support <\nsupport@x.example\n<mailto:support@x.example>> wrote:\n> old"
            ),
            Some(2)
        );
        assert_eq!(
            start("Oui.\n\nLe lun. 23 nov. 2026 à 10:00,\nSupport <support@x.example>\na écrit :\n> old"),
            Some(2)
        );
        assert_eq!(start("Yes.\n\nDate: Mon, 4 Dec 2026 10:00\nFrom: Support <s@x.example>\nTo: me\n\nold"), Some(2));
        assert_eq!(start("Date: next Monday works\nthanks"), None);
    }

    #[test]
    fn more_shapes_of_history() {
        // Android's banner, a Danish header block, Gmail's older dated attribution, Dutch.
        assert_eq!(start("Ja.\n\n---- John Smith wrote ----\n\nold"), Some(2));
        assert_eq!(start("Ja.\n\nFra: Support <s@x.example>\nSendt: 4. december 2026\nTil: mig\nEmne: x\n"), Some(2));
        assert_eq!(start("Yes.\n\n2011/4/7 Support <support@x.example>\n\n> old"), Some(2));
        assert_eq!(
            start("Ja.\n\nOp 24 feb. 2015 om 22:48 heeft John <j@x.example> het volgende geschreven:\n> old"),
            Some(2)
        );
        // A date and an address in a customer's own text are not an attribution without a quote below.
        assert_eq!(start("Backup of 2011/4/7 sent to Support <support@x.example>\nthanks"), None);
    }

    #[test]
    fn an_attribution_without_a_date_is_known_by_the_quote_below_it() {
        assert_eq!(start("Thanks\n\nOn Sun, Alex wrote:\n> old"), Some(2));
    }

    #[test]
    fn unquoted_text_below_an_attribution_is_history_only_below_a_full_one() {
        // A client's attribution (address and time) over a pasted earlier message.
        assert_eq!(start("Thanks.\n\nOn Mon, 23 Nov 2026 at 10:00, Support <s@x.example> wrote:\nold text"), Some(2));
        // A person's own words that read like one keep what follows.
        assert_eq!(start("Hello,\n\nOn 3 March you wrote:\n\"We will refund.\"\n\nPlease escalate."), None);
        assert_eq!(start("Hi,\nour admin (admin@corp.example) wrote:\nplease reset it"), None);
        assert_eq!(start("Hallo,\nich schrieb Ihnen am 3. März Folgendes:\nDie Rechnung ist doppelt."), None);
    }

    #[test]
    fn lines_of_non_ascii_text_ending_in_a_colon_read_in_linear_time() {
        // Unicode word boundaries sent the attribution regex to a slow engine.
        let text = "Привет мир это строка текста schrieb:\n".repeat(20_000);
        assert_eq!(start(&text), None);
        let line = format!("{} schrieb x:", "é".repeat(200_000));
        assert_eq!(start(&line), None);
    }

    #[test]
    fn a_customer_saying_wrote_is_not_a_quote() {
        assert_eq!(start("Here is what I wrote:\nthe config"), None);
    }

    #[test]
    fn outlook_blocks_and_banners() {
        assert_eq!(start("Hi\n\n-----Original Message-----\nFrom: x"), Some(2));
        assert_eq!(start("Hi\n\n-----Ursprüngliche Nachricht-----\nVon: x"), Some(2));
        assert_eq!(start("Hi\n________________________________\nFrom: S\nSent: Monday\n"), Some(1));
        assert_eq!(start("Hi\nVon: Support <s@x>\nGesendet: Montag\nAn: mich\n"), Some(1));
        assert_eq!(start("Hi\n\n---------- Forwarded message ---------\nFrom: a"), Some(2));
        assert_eq!(start("Numbers\n________________\nmore text"), None);
    }
}
