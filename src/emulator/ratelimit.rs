//! Per-app rate limits: at most N accepted calls in any span of one window (a sliding window,
//! so no burst of 2N across a window boundary). Refused calls do not count.
//!
//! The chat-button call has one window (10 a second); the directory calls have two that both
//! apply (50 a second and 1000 a minute), each API with its own budget ([`Layered`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::ceil_secs;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    /// Calls per window; 0 means unlimited.
    limit: u32,
    window: Duration,
    /// Each key's accepted calls within the last window, oldest first.
    calls: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    /// `limit` calls per second.
    pub fn new(limit: u32) -> RateLimiter {
        RateLimiter::per(limit, SECOND)
    }

    /// `limit` calls per `window`.
    pub fn per(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit,
            window,
            calls: HashMap::new(),
        }
    }

    /// Counts a call of `key`, or refuses it with the whole seconds until a call is allowed
    /// again (at least 1, so a client that waits that long does not hit the limit at once).
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), u64> {
        self.room(key, now)?;
        self.record(key, now);
        Ok(())
    }

    /// Whether a call now would be accepted, without counting it.
    fn room(&mut self, key: &str, now: Instant) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let window = self.window;
        let Some(calls) = self.calls.get_mut(key) else {
            return Ok(());
        };
        while calls
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            calls.pop_front();
        }
        if calls.len() < self.limit as usize {
            return Ok(());
        }
        let frees_at = calls.front().map_or(now, |t| *t + window);
        Err(ceil_secs(frees_at.saturating_duration_since(now)).max(1))
    }

    fn record(&mut self, key: &str, now: Instant) {
        if self.limit > 0 {
            self.calls.entry(key.to_owned()).or_default().push_back(now);
        }
    }
}

/// A refused call: the cap of the window that refused it and the seconds until it has room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub limit: u32,
    pub reset_secs: u64,
}

/// Several windows that all apply: a call is accepted only when every window has room, and
/// then counts in every window.
pub struct Layered {
    layers: Vec<RateLimiter>,
}

impl Layered {
    /// `per_second` a second and `per_minute` a minute (0: that window is unlimited).
    pub fn second_and_minute(per_second: u32, per_minute: u32) -> Layered {
        Layered {
            layers: vec![
                RateLimiter::per(per_second, SECOND),
                RateLimiter::per(per_minute, MINUTE),
            ],
        }
    }

    /// Counts a call of `key`, or refuses it naming the window that holds it back longest:
    /// waiting its `reset_secs` is enough for every window.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Throttled> {
        let mut refused: Option<Throttled> = None;
        for layer in &mut self.layers {
            if let Err(reset_secs) = layer.room(key, now)
                && refused.is_none_or(|r| reset_secs > r.reset_secs)
            {
                refused = Some(Throttled {
                    limit: layer.limit,
                    reset_secs,
                });
            }
        }
        if let Some(refused) = refused {
            return Err(refused);
        }
        for layer in &mut self.layers {
            layer.record(key, now);
        }
        Ok(())
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

    #[test]
    fn both_windows_apply_and_a_refusal_names_the_longer_wait() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut limiter = Layered::second_and_minute(2, 3);
        assert_eq!(limiter.check("a", at(0)), Ok(()));
        assert_eq!(limiter.check("a", at(10)), Ok(()));
        // The second's window is full.
        assert_eq!(
            limiter.check("a", at(20)),
            Err(Throttled {
                limit: 2,
                reset_secs: 1
            })
        );
        assert_eq!(limiter.check("a", at(1000)), Ok(()));
        // Now the minute's window is full (3), though the second has room: wait ~59 s.
        assert_eq!(
            limiter.check("a", at(2500)),
            Err(Throttled {
                limit: 3,
                reset_secs: 58
            })
        );
        // A refused call counted nowhere: once the minute frees, calls go through again.
        assert_eq!(limiter.check("a", at(60_000)), Ok(()));
        assert_eq!(limiter.check("b", at(2500)), Ok(()));
    }
}
