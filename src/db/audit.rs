//! `meetingd.audit_log` and `meetingd.events` outside the write-back: appending an entry (token
//! refreshes, integration changes, API actions) and reading a booking's trail.
//!
//! The write-back records its own audit rows and events inside its one statement
//! (`jobs/write_back.sql`); everything else appends through this module. Nothing here writes a
//! token or a link.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Sql};

use crate::job::{AuditEntry, Event};

/// One audit row as `meetingd bookings show` prints it.
pub struct TrailEntry {
    pub at: Option<DateTime<Utc>>,
    pub actor: String,
    pub action: String,
    /// `-` when the row names none.
    pub platform: String,
    pub outcome: String,
    pub attempt: Option<i32>,
    pub duration_ms: Option<i32>,
    /// `""` when the row has none.
    pub detail: String,
}

/// The booking's audit rows, oldest first.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn trail(db: Sql<'_>, booking: Uuid) -> Result<Vec<TrailEntry>, DbError> {
    Ok(db
        .query(
            "SELECT at, actor, action, COALESCE(platform, '-'), outcome, attempt, duration_ms, COALESCE(detail, '')
               FROM meetingd.audit_log WHERE booking_id = $1 ORDER BY id",
            &[&booking],
        )
        .await?
        .iter()
        .map(|r| TrailEntry {
            at: r.get(0),
            actor: r.get(1),
            action: r.get(2),
            platform: r.get(3),
            outcome: r.get(4),
            attempt: r.get(5),
            duration_ms: r.get(6),
            detail: r.get(7),
        })
        .collect())
}

const INSERT_AUDIT: &str = "INSERT INTO meetingd.audit_log
        (actor, action, booking_id, user_id, platform, outcome, attempt, duration_ms, detail)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const INSERT_EVENT: &str =
    "INSERT INTO meetingd.events (kind, user_id, booking_id, platform, message) VALUES ($1, $2, $3, $4, $5)";

/// Records a notification for the app (a trigger also sends it on channel `meetingd_events`).
pub async fn insert_event(
    db: Sql<'_>,
    event: &Event,
    user_id: Option<Uuid>,
    booking_id: Option<Uuid>,
) -> Result<(), DbError> {
    db.execute(INSERT_EVENT, &[&event.kind, &user_id, &booking_id, &event.platform, &event.message]).await?;
    Ok(())
}

/// Appends one audit row.
pub async fn insert_audit(
    db: Sql<'_>,
    actor: &str,
    booking_id: Option<Uuid>,
    user_id: Option<Uuid>,
    attempt: Option<i32>,
    entry: &AuditEntry,
) -> Result<(), DbError> {
    db.execute(
        INSERT_AUDIT,
        &[
            &actor,
            &entry.action,
            &booking_id,
            &user_id,
            &entry.platform,
            &entry.outcome,
            &attempt,
            &entry.duration_ms,
            &entry.detail,
        ],
    )
    .await?;
    Ok(())
}
