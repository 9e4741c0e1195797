//! Statements on `meetingd.webhook_deliveries` and `meetingd.webhook_feed`: switching the feed
//! on and off, the claim (with dead-lettering of what is past `max_age`), the fenced
//! write-backs, the next due time, re-driving dead letters.
//!
//! One statement each, no transaction across a POST: a claim commits its lease at once, the
//! write-back is fenced on the claim's random `lease_token`. It must not send anything or decide
//! what an answer means (`webhooks/`).

use std::time::Duration;

use uuid::Uuid;

use super::{DbError, Sql};

/// Switches the feed on (a daemon with `[webhooks] url` starting); events from now on are queued.
/// When it was first switched on.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn switch_on(db: Sql<'_>) -> Result<chrono::DateTime<chrono::Utc>, DbError> {
    db.execute("INSERT INTO meetingd.webhook_feed DEFAULT VALUES ON CONFLICT DO NOTHING", &[]).await?;
    Ok(db.query_one("SELECT since FROM meetingd.webhook_feed", &[]).await?.get(0))
}

/// Switches the feed off: no event is queued any more, and what was pending is dead-lettered
/// (kept, re-drivable). How many were pending.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn switch_off(db: Sql<'_>) -> Result<i64, DbError> {
    db.execute("DELETE FROM meetingd.webhook_feed", &[]).await?;
    Ok(db
        .execute(
            "UPDATE meetingd.webhook_deliveries
                SET state = 'dead', finished_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL,
                    last_error = 'webhooks switched off (meetingd webhooks off)'
              WHERE state = 'pending'",
            &[],
        )
        .await? as i64)
}

/// A claimed delivery: what to send, and the claim's fence.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event_id: i64,
    pub webhook_id: Uuid,
    pub payload: String,
    pub attempt: i32,
    pub lease_token: Uuid,
}

/// Claims up to `limit` due deliveries for `owner` with a lease of `lease` (database clock);
/// due rows whose `queued_at` is `max_age` or more ago are dead-lettered instead. The claimed
/// rows, and how many were dead-lettered.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim(
    db: Sql<'_>,
    limit: i64,
    owner: Uuid,
    lease: Duration,
    max_age: Duration,
) -> Result<(Vec<Claimed>, u64), DbError> {
    let rows = db
        .query(
            "WITH due AS (
                 SELECT event_id FROM meetingd.webhook_deliveries
                  WHERE state = 'pending' AND run_at <= now() AND (lease_until IS NULL OR lease_until < now())
                  ORDER BY run_at, event_id
                  LIMIT $1
                  FOR UPDATE SKIP LOCKED
             ), expired AS (
                 UPDATE meetingd.webhook_deliveries d
                    SET state = 'dead', finished_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL,
                        last_error = COALESCE(d.last_error || '; ', '') || 'not delivered within webhooks.max_age_secs'
                  WHERE d.event_id = ANY (ARRAY(SELECT event_id FROM due))
                    AND d.queued_at <= now() - make_interval(secs => $4)
                 RETURNING d.event_id
             ), claimed AS (
                 UPDATE meetingd.webhook_deliveries d
                    SET lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                        lease_token = gen_random_uuid(), attempts = d.attempts + 1, updated_at = now()
                  WHERE d.event_id = ANY (ARRAY(SELECT event_id FROM due))
                    AND d.queued_at > now() - make_interval(secs => $4)
                 RETURNING d.event_id, d.webhook_id, d.payload, d.attempts, d.lease_token
             )
             SELECT event_id, webhook_id, payload, attempts, lease_token FROM claimed
             UNION ALL
             SELECT event_id, NULL, NULL, NULL, NULL FROM expired",
            &[&limit, &owner, &lease.as_secs_f64(), &max_age.as_secs_f64()],
        )
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    let mut dead = 0;
    for r in rows {
        match r.get::<_, Option<Uuid>>(1) {
            Some(webhook_id) => claimed.push(Claimed {
                event_id: r.get(0),
                webhook_id,
                payload: r.get(2),
                attempt: r.get(3),
                lease_token: r.get(4),
            }),
            None => dead += 1,
        }
    }
    Ok((claimed, dead))
}

