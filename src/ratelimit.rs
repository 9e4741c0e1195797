//! Token buckets per platform and per connected account, so one provider's burst neither trips a
//! platform's limits nor starves other providers.
//!
//! A call that would exceed a bucket is not made: the job is deferred until a token is due, without
//! spending one of its attempts. Deferred jobs go behind the due jobs of other providers (they are
//! claimed in `run_at` order), which is what keeps scheduling fair. Buckets live in each daemon's
//! memory: with several daemons, each applies the configured rates (see `config/default.toml`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::{LimitsConfig, RateConfig};
use crate::providers::Platform;

/// A classic token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket { rate, burst: burst.max(1) as f64, tokens: burst.max(1) as f64, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until a token is available (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// The buckets of one daemon.
pub struct RateLimiter {
    limits: LimitsConfig,
    buckets: Mutex<HashMap<(Platform, Option<Uuid>), TokenBucket>>,
}

impl RateLimiter {
    pub fn new(limits: LimitsConfig) -> RateLimiter {
        RateLimiter { limits, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from the platform's bucket and the account's bucket, or from neither and
    /// says how long to wait.
    pub fn try_acquire(&self, platform: Platform, account: Uuid, now: Instant) -> Result<(), Duration> {
        let Some(rates) = self.limits.for_platform(platform) else { return Ok(()) };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut bucket = |key, rate: f64, burst| -> Duration {
            buckets.entry(key).or_insert_with(|| TokenBucket::new(rate, burst, now)).wait(now)
        };
        let wait = bucket((platform, None), rates.platform_rate, rates.platform_burst).max(bucket(
            (platform, Some(account)),
            rates.integration_rate,
            rates.integration_burst,
        ));
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in [(platform, None), (platform, Some(account))] {
            if let Some(b) = buckets.get_mut(&key) {
                b.take();
            }
        }
        // Accounts idle long enough to be full again need no entry.
        if buckets.len() > 10_000 {
            buckets.retain(|(_, account), b| account.is_none() || b.wait(now).is_zero() && b.tokens < b.burst);
        }
        Ok(())
    }
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
    use proptest::prelude::*;

    fn limits(rate: f64, burst: u32, platform_rate: f64, platform_burst: u32) -> LimitsConfig {
        let r = RateConfig {
            integration_rate: rate,
            integration_burst: burst,
            platform_rate,
            platform_burst,
            daily_meeting_writes: 0,
            integration_concurrency: 0,
        };
        LimitsConfig { google_meet: r.clone(), zoom: r.clone(), teams: r }
    }

    #[test]
    fn burst_then_rate_per_account() {
        let t0 = Instant::now();
        let l = RateLimiter::new(limits(2.0, 3, 1000.0, 1000));
        let a = Uuid::new_v4();
        for _ in 0..3 {
            assert_eq!(l.try_acquire(Platform::GoogleMeet, a, t0), Ok(()));
        }
        let wait = l.try_acquire(Platform::GoogleMeet, a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(l.try_acquire(Platform::GoogleMeet, a, t0 + Duration::from_millis(500)), Ok(()));
        // Another account is not held back by the first one's burst.
        assert_eq!(l.try_acquire(Platform::GoogleMeet, Uuid::new_v4(), t0), Ok(()));
        // Jitsi has no limits.
        for _ in 0..100 {
            assert_eq!(l.try_acquire(Platform::Jitsi, a, t0), Ok(()));
        }
    }

    #[test]
    fn the_platform_bucket_caps_all_accounts_together() {
        let t0 = Instant::now();
        let l = RateLimiter::new(limits(100.0, 100, 10.0, 2));
        assert!(l.try_acquire(Platform::Zoom, Uuid::new_v4(), t0).is_ok());
        assert!(l.try_acquire(Platform::Zoom, Uuid::new_v4(), t0).is_ok());
        let wait = l.try_acquire(Platform::Zoom, Uuid::new_v4(), t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn a_refused_call_takes_no_token() {
        let t0 = Instant::now();
        let l = RateLimiter::new(limits(1.0, 1, 1.0, 5));
        let a = Uuid::new_v4();
        assert!(l.try_acquire(Platform::Teams, a, t0).is_ok());
        for _ in 0..10 {
            assert!(l.try_acquire(Platform::Teams, a, t0).is_err());
        }
        // The platform bucket was not drained by the refusals.
        for _ in 0..4 {
            assert!(l.try_acquire(Platform::Teams, Uuid::new_v4(), t0).is_ok());
        }
    }

    proptest! {
        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(rate in 0.5f64..50.0, burst in 1u32..20, steps in proptest::collection::vec(0u64..200, 1..300)) {
            let t0 = Instant::now();
            let l = RateLimiter::new(limits(rate, burst, 1e9, u32::MAX));
            let a = Uuid::new_v4();
            let mut now = t0;
            let mut granted = 0u64;
            for ms in steps {
                now += Duration::from_millis(ms);
                if l.try_acquire(Platform::GoogleMeet, a, now).is_ok() { granted += 1; }
            }
            let allowed = burst as f64 + rate * now.duration_since(t0).as_secs_f64();
            prop_assert!(granted as f64 <= allowed + 1e-9, "{granted} > {allowed}");
        }
    }
}
