//! Per-endpoint circuit breaker with exponential backoff ("blocked endpoints").
//!
//! Why per endpoint: the Datadog forwarder blocks a route after a failure so that a dead or
//! throttling intake is probed once per backoff period instead of hammered, while routes that
//! still work keep flowing. Delay after `n` consecutive errors is
//! `min(max, base * factor^(n-1))`, optionally jittered into `[delay/2, delay]` so that many
//! agents do not reconnect in lockstep. A success lowers the error count by
//! `RECOVERY_INTERVAL` (Datadog's `forwarder_recovery_interval`, default 2) instead of
//! resetting it, so a flapping intake does not get full speed after one lucky request.

use std::time::Duration;

use tokio::time::Instant;

/// Errors forgiven per success (`forwarder_recovery_interval`).
const RECOVERY_INTERVAL: u32 = 2;

/// Backoff parameters (`forwarder_backoff_base/factor/max`, seconds).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackoffPolicy {
    pub(crate) base: f64,
    pub(crate) factor: f64,
    pub(crate) max: f64,
    pub(crate) jitter: bool,
}

impl BackoffPolicy {
    /// Delay after `errors` consecutive failures (`errors >= 1`); `unit` in `[0, 1)` drives
    /// the jitter.
    pub(crate) fn delay(&self, errors: u32, unit: f64) -> Duration {
        let exp = i32::try_from(errors.saturating_sub(1)).unwrap_or(i32::MAX);
        let raw = (self.base * self.factor.powi(exp)).min(self.max).max(0.0);
        let secs = if self.jitter {
            raw * (0.5 + 0.5 * unit.clamp(0.0, 1.0))
        } else {
            raw
        };
        Duration::from_secs_f64(if secs.is_finite() { secs } else { self.max })
    }
}

/// State of one endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Breaker {
    errors: u32,
    blocked_until: Option<Instant>,
    /// Whether the most recent attempt failed.
    failing: bool,
}

impl Breaker {
    pub(crate) fn is_blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| t > now)
    }

    pub(crate) fn blocked_until(&self) -> Option<Instant> {
        self.blocked_until
    }

    pub(crate) fn failing(&self) -> bool {
        self.failing
    }

    #[cfg(test)]
    pub(crate) fn errors(&self) -> u32 {
        self.errors
    }

    pub(crate) fn success(&mut self) {
        self.errors = self.errors.saturating_sub(RECOVERY_INTERVAL);
        self.blocked_until = None;
        self.failing = false;
    }

    /// Records a failure; returns the delay before the next attempt.
    pub(crate) fn failure(&mut self, now: Instant, policy: &BackoffPolicy, unit: f64) -> Duration {
        self.errors = self.errors.saturating_add(1);
        self.failing = true;
        let d = policy.delay(self.errors, unit);
        self.blocked_until = Some(now + d);
        d
    }
}

/// A tiny xorshift generator for jitter (no need for a crypto-grade or seeded-by-OS RNG).
#[derive(Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(std::process::id());
        Self(seed | 1)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = BackoffPolicy {
            base: 2.0,
            factor: 2.0,
            max: 64.0,
            jitter: false,
        };
        let secs: Vec<u64> = (1..=8).map(|n| p.delay(n, 0.0).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 64, 64]);
        let j = BackoffPolicy { jitter: true, ..p };
        assert_eq!(j.delay(3, 0.0), Duration::from_secs(4));
        assert!(j.delay(3, 0.999) <= Duration::from_secs(8));
    }

    #[test]
    fn breaker_blocks_then_recovers_gradually() {
        let p = BackoffPolicy {
            base: 1.0,
            factor: 2.0,
            max: 10.0,
            jitter: false,
        };
        let now = Instant::now();
        let mut b = Breaker::default();
        assert!(!b.is_blocked(now));
        for _ in 0..3 {
            b.failure(now, &p, 0.0);
        }
        assert_eq!(b.errors(), 3);
        assert!(b.is_blocked(now + Duration::from_secs(3)));
        assert!(!b.is_blocked(now + Duration::from_secs(5)));
        b.success();
        assert_eq!(b.errors(), 1);
        assert!(!b.failing());
        let mut j = Jitter::new();
        for _ in 0..100 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
