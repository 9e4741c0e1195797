//! Logging set-up: one subscriber for the whole process.
//!
//! Levels come from `MEETINGD_LOG`, else `RUST_LOG`, else the command's default (`info`). Owns nothing else; what is logged
//! (and that no secret ever is) is decided where the events are written.

use tracing_subscriber::EnvFilter;

/// Libraries whose routine chatter (server NOTICEs, migration steps) an admin does not need.
const QUIET: &str = "tokio_postgres=warn,refinery_core=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; `default_level` applies when neither variable is set. Under
/// systemd (stderr is the journal: `JOURNAL_STREAM` set) events go to journald with their fields
/// (BOOKING_ID, PLATFORM, OPERATION, OUTCOME, …) unless JSON was asked for.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = std::env::var("MEETINGD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{default_level},{QUIET}")));
    if format == LogFormat::Text && std::env::var_os("JOURNAL_STREAM").is_some() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("meetingd".into()))
                .try_init();
            return;
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
