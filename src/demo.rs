//! `meetingd demo`: the whole flow against a scratch database, printed as it happens.
//!
//! Creates a database on the configured PostgreSQL server, loads the reference marketplace schema,
//! runs the daemon in-process with the real providers, and plays a booking's life: confirm,
//! reschedule, cancel. It touches no other database and drops its own unless `--keep` is given.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cli::DemoArgs;
use crate::config::Config;
use crate::db::demo::{self, BookingState};
use crate::fixtures::with_dbname;

pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    let server_url = config.database.url.expose_secret().to_string();
    let mut admin_cfg = config.database.clone();
    admin_cfg.url = SecretString::from(with_dbname(&server_url, "postgres"));
    let admin = crate::db::connect(&admin_cfg)
        .await
        .context("the demo needs a PostgreSQL server (set DATABASE_URL, default postgres://postgres@127.0.0.1:5432)")?;
    let dbname = format!("meetingd_demo_{}", &Uuid::new_v4().simple().to_string()[..8]);
    demo::create_database(&admin, &dbname).await.context("creating the scratch database")?;
    println!("scratch database {dbname} created");

    config.database.url = SecretString::from(with_dbname(&server_url, &dbname));
    if config.encryption.keyring().is_err() {
        // The demo stores no platform tokens; the daemon still insists on a key.
        config.encryption.key = crate::crypto::Keyring::generate_key();
        println!("using a throwaway encryption key (none configured)");
    }
    config.worker.concurrency = config.worker.concurrency.min(4);
    // The demo drives the database directly; it needs no API port.
    config.http.listen = String::new();
    config.http.metrics_listen = String::new();
    let result = story(&config).await;

    if args.keep {
        println!("kept database {dbname}");
    } else {
        demo::drop_database(&admin, &dbname).await?;
        println!("scratch database {dbname} dropped");
    }
    result
}

async fn story(config: &Config) -> anyhow::Result<()> {
    let db = crate::db::connect(&config.database).await?;
    demo::load_marketplace(&db).await.context("loading the marketplace fixture")?;
    println!("marketplace schema loaded (users, services, bookings)");

    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(crate::run(config.clone(), shutdown.clone()));
    wait_for_schema(&db, &daemon).await?;
    println!("meetingd running in-process (migrations applied, listening on channel 'meetingd')\n");

    let booking = demo::book(&db).await?;
    println!("1. Sam books Dana's online service \"Online yoga coaching\" (booking {booking}, pending)");

    let confirmed = Instant::now();
    demo::set_status(&db, booking, "confirmed").await?;
    println!("2. Dana confirms the booking");
    let link = wait_until(&db, booking, |s| s.status.as_deref() == Some("ready")).await?;
    println!(
        "   meeting link landed after {} ms: {}",
        confirmed.elapsed().as_millis(),
        link.link.as_deref().unwrap_or("?")
    );
    println!(
        "   platform {}, meeting id {}",
        link.platform.as_deref().unwrap_or("?"),
        link.meeting_id.as_deref().unwrap_or("?")
    );

    demo::reschedule_a_day_later(&db, booking).await?;
    println!("3. Sam reschedules to the next day");
    let moved =
        wait_until(&db, booking, |s| s.meeting_start == s.booking_start && s.status.as_deref() == Some("ready"))
            .await?;
    println!(
        "   meeting moved to {} (link unchanged: {})",
        moved.meeting_start.map(|t| t.to_rfc3339()).unwrap_or_default(),
        if moved.link == link.link { "yes" } else { "NO" }
    );
    if moved.link != link.link {
        bail!("the link changed on reschedule");
    }

    demo::set_status(&db, booking, "cancelled").await?;
    println!("4. Dana cancels the booking");
    let gone = wait_until(&db, booking, |s| s.status.as_deref() == Some("deleted")).await?;
    println!(
        "   meeting status {}, link {}",
        gone.status.as_deref().unwrap_or("?"),
        gone.link.as_deref().unwrap_or("(none)")
    );

    println!("\naudit trail of booking {booking}:");
    for (at, action, platform, outcome, detail) in demo::audit_trail(&db, booking).await? {
        println!("   {at}  {action:<15} {platform:<7} {outcome:<7} {detail}");
    }
    println!("events for the app:");
    for (kind, message) in demo::events(&db, booking).await? {
        println!("   {kind:<15} {message}");
    }

    shutdown.cancel();
    daemon.await.context("daemon task")??;
    println!("\nmeetingd stopped cleanly");
    Ok(())
}

/// Watches the booking until `done` holds (the demo's only polling; 10 s at most).
async fn wait_until(db: &Client, booking: Uuid, done: impl Fn(&BookingState) -> bool) -> anyhow::Result<BookingState> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = demo::state(db, booking).await?;
        if done(&state) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            bail!("meetingd did not reconcile booking {booking} within 10 s (last state: {state:?})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_schema(
    db: &Client,
    daemon: &tokio::task::JoinHandle<Result<(), crate::RunError>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crate::db::migrate::status(crate::db::Sql::new(db, crate::db::Mode::DIRECT)).await?.is_current() {
        if daemon.is_finished() {
            bail!("meetingd stopped during start-up");
        }
        if Instant::now() > deadline {
            bail!("meetingd did not finish its migrations within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
