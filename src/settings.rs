//! Settings: what a command runs with, resolved once from its flags and the environment and
//! checked before anything is read or sent, as ripgrep turns raw flags into validated,
//! derived values. The command line (`cli`) and the daemon (`watch`) both take them from here:
//! neither reads the environment for credentials, picks the state's location or builds an API
//! client on its own.
//!
//! - [`StateLocation`]: where the applied state lives (a path, or a PostgreSQL URL and a state
//!   name), and how long a writer waits for another to finish.
//! - [`Credentials`]: the app id and secret, from the environment only.
//! - [`Endpoint`] -> [`Connection`]: the API base URL and rate limit, then the binding a state
//!   must carry and the client that calls the API with them.
//! - [`Settings`]: all of it for a command that applies (apply, watch).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::feishu::client::{Client, ClientConfig, ClientError, RetryPolicy, Secret, SharedBudget};
use crate::state::{self, Binding, StateError, StateStore};

/// Feishu's API (Lark's is `https://open.larksuite.com`).
pub const DEFAULT_BASE_URL: &str = "https://open.feishu.cn";

/// Tries per call: ten, not the client's default six. When a fifth of the answers are 5xx at
/// random, six tries all fail for one call in 15,600, so one 500-call apply in 30 ends partly
/// applied; ten tries fail for one call in ten million. The price: a call facing a hard outage
/// gives up after about a minute instead of half a minute.
pub const CALL_ATTEMPTS: u32 = 10;

/// How long one HTTP attempt may take, connection included: the client's default, which bounds
/// how long a writer taking a shared state over waits for the calls of the one before it.
pub const CALL_TIMEOUT: Duration = crate::feishu::client::DEFAULT_TIMEOUT;

/// The variable that names the app id.
pub const APP_ID_VAR: &str = "FEISHU_APP_ID";
/// The variable that holds the app secret (never a flag: flags show up in process lists).
pub const APP_SECRET_VAR: &str = "FEISHU_APP_SECRET";

/// Where the applied state lives: `--state` (or `FEEDBUTTONS_STATE`) when given, else
/// `DIR/.feedbuttons/state.json`, and the state's name in a PostgreSQL store (`--state-name`).
/// Kept as the user wrote it, so that a store named by a URL can be told from a path by
/// [`state::open_named`], the one place that opens stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLocation {
    spec: PathBuf,
    given: bool,
    name: Option<String>,
    lock_timeout: Duration,
}

impl StateLocation {
    /// The location for config directory `dir`, given `--state` (or `FEEDBUTTONS_STATE`).
    pub fn resolve(dir: &Path, flag: Option<&Path>) -> StateLocation {
        match flag {
            Some(spec) => StateLocation {
                spec: spec.to_path_buf(),
                given: true,
                name: None,
                lock_timeout: Duration::ZERO,
            },
            None => StateLocation {
                spec: state::default_path(dir),
                given: false,
                name: None,
                lock_timeout: Duration::ZERO,
            },
        }
    }

    /// The same location, with the state named `name` inside a PostgreSQL store
    /// (`--state-name`, `FEEDBUTTONS_STATE_NAME`).
    pub fn named(mut self, name: Option<&str>) -> StateLocation {
        self.name = name.map(str::to_owned);
        self
    }

    /// The same location, where a writer waits up to `wait` for another to finish
    /// (`--lock-timeout`).
    pub fn waiting(mut self, wait: Duration) -> StateLocation {
        self.lock_timeout = wait;
        self
    }

    /// The location as given (or defaulted): a path, or a store URL.
    pub fn spec(&self) -> &Path {
        &self.spec
    }

    /// The state's name inside a shared store, when one was given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How long a writer waits for another to finish.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// Whether the state is kept in PostgreSQL (shared by every machine that reaches it)
    /// rather than in a file.
    pub fn is_shared(&self) -> bool {
        state::is_postgres(&self.spec)
    }

    /// Whether `--state` or `FEEDBUTTONS_STATE` named it (rather than the default beside the
    /// config).
    pub fn was_given(&self) -> bool {
        self.given
    }

