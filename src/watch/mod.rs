//! The watch daemon (`feedbuttons watch`): beside the pipeline, it runs config -> plan ->
//! apply again whenever the config directory changes, every `--interval`, and after failures,
//! holding the state's lock for as long as it runs. Takes a config directory kept up to date by
//! something else (cron `git pull`, git-sync); gives applied buttons, logs, and health and
//! metrics over HTTP.
//!
//! Shaped like a kube-rs controller: [`reconcile`] does one pass and says what to do next
//! ([`Action`]), [`error_policy`] turns a failure into a requeue with backoff, and one loop
//! runs them, so two reconciles never overlap. File events (`events`) only mark the config
//! dirty; the loop debounces them.
//!
//! - `events`: the file watcher, following a swapped symbolic link.
//! - `http`: `/healthz`, `/readyz`, `/status`, `/metrics`.
//! - `metrics`: the counters and gauges, as Prometheus text.
//! - `resync`: re-sending applied targets within half the rate limit (`--resync`).

pub mod events;
pub mod http;
pub mod metrics;
mod resync;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::apply::{self, ApplyReport};
use crate::feishu::client::{CallError, Client};
use crate::plan::json::PlanDoc;
use crate::settings::Settings;
use crate::state::{self, Binding, StateError, StateStore, StateWriter};
use crate::sync::guard;
use crate::text::{count, human_elapsed};
use crate::time;
use crate::{config, plan};

use events::{Change, DirWatcher};
use http::{Health, LastReconcile, SharedHealth};
use metrics::{CallKind, CallOutcome, Outcome};
use resync::Resync;

/// How long calls still in flight get after SIGTERM/SIGINT before the daemon exits without
/// their answers (they are idempotent: the next run sends them again).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest a stream of changes can hold a reconcile back: a directory that keeps changing
/// (a long checkout) is still reconciled this often.
pub const MAX_DEBOUNCE_WAIT: Duration = Duration::from_secs(2);

/// The longest wait between two tries after a failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How the daemon runs, besides its [`Settings`]: `feedbuttons watch`'s flags.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to serve /healthz, /readyz, /status and /metrics.
    pub listen: String,
    /// Reconcile at least this often, in case a file event was missed.
    pub interval: Duration,
    /// Wait until the directory has been quiet this long before reconciling.
    pub debounce: Duration,
    /// Re-send every applied target once per this long (`--resync`).
    pub resync: Option<Duration>,
    /// Apply a plan that trips the mass-removal guard instead of holding it back.
    pub allow_mass_removal: bool,
    /// The first wait before a user the API refused is tried again.
    pub retry_waiting: Duration,
}

/// What the controller does after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long (sooner on a change, never later than `--interval`).
    Requeue(Duration),
    /// Nothing to do until the config changes (or `--interval` passes, for a missed event).
    AwaitChange,
}

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
            ReconcileError::InvalidConfig { .. } => Outcome::InvalidConfig,
            ReconcileError::MassRemoval { .. } => Outcome::MassRemovalBlocked,
            ReconcileError::Incomplete { .. } => Outcome::Failed,
            ReconcileError::Load(_)
            | ReconcileError::Credentials(_)
            | ReconcileError::State(_)
            | ReconcileError::LoadPanicked(_) => Outcome::Error,
        }
    }
}

