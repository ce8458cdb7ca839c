//! HTML mail to readable text, with quoted history removed by structure
//! before the conversion (html5ever parses, via scraper).
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

use ego_tree::NodeRef;
use scraper::{Html, Node, Selector};
use std::collections::HashSet;
use std::sync::LazyLock;

static QUOTES: LazyLock<Selector> = LazyLock::new(|| {
    Selector::parse(
        ".gmail_quote, .gmail_quote_container, .gmail_extra > .gmail_quote, blockquote[type=cite], \
         .moz-cite-prefix, .yahoo_quoted, #yahoo_quoted, .protonmail_quote, .zmail_extra, \
         .gmail_signature, #Signature, .moz-signature, #signature",
    )
    .expect("valid quote selector")
});
static CUT_FROM: LazyLock<Selector> = LazyLock::new(|| {
    Selector::parse("#divRplyFwdMsg, #x_divRplyFwdMsg, #appendonsend, div.OutlookMessageHeader")
        .expect("valid cut selector")
});
static SIGNATURES: LazyLock<Selector> = LazyLock::new(|| {
    Selector::parse(".gmail_signature, #Signature, .moz-signature, #signature").expect("valid signature selector")
});

/// The readable text of an HTML body, without quoted history when `strip_quotes`.
pub fn to_text(html: &str, strip_quotes: bool) -> String {
    let document = Html::parse_document(html);
    let mut skip = HashSet::new();
    let mut cut = None;
    if strip_quotes {
        skip.extend(document.select(&QUOTES).map(|e| e.id()));
        cut = document.select(&CUT_FROM).next().map(|e| e.id());
    }
    let mut out = TextWriter::default();
    walk(document.tree.root(), &skip, cut, &mut out);
    out.finish()
}

/// Content-IDs (`cid:` references) of images shown only inside a signature.
pub fn signature_only_cids(html: &str) -> HashSet<String> {
    let document = Html::parse_document(html);
    let img = Selector::parse("img[src]").expect("valid img selector");
    let cid = |src: &str| src.strip_prefix("cid:").map(|c| c.trim().to_ascii_lowercase());
    let mut in_signature = HashSet::new();
    for signature in document.select(&SIGNATURES) {
        in_signature.extend(signature.select(&img).filter_map(|i| cid(i.attr("src")?)));
    }
    let outside: HashSet<String> = document
        .select(&img)
        .filter(|i| !i.ancestors().any(|a| a.value().as_element().is_some_and(is_signature)))
        .filter_map(|i| cid(i.attr("src")?))
        .collect();
    in_signature.retain(|c| !outside.contains(c));
    in_signature
}

fn is_signature(element: &scraper::node::Element) -> bool {
    element.has_class("gmail_signature", scraper::CaseSensitivity::AsciiCaseInsensitive)
        || element.has_class("moz-signature", scraper::CaseSensitivity::AsciiCaseInsensitive)
        || element.id().is_some_and(|id| id.eq_ignore_ascii_case("signature"))
}

/// Returns `false` once the cut point was reached: stop everything.
fn walk(
    node: NodeRef<'_, Node>,
    skip: &HashSet<ego_tree::NodeId>,
    cut: Option<ego_tree::NodeId>,
    out: &mut TextWriter,
) -> bool {
    if Some(node.id()) == cut {
        return false;
    }
    if skip.contains(&node.id()) {
        return true;
    }
    match node.value() {
        Node::Text(text) => {
            out.text(text);
            true
        }
        Node::Element(element) => {
            let name = element.name();
            match name {
                "head" | "style" | "script" | "title" | "img" | "template" | "noscript" => {
                    return true;
                }
                "br" => {
                    // `<div><br></div>` is how editors write an empty line.
                    if is_alone_in_block(node) {
                        out.paragraph();
                    } else {
                        out.line_break();
                    }
                    return true;
                }
                "hr" => {
                    out.block();
                    return true;
                }
                "pre" => out.pre += 1,
                // A quote left in (not one of the known containers): its
                // lines are marked `> `, so that the text's own quote
                // handling sees it (mail.ru, Yandex, Outlook.com).
                "blockquote" => {
                    out.block();
                    out.quote_depth += 1;
                }
                "li" => {
                    out.block();
                    let marker = match node.parent().and_then(|p| p.value().as_element().map(|e| e.name() == "ol")) {
                        Some(true) => {
                            let n = node
                                .prev_siblings()
                                .filter(|s| s.value().as_element().is_some_and(|e| e.name() == "li"))
                                .count()
                                + 1;
                            format!("{n}. ")
                        }
                        _ => "- ".to_owned(),
                    };
                    out.raw(&marker);
                }
                // Paragraphs have a blank line above them, as browsers show them.
                "p" => out.paragraph(),
                _ if is_block(name) => out.block(),
                _ => {}
            }
            for child in node.children() {
                if !walk(child, skip, cut, out) {
                    return false;
                }
            }
            match name {
                "pre" => {
                    out.pre -= 1;
                    out.block();
                }
                "blockquote" => {
                    out.quote_depth = out.quote_depth.saturating_sub(1);
                    out.paragraph();
                }
                "a" => {
                    if let Some(href) = element.attr("href") {
                        out.link_target(href);
                    }
                }
                "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "ul" | "ol" => out.paragraph(),
                _ if is_block(name) || name == "li" => out.block(),
                _ => {}
            }
            true
        }
        _ => {
            for child in node.children() {
                if !walk(child, skip, cut, out) {
                    return false;
                }
            }
            true
        }
    }
}

/// Whether `node` is the only thing (besides whitespace) in a block element.
fn is_alone_in_block(node: NodeRef<'_, Node>) -> bool {
    let Some(parent) = node.parent() else { return false };
    let block = parent.value().as_element().is_some_and(|e| is_block(e.name()) && e.name() != "body");
    block
        && parent
            .children()
            .all(|child| child.id() == node.id() || child.value().as_text().is_some_and(|t| t.trim().is_empty()))
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
    /// Inside this many `<blockquote>`s: each line starts with as many `> `.
    quote_depth: u32,
}

impl TextWriter {
    fn flush_breaks(&mut self) {
        self.flush_breaks_only();
        if self.quote_depth > 0 && (self.out.is_empty() || self.out.ends_with('\n')) {
            for _ in 0..self.quote_depth {
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
            let have = self.out.chars().rev().take_while(|&c| c == '\n').count() as u8;
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

    fn finish(self) -> String {
        let mut lines: Vec<&str> = self.out.lines().map(str::trim_end).collect();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        lines.join("\n").trim_start_matches('\n').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::to_text;

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
    }
}
