//! The emulated tenant: people (one person may have an open_id, a union_id and a user_id),
//! chats with their bot and members, the buttons each chat and each person was last sent, and
//! the directory (departments and what is known of each person, see `directory.rs`).
//!
//! What a user sees in a chat is their own list if one was ever set for them, else the
//! whole-chat list, else nothing. A whole-chat request does not erase per-user lists.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::feishu::wire::{Button, FailedUserReason, UserIdType};

use super::directory::Directory;
use super::fixtures::{Fixtures, MemberIds, MemberSpec};

/// `error_message` of a user who is not in the chat (the official example's wording).
pub const NOT_IN_CHAT: &str = "The user is not in the chat";

pub(super) type PersonId = usize;

/// Every person the emulator knows, and an index from each of their ids.
#[derive(Default)]
pub(super) struct People {
    pub(super) persons: Vec<MemberIds>,
    index: HashMap<(UserIdType, String), PersonId>,
}

impl People {
    pub(super) fn find(&self, t: UserIdType, id: &str) -> Option<PersonId> {
        self.index.get(&(t, id.to_owned())).copied()
    }

    /// The person's id of type `t`. Every Feishu user has all three ids; where the fixtures
    /// gave a person none of this type, one is made up from an id they have (the same every
    /// run), and remembered, so that it names them in every later call too.
    pub(super) fn id_of(&mut self, p: PersonId, t: UserIdType) -> String {
        if let Some(id) = self.persons[p].get(t) {
            return id.to_owned();
        }
        let base = self.persons[p]
            .iter()
            .next()
            .map(|(bt, id)| format!("{bt}:{id}"))
            .unwrap_or_else(|| format!("person:{p}"));
        let id = (0u32..)
            .map(|n| made_up_id(t, &base, n))
            .find(|id| self.find(t, id).is_none())
            .unwrap_or_default();
        self.persons[p].set(t, id.clone());
        self.index.insert((t, id.clone()), p);
        id
    }

    fn find_or_add(&mut self, t: UserIdType, id: &str) -> PersonId {
        if let Some(p) = self.find(t, id) {
            return p;
        }
        let mut ids = MemberIds::default();
        ids.set(t, id.to_owned());
        self.persons.push(ids);
        let p = self.persons.len() - 1;
        self.index.insert((t, id.to_owned()), p);
        p
    }

