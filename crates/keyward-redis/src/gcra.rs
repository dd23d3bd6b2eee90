//! The GCRA check-and-spend as one Redis script: the same arithmetic as
//! [`keyward_core::ratelimit::spend`], on the TAT stored under the bucket's
//! key, at the Redis server's clock.
//!
//! The script does only additions, comparisons and one write; the divisions
//! that turn its answer into a [`Decision`] (tokens remaining, whole
//! seconds) happen here, in integers. Redis' Lua numbers are doubles, exact
//! for integers below 2⁵³: TATs are microseconds since the epoch (about
//! 1.8·10¹⁵ today) plus at most [`MAX_CAPACITY_US`], so every value the
//! script computes stays exact.

use keyward_core::ratelimit::{Decision, RatePolicy};

/// The check-and-spend. `KEYS[1]`: the bucket. `ARGV[1]`: the bucket's
/// capacity (`burst·T`) in µs; `ARGV[2]`: the request's cost in µs
/// (`cost·T`). Answers `{allowed, used, over, now_ms}`: when allowed, the
/// µs of the bucket in use after the spend; when refused, those in use now
/// and how far past the capacity the spend would have gone.
///
/// `now` is the server's `TIME`, cut to whole milliseconds as keyward's
/// `Timestamp` is, so the script and `ratelimit::spend` agree at the same
/// instant. A key lives until its bucket is full again (`PX`), so idle
/// buckets cost Redis nothing.
pub(crate) const SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local capacity = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + math.floor(tonumber(t[2]) / 1000) * 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
local base = math.min(math.max(tat, now), now + capacity)
local write = nil
if tat > base then write = base end
local used = base - now + cost
local allowed = 0
if used <= capacity then
  allowed = 1
  if cost > 0 then write = base + cost end
end
if write then
  redis.call('SET', KEYS[1], string.format('%.0f', write), 'PX', math.ceil((write - now) / 1000))
end
if allowed == 1 then
  return {1, used, 0, now / 1000}
end
return {0, base - now, used - capacity, now / 1000}
"#;

/// The largest bucket the script handles exactly, in µs (about 142 years):
/// far above any real policy, and low enough that `now + capacity` stays
/// below 2⁵³. A larger `burst·T` is cut to this.
pub(crate) const MAX_CAPACITY_US: u64 = 1 << 52;

/// What the script needs of a policy and a cost, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spend {
    /// Microseconds per token (`T`).
    pub interval_us: u64,
    pub capacity_us: u64,
    pub cost_us: u64,
}

impl Spend {
    pub(crate) fn new(policy: &RatePolicy, cost: u64) -> Spend {
        // The same `T` as keyward-core's (private) `RatePolicy::interval_us`;
        // the equivalence test holds the two together.
        let interval_us = (policy.window_ms.saturating_mul(1000) / policy.limit.max(1)).max(1);
        let capacity_us = policy
            .burst
            .saturating_mul(interval_us)
            .min(MAX_CAPACITY_US);
        // A cost above the burst is refused whatever the state, and its
        // answer does not depend on how far above: one token more will do,
        // and keeps the numbers small.
        let cost_us = cost
            .min(policy.burst.saturating_add(1))
            .saturating_mul(interval_us)
            .min(capacity_us.saturating_add(interval_us));
        Spend {
            interval_us,
            capacity_us,
            cost_us,
        }
    }
}

/// The script's answer: `(allowed, used_us, over_us, now_ms)`.
pub(crate) type Reply = (i64, i64, i64, i64);

/// Turns the script's answer into a [`Decision`], as `ratelimit::spend`
/// computes it.
pub(crate) fn decision(policy: &RatePolicy, cost: u64, s: Spend, reply: Reply) -> Decision {
    let (allowed, used, over, _) = reply;
    let used = u64::try_from(used).unwrap_or(0);
    let remaining = s.capacity_us.saturating_sub(used) / s.interval_us;
    if allowed == 1 {
        Decision {
            allowed: true,
            remaining,
            reset_seconds: ceil_seconds(used),
            retry_after_seconds: 0,
        }
    } else {
        let retry = if cost > policy.burst {
            policy.window_seconds()
        } else {
            ceil_seconds(u64::try_from(over).unwrap_or(0)).max(1)
        };
        Decision {
            allowed: false,
            remaining,
            reset_seconds: ceil_seconds(used),
            retry_after_seconds: retry,
        }
    }
}

fn ceil_seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// The heartbeat. `KEYS[1]`: the node registry (a sorted set of node ids
/// scored by their last beat, in server milliseconds). `ARGV[1]`: this
/// node's id; `ARGV[2]`: the window in ms. Records this node, drops those
/// silent for longer than the window and answers how many are left.
pub(crate) const HEARTBEAT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window * 2)
return redis.call('ZCARD', KEYS[1])
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::clock::Timestamp;
    use keyward_core::ratelimit::spend;

    /// The script's arithmetic, in Rust integers: what `SCRIPT` computes.
    fn script(tat: &mut u64, now_ms: i64, s: Spend) -> Reply {
        let now = u64::try_from(now_ms).unwrap() * 1000;
        let base = (*tat).max(now).min(now + s.capacity_us);
        if *tat > base {
            *tat = base;
        }
        let used = base - now + s.cost_us;
        let reply = if used <= s.capacity_us {
            if s.cost_us > 0 {
                *tat = base + s.cost_us;
            }
            (1, used, 0, now_ms)
        } else {
            (0, base - now, used - s.capacity_us, now_ms)
        };
        let (a, b, c, d) = reply;
        (a, i64::try_from(b).unwrap(), i64::try_from(c).unwrap(), d)
    }

    #[test]
    fn decisions_match_the_core_for_every_cost_and_a_policy_change() {
        let policies = [
            RatePolicy::new("a", 10, 60_000, 10).unwrap(),
            RatePolicy::new("b", 3, 10_000, 5).unwrap(),
            RatePolicy::new("c", 1000, 1_000, 1000).unwrap(),
            RatePolicy::new("d", 7, 1_000, 2).unwrap(),
        ];
        let (mut core_tat, mut script_tat) = (0u64, 0u64);
        let mut now = 1_700_000_000_000i64;
        for step in 0..4000u64 {
            let p = &policies[(step / 500) as usize % policies.len()];
            let cost = step % 13;
            now += i64::try_from(step % 7 * 37).unwrap();
            let want = spend(p, &mut core_tat, Timestamp(now), cost);
            let s = Spend::new(p, cost);
            let got = decision(p, cost, s, script(&mut script_tat, now, s));
            assert_eq!(got, want, "step {step}, policy {}, cost {cost}", p.name);
            assert_eq!(script_tat, core_tat, "step {step}");
        }
    }

    #[test]
    fn huge_costs_stay_small_numbers() {
        let p = RatePolicy::new("a", 10, 60_000, 10).unwrap();
        let s = Spend::new(&p, u64::MAX);
        assert_eq!(s.cost_us, 11 * 6_000_000);
        let d = decision(&p, u64::MAX, s, script(&mut 0, 0, s));
        assert!(!d.allowed);
        assert_eq!(d.retry_after_seconds, 60);
        assert_eq!(d.remaining, 10);
    }
}
