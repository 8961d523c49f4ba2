//! Resolving people: what a config asks of the directory (`config::people::Wanted`) -> the
//! fewest look-ups -> a new lock, and the people and sources the directory would not give.
//!
//! The fewest calls: per id type, one batch_get_id call for every 50 emails and 50 mobiles
//! (both lists ride in the same call), each chat's members in pages of 100 per id type, and
//! each department's direct members in pages of 50 (one listing gives every id type). Every
//! call is started at once; each API's limiter sets the pace, so the three APIs run side by
//! side, each within its own budget.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;

use crate::config::people::{Source, Wanted, Written};
use crate::feishu::client::CallError;
use crate::feishu::client::directory::Directory;
use crate::feishu::wire::UserIdType;
use crate::feishu::wire::directory::{
    CODE_CHAT_ID_INVALID, CODE_NO_DEPT_AUTHORITY, CODE_OPERATOR_NOT_IN_CHAT, MAX_EMAILS_PER_CALL,
    MAX_MOBILES_PER_CALL,
};
use crate::lock::Lock;

/// Why a batch_get_id entry came back without an id.
pub const NOT_FOUND: &str = "not found in the directory: nobody has it, the person left, or they are outside the app's contact scope";

/// What the directory gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Everything that resolved; exactly what was wanted, nothing more.
    pub lock: Lock,
    /// Emails and mobiles that did not resolve (for some id type), with why.
    pub failed_people: BTreeMap<String, String>,
    /// Sources the directory would not list, with why.
    pub failed_sources: BTreeMap<Source, String>,
}

impl Resolution {
    pub fn complete(&self) -> bool {
        self.failed_people.is_empty() && self.failed_sources.is_empty()
    }
}

/// A look-up that stops the whole run: every other would fail the same way (credentials, a
/// missing scope, the API unreachable).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ResolveError {
    pub what: String,
    #[source]
    pub source: CallError,
}

/// The minimum number of calls `wanted` takes, by API (batch_get_id, chat members,
/// department users), counting one page per source: the pages beyond depend on their sizes.
pub fn minimum_calls(wanted: &Wanted) -> [usize; 3] {
    let mut batch = 0;
    for t in UserIdType::ALL {
        let (emails, mobiles) = split_people(wanted, t);
        batch += emails
            .len()
            .div_ceil(MAX_EMAILS_PER_CALL)
            .max(mobiles.len().div_ceil(MAX_MOBILES_PER_CALL));
    }
    let chats: usize = wanted
        .sources
        .iter()
        .filter(|(s, _)| matches!(s, Source::MembersOf(_)))
        .map(|(_, types)| types.len())
        .sum();
    let departments = wanted
        .sources
        .keys()
        .filter(|s| matches!(s, Source::Department(_)))
        .count();
    [batch, chats, departments]
}

/// The emails and the mobiles wanted with ids of `id_type`, each as written, sorted.
fn split_people(wanted: &Wanted, id_type: UserIdType) -> (Vec<String>, Vec<String>) {
    let (mut emails, mut mobiles) = (Vec::new(), Vec::new());
    for (person, types) in &wanted.people {
        if !types.contains(&id_type) {
            continue;
        }
        let w = Written::of(person);
        if w.problem().is_some() {
            continue;
        }
        match w {
            Written::Email(_) => emails.push(person.clone()),
            Written::Mobile(_) => mobiles.push(person.clone()),
            Written::Id(_) => {}
        }
    }
    (emails, mobiles)
}

