//! The job queue: claim, read the booking as it is now, and the fenced write-back.
//!
//! Owns every statement that touches `meetingd.jobs`, `meetingd.meetings`, `meetingd.audit_log`,
//! `meetingd.events` and the meeting columns of `bookings`. It never calls a platform and never
//! holds a transaction open across one: a claim commits at once, the write-back is one short
//! transaction that only the current lease holder can commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// A pooled connection or its transaction: statements are prepared once per connection.
use deadpool_postgres::GenericClient as Cached;
use uuid::Uuid;

use super::DbError;
use crate::providers::Meeting;

/// A job this daemon holds the lease on.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: i64,
    pub booking_id: Uuid,
    /// Fencing token: only the holder of this claim may complete the job.
    pub claim_seq: i64,
    /// The booking change this claim answers; a newer change makes the result stale.
    pub version: i64,
    /// 1 for the first attempt since the booking last changed.
    pub attempt: i32,
    /// When the booking change was recorded (for confirm-to-link latency).
    pub requested_at: DateTime<Utc>,
    /// A create that an earlier run recorded before calling the platform and whose result was
    /// never recorded: that meeting may exist.
    pub intent: Option<Intent>,
    /// The highest generation a create was ever recorded for (0: none): never used again.
    pub intended_generation: i32,
}

/// A create recorded before its platform call (`meetingd.jobs.intent_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub platform: String,
    pub generation: i32,
}

/// Claims up to `limit` due jobs for `owner`, with a lease on the database clock. The statement
/// commits on its own before any platform is called.
pub async fn claim(client: &impl Cached, owner: Uuid, limit: usize, lease: Duration) -> Result<Vec<Claim>, DbError> {
    // A CTE, not `WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`, which can claim more than n.
    let statement = client
        .prepare_cached(
            "WITH due AS (
                 SELECT id FROM meetingd.jobs
                  WHERE state = 'pending' AND run_at <= now()
                    AND (lease_until IS NULL OR lease_until < now())
                  ORDER BY run_at, id
                  LIMIT $1
                  FOR UPDATE SKIP LOCKED
             )
             UPDATE meetingd.jobs j
                SET lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                    claim_seq = j.claim_seq + 1, attempts = j.attempts + 1, updated_at = now()
               FROM due
              WHERE j.id = due.id
          RETURNING j.id, j.booking_id, j.claim_seq, j.version, j.attempts, j.requested_at,
                    j.intent_platform, j.intent_generation",
        )
        .await?;
    let rows = client.query(&statement, &[&(limit as i64), &owner, &lease.as_secs_f64()]).await?;
    Ok(rows
        .into_iter()
        .map(|r| Claim {
            job_id: r.get(0),
            booking_id: r.get(1),
            claim_seq: r.get(2),
            version: r.get(3),
            attempt: r.get(4),
            requested_at: r.get(5),
            intent: r
                .get::<_, Option<String>>(6)
                .zip(r.get::<_, Option<i32>>(7))
                .map(|(platform, generation)| Intent { platform, generation }),
            intended_generation: r.get::<_, Option<i32>>(7).unwrap_or(0),
        })
        .collect())
}

/// Records, fenced on the claim, that a create of `generation` on `platform` is about to be
/// attempted. Commits on its own before the platform call; `false` when the lease was lost (the
/// call must not be made).
pub async fn record_intent(
    client: &impl Cached,
    claim: &Claim,
    platform: &str,
    generation: i32,
) -> Result<bool, DbError> {
    let statement = client
        .prepare_cached(
            "UPDATE meetingd.jobs SET intent_platform = $3, intent_generation = $4
              WHERE id = $1 AND claim_seq = $2",
        )
        .await?;
    Ok(client.execute(&statement, &[&claim.job_id, &claim.claim_seq, &platform, &generation]).await? == 1)
}

