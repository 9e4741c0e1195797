//! The chaos phase and the settling after it: confirmations in batches, daemon kills and
//! restarts, a PostgreSQL crash, a terminated LISTEN, reschedules, cancels and re-confirmations,
//! deleted services and reconnected providers; then waiting until the queue is empty. It acts as
//! the marketplace and the operator would; it judges nothing (that is `check`).

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use meetingd_testkit::cluster::PrivateCluster;
use meetingd_testkit::fake_google::FakeGoogle;
use secrecy::SecretString;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::daemons::Daemons;
use crate::db::Db;
use crate::market::{delete_doomed_service, reconnect_provider};
use crate::{
    Args, BATCHES, DAEMONS, DOOMED_SERVICES, DOOMED_TAG, KILL_EVERY, MUTATE_EVERY, ODD_TAG, PENDING_CYCLE,
    PENDING_EVERY, RECONNECTED, SETTLE_REPORT_EVERY, SETTLE_TIMEOUT, TAG, TICK,
};

/// What happened during the run.
#[derive(Default)]
pub struct Counters {
    confirmed: u64,
    kills: u32,
    daemon_restarts: u32,
    unexpected_exits: Vec<String>,
    pg_restarts: u32,
    listen_terminated: u64,
    reschedules: u64,
    cancels: u64,
    reconfirms: u64,
    pending_switches: u32,
    services_deleted: u32,
    reconnected: u32,
}

impl Counters {
    pub fn print(&self, reconnects: u32) {
        println!(
            "chaos: {} confirmed, {} rescheduled, {} cancelled, {} re-confirmed; {} daemon kills ({} restarts, {} unexpected exits), \
             {} PostgreSQL restart(s), {} LISTEN connection(s) terminated, {} conference-pending switches, \
             {} service(s) deleted, {} provider(s) reconnected to another account, {} soak reconnects",
            self.confirmed,
            self.reschedules,
            self.cancels,
            self.reconfirms,
            self.kills,
            self.daemon_restarts,
            self.unexpected_exits.len(),
            self.pg_restarts,
            self.listen_terminated,
            self.pending_switches,
            self.services_deleted,
            self.reconnected,
            reconnects
        );
    }
}

/// One thing the chaos does at a point of its timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    ConfirmBatch(u32),
    Kill(usize),
    TerminateListen,
    RestartPostgres,
    Mutate,
    SwitchPending(u32),
    /// Confirms the bookings with odd rows and those of the services to be deleted.
    ConfirmOdd,
    DeleteService,
    Reconnect(usize),
}

/// When each action falls due, from the start of the chaos.
struct Timeline {
    length: Duration,
    batches_done: u32,
    next_kill: Duration,
    kills: usize,
    listen_done: bool,
    postgres_done: bool,
    next_mutation: Duration,
    next_pending: Duration,
    pending_step: usize,
    odd_done: bool,
    services_deleted: usize,
    reconnects: usize,
}

impl Timeline {
    fn new(length: Duration) -> Timeline {
        Timeline {
            length,
            batches_done: 0,
            next_kill: Duration::from_secs(3),
            kills: 0,
            listen_done: false,
            postgres_done: false,
            next_mutation: MUTATE_EVERY,
            next_pending: PENDING_EVERY,
            pending_step: 1,
            odd_done: false,
            services_deleted: 0,
            reconnects: 0,
        }
    }

    /// Confirmations over the first 60 % of the chaos; edits until 85 %.
    fn batch_gap(&self) -> Duration {
        self.length.mul_f64(0.6) / BATCHES
    }

    fn mutation_end(&self) -> Duration {
        self.length.mul_f64(0.85)
    }

    /// Mutation rounds in the whole chaos, to spread ~10 % of the bookings over them.
    fn mutation_rounds(&self) -> u32 {
        let window = self.mutation_end().saturating_sub(MUTATE_EVERY);
        (window.as_millis() / MUTATE_EVERY.as_millis()) as u32 + 1
    }

