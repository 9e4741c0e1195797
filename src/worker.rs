//! Reconcile loop: claim due jobs, make each booking's meeting match the booking, record the result.
//!
//! A job never replays an event; it reads the booking as it is now and compares it with the
//! meeting meetingd recorded (see [`plan`]). Owns the dispatcher (claims with bounded concurrency,
//! woken by the listener, by finished work and by a timer) and the mapping from platform errors to
//! retries and failures. It must not hold a database transaction across a platform call.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{Fallback, WorkerConfig};
use crate::db::jobs::{
    self, AuditEntry, BookingLocks, Event, Finished, Intent, MeetingRecord, Outcome, Snapshot, WriteBack,
};
use crate::db::{DbError, Pool};
use crate::providers::{Choice, Meeting, MeetingRequest, Platform, ProviderError, Providers, choose_platform};
use crate::retry::jitter_unit;
use crate::settings::{self, TitleContext};

/// What a job must do, decided from the snapshot alone.
#[derive(Debug, Clone)]
pub enum Plan {
    /// No platform call: record this outcome.
    Record(Outcome),
    /// Retrying cannot help; the sentence tells the provider what to fix.
    Fail(String),
    Create {
        choice: Choice,
        req: MeetingRequest,
    },
    /// The meeting is right; make sure the booking shows it.
    Keep {
        record: MeetingRecord,
        req: MeetingRequest,
    },
    /// The booking moved: move the meeting (same link).
    Update {
        record: MeetingRecord,
        req: MeetingRequest,
    },
    Delete {
        record: MeetingRecord,
    },
    /// The service switched platforms: remove the old meeting, then create on the new platform.
    Replace {
        old: MeetingRecord,
        choice: Choice,
        req: MeetingRequest,
    },
}

/// Decides what reconciling a booking takes.
///
/// A confirmed booking of an online service (without a manual link) must have exactly one live
/// meeting at the booking's times; a completed booking keeps what it has; anything else (pending,
/// cancelled, rejected, deleted, no longer online, manual link) must have none.
pub fn plan(s: &Snapshot, available: impl Fn(Platform) -> bool, fallback: Fallback) -> Plan {
    let live = s.meeting.as_ref().filter(|m| m.live).cloned();
    let Some(b) = &s.booking else {
        return remove(live);
    };
    if let Some(problem) = &b.unreadable {
        return Plan::Fail(format!("meetingd cannot read this booking: {problem}."));
    }
    if b.status == "completed" {
        return Plan::Record(Outcome::Unchanged);
    }
    let wanted = b.is_online && b.status == "confirmed" && !is_manual(b, s.meeting.as_ref());
    if !wanted {
        return remove(live);
    }
    let (Some(start), Some(end)) = (b.start, b.end) else {
        return Plan::Fail("The booking has no start or end time; set both to get a meeting link.".to_string());
    };
    if end <= start {
        return Plan::Fail(format!(
            "The booking ends ({}) before it starts ({}); correct its times to get a meeting link.",
            end.to_rfc3339(),
            start.to_rfc3339()
        ));
    }
    let Some(provider) = b.provider_id else {
        return Plan::Fail("The booking's service has no provider; set one to get a meeting link.".to_string());
    };
    let settings = match settings::parse(&b.meeting_settings) {
        Ok(settings) => settings,
        Err(reason) => return Plan::Fail(reason),
    };
    let title = settings.title(&TitleContext {
        service: b.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).unwrap_or(settings::UNTITLED_SERVICE),
        customer: b.customer_name.as_deref().unwrap_or("customer"),
        provider: b.provider_name.as_deref().unwrap_or("provider"),
    });
    let description = settings.description.clone().or_else(|| b.description.clone());
    // A create recorded but never answered may exist on its platform under its generation: a new
    // create there reuses that identity (the platform adopts it); anywhere else, it gets a new one.
    let generation_on = |choice: &Choice| match &s.claim.intent {
        Some(i)
            if i.platform == choice.platform.as_str()
                && i.owner.is_none_or(|o| o == provider)
                && same_account(i, b.integration.as_ref())
                && i.generation > s.meeting.as_ref().map_or(0, |m| m.generation) =>
        {
            i.generation
        }
        _ => next_generation(s),
    };
    let request = |generation| MeetingRequest {
        booking_id: b.booking_id,
        generation,
        provider_user_id: provider,
        title: title.clone(),
        description: description.clone(),
        customer_email: b.customer_email.clone(),
        start,
        end,
        settings: b.meeting_settings.clone(),
    };
    let choose = || choose_platform(b.meeting_platform.as_deref(), b.connected, &available, fallback);
    match live {
        Some(record) => {
            // The service moved to another provider: the meeting belongs in the new provider's
            // account, and the old one's must go.
            if record.owner.is_some_and(|o| o != provider)
                && let Ok(choice) = choose()
            {
                let generation = next_generation(s);
                return Plan::Replace { old: record, choice, req: request(generation) };
            }
            if record.requested_platform != b.meeting_platform {
                // The service now asks for another platform. Replace the meeting only when that
                // platform can really be used; otherwise keep the working link.
                if let Ok(choice) = choose()
                    && choice.platform.as_str() != record.platform
                {
                    let generation = generation_on(&choice);
                    return Plan::Replace { old: record, choice, req: request(generation) };
                }
            }
            let req = request(record.generation);
            if record.start == start && record.end == end {
                Plan::Keep { record, req }
            } else {
                Plan::Update { record, req }
            }
        }
        None => match choose() {
            Ok(choice) => {
                let generation = generation_on(&choice);
                Plan::Create { choice, req: request(generation) }
            }
            Err(reason) => Plan::Fail(reason),
        },
    }
}