/// Looks up everything `wanted` names.
pub async fn resolve(directory: &Directory, wanted: &Wanted) -> Result<Resolution, ResolveError> {
    let people = async {
        let mut calls = Vec::new();
        for t in UserIdType::ALL {
            let (emails, mobiles) = split_people(wanted, t);
            let n = emails
                .len()
                .div_ceil(MAX_EMAILS_PER_CALL)
                .max(mobiles.len().div_ceil(MAX_MOBILES_PER_CALL));
            for i in 0..n {
                let chunk = |v: &[String], size: usize| -> Vec<String> {
                    v.iter().skip(i * size).take(size).cloned().collect()
                };
                let e = chunk(&emails, MAX_EMAILS_PER_CALL);
                let m = chunk(&mobiles, MAX_MOBILES_PER_CALL);
                calls.push(async move {
                    let answer = directory.batch_get_id(t, &e, &m).await;
                    (t, e, m, answer)
                });
            }
        }
        join_all(calls).await
    };
    let chats = async {
        let calls = wanted.sources.iter().flat_map(|(s, types)| {
            types.iter().filter_map(move |t| match s {
                Source::MembersOf(chat) => {
                    Some(async move { (s, *t, chat_members(directory, chat, *t).await) })
                }
                Source::Department(_) => None,
            })
        });
        join_all(calls).await
    };
    let departments = async {
        let calls = wanted.sources.iter().filter_map(|(s, types)| match s {
            Source::Department(d) => {
                Some(async move { (s, types, department_users(directory, d).await) })
            }
            Source::MembersOf(_) => None,
        });
        join_all(calls).await
    };
    let (people, chats, departments) = tokio::join!(people, chats, departments);

    let mut out = Resolution::default();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (t, emails, mobiles, answer) in people {
        let list = answer.map_err(|source| ResolveError {
            what: format!(
                "looking up {} email(s) and {} mobile(s) ({t})",
                emails.len(),
                mobiles.len()
            ),
            source,
        })?;
        let mut found: BTreeMap<&str, &str> = BTreeMap::new();
        for entry in &list {
            let asked = entry.email.as_deref().or(entry.mobile.as_deref());
            if let (Some(asked), Some(id)) = (asked, entry.user_id.as_deref()) {
                found.insert(asked, id);
            }
        }
        for person in emails.iter().chain(&mobiles) {
            match found.get(person.as_str()) {
                Some(id) => {
                    out.lock
                        .people
                        .entry(person.clone())
                        .or_default()
                        .insert(t, (*id).to_owned());
                }
                None => {
                    out.failed_people
                        .insert(person.clone(), NOT_FOUND.to_owned());
                }
            }
        }
    }
    for (source, t, answer) in chats {
        match answer {
            Ok(members) => {
                let mut ids = Vec::with_capacity(members.len());
                for (id, name) in members {
                    if !name.is_empty() {
                        names.insert(id.clone(), name);
                    }
                    ids.push(id);
                }
                ids.sort_unstable();
                ids.dedup();
                out.lock.set_source(source, t, ids);
            }
            Err(e) => match per_source(&e) {
                Some(why) => {
                    out.failed_sources.insert(source.clone(), why);
                }
                None => {
                    return Err(ResolveError {
                        what: format!("listing `{source}` ({t})"),
                        source: e,
                    });
                }
            },
        }
    }
    for (source, types, answer) in departments {
        let users = match answer {
            Ok(users) => users,
            Err(e) => match per_source(&e) {
                Some(why) => {
                    out.failed_sources.insert(source.clone(), why);
                    continue;
                }
                None => {
                    return Err(ResolveError {
                        what: format!("listing `{source}`"),
                        source: e,
                    });
                }
            },
        };
        for t in types {
            let mut ids = Vec::with_capacity(users.len());
            let mut complete = true;
            for u in &users {
                let id = match t {
                    UserIdType::OpenId => u.open_id.as_ref(),
                    UserIdType::UnionId => u.union_id.as_ref(),
                    UserIdType::UserId => u.user_id.as_ref(),
                };
                match id {
                    Some(id) => ids.push(id.clone()),
                    None => {
                        complete = false;
                        out.failed_sources.insert(
                            source.clone(),
                            format!(
                                "the directory lists its people without their {t}s (for user_id: the app needs the scope contact:user.employee_id:readonly)"
                            ),
                        );
                    }
                }
                if let (Some(id), Some(label)) = (id, u.email.as_ref().or(u.name.as_ref())) {
                    names.insert(id.clone(), label.clone());
                }
            }
            // A listing without some people's ids is no list of its members: `watch` would
            // reconcile with it and take the buttons of everyone it leaves out.
            if !complete {
                continue;
            }
            ids.sort_unstable();
            ids.dedup();
            out.lock.set_source(source, *t, ids);
        }
    }
    // A person both looked up and listed reads as the email or mobile they were looked up by.
    let looked_up: BTreeSet<&String> = out.lock.people.values().flat_map(|m| m.values()).collect();
    let listed: BTreeSet<&String> = out
        .lock
        .sources()
        .flat_map(|(_, by_type)| by_type.values().flatten())
        .collect();
    out.lock.names = names
        .into_iter()
        .filter(|(id, _)| listed.contains(id) && !looked_up.contains(id))
        .collect();
    Ok(out)
}

