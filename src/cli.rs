//! The command line: what each `meetingd` subcommand is and does.
//!
//! Owns argument parsing (clap) and the admin commands' readable reports. The daemon itself is
//! [`crate::run`]; this module only wires configuration, signals and exit codes around it.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::crypto::Keyring;
use crate::providers::Platform;
use crate::telemetry::LogFormat;

mod check;
mod webhooks;
pub use check::check;
pub use webhooks::WebhooksCommand;

#[derive(Debug, Parser)]
#[command(name = "meetingd", version, about = "Automatic online-meeting links for a services marketplace")]
pub struct Cli {
    /// Configuration file (TOML), layered over the built-in defaults.
    #[arg(long, global = true, env = "MEETINGD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "MEETINGD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run,
    /// Apply pending schema migrations and exit (a no-op when the schema is current).
    Migrate,
    /// Check configuration, database connection and schema version; non-zero exit on a problem.
    Check,
    /// Run a self-contained demonstration against a scratch database on the local PostgreSQL.
    Demo(DemoArgs),
    /// Token encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Providers' connected platform accounts.
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// Queue depth, failures, integrations needing reconnect, last errors.
    Status,
    /// Queue every confirmed future booking of an online service that has no meeting yet (after
    /// installing meetingd on a marketplace with bookings); past bookings and hand-set links stay.
    Backfill {
        /// Only count them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete what `[retention]` no longer keeps (the daemon also does this on a schedule).
    Prune,
    /// Compare the meetings meetingd marked at each platform with the bookings: delete the ones no
    /// booking wants, re-arm bookings whose meeting vanished (the daemon does this daily).
    Reconcile {
        /// Only report what it would do.
        #[arg(long)]
        dry_run: bool,
        /// Only this provider's (users.id) accounts.
        #[arg(long)]
        provider: Option<Uuid>,
    },
    /// One booking's meeting: state, audit trail, retries.
    #[command(subcommand)]
    Bookings(BookingsCommand),
    /// Outbound webhooks (`[webhooks]`): send dead letters again, switch the feed off.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Subcommand)]
pub enum BookingsCommand {
    /// The booking's meeting state and its audit trail.
    Show { booking: Uuid },
    /// Try the booking's meeting again now (or every failed one).
    Retry {
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        booking: Option<Uuid>,
        /// Every booking whose meeting failed.
        #[arg(long)]
        all_failed: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random encryption key (base64, 32 bytes) for encryption.key / key_file.
    Generate,
    /// Re-encrypt every stored token with the current key (safe while daemons run).
    Rotate {
        /// Rows re-encrypted per batch.
        #[arg(long, default_value_t = 100)]
        batch: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Store a provider's platform account (tokens are read from files or stdin, never argv).
    Add {
        /// The provider's users.id.
        #[arg(long)]
        user: Uuid,
        #[arg(long, value_parser = parse_platform)]
        platform: Platform,
        /// File holding the access token, or - for standard input.
        #[arg(long, value_name = "PATH|-")]
        access_token_file: PathBuf,
        /// File holding the refresh token, or - for standard input.
        #[arg(long, value_name = "PATH|-")]
        refresh_token_file: Option<PathBuf>,
        /// When the access token expires (RFC 3339).
        #[arg(long)]
        expires_at: DateTime<Utc>,
        /// The connected account's e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Granted OAuth scopes (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List integrations (never tokens).
    List,
    /// Mark an integration inactive and wipe its tokens.
    Disable {
        #[arg(long)]
        user: Uuid,
        #[arg(long, value_parser = parse_platform)]
        platform: Platform,
    },
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the scratch database afterwards (its name is printed).
    #[arg(long)]
    pub keep: bool,
}

/// Runs the parsed command; the exit code says whether it succeeded.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run => {
            let config = Config::load(cli.config.as_deref())?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            crate::run(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            let mut client = crate::db::connect_for_migrations(&config.database).await?;
            let applied = crate::db::migrate::migrate(&mut client).await?;
            if applied.applied.is_empty() {
                println!("schema already current at V{}; nothing to do", applied.version);
            } else {
                for name in &applied.applied {
                    println!("applied {name}");
                }
                println!("schema now at V{}", applied.version);
            }
            upgrade_envelopes(&config).await
        }
        Command::Check => Ok(if check(cli.config).await { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
        Command::Demo(args) => {
            let config = Config::load(cli.config.as_deref())?;
            crate::demo::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Generate) => {
            println!("{}", Keyring::generate_key().expose_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Rotate { batch }) => {
            let config = Config::load(cli.config.as_deref())?;
            let keyring = config.encryption.keyring().map_err(anyhow::Error::msg)?;
            let mut client = crate::db::session(&config.database).await?;
            let report = crate::admin::rotate_keys(&mut client, &keyring, batch.max(1)).await?;
            println!(
                "re-encrypted {} integration(s) with key {}; {} already current; {} failed",
                report.rotated,
                keyring.current_key_id(),
                report.already_current,
                report.failed.len()
            );
            for (id, reason) in &report.failed {
                println!("  integration {id}: {reason}");
            }
            print_envelope_format(&report);
            Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Integrations(command) => integrations(cli.config, command).await,
        Command::Status => {
            let config = Config::load(cli.config.as_deref())?;
            let client = crate::db::session(&config.database).await?;
            let connectors = crate::providers::auth::Connectors::from_config(&config).map_err(anyhow::Error::msg)?;
            let lifetimes = crate::monitor::Lifetimes::new(&connectors, &config.monitor).params();
            print_status(&crate::admin::status(client.sql(), &lifetimes).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill { dry_run } => {
            let config = Config::load(cli.config.as_deref())?;
            let client = crate::db::session(&config.database).await?;
            let n = crate::db::maintenance::backfill(client.sql(), dry_run).await?;
            if dry_run {
                println!(
                    "{n} confirmed future booking(s) of online services have no meeting yet; run without --dry-run to queue them"
                );
            } else {
                println!("queued {n} confirmed future booking(s); `meetingd status` shows the queue");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile { dry_run, provider } => {
            let config = Config::load(cli.config.as_deref())?;
            let keyring = std::sync::Arc::new(config.encryption.keyring().map_err(anyhow::Error::msg)?);
            let pool = crate::db::pool(&config.database, 2)?;
            let actor = "admin:reconcile".to_string();
            let deps = crate::providers::ProviderDeps { pool: pool.clone(), keyring, actor: actor.clone() };
            let providers = crate::providers::Providers::real(&config, &deps).map_err(anyhow::Error::msg)?;
            let options = crate::reconcile::Options {
                dry_run,
                provider,
                pause: std::time::Duration::from_millis(config.reconcile.pause_ms),
            };
            let r = crate::reconcile::sweep(&pool, &providers, &actor, options).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            println!(
                "{} account(s), {} marked meeting(s) listed; {} no booking wants ({verb} {}); {} booking(s) whose meeting vanished{}",
                r.accounts,
                r.listed,
                r.strays.len(),
                if dry_run { r.strays.len() } else { r.deleted },
                r.vanished.len(),
                if dry_run { "" } else { " re-armed" }
            );
            for (meeting, booking) in &r.strays {
                println!("  stray    {meeting} (booking {booking})");
            }
            for booking in &r.vanished {
                println!("  vanished booking {booking}");
            }
            for problem in &r.problems {
                println!("  problem  {problem}");
            }
            Ok(if r.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Prune => {
            let config = Config::load(cli.config.as_deref())?;
            let client = crate::db::session(&config.database).await?;
            let p = crate::db::maintenance::prune(client.sql(), &config.retention).await?;
            println!(
                "pruned {} row(s): {} audit, {} events, {} finished jobs, {} expired OAuth states, {} retired integrations, {} orphan reports, {} past daily counts, {} webhook deliveries, {} idle rate buckets",
                p.total(),
                p.audit_log,
                p.events,
                p.jobs,
                p.oauth_states,
                p.retired_integrations,
                p.orphaned_meetings,
                p.platform_quota,
                p.webhook_deliveries,
                p.rate_buckets
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bookings(command) => {
            let config = Config::load(cli.config.as_deref())?;
            let client = crate::db::session(&config.database).await?;
            match command {
                BookingsCommand::Show { booking } => match crate::admin::show_booking(client.sql(), booking).await? {
                    Some(lines) => lines.iter().for_each(|l| println!("{l}")),
                    None => {
                        println!("no booking {booking}");
                        return Ok(ExitCode::FAILURE);
                    }
                },
                BookingsCommand::Retry { all_failed: true, .. } => {
                    let n = crate::db::requeue::requeue_failed(client.sql(), crate::db::requeue::Failed::All).await?;
                    println!("queued {n} failed booking(s) again");
                }
                BookingsCommand::Retry { booking: Some(booking), .. } => {
                    if crate::admin::retry_booking(client.sql(), booking).await? {
                        println!("queued booking {booking}; `meetingd bookings show {booking}` shows the outcome");
                    } else {
                        println!("booking {booking} is not a booking of an online service meetingd knows");
                        return Ok(ExitCode::FAILURE);
                    }
                }
                BookingsCommand::Retry { .. } => unreachable!("clap requires a booking or --all-failed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks(command) => webhooks::execute(cli.config, command).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "meetingd",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(s: &crate::admin::Status) {
    let q = &s.queue;
    println!(
        "queue         {} pending ({} due now, oldest due {:.1} s), {} being worked on, {} failed, {} done",
        q.pending, q.due_now, q.oldest_due_secs, q.leased, q.failed, q.done
    );
    println!("daemons       {} listening on this database", q.listening_daemons);
    println!("notify queue  {:.1} % used", q.notification_queue_usage * 100.0);
    if s.needs_reconnect.is_empty() {
        println!("integrations  none needs reconnecting");
    } else {
        println!("integrations  {} need reconnecting (the provider must connect again):", s.needs_reconnect.len());
        for n in &s.needs_reconnect {
            println!(
                "  {}  {:<11}  {:<28}  since {}",
                n.user_id,
                n.platform,
                n.email.as_deref().unwrap_or("-"),
                n.since.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
            );
        }
    }
    if !s.expiring.is_empty() {
        println!("expiring      {} connection(s) stop working soon unless reconnected:", s.expiring.len());
        for e in &s.expiring {
            println!(
                "  {}  {:<11}  {:<28}  ends {}",
                e.user_id,
                e.platform,
                e.email.as_deref().unwrap_or("-"),
                e.ends_at.format("%Y-%m-%d %H:%M UTC")
            );
        }
    }
    if s.orphan_count == 0 {
        println!("orphans       none (every meeting meetingd made is within its reach)");
    } else {
        println!(
            "orphans       {} meeting(s) exist at their platform out of meetingd's reach; the providers were told:",
            s.orphan_count
        );
        for o in &s.orphans {
            println!(
                "  {}  {}  {} {}: {}",
                o.booking_id,
                o.found_at.format("%Y-%m-%d %H:%M UTC"),
                o.platform,
                o.external_id,
                o.reason
            );
        }
    }
    webhooks::print_status(&s.webhooks);
    if !s.recent_failures.is_empty() {
        println!("last failures (retry with `meetingd bookings retry <id>` or `--all-failed`):");
        for f in &s.recent_failures {
            println!("  {}  {}  {}", f.booking_id, f.at.format("%Y-%m-%d %H:%M UTC"), f.error);
        }
    }
}

async fn integrations(file: Option<PathBuf>, command: IntegrationsCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(file.as_deref())?;
    let mut client = crate::db::session(&config.database).await?;
    match command {
        IntegrationsCommand::Add {
            user,
            platform,
            access_token_file,
            refresh_token_file,
            expires_at,
            email,
            scopes,
        } => {
            let keyring = config.encryption.keyring().map_err(anyhow::Error::msg)?;
            if access_token_file.as_os_str() == "-"
                && refresh_token_file.as_deref().is_some_and(|p| p.as_os_str() == "-")
            {
                anyhow::bail!("only one of the tokens can come from standard input");
            }
            let new = crate::admin::NewIntegration {
                user_id: user,
                platform,
                access_token: read_secret(&access_token_file)?,
                refresh_token: refresh_token_file.as_deref().map(read_secret).transpose()?,
                expires_at: Some(expires_at),
                scopes,
                platform_user_id: None,
                email,
            };
            let tx = client.transaction().await?;
            let id = crate::admin::store_integration(tx.sql(), &keyring, "admin", &new).await?;
            tx.commit().await?;
            println!(
                "stored {platform} integration {id} for user {user} (tokens encrypted with key {})",
                keyring.current_key_id()
            );
        }
        IntegrationsCommand::List => {
            let keyring = config.encryption.keyring().ok();
            println!(
                "{:<36}  {:<11}  {:<15}  {:<28}  {:<20}  key",
                "user", "platform", "status", "account", "token expires"
            );
            for row in crate::db::integrations::list(client.sql()).await? {
                let key = match &keyring {
                    None => "?",
                    Some(k) if k.is_current(&row.access_token) => "current",
                    Some(k)
                        if k.decrypt(&row.access_token, row.id, crate::crypto::Column::AccessToken(row.owner()))
                            .is_ok() =>
                    {
                        "old"
                    }
                    Some(_) if row.access_token.is_empty() => "-",
                    // Re-encrypted by the daemon's start-up or `meetingd migrate`.
                    Some(_) if Keyring::is_legacy(&row.access_token) => "old-format",
                    Some(_) => "UNREADABLE",
                };
                println!(
                    "{:<36}  {:<11}  {:<15}  {:<28}  {:<20}  {key}",
                    row.user_id,
                    row.platform,
                    if row.is_active { "active" } else { "needs_reconnect" },
                    row.email.as_deref().unwrap_or("-"),
                    row.expires_at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "-".into()),
                );
            }
        }
        IntegrationsCommand::Disable { user, platform } => {
            if crate::admin::disable_integration(client.transaction().await?, "admin", user, platform).await? {
                println!("disabled {platform} for user {user}; its tokens were wiped");
            } else {
                println!("user {user} has no {platform} integration");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `meetingd migrate`'s second half: re-encrypts old-format token envelopes bound to their owner
/// (the daemon does the same at start-up). Without a key here it says so and leaves it to the daemon.
async fn upgrade_envelopes(config: &Config) -> anyhow::Result<ExitCode> {
    let Ok(keyring) = config.encryption.keyring() else {
        println!(
            "token envelopes not checked: no encryption key configured here (the daemon upgrades them at start-up)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    let mut client = crate::db::session(&config.database).await?;
    let report = crate::admin::upgrade_envelopes(&mut client, &keyring).await?;
    for (id, reason) in &report.failed {
        println!("  integration {id}: {reason}");
    }
    print_envelope_format(&report);
    Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_envelope_format(report: &crate::admin::Rotation) {
    if report.upgraded > 0 {
        println!(
            "{} integration(s) re-encrypted from the old token envelope format, bound to their user and platform",
            report.upgraded
        );
    }
    if report.legacy_refused {
        println!("token envelopes: all bound to their user and platform; old-format envelopes are refused");
    } else {
        println!(
            "token envelopes: old-format envelopes remain under a key that is not configured; add it to encryption.old_keys and run `meetingd keys rotate`"
        );
    }
}

/// A token from a file, or from standard input for `-`; surrounding whitespace is dropped.
fn read_secret(path: &std::path::Path) -> anyhow::Result<SecretString> {
    use std::io::Read;
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("{} holds no token", path.display());
    }
    Ok(SecretString::from(token.to_string()))
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
    }
    shutdown.cancel();
}
