//! One reconcile, as kube-runtime's `reconcile(object, ctx) -> Result<Action, Error>`: read
//! the config, plan against the state, apply, record; then say when to come back
//! ([`Requeue`]). What it found and did is kept in a [`Reconciliation`] for the summary line,
//! `/status` and the metrics.

use std::time::Duration;

use super::controller::Controller;
use super::error::ReconcileError;
use super::incremental::Reloaded;
use super::{events, http};
use crate::apply::{self, ApplyReport};
use crate::plan;
use crate::plan::json::PlanDoc;
use crate::state;
use crate::time;

/// When to reconcile again after a reconcile (as kube-runtime's `Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// After this long (sooner on a change, never later than `--interval`).
    After(Duration),
    /// When the config changes (or `--interval` passes, for a missed event).
    OnChange,
}

/// The longest wait between two tries of a user the API refused.
pub const MAX_WAITING_RETRY: Duration = Duration::from_secs(3600);

/// What one reconcile found and did, for its summary line, the status and the metrics.
#[derive(Default)]
pub struct Reconciliation {
    pub config_valid: Option<bool>,
    /// The config's diagnostics, rendered (errors and warnings).
    pub diagnostics: Option<String>,
    pub summary: Option<plan::Summary>,
    pub report: Option<ApplyReport>,
    /// When a waiting target held back by its backoff is due (Unix seconds).
    pub next_retry: Option<u64>,
}

impl Reconciliation {
    /// Target changes in the plan: the unit of "pending".
    pub fn planned_changes(&self) -> usize {
        self.summary
            .map_or(0, |s| s.add + s.change + s.remove + s.resend)
    }
}

/// One reconcile: read the config, plan against the state, apply, record. `found` collects
/// what happened.
pub async fn reconcile(
    ctl: &mut Controller,
    found: &mut Reconciliation,
) -> Result<Requeue, ReconcileError> {
    let result = reconcile_once(ctl, found).await;
    // The next plan builds on this one's while the state is as this reconcile leaves it; after
    // a failed write, what the writer holds may be ahead of what is stored.
    let failed_write = matches!(result, Err(ReconcileError::State(_)))
        || found
            .report
            .as_ref()
            .is_some_and(|r| r.state_error.is_some());
    match ctl.writer.as_ref() {
        Some(writer) if !failed_write => ctl.incremental.recorded(writer.state()),
        _ => ctl.incremental.forget_state(),
    }
    super::incremental::release_free_memory();
    result
}

async fn reconcile_once(
    ctl: &mut Controller,
    found: &mut Reconciliation,
) -> Result<Requeue, ReconcileError> {
    let writer = match ctl.writer.as_mut() {
        Some(writer) => writer,
        None => {
            let writer = ctl.store.writer(&state::holder("watch"))?;
            writer.state().check_binding(&ctl.binding)?;
            ctl.writer.insert(writer)
        }
    };
    let root = events::config_root(&ctl.dir);
    // With `--resolve-every`, the directory sources' live members stand in for the committed
    // lock's (read as it stands now, in the blocking task).
    let live = ctl
        .people
        .as_ref()
        .and_then(super::people::LivePeople::lock);
    // Only what changed is read again and planned (see `incremental`), and every chat when the
    // people changed (the lock's bytes, or the live members); the cache goes to the blocking
    // thread and back (a panic there loses it: everything is read again next time).
    ctl.incremental.check_state(writer.state());
    let mut incremental = std::mem::take(&mut ctl.incremental);
    let (incremental, loaded, rendered) = tokio::task::spawn_blocking(move || {
        let live = live.and_then(|l| super::people::onto_committed(&l, &root));
        let loaded = incremental.reload_with(&root, live);
        let rendered = loaded
            .as_ref()
            .ok()
            .filter(|l| !l.report.diagnostics.is_empty())
            .map(|l| l.report.render_text(incremental.sources()));
        (incremental, loaded, rendered)
    })
    .await
    .map_err(ReconcileError::LoadPanicked)?;
    ctl.incremental = incremental;
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            found.config_valid = Some(false);
            return Err(e.into());
        }
    };
    let Reloaded {
        report,
        desired,
        chats,
    } = loaded;
    found.diagnostics = rendered;
    let Some(desired) = desired else {
        found.config_valid = Some(false);
        return Err(ReconcileError::InvalidConfig {
            errors: report.errors(),
        });
    };
    if let Err(e) = desired.check_app(&ctl.binding.app_id) {
        found.config_valid = Some(false);
        return Err(e.into());
    }
    found.config_valid = Some(true);
    let now = time::unix_secs_now();
    let doc = {
        let mut p = ctl.incremental.plan(
            &desired,
            chats.as_ref(),
            writer.state(),
            &plan::PlanOptions {
                chats: Vec::new(),
                rate_limit: ctl.rate_limit,
                waiting_backoff: Some(plan::WaitingBackoff {
                    now,
                    first: ctl.retry_waiting.as_secs().max(1),
                    max: MAX_WAITING_RETRY.as_secs(),
                }),
                resend_all: false,
                threads: 0,
            },
        );
        found.summary = Some(p.summary);
        found.next_retry = p.next_retry;
        let settle = std::mem::take(&mut p.settle);
        let doc = PlanDoc::new(&p);
        drop(p);
        // Waiting targets the config no longer asks to change need no call.
        writer.record(&settle)?;
        doc
    };
    drop(desired);
    if let Some(m) = &doc.mass_removal
        && !ctl.allow_mass_removal
    {
        return Err(ReconcileError::MassRemoval {
            reason: m.reason.clone(),
        });
    }
    if doc.requests.is_empty() {
        return Ok(retry_waiting(found.next_retry, now));
    }
    if !ctl.verified {
        ctl.client
            .check_credentials()
            .await
            .map_err(ReconcileError::Credentials)?;
        writer.bind(&ctl.binding)?;
        ctl.verified = true;
    }
    let report = apply::apply(
        &doc,
        &ctl.client,
        writer.as_mut(),
        apply::concurrency_for(ctl.rate_limit),
        &mut apply::Quiet,
        ctl.stop.clone(),
    )
    .await;
    let result = if let Some(e) = &report.state_error {
        // The writer refuses further writes after a failed one: take the lock again next time.
        ctl.writer = None;
        Err(ReconcileError::Incomplete {
            pending: found.planned_changes() - report.targets_applied.min(found.planned_changes()),
            why: format!("recording in the state failed: {e}"),
        })
    } else if report.complete_but_waiting() {
        // Users just refused are due after the first backoff at the earliest.
        let first = now + ctl.retry_waiting.as_secs().max(1);
        let due = match (report.waiting.is_empty(), found.next_retry) {
            (true, due) => due,
            (false, Some(t)) => Some(t.min(first)),
            (false, None) => Some(first),
        };
        Ok(retry_waiting(due, now))
    } else {
        Err(ReconcileError::Incomplete {
            pending: found.planned_changes() - report.targets_applied.min(found.planned_changes()),
            why: incomplete_reason(&report),
        })
    };
    found.report = Some(report);
    result
}