/// How long until the next pending job becomes due (zero if one is due now), `None` if none is pending.
pub async fn next_due_in(client: &impl Cached) -> Result<Option<Duration>, DbError> {
    let statement = client
        .prepare_cached(
            "SELECT EXTRACT(EPOCH FROM min(GREATEST(run_at, COALESCE(lease_until, run_at))) - now())::float8
               FROM meetingd.jobs WHERE state = 'pending'",
        )
        .await?;
    let secs: Option<f64> = client.query_one(&statement, &[]).await?.get(0);
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// A booking as the worker reconciles it, read after the claim committed.
#[derive(Debug, Clone)]
pub struct BookingView {
    pub booking_id: Uuid,
    pub status: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub customer_id: Uuid,
    pub meeting_status: Option<String>,
    pub service_id: Uuid,
    pub provider_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub is_online: bool,
    pub meeting_platform: Option<String>,
    pub meeting_settings: serde_json::Value,
    /// The provider has an active integration for `meeting_platform`.
    pub connected: bool,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub provider_name: Option<String>,
}

/// The meeting meetingd recorded for a booking.
#[derive(Debug, Clone, PartialEq)]
pub struct MeetingRecord {
    pub platform: String,
    pub requested_platform: Option<String>,
    pub meeting: Meeting,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub generation: i32,
    pub live: bool,
}

/// Everything reconcile needs about one claimed job.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub claim: Claim,
    /// `None` when the booking was deleted.
    pub booking: Option<BookingView>,
    pub meeting: Option<MeetingRecord>,
}

/// Reads the bookings and meetings behind a batch of claims, in one statement. Run after the claim
/// committed, so it sees at least the booking change each claimed version stands for.
pub async fn snapshots(client: &impl Cached, claims: Vec<Claim>) -> Result<Vec<Snapshot>, DbError> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = claims.iter().map(|c| c.booking_id).collect();
    let statement = client
        .prepare_cached(
            "SELECT k.id,
                    b.id, b.status, b.start_time, b.end_time, b.customer_id, b.meeting_status,
                    s.id, s.provider_id, s.title, s.description, COALESCE(s.is_online, false),
                    s.meeting_platform, COALESCE(s.meeting_settings, '{}'::jsonb),
                    EXISTS (SELECT 1 FROM user_meeting_integrations i
                             WHERE i.user_id = s.provider_id AND i.platform = s.meeting_platform
                               AND i.is_active IS TRUE),
                    m.platform, m.requested_platform, m.external_id, m.join_url, m.start_time,
                    m.end_time, m.generation, m.state = 'live',
                    cu.full_name, cu.email, pu.full_name
               FROM unnest($1::uuid[]) AS k(id)
               LEFT JOIN bookings b ON b.id = k.id
               LEFT JOIN services s ON s.id = b.service_id
               LEFT JOIN users cu ON cu.id = b.customer_id
               LEFT JOIN users pu ON pu.id = s.provider_id
               LEFT JOIN meetingd.meetings m ON m.booking_id = k.id",
        )
        .await?;
    let rows = client.query(&statement, &[&ids]).await?;
    let mut by_id: std::collections::HashMap<Uuid, tokio_postgres::Row> =
        rows.into_iter().map(|r| (r.get::<_, Uuid>(0), r)).collect();
    Ok(claims
        .into_iter()
        .map(|claim| {
            let row = by_id.remove(&claim.booking_id);
            let booking = row.as_ref().and_then(|r| {
                // A booking whose service row is gone counts as gone too.
                let service_id: Option<Uuid> = r.get(7);
                let booking_id: Option<Uuid> = r.get(1);
                Some(BookingView {
                    booking_id: booking_id?,
                    status: r.get(2),
                    start: r.get(3),
                    end: r.get(4),
                    customer_id: r.get(5),
                    meeting_status: r.get(6),
                    service_id: service_id?,
                    provider_id: r.get(8),
                    title: r.get(9),
                    description: r.get(10),
                    is_online: r.get(11),
                    meeting_platform: r.get(12),
                    meeting_settings: r.get(13),
                    connected: r.get(14),
                    customer_name: r.get(23),
                    customer_email: r.get(24),
                    provider_name: r.get(25),
                })
            });
            let meeting = row.as_ref().and_then(|r| {
                let platform: Option<String> = r.get(15);
                Some(MeetingRecord {
                    platform: platform?,
                    requested_platform: r.get(16),
                    meeting: Meeting { external_id: r.get(17), join_url: r.get(18) },
                    start: r.get(19),
                    end: r.get(20),
                    generation: r.get(21),
                    live: r.get(22),
                })
            });
            Snapshot { claim, booking, meeting }
        })
        .collect())
}

