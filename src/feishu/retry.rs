//! API client stage: the one retry policy for every call (chat button and token), built on
//! `backon`'s exponential backoff with jitter.
//!
//! What is retried is decided by the caller (429/99991400, 5xx, connection errors and
//! timeouts); this module says how long to wait: the server's `x-ogw-ratelimit-reset` when it
//! gave one, else the next exponential delay, never above `max_delay`.

use std::time::Duration;

use backon::ExponentialBuilder;

/// How often and how patiently a call is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// The first backoff delay before jitter; each later one doubles.
    pub min_delay: Duration,
    /// No wait is longer (jitter included), except a server-given rate-limit reset.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, waits from 0.5 s doubling up to 10 s: about half a minute of patience for
    /// an outage before the call gives up (and the next reconcile tries again).
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The longest a server-given reset is honoured: a bogus header must not hang the run.
pub const MAX_RESET_WAIT: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The backoff `backon` runs: `max_attempts - 1` retries.
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
    }

    /// The wait before the next attempt: `None` when the attempts are used up. `server_wait`
    /// (a rate-limit reset) replaces the exponential delay but still uses up an attempt.
    pub(crate) fn wait(
        &self,
        next: Option<Duration>,
        server_wait: Option<Duration>,
    ) -> Option<Duration> {
        let next = next?;
        Some(match server_wait {
            Some(reset) => reset.min(MAX_RESET_WAIT),
            // backon's jitter adds up to the whole delay on top of it; keep the promised bound.
            None => next.min(self.max_delay),
        })
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn the_backoff_grows_stays_bounded_and_runs_out() {
        let policy = RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        };
        let waits: Vec<Duration> = policy
            .backoff()
            .build()
            .map(|d| policy.wait(Some(d), None).expect("a wait"))
            .collect();
        assert_eq!(waits.len(), 5, "six attempts are five retries");
        assert!(waits[0] >= Duration::from_millis(100));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(400)));
        assert!(waits[4] >= Duration::from_millis(400), "{waits:?}");
    }

    #[test]
    fn a_server_reset_replaces_the_delay_but_not_the_budget() {
        let policy = RetryPolicy::default();
        let one = Duration::from_secs(1);
        assert_eq!(policy.wait(Some(Duration::ZERO), Some(one)), Some(one));
        assert_eq!(policy.wait(None, Some(one)), None);
        assert_eq!(
            policy.wait(Some(Duration::ZERO), Some(Duration::from_secs(3600))),
            Some(MAX_RESET_WAIT)
        );
        assert_eq!(RetryPolicy::none().backoff().build().next(), None);
    }
}
