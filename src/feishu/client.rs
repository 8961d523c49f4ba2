//! API client stage: runs the plan's calls against Feishu. Takes wire requests
//! (`PUT /open-apis/im/v2/chat_button`), gives per-call outcomes or a typed [`CallError`].
//!
//! Around each call: the tenant token (cached, refreshed ahead of expiry, dropped and fetched
//! again when the API refuses it), the client-side rate limit (every HTTP attempt takes a slot),
//! and one retry policy for 429, 5xx and connection errors. [`Client`] is cheap to clone and
//! meant to be shared by concurrent tasks: the limiter, not the caller, sets the pace.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use backon::Retryable;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{debug, trace};

use super::answer::{
    AttemptFailure, Verdict, answered_outcome, classify_chat_button, classify_token, code_of, read,
    unanswered_outcome,
};
use super::metrics::{ClientMetrics, EndpointLabel, RequestOutcome};
use super::ratelimit::Limiter;
use super::token::{Token, TokenCache};
use super::wire::api::{
    CHAT_BUTTON_PATH, CODE_BOT_NOT_IN_CHAT, CODE_MISSING_SCOPE, RATE_LIMIT_PER_SECOND, TOKEN_PATH,
};
use super::wire::{ChatButtonRequest, FailedUserReason, TenantTokenRequest, UserIdType};

mod attempt;
pub mod directory;

use attempt::Call;

pub use super::ratelimit::{Budget, SharedBudget};
pub use super::retry::{MAX_RESET_WAIT, RetryPolicy};
pub use super::secret::Secret;
pub use super::token::REFRESH_MARGIN;

/// The documented `Content-Type` of both endpoints.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// How long one HTTP attempt may take, connection included. The API answers in well under a
/// second; the bound matters because a writer taking a shared state over waits this long for
/// the calls of the one before it (see `state::postgres::ATTEMPT_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `code` of [`CallError::Api`] when there was no API answer to take a code from: the body
/// was not the API's JSON (a wrong base URL, a proxy's error page), or the request could not be
/// built.
pub const CODE_NOT_API_JSON: i64 = -1;

/// The largest answer read: the API's answers are a few hundred bytes (a chat-button answer
/// lists at most 20 failed users), so anything near this is not the API, and reading it whole
/// would cost memory for every call in flight.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Everything the client needs. `Debug` shows the secret as `***`.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://open.feishu.cn`, `https://open.larksuite.com`, or an emulator's `http://ADDR`.
    pub base_url: String,
    pub app_id: String,
    pub app_secret: Secret,
    /// Chat-button calls per second; 0 = unlimited.
    pub rate_limit: u32,
    pub retry: RetryPolicy,
    /// Per HTTP attempt; zero = none.
    pub timeout: Duration,
    /// A calls-per-second budget shared with the app's other callers (a PostgreSQL state's);
    /// `None`: this process paces itself alone.
    pub shared_budget: Option<SharedBudget>,
}

impl ClientConfig {
    /// The documented rate limit, the default retry policy and timeout.
    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        app_secret: Secret,
    ) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            app_id: app_id.into(),
            app_secret,
            rate_limit: RATE_LIMIT_PER_SECOND,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            shared_budget: None,
        }
    }
}

/// Why a client could not be set up (before any call).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an absolute http(s) URL.
    #[error("invalid Feishu base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    /// The app id or the app secret is empty.
    #[error("no {what}: set {var}")]
    MissingCredential {
        what: &'static str,
        var: &'static str,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Why a call did not apply. Never holds the app secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Wrong app id/secret or app unavailable (10014/10015): stop the whole run.
    #[error(
        "Feishu refused the app credentials (code {code}: {msg}); check FEISHU_APP_ID and FEISHU_APP_SECRET"
    )]
    Credentials { code: i64, msg: String },
    /// 99991672 missing scope: stop the whole run (the app lacks im:app_feed_card:write).
    #[error(
        "the app lacks the scope im:app_feed_card:write (code 99991672: {msg}); add it to the app and publish a new version"
    )]
    MissingScope { msg: String },
    /// 230027: the bot is not in this chat; other chats go on.
    #[error("the bot is not in chat {chat_id} (code 230027); add the bot to the chat")]
    BotNotInChat { chat_id: String },
    /// 230001 / 99992402: the API rejected the request's content.
    #[error("the API rejected the request (code {code}): {msg}")]
    Rejected { code: i64, msg: String },
    /// Retries exhausted on 429s and connections that could not be made: no attempt reached
    /// the API, so nothing was applied.
    #[error("gave up after {attempts} attempt(s); the last failure: {last}")]
    GaveUp { attempts: u32, last: String },
    /// An attempt reached the API and no answer said what became of it (a timeout, a dropped
    /// connection, a 5xx), and no later attempt applied: it may have applied. A later attempt
    /// refused with an error (`then`) says nothing about the earlier one.
    #[error(
        "no answer after {attempts} attempt(s), so it may or may not have applied; the last failure: {last}"
    )]
    Unanswered {
        attempts: u32,
        last: String,
        /// The error a later attempt was refused with, if one was.
        then: Option<Box<CallError>>,
    },
    /// Any other non-zero code ([`CODE_NOT_API_JSON`] when the answer had none).
    #[error("the API answered HTTP {status} with code {code}: {msg}")]
    Api { code: i64, msg: String, status: u16 },
    /// The run is stopping ([`Client::stop_sending`]): this attempt was not sent.
    #[error("not sent: the run was stopping")]
    Stopped,
}