/// The booking's link is the provider's own: set as manual through meetingd, or written by the
/// app itself (any link that is not one meetingd recorded for the booking). meetingd never
/// replaces it.
fn is_manual(b: &crate::db::jobs::BookingView, recorded: Option<&MeetingRecord>) -> bool {
    if b.meeting_status.as_deref() == Some("manual") {
        return true;
    }
    match b.meeting_link.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => false,
        Some(link) => recorded.is_none_or(|m| m.meeting.join_url != link),
    }
}

/// Whether a create recorded in `intent` was made in the account a new create would use now.
fn same_account(intent: &Intent, now: Option<&crate::providers::Account>) -> bool {
    match (&intent.account, now) {
        (Some(then), Some(now)) => {
            then.integration_id == now.integration_id
                && (then.identity.is_none() || now.identity.is_none() || then.identity == now.identity)
        }
        _ => true,
    }
}

/// A generation no meeting of the booking has used: past the recorded meeting and any recorded intent.
fn next_generation(s: &Snapshot) -> i32 {
    let recorded = s.meeting.as_ref().map_or(0, |m| m.generation);
    recorded.max(s.claim.intended_generation) + 1
}

impl Plan {
    /// Whether carrying out the plan creates the meeting `intent` stands for (same platform and
    /// generation), so that meeting is adopted rather than deleted first.
    fn reuses(&self, intent: &Intent) -> bool {
        match self {
            Plan::Create { choice, req } | Plan::Replace { choice, req, .. } => {
                choice.platform.as_str() == intent.platform && req.generation == intent.generation
            }
            _ => false,
        }
    }
}

fn remove(live: Option<MeetingRecord>) -> Plan {
    match live {
        Some(record) => Plan::Delete { record },
        None => Plan::Record(Outcome::Unlinked { deleted: false }),
    }
}

/// Everything a worker needs; cheap to share between tasks.
pub struct Worker {
    pool: Pool,
    providers: Providers,
    config: WorkerConfig,
    fallback: Fallback,
    instance: Uuid,
    actor: String,
    wake: Arc<Notify>,
    stats: Stats,
    liveness: Option<Arc<crate::systemd::Liveness>>,
    limiter: Option<crate::ratelimit::RateLimiter>,
    /// Finished jobs on their way to the batch writer (started on first use, and again if it
    /// ever stops).
    writer: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ToWrite>>>,
    /// Jobs being reconciled or recorded right now.
    active: AtomicUsize,
}

/// A finished job for the batch writer, and where to say how it went: `None` means "not in the
/// batch; record it on its own".
struct ToWrite {
    finished: Finished,
    reply: tokio::sync::oneshot::Sender<(Option<Processed>, Finished)>,
}

/// The most write-backs one transaction takes.
const MAX_WRITE_BATCH: usize = 64;

/// Counters since start, for the status line.
#[derive(Default)]
struct Stats {
    linked: AtomicU64,
    failed: AtomicU64,
}

/// Result of recording one job, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Recorded(WriteBack),
    /// The write-back failed (database trouble); the lease will expire and the job run again.
    NotRecorded,
}

impl Worker {
    pub fn new(
        pool: Pool,
        providers: Providers,
        config: WorkerConfig,
        fallback: Fallback,
        wake: Arc<Notify>,
        instance: Uuid,
    ) -> Worker {
        Worker {
            pool,
            providers,
            config,
            fallback,
            actor: actor(instance),
            instance,
            wake,
            stats: Stats::default(),
            liveness: None,
            limiter: None,
            writer: std::sync::Mutex::new(None),
            active: AtomicUsize::new(0),
        }
    }

    /// Applies per-platform and per-account rate limits to platform calls.
    pub fn with_limits(mut self, limits: crate::config::LimitsConfig) -> Worker {
        self.limiter = Some(crate::ratelimit::RateLimiter::new(limits));
        self
    }

    /// `Some(outcome)` when a rate limit holds this call back.
    fn held_back(&self, platform: Platform, s: &Snapshot) -> Option<Outcome> {
        let account = s.booking.as_ref()?.provider_id?;
        let wait = self.limiter.as_ref()?.try_acquire(platform, account, std::time::Instant::now()).err()?;
        tracing::debug!(platform = %platform, wait_ms = wait.as_millis() as u64, "rate limit: deferring the platform call");
        Some(Outcome::Defer { delay: wait + Duration::from_millis(5) })
    }

