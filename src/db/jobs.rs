//! The job queue: claim, read the booking as it is now, and the fenced write-back.
//!
//! Owns every statement that touches `meetingd.jobs`, `meetingd.meetings`, `meetingd.audit_log`,
//! `meetingd.events` and the meeting columns of `bookings`. It never calls a platform and never
//! holds a transaction open across one: a claim commits at once, the write-back is one short
//! transaction that only the current lease holder can commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Conn, DbError, Param, Sql};
use crate::providers::{Account, Meeting};

/// A job this daemon holds the lease on.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: i64,
    pub booking_id: Uuid,
    /// Numbers the job's claims (bumped by every claim).
    pub claim_seq: i64,
    /// Fencing token, drawn at random by every claim: only the holder of this claim may record
    /// the job's outcome or a create intent. Unlike `claim_seq`, it is never handed out twice,
    /// even when a server crash loses the (asynchronously committed) claim that drew it.
    pub token: Uuid,
    /// The booking change this claim answers; the write-back finds the result stale when the job
    /// has moved past it.
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
    /// Write-backs the database refused since the booking last changed (see [`note_write_failure`]).
    pub write_failures: i32,
}

/// A create recorded before its platform call (`meetingd.jobs.intent_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub platform: String,
    pub generation: i32,
    /// The provider whose account the create was for (`None`: recorded before owners were).
    pub owner: Option<Uuid>,
    /// The account the create was made in, when the provider had one connected: a retry adopts
    /// the meeting only in that account, and the meeting is deleted through it otherwise.
    pub account: Option<Account>,
}

/// Claims up to `limit` due jobs for `owner`, with a lease on the database clock, and reads the
/// booking and meeting behind each: one statement, one round trip.
///
/// The claim commits before any platform is called, asynchronously (`synchronous_commit = off`):
/// it promises only a lease. Before its first call to a platform that keeps meetings, the worker
/// confirms the claim with a synchronous, fenced write ([`hold_claim`], or the create intent),
/// which makes it durable; a Jitsi room exists nowhere, so it needs none. A claim that a server
/// crash loses is claimed again, under a new [`Claim::token`], and the lost one can no longer
/// record anything.
///
/// No claim pays for planning: the statement runs on its generic plan, kept per connection (and
/// remade only when the tables' statistics change). That plan is made from the statistics of the
/// moment (a queue table that was empty then looks best read whole), so it is made with
/// sequential scans ruled out: every step is an index lookup, which fits one job as well as a
/// batch, on a table of any size.
///
/// Takes a connection of its own (not a transaction): the claim is its own transaction.
pub async fn claim(client: &Conn, owner: Uuid, limit: usize, lease: Duration) -> Result<Vec<Snapshot>, DbError> {
    let rows = client
        .sql()
        .in_own_transaction(CLAIM_SETTINGS, CLAIM, &[&(limit as i64), &owner, &lease.as_secs_f64()])
        .await?;
    Ok(rows.iter().map(snapshot_of).collect())
}

/// Claim and snapshot in one statement. The CTE takes the due jobs (a CTE, not `WHERE id IN
/// (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`, which can claim more than n); the bookings,
/// services, users and meetings are joined by `LATERAL … OFFSET 0` lookups, so even the generic
/// plan looks each one up by its primary key instead of hashing a whole table.
///
/// The joined rows come from the statement's snapshot, so the claim must take the job row exactly
/// as that snapshot saw it: a row changed after the snapshot was taken and before the claim locked
/// it (the app's booking change, a previous holder's write-back) is locked at its newer version,
/// and would be claimed with an older booking or meeting beside it. The `xmin` check leaves such
/// a row unclaimed (its lock ends with the claim's transaction); it is claimed on the next round,
/// with everything read as it is then.
const CLAIM: &str = "WITH due AS (
    SELECT id FROM meetingd.jobs
     WHERE state = 'pending' AND run_at <= now()
       AND (lease_until IS NULL OR lease_until < now())
     ORDER BY run_at, id
     LIMIT $1
     FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE meetingd.jobs j
       SET lease_owner = $2, lease_until = now() + make_interval(secs => $3), lease_token = gen_random_uuid(),
           claim_seq = j.claim_seq + 1, attempts = j.attempts + 1
     WHERE j.id = ANY (ARRAY(SELECT id FROM due))
       AND j.xmin = (SELECT seen.xmin FROM meetingd.jobs seen WHERE seen.id = j.id)
 RETURNING j.id, j.booking_id, j.claim_seq, j.lease_token, j.version, j.attempts, j.requested_at,
           j.intent_platform, j.intent_generation, j.intent_owner, j.intent_integration, j.intent_account,
           j.write_failures
)
SELECT c.id AS job_id, c.booking_id AS job_booking_id, c.claim_seq, c.lease_token, c.version,
       c.attempts, c.requested_at, c.intent_platform, c.intent_generation, c.intent_owner, c.intent_integration,
       c.intent_account, c.write_failures,
       b.id AS booking_id, b.status::text AS status, b.start_time, b.end_time, b.customer_id,
       b.meeting_status, b.meeting_link::text AS meeting_link,
       s.id AS service_id, s.provider_id, s.title::text AS title, s.description::text AS description,
       COALESCE(s.is_online, false) AS is_online, s.meeting_platform::text AS meeting_platform,
       s.meeting_settings::text AS meeting_settings,
       COALESCE(ig.is_active, false) AS connected, ig.id AS integration_id, ig.identity AS integration_identity,
       m.platform AS m_platform, m.requested_platform AS m_requested_platform, m.external_id AS m_external_id,
       m.join_url AS m_join_url, m.start_time AS m_start, m.end_time AS m_end, m.generation AS m_generation,
       m.state = 'live' AS m_live, m.owner_id AS m_owner_id, m.integration_id AS m_integration_id,
       m.account AS m_account,
       cu.full_name::text AS customer_name, cu.email::text AS customer_email, pu.full_name::text AS provider_name
  FROM claimed c
  LEFT JOIN LATERAL (SELECT * FROM bookings b WHERE b.id = c.booking_id OFFSET 0) b ON true
  LEFT JOIN LATERAL (SELECT * FROM services s WHERE s.id = b.service_id OFFSET 0) s ON true
  LEFT JOIN LATERAL (SELECT * FROM users u WHERE u.id = b.customer_id OFFSET 0) cu ON true
  LEFT JOIN LATERAL (SELECT * FROM users u WHERE u.id = s.provider_id OFFSET 0) pu ON true
  LEFT JOIN LATERAL (SELECT i.id, i.is_active IS TRUE AS is_active,
                            COALESCE(i.platform_user_id, i.platform_user_email) AS identity
                       FROM user_meeting_integrations i
                      WHERE i.user_id = s.provider_id AND i.platform = s.meeting_platform::text OFFSET 0) ig ON true
  LEFT JOIN LATERAL (SELECT * FROM meetingd.meetings m WHERE m.booking_id = c.booking_id OFFSET 0) m ON true";

