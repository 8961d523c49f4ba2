//! The lock, `feedbuttons.lock` beside the config: the ids behind every email, mobile and
//! directory source the config names, per id type, as `feedbuttons resolve` last found them.
//!
//! It is YAML, like the config, written by this module alone: sorted at every level, one person
//! per line and one member id per line, so that a pull request's diff shows exactly who came and
//! went, and the same directory always gives the same bytes. Every command but `resolve` reads
//! it and nothing else, so plans need no credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::people::Source;
use crate::feishu::wire::UserIdType;

/// The lock's file name, in the config directory. Not `*.yaml`, so the config loader skips it.
pub const LOCK_FILE: &str = "feedbuttons.lock";
/// The only lock format this build reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// Ids of one person (or one source's people) by id type.
pub type IdsByType<T> = BTreeMap<UserIdType, T>;

/// What the lock holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The app whose credentials `resolve` looked the ids up with. An open_id is per app: the
    /// same person has another under another app, so a lock's open_ids are only good for it.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Email or mobile, as the config writes it -> its id of each type a chat uses.
    #[serde(default)]
    pub people: BTreeMap<String, IdsByType<String>>,
    /// Chat id -> its members' ids of each type, sorted.
    #[serde(default)]
    pub members_of: BTreeMap<String, IdsByType<Vec<String>>>,
    /// Open department id -> its direct members' ids of each type, sorted.
    #[serde(default)]
    pub departments: BTreeMap<String, IdsByType<Vec<String>>>,
    /// Id -> the name the directory gave, for ids that no email or mobile names.
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFile {
    version: u32,
    #[serde(flatten)]
    lock: Lock,
}

