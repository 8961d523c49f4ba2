//! What goes wrong in the daemon, and what it leads to: why it did not start ([`StartError`]),
//! why one reconcile did not succeed ([`ReconcileError`]), and the error policy that turns the
//! latter into the next reconcile ([`error_policy`], with the one [`Backoff`]).

use std::path::PathBuf;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

use super::metrics::Outcome;
use super::reconcile::Requeue;
use crate::config;
use crate::feishu::client::CallError;
use crate::state::StateError;

/// Why the daemon did not start. Nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The default state would live inside a directory that a sync tool replaces.
    #[error(
        "{} passes through the symbolic link {} (a synced checkout swaps such links to publish a revision): a state inside it would vanish with the revision; keep the state elsewhere with --state PATH or FEEDBUTTONS_STATE; nothing was applied",
        dir.display(),
        link.display()
    )]
    StateInsideLink { dir: PathBuf, link: PathBuf },
    /// The state cannot be opened, is locked by another writer, or belongs to another app.
    #[error("{0}; nothing was applied")]
    State(#[from] StateError),
    /// The health and metrics address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers cannot be installed.
    #[error("cannot wait for SIGTERM/SIGINT: {0}")]
    Signal(#[source] std::io::Error),
}

/// Why one reconcile did not end in success. Each says what was (not) applied.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The config directory cannot be read at all (missing, unreadable).
    #[error("{0}; nothing was applied")]
    Load(#[from] config::LoadError),
    /// The config has errors: nothing is applied until it is fixed.
    #[error(
        "the config has {errors} error(s); nothing was applied and the last good config stays applied (see `feedbuttons validate`)"
    )]
    InvalidConfig { errors: usize },
    /// The lock's open_ids are another app's: nothing is applied until the lock is resolved
    /// for this one.
    #[error("{0}; nothing was applied")]
    OtherAppsIds(#[from] crate::desired::OtherAppsIds),
    /// The plan trips the mass-removal guard and the daemon was started without
    /// `--allow-mass-removal`.
    #[error(
        "mass removal refused: {reason}; nothing was applied (start the daemon with --allow-mass-removal if this is intended)"
    )]
    MassRemoval { reason: String },
    /// The credentials check before the first call failed.
    #[error("{0}; nothing was applied")]
    Credentials(#[source] CallError),
    /// The state could not be locked, bound or written.
    #[error("{0}")]
    State(#[from] StateError),
    /// Some calls or users failed, or were not sent; the successes are recorded.
    #[error("{pending} target change(s) not applied: {why}")]
    Incomplete { pending: usize, why: String },
    /// Reading the config ended in a panic (a bug): retried with backoff like any failure.
    #[error("internal error while reading the config: {0}")]
    LoadPanicked(#[source] tokio::task::JoinError),
}

impl ReconcileError {
    /// The `outcome` label this error is counted under.
    pub fn outcome(&self) -> Outcome {
        match self {
            ReconcileError::InvalidConfig { .. } | ReconcileError::OtherAppsIds(_) => {
                Outcome::InvalidConfig
            }
            ReconcileError::MassRemoval { .. } => Outcome::MassRemovalBlocked,
            ReconcileError::Incomplete { .. } => Outcome::Failed,
            ReconcileError::Load(_)
            | ReconcileError::Credentials(_)
            | ReconcileError::State(_)
            | ReconcileError::LoadPanicked(_) => Outcome::Error,
        }
    }

    /// Whether only a change to the config can help: retrying the same config cannot.
    pub fn needs_a_change(&self) -> bool {
        matches!(
            self,
            ReconcileError::InvalidConfig { .. }
                | ReconcileError::OtherAppsIds(_)
                | ReconcileError::MassRemoval { .. }
        )
    }
}

/// What a failed reconcile leads to: a config problem waits for a change (retrying cannot fix
/// it); anything else is tried again after a growing delay.
pub fn error_policy(error: &ReconcileError, next_delay: impl FnOnce() -> Duration) -> Requeue {
    if error.needs_a_change() {
        Requeue::OnChange
    } else {
        Requeue::After(next_delay())
    }
}

/// The one backoff policy for failed reconciles: exponential from 1 s with jitter, capped.
pub struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        let max = max.max(Duration::from_secs(1));
        let builder = ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(max)
            .without_max_times();
        Backoff {
            current: builder.build(),
            builder,
            max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(self.max).min(self.max)
    }

    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_wait_for_a_change_and_the_rest_back_off() {
        let invalid = ReconcileError::InvalidConfig { errors: 2 };
        assert_eq!(
            error_policy(&invalid, || Duration::from_secs(9)),
            Requeue::OnChange
        );
        let mass = ReconcileError::MassRemoval {
            reason: "all of them".to_owned(),
        };
        assert_eq!(error_policy(&mass, || Duration::ZERO), Requeue::OnChange);
        let partial = ReconcileError::Incomplete {
            pending: 1,
            why: "x".to_owned(),
        };
        assert_eq!(
            error_policy(&partial, || Duration::from_secs(4)),
            Requeue::After(Duration::from_secs(4))
        );
    }

    #[test]
    fn backoff_grows_and_is_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_secs(1), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(8)),
            "{delays:?}"
        );
        assert!(delays[7] >= Duration::from_secs(4), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(2));
    }
}
