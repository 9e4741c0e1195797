//! Logging set-up: one subscriber for the whole process.
//!
//! Levels come from `MEETINGD_LOG`, else `RUST_LOG`, else the command's default (`info`). Owns nothing else; what is logged
//! (and that no secret ever is) is decided where the events are written.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; `default_level` applies when neither variable is set.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = std::env::var("MEETINGD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
