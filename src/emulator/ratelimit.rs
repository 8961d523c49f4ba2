//! The per-app rate limit: at most N accepted calls in any one-second span (a sliding window,
//! so no burst of 2N across a window boundary). Refused calls do not count.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::ceil_secs;

const WINDOW: Duration = Duration::from_secs(1);

pub struct RateLimiter {
    /// Calls per window; 0 means unlimited.
    limit: u32,
    /// Each app's accepted calls within the last window, oldest first.
    calls: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(limit: u32) -> RateLimiter {
        RateLimiter {
            limit,
            calls: HashMap::new(),
        }
    }

    /// Counts a call of `app_id`, or refuses it with the whole seconds until a call is allowed
    /// again (at least 1, so a client that waits that long does not hit the limit at once).
    pub fn check(&mut self, app_id: &str, now: Instant) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let calls = self.calls.entry(app_id.to_owned()).or_default();
        while calls
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            calls.pop_front();
        }
        if calls.len() < self.limit as usize {
            calls.push_back(now);
            return Ok(());
        }
        let frees_at = calls.front().map_or(now, |t| *t + WINDOW);
        Err(ceil_secs(frees_at.saturating_duration_since(now)).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_per_second_per_app_then_free_again_after_the_window() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(3);
        for i in 0..3 {
            assert_eq!(
                limiter.check("a", t0 + Duration::from_millis(i * 10)),
                Ok(())
            );
        }
        assert_eq!(limiter.check("a", t0 + Duration::from_millis(500)), Err(1));
        assert_eq!(limiter.check("b", t0 + Duration::from_millis(500)), Ok(()));
        // The first call leaves the window at t0 + 1 s; the refused one never counted.
        assert_eq!(limiter.check("a", t0 + Duration::from_millis(1000)), Ok(()));
        assert_eq!(limiter.check("a", t0 + Duration::from_millis(1005)), Err(1));
    }

    #[test]
    fn zero_is_unlimited() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.check("a", now).is_ok()));
    }
}
