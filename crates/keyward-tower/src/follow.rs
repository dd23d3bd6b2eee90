//! Following the change log from outside a keyward node: which `seq`s
//! were applied, so each change is applied once and a gap (a smaller
//! `seq` that commits after a larger one) is waited for rather than
//! skipped — the rule of the server's own follower.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest a gap in `seq` is waited for before it is taken for a
/// transaction that rolled back (management transactions last
/// milliseconds).
pub(crate) const HOLE_WAIT: Duration = Duration::from_secs(10);
/// How far before the newest `seq` a new reader starts: a change in flight
/// when it started commits below the newest.
pub(crate) const START_OVERLAP: i64 = 1_000;
/// Most `seq`s remembered above a gap; past it the reader moves on.
const MAX_SEEN: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Cursor {
    /// Every change with `seq <= low` was applied.
    low: i64,
    /// Applied changes above `low` (above a gap).
    seen: BTreeSet<i64>,
    hole_since: Option<Instant>,
}

impl Cursor {
    /// A reader of a log whose newest entry is `last`.
    pub(crate) fn starting_at(last: i64) -> Cursor {
        Cursor {
            low: last.saturating_sub(START_OVERLAP).max(0),
            seen: BTreeSet::new(),
            hole_since: None,
        }
    }

    /// Where the next read starts (after this `seq`).
    pub(crate) fn low(&self) -> i64 {
        self.low
    }

    /// Whether a gap is open: then reads come back at once with what was
    /// seen above it, so the reader polls briefly instead of waiting long.
    pub(crate) fn has_hole(&self) -> bool {
        !self.seen.is_empty()
    }

    /// `true` if `seq` is new (apply it), recording it.
    pub(crate) fn take(&mut self, seq: i64) -> bool {
        if seq <= self.low || !self.seen.insert(seq) {
            return false;
        }
        self.advance();
        true
    }

    fn advance(&mut self) {
        while self.seen.first() == Some(&(self.low + 1)) {
            self.seen.pop_first();
            self.low += 1;
        }
        if self.seen.is_empty() {
            self.hole_since = None;
        } else if self.hole_since.is_none() {
            self.hole_since = Some(Instant::now());
        }
    }

    /// Gives up on a gap open longer than `wait` (or one with too much
    /// above it). `true` if the reader skipped changes it had not applied
    /// and should drop its cache (only when too much piled up).
    pub(crate) fn expire_hole(&mut self, wait: Duration) -> bool {
        let stuck = self.hole_since.is_some_and(|t| t.elapsed() >= wait);
        if stuck {
            if let Some(&first) = self.seen.first() {
                self.low = first - 1;
            }
            self.advance();
        }
        if self.seen.len() > MAX_SEEN {
            if let Some(&last) = self.seen.last() {
                self.low = last;
            }
            self.seen.clear();
            self.hole_since = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_taken_once_and_a_gap_holds_the_cursor() {
        let mut c = Cursor::starting_at(1_005);
        assert_eq!(c.low(), 5);
        assert!(c.take(6));
        assert!(!c.take(6), "once");
        assert!(!c.take(3), "below the cursor");
        assert!(c.take(8), "above a gap");
        assert_eq!(c.low(), 6);
        assert!(c.has_hole());
        assert!(!c.expire_hole(HOLE_WAIT));
        assert_eq!(c.low(), 6, "the gap is waited for");
        assert!(c.take(7), "the gap fills");
        assert_eq!(c.low(), 8);
        assert!(!c.has_hole());
        assert!(c.take(10));
        assert!(!c.expire_hole(Duration::ZERO));
        assert_eq!(c.low(), 10, "a gap given up on is skipped");
    }
}
