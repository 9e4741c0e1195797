//! The dispatcher: claims due jobs with bounded concurrency and runs each in a task of its own.
//!
//! Owns when to claim ([`Wakeups`]: at start, on a NOTIFY, when a job it ran is due again, while
//! a claim had no room for everything, when a job a claim held back for its rate-limit turn is
//! due, on the sweep beat) and the drain at shutdown. It must not
//! run a job itself (`execute.rs`) or poll the database on a timer beyond the sweep beat.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Processed, Worker};
use crate::db::jobs;
use crate::job::{Outcome, Snapshot, WriteBack};

/// What makes the dispatcher claim, and when it next looks.
struct Wakeups {
    /// Something may be due now.
    claim_now: bool,
    /// The next claim that finds nothing asks the database when the next job falls due (once a
    /// sweep beat).
    ask_next_due: bool,
    /// The fixed sweep beat, whatever else wakes the loop: finishing jobs must not keep putting it off.
    next_sweep: Instant,
    /// The soonest time a job this dispatcher knows of falls due.
    due_at: Option<Instant>,
    /// How long to wait before claiming again after the database refused a claim.
    db_backoff: Duration,
    /// `worker.sweep_interval_ms`.
    sweep_every: Duration,
}

const FIRST_DB_BACKOFF: Duration = Duration::from_millis(100);

impl Wakeups {
    fn new(sweep_every: Duration) -> Wakeups {
        Wakeups {
            claim_now: true,
            ask_next_due: true,
            next_sweep: Instant::now() + sweep_every,
            due_at: None,
            db_backoff: FIRST_DB_BACKOFF,
            sweep_every,
        }
    }

    /// The sweep beat, or a job known to fall due, has come at `now`.
    fn tick(&mut self, now: Instant) {
        if now >= self.next_sweep {
            (self.claim_now, self.ask_next_due) = (true, true);
            self.next_sweep = now + self.sweep_every;
        }
        if self.due_at.is_some_and(|t| t <= now) {
            (self.claim_now, self.due_at) = (true, None);
        }
    }

    /// What a finished job task means: claim now (its job is due again at once), or wake when it
    /// falls due.
    fn task_ended(&mut self, done: Result<Option<Duration>, JoinError>) {
        let again = match done {
            Ok(again) => again,
            Err(e) => {
                log_task_end(Err(e));
                None
            }
        };
        match again {
            Some(Duration::ZERO) => self.claim_now = true,
            Some(after) => self.wake_at(Instant::now() + after),
            None => {}
        }
    }

    /// A claim succeeded; a full one may have left due jobs behind, so claim again when there is room.
    fn claimed(&mut self, full: bool) {
        self.db_backoff = FIRST_DB_BACKOFF;
        self.claim_now = full;
    }

    /// A claim failed: try again after the back-off (doubling, up to a sweep interval), which it returns.
    fn claim_failed(&mut self) -> Duration {
        let retry_in = self.db_backoff;
        self.wake_at(Instant::now() + retry_in);
        self.db_backoff = (retry_in * 2).min(self.sweep_every);
        retry_in
    }

    /// Whether to ask the database for the next due time now (at most once a sweep beat).
    fn take_ask_next_due(&mut self) -> bool {
        std::mem::take(&mut self.ask_next_due)
    }

    /// Moves `due_at` forward to `at` if that is sooner.
    fn wake_at(&mut self, at: Instant) {
        self.due_at = Some(self.due_at.map_or(at, |t| t.min(at)));
    }

