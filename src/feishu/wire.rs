//! The API's wire types: exactly the JSON that `PUT /open-apis/im/v2/chat_button` takes and gives.
//!
//! Shared by the desired state (what we would send), the plan (the byte-for-byte body), the client
//! and the emulator. Absent optional fields are omitted; an empty button list is still sent
//! (`{"buttons": {"buttons": []}}`) because the field is a full replacement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// The `user_id_type` query parameter: which kind of id `user_ids` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserIdType {
    /// `ou_...`: the user's id within this app (the API's default).
    OpenId,
    /// `on_...`: the user's id across one developer's apps.
    UnionId,
    /// A tenant-wide employee id (no fixed prefix; store apps cannot use it).
    UserId,
}

impl UserIdType {
    /// All values, in the order the API documents them.
    pub const ALL: [UserIdType; 3] = [UserIdType::OpenId, UserIdType::UnionId, UserIdType::UserId];

    /// The spelling used in YAML, JSON and the query string.
    pub fn as_str(self) -> &'static str {
        match self {
            UserIdType::OpenId => "open_id",
            UserIdType::UnionId => "union_id",
            UserIdType::UserId => "user_id",
        }
    }

    /// Parses the spelling used in YAML, JSON and the query string.
    pub fn parse(s: &str) -> Option<UserIdType> {
        UserIdType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The prefix every id of this type starts with, where the type has one.
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            UserIdType::OpenId => Some("ou_"),
            UserIdType::UnionId => Some("on_"),
            UserIdType::UserId => None,
        }
    }
}

impl std::fmt::Display for UserIdType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `action_type`: what a click does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    /// Open `multi_url`.
    UrlPage,
    /// Call the app back with `action_map`.
    Webhook,
}

impl ActionType {
    pub const ALL: [ActionType; 2] = [ActionType::UrlPage, ActionType::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::UrlPage => "url_page",
            ActionType::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<ActionType> {
        ActionType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `button_type`: the button's look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonType {
    Default,
    Primary,
    Success,
}

impl ButtonType {
    pub const ALL: [ButtonType; 3] = [
        ButtonType::Default,
        ButtonType::Primary,
        ButtonType::Success,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ButtonType::Default => "default",
            ButtonType::Primary => "primary",
            ButtonType::Success => "success",
        }
    }

    pub fn parse(s: &str) -> Option<ButtonType> {
        ButtonType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `text`: the button's label (1..30 characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Text {
    pub text: String,
}

/// `multi_url`: where a `url_page` button leads, per platform (https only, at most 700 characters each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MultiUrl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub android_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ios_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc_url: Option<String>,
}

/// One button, field for field as the API documents `open_app_feed_card_button`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Button {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_url: Option<MultiUrl>,
    pub action_type: ActionType,
    pub text: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_type: Option<ButtonType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_map: Option<BTreeMap<String, String>>,
}

/// `buttons`: the full list (0..2) that replaces whatever the audience had.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Buttons {
    pub buttons: Vec<Button>,
}

/// The body of `PUT /open-apis/im/v2/chat_button`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatButtonRequest {
    /// Absent for a whole-chat request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Id>>,
    pub chat_id: Id,
    /// Always sent, even when empty: an omitted list is not documented to clear.
    pub buttons: Buttons,
}

/// One entry of `data.failed_user_reasons`: a user the call did not apply to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUserReason {
    #[serde(default)]
    pub error_code: i64,
    #[serde(default)]
    pub error_message: String,
    #[serde(default)]
    pub user_id: String,
}

/// `data` of a chat-button response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatButtonData {
    #[serde(default)]
    pub failed_user_reasons: Vec<FailedUserReason>,
}

/// The envelope every Open API answer shares: `code` 0 means success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiResponse<T> {
    pub code: i64,
    #[serde(default)]
    pub msg: String,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// Body of `POST /open-apis/auth/v3/tenant_access_token/internal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantTokenRequest {
    pub app_id: String,
    pub app_secret: String,
}

/// Answer of the token endpoint (its fields sit beside `code`, not under `data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantTokenResponse {
    pub code: i64,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_access_token: Option<String>,
    /// Remaining lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<u64>,
}

/// Paths and documented codes.
pub mod api {
    pub const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
    pub const CHAT_BUTTON_PATH: &str = "/open-apis/im/v2/chat_button";

