//! The job queue's statements: claim, read the booking as it is now, create intents, the fenced
//! write-back, and the mapping between their rows and the job's data (`crate::job`).
//!
//! Owns the daemon's statements on `meetingd.jobs`, `meetingd.meetings` and the meeting columns of
//! `bookings`, with the audit rows and events they write in the same statement (the API's and
//! admin's own are `db/bookings.rs`, `db/requeue.rs`, `db/audit.rs`). The claim and the write-back live in
//! `db/jobs/claim.sql` and `db/jobs/write_back.sql`; the short ones stay beside their functions.
//! It never calls a platform and never holds a transaction open across one: a claim commits at
//! once, the write-back is one short transaction that only the current lease holder can commit.

mod write_back;

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::integrations::{self, IntegrationRow, integration_row_at};
use super::{Conn, DbError, Param, Sql};
use crate::job::{BookingView, Claim, Intent, MeetingRecord, Snapshot};
use crate::providers::{Account, Meeting};
use crate::ratelimit::Budgets;

pub use write_back::{RowLocks, write_back};

/// Claims up to `limit` due jobs for `owner`, with a lease on the database clock, and reads the
/// booking and meeting behind each: one statement, one round trip.
///
/// The claim commits before any platform is called. A claim of jobs that call no platform keeping
/// meetings (Jitsi) commits asynchronously (`synchronous_commit = off`): it promises only a
/// lease, and a Jitsi room exists nowhere. A claim in which a job's first call is on one of
/// `calls.keeping` commits synchronously ([`Claim::durable`]), and records, for a booking that
/// needs a new meeting on one of `calls.intents`, its create intent ([`Claim::claimed`]). Before
/// a call the claim did not foresee, the worker confirms the claim with a synchronous, fenced
/// write ([`hold_claims`], with the create intent if any), which makes it durable. A claim that a
/// server crash loses is claimed again, under a new [`Claim::token`], and the lost one can no
/// longer record anything.
///
/// No claim pays for planning: the statement runs on its generic plan, kept per connection (and
/// remade only when the tables' statistics change). That plan is made from the statistics of the
/// moment (a queue table that was empty then looks best read whole), so it is made with
/// sequential scans ruled out: every step is an index lookup, which fits one job as well as a
/// batch, on a table of any size.
///
/// The claim also pays each job's first call on a rate-limited platform from `budgets`
/// (`ratelimit.rs`); a job that cannot be paid for is not claimed but moved to its turn
/// ([`Claimed::held_back`]).
///
/// Takes a connection of its own (not a transaction): the claim is its own transaction.
pub async fn claim(
    client: &Conn,
    owner: Uuid,
    limit: usize,
    lease: Duration,
    budgets: &Budgets,
    calls: &ClaimCalls,
) -> Result<Claimed, DbError> {
    let params: [&dyn Param; 10] = [
        &(limit as i64),
        &owner,
        &lease.as_secs_f64(),
        &budgets.platforms,
        &budgets.account_every,
        &budgets.account_span,
        &budgets.platform_every,
        &budgets.platform_span,
        &calls.keeping,
        &calls.intents,
    ];
    let rows = client.sql().in_own_transaction(CLAIM_SETTINGS, &CLAIM, &params).await?;
    let held_back = rows.first().map_or(0, |r| r.get::<_, i64>("held_back")) as usize;
    let next_turn = rows
        .first()
        .and_then(|r| r.get::<_, Option<f64>>("held_back_secs"))
        .map(|secs| Duration::from_secs_f64(secs.max(0.0)));
    let claimed: Vec<_> = rows.iter().filter(|r| r.get::<_, Option<i64>>("job_id").is_some()).collect();
    let integrations = claimed.iter().filter_map(|r| claimed_integration(r)).collect();
    let snapshots = claimed.into_iter().map(snapshot_of).collect();
    Ok(Claimed { snapshots, held_back, next_turn, integrations })
}

/// The platforms whose calls a claim prepares for: those that keep meetings (a claim that may
/// lead to a call on one commits synchronously) and, among them, those that take create intents
/// (a claim records the create intent of a booking that needs a new meeting there). Empty by
/// default: the claim then prepares nothing, and the worker holds each claim itself.
#[derive(Debug, Clone, Default)]
pub struct ClaimCalls {
    pub keeping: Vec<String>,
    pub intents: Vec<String>,
}

/// What one claim took.
#[derive(Debug, Default)]
pub struct Claimed {
    pub snapshots: Vec<Snapshot>,
    /// Due jobs it left for lack of a rate-limit token, each moved to its turn.
    pub held_back: usize,
    /// When a claim that met rate-limited jobs should look again: how soon the next job falls
    /// due (a turn it or another daemon kept).
    pub next_turn: Option<Duration>,
    /// The integration rows read along for the claimed jobs' first platform calls.
    pub integrations: Vec<IntegrationRow>,
}

