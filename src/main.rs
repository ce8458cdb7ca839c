//! The `mailgate` command: run the gateway, or look at one message.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line is the one place that talks to the console"
)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailgate::config::{Config, ConfigArgs, StoreArgs, ToolArgs};
use mailgate::pipeline::{self, RecipientTarget};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "cli/admin.rs"]
mod admin;
#[path = "cli/operations.rs"]
mod operations;
#[path = "cli/review.rs"]
mod review;

/// mailgate: an email-to-ticket mail gateway. Customers' email replies land in
/// the right support chat or ticket; mail that would start a new chat is
/// refused; notifications go out from templates.
#[derive(Parser)]
#[command(name = "mailgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text`, or `json` (one object
    /// per line, with the transaction's id on every line of it).
    #[arg(long, global = true, env = "MAILGATE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: mailgate::telemetry::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: SMTP listener, HTTP API and notification delivery.
    ///
    /// With no configuration it keeps everything under ./mailgate-data: a SQLite
    /// database and an outgoing-mail folder (outbox/) of .eml files. The API
    /// token comes from MAILGATE_API_TOKEN or the config file; otherwise one is
    /// generated and printed at first start.
    Serve {
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// Take one message from a pipe transport (Postfix pipe(8), Exim's pipe,
    /// an alias) on standard input, and store it as the server would.
    ///
    /// The exit code is what the mail server reads (sysexits): 0 stored or
    /// held, 67 unknown or invalid reply address, 77 refused by policy (a
    /// new chat by email, DMARC, a sender who may not write there), 75 try
    /// again later (also for a broken configuration, an unreachable
    /// database or a crash). The reason is one line on stderr. Runs beside
    /// a server on the same database. See docs/deployment.md.
    Deliver {
        /// The envelope sender (Postfix: ${sender}); empty for a bounce.
        #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
        sender: String,
        /// The envelope recipient (Postfix: ${recipient}).
        #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
        recipient: String,
        /// The client the mail server took the message from (Postfix:
        /// ${client_address}); empty or `unknown` for none.
        #[arg(long, value_name = "IP", allow_hyphen_values = true)]
        client_address: Option<String>,
        /// The name that client gave in HELO (Postfix: ${client_helo}; the
        /// client chose it: pass it as --client-helo=${client_helo}).
        #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
        client_helo: Option<String>,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Answer Postfix's policy requests (check_policy_service) so that
    /// Postfix refuses at RCPT time what mailgate would refuse.
    ///
    /// REJECT for an unknown or forged address of the desk's domain,
    /// DEFER_IF_PERMIT when the database cannot be asked, DUNNO otherwise.
    /// `serve --policy-listen` runs the same service inside the server.
    Policy {
        /// `HOST:PORT` or `unix:/path/to/socket`.
        #[arg(long, value_name = "ADDR")]
        listen: String,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Show what the pipeline sees in one message, without storing anything.
    ///
    /// Prints from, to, subject, message_id, kind (human, auto_reply, bounce),
    /// thread_token (the token found and where), reply_text and attachments.
    /// With --config (or --data-dir) it also verifies the token, resolves the
    /// thread and says what the SMTP answer would be.
    Inspect {
        /// The message file (.eml); `-` reads standard input.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Envelope sender to assume (empty for a bounce's null sender).
        #[arg(long, value_name = "ADDR")]
        mail_from: Option<String>,
        /// Envelope recipient to assume, e.g. reply+TOKEN@DOMAIN (repeatable).
        #[arg(long = "rcpt", value_name = "ADDR")]
        rcpt: Vec<String>,
        /// Client IP to assume, for SPF (with --config or --data-dir).
        #[arg(long, value_name = "IP")]
        peer_ip: Option<std::net::IpAddr>,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Check or preview the notification templates.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
        /// Folder of templates overriding the built-in ones.
        #[arg(long, env = "MAILGATE_TEMPLATES_DIR", value_name = "DIR", global = true)]
        templates_dir: Option<PathBuf>,
    },
    /// Check routing rules, or try them on a message.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The inbound log: every SMTP transaction and what became of it.
    Log {
        /// Only the transactions this routing rule acted on.
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Bring the database's schema up to date (what `serve` does at start),
    /// or with --check list the migrations pending and exit 1 if there are
    /// any. Refuses a database a newer mailgate has upgraded.
    Migrate {
        /// Only list what is pending; change nothing.
        #[arg(long)]
        check: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Copy the SQLite database to FILE while the server runs and takes
    /// mail: one consistent snapshot, mode 0600. It holds the signing
    /// secrets: keep it as safe as the data folder. (PostgreSQL: pg_dump.)
    Backup {
        /// Where to write the copy; must not exist.
        file: PathBuf,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Make a backup the database of an empty data folder, brought up to
    /// this version's schema. Never overwrites a database.
    Restore {
        /// The backup `mailgate backup` wrote.
        file: PathBuf,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Check the DNS that decides whether our mail is believed and replies
    /// reach us: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, PTR. One line per
    /// check (ok, warn, fail, skip) with the record to publish; exit 1 on any fail.
    Doctor {
        /// The address notifications leave this network from [default: the
        /// relay's, or this host's when the relay runs here].
        #[arg(long, value_name = "IP")]
        outbound_ip: Option<std::net::IpAddr>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Manage the secrets that sign reply tokens.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Replace the API or the admin token (only their hashes are stored).
    Tokens {
        #[command(subcommand)]
        command: admin::TokensCommand,
    },
    /// Addresses mail has stopped going to because they hard-bounced; lift one.
    Suppressions {
        #[command(subcommand)]
        command: admin::SuppressionsCommand,
    },
    /// Look at outgoing mail and retry failed deliveries.
    Outbox {
        #[command(subcommand)]
        command: admin::OutboxCommand,
    },
    /// The held queue: list, open, release into the thread, discard, or answer.
    Held {
        #[command(subcommand)]
        command: review::HeldCommand,
    },
    /// Every step's verdict for one kept message: token, each threading
    /// signal, SPF/DKIM/DMARC, authorization, each rule, what extraction cut
    /// and why, and the decision today.
    Explain {
        #[command(flatten)]
        what: review::ExplainArgs,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Read the kept originals of recent mail again with today's reading and
    /// the given rules, write nothing, and report which decisions and texts
    /// would change.
    Replay {
        #[command(flatten)]
        what: review::ReplayArgs,
        #[command(flatten)]
        config: ToolArgs,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Compile every template and render it with sample data, in every
    /// language; report every error with its file and line, and every
    /// template a language lacks. Exits 1 when something is wrong.
    Check,
    /// Render one notification with sample data.
    Render {
        /// The notification, e.g. agent_replied (see `templates check` for the list).
        name: String,
        /// Print the HTML body instead of the subject and text.
        #[arg(long)]
        html: bool,
        /// The language (BCP 47: de, pt-BR); falls back as mail does, to English last.
        #[arg(long, default_value = "en")]
        locale: String,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules file: every error names the rule, the field and the
    /// line. Without FILE, the configured (or built-in) rules. Exits 1 on errors.
    Check {
        /// The rules file.
        file: Option<PathBuf>,
        #[command(flatten)]
        config: ToolArgs,
    },
    /// Dry-run the rules on a message against the live database, storing
    /// nothing: every rule considered, which conditions held, the decision and
    /// the SMTP answer the sender would get.
    Test {
        /// The message (.eml).
        message: PathBuf,
        /// Envelope sender to assume [default: the From address].
        #[arg(long, value_name = "ADDR")]
        mail_from: Option<String>,
        /// Envelope recipient to assume (repeatable) [default: support@DOMAIN].
        #[arg(long = "rcpt", value_name = "ADDR")]
        rcpt: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ToolArgs,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    if std::env::args_os().nth(1).is_some_and(|verb| verb == "deliver") {
        return ExitCode::from(deliver_command());
    }
    let cli = Cli::parse();
    mailgate::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc gives a thread that finds the shared arena busy an arena
/// of its own (up to eight per core), and each arena keeps the memory it once
/// held. mailgate's threads (the runtime's, SQLite's, the file writers')
/// then hold more than the gateway uses: under the benchmark's load the peak
/// resident size was 55 to 62 MB with the default and 47 to 48 MB with two
/// arenas, at the same speed. An operator's own `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the allocator; it is called
        // first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// `mailgate deliver`: whatever goes wrong, the exit code is one a mail
/// server reads (never clap's 2, an error's 1 or a panic's 101, which it
/// would take as a permanent failure and bounce), and stderr is one line.
fn deliver_command() -> u8 {
    use mailgate::deliver::{Outcome, PipeEnvelope};
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            // --help and --version print and store nothing: never 0, which
            // would tell a mail server the message was delivered.
            Err(error) if !error.use_stderr() => {
                let _ = error.print();
                return Outcome::temporary("mailgate deliver printed its help and stored nothing");
            }
            Err(error) => {
                let why = error.to_string();
                let first = why.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
                return Outcome::temporary(&format!("mailgate deliver was called wrongly ({first})"));
            }
        };
        let Command::Deliver { sender, recipient, client_address, client_helo, config } = cli.command else {
            return Outcome::temporary("mailgate deliver was called wrongly");
        };
        mailgate::telemetry::init_with("off", cli.log_format);
        let known = |value: Option<String>| value.filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("unknown"));
        let pipe = PipeEnvelope {
            sender,
            recipient,
            client_address: known(client_address)
                .and_then(|ip| ip.trim_start_matches("IPv6:").trim_matches(|c| c == '[' || c == ']').parse().ok()),
            client_helo: known(client_helo),
        };
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(deliver(pipe, config)),
            Err(error) => Outcome::temporary(&format!("could not start: {error}")),
        }
    })
    .unwrap_or_else(|_| Outcome::temporary("mailgate stopped on an internal error (please report it)"));
    // One line, whatever the reason held (a configuration error quotes the
    // file); and a closed stderr is no reason to fail.
    let line = outcome.line.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    outcome.code
}

/// Reads the message and delivers it (see [`deliver_command`]).
async fn deliver(pipe: mailgate::deliver::PipeEnvelope, args: ToolArgs) -> mailgate::deliver::Outcome {
    use mailgate::deliver::Outcome;
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => return Outcome::temporary(&format!("the configuration is broken: {error:#}")),
    };
    let raw = match mailgate::deliver::read_message(&mut std::io::stdin().lock(), config.limits.max_message_size) {
        Ok(raw) => raw,
        Err(error) => return Outcome::temporary(&format!("reading the message failed: {error}")),
    };
    // A crash must cost no mail: the suite makes one here to show it.
    if std::env::var("MAILGATE_FAULT_INJECT").is_ok_and(|fault| fault == "deliver-panic") {
        panic!("injected by MAILGATE_FAULT_INJECT");
    }
    let opened = tokio::time::timeout(std::time::Duration::from_secs(30), mailgate::app::open_pipeline(&config)).await;
    let pipeline = match opened {
        Ok(Ok(pipeline)) => pipeline,
        Ok(Err(error)) => return Outcome::temporary(&format!("the database could not be opened: {error:#}")),
        Err(_) => return Outcome::temporary("the database did not answer within 30 s"),
    };
    mailgate::deliver::deliver(&pipeline, &config, &pipe, &raw).await
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(*config).await,
        Command::Deliver { .. } => unreachable!("mailgate deliver runs in deliver_command"),
        Command::Policy { listen, config } => policy(listen, config).await,
        Command::Inspect { file, json, mail_from, rcpt, peer_ip, config } => {
            inspect(file, json, mail_from, rcpt, peer_ip, config).await
        }
        Command::Templates { command, templates_dir } => templates(command, templates_dir),
        Command::Outbox { command } => admin::outbox(command).await,
        Command::Suppressions { command } => admin::suppressions(command).await,
        Command::Tokens { command } => admin::tokens(command).await,
        Command::Rules { command } => rules(command).await,
        Command::Keys { command } => admin::keys(command).await,
        Command::Doctor { outbound_ip, json, config } => operations::doctor(outbound_ip, json, config).await,
        Command::Migrate { check, json, config } => operations::migrate(check, json, config).await,
        Command::Backup { file, config } => operations::backup(file, config).await,
        Command::Restore { file, config } => operations::restore(file, config).await,
        Command::Log { rule, limit, json, config } => log(rule, limit, json, config).await,
        Command::Held { command } => review::held(command).await,
        Command::Explain { what, config } => review::explain(what, config).await,
        Command::Replay { what, config } => review::replay(what, config).await,
    }
}

async fn policy(listen: String, args: ToolArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let addr = mailgate::config::ListenAddr::parse("--listen", &listen)?;
    let stop = StopSignals::register();
    let pipeline = mailgate::app::open_pipeline(&config).await?;
    let listener = mailgate::policy::PolicyListener::bind(&addr).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let service = mailgate::policy::PolicyService {
        pipeline,
        domain: config.domain.clone(),
        metrics: None,
        refuse_support: config.policy_refuses_support,
    };
    tasks.spawn(service.serve(listener, shutdown.clone(), tasks.clone()));
    tracing::info!(listen = %addr, domain = %config.domain, "mailgate policy service started");
    stop.wait().await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args)?;
    // Listening for SIGTERM before the start line is logged, so that a stop
    // sent as soon as the server says it runs is a clean one.
    let stop = StopSignals::register();
    let app = mailgate::app::start(config).await?;
    // Printed once, on the console of whoever started the server; never
    // logged, and only its hash is stored.
    if let Some(token) = &app.generated_api_token {
        println!("Generated API token (shown once; `mailgate tokens reset api` makes a new one):");
        println!("  {token}");
    }
    if let Some(token) = &app.generated_admin_token {
        println!("Generated admin token, for /api/v1/admin (shown once; `mailgate tokens reset admin`):");
        println!("  {token}");
    }
    let _ = std::io::stdout().flush();
    // Everything is up: a `Type=notify` unit counts as started from here.
    mailgate::service::notify("READY=1\nSTATUS=taking mail");
    stop.wait().await;
    tracing::info!("shutting down");
    mailgate::service::notify("STOPPING=1");
    // A second signal during the drain stops at once: what was not yet
    // acknowledged is sent again by its sender, and nothing half-stored stays.
    let again = StopSignals::register();
    tokio::select! {
        () = app.shutdown() => Ok(ExitCode::SUCCESS),
        () = again.wait() => {
            tracing::warn!("a second stop signal: stopping at once, without waiting for the sessions under way");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment of `register`.
struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self { signals: signal(SignalKind::terminate()).ok().zip(signal(SignalKind::interrupt()).ok()) }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for either signal.
    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut interrupt)) = self.signals {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn inspect(
    file: PathBuf,
    json: bool,
    mail_from: Option<String>,
    rcpt: Vec<String>,
    peer_ip: Option<std::net::IpAddr>,
    args: ToolArgs,
) -> anyhow::Result<ExitCode> {
    let raw = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
    };
    let mail_from = mail_from.unwrap_or_else(|| "sender@invalid".to_owned());
    let output = if args.store.given() {
        let config = args.load()?;
        mailgate::app::require_existing_database(&config)?;
        let (store, pipeline) = mailgate::app::tool_pipeline(&config).await?;
        let mut envelope = pipeline.envelope("inspect", mail_from, &rcpt).await;
        envelope.peer_ip = peer_ip;
        if envelope.recipients.is_empty() && envelope.refused.is_empty() {
            envelope.recipients.push((config.support_address(), RecipientTarget::Support));
        }
        let analysis = pipeline.analyze(&envelope, &raw);
        let decision = pipeline.dry_run(&envelope, &raw).await;
        store.close().await;
        let mut value = match &analysis {
            Some(analysis) => serde_json::to_value(analysis)?,
            None => unreadable(),
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("decision".to_owned(), serde_json::to_value(decision)?);
        }
        value
    } else {
        match pipeline::analyze(&mail_from, &rcpt, &raw) {
            Some(analysis) => serde_json::to_value(analysis)?,
            None => unreadable(),
        }
    };
    if output["readable"] == false {
        eprintln!(
            "not an email: no header section, or a broken MIME structure; the server holds such a message \
             (reading_failed), kept as it arrived"
        );
    }
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&output)?)?;
    } else {
        print_text(&mut stdout, &output)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `inspect` prints for a message that cannot be read as an email:
/// what the server does with it (holds it, kept as it arrived).
fn unreadable() -> serde_json::Value {
    serde_json::json!({
        "readable": false,
        "held": {
            "reason_code": "reading_failed",
            "reason": "no header section, or a broken MIME structure: held for an admin, kept as it arrived",
        },
    })
}

fn print_text(out: &mut impl Write, value: &serde_json::Value) -> std::io::Result<()> {
    let Some(map) = value.as_object() else {
        return writeln!(out, "{value}");
    };
    for (key, value) in map {
        match value {
            serde_json::Value::String(text) if text.contains('\n') => {
                writeln!(out, "{key}:")?;
                for line in text.lines() {
                    writeln!(out, "  | {line}")?;
                }
            }
            serde_json::Value::String(text) => writeln!(out, "{key}: {text}")?,
            other => writeln!(out, "{key}: {other}")?,
        }
    }
    Ok(())
}

fn templates(command: TemplatesCommand, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use mailgate::notify::render::{KINDS, Renderer, sample_context_in};
    let renderer = Renderer::load(dir.as_deref())?;
    match command {
        TemplatesCommand::Check => {
            for warning in renderer.warnings() {
                eprintln!("warning: {warning}");
            }
            let mut problems = renderer.gaps();
            problems.extend(renderer.check());
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            let overridden: Vec<String> = renderer.overridden().map(|(_, path)| path.display().to_string()).collect();
            if problems.is_empty() {
                let from = match (&dir, overridden.len()) {
                    (None, _) => "all built in".to_owned(),
                    (Some(dir), 0) => format!("all built in: no file in {} overrides one", dir.display()),
                    (Some(_), _) => format!("overridden by {}", overridden.join(", ")),
                };
                println!(
                    "{} notifications, {} templates in {} languages ({}; {from}): all good",
                    KINDS.len(),
                    KINDS.len() * 3,
                    renderer.locales().len(),
                    renderer.locales().join(", ")
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        TemplatesCommand::Render { name, html, locale } => {
            if !KINDS.contains(&name.as_str()) {
                anyhow::bail!("no notification {name:?}; there are: {}", KINDS.join(", "));
            }
            let languages = mailgate::notify::locale::chain(&[Some(locale.as_str())]);
            let rendered = renderer.render_in(&name, &sample_context_in(&name, &locale), &languages)?;
            if html {
                print!("{}", rendered.html);
            } else {
                println!("Subject: {}\n\n{}", rendered.subject, rendered.text);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn rules(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Check { file, config } => {
            let config = config.load()?;
            let file = file.or_else(|| config.rules_file.clone());
            let Some(file) = file else {
                let rules = mailgate::rules::RuleSet::built_in();
                println!("built-in rules: {} rules, all good", rules.rules.len());
                return Ok(ExitCode::SUCCESS);
            };
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let compiled = mailgate::rules::compile(&text, &file.display().to_string());
            // `plan =` conditions are checked against the plans of the
            // database, or of a fresh one when there is none yet.
            let compiled = match compiled {
                Ok(rules) => {
                    let unknown = rules.unknown_plans(&plan_ids(&config).await?);
                    if unknown.is_empty() { Ok(rules) } else { Err(unknown) }
                }
                Err(errors) => Err(errors),
            };
            match compiled {
                Ok(rules) => {
                    println!("{}: {} rules, all good", file.display(), rules.rules.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for error in errors {
                        eprintln!("error: {error}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        RulesCommand::Test { message, mail_from, rcpt, json, config } => {
            let mut config = config.load()?;
            let raw = std::fs::read(&message).with_context(|| format!("reading {}", message.display()))?;
            // No database yet (a fresh machine): decide against an empty one.
            let data_dir = config.data_dir.clone();
            let _empty = EmptyDatabase::unless_one_exists(&mut config)?;
            if _empty.is_some() {
                eprintln!(
                    "note: no database at {}; deciding as if the directory were empty (no users, sites or threads)",
                    data_dir.display()
                );
            }
            let (store, pipeline) = mailgate::app::tool_pipeline(&config).await?;
            let from = pipeline::analyze("", &[], &raw).and_then(|a| a.from).unwrap_or_default();
            let rcpt = if rcpt.is_empty() { vec![config.support_address()] } else { rcpt };
            let envelope = pipeline.envelope("rules test", mail_from.unwrap_or(from), &rcpt).await;
            let result = pipeline.dry_run(&envelope, &raw).await;
            store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
                return Ok(ExitCode::SUCCESS);
            }
            for refused in &envelope.refused {
                println!("RCPT {} refused: {}", refused.0, refused.1);
            }
            for trace in &result.routing.trace {
                let mark = if trace.matched { "MATCH" } else { "     " };
                println!("{mark} {}", trace.rule);
                for (condition, held) in &trace.conditions {
                    println!("        [{}] {condition}", if *held { "x" } else { " " });
                }
            }
            println!("decision:   {} {}", result.decision, result.reason);
            let effects = result.routing.actions.describe();
            if !effects.is_empty() {
                println!("actions:    {effects}");
            }
            println!("smtp reply: {}", result.smtp_reply);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The ids of the plans in the configured database, or (none there yet)
/// the plans a new database starts with.
async fn plan_ids(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut config = config.clone();
    let _empty = EmptyDatabase::unless_one_exists(&mut config)?;
    let store = mailgate::app::open_database(&config).await?;
    let plans = store.plans().await?;
    store.close().await;
    Ok(plans.into_iter().map(|p| p.id).collect())
}

/// A throw-away database in a folder of its own, removed when dropped:
/// what `rules test` decides against when there is no database yet.
struct EmptyDatabase(PathBuf);

impl EmptyDatabase {
    fn new() -> anyhow::Result<Self> {
        let name = format!("mailgate-rules-test-{}-{}", std::process::id(), mailgate::domain::token::random_hex(8));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Points `config` at a new empty database when the one it names does
    /// not exist; the guard that removes it again.
    fn unless_one_exists(config: &mut Config) -> anyhow::Result<Option<Self>> {
        if mailgate::app::require_existing_database(config).is_ok() {
            return Ok(None);
        }
        let empty = Self::new()?;
        config.database_url = format!("sqlite://{}", empty.0.join("empty.db").display());
        config.data_dir = empty.0.clone();
        Ok(Some(empty))
    }
}

impl Drop for EmptyDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn log(rule: Option<String>, limit: i64, json: bool, args: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let store = mailgate::app::open_existing_database(&config).await?;
    let entries = store.inbound_log(rule.as_deref(), limit).await?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in entries {
        println!(
            "{}  {:<9} {:<28} {} -> {}  [{}]  {}",
            mailgate::store::rfc3339(e.received_at),
            e.decision,
            e.mail_from.unwrap_or_default(),
            e.message_id.unwrap_or_default(),
            e.rcpt_to,
            e.rules,
            e.smtp_reply
        );
    }
    Ok(ExitCode::SUCCESS)
}