    /// Opens the store; nothing is read or created until it is used.
    pub fn open(&self) -> Result<Box<dyn StateStore>, StateError> {
        state::open_named(&self.spec, self.name.as_deref())
    }

    /// Takes the store's one writer for `holder`, waiting up to the lock timeout for another
    /// writer to finish.
    pub fn writer(
        &self,
        store: &dyn StateStore,
        holder: &str,
    ) -> Result<Box<dyn state::StateWriter>, StateError> {
        store.writer_waiting(holder, self.lock_timeout)
    }

    /// The app's rate budget shared through the state's database, when the state is kept in
    /// PostgreSQL: every process that calls the API for one app with a state in that database
    /// (several repositories' jobs, a daemon and a job) takes its calls from one budget.
    pub fn shared_budget(&self, binding: &Binding, rate_limit: u32) -> Option<SharedBudget> {
        let url = self.spec.to_str().filter(|_| self.is_shared())?;
        let url = state::postgres::PgUrl::parse(url).ok()?;
        let key = format!("{} {}", binding.base_url, binding.app_id);
        Some(SharedBudget(std::sync::Arc::new(
            state::postgres::budget::PgBudget::new(&url, &key, rate_limit),
        )))
    }
}

/// The app's id and secret. `Debug` shows the secret as `***`.
#[derive(Clone, Debug)]
pub struct Credentials {
    app_id: String,
    secret: Secret,
}

/// Why there are no credentials to call the API with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Neither variable is set.
    #[error("no credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET (the app's id and secret)")]
    Missing,
    /// FEISHU_APP_ID is not set.
    #[error("no app id: set FEISHU_APP_ID")]
    NoAppId,
    /// FEISHU_APP_SECRET is not set.
    #[error("no app secret: set FEISHU_APP_SECRET (it is read from the environment only)")]
    NoSecret,
}

impl Credentials {
    /// The credentials `FEISHU_APP_ID` and `FEISHU_APP_SECRET` name; an empty variable counts
    /// as unset.
    pub fn from_env() -> Result<Credentials, CredentialsError> {
        let var = |name| std::env::var(name).unwrap_or_default();
        Credentials::new(var(APP_ID_VAR), Secret::new(var(APP_SECRET_VAR)))
    }

