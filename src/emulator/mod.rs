//! A local stand-in for the Feishu chat-button API: the token endpoint,
//! `PUT /open-apis/im/v2/chat_button` and the directory look-ups (emails and mobiles to ids, a
//! chat's members, a department's members) as `specs/feishu-api.md` describes them, plus an
//! inspection and fault-injection API under `/_emulator/`.
//!
//! It sits beside the pipeline, not inside it: apply and daemon tests start it in-process with
//! [`Emulator::start`], users run it with `feedbuttons emulator` ([`cli::run`]).

mod admin;
mod api;
pub mod cli;
mod directory;
mod faults;
pub mod fixtures;
mod log;
mod lookup;
mod ratelimit;
mod server;
mod tokens;
mod validate;
mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use cli::{EmulatorArgs, run};
pub use faults::FaultSpec;
pub use fixtures::{AppAccess, ContactScope, DepartmentSpec, Fixtures, MemberSpec, PersonSpec};

/// The app id of the built-in app, used when no fixtures name apps.
pub const BUILTIN_APP_ID: &str = "cli_emulator";
/// The secret of the built-in app: a demo value, printed at start on purpose.
pub const BUILTIN_APP_SECRET: &str = "emulator-secret";

/// How the emulator behaves: everything `feedbuttons emulator` takes on its command line.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port (see [`RunningEmulator::addr`]).
    pub listen: SocketAddr,
    /// Apps, chats and members; `None` is the open world (built-in app, bot in every chat,
    /// every user a member).
    pub fixtures: Option<Fixtures>,
    /// Chat-button calls per second per app; 0 lifts the limit.
    pub rate_limit: u32,
    /// Directory calls per app and per API (each API its own budget).
    pub directory_rate_limit: DirectoryRateLimit,
    /// Added before every Feishu API answer (on top of any injected latency).
    pub latency: Duration,
    /// How long an issued tenant token lives.
    pub token_ttl: Duration,
    /// How many requests `GET /_emulator/requests` keeps (the oldest are dropped first).
    pub request_log_capacity: usize,
    /// Print one line per Feishu API request on stdout (the CLI does; tests need not).
    pub print_requests: bool,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixtures: None,
            rate_limit: crate::feishu::wire::api::RATE_LIMIT_PER_SECOND,
            directory_rate_limit: DirectoryRateLimit::default(),
            latency: Duration::ZERO,
            token_ttl: Duration::from_secs(crate::feishu::wire::api::TOKEN_MAX_LIFETIME_SECS),
            request_log_capacity: 10_000,
            print_requests: false,
        }
    }
}

/// The directory calls' limits: both windows apply, each per app and per API; 0 lifts a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryRateLimit {
    pub per_second: u32,
    pub per_minute: u32,
}

impl Default for DirectoryRateLimit {
    /// The documented 50 a second and 1000 a minute.
    fn default() -> DirectoryRateLimit {
        use crate::feishu::wire::directory::{RATE_LIMIT_PER_MINUTE, RATE_LIMIT_PER_SECOND};
        DirectoryRateLimit {
            per_second: RATE_LIMIT_PER_SECOND,
            per_minute: RATE_LIMIT_PER_MINUTE,
        }
    }
}

