//! Settings: what a command runs with, resolved once from its flags and the environment and
//! checked before anything is read or sent, as ripgrep turns raw flags into validated,
//! derived values. The command line (`cli`) and the daemon (`watch`) both take them from here:
//! neither reads the environment for credentials, picks the state's location or builds an API
//! client on its own.
//!
//! - [`StateLocation`]: where the applied state lives (a path; a store URL later).
//! - [`Credentials`]: the app id and secret, from the environment only.
//! - [`Endpoint`] -> [`Connection`]: the API base URL and rate limit, then the binding a state
//!   must carry and the client that calls the API with them.
//! - [`Settings`]: all of it for a command that applies (apply, watch).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::feishu::client::{Client, ClientConfig, ClientError, RetryPolicy, Secret};
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
/// `DIR/.feedbuttons/state.json`. Kept as the user wrote it, so that a store named by a URL can
/// be told from a path by [`state::open`], the one place that opens stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLocation {
    spec: PathBuf,
    given: bool,
}

impl StateLocation {
    /// The location for config directory `dir`, given `--state` (or `FEEDBUTTONS_STATE`).
    pub fn resolve(dir: &Path, flag: Option<&Path>) -> StateLocation {
        match flag {
            Some(spec) => StateLocation {
                spec: spec.to_path_buf(),
                given: true,
            },
            None => StateLocation {
                spec: state::default_path(dir),
                given: false,
            },
        }
    }

    /// The location as given (or defaulted): a path, or a store URL.
    pub fn spec(&self) -> &Path {
        &self.spec
    }

    /// Whether `--state` or `FEEDBUTTONS_STATE` named it (rather than the default beside the
    /// config).
    pub fn was_given(&self) -> bool {
        self.given
    }

    /// Opens the store; nothing is read or created until it is used.
    pub fn open(&self) -> Result<Box<dyn StateStore>, StateError> {
        state::open(&self.spec)
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
            shared_budget: None,
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
    /// Resolves the state's location, the credentials (from the environment) and the client:
    /// the credentials are checked first, as the first thing a user must put right.
    pub fn resolve(
        dir: PathBuf,
        state_flag: Option<&Path>,
        endpoint: &Endpoint,
    ) -> Result<Settings, SettingsError> {
        let credentials = Credentials::from_env()?;
        let connection = Connection::new(endpoint, credentials)?;
        Ok(Settings {
            state: StateLocation::resolve(&dir, state_flag),
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
