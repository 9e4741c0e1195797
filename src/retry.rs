//! The retry schedule, as a pure function of the attempt number.
//!
//! Owns nothing but arithmetic: no clock, no database. The randomness for jitter is passed in so
//! the schedule can be property-tested.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt (before jitter).
    pub base: Duration,
    /// No delay is ever longer than this, whatever the attempt or a platform's Retry-After says.
    pub max: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before the next attempt after `attempt` (1-based) failed, or `None` when the job
    /// is out of attempts.
    ///
    /// Exponential back-off (`base * 2^(attempt-1)`, capped at `max`) with "equal jitter": the delay
    /// is uniformly drawn from the upper half of the capped value, so retries of many jobs spread
    /// out but never come back sooner than half the schedule. A platform's `Retry-After` is a floor
    /// (still capped at `max`). `unit` is a uniform random number in `[0, 1)`.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp = attempt.saturating_sub(1).min(32);
        let backoff = self.base.saturating_mul(1u32 << exp.min(31)).min(self.max);
        let half = backoff / 2;
        let jittered = half + half.mul_f64(unit.clamp(0.0, 1.0));
        let floor = retry_after.unwrap_or_default().min(self.max);
        Some(jittered.max(floor).min(self.max))
    }
}

/// A uniform random number in `[0, 1)` for [`RetryPolicy::next_delay`].
pub fn jitter_unit() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(2), max: Duration::from_secs(600), max_attempts: 8 }
    }

    #[test]
    fn grows_exponentially_then_caps() {
        let p = policy();
        assert_eq!(p.next_delay(1, None, 0.999_999).unwrap().as_secs(), 1); // 1..2s
        assert_eq!(p.next_delay(2, None, 0.0), Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(3, None, 0.0), Some(Duration::from_secs(4)));
        let long = RetryPolicy { max_attempts: 100, ..p };
        assert_eq!(long.next_delay(40, None, 0.0), Some(Duration::from_secs(300)));
        assert_eq!(long.next_delay(40, None, 1.0), Some(Duration::from_secs(600)));
    }

    #[test]
    fn out_of_attempts_is_none() {
        assert_eq!(policy().next_delay(8, None, 0.5), None);
        assert!(policy().next_delay(7, None, 0.5).is_some());
        let once = RetryPolicy { max_attempts: 1, ..policy() };
        assert_eq!(once.next_delay(1, Some(Duration::from_secs(1)), 0.5), None);
    }

    #[test]
    fn retry_after_is_a_capped_floor() {
        let p = policy();
        assert_eq!(p.next_delay(1, Some(Duration::from_secs(30)), 0.0), Some(Duration::from_secs(30)));
        assert_eq!(p.next_delay(1, Some(Duration::from_secs(86_400)), 0.0), Some(Duration::from_secs(600)));
    }

    proptest! {
        #[test]
        fn always_within_bounds(attempt in 1u32..200, unit in 0.0f64..1.0, ra in proptest::option::of(0u64..100_000),
                                base_ms in 1u64..10_000, max_ms in 10_000u64..10_000_000, max_attempts in 1u32..50) {
            let p = RetryPolicy { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms), max_attempts };
            let retry_after = ra.map(Duration::from_secs);
            match p.next_delay(attempt, retry_after, unit) {
                None => prop_assert!(attempt >= max_attempts),
                Some(d) => {
                    prop_assert!(attempt < max_attempts);
                    prop_assert!(d <= p.max);
                    prop_assert!(d >= (p.base / 2).min(p.max));
                    if let Some(ra) = retry_after { prop_assert!(d >= ra.min(p.max)); }
                }
            }
        }

        #[test]
        fn never_shrinks_with_attempts(attempt in 1u32..60, unit in 0.0f64..1.0) {
            let p = RetryPolicy { max_attempts: 100, ..policy() };
            let a = p.next_delay(attempt, None, unit).unwrap();
            let b = p.next_delay(attempt + 1, None, unit).unwrap();
            prop_assert!(b >= a);
        }
    }
}
