//! Our own notification coming back in a reply without quote marks.
//!
//! A mail client may return the notification a reply address came with
//! unquoted: re-wrapped to another width, its marker lost when HTML became
//! text, or folded into a "previous replies" digest. mailgate knows exactly
//! what it sent, so it removes that text by matching it, not by guessing.
//!
//! Both texts are read as streams of words (letters and digits, lower case,
//! punctuation at their ends dropped), so that wrapping and whitespace do
//! not matter. A line of the reply of three words or more matches when each
//! run of three words in it is a run in the notification; shorter lines
//! match when they are words of the notification. A run of lines that
//! starts and ends with such long lines (short matching lines and blank
//! lines between them, short matching lines after the last, and quoted
//! ones right above the first, go with it), and holds at least
//! [`MIN_WORDS`] words, is the notification: it is removed. Unquoted lines
//! the person wrote above it stay, even short ones that happen to be words
//! of ours. The whole reply is never removed.
//!
//! Linear in the size of both texts: each word is hashed a bounded number
//! of times. Pure.

use std::collections::HashSet;
use std::hash::BuildHasher;

/// Fewest words a run of matching lines must hold to be removed: a
/// sentence of ours that the person repeats in a line of their own is not.
pub const MIN_WORDS: usize = 8;

/// Lines of a reply compared at most (the rest is kept as it is).
const MAX_LINES: usize = 20_000;

/// What removing the notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The reply without it.
    pub text: String,
    /// The text removed.
    pub removed: String,
    /// How many lines were removed.
    pub lines: usize,
}

/// The words of a line: letters and digits, lower case, with punctuation
/// at their ends dropped (`>` quote marks, `*bold*`, `(links)`).
fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
}

/// The runs of one, two and three words of what we sent, hashed.
struct Sent {
    hasher: std::collections::hash_map::RandomState,
    singles: HashSet<u64>,
    pairs: HashSet<u64>,
    triples: HashSet<u64>,
}

impl Sent {
    fn of(text: &str) -> Self {
        let hasher = std::collections::hash_map::RandomState::new();
        let stream: Vec<String> = text.lines().flat_map(words).collect();
        let mut sent = Sent { hasher, singles: HashSet::new(), pairs: HashSet::new(), triples: HashSet::new() };
        for i in 0..stream.len() {
            sent.singles.insert(sent.hash(&stream[i..=i]));
            if i + 2 <= stream.len() {
                sent.pairs.insert(sent.hash(&stream[i..i + 2]));
            }
            if i + 3 <= stream.len() {
                sent.triples.insert(sent.hash(&stream[i..i + 3]));
            }
        }
        sent
    }

    fn hash(&self, words: &[String]) -> u64 {
        self.hasher.hash_one(words)
    }

    /// How a line of the reply matches what we sent.
    fn line(&self, line: &str) -> Line {
        let words: Vec<String> = words(line).collect();
        match words.len() {
            0 => Line::Blank,
            1 if self.singles.contains(&self.hash(&words)) => Line::Short(1),
            2 if self.pairs.contains(&self.hash(&words)) => Line::Short(2),
            n if n >= 3 && words.windows(3).all(|w| self.triples.contains(&self.hash(w))) => Line::Long(n),
            _ => Line::Other,
        }
    }
}

/// A line of the reply, as matched against what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// No words.
    Blank,
    /// One or two words, both ours.
    Short(usize),
    /// Three words or more, every run of three ours.
    Long(usize),
    /// Anything else: the person's.
    Other,
}

/// `reply` without the runs of lines that are `sent` (the notification
/// text as it went out), or `None` when there are none.
pub fn remove(reply: &str, sent: &str) -> Option<Removed> {
    if sent.trim().is_empty() || reply.trim().is_empty() {
        return None;
    }
    let ours = Sent::of(sent);
    let lines: Vec<&str> = reply.lines().collect();
    let kinds: Vec<Line> = lines.iter().take(MAX_LINES).map(|l| ours.line(l)).collect();
    let mut gone = vec![false; lines.len()];
    let mut i = 0;
    while i < kinds.len() {
        if !matches!(kinds[i], Line::Long(_)) {
            i += 1;
            continue;
        }
        // A run: from this long line to the last long line reachable over
        // blank and short matching lines, then the short ones after it.
        let (mut end, mut words, mut j) = (i, 0, i);
        while j < kinds.len() {
            match kinds[j] {
                Line::Long(n) => {
                    words += n;
                    end = j;
                }
                Line::Short(_) | Line::Blank => {}
                Line::Other => break,
            }
            j += 1;
        }
        while end + 1 < kinds.len() && matches!(kinds[end + 1], Line::Short(_) | Line::Blank) {
            end += 1;
        }
        // Quoted short lines right above it are ours too (a digest's greeting).
        let mut start = i;
        while start > 0
            && matches!(kinds[start - 1], Line::Short(_) | Line::Blank)
            && lines[start - 1].trim_start().starts_with('>')
        {
            start -= 1;
        }
        if words >= MIN_WORDS {
            gone[start..=end].iter_mut().for_each(|g| *g = true);
        }
        i = end + 1;
    }
    let kept: Vec<&str> = lines.iter().zip(&gone).filter(|(_, g)| !**g).map(|(l, _)| *l).collect();
    let removed: Vec<&str> = lines.iter().zip(&gone).filter(|(_, g)| **g).map(|(l, _)| *l).collect();
    let count = removed.iter().filter(|l| !super::is_blank(l)).count();
    let text = super::tidy(&kept);
    // Nothing of ours matched, or nothing of the person's would be left.
    if count == 0 || text.is_empty() {
        return None;
    }
    Some(Removed { text, removed: super::tidy(&removed), lines: count })
}

#[cfg(test)]
mod tests {
    use super::remove;

    const SENT: &str = "-- Reply above this line --\n\nHello Anna,\n\nAlex Agent from the support team wrote in \
                        ticket #4:\n\nWe restarted the backup job on the live server. Could you check whether \
                        last night's export is complete now?\n\nAlso in this conversation: Bob Jones\n\n\
                        [ref:aeaqcanljlyhz5giqsz4ratieq]";

    #[test]
    fn our_text_rewrapped_below_the_reply_goes() {
        let reply = "Yes, the export is complete.\n\nThanks,\nAnna\n\nHello Anna, Alex Agent from the support\nteam \
                     wrote in ticket #4: We restarted the backup job on the\nlive server. Could you check whether \
                     last night's\nexport is complete now?\n";
        let removed = remove(reply, SENT).expect("a match");
        assert_eq!(removed.text, "Yes, the export is complete.\n\nThanks,\nAnna");
        assert_eq!(removed.lines, 4);
    }

    #[test]
    fn a_sentence_of_ours_repeated_in_the_persons_own_line_stays() {
        let reply = "You asked: could you check whether last night's export is complete now? It is not.\n";
        assert_eq!(remove(reply, SENT), None);
        let short = "We restarted the backup job.\n";
        assert_eq!(remove(short, SENT), None, "fewer than eight words of ours");
    }

    #[test]
    fn the_whole_reply_is_never_removed() {
        let reply = "We restarted the backup job on the live server.\n";
        assert_eq!(remove(reply, SENT), None);
    }

    #[test]
    fn a_digest_of_earlier_replies_goes_with_its_short_lines() {
        let reply = "Done.\n\n> Hello Anna,\n>\n> We restarted the backup job on the live server.\n> Alex\n";
        let removed = remove(reply, SENT).expect("a match");
        assert_eq!(removed.text, "Done.");
    }
}