/// One row of [`CLAIM`] as a snapshot. The job and meeting columns are meetingd's own; the
/// booking's come from the marketplace's tables, whose types and nullability meetingd does not
/// control: they are read with `try_get`, and what cannot be read becomes
/// [`BookingView::unreadable`], a sentence that fails that one job.
fn snapshot_of(r: &tokio_postgres::Row) -> Snapshot {
    let intent_generation: Option<i32> = r.get("intent_generation");
    let claim = Claim {
        job_id: r.get("job_id"),
        booking_id: r.get("job_booking_id"),
        claim_seq: r.get("claim_seq"),
        token: r.get("lease_token"),
        version: r.get("version"),
        attempt: r.get("attempts"),
        requested_at: r.get("requested_at"),
        intent: r.get::<_, Option<String>>("intent_platform").zip(intent_generation).map(|(platform, generation)| {
            let owner: Option<Uuid> = r.get("intent_owner");
            let account = owner.zip(r.get::<_, Option<Uuid>>("intent_integration")).map(|(user_id, integration_id)| {
                Account { user_id, integration_id, identity: r.get("intent_account") }
            });
            Intent { platform, generation, owner, account }
        }),
        intended_generation: intent_generation.unwrap_or(0),
        write_failures: r.get("write_failures"),
    };
    let meeting = r.get::<_, Option<String>>("m_platform").map(|platform| {
        let account = r
            .get::<_, Option<Uuid>>("m_owner_id")
            .zip(r.get::<_, Option<Uuid>>("m_integration_id"))
            .map(|(user_id, integration_id)| Account { user_id, integration_id, identity: r.get("m_account") });
        MeetingRecord {
            platform,
            requested_platform: r.get("m_requested_platform"),
            meeting: Meeting { external_id: r.get("m_external_id"), join_url: r.get("m_join_url"), account },
            start: r.get("m_start"),
            end: r.get("m_end"),
            generation: r.get("m_generation"),
            live: r.get("m_live"),
            owner: r.get("m_owner_id"),
        }
    });
    Snapshot { claim, booking: booking_of(r), meeting }
}

