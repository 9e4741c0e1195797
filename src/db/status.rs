//! What `meetingd status`, `meetingd check` and the metrics sampler read: the queue's counts,
//! failures, integrations waiting for a reconnect, orphaned meetings, webhook deliveries, the
//! session's TLS.
//!
//! Read-only aggregates over `meetingd.*` and `user_meeting_integrations`; nothing here changes
//! a row or returns a token.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Sql};

/// The queue at a glance.
pub struct Queue {
    pub pending: i64,
    pub due_now: i64,
    pub oldest_due_secs: f64,
    pub leased: i64,
    pub failed: i64,
    pub done: i64,
    /// Sessions on this database listening on channel `meetingd`.
    pub listening_daemons: i64,
    pub notification_queue_usage: f64,
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn queue(db: Sql<'_>) -> Result<Queue, DbError> {
    let q = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'pending' AND run_at <= now() AND (lease_until IS NULL OR lease_until < now())),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()
                                     AND (lease_until IS NULL OR lease_until < now()))), 0)::float8,
                    count(*) FILTER (WHERE state = 'pending' AND lease_until >= now()),
                    count(*) FILTER (WHERE state = 'failed'),
                    count(*) FILTER (WHERE state = 'done'),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN meetingd%'),
                    pg_notification_queue_usage()
               FROM meetingd.jobs",
            &[],
        )
        .await?;
    Ok(Queue {
        pending: q.get(0),
        due_now: q.get(1),
        oldest_due_secs: q.get(2),
        leased: q.get(3),
        failed: q.get(4),
        done: q.get(5),
        listening_daemons: q.get(6),
        notification_queue_usage: q.get(7),
    })
}

/// An integration waiting for its provider to connect again.
pub struct NeedsReconnect {
    pub user_id: Uuid,
    pub platform: String,
    pub email: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// The 20 most recently deactivated integrations that still hold tokens.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn needs_reconnect(db: Sql<'_>) -> Result<Vec<NeedsReconnect>, DbError> {
    Ok(db
        .query(
            "SELECT user_id, platform, platform_user_email, updated_at FROM user_meeting_integrations
              WHERE is_active IS NOT TRUE AND access_token <> '' ORDER BY updated_at DESC LIMIT 20",
            &[],
        )
        .await?
        .iter()
        .map(|r| NeedsReconnect { user_id: r.get(0), platform: r.get(1), email: r.get(2), since: r.get(3) })
        .collect())
}

/// A failed job.
pub struct Failure {
    pub booking_id: Uuid,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// The 10 most recent failed jobs.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn recent_failures(db: Sql<'_>) -> Result<Vec<Failure>, DbError> {
    Ok(db
        .query(
            "SELECT booking_id, updated_at, COALESCE(last_error, '') FROM meetingd.jobs
              WHERE state = 'failed' ORDER BY updated_at DESC LIMIT 10",
            &[],
        )
        .await?
        .iter()
        .map(|r| Failure { booking_id: r.get(0), at: r.get(1), error: r.get(2) })
        .collect())
}

/// A meeting out of meetingd's reach.
pub struct Orphan {
    pub booking_id: Uuid,
    pub platform: String,
    pub external_id: String,
    pub found_at: DateTime<Utc>,
    pub reason: String,
}

/// The 10 newest orphaned meetings.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn recent_orphans(db: Sql<'_>) -> Result<Vec<Orphan>, DbError> {
    Ok(db
        .query(
            "SELECT booking_id, platform, external_id, found_at, reason FROM meetingd.orphaned_meetings
              ORDER BY found_at DESC LIMIT 10",
            &[],
        )
        .await?
        .iter()
        .map(|r| Orphan {
            booking_id: r.get(0),
            platform: r.get(1),
            external_id: r.get(2),
            found_at: r.get(3),
            reason: r.get(4),
        })
        .collect())
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn orphan_count(db: Sql<'_>) -> Result<i64, DbError> {
    Ok(db.query_one("SELECT count(*) FROM meetingd.orphaned_meetings", &[]).await?.get(0))
}

/// The database-side gauges the metrics sampler exports.
pub struct Gauges {
    pub queue_depth: f64,
    pub oldest_due_age_secs: f64,
    pub failed_jobs: f64,
    pub needs_reconnect: f64,
    pub notification_queue_usage: f64,
    pub webhooks: Webhooks,
}

/// Webhook deliveries at a glance (`meetingd.webhook_deliveries`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Webhooks {
    /// Whether the feed is on (events are queued), and since when.
    pub since: Option<DateTime<Utc>>,
    pub pending: i64,
    /// Pending messages whose last attempt failed.
    pub failing: i64,
    pub dead: i64,
    pub oldest_pending_secs: f64,
}

/// A sub-select with the columns of [`Webhooks`]; each count reads one partial index's rows
/// (pending, dead), never the delivered ones.
const WEBHOOK_COUNTS: &str = "(SELECT (SELECT since FROM meetingd.webhook_feed) AS since,
        count(*) AS pending,
        count(*) FILTER (WHERE last_error IS NOT NULL) AS failing,
        (SELECT count(*) FROM meetingd.webhook_deliveries WHERE state = 'dead') AS dead,
        COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at)), 0)::float8 AS oldest_pending_secs
   FROM meetingd.webhook_deliveries WHERE state = 'pending')";

fn webhooks_of(r: &tokio_postgres::Row, at: usize) -> Webhooks {
    Webhooks {
        since: r.get(at),
        pending: r.get(at + 1),
        failing: r.get(at + 2),
        dead: r.get(at + 3),
        oldest_pending_secs: r.get(at + 4),
    }
}

/// Webhook deliveries: counts, and the oldest pending message's age.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn webhooks(db: Sql<'_>) -> Result<Webhooks, DbError> {
    let r = db.query_one(&format!("SELECT w.* FROM {WEBHOOK_COUNTS} w"), &[]).await?;
    Ok(webhooks_of(&r, 0))
}

/// All gauges in one statement. The error is the driver's: the sampler only logs it (at debug).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn gauges(db: Sql<'_>) -> Result<Gauges, tokio_postgres::Error> {
    let r = db
        .query_one(
            &format!("SELECT (SELECT count(*) FROM meetingd.jobs WHERE state = 'pending')::float8,
                    COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(run_at)) FROM meetingd.jobs
                               WHERE state = 'pending' AND run_at <= now()
                                 AND (lease_until IS NULL OR lease_until < now())), 0)::float8,
                    (SELECT count(*) FROM meetingd.jobs WHERE state = 'failed')::float8,
                    (SELECT count(*) FROM user_meeting_integrations WHERE is_active IS NOT TRUE AND access_token <> '')::float8,
                    pg_notification_queue_usage(),
                    w.*
               FROM {WEBHOOK_COUNTS} w"),
            &[],
        )
        .await?;
    Ok(Gauges {
        queue_depth: r.get(0),
        oldest_due_age_secs: r.get(1),
        failed_jobs: r.get(2),
        needs_reconnect: r.get(3),
        notification_queue_usage: r.get(4),
        webhooks: webhooks_of(&r, 5),
    })
}

/// Whether this session is encrypted, as the server sees it.
pub async fn session_encrypted(db: Sql<'_>) -> Result<bool, DbError> {
    Ok(db
        .query_one("SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)", &[])
        .await?
        .get(0))
}
