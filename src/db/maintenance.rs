//! Installing on a live marketplace and keeping meetingd's own tables small: backfill and prune.
//!
//! `backfill` queues the confirmed future bookings of online services that meetingd has never
//! seen (a marketplace that had bookings before meetingd was installed); `prune` deletes what
//! meetingd wrote and no longer needs, per `[retention]` (delivered and dead-lettered webhooks
//! too; a pending one stays until it is delivered or dead). Neither touches a marketplace row:
//! backfill only re-arms jobs (`meetingd.touch_job`), prune only deletes from schema `meetingd`.
//! Prune never deletes a job that still matters: one whose booking has a live meeting or a
//! pending create, since that job is what re-arms the booking when the marketplace changes it,
//! nor one that alone remembers the highest generation tried for its booking.

use super::{DbError, Sql};
use crate::config::RetentionConfig;

/// The bookings backfill queues: confirmed, of an online service, starting in the future, never
/// seen by meetingd (no job), and without a link of their own (hand-set links stay the
/// provider's).
const BACKFILL_CANDIDATES: &str = "
    SELECT b.id FROM bookings b JOIN services s ON s.id = b.service_id
     WHERE b.status::text = 'confirmed' AND COALESCE(s.is_online, false) AND b.start_time > now()
       AND COALESCE(b.meeting_link::text, '') = ''
       AND NOT EXISTS (SELECT 1 FROM meetingd.jobs j WHERE j.booking_id = b.id)";

/// Queues every backfill candidate (or, with `dry_run`, only counts them); how many.
pub async fn backfill(db: Sql<'_>, dry_run: bool) -> Result<i64, DbError> {
    let sql = if dry_run {
        format!("SELECT count(*) FROM ({BACKFILL_CANDIDATES}) c")
    } else {
        format!("SELECT count(meetingd.touch_job(c.id)) FROM ({BACKFILL_CANDIDATES}) c")
    };
    Ok(db.query_one(&sql, &[]).await?.get(0))
}

/// What one prune deleted, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub audit_log: i64,
    pub events: i64,
    pub jobs: i64,
    pub oauth_states: i64,
    pub retired_integrations: i64,
    pub orphaned_meetings: i64,
    /// Past days of the platforms' daily counts (`meetingd.platform_quota`).
    pub platform_quota: i64,
    /// Delivered and dead-lettered webhooks (`meetingd.webhook_deliveries`); pending ones stay.
    pub webhook_deliveries: i64,
    /// Idle rate-limit buckets (`meetingd.rate_buckets`): full again, no turn kept.
    pub rate_buckets: i64,
}

impl Pruned {
    pub fn total(&self) -> i64 {
        self.audit_log
            + self.events
            + self.jobs
            + self.oauth_states
            + self.retired_integrations
            + self.orphaned_meetings
            + self.platform_quota
            + self.webhook_deliveries
            + self.rate_buckets
    }
}

/// Rows deleted per statement, so a prune never holds many locks or a long transaction.
const BATCH: i64 = 5000;

