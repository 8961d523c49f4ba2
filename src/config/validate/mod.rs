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
use crate::id::Id;
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
    memo: Option<(&mut Memo, Option<&BTreeSet<String>>)>,
) -> DesiredState {
    validate_in(files, unparsed, people, report, memo, None)
}

/// [`validate_with`], checking the chats in `parts` runs side by side (by default one per
/// core for a large config, else one).
fn validate_in(
    files: &[(FileId, &RawFile)],
    unparsed: &[Unparsed],
    people: &People,
    report: &mut Report,
    mut memo: Option<(&mut Memo, Option<&BTreeSet<String>>)>,
    parts: Option<usize>,
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
    // The chats are checked in contiguous runs, one per core for a large config; each run's
    // findings are taken in chat order, so the result is the one a single pass gives.
    let chats: Vec<ChatPlaces> = chats.into_iter().collect();
    let runs = split_runs(&chats, parts);
    let interned = &v.interned;
    let checked: Vec<Run> = if runs.len() <= 1 {
        vec![check_run(&chats, &defs, &blocking, interned.clone())]
    } else {
        let pieces: Vec<&[ChatPlaces]> = runs.iter().map(|r| &chats[r.clone()]).collect();
        crate::sync::in_order(pieces, "validate", |run| {
            check_run(run, &defs, &blocking, interned.clone())
        })
    };
    let mut used_sets: Vec<&str> = Vec::new();
    let mut targets: Vec<Vec<(Target, Arc<ButtonList>)>> = Vec::with_capacity(checked.len());
    for run in checked {
        for (list, shared) in run.interned {
            v.interned.entry(list).or_insert(shared);
        }
        v.waiting.extend(run.waiting);
        let mut diagnostics = run.diagnostics.into_iter();
        let mut sets = run.used_sets.iter();
        for chat in run.chats {
            if let Some(name) = chat.name {
                desired.chat_names.insert(chat.chat_id.to_owned(), name);
            }
            let found = diagnostics.by_ref().take(chat.diagnostics);
            let used = sets.by_ref().take(chat.used_sets);
            match memo.as_mut() {
                Some((memo, _)) => {
                    let mut used: Vec<String> = used.map(|s| (*s).to_owned()).collect();
                    used.sort_unstable();
                    used.dedup();
                    let facts = ChatFacts {
                        diagnostics: found.collect(),
                        used_sets: used,
                    };
                    memo.chats.insert(chat.chat_id.to_owned(), facts);
                }
                None => v.report.diagnostics.extend(found),
            }
        }
        used_sets.extend(run.used_sets);
        targets.push(run.targets);
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

    // One vector, sized, which the map takes as it is (it sorts it: a run, already sorted).
    let mut all = Vec::with_capacity(targets.iter().map(Vec::len).sum());
    for run in targets {
        all.extend(run);
    }
    desired.targets = all.into_iter().collect();
    desired
}

/// The places that declare one chat.
type ChatPlaces<'a> = (&'a str, Vec<(FileId, &'a RawFile, &'a RawChat)>);

/// What checking a run of chats found, in chat order.
struct Run<'a> {
    chats: Vec<CheckedChat<'a>>,
    /// Every chat's diagnostics, one chat after another (`CheckedChat::diagnostics` each).
    diagnostics: Vec<Diagnostic>,
    /// The user sets the chats use, one chat after another.
    used_sets: Vec<&'a str>,
    /// The chats' targets, sorted.
    targets: Vec<(Target, Arc<ButtonList>)>,
    waiting: Vec<Waiting>,
    interned: HashMap<ButtonList, Arc<ButtonList>>,
}

/// One chat of a [`Run`]: its name and how many diagnostics and used sets are its.
struct CheckedChat<'a> {
    chat_id: &'a str,
    name: Option<String>,
    diagnostics: usize,
    used_sets: usize,
}

/// Checks `chats` in order, with a report and interned lists of its own.
fn check_run<'a>(
    chats: &[ChatPlaces<'a>],
    defs: &Defs<'a>,
    blocking: &[(FileId, Option<&str>, usize)],
    interned: HashMap<ButtonList, Arc<ButtonList>>,
) -> Run<'a> {
    let mut report = Report::default();
    let mut v = Validator {
        report: &mut report,
        interned,
        blocking,
        waiting: Vec::new(),
    };
    let mut used_sets: Vec<&'a str> = Vec::new();
    // Sized up front (a user set counts one): growing half a million targets by doubling
    // copies them all again.
    let mut targets: Vec<(Target, Arc<ButtonList>)> =
        Vec::with_capacity(chats.iter().map(|(_, places)| chat_weight(places)).sum());
    let mut checked = Vec::with_capacity(chats.len());
    for (chat_id, places) in chats {
        let marks = (v.report.diagnostics.len(), used_sets.len(), targets.len());
        let name = v.chat(chat_id, places, defs, &mut used_sets, &mut targets);
        // Chats come in order: sorting each chat's targets sorts them all.
        targets[marks.2..].sort_unstable_by(|a, b| a.0.audience.cmp(&b.0.audience));
        checked.push(CheckedChat {
            chat_id,
            name: name.map(|(_, n)| n.value.clone()),
            diagnostics: v.report.diagnostics.len() - marks.0,
            used_sets: used_sets.len() - marks.1,
        });
    }
    let (interned, waiting) = (v.interned, v.waiting);
    Run {
        chats: checked,
        diagnostics: report.diagnostics,
        used_sets,
        targets,
        waiting,
        interned,
    }
}

/// Below this many users and sets named in all, the chats are checked on one thread.
const PARALLEL_MIN_WEIGHT: usize = 20_000;

