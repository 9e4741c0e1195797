//! `meetingd.audit_log` and `meetingd.events` outside the write-back: appending an entry (token
//! refreshes, integration changes, API actions) and reading a booking's trail.
//!
//! The insert statements are the write-back's own (`jobs.rs`), re-exported here so that every
//! other caller appends through this module. Nothing here writes a token or a link.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Sql};

pub use super::jobs::{AuditEntry, Event, insert_audit, insert_event};

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
