//! Notification rendering: minijinja templates to a subject, a plain-text
//! body and an HTML body.
//!
//! Every kind of notification has three templates in `templates/`:
//! `<kind>.subject`, `<kind>.txt` and `<kind>.html` (files starting with `_`
//! are shared parts). They are compiled into the binary; a file of the same
//! name in the configured templates folder overrides one. HTML templates
//! escape everything they print (minijinja's auto-escaping for `.html`), and a
//! rendered subject is flattened to one line, so nothing a user wrote can
//! add a header or markup. Undefined variables are errors, which is how
//! `templates check` finds a misspelt one.

use minijinja::Environment;
use serde::Serialize;
use std::path::Path;

/// The template files of one folder of `templates/` (`""`: English, `"de/"`,
/// ...): every one must exist, so a shipped translation is complete.
macro_rules! files_in {
    ($dir:literal) => {
        files_in!(@ $dir;
            "_layout.html", "_messages.html", "_messages.txt",
            "agent_replied.subject", "agent_replied.txt", "agent_replied.html",
            "customer_replied.subject", "customer_replied.txt", "customer_replied.html",
            "ticket_opened.subject", "ticket_opened.txt", "ticket_opened.html",
            "ticket_received.subject", "ticket_received.txt", "ticket_received.html",
            "refusal_no_new_chat.subject", "refusal_no_new_chat.txt", "refusal_no_new_chat.html",
            "refusal_tickets_not_in_plan.subject", "refusal_tickets_not_in_plan.txt", "refusal_tickets_not_in_plan.html",
            "refusal_thread_closed.subject", "refusal_thread_closed.txt", "refusal_thread_closed.html",
            "refusal_not_allowed.subject", "refusal_not_allowed.txt", "refusal_not_allowed.html",
            "refusal_unknown_command.subject", "refusal_unknown_command.txt", "refusal_unknown_command.html",
            "on_call_page.subject", "on_call_page.txt", "on_call_page.html",
            "chat_transcript.subject", "chat_transcript.txt", "chat_transcript.html"
        )
    };
    (@ $dir:literal; $($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $dir, $name)))),*]
    };
}

/// Every template file in English: (name, built-in text).
const BUILTIN: &[(&str, &str)] = files_in!("");

/// The translations shipped: (language, its files), each complete.
const SHIPPED: &[(&str, &[(&str, &str)])] =
    &[("de", files_in!("de/")), ("fr", files_in!("fr/")), ("es", files_in!("es/")), ("ja", files_in!("ja/"))];

/// Every kind of notification, by template name.
pub const KINDS: &[&str] = &[
    "agent_replied",
    "customer_replied",
    "ticket_opened",
    "ticket_received",
    "refusal_no_new_chat",
    "refusal_tickets_not_in_plan",
    "refusal_thread_closed",
    "refusal_not_allowed",
    "refusal_unknown_command",
    "on_call_page",
    "chat_transcript",
];

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, safe for a header.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
    /// The language it was written in (its `Content-Language`).
    pub language: String,
}

/// What every template may use. Fields that do not apply to a kind are
/// `None` (a refusal has no thread).
#[derive(Debug, Clone, Serialize)]
pub struct NotificationContext {
    /// Who receives it.
    pub recipient: PersonContext,
    /// The support address.
    pub support_address: String,
    /// The Dashboard's base URL.
    pub dashboard_url: String,
    /// The thread it is about.
    pub thread: Option<ThreadContext>,
    /// The thread's site.
    pub site: Option<SiteContext>,
    /// What the site's plan promises.
    pub plan: Option<PlanContext>,
    /// The new messages (several when replies were folded together; every
    /// message for a transcript).
    pub messages: Vec<MessageContext>,
    /// Earlier messages, newest first, for context.
    pub history: Vec<MessageContext>,
    /// The "reply above this line" marker, or empty when no reply is expected.
    pub reply_marker: String,
    /// The `[ref:TOKEN]` marker, or empty.
    pub ref_marker: String,
    /// For refusal notices: what was refused and why.
    pub refusal: Option<RefusalContext>,
    /// The others in the conversation besides the recipient, by name, when
    /// people were copied into it ("Also in this conversation: ...").
    pub also: Vec<String>,
    /// For a participant copied into the conversation: the link that takes
    /// them (only them) out of it; empty otherwise.
    pub leave_url: String,
    /// The languages to write in, the recipient's first, English last.
    #[serde(skip)]
    pub languages: Vec<String>,
}

