//! Stage 3 of loading: every file's raw values -> the desired state, checking the rules of
//! `format.md` that span fields, assignments and files (names, references, ids, duplicates).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::diag::{Diagnostic, FileId, Label, Report, Severity};
use super::people::{People, Source};
use super::raw::{At, RawButton, RawButtonRef, RawChat, RawFile, RawUrl, suggest};
use super::yaml::Pos;
use crate::desired::DesiredState;
use crate::feishu::wire::{self, ActionType, ButtonType, MultiUrl, Text, UserIdType, api};
use crate::target::{ButtonList, Target};

mod chat;
mod entries;
mod ids;

use ids::{CHAT_ID_PREFIX, IdProblem, describe_char, has_blank, is_invisible, list_some, shown_id};
pub use ids::{MAX_ID_CHARS, user_id_problem};

/// A file that declares nothing because it could not be read or parsed.
pub struct Unparsed<'a> {
    pub file: FileId,
    /// Its text, when it could be read (a syntax error); `None` when nothing of it is known.
    pub text: Option<&'a str>,
}

/// Checks every file together and builds the desired state (meaningful only without errors).
/// Names that no parsed file defines but an `unparsed` file may define are not reported as
/// undefined: they are shown on that file's error, as waiting on it.
pub fn validate(
    files: &[(FileId, RawFile)],
    unparsed: &[Unparsed],
    people: &People,
    report: &mut Report,
) -> DesiredState {
    let files: Vec<(FileId, &RawFile)> = files.iter().map(|(i, raw)| (*i, raw)).collect();
    validate_with(&files, unparsed, people, report, None)
}

/// What checking one chat found: kept between reloads (see `config::incremental`), so that an
/// edit re-checks only the chats it touches.
#[derive(Clone, Debug, Default)]
pub struct ChatFacts {
    /// Its diagnostics, in the order they were found.
    pub diagnostics: Vec<Diagnostic>,
    /// The user sets its assignments use.
    pub used_sets: Vec<String>,
}

/// What validation keeps between reloads of one config.
#[derive(Debug, Default)]
pub struct Memo {
    /// One shared copy of each distinct button list.
    pub interned: HashMap<ButtonList, Arc<ButtonList>>,
    /// Every chat's facts, by chat id.
    pub chats: BTreeMap<String, ChatFacts>,
}

/// [`validate`], remembering what each chat found in `memo`. With `only`, just those chats are
/// checked and built (the desired state holds only them); every other chat is taken to be as
/// `memo` remembers it, which holds when the files that declare it, and every definition, are
/// unchanged since the memo was made, and every file parsed.
pub fn validate_with(
    files: &[(FileId, &RawFile)],
    unparsed: &[Unparsed],
    people: &People,
    report: &mut Report,
    mut memo: Option<(&mut Memo, Option<&BTreeSet<String>>)>,
) -> DesiredState {
    let only = memo.as_ref().and_then(|(_, only)| *only);
    if let Some((memo, _)) = memo.as_mut() {
        match only {
            None => memo.chats.clear(),
            Some(only) => memo.chats.retain(|c, _| !only.contains(c)),
        }
    }
    // The error that keeps each unparsed file out: waiting names are shown on it.
    let blocking: Vec<(FileId, Option<&str>, usize)> = unparsed
        .iter()
        .filter_map(|u| {
            let i = report.diagnostics.iter().position(|d| {
                d.severity == Severity::Error && d.labels.first().is_some_and(|l| l.file == u.file)
            })?;
            Some((u.file, u.text, i))
        })
        .collect();
    let mut v = Validator {
        report,
        interned: memo
            .as_mut()
            .map(|(m, _)| std::mem::take(&mut m.interned))
            .unwrap_or_default(),
        blocking: &blocking,
        waiting: Vec::new(),
    };
    let defs = Defs {
        people,
        buttons: v.define_buttons(files),
        sets: v.define_sets(files),
    };
    // In the order of use, so that what each chat uses can be told apart.
    let mut used_sets: Vec<&str> = Vec::new();

    // A chat may be declared in several places: gather them so duplicates across files are found.
    let mut chats: BTreeMap<&str, Vec<(FileId, &RawFile, &RawChat)>> = BTreeMap::new();
    for (file, raw) in files {
        for chat in &raw.chats {
            let Some(id) = &chat.chat_id else { continue };
            if only.is_some_and(|only| !only.contains(&id.value)) {
                continue;
            }
            if let Some(problem) = IdProblem::of(&id.value, Some(CHAT_ID_PREFIX)) {
                v.report.push(
                    Diagnostic::error(
                        "invalid-chat-id",
                        format!(
                            "{} is not a chat id{}",
                            shown_id(&id.value),
                            problem.because()
                        ),
                    )
                    .label(
                        *file,
                        id.pos,
                        problem.rule("chat ids", Some(CHAT_ID_PREFIX)),
                    )
                    .help("copy the chat id (oc_...) from the chat's settings or the API"),
                );
                continue;
            }
            chats.entry(&id.value).or_default().push((*file, raw, chat));
        }
    }

    let mut desired = DesiredState::default();
    let mut targets: Vec<(Target, Arc<ButtonList>)> = Vec::new();
    for (chat_id, places) in &chats {
        let marks = (v.report.diagnostics.len(), used_sets.len(), targets.len());
        let name = v.chat(chat_id, places, &defs, &mut used_sets, &mut targets);
        if let Some((_, n)) = name {
            desired
                .chat_names
                .insert((*chat_id).to_owned(), n.value.clone());
        }
        // Chats come in order: sorting each chat's targets sorts them all.
        targets[marks.2..].sort_unstable_by(|a, b| a.0.audience.cmp(&b.0.audience));
        if let Some((memo, _)) = memo.as_mut() {
            let mut used: Vec<String> = used_sets[marks.1..]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            used.sort_unstable();
            used.dedup();
            let facts = ChatFacts {
                diagnostics: v.report.diagnostics.split_off(marks.0),
                used_sets: used,
            };
            memo.chats.insert((*chat_id).to_owned(), facts);
        }
    }
    // Every chat's findings in chat order, as checking them all in one go gives them.
    let mut remembered: HashSet<&str> = HashSet::new();
    if let Some((memo, _)) = memo.as_mut() {
        memo.interned = std::mem::take(&mut v.interned);
        for facts in memo.chats.values() {
            v.report
                .diagnostics
                .extend(facts.diagnostics.iter().cloned());
            remembered.extend(facts.used_sets.iter().map(String::as_str));
        }
    }
    let used_sets: HashSet<&str> = used_sets.into_iter().chain(remembered).collect();

    // A file that did not parse may be the one that uses a set: say nothing rather than
    // something false.
    let all_parsed = unparsed.is_empty();
    for (name, set) in &defs.sets {
        if all_parsed && !used_sets.contains(name) {
            v.report.push(
                Diagnostic::warning(
                    "unused-user-set",
                    format!("user set `{name}` is never used"),
                )
                .label(set.file, set.pos, "defined here")
                .help("use it in an assignment's `user_sets`, or remove it"),
            );
        }
    }

    let waiting = std::mem::take(&mut v.waiting);
    show_waiting(v.report, &blocking, waiting);

    desired.targets = targets.into_iter().collect();
    desired
}

