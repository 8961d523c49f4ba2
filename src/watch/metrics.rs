//! The daemon's metrics: counters and gauges the controller updates, rendered by hand in the
//! Prometheus text exposition format (version 0.0.4) for `GET /metrics`.
//!
//! By hand rather than with a metrics crate: there are nine series with fixed label values,
//! the format is a few lines of text, and a registry crate would add more code (and memory at
//! idle) than it saves.

use std::fmt::Write as _;

/// How a reconcile ended (the `outcome` label of `feedbuttons_reconciles_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The config is valid and every planned change was applied (or there was none).
    Success,
    /// Some calls or users failed, or calls were not sent; the successes are recorded.
    Failed,
    /// The config has errors: nothing was applied.
    InvalidConfig,
    /// The plan removes too much and the daemon was not started with `--allow-mass-removal`.
    MassRemovalBlocked,
    /// Nothing could be planned or sent: the directory, the state or the credentials.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Failed,
        Outcome::InvalidConfig,
        Outcome::MassRemovalBlocked,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::InvalidConfig => "invalid_config",
            Outcome::MassRemovalBlocked => "mass_removal_blocked",
            Outcome::Error => "error",
        }
    }
}

/// Which work a call was part of (the `kind` label of `feedbuttons_calls_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A call of a reconcile's plan.
    Reconcile,
    /// A re-send of an applied target (`--resync`).
    Resync,
}

/// How a call ended (the `outcome` label of `feedbuttons_calls_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answered with success (some of its users may still have failed).
    Ok,
    /// Failed after its retries, or skipped because its chat could not go on.
    Failed,
    /// Never sent: the run stopped first (a signal, a fatal error).
    NotSent,
}

/// Upper bounds of the reconcile duration histogram, in seconds: from a no-op reconcile of a
/// small config (milliseconds) to a large first apply at 10 calls a second (minutes).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every series the daemon exports.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// By [`Outcome`], in `Outcome::ALL` order.
    reconciles: [u64; 5],
    /// By kind (reconcile, resync) then outcome (ok, failed, not_sent).
    calls: [[u64; 3]; 2],
    /// Per bucket of [`DURATION_BUCKETS`] (not cumulative; summed when rendered).
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    pub targets_managed: u64,
    pub targets_pending: u64,
    /// Recorded targets by condition (see `state::PendingStatus`).
    pub targets_waiting: u64,
    pub targets_uncertain: u64,
    pub targets_owed: u64,
    /// `None` until the first reconcile has read the config.
    pub config_valid: Option<bool>,
    /// Seconds since the Unix epoch; 0 until the first success.
    pub last_success_unix: f64,
    pub mass_removal_blocked: bool,
    pub resync_cycles: u64,
}

