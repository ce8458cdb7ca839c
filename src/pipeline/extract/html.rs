//! HTML mail to readable text, with quoted history removed by structure,
//! in one pass over html5ever's tokenizer: no document tree, no recursion.
//!
//! Reading is linear in the size of the HTML and bounded in memory and
//! stack by construction, whatever its shape:
//! - at most [`MAX_DEPTH`] elements are open at once; a start tag deeper
//!   than that keeps its text but not its structure (flattened), so ten
//!   thousand nested `<div>`s cost what a flat list of them costs;
//! - every search of the open elements (an end tag, an implicit close) looks
//!   at most [`MAX_DEPTH`] of them;
//! - a tag longer than [`MAX_TAG_BYTES`] is cut to that length before the
//!   tokenizer sees it, because html5ever checks each new attribute against
//!   all earlier ones of its tag (quadratic in a tag's attributes);
//! - quote marks are written for at most [`MAX_QUOTE_MARKS`] levels, so the
//!   text is never much longer than the HTML.
//!
//! Removed subtrees: Gmail's `gmail_quote` (and its attribution), Apple
//! Mail's and Thunderbird's `blockquote type="cite"` and
//! `moz-cite-prefix`, Yahoo's `yahoo_quoted`, signatures marked as such
//! (`gmail_signature`, Outlook's `#Signature`), and everything from
//! Outlook's `divRplyFwdMsg` (the From/Sent/To block) to the end of the
//! document, since Outlook puts the quoted message after it as siblings.
//!
//! The text keeps paragraphs and line breaks, turns list items into
//! `- item` (or `1. item`), links into `text (url)`, and drops images,
//! styles and scripts.

use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;

/// Elements open at once that keep their structure; deeper start tags are
/// read for their text only.
pub const MAX_DEPTH: usize = 100;
/// Bytes of one tag (its name and attributes) that are read.
pub const MAX_TAG_BYTES: usize = 1024;
/// Quote levels marked with `> ` at most (deeper ones are marked as deep).
const MAX_QUOTE_MARKS: u32 = 10;

/// The readable text of an HTML body, without quoted history when `strip_quotes`.
pub fn to_text(html: &str, strip_quotes: bool) -> String {
    let reader = read(html, Reader::new(strip_quotes, false));
    reader.out.finish()
}

/// Content-IDs (`cid:` references) of images shown only inside a signature.
pub fn signature_only_cids(html: &str) -> HashSet<String> {
    let reader = read(html, Reader::new(false, true));
    let mut in_signature = reader.signature_cids;
    in_signature.retain(|c| !reader.other_cids.contains(c));
    in_signature
}

/// Runs the tokenizer over `html` (its tags bounded) into `reader`.
fn read(html: &str, mut reader: Reader) -> Reader {
    reader.max_text = html.len().saturating_mul(2).saturating_add(64 * 1024);
    let bounded = bounded_tags(html);
    let sink = Sink(RefCell::new(reader));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(html5ever::tendril::StrTendril::from_slice(&bounded));
    // The sink never asks to stop for a script: one feed reads it all.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner()
}

/// `html` with every tag longer than [`MAX_TAG_BYTES`] cut to that length
/// (an open quoted value closed, then `>`). One pass; a tag starts at `<`
/// followed by a letter or `/`, and ends at the first `>` outside a quoted
/// attribute value.
fn bounded_tags(html: &str) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts_tag = bytes[i] == b'<' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'/');
        if !starts_tag {
            i += 1;
            continue;
        }
        let start = i;
        let (mut j, mut quote, mut after_equals) = (i + 1, None, false);
        // Where the quote state stood at the cut, should the tag be too long.
        let mut quote_at_cut = None;
        while j < bytes.len() {
            let b = bytes[j];
            if j - start == MAX_TAG_BYTES {
                quote_at_cut = Some(quote);
            }
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'>' => break,
                None if after_equals && (b == b'"' || b == b'\'') => {
                    quote = Some(b);
                    after_equals = false;
                }
                None if b == b'=' => after_equals = true,
                None if b.is_ascii_whitespace() => {}
                None => after_equals = false,
            }
            j += 1;
        }
        if let Some(open_quote) = quote_at_cut {
            let out = out.get_or_insert_with(|| String::with_capacity(html.len()));
            out.push_str(&html[copied..start]);
            let mut cut = start + MAX_TAG_BYTES;
            while !html.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&html[start..cut]);
            if let Some(q) = open_quote {
                out.push(char::from(q));
            }
            out.push('>');
            copied = (j + 1).min(bytes.len());
        }
        i = j + 1;
    }
    match out {
        None => Cow::Borrowed(html),
        Some(mut out) => {
            out.push_str(&html[copied.min(html.len())..]);
            Cow::Owned(out)
        }
    }
}

