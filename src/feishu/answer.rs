//! API client stage: what one HTTP attempt's answer means. Reads an answer (never more than
//! [`MAX_ANSWER_BYTES`]), classifies it (applied, a refused token, throttled, a failure worth
//! another try, a final error) and says how the request ended for the metrics. Messages the
//! API quotes back have every secret cut out before they go anywhere.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

use super::client::{CODE_NOT_API_JSON, CallError, MAX_ANSWER_BYTES};
use super::metrics::RequestOutcome;
use super::token::Token;
use super::wire::api::{
    CODE_APP_UNAVAILABLE, CODE_BOT_NOT_IN_CHAT, CODE_FIELD_VALIDATION, CODE_MISSING_SCOPE,
    CODE_NO_TOKEN, CODE_OK, CODE_PARAM_INVALID, CODE_RATE_LIMITED, CODE_TOKEN_EXPIRED,
    CODE_TOKEN_FORMAT, CODE_TOKEN_INVALID, CODE_TOKEN_PARAM_INVALID, CODE_WRONG_SECRET,
    HEADER_RATELIMIT_RESET,
};
use super::wire::{ApiResponse, ChatButtonData, FailedUserReason, TenantTokenResponse};

/// How much of an unexpected answer an error quotes.
const QUOTE_CHARS: usize = 200;

/// Why one attempt failed.
#[derive(Debug)]
pub(super) enum AttemptFailure {
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
    pub(super) fn is_transient(&self) -> bool {
        !matches!(self, AttemptFailure::Final(_))
    }

    pub(super) fn server_wait(&self) -> Option<Duration> {
        match self {
            AttemptFailure::RateLimited { wait } => *wait,
            _ => None,
        }
    }

    pub(super) fn into_error(self, attempts: u32) -> CallError {
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
pub(super) enum Verdict {
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
pub(super) struct Answer {
    pub(super) status: StatusCode,
    reset: Option<String>,
    pub(super) body: Vec<u8>,
}

impl Verdict {
    /// For logs: what happened, without the server's text.
    pub(super) fn label(&self) -> &'static str {
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
pub(super) fn unanswered_outcome(failure: &AttemptFailure) -> RequestOutcome {
    match failure {
        AttemptFailure::Transient { .. } => RequestOutcome::NoConnection,
        AttemptFailure::Unanswered { .. } => RequestOutcome::NoAnswer,
        AttemptFailure::RateLimited { .. } => RequestOutcome::RateLimited,
        AttemptFailure::Final(_) => RequestOutcome::Failed,
    }
}

/// How an answered request ended, given the failure its answer means (if any).
pub(super) fn answered_outcome(
    answer: &Answer,
    failure: Option<&AttemptFailure>,
) -> RequestOutcome {
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
pub(super) async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<Answer, AttemptFailure> {
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
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut text = crate::text::with_causes(e);
    if e.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// The answer's `code`, for logs (the message may quote the request; the code never does).
pub(super) fn code_of(body: &[u8]) -> Option<i64> {
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
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
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

/// What a 5xx says: the status, with the body's code and message when it had them.
fn server_error(status: StatusCode, code: Option<i64>, msg: Option<&str>) -> String {
    match (code, msg) {
        (Some(code), Some(msg)) => format!("HTTP {} (code {code}: {msg})", status.as_u16()),
        _ => format!("HTTP {}", status.as_u16()),
    }
}

fn is_rate_limited(status: StatusCode, code: Option<i64>) -> bool {
    // Some older APIs throttle with HTTP 400 and only the code says so.
    status == StatusCode::TOO_MANY_REQUESTS || code == Some(CODE_RATE_LIMITED)
}

pub(super) fn classify_chat_button(answer: &Answer, chat_id: &str, secrets: &[&str]) -> Verdict {
    let parsed: Option<ApiResponse<ChatButtonData>> = serde_json::from_slice(&answer.body).ok();
    let code = parsed.as_ref().map(|p| p.code);
    if is_rate_limited(answer.status, code) {
        return Verdict::Failed(AttemptFailure::RateLimited {
            wait: parse_reset(answer.reset.as_deref()),
        });
    }
    if answer.status.is_server_error() {
        let msg = parsed.as_ref().map(|p| scrub(&p.msg, secrets));
        // The API may have applied the request before it failed.
        return Verdict::Failed(AttemptFailure::Unanswered {
            why: server_error(answer.status, code, msg.as_deref()),
        });
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
            // Users' reasons may quote the request too.
            let mut failed = parsed.data.unwrap_or_default().failed_user_reasons;
            for f in &mut failed {
                f.error_message = scrub(&f.error_message, secrets);
            }
            return Verdict::Applied(failed);
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

/// What one answer of a read-only call (the directory look-ups) means.
#[derive(Debug)]
pub(super) enum Read<T> {
    Data(T),
    /// 99991661/99991663/99991671/99991677: the token, not the request.
    TokenRefused {
        code: i64,
        msg: String,
        status: u16,
    },
    Failed(AttemptFailure),
}

/// Classifies a directory call's answer: `data` (an absent one read as empty), a refused token,
/// throttling, a 5xx (only worth another try: a read changes nothing), or a final error with
/// the API's code and message (a missing scope's message names the scopes).
pub(super) fn classify_read<T: serde::de::DeserializeOwned + Default>(
    answer: &Answer,
    secrets: &[&str],
) -> Read<T> {
    let parsed: Option<ApiResponse<T>> = serde_json::from_slice(&answer.body).ok();
    let code = parsed
        .as_ref()
        .map(|p| p.code)
        .or_else(|| code_of(&answer.body));
    if is_rate_limited(answer.status, code) {
        return Read::Failed(AttemptFailure::RateLimited {
            wait: parse_reset(answer.reset.as_deref()),
        });
    }
    if answer.status.is_server_error() {
        return Read::Failed(AttemptFailure::Transient {
            why: server_error(answer.status, code, None),
        });
    }
    let Some(parsed) = parsed else {
        return Read::Failed(AttemptFailure::Final(not_api_json(answer, secrets)));
    };
    let (msg, status) = (scrub(&parsed.msg, secrets), answer.status.as_u16());
    match parsed.code {
        CODE_OK => Read::Data(parsed.data.unwrap_or_default()),
        CODE_NO_TOKEN | CODE_TOKEN_INVALID | CODE_TOKEN_FORMAT | CODE_TOKEN_EXPIRED => {
            Read::TokenRefused {
                code: parsed.code,
                msg,
                status,
            }
        }
        code => Read::Failed(AttemptFailure::Final(CallError::Api { code, msg, status })),
    }
}

/// The token and its `expire`, or why there is none. Errors come with HTTP 200: the code decides.
pub(super) fn classify_token(
    answer: &Answer,
    secrets: &[&str],
) -> Result<(Token, Duration), AttemptFailure> {
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
        // A token request changes nothing: only worth another try.
        return Err(AttemptFailure::Transient {
            why: server_error(answer.status, code, msg.as_deref()),
        });
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
}
