//! Local decisions while Redis is unreachable: an in-process
//! [`MemoryLimiter`] whose policies are each tier's share for one node
//! (limit and burst divided by the live node count last seen, at least 1),
//! so the nodes together admit about what one Redis-backed limiter would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::{Decision, RatePolicy};
use keyward_limits::MemoryLimiter;

/// Scaled policies are few (tiers and keys' own limits seen while degraded);
/// past this many the cache starts over rather than grow.
const MAX_SCALED: usize = 1024;

/// The policy a scaled one was made from, and the node count it is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScaleKey {
    name: Arc<str>,
    limit: u64,
    window_ms: u64,
    burst: u64,
    nodes: u64,
}

#[derive(Default)]
pub(crate) struct Fallback {
    limiter: MemoryLimiter,
    scaled: Mutex<HashMap<ScaleKey, RatePolicy>>,
}

impl Fallback {
    /// Decides locally with `policy`'s share for one of `nodes` nodes.
    pub(crate) fn decide(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
        nodes: u64,
    ) -> Decision {
        if nodes <= 1 {
            return self.limiter.decide(bucket, policy, cost, now);
        }
        let share = self.share(policy, nodes);
        self.limiter.decide(bucket, &share, cost, now)
    }

    /// `policy` with limit and burst divided by `nodes` (at least 1), made
    /// once per policy and node count: a clone after that is two reference
    /// counts, no allocation.
    fn share(&self, policy: &RatePolicy, nodes: u64) -> RatePolicy {
        let key = ScaleKey {
            name: Arc::clone(&policy.name),
            limit: policy.limit,
            window_ms: policy.window_ms,
            burst: policy.burst,
            nodes,
        };
        let mut scaled = self.scaled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = scaled.get(&key) {
            return p.clone();
        }
        if scaled.len() >= MAX_SCALED {
            scaled.clear();
        }
        // A smaller limit over the same window is a longer interval, which
        // `RatePolicy::new` always accepts; the original serves if not.
        let p = RatePolicy::new(
            Arc::clone(&policy.name),
            (policy.limit / nodes).max(1),
            policy.window_ms,
            (policy.burst / nodes).max(1),
        )
        .unwrap_or_else(|_| policy.clone());
        scaled.insert(key, p.clone());
        p
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.scaled.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_admits_its_share() {
        let f = Fallback::default();
        let p = RatePolicy::new("t", 100, 60_000, 100).unwrap();
        let now = Timestamp(1_700_000_000_000);
        let admitted = (0..200)
            .filter(|_| f.decide("key_a", &p, 1, now, 4).allowed)
            .count();
        assert_eq!(admitted, 25);
        // Never below one token per window.
        let admitted = (0..10)
            .filter(|_| f.decide("key_b", &p, 1, now, 1000).allowed)
            .count();
        assert_eq!(admitted, 1);
        let admitted = (0..200)
            .filter(|_| f.decide("key_c", &p, 1, now, 1).allowed)
            .count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn scaled_policies_are_made_once_and_bounded() {
        let f = Fallback::default();
        let p = RatePolicy::new("t", 100, 60_000, 100).unwrap();
        let now = Timestamp(0);
        for _ in 0..10 {
            f.decide("k", &p, 0, now, 3);
        }
        assert_eq!(f.cached(), 1);
        for limit in 1..=(MAX_SCALED as u64 + 10) {
            let p = RatePolicy::new("t", limit, 60_000, limit).unwrap();
            f.decide("k", &p, 0, now, 2);
        }
        assert!(f.cached() <= MAX_SCALED);
    }
}
