//! The Feishu API side: `POST /open-apis/auth/v3/tenant_access_token/internal`,
//! `PUT /open-apis/im/v2/chat_button` and the directory look-ups (`lookup.rs`), behind the
//! injected faults, each call logged.
//!
//! Order of checks on a chat-button call, as a gateway in front of the service would do them:
//! injected faults, then the token, then the app's rate limit, then the request's fields, then
//! the bot's membership of the chat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::feishu::wire::TenantTokenResponse;
use crate::feishu::wire::api::{
    CHAT_BUTTON_PATH, CODE_APP_UNAVAILABLE, CODE_BOT_NOT_IN_CHAT, CODE_NO_TOKEN, CODE_OK,
    CODE_PARAM_INVALID, CODE_RATE_LIMITED, CODE_TOKEN_EXPIRED, CODE_TOKEN_FORMAT,
    CODE_TOKEN_INVALID, CODE_TOKEN_PARAM_INVALID, CODE_WRONG_SECRET, HEADER_RATELIMIT_LIMIT,
    HEADER_RATELIMIT_RESET, RATE_LIMIT_PER_SECOND, TOKEN_PATH,
};
use crate::feishu::wire::directory::{
    BATCH_GET_ID_PATH, FIND_BY_DEPARTMENT_PATH, chat_id_of_members_path,
};
use crate::sync::guard;

use super::faults::{Called, FaultAction};
use super::log::{LoggedRequest, body_for_log, redact};
use super::tokens::{TokenProblem, well_formed};
use super::world::Refusal;
use super::{Shared, lookup, validate};

/// Marks a response whose connection the server closes instead of answering.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Token,
    ChatButton,
    BatchGetId,
    ChatMembers,
    FindByDepartment,
    /// Any other path or method: answered 404 like the real gateway.
    Unknown,
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Endpoint {
        match (method, path) {
            (&Method::POST, TOKEN_PATH) => Endpoint::Token,
            (&Method::PUT, CHAT_BUTTON_PATH) => Endpoint::ChatButton,
            (&Method::POST, BATCH_GET_ID_PATH) => Endpoint::BatchGetId,
            (&Method::GET, FIND_BY_DEPARTMENT_PATH) => Endpoint::FindByDepartment,
            (&Method::GET, p) if chat_id_of_members_path(p).is_some() => Endpoint::ChatMembers,
            _ => Endpoint::Unknown,
        }
    }

    /// The cap an injected 429 reports: the configured one, or the documented one when the
    /// limit is lifted.
    fn limit(self, shared: &Shared) -> u32 {
        use crate::feishu::wire::directory;
        let (configured, documented) = match self {
            Endpoint::BatchGetId | Endpoint::ChatMembers | Endpoint::FindByDepartment => (
                shared.directory_rate_limit.per_second,
                directory::RATE_LIMIT_PER_SECOND,
            ),
            _ => (shared.rate_limit, RATE_LIMIT_PER_SECOND),
        };
        if configured == 0 {
            documented
        } else {
            configured
        }
    }
}

/// An answer before it becomes a response, so that it can be logged as well.
pub(super) struct Answer {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
    app_id: Option<String>,
}

