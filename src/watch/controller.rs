//! The controller, as kube-runtime's: one loop that waits for a file change, the interval, a
//! requeue or a resync call, and runs them one at a time, so that two reconciles never
//! overlap; after each reconcile the error policy says when to come back. File events only
//! mark the config dirty: the loop debounces them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::{Backoff, ReconcileError, error_policy};
use super::events::{self, DirChange, DirWatcher};
use super::http::SharedHealth;
use super::leader::{self, Lead, STANDBY_POLL};
use super::metrics::{Metrics, Outcome, Reason};
use super::reconcile::{Reconciliation, Requeue, reconcile};
use super::resync::Resync;
use super::{MAX_BACKOFF, MAX_DEBOUNCE_WAIT, SHUTDOWN_GRACE, report};
use crate::apply;
use crate::feishu::client::Client;
use crate::state::{Binding, StateStore, StateWriter};
use crate::time;

/// Everything a reconcile needs and keeps between reconciles.
pub struct Controller {
    pub dir: PathBuf,
    pub store: Arc<dyn StateStore>,
    /// Whether the state is shared by replicas (PostgreSQL): then a replica without the writer
    /// stands by and tries to lead (see `leader`).
    pub shared: bool,
    /// `None` after a write to the state failed (the writer is dropped and taken again), and on
    /// a standby.
    pub writer: Option<Box<dyn StateWriter>>,
    /// Turns true when the writer loses its lock (a shared state's).
    pub lost: Option<watch::Receiver<bool>>,
    /// A replica that lost the lead tries again only after this.
    pub lead_after: Option<Instant>,
    pub binding: Binding,
    pub client: Client,
    /// The credentials were checked and the state bound to this endpoint and app.
    pub verified: bool,
    pub rate_limit: u32,
    pub allow_mass_removal: bool,
    /// The first wait before a refused user is tried again (`--retry-waiting`).
    pub retry_waiting: Duration,
    pub stop: watch::Receiver<bool>,
    pub health: SharedHealth,
    pub metrics: Arc<Metrics>,
    /// What the last reconcile read and planned, to build the next on.
    pub incremental: super::incremental::Incremental,
    /// `--resolve-every`: the directory sources' live members.
    pub people: Option<super::people::LivePeople>,
}

/// How the loop spaces reconciles: `--interval` and `--debounce`.
pub struct Timing {
    pub interval: Duration,
    pub debounce: Duration,
}

impl Timing {
    /// When changes seen from `first` to `last` are reconciled: once the directory was quiet
    /// for the debounce, or [`MAX_DEBOUNCE_WAIT`] after the first at the latest.
    fn debounced(&self, (first, last): (Instant, Instant)) -> Instant {
        (last + self.debounce).min(first + MAX_DEBOUNCE_WAIT.max(self.debounce))
    }
}

/// Moves the watches to where `dir` resolves now, and says so when that changed.
fn follow(watcher: &mut DirWatcher, dir: &Path) {
    if watcher.refresh() {
        tracing::info!(
            dir = %dir.display(),
            "following {} to {}",
            dir.display(),
            events::config_root(dir).display()
        );
    }
}