/// What to do after a reconcile that left only waiting targets: try them when the first is due.
fn retry_waiting(due: Option<u64>, now: u64) -> Requeue {
    match due {
        Some(t) => Requeue::After(Duration::from_secs(t.saturating_sub(now).max(1))),
        None => Requeue::OnChange,
    }
}

/// The first reason a run was incomplete, for the summary line (the rest is in `/status`).
fn incomplete_reason(report: &ApplyReport) -> String {
    if let Some(f) = &report.fatal {
        return f.clone();
    }
    if report.interrupted {
        return "stopped by a signal".to_owned();
    }
    let failures = if report.failures.is_empty() {
        &report.uncertain
    } else {
        &report.failures
    };
    match failures.first() {
        Some(f) if failures.len() > 1 => format!(
            "{} {}: {} (and {} more)",
            f.chat_id,
            f.target,
            f.reason,
            failures.len() - 1
        ),
        Some(f) => format!("{} {}: {}", f.chat_id, f.target, f.reason),
        None => format!("{} call(s) not sent", report.calls_not_sent),
    }
}

/// Counts of the recorded targets by condition, and the waiting ones (the first
/// [`http::WAITING_SHOWN`]), with when the daemon tries each again.
pub fn waiting_targets(
    state: &state::AppliedState,
    first: Duration,
) -> (http::PendingCounts, Vec<http::WaitingTarget>) {
    let c = state.counts();
    let counts = http::PendingCounts {
        waiting: c.waiting,
        uncertain: c.uncertain,
        owed: c.owed,
        followers: c.followers,
    };
    let backoff = plan::WaitingBackoff {
        now: 0,
        first: first.as_secs().max(1),
        max: MAX_WAITING_RETRY.as_secs(),
    };
    let mut waiting = Vec::new();
    if c.waiting > 0 {
        for (target, record) in &state.targets {
            if waiting.len() >= http::WAITING_SHOWN {
                break;
            }
            let Some(p) = record.pending() else { continue };
            if let state::PendingStatus::Waiting {
                reason,
                tries,
                last_try,
                ..
            } = &p.status
            {
                waiting.push(http::WaitingTarget {
                    chat_id: target.chat_id.to_string(),
                    target: state::audience_spec(target),
                    reason: reason.clone(),
                    since: crate::time::rfc3339_seconds(p.since),
                    tries: *tries,
                    next_try: crate::time::rfc3339_seconds(backoff.due_at(*tries, *last_try)),
                });
            }
        }
    }
    (counts, waiting)
}
