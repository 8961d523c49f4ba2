//! The `/_emulator/` API (not Feishu's): what each user of each chat sees, membership changes,
//! the directory (people and departments) and its changes, the request log, fault injection and
//! early token expiry. JSON in, JSON out; errors are `{"error": "..."}` with a 4xx status.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::feishu::wire::UserIdType;
use crate::sync::guard;

use super::Shared;
use super::directory::PersonError;
use super::faults::FaultSpec;
use super::fixtures::{MemberSpec, PersonSpec, type_of};
use super::world::MembershipError;

pub struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type Answer = Result<Json<Value>, AdminError>;

fn to_json(v: impl serde::Serialize) -> Answer {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn unknown_chat(chat_id: &str) -> AdminError {
    AdminError(
        StatusCode::NOT_FOUND,
        format!("chat {chat_id:?} is not known (and the emulator has fixtures)"),
    )
}

/// `?user_id_type=`: named explicitly, or guessed from the id's prefix.
#[derive(Deserialize)]
pub struct IdType {
    user_id_type: Option<String>,
}

impl IdType {
    fn resolve(&self, id: &str) -> Result<UserIdType, AdminError> {
        match &self.user_id_type {
            None => Ok(type_of(id)),
            Some(t) => UserIdType::parse(t).ok_or_else(|| {
                AdminError(
                    StatusCode::BAD_REQUEST,
                    format!("user_id_type must be open_id, union_id or user_id, got {t:?}"),
                )
            }),
        }
    }
}

/// `GET /_emulator`: how this emulator was started.
pub async fn info(State(shared): State<Arc<Shared>>) -> Answer {
    Ok(Json(json!({
        "apps": shared.apps.keys().collect::<Vec<_>>(),
        "rate_limit": shared.rate_limit,
        "directory_rate_limit": shared.directory_rate_limit,
        "latency_ms": shared.latency.as_millis(),
        "token_ttl_secs": shared.token_ttl.as_secs(),
    })))
}

/// `GET /_emulator/chats`.
pub async fn chats(State(shared): State<Arc<Shared>>) -> Answer {
    to_json(json!({"chats": guard(&shared.world).chat_views()}))
}

/// `GET /_emulator/chats/{chat_id}`.
pub async fn chat(State(shared): State<Arc<Shared>>, Path(chat_id): Path<String>) -> Answer {
    let view = guard(&shared.world).chat_view(&chat_id);
    to_json(view.ok_or_else(|| unknown_chat(&chat_id))?)
}

/// `GET /_emulator/chats/{chat_id}/users/{user_id}`.
pub async fn user(
    State(shared): State<Arc<Shared>>,
    Path((chat_id, user_id)): Path<(String, String)>,
    Query(id_type): Query<IdType>,
) -> Answer {
    let t = id_type.resolve(&user_id)?;
    let view = guard(&shared.world).user_view(&chat_id, t, &user_id);
    to_json(view.ok_or_else(|| unknown_chat(&chat_id))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    members: Vec<MemberSpec>,
}

fn membership_error(e: MembershipError) -> AdminError {
    let status = match e {
        MembershipError::UnknownChat(_) => StatusCode::NOT_FOUND,
        MembershipError::OpenMembership(_) => StatusCode::CONFLICT,
        MembershipError::Member { .. } => StatusCode::BAD_REQUEST,
    };
    AdminError(status, e.to_string())
}

/// `PUT /_emulator/chats/{chat_id}/members`: the chat's members become exactly these.
/// `POST` to the same path: these join the chat.
pub async fn members(
    method: Method,
    State(shared): State<Arc<Shared>>,
    Path(chat_id): Path<String>,
    body: Bytes,
) -> Answer {
    let body: MembersBody = parse(&body)?;
    let replace = method == Method::PUT;
    let view = guard(&shared.world).set_members(&chat_id, &body.members, replace);
    to_json(view.map_err(membership_error)?)
}

/// `DELETE /_emulator/chats/{chat_id}/members/{user_id}`: this user leaves the chat.
pub async fn remove_member(
    State(shared): State<Arc<Shared>>,
    Path((chat_id, user_id)): Path<(String, String)>,
    Query(id_type): Query<IdType>,
) -> Answer {
    let t = id_type.resolve(&user_id)?;
    let view = guard(&shared.world).remove_member(&chat_id, t, &user_id);
    to_json(view.map_err(membership_error)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BotBody {
    member: bool,
    /// Other bots in the chat (unchanged when absent).
    #[serde(default)]
    other_bots: Option<u32>,
}

/// `PUT /_emulator/chats/{chat_id}/bot` with `{"member": bool, "other_bots": N}`.
pub async fn put_bot(
    State(shared): State<Arc<Shared>>,
    Path(chat_id): Path<String>,
    body: Bytes,
) -> Answer {
    let body: BotBody = parse(&body)?;
    let view = guard(&shared.world).set_bot_member(&chat_id, body.member, body.other_bots);
    to_json(view.ok_or_else(|| unknown_chat(&chat_id))?)
}

fn person_error(e: PersonError) -> AdminError {
    let status = match e {
        PersonError::Invalid(_) => StatusCode::BAD_REQUEST,
        PersonError::Conflict(_) => StatusCode::CONFLICT,
        PersonError::Unknown(_) => StatusCode::NOT_FOUND,
    };
    AdminError(status, e.to_string())
}

/// `GET /_emulator/people`: every person of the directory.
pub async fn people(State(shared): State<Arc<Shared>>) -> Answer {
    to_json(json!({"people": guard(&shared.world).person_views()}))
}

/// `POST /_emulator/people`: a person joins the directory (same fields as in the fixtures).
pub async fn add_person(State(shared): State<Arc<Shared>>, body: Bytes) -> Answer {
    let spec: PersonSpec = parse(&body)?;
    let mut world = guard(&shared.world);
    let p = world.add_person(&spec).map_err(person_error)?;
    let view = world.person_view(p);
    drop(world);
    to_json(view.ok_or_else(|| {
        AdminError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the person was added but cannot be shown".to_owned(),
        )
    })?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResignedBody {
    resigned: bool,
}

/// `PUT /_emulator/people/{user_id}/resigned` with `{"resigned": bool}`.
pub async fn put_resigned(
    State(shared): State<Arc<Shared>>,
    Path(user_id): Path<String>,
    Query(id_type): Query<IdType>,
    body: Bytes,
) -> Answer {
    let t = id_type.resolve(&user_id)?;
    let body: ResignedBody = parse(&body)?;
    let view = guard(&shared.world).set_resigned(t, &user_id, body.resigned);
    to_json(view.map_err(person_error)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepartmentsBody {
    departments: Vec<String>,
}

/// `PUT /_emulator/people/{user_id}/departments` with `{"departments": [...]}`: the person's
/// direct departments become exactly these.
pub async fn put_departments(
    State(shared): State<Arc<Shared>>,
    Path(user_id): Path<String>,
    Query(id_type): Query<IdType>,
    body: Bytes,
) -> Answer {
    let t = id_type.resolve(&user_id)?;
    let body: DepartmentsBody = parse(&body)?;
    let view = guard(&shared.world).set_departments(t, &user_id, &body.departments);
    to_json(view.map_err(person_error)?)
}

/// `GET /_emulator/departments`.
pub async fn departments(State(shared): State<Arc<Shared>>) -> Answer {
    to_json(json!({"departments": guard(&shared.world).department_views()}))
}

#[derive(Deserialize)]
pub struct LogFilter {
    path: Option<String>,
}

/// `GET /_emulator/requests[?path=...]`.
pub async fn requests(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<LogFilter>,
) -> Answer {
    let log = guard(&shared.log);
    to_json(json!({
        "requests": log.entries(filter.path.as_deref()),
        "dropped": log.dropped(),
    }))
}

/// `DELETE /_emulator/requests`.
pub async fn clear_requests(State(shared): State<Arc<Shared>>) -> Answer {
    let cleared = guard(&shared.log).clear();
    Ok(Json(json!({"cleared": cleared})))
}

/// `GET /_emulator/faults`.
pub async fn faults(State(shared): State<Arc<Shared>>) -> Answer {
    to_json(guard(&shared.faults).view(Instant::now()))
}

/// `PUT /_emulator/faults`: replaces the fault set.
pub async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Answer {
    let spec: FaultSpec = parse(&body)?;
    let now = Instant::now();
    let mut faults = guard(&shared.faults);
    faults
        .set(spec, now)
        .map_err(|problems| AdminError(StatusCode::BAD_REQUEST, problems.join("; ")))?;
    to_json(faults.view(now))
}

/// `DELETE /_emulator/faults`: no faults.
pub async fn clear_faults(State(shared): State<Arc<Shared>>) -> Answer {
    let now = Instant::now();
    let mut faults = guard(&shared.faults);
    faults
        .set(FaultSpec::default(), now)
        .map_err(|problems| AdminError(StatusCode::BAD_REQUEST, problems.join("; ")))?;
    to_json(faults.view(now))
}

/// `POST /_emulator/tokens/expire`: every token issued so far expires now.
pub async fn expire_tokens(State(shared): State<Arc<Shared>>) -> Answer {
    let expired = guard(&shared.tokens).expire_all(Instant::now());
    Ok(Json(json!({"expired": expired})))
}

/// Any other path under `/_emulator/`.
pub async fn not_found() -> AdminError {
    AdminError(
        StatusCode::NOT_FOUND,
        "no such /_emulator/ route (see specs/feishu-api.md)".to_owned(),
    )
}