/// Deletes, in batches, what `retention` no longer keeps.
pub async fn prune(db: Sql<'_>, retention: &RetentionConfig) -> Result<Pruned, DbError> {
    let days = |d: u32| f64::from(d) * 86_400.0;
    Ok(Pruned {
        audit_log: in_batches(
            db,
            "DELETE FROM meetingd.audit_log WHERE id IN (
                SELECT id FROM meetingd.audit_log WHERE at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2)",
            days(retention.audit_log_days),
        )
        .await?,
        events: in_batches(
            db,
            "DELETE FROM meetingd.events WHERE id IN (
                SELECT id FROM meetingd.events WHERE created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2)",
            days(retention.events_days),
        )
        .await?,
        jobs: in_batches(
            db,
            "DELETE FROM meetingd.jobs WHERE id IN (
                SELECT j.id FROM meetingd.jobs j
                 WHERE j.state IN ('done', 'failed') AND j.intent_platform IS NULL
                   AND COALESCE(j.completed_at, j.updated_at) < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM meetingd.meetings m WHERE m.booking_id = j.booking_id AND m.state = 'live')
                   -- The highest generation ever tried must outlive the job (a platform keeps
                   -- deleted ids reserved): the meetings row holds it, or the job stays.
                   AND (j.intent_generation IS NULL
                        OR EXISTS (SELECT 1 FROM meetingd.meetings m
                                    WHERE m.booking_id = j.booking_id AND m.generation >= j.intent_generation))
                 LIMIT $2)",
            days(retention.finished_jobs_days),
        )
        .await?,
        oauth_states: in_batches(
            db,
            "DELETE FROM meetingd.oauth_states WHERE state_hash IN (
                SELECT state_hash FROM meetingd.oauth_states
                 WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)",
            0.0,
        )
        .await?,
        // A retired copy is kept a day after no live meeting or pending create refers to it.
        retired_integrations: in_batches(
            db,
            "DELETE FROM meetingd.retired_integrations r WHERE r.id IN (
                SELECT r.id FROM meetingd.retired_integrations r
                 WHERE r.retired_at < now() - make_interval(secs => $1) - interval '1 day'
                   AND NOT EXISTS (SELECT 1 FROM meetingd.meetings m
                                    WHERE m.integration_id = r.integration_id AND m.state = 'live')
                   AND NOT EXISTS (SELECT 1 FROM meetingd.jobs j
                                    WHERE j.intent_owner = r.user_id AND j.intent_platform = r.platform)
                 LIMIT $2)",
            0.0,
        )
        .await?,
        orphaned_meetings: in_batches(
            db,
            "DELETE FROM meetingd.orphaned_meetings WHERE id IN (
                SELECT id FROM meetingd.orphaned_meetings WHERE found_at < now() - make_interval(secs => $1) LIMIT $2)",
            days(retention.orphaned_meetings_days),
        )
        .await?,
        // A daily count matters only on its (UTC) day; yesterday's is kept for a daemon whose
        // clock is behind.
        platform_quota: in_batches(
            db,
            "DELETE FROM meetingd.platform_quota q WHERE (q.integration_id, q.platform, q.day) IN (
                SELECT integration_id, platform, day FROM meetingd.platform_quota
                 WHERE day < ((now() - make_interval(secs => $1)) AT TIME ZONE 'UTC')::date LIMIT $2)",
            days(1),
        )
        .await?,
        webhook_deliveries: in_batches(
            db,
            "DELETE FROM meetingd.webhook_deliveries WHERE event_id IN (
                SELECT event_id FROM meetingd.webhook_deliveries
                 WHERE state = 'delivered' AND finished_at < now() - make_interval(secs => $1) LIMIT $2)",
            days(retention.webhook_deliveries_days),
        )
        .await?
            + in_batches(
                db,
                "DELETE FROM meetingd.webhook_deliveries WHERE event_id IN (
                SELECT event_id FROM meetingd.webhook_deliveries
                 WHERE state = 'dead' AND finished_at < now() - make_interval(secs => $1) LIMIT $2)",
                days(retention.webhook_dead_days),
            )
            .await?,
        // A bucket full again and keeping no turn is as good as none; a row a claim holds is
        // left for the next prune (never waited for).
        rate_buckets: in_batches(
            db,
            "DELETE FROM meetingd.rate_buckets r WHERE (r.platform, r.account) IN (
                SELECT platform, account FROM meetingd.rate_buckets
                 WHERE full_at < now() - make_interval(secs => $1) AND reserved_until < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            0.0,
        )
        .await?,
    })
}

/// The daemon's schedule: a prune every `every` (the first one `every` after start), until
/// `shutdown`. A failed prune is logged and tried at the next beat.
pub async fn prune_every(
    pool: super::Pool,
    retention: RetentionConfig,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let pruned = async {
            let conn = pool.get().await?;
            prune(conn.sql(), &retention).await
        }
        .await;
        match pruned {
            Ok(p) if p.total() > 0 => tracing::info!(
                audit_log = p.audit_log,
                events = p.events,
                jobs = p.jobs,
                oauth_states = p.oauth_states,
                retired_integrations = p.retired_integrations,
                orphaned_meetings = p.orphaned_meetings,
                platform_quota = p.platform_quota,
                webhook_deliveries = p.webhook_deliveries,
                rate_buckets = p.rate_buckets,
                "pruned what [retention] no longer keeps"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "prune failed; trying again at the next interval"),
        }
    }
}

/// Runs `sql` (`$1`: an age in seconds, `$2`: the batch size) until it deletes nothing.
async fn in_batches(db: Sql<'_>, sql: &str, age_secs: f64) -> Result<i64, DbError> {
    let mut total = 0;
    loop {
        let n = db.execute(sql, &[&age_secs, &BATCH]).await? as i64;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}
