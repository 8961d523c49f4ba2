//! The daemon's incremental reload and plan, model-checked: over random sequences of edits to a
//! config directory (a file added, removed or renamed; a user moved between files; a shared
//! button or user set changed in one file and used by others; an edit that breaks a file, then
//! its fix; `feedbuttons.lock` changed, broken or removed under an email the user set names), and calls whose users are sometimes refused or whose answers are lost, what
//! `watch` reads and plans after each edit is exactly what reading everything again gives: the
//! same diagnostics, and the same plan.
//!
//! `FEEDBUTTONS_INCREMENTAL_CASES` sets the number of random cases (default 48).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use feedbuttons::apply::outcome;
use feedbuttons::feishu::client::ChatButtonOutcome;
use feedbuttons::feishu::wire::FailedUserReason;
use feedbuttons::plan::json::PlanDoc;
use feedbuttons::plan::{self, PlanOptions, WaitingBackoff};
use feedbuttons::state::{AppliedState, Record};
use feedbuttons::watch::incremental::Incremental;
use proptest::prelude::*;

use crate::util::Dir;

const CHATS: usize = 4;
const USERS: usize = 8;
const BUTTONS: usize = 3;
/// File names a config file can have (the definitions move between them on a rename).
const NAMES: [&str; 5] = ["a.yaml", "b.yaml", "c.yaml", "team/d.yaml", "team/e.yml"];

fn chat_id(c: usize) -> String {
    format!("oc_chat{c}")
}

fn user_id(u: usize) -> String {
    format!("ou_user{u}")
}

/// A config directory, as the test thinks of it.
#[derive(Clone, Debug)]
struct Model {
    /// Which name each file slot has (`None`: no such file).
    names: Vec<Option<usize>>,
    /// The slot that defines the buttons and the user set.
    defs: usize,
    /// Each button's text.
    texts: [u8; BUTTONS],
    /// The user set `crew`: its members.
    crew: Vec<usize>,
    /// (chat, user) -> (slot, button); user `USERS` is the whole chat.
    assigned: BTreeMap<(usize, usize), (usize, usize)>,
    /// chat -> (slot, button) of an assignment to the user set `crew`.
    crew_in: BTreeMap<usize, (usize, usize)>,
    /// Slots whose file is written broken.
    broken: Vec<bool>,
    /// `feedbuttons.lock`: the user `LEAD` (a member of `crew`) is; `USERS` writes a lock
    /// that cannot be read; `None`: no lock.
    lock: Option<usize>,
}

/// A member of `crew` written by email, resolved through `feedbuttons.lock`.
const LEAD: &str = "lead@example.com";

const SLOTS: usize = 3;

/// The lock file's name.
const LOCK: &str = "feedbuttons.lock";

impl Model {
    fn files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for slot in 0..SLOTS {
            let Some(name) = self.names[slot] else {
                continue;
            };
            let mut s = String::from("version: 1\n");
            if slot == self.defs {
                s.push_str("buttons:\n");
                for (b, t) in self.texts.iter().enumerate() {
                    let _ = writeln!(s, "  b{b}:\n    text: Button {b} v{t}\n    action: webhook");
                }
                s.push_str("user_sets:\n  crew: [");
                let mut members: Vec<String> = self.crew.iter().map(|u| user_id(*u)).collect();
                members.push(LEAD.to_owned());
                s.push_str(&members.join(", "));
                s.push_str("]\n");
            }
            s.push_str("chats:\n");
            for c in 0..CHATS {
                let mut assigns = String::new();
                if let Some((sl, b)) = self.crew_in.get(&c)
                    && *sl == slot
                {
                    let _ = writeln!(
                        assigns,
                        "      - user_sets: [crew]\n        buttons: [b{b}]"
                    );
                }
                for b in 0..BUTTONS {
                    let users: Vec<String> = self
                        .assigned
                        .iter()
                        .filter(|((ch, u), (sl, bb))| {
                            *ch == c && *sl == slot && *bb == b && *u < USERS
                        })
                        .map(|((_, u), _)| user_id(*u))
                        .collect();
                    if !users.is_empty() {
                        let _ = writeln!(
                            assigns,
                            "      - users: [{}]\n        buttons: [b{b}]",
                            users.join(", ")
                        );
                    }
                }
                if let Some((sl, b)) = self.assigned.get(&(c, USERS))
                    && *sl == slot
                {
                    let _ = writeln!(assigns, "      - everyone: true\n        buttons: [b{b}]");
                }
                if !assigns.is_empty() {
                    let _ = write!(
                        s,
                        "  - chat_id: {}\n    name: Chat {c}\n    assign:\n{assigns}",
                        chat_id(c)
                    );
                }
            }
            if s.ends_with("chats:\n") {
                s.truncate(s.len() - 1);
                s.push_str(" []\n");
            }
            if self.broken[slot] {
                s.push_str("  - chat_id: [unclosed\n");
            }
            out.insert(NAMES[name].to_owned(), s);
        }
        match self.lock {
            Some(u) if u < USERS => {
                let lock = format!(
                    "version: 1\npeople:\n  {LEAD}: {{open_id: {}}}\n",
                    user_id(u)
                );
                out.insert(LOCK.to_owned(), lock);
            }
            Some(_) => {
                out.insert(
                    LOCK.to_owned(),
                    "version: 1\npeople: [unclosed\n".to_owned(),
                );
            }
            None => {}
        }
        out
    }

    fn live_slots(&self) -> Vec<usize> {
        (0..SLOTS).filter(|s| self.names[*s].is_some()).collect()
    }
}