/// One line of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: &'static str,
    pub platform: Option<String>,
    pub outcome: &'static str,
    pub duration_ms: Option<i32>,
    pub detail: Option<String>,
}

/// A notification for the app (also sent on channel `meetingd_events` by a trigger).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub platform: Option<String>,
    pub message: String,
}

/// What the worker learned, to be recorded.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A live meeting exists for the booking (created, moved or already right).
    Linked {
        platform: String,
        requested_platform: Option<String>,
        meeting: Meeting,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        generation: i32,
        settings: serde_json::Value,
    },
    /// The booking needs no meeting; `deleted` says whether a live one was removed. The booking's
    /// link is cleared unless it is a provider's manual link.
    Unlinked { deleted: bool },
    /// Nothing to do or record (a completed booking keeps what it has).
    Unchanged,
    /// Try again after `delay`.
    Retry { error: String, delay: Duration },
    /// Out of attempts, or retrying cannot help: the provider is told.
    Failed { error: String },
    /// Not attempted (a rate limit): run again after `delay`, without spending an attempt.
    Defer { delay: Duration },
}

impl Outcome {
    fn job_state(&self) -> &'static str {
        match self {
            Outcome::Linked { .. } | Outcome::Unlinked { .. } | Outcome::Unchanged => "done",
            Outcome::Retry { .. } | Outcome::Defer { .. } => "pending",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// Result of a write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteBack {
    /// Recorded; the job is finished (or scheduled for its retry).
    Done,
    /// Recorded what exists at the platform, but the booking changed meanwhile: the job runs again.
    Stale,
    /// Another claim owns the job now (our lease expired); nothing was written.
    LeaseLost,
}

/// Records an outcome in one transaction, fenced on the claim: only the lease holder commits.
///
/// Locks the booking row before the job row, the order the app's own transaction (booking update,
/// then the trigger's job upsert) takes them, so the two can never deadlock.
///
/// Statements are prepared once per connection and sent pipelined: the lock and the fence in one
/// round trip, everything the outcome writes in a second, then the commit.
///
/// `resolved` is the recorded create intent this run settled (its meeting is now recorded, or was
/// deleted); it is cleared only if it is still the job's intent.
pub async fn write_back(
    client: &mut deadpool_postgres::Object,
    actor: &str,
    snapshot: &Snapshot,
    outcome: &Outcome,
    audit: &[AuditEntry],
    event: Option<&Event>,
    resolved: Option<&Intent>,
) -> Result<WriteBack, DbError> {
    let claim = &snapshot.claim;
    let provider_id = snapshot.booking.as_ref().map(|b| b.provider_id);
    let (delay, last_error) = match outcome {
        Outcome::Retry { error, delay } => (delay.as_secs_f64(), Some(error.as_str())),
        Outcome::Defer { delay } => (delay.as_secs_f64(), None),
        Outcome::Failed { error } => (0.0, Some(error.as_str())),
        _ => (0.0, None),
    };
    let job_state = outcome.job_state();
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE").await?;
    let fence = tx.prepare_cached(FENCE).await?;
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&claim.booking_id];
    let refund = matches!(outcome, Outcome::Defer { .. });
    let resolved_platform = resolved.map(|i| i.platform.as_str());
    let resolved_generation = resolved.map(|i| i.generation);
    let fence_params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &claim.job_id,
        &claim.claim_seq,
        &claim.version,
        &job_state,
        &delay,
        &last_error,
        &refund,
        &resolved_platform,
        &resolved_generation,
    ];
    let (_, fenced) = futures_util::try_join!(tx.execute(&lock, &lock_params), tx.query_opt(&fence, &fence_params))?;
    let current = match fenced {
        None => {
            tx.rollback().await?;
            return Ok(WriteBack::LeaseLost);
        }
        Some(row) => row.get::<_, bool>(0),
    };

    let mut writes: Vec<PendingWrite<'_>> = Vec::new();
    let t = &tx;
    match outcome {
        Outcome::Linked { platform, requested_platform, meeting, start, end, generation, settings } => {
            // What exists at the platform is recorded even when the booking moved on meanwhile:
            // the next run must know about this meeting to move or delete it.
            let upsert = tx.prepare_cached(UPSERT_MEETING).await?;
            writes.push(Box::pin(async move {
                t.execute(
                    &upsert,
                    &[
                        &claim.booking_id,
                        platform,
                        requested_platform,
                        &meeting.external_id,
                        &meeting.join_url,
                        start,
                        end,
                        generation,
                    ],
                )
                .await
            }));
            if current {
                let show = tx.prepare_cached(SHOW_LINK).await?;
                writes.push(Box::pin(async move {
                    t.execute(&show, &[&claim.booking_id, &meeting.join_url, &meeting.external_id, platform, settings])
                        .await
                }));
            }
        }
        Outcome::Unlinked { deleted } => {
            if *deleted {
                let gone = tx
                    .prepare_cached(
                        "UPDATE meetingd.meetings SET state = 'deleted', updated_at = now() WHERE booking_id = $1",
                    )
                    .await?;
                writes.push(Box::pin(async move { t.execute(&gone, &[&claim.booking_id]).await }));
            }
            if current {
                let clear = tx.prepare_cached(CLEAR_LINK).await?;
                writes.push(Box::pin(async move { t.execute(&clear, &[&claim.booking_id, deleted]).await }));
            }
        }
        Outcome::Unchanged | Outcome::Defer { .. } => {}
        Outcome::Retry { .. } => {
            if current {
                let pending = tx.prepare_cached(SHOW_PENDING).await?;
                writes.push(Box::pin(async move { t.execute(&pending, &[&claim.booking_id]).await }));
            }
        }
        Outcome::Failed { error } => {
            if current {
                let failed = tx.prepare_cached(SHOW_FAILED).await?;
                writes.push(Box::pin(async move { t.execute(&failed, &[&claim.booking_id, error]).await }));
            }
        }
    }
    if !audit.is_empty() {
        let insert = tx.prepare_cached(INSERT_AUDIT).await?;
        for entry in audit {
            let insert = insert.clone();
            writes.push(Box::pin(async move {
                t.execute(
                    &insert,
                    &[
                        &actor,
                        &entry.action,
                        &Some(claim.booking_id),
                        &provider_id,
                        &entry.platform,
                        &entry.outcome,
                        &Some(claim.attempt),
                        &entry.duration_ms,
                        &entry.detail,
                    ],
                )
                .await
            }));
        }
    }
    if let (true, Some(event)) = (current, event) {
        let insert = tx.prepare_cached(INSERT_EVENT).await?;
        writes.push(Box::pin(async move {
            t.execute(&insert, &[&event.kind, &provider_id, &Some(claim.booking_id), &event.platform, &event.message])
                .await
        }));
    }
    futures_util::future::try_join_all(writes).await?;
    tx.commit().await?;
    Ok(if current { WriteBack::Done } else { WriteBack::Stale })
}