/// One element open in the reader.
struct Open {
    name: html5ever::LocalName,
    /// Nothing inside it is written (quoted history, a signature, a script).
    skip: bool,
    /// A signature container (for [`signature_only_cids`]).
    signature: bool,
    /// Something (an element, or text that is not whitespace) came inside it.
    content: bool,
    /// Its first child was a `<br>` and nothing else came: an editor's
    /// empty line (`<div><br></div>`), a paragraph break when it closes.
    lone_break: bool,
    /// An `a`'s target, written after its text.
    href: Option<String>,
    /// An `ol`'s items so far.
    items: u32,
}

/// What the tokenizer's tokens build.
struct Reader {
    strip_quotes: bool,
    /// Collect image Content-IDs instead of text.
    collect_cids: bool,
    stack: Vec<Open>,
    /// How many open elements are skipped ones.
    skipping: usize,
    /// Outlook's reply header was reached: nothing after it counts.
    done: bool,
    out: TextWriter,
    signature_cids: HashSet<String>,
    other_cids: HashSet<String>,
    /// Tokens read, for checking the reading budget now and then.
    tokens: u64,
    /// The longest text written: twice the HTML, and 64 KiB more.
    max_text: usize,
}

struct Sink(RefCell<Reader>);

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut reader = self.0.borrow_mut();
        reader.tokens += 1;
        if reader.tokens.is_multiple_of(4096) && crate::pipeline::budget::exhausted() {
            reader.done = true;
        }
        // The text is never much longer than the HTML: list markers and
        // quote marks could make it so.
        if reader.out.out.len() > reader.max_text {
            reader.done = true;
        }
        match token {
            Token::TagToken(tag) if tag.kind == TagKind::StartTag => return reader.start(&tag),
            Token::TagToken(tag) => reader.end(&tag),
            Token::CharacterTokens(text) => reader.text(&text),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn attr<'t>(tag: &'t Tag, name: &str) -> Option<&'t str> {
    tag.attrs.iter().find(|a| &*a.name.local == name).map(|a| &*a.value)
}

fn has_class(tag: &Tag, names: &[&str]) -> bool {
    attr(tag, "class").is_some_and(|classes| {
        classes.split_ascii_whitespace().any(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
    })
}

fn has_id(tag: &Tag, ids: &[&str]) -> bool {
    attr(tag, "id").is_some_and(|id| ids.iter().any(|n| id.trim().eq_ignore_ascii_case(n)))
}

/// Containers of quoted history and signatures (removed when stripping quotes).
fn is_quote_container(tag: &Tag) -> bool {
    has_class(
        tag,
        &[
            "gmail_quote",
            "gmail_quote_container",
            "moz-cite-prefix",
            "yahoo_quoted",
            "protonmail_quote",
            "zmail_extra",
            "gmail_signature",
            "moz-signature",
        ],
    ) || has_id(tag, &["yahoo_quoted", "signature"])
        || (&*tag.name == "blockquote" && attr(tag, "type").is_some_and(|t| t.trim().eq_ignore_ascii_case("cite")))
}

/// A signature container (images only in it are a signature's).
fn is_signature(tag: &Tag) -> bool {
    has_class(tag, &["gmail_signature", "moz-signature"]) || has_id(tag, &["signature"])
}

/// Outlook's reply header: the quoted message follows it, to the end.
fn is_cut_point(tag: &Tag) -> bool {
    has_id(tag, &["divRplyFwdMsg", "x_divRplyFwdMsg", "appendonsend"])
        || (&*tag.name == "div" && has_class(tag, &["OutlookMessageHeader"]))
}

fn is_void(name: &str) -> bool {
    matches!(
        name,
        "area"
            | "base"
            | "br"
            | "col"
            | "embed"
            | "hr"
            | "img"
            | "input"
            | "link"
            | "meta"
            | "param"
            | "source"
            | "track"
            | "wbr"
            | "keygen"
            | "basefont"
            | "bgsound"
            | "frame"
    )
}

/// Elements whose content is never text to read.
fn is_hidden(name: &str) -> bool {
    matches!(name, "head" | "style" | "script" | "title" | "template" | "noscript")
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "section"
            | "article"
            | "header"
            | "footer"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "ul"
            | "ol"
            | "table"
            | "tr"
            | "blockquote"
            | "address"
            | "center"
            | "dl"
            | "dt"
            | "dd"
            | "body"
    )
}