/// The one loop: waits for a change, the interval, a requeue or a resync call, and runs them
/// one at a time. Returns the controller when asked to stop.
pub async fn control_loop(
    mut ctl: Controller,
    mut changes: UnboundedReceiver<DirChange>,
    mut watcher: DirWatcher,
    timing: Timing,
    mut resync: Option<Resync>,
    mut stop: watch::Receiver<bool>,
) -> Controller {
    let mut backoff = Backoff::new(timing.interval.min(MAX_BACKOFF));
    let mut next_reconcile = Instant::now();
    // Why the reconcile at `next_reconcile` would run: the start, a requeue, or the interval.
    let mut due_reason = Reason::Start;
    // The first and the latest change not reconciled yet, and whether a link was swapped.
    let mut dirty: Option<(Instant, Instant)> = None;
    let mut swapped = false;
    let mut events_open = true;
    // With `--resolve-every`: the directory look-up under way, a task of its own.
    let mut looking: Option<tokio::task::JoinHandle<super::people::Found>> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        if ctl.shared && ctl.writer.is_none() {
            if ctl.has_lost() {
                ctl.step_down("lost the state's lock").await;
            }
            match ctl.try_lead().await {
                Lead::Took => {
                    // Whatever changed meanwhile is read now.
                    next_reconcile = Instant::now();
                    due_reason = Reason::Leader;
                    dirty = None;
                    swapped = false;
                }
                Lead::Standby => {
                    // The leader reconciles; a standby only keeps its watches on the current
                    // revision, and tries again.
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => break,
                        change = changes.recv(), if events_open => match change {
                            None => events_open = false,
                            Some(DirChange::Link) => follow(&mut watcher, &ctl.dir),
                            Some(_) => {}
                        },
                        () = tokio::time::sleep(STANDBY_POLL) => {}
                    }
                    continue;
                }
            }
        }
        let debounce_at = dirty.map(|d| timing.debounced(d));
        let mut wake = next_reconcile;
        if let Some(d) = debounce_at {
            wake = wake.min(d);
        }
        if let Some(r) = resync.as_ref().and_then(Resync::due_at) {
            wake = wake.min(r);
        }
        if let Some(p) = ctl.people.as_mut() {
            if looking.is_none() && p.due_at() <= Instant::now() {
                looking = Some(tokio::spawn(p.look_up(events::config_root(&ctl.dir))));
            }
            if looking.is_none() {
                wake = wake.min(p.due_at());
            }
        }
        let mut lost = ctl.lost.clone();
        let mut refreshed = false;
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            found = async {
                match looking.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if looking.is_some() => {
                looking = None;
                match found {
                    Ok(found) => refreshed = ctl.take_people(found),
                    Err(e) => tracing::warn!(error = %e, "the directory look-up ended in a panic (a bug); the last members stay in use"),
                }
            }
            () = leader::lost(&mut lost) => {
                ctl.step_down("lost the state's lock (its database connection broke, or another replica took over)").await;
                continue;
            }
            change = changes.recv(), if events_open => {
                let Some(change) = change else {
                    events_open = false;
                    continue;
                };
                let now = Instant::now();
                let mut link = change == DirChange::Link;
                while let Ok(c) = changes.try_recv() {
                    link |= c == DirChange::Link;
                }
                if link {
                    // Follow the swap now, so that edits in the new revision are seen too.
                    follow(&mut watcher, &ctl.dir);
                    swapped = true;
                }
                dirty = Some((dirty.map_or(now, |(first, _)| first), now));
                // No `continue`: under a steady stream of changes, the longest debounce wait
                // below still comes due.
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        if refreshed && next_reconcile > Instant::now() {
            next_reconcile = Instant::now();
            due_reason = Reason::Resolve;
        }
        let now = Instant::now();
        let changed = dirty.is_some_and(|d| timing.debounced(d) <= now);
        if next_reconcile <= now || changed {
            // A change is the more telling reason when the timer came due too.
            let reason = match (changed, swapped) {
                (true, true) => Reason::LinkSwap,
                (true, false) => Reason::FileChange,
                (false, _) => due_reason,
            };
            dirty = None;
            swapped = false;
            follow(&mut watcher, &ctl.dir);
            let Some((action, recorded)) =
                within_grace(&stop, ctl.run_reconcile(reason, &mut backoff)).await
            else {
                tracing::warn!(
                    "calls still in flight {} s after the stop signal: exiting without their answers (the next run sends them again)",
                    SHUTDOWN_GRACE.as_secs()
                );
                break;
            };
            if ctl.has_lost() {
                ctl.step_down("lost the state's lock during a reconcile")
                    .await;
                continue;
            }
            let (after, why) = match action {
                Requeue::After(d) if d < timing.interval => (d, Reason::Retry),
                Requeue::After(_) | Requeue::OnChange => (timing.interval, Reason::Interval),
            };
            due_reason = why;
            next_reconcile = Instant::now() + after;
            if let Some(r) = resync.as_mut() {
                r.after_reconcile(recorded);
            }
        } else if let Some(r) = resync.as_mut()
            && r.due_at().is_some_and(|t| t <= now)
            && within_grace(&stop, ctl.resync_step(r)).await.is_none()
        {
            tracing::warn!(
                "a resync call was still in flight {} s after the stop signal: exiting without its answer",
                SHUTDOWN_GRACE.as_secs()
            );
            break;
        }
    }
    // A look-up changes nothing: a stop does not wait for it (a directory that does not
    // answer would hold it for every attempt's timeout).
    if let Some(task) = looking {
        task.abort();
    }
    ctl
}

