//! Rate limiting by GCRA (the generic cell rate algorithm): a token bucket
//! kept as one number per bucket, the *theoretical arrival time* (TAT).
//!
//! A policy of `limit` tokens per `window` refills one token every
//! `window / limit` (the emission interval `T`) and holds at most `burst`
//! tokens. Spending `cost` tokens at `now` moves the TAT to
//! `max(TAT, now) + cost·T`, and is allowed only if that stays within
//! `burst·T` of `now`. Check and spend are one step on one number, which is
//! what makes the limit exact under concurrency: whoever holds the bucket's
//! lock (or runs the Redis script) decides and spends at once.
//!
//! Everything here is integer microseconds; no floating point.

use crate::clock::Timestamp;

/// A named rate-limit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePolicy {
    /// Shown in the `RateLimit-Policy` / `RateLimit` fields (shared, so
    /// reporting it per request costs no allocation).
    pub name: std::sync::Arc<str>,
    /// Tokens per window.
    pub limit: u64,
    pub window_ms: u64,
    /// Most tokens that can be spent at once (bucket size); usually `limit`.
    pub burst: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("limit must be at least 1")]
    ZeroLimit,
    #[error("window must be at least 1 ms")]
    ZeroWindow,
    #[error("burst must be at least 1")]
    ZeroBurst,
    #[error("window / limit must be at least 1 µs (at most a million tokens per second)")]
    TooFast,
}

impl RatePolicy {
    pub fn new(
        name: impl Into<std::sync::Arc<str>>,
        limit: u64,
        window_ms: u64,
        burst: u64,
    ) -> Result<RatePolicy, PolicyError> {
        if limit == 0 {
            return Err(PolicyError::ZeroLimit);
        }
        if window_ms == 0 {
            return Err(PolicyError::ZeroWindow);
        }
        if burst == 0 {
            return Err(PolicyError::ZeroBurst);
        }
        if window_ms.saturating_mul(1000) / limit == 0 {
            return Err(PolicyError::TooFast);
        }
        Ok(RatePolicy {
            name: name.into(),
            limit,
            window_ms,
            burst,
        })
    }

    /// Microseconds per token.
    fn interval_us(&self) -> u64 {
        (self.window_ms.saturating_mul(1000) / self.limit).max(1)
    }

    /// The window in whole seconds (at least 1), for `w=`.
    pub fn window_seconds(&self) -> u64 {
        self.window_ms.div_ceil(1000).max(1)
    }
}

/// The state of one bucket: its theoretical arrival time, in µs since the
/// epoch. `0` is a full bucket.
pub type Tat = u64;

/// The result of [`spend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// Seconds until the bucket is full again (the `t=` parameter).
    pub reset_seconds: u64,
    /// When refused: whole seconds after which the same request would be
    /// allowed, if nothing else spends meanwhile. A cost above the burst can
    /// never be allowed; it answers the window.
    pub retry_after_seconds: u64,
}