/// Start tags that end an open `<p>` (HTML's "close a p element").
fn closes_p(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "center"
            | "details"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hr"
            | "li"
            | "main"
            | "menu"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "table"
            | "ul"
            | "dd"
            | "dt"
    )
}

impl Reader {
    fn new(strip_quotes: bool, collect_cids: bool) -> Self {
        Self {
            strip_quotes,
            collect_cids,
            stack: Vec::with_capacity(32),
            skipping: 0,
            done: false,
            out: TextWriter::default(),
            signature_cids: HashSet::new(),
            other_cids: HashSet::new(),
            tokens: 0,
            max_text: usize::MAX,
        }
    }

    fn writing(&self) -> bool {
        !self.done && self.skipping == 0 && !self.collect_cids
    }

    fn start(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        if self.done {
            return TokenSinkResult::Continue;
        }
        let name: &str = &tag.name;
        if self.collect_cids
            && name == "img"
            && let Some(cid) = attr(tag, "src").and_then(|s| s.trim().strip_prefix("cid:"))
        {
            let cid = cid.trim().to_ascii_lowercase();
            match self.stack.iter().any(|o| o.signature) {
                true => self.signature_cids.insert(cid),
                false => self.other_cids.insert(cid),
            };
        }
        if self.strip_quotes && self.skipping == 0 && is_cut_point(tag) {
            self.done = true;
            return TokenSinkResult::Continue;
        }
        self.close_implied_by(name);
        let first_child = self.stack.last().is_some_and(|top| !top.content);
        if let Some(top) = self.stack.last_mut() {
            top.content = true;
            top.lone_break = false;
        }
        if name == "br" {
            self.line_break_tag(first_child);
            return TokenSinkResult::Continue;
        }
        if is_void(name) {
            if name == "hr" && self.writing() {
                self.out.block();
            }
            return TokenSinkResult::Continue;
        }
        let raw = match name {
            "script" => TokenSinkResult::RawData(RawKind::ScriptData),
            "style" | "xmp" | "iframe" | "noembed" | "noframes" => TokenSinkResult::RawData(RawKind::Rawtext),
            "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
            "plaintext" => TokenSinkResult::Plaintext,
            _ => TokenSinkResult::Continue,
        };
        let skip = is_hidden(name) || (self.strip_quotes && is_quote_container(tag));
        if self.stack.len() >= MAX_DEPTH {
            // Too deep to keep its structure: its text is read where it is.
            // A quote container this deep takes the rest of its parent along.
            if skip && let Some(top) = self.stack.last_mut().filter(|top| !top.skip) {
                top.skip = true;
                self.skipping += 1;
            } else if is_block(name) && self.writing() {
                self.out.block();
            }
            return raw;
        }
        let mut open = Open {
            name: tag.name.clone(),
            skip,
            signature: is_signature(tag),
            content: false,
            lone_break: false,
            href: None,
            items: 0,
        };
        if self.writing() && !skip {
            self.start_effects(tag, &mut open);
        }
        if skip {
            self.skipping += 1;
        }
        self.stack.push(open);
        raw
    }

