//! The daemon's HTTP side: `/healthz` (the process is alive), `/readyz` (the last reconcile
//! succeeded with a valid config), `/status` (the same as JSON, with the config's diagnostics)
//! and `/metrics` (Prometheus text). Reads what the controller publishes; changes nothing.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::metrics::Metrics;
use crate::sync::guard;

/// What the controller publishes after every reconcile, shared with the HTTP handlers.
#[derive(Debug, Default)]
pub struct Health {
    pub status: Status,
}

/// The version of `/status`'s shape, its `format_version`.
pub const STATUS_FORMAT_VERSION: u32 = 1;

/// The daemon's state as `/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// [`STATUS_FORMAT_VERSION`]: raised when a field changes meaning or goes away.
    pub format_version: u32,
    /// Where the state lives (a path, or a database URL without its password and the state's
    /// name).
    pub state: String,
    /// `leader`: this replica holds the state's lock and reconciles (always, with a state
    /// file); `standby`: another replica leads, and this one takes over when it goes.
    pub role: Role,
    /// Who leads, as the leader describes itself (command, pid, host, since), on a standby.
    pub leader: Option<String>,
    /// On a standby whose last try to lead did not reach the state's database: why.
    pub standby_error: Option<String>,
    /// What `/readyz` answers: on the leader, the last reconcile succeeded, so the config is
    /// valid and applied; on a standby, the state's database answered its last try to lead.
    pub ready: bool,
    /// `null` until the first reconcile read the config.
    pub config_valid: Option<bool>,
    pub last_reconcile: Option<LastReconcile>,
    /// The config's errors and warnings as `feedbuttons validate` prints them (when it has any).
    pub diagnostics: Option<String>,
    /// Recorded targets that are not simply applied, by condition.
    pub pending: PendingCounts,
    /// The targets the API refused (their user is not in the chat), the first
    /// [`WAITING_SHOWN`] of them: they are retried with a backoff.
    pub waiting: Vec<WaitingTarget>,
    /// With `--resolve-every`: how far the live directory sources have drifted from the
    /// committed `feedbuttons.lock` (`null` until the first look-up, and without the flag).
    pub lock_drift: Option<crate::watch::people::LockDrift>,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            format_version: STATUS_FORMAT_VERSION,
            state: String::new(),
            role: Role::Leader,
            leader: None,
            standby_error: None,
            ready: false,
            config_valid: None,
            last_reconcile: None,
            diagnostics: None,
            pending: PendingCounts::default(),
            waiting: Vec::new(),
            lock_drift: None,
        }
    }
}

/// A replica's part in a shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Standby,
}

/// How many waiting targets `/status` lists (all are counted).
pub const WAITING_SHOWN: usize = 100;

/// Counts of recorded targets by condition.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PendingCounts {
    pub waiting: usize,
    pub uncertain: usize,
    pub owed: usize,
    pub followers: usize,
}

/// A target the API refused, for `/status`.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingTarget {
    pub chat_id: String,
    /// The user id (`open_id:ou_...`).
    pub target: String,
    pub reason: String,
    /// RFC 3339.
    pub since: String,
    pub tries: u32,
    /// When the daemon tries it again (RFC 3339).
    pub next_try: String,
}

/// The last reconcile, for `/status` and `/readyz`.
#[derive(Clone, Debug, Serialize)]
pub struct LastReconcile {
    /// As the `outcome` label of `feedbuttons_reconciles_total`.
    pub outcome: &'static str,
    /// What started it, as the `reason` label of `feedbuttons_reconcile_reasons_total`.
    pub reason: &'static str,
    /// The summary line the log got.
    pub message: String,
    pub finished_unix: f64,
    pub duration_seconds: f64,
}

/// The handle the controller and the handlers share.
pub type SharedHealth = Arc<Mutex<Health>>;

/// What the handlers read.
#[derive(Clone)]
struct Published {
    health: SharedHealth,
    metrics: Arc<Metrics>,
}

pub fn router(health: SharedHealth, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(render_metrics))
        .with_state(Published { health, metrics })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(p): State<Published>) -> Response {
    let status = guard(&p.health).status.clone();
    let mut body = String::new();
    match &status.last_reconcile {
        _ if status.role == Role::Standby => match (&status.standby_error, &status.leader) {
            (Some(why), _) => body.push_str(&format!("standby: {why}\n")),
            (None, Some(leader)) => body.push_str(&format!(
                "standby: {leader} leads; this replica takes over when it goes\n"
            )),
            (None, None) => body.push_str("standby: trying to lead\n"),
        },
        Some(last) => {
            body.push_str(&format!("{}: {}\n", last.outcome, last.message));
        }
        None => body.push_str("starting: the first reconcile has not finished yet\n"),
    }
    if let Some(d) = &status.diagnostics {
        body.push('\n');
        body.push_str(d);
    }
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

async fn status(State(p): State<Published>) -> Response {
    let status = guard(&p.health).status.clone();
    axum::Json(status).into_response()
}

async fn render_metrics(State(p): State<Published>) -> Response {
    let text = p.metrics.render();
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}