    /// Credentials from values; both must be non-empty.
    pub fn new(app_id: String, secret: Secret) -> Result<Credentials, CredentialsError> {
        match (app_id.is_empty(), secret.is_empty()) {
            (false, false) => Ok(Credentials { app_id, secret }),
            (true, true) => Err(CredentialsError::Missing),
            (true, false) => Err(CredentialsError::NoAppId),
            (false, true) => Err(CredentialsError::NoSecret),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

/// The app id `FEISHU_APP_ID` names, if set and not empty: `plan` compares it with the state's
/// binding without needing the secret.
pub fn app_id_from_env() -> Option<String> {
    std::env::var(APP_ID_VAR).ok().filter(|id| !id.is_empty())
}

/// Which API to call and how fast: `--base-url` (or `FEISHU_BASE_URL`) and `--rate-limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub base_url: String,
    /// Calls per second, never exceeded; 0 lifts the limit.
    pub rate_limit: u32,
}

/// What apply and the daemon call the API with: the client, and the binding (base URL and app
/// id) a state they write must carry.
#[derive(Clone, Debug)]
pub struct Connection {
    pub client: Client,
    pub binding: Binding,
    pub rate_limit: u32,
}

impl Connection {
    /// Builds the client for `endpoint` with `credentials`; refuses a malformed base URL.
    pub fn new(endpoint: &Endpoint, credentials: Credentials) -> Result<Connection, ClientError> {
        Connection::sharing(endpoint, credentials, None)
    }

    /// [`Connection::new`], pacing its calls by the budget `state` shares with the app's other
    /// callers, when the state is kept in PostgreSQL.
    pub fn for_state(
        endpoint: &Endpoint,
        credentials: Credentials,
        state: &StateLocation,
    ) -> Result<Connection, ClientError> {
        let binding = Binding::new(&endpoint.base_url, &credentials.app_id);
        let budget = state.shared_budget(&binding, endpoint.rate_limit);
        Connection::sharing(endpoint, credentials, budget)
    }

    fn sharing(
        endpoint: &Endpoint,
        credentials: Credentials,
        shared_budget: Option<SharedBudget>,
    ) -> Result<Connection, ClientError> {
        let binding = Binding::new(&endpoint.base_url, &credentials.app_id);
        let client = Client::new(ClientConfig {
            base_url: endpoint.base_url.clone(),
            app_id: credentials.app_id,
            app_secret: credentials.secret,
            rate_limit: endpoint.rate_limit,
            retry: RetryPolicy {
                max_attempts: CALL_ATTEMPTS,
                ..RetryPolicy::default()
            },
            timeout: CALL_TIMEOUT,
            shared_budget,
        })?;
        Ok(Connection {
            client,
            binding,
            rate_limit: endpoint.rate_limit,
        })
    }
}

/// Everything a command that applies (apply, watch) runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config directory.
    pub dir: PathBuf,
    pub state: StateLocation,
    pub connection: Connection,
}

/// Why the settings of a command that applies could not be resolved. Nothing was read or sent.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// FEISHU_APP_ID or FEISHU_APP_SECRET is not set.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The API client cannot be set up (a malformed base URL).
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Settings {
    /// Resolves the credentials (from the environment) and the client for `state`: the
    /// credentials are checked first, as the first thing a user must put right.
    pub fn resolve(
        dir: PathBuf,
        state: StateLocation,
        endpoint: &Endpoint,
    ) -> Result<Settings, SettingsError> {
        let credentials = Credentials::from_env()?;
        let connection = Connection::for_state(endpoint, credentials, &state)?;
        Ok(Settings {
            state,
            dir,
            connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_say_which_variable_is_missing() {
        let secret = || Secret::new("s".to_owned());
        let none = || Secret::new(String::new());
        assert_eq!(
            Credentials::new(String::new(), none()).err(),
            Some(CredentialsError::Missing)
        );
        assert_eq!(
            Credentials::new(String::new(), secret()).err(),
            Some(CredentialsError::NoAppId)
        );
        assert_eq!(
            Credentials::new("cli_a".to_owned(), none()).err(),
            Some(CredentialsError::NoSecret)
        );
        let ok = Credentials::new("cli_a".to_owned(), secret()).expect("both set");
        assert_eq!(ok.app_id(), "cli_a");
        assert!(
            !format!("{ok:?}").contains("\"s\""),
            "the secret stays hidden"
        );
    }

    #[test]
    fn the_state_defaults_beside_the_config_unless_named() {
        let dir = Path::new("buttons");
        let default = StateLocation::resolve(dir, None);
        assert_eq!(default.spec(), state::default_path(dir));
        assert!(!default.was_given());
        let named = StateLocation::resolve(dir, Some(Path::new("/var/lib/s.json")));
        assert_eq!(named.spec(), Path::new("/var/lib/s.json"));
        assert!(named.was_given());
    }

    #[test]
    fn a_connection_carries_the_binding_of_its_endpoint_and_app() {
        let endpoint = Endpoint {
            base_url: "https://open.larksuite.com/".to_owned(),
            rate_limit: 5,
        };
        let credentials =
            Credentials::new("cli_a".to_owned(), Secret::new("s".to_owned())).expect("set");
        let c = Connection::new(&endpoint, credentials).expect("a valid URL");
        assert_eq!(
            c.binding,
            Binding::new("https://open.larksuite.com", "cli_a")
        );
        assert_eq!(c.rate_limit, 5);
        let bad = Endpoint {
            base_url: "ftp://x".to_owned(),
            rate_limit: 5,
        };
        let credentials =
            Credentials::new("cli_a".to_owned(), Secret::new("s".to_owned())).expect("set");
        assert!(Connection::new(&bad, credentials).is_err());
    }
}