/// One statement of a write-back, sent pipelined with the others.
type PendingWrite<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

const FENCE: &str = "UPDATE meetingd.jobs
    SET state = CASE WHEN version = $3 THEN $4 ELSE 'pending' END,
        run_at = CASE WHEN version = $3 THEN now() + make_interval(secs => $5) ELSE now() END,
        last_error = CASE WHEN version = $3 AND NOT $7 THEN $6 ELSE last_error END,
        attempts = CASE WHEN $7 THEN GREATEST(attempts - 1, 0) ELSE attempts END,
        completed_at = CASE WHEN version = $3 AND $4 <> 'pending' THEN clock_timestamp() END,
        lease_owner = NULL, lease_until = NULL, updated_at = now(),
        intent_platform = CASE WHEN intent_platform = $8 AND intent_generation = $9 THEN NULL ELSE intent_platform END
  WHERE id = $1 AND claim_seq = $2
RETURNING version = $3";

const UPSERT_MEETING: &str = "INSERT INTO meetingd.meetings AS m
        (booking_id, platform, requested_platform, external_id, join_url, start_time, end_time, generation, state)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'live')
 ON CONFLICT (booking_id) DO UPDATE
    SET platform = EXCLUDED.platform, requested_platform = EXCLUDED.requested_platform,
        external_id = EXCLUDED.external_id, join_url = EXCLUDED.join_url,
        start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
        generation = EXCLUDED.generation, state = 'live', updated_at = now(),
        linked_at = CASE WHEN m.external_id = EXCLUDED.external_id AND m.state = 'live'
                         THEN m.linked_at ELSE clock_timestamp() END";