    /// The loop beats here (for the systemd watchdog).
    pub fn with_liveness(mut self, liveness: Arc<crate::systemd::Liveness>) -> Worker {
        self.liveness = Some(liveness);
        self
    }

    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Claims what is due now (up to `worker.concurrency`), reconciles it all, and returns how many
    /// jobs it processed. Tests drive the worker with this instead of sleeping.
    pub async fn run_once(&self) -> Result<usize, DbError> {
        let snapshots = self.claim(self.config.concurrency).await?;
        let n = snapshots.len();
        futures_util::future::join_all(snapshots.into_iter().map(|s| self.process(s))).await;
        Ok(n)
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Snapshot>, DbError> {
        let client = self.pool.get().await?;
        let snapshots = match jobs::claim(&client, self.instance, limit, self.config.lease()).await {
            Ok(snapshots) => snapshots,
            Err(e) => {
                crate::db::discard_if_read_only(&self.pool, client, &e);
                return Err(e);
            }
        };
        metrics::counter!(crate::metrics::JOBS_CLAIMED).increment(snapshots.len() as u64);
        Ok(snapshots)
    }

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
        let mut db_backoff = Duration::from_millis(100);
        let mut claim_now = true;
        let mut ask_next_due = true;
        // A fixed beat, whatever else wakes the loop: finishing jobs must not keep putting it off.
        let mut next_sweep = tokio::time::Instant::now() + self.config.idle_wait();
        // The soonest time a job this dispatcher knows of falls due.
        let mut due_at: Option<tokio::time::Instant> = None;
        loop {
            if let Some(l) = &self.liveness {
                l.worker_beat();
            }
            while let Some(done) = inflight.try_join_next() {
                note_task_end(done, &mut claim_now, &mut due_at);
            }
            let now = tokio::time::Instant::now();
            if now >= next_sweep {
                (claim_now, ask_next_due) = (true, true);
                next_sweep = now + self.config.idle_wait();
            }
            if due_at.is_some_and(|t| t <= now) {
                (claim_now, due_at) = (true, None);
            }
            let free = concurrency - inflight.len();
            let mut wait = next_sweep.saturating_duration_since(now);
            if claim_now && !shutdown.is_cancelled() && (free >= batch || inflight.is_empty()) && free > 0 {
                match self.claim(free).await {
                    Ok(snapshots) => {
                        db_backoff = Duration::from_millis(100);
                        let (claimed, full) = (snapshots.len(), snapshots.len() == free);
                        for s in snapshots {
                            let me = self.clone();
                            inflight.spawn(async move { me.run_job(s).await });
                        }
                        // A full claim may have left due jobs behind: claim again when there is room.
                        claim_now = full;
                        if full {
                            continue;
                        }
                        if claimed == 0
                            && std::mem::take(&mut ask_next_due)
                            && let Ok(client) = self.pool.get().await
                            && let Ok(Some(due)) = jobs::next_due_in(client.sql()).await
                        {
                            wake_at(&mut due_at, tokio::time::Instant::now() + due.max(Duration::from_millis(5)));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = db_backoff.as_millis() as u64, "cannot claim jobs");
                        wake_at(&mut due_at, tokio::time::Instant::now() + db_backoff);
                        db_backoff = (db_backoff * 2).min(self.config.idle_wait());
                    }
                }
            }
            if let Some(t) = due_at {
                wait = wait.min(t.saturating_duration_since(tokio::time::Instant::now()));
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => claim_now = true,
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    note_task_end(done, &mut claim_now, &mut due_at);
                }
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

    /// Reconciles one claimed job and records the outcome. Never panics the daemon: a panic is
    /// recorded as that job's (retryable) error.
    pub async fn process(&self, s: Snapshot) -> Processed {
        self.process_counted(s).await.0
    }

    /// [`Worker::process`] for the dispatcher: also says when the job is due again, as far as
    /// this run knows (`None`: not because of this run).
    async fn run_job(&self, s: Snapshot) -> Option<Duration> {
        let lease = self.config.lease();
        let (processed, outcome) = self.process_counted(s).await;
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

    /// Reconciles and records one job, counted as active meanwhile; the outcome it recorded.
    async fn process_counted(&self, s: Snapshot) -> (Processed, Outcome) {
        self.active.fetch_add(1, Ordering::Relaxed);
        let _active = ActiveJob(&self.active);
        let span = tracing::info_span!("job", booking_id = %s.claim.booking_id, attempt = s.claim.attempt);
        async {
            if s.claim.write_failures >= self.config.max_attempts as i32 {
                return self.give_up(s).await;
            }
            let mut intents = Intents { current: s.claim.intent.clone(), discarded: None, held: false, removed: false };
            let reconciled = AssertUnwindSafe(self.reconcile(&s, &mut intents)).catch_unwind().await;
            let (outcome, audit, event) = match reconciled {
                Ok(result) => result,
                Err(panic) => {
                    let what = crate::supervise::panic_message(panic);
                    tracing::error!(panic = %what, "internal error while reconciling; recorded on the job");
                    let error = format!("internal error in meetingd: {what}");
                    (self.after_error(&s, ProviderError::Transient(error.clone()), "reconcile", None), Vec::new(), None)
                }
            };
            let resolved = intents.resolved(&outcome);
            let requested_at = s.claim.requested_at;
            let summary = outcome.clone();
            let removed = intents.removed;
            let processed = self.record(Finished { snapshot: s, outcome, audit, event, resolved, removed }).await;
            self.count(requested_at, &summary, processed);
            (processed, summary)
        }
        .instrument(span)
        .await
    }

    /// Records a finished job and warns when its lease was lost meanwhile.
    async fn record(&self, finished: Finished) -> Processed {
        let processed = self.write(finished).await;
        if processed == Processed::Recorded(WriteBack::LeaseLost) {
            tracing::warn!("lease on the job expired before its outcome was recorded; another claim owns it now");
        }
        processed
    }

    /// Through the batch writer, which groups the write-backs of jobs that finish together into
    /// one transaction; on its own when there is nothing to group with or the batch could not take it.
    async fn write(&self, finished: Finished) -> Processed {
        if self.active.load(Ordering::Relaxed) <= 1 {
            // Nothing to group it with: its own write-back takes fewer round trips.
            return self.record_alone(&finished).await;
        }
        let writer = self.batch_writer();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let finished = match writer.send(ToWrite { finished, reply }) {
            Err(unsent) => unsent.0.finished,
            Ok(()) => match answer.await {
                Ok((Some(processed), _)) => return processed,
                Ok((None, finished)) => finished,
                // The writer is gone (runtime shutting down): the lease expires and the job runs again.
                Err(_) => return Processed::NotRecorded,
            },
        };
        self.record_alone(&finished).await
    }

    /// The batch writer's queue; a writer that stopped (a panic) is logged and started again.
    fn batch_writer(&self) -> tokio::sync::mpsc::UnboundedSender<ToWrite> {
        let mut writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match writer.as_ref() {
            Some(tx) if !tx.is_closed() => tx.clone(),
            stopped => {
                if stopped.is_some() {
                    tracing::error!("the batch writer stopped; restarting it");
                    metrics::counter!(crate::metrics::LOOP_RESTARTS, "loop" => "batch_writer").increment(1);
                }
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(write_batches(self.pool.clone(), self.actor.clone(), rx));
                *writer = Some(tx.clone());
                tx
            }
        }
    }

    async fn record_alone(&self, f: &Finished) -> Processed {
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the job's outcome; it runs again when its lease expires");
                return Processed::NotRecorded;
            }
        };
        match jobs::write_back(&client, &self.actor, std::slice::from_ref(f), BookingLocks::Wait).await {
            Ok(results) => results.first().copied().flatten().map_or(Processed::NotRecorded, Processed::Recorded),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the job's outcome; it runs again when its lease expires");
                crate::db::discard_if_read_only(&self.pool, client, &e);
                self.note_write_failure(&f.snapshot, &e).await;
                Processed::NotRecorded
            }
        }
    }

