//! Applied state: the record of what was applied and succeeded. Takes the records of successful
//! calls (and hand repairs); gives back the `AppliedState` that plans are diffed against.
//!
//! The store sits behind two small traits so that a PostgreSQL store can follow the file store:
//! [`StateStore`] reads and locks, and the [`StateWriter`] it hands out is the one writer, which
//! records each call's successes durably before the next call goes out.
//!
//! - `file`: the file store (snapshot + journal + lock file beside each other).
//! - `snapshot`: the snapshot's JSON format (one copy of each distinct button list).
//! - `journal`: the journal's checksummed lines (one per recorded batch).
//! - `commands`: what `feedbuttons state list|show|rm|adopt` does, as pure functions.

pub mod commands;
pub mod file;
mod journal;
pub mod postgres;
pub mod snapshot;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::target::{ButtonList, Target};

pub use file::FileStore;
pub use store::*;

/// What was applied and what is known about it: every target's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// A random id made when the state is first written; empty until then. Two states with
    /// different lineages are different histories, even at the same serial.
    pub lineage: String,
    /// Grows by one with every recorded change (a batch of records, a binding); 0 when new.
    pub serial: u64,
    /// The API endpoint and app the state was applied with; `None` until the first apply binds it.
    pub binding: Option<Binding>,
    /// Every target the tool sent something for and has not forgotten since. Equal lists share
    /// one allocation (all of them after a load, those of one batch after a record): a million
    /// targets typically hold a few hundred lists, not a million.
    pub targets: BTreeMap<Target, TargetRecord>,
}

/// What the state knows about one target: the list Feishu is known to show, and, rarely, that
/// the target follows its chat's whole-chat buttons or that something about it is pending.
///
/// A record with neither a shown list nor anything pending says nothing, and is not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRecord {
    /// The list the API last accepted for the target; `None` when it never accepted one (a
    /// target that is only pending).
    pub shown: Option<Arc<ButtonList>>,
    /// Boxed: almost every target has none, and a million targets stay 16 bytes each.
    pub extra: Option<Box<Extra>>,
}

/// The rare part of a [`TargetRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    /// The target left the config and now shows its chat's whole-chat buttons (or none, when
    /// the chat has none): it keeps following them when they change.
    pub follows: bool,
    pub pending: Option<Pending>,
}

/// Why a target must be sent again whatever the config says, or is waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub status: PendingStatus,
    /// When it began, in Unix seconds.
    pub since: u64,
}

/// The three conditions a target can be in besides "applied".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingStatus {
    /// A call carrying `sent` went out and its answer never came (the process was killed, the
    /// connection dropped, no answer settled it): Feishu shows the recorded list or `sent`.
    /// Written before the call is sent.
    Uncertain { sent: Arc<ButtonList> },
    /// What the API accepted may have been overwritten since by another call of the tool, so
    /// the target is owed a re-send.
    Owed { reason: OwedReason },
    /// The API refused the user (listed in `failed_user_reasons`, e.g. not in the chat), so
    /// `goal` was not applied. Retried (by `watch` with a backoff) until the user can take it.
    Waiting {
        goal: Arc<ButtonList>,
        /// The refused call would have made the target a follower.
        goal_follows: bool,
        /// The API's reason, as it gave it.
        reason: String,
        /// What Feishu shows for it is not known: an earlier call went unanswered, or a
        /// whole-chat call may have overwritten it, before the API refused the user. Then the
        /// target is sent even when the config asks for the recorded list again.
        unsure: bool,
        /// Refusals so far.
        tries: u32,
        /// When the last refusal came, in Unix seconds.
        last_try: u64,
    },
}

/// Why a target is owed a re-send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwedReason {
    /// Its chat's whole-chat buttons were sent, and the API does not say whether a whole-chat
    /// call overwrites users' own lists.
    WholeChat,
    /// A call for another id type in its chat (an old id's clear, during a move to another
    /// `user_id_type`) may have reached the same person.
    IdTypeMove,
}

impl OwedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OwedReason::WholeChat => "whole_chat",
            OwedReason::IdTypeMove => "id_type_move",
        }
    }

    /// For people: why the target is owed.
    pub fn describe(self) -> &'static str {
        match self {
            OwedReason::WholeChat => "the chat's whole-chat buttons were sent after it",
            OwedReason::IdTypeMove => {
                "a call under another id type in the chat may have reached the same person"
            }
        }
    }
}

