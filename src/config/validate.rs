//! Stage 3 of loading: every file's raw values -> the desired state, checking the rules of
//! `format.md` that span fields, assignments and files (names, references, ids, duplicates).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::diag::{Diagnostic, FileId, Label, Report, Severity};
use super::people::{People, Source};
use super::raw::{At, RawButton, RawButtonRef, RawFile, RawUrl, suggest};
use super::yaml::Pos;
use crate::desired::DesiredState;
use crate::feishu::wire::{self, ActionType, ButtonType, MultiUrl, Text, UserIdType, api};
use crate::target::{ButtonList, Target};

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
    let buttons = v.define_buttons(files);
    let sets = v.define_sets(files);
    // In the order of use, so that what each chat uses can be told apart.
    let mut used_sets: Vec<&str> = Vec::new();

    // A chat may be declared in several places: gather them so duplicates across files are found.
    let mut chats: BTreeMap<&str, Vec<(FileId, &RawFile, &super::raw::RawChat)>> = BTreeMap::new();
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
        let mut name: Option<(FileId, &At<String>)> = None;
        // (id type, user id) -> index into `origins`, for finding users assigned twice.
        // A fast hash: these maps see every user of the config (the ids come from the
        // config's own files, not from strangers).
        let mut seen: foldhash::HashMap<(UserIdType, &str), usize> = Default::default();
        let mut origins: Vec<Origin> = Vec::new();
        let mut twice: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
        // Users named twice within one assignment: (first place, second place) -> ids.
        let mut repeated: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
        let mut everyone: Option<usize> = None;
        let mut bad_ids: foldhash::HashSet<(UserIdType, &str)> = Default::default();
        let mut bad_sources: foldhash::HashSet<(UserIdType, &Source)> = Default::default();

        for (file, raw, chat) in places {
            if let Some(n) = &chat.name {
                match name {
                    Some((f0, n0)) if n0.value != n.value => v.report.push(
                        Diagnostic::warning(
                            "chat-name-conflict",
                            format!(
                                "chat `{chat_id}` is named both `{}` and `{}`",
                                n0.value, n.value
                            ),
                        )
                        .label(*file, n.pos, "named here")
                        .label(f0, n0.pos, "and here")
                        .help("plans show the first name; give the chat one name"),
                    ),
                    Some(_) => {}
                    None => name = Some((*file, n)),
                }
            }
            let id_type = chat
                .user_id_type
                .as_ref()
                .or(raw.user_id_type.as_ref())
                .map_or(UserIdType::OpenId, |t| t.value);

            for a in &chat.assign {
                let list = a
                    .buttons
                    .as_ref()
                    .and_then(|b| v.button_list(*file, b, &buttons));
                let is_everyone = a.everyone.as_ref().is_some_and(|e| e.value);
                if is_everyone && (!a.users.is_empty() || !a.user_sets.is_empty()) {
                    let pos = a.everyone.as_ref().map_or(a.pos, |e| e.pos);
                    v.report.push(
                        Diagnostic::error(
                            "everyone-with-users",
                            "an assignment cannot be for `everyone` and for users at once",
                        )
                        .label(*file, pos, "the whole chat")
                        .help("split it into two assignments: one with `everyone: true`, one with the users"),
                    );
                    continue;
                }
                if !is_everyone && a.users.is_empty() && a.user_sets.is_empty() && !a.incomplete {
                    v.report.push(
                        Diagnostic::error("assignment-no-audience", "an assignment names nobody")
                            .label(*file, a.pos, "no `users`, `user_sets` or `everyone: true`")
                            .help("say who gets these buttons: `users`, `user_sets`, or `everyone: true`"),
                    );
                    continue;
                }
                if is_everyone {
                    let pos = a.everyone.as_ref().map_or(a.pos, |e| e.pos);
                    origins.push(Origin {
                        file: *file,
                        pos,
                        via: None,
                    });
                    let here = origins.len() - 1;
                    match everyone {
                        Some(first) => v.report.push(
                            Diagnostic::error(
                                "duplicate-assignment",
                                format!("chat `{chat_id}` gets whole-chat buttons twice"),
                            )
                            .label(*file, pos, "assigned again here")
                            .label(
                                origins[first].file,
                                origins[first].pos,
                                "first assigned here",
                            )
                            .help("keep one `everyone: true` assignment per chat"),
                        ),
                        None => {
                            everyone = Some(here);
                            if let Some(list) = &list {
                                targets.push((Target::everyone(*chat_id), list.clone()));
                            }
                        }
                    }
                    continue;
                }

                // The users of this assignment, each with the place that named it.
                let mut members: Vec<(&str, usize)> = Vec::new();
                for u in &a.users {
                    origins.push(Origin {
                        file: *file,
                        pos: u.pos,
                        via: None,
                    });
                    let o = origins.len() - 1;
                    let place = (*file, u.pos, None);
                    if let Some(id) = v.user(people, id_type, &u.value, place, &mut bad_ids) {
                        members.push((id, o));
                    }
                }
                for s in &a.user_sets {
                    let Some(set) = sets.get(s.value.as_str()) else {
                        if v.waits(*file, s.pos, &s.value) {
                            continue;
                        }
                        let names: Vec<&str> = sets.keys().copied().collect();
                        let mut d = Diagnostic::error(
                            "undefined-user-set",
                            format!("user set `{}` is not defined", s.value),
                        )
                        .label(
                            *file,
                            s.pos,
                            "not defined in any file of this config",
                        );
                        if let Some(near) = suggest(&s.value, &names) {
                            d = d.help(format!("did you mean `{near}`?"));
                        }
                        v.report.push(d);
                        continue;
                    };
                    used_sets.push(s.value.as_str());
                    origins.push(Origin {
                        file: *file,
                        pos: s.pos,
                        via: Some(s.value.clone()),
                    });
                    let o = origins.len() - 1;
                    for id in set.ids {
                        let place = (set.file, id.pos, Some((*file, s.pos)));
                        if let Some(id) = v.user(people, id_type, &id.value, place, &mut bad_ids) {
                            members.push((id, o));
                        }
                    }
                    for source in set.sources {
                        let place = (set.file, source.pos, Some((*file, s.pos)));
                        let ids = v.source(people, id_type, &source.value, place, &mut bad_sources);
                        members.extend(ids.iter().map(|id| (id.as_str(), o)));
                    }
                }
                let mut in_this: foldhash::HashMap<&str, usize> = Default::default();
                for (id, o) in members {
                    if let Some(&o0) = in_this.get(id) {
                        // Named twice in one assignment: harmless, but one of the two is dead
                        // weight. Two user sets that overlap are not warned about: sets are kept
                        // apart on purpose (on call, leads), and people belong to several. A set
                        // that lists someone twice is warned about where it is defined.
                        let both_sets = origins[o0].via.is_some() && origins[o].via.is_some();
                        if o0 != o && !both_sets {
                            repeated.entry((o0, o)).or_default().push(id);
                        }
                        continue;
                    }
                    in_this.insert(id, o);
                    match seen.get(&(id_type, id)) {
                        Some(&first) => twice.entry((first, o)).or_default().push(id),
                        None => {
                            seen.insert((id_type, id), o);
                            if let Some(list) = &list {
                                targets.push((Target::user(*chat_id, id_type, id), list.clone()));
                            }
                        }
                    }
                }
            }
        }
        for ((first, again), mut ids) in repeated {
            ids.sort_unstable();
            ids.dedup();
            let (f, s) = (&origins[first], &origins[again]);
            let message = if ids.len() == 1 {
                format!("user `{}` is named twice in one assignment", ids[0])
            } else {
                format!(
                    "{} users are named twice in one assignment: {}",
                    ids.len(),
                    list_some(&ids, 5)
                )
            };
            v.report.push(
                Diagnostic::warning("duplicate-user", message)
                    .label(s.file, s.pos, s.describe("named again here"))
                    .label(f.file, f.pos, f.describe("first named here"))
                    .help("remove one of them: the user gets the assignment's buttons once either way"),
            );
        }
        for ((first, again), mut ids) in twice {
            ids.sort_unstable();
            ids.dedup();
            let (f, s) = (&origins[first], &origins[again]);
            let shown = list_some(&ids, 5);
            let message = if ids.len() == 1 {
                format!("user `{}` gets buttons twice in chat `{chat_id}`", ids[0])
            } else {
                format!(
                    "{} users get buttons twice in chat `{chat_id}`: {shown}",
                    ids.len()
                )
            };
            v.report.push(
                Diagnostic::error("duplicate-assignment", message)
                    .label(s.file, s.pos, s.describe("assigned again here"))
                    .label(f.file, f.pos, f.describe("first assigned here"))
                    .help("a user gets one button list per chat: remove one of the assignments"),
            );
        }
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
    for (name, set) in &sets {
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

/// `d` labelled at the entry, and at the place that uses it through a user set.
fn located(
    d: Diagnostic,
    (file, pos, label): (FileId, Pos, &str),
    reference: Option<(FileId, Pos)>,
    id_type: UserIdType,
) -> Diagnostic {
    let d = d.label(file, pos, label);
    match reference {
        Some((f, p)) => d.label(f, p, format!("used here, where ids are {id_type}")),
        None => d,
    }
}

/// Where a user was named: directly (`users:`) or through a user set (`user_sets:`).
struct Origin {
    file: FileId,
    pos: Pos,
    via: Option<String>,
}

impl Origin {
    fn describe(&self, what: &str) -> String {
        match &self.via {
            Some(set) => format!("{what} (through user set `{set}`)"),
            None => what.to_owned(),
        }
    }
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

    fn define_buttons<'a>(
        &mut self,
        files: &[(FileId, &'a RawFile)],
    ) -> HashMap<&'a str, (FileId, Pos, Option<wire::Button>)> {
        let mut out: HashMap<&'a str, (FileId, Pos, Option<wire::Button>)> = HashMap::new();
        for (file, raw) in files {
            for (name, b) in &raw.buttons {
                if let Some((f0, p0, _)) = out.get(name.value.as_str()) {
                    self.report.push(
                        Diagnostic::error(
                            "duplicate-button",
                            format!("button `{}` is defined twice", name.value),
                        )
                        .label(*file, name.pos, "defined again here")
                        .label(*f0, *p0, "first defined here")
                        .help("button names are unique across all files of a config: rename one"),
                    );
                    continue;
                }
                let button = self.button(*file, b);
                out.insert(&name.value, (*file, name.pos, button));
            }
        }
        out
    }

    fn define_sets<'a>(
        &mut self,
        files: &[(FileId, &'a RawFile)],
    ) -> BTreeMap<&'a str, SetDef<'a>> {
        let mut out: BTreeMap<&'a str, SetDef<'a>> = BTreeMap::new();
        for (file, raw) in files {
            for (name, ids, sources) in &raw.user_sets {
                if let Some(first) = out.get(name.value.as_str()) {
                    self.report.push(
                        Diagnostic::error("duplicate-user-set", format!("user set `{}` is defined twice", name.value))
                            .label(*file, name.pos, "defined again here")
                            .label(first.file, first.pos, "first defined here")
                            .help("user set names are unique across all files of a config: rename or merge them"),
                    );
                    continue;
                }
                self.check_sources(*file, sources);
                let mut listed: HashMap<&str, Pos> = HashMap::new();
                for id in ids {
                    match listed.get(id.value.as_str()) {
                        Some(first) => self.report.push(
                            Diagnostic::warning(
                                "duplicate-user",
                                format!(
                                    "user `{}` is listed twice in user set `{}`",
                                    id.value, name.value
                                ),
                            )
                            .label(*file, id.pos, "listed again here")
                            .label(*file, *first, "first listed here")
                            .help("remove one of them: a set holds each user once"),
                        ),
                        None => {
                            listed.insert(&id.value, id.pos);
                        }
                    }
                }
                out.insert(
                    &name.value,
                    SetDef {
                        file: *file,
                        pos: name.pos,
                        ids,
                        sources,
                    },
                );
            }
        }
        out
    }

    /// The id a user entry names for `id_type`: the id itself, or the lock's id for an email or
    /// a mobile. Reports each bad (type, entry) once; `place` is where the entry is written and,
    /// for an entry of a user set, where the set is used.
    fn user<'a>(
        &mut self,
        people: &'a People,
        id_type: UserIdType,
        written: &'a str,
        place: (FileId, Pos, Option<(FileId, Pos)>),
        bad: &mut foldhash::HashSet<(UserIdType, &'a str)>,
    ) -> Option<&'a str> {
        let (file, pos, reference) = place;
        match super::people::Written::of(written) {
            super::people::Written::Id(id) => self
                .check_user_id(id_type, id, file, pos, reference, bad)
                .then_some(id),
            person => match people.id(written, id_type) {
                Ok(id) => Some(id),
                Err(missing) => {
                    if bad.insert((id_type, written)) {
                        let d = super::people::unresolved_user(person, id_type, missing);
                        let label = match person.problem() {
                            Some(_) => "cannot be looked up as written",
                            None => missing.label(),
                        };
                        self.report
                            .push(located(d, (file, pos, label), reference, id_type));
                    }
                    None
                }
            },
        }
    }

    /// The ids a directory source gives for `id_type`, from the lock; reported once when the
    /// lock has none.
    fn source<'a>(
        &mut self,
        people: &'a People,
        id_type: UserIdType,
        source: &'a Source,
        place: (FileId, Pos, Option<(FileId, Pos)>),
        bad: &mut foldhash::HashSet<(UserIdType, &'a Source)>,
    ) -> &'a [String] {
        if source.problem().is_some() {
            return &[];
        }
        match people.members(source, id_type) {
            Ok(ids) => ids,
            Err(missing) => {
                let (file, pos, reference) = place;
                if bad.insert((id_type, source)) {
                    let d = super::people::unresolved_source(source, id_type, missing);
                    let at = (file, pos, missing.label());
                    self.report.push(located(d, at, reference, id_type));
                }
                &[]
            }
        }
    }

    /// Reports directory sources whose id cannot be a chat's or a department's.
    fn check_sources(&mut self, file: FileId, sources: &[At<Source>]) {
        for s in sources {
            if let Some(rule) = s.value.problem() {
                self.report.push(
                    Diagnostic::error(
                        "invalid-source",
                        format!("`{}` is not a directory source", s.value),
                    )
                    .label(file, s.pos, rule),
                );
            }
        }
    }

    /// Checks an id against its type; reports each bad (type, id) once. `reference` is the place
    /// that used the id through a user set.
    fn check_user_id<'a>(
        &mut self,
        id_type: UserIdType,
        id: &'a str,
        file: FileId,
        pos: Pos,
        reference: Option<(FileId, Pos)>,
        bad: &mut foldhash::HashSet<(UserIdType, &'a str)>,
    ) -> bool {
        let Some(problem) = IdProblem::of(id, id_type.prefix()) else {
            return true;
        };
        if bad.insert((id_type, id)) {
            let kind = format!("{id_type} ids");
            let mut d = Diagnostic::error(
                "invalid-user-id",
                format!(
                    "{} is not a valid {id_type}{}",
                    shown_id(id),
                    problem.because()
                ),
            )
            .label(file, pos, problem.rule(&kind, id_type.prefix()));
            if let Some((f, p)) = reference {
                d = d.label(f, p, format!("used here, where ids are {id_type}"));
            }
            let hint = match problem {
                IdProblem::Everyone => "for the whole chat write `everyone: true`; for this user, use their open_id (ou_...) under `user_id_type: open_id`".to_owned(),
                IdProblem::Prefix(_) => match UserIdType::ALL
                    .iter()
                    .find(|t| t.prefix().is_some_and(|p| id.starts_with(p)))
                {
                    Some(t) => format!(
                        "these look like {t}s: set `user_id_type: {t}` on the chat or the file"
                    ),
                    None => "set `user_id_type` on the chat or the file to the type of these ids"
                        .to_owned(),
                },
                _ => "copy the id as the API or the admin console gives it".to_owned(),
            };
            self.report.push(d.help(hint));
        }
        false
    }

    /// Resolves an assignment's `buttons:` to one interned list; `None` when it has errors.
    fn button_list(
        &mut self,
        file: FileId,
        refs: &At<Vec<RawButtonRef>>,
        defined: &HashMap<&str, (FileId, Pos, Option<wire::Button>)>,
    ) -> Option<Arc<ButtonList>> {
        let mut ok = true;
        if refs.value.len() > api::MAX_BUTTONS {
            self.report.push(
                Diagnostic::error(
                    "too-many-buttons",
                    format!(
                        "an assignment lists {} buttons; a chat shows at most {}",
                        refs.value.len(),
                        api::MAX_BUTTONS
                    ),
                )
                .label(file, refs.pos, format!("{} buttons", refs.value.len()))
                .help("keep at most 2 buttons per assignment"),
            );
            ok = false;
        }
        let mut list = Vec::with_capacity(refs.value.len());
        for r in &refs.value {
            match r {
                RawButtonRef::Named(name) => match defined.get(name.value.as_str()) {
                    Some((_, _, Some(b))) => list.push(b.clone()),
                    Some((_, _, None)) => ok = false,
                    None if self.waits(file, name.pos, &name.value) => ok = false,
                    None => {
                        let names: Vec<&str> = defined.keys().copied().collect();
                        let mut d = Diagnostic::error(
                            "undefined-button",
                            format!("button `{}` is not defined", name.value),
                        )
                        .label(
                            file,
                            name.pos,
                            "not defined under `buttons:` in any file of this config",
                        );
                        if let Some(near) = suggest(&name.value, &names) {
                            d = d.help(format!("did you mean `{near}`?"));
                        }
                        self.report.push(d);
                        ok = false;
                    }
                },
                RawButtonRef::Inline(b) => match self.button(file, b) {
                    Some(b) => list.push(b),
                    None => ok = false,
                },
            }
        }
        if !ok {
            return None;
        }
        if let Some(shared) = self.interned.get(&list) {
            return Some(shared.clone());
        }
        let shared = Arc::new(list.clone());
        self.interned.insert(list, shared.clone());
        Some(shared)
    }

    /// Checks one button's fields and builds its wire form; `None` when it has errors.
    fn button(&mut self, file: FileId, b: &RawButton) -> Option<wire::Button> {
        let mut ok = true;
        let text = match &b.text {
            Some(t) => {
                ok &= self.check_text(file, t);
                Some(t.value.clone())
            }
            None => {
                ok = false;
                None
            }
        };
        let action = b.action.as_ref().map_or(ActionType::UrlPage, |a| a.value);
        let multi_url = match &b.url {
            None => None,
            Some(RawUrl::One(u)) => {
                ok &= self.check_url(file, u);
                Some(MultiUrl {
                    url: Some(u.value.clone()),
                    ..MultiUrl::default()
                })
            }
            Some(RawUrl::PerPlatform {
                default,
                android,
                ios,
                pc,
                ..
            }) => {
                for u in [default, android, ios, pc].into_iter().flatten() {
                    ok &= self.check_url(file, u);
                }
                let get = |u: &Option<At<String>>| u.as_ref().map(|u| u.value.clone());
                let m = MultiUrl {
                    url: get(default),
                    android_url: get(android),
                    ios_url: get(ios),
                    pc_url: get(pc),
                };
                (m != MultiUrl::default()).then_some(m)
            }
        };
        if action == ActionType::UrlPage && multi_url.is_none() && !b.incomplete {
            let pos = match &b.url {
                Some(RawUrl::PerPlatform { pos, .. }) => *pos,
                _ => b.text.as_ref().map_or(b.pos, |t| t.pos),
            };
            self.report.push(
                Diagnostic::error("url-missing", "a `url_page` button has no URL")
                    .label(file, pos, "this button opens nothing")
                    .help("add `url: https://...`, or make it `action: webhook`"),
            );
            ok = false;
        }
        let action_map = b.action_map.as_ref().filter(|m| !m.is_empty()).map(|m| {
            m.iter()
                .map(|(k, v)| (k.value.clone(), v.value.clone()))
                .collect()
        });
        let button_type = Some(b.style.as_ref().map_or(ButtonType::Default, |s| s.value));
        match (ok, text) {
            (true, Some(text)) => Some(wire::Button {
                multi_url,
                action_type: action,
                text: Text { text },
                button_type,
                action_map,
            }),
            _ => None,
        }
    }

    /// A label Feishu shows: 1 to 30 characters on one line, of which some can be seen.
    fn check_text(&mut self, file: FileId, t: &At<String>) -> bool {
        let n = t.value.chars().count();
        // A line break or a control character would be sent as it is; what a client draws
        // for it is nobody's guess.
        if let Some((i, c)) = t
            .value
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        {
            let breaks = describe_char(c).starts_with("a line break");
            let help = if breaks
                && t.value.trim_end() != t.value
                && t.value.trim_end().chars().all(|c| !c.is_control())
            {
                "a button label is one line; a `|` or `>` block keeps a line break at its end: write `|-` or `>-`, or a plain value"
            } else if breaks {
                "a button label is one line: remove the line break"
            } else if c == '\t' {
                "write a space instead of the tab: a button label is plain text"
            } else {
                "remove the control character: a button label is plain text"
            };
            self.report.push(
                Diagnostic::error(
                    "button-text-control",
                    format!("button text holds {}", describe_char(c)),
                )
                .label(file, t.pos, format!("at character {}", i + 1))
                .help(help),
            );
            return false;
        }
        if t.value.trim().is_empty() {
            self.report.push(
                Diagnostic::error("button-text-empty", "button text is empty")
                    .label(file, t.pos, "empty text")
                    .help(format!(
                        "write a label of 1 to {} characters",
                        api::MAX_TEXT_CHARS
                    )),
            );
            return false;
        }
        if let Some(c) = t.value.chars().find(|c| is_invisible(*c)).filter(|_| {
            t.value
                .chars()
                .all(|c| c.is_whitespace() || is_invisible(c))
        }) {
            self.report.push(
                Diagnostic::error(
                    "button-text-empty",
                    format!(
                        "button text shows nothing: it holds only invisible characters, such as U+{:04X}",
                        u32::from(c)
                    ),
                )
                .label(file, t.pos, "nothing to see")
                .help(format!(
                    "write a label of 1 to {} characters that can be seen",
                    api::MAX_TEXT_CHARS
                )),
            );
            return false;
        }
        if n > api::MAX_TEXT_CHARS {
            self.report.push(
                Diagnostic::error(
                    "button-text-too-long",
                    format!(
                        "button text is {n} characters; at most {} are allowed",
                        api::MAX_TEXT_CHARS
                    ),
                )
                .label(file, t.pos, format!("{n} characters"))
                .help("shorten the label"),
            );
            return false;
        }
        true
    }

    fn check_url(&mut self, file: FileId, u: &At<String>) -> bool {
        // The URL is sent as written, so it must not lean on the parser's cleaning: a space or a
        // control character would reach the API (and the user's client) as it is.
        if has_blank(&u.value) {
            self.report.push(
                Diagnostic::error("url-invalid", "the URL has spaces or control characters")
                    .label(file, u.pos, "not a URL as written")
                    .help("remove surrounding spaces; write a space inside a URL as %20"),
            );
            return false;
        }
        let n = u.value.chars().count();
        if n > api::MAX_URL_CHARS {
            self.report.push(
                Diagnostic::error(
                    "url-too-long",
                    format!(
                        "URL is {n} characters; at most {} are allowed",
                        api::MAX_URL_CHARS
                    ),
                )
                .label(file, u.pos, format!("{n} characters"))
                .help("use a shorter link (a redirect or a link shortener)"),
            );
            return false;
        }
        // The URL is sent as written, and Feishu documents lower-case `https` URLs only; whether
        // it compares the scheme ignoring case is not documented, so an `HTTPS://` is refused
        // here rather than by the API.
        if let Some((scheme, _)) = u.value.split_once(':')
            && scheme.eq_ignore_ascii_case("https")
            && scheme != "https"
        {
            self.report.push(
                Diagnostic::error(
                    "url-not-https",
                    format!("URL scheme `{scheme}` is not written `https`"),
                )
                .label(file, u.pos, "write `https://`")
                .help("write the scheme in lower case: URLs are sent as written, and Feishu documents `https://` URLs only"),
            );
            return false;
        }
        match url::Url::parse(&u.value) {
            Err(e) => {
                self.report.push(
                    Diagnostic::error(
                        "url-invalid",
                        format!("`{}` is not a valid URL: {e}", u.value),
                    )
                    .label(file, u.pos, "not a URL")
                    .help("write a full URL such as `https://example.com/path`"),
                );
                false
            }
            Ok(parsed) if parsed.scheme() != "https" => {
                self.report.push(
                    Diagnostic::error(
                        "url-not-https",
                        format!(
                            "URL scheme `{}` is not allowed; buttons open https URLs only",
                            parsed.scheme()
                        ),
                    )
                    .label(file, u.pos, "not https")
                    .help("use an `https://` URL"),
                );
                false
            }
            // The URL parser forgives what browsers forgive (`https:host`, `https:///host`,
            // `\` for `/`), but the URL is sent as written: the written form must be plain.
            Ok(_) if !u.value.starts_with("https://") => {
                self.report.push(
                    Diagnostic::error(
                        "url-invalid",
                        format!("`{}` does not start with `https://`", u.value),
                    )
                    .label(file, u.pos, "not `https://` and a host")
                    .help("write `https://` and then the host, as in `https://example.com/path`"),
                );
                false
            }
            Ok(_) if u.value["https://".len()..].starts_with(['/', '\\']) => {
                self.report.push(
                    Diagnostic::error("url-invalid", format!("`{}` has no host", u.value))
                        .label(file, u.pos, "no host after `https://`")
                        .help("write the host right after `https://`, as in `https://example.com/path`"),
                );
                false
            }
            Ok(_)
                if u.value
                    .split(['?', '#'])
                    .next()
                    .is_some_and(|s| s.contains('\\')) =>
            {
                self.report.push(
                    Diagnostic::error("url-invalid", format!("`{}` holds a backslash", u.value))
                        .label(file, u.pos, "`\\` before the query")
                        .help("write `/` between the parts of a path (a browser reads `\\` as `/`, but the URL is sent as written), or `%5C` for a backslash"),
                );
                false
            }
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                self.report.push(
                    Diagnostic::error("url-invalid", format!("`{}` has no host", u.value))
                        .label(file, u.pos, "no host")
                        .help("write a full URL such as `https://example.com/path`"),
                );
                false
            }
            Ok(_) => true,
        }
    }
}