    /// What an element does to the text as it opens.
    fn start_effects(&mut self, tag: &Tag, open: &mut Open) {
        let name: &str = &tag.name;
        match name {
            "pre" => {
                self.out.block();
                self.out.pre += 1;
            }
            // A quote left in (not one of the known containers): its lines
            // are marked `> `, so that the text's own quote handling sees it
            // (mail.ru, Yandex, Outlook.com).
            "blockquote" => {
                self.out.block();
                self.out.quote_depth += 1;
            }
            "li" => {
                self.out.block();
                let marker = match self.stack.last_mut() {
                    Some(parent) if &*parent.name == "ol" => {
                        parent.items += 1;
                        format!("{}. ", parent.items)
                    }
                    _ => "- ".to_owned(),
                };
                self.out.raw(&marker);
            }
            "a" => open.href = attr(tag, "href").map(str::to_owned),
            // Paragraphs have a blank line above them, as browsers show them.
            "p" => self.out.paragraph(),
            _ if is_block(name) => self.out.block(),
            _ => {}
        }
    }

    /// `<br>`: a line break, or an editor's empty line when it is the only
    /// thing in a block (`first_child`: nothing came in it before; should
    /// anything come after, the mark goes).
    fn line_break_tag(&mut self, first_child: bool) {
        if !self.writing() {
            return;
        }
        self.out.line_break();
        if first_child
            && let Some(top) = self.stack.last_mut()
            && is_block(&top.name)
            && &*top.name != "body"
        {
            top.lone_break = true;
        }
    }

