//! API client stage: runs the plan's calls against Feishu. Takes wire requests
//! (`PUT /open-apis/im/v2/chat_button`), gives per-call outcomes or a typed [`CallError`].
//!
//! Around each call: the tenant token (cached, refreshed ahead of expiry, dropped and fetched
//! again when the API refuses it), the client-side rate limit (every HTTP attempt takes a slot),
//! and one retry policy for 429, 5xx and connection errors. [`Client`] is cheap to clone and
//! meant to be shared by concurrent tasks: the limiter, not the caller, sets the pace.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use backon::Retryable;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{debug, trace};

use super::metrics::{ClientMetrics, EndpointLabel, RequestOutcome};
use super::ratelimit::Limiter;
use super::token::{Token, TokenCache};
use super::wire::api::{
    CHAT_BUTTON_PATH, CODE_APP_UNAVAILABLE, CODE_BOT_NOT_IN_CHAT, CODE_FIELD_VALIDATION,
    CODE_MISSING_SCOPE, CODE_NO_TOKEN, CODE_OK, CODE_PARAM_INVALID, CODE_RATE_LIMITED,
    CODE_TOKEN_EXPIRED, CODE_TOKEN_FORMAT, CODE_TOKEN_INVALID, CODE_TOKEN_PARAM_INVALID,
    CODE_WRONG_SECRET, HEADER_RATELIMIT_RESET, RATE_LIMIT_PER_SECOND, TOKEN_PATH,
};
use super::wire::{
    ApiResponse, ChatButtonData, ChatButtonRequest, FailedUserReason, TenantTokenRequest,
    TenantTokenResponse, UserIdType,
};

pub use super::retry::{MAX_RESET_WAIT, RetryPolicy};
pub use super::secret::Secret;
pub use super::token::REFRESH_MARGIN;

/// The documented `Content-Type` of both endpoints.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// How long one HTTP attempt may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `code` of [`CallError::Api`] when there was no API answer to take a code from: the body
/// was not the API's JSON (a wrong base URL, a proxy's error page), or the request could not be
/// built.
pub const CODE_NOT_API_JSON: i64 = -1;

/// How much of an unexpected answer an error quotes.
const QUOTE_CHARS: usize = 200;

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
    /// connection, a 5xx), and no later attempt settled it: it may have applied.
    #[error(
        "no answer after {attempts} attempt(s), so it may or may not have applied; the last failure: {last}"
    )]
    Unanswered { attempts: u32, last: String },
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
            self,
            CallError::Credentials { .. } | CallError::MissingScope { .. }
        )
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
                limiter: Limiter::new(config.rate_limit),
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
            }),
            // An attempt that reached the API is settled only by an answer to a later one.
            Err(
                f @ (AttemptFailure::Final(CallError::Stopped)
                | AttemptFailure::RateLimited { .. }
                | AttemptFailure::Transient { .. }
                | AttemptFailure::Unanswered { .. }),
            ) if unanswered => Err(CallError::Unanswered {
                attempts,
                last: f.to_string(),
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

/// One chat-button call across its attempts.
struct Call<'a> {
    chat_id: &'a str,
    user_id_type: UserIdType,
    bytes: &'a [u8],
    attempts: AtomicU32,
    /// An attempt reached the API and got no answer that says what became of it.
    unanswered: AtomicBool,
}

/// Why one attempt failed.
#[derive(Debug)]
enum AttemptFailure {
    /// 429 / 99991400; `wait` is the server's `x-ogw-ratelimit-reset`, when it sent one.
    RateLimited { wait: Option<Duration> },
    /// A connection that could not be made: nothing reached the API.
    Transient { why: String },
    /// A 5xx, a timeout or a connection dropped after the request went out: the API may
    /// have applied it.
    Unanswered { why: String },
    /// Not worth another attempt.
    Final(CallError),
}

impl AttemptFailure {
    fn is_transient(&self) -> bool {
        !matches!(self, AttemptFailure::Final(_))
    }

    fn server_wait(&self) -> Option<Duration> {
        match self {
            AttemptFailure::RateLimited { wait } => *wait,
            _ => None,
        }
    }

    fn into_error(self, attempts: u32) -> CallError {
        match self {
            AttemptFailure::Final(e) => e,
            transient => CallError::GaveUp {
                attempts,
                last: transient.to_string(),
            },
        }
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::RateLimited { wait: Some(w) } => write!(
                f,
                "rate limited (code {CODE_RATE_LIMITED}, reset in {} s)",
                w.as_secs()
            ),
            AttemptFailure::RateLimited { wait: None } => {
                write!(f, "rate limited (code {CODE_RATE_LIMITED})")
            }
            AttemptFailure::Transient { why } | AttemptFailure::Unanswered { why } => {
                f.write_str(why)
            }
            AttemptFailure::Final(e) => write!(f, "{e}"),
        }
    }
}

