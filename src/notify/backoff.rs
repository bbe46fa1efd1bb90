//! When to try a failed announcement again: exponential backoff with jitter, capped;
//! past the attempt limit the message is reported failed but keeps its place and is
//! retried at the longest step (nothing behind it overtakes it). Pure: no clock, no
//! randomness of its own.

/// The retry policy (from `[sns]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts before a message counts as failed.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt.
    pub base_seconds: u32,
    /// Longest delay; also the delay once a message has failed.
    pub max_seconds: u32,
}

impl Backoff {
    pub fn from_config(sns: &crate::config::SnsConfig) -> Self {
        Self {
            max_attempts: sns.max_attempts,
            base_seconds: sns.base_backoff_seconds,
            max_seconds: sns.max_backoff_seconds,
        }
    }
}

/// The schedule after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextAttempt {
    /// Unix seconds of the next try.
    pub at: i64,
    /// Whether the message has now used up `max_attempts` (reported as `failed`).
    pub failed: bool,
}

/// After the `attempts`-th failed attempt (1 for the first) at `now`, when to try
/// again. `jitter` in `[0, 1]` (from the caller's randomness) scales the step into
/// `[½, 1]` of itself, so many instances do not retry in lock-step. Never earlier
/// than `now + 1`, never later than `now + max_seconds`.
pub fn next_attempt(policy: Backoff, attempts: i64, now: i64, jitter: f64) -> NextAttempt {
    let failed = attempts >= i64::from(policy.max_attempts);
    let max = i64::from(policy.max_seconds.max(1));
    let step = if failed {
        max
    } else {
        let doublings = u32::try_from((attempts - 1).clamp(0, 30)).unwrap_or(30);
        i64::from(policy.base_seconds).saturating_mul(1_i64 << doublings).min(max)
    };
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 1.0 };
    let delay = ((step as f64) * (0.5 + jitter / 2.0)).ceil() as i64;
    NextAttempt { at: now.saturating_add(delay.clamp(1, max)), failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Backoff = Backoff { max_attempts: 5, base_seconds: 5, max_seconds: 60 };

    #[test]
    fn the_delay_doubles_per_attempt_up_to_the_cap() {
        let at = |n| next_attempt(P, n, 1_000, 1.0).at - 1_000;
        assert_eq!([at(1), at(2), at(3), at(4)], [5, 10, 20, 40]);
        let p = Backoff { max_attempts: 50, ..P };
        assert_eq!(next_attempt(p, 5, 0, 1.0).at, 60, "80 is capped at 60");
        assert_eq!(next_attempt(p, 49, 0, 1.0).at, 60, "no overflow for large counts");
    }

    #[test]
    fn jitter_keeps_the_delay_between_half_and_all_of_the_step() {
        assert_eq!(next_attempt(P, 3, 0, 0.0).at, 10);
        assert_eq!(next_attempt(P, 3, 0, 0.5).at, 15);
        assert_eq!(next_attempt(P, 3, 0, 1.0).at, 20);
        assert_eq!(next_attempt(P, 3, 0, 7.0).at, 20, "out-of-range jitter is clamped");
        assert_eq!(next_attempt(P, 3, 0, f64::NAN).at, 20);
    }

    #[test]
    fn the_last_allowed_attempt_marks_the_message_failed_and_waits_the_longest_step() {
        assert!(!next_attempt(P, 4, 0, 1.0).failed);
        let n = next_attempt(P, 5, 0, 1.0);
        assert!(n.failed);
        assert_eq!(n.at, 60);
        assert!(next_attempt(P, 9, 0, 1.0).failed, "still failed, still retried");
    }

    #[test]
    fn a_retry_is_never_immediate_nor_later_than_the_cap() {
        let zero = Backoff { max_attempts: 3, base_seconds: 0, max_seconds: 0 };
        assert_eq!(next_attempt(zero, 1, 100, 0.0).at, 101);
        for n in 1..40 {
            for j in [0.0, 0.3, 1.0] {
                let d = next_attempt(P, n, 0, j).at;
                assert!((1..=60).contains(&d), "attempt {n} jitter {j}: {d}");
            }
        }
    }
}
