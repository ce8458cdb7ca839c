//! The language a notification is written in: BCP 47 tags (`de`, `pt-BR`),
//! the order in which a recipient's languages are tried (`pt-BR`, `pt`, the
//! desk's, English), and what differs by language besides the templates:
//! how a time and a duration are written.

/// The language every template exists in, and the last one tried.
pub const FALLBACK: &str = "en";

/// The tag in its usual spelling (`pt-br` → `pt-BR`, `DE` → `de`,
/// `zh-hant-tw` → `zh-Hant-TW`), or `None` when it is not a language tag:
/// a language of 2 or 3 letters, then subtags of 2 to 8 letters or digits.
pub fn canonical(tag: &str) -> Option<String> {
    let tag = tag.trim().replace('_', "-");
    let mut parts = tag.split('-');
    let language = parts.next()?;
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = language.to_ascii_lowercase();
    for part in parts {
        if !(2..=8).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        match part.len() {
            2 if part.bytes().all(|b| b.is_ascii_alphabetic()) => out.push_str(&part.to_ascii_uppercase()),
            4 if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                out.push_str(&part[..1].to_ascii_uppercase());
                out.push_str(&part[1..].to_ascii_lowercase());
            }
            _ => out.push_str(&part.to_ascii_lowercase()),
        }
    }
    (out.len() <= 35).then_some(out)
}

/// The languages to try, in order: each preference (the person's, their
/// organization's, the desk's) and then its shorter forms (`pt-BR`, `pt`),
/// and English last; each once.
pub fn chain(preferences: &[Option<&str>]) -> Vec<String> {
    let mut tried: Vec<String> = Vec::new();
    for tag in preferences.iter().flatten().filter_map(|t| canonical(t)) {
        let mut tag = tag.as_str();
        loop {
            if !tried.iter().any(|t| t == tag) {
                tried.push(tag.to_owned());
            }
            match tag.rsplit_once('-') {
                Some((shorter, _)) => tag = shorter,
                None => break,
            }
        }
    }
    if !tried.iter().any(|t| t == FALLBACK) {
        tried.push(FALLBACK.to_owned());
    }
    tried
}

/// How a message's time is written in `locale` (a chrono format, the zone
/// named): `2026-11-23 11:04 CET`, `23.11.2026, 11:04 CET`, ...
pub fn time_format(locale: &str) -> &'static str {
    match language(locale) {
        "de" => "%d.%m.%Y, %H:%M %Z",
        "fr" | "es" | "pt" | "it" => "%d/%m/%Y %H:%M %Z",
        "nl" => "%d-%m-%Y %H:%M %Z",
        "ja" | "zh" => "%Y年%m月%d日 %H:%M %Z",
        _ => "%Y-%m-%d %H:%M %Z",
    }
}

/// A duration in minutes as a person reads it in `locale`: "2 hours",
/// "2 Stunden", "2 heures", "2 horas", "2時間".
pub fn duration(minutes: i64, locale: &str) -> String {
    let (amount, unit) = if minutes % (24 * 60) == 0 {
        (minutes / (24 * 60), 2)
    } else if minutes % 60 == 0 {
        (minutes / 60, 1)
    } else {
        (minutes, 0)
    };
    let one = amount == 1;
    let word = match (language(locale), unit) {
        ("de", 0) => {
            if one {
                "Minute"
            } else {
                "Minuten"
            }
        }
        ("de", 1) => {
            if one {
                "Stunde"
            } else {
                "Stunden"
            }
        }
        ("de", _) => {
            if one {
                "Tag"
            } else {
                "Tage"
            }
        }
        ("fr", 0) => {
            if one {
                "minute"
            } else {
                "minutes"
            }
        }
        ("fr", 1) => {
            if one {
                "heure"
            } else {
                "heures"
            }
        }
        ("fr", _) => {
            if one {
                "jour"
            } else {
                "jours"
            }
        }
        ("es", 0) => {
            if one {
                "minuto"
            } else {
                "minutos"
            }
        }
        ("es", 1) => {
            if one {
                "hora"
            } else {
                "horas"
            }
        }
        ("es", _) => {
            if one {
                "día"
            } else {
                "días"
            }
        }
        ("ja", 0) => return format!("{amount}分"),
        ("ja", 1) => return format!("{amount}時間"),
        ("ja", _) => return format!("{amount}日"),
        (_, 0) => {
            if one {
                "minute"
            } else {
                "minutes"
            }
        }
        (_, 1) => {
            if one {
                "hour"
            } else {
                "hours"
            }
        }
        (_, _) => {
            if one {
                "day"
            } else {
                "days"
            }
        }
    };
    format!("{amount} {word}")
}

/// A conversation as `locale` names it in a sentence: `Chat #12`,
/// `Ticket #7`, `チャット #12` (the subject tag stays `[Chat #12]` in every
/// language: replies are threaded by it).
pub fn thread_name(ticket: bool, number: i64, locale: &str) -> String {
    let word = match (language(locale), ticket) {
        ("ja", false) => "チャット",
        ("ja", true) => "チケット",
        (_, false) => "Chat",
        (_, true) => "Ticket",
    };
    format!("{word} #{number}")
}

/// The language subtag of a tag (`pt-BR` → `pt`).
fn language(locale: &str) -> &str {
    locale.split('-').next().unwrap_or(locale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_spelt_the_usual_way_and_nonsense_is_refused() {
        assert_eq!(canonical("pt-br").as_deref(), Some("pt-BR"));
        assert_eq!(canonical("DE").as_deref(), Some("de"));
        assert_eq!(canonical("zh_hant_tw").as_deref(), Some("zh-Hant-TW"));
        for bad in ["", "e", "english", "de-", "de--at", "../etc", "de/..", "x y"] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_chain_goes_from_the_person_to_english() {
        assert_eq!(chain(&[Some("pt-BR"), None, Some("de")]), ["pt-BR", "pt", "de", "en"]);
        assert_eq!(chain(&[None, Some("fr"), Some("fr")]), ["fr", "en"]);
        assert_eq!(chain(&[Some("nonsense!"), None, None]), ["en"]);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(120, "en"), "2 hours");
        assert_eq!(duration(60, "de"), "1 Stunde");
        assert_eq!(duration(30, "fr-CA"), "30 minutes");
        assert_eq!(duration(1440, "es"), "1 día");
        assert_eq!(duration(120, "ja"), "2時間");
    }
}
