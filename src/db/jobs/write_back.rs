//! The fenced write-back: one statement (`write_back.sql`) that records the outcomes of one or
//! more finished jobs, and the structs that fill its parameters.
//!
//! Owns the mapping from [`Finished`] jobs to the statement's `$n`, one small struct per group of
//! parameters. It must not decide anything about a job (the worker did) and never calls a platform.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PLAN_SETTINGS;
use crate::db::{Conn, DbError, Param};
use crate::job::{Finished, Outcome, WriteBack};

/// What a batched statement does when someone else holds one of its rows locked (the app, a
/// job's booking row; another statement, a job row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLocks {
    /// Wait for it (up to the pool's `lock_timeout`): for a job recorded on its own.
    Wait,
    /// Leave that job out (its result is `None`): for a batch, which must never wait for the app.
    Skip,
}

/// `write_back.sql` as written, with its placeholders (see the file's header).
const WRITE_BACK: &str = include_str!("write_back.sql");

/// What a batch's entries write besides the fence, the audit and the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcomes {
    /// Only meetings that exist (linked, unchanged or deferred entries): the statement without
    /// the `other_outcomes` CTEs.
    Linking,
    /// Anything, unlinked, retrying and failed entries and removed meetings included.
    Any,
}

/// The variants, by [`RowLocks`] and [`Outcomes`], each made once at first use.
static WRITE_BACK_WAITING: LazyLock<String> = LazyLock::new(|| write_back_sql(RowLocks::Wait, Outcomes::Any));
static WRITE_BACK_SKIPPING: LazyLock<String> = LazyLock::new(|| write_back_sql(RowLocks::Skip, Outcomes::Any));
static LINKING_WAITING: LazyLock<String> = LazyLock::new(|| write_back_sql(RowLocks::Wait, Outcomes::Linking));
static LINKING_SKIPPING: LazyLock<String> = LazyLock::new(|| write_back_sql(RowLocks::Skip, Outcomes::Linking));

const OTHER_OUTCOMES_BEGIN: &str = "-- {{other_outcomes:begin}}\n";
const OTHER_OUTCOMES_END: &str = "-- {{other_outcomes:end}}\n";

/// What stands for the `other_outcomes` CTEs in the [`Outcomes::Linking`] variant: their
/// parameters typed as there, in a CTE nobody reads, which the server does not plan.
const OTHER_OUTCOMES_UNSENT: &str =
    "), unsent AS (\n    SELECT $24::bigint[], $25::bigint[], $26::bool[], $27::bigint[], $28::bigint[], $29::text[]\n";

fn write_back_sql(locks: RowLocks, outcomes: Outcomes) -> String {
    let (booking_lock, booking_join) = match locks {
        // One job recorded on its own waits for the booking's lock, and fences a job whose
        // booking is gone.
        RowLocks::Wait => ("FOR NO KEY UPDATE", "LEFT JOIN"),
        // A batch skips a booking the app holds, and leaves its job out.
        RowLocks::Skip => ("FOR NO KEY UPDATE SKIP LOCKED", "JOIN"),
    };
    let sql = super::statement(WRITE_BACK)
        .replace("{{booking_lock}}", booking_lock)
        .replace("{{booking_join}}", booking_join);
    let (Some(begin), Some(end)) = (sql.find(OTHER_OUTCOMES_BEGIN), sql.find(OTHER_OUTCOMES_END)) else {
        unreachable!("write_back.sql marks its other_outcomes CTEs");
    };
    let others = match outcomes {
        Outcomes::Any => &sql[begin + OTHER_OUTCOMES_BEGIN.len()..end],
        Outcomes::Linking => OTHER_OUTCOMES_UNSENT,
    };
    format!("{}{others}{}", &sql[..begin], &sql[end + OTHER_OUTCOMES_END.len()..])
}

fn write_back_of(locks: RowLocks, outcomes: Outcomes) -> &'static str {
    match (locks, outcomes) {
        (RowLocks::Wait, Outcomes::Any) => &WRITE_BACK_WAITING,
        (RowLocks::Skip, Outcomes::Any) => &WRITE_BACK_SKIPPING,
        (RowLocks::Wait, Outcomes::Linking) => &LINKING_WAITING,
        (RowLocks::Skip, Outcomes::Linking) => &LINKING_SKIPPING,
    }
}