impl Answer {
    pub(super) fn json(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body,
            headers: Vec::new(),
            app_id: None,
        }
    }

    pub(super) fn error(status: StatusCode, code: i64, msg: impl Into<String>) -> Answer {
        Answer::json(status, json!({"code": code, "msg": msg.into()}))
    }

    pub(super) fn rate_limited(limit: u32, reset_secs: u64) -> Answer {
        let mut a = Answer::error(
            StatusCode::TOO_MANY_REQUESTS,
            CODE_RATE_LIMITED,
            "request trigger frequency limit",
        );
        a.headers = vec![
            (HEADER_RATELIMIT_LIMIT, limit.to_string()),
            (HEADER_RATELIMIT_RESET, reset_secs.to_string()),
        ];
        a
    }

    pub(super) fn for_app(mut self, app_id: Option<String>) -> Answer {
        self.app_id = app_id;
        self
    }

    fn code(&self) -> Option<i64> {
        self.body.get("code").and_then(Value::as_i64)
    }

    /// The real gateway's plain-text 404.
    fn not_found() -> Answer {
        Answer::json(
            StatusCode::NOT_FOUND,
            Value::String("404 page not found".to_owned()),
        )
    }

    fn into_response(self) -> Response {
        if let Value::String(text) = self.body {
            return (self.status, text).into_response();
        }
        let bytes = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// The response that makes the server close the connection without answering.
fn dropped() -> Response {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
}

/// Every request outside `/_emulator/`.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let endpoint = Endpoint::of(&method, uri.path());
    let (fault_latency, fault) = match endpoint {
        Endpoint::Unknown => (Duration::ZERO, None),
        Endpoint::Token => guard(&shared.faults).decide(Instant::now(), Called::Token),
        Endpoint::ChatButton => guard(&shared.faults).decide(Instant::now(), Called::ChatButton),
        Endpoint::BatchGetId | Endpoint::ChatMembers | Endpoint::FindByDepartment => {
            guard(&shared.faults).decide(Instant::now(), Called::Directory)
        }
    };
    let latency = shared.latency + fault_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let now = Instant::now();
    let limit = endpoint.limit(&shared);
    let (answer, fault_name) = match fault {
        Some(FaultAction::Drop {
            after_processing: false,
        }) => {
            record(&shared, &method, &uri, &body, None, Some("dropped"));
            return dropped();
        }
        Some(FaultAction::ServerError(status)) => (
            Answer::error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                i64::from(status),
                "internal error (injected by the emulator)",
            ),
            Some("server_error"),
        ),
        Some(FaultAction::RateLimited { reset_secs }) => (
            Answer::rate_limited(limit, reset_secs),
            Some("rate_limited"),
        ),
        Some(FaultAction::EchoCredentials) => {
            (echo_credentials(&headers, &body), Some("echo_credentials"))
        }
        Some(FaultAction::EchoCredentialsToUsers) => (
            echo_credentials_to_users(&headers, &body),
            Some("echo_credentials_to_users"),
        ),
        Some(FaultAction::Drop {
            after_processing: true,
        }) => (
            answer(&shared, endpoint, &uri, &headers, &body, now),
            Some("dropped_after_processing"),
        ),
        None => (answer(&shared, endpoint, &uri, &headers, &body, now), None),
    };
    record(&shared, &method, &uri, &body, Some(&answer), fault_name);
    if let Some(FaultAction::Drop { .. }) = fault {
        return dropped();
    }
    let mut answer = answer;
    if endpoint == Endpoint::Token
        && let Some(expire) = guard(&shared.faults).token_expire()
        && let Some(obj) = answer.body.as_object_mut()
        && obj.contains_key("expire")
    {
        obj.insert("expire".to_owned(), expire);
    }
    let padding = match endpoint {
        Endpoint::Unknown => 0,
        _ => guard(&shared.faults).padding(endpoint == Endpoint::Token),
    };
    let response = answer.into_response();
    if padding == 0 {
        return response;
    }
    pad(response, padding).await
}

/// A refusal whose message quotes the request's credentials, as a careless gateway would.
fn echo_credentials(headers: &HeaderMap, body: &[u8]) -> Answer {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Answer::error(
        StatusCode::BAD_REQUEST,
        99992402,
        format!(
            "field validation failed (echoed by the emulator): Authorization: {authorization}; body: {}",
            String::from_utf8_lossy(body)
        ),
    )
}

/// A call accepted with every user it names refused, each with a message quoting the request's
/// credentials.
fn echo_credentials_to_users(headers: &HeaderMap, body: &[u8]) -> Answer {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let users: Vec<String> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("user_ids").cloned())
        .and_then(|ids| serde_json::from_value(ids).ok())
        .unwrap_or_default();
    let failed: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "error_code": 0,
                "error_message": format!("The user is not in the chat (echoed by the emulator: Authorization: {authorization})"),
                "user_id": u,
            })
        })
        .collect();
    Answer::json(
        StatusCode::OK,
        json!({"code": 0, "msg": "success", "data": {"failed_user_reasons": failed}}),
    )
}