/// The work of checking a chat declared at `places`: its assignments, and the users and sets
/// they name.
fn chat_weight(places: &[(FileId, &RawFile, &RawChat)]) -> usize {
    places
        .iter()
        .flat_map(|(_, _, chat)| &chat.assign)
        .map(|a| 1 + a.users.len() + a.user_sets.len())
        .sum()
}

/// Contiguous runs of `chats` of about equal work: one per core for a large config (`parts`
/// forces a number), a single run for a small one.
fn split_runs(chats: &[ChatPlaces], parts: Option<usize>) -> Vec<std::ops::Range<usize>> {
    let weights: Vec<usize> = chats
        .iter()
        .map(|(_, places)| chat_weight(places))
        .collect();
    let parts = parts.unwrap_or_else(|| {
        if weights.iter().sum::<usize>() < PARALLEL_MIN_WEIGHT {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    });
    crate::sync::runs_by_weight(&weights, parts)
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
    ids: &'a [At<Id>],
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with findings of every kind a chat can have, spread over several files, one
    /// of which does not parse.
    fn files() -> Vec<String> {
        let mut files = vec![
            "version: 1\nbuttons:\n  ack: {text: Ack, url: https://a.example.com}\n  \
             page: {text: Page, url: https://b.example.com}\nuser_sets:\n  oncall: [ou_s1, ou_s2]\n  \
             unused: [ou_s3]\n"
                .to_owned(),
            "version: 1\n# defines gone1 and missing1, once it parses\nchats: [\n".to_owned(),
        ];
        for f in 0..3 {
            let mut text = "version: 1\nchats:\n".to_owned();
            for c in 0..7 {
                let chat = f * 7 + c;
                text.push_str(&format!(
                    "  - chat_id: oc_{chat:04}\n    name: Chat {}\n    assign:\n      \
                     - buttons: [ack]\n        users: [ou_{chat}a, ou_{chat}b, ou_{chat}a]\n      \
                     - buttons: [page, missing{}]\n        users: [ou_{chat}c]\n      \
                     - buttons: [ack, page]\n        user_sets: [oncall, gone{}]\n        users: [ou_{chat}b]\n",
                    chat % 4,
                    chat % 2,
                    chat % 3,
                ));
            }
            // The same chat in every file: its findings span files.
            text.push_str(&format!(
                "  - chat_id: oc_9999\n    name: Shared {f}\n    assign:\n      \
                 - buttons: [ack]\n        users: [ou_x, ou_{f}]\n",
            ));
            files.push(text);
        }
        files
    }

    fn check(parts: usize, memo: Option<&mut Memo>) -> (String, DesiredState) {
        let mut report = Report::default();
        let texts = files();
        let mut raws = Vec::new();
        let mut unparsed = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match crate::config::parse(i, text, &mut report) {
                Some(node) => raws.push((i, super::super::raw::decode_file(i, &node, &mut report))),
                None => unparsed.push(Unparsed {
                    file: i,
                    text: Some(text),
                }),
            }
        }
        let files: Vec<(FileId, &RawFile)> = raws.iter().map(|(i, r)| (*i, r)).collect();
        let people = People::default();
        let memo = memo.map(|m| (m, None));
        let desired = validate_in(&files, &unparsed, &people, &mut report, memo, Some(parts));
        (format!("{:#?}", report.diagnostics), desired)
    }

    #[test]
    fn chats_checked_side_by_side_find_what_one_pass_finds() {
        let (one, desired) = check(1, None);
        for code in [
            "duplicate-assignment",
            "duplicate-user",
            "undefined-button",
            "undefined-user-set",
            "chat-name-conflict",
            "wait on this error",
        ] {
            assert!(one.contains(code), "{code}: {one}");
        }
        assert!(!desired.targets.is_empty());
        for parts in [2, 3, 5, 40] {
            let (found, d) = check(parts, None);
            assert_eq!(found, one, "{parts} runs");
            assert_eq!(d, desired, "{parts} runs");
        }
        let mut memo_one = Memo::default();
        let (one, desired) = check(1, Some(&mut memo_one));
        for parts in [2, 3, 40] {
            let mut memo = Memo::default();
            let (found, d) = check(parts, Some(&mut memo));
            assert_eq!(found, one, "{parts} runs, with a memo");
            assert_eq!(d, desired, "{parts} runs, with a memo");
            assert_eq!(
                format!("{:?}", memo.chats),
                format!("{:?}", memo_one.chats),
                "{parts} runs"
            );
        }
    }

    #[test]
    fn runs_split_the_work_evenly_and_in_order() {
        let texts = files();
        let mut report = Report::default();
        let mut raws: Vec<RawFile> = Vec::new();
        for (i, text) in texts[2..].iter().enumerate() {
            if let Some(node) = crate::config::parse(i, text, &mut report) {
                raws.push(super::super::raw::decode_file(i, &node, &mut report));
            }
        }
        let chats: Vec<ChatPlaces> = raws
            .iter()
            .flat_map(|r| &r.chats)
            .map(|c| {
                (
                    c.chat_id.as_ref().map_or("", |id| id.value.as_str()),
                    Vec::new(),
                )
            })
            .collect();
        for parts in [1, 2, 3, 7, 100] {
            let runs = split_runs(&chats, Some(parts));
            assert_eq!(runs.len(), parts.min(chats.len()));
            assert_eq!(runs.first().map(|r| r.start), Some(0));
            assert_eq!(runs.last().map(|r| r.end), Some(chats.len()));
            assert!(runs.windows(2).all(|w| w[0].end == w[1].start));
        }
        assert_eq!(
            split_runs(&chats, None),
            vec![0..chats.len()],
            "small: one run"
        );
    }
}