/// Records the outcomes of finished jobs, each fenced on its claim: only the lease holder's result
/// is written. One statement in one transaction, sent in one round trip, whatever the outcomes.
///
/// The statement locks the jobs' booking rows before their job rows, the order the app's own
/// transaction (booking update, then the trigger's job upsert) takes them, so the two can never
/// deadlock. With [`RowLocks::Skip`] a booking the app holds is skipped, so a batch never
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
    locks: RowLocks,
) -> Result<Vec<Option<WriteBack>>, DbError> {
    let mut w = Writes { actor, ..Writes::default() };
    for (entry, f) in (1..).zip(batch) {
        w.add(entry, f);
    }
    let sql = write_back_of(locks, w.outcomes());
    let rows = client.sql().in_own_transaction(PLAN_SETTINGS, sql, &w.params()).await?;
    // By entry (1-based); an entry whose booking was not locked has no row.
    let mut results = vec![None; batch.len()];
    for row in rows {
        let result = match row.get::<_, Option<bool>>("current") {
            None => WriteBack::LeaseLost,
            Some(true) => WriteBack::Done,
            Some(false) => WriteBack::Stale,
        };
        if let Some(slot) = usize::try_from(row.get::<_, i64>("entry") - 1).ok().and_then(|i| results.get_mut(i)) {
            *slot = Some(result);
        }
    }
    Ok(results)
}

/// The job row's `state` after an outcome.
fn job_state(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Linked { .. } | Outcome::Unlinked { .. } | Outcome::Unchanged => "done",
        Outcome::Retry { .. } | Outcome::Defer { .. } => "pending",
        Outcome::Failed { .. } => "failed",
    }
}

/// The job row's `run_at` delay and `last_error` for an outcome.
fn fence_values(outcome: &Outcome) -> (f64, Option<&str>) {
    match outcome {
        Outcome::Retry { error, delay } => (delay.as_secs_f64(), Some(error.as_str())),
        Outcome::Defer { delay } => (delay.as_secs_f64(), None),
        Outcome::Failed { error } => (0.0, Some(error.as_str())),
        _ => (0.0, None),
    }
}

/// `$1`–`$11`: the fence of every entry, in entry order (`f` in the statement), and what the job
/// row becomes when the fence holds.
#[derive(Default)]
struct Fence<'a> {
    job_ids: Vec<i64>,
    booking_ids: Vec<Uuid>,
    claim_seqs: Vec<i64>,
    tokens: Vec<Uuid>,
    versions: Vec<i64>,
    states: Vec<&'static str>,
    delays: Vec<f64>,
    errors: Vec<Option<&'a str>>,
    /// A deferral gives its attempt back.
    refunds: Vec<bool>,
    /// The create intent the run settled: cleared if it is still the job's.
    resolved_platforms: Vec<Option<&'a str>>,
    resolved_generations: Vec<Option<i32>>,
}

/// `$12`–`$23`: meetings that exist at the platform (`linked`), recorded even when the booking
/// moved on meanwhile (the next run must know about them to move or delete them), shown on
/// current bookings.
#[derive(Default)]
struct Meetings<'a> {
    entry: Vec<i64>,
    platform: Vec<&'a str>,
    requested: Vec<Option<&'a str>>,
    external_id: Vec<&'a str>,
    join_url: Vec<&'a str>,
    start: Vec<DateTime<Utc>>,
    end: Vec<DateTime<Utc>>,
    generation: Vec<i32>,
    settings: Vec<&'a serde_json::Value>,
    owner: Vec<Option<Uuid>>,
    integration: Vec<Option<Uuid>>,
    account: Vec<Option<&'a str>>,
}

/// `$25`–`$26`: entries whose booking needs no meeting (`unlinked`): the recorded meeting is
/// marked deleted when one was, and current bookings' links are cleared.
#[derive(Default)]
struct Unlinked {
    entry: Vec<i64>,
    deleted: Vec<bool>,
}

/// `$28`–`$29`: entries that failed (`failing`): current bookings show the sentence.
#[derive(Default)]
struct Failures<'a> {
    entry: Vec<i64>,
    error: Vec<&'a str>,
}