/// `response` with `spaces` spaces after its body, streamed in 64 KiB chunks.
async fn pad(response: Response, spaces: u64) -> Response {
    use futures_util::StreamExt as _;
    const CHUNK: u64 = 64 * 1024;
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    // The answer itself is a few hundred bytes.
    let head = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let chunk = Bytes::from(vec![b' '; CHUNK as usize]);
    let padding = (0..spaces.div_ceil(CHUNK)).map(move |i| {
        let n = CHUNK.min(spaces - i * CHUNK) as usize;
        chunk.slice(..n)
    });
    let stream = futures_util::stream::iter(std::iter::once(head).chain(padding))
        .map(Ok::<Bytes, std::convert::Infallible>);
    (parts, Body::from_stream(stream)).into_response()
}

fn answer(
    shared: &Shared,
    endpoint: Endpoint,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: Instant,
) -> Answer {
    match endpoint {
        Endpoint::Token => token(shared, body, now),
        Endpoint::ChatButton => chat_button(shared, uri.query(), headers, body, now),
        Endpoint::BatchGetId => lookup::batch_get_id(shared, uri.query(), headers, body, now),
        Endpoint::ChatMembers => match chat_id_of_members_path(uri.path()) {
            Some(chat_id) => lookup::chat_members(shared, chat_id, uri.query(), headers, now),
            None => Answer::not_found(),
        },
        Endpoint::FindByDepartment => lookup::find_by_department(shared, uri.query(), headers, now),
        Endpoint::Unknown => Answer::not_found(),
    }
}

fn record(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    answer: Option<&Answer>,
    fault: Option<&'static str>,
) {
    let entry = LoggedRequest {
        seq: 0,
        timestamp: String::new(),
        unix_ms: 0,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        status: answer.map(|a| a.status.as_u16()),
        code: answer.and_then(Answer::code),
        app_id: answer.and_then(|a| a.app_id.clone()),
        fault,
        body: body_for_log(body),
        response: answer.map_or(Value::Null, |a| redact(a.body.clone())),
    };
    if shared.print_requests {
        println!("{}", summary(&entry));
    }
    guard(&shared.log).push(entry);
}

/// One line per request for the terminal: method, path, status, code, fault.
fn summary(e: &LoggedRequest) -> String {
    let mut line = format!("{} {}", e.method, e.path);
    if let Some(q) = &e.query {
        line.push('?');
        line.push_str(q);
    }
    match e.status {
        Some(s) => line.push_str(&format!(" -> {s}")),
        None => line.push_str(" -> (connection closed)"),
    }
    if let Some(code) = e.code {
        line.push_str(&format!(" code={code}"));
    }
    if let Some(failed) = e.response["data"]["failed_user_reasons"].as_array() {
        line.push_str(&format!(" failed_users={}", failed.len()));
    }
    for list in ["user_list", "items"] {
        if let Some(items) = e.response["data"][list].as_array() {
            line.push_str(&format!(" {list}={}", items.len()));
        }
    }
    if let Some(f) = e.fault {
        line.push_str(&format!(" [fault: {f}]"));
    }
    line
}

