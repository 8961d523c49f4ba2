//! The directory calls as the API answers them: `POST /open-apis/contact/v3/users/batch_get_id`,
//! `GET /open-apis/im/v1/chats/{chat_id}/members` and
//! `GET /open-apis/contact/v3/users/find_by_department` (`specs/feishu-api.md`, section 6).
//!
//! Order of checks, as for the chat-button call: the token, then the app's rate limits for
//! this API (per second and per minute, both), then the app's API scope, then the parameters,
//! then what the app may see (bot in the chat, department in its contact scope). The look-ups
//! themselves are in `directory.rs`; paging is here.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::feishu::wire::api::{CODE_FIELD_VALIDATION, CODE_MISSING_SCOPE, CODE_OK};
use crate::feishu::wire::directory::{
    CHAT_MEMBERS_DEFAULT_PAGE_SIZE, CHAT_MEMBERS_MAX_PAGE_SIZE, CODE_CHAT_ID_INVALID,
    CODE_CHAT_PARAM_INVALID, CODE_NO_DEPT_AUTHORITY, CODE_OPERATOR_NOT_IN_CHAT,
    CODE_PAGE_SIZE_INVALID, CODE_PAGE_TOKEN_INVALID, DEPARTMENT_USERS_DEFAULT_PAGE_SIZE,
    DEPARTMENT_USERS_MAX_PAGE_SIZE, MAX_EMAILS_PER_CALL, MAX_MOBILES_PER_CALL, ROOT_DEPARTMENT_ID,
    SCOPES_BATCH_GET_ID, SCOPES_CHAT_MEMBERS, SCOPES_DEPARTMENT_USERS,
};
use crate::feishu::wire::{
    BatchGetIdData, BatchGetIdRequest, ChatMembersData, DepartmentIdType, FindByDepartmentData,
    UserIdType,
};
use crate::sync::guard;

use super::api::{Answer, TokenRefused, authenticate};
use super::faults::ListingFault;
use super::fixtures::AppAccess;
use super::{Shared, validate};

/// The three APIs, each with its own rate-limit budget per app.
#[derive(Clone, Copy, Debug)]
enum Api {
    BatchGetId,
    ChatMembers,
    FindByDepartment,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::BatchGetId => "batch_get_id",
            Api::ChatMembers => "chat_members",
            Api::FindByDepartment => "find_by_department",
        }
    }

    /// Any one of these lets an app call it.
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Api::BatchGetId => SCOPES_BATCH_GET_ID,
            Api::ChatMembers => SCOPES_CHAT_MEMBERS,
            Api::FindByDepartment => SCOPES_DEPARTMENT_USERS,
        }
    }
}

/// One broken validation rule: the field and what is wrong with it.
struct Violation {
    field: &'static str,
    description: String,
}

fn violation(field: &'static str, description: impl Into<String>) -> Violation {
    Violation {
        field,
        description: description.into(),
    }
}

/// HTTP 400, 99992402: the platform's answer to a parameter that breaks a documented rule,
/// every rule broken listed under `error.field_violations`.
fn field_validation(violations: Vec<Violation>) -> Answer {
    let list: Vec<Value> = violations
        .iter()
        .map(|v| json!({"field": v.field, "description": v.description}))
        .collect();
    Answer::json(
        StatusCode::BAD_REQUEST,
        json!({
            "code": CODE_FIELD_VALIDATION,
            "msg": "field validation failed",
            "error": {"field_violations": list},
        }),
    )
}

/// The token, the rate limits and the API scope: the app and what it may see, or the refusal.
fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    now: Instant,
    api: Api,
) -> Result<(String, AppAccess), Box<Answer>> {
    let app_id = authenticate(shared, headers, now).map_err(|TokenRefused(code, msg)| {
        Box::new(Answer::error(StatusCode::BAD_REQUEST, code, msg))
    })?;
    let key = format!("{}|{app_id}", api.name());
    if let Err(t) = guard(&shared.directory_limiter).check(&key, now) {
        return Err(Box::new(
            Answer::rate_limited(t.limit, t.reset_secs).for_app(Some(app_id)),
        ));
    }
    let access = shared.access.get(&app_id).cloned().unwrap_or_default();
    if !access.has_any(api.scopes()) {
        return Err(Box::new(
            Answer::error(
                StatusCode::BAD_REQUEST,
                CODE_MISSING_SCOPE,
                format!(
                    "Access denied. One of the following scopes is required: [{}].",
                    api.scopes().join(", ")
                ),
            )
            .for_app(Some(app_id)),
        ));
    }
    Ok((app_id, access))
}

/// The query string's parameters (the first of each name).
fn params(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn user_id_type(
    params: &HashMap<String, String>,
    name: &'static str,
    violations: &mut Vec<Violation>,
) -> UserIdType {
    match params.get(name) {
        None => UserIdType::OpenId,
        Some(v) => UserIdType::parse(v).unwrap_or_else(|| {
            violations.push(violation(
                name,
                format!("{name} must be open_id, union_id or user_id, got {v:?}"),
            ));
            UserIdType::OpenId
        }),
    }
}

/// `page_size`: the default when absent; `Err(true)` when not a whole number (the gateway's
/// type check), `Err(false)` when outside `1..=max`.
fn page_size(params: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, bool> {
    match params.get("page_size") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Err(_) => Err(true),
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            Ok(_) => Err(false),
        },
    }
}

