//! The fenced, synchronously committed write before a job's first call to a platform that keeps
//! meetings (its create intent, or a claim confirmation): grouped with the other jobs starting at
//! the same time, so a claimed batch shares one round trip and one commit (`db::jobs::hold_claims`).
//!
//! Owns the hold batcher's handler and the choice between a batch and a statement of its own. It
//! must not decide what a lost claim means (`execute.rs` does).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::Worker;
use super::batch::{Batcher, Handler, Submitted};
use crate::db::jobs::{self, Held, Hold, RowLocks};
use crate::db::{DbError, Pool};
use crate::job::{Claim, Intent};
use crate::providers::Platform;

/// The most holds one statement takes: a claim batch is a quarter of `worker.concurrency`.
const MAX_HOLD_BATCH: usize = 64;

/// The hold batcher's handler: every hold waiting, in one statement.
pub(super) fn hold_batches(pool: Pool) -> Batcher<Hold, Held> {
    let handler: Handler<Hold, Held> = Arc::new(move |holds: Vec<Hold>| {
        let pool = pool.clone();
        Box::pin(async move {
            let held = async {
                let client = pool.get().await?;
                jobs::hold_claims(&client, &holds, RowLocks::Skip).await
            }
            .await;
            let results = match held {
                // A job row locked elsewhere was left out: that hold is written on its own.
                Ok(held) => held.into_iter().map(|h| h.held.is_some().then_some(h)).collect(),
                Err(e) => {
                    tracing::debug!(error = %e, jobs = holds.len(), "batched claim confirmation failed; confirming each on its own");
                    vec![None; holds.len()]
                }
            };
            (holds, results)
        })
    });
    Batcher::new("hold_batcher", MAX_HOLD_BATCH, handler)
}

impl Worker {
    /// Writes `claim`'s hold (with `intent`, if any) and says whether the claim still held. The
    /// same round trip reads the integration row of `account` (a provider and the platform about
    /// to be called), which the platform call's token read then uses.
    pub(super) async fn hold(
        &self,
        claim: &Claim,
        intent: Option<Intent>,
        account: Option<(Uuid, Platform)>,
    ) -> Result<bool, DbError> {
        let integration = account.map(|(user, platform)| (user, platform.as_str().to_string()));
        let hold = Hold { claim: claim.clone(), intent, integration };
        let held = if self.active.load(Ordering::Relaxed) <= 1 {
            // Nothing to group it with.
            self.hold_alone(&hold).await?
        } else {
            match self.holder.submit(hold).await {
                Submitted::Done(held) => held,
                Submitted::Alone(hold) => self.hold_alone(&hold).await?,
                // Shutting down: the job runs again when its lease expires.
                Submitted::Lost => return Ok(false),
            }
        };
        if let Some(row) = held.integration {
            self.providers.prime(row);
        }
        Ok(held.held.unwrap_or(false))
    }

    /// One hold in a statement of its own, which waits for the job row's lock.
    async fn hold_alone(&self, hold: &Hold) -> Result<Held, DbError> {
        let client = self.pool.get().await?;
        let mut held = jobs::hold_claims(&client, std::slice::from_ref(hold), RowLocks::Wait).await?;
        Ok(held.pop().unwrap_or(Held { held: Some(false), integration: None }))
    }
}
