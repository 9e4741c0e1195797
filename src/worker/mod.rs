//! Reconcile loop: claim due jobs, make each booking's meeting match the booking, record the result.
//!
//! A job never replays an event; it reads the booking as it is now and compares it with the
//! meeting meetingd recorded. Split the way the work flows: `plan.rs` decides (pure),
//! `dispatch.rs` claims and hands out jobs, `execute.rs` runs one job against the platforms,
//! `complete.rs` records finished jobs alone or batched. This module builds the [`Worker`] and
//! holds its public surface (`run_once` for tests, `process`, `status_line`). Nothing here may
//! hold a database transaction across a platform call.

mod batch;
mod complete;
mod dispatch;
mod execute;
mod hold;
mod plan;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

pub use self::plan::{Plan, plan};
use crate::config::{Fallback, WorkerConfig};
use crate::db::jobs;
use crate::db::{DbError, Pool};
use crate::job::{Outcome, Snapshot, WriteBack};
use crate::providers::{MeetingProvider, Platform, Providers};
use crate::ratelimit::Budgets;

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
    /// The rate-limited platforms and their buckets (none until [`Worker::with_limits`]).
    budgets: Budgets,
    /// The platforms a claim prepares calls on (a synchronous commit, a create intent).
    calls: jobs::ClaimCalls,
    /// Groups the write-backs of jobs finishing together.
    writer: batch::Batcher<crate::job::Finished, WriteBack>,
    /// Groups the create intents and claim confirmations of jobs starting together.
    holder: batch::Batcher<jobs::Hold, jobs::Held>,
    /// Jobs being reconciled or recorded right now.
    active: AtomicUsize,
}

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
        let actor = actor(instance);
        let calls = claim_calls(&providers);
        Worker {
            writer: complete::write_batches(pool.clone(), actor.clone()),
            holder: hold::hold_batches(pool.clone()),
            pool,
            providers,
            config,
            fallback,
            actor,
            instance,
            wake,
            stats: Stats::default(),
            liveness: None,
            budgets: Budgets::default(),
            calls,
            active: AtomicUsize::new(0),
        }
    }

    /// Applies per-platform and per-account rate limits, shared with every daemon on the
    /// database, to the calls on the platforms this worker makes meetings on.
    pub fn with_limits(mut self, limits: crate::config::LimitsConfig) -> Worker {
        self.budgets = Budgets::new(&limits, |p| self.providers.get(p).is_some());
        self
    }

    /// The rate limits its platform calls keep, to share with the connection monitor.
    pub fn budgets(&self) -> Budgets {
        self.budgets.clone()
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
        let snapshots = self.claim(self.config.concurrency).await?.snapshots;
        let n = snapshots.len();
        futures_util::future::join_all(snapshots.into_iter().map(|s| self.process(s))).await;
        Ok(n)
    }

    async fn claim(&self, limit: usize) -> Result<jobs::Claimed, DbError> {
        let client = self.pool.get().await?;
        let lease = self.config.lease();
        let mut claimed = match jobs::claim(&client, self.instance, limit, lease, &self.budgets, &self.calls).await {
            Ok(claimed) => claimed,
            Err(e) => {
                crate::db::discard_if_read_only(&self.pool, client, &e);
                return Err(e);
            }
        };
        // The token reads of the jobs' first platform calls use the rows the claim read.
        for row in std::mem::take(&mut claimed.integrations) {
            self.providers.prime(row);
        }
        metrics::counter!(crate::metrics::JOBS_CLAIMED).increment(claimed.snapshots.len() as u64);
        if claimed.held_back > 0 {
            metrics::counter!(crate::metrics::RATE_LIMITED).increment(claimed.held_back as u64);
            tracing::debug!(held_back = claimed.held_back, "rate limit: due jobs left for their turn");
        }
        Ok(claimed)
    }

    /// Reconciles one claimed job and records the outcome. Never panics the daemon: a panic is
    /// recorded as that job's (retryable) error.
    pub async fn process(&self, s: Snapshot) -> Processed {
        self.execute_and_complete(s).await.0
    }

    /// Runs one job ([`execute`](execute::execute)) and records it ([`Worker::complete`]), counted
    /// as active meanwhile; the outcome it recorded.
    async fn execute_and_complete(&self, s: Snapshot) -> (Processed, Outcome) {
        self.active.fetch_add(1, Ordering::Relaxed);
        let _active = ActiveJob(&self.active);
        let span = tracing::info_span!("job", booking_id = %s.claim.booking_id, attempt = s.claim.attempt);
        async {
            if s.claim.write_failures >= self.config.max_attempts as i32 {
                return self.give_up(s).await;
            }
            let executed = execute::execute(self, &s).await;
            let requested_at = s.claim.requested_at;
            let summary = executed.outcome.clone();
            let processed = self.complete(executed.into_finished(s)).await;
            self.count(requested_at, &summary, processed);
            (processed, summary)
        }
        .instrument(span)
        .await
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

    /// The platform a stored name stands for and its provider on this server; `Err` is the
    /// sentence the job fails with (a name this build does not know, a platform not configured).
    fn provider_for(&self, name: &str) -> Result<(Platform, &Arc<dyn MeetingProvider>), String> {
        let platform: Platform = name.parse()?;
        self.providers
            .get(platform)
            .map(|p| (platform, p))
            .ok_or_else(|| format!("{} meetings are not available on this server.", platform.display_name()))
    }

    /// One line for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        format!(
            "ready: {} meetings linked, {} failed since start",
            self.stats.linked.load(Ordering::Relaxed),
            self.stats.failed.load(Ordering::Relaxed)
        )
    }
}

/// What a claim prepares for on `providers`' platforms: a synchronous commit where a call on a
/// platform that keeps meetings may follow, and the create intent where the platform takes one.
fn claim_calls(providers: &Providers) -> jobs::ClaimCalls {
    let mut calls = jobs::ClaimCalls::default();
    for platform in Platform::ALL {
        let Some(provider) = providers.get(platform) else { continue };
        if !provider.keeps_meetings() {
            continue;
        }
        calls.keeping.push(platform.as_str().to_string());
        if provider.intent_id(Uuid::nil(), 1).is_some() {
            calls.intents.push(platform.as_str().to_string());
        }
    }
    calls
}

/// Counts a job as active until dropped (also when its task is aborted at shutdown).
struct ActiveJob<'a>(&'a AtomicUsize);

impl Drop for ActiveJob<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The audit actor of a daemon instance.
pub fn actor(instance: Uuid) -> String {
    format!("daemon:{instance}")
}
