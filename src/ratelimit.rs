//! Rate limits per platform and per connected account (`[limits.*]`), kept in the database so
//! that any number of daemons together keep each account and each platform within its rate.
//!
//! The buckets are rows of `meetingd.rate_buckets` (one per platform and provider, one per
//! platform), taken from by `meetingd.take_rate_tokens` (V13): a token bucket of `rate` per second
//! with `burst`, in the form of the generic cell rate algorithm (one timestamp a bucket). A job's
//! first platform call is paid for by its claim (`db/jobs/claim.sql`): a job whose account or
//! platform has no token is not claimed but moved to its turn (`run_at`, one slot per token
//! behind the jobs held back before it), without spending an attempt, behind other providers'
//! due jobs; the dispatcher hears when the first turn comes. A further call in the same run (a
//! replacement's create, a stray create's delete) takes its token with one statement
//! ([`Budgets::take`]) and defers the job when there is none. Jitsi (no account) is never limited.
//!
//! Owns which platforms are limited and the buckets' parameters; its statements are
//! `db/ratelimit.rs`. It must not block a worker slot waiting for a token.

use std::time::Duration;

use uuid::Uuid;

use crate::config::{LimitsConfig, RateConfig};
use crate::db::{DbError, Pool, ratelimit};
use crate::providers::Platform;

/// The limited platforms this daemon calls and their buckets, as the statements take them: one
/// entry per platform, a bucket as its interval between tokens (`every`, 1/rate seconds) and its
/// `span` ((burst − 1) × every: how far ahead of the rate a burst may run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budgets {
    pub platforms: Vec<String>,
    pub account_every: Vec<f64>,
    pub account_span: Vec<f64>,
    pub platform_every: Vec<f64>,
    pub platform_span: Vec<f64>,
}

impl Budgets {
    /// The buckets of `limits` for the platforms `enabled` says this daemon calls.
    pub fn new(limits: &LimitsConfig, enabled: impl Fn(Platform) -> bool) -> Budgets {
        let mut b = Budgets::default();
        for platform in Platform::ALL {
            let Some(rates) = limits.for_platform(platform) else { continue };
            if !enabled(platform) {
                continue;
            }
            let (every, span) = bucket(rates.integration_rate, rates.integration_burst);
            let (platform_every, platform_span) = bucket(rates.platform_rate, rates.platform_burst);
            b.platforms.push(platform.as_str().to_string());
            b.account_every.push(every);
            b.account_span.push(span);
            b.platform_every.push(platform_every);
            b.platform_span.push(platform_span);
        }
        b
    }

    /// Whether calls on `platform` take tokens.
    pub fn limits(&self, platform: Platform) -> bool {
        self.platforms.iter().any(|p| p == platform.as_str())
    }

    /// Takes a token for one more call of `job` on `platform` for the provider `account`:
    /// `Ok(None)` when taken, `Ok(Some(wait))` when the job must wait its turn (a slot is kept
    /// for it).
    pub async fn take(
        &self,
        pool: &Pool,
        job: i64,
        platform: Platform,
        account: Uuid,
    ) -> Result<Option<Duration>, DbError> {
        if !self.limits(platform) {
            return Ok(None);
        }
        let client = pool.get().await?;
        let wait = ratelimit::take(client.sql(), job, platform.as_str(), account, self).await?;
        if wait.is_some() {
            metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
        }
        Ok(wait)
    }
}

/// A bucket of `rate` tokens per second holding `burst`: (every, span) in seconds; a rate of 0
/// or less limits nothing (every = 0).
fn bucket(rate: f64, burst: u32) -> (f64, f64) {
    if rate <= 0.0 || !rate.is_finite() {
        return (0.0, 0.0);
    }
    let every = 1.0 / rate;
    (every, f64::from(burst.max(1) - 1) * every)
}

impl LimitsConfig {
    fn for_platform(&self, platform: Platform) -> Option<&RateConfig> {
        match platform {
            Platform::GoogleMeet => Some(&self.google_meet),
            Platform::Zoom => Some(&self.zoom),
            Platform::Teams => Some(&self.teams),
            Platform::Jitsi => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        let r = |rate: f64, burst, platform_rate: f64, platform_burst| RateConfig {
            integration_rate: rate,
            integration_burst: burst,
            platform_rate,
            platform_burst,
            daily_meeting_writes: 0,
            integration_concurrency: 0,
        };
        LimitsConfig { google_meet: r(2.0, 3, 50.0, 1), zoom: r(5.0, 10, 10.0, 20), teams: r(2.0, 10, 20.0, 40) }
    }

    #[test]
    fn buckets_of_the_enabled_limited_platforms() {
        let b = Budgets::new(&limits(), |p| p != Platform::Teams);
        assert_eq!(b.platforms, ["google_meet", "zoom"], "Teams not enabled, Jitsi never limited");
        assert_eq!((b.account_every[0], b.account_span[0]), (0.5, 1.0), "2/s, burst 3");
        assert_eq!((b.platform_every[0], b.platform_span[0]), (0.02, 0.0), "burst 1: no span");
        assert!(b.limits(Platform::Zoom) && !b.limits(Platform::Jitsi) && !b.limits(Platform::Teams));
        assert_eq!(bucket(0.0, 5), (0.0, 0.0), "no rate: no limit");
    }
}
