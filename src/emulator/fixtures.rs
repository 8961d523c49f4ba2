//! The fixtures file: which apps may get a token and what each may see, which chats exist,
//! whether the bot is in them and who their members are, and the directory (people and
//! departments). YAML (so JSON too), read once at start and validated as a whole.
//!
//! ```yaml
//! apps:
//!   - app_id: cli_demo
//!     app_secret: demo-secret
//!     contact_scope: [od-sre]   # departments (and their sub-departments) the app may see;
//!                               # `all` (the default) for the whole tenant
//!     scopes: [contact:user.id:readonly, im:chat.members:read]   # default: every scope
//! open_chats: false          # true: chats not listed behave as without fixtures
//! chats:
//!   - chat_id: oc_team
//!     bot_member: true        # default true
//!     bots: 0                 # other bots in the chat: never listed, so member pages run short
//!     members:                # default: nobody; `everyone` = every user is a member
//!       - ou_alice            # an id: ou_ = open_id, on_ = union_id, anything else = user_id
//!       - {open_id: ou_bob, union_id: on_bob, user_id: bob}   # one person, several ids
//!   - chat_id: oc_elsewhere
//!     bot_member: false
//! departments:
//!   - {department_id: sre, open_department_id: od-sre, name: SRE, parent: "0"}
//! people:
//!   - {open_id: ou_alice, union_id: on_alice, user_id: alice, name: Alice,
//!      email: alice@example.com, mobile: "+8613800000001", departments: [od-sre]}
//!   - {open_id: ou_bob, email: bob@example.com, resigned: true}
//! ```

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::feishu::wire::UserIdType;
use crate::feishu::wire::directory::{MAINLAND_CHINA_PREFIX, ROOT_DEPARTMENT_ID};

use super::EmulatorError;

/// A validated fixtures file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fixtures {
    /// App id -> app secret.
    pub apps: BTreeMap<String, String>,
    pub chats: Vec<ChatFixture>,
    /// Whether a chat that is not listed behaves as in the open world.
    pub open_chats: bool,
    /// App id -> what the app may do and see; an app not listed may do and see everything.
    pub access: BTreeMap<String, AppAccess>,
    pub departments: Vec<DepartmentSpec>,
    pub people: Vec<PersonSpec>,
}

/// What one app may do (its API scopes) and see (its contact scope).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppAccess {
    /// The scopes the app was granted; `None`: every scope.
    pub scopes: Option<BTreeSet<String>>,
    pub contact_scope: ContactScope,
}

impl AppAccess {
    /// Whether the app has at least one of `scopes` (the documented "any one of these").
    pub fn has_any(&self, scopes: &[&str]) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|granted| scopes.iter().any(|s| granted.contains(*s)))
    }
}

/// Whose data an app may read through the contact APIs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ContactScope {
    /// Every member of the tenant (Feishu's "all staff"); needed to read the root department.
    #[default]
    All,
    /// These departments (either id type) and everything below them.
    Departments(Vec<String>),
}

/// One department of the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentSpec {
    /// The tenant's own id; without it, the open id is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_id: Option<String>,
    /// `od-...`; without it, `od-` + `department_id` (or `department_id` if it starts with `od-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_department_id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// The parent department, by either id; `"0"` (the default) is the root.
    #[serde(default = "root")]
    pub parent: String,
}

fn root() -> String {
    ROOT_DEPARTMENT_ID.to_owned()
}

impl DepartmentSpec {
    /// The two ids, each filled in from the other when missing; `None` when neither is given.
    pub fn ids(&self) -> Option<(String, String)> {
        match (&self.department_id, &self.open_department_id) {
            (Some(id), Some(open)) => Some((id.clone(), open.clone())),
            (Some(id), None) if id.starts_with("od-") => Some((id.clone(), id.clone())),
            (Some(id), None) => Some((id.clone(), format!("od-{id}"))),
            (None, Some(open)) => Some((open.clone(), open.clone())),
            (None, None) => None,
        }
    }
}

/// One person of the directory: `people:` in the fixtures, or `POST /_emulator/people`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// The address batch_get_id resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A company mailbox: documented never to resolve through batch_get_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_email: Option<String>,
    /// `+` and the country code, or a mainland China number without them (read as `+86...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// Departments (either id type) the person is a direct member of; none: the root.
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub resigned: bool,
}

impl PersonSpec {
    pub fn ids(&self) -> MemberIds {
        MemberIds {
            open_id: self.open_id.clone(),
            union_id: self.union_id.clone(),
            user_id: self.user_id.clone(),
        }
    }