impl PendingStatus {
    /// `uncertain`, `owed` or `waiting`.
    pub fn label(&self) -> &'static str {
        match self {
            PendingStatus::Uncertain { .. } => "uncertain",
            PendingStatus::Owed { .. } => "owed",
            PendingStatus::Waiting { .. } => "waiting",
        }
    }
}

impl TargetRecord {
    /// A target showing `list`, as the API accepted it, with nothing pending.
    pub fn applied(list: Arc<ButtonList>) -> TargetRecord {
        TargetRecord {
            shown: Some(list),
            extra: None,
        }
    }

    /// A record from its parts; `None` when it would say nothing (no list, nothing pending).
    pub fn new(
        shown: Option<Arc<ButtonList>>,
        follows: bool,
        pending: Option<Pending>,
    ) -> Option<TargetRecord> {
        if shown.is_none() && pending.is_none() {
            return None;
        }
        let extra = (follows || pending.is_some()).then(|| Box::new(Extra { follows, pending }));
        Some(TargetRecord { shown, extra })
    }

    /// The list the API last accepted, if any.
    pub fn shown(&self) -> Option<&ButtonList> {
        self.shown.as_deref()
    }

    /// Whether the target left the config and follows its chat's whole-chat buttons.
    pub fn follows(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.follows)
    }

    /// What is pending, if anything.
    pub fn pending(&self) -> Option<&Pending> {
        self.extra.as_ref().and_then(|e| e.pending.as_ref())
    }

    /// Applied, with nothing pending: what the state records is what Feishu shows.
    pub fn is_settled(&self) -> bool {
        self.pending().is_none()
    }

    /// The same record with `pending` instead of what it had.
    pub fn with_pending(&self, pending: Option<Pending>) -> Option<TargetRecord> {
        TargetRecord::new(self.shown.clone(), self.follows(), pending)
    }
}

/// The base URL and app id a state belongs to (never the secret: secrets are not stored).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    pub base_url: String,
    pub app_id: String,
}

impl Binding {
    /// A binding, with trailing slashes cut from the base URL so that `https://x/` and `https://x`
    /// are the same endpoint.
    pub fn new(base_url: impl Into<String>, app_id: impl Into<String>) -> Binding {
        let base_url: String = base_url.into();
        Binding {
            base_url: base_url.trim_end_matches('/').to_owned(),
            app_id: app_id.into(),
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "base URL {} and app id {}", self.base_url, self.app_id)
    }
}

/// One change to record: part of one call's outcome, or a hand repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The target shows `buttons`, as the API accepted them, and nothing about it is pending
    /// (an empty list: it was cleared, and is still tracked). Shared: one call's records, and
    /// those `state adopt` makes of the config, carry one copy of each list.
    Set {
        target: Target,
        buttons: Arc<ButtonList>,
    },
    /// The target's whole record is `record` (a follower, or something pending).
    Put {
        target: Target,
        record: TargetRecord,
    },
    /// The target is no longer tracked (its whole-chat buttons were cleared, or it was removed
    /// by hand).
    Forget { target: Target },
}

impl Record {
    /// The target the record is about.
    pub fn target(&self) -> &Target {
        match self {
            Record::Set { target, .. } | Record::Put { target, .. } | Record::Forget { target } => {
                target
            }
        }
    }

    /// `Put` for a record, `Forget` when there is none left to keep.
    pub fn put_or_forget(target: Target, record: Option<TargetRecord>) -> Record {
        match record {
            Some(record) => Record::Put { target, record },
            None => Record::Forget { target },
        }
    }
}

impl AppliedState {
    /// A state nothing was applied to yet: no lineage, serial 0, unbound, no targets.
    pub fn new() -> AppliedState {
        AppliedState::default()
    }