    /// Most users in one call.
    pub const MAX_USERS_PER_CALL: usize = 20;
    /// Most buttons in one list.
    pub const MAX_BUTTONS: usize = 2;
    /// Button text length, in characters.
    pub const MAX_TEXT_CHARS: usize = 30;
    /// URL length, in characters.
    pub const MAX_URL_CHARS: usize = 700;
    /// Documented calls per second, per app and tenant.
    pub const RATE_LIMIT_PER_SECOND: u32 = 10;

    pub const CODE_OK: i64 = 0;
    pub const CODE_PARAM_INVALID: i64 = 230001;
    pub const CODE_BOT_NOT_IN_CHAT: i64 = 230027;
    pub const CODE_FIELD_VALIDATION: i64 = 99992402;
    pub const CODE_RATE_LIMITED: i64 = 99991400;
    pub const CODE_NO_TOKEN: i64 = 99991661;
    pub const CODE_TOKEN_INVALID: i64 = 99991663;
    pub const CODE_TOKEN_FORMAT: i64 = 99991671;
    pub const CODE_MISSING_SCOPE: i64 = 99991672;
    pub const CODE_TOKEN_EXPIRED: i64 = 99991677;
    pub const CODE_APP_UNAVAILABLE: i64 = 10014;
    pub const CODE_WRONG_SECRET: i64 = 10015;

    pub const HEADER_RATELIMIT_LIMIT: &str = "x-ogw-ratelimit-limit";
    pub const HEADER_RATELIMIT_RESET: &str = "x-ogw-ratelimit-reset";

    /// Token call with a missing or empty `app_id`/`app_secret`, or a body that is not JSON
    /// (observed on the live endpoint, not in the official tables).
    pub const CODE_TOKEN_PARAM_INVALID: i64 = 10003;
    /// A token asked again with at least this much lifetime left is the same token.
    pub const TOKEN_REUSE_MIN_REMAINING_SECS: u64 = 30 * 60;
    /// The longest a tenant token lives.
    pub const TOKEN_MAX_LIFETIME_SECS: u64 = 2 * 60 * 60;
}

// ---------------------------------------------------------------------------------------------
// Directory: looking people up (issue 15, "People, not ids")
//
// The three read-only calls that turn emails, mobiles, chats and departments into user ids:
// `POST /open-apis/contact/v3/users/batch_get_id`, `GET /open-apis/im/v1/chats/{chat_id}/members`
// and `GET /open-apis/contact/v3/users/find_by_department`. Field for field as documented; the
// rules and their sources are in `specs/feishu-api.md`, section 6.

/// Body of `POST /open-apis/contact/v3/users/batch_get_id`. Each email and each mobile is looked
/// up on its own: the answer has one entry per item asked, emails first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGetIdRequest {
    /// At most 50. Not an enterprise mailbox (those never resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<String>>,
    /// At most 50. Outside mainland China: `+` and the country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobiles: Option<Vec<String>>,
    /// Also resolve people who have left (default false: they come back without `user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_resigned: Option<bool>,
}

/// `status` of a user, where the app may see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    #[serde(default)]
    pub is_frozen: bool,
    #[serde(default)]
    pub is_resigned: bool,
    #[serde(default)]
    pub is_activated: bool,
    #[serde(default)]
    pub is_exited: bool,
    #[serde(default)]
    pub is_unjoin: bool,
}

/// One entry of `data.user_list`: the email or mobile asked, and `user_id` only when that
/// person could be resolved (known, in the app's contact scope, not resigned unless asked).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserContactInfo {
    /// Of the query's `user_id_type`; absent when the person cannot be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
}

/// `data` of a batch_get_id answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGetIdData {
    /// Left out when empty, like every empty list of these APIs; read an absent list as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_list: Vec<UserContactInfo>,
}

/// One item of a chat's member list. Bots are never listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMember {
    /// The query's `member_id_type`.
    pub member_id_type: UserIdType,
    pub member_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tenant_key: String,
}

/// `data` of `GET /open-apis/im/v1/chats/{chat_id}/members`. A page may hold fewer (even none)
/// or more items than `page_size`: follow `has_more`, never count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMembersData {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ChatMember>,
    /// Present only when `has_more` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub member_total: u64,
}

/// One item of a department's direct members. Each field is there only when the app has the
/// field's scope (e.g. `email` needs `contact:user.email:readonly`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartmentUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
    /// Of the query's `department_id_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_ids: Option<Vec<String>>,
}

/// `data` of `GET /open-apis/contact/v3/users/find_by_department`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindByDepartmentData {
    #[serde(default)]
    pub has_more: bool,
    /// Present only when `has_more` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<DepartmentUser>,
}