/// A page token: opaque to clients, and good only for the list it was issued for: the offset,
/// and a digest of the list's name.
fn page_token(list: &str, offset: usize) -> String {
    format!("{offset}-{}", list_digest(list))
}

fn list_digest(list: &str) -> String {
    use sha2::Digest as _;
    crate::text::hex(&sha2::Sha256::digest(list)[..8])
}

/// The offset a page token stands for; `None` for a token this list never issued.
fn page_offset(token: Option<&String>, list: &str) -> Option<usize> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Some(0);
    };
    let (offset, issued_for) = token.split_once('-')?;
    (issued_for == list_digest(list)).then(|| offset.parse().ok())?
}

/// One page of `slots` from `offset`: the items in it, and the next page's token when there
/// is more. A slot may hold nothing (a bot): then the page holds fewer items than asked.
fn page<T: Clone>(
    slots: &[Option<T>],
    offset: usize,
    size: usize,
    list: &str,
) -> (Vec<T>, Option<String>) {
    let end = offset.saturating_add(size).min(slots.len());
    let items = slots
        .get(offset.min(end)..end)
        .unwrap_or_default()
        .iter()
        .flatten()
        .cloned()
        .collect();
    let next = (end < slots.len()).then(|| page_token(list, end));
    (items, next)
}

/// A page as the `listing` fault (`PUT /_emulator/faults`) spoils it: its items, `has_more`
/// and next token. `asked`: the page token it was asked for with.
fn spoiled<T>(
    shared: &Shared,
    asked: Option<&String>,
    list: &str,
    offset: usize,
    (items, next): (Vec<T>, Option<String>),
) -> (Vec<T>, bool, Option<String>) {
    let asked = asked.filter(|t| !t.is_empty());
    match guard(&shared.faults).listing() {
        Some(ListingFault::RepeatToken) if asked.is_some() => (items, true, asked.cloned()),
        Some(ListingFault::Rewind) if offset > 0 => (items, true, Some(page_token(list, 0))),
        Some(ListingFault::NoToken) => (items, true, None),
        Some(ListingFault::Empty) => (Vec::new(), false, None),
        _ => {
            let more = next.is_some();
            (items, more, next)
        }
    }
}

fn success(data: impl serde::Serialize) -> Answer {
    Answer::json(
        StatusCode::OK,
        json!({"code": CODE_OK, "msg": "success", "data": data}),
    )
}

/// `POST /open-apis/contact/v3/users/batch_get_id`.
pub(super) fn batch_get_id(
    shared: &Shared,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now: Instant,
) -> Answer {
    let (app_id, access) = match admit(shared, headers, now, Api::BatchGetId) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let params = params(query);
    let mut violations = Vec::new();
    let id_type = user_id_type(&params, "user_id_type", &mut violations);
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if let Err(problem) = validate::content_type(content_type) {
        let problem = problem.trim_start_matches("Content-Type: ").to_owned();
        violations.push(violation("Content-Type", problem));
    }
    let request = match serde_json::from_slice::<BatchGetIdRequest>(body) {
        Ok(r) => r,
        Err(e) => {
            violations.push(violation(
                "body",
                format!("is not {{\"emails\": [...], \"mobiles\": [...]}} ({e})"),
            ));
            BatchGetIdRequest::default()
        }
    };
    let emails = request.emails.unwrap_or_default();
    let mobiles = request.mobiles.unwrap_or_default();
    for (field, n, max) in [
        ("emails", emails.len(), MAX_EMAILS_PER_CALL),
        ("mobiles", mobiles.len(), MAX_MOBILES_PER_CALL),
    ] {
        if n > max {
            violations.push(violation(field, format!("the max len is {max}, got {n}")));
        }
    }
    if !violations.is_empty() {
        return field_validation(violations).for_app(Some(app_id));
    }
    let include_resigned = request.include_resigned.unwrap_or(false);
    let user_list =
        guard(&shared.world).resolve_ids(&access, id_type, &emails, &mobiles, include_resigned);
    success(BatchGetIdData { user_list }).for_app(Some(app_id))
}

