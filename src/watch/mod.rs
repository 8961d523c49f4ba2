//! The watch daemon (`feedbuttons watch`): beside the pipeline, it runs config -> plan ->
//! apply again whenever the config directory changes, every `--interval`, and after failures,
//! holding the state's lock for as long as it runs. Takes a config directory kept up to date by
//! something else (cron `git pull`, git-sync) and its resolved [`Settings`]; gives applied
//! buttons, logs, and health and metrics over HTTP.
//!
//! Shaped like a kube-runtime controller:
//!
//! - `controller`: the one loop (file changes, the interval, requeues, resync calls, one at a
//!   time) and the context every reconcile shares.
//! - `reconcile`: one pass, which says when to come back ([`Requeue`]).
//! - `error`: why the daemon did not start, why a reconcile failed, and the error policy with
//!   its backoff.
//! - `report`: each reconcile's summary line, `/status` and metrics.
//! - `events`: the file watcher, following a swapped symbolic link.
//! - `http`: `/healthz`, `/readyz`, `/status`, `/metrics`.
//! - `metrics`: the counters and gauges, as Prometheus text; `process`: the `process_*` ones.
//! - `resync`: re-sending applied targets within half the rate limit (`--resync`).
//! - `leader`: with a PostgreSQL state, one replica leads and the others stand by.
//!
//! This module starts the daemon and stops it.

mod controller;
mod error;
pub mod events;
pub mod http;
pub mod incremental;
mod leader;
pub mod metrics;
pub mod people;
mod process;
mod reconcile;
mod report;
mod resync;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;

use crate::settings::Settings;
use crate::{state, sync};

use controller::{Controller, Timing, control_loop, stopped};
use events::DirWatcher;
use http::{Health, SharedHealth};
use metrics::Metrics;
use resync::Resync;

pub use error::{ReconcileError, StartError, error_policy};
pub use reconcile::{MAX_WAITING_RETRY, Requeue};

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
    /// Look the directory sources (`members_of`, `department`) up again this often, and
    /// reconcile with their live members (`--resolve-every`).
    pub resolve_every: Option<Duration>,
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
    let store: Arc<dyn state::StateStore> = Arc::from(location.open()?);
    let shared = location.is_shared();
    // A state file has one daemon (a second one waits up to --lock-timeout, then gives up); a
    // shared state's replicas stand by while another leads.
    let taken = {
        let (store, waiting) = (Arc::clone(&store), location.clone());
        tokio::task::spawn_blocking(move || match shared {
            true => store.writer(&state::holder("watch")),
            false => waiting.writer(store.as_ref(), &state::holder("watch")),
        })
        .await
        .map_err(|e| state::StateError::Database {
            location: location.spec().display().to_string(),
            action: "take the lock",
            why: e.to_string(),
        })?
    };
    let writer = match taken {
        Ok(writer) => Some(writer),
        // Said by the first try to lead, in the loop.
        Err(state::StateError::Locked { .. }) if shared => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(writer) = &writer {
        writer.state().check_binding(&connection.binding)?;
    }

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
    let metrics = Arc::new(Metrics::new(connection.client.metrics()));
    {
        let mut h = sync::guard(&health);
        h.status.state = store.location();
        h.status.role = match writer {
            Some(_) => http::Role::Leader,
            None => http::Role::Standby,
        };
    }
    if let Some(writer) = &writer {
        metrics.leader.set(1);
        metrics
            .targets_managed
            .set(metrics::gauge_value(writer.state().targets.len()));
    }
    let server = {
        let mut stop = stop.clone();
        let app = http::router(Arc::clone(&health), Arc::clone(&metrics));
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
    let people = options.resolve_every.map(|every| {
        people::LivePeople::new(
            every,
            crate::feishu::client::directory::Directory::new(
                connection.client.clone(),
                crate::feishu::wire::directory::RATE_LIMIT_PER_SECOND,
                crate::feishu::wire::directory::RATE_LIMIT_PER_MINUTE,
            ),
        )
    });
    let controller = Controller {
        people,
        dir,
        store,
        shared,
        lost: writer.as_ref().and_then(|w| w.lost()),
        lead_after: None,
        writer,
        binding: connection.binding,
        client: connection.client,
        verified: false,
        rate_limit: connection.rate_limit,
        allow_mass_removal: options.allow_mass_removal,
        retry_waiting: options.retry_waiting,
        stop: stop.clone(),
        health,
        metrics,
        incremental: Default::default(),
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
    if let Some(mut writer) = controller.writer.take() {
        if let Err(e) = writer.compact() {
            tracing::warn!(error = %e, "the state could not be compacted (the journal keeps every record)");
        }
        drop(writer);
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