    /// A write-back the database refused for a reason of its own (an app trigger or CHECK on
    /// `bookings`, a lock held past `lock_timeout`), not because it could not be reached: it
    /// counts against `worker.max_attempts` (see [`Worker::give_up`]), and the job is tried again
    /// after the retry back-off.
    async fn note_write_failure(&self, s: &Snapshot, error: &DbError) {
        if error.is_unavailable() {
            return;
        }
        let policy = self.config.retry_policy();
        let tries = (s.claim.write_failures + 1).max(1) as u32;
        let delay = policy.next_delay(tries, None, jitter_unit()).unwrap_or(policy.max);
        let sentence = format!("the booking refused meetingd's update: {error}");
        let noted = async {
            let client = self.pool.get().await?;
            jobs::note_write_failure(client.sql(), &s.claim, &sentence, delay).await
        }
        .await;
        if let Err(e) = noted {
            tracing::debug!(error = %e, "could not note the failed write-back on the job");
        }
    }

    /// Fails a job whose write-backs the database refused `worker.max_attempts` times, without
    /// calling the platform again; the provider is told.
    async fn give_up(&self, s: Snapshot) -> (Processed, Outcome) {
        let error = format!(
            "meetingd could not record the meeting on the booking after {} attempts: something in the database refuses the update of its meeting columns (a trigger, a CHECK constraint, a lock held for minutes). Fix it, then run `meetingd bookings retry {}`.",
            s.claim.write_failures, s.claim.booking_id
        );
        tracing::error!(
            write_failures = s.claim.write_failures,
            "giving up on a booking whose write-back keeps being refused"
        );
        let user = s.booking.as_ref().and_then(|b| b.provider_id);
        let given_up = async {
            let client = self.pool.get().await?;
            jobs::give_up(client.sql(), &self.actor, &s.claim, user, &error).await
        }
        .await;
        let processed = match given_up {
            Ok(true) => Processed::Recorded(WriteBack::Done),
            Ok(false) => Processed::Recorded(WriteBack::LeaseLost),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the job's failure; it runs again when its lease expires");
                Processed::NotRecorded
            }
        };
        let outcome = Outcome::Failed { error };
        self.count(s.claim.requested_at, &outcome, processed);
        (processed, outcome)
    }

    /// Metrics and the status-line counters for one finished job.
    fn count(&self, requested_at: chrono::DateTime<chrono::Utc>, outcome: &Outcome, processed: Processed) {
        let (platform, label) = match (outcome, processed) {
            (_, Processed::NotRecorded) => ("none".to_string(), "not_recorded"),
            (_, Processed::Recorded(WriteBack::LeaseLost)) => ("none".to_string(), "lease_lost"),
            (_, Processed::Recorded(WriteBack::Stale)) => ("none".to_string(), "stale"),
            (Outcome::Linked { platform, .. }, _) => (platform.clone(), "linked"),
            (Outcome::Unlinked { .. }, _) => ("none".to_string(), "unlinked"),
            (Outcome::Unchanged, _) => ("none".to_string(), "unchanged"),
            (Outcome::Retry { .. }, _) => ("none".to_string(), "retry"),
            (Outcome::Failed { .. }, _) => ("none".to_string(), "failed"),
            (Outcome::Defer { .. }, _) => ("none".to_string(), "deferred"),
        };
        metrics::counter!(crate::metrics::JOBS_COMPLETED, "platform" => platform, "outcome" => label).increment(1);
        match label {
            "linked" => {
                self.stats.linked.fetch_add(1, Ordering::Relaxed);
                let waited = (chrono::Utc::now() - requested_at).to_std().unwrap_or_default();
                metrics::histogram!(crate::metrics::CONFIRM_TO_LINK).record(waited.as_secs_f64());
            }
            "failed" => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// One line for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        format!(
            "ready: {} meetings linked, {} failed since start",
            self.stats.linked.load(Ordering::Relaxed),
            self.stats.failed.load(Ordering::Relaxed)
        )
    }

    async fn reconcile(&self, s: &Snapshot, intents: &mut Intents) -> (Outcome, Vec<AuditEntry>, Option<Event>) {
        let available = |p: Platform| self.providers.get(p).is_some();
        let mut audit = Vec::new();
        let plan = match plan(s, available, self.fallback) {
            // A platform that keeps meetings is asked, not trusted: the record can outlive the
            // meeting (a delete whose answer was lost, then the booking wanted it again), and an
            // update of a meeting that is gone makes a new one.
            Plan::Keep { record, req }
                if self.provider_for(&record.platform).is_ok_and(|(_, p)| p.keeps_meetings()) =>
            {
                Plan::Update { record, req }
            }
            other => other,
        };
        // A meeting an earlier create may have made, which this plan does not adopt: delete it first.
        if let Some(stray) = s.claim.intent.as_ref().filter(|i| !plan.reuses(i)) {
            if let Err(outcome) = self.discard(s, stray, &mut audit, intents).await {
                let event = failed(&outcome, &stray.platform);
                return (outcome, audit, event);
            }
            intents.current = None;
            intents.discarded = Some(stray.clone());
        }
        match plan {
            Plan::Record(Outcome::Unlinked { deleted: false }) if intents.discarded.is_some() => {
                (Outcome::Unlinked { deleted: true }, audit, None)
            }
            Plan::Record(outcome) => (outcome, audit, None),
            Plan::Fail(reason) => {
                tracing::warn!(outcome = "failed", reason = %reason, "booking cannot get a meeting");
                audit.push(entry("meeting.create", None, "failed", None, Some(reason.clone())));
                let event = Event { kind: "meeting_failed", platform: None, message: reason.clone() };
                (Outcome::Failed { error: reason }, audit, Some(event))
            }
            Plan::Keep { record, req } => {
                (linked(&record.platform, &record.requested_platform, record.meeting, &req), audit, None)
            }
            Plan::Create { choice, req } => {
                let (outcome, event) = self.create(s, choice, &req, &mut audit, intents).await;
                (outcome, audit, event)
            }
            Plan::Update { record, req } => {
                let outcome = match self.provider_for(&record.platform) {
                    Err(reason) => Outcome::Failed { error: reason },
                    Ok((platform, provider)) => {
                        if let Some(deferred) = self.held_back(platform, s) {
                            return (deferred, audit, None);
                        }
                        if let Err(outcome) = self.hold_claim(s, provider.as_ref(), platform, "update", intents).await {
                            let event = failed(&outcome, platform.as_str());
                            return (outcome, audit, event);
                        }
                        let started = Instant::now();
                        let result = provider.update(&record.meeting, &req).await;
                        self.note(&mut audit, "meeting.update", platform, started, &result, s);
                        match result {
                            Ok(meeting) => linked(platform.as_str(), &record.requested_platform, meeting, &req),
                            // Deleted at the platform by someone else, or out of reach in an
                            // account that is gone (reported as orphaned): make a new one.
                            Err(e @ (ProviderError::NotFound | ProviderError::AccountGone(_))) => {
                                if let ProviderError::AccountGone(reason) = &e
                                    && let Err(outcome) = self
                                        .orphan(s, &record.platform, &record.meeting, record.owner, reason, &mut audit)
                                        .await
                                {
                                    return (outcome, audit, None);
                                }
                                intents.removed = true;
                                let again = MeetingRequest { generation: next_generation(s), ..req };
                                let choice = Choice { platform, fallback: false };
                                let (outcome, event) = self.create(s, choice, &again, &mut audit, intents).await;
                                return (outcome, audit, event);
                            }
                            Err(e) => self.after_error(s, e.retried_on_existing(), "update", Some(platform)),
                        }
                    }
                };
                let event = failed(&outcome, &record.platform);
                (outcome, audit, event)
            }
            Plan::Delete { record } => {
                let outcome =
                    self.delete(s, &record.platform, &record.meeting, record.owner, &mut audit, intents).await;
                (outcome, audit, None)
            }
            Plan::Replace { old, choice, req } => {
                match self.delete(s, &old.platform, &old.meeting, old.owner, &mut audit, intents).await {
                    Outcome::Unlinked { .. } => {
                        intents.removed = true;
                        let (outcome, event) = self.create(s, choice, &req, &mut audit, intents).await;
                        (outcome, audit, event)
                    }
                    other => {
                        let event = failed(&other, &old.platform);
                        (other, audit, event)
                    }
                }
            }
        }
    }

    /// Creates the meeting on `choice`; when the provider's account there cannot be used
    /// (revoked, undecryptable), on the fallback platform instead. Returns the event for the app.
    async fn create(
        &self,
        s: &Snapshot,
        mut choice: Choice,
        req: &MeetingRequest,
        audit: &mut Vec<AuditEntry>,
        intents: &mut Intents,
    ) -> (Outcome, Option<Event>) {
        let mut fell_back_because: Option<String> = None;
        loop {
            let Some(provider) = self.providers.get(choice.platform) else {
                let error = format!("{} meetings are not available on this server.", choice.platform.display_name());
                return (Outcome::Failed { error: error.clone() }, Some(failed_event(choice.platform, &error)));
            };
            if let Some(deferred) = self.held_back(choice.platform, s) {
                return (deferred, None);
            }
            let recorded =
                match self.record_intent(s, provider.as_ref(), choice.platform, req.generation, intents).await {
                    Ok(()) => self.hold_claim(s, provider.as_ref(), choice.platform, "create", intents).await,
                    Err(outcome) => Err(outcome),
                };
            if let Err(outcome) = recorded {
                let event = failed(&outcome, choice.platform.as_str());
                return (outcome, event);
            }
            let started = Instant::now();
            let result = provider.create(req).await;
            self.note(audit, "meeting.create", choice.platform, started, &result, s);
            if choice.fallback
                && let Some(last) = audit.last_mut()
            {
                let why = fell_back_because.clone().unwrap_or_else(|| {
                    format!("the service asks for {}", s.requested().as_deref().unwrap_or("no platform"))
                });
                last.detail = Some(format!(
                    "{}; fallback to {} because {why}",
                    last.detail.as_deref().unwrap_or(""),
                    choice.platform
                ));
            }
            match result {
                Ok(meeting) => {
                    let event = Event {
                        kind: "meeting_ready",
                        platform: Some(choice.platform.as_str().to_string()),
                        message: ready_message(choice, s, fell_back_because.as_deref()),
                    };
                    return (linked(choice.platform.as_str(), &s.requested(), meeting, req), Some(event));
                }
                Err(e) if e.needs_fallback() && !choice.fallback => match self.fallback {
                    Fallback::Platform(p) if self.providers.get(p).is_some() => {
                        fell_back_because = Some(format!("{}: {e}", choice.platform.display_name()));
                        choice = Choice { platform: p, fallback: true };
                    }
                    _ => {
                        let error = format!(
                            "Could not create the {} meeting: {e}. Reconnect {} under Integrations.",
                            choice.platform.display_name(),
                            choice.platform.display_name()
                        );
                        return (Outcome::Failed { error: error.clone() }, Some(failed_event(choice.platform, &error)));
                    }
                },
                Err(e) => {
                    let outcome = self.after_error(s, e, "create", Some(choice.platform));
                    let event = failed(&outcome, choice.platform.as_str());
                    return (outcome, event);
                }
            }
        }
    }

    /// Records, before the platform call, that `generation` is about to be created on `platform`
    /// (platforms whose meetings exist before their create answers; see `MeetingProvider::intent_id`).
    /// `Err(outcome)` when it could not be recorded: the call is not made.
    async fn record_intent(
        &self,
        s: &Snapshot,
        provider: &dyn crate::providers::MeetingProvider,
        platform: Platform,
        generation: i32,
        intents: &mut Intents,
    ) -> Result<(), Outcome> {
        if provider.intent_id(s.claim.booking_id, generation).is_none() {
            return Ok(());
        }
        let owner = s.booking.as_ref().and_then(|b| b.provider_id);
        let account = s.booking.as_ref().and_then(|b| b.integration.clone());
        let intent = Intent { platform: platform.as_str().to_string(), generation, owner, account };
        if intents.current.as_ref() == Some(&intent) {
            return Ok(());
        }
        let recorded = async {
            let client = self.pool.get().await?;
            jobs::record_intent(client.sql(), &s.claim, &intent).await
        }
        .await;
        let problem = match recorded {
            Ok(true) => {
                // A fenced, synchronously committed update: it holds the claim too.
                intents.current = Some(intent);
                intents.held = true;
                return Ok(());
            }
            // Another claim owns the job: its write-back is fenced out too.
            Ok(false) => "the job's lease expired before the meeting was created".to_string(),
            Err(e) => format!("could not record the create before making it: {e}"),
        };
        tracing::warn!(platform = %platform, problem = %problem, "platform call not made");
        Err(self.after_error(s, ProviderError::Transient(problem), "create", Some(platform)))
    }

    /// Makes sure, before the run's first call to a platform that keeps meetings, that the claim
    /// is durable and still this run's: a claim commits asynchronously (see [`jobs::claim`]), and
    /// a claim that a server crash lost must not act beside its successor. A fenced update of the
    /// job row, committed synchronously, does both (a create intent counts as one). Jitsi, which
    /// keeps nothing, needs none. `Err(outcome)` when the claim is gone: the call is not made.
    async fn hold_claim(
        &self,
        s: &Snapshot,
        provider: &dyn crate::providers::MeetingProvider,
        platform: Platform,
        operation: &str,
        intents: &mut Intents,
    ) -> Result<(), Outcome> {
        if intents.held || !provider.keeps_meetings() {
            return Ok(());
        }
        let held = async {
            let client = self.pool.get().await?;
            jobs::hold_claim(client.sql(), &s.claim).await
        }
        .await;
        let problem = match held {
            Ok(true) => {
                intents.held = true;
                return Ok(());
            }
            Ok(false) => format!("the job's lease ended before the meeting could be {operation}d"),
            Err(e) => format!("could not confirm the job's claim before calling the platform: {e}"),
        };
        tracing::warn!(platform = %platform, problem = %problem, "platform call not made");
        Err(self.after_error(s, ProviderError::Transient(problem), operation, Some(platform)))
    }

    /// Deletes the meeting a recorded but unanswered create may have made (a platform answers a
    /// meeting that never existed as already deleted). `Err(outcome)` when that must be retried first.
    async fn discard(
        &self,
        s: &Snapshot,
        intent: &Intent,
        audit: &mut Vec<AuditEntry>,
        intents: &mut Intents,
    ) -> Result<(), Outcome> {
        let external_id = match self.provider_for(&intent.platform) {
            Ok((_, provider)) => provider.intent_id(s.claim.booking_id, intent.generation),
            Err(reason) => {
                tracing::warn!(platform = %intent.platform, reason = %reason, "a meeting an earlier create may have made cannot be deleted");
                None
            }
        };
        let Some(external_id) = external_id else { return Ok(()) };
        // Deleted where it was made: the account recorded with the intent.
        let meeting = Meeting { external_id, join_url: String::new(), account: intent.account.clone() };
        match self.delete(s, &intent.platform, &meeting, intent.owner, audit, intents).await {
            Outcome::Unlinked { .. } => Ok(()),
            other => Err(other),
        }
    }

    /// Deletes `meeting` through the account it lives in (`owner`: the provider it was made for,
    /// when the meeting does not name its account). A meeting whose account is gone is reported
    /// as orphaned; one whose account cannot be used right now (its tokens do not decrypt) is
    /// retried: neither is ever recorded as deleted without a report.
    async fn delete(
        &self,
        s: &Snapshot,
        platform: &str,
        meeting: &Meeting,
        owner: Option<Uuid>,
        audit: &mut Vec<AuditEntry>,
        intents: &mut Intents,
    ) -> Outcome {
        let (platform, provider) = match self.provider_for(platform) {
            Ok(found) => found,
            Err(reason) => return Outcome::Failed { error: reason },
        };
        let owner = owner.or_else(|| s.booking.as_ref().and_then(|b| b.provider_id));
        if let Some(deferred) = self.held_back(platform, s) {
            return deferred;
        }
        if let Err(outcome) = self.hold_claim(s, provider.as_ref(), platform, "delete", intents).await {
            return outcome;
        }
        let started = Instant::now();
        let result = provider.delete(meeting, owner.unwrap_or(Uuid::nil())).await;
        self.note(audit, "meeting.delete", platform, started, &result, s);
        match result {
            Ok(()) => Outcome::Unlinked { deleted: true },
            Err(e @ (ProviderError::AccountGone(_) | ProviderError::Revoked)) => {
                let reason = match e {
                    ProviderError::AccountGone(reason) => reason,
                    other => format!(
                        "the {} account it was made in is no longer connected ({other})",
                        platform.display_name()
                    ),
                };
                match self.orphan(s, platform.as_str(), meeting, owner, &reason, audit).await {
                    // Out of meetingd's reach, and reported: nothing more to do for the booking.
                    Ok(()) => Outcome::Unlinked { deleted: true },
                    Err(outcome) => outcome,
                }
            }
            Err(e) => self.after_error(s, e.retried_on_existing(), "delete", Some(platform)),
        }
    }

    /// Reports `meeting` as orphaned (it exists at the platform, out of meetingd's reach):
    /// a row in `meetingd.orphaned_meetings`, a `meeting_orphaned` event, an audit line.
    /// `Err(outcome)` when the report could not be recorded: the job retries.
    async fn orphan(
        &self,
        s: &Snapshot,
        platform: &str,
        meeting: &Meeting,
        owner: Option<Uuid>,
        reason: &str,
        audit: &mut Vec<AuditEntry>,
    ) -> Result<(), Outcome> {
        if meeting.external_id.is_empty() {
            return Ok(());
        }
        let recorded = async {
            let client = self.pool.get().await?;
            jobs::record_orphan(client.sql(), s.claim.booking_id, platform, meeting, owner, reason).await
        }
        .await;
        match recorded {
            Ok(()) => {
                tracing::warn!(platform, meeting_id = %meeting.external_id, reason, "meeting out of reach: reported as orphaned");
                audit.push(entry(
                    "meeting.orphaned",
                    Some(platform.to_string()),
                    "failed",
                    None,
                    Some(reason.to_string()),
                ));
                Ok(())
            }
            Err(e) => {
                let error = format!("could not report the unreachable meeting {}: {e}", meeting.external_id);
                Err(self.after_error(s, ProviderError::Transient(error), "delete", platform.parse().ok()))
            }
        }
    }

    fn provider_for(&self, name: &str) -> Result<(Platform, &Arc<dyn crate::providers::MeetingProvider>), String> {
        let platform: Platform = name.parse()?;
        self.providers
            .get(platform)
            .map(|p| (platform, p))
            .ok_or_else(|| format!("{} meetings are not available on this server.", platform.display_name()))
    }

    /// Retry with back-off while attempts remain and the error is worth it; otherwise fail.
    fn after_error(&self, s: &Snapshot, error: ProviderError, operation: &str, platform: Option<Platform>) -> Outcome {
        let name = platform.map_or("the platform", |p| p.display_name());
        if error.is_retryable() {
            let policy = self.config.retry_policy();
            if let Some(delay) = policy.next_delay(s.claim.attempt as u32, error.retry_after(), jitter_unit()) {
                return Outcome::Retry { error: format!("{operation} on {name}: {error}"), delay };
            }
            return Outcome::Failed {
                error: format!(
                    "Could not {operation} the {name} meeting after {} attempts (last error: {error}). It is tried again when the booking changes.",
                    s.claim.attempt
                ),
            };
        }
        Outcome::Failed { error: format!("Could not {operation} the {name} meeting: {error}.") }
    }

    /// Audit entry and one log line for a platform call.
    fn note<T>(
        &self,
        audit: &mut Vec<AuditEntry>,
        action: &'static str,
        platform: Platform,
        started: Instant,
        result: &Result<T, ProviderError>,
        s: &Snapshot,
    ) where
        T: MeetingId,
    {
        let elapsed = started.elapsed();
        let duration_ms = elapsed.as_millis().min(i32::MAX as u128) as i32;
        let class = match result {
            Ok(_) => "ok",
            Err(e) => e.class(),
        };
        let labels = [
            ("platform", platform.as_str().to_string()),
            ("operation", action.to_string()),
            ("outcome", class.to_string()),
        ];
        metrics::counter!(crate::metrics::PROVIDER_CALLS, &labels).increment(1);
        metrics::histogram!(crate::metrics::PROVIDER_CALL_SECONDS, &labels).record(elapsed.as_secs_f64());
        let (outcome, detail) = match result {
            Ok(v) => ("ok", v.meeting_id().map(|id| format!("meeting {id}"))),
            Err(e) if e.is_retryable() && s.claim.attempt < self.config.max_attempts as i32 => {
                ("retry", Some(e.to_string()))
            }
            Err(e) => ("failed", Some(e.to_string())),
        };
        if outcome == "ok" {
            tracing::info!(platform = %platform, operation = action, outcome, duration_ms, "meeting operation");
        } else {
            tracing::warn!(platform = %platform, operation = action, outcome, duration_ms, error = detail.as_deref().unwrap_or(""), "meeting operation");
        }
        audit.push(entry(action, Some(platform.as_str().to_string()), outcome, Some(duration_ms), detail));
    }
}

