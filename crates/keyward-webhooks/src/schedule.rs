//! When a failed delivery is tried again.
//!
//! A [`RetrySchedule`] lists the delays AFTER each failed attempt; the first
//! attempt is immediate, so a schedule of n delays allows n + 1 attempts.
//! The default is the crate doc's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h,
//! 8 attempts over about 27.6 hours. Each delay is spread ±20 % by a jitter
//! the caller draws from its entropy, so endpoints that failed together do
//! not all come back at the same instant.

use std::time::Duration;

/// Delays after each failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        RetrySchedule(
            [
                5,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

impl RetrySchedule {
    /// A schedule of the given delays.
    pub fn new(delays: Vec<Duration>) -> RetrySchedule {
        RetrySchedule(delays)
    }

    /// A schedule in milliseconds (sub-second delays for tests).
    pub fn from_millis(delays: &[u64]) -> RetrySchedule {
        RetrySchedule(delays.iter().copied().map(Duration::from_millis).collect())
    }

    /// The delays, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// How many attempts a message gets in all: the first and one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// How long to wait after `attempts_made` attempts have failed, or
    /// `None` to give up. `jitter` in `0..=1` (from the caller's entropy)
    /// scales the delay by `0.8 + 0.4 × jitter`; values outside are clamped.
    /// With no attempt made yet the answer is zero: the first is immediate.
    pub fn after_attempt(&self, attempts_made: u32, jitter: f64) -> Option<Duration> {
        let Some(index) = attempts_made.checked_sub(1) else {
            return Some(Duration::ZERO);
        };
        let delay = *self.0.get(usize::try_from(index).ok()?)?;
        let jitter = if jitter.is_nan() {
            0.5
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // `mul_f64` panics on overflow; a delay near `Duration::MAX` keeps
        // its unjittered value instead.
        Some(
            Duration::try_from_secs_f64(delay.as_secs_f64() * (0.8 + 0.4 * jitter))
                .unwrap_or(delay),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_eight_attempts_over_about_27_6_hours() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 8);
        let total: Duration = s.delays().iter().sum();
        assert_eq!(
            total,
            Duration::from_secs(5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000)
        );
        assert!((total.as_secs_f64() / 3600.0 - 27.6).abs() < 0.05);
        assert_eq!(s.after_attempt(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.after_attempt(2, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(s.after_attempt(7, 0.5), Some(Duration::from_secs(36000)));
        assert_eq!(s.after_attempt(8, 0.5), None);
        assert_eq!(s.after_attempt(u32::MAX, 0.5), None);
    }

    #[test]
    fn first_attempt_is_immediate() {
        assert_eq!(
            RetrySchedule::default().after_attempt(0, 0.9),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn jitter_spreads_twenty_percent_each_way() {
        let s = RetrySchedule::from_millis(&[1000]);
        assert_eq!(s.after_attempt(1, 0.0), Some(Duration::from_millis(800)));
        assert_eq!(s.after_attempt(1, 1.0), Some(Duration::from_millis(1200)));
        assert_eq!(s.after_attempt(1, 0.5), Some(Duration::from_millis(1000)));
        assert_eq!(s.after_attempt(1, -3.0), Some(Duration::from_millis(800)));
        assert_eq!(s.after_attempt(1, 7.0), Some(Duration::from_millis(1200)));
        assert_eq!(
            s.after_attempt(1, f64::NAN),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(s.after_attempt(2, 0.5), None);
    }

    #[test]
    fn sub_second_schedules_for_tests() {
        let s = RetrySchedule::from_millis(&[10, 20, 30]);
        assert_eq!(s.max_attempts(), 4);
        assert_eq!(s.after_attempt(3, 0.5), Some(Duration::from_millis(30)));
        assert_eq!(s.after_attempt(4, 0.5), None);
        let none = RetrySchedule::from_millis(&[]);
        assert_eq!(none.max_attempts(), 1);
        assert_eq!(none.after_attempt(1, 0.5), None);
        let huge = RetrySchedule::new(vec![Duration::MAX]);
        assert_eq!(huge.after_attempt(1, 1.0), Some(Duration::MAX));
    }
}