/// `POST /open-apis/auth/v3/tenant_access_token/internal`. Errors come with HTTP 200, as the
/// live endpoint answers them.
fn token(shared: &Shared, body: &[u8], now: Instant) -> Answer {
    let credentials = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let id = v.get("app_id")?.as_str()?.to_owned();
        let secret = v.get("app_secret")?.as_str()?.to_owned();
        (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
    });
    let Some((app_id, secret)) = credentials else {
        return Answer::error(StatusCode::OK, CODE_TOKEN_PARAM_INVALID, "invalid param");
    };
    let answer = match shared.apps.get(&app_id) {
        None => Answer::error(StatusCode::OK, CODE_APP_UNAVAILABLE, "app id not exists"),
        Some(known) if *known != secret => {
            Answer::error(StatusCode::OK, CODE_WRONG_SECRET, "app secret invalid")
        }
        Some(_) => {
            let (token, expire) = guard(&shared.tokens).issue(&app_id, now);
            let body = TenantTokenResponse {
                code: CODE_OK,
                msg: "ok".to_owned(),
                tenant_access_token: Some(token),
                expire: Some(expire),
            };
            Answer::json(
                StatusCode::OK,
                serde_json::to_value(body).unwrap_or_default(),
            )
        }
    };
    answer.for_app(Some(app_id))
}

/// A token a business call refuses: the documented code and a message.
pub(super) struct TokenRefused(pub(super) i64, pub(super) &'static str);

/// The app the `Authorization` header's token belongs to, or why the token is refused.
pub(super) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    now: Instant,
) -> Result<String, TokenRefused> {
    const MISSING: TokenRefused = TokenRefused(
        CODE_NO_TOKEN,
        "Missing access token for authorization. Please make a request with token attached.",
    );
    const FORMAT: TokenRefused = TokenRefused(
        CODE_TOKEN_FORMAT,
        "Invalid access token format. Send \"Authorization: Bearer t-...\".",
    );
    let Some(raw) = headers.get(AUTHORIZATION) else {
        return Err(MISSING);
    };
    let raw = raw.to_str().map_err(|_| FORMAT)?.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("bearer") {
        return Err(MISSING);
    }
    let token = match raw.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(FORMAT),
    };
    if !well_formed(token) {
        return Err(FORMAT);
    }
    match guard(&shared.tokens).check(token, now) {
        Ok(app_id) => Ok(app_id.to_owned()),
        Err(TokenProblem::Unknown) => Err(TokenRefused(
            CODE_TOKEN_INVALID,
            "Invalid access token for authorization. Please make a request with token attached.",
        )),
        Err(TokenProblem::Expired) => Err(TokenRefused(
            CODE_TOKEN_EXPIRED,
            "The access token has expired. Please get a new one.",
        )),
    }
}

/// `PUT /open-apis/im/v2/chat_button`.
fn chat_button(
    shared: &Shared,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now: Instant,
) -> Answer {
    let app_id = match authenticate(shared, headers, now) {
        Ok(app_id) => app_id,
        Err(TokenRefused(code, msg)) => return Answer::error(StatusCode::BAD_REQUEST, code, msg),
    };
    if let Err(reset_secs) = guard(&shared.limiter).check(&app_id, now) {
        return Answer::rate_limited(shared.rate_limit, reset_secs).for_app(Some(app_id));
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let checked = validate::chat_button(query, body);
    let request = match (validate::content_type(content_type), checked) {
        (Ok(()), Ok(request)) => request,
        (header, body) => {
            let violations: Vec<String> = header
                .err()
                .into_iter()
                .chain(body.err().into_iter().flatten())
                .collect();
            return Answer::error(
                StatusCode::BAD_REQUEST,
                CODE_PARAM_INVALID,
                format!("param is invalid: {}", violations.join("; ")),
            )
            .for_app(Some(app_id));
        }
    };
    let answer = match guard(&shared.world).apply(&request) {
        Err(Refusal::BotNotInChat) => Answer::error(
            StatusCode::BAD_REQUEST,
            CODE_BOT_NOT_IN_CHAT,
            "no permission, bot not in the chat",
        ),
        // Like the live service's JSON, an empty list is left out rather than sent as `[]`.
        Ok(failed) if failed.is_empty() => Answer::json(
            StatusCode::OK,
            json!({"code": CODE_OK, "msg": "success", "data": {}}),
        ),
        Ok(failed) => Answer::json(
            StatusCode::OK,
            json!({"code": CODE_OK, "msg": "success", "data": {"failed_user_reasons": failed}}),
        ),
    };
    answer.for_app(Some(app_id))
}