/// Messages shown at most in one notification: the first and the last
/// half of them, with how many lie between.
pub const MAX_SHOWN: usize = 20;

impl NotificationContext {
    /// Makes the messages fit in `budget` bytes of text: a merge of more
    /// than [`MAX_SHOWN`] messages keeps its first and last ones and says
    /// how many lie between, and each text longer than its share is cut
    /// with a sentence saying where to read it whole.
    /// A transcript (`keep_all`) keeps every message, each cut to its share.
    pub fn fit(&mut self, budget: usize, keep_all: bool) {
        if !keep_all && self.messages.len() > MAX_SHOWN {
            let omitted = self.messages.len() - MAX_SHOWN;
            let mut last = self.messages.split_off(self.messages.len() - MAX_SHOWN / 2);
            self.messages.truncate(MAX_SHOWN / 2);
            last[0].omitted_before = omitted;
            self.messages.append(&mut last);
        }
        let url = self.thread.as_ref().map(|t| t.url.clone()).unwrap_or_default();
        let share = budget / (self.messages.len() + self.history.len()).max(1);
        for message in self.messages.iter_mut().chain(self.history.iter_mut()) {
            cut_text(&mut message.body, share, &url);
        }
    }
}

/// Cuts `body` to about `limit` bytes (at a character boundary), saying so
/// and where to read it whole.
fn cut_text(body: &mut String, limit: usize, url: &str) {
    if body.len() <= limit {
        return;
    }
    let total = body.len();
    let mut at = limit;
    while !body.is_char_boundary(at) {
        at -= 1;
    }
    body.truncate(at);
    let place = if url.is_empty() { "in the Dashboard".to_owned() } else { format!("at {url}") };
    body.push_str(&format!(
        "\n\n[This message is {total} bytes long; the rest is not shown here. Read it whole {place}.]"
    ));
}

/// A person.
#[derive(Debug, Clone, Serialize)]
pub struct PersonContext {
    /// Display name.
    pub name: String,
    /// Address.
    pub email: String,
}

/// A chat or ticket.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadContext {
    /// Row id.
    pub id: i64,
    /// `chat` or `ticket`.
    pub kind: String,
    /// `chat #N` / `ticket #N`.
    pub label: String,
    /// `[Chat #N]` / `[Ticket #N]`, the stable subject tag.
    pub label_tag: String,
    /// `Chat #N` / `Ticket #N` in the recipient's language (`チャット #N`).
    pub name: String,
    /// Subject.
    pub subject: String,
    /// Tickets: the number.
    pub ticket_number: Option<i64>,
    /// Tickets: the type.
    pub ticket_type: Option<String>,
    /// The conversation in the Dashboard.
    pub url: String,
}

/// A site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteContext {
    /// Name.
    pub name: String,
    /// Plan id.
    pub plan: String,
    /// Plan display name.
    pub plan_name: String,
}

/// The promises of the plan that applies to a site.
#[derive(Debug, Clone, Serialize)]
pub struct PlanContext {
    /// Plan display name.
    pub name: String,
    /// "2 hours", or `None` without a ticket promise.
    pub ticket_response: Option<String>,
    /// "30 minutes", or `None` without on-call.
    pub on_call_response: Option<String>,
    /// When the ticket promise applies.
    pub support_hours: Option<String>,
}

/// A message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageContext {
    /// Author's name.
    pub author_name: String,
    /// Whether an agent wrote it.
    pub from_agent: bool,
    /// `dashboard` or `email`.
    pub source: String,
    /// When it was written, e.g. `2026-11-23 10:05 UTC`.
    pub time: String,
    /// The text.
    pub body: String,
    /// Its attachments.
    pub attachments: Vec<AttachmentContext>,
    /// Messages left out just before this one (a long merge shows its
    /// first and last messages and how many lie between).
    pub omitted_before: usize,
}