/// How old a save's temporary file must be before another save takes it for one left by a run
/// that was killed mid-write (a save takes milliseconds; a concurrent one is never this old).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes temporary files of saves killed mid-write (`.feedbuttons.lock.*.tmp`), which `git add
/// -A` would otherwise pick up. Best effort: what cannot be read or removed is left.
fn sweep_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMPORARY);
        if name.starts_with(prefix) && name.ends_with(".tmp") && stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A lock that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a lock this feedbuttons can read: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Lock {
    /// The lock of the config directory `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Lock>, LockError> {
        let path = dir.join(LOCK_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LockError::Read { path, source }),
        };
        Lock::parse(&text)
            .map(Some)
            .map_err(|reason| LockError::Invalid { path, reason })
    }

    /// Reads a lock's text.
    pub fn parse(text: &str) -> Result<Lock, String> {
        let file: LockFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if file.version != LOCK_VERSION {
            return Err(format!(
                "version {} (this feedbuttons reads version {LOCK_VERSION})",
                file.version
            ));
        }
        file.lock.check()?;
        Ok(file.lock)
    }

    /// Refuses what `resolve` never writes (a hand edit, a merge gone wrong, a directory answer
    /// that `resolve` and `watch` refuse too): an id that is not one of the type it is filed
    /// under (say, union ids under `open_id`), an id listed twice for one source, an `app_id`
    /// that is no app id. Every id reaches plans and `apply` as is, so none is taken on trust.
    pub fn check(&self) -> Result<(), String> {
        let bad = |what: String, t: UserIdType, id: &str| {
            crate::config::validate::user_id_problem(id, t)
                .map(|why| format!("{what}: {} is not a valid {t} ({why})", quoted(id)))
        };
        if let Some(app) = &self.app_id
            && (app.is_empty() || app.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(format!("app_id {} is not an app id", quoted(app)));
        }
        for (person, ids) in &self.people {
            for (t, id) in ids {
                if let Some(e) = bad(format!("people {}", quoted(person)), *t, id) {
                    return Err(e);
                }
            }
        }
        for (source, by_type) in self.sources() {
            for (t, ids) in by_type {
                let mut seen = BTreeSet::new();
                for id in ids {
                    if let Some(e) = bad(format!("`{source}`"), *t, id) {
                        return Err(e);
                    }
                    if !seen.insert(id) {
                        return Err(format!("`{source}` lists {t} {} twice", quoted(id)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the lock to `dir` through a temporary file of its own (two `resolve`s at once
    /// each rename a whole lock into place), flushed to disk first: a reader, or a run killed
    /// at any instant, sees the old lock or the new one, never half of one.
    pub fn save(&self, dir: &Path) -> Result<(), LockError> {
        use std::io::Write as _;
        let path = dir.join(LOCK_FILE);
        let prefix = format!(".{LOCK_FILE}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // As `std::fs::write` creates a file (the umask applies), not only for its owner.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let written = builder.tempfile_in(dir).and_then(|mut temp| {
            temp.write_all(self.to_yaml().as_bytes())?;
            temp.as_file().sync_all()?;
            // On failure the temporary file is dropped, and with it removed.
            temp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        });
        written.map_err(|source| LockError::Write { path, source })?;
        sweep_stale_temporaries(dir, &prefix);
        Ok(())
    }

    /// The ids of a source, of each type.
    pub fn source(&self, source: &Source) -> Option<&IdsByType<Vec<String>>> {
        match source {
            Source::MembersOf(id) => self.members_of.get(id),
            Source::Department(id) => self.departments.get(id),
        }
    }

    /// Every source the lock holds.
    pub fn sources(&self) -> impl Iterator<Item = (Source, &IdsByType<Vec<String>>)> {
        let members = self
            .members_of
            .iter()
            .map(|(id, ids)| (Source::MembersOf(id.clone()), ids));
        let departments = self
            .departments
            .iter()
            .map(|(id, ids)| (Source::Department(id.clone()), ids));
        members.chain(departments)
    }

    /// Sets a source's ids of one type.
    pub fn set_source(&mut self, source: &Source, id_type: UserIdType, ids: Vec<String>) {
        let map = match source {
            Source::MembersOf(id) => self.members_of.entry(id.clone()).or_default(),
            Source::Department(id) => self.departments.entry(id.clone()).or_default(),
        };
        map.insert(id_type, ids);
    }

    /// Id -> how a person reads it: the email it was looked up by (else the mobile), else the
    /// name the directory gave.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for (person, ids) in &self.people {
            for id in ids.values() {
                let better = match out.get(id) {
                    None => true,
                    // An email reads better than a mobile.
                    Some(old) => old.starts_with('+') && !person.starts_with('+'),
                };
                if better {
                    out.insert(id.clone(), printable(person));
                }
            }
        }
        for (id, name) in &self.names {
            if !name.is_empty() {
                out.entry(id.clone()).or_insert_with(|| printable(name));
            }
        }
        out
    }

    /// Whether any id in the lock is an open_id (the one id type that differs between apps).
    pub fn holds_open_ids(&self) -> bool {
        self.people
            .values()
            .any(|ids| ids.contains_key(&UserIdType::OpenId))
            || self.sources().any(|(_, by_type)| {
                by_type
                    .get(&UserIdType::OpenId)
                    .is_some_and(|ids| !ids.is_empty())
            })
    }

    /// The app this lock's open_ids belong to, when it holds any and says which.
    pub fn open_id_app(&self) -> Option<&str> {
        self.app_id.as_deref().filter(|_| self.holds_open_ids())
    }

    /// The lock as its file holds it: sorted, one person or one member per line.
    pub fn to_yaml(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "# Written by `feedbuttons resolve`: the ids behind the emails, mobiles, chats\n\
             # (members_of) and departments the config names. Commit it with the config; do not\n\
             # edit it. `feedbuttons resolve --check` says when it no longer matches the directory.\n",
        );
        let _ = writeln!(s, "version: {LOCK_VERSION}");
        if let Some(app) = &self.app_id {
            let _ = writeln!(s, "app_id: {}", scalar(app));
        }
        if self.people.is_empty() {
            s.push_str("people: {}\n");
        } else {
            s.push_str("people:\n");
            for (person, ids) in &self.people {
                let fields: Vec<String> = ids
                    .iter()
                    .map(|(t, id)| format!("{t}: {}", scalar(id)))
                    .collect();
                let _ = writeln!(s, "  {}: {{{}}}", scalar(person), fields.join(", "));
            }
        }
        for (key, map) in [
            ("members_of", &self.members_of),
            ("departments", &self.departments),
        ] {
            if map.is_empty() {
                let _ = writeln!(s, "{key}: {{}}");
                continue;
            }
            let _ = writeln!(s, "{key}:");
            for (source, by_type) in map {
                let _ = writeln!(s, "  {}:", scalar(source));
                for (t, ids) in by_type {
                    if ids.is_empty() {
                        let _ = writeln!(s, "    {t}: []");
                        continue;
                    }
                    let _ = writeln!(s, "    {t}:");
                    for id in ids {
                        let _ = writeln!(s, "      - {}", scalar(id));
                    }
                }
            }
        }
        if self.names.is_empty() {
            s.push_str("names: {}\n");
        } else {
            s.push_str("names:\n");
            for (id, name) in &self.names {
                let _ = writeln!(s, "  {}: {}", scalar(id), quoted(name));
            }
        }
        s
    }

    /// What changes from `self` (the committed lock) to `new`, one line each, for people:
    /// `+ alice@example.com: open_id ou_...`, `~ members_of oc_... (open_id): +ou_3, -ou_2`.
    pub fn diff(&self, new: &Lock) -> Vec<String> {
        let labels = new.labels();
        let mut old_labels = self.labels();
        old_labels.extend(labels);
        let shown = |id: &str| match old_labels.get(id) {
            Some(l) => format!("{id} ({l})"),
            None => id.to_owned(),
        };
        let mut out = Vec::new();
        if self.app_id != new.app_id {
            let app = |a: &Option<String>| a.clone().unwrap_or_else(|| "(none)".to_owned());
            out.push(format!(
                "~ app_id: {} -> {}",
                app(&self.app_id),
                app(&new.app_id)
            ));
        }
        let people: BTreeSet<&String> = self.people.keys().chain(new.people.keys()).collect();
        for person in people {
            let ids = |l: &Lock| {
                l.people.get(person).map(|ids| {
                    ids.iter()
                        .map(|(t, id)| format!("{t} {id}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            };
            match (ids(self), ids(new)) {
                (None, Some(n)) => out.push(format!("+ {person}: {n}")),
                (Some(_), None) => out.push(format!("- {person} (no longer named by the config)")),
                (Some(o), Some(n)) if o != n => out.push(format!("~ {person}: {o} -> {n}")),
                _ => {}
            }
        }
        let sources: BTreeSet<Source> = self
            .sources()
            .chain(new.sources())
            .map(|(s, _)| s)
            .collect();
        for source in sources {
            let (old, fresh) = (self.source(&source), new.source(&source));
            match (old, fresh) {
                (Some(_), None) => {
                    out.push(format!("- {source} (no longer named by the config)"));
                    continue;
                }
                (None, None) => continue,
                _ => {}
            }
            let empty = BTreeMap::new();
            let (old, fresh) = (old.unwrap_or(&empty), fresh.unwrap_or(&empty));
            let types: BTreeSet<&UserIdType> = old.keys().chain(fresh.keys()).collect();
            for t in types {
                let o: BTreeSet<&String> = old.get(t).into_iter().flatten().collect();
                let n: BTreeSet<&String> = fresh.get(t).into_iter().flatten().collect();
                let mut parts: Vec<String> = n
                    .difference(&o)
                    .map(|id| format!("+{}", shown(id)))
                    .collect();
                parts.extend(o.difference(&n).map(|id| format!("-{}", shown(id))));
                if !old.contains_key(t) {
                    out.push(format!("+ {source} ({t}): {} people", n.len()));
                } else if !parts.is_empty() {
                    out.push(format!("~ {source} ({t}): {}", parts.join(", ")));
                }
            }
        }
        out
    }
}

/// A string as a YAML scalar: plain when it is an id or an email that YAML cannot read as
/// anything else, double-quoted (JSON's escapes are YAML's) otherwise.
fn scalar(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
        && (s.contains('_') || s.contains('@') || s.contains('-'));
    if plain { s.to_owned() } else { quoted(s) }
}

/// A label as plans, the PR comment and `state list` may print it: a directory name is anyone's
/// to set, and its control characters (a terminal's escape sequences, a line break that forges
/// a line of the plan) are shown escaped, never sent.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let mut lock = Lock::default();
        lock.people.insert(
            "alice@example.com".into(),
            [(UserIdType::OpenId, "ou_a".to_owned())].into(),
        );
        lock.people.insert(
            "+8613800000001".into(),
            [
                (UserIdType::OpenId, "ou_b".to_owned()),
                (UserIdType::UnionId, "on_b".to_owned()),
            ]
            .into(),
        );
        lock.set_source(
            &Source::MembersOf("oc_x".into()),
            UserIdType::OpenId,
            vec!["ou_a".into(), "ou_c".into()],
        );
        lock.set_source(
            &Source::Department("od-1".into()),
            UserIdType::OpenId,
            vec![],
        );
        lock.names.insert("ou_c".into(), "Carol \"C\" 陈".into());
        lock
    }

    #[test]
    fn the_file_reads_back_as_written() {
        let lock = sample();
        let text = lock.to_yaml();
        assert_eq!(Lock::parse(&text), Ok(lock.clone()), "{text}");
        assert!(text.contains("  \"+8613800000001\": {open_id: ou_b, union_id: on_b}\n"));
        assert!(text.contains("      - ou_c\n"), "{text}");
        let labels = lock.labels();
        assert_eq!(labels["ou_a"], "alice@example.com");
        assert_eq!(labels["ou_c"], "Carol \"C\" 陈");
    }

    #[test]
    fn a_diff_names_who_came_and_went() {
        let old = sample();
        let mut new = sample();
        new.set_source(
            &Source::MembersOf("oc_x".into()),
            UserIdType::OpenId,
            vec!["ou_a".into(), "ou_d".into()],
        );
        new.people.remove("alice@example.com");
        assert_eq!(
            old.diff(&new),
            vec![
                "- alice@example.com (no longer named by the config)".to_owned(),
                "~ members_of: oc_x (open_id): +ou_d, -ou_c (Carol \"C\" 陈)".to_owned(),
            ]
        );
        assert!(old.diff(&old).is_empty());
    }
}
