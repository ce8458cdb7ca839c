//! The commands that look after a running gateway's state: `outbox`
//! (list, retry), `suppressions` (list, lift), `keys` (reply-token signing
//! keys) and `tokens` (the HTTP credentials).

use anyhow::Context;
use clap::Subcommand;
use mailgate::config::StoreArgs;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Add a new signing key: new tokens use it (running servers within
    /// seconds); tokens signed with older keys keep verifying.
    Rotate {
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Take a key out of service (a stolen secret): every reply address and
    /// link it signed is refused from then on, on every running server
    /// within seconds. The newest key cannot be retired: rotate first.
    Retire {
        /// The key's id (`mailgate keys list`).
        id: u8,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// List the key ids (never the secrets).
    List {
        #[command(flatten)]
        config: StoreArgs,
    },
}

/// Which bearer token.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum TokenName {
    /// The Dashboard's token, for /api/v1.
    Api,
    /// The admin token, for /api/v1/admin.
    Admin,
}

#[derive(Subcommand)]
pub(crate) enum TokensCommand {
    /// Make a new random token and print it (once); the old one stops
    /// working on every running instance within seconds.
    Reset {
        #[arg(value_enum)]
        which: TokenName,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Set the token to one you choose, read from standard input (at least
    /// 16 characters), so that it never shows in a process list.
    Set {
        #[arg(value_enum)]
        which: TokenName,
        #[command(flatten)]
        config: StoreArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum SuppressionsCommand {
    /// List suppressed addresses, latest bounce first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Send mail to an address again: its counted bounces stop counting
    /// (they stay recorded, marked lifted).
    Lift {
        /// The address.
        address: String,
        /// Who lifts it, for the record.
        #[arg(long, default_value = "cli")]
        by: String,
        #[command(flatten)]
        config: StoreArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum OutboxCommand {
    /// List outgoing mail, newest first.
    List {
        /// Only the failed ones.
        #[arg(long)]
        failed: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Put a failed item, or a pending one waiting out its backoff, back in
    /// the queue, due now (a running server sends it).
    Retry {
        /// The outbox id.
        id: i64,
        #[command(flatten)]
        config: StoreArgs,
    },
}

pub(crate) async fn outbox(command: OutboxCommand) -> anyhow::Result<ExitCode> {
    let (OutboxCommand::List { config: args, .. } | OutboxCommand::Retry { config: args, .. }) = &command;
    let config = args.load()?;
    let store = mailgate::app::open_existing_database(&config).await?;
    let result = match command {
        OutboxCommand::List { failed, limit, json, .. } => {
            let items = store.outbox(failed, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{:>6}  {:<8}  {:<22}  {:<32}  {:>3}  LAST ERROR", "ID", "STATUS", "KIND", "TO", "TRY");
                for item in items {
                    println!(
                        "{:>6}  {:<8}  {:<22}  {:<32}  {:>3}  {}",
                        item.id,
                        item.status,
                        item.kind,
                        item.to_address,
                        item.attempts,
                        item.last_error.unwrap_or_default()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        OutboxCommand::Retry { id, .. } => {
            let item = store.retry(id).await?;
            println!("outbox item {} to {} is queued again", item.id, item.to_address);
            ExitCode::SUCCESS
        }
    };
    store.close().await;
    Ok(result)
}

pub(crate) async fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    use mailgate::http::credentials::{self, TokenKind};
    let (TokensCommand::Reset { which, config: args } | TokensCommand::Set { which, config: args }) = &command;
    let config = args.load()?;
    let kind = match which {
        TokenName::Api => TokenKind::Api,
        TokenName::Admin => TokenKind::Admin,
    };
    let configured = match kind {
        TokenKind::Api => config.api_token.is_some(),
        TokenKind::Admin => config.admin_token.is_some(),
    };
    let store = mailgate::app::open_existing_database(&config).await?;
    let chosen = match command {
        TokensCommand::Reset { .. } => None,
        TokensCommand::Set { .. } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the token from standard input")?;
            let token = line.trim().to_owned();
            credentials::refuse_weak("That token", &token)?;
            Some(token)
        }
    };
    let token = credentials::reset(&store, kind, chosen.clone()).await?;
    store.close().await;
    if chosen.is_none() {
        println!("New {} token (shown once):\n  {token}", kind.name());
    } else {
        println!("The {} token is set.", kind.name());
    }
    println!("Running instances take it within {} seconds.", credentials::REFRESH.as_secs());
    if configured {
        eprintln!(
            "note: the configuration sets this token (MAILGATE_{}_TOKEN or the config file); \
             it wins over the stored one until you remove it",
            kind.name().to_uppercase()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn suppressions(command: SuppressionsCommand) -> anyhow::Result<ExitCode> {
    let (SuppressionsCommand::List { config: args, .. } | SuppressionsCommand::Lift { config: args, .. }) = &command;
    let config = args.load()?;
    let store = mailgate::app::open_existing_database(&config).await?;
    let result = match command {
        SuppressionsCommand::List { json, .. } => {
            let delivery = &config.delivery;
            let found = store.suppressions(delivery.max_hard_bounces, delivery.suppression_days).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else if found.is_empty() {
                println!("no address is suppressed");
            } else {
                println!("{:<40}  {:>7}  {:<24}  UNTIL", "ADDRESS", "BOUNCES", "LAST BOUNCE");
                for s in found {
                    let until = s.expires_at.map_or_else(|| "lifted by hand".to_owned(), mailgate::store::rfc3339);
                    println!(
                        "{:<40}  {:>7}  {:<24}  {until}",
                        s.address,
                        s.bounces,
                        mailgate::store::rfc3339(s.last_at)
                    );
                }
            }
            ExitCode::SUCCESS
        }
        SuppressionsCommand::Lift { address, by, .. } => match store.lift_suppression(&address, &by).await? {
            0 => {
                eprintln!("{address} has no counted bounces to lift");
                ExitCode::FAILURE
            }
            n => {
                println!("{address}: {n} bounces lifted; mail to it is sent again");
                ExitCode::SUCCESS
            }
        },
    };
    store.close().await;
    Ok(result)
}

pub(crate) async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let (KeysCommand::Rotate { config: args }
    | KeysCommand::List { config: args }
    | KeysCommand::Retire { config: args, .. }) = &command;
    let config = args.load()?;
    mailgate::app::require_existing_database(&config)?;
    let (store, signer) = mailgate::app::open_store(&config).await?;
    match command {
        KeysCommand::Rotate { .. } => {
            let id = mailgate::app::rotate_token_key(&store).await?;
            println!(
                "token key {id} added; running servers sign new tokens with it within {} seconds \
                 (tokens of older keys keep verifying until you retire them)",
                mailgate::http::credentials::REFRESH.as_secs()
            );
        }
        KeysCommand::Retire { id, .. } => {
            mailgate::app::retire_token_key(&store, id).await?;
            println!(
                "token key {id} retired: its secret is deleted, and reply addresses and links it signed are refused \
                 by running servers within {} seconds",
                mailgate::http::credentials::REFRESH.as_secs()
            );
        }
        KeysCommand::List { .. } => {
            let (held, retired) = signer.key_ids();
            for id in &held {
                let role = if *id == signer.current_key_id() { "signs new tokens" } else { "verifies" };
                println!("key {id}: {role}");
            }
            for id in retired {
                println!("key {id}: retired");
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