impl CallError {
    /// Whether the whole run must stop: every later call would fail the same way.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.final_error(),
            CallError::Credentials { .. } | CallError::MissingScope { .. }
        )
    }

    /// The error the last attempt got: for an unanswered call refused later, that refusal.
    pub fn final_error(&self) -> &CallError {
        match self {
            CallError::Unanswered { then: Some(e), .. } => e,
            e => e,
        }
    }

    /// Whether the call may have taken effect although no answer said so: its targets are
    /// uncertain.
    pub fn may_have_applied(&self) -> bool {
        matches!(self, CallError::Unanswered { .. })
    }

    /// Whether the call failed after every retry (the API is unreachable, throttling, or
    /// failing), rather than being refused.
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            CallError::GaveUp { .. } | CallError::Unanswered { .. }
        )
    }

    /// The API's code, when the API answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            CallError::Credentials { code, .. }
            | CallError::Rejected { code, .. }
            | CallError::Api { code, .. } => Some(*code).filter(|c| *c != CODE_NOT_API_JSON),
            CallError::MissingScope { .. } => Some(CODE_MISSING_SCOPE),
            CallError::BotNotInChat { .. } => Some(CODE_BOT_NOT_IN_CHAT),
            CallError::GaveUp { .. } | CallError::Unanswered { .. } | CallError::Stopped => None,
        }
    }
}

/// A chat-button call that the API accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatButtonOutcome {
    /// Users the API listed in failed_user_reasons: NOT applied (whatever their error_code).
    pub failed_users: Vec<FailedUserReason>,
    /// Tries it took: 1, plus one per retry, plus one if a refused token was replaced.
    pub attempts: u32,
    /// An earlier attempt reached the API and got no answer: it may have applied to the users
    /// this answer refuses.
    pub unanswered_before: bool,
}

/// Counters for the summary, since the client was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// Chat-button HTTP requests sent (each took a rate-limit slot).
    pub http_attempts: u64,
    /// 429 / 99991400 answers seen (chat button and token endpoint).
    pub rate_limited: u64,
    /// Waits before another try (chat button and token endpoint).
    pub retries: u64,
    /// Token requests sent.
    pub token_fetches: u64,
    /// Tokens the API refused (expired early, invalid) and that were dropped.
    pub tokens_refused: u64,
}