#[derive(Clone, Debug)]
enum Edit {
    /// Assign (or reassign) a user of a chat to a button, in a slot.
    Assign {
        chat: usize,
        user: usize,
        slot: usize,
        button: usize,
    },
    /// Drop a user's assignment.
    Unassign { chat: usize, user: usize },
    /// Move a user's assignment to another slot's file.
    Move {
        chat: usize,
        user: usize,
        slot: usize,
    },
    /// Change a shared button's text (in the defining file; used by the others).
    Text { button: usize },
    /// Add or remove a member of the shared user set.
    Crew { user: usize },
    /// Assign the user set in a chat, or drop that assignment.
    CrewIn {
        chat: usize,
        slot: usize,
        button: usize,
    },
    /// Add a file in an empty slot, or remove one (its assignments go with it).
    AddOrRemove { slot: usize, name: usize },
    /// Rename a file.
    Rename { slot: usize, name: usize },
    /// Break a file (a syntax error), or fix it.
    Break { slot: usize },
    /// `feedbuttons.lock` changed (`LEAD` is another user), broken (`USERS`) or removed
    /// (`USERS + 1`).
    Lock { user: usize },
    /// Another writer changed a chat's record (a resync call, the lock taken again).
    Foreign {
        chat: usize,
        user: usize,
        button: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0..CHATS, 0..=USERS, 0..SLOTS, 0..BUTTONS)
            .prop_map(|(chat, user, slot, button)| Edit::Assign { chat, user, slot, button }),
        1 => (0..CHATS, 0..=USERS).prop_map(|(chat, user)| Edit::Unassign { chat, user }),
        2 => (0..CHATS, 0..=USERS, 0..SLOTS).prop_map(|(chat, user, slot)| Edit::Move { chat, user, slot }),
        1 => (0..BUTTONS).prop_map(|button| Edit::Text { button }),
        1 => (0..USERS).prop_map(|user| Edit::Crew { user }),
        1 => (0..CHATS, 0..SLOTS, 0..BUTTONS).prop_map(|(chat, slot, button)| Edit::CrewIn { chat, slot, button }),
        1 => (0..SLOTS, 0..NAMES.len()).prop_map(|(slot, name)| Edit::AddOrRemove { slot, name }),
        1 => (0..SLOTS, 0..NAMES.len()).prop_map(|(slot, name)| Edit::Rename { slot, name }),
        1 => (0..SLOTS).prop_map(|slot| Edit::Break { slot }),
        1 => (0..CHATS, 0..USERS, 0..BUTTONS).prop_map(|(chat, user, button)| Edit::Foreign { chat, user, button }),
        1 => (0..USERS + 2).prop_map(|user| Edit::Lock { user }),
    ]
}

impl Model {
    fn new() -> Model {
        Model {
            names: vec![Some(0), Some(1), None],
            defs: 0,
            texts: [0; BUTTONS],
            crew: vec![0, 1],
            assigned: BTreeMap::new(),
            crew_in: BTreeMap::new(),
            broken: vec![false; SLOTS],
            lock: Some(0),
        }
    }

