//! The demo's side of the marketplace: the statements `meetingd demo` runs as the app would
//! (book, confirm, reschedule, cancel) and the reads it prints (the booking's meeting state, its
//! audit trail and events).
//!
//! Only the demo's scratch database ever sees these; nothing here is part of the daemon.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

/// Creates the scratch database `name` (a name meetingd made: letters, digits, `_`).
pub async fn create_database(admin: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await
}

/// Drops the scratch database `name`, closing whatever is still connected to it.
pub async fn drop_database(admin: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// Loads the reference marketplace schema (`sql/fixtures/marketplace.sql`).
pub async fn load_marketplace(db: &Client) -> Result<(), tokio_postgres::Error> {
    db.batch_execute(crate::fixtures::MARKETPLACE_FIXTURE).await
}

/// Dana (provider) offers "Online yoga coaching" on Jitsi; Sam (customer) books it for tomorrow
/// 10:00–11:00, pending. Returns the booking.
pub async fn book(db: &Client) -> Result<Uuid, tokio_postgres::Error> {
    Ok(db
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
        .get(0))
}

/// Sets the booking's status, as the app does on confirm and cancel.
pub async fn set_status(db: &Client, booking: Uuid, status: &str) -> Result<(), tokio_postgres::Error> {
    db.execute("UPDATE bookings SET status = $2 WHERE id = $1", &[&booking, &status]).await?;
    Ok(())
}

/// Moves the booking a day later.
pub async fn reschedule_a_day_later(db: &Client, booking: Uuid) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "UPDATE bookings SET start_time = start_time + interval '1 day', end_time = end_time + interval '1 day' WHERE id = $1",
        &[&booking],
    )
    .await?;
    Ok(())
}

/// The booking's meeting columns and its live meeting's start.
#[derive(Debug, Clone, Default)]
pub struct BookingState {
    pub status: Option<String>,
    pub link: Option<String>,
    pub meeting_id: Option<String>,
    pub platform: Option<String>,
    pub booking_start: Option<DateTime<Utc>>,
    pub meeting_start: Option<DateTime<Utc>>,
}

pub async fn state(db: &Client, booking: Uuid) -> Result<BookingState, tokio_postgres::Error> {
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

/// One audit line as the demo prints it: time of day, action, platform (`""` when none),
/// outcome, detail.
pub type TrailLine = (String, String, String, String, String);

pub async fn audit_trail(db: &Client, booking: Uuid) -> Result<Vec<TrailLine>, tokio_postgres::Error> {
    Ok(db
        .query(
            "SELECT to_char(at, 'HH24:MI:SS.MS'), action, platform, outcome, coalesce(detail, '')
               FROM meetingd.audit_log WHERE booking_id = $1 ORDER BY id",
            &[&booking],
        )
        .await?
        .iter()
        .map(|row| {
            (row.get(0), row.get(1), row.get::<_, Option<String>>(2).unwrap_or_default(), row.get(3), row.get(4))
        })
        .collect())
}

/// The booking's events for the app: kind and message.
pub async fn events(db: &Client, booking: Uuid) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    Ok(db
        .query("SELECT kind, message FROM meetingd.events WHERE booking_id = $1 ORDER BY id", &[&booking])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
