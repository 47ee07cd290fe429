//! Which delivery failures are retried, and when.
//!
//! Why only 429 and 5xx (and network errors): PagerDuty documents a 400 as "invalid event,
//! don't retry", and a 4xx from a webhook means the request itself is wrong; sending it again
//! would only repeat the failure and hide it in the delivery log.

/// The outcome class of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    Failed,
}

/// `status` None means the request never got an answer (connect error, timeout).
pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(s) if (200..300).contains(&s) => Verdict::Delivered,
        Some(429) => Verdict::Retry,
        Some(s) if s >= 500 => Verdict::Retry,
        Some(_) => Verdict::Failed,
    }
}

/// Delay before attempt `attempt + 1` after `attempt` failed attempts (1-based):
/// `base × 2^(attempt-1)`, capped at `cap`.
pub fn backoff_ms(base_ms: u64, cap_ms: u64, attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(30);
    base_ms.saturating_mul(1u64 << shift).min(cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_5xx_and_network_retry() {
        assert_eq!(classify(Some(202)), Verdict::Delivered);
        assert_eq!(classify(Some(400)), Verdict::Failed);
        assert_eq!(classify(Some(404)), Verdict::Failed);
        assert_eq!(classify(Some(429)), Verdict::Retry);
        assert_eq!(classify(Some(500)), Verdict::Retry);
        assert_eq!(classify(Some(503)), Verdict::Retry);
        assert_eq!(classify(None), Verdict::Retry);
    }

    #[test]
    fn exponential_capped() {
        assert_eq!(backoff_ms(1000, 60_000, 1), 1000);
        assert_eq!(backoff_ms(1000, 60_000, 3), 4000);
        assert_eq!(backoff_ms(1000, 60_000, 10), 60_000);
        assert_eq!(backoff_ms(1000, 60_000, 100), 60_000);
    }
}