    /// Closes the elements a start tag `name` ends implicitly, as browsers do.
    fn close_implied_by(&mut self, name: &str) {
        let close_to = |stack: &[Open], wanted: &[&str], boundary: &[&str]| -> Option<usize> {
            for (i, open) in stack.iter().enumerate().rev() {
                let n: &str = &open.name;
                if wanted.contains(&n) {
                    return Some(i);
                }
                if boundary.contains(&n) {
                    return None;
                }
            }
            None
        };
        let mut target = None;
        if closes_p(name) {
            target = close_to(&self.stack, &["p"], &["button", "table", "td", "th", "html", "body", "li", "div"]);
        }
        let more = match name {
            "li" => close_to(&self.stack, &["li"], &["ul", "ol", "table", "body"]),
            "dt" | "dd" => close_to(&self.stack, &["dt", "dd"], &["dl", "table", "body"]),
            "tr" => close_to(&self.stack, &["tr", "td", "th"], &["table", "body"]),
            "td" | "th" => close_to(&self.stack, &["td", "th"], &["tr", "table", "body"]),
            "option" => close_to(&self.stack, &["option"], &["select", "body"]),
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => self
                .stack
                .last()
                .filter(|top| matches!(&*top.name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6"))
                .map(|_| self.stack.len() - 1),
            _ => None,
        };
        if let Some(index) = [target, more].into_iter().flatten().min() {
            self.pop_to(index);
        }
    }

    fn end(&mut self, tag: &Tag) {
        if self.done {
            return;
        }
        let name: &str = &tag.name;
        if name == "br" {
            // `</br>` is read as `<br>`, as browsers do.
            self.line_break_tag(false);
            return;
        }
        if name == "p" && !self.stack.iter().rev().take(MAX_DEPTH).any(|o| &*o.name == "p") {
            if self.writing() {
                self.out.paragraph();
            }
            return;
        }
        if let Some(index) = self.stack.iter().rposition(|o| o.name == tag.name) {
            self.pop_to(index);
        }
    }

    /// Closes the open elements from the top down to `index`, included.
    fn pop_to(&mut self, index: usize) {
        while self.stack.len() > index {
            let Some(open) = self.stack.pop() else { break };
            if open.skip {
                self.skipping = self.skipping.saturating_sub(1);
                continue;
            }
            if self.writing() {
                self.end_effects(&open);
            }
        }
    }

    /// What an element does to the text as it closes.
    fn end_effects(&mut self, open: &Open) {
        let name: &str = &open.name;
        if open.lone_break {
            self.out.paragraph();
        }
        match name {
            "pre" => {
                self.out.pre = self.out.pre.saturating_sub(1);
                self.out.block();
            }
            "blockquote" => {
                self.out.quote_depth = self.out.quote_depth.saturating_sub(1);
                self.out.paragraph();
            }
            "a" => {
                if let Some(href) = &open.href {
                    self.out.link_target(href);
                }
            }
            "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "ul" | "ol" => self.out.paragraph(),
            _ if is_block(name) || name == "li" => self.out.block(),
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        if !text.trim().is_empty()
            && let Some(top) = self.stack.last_mut()
        {
            top.content = true;
            top.lone_break = false;
        }
        if self.writing() {
            self.out.text(text);
        }
    }
}

/// Accumulates text with HTML's whitespace rules and block boundaries.
#[derive(Default)]
struct TextWriter {
    out: String,
    /// Newlines owed before the next text: 1 = line, 2 = paragraph.
    pending_breaks: u8,
    /// A space is owed before the next word.
    pending_space: bool,
    /// Inside `<pre>`: whitespace is kept.
    pre: u32,
    /// Inside this many `<blockquote>`s: each line starts with as many `> `
    /// (at most [`MAX_QUOTE_MARKS`]).
    quote_depth: u32,
}

impl TextWriter {
    fn flush_breaks(&mut self) {
        self.flush_breaks_only();
        if self.quote_depth > 0 && (self.out.is_empty() || self.out.ends_with('\n')) {
            for _ in 0..self.quote_depth.min(MAX_QUOTE_MARKS) {
                self.out.push_str("> ");
            }
        }
    }

    fn flush_breaks_only(&mut self) {
        if self.out.is_empty() {
            self.pending_breaks = 0;
            self.pending_space = false;
            return;
        }
        if self.pending_breaks > 0 {
            let have = self.out.bytes().rev().take(2).take_while(|&c| c == b'\n').count() as u8;
            for _ in have..self.pending_breaks {
                self.out.push('\n');
            }
            self.pending_breaks = 0;
            self.pending_space = false;
        } else if self.pending_space {
            if !self.out.ends_with([' ', '\n']) {
                self.out.push(' ');
            }
            self.pending_space = false;
        }
    }

    fn text(&mut self, text: &str) {
        if self.pre > 0 {
            self.flush_breaks();
            self.out.push_str(text);
            return;
        }
        let starts_with_space = text.starts_with(|c: char| c.is_whitespace());
        let ends_with_space = text.ends_with(|c: char| c.is_whitespace());
        let mut words = text.split_whitespace().peekable();
        if words.peek().is_none() {
            if !text.is_empty() {
                self.pending_space = true;
            }
            return;
        }
        if starts_with_space {
            self.pending_space = true;
        }
        let mut first = true;
        for word in words {
            if !first {
                self.pending_space = true;
            }
            self.flush_breaks();
            self.out.push_str(&word.replace('\u{a0}', " "));
            first = false;
        }
        if ends_with_space {
            self.pending_space = true;
        }
    }

    fn raw(&mut self, text: &str) {
        self.flush_breaks();
        self.out.push_str(text);
    }

    fn line_break(&mut self) {
        self.out.push('\n');
        self.pending_space = false;
    }

    fn block(&mut self) {
        self.pending_breaks = self.pending_breaks.max(1);
    }

    fn paragraph(&mut self) {
        self.pending_breaks = 2;
    }

    fn link_target(&mut self, href: &str) {
        let href = href.trim();
        if href.is_empty() || href.starts_with('#') || href.starts_with("cid:") || href.starts_with("javascript:") {
            return;
        }
        let shown = href.strip_prefix("mailto:").unwrap_or(href);
        let tail: String = self.out.chars().rev().take(shown.len() + 2).collect::<Vec<_>>().into_iter().rev().collect();
        if tail.trim_end().ends_with(shown) || tail.trim_end().ends_with(href) {
            return;
        }
        self.flush_breaks();
        self.out.push_str(&format!(" ({shown})"));
    }

    /// The text: lines without trailing spaces, no blank lines at either end.
    /// Built line by line into one string (no list of lines: a text of
    /// millions of short lines would take sixteen bytes a line more).
    fn finish(self) -> String {
        let mut text = String::with_capacity(self.out.len());
        for line in self.out.lines() {
            let line = line.trim_end();
            if text.is_empty() && line.is_empty() {
                continue;
            }
            text.push_str(line);
            text.push('\n');
        }
        let end = text.trim_end().len();
        text.truncate(end);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_TAG_BYTES, bounded_tags, signature_only_cids, to_text};

    #[test]
    fn empty_lines_and_plain_blockquotes() {
        // Editors write an empty line as `<div><br></div>`; paragraphs keep their blank line.
        assert_eq!(to_text("<div>One</div><div><br></div><div>Two</div><p>Three</p>", true), "One\n\nTwo\n\nThree");
        // A blockquote that is not one of the known containers is marked as quoted text.
        assert_eq!(
            to_text(
                "<div>Ok</div><div>1 Dec, \"S\" &lt;s@x.example&gt;:</div><blockquote><div>old</div><div>text</div></blockquote>",
                true
            ),
            "Ok\n1 Dec, \"S\" <s@x.example>:\n> old\n> text"
        );
    }

    #[test]
    fn paragraphs_lists_and_links() {
        let html = "<html><head><style>p{}</style></head><body><p>Hello <b>there</b>,</p>\
                    <ul><li>one</li><li>two</li></ul><ol><li>first</li><li>second</li></ol>\
                    <p>See <a href=\"https://example.com/x\">the docs</a> or https://example.com\
                    <img src=\"https://t.example/pixel.gif\"></p><div>a<br>b</div></body></html>";
        assert_eq!(
            to_text(html, true),
            "Hello there,\n\n- one\n- two\n\n1. first\n2. second\n\nSee the docs (https://example.com/x) or https://example.com\n\na\nb"
        );
        // Unclosed items and paragraphs close themselves, as in a browser.
        assert_eq!(to_text("<ol><li>one<li>two</ol><p>a<p>b", true), "1. one\n2. two\n\na\n\nb");
    }

    #[test]
    fn quotes_are_removed_by_structure() {
        let gmail = "<div dir=\"ltr\">Thanks!</div><br><div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon wrote:</div><blockquote class=\"gmail_quote\">old</blockquote></div>";
        assert_eq!(to_text(gmail, true), "Thanks!");
        let outlook = "<div>Fine now.</div><hr><div id=\"divRplyFwdMsg\"><b>From:</b> Support</div><div>old text</div>";
        assert_eq!(to_text(outlook, true), "Fine now.");
        let apple = "<div>Yes<br><br><blockquote type=\"cite\">On 1 Dec, S wrote:<br>old</blockquote></div>";
        assert_eq!(to_text(apple, true), "Yes");
        assert!(to_text(apple, false).contains("old"));
        let script = "<p>Hi</p><script>if (a < b) { document.write('<p>no</p>') }</script><style>p{}</style>";
        assert_eq!(to_text(script, true), "Hi");
    }

    #[test]
    fn images_only_in_a_signature_are_named() {
        let html = "<p>See <img src=\"cid:shot\"></p><div class=\"gmail_signature\"><img src=\"cid:LOGO\"><img src=\"cid:shot\"></div>";
        assert_eq!(signature_only_cids(html), ["logo".to_owned()].into_iter().collect());
    }

    #[test]
    fn deep_nesting_keeps_its_text_and_a_bounded_structure() {
        for element in ["div", "blockquote", "b", "span", "li", "dl", "table", "p", "a href=x"] {
            let name = element.split(' ').next().unwrap();
            let html =
                format!("{}deep text{}", format!("<{element}>").repeat(20_000), format!("</{name}>").repeat(20_000));
            let text = to_text(&html, true);
            assert!(text.contains("deep text"), "{element}: {}", &text[..text.len().min(200)]);
            assert!(text.len() < html.len(), "{element}: the text is not longer than the HTML");
        }
        // Closing tags that match nothing are ignored.
        assert_eq!(to_text(&format!("<p>a</p>{}<p>b</p>", "</div></i>".repeat(5000)), true), "a\n\nb");
    }

    #[test]
    fn a_tag_longer_than_the_limit_is_cut_before_the_tokenizer() {
        let attributes: String = (0..50_000).map(|i| format!(" a{i}=\"v{i}\"")).collect();
        let html = format!("<div{attributes}>kept</div><p title='a>b'>x</p>");
        let bounded = bounded_tags(&html);
        assert!(bounded.len() < MAX_TAG_BYTES + 100, "{}", bounded.len());
        assert!(bounded.ends_with("kept</div><p title='a>b'>x</p>"), "{bounded}");
        assert_eq!(to_text(&html, true), "kept\n\nx");
        assert!(matches!(bounded_tags("<p class=x>short</p>"), std::borrow::Cow::Borrowed(_)));
    }
}