    /// Refuses to use this state with an endpoint or app other than the one it was applied with.
    /// An unbound state accepts any binding (the first apply binds it).
    pub fn check_binding(&self, wanted: &Binding) -> Result<(), StateError> {
        match &self.binding {
            Some(recorded) if recorded != wanted => Err(StateError::BindingMismatch {
                location: "the applied state".to_owned(),
                recorded: recorded.clone(),
                wanted: wanted.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Applies one batch of records in memory (the store makes it durable first). Equal button
    /// lists in the batch (one call's users) share one allocation.
    ///
    /// A batch about as large as the state (`state adopt`, a first apply) is built into a map of
    /// its own and merged in: a bulk build of sorted keys instead of a million inserts.
    pub fn apply(&mut self, records: &[Record]) {
        let mut lists = Interner::default();
        let bulk = records.len() >= 1024 && records.len() >= self.targets.len() / 4;
        let mut batch: Vec<(Target, TargetRecord)> = Vec::new();
        for record in records {
            let (target, value) = match record {
                Record::Set { target, buttons } => {
                    (target, TargetRecord::applied(lists.intern_shared(buttons)))
                }
                Record::Put { target, record } => (target, lists.intern_record(record)),
                Record::Forget { target } => {
                    self.merge(&mut batch);
                    self.targets.remove(target);
                    continue;
                }
            };
            if bulk {
                batch.push((target.clone(), value));
            } else {
                self.targets.insert(target.clone(), value);
            }
        }
        self.merge(&mut batch);
    }

    /// Inserts `batch` (in the order given: a later record of a target wins), emptying it.
    fn merge(&mut self, batch: &mut Vec<(Target, TargetRecord)>) {
        if batch.is_empty() {
            return;
        }
        // A stable sort keeps a target's records in their order, and collecting keeps the last
        // of equal keys; `append` lets the batch's records win over the state's.
        let mut built: BTreeMap<Target, TargetRecord> = std::mem::take(batch).into_iter().collect();
        if self.targets.is_empty() {
            self.targets = built;
        } else {
            self.targets.append(&mut built);
        }
    }

    /// The targets of one chat, whole-chat target first, then users in id order.
    pub fn chat<'a>(
        &'a self,
        chat_id: &'a str,
    ) -> impl Iterator<Item = (&'a Target, &'a TargetRecord)> + 'a {
        self.targets
            .range(Target::everyone(chat_id)..)
            .take_while(move |(t, _)| t.chat_id == chat_id)
    }

    /// The list the API last accepted for `target`, if it is recorded with one.
    pub fn shown(&self, target: &Target) -> Option<&ButtonList> {
        self.targets.get(target).and_then(TargetRecord::shown)
    }

    /// The distinct chat ids, sorted.
    pub fn chat_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for t in self.targets.keys() {
            if ids.last() != Some(&t.chat_id.as_str()) {
                ids.push(&t.chat_id);
            }
        }
        ids
    }

    /// How many distinct button lists the targets show (each is stored once).
    pub fn distinct_button_lists(&self) -> usize {
        let mut by_pointer: HashMap<*const ButtonList, &ButtonList> = HashMap::new();
        for list in self.targets.values().filter_map(|r| r.shown.as_ref()) {
            by_pointer.insert(Arc::as_ptr(list), list);
        }
        by_pointer
            .into_values()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Targets by condition: followers, and targets uncertain, owed or waiting.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for record in self.targets.values() {
            let Some(extra) = &record.extra else { continue };
            c.followers += usize::from(extra.follows);
            match extra.pending.as_ref().map(|p| &p.status) {
                Some(PendingStatus::Uncertain { .. }) => c.uncertain += 1,
                Some(PendingStatus::Owed { .. }) => c.owed += 1,
                Some(PendingStatus::Waiting { .. }) => c.waiting += 1,
                None => {}
            }
        }
        c
    }
}

/// How many recorded targets are in each condition (see [`AppliedState::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub followers: usize,
    pub uncertain: usize,
    pub owed: usize,
    pub waiting: usize,
}

/// Hands out one shared copy of each distinct button list it is given.
#[derive(Default)]
struct Interner {
    // A fast hash: a batch of a million records looks up a million lists.
    lists: foldhash::HashMap<ButtonList, Arc<ButtonList>>,
    /// The last list handed out: neighbouring records mostly carry the same list, and comparing
    /// is cheaper than hashing.
    last: Option<Arc<ButtonList>>,
}

