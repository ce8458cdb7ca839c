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
//! Linear in the size of both texts: each word is hashed once, each run of
//! words looked up once. Pure.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Fewest words a run of matching lines must hold to be removed: a
/// sentence of ours that the person repeats in a line of their own is not.
/// A run must also hold a quarter of the words we sent, up to 40.
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

/// The words of a line, each as a hash of its letters and digits in lower
/// case, with punctuation at its ends dropped (`>` quote marks, `*bold*`,
/// `(links)`): no word is copied.
fn words(line: &str) -> impl Iterator<Item = u64> + '_ {
    line.split_whitespace().filter_map(|word| {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        (!word.is_empty()).then(|| {
            // FNV-1a over the lower-case UTF-8 bytes.
            let step = |hash: u64, byte: u8| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            let start: u64 = 0xcbf2_9ce4_8422_2325;
            if word.is_ascii() {
                return word.bytes().fold(start, |hash, byte| step(hash, byte.to_ascii_lowercase()));
            }
            let mut buf = [0u8; 4];
            word.chars()
                .flat_map(char::to_lowercase)
                .fold(start, |hash, c| c.encode_utf8(&mut buf).bytes().fold(hash, step))
        })
    })
}

/// Two or three word hashes as one (order matters).
fn joined(words: &[u64]) -> u64 {
    words.iter().fold(words.len() as u64, |acc, w| acc.rotate_left(23).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w)
}

/// A hasher for values that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Hashes = HashSet<u64, BuildHasherDefault<Prehashed>>;

/// The runs of three words of what we sent, hashed; runs of one and two
/// words only when a short line asks (most replies have none worth it).
struct Sent {
    stream: Vec<u64>,
    triples: Hashes,
    short: std::cell::OnceCell<(Hashes, Hashes)>,
}

impl Sent {
    /// What we sent, as the stream of its words' hashes.
    fn of(stream: Vec<u64>) -> Self {
        let triples = stream.windows(3).map(joined).collect();
        Sent { stream, triples, short: std::cell::OnceCell::new() }
    }

    /// The single words and the runs of two words of what we sent.
    fn short(&self) -> &(Hashes, Hashes) {
        self.short.get_or_init(|| (self.stream.iter().copied().collect(), self.stream.windows(2).map(joined).collect()))
    }

    /// Whether a line of one or two words is words of what we sent.
    fn ours(&self, line: Line) -> bool {
        match line {
            Line::Few(1, [one, _]) => self.short().0.contains(&one),
            Line::Few(_, pair) => self.short().1.contains(&joined(&pair)),
            _ => false,
        }
    }

    /// How a line of the reply matches what we sent (a line of one or two
    /// words is looked up only when a run of ours comes near it).
    fn line(&self, line: &str) -> Line {
        let mut words = words(line);
        let first: [Option<u64>; 3] = [words.next(), words.next(), words.next()];
        match first {
            [None, ..] => Line::Blank,
            [Some(one), None, _] => Line::Few(1, [one, 0]),
            [Some(one), Some(two), None] => Line::Few(2, [one, two]),
            [Some(one), Some(two), Some(three)] => {
                let mut window = [one, two, three];
                let mut count = 3;
                if !self.triples.contains(&joined(&window)) {
                    return Line::Other;
                }
                for word in words {
                    window = [window[1], window[2], word];
                    count += 1;
                    if !self.triples.contains(&joined(&window)) {
                        return Line::Other;
                    }
                }
                Line::Long(count)
            }
        }
    }
}

/// A line of the reply, as matched against what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// No words.
    Blank,
    /// One or two words (their hashes), ours or not: see [`Sent::ours`].
    Few(usize, [u64; 2]),
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
    let lines: Vec<&str> = reply.lines().collect();
    // Most replies bring nothing of ours back: unless the first three words
    // of some line of the reply are a run of ours, stop before hashing more.
    let firsts: Hashes = lines
        .iter()
        .take(MAX_LINES)
        .filter_map(|line| {
            let mut words = words(line);
            Some(joined(&[words.next()?, words.next()?, words.next()?]))
        })
        .collect();
    let stream: Vec<u64> = sent.lines().flat_map(words).collect();
    if !stream.windows(3).any(|run| firsts.contains(&joined(run))) {
        return None;
    }
    // A quarter of what we sent (up to 40 words): a few questions of ours
    // that the person copied to answer them one by one are not an echo.
    let needed = MIN_WORDS.max((stream.len() / 4).min(40));
    let ours = Sent::of(stream);
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
                Line::Blank => {}
                few @ Line::Few(..) if ours.ours(few) => {}
                _ => break,
            }
            j += 1;
        }
        let short_or_blank = |line: Line| line == Line::Blank || ours.ours(line);
        while end + 1 < kinds.len() && short_or_blank(kinds[end + 1]) {
            end += 1;
        }
        // Quoted short lines right above it are ours too (a digest's greeting).
        let mut start = i;
        while start > 0 && short_or_blank(kinds[start - 1]) && lines[start - 1].trim_start().starts_with('>') {
            start -= 1;
        }
        if words >= needed {
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
        let reply = "Done.\n\n> Hello Anna,\n>\n> We restarted the backup job on the live server.\n> Could you check \
                     whether last night's export is complete now?\n> Alex\n";
        let removed = remove(reply, SENT).expect("a match");
        assert_eq!(removed.text, "Done.");
    }
}
