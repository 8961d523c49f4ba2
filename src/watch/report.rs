//! What a reconcile says about itself: its one summary line (logged at a level that fits its
//! outcome, with its figures as fields), `/status` and `/readyz`, and the metrics.

use std::time::Duration;

use super::controller::Controller;
use super::error::ReconcileError;
use super::http::LastReconcile;
use super::metrics::{CallKind, CallOutcome, Outcome, Reason, gauge_value};
use super::reconcile::{Reconciliation, Requeue, waiting_targets};
use crate::sync::guard;
use crate::text::{count, human_elapsed};
use crate::time;

impl Controller {
    /// Updates `/status`, `/readyz` and the metrics after a reconcile.
    pub fn publish(
        &self,
        reason: Reason,
        outcome: Outcome,
        message: &str,
        found: &Reconciliation,
        elapsed: Duration,
    ) {
        let now = time::unix_secs_f64_now();
        let m = &self.metrics;
        m.reconciled(reason, outcome, elapsed.as_secs_f64());
        if let Some(r) = &found.report {
            m.calls(CallKind::Reconcile, CallOutcome::Success, r.calls_ok);
            m.calls(CallKind::Reconcile, CallOutcome::Failed, r.calls_failed);
            m.calls(CallKind::Reconcile, CallOutcome::NotSent, r.calls_not_sent);
        }
        if let Some(v) = found.config_valid {
            m.config_valid.set(i64::from(v));
        }
        if let Some(w) = &self.writer {
            m.targets_managed.set(gauge_value(w.state().targets.len()));
        }
        if found.summary.is_some() {
            let applied = found.report.as_ref().map_or(0, |r| r.targets_applied);
            m.targets_pending
                .set(gauge_value(found.planned_changes().saturating_sub(applied)));
        }
        m.mass_removal_blocked
            .set(i64::from(outcome == Outcome::MassRemovalBlocked));
        if outcome == Outcome::Success {
            m.succeeded_at(now);
        }
        let (pending, waiting) = self
            .writer
            .as_ref()
            .map(|w| waiting_targets(w.state(), self.retry_waiting))
            .unwrap_or_default();
        m.targets_waiting.set(gauge_value(pending.waiting));
        m.targets_uncertain.set(gauge_value(pending.uncertain));
        m.targets_owed.set(gauge_value(pending.owed));
        let mut h = guard(&self.health);
        let st = &mut h.status;
        st.config_valid = found.config_valid.or(st.config_valid);
        st.ready = outcome == Outcome::Success;
        st.last_reconcile = Some(LastReconcile {
            outcome: outcome.as_str(),
            reason: reason.as_str(),
            message: message.to_owned(),
            finished_unix: now,
            duration_seconds: elapsed.as_secs_f64(),
        });
        st.diagnostics = found.diagnostics.clone();
        st.pending = pending;
        st.waiting = waiting;
    }
}

/// The one line every reconcile logs.
pub fn summary_line(
    reason: Reason,
    result: &Result<Requeue, ReconcileError>,
    found: &Reconciliation,
    elapsed: Duration,
    next: Requeue,
) -> String {
    // `211 ms (file change)`: how long, and what started it.
    let took = format!("{} ({})", human_elapsed(elapsed), reason.words());
    let retry = match next {
        Requeue::After(d) => format!("; retrying in {}", human_elapsed(d)),
        Requeue::OnChange => String::new(),
    };
    let plan_part = found.summary.map(|s| {
        format!(
            "{} to add, {} to change, {} to remove, {} unchanged",
            s.add, s.change, s.remove, s.unchanged
        )
    });
    let waiting = found
        .report
        .as_ref()
        .map_or(0, |r| r.waiting.len())
        .max(found.summary.map_or(0, |s| s.waiting));
    let waiting = if waiting == 0 {
        String::new()
    } else {
        format!(
            "; {} for users who are not in the chat (retried with a backoff)",
            count(waiting, "target waits", "targets wait")
        )
    };
    match (result, &found.report) {
        (Ok(_), None) => format!(
            "reconciled in {took}: no changes ({} up to date){waiting}",
            count(
                found.summary.map_or(0, |s| s.unchanged),
                "target",
                "targets"
            )
        ),
        (Ok(_), Some(r)) => format!(
            "reconciled in {took}: {}; {} sent, {} recorded{waiting}",
            plan_part.unwrap_or_default(),
            count(r.calls_ok, "call", "calls"),
            count(r.targets_applied, "target", "targets")
        ),
        (Err(e @ ReconcileError::Incomplete { .. }), Some(r)) => format!(
            "reconcile incomplete after {took}: {}; {} of {} calls succeeded, {} recorded; {e}{retry}",
            plan_part.unwrap_or_default(),
            r.calls_ok,
            r.calls_ok + r.calls_failed + r.calls_not_sent,
            count(r.targets_applied, "target", "targets")
        ),
        (
            Err(e @ (ReconcileError::InvalidConfig { .. } | ReconcileError::MassRemoval { .. })),
            _,
        ) => {
            format!("reconcile held back after {took}: {e}")
        }
        (Err(e), _) => format!("reconcile failed after {took}: {e}{retry}"),
    }
}

/// Logs the summary line at a level that fits the outcome, with its figures as fields.
pub fn log_summary(
    reason: Reason,
    outcome: Outcome,
    message: &str,
    found: &Reconciliation,
    elapsed: Duration,
) {
    let s = found.summary.unwrap_or_default();
    let (calls_ok, calls_failed, recorded) = found.report.as_ref().map_or((0, 0, 0), |r| {
        (
            r.calls_ok,
            r.calls_failed + r.calls_not_sent,
            r.targets_applied,
        )
    });
    // Shown as a block in text logs, one string in JSON; absent when there is none.
    let diagnostics = found.diagnostics.as_deref().map(tracing::field::display);
    macro_rules! summary {
        ($level:ident) => {
            tracing::$level!(
                outcome = outcome.as_str(),
                reason = reason.as_str(),
                duration_ms = elapsed.as_millis() as u64,
                add = s.add,
                change = s.change,
                remove = s.remove,
                unchanged = s.unchanged,
                calls_ok,
                calls_failed,
                targets_recorded = recorded,
                diagnostics,
                "{message}"
            )
        };
    }
    match outcome {
        Outcome::Success => summary!(info),
        Outcome::InvalidConfig | Outcome::MassRemovalBlocked | Outcome::Failed => summary!(warn),
        Outcome::Error => summary!(error),
    }
}