/// Why a source cannot be listed, when the answer is about that source alone (the bot is not
/// in the chat, the department is outside the contact scope) rather than the whole run.
fn per_source(e: &CallError) -> Option<String> {
    match e.code()? {
        CODE_OPERATOR_NOT_IN_CHAT => Some(
            "the bot is not in this chat, so it cannot list its members (code 232011): add the bot"
                .to_owned(),
        ),
        CODE_CHAT_ID_INVALID => {
            Some("Feishu says this chat id is invalid (code 232006)".to_owned())
        }
        CODE_NO_DEPT_AUTHORITY => Some(
            "no such department, or it is outside the app's contact scope (code 40004)".to_owned(),
        ),
        _ => None,
    }
}

/// Every member of a chat (id and name), following `has_more`.
async fn chat_members(
    directory: &Directory,
    chat: &str,
    t: UserIdType,
) -> Result<Vec<(String, String)>, CallError> {
    let mut out = Vec::new();
    let mut pages = Pages::default();
    while let Some(token) = pages.next() {
        let page = directory.chat_members(chat, t, token.as_deref()).await?;
        out.extend(page.items.into_iter().map(|m| (m.member_id, m.name)));
        pages.answered(page.has_more, page.page_token)?;
    }
    Ok(out)
}

/// Every direct member of a department, following `has_more`.
async fn department_users(
    directory: &Directory,
    department: &str,
) -> Result<Vec<crate::feishu::wire::DepartmentUser>, CallError> {
    let mut out = Vec::new();
    let mut pages = Pages::default();
    while let Some(token) = pages.next() {
        let page = directory
            .department_users(department, token.as_deref())
            .await?;
        out.extend(page.items);
        pages.answered(page.has_more, page.page_token)?;
    }
    Ok(out)
}

/// At most this many pages of one listing (2,000,000 chat members, 1,000,000 department
/// users): a listing whose every page gives a new token never ends otherwise.
const MAX_PAGES: usize = 20_000;

/// Following a listing's pages: the token to ask with next, until the answer says there is no
/// more. A listing is whole only when its last page says so: an answer that says there is more
/// and gives no way to it (no token, or one already followed) fails the listing rather than
/// ending it early, for a short list taken as whole takes the buttons of whoever it leaves out.
#[derive(Default)]
struct Pages {
    /// Pages asked for.
    asked: usize,
    /// The token to ask for the next page with (`None`: the first page).
    token: Option<String>,
    /// Every token followed.
    seen: BTreeSet<String>,
    /// The last page said there is no more.
    done: bool,
}

impl Pages {
    /// The page token to ask with next (`Some(None)`: the first page), or `None` at the end.
    fn next(&mut self) -> Option<Option<String>> {
        if self.done {
            return None;
        }
        self.asked += 1;
        Some(self.token.clone())
    }

    /// Takes in a page's `has_more` and `page_token`.
    fn answered(&mut self, has_more: bool, token: Option<String>) -> Result<(), CallError> {
        let page = self.asked;
        let broken = |why: String| CallError::Api {
            code: crate::feishu::client::CODE_NOT_API_JSON,
            msg: format!("page {page} of the listing {why}, so the listing cannot be read whole"),
            status: 200,
        };
        if !has_more {
            self.done = true;
            return Ok(());
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(broken(
                "says there is more but gives no page_token".to_owned(),
            ));
        };
        if !self.seen.insert(token.clone()) {
            return Err(broken(
                "says there is more but gives the page_token of a page already read".to_owned(),
            ));
        }
        if page >= MAX_PAGES {
            return Err(broken(format!(
                "still says there is more after {MAX_PAGES} pages"
            )));
        }
        self.token = Some(token);
        Ok(())
    }
}