/// What one chat-button answer means.
#[derive(Debug)]
enum Verdict {
    Applied(Vec<FailedUserReason>),
    /// 99991661/99991663/99991671/99991677: the token, not the request.
    TokenRefused {
        code: i64,
        msg: String,
        status: u16,
    },
    Failed(AttemptFailure),
}

/// An HTTP answer, read in full.
struct Answer {
    status: StatusCode,
    reset: Option<String>,
    body: Vec<u8>,
}

impl Inner {
    async fn token(&self) -> Result<Arc<Token>, AttemptFailure> {
        self.tokens.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<(Token, Duration), AttemptFailure> {
        let request = TenantTokenRequest {
            app_id: self.app_id.clone(),
            app_secret: self.app_secret.expose().to_owned(),
        };
        let bytes = serde_json::to_vec(&request).map_err(|e| {
            AttemptFailure::Final(CallError::Api {
                code: CODE_NOT_API_JSON,
                msg: format!("cannot encode the token request: {e}"),
                status: 0,
            })
        })?;
        drop(request);
        let sent = self
            .http
            .post(&self.token_url)
            .header(CONTENT_TYPE, JSON_UTF8)
            .body(bytes)
            .send()
            .await;
        let answer = match read(sent).await {
            Ok(answer) => answer,
            Err(f) => {
                self.metrics
                    .request(EndpointLabel::Token, unanswered_outcome(&f));
                // A token request changes nothing, so an unanswered one is only transient.
                return Err(match f {
                    AttemptFailure::Transient { why } | AttemptFailure::Unanswered { why } => {
                        AttemptFailure::Transient {
                            why: format!("token endpoint: {why}"),
                        }
                    }
                    other => other,
                });
            }
        };
        let result = classify_token(&answer, &[self.app_secret.expose()]);
        self.metrics.request(
            EndpointLabel::Token,
            answered_outcome(&answer, result.as_ref().err()),
        );
        match &result {
            Ok((_, expire)) => debug!(expire_secs = expire.as_secs(), "tenant token fetched"),
            Err(f) => {
                debug!(status = answer.status.as_u16(), failure = %f, "token fetch failed");
            }
        }
        result
    }

    async fn try_chat_button(
        &self,
        call: &Call<'_>,
    ) -> Result<Vec<FailedUserReason>, AttemptFailure> {
        call.attempts.fetch_add(1, Ordering::Relaxed);
        let mut token = self.token().await?;
        let mut verdict = self.send_chat_button(call, &token).await;
        if let Verdict::TokenRefused { code, .. } = &verdict {
            // Bots stay broken for hours when a refused token is kept in the cache: drop it,
            // fetch another, and try once more. Once per attempt, so that a later attempt (after
            // a 5xx) may replace a token that expired since.
            debug!(
                code,
                "token refused: fetching a new one and trying once more"
            );
            self.metrics.token_refused();
            self.tokens.evict(&token).await;
            call.attempts.fetch_add(1, Ordering::Relaxed);
            token = self.token().await?;
            verdict = self.send_chat_button(call, &token).await;
        }
        if matches!(verdict, Verdict::Failed(AttemptFailure::Unanswered { .. })) {
            call.unanswered.store(true, Ordering::Relaxed);
        }
        match verdict {
            Verdict::Applied(failed_users) => Ok(failed_users),
            // A token refused right after it was fetched is no stale cache (clock skew, tokens
            // revoked as they are issued): drop it too and leave the rest to the backoff policy,
            // so that the call neither loops nor fails at the first hiccup.
            Verdict::TokenRefused { code, msg, status } => {
                self.metrics.token_refused();
                self.tokens.evict(&token).await;
                Err(AttemptFailure::Transient {
                    why: format!(
                        "a freshly fetched token was refused too (HTTP {status}, code {code}: {msg})"
                    ),
                })
            }
            Verdict::Failed(f) => Err(f),
        }
    }

    /// One HTTP attempt: a rate-limit slot, then the request.
    async fn send_chat_button(&self, call: &Call<'_>, token: &Token) -> Verdict {
        let mut stop = self.stop.subscribe();
        tokio::select! {
            () = self.limiter.acquire() => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
        if *stop.borrow() {
            return Verdict::Failed(AttemptFailure::Final(CallError::Stopped));
        }
        let started = Instant::now();
        let sent = self
            .http
            .put(&self.chat_button_url)
            .query(&[("user_id_type", call.user_id_type.as_str())])
            .header(AUTHORIZATION, token.header().clone())
            .header(CONTENT_TYPE, JSON_UTF8)
            .body(call.bytes.to_vec())
            .send()
            .await;
        let answer = match read(sent).await {
            Ok(answer) => answer,
            Err(failure) => {
                debug!(elapsed_ms = started.elapsed().as_millis(), %failure, "chat_button: no answer");
                self.metrics
                    .request(EndpointLabel::ChatButton, unanswered_outcome(&failure));
                return Verdict::Failed(failure);
            }
        };
        let secrets = [token.secret().expose(), self.app_secret.expose()];
        let verdict = classify_chat_button(&answer, call.chat_id, &secrets);
        let outcome = match &verdict {
            Verdict::Applied(_) => answered_outcome(&answer, None),
            Verdict::TokenRefused { .. } => RequestOutcome::TokenRefused,
            Verdict::Failed(f) => answered_outcome(&answer, Some(f)),
        };
        self.metrics.request(EndpointLabel::ChatButton, outcome);
        debug!(
            status = answer.status.as_u16(),
            code = code_of(&answer.body),
            elapsed_ms = started.elapsed().as_millis(),
            verdict = verdict.label(),
            "chat_button answered"
        );
        // The server's window is full for everyone, not just this call: hold back the calls
        // queued behind it too.
        if let Verdict::Failed(AttemptFailure::RateLimited { wait: Some(wait) }) = &verdict {
            self.limiter
                .pause_until(Instant::now() + (*wait).min(MAX_RESET_WAIT));
        }
        verdict
    }

    fn note_retry(&self, endpoint: EndpointLabel, failure: &AttemptFailure, wait: Duration) {
        self.metrics.retry(endpoint);
        debug!(
            what = endpoint.as_str(),
            wait_ms = wait.as_millis(),
            failure = %failure,
            "retrying after a transient failure"
        );
    }
}

impl Verdict {
    /// For logs: what happened, without the server's text.
    fn label(&self) -> &'static str {
        match self {
            Verdict::Applied(_) => "applied",
            Verdict::TokenRefused { .. } => "token refused",
            Verdict::Failed(AttemptFailure::RateLimited { .. }) => "rate limited",
            Verdict::Failed(AttemptFailure::Transient { .. }) => "transient failure",
            Verdict::Failed(AttemptFailure::Unanswered { .. }) => "no answer",
            Verdict::Failed(AttemptFailure::Final(_)) => "failed",
        }
    }
}

/// How a request ended that got no answer to read.
fn unanswered_outcome(failure: &AttemptFailure) -> RequestOutcome {
    match failure {
        AttemptFailure::Transient { .. } => RequestOutcome::NoConnection,
        AttemptFailure::Unanswered { .. } => RequestOutcome::NoAnswer,
        AttemptFailure::RateLimited { .. } => RequestOutcome::RateLimited,
        AttemptFailure::Final(_) => RequestOutcome::Failed,
    }
}

/// How an answered request ended, given the failure its answer means (if any).
fn answered_outcome(answer: &Answer, failure: Option<&AttemptFailure>) -> RequestOutcome {
    match failure {
        _ if answer.status.is_server_error() => RequestOutcome::ServerError,
        None => RequestOutcome::Success,
        Some(AttemptFailure::RateLimited { .. }) => RequestOutcome::RateLimited,
        Some(AttemptFailure::Final(_)) => RequestOutcome::Failed,
        Some(AttemptFailure::Transient { .. } | AttemptFailure::Unanswered { .. }) => {
            RequestOutcome::ServerError
        }
    }
}

/// Sends and reads the whole answer, up to [`MAX_ANSWER_BYTES`]. A connection that could not
/// be made is transient; a timeout, a connection dropped after the request went out, or an
/// answer too large to be the API's leaves the call unanswered (it may have applied). Either
/// is worth another attempt: the call replaces, so sending it again is safe.
async fn read(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Answer, AttemptFailure> {
    let failure = |e: reqwest::Error| {
        if e.is_builder() {
            // Our own request could not be built: sending it again would not help.
            AttemptFailure::Final(CallError::Api {
                code: CODE_NOT_API_JSON,
                msg: describe(&e),
                status: 0,
            })
        } else if e.is_connect() {
            AttemptFailure::Transient { why: describe(&e) }
        } else {
            AttemptFailure::Unanswered { why: describe(&e) }
        }
    };
    let mut response = sent.map_err(failure)?;
    let status = response.status();
    let reset = response
        .headers()
        .get(HEADER_RATELIMIT_RESET)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let too_large = || AttemptFailure::Unanswered {
        why: format!(
            "HTTP {}: the answer is larger than {} KiB, which no API answer is",
            status.as_u16(),
            MAX_ANSWER_BYTES / 1024
        ),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failure)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        reset,
        body,
    })
}