/// The batch writer: takes every finished job waiting (up to `MAX_WRITE_BATCH`) and records
/// them in one transaction; jobs the batch could not take, or all of them when the batch failed,
/// are handed back to be recorded one by one. Ends when the worker is dropped.
async fn write_batches(pool: Pool, actor: String, mut rx: tokio::sync::mpsc::UnboundedReceiver<ToWrite>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITE_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (finished, replies): (Vec<Finished>, Vec<_>) = batch.into_iter().map(|w| (w.finished, w.reply)).unzip();
        let written = async {
            let client = pool.get().await?;
            jobs::write_back(&client, &actor, &finished, BookingLocks::Skip).await
        }
        .await;
        let results = match written {
            Ok(results) => results,
            Err(e) => {
                tracing::debug!(error = %e, jobs = finished.len(), "batch write-back failed; recording each job on its own");
                vec![None; finished.len()]
            }
        };
        for ((f, reply), result) in finished.into_iter().zip(replies).zip(results) {
            // A job whose task is gone (aborted at shutdown) runs again when its lease expires.
            let _ = reply.send((result.map(Processed::Recorded), f));
        }
    }
}

/// Counts a job as active until dropped (also when its task is aborted at shutdown).
struct ActiveJob<'a>(&'a AtomicUsize);