    /// Every problem of this entry on its own (references to departments are checked later).
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.ids().problem().into_iter().collect();
        for (field, email) in [
            ("email", &self.email),
            ("enterprise_email", &self.enterprise_email),
        ] {
            if let Some(e) = email
                && !e.contains('@')
            {
                problems.push(format!("{field} {e:?} is not an email address"));
            }
        }
        if let Some(m) = &self.mobile
            && normalize_mobile(m).is_none()
        {
            problems.push(format!(
                "mobile {m:?} must be `+` and digits (country code first), or mainland digits"
            ));
        }
        problems
    }
}

/// A mobile number as the directory keeps it: `+` and digits. Without `+` a number is a
/// mainland China one, as the API documents, so `13800000001` is `+8613800000001`. Anything
/// else (spaces, dashes, letters) is no number: it matches nobody.
pub fn normalize_mobile(mobile: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match mobile.strip_prefix('+') {
        Some(rest) if digits(rest) => Some(mobile.to_owned()),
        Some(_) => None,
        None if digits(mobile) => Some(format!("{MAINLAND_CHINA_PREFIX}{mobile}")),
        None => None,
    }
}

/// One chat of the fixtures.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatFixture {
    pub chat_id: String,
    pub bot_member: bool,
    /// Other bots in the chat: never listed as members, but they take places in a page.
    pub bots: u32,
    /// `None`: every user is a member.
    pub members: Option<Vec<MemberSpec>>,
}

/// A chat member as fixtures and `/_emulator/` requests name one: a single id, or the ids one
/// person has (so buttons set through one id are seen through the others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MemberSpec {
    /// `ou_...` is an open_id, `on_...` a union_id, anything else a user_id.
    Id(String),
    Ids(MemberIds),
}

/// The ids of one person, by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl MemberIds {
    /// The id of type `t`, if this person has one.
    pub fn get(&self, t: UserIdType) -> Option<&str> {
        match t {
            UserIdType::OpenId => self.open_id.as_deref(),
            UserIdType::UnionId => self.union_id.as_deref(),
            UserIdType::UserId => self.user_id.as_deref(),
        }
    }

    pub fn set(&mut self, t: UserIdType, id: String) {
        match t {
            UserIdType::OpenId => self.open_id = Some(id),
            UserIdType::UnionId => self.union_id = Some(id),
            UserIdType::UserId => self.user_id = Some(id),
        }
    }

    /// The ids present, as (type, id), in the API's order of types.
    pub fn iter(&self) -> impl Iterator<Item = (UserIdType, &str)> {
        UserIdType::ALL
            .into_iter()
            .filter_map(|t| self.get(t).map(|id| (t, id)))
    }

    /// The ids of one id: its type guessed from its prefix.
    pub fn single(id: &str) -> MemberIds {
        let mut ids = MemberIds::default();
        ids.set(type_of(id), id.to_owned());
        ids
    }

    /// Why these ids cannot name a person, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.iter().next().is_none() {
            return Some("names no id (give open_id, union_id or user_id)".to_owned());
        }
        self.iter().find_map(|(t, id)| id_problem(t, id))
    }
}

impl MemberSpec {
    pub fn ids(&self) -> MemberIds {
        match self {
            MemberSpec::Id(id) => MemberIds::single(id),
            MemberSpec::Ids(ids) => ids.clone(),
        }
    }
}

/// The type of a bare id, from its prefix (`ou_`, `on_`; anything else is a user_id).
pub fn type_of(id: &str) -> UserIdType {
    [UserIdType::OpenId, UserIdType::UnionId]
        .into_iter()
        .find(|t| t.prefix().is_some_and(|p| id.starts_with(p)))
        .unwrap_or(UserIdType::UserId)
}