/// An attachment.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentContext {
    /// File name.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Whether the file is attached to this mail.
    pub attached: bool,
    /// Where to download it (a signed link that expires), when it is not
    /// attached and the server has a public URL; empty otherwise.
    pub url: String,
    /// The stored attachment.
    #[serde(skip)]
    pub id: i64,
}

/// A refused email.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalContext {
    /// Its subject.
    pub subject: String,
    /// Why it was refused, in words.
    pub reason: String,
    /// For a customer whose plan pages on-call: the address that opens an
    /// emergency ticket; empty otherwise.
    pub emergency_address: String,
}

/// "2 hours", "30 minutes", "1 day" (English; see [`super::locale::duration`]).
pub fn human_minutes(minutes: i64) -> String {
    super::locale::duration(minutes, super::locale::FALLBACK)
}

/// The compiled templates: English ones by their name (`agent_replied.txt`),
/// a translation's under its language (`de/agent_replied.txt`).
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    /// Template name -> the override file it was read from.
    overridden: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// Files (and folders) in the override folder that match no template or language.
    unused: Vec<std::path::PathBuf>,
    /// Every language with templates, English first.
    locales: Vec<String>,
    /// Every template's name.
    names: std::sync::Arc<std::collections::HashSet<String>>,
}

/// The name of template file `file` in `locale` (English ones have none).
fn localized(locale: &str, file: &str) -> String {
    if locale == super::locale::FALLBACK { file.to_owned() } else { format!("{locale}/{file}") }
}