/// Resolves once `stop` is true; never when its sender is gone (no signal can come then).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `work`, or gives up on it [`SHUTDOWN_GRACE`] after a stop was asked for.
async fn within_grace<T>(stop: &watch::Receiver<bool>, work: impl Future<Output = T>) -> Option<T> {
    let mut stop = stop.clone();
    let deadline = async move {
        stopped(&mut stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        out = work => Some(out),
        () = deadline => None,
    }
}

impl Controller {
    /// Runs [`reconcile`] and then the error policy; logs the summary line and publishes the
    /// status and metrics. Returns what to do next and whether the state recorded anything.
    async fn run_reconcile(&mut self, reason: Reason, backoff: &mut Backoff) -> (Requeue, bool) {
        let started = Instant::now();
        let mut found = Reconciliation::default();
        let result = reconcile(self, &mut found).await;
        let elapsed = started.elapsed();
        let action = match &result {
            Ok(a) => {
                backoff.reset();
                *a
            }
            // Stopping: there is no next time to announce.
            Err(_) if *self.stop.borrow() => Requeue::OnChange,
            Err(e) => error_policy(e, || backoff.next_delay()),
        };
        let outcome = result
            .as_ref()
            .map_or_else(ReconcileError::outcome, |_| Outcome::Success);
        let recorded = found.report.as_ref().is_some_and(|r| r.targets_applied > 0);
        let message = report::summary_line(reason, &result, &found, elapsed, action);
        self.publish(reason, outcome, &message, &found, elapsed);
        report::log_summary(reason, outcome, &message, &found, elapsed);
        (action, recorded)
    }

    /// Takes a directory look-up's result in (`--resolve-every`) and publishes the drift from
    /// the committed lock; says whether the members to reconcile with changed.
    fn take_people(&mut self, found: super::people::Found) -> bool {
        let Some(people) = self.people.as_mut() else {
            return false;
        };
        let (changed, drift) = people.take(found);
        if let Some(error) = &drift.error {
            tracing::warn!(%error, "looking the directory sources up again failed; their last members stay in use");
        } else if changed {
            tracing::info!(
                added = drift.added.len(),
                removed = drift.removed.len(),
                "the directory sources' members changed: {} added to and {} removed from the committed lock",
                drift.added.len(),
                drift.removed.len()
            );
        }
        self.metrics
            .lock_drift_users
            .set(super::metrics::gauge_value(drift.users()));
        crate::sync::guard(&self.health).status.lock_drift = Some(drift);
        changed
    }

    /// Sends the resync call that is due, if any (between reconciles, never during one).
    async fn resync_step(&mut self, resync: &mut Resync) {
        let now = Instant::now();
        let Some(writer) = self.writer.as_mut() else {
            // The state is taken again by the next reconcile; until then there is nothing to
            // read the applied targets from.
            resync.postpone(now + Duration::from_secs(1));
            return;
        };
        // A replica that took over from a leader with calls in flight sends nothing until none
        // of them can still land (a reconcile with nothing to apply never waited for it).
        if let Some(from) = writer.sends_from().map(Instant::from_std)
            && from > now
        {
            resync.postpone(from);
            return;
        }
        let Some(request) = resync.next_request(writer.state(), now, &self.metrics) else {
            return;
        };
        if !self.verified {
            let checked = match self.client.check_credentials().await {
                Ok(()) => writer.bind(&self.binding).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = checked {
                tracing::warn!(error = %e, "resync: cannot call the API yet");
                resync.retry_later(request, now);
                return;
            }
            self.verified = true;
        }
        // A re-send is recorded like any call: a whole-chat one marks the chat's users owed
        // (it may overwrite them) before their own re-sends put them right.
        let (marks, call) = apply::outcome::before(writer.state(), &request, time::unix_secs_now());
        // Said durably before the call goes out, as apply does: a replica that takes over
        // while it is in flight waits for it.
        let marked = writer
            .calls_in_flight(1)
            .and_then(|()| writer.record(&marks));
        if let Err(e) = marked {
            tracing::warn!(error = %e, "resync: cannot record in the state; taking the lock again");
            self.writer = None;
            resync.retry_later(request, now);
            return;
        }
        let result = self
            .client
            .put_chat_button(request.user_id_type, &request.body)
            .await;
        if let Err(e) = writer.calls_in_flight(0) {
            tracing::warn!(error = %e, "resync: cannot record in the state");
        }
        let records = match &result {
            Ok(answer) => apply::outcome::accepted(
                writer.state(),
                &request,
                &call,
                answer,
                time::unix_secs_now(),
            ),
            Err(e) if e.may_have_applied() => Vec::new(),
            Err(_) => apply::outcome::refused(&call),
        };
        if let Err(e) = writer.record(&records) {
            tracing::warn!(error = %e, "resync: cannot record in the state; taking the lock again");
            self.writer = None;
        }
        resync.answered(&request, &result, &self.metrics);
    }
}
