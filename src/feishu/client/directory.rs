//! API client stage: the three read-only directory look-ups (`batch_get_id`, a chat's members,
//! a department's users), through the client's token cache and retry policy, each API paced by
//! its own windowed [`Limiter`] (50 calls a second and 1000 a minute, per app and API). Reads change
//! nothing, so every failure worth another try is retried, 429s after the server's reset.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;

use super::super::answer::{
    AttemptFailure, Read, answered_outcome, classify_read, read, unanswered_outcome,
};
use super::super::metrics::{EndpointLabel, RequestOutcome};
use super::super::ratelimit::Limiter;
use super::super::wire::directory::{
    BATCH_GET_ID_PATH, CHAT_MEMBERS_MAX_PAGE_SIZE, DEPARTMENT_USERS_MAX_PAGE_SIZE,
    FIND_BY_DEPARTMENT_PATH, chat_members_path,
};
use super::super::wire::{
    BatchGetIdData, BatchGetIdRequest, ChatMembersData, FindByDepartmentData, UserContactInfo,
    UserIdType,
};
use super::{CODE_NOT_API_JSON, CallError, Client, Inner, JSON_UTF8, MAX_RESET_WAIT};

/// The three directory APIs, each with its own rate budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryApi {
    BatchGetId,
    ChatMembers,
    DepartmentUsers,
}

