//! People in a config: where a user id is allowed, a user may be written as an email or a
//! mobile number, and a user set may draw people from the directory (`members_of: oc_...`,
//! `department: od-...`). Loading never calls the API: these are read from the lock
//! (`feedbuttons.lock`, see `crate::lock`) that `feedbuttons resolve` writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::diag::Diagnostic;
use crate::feishu::wire::UserIdType;
use crate::lock::Lock;

/// How a user entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written<'a> {
    /// An id of the chat's `user_id_type`.
    Id(&'a str),
    /// Anything with an `@`: looked up by batch_get_id.
    Email(&'a str),
    /// `+` and digits: looked up by batch_get_id.
    Mobile(&'a str),
}

impl<'a> Written<'a> {
    /// Emails hold an `@`, mobiles start with `+`; everything else is an id.
    pub fn of(s: &'a str) -> Written<'a> {
        if s.contains('@') {
            Written::Email(s)
        } else if s.starts_with('+') {
            Written::Mobile(s)
        } else {
            Written::Id(s)
        }
    }

    /// Why an email or a mobile cannot be looked up as written, if it cannot.
    pub fn problem(self) -> Option<&'static str> {
        match self {
            Written::Id(_) => None,
            Written::Email(s) => {
                let (local, domain) = s.split_once('@')?;
                let ok = !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !s.chars().any(|c| c.is_whitespace() || c.is_control());
                (!ok).then_some("an email is `name@domain.tld`, with no spaces")
            }
            Written::Mobile(s) => {
                let digits = &s[1..];
                let ok =
                    (6..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
                (!ok).then_some(
                    "a mobile is `+`, the country code and the number, digits only (`+8613800000000`)",
                )
            }
        }
    }
}

/// A set of people the directory gives: a chat's members or a department's direct members.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `members_of: oc_...`: the people in a chat (bots are never listed).
    MembersOf(String),
    /// `department: od-...`: the people directly in a department (an open department id).
    Department(String),
}

impl Source {
    /// The YAML key that writes it.
    pub fn key(&self) -> &'static str {
        match self {
            Source::MembersOf(_) => "members_of",
            Source::Department(_) => "department",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Source::MembersOf(id) | Source::Department(id) => id,
        }
    }

    /// Why the id cannot be what the source names, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        let id = self.id();
        let shape = |prefix: &str| {
            id.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty()
                    && id.len() <= 64
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        };
        match self {
            Source::MembersOf(_) if !shape("oc_") => {
                Some("`members_of` takes a chat id: `oc_` and letters, digits, `_` or `-`")
            }
            // `0`, the root, lists the people in no department: a valid, if odd, source.
            Source::Department(_) if !(shape("od-") || id == "0") => Some(
                "`department` takes an open department id: `od-` and letters, digits, `_` or `-`",
            ),
            _ => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key(), self.id())
    }
}

/// What the config's people resolve to: the lock, read. While `resolve` looks them up, it also
/// notes what the config asks for, and why a look-up found nobody.
#[derive(Debug, Default)]
pub struct People {
    lock: Option<Lock>,
    /// What validation asked for, when noting (`resolve`).
    asked: Option<Mutex<Wanted>>,
    /// Emails and mobiles the directory did not resolve, with why.
    failed_people: BTreeMap<String, String>,
    /// Sources the directory would not list, with why.
    failed_sources: BTreeMap<Source, String>,
}

/// Everything a config asks the directory for: each email and mobile with the id types its
/// chats use, and each source with its id types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub people: BTreeMap<String, BTreeSet<UserIdType>>,
    pub sources: BTreeMap<Source, BTreeSet<UserIdType>>,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.people.is_empty() && self.sources.is_empty()
    }
}

/// Why a person or a source has no ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing<'a> {
    /// There is no lock at all.
    NoLock,
    /// The lock has no entry for it (or none of this id type).
    NotInLock,
    /// The directory was asked and gave nothing, for this reason.
    NotFound(&'a str),
}

impl Missing<'_> {
    /// The label under the entry.
    pub fn label(self) -> &'static str {
        match self {
            Missing::NoLock | Missing::NotInLock => "not in feedbuttons.lock",
            Missing::NotFound(_) => "not found in the directory",
        }
    }
}

impl People {
    pub fn new(lock: Option<Lock>) -> People {
        People {
            lock,
            ..People::default()
        }
    }

    /// People read from `lock` that note what is asked of them, and answer for the people
    /// and sources the directory did not resolve with why.
    pub fn noting(
        lock: Lock,
        failed_people: BTreeMap<String, String>,
        failed_sources: BTreeMap<Source, String>,
    ) -> People {
        People {
            lock: Some(lock),
            asked: Some(Mutex::new(Wanted::default())),
            failed_people,
            failed_sources,
        }
    }

    /// What validation asked for (empty unless made by [`People::noting`]).
    pub fn asked(&self) -> Wanted {
        self.asked
            .as_ref()
            .map(|a| crate::sync::guard(a).clone())
            .unwrap_or_default()
    }

