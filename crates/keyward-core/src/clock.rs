//! Time as a parameter. Every check that depends on "now" (expiry, rotation
//! grace, cache lifetimes, batching) reads a [`Clock`], so tests move time
//! forward instead of sleeping. `SystemTime::now` is banned elsewhere by
//! `clippy.toml`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC. The one time type keyward stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T14:03:57.000Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let ms = self.0.rem_euclid(1000);
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    ms
                )
            }
            // Out of the representable range (year > 9999): never produced by
            // parse_rfc3339, only by arithmetic on absurd inputs.
            Err(_) => String::from("9999-12-31T23:59:59.999Z"),
        }
    }

    /// Parses an RFC 3339 date-time with an offset, e.g. `2027-01-01T00:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, InvalidTimestamp> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| InvalidTimestamp)?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms)
            .map(Timestamp)
            .map_err(|_| InvalidTimestamp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time with an offset (for example 2027-01-31T12:00:00Z)")]
pub struct InvalidTimestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place that reads the wall clock.
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    /// Starts at the current wall-clock time.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now())
    }

    pub fn advance_seconds(&self, seconds: i64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2027-01-31T12:00:00.250+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2027-01-31T11:00:00.250Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        assert!(Timestamp::parse_rfc3339("tomorrow").is_err());
        assert!(Timestamp::parse_rfc3339("2027-01-31").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp(1_000));
        assert_eq!(c.now(), Timestamp(1_000));
        c.advance_seconds(2);
        assert_eq!(c.now(), Timestamp(3_000));
    }
}