/// Why `id` is not a valid id of type `t`, if it is not.
pub fn id_problem(t: UserIdType, id: &str) -> Option<String> {
    if id.is_empty() {
        return Some(format!("{t} is empty"));
    }
    match t.prefix() {
        Some(p) if !id.starts_with(p) => Some(format!("{t} {id:?} does not start with {p}")),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixtures {
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    open_chats: bool,
    #[serde(default)]
    chats: Vec<RawChat>,
    #[serde(default)]
    departments: Vec<DepartmentSpec>,
    #[serde(default)]
    people: Vec<PersonSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    app_id: String,
    app_secret: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    contact_scope: Option<RawContactScope>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawContactScope {
    List(Vec<String>),
    /// Only `all` is accepted.
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChat {
    chat_id: String,
    #[serde(default = "yes")]
    bot_member: bool,
    #[serde(default)]
    bots: u32,
    #[serde(default)]
    members: Option<RawMembers>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawMembers {
    List(Vec<MemberSpec>),
    /// Only `everyone` is accepted.
    Word(String),
}

impl Fixtures {
    /// Reads and validates a fixtures file.
    pub fn load(path: &Path) -> Result<Fixtures, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::ReadFixtures {
            path: path.to_owned(),
            source,
        })?;
        Fixtures::parse(&text).map_err(|problems| EmulatorError::InvalidFixtures {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and validates fixtures text; on failure, every problem found.
    pub fn parse(text: &str) -> Result<Fixtures, Vec<String>> {
        let raw: RawFixtures = serde_saphyr::from_str(text)
            .map_err(|e| vec![crate::config::syntax::one_line(text, &e)])?;
        let mut problems = Vec::new();
        let mut apps = BTreeMap::new();
        let mut access = BTreeMap::new();
        for (i, app) in raw.apps.into_iter().enumerate() {
            let contact_scope = match app.contact_scope {
                None => ContactScope::All,
                Some(RawContactScope::Word(w)) if w == "all" => ContactScope::All,
                Some(RawContactScope::Word(w)) => {
                    problems.push(format!(
                        "apps[{i}].contact_scope: {w:?} is neither a list of departments nor `all`"
                    ));
                    ContactScope::All
                }
                // The root department stands for the whole tenant, as on Feishu.
                Some(RawContactScope::List(l)) if l.iter().any(|d| d == ROOT_DEPARTMENT_ID) => {
                    ContactScope::All
                }
                Some(RawContactScope::List(l)) => ContactScope::Departments(l),
            };
            let app_access = AppAccess {
                scopes: app.scopes.map(|s| s.into_iter().collect()),
                contact_scope,
            };
            if app.app_id.is_empty() || app.app_secret.is_empty() {
                problems.push(format!(
                    "apps[{i}]: app_id and app_secret must not be empty"
                ));
            } else {
                match apps.entry(app.app_id) {
                    Entry::Occupied(e) => {
                        problems.push(format!("apps[{i}]: app {:?} is listed twice", e.key()));
                    }
                    Entry::Vacant(e) => {
                        if app_access != AppAccess::default() {
                            access.insert(e.key().clone(), app_access);
                        }
                        e.insert(app.app_secret);
                    }
                }
            }
        }
        let mut chats: Vec<ChatFixture> = Vec::new();
        for (i, chat) in raw.chats.into_iter().enumerate() {
            if !chat.chat_id.starts_with("oc_") {
                problems.push(format!(
                    "chats[{i}]: chat_id {:?} does not start with oc_",
                    chat.chat_id
                ));
            }
            if chats.iter().any(|c| c.chat_id == chat.chat_id) {
                problems.push(format!(
                    "chats[{i}]: chat {:?} is listed twice",
                    chat.chat_id
                ));
            }
            let members = match chat.members {
                None => Some(Vec::new()),
                Some(RawMembers::Word(w)) if w == "everyone" => None,
                Some(RawMembers::Word(w)) => {
                    problems.push(format!(
                        "chats[{i}].members: {w:?} is neither a list nor `everyone`"
                    ));
                    None
                }
                Some(RawMembers::List(list)) => {
                    for (j, m) in list.iter().enumerate() {
                        if let Some(p) = m.ids().problem() {
                            problems.push(format!("chats[{i}].members[{j}]: {p}"));
                        }
                    }
                    Some(list)
                }
            };
            chats.push(ChatFixture {
                chat_id: chat.chat_id,
                bot_member: chat.bot_member,
                bots: chat.bots,
                members,
            });
        }
        for (i, person) in raw.people.iter().enumerate() {
            problems.extend(
                person
                    .problems()
                    .into_iter()
                    .map(|p| format!("people[{i}]: {p}")),
            );
        }
        let fixtures = Fixtures {
            apps,
            chats,
            open_chats: raw.open_chats,
            access,
            departments: raw.departments,
            people: raw.people,
        };
        // Linking one person's ids across chats can conflict (ou_a is on_a in one chat and
        // on_b in another), and people and apps name departments; building the world once
        // finds those.
        if problems.is_empty() {
            match super::world::World::from_fixtures(&fixtures) {
                Err(more) => problems.extend(more),
                Ok(world) => {
                    for (app_id, a) in &fixtures.access {
                        if let ContactScope::Departments(list) = &a.contact_scope {
                            problems.extend(list.iter().filter(|d| !world.has_department(d)).map(
                                |d| {
                                    format!(
                                        "app {app_id:?}: contact_scope names no department {d:?}"
                                    )
                                },
                            ));
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(fixtures)
        } else {
            Err(problems)
        }
    }
}