    pub fn lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// The id of `person` (an email or a mobile as written) of `id_type`.
    pub fn id(&self, person: &str, id_type: UserIdType) -> Result<&str, Missing<'_>> {
        if let Some(asked) = &self.asked {
            let mut asked = crate::sync::guard(asked);
            asked
                .people
                .entry(person.to_owned())
                .or_default()
                .insert(id_type);
        }
        if let Some(why) = self.failed_people.get(person) {
            return Err(Missing::NotFound(why));
        }
        let lock = self.lock.as_ref().ok_or(Missing::NoLock)?;
        lock.people
            .get(person)
            .and_then(|ids| ids.get(&id_type))
            .map(String::as_str)
            .ok_or(Missing::NotInLock)
    }

    /// The ids of `source`'s people of `id_type`, in the lock's order (sorted).
    pub fn members(&self, source: &Source, id_type: UserIdType) -> Result<&[String], Missing<'_>> {
        if let Some(asked) = &self.asked {
            let mut asked = crate::sync::guard(asked);
            asked
                .sources
                .entry(source.clone())
                .or_default()
                .insert(id_type);
        }
        if let Some(why) = self.failed_sources.get(source) {
            return Err(Missing::NotFound(why));
        }
        let lock = self.lock.as_ref().ok_or(Missing::NoLock)?;
        lock.source(source)
            .and_then(|ids| ids.get(&id_type))
            .map(Vec::as_slice)
            .ok_or(Missing::NotInLock)
    }

    /// How plans show each id the lock knows: the email or mobile it was looked up by, or the
    /// name the directory gave.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.lock.as_ref().map(Lock::labels).unwrap_or_default()
    }

    /// The app the lock's open_ids belong to (see [`Lock::open_id_app`]).
    pub fn open_id_app(&self) -> Option<String> {
        self.lock.as_ref()?.open_id_app().map(str::to_owned)
    }
}

/// The error for an email or mobile the lock cannot turn into an id (or cannot be looked up
/// as written); the caller labels it.
pub fn unresolved_user(person: Written, id_type: UserIdType, missing: Missing) -> Diagnostic {
    let (what, s) = match person {
        Written::Email(s) => ("email", s),
        Written::Mobile(s) => ("mobile", s),
        Written::Id(s) => ("user", s),
    };
    if let Some(rule) = person.problem() {
        return Diagnostic::error(
            if what == "email" {
                "invalid-email"
            } else {
                "invalid-mobile"
            },
            format!("`{s}` is not a valid {what}"),
        )
        .help(rule);
    }
    let message = match missing {
        Missing::NoLock => format!(
            "{what} `{s}` has no {id_type}: the config has no {}",
            crate::lock::LOCK_FILE
        ),
        Missing::NotInLock => format!(
            "{what} `{s}` has no {id_type} in {}",
            crate::lock::LOCK_FILE
        ),
        Missing::NotFound(why) => {
            return Diagnostic::error("unresolved-user", format!("{what} `{s}`: {why}")).help(
                "check the spelling; a person who left, or is outside the app's contact scope \
                 (the app's settings: permissions, contact range), cannot be resolved",
            );
        }
    };
    Diagnostic::error("unresolved-user", message).help(RESOLVE_HELP)
}

/// The error for a directory source the lock has no ids for; the caller labels it.
pub fn unresolved_source(source: &Source, id_type: UserIdType, missing: Missing) -> Diagnostic {
    let message = match missing {
        Missing::NoLock => format!(
            "`{source}` has no {id_type}s: the config has no {}",
            crate::lock::LOCK_FILE
        ),
        Missing::NotInLock => format!("`{source}` has no {id_type}s in {}", crate::lock::LOCK_FILE),
        Missing::NotFound(why) => {
            return Diagnostic::error("unresolved-source", format!("`{source}`: {why}"));
        }
    };
    Diagnostic::error("unresolved-source", message).help(RESOLVE_HELP)
}

const RESOLVE_HELP: &str =
    "run `feedbuttons resolve` to look it up, and commit the feedbuttons.lock it writes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_told_apart_by_their_shape() {
        assert_eq!(
            Written::of("alice@example.com"),
            Written::Email("alice@example.com")
        );
        assert_eq!(
            Written::of("+8613800000000"),
            Written::Mobile("+8613800000000")
        );
        assert_eq!(Written::of("ou_1"), Written::Id("ou_1"));
        for bad in ["a@b", "@example.com", "a b@example.com", "a@@example.com"] {
            assert!(Written::of(bad).problem().is_some(), "{bad}");
        }
        for bad in ["+86 138", "+", "+12345", "+1234567890123456"] {
            assert!(Written::of(bad).problem().is_some(), "{bad}");
        }
        assert_eq!(Written::of("+14155550100").problem(), None);
        assert_eq!(Source::Department("0".into()).problem(), None);
        assert!(Source::MembersOf("od-x".into()).problem().is_some());
    }
}
