//! The command line: what each `meetingd` subcommand is and does.
//!
//! Owns argument parsing (clap) and the admin commands' readable reports. The daemon itself is
//! [`crate::run`]; this module only wires configuration, signals and exit codes around it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact_url};
use crate::telemetry::LogFormat;

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
            let mut client = crate::db::connect(&config.database).await?;
            let applied = crate::db::migrate::migrate(&mut client).await?;
            if applied.applied.is_empty() {
                println!("schema already current at V{}; nothing to do", applied.version);
            } else {
                for name in &applied.applied {
                    println!("applied {name}");
                }
                println!("schema now at V{}", applied.version);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(if check(cli.config).await { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
        Command::Demo(args) => {
            let config = Config::load(cli.config.as_deref())?;
            crate::demo::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints one line per check and every problem found; `true` when there is none.
pub async fn check(file: Option<PathBuf>) -> bool {
    let mut ok = true;
    let mut report = |good: bool, what: &str, detail: String| {
        ok &= good;
        println!("{} {what:<14} {detail}", if good { "ok  " } else { "FAIL" });
    };
    let source = file.as_ref().map_or("built-in defaults and environment".to_string(), |p| p.display().to_string());
    let config: Config = match Config::figment(file.as_deref()).extract() {
        Ok(config) => config,
        Err(e) => {
            for error in e {
                report(false, "config", error.to_string());
            }
            return ok;
        }
    };
    let problems = config.problems();
    if problems.is_empty() {
        report(true, "config", format!("valid ({source})"));
    }
    for problem in problems {
        report(false, "config", problem);
    }
    match config.encryption.keyring() {
        Ok(keyring) => report(
            true,
            "encryption",
            format!(
                "key {} (+{} old key(s) for decryption)",
                keyring.current_key_id(),
                config.encryption.old_keys.len()
            ),
        ),
        Err(e) => report(false, "encryption", e),
    }
    report(
        true,
        "platforms",
        format!(
            "jitsi{}; fallback {}",
            if config.google.is_configured() { ", google_meet" } else { " (google_meet not configured)" },
            match config.fallback.platform {
                crate::config::Fallback::Platform(p) => p.as_str(),
                crate::config::Fallback::None => "none",
            }
        ),
    );
    let shown = redact_url(config.database.url.expose_secret());
    let client = match crate::db::connect(&config.database).await {
        Ok(client) => {
            report(true, "database", format!("connected to {shown}"));
            client
        }
        Err(e) => {
            report(false, "database", format!("{e} ({shown})"));
            return ok;
        }
    };
    match crate::db::migrate::status(&client).await {
        Ok(status) => report(status.is_current(), "schema", status.explain()),
        Err(e) => report(false, "schema", e.to_string()),
    }
    ok
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