/// The claim statement (`db/jobs/claim.sql`, whose header says what it does and why).
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    statement(include_str!("jobs/claim.sql"))
        .replace("{integration}", &integrations::select_current("v.provider_id", "v.meeting_platform"))
});

/// A statement file's text as sent: its leading `--` header is for readers, not the server.
fn statement(file: &str) -> String {
    file.lines().skip_while(|l| l.starts_with("--")).collect::<Vec<_>>().join("\n")
}

/// One row of [`CLAIM`] as a snapshot. The job and meeting columns are meetingd's own; the
/// booking's come from the marketplace's tables, whose types and nullability meetingd does not
/// control: they are read with `try_get`, and what cannot be read becomes
/// [`BookingView::unreadable`], a sentence that fails that one job.
fn snapshot_of(r: &tokio_postgres::Row) -> Snapshot {
    let booking = booking_of(r);
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
        rate_paid: r.try_get("rate_paid").ok().flatten(),
        claimed: claimed_intent(r, booking.as_ref()),
        durable: r.get("durable"),
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
    Snapshot { claim, booking, meeting }
}

/// The create intent the claim recorded itself: the service's platform and the next generation,
/// in the account of the booking's provider that the claim read (`booking`'s `provider_id` and
/// `integration`, the very columns it wrote into the intent).
fn claimed_intent(r: &tokio_postgres::Row, booking: Option<&BookingView>) -> Option<Intent> {
    let platform: String = r.get::<_, Option<String>>("claimed_platform")?;
    let generation: i32 = r.get::<_, Option<i32>>("claimed_generation")?;
    let owner = booking.and_then(|b| b.provider_id);
    let account = booking.and_then(|b| b.integration.clone());
    Some(Intent { platform, generation, owner, account })
}

/// The integration row a claim row carries for the token store (the columns after `token_row`),
/// if there is one.
fn claimed_integration(r: &tokio_postgres::Row) -> Option<IntegrationRow> {
    let at = r.columns().iter().position(|c| c.name() == "token_row")? + 1;
    r.get::<_, Option<Uuid>>(at)?;
    Some(integration_row_at(r, at))
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

/// A fenced write to a claimed job's row, committed synchronously before the job's first call to
/// a platform that keeps meetings: with a create intent (a create of `generation` on `platform` is
/// about to be attempted), or without one (an update that changes nothing, to confirm the claim:
/// its synchronous commit also makes the asynchronously committed claim durable).
///
/// `integration` names a provider and platform whose integration row the statement reads too,
/// at no extra round trip: the job's next step reads that row's token.
#[derive(Debug, Clone)]
pub struct Hold {
    pub claim: Claim,
    pub intent: Option<Intent>,
    pub integration: Option<(Uuid, String)>,
}

/// What [`hold_claims`] answers for one hold: whether its claim held (`None`: the job row was
/// locked and skipped), and the integration row it asked for, if there is one.
#[derive(Debug, Clone)]
pub struct Held {
    pub held: Option<bool>,
    pub integration: Option<IntegrationRow>,
}

/// Writes [`Hold`]s, fenced on each claim, in one statement, so jobs starting together share one
/// round trip and one synchronous commit. Says, per hold, whether its claim still held (`false`:
/// the lease was lost, or a server crash lost the claim; the platform call must not be made), or,
/// with [`RowLocks::Skip`], `None` for a job row someone else holds locked right now (a batch
/// never waits for one job: that hold is written on its own). Takes a connection of its own (not
/// a transaction): the hold is its own transaction, on its generic plan like the claim's.
pub async fn hold_claims(client: &Conn, holds: &[Hold], locks: RowLocks) -> Result<Vec<Held>, DbError> {
    let ids: Vec<i64> = holds.iter().map(|h| h.claim.job_id).collect();
    let seqs: Vec<i64> = holds.iter().map(|h| h.claim.claim_seq).collect();
    let tokens: Vec<Uuid> = holds.iter().map(|h| h.claim.token).collect();
    fn intent(h: &Hold) -> Option<&Intent> {
        h.intent.as_ref()
    }
    fn account(h: &Hold) -> Option<&Account> {
        h.intent.as_ref()?.account.as_ref()
    }
    let set: Vec<bool> = holds.iter().map(|h| intent(h).is_some()).collect();
    let platforms: Vec<Option<String>> = holds.iter().map(|h| intent(h).map(|i| i.platform.clone())).collect();
    let generations: Vec<Option<i32>> = holds.iter().map(|h| intent(h).map(|i| i.generation)).collect();
    let owners: Vec<Option<Uuid>> = holds.iter().map(|h| intent(h).and_then(|i| i.owner)).collect();
    let integrations: Vec<Option<Uuid>> = holds.iter().map(|h| account(h).map(|a| a.integration_id)).collect();
    let identities: Vec<Option<String>> = holds.iter().map(|h| account(h).and_then(|a| a.identity.clone())).collect();
    let readers: Vec<Option<Uuid>> = holds.iter().map(|h| h.integration.as_ref().map(|(user, _)| *user)).collect();
    let read_platforms: Vec<Option<String>> =
        holds.iter().map(|h| h.integration.as_ref().map(|(_, platform)| platform.clone())).collect();
    let params: [&dyn Param; 11] = [
        &ids,
        &seqs,
        &tokens,
        &set,
        &platforms,
        &generations,
        &owners,
        &integrations,
        &identities,
        &readers,
        &read_platforms,
    ];
    let sql = match locks {
        RowLocks::Wait => &*HOLD_WAITING,
        RowLocks::Skip => &*HOLD_SKIPPING,
    };
    // On its generic plan, like the claim: left to choose, the server plans it anew each time.
    let rows = client.sql().in_own_transaction(PLAN_SETTINGS, sql, &params).await?;
    let mut answers = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let (id, held, fenced): (i64, bool, bool) = (row.get(0), row.get(1), row.get(2));
        // Not held although the fence matched: the row was locked and skipped.
        let answer = if held || locks == RowLocks::Wait || !fenced { Some(held) } else { None };
        let integration = row.get::<_, Option<Uuid>>(3).map(|_| integration_row_at(&row, 3));
        answers.insert(id, Held { held: answer, integration });
    }
    Ok(holds
        .iter()
        .map(|h| answers.remove(&h.claim.job_id).unwrap_or(Held { held: None, integration: None }))
        .collect())
}

