//! Recording finished jobs: alone (one write-back of its own) or batched (the batch writer
//! groups the write-backs of jobs that finish together into one transaction), and what happens
//! when the database refuses one.
//!
//! Owns the batch writer, the fallback from a batch to a write-back of its own, counting refused
//! write-backs and giving up on a job after too many. It must not call a platform or decide a
//! job's outcome (`execute.rs` did).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::batch::{Batcher, Handler, Submitted};
use super::{Processed, Worker};
use crate::db::jobs::{self, RowLocks};
use crate::db::{DbError, Pool};
use crate::job::{Finished, Outcome, Snapshot, WriteBack};
use crate::retry::jitter_unit;

/// The most write-backs one transaction takes.
const MAX_WRITE_BATCH: usize = 64;

/// The batch writer's handler: the write-backs of every job finished meanwhile, in one
/// transaction that skips bookings locked elsewhere (those jobs are recorded on their own).
pub(super) fn write_batches(pool: Pool, actor: String) -> Batcher<Finished, WriteBack> {
    let handler: Handler<Finished, WriteBack> = Arc::new(move |finished: Vec<Finished>| {
        let (pool, actor) = (pool.clone(), actor.clone());
        Box::pin(async move {
            let written = async {
                let client = pool.get().await?;
                jobs::write_back(&client, &actor, &finished, RowLocks::Skip).await
            }
            .await;
            let results = written.unwrap_or_else(|e| {
                tracing::debug!(error = %e, jobs = finished.len(), "batch write-back failed; recording each job on its own");
                vec![None; finished.len()]
            });
            (finished, results)
        })
    });
    Batcher::new("batch_writer", MAX_WRITE_BATCH, handler)
}

impl Worker {
    /// Records a finished job (through the batch writer when other jobs are finishing too, on its
    /// own otherwise) and warns when its lease was lost meanwhile.
    pub(super) async fn complete(&self, finished: Finished) -> Processed {
        let processed = if self.active.load(Ordering::Relaxed) <= 1 {
            // Nothing to group it with: its own write-back takes fewer round trips.
            self.complete_alone(&finished).await
        } else {
            match self.writer.submit(finished).await {
                Submitted::Done(written) => Processed::Recorded(written),
                Submitted::Alone(finished) => self.complete_alone(&finished).await,
                // The writer is gone (runtime shutting down): the lease expires and the job runs again.
                Submitted::Lost => Processed::NotRecorded,
            }
        };
        if processed == Processed::Recorded(WriteBack::LeaseLost) {
            tracing::warn!("lease on the job expired before its outcome was recorded; another claim owns it now");
        }
        processed
    }

    /// One job's write-back, in a transaction of its own that waits for the booking's lock.
    async fn complete_alone(&self, f: &Finished) -> Processed {
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the job's outcome; it runs again when its lease expires");
                return Processed::NotRecorded;
            }
        };
        match jobs::write_back(&client, &self.actor, std::slice::from_ref(f), RowLocks::Wait).await {
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
    pub(super) async fn give_up(&self, s: Snapshot) -> (Processed, Outcome) {
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
}