impl Renderer {
    /// Compiles the built-in templates (English and the shipped
    /// translations), each replaced by the file of the same name in
    /// `override_dir` when there is one; a folder there named after a
    /// language (`de/`, `pt-BR/`) holds that language's files. Fails when
    /// the folder does not exist, and names the file (and line) of a syntax error.
    pub fn load(override_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let mut overridden = std::collections::BTreeMap::new();
        let mut unused = Vec::new();
        // (template name, text) before compiling: built in, then replaced.
        let mut texts: std::collections::BTreeMap<String, String> = BUILTIN
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .chain(SHIPPED.iter().flat_map(|(locale, files)| {
                files.iter().map(move |(name, text)| (localized(locale, name), (*text).to_owned()))
            }))
            .collect();
        let mut locales: Vec<String> = std::iter::once(super::locale::FALLBACK)
            .chain(SHIPPED.iter().map(|(locale, _)| *locale))
            .map(str::to_owned)
            .collect();
        if let Some(dir) = override_dir {
            let entries =
                std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("templates folder {}: {e}", dir.display()))?;
            let mut folders = Vec::new();
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    match super::locale::canonical(&name) {
                        Some(locale) => folders.push((locale, path)),
                        None => unused.push(path),
                    }
                } else if path.is_file() {
                    folders.push((String::new(), path));
                }
            }
            folders.sort();
            for (locale, path) in folders {
                let files: Vec<(String, std::path::PathBuf)> = if locale.is_empty() {
                    vec![(path.file_name().unwrap_or_default().to_string_lossy().into_owned(), path)]
                } else {
                    if !locales.contains(&locale) {
                        locales.push(locale.clone());
                    }
                    let mut files: Vec<_> = std::fs::read_dir(&path)
                        .map_err(|e| anyhow::anyhow!("templates folder {}: {e}", path.display()))?
                        .flatten()
                        .filter(|e| e.path().is_file())
                        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                        .collect();
                    files.sort();
                    files
                };
                for (file, path) in files {
                    if !BUILTIN.iter().any(|(known, _)| *known == file) {
                        unused.push(path);
                        continue;
                    }
                    let language = if locale.is_empty() { super::locale::FALLBACK } else { locale.as_str() };
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("reading template {}: {e}", path.display()))?;
                    let name = localized(language, &file);
                    texts.insert(name.clone(), text);
                    overridden.insert(name, path);
                }
            }
            unused.sort();
        }
        let names: std::sync::Arc<std::collections::HashSet<String>> =
            std::sync::Arc::new(texts.keys().cloned().collect());
        for (name, text) in texts {
            let added = env.add_template_owned(name.clone(), text);
            added.map_err(|e| template_error(&overridden, &name, &e, None))?;
        }
        // `{% include "_messages.txt" %}` in `de/agent_replied.txt` is
        // `de/_messages.txt` when German has one, else the English one.
        let known = std::sync::Arc::clone(&names);
        env.set_path_join_callback(move |name, parent| match parent.split_once('/') {
            Some((locale, _)) if !name.contains('/') => {
                let translated = format!("{locale}/{name}");
                if known.contains(&translated) { translated.into() } else { name.into() }
            }
            _ => name.into(),
        });
        Ok(Self { env, overridden, unused, locales, names })
    }

    /// The templates read from the override folder, with their files.
    pub fn overridden(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.overridden.iter().map(|(name, path)| (name.as_str(), path.as_path()))
    }

    /// Every language with templates, English first.
    pub fn locales(&self) -> &[String] {
        &self.locales
    }

    /// Warnings about the override folder: files that match no template
    /// (a misspelt name overrides nothing), with the names that would.
    pub fn warnings(&self) -> Vec<String> {
        self.unused
            .iter()
            .map(|path| match path.is_dir() {
                true => format!(
                    "{} is not named after a language (a BCP 47 tag such as de or pt-BR), so its templates are not used",
                    path.display()
                ),
                false => format!(
                    "{} overrides no template (template files are named KIND.subject, KIND.txt or KIND.html, \
                     KIND one of: {})",
                    path.display(),
                    KINDS.join(", ")
                ),
            })
            .collect()
    }

    /// The first language of `chain` that has notification `kind`'s text.
    pub fn language_for(&self, kind: &str, chain: &[String]) -> String {
        let file = format!("{kind}.txt");
        chain
            .iter()
            .find(|locale| self.names.contains(&localized(locale, &file)))
            .cloned()
            .unwrap_or_else(|| super::locale::FALLBACK.to_owned())
    }

    /// Renders notification `kind` with `context`, in English.
    pub fn render(&self, kind: &str, context: &NotificationContext) -> anyhow::Result<Rendered> {
        self.render_in(kind, context, &[super::locale::FALLBACK.to_owned()])
    }

    /// Renders notification `kind` with `context`, each of its three files
    /// in the first language of `chain` that has it.
    pub fn render_in(&self, kind: &str, context: &NotificationContext, chain: &[String]) -> anyhow::Result<Rendered> {
        let render = |suffix: &str| -> anyhow::Result<String> {
            let file = format!("{kind}.{suffix}");
            let name = chain
                .iter()
                .map(|locale| localized(locale, &file))
                .find(|name| self.names.contains(name))
                .unwrap_or(file);
            let template =
                self.env.get_template(&name).map_err(|e| template_error(&self.overridden, &name, &e, None))?;
            template.render(context).map_err(|e| template_error(&self.overridden, &name, &e, Some(&self.env)))
        };
        Ok(Rendered {
            subject: header_safe(&render("subject")?),
            text: render("txt")?,
            html: render("html")?,
            language: self.language_for(kind, chain),
        })
    }

    /// Each language that lacks templates, naming them: mail in it falls
    /// back to the next language (in the end English) for those.
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        for locale in self.locales.iter().filter(|l| *l != super::locale::FALLBACK) {
            let missing: Vec<&str> = BUILTIN
                .iter()
                .map(|(file, _)| *file)
                .filter(|file| !self.names.contains(&localized(locale, file)))
                .collect();
            if !missing.is_empty() {
                gaps.push(format!(
                    "templates for {locale} lack {} (mail in {locale} falls back to the next language for them)",
                    missing.join(", ")
                ));
            }
        }
        gaps
    }

    /// Renders every kind in every language with sample data: finds
    /// undefined variables and runtime errors that compiling alone does not.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for locale in &self.locales {
            let chain = [locale.clone()];
            problems.extend(
                KINDS
                    .iter()
                    .filter_map(|kind| self.render_in(kind, &sample_context_in(kind, locale), &chain).err())
                    .map(|e| format!("{e:#}")),
            );
        }
        problems.dedup();
        problems
    }
}