/// `GET /open-apis/im/v1/chats/{chat_id}/members`.
pub(super) fn chat_members(
    shared: &Shared,
    chat_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    now: Instant,
) -> Answer {
    let (app_id, _access) = match admit(shared, headers, now, Api::ChatMembers) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let app = Some(app_id);
    let params = params(query);
    let mut violations = Vec::new();
    let id_type = user_id_type(&params, "member_id_type", &mut violations);
    let size = page_size(
        &params,
        CHAT_MEMBERS_DEFAULT_PAGE_SIZE,
        CHAT_MEMBERS_MAX_PAGE_SIZE,
    )
    .unwrap_or_else(|_| {
        violations.push(violation(
            "page_size",
            format!("page_size is invalid, expect a number from 1 to {CHAT_MEMBERS_MAX_PAGE_SIZE}"),
        ));
        CHAT_MEMBERS_DEFAULT_PAGE_SIZE
    });
    if !violations.is_empty() {
        return field_validation(violations).for_app(app);
    }
    if !chat_id.starts_with("oc_") || chat_id.len() == 3 {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            CODE_CHAT_ID_INVALID,
            "Your request specifies a chat_id which is invalid.",
        )
        .for_app(app);
    }
    let list = format!("members|{chat_id}");
    let Some(offset) = page_offset(params.get("page_token"), &list) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            CODE_CHAT_PARAM_INVALID,
            "Your request contains an invalid request parameter: page_token.",
        )
        .for_app(app);
    };
    let roster = match guard(&shared.world).chat_roster(chat_id, id_type) {
        Ok(roster) => roster,
        Err(_) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                CODE_OPERATOR_NOT_IN_CHAT,
                "Operator can NOT be out of the chat.",
            )
            .for_app(app);
        }
    };
    let member_total = roster.members.len() as u64;
    // Other bots joined first; they keep their places in a page but are filtered out of it.
    let slots: Vec<_> = std::iter::repeat_n(None, roster.other_bots)
        .chain(roster.members.into_iter().map(Some))
        .collect();
    let asked = params.get("page_token");
    let (items, has_more, page_token) = spoiled(
        shared,
        asked,
        &list,
        offset,
        page(&slots, offset, size, &list),
    );
    success(ChatMembersData {
        has_more,
        items,
        page_token,
        member_total,
    })
    .for_app(app)
}

/// `GET /open-apis/contact/v3/users/find_by_department`.
pub(super) fn find_by_department(
    shared: &Shared,
    query: Option<&str>,
    headers: &HeaderMap,
    now: Instant,
) -> Answer {
    let (app_id, access) = match admit(shared, headers, now, Api::FindByDepartment) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let app = Some(app_id);
    let params = params(query);
    let mut violations = Vec::new();
    // Checked for its value only: see `World::department_users`.
    user_id_type(&params, "user_id_type", &mut violations);
    let dept_type = match params.get("department_id_type") {
        None => DepartmentIdType::OpenDepartmentId,
        Some(v) => DepartmentIdType::parse(v).unwrap_or_else(|| {
            violations.push(violation(
                "department_id_type",
                format!(
                    "department_id_type must be department_id or open_department_id, got {v:?}"
                ),
            ));
            DepartmentIdType::OpenDepartmentId
        }),
    };
    let department = params.get("department_id").cloned().unwrap_or_default();
    if department.is_empty() {
        violations.push(violation("department_id", "department_id is required"));
    }
    let size = page_size(
        &params,
        DEPARTMENT_USERS_DEFAULT_PAGE_SIZE,
        DEPARTMENT_USERS_MAX_PAGE_SIZE,
    );
    if let Err(true) = size {
        violations.push(violation("page_size", "page_size must be a number"));
    }
    if !violations.is_empty() {
        return field_validation(violations).for_app(app);
    }
    let Ok(size) = size else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            CODE_PAGE_SIZE_INVALID,
            "page size is invalid",
        )
        .for_app(app);
    };
    let list = format!("department|{dept_type}|{department}");
    let Some(offset) = page_offset(params.get("page_token"), &list) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            CODE_PAGE_TOKEN_INVALID,
            "page token is invalid error",
        )
        .for_app(app);
    };
    let wanted = (department != ROOT_DEPARTMENT_ID).then_some(department.as_str());
    let users = match guard(&shared.world).department_users(&access, wanted, dept_type) {
        Ok(users) => users,
        Err(_) => {
            return Answer::error(
                StatusCode::FORBIDDEN,
                CODE_NO_DEPT_AUTHORITY,
                "no dept authority error",
            )
            .for_app(app);
        }
    };
    let slots: Vec<_> = users.into_iter().map(Some).collect();
    let asked = params.get("page_token");
    let (items, has_more, page_token) = spoiled(
        shared,
        asked,
        &list,
        offset,
        page(&slots, offset, size, &list),
    );
    success(FindByDepartmentData {
        has_more,
        page_token,
        items,
    })
    .for_app(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_skip_empty_slots_and_tokens_only_fit_their_list() {
        let slots = [None, None, Some(1), Some(2), Some(3)];
        let (items, next) = page(&slots, 0, 3, "a");
        assert_eq!(items, [1]);
        let next = next.expect("more to come");
        let offset = page_offset(Some(&next), "a").expect("a token of list a");
        assert_eq!(page(&slots, offset, 3, "a"), (vec![2, 3], None));
        assert_eq!(page_offset(Some(&next), "b"), None);
        assert_eq!(page_offset(Some(&"nonsense".to_owned()), "a"), None);
        assert_eq!(page_offset(None, "a"), Some(0));
        // A list that shrank under an old token: an empty last page, not a panic.
        assert_eq!(page(&slots, 9, 3, "a"), (vec![], None));
    }
}