const SHOW_LINK: &str = "UPDATE bookings
    SET meeting_link = $2, meeting_id = $3, meeting_platform = $4, meeting_settings = $5,
        meeting_status = 'ready', meeting_error = NULL
  WHERE id = $1";

/// A manual link is the provider's own: it stays. A booking that never had meeting state (confirm
/// then cancel before any work) is left as it is: no meeting at all.
const CLEAR_LINK: &str = "UPDATE bookings
    SET meeting_link = NULL, meeting_id = NULL, meeting_error = NULL, meeting_status = 'deleted'
  WHERE id = $1 AND meeting_status IS DISTINCT FROM 'manual' AND ($2 OR meeting_status IS NOT NULL)";

const SHOW_PENDING: &str = "UPDATE bookings SET meeting_status = 'pending'
  WHERE id = $1 AND meeting_status IS DISTINCT FROM 'pending'
    AND meeting_status IS DISTINCT FROM 'manual' AND status = 'confirmed'";

const SHOW_FAILED: &str = "UPDATE bookings SET meeting_status = 'failed', meeting_error = $2
  WHERE id = $1 AND meeting_status IS DISTINCT FROM 'manual'";

const INSERT_AUDIT: &str = "INSERT INTO meetingd.audit_log
        (actor, action, booking_id, user_id, platform, outcome, attempt, duration_ms, detail)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const INSERT_EVENT: &str =
    "INSERT INTO meetingd.events (kind, user_id, booking_id, platform, message) VALUES ($1, $2, $3, $4, $5)";

/// Records a notification for the app (a trigger also sends it on channel `meetingd_events`).
pub async fn insert_event(
    client: &impl GenericClient,
    event: &Event,
    user_id: Option<Uuid>,
    booking_id: Option<Uuid>,
) -> Result<(), DbError> {
    client.execute(INSERT_EVENT, &[&event.kind, &user_id, &booking_id, &event.platform, &event.message]).await?;
    Ok(())
}

/// Appends one audit row.
pub async fn insert_audit(
    client: &impl GenericClient,
    actor: &str,
    booking_id: Option<Uuid>,
    user_id: Option<Uuid>,
    attempt: Option<i32>,
    entry: &AuditEntry,
) -> Result<(), DbError> {
    client
        .execute(
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
