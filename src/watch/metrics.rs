//! The daemon's metrics, as prometheus-client families in one registry, encoded in the
//! Prometheus text format (version 0.0.4) for `GET /metrics`: reconciles (by outcome, and by
//! what started them), their calls and duration, the targets, the API client's own counters,
//! the build, and the process (`process_*`, where there is a `/proc`).
//!
//! One label vocabulary throughout: an `outcome` of `success` or `failed` means the same in
//! every family.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::feishu::metrics::ClientMetrics;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How a reconcile ended (the `outcome` label of `feedbuttons_reconciles_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// What started a reconcile (the `reason` label of `feedbuttons_reconcile_reasons_total`, and
/// the summary line's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The first reconcile, at start.
    Start,
    /// Files under the config directory changed.
    FileChange,
    /// The config directory, or a symbolic link on its path, was replaced (a revision swap).
    LinkSwap,
    /// `--interval` passed with nothing else to do (in case an event was missed).
    Interval,
    /// A requeue: after a failure (with backoff), or for users waiting to join a chat.
    Retry,
    /// This replica took the lead of a shared state (the leader stopped, died or lost the
    /// database).
    Leader,
    /// `--resolve-every` found that a chat's or a department's members changed.
    Resolve,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Start,
        Reason::FileChange,
        Reason::LinkSwap,
        Reason::Interval,
        Reason::Retry,
        Reason::Leader,
        Reason::Resolve,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::FileChange => "file_change",
            Reason::LinkSwap => "link_swap",
            Reason::Interval => "interval",
            Reason::Retry => "retry",
            Reason::Leader => "leader",
            Reason::Resolve => "resolve",
        }
    }

    /// For the summary line: `file change`.
    pub fn words(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::FileChange => "file change",
            Reason::LinkSwap => "link swap",
            Reason::Interval => "interval",
            Reason::Retry => "retry",
            Reason::Leader => "took the lead",
            Reason::Resolve => "membership change",
        }
    }
}

/// Which work a call was part of (the `kind` label of `feedbuttons_calls_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A call of a reconcile's plan.
    Reconcile,
    /// A re-send of an applied target (`--resync`).
    Resync,
}

impl CallKind {
    const ALL: [CallKind; 2] = [CallKind::Reconcile, CallKind::Resync];

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Reconcile => "reconcile",
            CallKind::Resync => "resync",
        }
    }
}

/// How a call ended (the `outcome` label of `feedbuttons_calls_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Answered with success (some of its users may still have failed).
    Success,
    /// Failed after its retries, or skipped because its chat could not go on.
    Failed,
    /// Never sent: the run stopped first (a signal, a fatal error).
    NotSent,
}

impl CallOutcome {
    const ALL: [CallOutcome; 3] = [
        CallOutcome::Success,
        CallOutcome::Failed,
        CallOutcome::NotSent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Failed => "failed",
            CallOutcome::NotSent => "not_sent",
        }
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value!(Outcome, Reason, CallKind, CallOutcome);

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: Reason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    kind: CallKind,
    outcome: CallOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// Upper bounds of the reconcile duration histogram, in seconds: from a no-op reconcile of a
/// small config (milliseconds) to a large first apply at 10 calls a second (minutes).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every series the daemon exports. Updates are atomic: no lock is needed to count.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    reasons: Family<ReasonLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    duration: Histogram,
    pub targets_managed: Gauge,
    pub targets_pending: Gauge,
    /// Recorded targets by condition (see `state::PendingStatus`).
    pub targets_waiting: Gauge,
    pub targets_uncertain: Gauge,
    pub targets_owed: Gauge,
    pub config_valid: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    pub mass_removal_blocked: Gauge,
    /// 1 while this replica leads, 0 while it stands by.
    pub leader: Gauge,
    /// Users in the live directory sources and not in the committed lock, plus the reverse.
    pub lock_drift_users: Gauge,
    resync_cycles: Counter,
}