/// `$31`–`$38`: audit lines (`audited`), in the order given.
#[derive(Default)]
struct Audit<'a> {
    entry: Vec<i64>,
    action: Vec<&'a str>,
    user: Vec<Option<Uuid>>,
    platform: Vec<Option<&'a str>>,
    outcome: Vec<&'a str>,
    attempt: Vec<i32>,
    duration_ms: Vec<Option<i32>>,
    detail: Vec<Option<&'a str>>,
}

/// `$39`–`$43`: events for the app (`told`), for current entries only.
#[derive(Default)]
struct Events<'a> {
    entry: Vec<i64>,
    kind: Vec<&'a str>,
    user: Vec<Option<Uuid>>,
    platform: Vec<Option<&'a str>>,
    message: Vec<&'a str>,
}

/// The write-back statement's parameters, one array per column: the fence of every job, and what
/// each job's outcome writes (the statement keeps only the rows of the jobs it fenced).
#[derive(Default)]
struct Writes<'a> {
    fence: Fence<'a>,
    meetings: Meetings<'a>,
    /// `$24`: runs that deleted the recorded meeting but end otherwise than `Unlinked` (`gone`).
    removed: Vec<i64>,
    unlinked: Unlinked,
    /// `$27`: entries that retry (`retrying`): current bookings show `pending`.
    retrying: Vec<i64>,
    failures: Failures<'a>,
    /// `$30`: who the audit lines name.
    actor: &'a str,
    audit: Audit<'a>,
    events: Events<'a>,
}

impl<'a> Writes<'a> {
    /// Entry `entry` (1-based) of the batch.
    fn add(&mut self, entry: i64, f: &'a Finished) {
        let claim = &f.snapshot.claim;
        // Who is told: the service's provider, or (the booking gone) the provider the meeting was made for.
        let user =
            f.snapshot.booking.as_ref().and_then(|b| b.provider_id).or_else(|| f.snapshot.meeting.as_ref()?.owner);
        let (delay, last_error) = fence_values(&f.outcome);
        let fence = &mut self.fence;
        fence.job_ids.push(claim.job_id);
        fence.booking_ids.push(claim.booking_id);
        fence.claim_seqs.push(claim.claim_seq);
        fence.tokens.push(claim.token);
        fence.versions.push(claim.version);
        fence.states.push(job_state(&f.outcome));
        fence.delays.push(delay);
        fence.errors.push(last_error);
        fence.refunds.push(matches!(f.outcome, Outcome::Defer { .. }));
        fence.resolved_platforms.push(f.resolved.as_ref().map(|i| i.platform.as_str()));
        fence.resolved_generations.push(f.resolved.as_ref().map(|i| i.generation));
        if f.removed && !matches!(f.outcome, Outcome::Linked { .. } | Outcome::Unlinked { .. }) {
            self.removed.push(entry);
        }
        match &f.outcome {
            Outcome::Linked { platform, requested_platform, meeting, start, end, generation, settings, owner } => {
                let m = &mut self.meetings;
                m.entry.push(entry);
                m.platform.push(platform);
                m.requested.push(requested_platform.as_deref());
                m.external_id.push(&meeting.external_id);
                m.join_url.push(&meeting.join_url);
                m.start.push(*start);
                m.end.push(*end);
                m.generation.push(*generation);
                m.settings.push(settings);
                m.owner.push(*owner);
                m.integration.push(meeting.account.as_ref().map(|a| a.integration_id));
                m.account.push(meeting.account.as_ref().and_then(|a| a.identity.as_deref()));
            }
            Outcome::Unlinked { deleted } => {
                self.unlinked.entry.push(entry);
                self.unlinked.deleted.push(*deleted);
            }
            Outcome::Unchanged | Outcome::Defer { .. } => {}
            Outcome::Retry { .. } => self.retrying.push(entry),
            Outcome::Failed { error } => {
                self.failures.entry.push(entry);
                self.failures.error.push(error);
            }
        }
        for line in &f.audit {
            let a = &mut self.audit;
            a.entry.push(entry);
            a.action.push(line.action);
            a.user.push(user);
            a.platform.push(line.platform.as_deref());
            a.outcome.push(line.outcome);
            a.attempt.push(claim.attempt);
            a.duration_ms.push(line.duration_ms);
            a.detail.push(line.detail.as_deref());
        }
        if let Some(event) = &f.event {
            let e = &mut self.events;
            e.entry.push(entry);
            e.kind.push(event.kind);
            e.user.push(user);
            e.platform.push(event.platform.as_deref());
            e.message.push(&event.message);
        }
    }