/// A name used in a parsed file that no parsed file defines, which an unparsed file may define.
struct Waiting {
    file: FileId,
    pos: Pos,
    name: String,
    /// The unparsed files (indexes into `blocking`) whose text could hold the definition.
    on: Vec<usize>,
}

/// At most this many files' waiting names are shown on one blocking error.
const MAX_WAITING_FILES: usize = 5;

/// Puts, on each unparsed file's error, one label per file whose names wait on it.
fn show_waiting(
    report: &mut Report,
    blocking: &[(FileId, Option<&str>, usize)],
    waiting: Vec<Waiting>,
) {
    for (b, (_, _, diagnostic)) in blocking.iter().enumerate() {
        // Referencing file -> its waiting names with their places, in the order they are used.
        let mut by_file: BTreeMap<FileId, Vec<(Pos, &str)>> = BTreeMap::new();
        for w in waiting.iter().filter(|w| w.on.contains(&b)) {
            by_file.entry(w.file).or_default().push((w.pos, &w.name));
        }
        let by_file: Vec<(FileId, Pos, Vec<&str>)> = by_file
            .into_iter()
            .map(|(file, mut uses)| {
                uses.sort();
                let first = uses.first().map_or(Pos::START, |u| u.0);
                let mut names: Vec<&str> = Vec::with_capacity(uses.len());
                for (_, name) in uses {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                (file, first, names)
            })
            .collect();
        let files = by_file.len();
        let Some(d) = report.diagnostics.get_mut(*diagnostic) else {
            continue;
        };
        for (i, (file, pos, names)) in by_file.into_iter().enumerate() {
            if i == MAX_WAITING_FILES {
                break;
            }
            let verb = if names.len() == 1 { "waits" } else { "wait" };
            let mut message = format!(
                "{} {verb} on this error: no other file defines {}",
                list_some(&names, 4),
                if names.len() == 1 { "it" } else { "them" }
            );
            if i + 1 == MAX_WAITING_FILES && files > MAX_WAITING_FILES {
                message.push_str(&format!(
                    " (and names in {} more files)",
                    files - MAX_WAITING_FILES
                ));
            }
            d.labels.push(Label { file, pos, message });
        }
    }
}

/// What the config defines, which every chat's assignments name.
struct Defs<'a> {
    people: &'a People,
    buttons: HashMap<&'a str, (FileId, Pos, Option<wire::Button>)>,
    sets: BTreeMap<&'a str, SetDef<'a>>,
}

struct SetDef<'a> {
    file: FileId,
    pos: Pos,
    ids: &'a [At<String>],
    sources: &'a [At<Source>],
}

struct Validator<'r> {
    report: &'r mut Report,
    interned: HashMap<ButtonList, Arc<ButtonList>>,
    /// Unparsed files with the error that keeps each out, and their text where known.
    blocking: &'r [(FileId, Option<&'r str>, usize)],
    waiting: Vec<Waiting>,
}

impl Validator<'_> {
    /// Whether a name that no parsed file defines may be defined by a file that did not parse:
    /// then it waits on that file's error instead of being reported as undefined. A file can
    /// only define a name its text holds, so a typo is still reported at once.
    fn waits(&mut self, file: FileId, pos: Pos, name: &str) -> bool {
        let on: Vec<usize> = self
            .blocking
            .iter()
            .enumerate()
            .filter(|(_, (_, text, _))| text.is_none_or(|t| t.contains(name)))
            .map(|(i, _)| i)
            .collect();
        if on.is_empty() {
            return false;
        }
        self.waiting.push(Waiting {
            file,
            pos,
            name: name.to_owned(),
            on,
        });
        true
    }
}