impl Drop for ActiveJob<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a finished job task means for the dispatcher: claim now (its job is due again at once),
/// or wake when it falls due.
fn note_task_end(
    done: Result<Option<Duration>, tokio::task::JoinError>,
    claim_now: &mut bool,
    due_at: &mut Option<tokio::time::Instant>,
) {
    let again = match done {
        Ok(again) => again,
        Err(e) => {
            log_task_end(Err(e));
            None
        }
    };
    match again {
        Some(Duration::ZERO) => *claim_now = true,
        Some(after) => wake_at(due_at, tokio::time::Instant::now() + after),
        None => {}
    }
}

/// Moves `due_at` forward to `at` if that is sooner.
fn wake_at(due_at: &mut Option<tokio::time::Instant>, at: tokio::time::Instant) {
    *due_at = Some(due_at.map_or(at, |t| t.min(at)));
}

/// The job's recorded create intent as one run changes it.
struct Intents {
    /// The intent in the job row, as this run left it.
    current: Option<Intent>,
    /// An intent whose meeting this run deleted.
    discarded: Option<Intent>,
    /// The claim is known to be durable and still this run's (see [`Worker::hold_claim`]).
    held: bool,
    /// The run deleted (or gave up as orphaned) the booking's recorded meeting.
    removed: bool,
}