    /// The actions due at `t` (each returned once, except a LISTEN termination that found nothing).
    fn due(&mut self, t: Duration) -> Vec<Action> {
        let mut due = Vec::new();
        if self.batches_done < BATCHES && t >= self.batch_gap() * self.batches_done {
            self.batches_done += 1;
            due.push(Action::ConfirmBatch(self.batches_done));
        }
        if t >= self.next_kill {
            due.push(Action::Kill(self.kills % DAEMONS));
            self.kills += 1;
            self.next_kill += KILL_EVERY;
        }
        if !self.listen_done && t >= self.length.mul_f64(0.25) {
            due.push(Action::TerminateListen);
        }
        if !self.postgres_done && t >= self.length.mul_f64(0.45) {
            self.postgres_done = true;
            due.push(Action::RestartPostgres);
        }
        if t >= self.next_mutation && t <= self.mutation_end() {
            self.next_mutation += MUTATE_EVERY;
            due.push(Action::Mutate);
        }
        if !self.odd_done {
            self.odd_done = true;
            due.push(Action::ConfirmOdd);
        }
        // The doomed services go at 40 % and 70 %, after their meetings were made (or while).
        if self.services_deleted < DOOMED_SERVICES && t >= self.length.mul_f64(0.4 + 0.3 * self.services_deleted as f64)
        {
            self.services_deleted += 1;
            due.push(Action::DeleteService);
        }
        // Reconnects at 30 % and 55 %: later reschedules and cancels reach the first account.
        if self.reconnects < RECONNECTED && t >= self.length.mul_f64(0.3 + 0.25 * self.reconnects as f64) {
            due.push(Action::Reconnect(self.reconnects + 3));
            self.reconnects += 1;
        }
        if t >= self.next_pending {
            self.next_pending += PENDING_EVERY;
            due.push(Action::SwitchPending(PENDING_CYCLE[self.pending_step % PENDING_CYCLE.len()]));
            self.pending_step += 1;
        }
        due
    }
}

/// The chaos phase: confirmations, kills, a PostgreSQL restart, a LISTEN termination, edits.
pub struct Chaos<'a, 'e> {
    pub db: &'a mut Db,
    pub key: &'a SecretString,
    pub cluster: &'a PrivateCluster,
    pub google: &'a FakeGoogle,
    pub daemons: &'a mut Daemons<'e>,
    pub counters: &'a mut Counters,
    pub history: &'a mut History,
}