/// A template error naming where the template came from (the override
/// file's path, or `built-in templates/NAME`), the line, and for an
/// undefined value the expression that is undefined.
fn template_error(
    overridden: &std::collections::BTreeMap<String, std::path::PathBuf>,
    name: &str,
    error: &minijinja::Error,
    env: Option<&Environment<'static>>,
) -> anyhow::Error {
    let template = error.name().unwrap_or(name);
    let file = match overridden.get(template) {
        Some(path) => path.display().to_string(),
        None => format!("built-in templates/{template}"),
    };
    let mut detail = error.detail().map(str::to_owned).unwrap_or_else(|| error.kind().to_string());
    if error.kind() == minijinja::ErrorKind::UndefinedError
        && let Some(range) = error.range()
        && let Some(source) = env.and_then(|env| env.get_template(template).ok()).map(|t| t.source().to_owned())
        && let Some(expression) = source.get(range)
    {
        detail = format!("`{}` is undefined ({detail})", expression.trim());
    }
    match error.line() {
        Some(line) => anyhow::anyhow!("{file}:{line}: {detail}"),
        None => anyhow::anyhow!("{file}: {error}"),
    }
}

/// One line, no control characters, at most 200 characters.
pub fn header_safe(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    flat.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
}

/// [`sample_context`] as mail in `locale` would have it: durations and the
/// conversation's name in that language.
pub fn sample_context_in(kind: &str, locale: &str) -> NotificationContext {
    let mut context = sample_context(kind);
    if let Some(plan) = &mut context.plan {
        plan.ticket_response = Some(super::locale::duration(120, locale));
        plan.on_call_response = Some(super::locale::duration(30, locale));
    }
    if let Some(thread) = &mut context.thread {
        let number = thread.ticket_number.unwrap_or(thread.id);
        thread.name = super::locale::thread_name(thread.ticket_number.is_some(), number, locale);
    }
    context.languages = super::locale::chain(&[Some(locale)]);
    context
}

