//! Which failed attempts are sent again, and how long to wait first. Pure:
//! the call loop (`call.rs`) asks, this module answers.
//!
//! A request is sent again only when sending it twice cannot do more than
//! sending it once:
//! - a request that never left (the connection could not be made) may
//!   always be sent again;
//! - reads, and writes that carry an idempotency key (the server records
//!   the first and replays it), may also be sent again after the
//!   connection broke before the answer, or after a 502, 503 or 504;
//! - every other write (creating a key, revoking, rotating, …) and
//!   `verify` are not: keyward has no idempotency for them, so a request
//!   that reached it may have been applied, and `verify` spends rate-limit
//!   tokens and credits on every arrival.
//!
//! Timeouts are not retried: the request was sent and a server that did
//! not answer in time tends not to answer the next time either, so a retry
//! would multiply the caller's wait by the attempts. A caller that wants
//! another try makes another call (with the same idempotency key).

use std::time::Duration;

/// How safe a request is to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Reads, and writes with an idempotency key: again after any failure
    /// but a timeout.
    Safe,
    /// `verify` and writes without idempotency: again only if it was
    /// never sent.
    UnsentOnly,
}

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection: the request did not leave.
    Unsent,
    /// The connection broke after the request was sent.
    Lost,
    /// Sent, and no whole answer in time.
    TimedOut,
    /// An answer with this error status.
    Status(u16),
    /// The request could not be built: sending it again would not help.
    Invalid,
}

/// Whether an attempt that failed so may be sent again.
pub(crate) fn retryable(replay: Replay, failure: Failure) -> bool {
    match failure {
        Failure::Unsent => true,
        Failure::Lost | Failure::Status(502..=504) => replay == Replay::Safe,
        Failure::TimedOut | Failure::Status(_) | Failure::Invalid => false,
    }
}

/// Exponential backoff with jitter: retry `n` waits between half and all
/// of `base · 2^(n-1)`, at most `max`, so that clients that failed
/// together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The wait before retry `retry` (1 for the first), with `unit` in
    /// `[0, 1)` drawn at random.
    pub(crate) fn delay(&self, retry: u32, unit: f64) -> Duration {
        let doubling = retry.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1 << doubling).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before retry `retry`, or `None` if the server asked for
    /// more than `max` (`Retry-After`): the caller is better placed to
    /// wait that long than a client in the middle of a call.
    pub(crate) fn delay_after(
        &self,
        retry: u32,
        unit: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let delay = self.delay(retry, unit);
        match retry_after {
            Some(asked) if asked > self.max => None,
            Some(asked) => Some(delay.max(asked)),
            None => Some(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_never_left_is_always_sent_again() {
        assert!(retryable(Replay::Safe, Failure::Unsent));
        assert!(retryable(Replay::UnsentOnly, Failure::Unsent));
    }

    #[test]
    fn reads_and_keyed_writes_are_sent_again_after_a_lost_answer_or_a_gateway_error() {
        for failure in [
            Failure::Lost,
            Failure::Status(502),
            Failure::Status(503),
            Failure::Status(504),
        ] {
            assert!(retryable(Replay::Safe, failure), "{failure:?}");
        }
    }

    #[test]
    fn verify_and_unkeyed_writes_are_never_sent_twice() {
        for failure in [
            Failure::Lost,
            Failure::TimedOut,
            Failure::Status(502),
            Failure::Status(503),
            Failure::Status(504),
            Failure::Status(500),
        ] {
            assert!(!retryable(Replay::UnsentOnly, failure), "{failure:?}");
        }
    }

    #[test]
    fn timeouts_and_other_statuses_are_not_retried() {
        for failure in [
            Failure::TimedOut,
            Failure::Status(400),
            Failure::Status(409),
            Failure::Status(429),
            Failure::Status(500),
            Failure::Status(501),
            Failure::Status(505),
        ] {
            assert!(!retryable(Replay::Safe, failure), "{failure:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling_with_jitter_in_the_upper_half() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(50));
        assert!(b.delay(1, 0.999_999) < Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(300));
        assert_eq!(b.delay(4, 0.0), Duration::from_millis(400));
        // 100 · 2^4 = 1600, capped at 1000.
        assert_eq!(b.delay(5, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_millis(1000));
        // Out-of-range jitter is clamped, not trusted.
        assert_eq!(b.delay(1, 7.0), Duration::from_millis(100));
    }

    #[test]
    fn retry_after_lengthens_the_wait_and_past_the_ceiling_stops_retrying() {
        let b = Backoff::default();
        assert_eq!(
            b.delay_after(1, 0.0, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(b.delay_after(1, 0.0, None), Some(Duration::from_millis(50)));
        assert_eq!(b.delay_after(1, 0.0, Some(Duration::from_secs(30))), None);
    }
}