/// Starts, runs and stops the daemon: returns after SIGTERM/SIGINT, once the calls in flight
/// are recorded and the state's lock released. Everything that can refuse to start is checked
/// before the first reconcile, in `apply`'s order.
pub async fn run(settings: Settings, options: Options) -> Result<(), StartError> {
    let Settings {
        dir,
        state: location,
        connection,
    } = settings;
    if !location.was_given()
        && let Some(link) = events::link_on_path(&dir)
    {
        return Err(StartError::StateInsideLink {
            dir: dir.clone(),
            link,
        });
    }
    let store = location.open()?;
    let lock_held = store.writer(&state::holder("watch"))?;
    lock_held.state().check_binding(&connection.binding)?;

    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: options.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: options.listen.clone(),
        source,
    })?;
    let (stop_tx, stop) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    stop_on_signal(Arc::clone(&stop_tx))?;

    let health: SharedHealth = Arc::new(Mutex::new(Health::default()));
    guard(&health).metrics.targets_managed = lock_held.state().targets.len() as u64;
    let server = {
        let mut stop = stop.clone();
        let app = http::router(Arc::clone(&health));
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped(&mut stop).await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the health and metrics server stopped");
            }
        })
    };
    tracing::info!(
        addr = %addr,
        dir = %dir.display(),
        state = %store.location(),
        "watching {}; health and metrics on http://{addr} (/healthz, /readyz, /status, /metrics)",
        dir.display()
    );

    let (changes_tx, changes) = unbounded_channel();
    let watcher = DirWatcher::new(&dir, changes_tx);
    let controller = Controller {
        dir,
        store,
        lock: Some(lock_held),
        binding: connection.binding,
        client: connection.client,
        verified: false,
        rate_limit: connection.rate_limit,
        allow_mass_removal: options.allow_mass_removal,
        retry_waiting: options.retry_waiting,
        stop: stop.clone(),
        health: Arc::clone(&health),
    };
    let timing = Timing {
        interval: options.interval,
        debounce: options.debounce,
    };
    let resync = options
        .resync
        .map(|p| Resync::new(p, connection.rate_limit));
    let mut controller = control_loop(controller, changes, watcher, timing, resync, stop).await;

    // Stopping: fold the journal into the snapshot, then release the lock by dropping it.
    if let Some(mut l) = controller.lock.take() {
        if let Err(e) = l.compact() {
            tracing::warn!(error = %e, "the state could not be compacted (the journal keeps every record)");
        }
        drop(l);
    }
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        tracing::debug!("the HTTP server did not stop within 2 s; leaving it");
    }
    tracing::info!("stopped; the state lock is released");
    Ok(())
}

/// Turns `stop` true on SIGTERM or SIGINT.
fn stop_on_signal(stop: Arc<watch::Sender<bool>>) -> Result<(), StartError> {
    let signal = crate::runtime::shutdown_signal().map_err(StartError::Signal)?;
    tokio::spawn(async move {
        let name = signal.await;
        tracing::info!("{name}: stopping after the calls in flight are answered and recorded");
        let _ = stop.send(true);
    });
    Ok(())
}