impl Interner {
    fn intern(&mut self, list: &ButtonList) -> Arc<ButtonList> {
        if let Some(last) = &self.last
            && **last == *list
        {
            return Arc::clone(last);
        }
        let shared = match self.lists.get(list) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared = Arc::new(list.clone());
                self.lists.insert(list.clone(), Arc::clone(&shared));
                shared
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// [`Interner::intern`] for a list that is shared already: the same allocation as the last
    /// one given is taken without comparing, and a new list is kept as it is, not copied.
    fn intern_shared(&mut self, list: &Arc<ButtonList>) -> Arc<ButtonList> {
        if let Some(last) = &self.last
            && (Arc::ptr_eq(last, list) || **last == **list)
        {
            return Arc::clone(last);
        }
        let shared = match self.lists.get(&**list) {
            Some(shared) => Arc::clone(shared),
            None => {
                self.lists.insert((**list).clone(), Arc::clone(list));
                Arc::clone(list)
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// `record` with its lists shared.
    fn intern_record(&mut self, record: &TargetRecord) -> TargetRecord {
        let mut out = record.clone();
        if let Some(shown) = &record.shown {
            out.shown = Some(self.intern(shown));
        }
        if let Some(pending) = out.extra.as_mut().and_then(|e| e.pending.as_mut()) {
            match &mut pending.status {
                PendingStatus::Uncertain { sent } => *sent = self.intern(sent),
                PendingStatus::Waiting { goal, .. } => *goal = self.intern(goal),
                PendingStatus::Owed { .. } => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn postgres_urls_name_their_store_without_the_password() {
        let store = open(Path::new(
            "postgres://bot:hunter2@db.example.com/feedbuttons",
        ))
        .expect("a PostgreSQL store");
        let location = store.location();
        assert!(location.contains("db.example.com"), "{location}");
        assert!(location.contains("\"default\""), "{location}");
        assert!(!location.contains("hunter2"), "{location}");
    }

    #[test]
    fn a_large_batch_applies_as_its_records_one_by_one() {
        use crate::feishu::wire::{ActionType, Button, Text, UserIdType};
        let list = |text: &str| {
            Arc::new(vec![Button {
                multi_url: None,
                action_type: ActionType::Webhook,
                text: Text {
                    text: text.to_owned(),
                },
                button_type: None,
                action_map: None,
            }])
        };
        let (a, b) = (list("A"), list("B"));
        let target = |i: usize| {
            Target::user(
                format!("oc_{}", i % 7),
                UserIdType::OpenId,
                format!("ou_{i}"),
            )
        };
        // Targets set twice (the later wins), forgotten between two sets, and forgotten last;
        // Puts among them; in no order.
        let mut records = Vec::new();
        for i in (0..3000).rev() {
            records.push(Record::Set {
                target: target(i),
                buttons: if i % 2 == 0 { a.clone() } else { b.clone() },
            });
            if i % 5 == 0 {
                records.push(Record::Forget { target: target(i) });
            }
            if i % 10 == 0 {
                records.push(Record::Set {
                    target: target(i),
                    buttons: b.clone(),
                });
            }
            if i % 11 == 0 {
                records.push(Record::put_or_forget(
                    target(i),
                    TargetRecord::new(Some(a.clone()), true, None),
                ));
            }
        }
        records.push(Record::Forget { target: target(3) });
        for start in [AppliedState::new(), {
            let mut s = AppliedState::new();
            s.apply(&records[..100]);
            s
        }] {
            let mut one_by_one = start.clone();
            for r in &records {
                one_by_one.apply(std::slice::from_ref(r));
            }
            let mut bulk = start;
            bulk.apply(&records);
            assert_eq!(bulk, one_by_one);
        }
    }

    #[test]
    fn binding_ignores_trailing_slashes() {
        assert_eq!(
            Binding::new("https://open.feishu.cn/", "cli_a"),
            Binding::new("https://open.feishu.cn", "cli_a")
        );
    }

    #[test]
    fn check_binding_names_both() {
        let mut state = AppliedState::new();
        let a = Binding::new("https://open.feishu.cn", "cli_a");
        let b = Binding::new("https://open.larksuite.com", "cli_b");
        assert!(
            state.check_binding(&a).is_ok(),
            "an unbound state accepts any"
        );
        state.binding = Some(a.clone());
        assert!(state.check_binding(&a).is_ok());
        let msg = state.check_binding(&b).expect_err("mismatch").to_string();
        for part in ["open.feishu.cn", "cli_a", "open.larksuite.com", "cli_b"] {
            assert!(msg.contains(part), "{msg}");
        }
    }
}
