//! API client stage: the client-side rate limiter every HTTP attempt passes through.
//!
//! Calls are spaced evenly (`next allowed instant = last + interval`), so there is never a burst
//! above the rate, even after an idle spell (a token bucket would allow one). Each caller
//! reserves its instant under a short lock and sleeps outside it, so calls wait in arrival order
//! and many can be in flight at once: with 200 ms latency, 10 calls a second still go out.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::guard;

/// Added to each one-second window, spread over its slots. Feishu counts calls when they
/// arrive, and two calls sent exactly one second apart can arrive less than a second apart
/// (connection setup, scheduling, the network), which a sliding window throttles. At 10 calls a
/// second the spacing is 103 ms instead of 100 ms: 3% of throughput buys 30 ms of tolerance per
/// window, where a single 429 costs at least a second. (Apply must stay within 5% of the ideal
/// `calls / rate`, so the slack stays under that.)
pub const WINDOW_SLACK: Duration = Duration::from_millis(30);

/// Added to a one-minute window: calls counted at arrival may arrive up to this much closer
/// together than they were sent.
pub const MINUTE_SLACK: Duration = Duration::from_millis(250);

pub struct Limiter {
    /// Between two calls; zero when unlimited.
    interval: Duration,
    /// Calls in any minute; 0 when the minute is not limited (see [`Limiter::windowed`]).
    per_minute: usize,
    /// A minute (shorter in tests).
    minute: Duration,
    state: Mutex<State>,
    /// A budget shared with the app's other callers, if any: it sets the pace instead.
    shared: Option<SharedBudget>,
}

/// A calls-per-second budget shared with other processes: the API's limit is the app's,
/// whoever calls with it.
pub trait Budget: Send + Sync {
    /// Reserves the app's next slot: how long to wait before the call may go.
    fn reserve(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Duration, String>> + Send + '_>>;
}

/// A shared [`Budget`], for the client's configuration.
#[derive(Clone)]
pub struct SharedBudget(pub std::sync::Arc<dyn Budget>);

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedBudget")
    }
}

struct State {
    /// The earliest instant the next reservation may have.
    next: Instant,
    /// Set by a 429: no call before this (the server said when its window frees).
    paused_until: Option<Instant>,
    /// With a minute window: the slots of the last `per_minute` calls, oldest first.
    recent: VecDeque<Instant>,
    /// The shared budget could not be reached at the last try (said once, not per call).
    shared_down: bool,
}

impl Limiter {
    /// `per_second` calls a second at most; 0 is unlimited (pauses still apply).
    pub fn new(per_second: u32) -> Limiter {
        let interval = match per_second {
            0 => Duration::ZERO,
            n => (Duration::from_secs(1) + WINDOW_SLACK) / n,
        };
        Limiter {
            interval,
            per_minute: 0,
            minute: Duration::from_secs(60),
            state: Mutex::new(State {
                next: Instant::now(),
                paused_until: None,
                recent: VecDeque::new(),
                shared_down: false,
            }),
            shared: None,
        }
    }

    /// A limiter of two sliding windows at once, as Feishu limits its directory APIs:
    /// `per_second` calls in any second and `per_minute` in any minute (0 lifts either). Calls
    /// are spaced evenly within the second, and one that would exceed the minute's budget
    /// waits until the minute's first call is a minute (and [`MINUTE_SLACK`]) old: so a run
    /// goes at the second's pace until the minute's budget is spent, then at the minute's.
    pub fn windowed(per_second: u32, per_minute: u32) -> Limiter {
        Limiter {
            per_minute: per_minute as usize,
            ..Limiter::new(per_second)
        }
    }

    /// A limiter that takes its slots from `shared`, and falls back to its own pace when the
    /// shared budget cannot be reached.
    pub fn shared(per_second: u32, shared: Option<SharedBudget>) -> Limiter {
        Limiter {
            shared,
            ..Limiter::new(per_second)
        }
    }

    /// The spacing between two calls.
    #[cfg(test)]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        if let Some(shared) = &self.shared {
            // A pause after a 429 holds for every call of this process.
            let paused = guard(&self.state).paused_until;
            if let Some(p) = paused {
                tokio::time::sleep_until(p).await;
            }
            match shared.0.reserve().await {
                Ok(wait) => {
                    if std::mem::take(&mut guard(&self.state).shared_down) {
                        tracing::info!("the shared rate budget is back");
                    }
                    tokio::time::sleep(wait).await;
                    return;
                }
                Err(why) => {
                    if !std::mem::replace(&mut guard(&self.state).shared_down, true) {
                        tracing::warn!(%why, "the shared rate budget cannot be reached; pacing this process alone");
                    }
                }
            }
        }
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
            // A 429 seen by another call while this one slept means the server's window is full
            // until the pause ends: sending now would only earn another 429.
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn calls_are_spaced_evenly_with_no_initial_burst() {
        let limiter = Limiter::new(50);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        assert!(times[0] < Duration::from_millis(50), "{times:?}");
        // Slots, not wake-ups, are spaced (a late wake-up does not push the next slot back),
        // so each call comes at least its number of intervals after the start.
        for (i, t) in times.iter().enumerate() {
            assert!(*t >= limiter.interval() * i as u32, "{times:?}");
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_the_rate() {
        let limiter = Arc::new(Limiter::new(100));
        let start = Instant::now();
        let tasks: Vec<_> = (0..11)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        // Ten intervals after the first slot.
        assert!(start.elapsed() >= limiter.interval() * 10);
    }

    #[tokio::test]
    async fn the_minute_window_holds_calls_past_its_budget() {
        let limiter = Limiter {
            minute: Duration::from_millis(100),
            ..Limiter::windowed(0, 3)
        };
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(100) + MINUTE_SLACK);
    }

    #[tokio::test]
    async fn a_pause_holds_back_callers_already_waiting() {
        let limiter = Arc::new(Limiter::new(0));
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_millis(80));
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(80));

        let limiter = Arc::new(Limiter::new(20));
        let start = Instant::now();
        limiter.acquire().await;
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await })
        };
        // The waiting caller's slot is 51.5 ms away; a pause to 150 ms moves it past that.
        limiter.pause_until(start + Duration::from_millis(150));
        waiting.await.expect("task");
        assert!(start.elapsed() >= Duration::from_millis(150));
    }
}