/// Sample data for `templates check`, `templates render` and the snapshot tests.
pub fn sample_context(kind: &str) -> NotificationContext {
    let message = |author: &str, time: &str, body: &str, source: &str| MessageContext {
        author_name: author.to_owned(),
        from_agent: author == "Alex Agent",
        source: source.to_owned(),
        time: time.to_owned(),
        body: body.to_owned(),
        attachments: Vec::new(),
        omitted_before: 0,
    };
    let is_ticket = !matches!(kind, "agent_replied" | "customer_replied" | "chat_transcript");
    let thread = ThreadContext {
        id: 12,
        kind: if is_ticket { "ticket" } else { "chat" }.to_owned(),
        label: if is_ticket { "ticket #7" } else { "chat #12" }.to_owned(),
        label_tag: if is_ticket { "[Ticket #7]" } else { "[Chat #12]" }.to_owned(),
        name: if is_ticket { "Ticket #7" } else { "Chat #12" }.to_owned(),
        subject: "Checkout returns a 502 <error>".to_owned(),
        ticket_number: is_ticket.then_some(7),
        ticket_type: is_ticket.then(|| if kind == "on_call_page" { "Emergency" } else { "Performance" }.to_owned()),
        url: if is_ticket {
            "https://dashboard.example.com/tickets/7"
        } else {
            "https://dashboard.example.com/chats/12"
        }
        .to_owned(),
    };
    let mut screenshot = message(
        "Anna Example",
        "2026-11-23 10:04 UTC",
        "Only Live is affected, since 9:00.\nSee the screenshot & the log <attached>.",
        "email",
    );
    screenshot.attachments.push(AttachmentContext {
        filename: "error page.png".to_owned(),
        content_type: "image/png".to_owned(),
        size: 48213,
        attached: false,
        url: "https://support.example.com/download/aeaqcanljlyhz5giqsz4ratieq".to_owned(),
        id: 1,
    });
    let (messages, history) = match kind {
        "agent_replied" => (
            vec![message(
                "Alex Agent",
                "2026-11-23 10:05 UTC",
                "Thanks! I cleared the cache; please try again.",
                "dashboard",
            )],
            vec![screenshot, message("Anna Example", "2026-11-23 09:58 UTC", "Checkout returns a 502.", "dashboard")],
        ),
        "customer_replied" | "ticket_opened" | "on_call_page" => (vec![screenshot], Vec::new()),
        "chat_transcript" => (
            vec![
                message("Anna Example", "2026-11-23 09:58 UTC", "Checkout returns a 502.", "dashboard"),
                message("Alex Agent", "2026-11-23 10:00 UTC", "Which environment is affected?", "dashboard"),
                screenshot,
            ],
            Vec::new(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    let refusal = kind.starts_with("refusal_").then(|| RefusalContext {
        subject: "Help: site down".to_owned(),
        reason: "sam@elsewhere.example may not write in this conversation".to_owned(),
        emergency_address: "downtime@support.example.com".to_owned(),
    });
    let expects_reply = matches!(kind, "agent_replied" | "customer_replied" | "ticket_opened" | "ticket_received");
    NotificationContext {
        recipient: PersonContext { name: "Anna Example".to_owned(), email: "anna@acme.example".to_owned() },
        support_address: "support@support.example.com".to_owned(),
        dashboard_url: "https://dashboard.example.com".to_owned(),
        thread: refusal.is_none().then_some(thread),
        site: refusal.is_none().then(|| SiteContext {
            name: "acme.example".to_owned(),
            plan: "elite".to_owned(),
            plan_name: "Elite".to_owned(),
        }),
        plan: refusal.is_none().then(|| PlanContext {
            name: "Elite".to_owned(),
            ticket_response: Some(human_minutes(120)),
            on_call_response: Some(human_minutes(30)),
            support_hours: Some("Mon-Fri 09:00-17:00 America/Los_Angeles".to_owned()),
        }),
        messages,
        history,
        reply_marker: if expects_reply { crate::domain::REPLY_ABOVE_MARKER.to_owned() } else { String::new() },
        ref_marker: if expects_reply { "[ref:aeaqcanljlyhz5giqsz4ratieq]".to_owned() } else { String::new() },
        refusal,
        also: match kind {
            "agent_replied" | "customer_replied" => vec!["Bob Jones".to_owned(), "Carla Díaz".to_owned()],
            _ => Vec::new(),
        },
        leave_url: match kind {
            "agent_replied" => "https://support.example.com/leave/aeaqcanljlyhz5giqsz4ratieq".to_owned(),
            _ => String::new(),
        },
        languages: vec![super::locale::FALLBACK.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::{Renderer, header_safe, human_minutes};

    #[test]
    fn subjects_cannot_carry_headers() {
        assert_eq!(header_safe("Help\r\nBcc: victim@example.com"), "Help Bcc: victim@example.com");
        assert_eq!(header_safe("  a\tb\n"), "a b");
    }

    #[test]
    fn the_built_in_templates_check_clean() {
        let renderer = Renderer::load(None).unwrap();
        assert_eq!(renderer.check(), Vec::<String>::new());
    }

    #[test]
    fn response_times_read_naturally() {
        assert_eq!(human_minutes(120), "2 hours");
        assert_eq!(human_minutes(30), "30 minutes");
        assert_eq!(human_minutes(60), "1 hour");
        assert_eq!(human_minutes(1440), "1 day");
    }

    #[test]
    fn html_escapes_what_users_wrote() {
        let renderer = Renderer::load(None).unwrap();
        let rendered = renderer.render("customer_replied", &super::sample_context("customer_replied")).unwrap();
        assert!(rendered.html.contains("the log &lt;attached&gt;"), "{}", rendered.html);
        assert!(!rendered.html.contains("<attached>"));
    }
}