impl Intents {
    /// The intent the write-back clears: the one the outcome's meeting stands for, or the one
    /// whose meeting was deleted when no newer one was recorded.
    fn resolved(&self, outcome: &Outcome) -> Option<Intent> {
        match (&self.current, outcome) {
            (Some(i), Outcome::Linked { platform, generation, .. })
                if i.platform == *platform && i.generation == *generation =>
            {
                Some(i.clone())
            }
            (Some(_), _) => None,
            (None, _) => self.discarded.clone(),
        }
    }
}

/// The audit actor of a daemon instance.
pub fn actor(instance: Uuid) -> String {
    format!("daemon:{instance}")
}

/// What an audit line says about a successful call.
trait MeetingId {
    fn meeting_id(&self) -> Option<&str>;
}
impl MeetingId for Meeting {
    fn meeting_id(&self) -> Option<&str> {
        Some(&self.external_id)
    }
}
impl MeetingId for () {
    fn meeting_id(&self) -> Option<&str> {
        None
    }
}

impl Snapshot {
    fn requested(&self) -> Option<String> {
        self.booking.as_ref().and_then(|b| b.meeting_platform.clone())
    }
}

fn linked(platform: &str, requested: &Option<String>, meeting: Meeting, req: &MeetingRequest) -> Outcome {
    Outcome::Linked {
        owner: Some(req.provider_user_id),
        platform: platform.to_string(),
        requested_platform: requested.clone(),
        meeting,
        start: req.start,
        end: req.end,
        generation: req.generation,
        settings: req.settings.clone(),
    }
}

