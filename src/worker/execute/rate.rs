//! A run's rate-limit tokens (`ratelimit.rs`): its first call on a limited platform was paid for
//! by its claim; any further one takes a token with one statement, or defers the job to its turn.

use std::time::Duration;

use super::Run;
use crate::job::Outcome;
use crate::providers::{Platform, ProviderError};

impl Run<'_> {
    /// `Some(outcome)` when a rate limit holds back this run's `operation` on `platform` (the job
    /// waits for its turn without spending an attempt), or the token could not be taken.
    pub(super) async fn held_back(&mut self, platform: Platform, operation: &str) -> Option<Outcome> {
        let (worker, s) = (self.worker, self.s);
        if !worker.budgets.limits(platform) {
            return None;
        }
        let account = s.booking.as_ref()?.provider_id?;
        if self.rate_paid == Some(platform) {
            self.rate_paid = None;
            return None;
        }
        match worker.budgets.take(&worker.pool, s.claim.job_id, platform, account).await {
            Ok(None) => None,
            Ok(Some(wait)) => {
                tracing::debug!(platform = %platform, wait_ms = wait.as_millis() as u64, "rate limit: deferring the platform call");
                Some(Outcome::Defer { delay: wait + Duration::from_millis(5) })
            }
            Err(e) => {
                let problem = format!("could not take a rate-limit token before calling the platform: {e}");
                tracing::warn!(platform = %platform, problem = %problem, "platform call not made");
                Some(self.after_error(ProviderError::Transient(problem), operation, Some(platform)))
            }
        }
    }
}