/// The hold statement: the job rows whose claim still holds are locked (`{lock}`), then written;
/// an update that changes nothing still writes, and its synchronous commit makes the claim
/// durable. Answers, per hold, whether it was written and whether its fence matched when the
/// statement began.
const HOLD: &str = "WITH v AS (
        SELECT * FROM unnest($1::int8[], $2::int8[], $3::uuid[], $4::bool[], $5::text[], $6::int4[],
                             $7::uuid[], $8::uuid[], $9::text[], $10::uuid[], $11::text[])
                   AS v(id, seq, token, set, platform, generation, owner, integration, account, reader, rplatform)
     ), mine AS (
        SELECT j.id FROM meetingd.jobs j JOIN v ON j.id = v.id AND j.claim_seq = v.seq AND j.lease_token = v.token
        ORDER BY j.id {lock}
     ), held AS (
        UPDATE meetingd.jobs j
           SET intent_platform = CASE WHEN v.set THEN v.platform ELSE j.intent_platform END,
               intent_generation = CASE WHEN v.set THEN v.generation ELSE j.intent_generation END,
               intent_owner = CASE WHEN v.set THEN v.owner ELSE j.intent_owner END,
               intent_integration = CASE WHEN v.set THEN v.integration ELSE j.intent_integration END,
               intent_account = CASE WHEN v.set THEN v.account ELSE j.intent_account END
          FROM v, mine
         WHERE j.id = v.id AND mine.id = v.id
        RETURNING j.id
     )
     SELECT v.id, h.id IS NOT NULL,
            EXISTS (SELECT 1 FROM meetingd.jobs j WHERE j.id = v.id AND j.claim_seq = v.seq AND j.lease_token = v.token),
            i.*
       FROM v LEFT JOIN held h ON h.id = v.id
       LEFT JOIN LATERAL ({integration}) i ON true";

static HOLD_WAITING: LazyLock<String> = LazyLock::new(|| hold_sql("FOR NO KEY UPDATE OF j"));
static HOLD_SKIPPING: LazyLock<String> = LazyLock::new(|| hold_sql("FOR NO KEY UPDATE OF j SKIP LOCKED"));

fn hold_sql(lock: &str) -> String {
    HOLD.replace("{lock}", lock).replace("{integration}", &integrations::select_current("v.reader", "v.rplatform"))
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
                       completed_at = clock_timestamp(), updated_at = now(),
                       -- the create intent the claim recorded: nothing was called for it
                       intent_platform = CASE WHEN $8 THEN NULL ELSE intent_platform END
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
    let params: [&dyn Param; 8] = [
        &claim.job_id,
        &claim.claim_seq,
        &claim.token,
        &error,
        &actor,
        &user,
        &claim.attempt,
        &claim.claimed.is_some(),
    ];
    Ok(db.query_one(sql, &params).await?.get::<_, i64>(0) == 1)
}

/// How long until the next pending job becomes due (zero if one is due now), `None` if none is pending.
pub async fn next_due_in(db: Sql<'_>) -> Result<Option<Duration>, DbError> {
    let sql = "SELECT EXTRACT(EPOCH FROM min(GREATEST(run_at, COALESCE(lease_until, run_at))) - now())::float8
                 FROM meetingd.jobs WHERE state = 'pending'";
    let secs: Option<f64> = db.query_one(sql, &[]).await?.get(0);
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// Settings for a statement that must run on its generic plan with index lookups (see [`claim`]).
macro_rules! plan_settings {
    () => {
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off"
    };
}
const PLAN_SETTINGS: &str = plan_settings!();
const CLAIM_SETTINGS: &str = concat!("SET LOCAL synchronous_commit = off; ", plan_settings!());