/// The booking part of a [`CLAIM`] row; `None` when the booking (or its service) is gone.
fn booking_of(r: &tokio_postgres::Row) -> Option<BookingView> {
    let mut problems = Vec::new();
    let mut read = |column: &str, what: &str| -> Option<String> {
        match r.try_get::<_, Option<String>>(column) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("the {what} cannot be read ({e})"));
                None
            }
        }
    };
    let status = read("status", "booking's status");
    let meeting_status = read("meeting_status", "booking's meeting status");
    let meeting_link = read("meeting_link", "booking's meeting link");
    let title = read("title", "service's title");
    let description = read("description", "service's description");
    let meeting_platform = read("meeting_platform", "service's meeting platform");
    let settings_text = read("meeting_settings", "service's meeting settings");
    let customer_name = read("customer_name", "customer's name");
    let customer_email = read("customer_email", "customer's e-mail");
    let provider_name = read("provider_name", "provider's name");
    let mut id = |column: &str, what: &str| -> Option<Uuid> {
        r.try_get::<_, Option<Uuid>>(column).unwrap_or_else(|e| {
            problems.push(format!("the {what} cannot be read ({e})"));
            None
        })
    };
    let booking_id = id("booking_id", "booking's id")?;
    // A booking whose service row is gone counts as gone too.
    let service_id = id("service_id", "service's id")?;
    let customer_id = id("customer_id", "booking's customer");
    let provider_id = id("provider_id", "service's provider");
    let start = time_of(r, "start_time", &mut problems);
    let end = time_of(r, "end_time", &mut problems);
    let meeting_settings = match settings_text.as_deref().map(serde_json::from_str) {
        None => serde_json::Value::Null,
        Some(Ok(v)) => v,
        Some(Err(_)) => {
            problems.push("the service's meeting settings are not valid JSON".to_string());
            serde_json::Value::Null
        }
    };
    Some(BookingView {
        booking_id,
        status: status.unwrap_or_default(),
        start,
        end,
        customer_id,
        meeting_status,
        meeting_link,
        service_id,
        provider_id,
        title,
        description,
        is_online: r.try_get("is_online").unwrap_or(false),
        meeting_platform,
        meeting_settings,
        connected: r.try_get("connected").unwrap_or(false),
        integration: provider_id.zip(r.try_get::<_, Option<Uuid>>("integration_id").ok().flatten()).map(
            |(user_id, integration_id)| Account {
                user_id,
                integration_id,
                identity: r.try_get("integration_identity").ok().flatten(),
            },
        ),
        customer_name,
        customer_email,
        provider_name,
        unreadable: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

/// A booking time: `timestamptz`, or `timestamp` (without time zone), taken as UTC.
fn time_of(r: &tokio_postgres::Row, column: &str, problems: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match r.try_get::<_, Option<DateTime<Utc>>>(column) {
        Ok(at) => at,
        Err(_) => match r.try_get::<_, Option<chrono::NaiveDateTime>>(column) {
            Ok(at) => at.map(|at| at.and_utc()),
            Err(e) => {
                problems.push(format!("the booking's {column} cannot be read as a time ({e})"));
                None
            }
        },
    }
}

/// Records, fenced on the claim, that a create of `generation` on `platform` is about to be
/// attempted. Commits on its own before the platform call; `false` when the lease was lost (the
/// call must not be made).
pub async fn record_intent(db: Sql<'_>, claim: &Claim, intent: &Intent) -> Result<bool, DbError> {
    let integration = intent.account.as_ref().map(|a| a.integration_id);
    let identity = intent.account.as_ref().and_then(|a| a.identity.as_deref());
    let params: [&dyn Param; 8] = [
        &claim.job_id,
        &claim.claim_seq,
        &intent.platform,
        &intent.generation,
        &claim.token,
        &intent.owner,
        &integration,
        &identity,
    ];
    let sql = "UPDATE meetingd.jobs SET intent_platform = $3, intent_generation = $4, intent_owner = $6,
                                        intent_integration = $7, intent_account = $8
                WHERE id = $1 AND claim_seq = $2 AND lease_token = $5";
    Ok(db.execute(sql, &params).await? == 1)
}

/// Confirms, fenced on the claim, that `claim` still holds, with a write (an update that changes
/// nothing) so that its synchronous commit also makes the claim itself durable. `false` when the
/// claim is gone (its lease was taken over, or a server crash lost it).
pub async fn hold_claim(db: Sql<'_>, claim: &Claim) -> Result<bool, DbError> {
    let sql = "UPDATE meetingd.jobs SET lease_owner = lease_owner
                WHERE id = $1 AND claim_seq = $2 AND lease_token = $3";
    Ok(db.execute(sql, &[&claim.job_id, &claim.claim_seq, &claim.token]).await? == 1)
}

/// Records that a meeting exists at its platform out of meetingd's reach (the account it lives in
/// is gone), and tells the provider with a `meeting_orphaned` event. Not fenced: it is a fact
/// about the platform, recorded once per meeting however many runs find it.
pub async fn record_orphan(
    db: Sql<'_>,
    booking_id: Uuid,
    platform: &str,
    meeting: &Meeting,
    owner: Option<Uuid>,
    reason: &str,
) -> Result<(), DbError> {
    let sql = "WITH o AS (
                INSERT INTO meetingd.orphaned_meetings
                    (booking_id, platform, external_id, owner_id, integration_id, account, reason)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (platform, external_id) DO NOTHING RETURNING id
             )
             INSERT INTO meetingd.events (kind, user_id, booking_id, platform, message)
             SELECT 'meeting_orphaned', $4, $1, $2, $8 FROM o";
    let account = meeting.account.as_ref();
    let message = format!(
        "meetingd could not remove the meeting {} because {reason}; delete it yourself in that account if it is still there.",
        meeting.external_id
    );
    let params: [&dyn Param; 8] = [
        &booking_id,
        &platform,
        &meeting.external_id,
        &owner,
        &account.map(|a| a.integration_id),
        &account.and_then(|a| a.identity.as_deref()),
        &reason,
        &message,
    ];
    db.execute(sql, &params).await?;
    Ok(())
}

/// Notes, fenced on the claim, that the write-back of `claim` was refused by the database for a
/// reason of its own (not an unreachable server): the error becomes the job's `last_error`, the
/// count grows, and the job is claimed again after `retry_in`. Touches only the job row.
pub async fn note_write_failure(db: Sql<'_>, claim: &Claim, error: &str, retry_in: Duration) -> Result<bool, DbError> {
    let sql = "UPDATE meetingd.jobs
                  SET write_failures = write_failures + 1, last_error = $4,
                      lease_until = now() + make_interval(secs => $5), updated_at = now()
                WHERE id = $1 AND claim_seq = $2 AND lease_token = $3";
    let params: [&dyn Param; 5] = [&claim.job_id, &claim.claim_seq, &claim.token, &error, &retry_in.as_secs_f64()];
    Ok(db.execute(sql, &params).await? == 1)
}

/// Fails the job of `claim` without touching the booking (whose row refuses the write-back):
/// the job row, an audit line and a `meeting_failed` event for `user`. Fenced on the claim.
pub async fn give_up(
    db: Sql<'_>,
    actor: &str,
    claim: &Claim,
    user: Option<Uuid>,
    error: &str,
) -> Result<bool, DbError> {
    let sql = "WITH j AS (
                UPDATE meetingd.jobs
                   SET state = 'failed', last_error = $4 || COALESCE(' Last error: ' || last_error, ''),
                       lease_owner = NULL, lease_until = NULL, lease_token = NULL,
                       completed_at = clock_timestamp(), updated_at = now()
                 WHERE id = $1 AND claim_seq = $2 AND lease_token = $3
             RETURNING booking_id, last_error
             ), audited AS (
                INSERT INTO meetingd.audit_log (actor, action, booking_id, user_id, outcome, attempt, detail)
                SELECT $5, 'meeting.record', booking_id, $6, 'failed', $7, last_error FROM j
             ), told AS (
                INSERT INTO meetingd.events (kind, user_id, booking_id, message)
                SELECT 'meeting_failed', $6, booking_id, last_error FROM j
             )
             SELECT count(*) FROM j";
    let params: [&dyn Param; 7] =
        [&claim.job_id, &claim.claim_seq, &claim.token, &error, &actor, &user, &claim.attempt];
    Ok(db.query_one(sql, &params).await?.get::<_, i64>(0) == 1)
}