/// Resolves once `stop` is true; never when its sender is gone (no signal can come then).
async fn stopped(stop: &mut watch::Receiver<bool>) {
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

struct Timing {
    interval: Duration,
    debounce: Duration,
}

impl Timing {
    /// When changes seen from `first` to `last` are reconciled: once the directory was quiet
    /// for the debounce, or [`MAX_DEBOUNCE_WAIT`] after the first at the latest.
    fn debounced(&self, (first, last): (Instant, Instant)) -> Instant {
        (last + self.debounce).min(first + MAX_DEBOUNCE_WAIT.max(self.debounce))
    }
}

/// Moves the watches to where `dir` resolves now, and says so when that changed.
fn follow(watcher: &mut DirWatcher, dir: &std::path::Path) {
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
async fn control_loop(
    mut ctl: Controller,
    mut changes: UnboundedReceiver<Change>,
    mut watcher: DirWatcher,
    timing: Timing,
    mut resync: Option<Resync>,
    mut stop: watch::Receiver<bool>,
) -> Controller {
    let mut backoff = Backoff::new(timing.interval.min(MAX_BACKOFF));
    let mut next_reconcile = Instant::now();
    // The first and the latest change not reconciled yet.
    let mut dirty: Option<(Instant, Instant)> = None;
    let mut events_open = true;
    loop {
        if *stop.borrow() {
            break;
        }
        let debounce_at = dirty.map(|d| timing.debounced(d));
        let mut wake = next_reconcile;
        if let Some(d) = debounce_at {
            wake = wake.min(d);
        }
        if let Some(r) = resync.as_ref().and_then(Resync::due_at) {
            wake = wake.min(r);
        }
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            change = changes.recv(), if events_open => {
                let Some(change) = change else {
                    events_open = false;
                    continue;
                };
                let now = Instant::now();
                let mut link = change == Change::Link;
                while let Ok(c) = changes.try_recv() {
                    link |= c == Change::Link;
                }
                if link {
                    // Follow the swap now, so that edits in the new revision are seen too.
                    follow(&mut watcher, &ctl.dir);
                }
                dirty = Some((dirty.map_or(now, |(first, _)| first), now));
                // No `continue`: under a steady stream of changes, the longest debounce wait
                // below still comes due.
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if next_reconcile <= now || dirty.is_some_and(|d| timing.debounced(d) <= now) {
            dirty = None;
            follow(&mut watcher, &ctl.dir);
            let Some((action, recorded)) =
                within_grace(&stop, ctl.run_reconcile(&mut backoff)).await
            else {
                tracing::warn!(
                    "calls still in flight {} s after the stop signal: exiting without their answers (the next run sends them again)",
                    SHUTDOWN_GRACE.as_secs()
                );
                break;
            };
            let after = match action {
                Action::Requeue(d) => d.min(timing.interval),
                Action::AwaitChange => timing.interval,
            };
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
    ctl
}

/// The one backoff policy for failed reconciles: exponential from 1 s with jitter, capped.
struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
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

    fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(self.max).min(self.max)
    }

    fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

/// What a failed reconcile leads to: a config problem waits for a change (retrying cannot fix
/// it); anything else is tried again after a growing delay.
pub fn error_policy(error: &ReconcileError, next_delay: impl FnOnce() -> Duration) -> Action {
    match error {
        ReconcileError::InvalidConfig { .. } | ReconcileError::MassRemoval { .. } => {
            Action::AwaitChange
        }
        _ => Action::Requeue(next_delay()),
    }
}

/// Everything a reconcile needs and keeps between reconciles.
struct Controller {
    dir: PathBuf,
    store: Box<dyn StateStore>,
    /// `None` after a write to the state failed: the writer is dropped and taken again.
    lock: Option<Box<dyn StateWriter>>,
    binding: Binding,
    client: Client,
    /// The credentials were checked and the state bound to this endpoint and app.
    verified: bool,
    rate_limit: u32,
    allow_mass_removal: bool,
    /// The first wait before a refused user is tried again (`--retry-waiting`).
    retry_waiting: Duration,
    stop: watch::Receiver<bool>,
    health: SharedHealth,
}

/// The longest wait between two tries of a user the API refused.
pub const MAX_WAITING_RETRY: Duration = Duration::from_secs(3600);

/// What one reconcile found and did, for its summary line, the status and the metrics.
#[derive(Default)]
struct Pass {
    config_valid: Option<bool>,
    /// The config's diagnostics, rendered (errors and warnings).
    diagnostics: Option<String>,
    summary: Option<plan::Summary>,
    report: Option<ApplyReport>,
    /// When a waiting target held back by its backoff is due (Unix seconds).
    next_retry: Option<u64>,
}

impl Pass {
    /// Target changes in the plan: the unit of "pending".
    fn planned_changes(&self) -> usize {
        self.summary
            .map_or(0, |s| s.add + s.change + s.remove + s.resend)
    }
}

/// One reconcile: read the config, plan against the state, apply, record. `pass` collects
/// what happened.
async fn reconcile(ctl: &mut Controller, pass: &mut Pass) -> Result<Action, ReconcileError> {
    let writer = match ctl.lock.as_mut() {
        Some(writer) => writer,
        None => {
            let writer = ctl.store.writer(&state::holder("watch"))?;
            writer.state().check_binding(&ctl.binding)?;
            ctl.lock.insert(writer)
        }
    };
    let root = events::config_root(&ctl.dir);
    let loaded = tokio::task::spawn_blocking(move || config::load_dir(&root))
        .await
        .map_err(ReconcileError::LoadPanicked)?;
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            pass.config_valid = Some(false);
            return Err(e.into());
        }
    };
    let config::Loaded {
        sources,
        report,
        desired,
    } = loaded;
    if !report.diagnostics.is_empty() {
        pass.diagnostics = Some(report.render_text(&sources));
    }
    drop(sources);
    let Some(desired) = desired else {
        pass.config_valid = Some(false);
        return Err(ReconcileError::InvalidConfig {
            errors: report.errors(),
        });
    };
    pass.config_valid = Some(true);
    let now = time::unix_secs_now();
    let doc = {
        let p = plan::plan(
            &desired.targets,
            &desired.chat_names,
            &writer.state().targets,
            &plan::PlanOptions {
                chats: Vec::new(),
                rate_limit: ctl.rate_limit,
                waiting_backoff: Some(plan::WaitingBackoff {
                    now,
                    first: ctl.retry_waiting.as_secs().max(1),
                    max: MAX_WAITING_RETRY.as_secs(),
                }),
                resend_all: false,
            },
        );
        pass.summary = Some(p.summary);
        pass.next_retry = p.next_retry;
        // Waiting targets the config no longer asks to change need no call.
        writer.record(&p.settle)?;
        PlanDoc::new(&p)
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
        return Ok(retry_waiting(pass.next_retry, now));
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
        ctl.lock = None;
        Err(ReconcileError::Incomplete {
            pending: pass.planned_changes() - report.targets_applied.min(pass.planned_changes()),
            why: format!("recording in the state failed: {e}"),
        })
    } else if report.complete_but_waiting() {
        // Users just refused are due after the first backoff at the earliest.
        let first = now + ctl.retry_waiting.as_secs().max(1);
        let due = match (report.waiting.is_empty(), pass.next_retry) {
            (true, due) => due,
            (false, Some(t)) => Some(t.min(first)),
            (false, None) => Some(first),
        };
        Ok(retry_waiting(due, now))
    } else {
        Err(ReconcileError::Incomplete {
            pending: pass.planned_changes() - report.targets_applied.min(pass.planned_changes()),
            why: incomplete_reason(&report),
        })
    };
    pass.report = Some(report);
    result
}

/// What to do after a reconcile that left only waiting targets: try them when the first is due.
fn retry_waiting(due: Option<u64>, now: u64) -> Action {
    match due {
        Some(t) => Action::Requeue(Duration::from_secs(t.saturating_sub(now).max(1))),
        None => Action::AwaitChange,
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

impl Controller {
    /// Runs [`reconcile`] and then the error policy; logs the summary line and publishes the
    /// status and metrics. Returns what to do next and whether the state recorded anything.
    async fn run_reconcile(&mut self, backoff: &mut Backoff) -> (Action, bool) {
        let started = Instant::now();
        let mut pass = Pass::default();
        let result = reconcile(self, &mut pass).await;
        let elapsed = started.elapsed();
        let action = match &result {
            Ok(a) => {
                backoff.reset();
                *a
            }
            // Stopping: there is no next time to announce.
            Err(_) if *self.stop.borrow() => Action::AwaitChange,
            Err(e) => error_policy(e, || backoff.next_delay()),
        };
        let outcome = result
            .as_ref()
            .map_or_else(ReconcileError::outcome, |_| Outcome::Success);
        let recorded = pass.report.as_ref().is_some_and(|r| r.targets_applied > 0);
        let message = summary_line(&result, &pass, elapsed, action);
        self.publish(outcome, &message, &pass, elapsed);
        log_summary(outcome, &message, &pass, elapsed);
        (action, recorded)
    }

    /// Updates `/status`, `/readyz` and the metrics after a reconcile.
    fn publish(&self, outcome: Outcome, message: &str, pass: &Pass, elapsed: Duration) {
        let now = time::unix_secs_f64_now();
        let managed = self.lock.as_ref().map(|l| l.state().targets.len() as u64);
        let conditions = self
            .lock
            .as_ref()
            .map(|l| waiting_targets(l.state(), self.retry_waiting));
        let mut h = guard(&self.health);
        let m = &mut h.metrics;
        m.reconciled(outcome, elapsed.as_secs_f64());
        if let Some(r) = &pass.report {
            m.calls(CallKind::Reconcile, CallOutcome::Ok, r.calls_ok);
            m.calls(CallKind::Reconcile, CallOutcome::Failed, r.calls_failed);
            m.calls(CallKind::Reconcile, CallOutcome::NotSent, r.calls_not_sent);
        }
        if let Some(v) = pass.config_valid {
            m.config_valid = Some(v);
        }
        if let Some(n) = managed {
            m.targets_managed = n;
        }
        if pass.summary.is_some() {
            let applied = pass.report.as_ref().map_or(0, |r| r.targets_applied);
            m.targets_pending = pass.planned_changes().saturating_sub(applied) as u64;
        }
        m.mass_removal_blocked = outcome == Outcome::MassRemovalBlocked;
        if outcome == Outcome::Success {
            m.last_success_unix = now;
        }
        let (pending, waiting) = conditions.unwrap_or_default();
        m.targets_waiting = pending.waiting as u64;
        m.targets_uncertain = pending.uncertain as u64;
        m.targets_owed = pending.owed as u64;
        let config_valid = m.config_valid;
        h.status = http::Status {
            ready: outcome == Outcome::Success,
            config_valid,
            last_reconcile: Some(LastReconcile {
                outcome: outcome.as_str(),
                message: message.to_owned(),
                finished_unix: now,
                duration_seconds: elapsed.as_secs_f64(),
            }),
            diagnostics: pass.diagnostics.clone(),
            pending,
            waiting,
        };
    }

    /// Sends the resync call that is due, if any (between reconciles, never during one).
    async fn resync_step(&mut self, resync: &mut Resync) {
        let now = Instant::now();
        let Some(writer) = self.lock.as_mut() else {
            // The state is taken again by the next reconcile; until then there is nothing to
            // read the applied targets from.
            resync.postpone(now + Duration::from_secs(1));
            return;
        };
        let Some(request) = resync.next_request(writer.state(), now, &self.health) else {
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
        if let Err(e) = writer.record(&marks) {
            tracing::warn!(error = %e, "resync: cannot record in the state; taking the lock again");
            self.lock = None;
            resync.retry_later(request, now);
            return;
        }
        let result = self
            .client
            .put_chat_button(request.user_id_type, &request.body)
            .await;
        let records = match &result {
            Ok(answer) => apply::outcome::accepted(
                writer.state(),
                &request,
                &call,
                &answer.failed_users,
                time::unix_secs_now(),
            ),
            Err(e) if e.may_have_applied() => Vec::new(),
            Err(_) => apply::outcome::refused(&call),
        };
        if let Err(e) = writer.record(&records) {
            tracing::warn!(error = %e, "resync: cannot record in the state; taking the lock again");
            self.lock = None;
        }
        resync.answered(&request, &result, &self.health);
    }
}

/// The one line every reconcile logs.
fn summary_line(
    result: &Result<Action, ReconcileError>,
    pass: &Pass,
    elapsed: Duration,
    next: Action,
) -> String {
    let took = human_elapsed(elapsed);
    let retry = match next {
        Action::Requeue(d) => format!("; retrying in {}", human_elapsed(d)),
        Action::AwaitChange => String::new(),
    };
    let plan_part = pass.summary.map(|s| {
        format!(
            "{} to add, {} to change, {} to remove, {} unchanged",
            s.add, s.change, s.remove, s.unchanged
        )
    });
    let waiting = pass
        .report
        .as_ref()
        .map_or(0, |r| r.waiting.len())
        .max(pass.summary.map_or(0, |s| s.waiting));
    let waiting = if waiting == 0 {
        String::new()
    } else {
        format!(
            "; {} for users who are not in the chat (retried with a backoff)",
            count(waiting, "target waits", "targets wait")
        )
    };
    match (result, &pass.report) {
        (Ok(_), None) => format!(
            "reconciled in {took}: no changes ({} up to date){waiting}",
            count(pass.summary.map_or(0, |s| s.unchanged), "target", "targets")
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
fn log_summary(outcome: Outcome, message: &str, pass: &Pass, elapsed: Duration) {
    let s = pass.summary.unwrap_or_default();
    let (calls_ok, calls_failed, recorded) = pass.report.as_ref().map_or((0, 0, 0), |r| {
        (
            r.calls_ok,
            r.calls_failed + r.calls_not_sent,
            r.targets_applied,
        )
    });
    // Shown as a block in text logs, one string in JSON; absent when there is none.
    let diagnostics = pass.diagnostics.as_deref().map(tracing::field::display);
    macro_rules! summary {
        ($level:ident) => {
            tracing::$level!(
                outcome = outcome.as_str(),
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

/// Counts of the recorded targets by condition, and the waiting ones (the first
/// [`http::WAITING_SHOWN`]), with when the daemon tries each again.
fn waiting_targets(
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
                    chat_id: target.chat_id.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_wait_for_a_change_and_the_rest_back_off() {
        let invalid = ReconcileError::InvalidConfig { errors: 2 };
        assert_eq!(
            error_policy(&invalid, || Duration::from_secs(9)),
            Action::AwaitChange
        );
        let mass = ReconcileError::MassRemoval {
            reason: "all of them".to_owned(),
        };
        assert_eq!(error_policy(&mass, || Duration::ZERO), Action::AwaitChange);
        let partial = ReconcileError::Incomplete {
            pending: 1,
            why: "x".to_owned(),
        };
        assert_eq!(
            error_policy(&partial, || Duration::from_secs(4)),
            Action::Requeue(Duration::from_secs(4))
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