impl Chaos<'_, '_> {
    pub async fn run(self, args: &Args) -> Result<()> {
        let Chaos { db, key, cluster, google, daemons, counters, history } = self;
        let length = Duration::from_secs(args.chaos_secs);
        let mut timeline = Timeline::new(length);
        let per_round =
            ((f64::from(args.bookings) * 0.10) / f64::from(timeline.mutation_rounds())).round().max(1.0) as i64;
        let batch = i64::from(args.bookings.div_ceil(BATCHES));
        let t0 = history.t0;
        let mut mutations = 0u32;
        while t0.elapsed() < length {
            for note in daemons.revive()? {
                stamp(t0, &format!("WARNING {note}; restarted"));
                counters.unexpected_exits.push(note);
                counters.daemon_restarts += 1;
            }
            for action in timeline.due(t0.elapsed()) {
                match action {
                    Action::ConfirmBatch(k) => {
                        let limit = if k == BATCHES { i64::MAX } else { batch };
                        let ids = confirm_pending(db, limit).await?;
                        history.note(&ids, "confirmed");
                        counters.confirmed += ids.len() as u64;
                        stamp(t0, &format!("confirmed batch {k}/{BATCHES}: {} bookings", ids.len()));
                    }
                    Action::Kill(slot) => {
                        let (old, new) = tokio::task::block_in_place(|| daemons.kill_and_restart(slot))?;
                        counters.kills += 1;
                        counters.daemon_restarts += 1;
                        stamp(t0, &format!("SIGKILL daemon {} (pid {old}); restarted as pid {new}", slot + 1));
                    }
                    Action::TerminateListen => {
                        let n = terminate_listeners(db).await?;
                        if n > 0 {
                            timeline.listen_done = true;
                            counters.listen_terminated += n;
                            stamp(t0, &format!("terminated {n} LISTEN connection(s)"));
                        }
                    }
                    Action::RestartPostgres => {
                        let started = Instant::now();
                        tokio::task::block_in_place(|| cluster.restart())?;
                        counters.pg_restarts += 1;
                        stamp(
                            t0,
                            &format!(
                                "PostgreSQL crashed and restarted (-m immediate, {:.1} s)",
                                started.elapsed().as_secs_f64()
                            ),
                        );
                    }
                    Action::Mutate => {
                        mutations += 1;
                        let edits = mutate(db, per_round, mutations.is_multiple_of(2)).await?;
                        history.note(&edits.rescheduled, "rescheduled");
                        history.note(&edits.cancelled, "cancelled");
                        history.note(&edits.reconfirmed, "re-confirmed");
                        counters.reschedules += edits.rescheduled.len() as u64;
                        counters.cancels += edits.cancelled.len() as u64;
                        counters.reconfirms += edits.reconfirmed.len() as u64;
                        let ready = ready_count(db).await?;
                        stamp(
                            t0,
                            &format!(
                                "rescheduled {}, cancelled {}, re-confirmed {}; {ready} bookings show a link",
                                edits.rescheduled.len(),
                                edits.cancelled.len(),
                                edits.reconfirmed.len()
                            ),
                        );
                    }
                    Action::SwitchPending(gets) => {
                        google.set_pending_gets(gets);
                        counters.pending_switches += 1;
                    }
                    Action::ConfirmOdd => {
                        let rows = db
                            .query(
                                "UPDATE bookings SET status = 'confirmed' WHERE notes IN ($1, $2) RETURNING id",
                                &[&ODD_TAG, &DOOMED_TAG],
                            )
                            .await
                            .context("confirming the odd and doomed bookings")?;
                        stamp(
                            t0,
                            &format!("confirmed {} bookings with NULL start times or of doomed services", rows.len()),
                        );
                    }
                    Action::DeleteService => {
                        let gone = delete_doomed_service(db).await?;
                        counters.services_deleted += 1;
                        stamp(t0, &format!("deleted a service and its {gone} confirmed bookings"));
                    }
                    Action::Reconnect(n) => {
                        let email = reconnect_provider(db, google, key, n).await?;
                        counters.reconnected += 1;
                        stamp(t0, &format!("provider {n} reconnected Google as {email}"));
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
        if !timeline.listen_done {
            stamp(t0, "WARNING no LISTEN connection was found to terminate");
        }
        // Whatever a short --chaos-secs left unconfirmed.
        let rest = confirm_pending(db, i64::MAX).await?;
        history.note(&rest, "confirmed");
        counters.confirmed += rest.len() as u64;
        for note in daemons.revive()? {
            counters.unexpected_exits.push(note);
            counters.daemon_restarts += 1;
        }
        stamp(t0, "chaos stopped");
        Ok(())
    }
}

/// A line of the run's log, stamped with the seconds since the chaos began and the UTC time of day
/// (to compare with the database's timestamps).
fn stamp(t0: Instant, what: &str) {
    println!("[{:6.1}s {}] {what}", t0.elapsed().as_secs_f64(), Utc::now().format("%H:%M:%S%.3f"));
}

/// What the soak itself did to each booking, and when, for the evidence.
pub struct History {
    t0: Instant,
    entries: HashMap<Uuid, Vec<String>>,
}

impl History {
    pub fn new() -> History {
        History { t0: Instant::now(), entries: HashMap::new() }
    }

    fn note(&mut self, ids: &[Uuid], what: &str) {
        let at = format!("{:.1} s ({}) {what}", self.t0.elapsed().as_secs_f64(), Utc::now().format("%H:%M:%S%.3f"));
        for id in ids {
            self.entries.entry(*id).or_default().push(at.clone());
        }
    }

    pub fn of(&self, id: Uuid) -> &[String] {
        self.entries.get(&id).map_or(&[], Vec::as_slice)
    }
}

async fn confirm_pending(db: &mut Db, limit: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "UPDATE bookings SET status = 'confirmed', updated_at = now()
              WHERE id IN (SELECT id FROM bookings WHERE notes = $1 AND status = 'pending'
                            ORDER BY start_time LIMIT $2)
             RETURNING id",
            &[&TAG, &limit],
        )
        .await
        .context("confirming bookings")?;
    Ok(ids(&rows))
}

async fn terminate_listeners(db: &mut Db) -> Result<u64> {
    let rows = db
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'", &[])
        .await
        .context("terminating the LISTEN connections")?;
    Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
}

struct Edits {
    rescheduled: Vec<Uuid>,
    cancelled: Vec<Uuid>,
    reconfirmed: Vec<Uuid>,
}

/// The first column of each row, a booking id.
fn ids(rows: &[Row]) -> Vec<Uuid> {
    rows.iter().map(|r| r.get(0)).collect()
}

/// Moves `n` random confirmed bookings by an hour (either way), cancels `n` others and, when
/// `reconfirm`, confirms one cancelled booking again.
async fn mutate(db: &mut Db, n: i64, reconfirm: bool) -> Result<Edits> {
    let rescheduled = db
        .query(
            "WITH shift AS (SELECT id, make_interval(hours => CASE WHEN random() < 0.5 THEN -1 ELSE 1 END) AS by
                              FROM bookings WHERE notes = $1 AND status = 'confirmed' ORDER BY random() LIMIT $2)
             UPDATE bookings b
                SET start_time = b.start_time + shift.by, end_time = b.end_time + shift.by, updated_at = now()
               FROM shift WHERE b.id = shift.id
             RETURNING b.id",
            &[&TAG, &n],
        )
        .await
        .context("rescheduling bookings")?;
    let rescheduled = ids(&rescheduled);
    let cancelled = set_random_status(db, "confirmed", "cancelled", n).await?;
    let reconfirmed = if reconfirm { set_random_status(db, "cancelled", "confirmed", 1).await? } else { Vec::new() };
    Ok(Edits { rescheduled, cancelled, reconfirmed })
}

async fn set_random_status(db: &mut Db, from: &str, to: &str, n: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "UPDATE bookings SET status = $3, updated_at = now()
              WHERE id IN (SELECT id FROM bookings WHERE notes = $1 AND status = $2 ORDER BY random() LIMIT $4)
             RETURNING id",
            &[&TAG, &from, &to, &n],
        )
        .await
        .with_context(|| format!("setting bookings {from} -> {to}"))?;
    Ok(ids(&rows))
}

async fn ready_count(db: &mut Db) -> Result<i64> {
    db.count("SELECT count(*) FROM bookings WHERE notes = $1 AND meeting_status = 'ready'", &[&TAG]).await
}

/// Waits until no job is pending or leased (the daemons kept running and revived); `false` on time-out.
pub async fn settle(db: &mut Db, daemons: &mut Daemons<'_>, counters: &mut Counters) -> Result<bool> {
    let started = Instant::now();
    let mut next_report = Duration::ZERO;
    loop {
        for note in daemons.revive()? {
            println!("settling: WARNING {note}; restarted");
            counters.unexpected_exits.push(note);
            counters.daemon_restarts += 1;
        }
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE lease_until > now()),
                        count(*) FILTER (WHERE state = 'failed'),
                        (SELECT count(*) FROM bookings WHERE notes = $1 AND meeting_status = 'ready')
                   FROM meetingd.jobs",
                &[&TAG],
            )
            .await
            .context("reading the job queue")?;
        let (pending, leased, failed, ready): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let waited = started.elapsed();
        if pending == 0 && leased == 0 {
            println!(
                "settled after {:.1} s: no job pending or leased ({failed} failed, {ready} bookings show a link)",
                waited.as_secs_f64()
            );
            return Ok(true);
        }
        if waited >= next_report {
            println!(
                "settling: {pending} jobs pending, {leased} leased, {failed} failed; {ready} bookings show a link ({:.0} s)",
                waited.as_secs_f64()
            );
            next_report += SETTLE_REPORT_EVERY;
        }
        if waited > SETTLE_TIMEOUT {
            println!(
                "settling: gave up after {} s with {pending} jobs pending and {leased} leased",
                SETTLE_TIMEOUT.as_secs()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn daemon_trouble(counters: &Counters, exits: &[ExitStatus]) -> Vec<String> {
    let mut trouble = counters.unexpected_exits.clone();
    for (slot, status) in exits.iter().enumerate() {
        if !status.success() {
            trouble.push(format!("daemon {} exited with {status} after SIGTERM", slot + 1));
        }
    }
    trouble
}