/// How long until the next pending job becomes due (zero if one is due now), `None` if none is pending.
pub async fn next_due_in(db: Sql<'_>) -> Result<Option<Duration>, DbError> {
    let sql = "SELECT EXTRACT(EPOCH FROM min(GREATEST(run_at, COALESCE(lease_until, run_at))) - now())::float8
                 FROM meetingd.jobs WHERE state = 'pending'";
    let secs: Option<f64> = db.query_one(sql, &[]).await?.get(0);
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// A booking as the worker reconciles it, read by the claim. Every marketplace column may be
/// NULL (or of a type meetingd cannot read: then `unreadable` says so).
#[derive(Debug, Clone)]
pub struct BookingView {
    pub booking_id: Uuid,
    /// `""` when NULL.
    pub status: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub customer_id: Option<Uuid>,
    pub meeting_status: Option<String>,
    /// `bookings.meeting_link` as the app left it.
    pub meeting_link: Option<String>,
    pub service_id: Uuid,
    pub provider_id: Option<Uuid>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub is_online: bool,
    pub meeting_platform: Option<String>,
    pub meeting_settings: serde_json::Value,
    /// The provider has an active integration for `meeting_platform`.
    pub connected: bool,
    /// That integration (active or not), as the account a new meeting would be made in.
    pub integration: Option<Account>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub provider_name: Option<String>,
    /// What could not be read, as a sentence (a job with such a booking fails with it).
    pub unreadable: Option<String>,
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
    /// The provider it was made for (`None`: recorded before owners were).
    pub owner: Option<Uuid>,
}

/// Everything reconcile needs about one claimed job.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub claim: Claim,
    /// `None` when the booking was deleted.
    pub booking: Option<BookingView>,
    pub meeting: Option<MeetingRecord>,
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
// Made once per job and moved a few times: not worth a heap allocation for the large variant.
#[allow(clippy::large_enum_variant)]
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
        /// The provider it was made for (the account is in `meeting`).
        owner: Option<Uuid>,
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

/// One finished job, as handed to [`write_back`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub snapshot: Snapshot,
    pub outcome: Outcome,
    pub audit: Vec<AuditEntry>,
    pub event: Option<Event>,
    /// The create intent this run settled (its meeting is now recorded, or was deleted); it is
    /// cleared only if it is still the job's intent.
    pub resolved: Option<Intent>,
    /// The run deleted the booking's recorded meeting (whatever came after).
    pub removed: bool,
}