impl DirectoryApi {
    pub const ALL: [DirectoryApi; 3] = [
        DirectoryApi::BatchGetId,
        DirectoryApi::ChatMembers,
        DirectoryApi::DepartmentUsers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DirectoryApi::BatchGetId => "batch_get_id",
            DirectoryApi::ChatMembers => "chat_members",
            DirectoryApi::DepartmentUsers => "find_by_department",
        }
    }

    /// Its `endpoint` label in the client's metrics.
    pub fn endpoint(self) -> EndpointLabel {
        match self {
            DirectoryApi::BatchGetId => EndpointLabel::BatchGetId,
            DirectoryApi::ChatMembers => EndpointLabel::ChatMembers,
            DirectoryApi::DepartmentUsers => EndpointLabel::FindByDepartment,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Calls per API and throttled answers, since the directory client was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectoryStats {
    /// HTTP requests sent, per API in [`DirectoryApi::ALL`]'s order (each took a slot).
    pub requests: [u64; 3],
    /// 429 / 99991400 answers.
    pub rate_limited: u64,
}

/// The directory look-ups of one app. Cheap to share by reference across concurrent tasks.
pub struct Directory {
    client: Client,
    limiters: [Limiter; 3],
    requests: [AtomicU64; 3],
    rate_limited: AtomicU64,
}

impl Directory {
    /// Look-ups through `client` (its base URL, credentials, token cache and retry policy), at
    /// most `per_second` and `per_minute` calls per API (0 lifts a window).
    pub fn new(client: Client, per_second: u32, per_minute: u32) -> Directory {
        Directory {
            client,
            limiters: DirectoryApi::ALL.map(|_| Limiter::windowed(per_second, per_minute)),
            requests: Default::default(),
            rate_limited: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> DirectoryStats {
        DirectoryStats {
            requests: [0, 1, 2].map(|i| self.requests[i].load(Ordering::Relaxed)),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// Ids of `id_type` for up to 50 emails and 50 mobiles: one entry per item asked, emails
    /// first, with `user_id` only for those who resolve.
    pub async fn batch_get_id(
        &self,
        id_type: UserIdType,
        emails: &[String],
        mobiles: &[String],
    ) -> Result<Vec<UserContactInfo>, CallError> {
        let body = BatchGetIdRequest {
            emails: (!emails.is_empty()).then(|| emails.to_vec()),
            mobiles: (!mobiles.is_empty()).then(|| mobiles.to_vec()),
            include_resigned: None,
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| CallError::Api {
            code: CODE_NOT_API_JSON,
            msg: format!("cannot encode the request: {e}"),
            status: 0,
        })?;
        let url = format!("{}{BATCH_GET_ID_PATH}", self.client.inner.base_url);
        let data: BatchGetIdData = self
            .call(DirectoryApi::BatchGetId, |http| {
                http.post(&url)
                    .query(&[("user_id_type", id_type.as_str())])
                    .header(CONTENT_TYPE, JSON_UTF8)
                    .body(bytes.clone())
            })
            .await?;
        Ok(data.user_list)
    }

    /// One page (up to 100) of a chat's members, with ids of `id_type`.
    pub async fn chat_members(
        &self,
        chat_id: &str,
        id_type: UserIdType,
        page_token: Option<&str>,
    ) -> Result<ChatMembersData, CallError> {
        let url = format!(
            "{}{}",
            self.client.inner.base_url,
            chat_members_path(chat_id)
        );
        let page_size = CHAT_MEMBERS_MAX_PAGE_SIZE.to_string();
        self.call(DirectoryApi::ChatMembers, |http| {
            let mut q = vec![
                ("member_id_type", id_type.as_str()),
                ("page_size", page_size.as_str()),
            ];
            if let Some(t) = page_token {
                q.push(("page_token", t));
            }
            http.get(&url).query(&q)
        })
        .await
    }

    /// One page (up to 50) of a department's direct members (open department id).
    pub async fn department_users(
        &self,
        department: &str,
        page_token: Option<&str>,
    ) -> Result<FindByDepartmentData, CallError> {
        let url = format!("{}{FIND_BY_DEPARTMENT_PATH}", self.client.inner.base_url);
        let page_size = DEPARTMENT_USERS_MAX_PAGE_SIZE.to_string();
        self.call(DirectoryApi::DepartmentUsers, |http| {
            let mut q = vec![
                ("department_id", department),
                ("department_id_type", "open_department_id"),
                ("page_size", page_size.as_str()),
            ];
            if let Some(t) = page_token {
                q.push(("page_token", t));
            }
            http.get(&url).query(&q)
        })
        .await
    }

    /// One look-up with its retries: a refused token is dropped and fetched again once per
    /// attempt; throttling, 5xx and connection failures wait and try again.
    async fn call<T: serde::de::DeserializeOwned + Default>(
        &self,
        api: DirectoryApi,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let inner = &*self.client.inner;
        let attempts = AtomicU32::new(0);
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let token = inner.token().await?;
            match self.attempt(inner, api, &build, &token).await {
                Read::Data(d) => Ok(d),
                Read::TokenRefused { code, .. } => {
                    debug!(code, "token refused: fetching a new one and trying once more");
                    inner.tokens.evict(&token).await;
                    let token = inner.token().await?;
                    match self.attempt(inner, api, &build, &token).await {
                        Read::Data(d) => Ok(d),
                        Read::TokenRefused { code, msg, status } => {
                            inner.tokens.evict(&token).await;
                            Err(AttemptFailure::Transient {
                                why: format!(
                                    "a freshly fetched token was refused too (HTTP {status}, code {code}: {msg})"
                                ),
                            })
                        }
                        Read::Failed(f) => Err(f),
                    }
                }
                Read::Failed(f) => Err(f),
            }
        })
        .retry(inner.retry.backoff())
        .when(AttemptFailure::is_transient)
        .adjust(|f, next| inner.retry.wait(next, f.server_wait()))
        .notify(|f, wait: Duration| inner.note_retry(api.endpoint(), f, wait))
        .await;
        result.map_err(|f| f.into_error(attempts.load(Ordering::Relaxed)))
    }

    /// One HTTP attempt: a slot of the API's budget, then the request.
    async fn attempt<T: serde::de::DeserializeOwned + Default>(
        &self,
        inner: &Inner,
        api: DirectoryApi,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        token: &super::Token,
    ) -> Read<T> {
        let limiter = &self.limiters[api.index()];
        limiter.acquire().await;
        self.requests[api.index()].fetch_add(1, Ordering::Relaxed);
        let sent = build(&inner.http)
            .header(AUTHORIZATION, token.header().clone())
            .send()
            .await;
        let endpoint = api.endpoint();
        let answer = match read(sent).await {
            Ok(a) => a,
            Err(f) => {
                inner.metrics.request(endpoint, unanswered_outcome(&f));
                return Read::Failed(match f {
                    // A read changes nothing: an unanswered one is only worth another try.
                    AttemptFailure::Unanswered { why } => AttemptFailure::Transient { why },
                    f => f,
                });
            }
        };
        let secrets = [token.secret().expose(), inner.app_secret.expose()];
        let verdict = classify_read(&answer, &secrets);
        let outcome = match &verdict {
            Read::Data(_) => answered_outcome(&answer, None),
            Read::TokenRefused { .. } => {
                inner.metrics.token_refused();
                RequestOutcome::TokenRefused
            }
            Read::Failed(f) => answered_outcome(&answer, Some(f)),
        };
        inner.metrics.request(endpoint, outcome);
        if let Read::Failed(AttemptFailure::RateLimited { wait }) = &verdict {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let wait = wait.unwrap_or(Duration::from_secs(1)).min(MAX_RESET_WAIT);
            limiter.pause_until(Instant::now() + wait);
        }
        verdict
    }
}