fn entry(
    action: &'static str,
    platform: Option<String>,
    outcome: &'static str,
    duration_ms: Option<i32>,
    detail: Option<String>,
) -> AuditEntry {
    AuditEntry { action, platform, outcome, duration_ms, detail }
}

fn ready_message(choice: Choice, s: &Snapshot, account_problem: Option<&str>) -> String {
    if let (true, Some(problem)) = (choice.fallback, account_problem) {
        return format!("The meeting is ready on {} because {problem}.", choice.platform.display_name());
    }
    match (choice.fallback, s.requested()) {
        (true, Some(requested)) => format!(
            "The meeting is ready on {} because {requested} is not connected; connect it under Integrations to use it for future bookings.",
            choice.platform.display_name()
        ),
        _ => format!("The meeting is ready on {}.", choice.platform.display_name()),
    }
}

fn failed_event(platform: Platform, error: &str) -> Event {
    Event { kind: "meeting_failed", platform: Some(platform.as_str().to_string()), message: error.to_string() }
}

fn failed(outcome: &Outcome, platform: &str) -> Option<Event> {
    match outcome {
        Outcome::Failed { error } => {
            Some(Event { kind: "meeting_failed", platform: Some(platform.to_string()), message: error.clone() })
        }
        _ => None,
    }
}

fn log_task_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result
        && e.is_panic()
    {
        tracing::error!("a job task panicked outside reconcile; its lease expires and it runs again");
    }
}