    /// Applies an edit to the files.
    fn edit(&mut self, e: &Edit) {
        let live = self.live_slots();
        let slot_or_live = |s: usize| {
            if self.names[s].is_some() {
                s
            } else {
                live[s % live.len()]
            }
        };
        match *e {
            Edit::Assign {
                chat,
                user,
                slot,
                button,
            } => {
                let slot = slot_or_live(slot);
                self.assigned.insert((chat, user), (slot, button));
            }
            Edit::Unassign { chat, user } => {
                self.assigned.remove(&(chat, user));
            }
            Edit::Move { chat, user, slot } => {
                let slot = slot_or_live(slot);
                if let Some(a) = self.assigned.get_mut(&(chat, user)) {
                    a.0 = slot;
                }
            }
            Edit::Text { button } => self.texts[button] = self.texts[button].wrapping_add(1) % 3,
            Edit::Crew { user } => match self.crew.iter().position(|u| *u == user) {
                Some(i) => {
                    self.crew.remove(i);
                }
                None => self.crew.push(user),
            },
            Edit::CrewIn { chat, slot, button } => {
                let slot = slot_or_live(slot);
                if self.crew_in.remove(&chat).is_none() {
                    self.crew_in.insert(chat, (slot, button));
                }
            }
            Edit::AddOrRemove { slot, name } => {
                if self.names[slot].is_some() {
                    // The definitions stay: their file is never removed, only renamed.
                    if slot != self.defs {
                        self.names[slot] = None;
                        self.broken[slot] = false;
                        self.assigned.retain(|_, (s, _)| *s != slot);
                        self.crew_in.retain(|_, (s, _)| *s != slot);
                    }
                } else if !self.names.contains(&Some(name)) {
                    self.names[slot] = Some(name);
                }
            }
            Edit::Rename { slot, name } => {
                if self.names[slot].is_some() && !self.names.contains(&Some(name)) {
                    self.names[slot] = Some(name);
                }
            }
            Edit::Break { slot } => {
                if self.names[slot].is_some() {
                    self.broken[slot] = !self.broken[slot];
                }
            }
            Edit::Lock { user } => self.lock = (user <= USERS).then_some(user),
            Edit::Foreign { .. } => {}
        }
    }
}