/// Records a 2xx answer; `false` when the claim no longer holds (its lease ran out and another
/// daemon claimed the row: the receiver may see the message twice, which at-least-once allows).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delivered(db: Sql<'_>, c: &Claimed, status: i32) -> Result<bool, DbError> {
    Ok(db
        .execute(
            "UPDATE meetingd.webhook_deliveries
                SET state = 'delivered', finished_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL,
                    last_status = $3, last_error = NULL
              WHERE event_id = $1 AND lease_token = $2 AND state = 'pending'",
            &[&c.event_id, &c.lease_token, &status],
        )
        .await?
        == 1)
}

/// What a failed attempt left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Tried again at the next due time.
    Retry,
    /// Dead-lettered: the receiver said 410 Gone, or the next try would fall past `max_age`.
    Dead,
    /// The claim no longer holds; another daemon has the row.
    LeaseLost,
}

/// What to record about a failed attempt.
pub struct Failure<'a> {
    pub status: Option<i32>,
    pub error: &'a str,
    /// When to try again; `None`: never (410 Gone).
    pub retry_in: Option<Duration>,
    pub max_age: Duration,
}

/// Records a failed attempt: tried again after `retry_in`, or dead-lettered when that falls past
/// `max_age` since the row was queued or there is no retry.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn failed(db: Sql<'_>, c: &Claimed, f: &Failure<'_>) -> Result<Failed, DbError> {
    let retry_in = f.retry_in.map(|d| d.as_secs_f64());
    let row = db
        .query_opt(
            "UPDATE meetingd.webhook_deliveries d
                SET state = CASE WHEN $4::float8 IS NULL
                                   OR now() + make_interval(secs => $4) >= d.queued_at + make_interval(secs => $6)
                                 THEN 'dead' ELSE 'pending' END,
                    run_at = now() + make_interval(secs => COALESCE($4, 0)),
                    finished_at = CASE WHEN $4::float8 IS NULL
                                         OR now() + make_interval(secs => $4) >= d.queued_at + make_interval(secs => $6)
                                       THEN now() END,
                    lease_owner = NULL, lease_until = NULL, last_status = $3, last_error = $5, updated_at = now()
              WHERE event_id = $1 AND lease_token = $2 AND state = 'pending'
             RETURNING d.state",
            &[&c.event_id, &c.lease_token, &f.status, &retry_in, &f.error, &f.max_age.as_secs_f64()],
        )
        .await?;
    Ok(match row.map(|r| r.get::<_, String>(0)) {
        None => Failed::LeaseLost,
        Some(state) if state == "dead" => Failed::Dead,
        Some(_) => Failed::Retry,
    })
}

/// How long until a pending delivery falls due (its retry, or another daemon's lease running
/// out); `None` when nothing is pending.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn next_due_in(db: Sql<'_>) -> Result<Option<Duration>, DbError> {
    let row = db
        .query_one(
            "SELECT EXTRACT(EPOCH FROM min(GREATEST(run_at, COALESCE(lease_until, run_at))) - now())::float8
               FROM meetingd.webhook_deliveries WHERE state = 'pending'",
            &[],
        )
        .await?;
    Ok(row.get::<_, Option<f64>>(0).map(|secs| Duration::from_secs_f64(secs.max(0.0))))
}

/// Which dead letters to send again.
pub enum Redrive {
    All,
    Event(i64),
}

/// Queues dead letters again, due now, with `max_age` counted from now (and their webhook-id
/// kept, so a receiver that did get one can tell). How many. The daemons find them on their
/// timer (`worker.sweep_interval_ms`): channel `meetingd_events` is the app's, so nothing is sent
/// on it that is not an event.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn redrive(db: Sql<'_>, which: Redrive) -> Result<i64, DbError> {
    let event: Option<i64> = match which {
        Redrive::All => None,
        Redrive::Event(id) => Some(id),
    };
    Ok(db
        .query_one(
            "WITH again AS (
                 UPDATE meetingd.webhook_deliveries
                    SET state = 'pending', queued_at = now(), run_at = now(), attempts = 0, finished_at = NULL,
                        updated_at = now()
                  WHERE state = 'dead' AND ($1::int8 IS NULL OR event_id = $1)
                 RETURNING event_id
             )
             SELECT count(*) FROM again",
            &[&event],
        )
        .await?
        .get(0))
}