    /// How long to sleep: until the sweep beat (as of `now`, before the claim), or until a job
    /// falls due if sooner.
    fn wait(&self, now: Instant) -> Duration {
        let wait = self.next_sweep.saturating_duration_since(now);
        match self.due_at {
            Some(t) => wait.min(t.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }
}

impl Worker {
    /// The dispatcher: runs until `shutdown`, then lets in-flight jobs finish for at most
    /// `worker.shutdown_grace_ms` and abandons the rest to lease expiry.
    ///
    /// It claims when there may be something to claim: at start, on a NOTIFY (and after every
    /// LISTEN reconnect), when a job it ran is due again (a stale result, a retry, a deferral:
    /// it knows when), while a claim found more than it had room for, and on the sweep beat
    /// (`worker.sweep_interval_ms`, fixed, however often jobs finish). Only a claim on the beat
    /// that finds nothing asks the database when the next job falls due (a retry another daemon
    /// scheduled, a dead daemon's lease running out), so a quiet daemon costs the database
    /// nothing between confirmations, and a job that an app transaction keeps locked is tried
    /// once a beat rather than in a tight loop.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let concurrency = self.config.concurrency;
        // Under load, claim in batches rather than one job per finished job.
        let batch = (concurrency / 4).max(1);
        let mut inflight: JoinSet<Option<Duration>> = JoinSet::new();
        let mut wakeups = Wakeups::new(self.config.idle_wait());
        loop {
            if let Some(l) = &self.liveness {
                l.worker_beat();
            }
            while let Some(done) = inflight.try_join_next() {
                wakeups.task_ended(done);
            }
            let now = Instant::now();
            wakeups.tick(now);
            let free = concurrency - inflight.len();
            if wakeups.claim_now && !shutdown.is_cancelled() && (free >= batch || inflight.is_empty()) && free > 0 {
                match self.claim(free).await {
                    Ok(jobs::Claimed { snapshots, held_back, next_turn, .. }) => {
                        // Jobs held back for their rate-limit turn moved out of the way: the due
                        // jobs behind them (other providers') are claimed at once.
                        let (claimed, full) = (snapshots.len(), snapshots.len() + held_back >= free);
                        if let Some(turn) = next_turn {
                            wakeups.wake_at(Instant::now() + turn.max(Duration::from_millis(5)));
                        }
                        for s in snapshots {
                            let me = self.clone();
                            inflight.spawn(async move { me.run_claimed(s).await });
                        }
                        wakeups.claimed(full);
                        if full {
                            continue;
                        }
                        if claimed == 0
                            && wakeups.take_ask_next_due()
                            && let Ok(client) = self.pool.get().await
                            && let Ok(Some(due)) = jobs::next_due_in(client.sql()).await
                        {
                            wakeups.wake_at(Instant::now() + due.max(Duration::from_millis(5)));
                        }
                    }
                    Err(e) => {
                        let retry_in = wakeups.claim_failed();
                        tracing::warn!(error = %e, retry_in_ms = retry_in.as_millis() as u64, "cannot claim jobs");
                    }
                }
            }
            let wait = wakeups.wait(now);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => wakeups.claim_now = true,
                Some(done) = inflight.join_next(), if !inflight.is_empty() => wakeups.task_ended(done),
                () = tokio::time::sleep(wait) => {}
            }
        }
        let in_flight = inflight.len();
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = inflight.join_next().await {
                log_task_end(done.map(|_| ()));
            }
        })
        .await;
        match drained {
            Ok(()) => tracing::info!(in_flight, "worker stopped; in-flight jobs finished"),
            Err(_) => {
                tracing::warn!(
                    in_flight,
                    abandoned = inflight.len(),
                    grace_ms = grace.as_millis() as u64,
                    "worker stopped before all in-flight jobs finished; their leases expire and another run picks them up"
                );
                inflight.abort_all();
            }
        }
    }

    /// Runs and records one claimed job for the dispatcher, and says when the job is due again,
    /// as far as this run knows (`None`: not because of this run).
    async fn run_claimed(&self, s: Snapshot) -> Option<Duration> {
        let lease = self.config.lease();
        let (processed, outcome) = self.execute_and_complete(s).await;
        match (processed, outcome) {
            (Processed::Recorded(WriteBack::Stale), _) => Some(Duration::ZERO),
            (Processed::Recorded(WriteBack::Done), Outcome::Retry { delay, .. } | Outcome::Defer { delay }) => {
                Some(delay)
            }
            // Not recorded: the job is claimed again when its lease runs out.
            (Processed::NotRecorded, _) => Some(lease),
            _ => None,
        }
    }
}

fn log_task_end(result: Result<(), JoinError>) {
    if let Err(e) = result
        && e.is_panic()
    {
        tracing::error!("a job task panicked outside reconcile; its lease expires and it runs again");
    }
}
