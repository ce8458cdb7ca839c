//! Messages of pathological shapes, built to a given size: what an attacker
//! sends to make reading slow or deep. Used by `benches/pathological.rs`
//! (time and memory per MB) and by the SMTP test that sends the worst of
//! them to a running server (`tests/it/hostile.rs`).

/// One shape: its name and how to build a message of about `size` bytes.
pub(crate) struct Shape {
    /// What it is, for the report.
    pub(crate) name: &'static str,
    /// Builds a whole message (headers and body) of about `size` bytes.
    pub(crate) build: fn(usize) -> Vec<u8>,
}

fn message(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "From: olivia@acme.example\r\nTo: support@support.example.test\r\nSubject: Re: shape\r\n\
         Message-ID: <shape-{}@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}\r\n",
        body.len()
    )
    .into_bytes()
}

fn html(body: String) -> Vec<u8> {
    message("text/html; charset=utf-8", &body)
}

/// `open` repeated to fill `size` (minus the closing part), text inside,
/// then `close` as often.
fn nested(size: usize, open: &str, close: &str) -> Vec<u8> {
    let n = size / (open.len() + close.len()).max(1);
    html(format!("{}deep text{}", open.repeat(n), close.repeat(n)))
}

/// Every shape.
pub(crate) fn all() -> Vec<Shape> {
    vec![
        Shape { name: "nested <div>", build: |s| nested(s, "<div>", "</div>") },
        Shape { name: "nested <blockquote>", build: |s| nested(s, "<blockquote>", "</blockquote>") },
        Shape { name: "nested cite quotes", build: |s| nested(s, "<blockquote type=\"cite\">", "</blockquote>") },
        Shape { name: "nested <b> (unclosed)", build: |s| nested(s, "<b>", "") },
        Shape { name: "nested <span>", build: |s| nested(s, "<span>", "</span>") },
        Shape { name: "nested lists", build: |s| nested(s, "<ul><li>", "</li></ul>") },
        Shape { name: "nested <dl>", build: |s| nested(s, "<dl><dt>t<dd>", "</dd></dl>") },
        Shape { name: "nested tables", build: |s| nested(s, "<table><tr><td>", "</td></tr></table>") },
        Shape { name: "nested <a href>", build: |s| nested(s, "<a href=\"https://x.example/\">", "</a>") },
        Shape {
            name: "one tag, huge attribute list",
            build: |s| {
                let attributes: String = (0..s / 12).map(|i| format!(" a{i}=\"v\"")).collect();
                html(format!("<div{attributes}>text</div>"))
            },
        },
        Shape { name: "entities", build: |s| html("&amp;&lt;&#x263A;&nbsp;".repeat(s / 23)) },
        Shape { name: "<br>", build: |s| html("<br>".repeat(s / 4)) },
        Shape { name: "unclosed <p>", build: |s| html("<p>x".repeat(s / 4)) },
        Shape {
            name: "thousands of quote levels (text)",
            build: |s| {
                let line = format!("{}text\r\n", "> ".repeat(2000));
                message("text/plain; charset=utf-8", &format!("Reply\r\n\r\n{}", line.repeat(s / line.len() + 1)))
            },
        },
        Shape { name: "one long line (text)", build: |s| message("text/plain; charset=utf-8", &"word ".repeat(s / 5)) },
        Shape {
            name: "non-ASCII lines ending in a colon",
            build: |s| {
                let line = "Привет мир это строка текста schrieb:\r\n";
                message("text/plain; charset=utf-8", &line.repeat(s / line.len() + 1))
            },
        },
        Shape {
            name: "bare-CR line ends",
            build: |s| {
                let body = "Some text.\r\n> quoted\r\nSent from my iPhone\r\n".repeat(s / 40 + 1);
                String::from_utf8(message("text/plain; charset=utf-8", &body))
                    .unwrap()
                    .replace("\r\n", "\r")
                    .into_bytes()
            },
        },
        Shape {
            name: "pasted chain of attributions and footers",
            build: |s| {
                let older = "Thanks.\r\n\r\nSent from my iPhone\r\n\r\nOn Mon, 23 Nov 2026 at 10:00, Support <s@x.example> wrote:\r\nolder text\r\n\r\n";
                message("text/plain; charset=utf-8", &older.repeat(s / older.len() + 1))
            },
        },
        Shape {
            name: "one long non-ASCII line ending in a colon",
            build: |s| message("text/plain; charset=utf-8", &format!("{} schrieb x:", "é".repeat(s / 2))),
        },
        Shape {
            name: "many small parts",
            build: |s| {
                let part = "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n";
                let body = format!("{}--b--", part.repeat(s / part.len()));
                message("multipart/mixed; boundary=b", &body)
            },
        },
    ]
}
