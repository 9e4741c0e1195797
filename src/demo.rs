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
use crate::fixtures::{MARKETPLACE_FIXTURE, with_dbname};

pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    let server_url = config.database.url.expose_secret().to_string();
    let mut admin_cfg = config.database.clone();
    admin_cfg.url = SecretString::from(with_dbname(&server_url, "postgres"));
    let admin = crate::db::connect(&admin_cfg)
        .await
        .context("the demo needs a PostgreSQL server (set DATABASE_URL, default postgres://postgres@127.0.0.1:5432)")?;
    let dbname = format!("meetingd_demo_{}", &Uuid::new_v4().simple().to_string()[..8]);
    admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.context("creating the scratch database")?;
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
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")).await?;
        println!("scratch database {dbname} dropped");
    }
    result
}

async fn story(config: &Config) -> anyhow::Result<()> {
    let db = crate::db::connect(&config.database).await?;
    db.batch_execute(MARKETPLACE_FIXTURE).await.context("loading the marketplace fixture")?;
    println!("marketplace schema loaded (users, services, bookings)");

    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(crate::run(config.clone(), shutdown.clone()));
    wait_for_schema(&db, &daemon).await?;
    println!("meetingd running in-process (migrations applied, listening on channel 'meetingd')\n");

    let booking: Uuid = db
        .query_one(
            "WITH provider AS (
                 INSERT INTO users (email, full_name, role) VALUES ('dana@example.com', 'Dana Rivera', 'provider') RETURNING id
             ), customer AS (
                 INSERT INTO users (email, full_name, role) VALUES ('sam@example.com', 'Sam Lee', 'customer') RETURNING id
             ), service AS (
                 INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
                 SELECT id, 'Online yoga coaching', 'One-to-one session', 60, true, 'jitsi' FROM provider RETURNING id
             )
             INSERT INTO bookings (service_id, customer_id, start_time, end_time, status)
             SELECT service.id, customer.id, date_trunc('day', now()) + interval '1 day 10 hours',
                    date_trunc('day', now()) + interval '1 day 11 hours', 'pending'
               FROM service, customer
             RETURNING id",
            &[],
        )
        .await?
        .get(0);
    println!("1. Sam books Dana's online service \"Online yoga coaching\" (booking {booking}, pending)");

    let confirmed = Instant::now();
    db.execute("UPDATE bookings SET status = 'confirmed' WHERE id = $1", &[&booking]).await?;
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

    db.execute(
        "UPDATE bookings SET start_time = start_time + interval '1 day', end_time = end_time + interval '1 day' WHERE id = $1",
        &[&booking],
    )
    .await?;
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

    db.execute("UPDATE bookings SET status = 'cancelled' WHERE id = $1", &[&booking]).await?;
    println!("4. Dana cancels the booking");
    let gone = wait_until(&db, booking, |s| s.status.as_deref() == Some("deleted")).await?;
    println!(
        "   meeting status {}, link {}",
        gone.status.as_deref().unwrap_or("?"),
        gone.link.as_deref().unwrap_or("(none)")
    );

    println!("\naudit trail of booking {booking}:");
    for row in db
        .query(
            "SELECT to_char(at, 'HH24:MI:SS.MS'), action, platform, outcome, coalesce(detail, '')
               FROM meetingd.audit_log WHERE booking_id = $1 ORDER BY id",
            &[&booking],
        )
        .await?
    {
        let platform: Option<String> = row.get(2);
        println!(
            "   {}  {:<15} {:<7} {:<7} {}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            platform.unwrap_or_default(),
            row.get::<_, String>(3),
            row.get::<_, String>(4)
        );
    }
    println!("events for the app:");
    for row in
        db.query("SELECT kind, message FROM meetingd.events WHERE booking_id = $1 ORDER BY id", &[&booking]).await?
    {
        println!("   {:<15} {}", row.get::<_, String>(0), row.get::<_, String>(1));
    }

    shutdown.cancel();
    daemon.await.context("daemon task")??;
    println!("\nmeetingd stopped cleanly");
    Ok(())
}

#[derive(Debug, Clone, Default)]
struct BookingState {
    status: Option<String>,
    link: Option<String>,
    meeting_id: Option<String>,
    platform: Option<String>,
    booking_start: Option<chrono::DateTime<chrono::Utc>>,
    meeting_start: Option<chrono::DateTime<chrono::Utc>>,
}

async fn read_state(db: &Client, booking: Uuid) -> anyhow::Result<BookingState> {
    let row = db
        .query_one(
            "SELECT b.meeting_status, b.meeting_link, b.meeting_id, b.meeting_platform, b.start_time, m.start_time
               FROM bookings b LEFT JOIN meetingd.meetings m ON m.booking_id = b.id AND m.state = 'live'
              WHERE b.id = $1",
            &[&booking],
        )
        .await?;
    Ok(BookingState {
        status: row.get(0),
        link: row.get(1),
        meeting_id: row.get(2),
        platform: row.get(3),
        booking_start: row.get(4),
        meeting_start: row.get(5),
    })
}

/// Watches the booking until `done` holds (the demo's only polling; 10 s at most).
async fn wait_until(db: &Client, booking: Uuid, done: impl Fn(&BookingState) -> bool) -> anyhow::Result<BookingState> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = read_state(db, booking).await?;
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
