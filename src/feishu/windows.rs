//! API client stage: the pace of a directory API (batch_get_id, chat members,
//! find_by_department), which Feishu limits by two sliding windows at once: 50 calls in any
//! second and 1000 in any minute, per app and per API.
//!
//! The limiter is the chat-button one, [`Limiter::windowed`]: calls are spaced evenly within the
//! second, and a call that would be the 1001st in a minute waits until the minute's first call
//! is a minute (and a little) old. So up to 1000 calls go at 50 a second, and a longer run
//! settles at the minute's pace without ever earning a 429 from either window. Here: the bound
//! such a run is measured against.

use std::time::Duration;

#[cfg(doc)]
use super::ratelimit::Limiter;

/// The shortest time `calls` calls can take under both windows, from the first call's
/// start to the last one's (what a run of that many calls is measured against).
pub fn bound(per_second: u32, per_minute: u32, calls: usize) -> Duration {
    if calls == 0 {
        return Duration::ZERO;
    }
    let gaps = (calls - 1) as u32;
    let by_second = match per_second {
        0 => Duration::ZERO,
        n => Duration::from_secs(1) * gaps / n,
    };
    let by_minute = match per_minute as usize {
        0 => Duration::ZERO,
        m => {
            let full = (calls - 1) / m;
            let rest = ((calls - 1) % m) as u32;
            let in_last = match per_second {
                0 => Duration::ZERO,
                n => Duration::from_secs(1) * rest / n,
            };
            Duration::from_secs(60) * full as u32 + in_last
        }
    };
    by_second.max(by_minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_slower_window() {
        assert_eq!(bound(50, 1000, 51), Duration::from_secs(1));
        assert_eq!(bound(50, 1000, 1001), Duration::from_secs(60));
        assert_eq!(bound(50, 0, 1001), Duration::from_secs(20));
    }
}