fn ceil_seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Checks and, if allowed, spends `cost` tokens of `policy` at `now`,
/// updating `tat` in place. A cost of 0 only reports the state.
pub fn spend(policy: &RatePolicy, tat: &mut Tat, now: Timestamp, cost: u64) -> Decision {
    let t = policy.interval_us();
    let now_us = u64::try_from(now.0).unwrap_or(0).saturating_mul(1000);
    let capacity = policy.burst.saturating_mul(t);
    // A bucket holds at most `burst` tokens of debt under the policy in
    // force: after a reload made the policy faster, debt run up under the
    // slower one counts as an empty bucket of the new size, no more. Under
    // one policy the TAT never gets further ahead than that.
    let base = (*tat).max(now_us).min(now_us.saturating_add(capacity));
    if *tat > base {
        // Kept, so the new-size bucket refills from now at the new rate.
        *tat = base;
    }
    let new_tat = base.saturating_add(cost.saturating_mul(t));
    let used_after = new_tat - now_us;
    if used_after <= capacity {
        if cost > 0 {
            *tat = new_tat;
        }
        Decision {
            allowed: true,
            remaining: (capacity - used_after) / t,
            reset_seconds: ceil_seconds(used_after),
            retry_after_seconds: 0,
        }
    } else {
        let used_now = base - now_us;
        let retry = if cost > policy.burst {
            policy.window_seconds()
        } else {
            ceil_seconds(used_after - capacity).max(1)
        };
        Decision {
            allowed: false,
            remaining: capacity.saturating_sub(used_now) / t,
            reset_seconds: ceil_seconds(used_now),
            retry_after_seconds: retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn a_full_bucket_admits_exactly_burst_then_refuses() {
        let p = RatePolicy::new("t", 10, 60_000, 10).unwrap();
        let mut tat = 0;
        let now = at(1_700_000_000_000);
        let admitted = (0..25)
            .filter(|_| spend(&p, &mut tat, now, 1).allowed)
            .count();
        assert_eq!(admitted, 10);
        let d = spend(&p, &mut tat, now, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_seconds, 6, "one token every 6 s");
        assert_eq!(d.reset_seconds, 60);
    }

    #[test]
    fn retry_after_is_honest() {
        let p = RatePolicy::new("t", 3, 10_000, 3).unwrap();
        let mut tat = 0;
        let mut now = at(1_000_000);
        for cost in [1, 2, 3] {
            while spend(&p, &mut tat, now, cost).allowed {}
            let d = spend(&p, &mut tat, now, cost);
            assert!(!d.allowed);
            let later = at(now.0 + i64::try_from(d.retry_after_seconds * 1000).unwrap());
            let mut probe = tat;
            assert!(spend(&p, &mut probe, later, cost).allowed, "cost {cost}");
            // And not much earlier: one second before, it is still refused.
            let before = at(later.0 - 1000);
            let mut probe = tat;
            assert!(!spend(&p, &mut probe, before, cost).allowed, "cost {cost}");
            now = later;
        }
    }

    #[test]
    fn cost_spends_several_tokens_and_zero_only_reports() {
        let p = RatePolicy::new("t", 100, 1_000, 100).unwrap();
        let mut tat = 0;
        let now = at(5_000);
        assert_eq!(spend(&p, &mut tat, now, 0).remaining, 100);
        assert_eq!(tat, 0, "cost 0 spends nothing");
        let d = spend(&p, &mut tat, now, 30);
        assert!(d.allowed);
        assert_eq!(d.remaining, 70);
        assert!(!spend(&p, &mut tat, now, 71).allowed);
        assert!(spend(&p, &mut tat, now, 70).allowed);
    }

    #[test]
    fn a_new_policy_takes_over_a_bucket_at_its_own_rate() {
        // Slow: 2 per minute, both spent (30 s of debt each).
        let slow = RatePolicy::new("t", 2, 60_000, 2).unwrap();
        let mut tat = 0;
        for _ in 0..2 {
            assert!(spend(&slow, &mut tat, at(0), 1).allowed);
        }
        assert!(!spend(&slow, &mut tat, at(0), 1).allowed);
        // Faster (10 per second): the minute of debt counts as one empty
        // bucket of the new size, which refills at the new rate.
        let fast = RatePolicy::new("t", 10, 1_000, 10).unwrap();
        let d = spend(&fast, &mut tat, at(0), 1);
        assert!(!d.allowed);
        assert_eq!(
            (d.remaining, d.reset_seconds, d.retry_after_seconds),
            (0, 1, 1)
        );
        assert!(spend(&fast, &mut tat, at(100), 1).allowed);
        // Slower again: debt run up under the fast policy carries over in
        // time, and the new burst bounds what is left.
        let d = spend(&slow, &mut tat, at(100), 0);
        assert_eq!(d.remaining, 1);
    }

    #[test]
    fn tokens_come_back_over_time() {
        let p = RatePolicy::new("t", 10, 1_000, 10).unwrap();
        let mut tat = 0;
        let now = at(10_000);
        while spend(&p, &mut tat, now, 1).allowed {}
        assert!(!spend(&p, &mut tat, at(10_099), 1).allowed);
        assert!(spend(&p, &mut tat, at(10_100), 1).allowed);
        let full = spend(&p, &mut tat, at(20_000), 0);
        assert_eq!(full.remaining, 10);
    }

    #[test]
    fn a_cost_above_the_burst_is_never_allowed() {
        let p = RatePolicy::new("t", 5, 60_000, 5).unwrap();
        let mut tat = 0;
        let d = spend(&p, &mut tat, at(0), 6);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_seconds, 60);
        assert_eq!(tat, 0);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(RatePolicy::new("t", 0, 1, 1).is_err());
        assert!(RatePolicy::new("t", 1, 0, 1).is_err());
        assert!(RatePolicy::new("t", 1, 1, 0).is_err());
        assert!(RatePolicy::new("t", 10_000, 1, 1).is_err());
    }
}