/// The `department_id_type` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepartmentIdType {
    /// A custom id the tenant chose (the API's `department_id`).
    DepartmentId,
    /// `od-...`, made by Feishu (the API's default).
    OpenDepartmentId,
}

impl DepartmentIdType {
    pub const ALL: [DepartmentIdType; 2] = [
        DepartmentIdType::DepartmentId,
        DepartmentIdType::OpenDepartmentId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DepartmentIdType::DepartmentId => "department_id",
            DepartmentIdType::OpenDepartmentId => "open_department_id",
        }
    }

    pub fn parse(s: &str) -> Option<DepartmentIdType> {
        DepartmentIdType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for DepartmentIdType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Paths, limits, scopes and codes of the directory calls.
pub mod directory {
    pub const BATCH_GET_ID_PATH: &str = "/open-apis/contact/v3/users/batch_get_id";
    pub const FIND_BY_DEPARTMENT_PATH: &str = "/open-apis/contact/v3/users/find_by_department";
    /// The members path is `CHAT_MEMBERS_PREFIX` + chat id + `CHAT_MEMBERS_SUFFIX`.
    pub const CHAT_MEMBERS_PREFIX: &str = "/open-apis/im/v1/chats/";
    pub const CHAT_MEMBERS_SUFFIX: &str = "/members";

    /// `GET` path of a chat's member list.
    pub fn chat_members_path(chat_id: &str) -> String {
        format!("{CHAT_MEMBERS_PREFIX}{chat_id}{CHAT_MEMBERS_SUFFIX}")
    }

    /// The chat id of a member-list path, if `path` is one.
    pub fn chat_id_of_members_path(path: &str) -> Option<&str> {
        let id = path
            .strip_prefix(CHAT_MEMBERS_PREFIX)?
            .strip_suffix(CHAT_MEMBERS_SUFFIX)?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    /// Most emails, and separately most mobiles, in one batch_get_id call.
    pub const MAX_EMAILS_PER_CALL: usize = 50;
    pub const MAX_MOBILES_PER_CALL: usize = 50;
    pub const CHAT_MEMBERS_DEFAULT_PAGE_SIZE: usize = 20;
    pub const CHAT_MEMBERS_MAX_PAGE_SIZE: usize = 100;
    pub const DEPARTMENT_USERS_DEFAULT_PAGE_SIZE: usize = 10;
    pub const DEPARTMENT_USERS_MAX_PAGE_SIZE: usize = 50;
    /// Documented for batch_get_id and chat members; find_by_department's is not documented.
    /// Both windows apply, per app and per API.
    pub const RATE_LIMIT_PER_SECOND: u32 = 50;
    pub const RATE_LIMIT_PER_MINUTE: u32 = 1000;
    /// The root department: asking for it needs an all-staff contact scope.
    pub const ROOT_DEPARTMENT_ID: &str = "0";
    /// Mobiles without `+` are mainland China numbers.
    pub const MAINLAND_CHINA_PREFIX: &str = "+86";

    /// The scope batch_get_id needs.
    pub const SCOPES_BATCH_GET_ID: &[&str] = &["contact:user.id:readonly"];
    /// Any one of these lets an app list chat members.
    pub const SCOPES_CHAT_MEMBERS: &[&str] = &[
        "im:chat",
        "im:chat:readonly",
        "im:chat.group_info:readonly",
        "im:chat.members:read",
    ];
    /// Any one of these lets an app list a department's users.
    pub const SCOPES_DEPARTMENT_USERS: &[&str] = &[
        "contact:contact.base:readonly",
        "contact:department.organize:readonly",
        "contact:contact:access_as_app",
        "contact:contact:readonly",
        "contact:contact:readonly_as_app",
    ];

    /// The bot (or user) asking is not in the chat.
    pub const CODE_OPERATOR_NOT_IN_CHAT: i64 = 232011;
    /// An IM request parameter is wrong (the emulator: an unknown `page_token`).
    pub const CODE_CHAT_PARAM_INVALID: i64 = 232001;
    pub const CODE_CHAT_ID_INVALID: i64 = 232006;
    /// The department is outside the app's contact scope (HTTP 403).
    pub const CODE_NO_DEPT_AUTHORITY: i64 = 40004;
    pub const CODE_PAGE_SIZE_INVALID: i64 = 40011;
    pub const CODE_PAGE_TOKEN_INVALID: i64 = 40012;
}
