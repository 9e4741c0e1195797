//! `meetingd webhooks retry|off` and the webhooks line of `meetingd status`.
//!
//! It changes delivery rows and the feed flag only (`db/webhooks.rs`); it sends nothing itself:
//! the daemons deliver what it queues again.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::db::status::Webhooks;
use crate::db::webhooks::{self as store, Redrive};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Send dead-lettered messages again (same webhook-id; max_age counts from now).
    Retry {
        /// The meetingd.events id of the message.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        event: Option<i64>,
        /// Every dead-lettered message.
        #[arg(long)]
        all_dead: bool,
    },
    /// Stop queueing events for delivery and dead-letter what is pending (after removing
    /// webhooks.url from every daemon: a daemon with one switches the feed on again at start).
    Off,
}

pub async fn execute(file: Option<PathBuf>, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(file.as_deref())?;
    let client = crate::db::session(&config.database).await?;
    match command {
        WebhooksCommand::Retry { event, all_dead } => {
            let which = match (event, all_dead) {
                (Some(id), _) => Redrive::Event(id),
                (None, true) => Redrive::All,
                (None, false) => unreachable!("clap requires an event or --all-dead"),
            };
            let n = store::redrive(client.sql(), which).await?;
            match event {
                Some(id) if n == 0 => {
                    println!("event {id} has no dead-lettered webhook");
                    return Ok(ExitCode::FAILURE);
                }
                _ => {
                    println!("queued {n} dead-lettered webhook(s) again; a daemon sends them within its sweep interval")
                }
            }
        }
        WebhooksCommand::Off => {
            let n = store::switch_off(client.sql()).await?;
            println!("webhooks off: new events are not queued; {n} pending message(s) dead-lettered");
            if config.webhooks.is_on() {
                println!(
                    "note: this configuration still sets webhooks.url; a daemon started with it switches webhooks on again"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The webhooks line of `meetingd status`.
pub fn print_status(w: &Webhooks) {
    match w.since {
        None if w.pending + w.dead == 0 => {
            println!(
                "webhooks      off (no daemon with webhooks.url has started since `meetingd webhooks off`, if ever)"
            )
        }
        None => println!("webhooks      off; {} pending, {} dead-lettered left from before", w.pending, w.dead),
        Some(since) => println!(
            "webhooks      on since {}: {} pending ({} failing, oldest {:.1} s), {} dead-lettered{}",
            since.format("%Y-%m-%d %H:%M UTC"),
            w.pending,
            w.failing,
            w.oldest_pending_secs,
            w.dead,
            if w.dead > 0 { " (send them again with `meetingd webhooks retry --all-dead`)" } else { "" }
        ),
    }
}
