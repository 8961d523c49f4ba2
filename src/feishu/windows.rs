//! API client stage: the client-side limiter of one directory API (batch_get_id, chat members,
//! find_by_department), which Feishu limits by two sliding windows at once: 50 calls in any
//! second and 1000 in any minute, per app and per API.
//!
//! Calls are spaced evenly within the second (as the chat-button [`super::ratelimit::Limiter`]
//! does, with the same slack), and a call that would be the 1001st in a minute waits until the
//! minute's first call is a minute (and a little) old. So up to 1000 calls go at 50 a second, and
//! a longer run settles at the minute's pace without ever earning a 429 from either window.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::ratelimit::WINDOW_SLACK;
use crate::sync::guard;

/// Added to the one-minute window: calls counted at arrival may arrive up to this much closer
/// together than they were sent.
pub const MINUTE_SLACK: Duration = Duration::from_millis(250);

pub struct WindowLimiter {
    /// Between two calls; zero when the second is not limited.
    interval: Duration,
    /// Calls in any minute; 0 when the minute is not limited.
    per_minute: usize,
    /// A minute (shorter in tests).
    minute: Duration,
    state: Mutex<State>,
}

struct State {
    next: Instant,
    /// The slots of the last `per_minute` calls, oldest first.
    recent: VecDeque<Instant>,
    /// Set by a 429: no call before this.
    paused_until: Option<Instant>,
}

impl WindowLimiter {
    /// `per_second` and `per_minute` calls at most; 0 lifts that window.
    pub fn new(per_second: u32, per_minute: u32) -> WindowLimiter {
        let interval = match per_second {
            0 => Duration::ZERO,
            n => (Duration::from_secs(1) + WINDOW_SLACK) / n,
        };
        WindowLimiter {
            interval,
            per_minute: per_minute as usize,
            minute: Duration::from_secs(60),
            state: Mutex::new(State {
                next: Instant::now(),
                recent: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        loop {
            let slot = {
                let mut state = guard(&self.state);
                let mut at = state.next.max(Instant::now());
                if let Some(paused) = state.paused_until {
                    at = at.max(paused);
                }
                if self.per_minute > 0 {
                    if state.recent.len() >= self.per_minute
                        && let Some(oldest) = state.recent.front()
                    {
                        at = at.max(*oldest + self.minute + MINUTE_SLACK);
                    }
                    while state.recent.len() >= self.per_minute {
                        state.recent.pop_front();
                    }
                    state.recent.push_back(at);
                }
                state.next = at + self.interval;
                at
            };
            tokio::time::sleep_until(slot).await;
            let paused = guard(&self.state).paused_until;
            if paused.is_none_or(|p| p <= slot) {
                return;
            }
        }
    }

    /// No slot before `until` (the server's `x-ogw-ratelimit-reset`).
    pub fn pause_until(&self, until: Instant) {
        let mut state = guard(&self.state);
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_minute_window_holds_calls_past_its_budget() {
        let limiter = WindowLimiter {
            minute: Duration::from_millis(100),
            ..WindowLimiter::new(0, 3)
        };
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(100) + MINUTE_SLACK);
    }

    #[test]
    fn the_bound_is_the_slower_window() {
        assert_eq!(WindowLimiter::bound(50, 1000, 51), Duration::from_secs(1));
        assert_eq!(
            WindowLimiter::bound(50, 1000, 1001),
            Duration::from_secs(60)
        );
        assert_eq!(WindowLimiter::bound(50, 0, 1001), Duration::from_secs(20));
    }
}