/// Whether an id or a URL holds whitespace or a control character.
fn has_blank(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

const CHAT_ID_PREFIX: &str = "oc_";

/// The longest id accepted, in characters. Every chat, open and union id Feishu shows is 35
/// characters (its prefix and 32 hex digits), and a tenant's own user ids are short codes; an id
/// twice that long is not one, but a pasted line or link. The bound leaves room for id formats
/// not seen yet.
pub const MAX_ID_CHARS: usize = 64;

/// Why `id` cannot be a user id of `id_type` (`it is empty`, `it does not start with `ou_``...),
/// if it cannot: the check the config's own ids get, for ids that come from elsewhere (the lock).
pub fn user_id_problem(id: &str, id_type: crate::feishu::wire::UserIdType) -> Option<String> {
    let prefix = id_type.prefix();
    IdProblem::of(id, prefix).map(|p| match p {
        IdProblem::Prefix(p) => format!("it does not start with `{p}`"),
        p => p.because().trim_start_matches(": ").to_owned(),
    })
}

/// How the whole chat is named in plans, `state list` and `state` selectors.
const WHOLE_CHAT_LABEL: &str = "everyone";

/// Why a string is not an id that Feishu could have issued.
#[derive(Clone, Copy, Debug, PartialEq)]
enum IdProblem {
    Empty,
    /// It does not start with its type's prefix, or holds nothing after it.
    Prefix(&'static str),
    /// It holds a character Feishu ids never have.
    Char(char),
    TooLong(usize),
    /// A `user_id` that reads as the whole-chat label.
    Everyone,
}

impl IdProblem {
    /// The problem with `id`, of a type whose ids start with `prefix` (chat, open and union ids,
    /// all issued by Feishu: `prefix` and ASCII letters, digits, `_` or `-`) or of a tenant's own
    /// `user_id`s (`None`: free-form, but never blank, invisible, a URL's `/ ? #`, or the
    /// whole-chat label).
    fn of(id: &str, prefix: Option<&'static str>) -> Option<IdProblem> {
        if id.is_empty() {
            return Some(IdProblem::Empty);
        }
        let bad = match prefix {
            Some(p) => match id.strip_prefix(p) {
                Some(rest) if !rest.is_empty() => rest
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')),
                _ => return Some(IdProblem::Prefix(p)),
            },
            None => id.chars().find(|c| {
                c.is_whitespace() || c.is_control() || is_invisible(*c) || "/?#".contains(*c)
            }),
        };
        if let Some(c) = bad {
            return Some(IdProblem::Char(c));
        }
        let n = id.chars().count();
        if n > MAX_ID_CHARS {
            return Some(IdProblem::TooLong(n));
        }
        // Any case: a person reads `Everyone` in a plan as the whole chat too.
        if prefix.is_none() && id.eq_ignore_ascii_case(WHOLE_CHAT_LABEL) {
            return Some(IdProblem::Everyone);
        }
        None
    }

    /// The end of the "is not a ..." message: why.
    fn because(self) -> String {
        match self {
            IdProblem::Empty => ": it is empty".to_owned(),
            IdProblem::Prefix(_) => String::new(),
            IdProblem::Char(c) => format!(": it holds {}", describe_char(c)),
            IdProblem::TooLong(n) => format!(": it is {n} characters long"),
            IdProblem::Everyone => format!(
                ": `{WHOLE_CHAT_LABEL}` is how plans and `state` commands name the whole chat"
            ),
        }
    }

    /// The rule, for the label: "chat ids start with `oc_`".
    fn rule(self, kind: &str, prefix: Option<&str>) -> String {
        match (self, prefix) {
            (IdProblem::Everyone, _) => "reads as the whole chat".to_owned(),
            (IdProblem::TooLong(_), _) => {
                format!("{kind} are at most {MAX_ID_CHARS} characters")
            }
            (IdProblem::Prefix(p), _) => format!("{kind} start with `{p}`"),
            (_, Some(p)) => format!("{kind} are `{p}` and then letters, digits, `_` or `-`"),
            (_, None) => {
                format!("{kind} have no spaces, invisible or control characters, `/`, `?` or `#`")
            }
        }
    }
}

/// An id as quoted in a message: invisible and control characters escaped, a long one cut.
fn shown_id(id: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::from("`");
    for (i, c) in id.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c != ' ' && (c.is_whitespace() || c.is_control() || is_invisible(c)) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// A character named so that a person can find it, even when it cannot be seen.
fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '\t' => "a tab".to_owned(),
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
            format!("a line break (U+{:04X})", u32::from(c))
        }
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        c if c.is_whitespace() => format!("a space character (U+{:04X})", u32::from(c)),
        c if is_invisible(c) => format!("an invisible character (U+{:04X})", u32::from(c)),
        c if !c.is_ascii() => format!("`{c}` (U+{:04X}, not ASCII)", u32::from(c)),
        c => format!("`{c}`"),
    }
}

/// Whether a character shows nothing although it is not whitespace: Unicode's default-ignorable
/// code points (zero-width spaces and joiners, direction marks, variation selectors, tags, the
/// byte order mark...) and the blank-looking fillers (Hangul filler, Braille blank).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{2800}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// `a`, `b`, `c` and N more.
fn list_some(ids: &[&str], max: usize) -> String {
    let shown: Vec<String> = ids.iter().take(max).map(|i| format!("`{i}`")).collect();
    if ids.len() > max {
        format!("{} and {} more", shown.join(", "), ids.len() - max)
    } else {
        shown.join(", ")
    }
}