/// What a write-back does when the app holds a job's booking row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingLocks {
    /// Wait for it (up to the pool's `lock_timeout`): for a job recorded on its own.
    Wait,
    /// Leave that job out (its result is `None`): for a batch, which must never wait for the app.
    Skip,
}

/// Records the outcomes of finished jobs, each fenced on its claim: only the lease holder's result
/// is written. One statement in one transaction, sent in one round trip, whatever the outcomes.
///
/// The statement locks the jobs' booking rows before their job rows, the order the app's own
/// transaction (booking update, then the trigger's job upsert) takes them, so the two can never
/// deadlock. With [`BookingLocks::Skip`] a booking the app holds is skipped, so a batch never
/// waits for the app (and cannot deadlock with an app transaction that changes several
/// bookings); record that job again on its own. A deleted booking is never locked: with `Skip`
/// its job is left out too, with `Wait` it is recorded.
///
/// Like the claim, the statement runs on its generic plan of index lookups, kept per connection;
/// its commit is synchronous.
pub async fn write_back(
    client: &Conn,
    actor: &str,
    batch: &[Finished],
    locks: BookingLocks,
) -> Result<Vec<Option<WriteBack>>, DbError> {
    let mut w = Writes { actor, ..Writes::default() };
    for (entry, f) in (1..).zip(batch) {
        w.add(entry, f);
    }
    let sql = match locks {
        BookingLocks::Wait => WRITE_BACK_WAITING,
        BookingLocks::Skip => WRITE_BACK_SKIPPING,
    };
    let rows = client.sql().in_own_transaction(PLAN_SETTINGS, sql, &w.params()).await?;
    // By entry (1-based); an entry whose booking was not locked has no row.
    let mut results = vec![None; batch.len()];
    for row in rows {
        let result = match row.get::<_, Option<bool>>(1) {
            None => WriteBack::LeaseLost,
            Some(true) => WriteBack::Done,
            Some(false) => WriteBack::Stale,
        };
        if let Some(slot) = usize::try_from(row.get::<_, i64>(0) - 1).ok().and_then(|i| results.get_mut(i)) {
            *slot = Some(result);
        }
    }
    Ok(results)
}

/// Settings for a statement that must run on its generic plan with index lookups (see [`claim`]).
macro_rules! plan_settings {
    () => {
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off"
    };
}
const PLAN_SETTINGS: &str = plan_settings!();
const CLAIM_SETTINGS: &str = concat!("SET LOCAL synchronous_commit = off; ", plan_settings!());

/// The job row's `run_at` delay and `last_error` for an outcome.
fn fence_values(outcome: &Outcome) -> (f64, Option<&str>) {
    match outcome {
        Outcome::Retry { error, delay } => (delay.as_secs_f64(), Some(error.as_str())),
        Outcome::Defer { delay } => (delay.as_secs_f64(), None),
        Outcome::Failed { error } => (0.0, Some(error.as_str())),
        _ => (0.0, None),
    }
}

/// The write-back statement's parameters, one array per column: the fence of every job, and what
/// each job's outcome writes (the statement keeps only the rows of the jobs it fenced).
#[derive(Default)]
struct Writes<'a> {
    // The fence.
    job_ids: Vec<i64>,
    booking_ids: Vec<Uuid>,
    claim_seqs: Vec<i64>,
    tokens: Vec<Uuid>,
    versions: Vec<i64>,
    states: Vec<&'static str>,
    delays: Vec<f64>,
    errors: Vec<Option<&'a str>>,
    refunds: Vec<bool>,
    resolved_platforms: Vec<Option<&'a str>>,
    resolved_generations: Vec<Option<i32>>,
    // Meetings that exist at the platform (recorded even when the booking moved on meanwhile:
    // the next run must know about them to move or delete them); shown on current bookings.
    m_entry: Vec<i64>,
    m_platform: Vec<&'a str>,
    m_requested: Vec<Option<&'a str>>,
    m_external: Vec<&'a str>,
    m_url: Vec<&'a str>,
    m_start: Vec<DateTime<Utc>>,
    m_end: Vec<DateTime<Utc>>,
    m_generation: Vec<i32>,
    m_settings: Vec<&'a serde_json::Value>,
    m_owner: Vec<Option<Uuid>>,
    m_integration: Vec<Option<Uuid>>,
    m_account: Vec<Option<&'a str>>,
    // Runs that deleted the recorded meeting but end otherwise than `Unlinked`.
    removed: Vec<i64>,
    // Meetings removed; links cleared on current bookings.
    u_entry: Vec<i64>,
    u_deleted: Vec<bool>,
    pending: Vec<i64>,
    f_entry: Vec<i64>,
    f_error: Vec<&'a str>,
    actor: &'a str,
    a_entry: Vec<i64>,
    a_action: Vec<&'a str>,
    a_user: Vec<Option<Uuid>>,
    a_platform: Vec<Option<&'a str>>,
    a_outcome: Vec<&'a str>,
    a_attempt: Vec<i32>,
    a_duration: Vec<Option<i32>>,
    a_detail: Vec<Option<&'a str>>,
    e_entry: Vec<i64>,
    e_kind: Vec<&'a str>,
    e_user: Vec<Option<Uuid>>,
    e_platform: Vec<Option<&'a str>>,
    e_message: Vec<&'a str>,
}

