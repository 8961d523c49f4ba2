//! Time as records and people see it: now as Unix time (the state, the emulator's log), and UTC
//! timestamps as RFC 3339 text, formatted by `humantime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second RFC 3339 can write with a four-digit year (9999-12-31T23:59:59Z): later
/// times (a corrupt or hand-edited state) are shown as it rather than failing to format.
const LAST_WRITABLE_SECOND: u64 = 253_402_300_799;

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn unix_millis_now() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch, now (0 if the clock is before it).
pub fn unix_secs_now() -> u64 {
    since_epoch().map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch, now, with their fraction (for metrics and `/status`).
pub fn unix_secs_f64_now() -> f64 {
    since_epoch().map_or(0.0, |d| d.as_secs_f64())
}

fn since_epoch() -> Option<Duration> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn rfc3339_seconds(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(at(Duration::from_secs(unix_secs))).to_string()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(at(Duration::from_millis(unix_ms))).to_string()
}

/// The instant `since` after the epoch, no later than the last writable second.
fn at(since: Duration) -> SystemTime {
    let last = Duration::from_secs(LAST_WRITABLE_SECOND);
    UNIX_EPOCH + since.min(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_724_931_991_000),
            "2024-08-29T11:46:31.000Z"
        );
        assert_eq!(rfc3339_seconds(1_779_700_000), "2026-05-25T09:06:40Z");
    }

    #[test]
    fn times_past_year_9999_are_shown_as_its_last_second() {
        assert_eq!(rfc3339_seconds(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(u64::MAX), "9999-12-31T23:59:59.000Z");
    }
}