/// A reqwest error with its causes ("connection refused" sits a few sources down). Holds the
/// URL, never a header.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if e.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// The answer's `code`, for logs (the message may quote the request; the code never does).
fn code_of(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Code {
        code: i64,
    }
    serde_json::from_slice::<Code>(body).ok().map(|c| c.code)
}

/// Whole seconds from `x-ogw-ratelimit-reset`, if it holds a number.
fn parse_reset(reset: Option<&str>) -> Option<Duration> {
    reset
        .and_then(|r| r.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// `text` with every secret in it replaced by `***`.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    text
}

/// The start of an answer that is not the API's JSON, with any secret cut out first.
fn not_api_json(answer: &Answer, secrets: &[&str]) -> CallError {
    let text = scrub(&String::from_utf8_lossy(&answer.body), secrets);
    let mut quote: String = text.trim().chars().take(QUOTE_CHARS).collect();
    if text.trim().chars().count() > QUOTE_CHARS {
        quote.push('…');
    }
    CallError::Api {
        code: CODE_NOT_API_JSON,
        msg: format!("the answer is not the API's JSON: {quote:?}"),
        status: answer.status.as_u16(),
    }
}

/// A 5xx, with the body's code and message when it had them. The API may have applied the
/// request before it failed, so it counts as unanswered.
fn server_error(status: StatusCode, code: Option<i64>, msg: Option<&str>) -> AttemptFailure {
    let why = match (code, msg) {
        (Some(code), Some(msg)) => format!("HTTP {} (code {code}: {msg})", status.as_u16()),
        _ => format!("HTTP {}", status.as_u16()),
    };
    AttemptFailure::Transient { why }
}

fn is_rate_limited(status: StatusCode, code: Option<i64>) -> bool {
    // Some older APIs throttle with HTTP 400 and only the code says so.
    status == StatusCode::TOO_MANY_REQUESTS || code == Some(CODE_RATE_LIMITED)
}

fn classify_chat_button(answer: &Answer, chat_id: &str, secrets: &[&str]) -> Verdict {
    let parsed: Option<ApiResponse<ChatButtonData>> = serde_json::from_slice(&answer.body).ok();
    let code = parsed.as_ref().map(|p| p.code);
    if is_rate_limited(answer.status, code) {
        return Verdict::Failed(AttemptFailure::RateLimited {
            wait: parse_reset(answer.reset.as_deref()),
        });
    }
    if answer.status.is_server_error() {
        let msg = parsed.as_ref().map(|p| scrub(&p.msg, secrets));
        let AttemptFailure::Transient { why } = server_error(answer.status, code, msg.as_deref())
        else {
            unreachable!("server_error gives a transient failure")
        };
        // The API may have applied the request before it failed.
        return Verdict::Failed(AttemptFailure::Unanswered { why });
    }
    let Some(parsed) = parsed else {
        return Verdict::Failed(AttemptFailure::Final(not_api_json(answer, secrets)));
    };
    // The API's messages may quote the request; never let them carry a secret onward.
    let (code, msg, status) = (
        parsed.code,
        scrub(&parsed.msg, secrets),
        answer.status.as_u16(),
    );
    let error = match code {
        // An absent list (`"data": {}`) means nobody failed.
        CODE_OK => {
            return Verdict::Applied(parsed.data.unwrap_or_default().failed_user_reasons);
        }
        CODE_NO_TOKEN | CODE_TOKEN_INVALID | CODE_TOKEN_FORMAT | CODE_TOKEN_EXPIRED => {
            return Verdict::TokenRefused { code, msg, status };
        }
        CODE_BOT_NOT_IN_CHAT => CallError::BotNotInChat {
            chat_id: chat_id.to_owned(),
        },
        CODE_PARAM_INVALID | CODE_FIELD_VALIDATION => CallError::Rejected { code, msg },
        CODE_MISSING_SCOPE => CallError::MissingScope { msg },
        _ => CallError::Api { code, msg, status },
    };
    Verdict::Failed(AttemptFailure::Final(error))
}

/// The token and its `expire`, or why there is none. Errors come with HTTP 200: the code decides.
fn classify_token(answer: &Answer, secrets: &[&str]) -> Result<(Token, Duration), AttemptFailure> {
    let parsed: Option<TenantTokenResponse> = serde_json::from_slice(&answer.body).ok();
    let code = parsed.as_ref().map(|p| p.code);
    if is_rate_limited(answer.status, code) {
        return Err(AttemptFailure::RateLimited {
            wait: parse_reset(answer.reset.as_deref()),
        });
    }
    let token = parsed
        .as_ref()
        .and_then(|p| p.tenant_access_token.clone())
        .unwrap_or_default();
    let secrets: Vec<&str> = secrets.iter().copied().chain([token.as_str()]).collect();
    if answer.status.is_server_error() {
        let msg = parsed.as_ref().map(|p| scrub(&p.msg, &secrets));
        return Err(server_error(answer.status, code, msg.as_deref()));
    }
    let Some(mut parsed) = parsed else {
        // JSON of another shape may hold a token in any field: say what is wrong, quote
        // nothing. Anything else (a proxy's page) is quoted to help find a wrong base URL.
        if serde_json::from_slice::<serde_json::Value>(&answer.body).is_ok() {
            return Err(AttemptFailure::Final(CallError::Api {
                code: CODE_NOT_API_JSON,
                msg: "the token endpoint's JSON is not the documented answer (code, msg, \
                      tenant_access_token, and expire as a whole number of seconds)"
                    .to_owned(),
                status: answer.status.as_u16(),
            }));
        }
        return Err(AttemptFailure::Final(not_api_json(answer, &secrets)));
    };
    parsed.msg = scrub(&parsed.msg, &secrets);
    let status = answer.status.as_u16();
    match parsed.code {
        CODE_OK => {
            let Some(token) = parsed
                .tenant_access_token
                .filter(|t| !t.is_empty())
                .and_then(Token::new)
            else {
                return Err(AttemptFailure::Final(CallError::Api {
                    code: CODE_NOT_API_JSON,
                    msg: "the token endpoint answered code 0 without a usable tenant_access_token"
                        .to_owned(),
                    status,
                }));
            };
            // `expire` is always documented; without it, not caching the token is the safe
            // reading (Feishu hands back the same token anyway while it has time left). A token
            // lives at most two hours, whatever an answer claims.
            let expire = parsed
                .expire
                .unwrap_or(0)
                .min(super::wire::api::TOKEN_MAX_LIFETIME_SECS);
            Ok((token, Duration::from_secs(expire)))
        }
        // 10003 is an empty or missing id/secret: a credentials problem too.
        CODE_APP_UNAVAILABLE | CODE_WRONG_SECRET | CODE_TOKEN_PARAM_INVALID => {
            Err(AttemptFailure::Final(CallError::Credentials {
                code: parsed.code,
                msg: parsed.msg,
            }))
        }
        code => Err(AttemptFailure::Final(CallError::Api {
            code,
            msg: parsed.msg,
            status,
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(status: u16, reset: Option<&str>, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("a status"),
            reset: reset.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        }
    }

    fn chat_button(status: u16, body: serde_json::Value) -> Verdict {
        classify_chat_button(&answer(status, None, &body.to_string()), "oc_1", &[])
    }

    #[test]
    fn chat_button_codes_map_to_their_errors() {
        let err = |v: Verdict| match v {
            Verdict::Failed(AttemptFailure::Final(e)) => e,
            other => panic!("not a final error: {other:?}"),
        };
        assert!(matches!(
            err(chat_button(400, json!({"code": 99991672, "msg": "scope"}))),
            CallError::MissingScope { .. }
        ));
        assert!(matches!(
            err(chat_button(
                400,
                json!({"code": 99992402, "msg": "field validation failed"})
            )),
            CallError::Rejected { code: 99992402, .. }
        ));
        assert!(matches!(
            err(chat_button(400, json!({"code": 230027, "msg": "no"}))),
            CallError::BotNotInChat { chat_id } if chat_id == "oc_1"
        ));
        assert!(matches!(
            err(chat_button(400, json!({"code": 1234, "msg": "odd"}))),
            CallError::Api {
                code: 1234,
                status: 400,
                ..
            }
        ));
        assert!(matches!(
            chat_button(400, json!({"code": 99991663, "msg": "invalid"})),
            Verdict::TokenRefused { code: 99991663, .. }
        ));
        assert!(matches!(
            chat_button(200, json!({"code": 0, "msg": "success", "data": {}})),
            Verdict::Applied(users) if users.is_empty()
        ));
        assert!(matches!(
            chat_button(200, json!({"code": 0, "msg": "success"})),
            Verdict::Applied(users) if users.is_empty()
        ));
    }

    #[test]
    fn throttling_is_transient_and_a_server_error_leaves_the_call_unanswered() {
        // The older APIs' HTTP 400 throttle, known by its code.
        assert!(matches!(
            chat_button(400, json!({"code": 99991400, "msg": "limit"})),
            Verdict::Failed(AttemptFailure::RateLimited { wait: None })
        ));
        let throttled = classify_chat_button(&answer(429, Some("2"), ""), "oc_1", &[]);
        assert!(matches!(
            throttled,
            Verdict::Failed(AttemptFailure::RateLimited { wait: Some(w) }) if w == Duration::from_secs(2)
        ));
        let bad_gateway = classify_chat_button(&answer(502, None, "<html>"), "oc_1", &[]);
        // The API may have applied a call it then failed to answer.
        assert!(
            matches!(&bad_gateway, Verdict::Failed(AttemptFailure::Unanswered { why }) if why == "HTTP 502")
        );
    }

    #[test]
    fn an_answer_that_is_not_json_is_quoted_without_secrets() {
        let echo = answer(404, None, "Authorization: Bearer t-abc; secret s3cr3t");
        let Verdict::Failed(AttemptFailure::Final(e)) =
            classify_chat_button(&echo, "oc_1", &["t-abc", "s3cr3t"])
        else {
            panic!("not a final error");
        };
        let text = e.to_string();
        assert!(
            text.contains("HTTP 404") && text.contains("Bearer ***"),
            "{text}"
        );
        assert!(
            !text.contains("t-abc") && !text.contains("s3cr3t"),
            "{text}"
        );
    }

    #[test]
    fn token_answers() {
        let ok = answer(
            200,
            None,
            r#"{"code":0,"msg":"ok","tenant_access_token":"t-1","expire":7000}"#,
        );
        let (token, expire) = classify_token(&ok, &[]).expect("a token");
        assert_eq!(
            (token.secret().expose(), expire),
            ("t-1", Duration::from_secs(7000))
        );
        for code in [10003, 10014, 10015] {
            let refused = answer(200, None, &format!(r#"{{"code":{code},"msg":"no"}}"#));
            assert!(matches!(
                classify_token(&refused, &[]),
                Err(AttemptFailure::Final(CallError::Credentials { code: c, .. })) if c == code
            ));
        }
        let empty = answer(200, None, r#"{"code":0,"msg":"ok"}"#);
        assert!(matches!(
            classify_token(&empty, &[]),
            Err(AttemptFailure::Final(CallError::Api {
                code: CODE_NOT_API_JSON,
                ..
            }))
        ));
    }

    #[test]
    fn only_credentials_and_scope_stop_the_run() {
        let fatal = [
            CallError::Credentials {
                code: 10015,
                msg: String::new(),
            },
            CallError::MissingScope { msg: String::new() },
        ];
        assert!(fatal.iter().all(CallError::is_fatal));
        let not_fatal = [
            CallError::BotNotInChat {
                chat_id: "oc_1".into(),
            },
            CallError::Rejected {
                code: 230001,
                msg: String::new(),
            },
            CallError::GaveUp {
                attempts: 6,
                last: String::new(),
            },
            CallError::Api {
                code: 1,
                msg: String::new(),
                status: 400,
            },
        ];
        assert!(!not_fatal.iter().any(CallError::is_fatal));
    }

    #[test]
    fn a_config_hides_its_secret_and_a_bad_one_is_refused() {
        let config = ClientConfig::new(
            "https://open.feishu.cn/",
            "cli_a",
            Secret::new("s3cr3t".into()),
        );
        let shown = format!("{config:?}");
        assert!(
            shown.contains("***") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        let client = Client::new(config.clone()).expect("a client");
        assert_eq!(client.base_url(), "https://open.feishu.cn");
        assert!(!format!("{client:?}").contains("s3cr3t"));
        for base_url in ["open.feishu.cn", "ftp://open.feishu.cn", "https://x/?a=1"] {
            let bad = ClientConfig {
                base_url: base_url.into(),
                ..config.clone()
            };
            assert!(
                matches!(Client::new(bad), Err(ClientError::BaseUrl { .. })),
                "{base_url}"
            );
        }
        let no_secret = ClientConfig {
            app_secret: Secret::new(String::new()),
            ..config
        };
        let err = Client::new(no_secret).expect_err("an empty secret");
        assert_eq!(err.to_string(), "no app secret: set FEISHU_APP_SECRET");
    }
}