    /// The person these ids name, joining ids to a known person where they add to it.
    pub(super) fn link(&mut self, ids: &MemberIds) -> Result<PersonId, String> {
        if let Some(problem) = ids.problem() {
            return Err(problem);
        }
        let known: BTreeSet<PersonId> = ids.iter().filter_map(|(t, id)| self.find(t, id)).collect();
        let mut known = known.into_iter();
        let p = match (known.next(), known.next()) {
            (Some(_), Some(_)) => {
                return Err(format!("{} name different people already", describe(ids)));
            }
            (Some(p), None) => p,
            (None, _) => {
                self.persons.push(MemberIds::default());
                self.persons.len() - 1
            }
        };
        for (t, id) in ids.iter() {
            match self.persons[p].get(t) {
                Some(had) if had != id => {
                    return Err(format!(
                        "{t} {id:?} would be a second {t} of the person who has {t} {had:?}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.persons[p].set(t, id.to_owned());
                    self.index.insert((t, id.to_owned()), p);
                }
            }
        }
        Ok(p)
    }
}

/// An id shaped like Feishu's: `ou_`/`on_` and 32 hex digits, or 8 hex digits for a user_id.
fn made_up_id(t: UserIdType, base: &str, attempt: u32) -> String {
    use sha2::Digest;
    let digest = crate::text::hex(&sha2::Sha256::digest(format!("{t}|{base}|{attempt}")));
    match t.prefix() {
        Some(prefix) => format!("{prefix}{}", &digest[..32]),
        None => digest[..8].to_owned(),
    }
}

fn describe(ids: &MemberIds) -> String {
    ids.iter()
        .map(|(t, id)| format!("{t} {id:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who is in a chat besides the bot.
#[derive(Clone, Debug)]
pub(super) enum Members {
    /// Every user (the open world).
    Everyone,
    Listed(BTreeSet<PersonId>),
}

#[derive(Clone, Debug)]
pub(super) struct Chat {
    pub(super) bot_member: bool,
    /// Other bots in the chat: never listed as members, but they take places in a page.
    pub(super) other_bots: u32,
    pub(super) members: Members,
    /// The last whole-chat list; `None` until one is sent.
    chat_buttons: Option<Vec<Button>>,
    /// The last list sent for each person.
    user_buttons: BTreeMap<PersonId, Vec<Button>>,
}

impl Chat {
    fn new(bot_member: bool, members: Members) -> Chat {
        Chat {
            bot_member,
            other_bots: 0,
            members,
            chat_buttons: None,
            user_buttons: BTreeMap::new(),
        }
    }

    fn is_member(&self, p: PersonId) -> bool {
        match &self.members {
            Members::Everyone => true,
            Members::Listed(set) => set.contains(&p),
        }
    }
}

/// A chat-button request that passed validation.
#[derive(Clone, Debug)]
pub struct ValidRequest {
    pub chat_id: String,
    pub user_id_type: UserIdType,
    /// `None`: the whole chat. Duplicates removed, order kept.
    pub user_ids: Option<Vec<String>>,
    pub buttons: Vec<Button>,
}

/// Why a valid request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    BotNotInChat,
}

/// Why a `/_emulator/` change to membership was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("chat {0:?} is not known (and the emulator has fixtures)")]
    UnknownChat(String),
    #[error("members[{index}]: {problem}")]
    Member { index: usize, problem: String },
    #[error("chat {0:?} has every user as a member; PUT a member list first, then remove from it")]
    OpenMembership(String),
}

/// The tenant as the emulator sees it.
pub struct World {
    /// Chats not known behave as open (bot in, every user a member) instead of bot-less.
    open_chats: bool,
    pub(super) people: People,
    pub(super) chats: BTreeMap<String, Chat>,
    pub(super) directory: Directory,
}

impl World {
    /// The world without fixtures: every chat has the bot and every user.
    pub fn open() -> World {
        World {
            open_chats: true,
            people: People::default(),
            chats: BTreeMap::new(),
            directory: Directory::default(),
        }
    }

    /// The world the fixtures describe; on failure, every conflict between ids.
    pub fn from_fixtures(f: &Fixtures) -> Result<World, Vec<String>> {
        let mut problems = Vec::new();
        let (directory, more) = Directory::from_departments(&f.departments);
        problems.extend(more);
        let mut world = World {
            open_chats: f.open_chats,
            people: People::default(),
            chats: BTreeMap::new(),
            directory,
        };
        // People first, so that member lists are in the order the directory gives people.
        for (i, person) in f.people.iter().enumerate() {
            if let Err(e) = world.add_person(person) {
                problems.push(format!("people[{i}]: {e}"));
            }
        }
        for (i, chat) in f.chats.iter().enumerate() {
            let members = match &chat.members {
                None => Members::Everyone,
                Some(list) => {
                    let mut set = BTreeSet::new();
                    for (j, m) in list.iter().enumerate() {
                        match world.people.link(&m.ids()) {
                            Ok(p) => {
                                set.insert(p);
                            }
                            Err(e) => problems.push(format!("chats[{i}].members[{j}]: {e}")),
                        }
                    }
                    Members::Listed(set)
                }
            };
            let mut c = Chat::new(chat.bot_member, members);
            c.other_bots = chat.bots;
            world.chats.insert(chat.chat_id.clone(), c);
        }
        if problems.is_empty() {
            Ok(world)
        } else {
            Err(problems)
        }
    }

    /// Creates an unknown chat on first use when unknown chats are open.
    pub(super) fn touch(&mut self, chat_id: &str) {
        if self.open_chats && !self.chats.contains_key(chat_id) {
            self.chats
                .insert(chat_id.to_owned(), Chat::new(true, Members::Everyone));
        }
    }

    /// Applies a request: the full replacement of the buttons of the chat or of each member named.
    /// Users not in the chat keep what they had and are returned as failed.
    pub fn apply(&mut self, req: &ValidRequest) -> Result<Vec<FailedUserReason>, Refusal> {
        self.touch(&req.chat_id);
        // The chat and the people are borrowed separately: membership checks need both.
        let Some(chat) = self.chats.get_mut(&req.chat_id) else {
            return Err(Refusal::BotNotInChat);
        };
        if !chat.bot_member {
            return Err(Refusal::BotNotInChat);
        }
        let Some(user_ids) = &req.user_ids else {
            chat.chat_buttons = Some(req.buttons.clone());
            return Ok(Vec::new());
        };
        let mut failed = Vec::new();
        for id in user_ids {
            let person = match chat.members {
                // In an open chat anyone named is a member: remember them so the
                // inspection API can list them.
                Members::Everyone => Some(self.people.find_or_add(req.user_id_type, id)),
                Members::Listed(_) => self.people.find(req.user_id_type, id),
            };
            match person.filter(|p| chat.is_member(*p)) {
                Some(p) => {
                    chat.user_buttons.insert(p, req.buttons.clone());
                }
                None => failed.push(FailedUserReason {
                    error_code: 0,
                    error_message: NOT_IN_CHAT.to_owned(),
                    user_id: id.clone(),
                }),
            }
        }
        Ok(failed)
    }

    /// Replaces (`replace`) or extends the member list of a chat, creating the chat (with the
    /// bot in it) when unknown.
    pub fn set_members(
        &mut self,
        chat_id: &str,
        members: &[MemberSpec],
        replace: bool,
    ) -> Result<ChatView, MembershipError> {
        let mut persons = BTreeSet::new();
        for (index, m) in members.iter().enumerate() {
            let p = self
                .people
                .link(&m.ids())
                .map_err(|problem| MembershipError::Member { index, problem })?;
            persons.insert(p);
        }
        let chat = self
            .chats
            .entry(chat_id.to_owned())
            .or_insert_with(|| Chat::new(true, Members::Listed(BTreeSet::new())));
        match &mut chat.members {
            Members::Listed(set) if !replace => set.extend(persons),
            Members::Everyone if !replace => {}
            m => *m = Members::Listed(persons),
        }
        self.chat_view(chat_id)
            .ok_or_else(|| MembershipError::UnknownChat(chat_id.to_owned()))
    }

    /// Takes one user out of a chat's member list (their buttons stay stored, unseen).
    pub fn remove_member(
        &mut self,
        chat_id: &str,
        id_type: UserIdType,
        id: &str,
    ) -> Result<ChatView, MembershipError> {
        let person = self.people.find(id_type, id);
        self.touch(chat_id);
        let chat = self
            .chats
            .get_mut(chat_id)
            .ok_or_else(|| MembershipError::UnknownChat(chat_id.to_owned()))?;
        match &mut chat.members {
            Members::Everyone => return Err(MembershipError::OpenMembership(chat_id.to_owned())),
            Members::Listed(set) => {
                if let Some(p) = person {
                    set.remove(&p);
                }
            }
        }
        self.chat_view(chat_id)
            .ok_or_else(|| MembershipError::UnknownChat(chat_id.to_owned()))
    }

    /// Puts the bot into a chat or takes it out, and sets how many other bots are in it when
    /// `other_bots` is given (creating the chat, with no members when chats are not open, when
    /// unknown).
    pub fn set_bot_member(
        &mut self,
        chat_id: &str,
        member: bool,
        other_bots: Option<u32>,
    ) -> Option<ChatView> {
        self.touch(chat_id);
        let chat = self
            .chats
            .entry(chat_id.to_owned())
            .or_insert_with(|| Chat::new(member, Members::Listed(BTreeSet::new())));
        chat.bot_member = member;
        if let Some(n) = other_bots {
            chat.other_bots = n;
        }
        self.chat_view(chat_id)
    }

    /// A chat to show: a known one, or a new open one when unknown chats are open.
    pub(super) fn chat_to_show(&self, chat_id: &str) -> Option<Cow<'_, Chat>> {
        match self.chats.get(chat_id) {
            Some(chat) => Some(Cow::Borrowed(chat)),
            None if self.open_chats => Some(Cow::Owned(Chat::new(true, Members::Everyone))),
            None => None,
        }
    }

    /// Every known chat, by id.
    pub fn chat_views(&self) -> Vec<ChatView> {
        self.chats
            .keys()
            .filter_map(|id| self.chat_view(id))
            .collect()
    }

    /// A chat as its users see it; unknown chats are shown as new when chats are open.
    pub fn chat_view(&self, chat_id: &str) -> Option<ChatView> {
        let chat = self.chat_to_show(chat_id)?;
        let mut persons: BTreeSet<PersonId> = chat.user_buttons.keys().copied().collect();
        if let Members::Listed(set) = &chat.members {
            persons.extend(set);
        }
        let mut users: Vec<UserView> = persons
            .into_iter()
            .map(|p| self.user_view_of(chat_id, &chat, p))
            .collect();
        users.sort_by(|a, b| a.ids.cmp(&b.ids));
        Some(ChatView {
            chat_id: chat_id.to_owned(),
            bot_member: chat.bot_member,
            other_bots: chat.other_bots,
            members: match &chat.members {
                Members::Everyone => MembersView::Everyone("everyone"),
                Members::Listed(set) => {
                    let mut list: Vec<MemberIds> = set
                        .iter()
                        .map(|p| self.people.persons[*p].clone())
                        .collect();
                    list.sort();
                    MembersView::Listed(list)
                }
            },
            chat_buttons: chat.chat_buttons.clone(),
            users,
        })
    }

    /// What one user (named by an id of `id_type`) sees in a chat.
    pub fn user_view(&self, chat_id: &str, id_type: UserIdType, id: &str) -> Option<UserView> {
        let chat = self.chat_to_show(chat_id)?;
        match self.people.find(id_type, id) {
            Some(p) => Some(self.user_view_of(chat_id, &chat, p)),
            None => {
                let member = matches!(chat.members, Members::Everyone);
                let (source, buttons) = sees(&chat, member, None);
                let mut ids = MemberIds::default();
                ids.set(id_type, id.to_owned());
                Some(UserView {
                    chat_id: chat_id.to_owned(),
                    ids,
                    member,
                    source,
                    buttons,
                    kept: None,
                })
            }
        }
    }

    fn user_view_of(&self, chat_id: &str, chat: &Chat, p: PersonId) -> UserView {
        let member = chat.is_member(p);
        let own = chat.user_buttons.get(&p);
        let (source, buttons) = sees(chat, member, own);
        UserView {
            chat_id: chat_id.to_owned(),
            ids: self.people.persons[p].clone(),
            member,
            source,
            buttons,
            kept: own.filter(|_| !member).cloned(),
        }
    }
}

fn sees(chat: &Chat, member: bool, own: Option<&Vec<Button>>) -> (Source, Vec<Button>) {
    if !member {
        return (Source::NotMember, Vec::new());
    }
    match (own, &chat.chat_buttons) {
        (Some(own), _) => (Source::User, own.clone()),
        (None, Some(all)) => (Source::Chat, all.clone()),
        (None, None) => (Source::None, Vec::new()),
    }
}

/// Where the buttons a user sees come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Their own list (a request that named them).
    User,
    /// The whole-chat list (a request without `user_ids`).
    Chat,
    /// Nothing was ever sent for them or the chat.
    None,
    /// They are not in the chat, so they see nothing (their own list, if any, is kept).
    NotMember,
}

/// `GET /_emulator/chats/{chat_id}`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatView {
    pub chat_id: String,
    pub bot_member: bool,
    /// Other bots in the chat (never listed by the members API).
    pub other_bots: u32,
    pub members: MembersView,
    /// The last whole-chat list, `null` if none was ever sent.
    pub chat_buttons: Option<Vec<Button>>,
    /// Each listed member and each person with a list of their own.
    pub users: Vec<UserView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum MembersView {
    Everyone(&'static str),
    Listed(Vec<MemberIds>),
}

/// `GET /_emulator/chats/{chat_id}/users/{user_id}`: what one user sees.
#[derive(Clone, Debug, Serialize)]
pub struct UserView {
    pub chat_id: String,
    pub ids: MemberIds,
    pub member: bool,
    pub source: Source,
    pub buttons: Vec<Button>,
    /// For someone not in the chat: the list of their own that they will see again when they
    /// rejoin (omitted when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<Button>>,
}