/// The Feishu API client. Clones share one token cache, limiter and set of counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    token_url: String,
    chat_button_url: String,
    app_id: String,
    app_secret: Secret,
    rate_limit: u32,
    limiter: Limiter,
    retry: RetryPolicy,
    tokens: TokenCache,
    metrics: ClientMetrics,
    /// Set by [`Client::stop_sending`]: no attempt starts after it.
    stop: tokio::sync::watch::Sender<bool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("app_id", &self.inner.app_id)
            .field("rate_limit", &self.inner.rate_limit)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let bad_url = |reason: String| ClientError::BaseUrl {
            url: config.base_url.clone(),
            reason,
        };
        let parsed = url::Url::parse(&base_url).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad_url("expected an http:// or https:// URL".to_owned()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad_url("expected no query or fragment".to_owned()));
        }
        if config.app_id.trim().is_empty() {
            return Err(ClientError::MissingCredential {
                what: "app id",
                var: "FEISHU_APP_ID",
            });
        }
        if config.app_secret.is_empty() {
            return Err(ClientError::MissingCredential {
                what: "app secret",
                var: "FEISHU_APP_SECRET",
            });
        }
        // The system's trust store first (so that a company proxy's CA installed there is
        // trusted), and the Mozilla roots built in, for hosts that have no store (a minimal
        // container): a certificate either vouches for is accepted.
        let bundled = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        let mut http = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_merge(bundled)
            // The API never redirects; following one would carry the token somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("feedbuttons/", env!("CARGO_PKG_VERSION")));
        if !config.timeout.is_zero() {
            http = http
                .timeout(config.timeout)
                .connect_timeout(config.timeout.min(Duration::from_secs(10)));
        }
        let http = http.build().map_err(ClientError::Http)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                token_url: format!("{base_url}{TOKEN_PATH}"),
                chat_button_url: format!("{base_url}{CHAT_BUTTON_PATH}"),
                base_url,
                app_id: config.app_id,
                app_secret: config.app_secret,
                rate_limit: config.rate_limit,
                limiter: Limiter::shared(config.rate_limit, config.shared_budget),
                retry: config.retry,
                tokens: TokenCache::default(),
                metrics: ClientMetrics::default(),
                stop: tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Fetches a token now (so bad credentials fail before any change is attempted).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn check_credentials(&self) -> Result<(), CallError> {
        let inner = &*self.inner;
        let attempts = AtomicU32::new(0);
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            inner.token().await.map(drop)
        })
        .retry(inner.retry.backoff())
        .when(AttemptFailure::is_transient)
        .adjust(|f, next| inner.retry.wait(next, f.server_wait()))
        .notify(|f, wait| inner.note_retry(EndpointLabel::Token, f, wait))
        .await;
        result.map_err(|f| f.into_error(attempts.load(Ordering::Relaxed)))
    }

    /// One chat-button call, with token handling, rate limiting and retries.
    ///
    /// A retry resends the same full list, which is safe: the call replaces, it does not add.
    #[tracing::instrument(level = "debug", skip_all, fields(chat_id = %body.chat_id))]
    pub async fn put_chat_button(
        &self,
        user_id_type: UserIdType,
        body: &ChatButtonRequest,
    ) -> Result<ChatButtonOutcome, CallError> {
        let inner = &*self.inner;
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::Api {
            code: CODE_NOT_API_JSON,
            msg: format!("cannot encode the request: {e}"),
            status: 0,
        })?;
        trace!(body = %String::from_utf8_lossy(&bytes), "chat_button request");
        let call = Call {
            chat_id: &body.chat_id,
            user_id_type,
            bytes: &bytes,
            attempts: AtomicU32::new(0),
            unanswered: AtomicBool::new(false),
        };
        // A stop cuts a backoff short; the next attempt then ends as `Stopped` unsent.
        let stop = inner.stop.subscribe();
        let sleep = move |wait: Duration| {
            let mut stop = stop.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|stopped| *stopped) => {}
                }
            }
        };
        let result = (|| inner.try_chat_button(&call))
            .retry(inner.retry.backoff())
            .sleep(sleep)
            .when(AttemptFailure::is_transient)
            .adjust(|f, next| inner.retry.wait(next, f.server_wait()))
            .notify(|f, wait| inner.note_retry(EndpointLabel::ChatButton, f, wait))
            .await;
        let attempts = call.attempts.load(Ordering::Relaxed);
        let unanswered = call.unanswered.load(Ordering::Relaxed);
        match result {
            Ok(failed_users) => Ok(ChatButtonOutcome {
                failed_users,
                attempts,
                unanswered_before: unanswered,
            }),
            // An attempt that reached the API is settled only by a later one that applied: an
            // error on a later attempt (the bot removed meanwhile, a gateway's refusal) says
            // nothing about what the earlier one did.
            Err(AttemptFailure::Final(e)) if unanswered && !matches!(e, CallError::Stopped) => {
                Err(CallError::Unanswered {
                    attempts,
                    last: e.to_string(),
                    then: Some(Box::new(e)),
                })
            }
            Err(f) if unanswered => Err(CallError::Unanswered {
                attempts,
                last: f.to_string(),
                then: None,
            }),
            Err(f) => Err(f.into_error(attempts)),
        }
    }

    /// Stops every call of this client from sending another attempt (a signal arrived): calls
    /// waiting for a rate-limit slot or a retry end with [`CallError::Stopped`]; requests already
    /// on the wire are answered as usual.
    pub fn stop_sending(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Lets calls go out again after [`Client::stop_sending`]: a daemon replica that lost the
    /// lead stopped its calls, and sends again once it leads again.
    pub fn resume_sending(&self) {
        self.inner.stop.send_replace(false);
    }

    /// Counters for the summary: HTTP attempts, 429s seen, retries, token fetches.
    pub fn stats(&self) -> ClientStats {
        let m = &self.inner.metrics;
        let throttled = [RequestOutcome::RateLimited];
        ClientStats {
            http_attempts: m.requests(EndpointLabel::ChatButton, &[]),
            rate_limited: m.requests(EndpointLabel::ChatButton, &throttled)
                + m.requests(EndpointLabel::Token, &throttled),
            retries: m.retries(),
            token_fetches: m.requests(EndpointLabel::Token, &[]),
            tokens_refused: m.tokens_refused(),
        }
    }

    /// The client's counters, as Prometheus families (shared by every clone), for the
    /// daemon's `/metrics`.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }
}

#[cfg(test)]
mod tests;
