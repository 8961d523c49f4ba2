//! The fixtures file: which apps may get a token, which chats exist, whether the bot is in them
//! and who their members are. YAML (so JSON too), read once at start and validated as a whole.
//!
//! ```yaml
//! apps:
//!   - app_id: cli_demo
//!     app_secret: demo-secret
//! open_chats: false          # true: chats not listed behave as without fixtures
//! chats:
//!   - chat_id: oc_team
//!     bot_member: true        # default true
//!     members:                # default: nobody; `everyone` = every user is a member
//!       - ou_alice            # an id: ou_ = open_id, on_ = union_id, anything else = user_id
//!       - {open_id: ou_bob, union_id: on_bob, user_id: bob}   # one person, several ids
//!   - chat_id: oc_elsewhere
//!     bot_member: false
//! ```

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::feishu::wire::UserIdType;

use super::EmulatorError;

/// A validated fixtures file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fixtures {
    /// App id -> app secret.
    pub apps: BTreeMap<String, String>,
    pub chats: Vec<ChatFixture>,
    /// Whether a chat that is not listed behaves as in the open world.
    pub open_chats: bool,
}

/// One chat of the fixtures.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatFixture {
    pub chat_id: String,
    pub bot_member: bool,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    app_id: String,
    app_secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChat {
    chat_id: String,
    #[serde(default = "yes")]
    bot_member: bool,
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
        let raw: RawFixtures = serde_saphyr::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut apps = BTreeMap::new();
        for (i, app) in raw.apps.into_iter().enumerate() {
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
                members,
            });
        }
        let fixtures = Fixtures {
            apps,
            chats,
            open_chats: raw.open_chats,
        };
        // Linking one person's ids across chats can conflict (ou_a is on_a in one chat and
        // on_b in another); building the world once finds those.
        if problems.is_empty()
            && let Err(more) = super::world::World::from_fixtures(&fixtures)
        {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(fixtures)
        } else {
            Err(problems)
        }
    }
}