/// What can stop the emulator from starting.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listen address is neither `IP:PORT` nor a resolvable `HOST:PORT`.
    #[error("cannot use {addr:?} as a listen address: expected HOST:PORT, e.g. 127.0.0.1:8089")]
    ListenAddress { addr: String },
    /// The socket could not be bound (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The fixtures file could not be read.
    #[error("cannot read the fixtures file {path}: {source}")]
    ReadFixtures {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The fixtures file is not valid YAML/JSON of the fixtures shape, or breaks its rules.
    #[error("invalid fixtures file {path}:\n{problems}", problems = .problems.join("\n"))]
    InvalidFixtures {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// Waiting for Ctrl-C or SIGTERM failed.
    #[error("cannot wait for a stop signal: {0}")]
    Signal(#[source] std::io::Error),
}

/// The emulator, ready to serve.
pub struct Emulator;

impl Emulator {
    /// Binds `config.listen` and serves in the background until [`RunningEmulator::shutdown`]
    /// or until the returned value is dropped.
    pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: config.listen.to_string(),
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let shared =
            Arc::new(
                Shared::new(&config).map_err(|problems| EmulatorError::InvalidFixtures {
                    path: PathBuf::from("<fixtures>"),
                    problems,
                })?,
            );
        let apps = shared.apps.keys().cloned().collect();
        let open_world = config.fixtures.is_none();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, server::router(shared), stopped));
        Ok(RunningEmulator {
            addr,
            apps,
            open_world,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A serving emulator. Dropping it stops the server too.
pub struct RunningEmulator {
    /// The bound address (with the real port when port 0 was asked for).
    pub addr: SocketAddr,
    apps: Vec<String>,
    open_world: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningEmulator {
    /// `http://ADDR`: what `FEISHU_BASE_URL` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url()` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The app ids that can get a token, sorted.
    pub fn app_ids(&self) -> &[String] {
        &self.apps
    }

    /// Whether this emulator runs without fixtures (built-in app, open chats).
    pub fn is_open_world(&self) -> bool {
        self.open_world
    }

    /// Stops accepting, lets requests in flight finish (at most a few seconds), and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        // Dropping the sender wakes the accept loop, which then stops: a test that forgets
        // `shutdown()` does not leave a server behind.
        self.stop.take();
    }
}

/// Everything the handlers share. Each part has its own lock, and no handler holds two at once
/// or holds one across an `.await`.
pub(crate) struct Shared {
    /// App id -> secret.
    pub apps: std::collections::BTreeMap<String, String>,
    /// App id -> its scopes and contact scope; an app not listed has every scope and sees all.
    pub access: std::collections::BTreeMap<String, AppAccess>,
    pub rate_limit: u32,
    pub directory_rate_limit: DirectoryRateLimit,
    pub latency: Duration,
    pub token_ttl: Duration,
    pub print_requests: bool,
    pub world: Mutex<world::World>,
    pub tokens: Mutex<tokens::Tokens>,
    pub limiter: Mutex<ratelimit::RateLimiter>,
    /// Keyed by API and app.
    pub directory_limiter: Mutex<ratelimit::Layered>,
    pub faults: Mutex<faults::Faults>,
    pub log: Mutex<log::RequestLog>,
}

impl Shared {
    fn new(config: &EmulatorConfig) -> Result<Shared, Vec<String>> {
        let (apps, access, world) = match &config.fixtures {
            None => (Default::default(), Default::default(), world::World::open()),
            Some(f) => (
                f.apps.clone(),
                f.access.clone(),
                world::World::from_fixtures(f)?,
            ),
        };
        let apps = if apps.is_empty() {
            [(BUILTIN_APP_ID.to_owned(), BUILTIN_APP_SECRET.to_owned())].into()
        } else {
            apps
        };
        let DirectoryRateLimit {
            per_second,
            per_minute,
        } = config.directory_rate_limit;
        Ok(Shared {
            apps,
            access,
            rate_limit: config.rate_limit,
            directory_rate_limit: config.directory_rate_limit,
            latency: config.latency,
            token_ttl: config.token_ttl,
            print_requests: config.print_requests,
            world: Mutex::new(world),
            tokens: Mutex::new(tokens::Tokens::new(config.token_ttl)),
            limiter: Mutex::new(ratelimit::RateLimiter::new(config.rate_limit)),
            directory_limiter: Mutex::new(ratelimit::Layered::second_and_minute(
                per_second, per_minute,
            )),
            faults: Mutex::new(faults::Faults::default()),
            log: Mutex::new(log::RequestLog::new(config.request_log_capacity)),
        })
    }
}

/// Whole seconds, rounded up: what `expire` and `x-ogw-ratelimit-reset` report, so that a client
/// waiting that long is never early.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