impl Metrics {
    /// The daemon's families, the API client's (`client`), the build, and the process. Every
    /// series exists from the start (zeros included), so that rates and alerts work before the
    /// first event.
    pub fn new(client: &ClientMetrics) -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        for outcome in Outcome::ALL {
            let _ = reconciles.get_or_create(&OutcomeLabels { outcome });
        }
        let reasons = Family::<ReasonLabels, Counter>::default();
        for reason in Reason::ALL {
            let _ = reasons.get_or_create(&ReasonLabels { reason });
        }
        let calls = Family::<CallLabels, Counter>::default();
        for kind in CallKind::ALL {
            for outcome in CallOutcome::ALL {
                let _ = calls.get_or_create(&CallLabels { kind, outcome });
            }
        }
        let m = Metrics {
            reconciles,
            reasons,
            calls,
            duration: Histogram::new(DURATION_BUCKETS),
            targets_managed: Gauge::default(),
            targets_pending: Gauge::default(),
            targets_waiting: Gauge::default(),
            targets_uncertain: Gauge::default(),
            targets_owed: Gauge::default(),
            config_valid: Gauge::default(),
            last_success: Gauge::default(),
            mass_removal_blocked: Gauge::default(),
            leader: Gauge::default(),
            lock_drift_users: Gauge::default(),
            resync_cycles: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        // Name (prometheus-client adds `_total` to counters) => help => metric, in /metrics order.
        macro_rules! register {
            ($($name:literal => $help:literal => $metric:expr;)*) => {
                $(r.register($name, $help, $metric.clone());)*
            };
        }
        register! {
            "feedbuttons_reconciles" => "Reconciles (plan, then apply), by how they ended"
                => m.reconciles;
            "feedbuttons_reconcile_reasons" => "Reconciles by what started them" => m.reasons;
            "feedbuttons_calls"
                => "Chat-button API calls, by what they were part of and how they ended"
                => m.calls;
            "feedbuttons_reconcile_duration_seconds"
                => "How long a reconcile took: reading the config, planning and applying"
                => m.duration;
            "feedbuttons_targets_managed"
                => "Targets (chat and audience) recorded as applied in the state"
                => m.targets_managed;
            "feedbuttons_lock_drift_users"
                => "With --resolve-every: user ids the live members_of/department sources add to or remove from the committed feedbuttons.lock"
                => m.lock_drift_users;
            "feedbuttons_targets_pending"
                => "Target changes the last plan held that are not applied yet (failed, not sent, or blocked)"
                => m.targets_pending;
            "feedbuttons_targets_waiting"
                => "Targets the API refused (their user is not in the chat): retried with a backoff"
                => m.targets_waiting;
            "feedbuttons_targets_uncertain"
                => "Targets whose last call went unanswered: the next reconcile sends them again"
                => m.targets_uncertain;
            "feedbuttons_targets_owed"
                => "Targets owed a re-send (another call of the tool may have overwritten them)"
                => m.targets_owed;
            "feedbuttons_config_valid"
                => "1 when the config read by the last reconcile had no errors, else 0"
                => m.config_valid;
            "feedbuttons_last_success_timestamp_seconds"
                => "When a reconcile last succeeded, in seconds since the Unix epoch (0: never)"
                => m.last_success;
            "feedbuttons_mass_removal_blocked"
                => "1 while the current plan is held back by the mass-removal guard, else 0"
                => m.mass_removal_blocked;
            "feedbuttons_leader"
                => "1 while this replica leads (holds the state's lock and reconciles), 0 while it stands by"
                => m.leader;
            "feedbuttons_resync_cycles" => "Completed passes of --resync over every applied target"
                => m.resync_cycles;
        }
        client.register(r);
        r.register(
            "feedbuttons_build",
            "The running version and the git revision it was built from",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("FEEDBUTTONS_GIT_REV"),
            }),
        );
        super::process::register(r);
        Metrics { registry, ..m }
    }

    /// Counts one reconcile: what started it, how it ended and how long it took.
    pub fn reconciled(&self, reason: Reason, outcome: Outcome, seconds: f64) {
        self.reconciles
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.reasons.get_or_create(&ReasonLabels { reason }).inc();
        self.duration.observe(seconds);
    }

    /// Counts `n` calls of one kind and outcome.
    pub fn calls(&self, kind: CallKind, outcome: CallOutcome, n: usize) {
        self.calls
            .get_or_create(&CallLabels { kind, outcome })
            .inc_by(n as u64);
    }

    /// When a reconcile last succeeded, in seconds since the Unix epoch.
    pub fn succeeded_at(&self, unix_secs: f64) {
        self.last_success.set(unix_secs);
    }

    /// Counts a finished `--resync` pass.
    pub fn resync_cycle(&self) {
        self.resync_cycles.inc();
    }

    /// Finished `--resync` passes.
    pub fn resync_cycles(&self) -> u64 {
        self.resync_cycles.get()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8192);
        // Writing to a String fails only if an encoder reports an error, which ours never do.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry);
        s
    }
}

/// A gauge's value for a count.
pub fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_rendered_with_help_and_type() {
        let m = Metrics::new(&ClientMetrics::default());
        m.reconciled(Reason::Start, Outcome::Success, 0.03);
        m.reconciled(Reason::FileChange, Outcome::MassRemovalBlocked, 7.0);
        m.calls(CallKind::Reconcile, CallOutcome::Success, 3);
        m.calls(CallKind::Resync, CallOutcome::Failed, 1);
        m.config_valid.set(1);
        let text = m.render();
        for line in [
            "feedbuttons_reconciles_total{outcome=\"success\"} 1",
            "feedbuttons_reconciles_total{outcome=\"mass_removal_blocked\"} 1",
            "feedbuttons_reconciles_total{outcome=\"error\"} 0",
            "feedbuttons_reconcile_reasons_total{reason=\"file_change\"} 1",
            "feedbuttons_reconcile_reasons_total{reason=\"interval\"} 0",
            "feedbuttons_calls_total{kind=\"reconcile\",outcome=\"success\"} 3",
            "feedbuttons_calls_total{kind=\"resync\",outcome=\"failed\"} 1",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"0.025\"} 0",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"0.05\"} 1",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"10\"} 2",
            "feedbuttons_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "feedbuttons_reconcile_duration_seconds_count 2",
            "feedbuttons_config_valid 1",
            "feedbuttons_mass_removal_blocked 0",
            "feedbuttons_leader 0",
            "feedbuttons_api_requests_total{endpoint=\"chat_button\",outcome=\"success\"} 0",
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
                let base = family.trim_end_matches("_total");
                assert!(l.starts_with(base), "{l} outside {family}");
            }
        }
    }
}