/// Writes the model's files into `dir`, removing files it no longer has. With `settled`, each
/// file written is dated a while back (a distinct time each): a reload then trusts the stamps
/// of the files that did not change and reads none of them again.
fn write_dated(dir: &std::path::Path, files: &BTreeMap<String, String>, settled: bool) {
    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for name in NAMES.into_iter().chain([LOCK]) {
        let path = dir.join(name);
        match files.get(name) {
            Some(text) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    std::fs::write(&path, text).expect("write");
                    if settled {
                        let tick = CLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let when = std::time::SystemTime::now()
                            - std::time::Duration::from_secs(100_000 - tick);
                        std::fs::File::options()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_modified(when))
                            .expect("date the file");
                    }
                }
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn write(dir: &std::path::Path, files: &BTreeMap<String, String>) {
    write_dated(dir, files, false)
}

/// Plays the plan's calls against `state`: some users refused, some answers lost.
fn apply(state: &mut AppliedState, settle: &[Record], doc: &PlanDoc, faults: &[u8], now: u64) {
    let mut records_total = 0;
    if !settle.is_empty() {
        state.apply(settle);
        records_total += settle.len();
    }
    for (i, request) in doc.requests.iter().enumerate() {
        let fault = faults.get(i % faults.len().max(1)).copied().unwrap_or(0);
        let (marks, call) = outcome::before(state, request, now);
        state.apply(&marks);
        records_total += marks.len();
        let records = match fault % 4 {
            // The answer is lost: what was marked stays uncertain.
            0 => Vec::new(),
            // The first user is refused (not in the chat).
            1 => {
                let failed_users = request
                    .body
                    .user_ids
                    .as_ref()
                    .and_then(|ids| ids.first())
                    .map(|id| FailedUserReason {
                        error_code: 1,
                        error_message: "not in the chat".to_owned(),
                        user_id: id.to_string(),
                    })
                    .into_iter()
                    .collect();
                outcome::accepted(
                    state,
                    request,
                    &call,
                    &ChatButtonOutcome {
                        failed_users,
                        attempts: 1,
                        unanswered_before: false,
                    },
                    now,
                )
            }
            _ => outcome::accepted(
                state,
                request,
                &call,
                &ChatButtonOutcome {
                    failed_users: Vec::new(),
                    attempts: 1,
                    unanswered_before: false,
                },
                now,
            ),
        };
        state.apply(&records);
        records_total += records.len();
    }
    if records_total > 0 {
        state.serial += 1;
    }
}

fn options(now: u64) -> PlanOptions {
    PlanOptions {
        chats: Vec::new(),
        rate_limit: 10,
        waiting_backoff: Some(WaitingBackoff {
            now,
            first: 150,
            max: 600,
        }),
        resend_all: false,
        // Split into runs of chats even when small: the tallies of a split plan must add up
        // as a single thread's do.
        threads: 3,
    }
}

fn run(edits: &[(Edit, Vec<u8>)]) -> Result<(), TestCaseError> {
    let dir = Dir::new();
    let mut model = Model::new();
    let mut state = AppliedState {
        lineage: "test".to_owned(),
        ..AppliedState::default()
    };
    let mut inc = Incremental::default();
    for (step, (e, faults)) in edits.iter().enumerate() {
        model.edit(e);
        write_dated(dir.path(), &model.files(), step % 2 == 1);
        if let Edit::Foreign { chat, user, button } = *e {
            let target = feedbuttons::target::Target::user(
                chat_id(chat),
                feedbuttons::feishu::wire::UserIdType::OpenId,
                user_id(user),
            );
            state.apply(&[Record::Set {
                target,
                buttons: std::sync::Arc::new(vec![feedbuttons::feishu::wire::Button {
                    multi_url: None,
                    action_type: feedbuttons::feishu::wire::ActionType::Webhook,
                    text: feedbuttons::feishu::wire::Text {
                        text: format!("Set by hand {button}"),
                    },
                    button_type: None,
                    action_map: None,
                }]),
            }]);
            state.serial += 1;
        }
        let now = 1_000_000 + step as u64 * 100;
        let full = feedbuttons::config::load_dir(dir.path()).expect("a directory");
        inc.check_state(&state);
        let reloaded = inc.reload(dir.path()).expect("a directory");
        prop_assert_eq!(
            &reloaded.report.diagnostics,
            &full.report.diagnostics,
            "step {}: {:?}",
            step,
            e
        );
        // With the lines they point at, though the daemon let go of the unchanged files' text.
        prop_assert_eq!(
            reloaded.report.render_text(inc.sources()),
            full.report.render_text(&full.sources),
            "step {}: {:?}",
            step,
            e
        );
        let (Some(desired), Some(full_desired)) = (&reloaded.desired, &full.desired) else {
            prop_assert_eq!(reloaded.desired.is_some(), full.desired.is_some());
            continue;
        };
        prop_assert_eq!(
            &desired.people,
            &full_desired.people,
            "step {}: {:?}",
            step,
            e
        );
        let options = options(now);
        let p = inc.plan(desired, reloaded.chats.as_ref(), &state, &options);
        let expected = plan::plan(
            &full_desired.targets,
            &full_desired.chat_names,
            &state.targets,
            &options,
        );
        prop_assert_eq!(&p, &expected, "step {}: {:?}", step, e);
        let (settle, doc) = (p.settle.clone(), PlanDoc::new(&p));
        drop((p, expected));
        apply(&mut state, &settle, &doc, faults, now);
        inc.recorded(&state);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FEEDBUTTONS_INCREMENTAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_reload_plans_what_a_full_reload_plans(
        edits in prop::collection::vec((edit(), prop::collection::vec(any::<u8>(), 1..4)), 1..40)
    ) {
        run(&edits)?;
    }
}

/// A file renamed while another is broken, then the fix, then a shared button changed.
#[test]
fn a_rename_and_a_fix_plan_as_a_full_reload() {
    let edits = vec![
        (
            Edit::Assign {
                chat: 0,
                user: 1,
                slot: 1,
                button: 0,
            },
            vec![2],
        ),
        (Edit::Break { slot: 1 }, vec![2]),
        (Edit::Rename { slot: 0, name: 2 }, vec![2]),
        (Edit::Break { slot: 1 }, vec![2]),
        (Edit::Text { button: 0 }, vec![1]),
        (
            Edit::Move {
                chat: 0,
                user: 1,
                slot: 0,
            },
            vec![0],
        ),
        (
            Edit::Assign {
                chat: 1,
                user: 1,
                slot: 1,
                button: 2,
            },
            vec![2],
        ),
    ];
    if let Err(e) = run(&edits) {
        panic!("{e}");
    }
}

/// An edit to one file checks and plans again only the chats that file declares (and those
/// with calls still to make); what the others declare is not read again.
#[test]
fn an_edit_checks_only_the_chats_its_file_declares() {
    let mut model = Model::new();
    for c in 0..CHATS {
        model.edit(&Edit::Assign {
            chat: c,
            user: c,
            slot: c % 2,
            button: 0,
        });
    }
    let dir = Dir::new();
    write(dir.path(), &model.files());
    let mut state = AppliedState::default();
    let mut inc = Incremental::default();
    let first = inc.reload(dir.path()).expect("a directory");
    assert_eq!(first.chats, None, "the first reload checks every chat");
    let desired = first.desired.expect("valid");
    let p = inc.plan(&desired, None, &state, &options(1_000_000));
    assert_eq!(p.summary.add, CHATS);
    let (settle, doc) = (p.settle.clone(), PlanDoc::new(&p));
    drop(p);
    apply(&mut state, &settle, &doc, &[2], 1_000_000);
    inc.recorded(&state);
    // The chats that had calls are planned once more, and are quiet then.
    inc.check_state(&state);
    let again = inc.reload(dir.path()).expect("a directory");
    let chats: Vec<String> = again
        .chats
        .clone()
        .expect("checked in part")
        .into_iter()
        .collect();
    assert_eq!(chats.len(), CHATS);
    let desired = again.desired.expect("valid");
    let p = inc.plan(&desired, again.chats.as_ref(), &state, &options(1_000_050));
    assert!(!p.has_changes());
    inc.recorded(&state);

    // Chat 1 is declared in slot 1's file: give its user another button.
    model.edit(&Edit::Assign {
        chat: 1,
        user: 1,
        slot: 1,
        button: 2,
    });
    write(dir.path(), &model.files());
    inc.check_state(&state);
    let second = inc.reload(dir.path()).expect("a directory");
    let chats: Vec<String> = second
        .chats
        .clone()
        .expect("checked in part")
        .into_iter()
        .collect();
    // Slot 1's file declares chats 1 and 3.
    assert_eq!(chats, vec![chat_id(1), chat_id(3)]);
    let desired = second.desired.expect("valid");
    let p = inc.plan(&desired, second.chats.as_ref(), &state, &options(1_000_100));
    assert_eq!((p.summary.change, p.summary.unchanged), (1, CHATS - 1));
}

/// A file edited in place with its size and time kept (`cp -p`, `rsync --inplace -t`) looks
/// unchanged by its stamp. Once a diagnostic points into it, its text is read again for its
/// lines, and that shows it changed: the next reload parses it again, and finds what a full
/// reload finds, instead of trusting the stamp and the old parse for good.
#[test]
fn a_file_found_changed_when_read_again_for_its_lines_is_parsed_at_the_next_reload() {
    use std::collections::BTreeSet;
    use std::time::{Duration, SystemTime};

    use feedbuttons::config::incremental::ConfigCache;

    let dir = Dir::new();
    let chat = |user: &str| {
        format!(
            "version: 1\nchats:\n  - chat_id: oc_one\n    assign:\n      - users: [{user}]\n        buttons:\n          - {{text: Runbook, url: 'https://wiki.example.com'}}\n"
        )
    };
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    let write_kept_time = |text: &str| {
        std::fs::write(&a, text).expect("write");
        std::fs::File::options()
            .write(true)
            .open(&a)
            .and_then(|f| f.set_modified(long_ago))
            .expect("date the file");
    };
    write_kept_time(&chat("ou_1"));
    std::fs::write(&b, chat("ou_3")).expect("write");
    let mut cache = ConfigCache::default();
    let first = cache
        .reload(dir.path(), &BTreeSet::new(), None)
        .expect("a directory");
    assert!(first.report.diagnostics.is_empty(), "{:?}", first.report);

    // a.yaml now assigns ou_2 (same size, same time, same inode); b.yaml assigns ou_1, which
    // the old a.yaml assigned too: the cache, trusting a.yaml's stamp, sees ou_1 twice.
    write_kept_time(&chat("ou_2"));
    std::fs::write(&b, chat("ou_1")).expect("write");
    let full = feedbuttons::config::load_dir(dir.path()).expect("a directory");
    assert!(full.report.diagnostics.is_empty(), "{:?}", full.report);
    let _ = cache
        .reload(dir.path(), &BTreeSet::new(), None)
        .expect("a directory");

    // Nothing changes any more: the edit found when a.yaml was read again is not missed.
    let again = cache
        .reload(dir.path(), &BTreeSet::new(), None)
        .expect("a directory");
    assert_eq!(
        again.report.render_text(again.sources),
        full.report.render_text(&full.sources)
    );
    assert!(again.desired.is_some(), "the config is valid");
}