    /// Which variant of the statement the batch needs.
    fn outcomes(&self) -> Outcomes {
        let others = !self.removed.is_empty()
            || !self.unlinked.entry.is_empty()
            || !self.retrying.is_empty()
            || !self.failures.entry.is_empty();
        if others { Outcomes::Any } else { Outcomes::Linking }
    }

    /// In the order of the statement's `$n` (each group's struct says which it fills).
    fn params(&self) -> [&dyn Param; 43] {
        let (f, m, u, x, a, e) =
            (&self.fence, &self.meetings, &self.unlinked, &self.failures, &self.audit, &self.events);
        [
            // $1–$11
            &f.job_ids,
            &f.booking_ids,
            &f.claim_seqs,
            &f.tokens,
            &f.versions,
            &f.states,
            &f.delays,
            &f.errors,
            &f.refunds,
            &f.resolved_platforms,
            &f.resolved_generations,
            // $12–$23
            &m.entry,
            &m.platform,
            &m.requested,
            &m.external_id,
            &m.join_url,
            &m.start,
            &m.end,
            &m.generation,
            &m.settings,
            &m.owner,
            &m.integration,
            &m.account,
            // $24
            &self.removed,
            // $25–$26
            &u.entry,
            &u.deleted,
            // $27
            &self.retrying,
            // $28–$29
            &x.entry,
            &x.error,
            // $30
            &self.actor,
            // $31–$38
            &a.entry,
            &a.action,
            &a.user,
            &a.platform,
            &a.outcome,
            &a.attempt,
            &a.duration_ms,
            &a.detail,
            // $39–$43
            &e.entry,
            &e.kind,
            &e.user,
            &e.platform,
            &e.message,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::{LINKING_SKIPPING, LINKING_WAITING, Outcomes, WRITE_BACK_SKIPPING, WRITE_BACK_WAITING, Writes};

    fn variants() -> [&'static str; 4] {
        [&WRITE_BACK_WAITING, &WRITE_BACK_SKIPPING, &LINKING_WAITING, &LINKING_SKIPPING]
    }

    /// Every `$n` the parameters fill is used by each variant of the statement, and no other.
    #[test]
    fn the_statement_uses_exactly_the_parameters_filled() {
        let filled = Writes::default().params().len();
        for sql in variants() {
            let mut used: Vec<usize> = sql
                .split('$')
                .skip(1)
                .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                .collect();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used, (1..=filled).collect::<Vec<_>>(), "{sql}");
        }
    }

    /// The variants are the file with its placeholders filled in, and nothing left over.
    #[test]
    fn every_variant_fills_every_placeholder() {
        for sql in variants() {
            assert!(!sql.contains("{{"), "{sql}");
        }
        assert!(WRITE_BACK_SKIPPING.contains("ORDER BY b.id FOR NO KEY UPDATE SKIP LOCKED\n"));
        assert!(WRITE_BACK_WAITING.contains("FROM f LEFT JOIN locked l ON l.id = f.booking_id"));
        for (any, linking) in [(&*WRITE_BACK_WAITING, &*LINKING_WAITING), (&*WRITE_BACK_SKIPPING, &*LINKING_SKIPPING)] {
            assert_eq!(any.matches("UPDATE bookings").count(), 4, "shown, cleared, retrying, failed");
            assert_eq!(linking.matches("UPDATE bookings").count(), 1, "shown only");
            assert!(!linking.contains("unlinked") && !linking.contains("UPDATE meetingd.meetings"), "{linking}");
            assert!(linking.contains("), unsent AS (") && !any.contains("unsent"));
        }
    }

    /// Only a batch that writes nothing the `other_outcomes` CTEs write goes without them.
    #[test]
    fn a_batch_goes_without_the_other_outcomes_only_when_it_has_none() {
        assert_eq!(Writes::default().outcomes(), Outcomes::Linking);
        let others: [fn(&mut Writes); 4] =
            [|w| w.removed.push(1), |w| w.unlinked.entry.push(1), |w| w.retrying.push(1), |w| w.failures.entry.push(1)];
        for add in others {
            let mut w = Writes::default();
            add(&mut w);
            assert_eq!(w.outcomes(), Outcomes::Any);
        }
    }
}
