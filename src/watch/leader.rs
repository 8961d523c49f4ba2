//! Leadership of a shared state, as Kubernetes' leader election but on the state's own lock:
//! with a PostgreSQL state, several replicas of the daemon run; the one that holds the state's
//! writer lock leads (reconciles, sends, records), the others stand by and try to take the lock
//! every [`STANDBY_POLL`]. The lock goes when the leader stops, dies (its session ends) or loses
//! the database (its session is cut, or its lease runs out); the first standby to try next
//! takes it, waits until none of the old leader's calls can still land (the store says how
//! long), and reconciles at once.
//!
//! A leader that loses the lock stops sending at once (the apply loop watches the same signal)
//! and stands by in turn. A state file has one writer per machine and no standbys: a second
//! daemon on it refuses to start.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::controller::Controller;
use super::http::Role;
use crate::state::{self, StateError, StateWriter};
use crate::sync::guard;

/// How often a standby tries to take the lead: with the leader's session ending at once when
/// it dies, a standby takes over within this (plus the wait for the old leader's calls).
pub const STANDBY_POLL: Duration = Duration::from_secs(1);

/// How long a replica that lost the lock waits before it tries to lead again: a replica whose
/// database connection broke is the likelier one to be in trouble, so a healthy standby
/// (trying every [`STANDBY_POLL`]) takes over first.
pub const STEP_DOWN_PAUSE: Duration = Duration::from_secs(3);

/// What a try to lead came to.
#[derive(Debug)]
pub enum Lead {
    /// This replica holds the lock now.
    Took,
    /// Another replica leads.
    Standby,
}

impl Controller {
    /// Tries to take the state's writer lock once: leads when it is free (and the state is this
    /// app's), stands by when another replica holds it or the database cannot be reached.
    pub async fn try_lead(&mut self) -> Lead {
        if self
            .lead_after
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return Lead::Standby;
        }
        let store = Arc::clone(&self.store);
        let taken = tokio::task::spawn_blocking(move || store.writer(&state::holder("watch")))
            .await
            .unwrap_or_else(|e| {
                Err(StateError::Database {
                    location: self.store.location(),
                    action: "take the lock",
                    why: format!("the lock's task ended: {e}"),
                })
            });
        let writer = match taken {
            Ok(writer) => match writer.state().check_binding(&self.binding) {
                Ok(()) => writer,
                Err(e) => {
                    release(writer).await;
                    self.stand_by(None, Some(e.to_string()));
                    return Lead::Standby;
                }
            },
            Err(StateError::Locked { holder, .. }) => {
                self.stand_by(Some(holder), None);
                return Lead::Standby;
            }
            Err(e) => {
                self.stand_by(None, Some(e.to_string()));
                return Lead::Standby;
            }
        };
        tracing::info!(state = %self.store.location(), "leading: this replica holds the state's lock and reconciles");
        self.lost = writer.lost();
        self.writer = Some(writer);
        // A replica that led before stopped its client's calls when it lost the lock.
        self.client.resume_sending();
        self.verified = false;
        self.metrics.leader.set(1);
        let mut h = guard(&self.health);
        h.status.role = Role::Leader;
        h.status.leader = None;
        h.status.standby_error = None;
        h.status.ready = false;
        Lead::Took
    }

    /// Gives the lead up after this replica lost the lock: the writer is dropped (it records
    /// and sends nothing more) and the replica stands by.
    pub async fn step_down(&mut self, why: &str) {
        tracing::warn!(state = %self.store.location(), "{why}: this replica stopped sending and stands by");
        self.lost = None;
        self.lead_after = Some(tokio::time::Instant::now() + STEP_DOWN_PAUSE);
        if let Some(writer) = self.writer.take() {
            release(writer).await;
        }
        self.stand_by(None, None);
    }

    /// Whether this replica led and has lost the lock since.
    pub fn has_lost(&self) -> bool {
        self.lost.as_ref().is_some_and(|l| *l.borrow())
    }

    /// Publishes the standby role: who leads, or why the database could not be asked.
    fn stand_by(&mut self, leader: Option<String>, error: Option<String>) {
        self.metrics.leader.set(0);
        let mut h = guard(&self.health);
        let was = (
            h.status.role,
            h.status.leader.clone(),
            h.status.standby_error.clone(),
        );
        h.status.role = Role::Standby;
        h.status.ready = error.is_none();
        h.status.leader = leader;
        h.status.standby_error = error;
        let now = (
            h.status.role,
            h.status.leader.clone(),
            h.status.standby_error.clone(),
        );
        drop(h);
        // Said once per change, not once per try.
        if was != now {
            match (&now.1, &now.2) {
                (_, Some(why)) => tracing::warn!(error = %why, "standing by: cannot lead"),
                (Some(leader), None) => {
                    tracing::info!(leader = %leader, "standing by: {leader} leads")
                }
                (None, None) => tracing::info!("standing by"),
            }
        }
    }
}

/// Resolves once `lost` turns true; never when there is nothing to lose.
pub async fn lost(lost: &mut Option<watch::Receiver<bool>>) {
    match lost.as_mut() {
        Some(rx) => {
            if rx.wait_for(|l| *l).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Drops a writer (which lets its lock go, waiting for the database a moment) off the runtime's
/// threads.
async fn release(writer: Box<dyn StateWriter>) {
    let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
}