impl Metrics {
    /// Counts one reconcile and how long it took.
    pub fn reconciled(&mut self, outcome: Outcome, seconds: f64) {
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.reconciles[i] += 1;
        }
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            self.duration_buckets[i] += 1;
        }
        self.duration_sum += seconds;
        self.duration_count += 1;
    }

    /// Counts `n` calls of one kind and outcome.
    pub fn calls(&mut self, kind: CallKind, outcome: CallOutcome, n: usize) {
        self.calls[kind as usize][outcome as usize] += n as u64;
    }

    /// How many reconciles ended with `outcome`.
    pub fn reconciles(&self, outcome: Outcome) -> u64 {
        Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.reconciles[i])
    }

    /// The text exposition format, every series present from the start (zeros included), so
    /// that rates and alerts work before the first event.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        header(
            &mut s,
            "feedbuttons_reconciles_total",
            "counter",
            "Reconciles (plan, then apply), by how they ended.",
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            let _ = writeln!(
                s,
                "feedbuttons_reconciles_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                self.reconciles[i]
            );
        }
        header(
            &mut s,
            "feedbuttons_calls_total",
            "counter",
            "Chat-button API calls, by what they were part of and how they ended.",
        );
        for (k, kind) in ["reconcile", "resync"].iter().enumerate() {
            for (o, outcome) in ["ok", "failed", "not_sent"].iter().enumerate() {
                let _ = writeln!(
                    s,
                    "feedbuttons_calls_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {}",
                    self.calls[k][o]
                );
            }
        }
        header(
            &mut s,
            "feedbuttons_reconcile_duration_seconds",
            "histogram",
            "How long a reconcile took: reading the config, planning and applying.",
        );
        let mut cumulative = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.duration_buckets[i];
            let _ = writeln!(
                s,
                "feedbuttons_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            s,
            "feedbuttons_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.duration_count
        );
        let _ = writeln!(
            s,
            "feedbuttons_reconcile_duration_seconds_sum {}",
            self.duration_sum
        );
        let _ = writeln!(
            s,
            "feedbuttons_reconcile_duration_seconds_count {}",
            self.duration_count
        );
        gauge(
            &mut s,
            "feedbuttons_targets_managed",
            "Targets (chat and audience) recorded as applied in the state.",
            self.targets_managed as f64,
        );
        gauge(
            &mut s,
            "feedbuttons_targets_pending",
            "Target changes the last plan held that are not applied yet (failed, not sent, or blocked).",
            self.targets_pending as f64,
        );
        gauge(
            &mut s,
            "feedbuttons_targets_waiting",
            "Targets the API refused (their user is not in the chat): retried with a backoff.",
            self.targets_waiting as f64,
        );
        gauge(
            &mut s,
            "feedbuttons_targets_uncertain",
            "Targets whose last call went unanswered: the next reconcile sends them again.",
            self.targets_uncertain as f64,
        );
        gauge(
            &mut s,
            "feedbuttons_targets_owed",
            "Targets owed a re-send (another call of the tool may have overwritten them).",
            self.targets_owed as f64,
        );
        gauge(
            &mut s,
            "feedbuttons_config_valid",
            "1 when the config read by the last reconcile had no errors, else 0.",
            f64::from(u8::from(self.config_valid.unwrap_or(false))),
        );
        gauge(
            &mut s,
            "feedbuttons_last_success_timestamp_seconds",
            "When a reconcile last succeeded, in seconds since the Unix epoch (0: never).",
            self.last_success_unix,
        );
        gauge(
            &mut s,
            "feedbuttons_mass_removal_blocked",
            "1 while the current plan is held back by the mass-removal guard, else 0.",
            f64::from(u8::from(self.mass_removal_blocked)),
        );
        header(
            &mut s,
            "feedbuttons_resync_cycles_total",
            "counter",
            "Completed passes of --resync over every applied target.",
        );
        let _ = writeln!(s, "feedbuttons_resync_cycles_total {}", self.resync_cycles);
        s
    }
}

fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

fn gauge(s: &mut String, name: &str, help: &str, value: f64) {
    header(s, name, "gauge", help);
    let _ = writeln!(s, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_rendered_with_help_and_type() {
        let mut m = Metrics::default();
        m.reconciled(Outcome::Success, 0.03);
        m.reconciled(Outcome::MassRemovalBlocked, 7.0);
        m.calls(CallKind::Reconcile, CallOutcome::Ok, 3);
        m.calls(CallKind::Resync, CallOutcome::Failed, 1);
        m.config_valid = Some(true);
        let text = m.render();
        for line in [
            "feedbuttons_reconciles_total{outcome=\"success\"} 1",
            "feedbuttons_reconciles_total{outcome=\"mass_removal_blocked\"} 1",
            "feedbuttons_reconciles_total{outcome=\"error\"} 0",
            "feedbuttons_calls_total{kind=\"reconcile\",outcome=\"ok\"} 3",
            "feedbuttons_calls_total{kind=\"resync\",outcome=\"failed\"} 1",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"0.025\"} 0",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"0.05\"} 1",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"10\"} 2",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "feedbuttons_reconcile_duration_seconds_count 2",
            "feedbuttons_config_valid 1",
            "feedbuttons_mass_removal_blocked 0",
            "# TYPE feedbuttons_reconcile_duration_seconds histogram",
            "# TYPE feedbuttons_targets_pending gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        // Every sample line belongs to a family announced just before it.
        let mut family = String::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default().to_owned();
            } else if !l.starts_with('#') {
                assert!(l.starts_with(&family), "{l} outside {family}");
            }
        }
    }
}