impl<'a> Writes<'a> {
    /// Entry `entry` (1-based) of the batch.
    fn add(&mut self, entry: i64, f: &'a Finished) {
        let claim = &f.snapshot.claim;
        let booking = claim.booking_id;
        // Who is told: the service's provider, or (the booking gone) the provider the meeting was made for.
        let user =
            f.snapshot.booking.as_ref().and_then(|b| b.provider_id).or_else(|| f.snapshot.meeting.as_ref()?.owner);
        let (delay, last_error) = fence_values(&f.outcome);
        self.job_ids.push(claim.job_id);
        self.booking_ids.push(booking);
        self.claim_seqs.push(claim.claim_seq);
        self.tokens.push(claim.token);
        self.versions.push(claim.version);
        self.states.push(f.outcome.job_state());
        self.delays.push(delay);
        self.errors.push(last_error);
        self.refunds.push(matches!(f.outcome, Outcome::Defer { .. }));
        self.resolved_platforms.push(f.resolved.as_ref().map(|i| i.platform.as_str()));
        self.resolved_generations.push(f.resolved.as_ref().map(|i| i.generation));
        if f.removed && !matches!(f.outcome, Outcome::Linked { .. } | Outcome::Unlinked { .. }) {
            self.removed.push(entry);
        }
        match &f.outcome {
            Outcome::Linked { platform, requested_platform, meeting, start, end, generation, settings, owner } => {
                self.m_entry.push(entry);
                self.m_platform.push(platform);
                self.m_requested.push(requested_platform.as_deref());
                self.m_external.push(&meeting.external_id);
                self.m_url.push(&meeting.join_url);
                self.m_start.push(*start);
                self.m_end.push(*end);
                self.m_generation.push(*generation);
                self.m_settings.push(settings);
                self.m_owner.push(*owner);
                self.m_integration.push(meeting.account.as_ref().map(|a| a.integration_id));
                self.m_account.push(meeting.account.as_ref().and_then(|a| a.identity.as_deref()));
            }
            Outcome::Unlinked { deleted } => {
                self.u_entry.push(entry);
                self.u_deleted.push(*deleted);
            }
            Outcome::Unchanged | Outcome::Defer { .. } => {}
            Outcome::Retry { .. } => self.pending.push(entry),
            Outcome::Failed { error } => {
                self.f_entry.push(entry);
                self.f_error.push(error);
            }
        }
        for line in &f.audit {
            self.a_entry.push(entry);
            self.a_action.push(line.action);
            self.a_user.push(user);
            self.a_platform.push(line.platform.as_deref());
            self.a_outcome.push(line.outcome);
            self.a_attempt.push(claim.attempt);
            self.a_duration.push(line.duration_ms);
            self.a_detail.push(line.detail.as_deref());
        }
        if let Some(event) = &f.event {
            self.e_entry.push(entry);
            self.e_kind.push(event.kind);
            self.e_user.push(user);
            self.e_platform.push(event.platform.as_deref());
            self.e_message.push(&event.message);
        }
    }

    /// In the order of the statement's `$n`.
    fn params(&self) -> [&dyn Param; 43] {
        [
            &self.job_ids,
            &self.booking_ids,
            &self.claim_seqs,
            &self.tokens,
            &self.versions,
            &self.states,
            &self.delays,
            &self.errors,
            &self.refunds,
            &self.resolved_platforms,
            &self.resolved_generations,
            &self.m_entry,
            &self.m_platform,
            &self.m_requested,
            &self.m_external,
            &self.m_url,
            &self.m_start,
            &self.m_end,
            &self.m_generation,
            &self.m_settings,
            &self.u_entry,
            &self.u_deleted,
            &self.pending,
            &self.f_entry,
            &self.f_error,
            &self.actor,
            &self.a_entry,
            &self.a_action,
            &self.a_user,
            &self.a_platform,
            &self.a_outcome,
            &self.a_attempt,
            &self.a_duration,
            &self.a_detail,
            &self.e_entry,
            &self.e_kind,
            &self.e_user,
            &self.e_platform,
            &self.e_message,
            &self.m_owner,
            &self.m_integration,
            &self.m_account,
            &self.removed,
        ]
    }
}

/// How a recorded meeting replaces the booking's previous one. `linked_at` keeps its time while
/// the same meeting stays live.
macro_rules! upsert_meeting_on_conflict {
    () => {
        " ON CONFLICT (booking_id) DO UPDATE
    SET platform = EXCLUDED.platform, requested_platform = EXCLUDED.requested_platform,
        external_id = EXCLUDED.external_id, join_url = EXCLUDED.join_url,
        start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
        generation = EXCLUDED.generation, state = 'live', updated_at = now(),
        owner_id = EXCLUDED.owner_id, integration_id = EXCLUDED.integration_id, account = EXCLUDED.account,
        linked_at = CASE WHEN m.external_id = EXCLUDED.external_id AND m.state = 'live'
                         THEN m.linked_at ELSE clock_timestamp() END"
    };
}

