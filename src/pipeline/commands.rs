//! Step 7c: an agent acting from their inbox. An agent's reply may start
//! with command lines, one per line, before any text: `#close` (`#solve`),
//! `#reopen`, `#assign me|EMAIL|NAME`, `#priority low|normal|high|urgent`,
//! `#tag NAME`, `#note` (the rest of the message is an internal note).
//! A line at the top that starts with `#` and is not a command stops the
//! whole message, so that a mistyped `#not` never mails a note to a customer.
//!
//! [`read`] is pure and reads only the lines at the top of the new text: a
//! `#` further down, or in quoted text, is plain text. Whether the commands
//! count (an agent on their own reply address, their domain authenticated)
//! is `decide`'s to say.

/// One command an agent gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `#close` or `#solve`: the conversation is closed.
    Close,
    /// `#reopen`: the conversation takes replies again.
    Reopen,
    /// `#assign me|EMAIL|NAME`: the agent to assign (`me`: the writer).
    Assign(String),
    /// `#priority low|normal|high|urgent`.
    Priority(String),
    /// `#tag NAME`.
    Tag(String),
    /// `#note`: the rest of the message is an internal note.
    Note,
}

/// What the top of an agent's reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commands {
    /// No command: the text as it is.
    None,
    /// Commands, and the text below them (after `#note`, the note).
    Given {
        /// The commands, in order.
        commands: Vec<Command>,
        /// The lines as written, for the record.
        lines: Vec<String>,
        /// The text below them.
        rest: String,
    },
    /// A line at the top starts with `#` and is no command: nothing is posted.
    Unknown {
        /// The line.
        line: String,
    },
}

/// The commands there are, as the answer to an unknown one lists them.
pub const LIST: &str = "#close (or #solve), #reopen, #assign me|EMAIL|NAME, #priority low|normal|high|urgent, \
                        #tag NAME, #note (the rest of the message is an internal note)";

/// Characters that show nothing, which a client may put before a `#`.
const INVISIBLE: &[char] = &['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}'];

/// Whether `text` starts with a line that looks like a command (`#...`),
/// whether or not it is one: what must never be posted as it stands.
pub fn looks_like_commands(text: &str) -> bool {
    read(text) != Commands::None
}

/// Most command lines read at the top of a message.
const MAX_LINES: usize = 20;

/// Reads the command lines at the top of `text` (blank lines among them
/// are skipped; the first other line that does not start with `#`, or
/// `#note`, ends them). Invisible characters at a line's start (a
/// zero-width space, a byte-order mark) do not hide a `#`.
pub fn read(text: &str) -> Commands {
    let mut commands = Vec::new();
    let mut lines = Vec::new();
    let mut rest_at = text.len();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim().trim_start_matches(INVISIBLE).trim();
        let start = offset;
        offset += raw.len();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            rest_at = start;
            break;
        }
        if commands.len() == MAX_LINES {
            return Commands::Unknown { line: cut(line) };
        }
        let Some(command) = parse(line) else { return Commands::Unknown { line: cut(line) } };
        lines.push(line.to_owned());
        if command == Command::Note {
            // `#note text`: the note starts on the command's own line.
            let same_line = line.split_once(char::is_whitespace).map_or("", |(_, t)| t.trim());
            let below = &text[offset.min(text.len())..];
            let rest = [same_line, below.trim()].iter().filter(|t| !t.is_empty()).copied().collect::<Vec<_>>();
            commands.push(command);
            return Commands::Given { commands, lines, rest: rest.join("\n") };
        }
        commands.push(command);
    }
    if commands.is_empty() {
        return Commands::None;
    }
    Commands::Given { commands, lines, rest: text[rest_at.min(text.len())..].trim().to_owned() }
}

/// One line as a command, if it is one.
fn parse(line: &str) -> Option<Command> {
    let (word, argument) = match line.split_once(char::is_whitespace) {
        Some((word, argument)) => (word, argument.trim()),
        None => (line, ""),
    };
    let word = word.to_ascii_lowercase();
    Some(match (word.as_str(), argument) {
        ("#close" | "#solve" | "#closed" | "#solved", "") => Command::Close,
        ("#reopen", "") => Command::Reopen,
        ("#note", _) => Command::Note,
        ("#assign", who) if !who.is_empty() && who.len() <= 200 => Command::Assign(who.to_owned()),
        ("#priority", level) => {
            let level = level.to_ascii_lowercase();
            matches!(level.as_str(), "low" | "normal" | "high" | "urgent").then_some(Command::Priority(level))?
        }
        ("#tag", tag) if !tag.is_empty() && tag.chars().count() <= 50 && !tag.contains(char::is_whitespace) => {
            Command::Tag(tag.to_lowercase())
        }
        _ => return None,
    })
}

/// A line as the answer names it: at most 80 characters.
fn cut(line: &str) -> String {
    match line.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(text: &str) -> (Vec<Command>, String) {
        match read(text) {
            Commands::Given { commands, rest, .. } => (commands, rest),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_are_read_at_the_top_only() {
        assert_eq!(given("#close\nThanks, all done."), (vec![Command::Close], "Thanks, all done.".to_owned()));
        assert_eq!(
            given("\n#assign me\n#Priority HIGH\n#tag billing\n\nLooking into it."),
            (
                vec![
                    Command::Assign("me".to_owned()),
                    Command::Priority("high".to_owned()),
                    Command::Tag("billing".to_owned())
                ],
                "Looking into it.".to_owned()
            )
        );
        assert_eq!(given("#solve"), (vec![Command::Close], String::new()));
        assert_eq!(read("Hello,\n#close\n"), Commands::None, "below the text it is text");
        assert_eq!(read("Issue #42 is fixed"), Commands::None);
        assert_eq!(read(""), Commands::None);
    }

    #[test]
    fn a_note_takes_the_rest_of_the_message() {
        assert_eq!(
            given("#note customer is on the old plan\n#close\nsecond line"),
            (vec![Command::Note], "customer is on the old plan\n#close\nsecond line".to_owned())
        );
        assert_eq!(
            given("#close\n#note\nrefund approved"),
            (vec![Command::Close, Command::Note], "refund approved".to_owned())
        );
    }

    #[test]
    fn an_unknown_line_at_the_top_stops_everything() {
        assert_eq!(read("#not\nsecret"), Commands::Unknown { line: "#not".to_owned() });
        assert_eq!(read("#close\n#priority someday\nhi"), Commands::Unknown { line: "#priority someday".to_owned() });
        assert_eq!(read("#tag two words"), Commands::Unknown { line: "#tag two words".to_owned() });
        assert_eq!(read("#close\n\n#nte secret"), Commands::Unknown { line: "#nte secret".to_owned() });
        assert_eq!(read("\u{200B}#not\nsecret"), Commands::Unknown { line: "#not".to_owned() });
        assert_eq!(read("#commnd"), Commands::Unknown { line: "#commnd".to_owned() });
        assert_eq!(read("#assign"), Commands::Unknown { line: "#assign".to_owned() });
        let long = format!("#{}", "x".repeat(500));
        let Commands::Unknown { line } = read(&long) else { panic!() };
        assert!(line.len() < 100);
    }
}
