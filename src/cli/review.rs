//! The commands that look back at what arrived: `held` (the held queue),
//! `explain` (every step's verdict for one kept message) and `replay`
//! (today's reading and rules against what was decided at receipt).

use anyhow::Context;
use clap::{Args, Subcommand};
use mailgate::config::ToolArgs;
use mailgate::pipeline::Pipeline;
use mailgate::pipeline::explain::{Explanation, Replayed};
use mailgate::store::{HeldFilter, InboundLogEntry, Store};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// `mailgate held ...`
#[derive(Subcommand)]
pub(crate) enum HeldCommand {
    /// List held mail, newest first.
    List {
        /// Only items in this state: held (the default), released, discarded, noticed, or all.
        #[arg(long, default_value = "held")]
        status: String,
        /// Only items held for this reason: dmarc_fail, not_allowed, reading_failed, attachment_too_large.
        #[arg(long)]
        reason: Option<String>,
        /// Only items whose sender contains this text.
        #[arg(long)]
        sender: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Open one held item: why it is held, and how mailgate reads it.
    Show {
        /// The held item's id.
        id: i64,
        /// Print the message as it arrived instead.
        #[arg(long)]
        raw: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Release held items into their threads (a running server sends the notifications).
    Release(Action),
    /// Discard held items (their mail is deleted after retention.held_days).
    Discard(Action),
    /// Send each item's sender the refusal notice and close the item.
    Notice(Action),
}

/// Which items, and who acts.
#[derive(Args)]
pub(crate) struct Action {
    /// The held items' ids.
    #[arg(required = true)]
    ids: Vec<i64>,
    /// Who acts, for the record [default: $USER].
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    config: ToolArgs,
}

impl HeldCommand {
    fn config(&self) -> &ToolArgs {
        match self {
            HeldCommand::List { config, .. } | HeldCommand::Show { config, .. } => config,
            HeldCommand::Release(action) | HeldCommand::Discard(action) | HeldCommand::Notice(action) => &action.config,
        }
    }
}

/// `mailgate held ...`
pub(crate) async fn held(command: HeldCommand) -> anyhow::Result<ExitCode> {
    let config = command.config().load()?;
    mailgate::app::require_existing_database(&config)?;
    let (store, pipeline) = mailgate::app::tool_pipeline(&config).await?;
    let result = run_held(command, &store, &pipeline).await;
    store.close().await;
    result
}

async fn run_held(command: HeldCommand, store: &Store, pipeline: &Pipeline) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let (action, Action { ids, by, .. }) = match command {
        HeldCommand::List { status, reason, sender, limit, json, .. } => {
            let status = mailgate::store::states::state_filter::<mailgate::store::HeldStatus>(&status)
                .map_err(|why| anyhow::anyhow!("--status: {why}"))?;
            let filter = HeldFilter { status, reason, sender, limit: Some(limit), ..HeldFilter::default() };
            let items = store.held_items(&filter).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(out, "{:>5}  {:<24}  {:<9}  {:<20}  {:<30}  REASON", "ID", "RECEIVED", "STATUS", "CODE", "FROM")?;
            for item in items {
                writeln!(
                    out,
                    "{:>5}  {:<24}  {:<9}  {:<20}  {:<30}  {}",
                    item.id,
                    mailgate::store::rfc3339(item.received_at),
                    item.status,
                    item.reason_code,
                    item.from_address.as_deref().unwrap_or(&item.mail_from),
                    item.reason
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        HeldCommand::Show { id, raw, json, .. } => {
            let item = store.held_item(id).await?.with_context(|| format!("no held item {id}"))?;
            let bytes = store.held_raw(&item).await?.with_context(|| format!("held item {id}'s mail is gone"))?;
            if raw {
                out.write_all(&bytes)?;
                return Ok(ExitCode::SUCCESS);
            }
            let explanation = pipeline.explain(item.as_received(), &bytes, None).await?;
            if json {
                let value = serde_json::json!({ "item": item, "explanation": explanation });
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(out, "Held item {id}: {} ({}), {}", item.status, item.reason_code, item.reason)?;
            if let Some(by) = &item.acted_by {
                writeln!(out, "  acted on by {by}")?;
            }
            match explanation {
                Some(explanation) => print_explanation(&mut out, &explanation)?,
                None => writeln!(out, "  mailgate cannot read this message; `--raw` prints it as it arrived")?,
            }
            return Ok(ExitCode::SUCCESS);
        }
        HeldCommand::Release(action) => ("release", action),
        HeldCommand::Discard(action) => ("discard", action),
        HeldCommand::Notice(action) => ("notice", action),
    };
    let by = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".to_owned());
    let mut failed = false;
    for id in ids {
        let done = match action {
            "release" => pipeline
                .release(id, &by)
                .await
                .map(|r| format!("held item {id} released into {} as message {}", r.thread_label, r.message_id)),
            "discard" => pipeline.discard(id, &by).await.map(|_| format!("held item {id} discarded")),
            _ => pipeline.notice(id, &by).await.map(|_| format!("held item {id}: refusal notice queued")),
        };
        match done {
            Ok(line) => writeln!(out, "{line}")?,
            Err(error) => {
                failed = true;
                eprintln!("error: {error}");
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What `explain` looks at.
#[derive(Args)]
pub(crate) struct ExplainArgs {
    /// A stored message's id.
    message: Option<i64>,
    /// A held item's id instead.
    #[arg(long, conflicts_with = "message")]
    held: Option<i64>,
    /// An inbound-log entry's id instead (mail answered 250 and not posted, too).
    #[arg(long, conflicts_with_all = ["message", "held"])]
    log: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `mailgate explain ...`
pub(crate) async fn explain(what: ExplainArgs, args: ToolArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    mailgate::app::require_existing_database(&config)?;
    let (store, pipeline) = mailgate::app::tool_pipeline(&config).await?;
    let result = run_explain(&what, &store, &pipeline).await;
    store.close().await;
    let Some(explanation) = result? else {
        eprintln!("error: mailgate cannot read this message as mail");
        return Ok(ExitCode::FAILURE);
    };
    let mut out = std::io::stdout().lock();
    if what.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?;
    } else {
        print_explanation(&mut out, &explanation)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_explain(what: &ExplainArgs, store: &Store, pipeline: &Pipeline) -> anyhow::Result<Option<Explanation>> {
    let (recorded, stored_text) = match (what.message, what.held, what.log) {
        (Some(id), _, _) => {
            let message = store.message(id).await?.with_context(|| format!("no message {id}"))?;
            let entry = store.inbound_entry_of_message(id, message.created_at).await?;
            let entry = match (entry, &message.original) {
                (Some(entry), _) => entry,
                (None, Some(sha256)) => InboundLogEntry {
                    received_at: message.created_at,
                    mail_from: Some(message.author_email.clone()),
                    decision: "accepted".to_owned(),
                    original: Some(sha256.clone()),
                    stored_message: Some(id),
                    thread_id: Some(message.thread_id),
                    ..InboundLogEntry::default()
                },
                (None, None) => anyhow::bail!("message {id} was written in the Dashboard: there is no mail to explain"),
            };
            (entry, Some(message.body))
        }
        (None, Some(id), _) => {
            let item = store.held_item(id).await?.with_context(|| format!("no held item {id}"))?;
            let raw = store.held_raw(&item).await?.with_context(|| format!("held item {id}'s mail is gone"))?;
            return Ok(pipeline.explain(item.as_received(), &raw, None).await?);
        }
        (None, None, Some(id)) => {
            (store.inbound_entry(id).await?.with_context(|| format!("no inbound-log entry {id}"))?, None)
        }
        (None, None, None) => anyhow::bail!("name a message id, --held ID or --log ID"),
    };
    let sha256 = recorded.original.clone().context("no mail was kept for this message (only mail answered 250 is)")?;
    let raw =
        store.original(&sha256).await?.context("the mail was removed after its retention (retention.raw_days)")?;
    Ok(pipeline.explain(recorded, &raw, stored_text).await?)
}

fn print_explanation(out: &mut impl Write, e: &Explanation) -> std::io::Result<()> {
    let r = &e.recorded;
    writeln!(
        out,
        "Received {} from {} ({} bytes)",
        mailgate::store::rfc3339(r.received_at),
        if r.peer.is_empty() { "?" } else { &r.peer },
        e.size
    )?;
    writeln!(out, "  envelope:  {} -> {}", r.mail_from.as_deref().unwrap_or(""), r.rcpt_to)?;
    writeln!(out, "  decision:  {} {}", r.decision, r.reason)?;
    if !r.smtp_reply.is_empty() {
        writeln!(out, "  answered:  {}", r.smtp_reply)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "1. parse         From {}, Subject {:?}, Message-ID {}",
        e.from.as_deref().unwrap_or("(none)"),
        e.subject.as_deref().unwrap_or(""),
        e.message_id.as_deref().unwrap_or("(none)")
    )?;
    writeln!(out, "2. classify      {}", e.classification)?;
    writeln!(out, "3. authenticate  {} (at receipt)", e.authentication)?;
    writeln!(
        out,
        "4. thread        {} signal(s), in order of trust; the first that names a thread is used",
        e.threading.len()
    )?;
    for signal in &e.threading {
        writeln!(out, "                  {:<12} {}: {}", signal.via.label(), signal.value, signal.verdict)?;
    }
    for refused in &e.refused_recipients {
        writeln!(out, "                  refused today: {refused}")?;
    }
    writeln!(out, "5. authorize     {}", e.authorization)?;
    match e.now.routing.rules.as_slice() {
        [] => writeln!(out, "6. rules         no rule decided; the pipeline's own behaviour applies")?,
        matched => writeln!(out, "6. rules         matched: {}", matched.join(", "))?,
    }
    for trace in &e.now.routing.trace {
        writeln!(out, "                  {} {}", if trace.matched { "MATCH" } else { "  -  " }, trace.rule)?;
        for (condition, held) in &trace.conditions {
            writeln!(out, "                        [{}] {condition}", if *held { "x" } else { " " })?;
        }
    }
    let x = &e.extraction;
    let source = if x.from_html { "the HTML body" } else { "the text body" };
    let forward = if x.forward { "; read as a forward: the forwarded part is kept" } else { "" };
    writeln!(out, "7. extract       from {source}{forward}; {} cut(s)", x.cuts.len())?;
    for cut in &x.cuts {
        writeln!(out, "                  {}: {}", cut.what, cut.why)?;
        for line in cut.text.lines().take(6) {
            writeln!(out, "                    | {line}")?;
        }
        if cut.text.lines().count() > 6 {
            writeln!(out, "                    | ...")?;
        }
    }
    writeln!(out, "                  text posted:")?;
    for line in x.text.lines() {
        writeln!(out, "                    | {line}")?;
    }
    if let Some(stored) = &e.stored_text
        && stored != &x.text
    {
        writeln!(out, "                  (the text stored at receipt differs: the reading has changed since)")?;
    }
    let n = &e.now;
    let reason = if n.reason.is_empty() { String::new() } else { format!(" ({})", n.reason) };
    writeln!(out, "8. decision now  {}{reason}: {}", n.decision, n.smtp_reply)?;
    Ok(())
}

/// What `replay` reads again.
#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// How far back: 7d, 12h, 30m.
    #[arg(long, default_value = "7d")]
    since: String,
    /// Print each changed message: its decision before and after, and a diff of its text.
    #[arg(long)]
    diff: bool,
    /// Print JSON (every changed message).
    #[arg(long)]
    json: bool,
}

/// `mailgate replay ...`
pub(crate) async fn replay(what: ReplayArgs, args: ToolArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    mailgate::app::require_existing_database(&config)?;
    let rules = config.rules_file.as_ref().map_or_else(|| "the built-in rules".to_owned(), |r| r.display().to_string());
    let since = mailgate::store::now_ms() - duration_ms(&what.since)?;
    let (store, pipeline) = mailgate::app::tool_pipeline(&config).await?;
    let result = run_replay(&what, &rules, since, &store, &pipeline).await;
    store.close().await;
    result
}

async fn run_replay(
    what: &ReplayArgs,
    rules: &str,
    since: i64,
    store: &Store,
    pipeline: &Pipeline,
) -> anyhow::Result<ExitCode> {
    let progress = std::io::stderr().is_terminal() && !what.json;
    let (mut seen, mut unreadable, mut decisions, mut texts) = (0usize, 0usize, 0usize, 0usize);
    let mut changed: Vec<Replayed> = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.replayable(since, after, 200).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for entry in batch {
            seen += 1;
            if progress && seen % 25 == 0 {
                eprint!("\rreplaying: {seen} messages read");
            }
            let Some(raw) = store.original(entry.original.as_deref().unwrap_or_default()).await? else {
                unreadable += 1;
                continue;
            };
            let stored_text = match entry.stored_message {
                Some(id) if entry.decision == "accepted" => store.message(id).await?.map(|m| m.body),
                _ => None,
            };
            let replayed = pipeline.replay(&entry, &raw, stored_text).await;
            let (decision, text) = (replayed.decision_changed(), replayed.text_changed());
            decisions += usize::from(decision);
            texts += usize::from(text);
            if decision || text {
                changed.push(replayed);
            }
        }
    }
    if progress {
        eprint!("\r{:40}\r", "");
    }
    let mut out = std::io::stdout().lock();
    if what.json {
        let value = serde_json::json!({
            "replayed": seen, "decisions_changed": decisions, "texts_changed": texts,
            "purged": unreadable, "changed": changed,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "replayed {seen} messages received since {} with {rules}", mailgate::store::rfc3339(since))?;
    writeln!(out, "  decisions that would change: {decisions}")?;
    writeln!(out, "  texts that would change:     {texts}")?;
    writeln!(out, "  unchanged:                   {}", seen - unreadable - changed.len())?;
    if unreadable > 0 {
        writeln!(out, "  originals gone (retention):  {unreadable}")?;
    }
    if what.diff {
        for r in &changed {
            print_replayed(&mut out, r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_replayed(out: &mut impl Write, r: &Replayed) -> std::io::Result<()> {
    writeln!(out)?;
    let message = r.stored_message.map(|id| format!("message {id}, ")).unwrap_or_default();
    writeln!(
        out,
        "{message}inbound-log entry {} from {}, {:?}",
        r.log_id,
        r.from.as_deref().unwrap_or("?"),
        r.subject.as_deref().unwrap_or("")
    )?;
    let side = |o: &mailgate::pipeline::explain::Outcome| {
        let thread = o.thread_id.map(|t| format!(" (thread {t})")).unwrap_or_default();
        let rules = if o.rules.is_empty() { String::new() } else { format!(" [rules: {}]", o.rules) };
        format!("{}{thread}{rules} {}", o.decision, o.reason)
    };
    if r.decision_changed() {
        writeln!(out, "  - decision: {}", side(&r.before))?;
        writeln!(out, "  + decision: {}", side(&r.after))?;
    }
    if let (Some(before), Some(after)) = (&r.before.text, &r.after.text)
        && before != after
    {
        let diff = similar::TextDiff::from_lines(before.as_str(), after.as_str());
        for change in diff.iter_all_changes() {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => "-",
                similar::ChangeTag::Insert => "+",
                similar::ChangeTag::Equal => " ",
            };
            write!(out, "  {sign} | {change}")?;
            if change.missing_newline() {
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

/// `7d`, `12h`, `30m` or `90s` in milliseconds.
fn duration_ms(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: i64 =
        number.parse().with_context(|| format!("--since {text:?}: expected a number and d, h, m or s"))?;
    let unit_ms = match unit {
        "d" | "" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1000,
        other => anyhow::bail!("--since {text:?}: unknown unit {other:?} (use d, h, m or s)"),
    };
    Ok(number.saturating_mul(unit_ms))
}