/// The write-back: `$lock` is how the bookings are locked, `$join` whether a job whose booking
/// was not locked is still fenced (`LEFT JOIN`: only a deleted booking can be missing) or left
/// out (`JOIN`).
///
/// `fenced` ends the claims that still hold (a claim is spent by its write-back) and says which
/// are current (the booking is still at the version the job read). What exists at the platform
/// is recorded for every fenced job, even when its booking moved on meanwhile: the next run must
/// know about that meeting to move or delete it. The booking shows the result, and the app is
/// told, only for current jobs. Data-modifying CTEs all see the statement's snapshot, never one
/// another's rows: each write therefore takes its own rows and keeps those of the fenced entries.
/// Writes name their entry (its place in the batch), not their booking: a daemon can hold a lost
/// claim and its successor on the same job at once, and only the current claim's rows count.
///
/// Every update finds its rows through `key = ANY (array)`, an index condition whatever the
/// plan: the generic plan is kept per connection, made from the statistics of the moment it is
/// made (a table that was nearly empty then would otherwise be walked whole through its index).
macro_rules! write_back_sql {
    ($lock:literal, $join:literal) => {
        concat!(
            "WITH f AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::uuid[], $5::bigint[], $6::text[],
                         $7::float8[], $8::text[], $9::bool[], $10::text[], $11::int[]) WITH ORDINALITY
             AS f(job_id, booking_id, claim_seq, token, version, state, delay, last_error, refund, rplatform,
                  rgeneration, entry)
), locked AS (
    SELECT b.id FROM bookings b WHERE b.id = ANY ($2::uuid[]) ORDER BY b.id ",
            $lock,
            "
), fenced AS (
    UPDATE meetingd.jobs j
       SET state = CASE WHEN j.version = f.version THEN f.state ELSE 'pending' END,
           run_at = CASE WHEN j.version = f.version THEN now() + make_interval(secs => f.delay) ELSE now() END,
           last_error = CASE WHEN j.version = f.version AND NOT f.refund THEN f.last_error ELSE j.last_error END,
           attempts = CASE WHEN f.refund THEN GREATEST(j.attempts - 1, 0) ELSE j.attempts END,
           completed_at = CASE WHEN j.version = f.version AND f.state <> 'pending' THEN clock_timestamp() END,
           lease_owner = NULL, lease_until = NULL, lease_token = NULL, updated_at = now(),
           intent_platform = CASE WHEN j.intent_platform = f.rplatform AND j.intent_generation = f.rgeneration
                                  THEN NULL ELSE j.intent_platform END
      FROM f ",
            $join,
            " locked l ON l.id = f.booking_id
     WHERE j.id = ANY ($1::bigint[]) AND j.id = f.job_id AND j.claim_seq = f.claim_seq AND j.lease_token = f.token
 RETURNING f.entry, j.booking_id, j.version = f.version AS current
), linked AS (
    SELECT fd.booking_id, fd.current, x.*
      FROM unnest($12::bigint[], $13::text[], $14::text[], $15::text[], $16::text[], $17::timestamptz[],
                  $18::timestamptz[], $19::int[], $20::jsonb[], $40::uuid[], $41::uuid[], $42::text[])
           AS x(entry, platform, requested_platform, external_id, join_url, start_time, end_time, generation, settings,
                owner_id, integration_id, account)
      JOIN fenced fd ON fd.entry = x.entry
), recorded AS (
    INSERT INTO meetingd.meetings AS m
        (booking_id, platform, requested_platform, external_id, join_url, start_time, end_time, generation, state,
         owner_id, integration_id, account)
    SELECT booking_id, platform, requested_platform, external_id, join_url, start_time, end_time, generation, 'live',
           owner_id, integration_id, account
      FROM linked",
            upsert_meeting_on_conflict!(),
            "
), shown AS (
    -- Only over a link meetingd wrote (or none): a link the app or the provider set meanwhile
    -- is theirs, and the next run treats the booking as manual. The recorded meeting is read by
    -- `meetingd.link_is_ours` and correlated subqueries: index lookups in any plan, like every
    -- `= ANY` here.
    UPDATE bookings b
       SET meeting_link = x.join_url, meeting_id = x.external_id, meeting_platform = x.platform,
           meeting_settings = x.settings, meeting_status = 'ready', meeting_error = NULL
      FROM linked x
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM linked WHERE current)) AND b.id = x.booking_id AND x.current
       AND b.meeting_status IS DISTINCT FROM 'manual'
       AND (COALESCE(b.meeting_link::text, '') = x.join_url OR meetingd.link_is_ours(b.id, b.meeting_link::text))
), unlinked AS (
    SELECT fd.booking_id, fd.current, x.deleted
      FROM unnest($21::bigint[], $22::bool[]) AS x(entry, deleted)
      JOIN fenced fd ON fd.entry = x.entry
), gone AS (
    -- The recorded meeting was deleted by a run whose outcome is not `Unlinked` (a replacement
    -- whose create failed, an update that found it deleted): recorded as deleted all the same.
    SELECT fd.booking_id, fd.current, fd.entry
      FROM fenced fd WHERE fd.entry = ANY ($43::bigint[])
), removed AS (
    UPDATE meetingd.meetings SET state = 'deleted', updated_at = now()
     WHERE booking_id = ANY (ARRAY(SELECT booking_id FROM unlinked WHERE deleted) || ARRAY(SELECT booking_id FROM gone))
), cleared AS (
    -- A manual link is the provider's own: it stays, and so does a link the app wrote itself
    -- (the booking is then marked manual). A booking that never had meeting state (confirmed,
    -- then cancelled before any work) is left as it is: no meeting at all.
    UPDATE bookings b
       SET meeting_link = CASE WHEN meetingd.link_is_ours(b.id, b.meeting_link::text) THEN NULL ELSE b.meeting_link END,
           meeting_id = CASE WHEN meetingd.link_is_ours(b.id, b.meeting_link::text) THEN NULL ELSE b.meeting_id END,
           meeting_error = NULL,
           meeting_status = CASE WHEN meetingd.link_is_ours(b.id, b.meeting_link::text) THEN 'deleted' ELSE 'manual' END
      FROM unlinked x
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM unlinked WHERE current)) AND b.id = x.booking_id AND x.current
       AND b.meeting_status IS DISTINCT FROM 'manual' AND (x.deleted OR b.meeting_status IS NOT NULL)
), retrying AS (
    -- A booking whose meeting was deleted on the way shows no dead link while it waits.
    UPDATE bookings b
       SET meeting_status = 'pending',
           meeting_link = CASE WHEN r.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                               THEN NULL ELSE b.meeting_link END,
           meeting_id = CASE WHEN r.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                             THEN NULL ELSE b.meeting_id END
      FROM (SELECT fd.booking_id, fd.entry = ANY ($43::bigint[]) AS removed
              FROM fenced fd WHERE fd.current AND fd.entry = ANY ($23::bigint[])) r
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM fenced WHERE current AND entry = ANY ($23::bigint[])))
       AND b.id = r.booking_id
       AND (b.meeting_status IS DISTINCT FROM 'pending' OR (r.removed AND b.meeting_link IS NOT NULL))
       AND b.meeting_status IS DISTINCT FROM 'manual'
       AND b.status::text = 'confirmed'
), failing AS (
    SELECT fd.booking_id, x.error, fd.entry = ANY ($43::bigint[]) AS removed
      FROM unnest($24::bigint[], $25::text[]) AS x(entry, error)
      JOIN fenced fd ON fd.entry = x.entry AND fd.current
), failed AS (
    UPDATE bookings b
       SET meeting_status = 'failed', meeting_error = x.error,
           meeting_link = CASE WHEN x.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                               THEN NULL ELSE b.meeting_link END,
           meeting_id = CASE WHEN x.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                             THEN NULL ELSE b.meeting_id END
      FROM failing x
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM failing)) AND b.id = x.booking_id
       AND b.meeting_status IS DISTINCT FROM 'manual'
), audited AS (
    -- In the order given, so a booking's trail reads in the order things happened.
    INSERT INTO meetingd.audit_log (actor, action, booking_id, user_id, platform, outcome, attempt, duration_ms, detail)
    SELECT $26, x.action, fd.booking_id, x.user_id, x.platform, x.outcome, x.attempt, x.duration_ms, x.detail
      FROM unnest($27::bigint[], $28::text[], $29::uuid[], $30::text[], $31::text[], $32::int[], $33::int[],
                  $34::text[])
           WITH ORDINALITY AS x(entry, action, user_id, platform, outcome, attempt, duration_ms, detail, n)
      JOIN fenced fd ON fd.entry = x.entry
     ORDER BY x.n
), told AS (
    INSERT INTO meetingd.events (kind, user_id, booking_id, platform, message)
    SELECT x.kind, x.user_id, fd.booking_id, x.platform, x.message
      FROM unnest($35::bigint[], $36::text[], $37::uuid[], $38::text[], $39::text[])
           WITH ORDINALITY AS x(entry, kind, user_id, platform, message, n)
      JOIN fenced fd ON fd.entry = x.entry AND fd.current
     ORDER BY x.n
)
SELECT f.entry, fenced.current
  FROM f ",
            $join,
            " locked l ON l.id = f.booking_id
  LEFT JOIN fenced ON fenced.entry = f.entry"
        )
    };
}

const WRITE_BACK_WAITING: &str = write_back_sql!("FOR NO KEY UPDATE", "LEFT JOIN");
const WRITE_BACK_SKIPPING: &str = write_back_sql!("FOR NO KEY UPDATE SKIP LOCKED", "JOIN");
