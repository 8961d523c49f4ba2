//! The plan: desired state vs applied state -> per-target changes -> the fewest full-replacement
//! calls that make them so, in the order apply sends them. Rendering lives in `render` and `json`.
//!
//! What each target should show:
//! - a target the config declares: its list;
//! - a user target the state records and the config no longer declares: its chat's whole-chat
//!   list, or none when the chat has none (it *follows* the whole-chat buttons, so that a user
//!   removed from the config sees what the rest of the chat sees, and is sent the new list when
//!   it changes);
//! - a whole-chat target the config no longer declares: cleared, then forgotten.
//!
//! A target is sent when what the state records differs from that, and also, whatever the
//! lists say, when the state marks it uncertain, owed or waiting (see `state::PendingStatus`),
//! when its chat's whole-chat call is sent (the API does not say whether that call overwrites
//! users' lists), or when a call for a target leaving the config under another id type goes
//! first in its chat (during a move to another `user_id_type` it may reach the same person).

mod chat;
mod split;
use chat::Ctx;
pub mod json;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::feishu::wire::{self, UserIdType, api};
use crate::id::Id;
use crate::state::{OwedReason, Pending, PendingStatus, Record, TargetRecord};
use crate::target::{Audience, ButtonList, Target};
use crate::text::{count, group_digits, human_duration};

/// What happens to one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Declared, never applied: its buttons are set.
    Add,
    /// Applied with other buttons: they are replaced.
    Change,
    /// Applied, no longer declared: a user gets its chat's whole-chat buttons (none when the
    /// chat has none) and follows them from then on; the whole-chat target is cleared and
    /// forgotten.
    Remove,
    /// Unchanged, but sent again: its chat's whole-chat call goes first, another id type's
    /// removal in its chat may have reached the same person, or the state says it is owed or
    /// uncertain.
    Resend,
    /// No longer declared and following its chat's whole-chat buttons: sent their new list (or
    /// the same one again, for the reasons of `Resend`).
    Follow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Change => "change",
            Action::Remove => "remove",
            Action::Resend => "resend",
            Action::Follow => "follow",
        }
    }

    /// Whether the target leaves the config (or left it): it ends up following its chat's
    /// whole-chat buttons.
    pub fn follows(self) -> bool {
        matches!(self, Action::Remove | Action::Follow)
    }
}

/// Why a change is in the plan beyond its lists, for the reviewer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// Sent again because its chat's whole-chat call goes first.
    WholeChat,
    /// Sent again because a call under another id type in its chat goes first.
    IdTypeMove,
    /// The state marks it owed a re-send.
    Owed { reason: OwedReason, since: u64 },
    /// A call for it was sent at `since` and its answer never came.
    Uncertain { since: u64 },
    /// The API refused it (the user is not in the chat) since `since`, `tries` times.
    Waiting {
        reason: String,
        since: u64,
        tries: u32,
    },
}

impl Note {
    /// `whole_chat`, `id_type_move`, `owed`, `uncertain` or `waiting`.
    pub fn kind(&self) -> &'static str {
        match self {
            Note::WholeChat => "whole_chat",
            Note::IdTypeMove => "id_type_move",
            Note::Owed { .. } => "owed",
            Note::Uncertain { .. } => "uncertain",
            Note::Waiting { .. } => "waiting",
        }
    }

    /// For people: `owed since 2026-12-01T10:00:00Z: ...`.
    pub fn describe(&self) -> String {
        let at = |t: u64| crate::time::rfc3339_seconds(t);
        match self {
            Note::WholeChat => "its chat's whole-chat call goes first".to_owned(),
            Note::IdTypeMove => {
                "a removal under another id type in its chat goes first and may reach the same person"
                    .to_owned()
            }
            Note::Owed { reason, since } => {
                format!("owed since {}: {}", at(*since), reason.describe())
            }
            Note::Uncertain { since } => format!(
                "uncertain: a call sent at {} was never answered",
                at(*since)
            ),
            Note::Waiting {
                reason,
                since,
                tries,
            } => format!(
                "waiting since {} ({}): {reason}",
                at(*since),
                count(*tries as usize, "try", "tries")
            ),
        }
    }

    fn of(pending: &Pending) -> Note {
        match &pending.status {
            PendingStatus::Uncertain { .. } => Note::Uncertain {
                since: pending.since,
            },
            PendingStatus::Owed { reason } => Note::Owed {
                reason: *reason,
                since: pending.since,
            },
            PendingStatus::Waiting { reason, tries, .. } => Note::Waiting {
                reason: reason.clone(),
                since: pending.since,
                tries: *tries,
            },
        }
    }
}

/// One target's change: its buttons before (as recorded) and after. The target is borrowed
/// from the desired or applied targets the plan was made from: a plan of a million changes
/// copies no id.
#[derive(Clone, Debug, PartialEq)]
pub struct Change<'a> {
    pub target: &'a Target,
    pub action: Action,
    /// The list the state records the API accepted; `None` when it never accepted one.
    pub old: Option<Arc<ButtonList>>,
    /// What the call sends (for a removal: the chat's whole-chat list, or the empty list).
    pub new: Arc<ButtonList>,
    /// Boxed: most changes have none.
    pub note: Option<Box<Note>>,
}

impl Change<'_> {
    /// Whether the target waits for its user (the API refused it before).
    pub fn waiting(&self) -> bool {
        matches!(self.note.as_deref(), Some(Note::Waiting { .. }))
    }
}

/// One call: its query, its exact body, and the target changes it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Request<'a> {
    pub user_id_type: UserIdType,
    pub body: wire::ChatButtonRequest,
    pub changes: Vec<Change<'a>>,
}

/// Counts of targets by fate, and of calls. Every change counts once: a change retried for a
/// target that waits counts under `waiting`, every other under its action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
    pub unchanged: usize,
    /// Unchanged targets sent again (counted in `unchanged` too): after their chat's
    /// whole-chat call or another id type's removal, or because the state marks them owed or
    /// uncertain.
    #[serde(default)]
    pub resend: usize,
    /// Targets no longer declared that follow their chat's whole-chat buttons and are sent
    /// them.
    #[serde(default)]
    pub follow: usize,
    /// Targets the API refused before (their user is not in the chat): retried, or held back
    /// until their next try (watch).
    #[serde(default)]
    pub waiting: usize,
    pub requests: usize,
}

/// Why a plan removes so much that apply wants `--allow-mass-removal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassRemoval {
    pub remove: usize,
    pub applied: usize,
    pub reason: String,
}

/// Share of the applied targets above which a removal is "mass" (when at least `MASS_MIN` are applied).
pub const MASS_REMOVAL_SHARE: f64 = 0.25;
pub const MASS_MIN_APPLIED: usize = 10;

/// Everything apply needs, and everything a reviewer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan<'a> {
    pub summary: Summary,
    pub requests: Vec<Request<'a>>,
    /// `name:` labels of the chats in the plan.
    pub chat_names: BTreeMap<String, String>,
    /// How to show a user id: the email, mobile or name the lock knows it by.
    pub people: BTreeMap<String, String>,
    pub mass_removal: Option<MassRemoval>,
    /// Calls per second the ETA assumes.
    pub rate_limit: u32,
    /// Records to write without any call: waiting targets that the config no longer asks to
    /// change (the refused call is moot, and what the state records is what Feishu shows).
    pub settle: Vec<Record>,
    /// The earliest time (Unix seconds) a waiting target held back by the backoff is due.
    pub next_retry: Option<u64>,
}

/// One recorded target, as the plan reads it.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub shown: Option<&'a Arc<ButtonList>>,
    pub follows: bool,
    pub pending: Option<&'a Pending>,
}

impl<'a> Recorded<'a> {
    fn of(record: &'a TargetRecord) -> Recorded<'a> {
        Recorded {
            shown: record.shown.as_ref(),
            follows: record.follows(),
            pending: record.pending(),
        }
    }

    fn applied(list: &'a Arc<ButtonList>) -> Recorded<'a> {
        Recorded {
            shown: Some(list),
            follows: false,
            pending: None,
        }
    }
}

/// What the plan compares against: the recorded targets, sorted (a `BTreeMap`'s order).
pub trait Applied: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The records from `from` (the first, when `None`) up to `to` (the last, when `None`;
    /// never `to` itself), in order.
    fn range(
        &self,
        from: Option<&Target>,
        to: Option<&Target>,
    ) -> Box<dyn Iterator<Item = (&Target, Recorded<'_>)> + '_>;
    /// The records of one chat, in order.
    fn chat_entries<'s, 'c>(
        &'s self,
        chat_id: &'c str,
    ) -> Box<dyn Iterator<Item = (&'s Target, Recorded<'s>)> + 'c>
    where
        's: 'c;
}

/// The entries of one chat in a map sorted by target: a chat's targets are neighbours, its
/// whole-chat target first.
fn chat_range<'m, 'c, V>(
    map: &'m BTreeMap<Target, V>,
    chat_id: &'c str,
) -> impl Iterator<Item = (&'m Target, &'m V)> + 'c
where
    'm: 'c,
{
    map.range(Target::everyone(chat_id)..)
        .take_while(move |(t, _)| t.chat_id == chat_id)
}

/// The entries of a map sorted by target from `from` up to `to` (not included); `None` leaves
/// that end open.
fn between<'m, V>(
    map: &'m BTreeMap<Target, V>,
    from: Option<&Target>,
    to: Option<&Target>,
) -> std::collections::btree_map::Range<'m, Target, V> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let lo = from.map_or(Unbounded, Included);
    let hi = to.map_or(Unbounded, Excluded);
    map.range::<Target, _>((lo, hi))
}

/// An applied state's records.
impl Applied for BTreeMap<Target, TargetRecord> {
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn range(
        &self,
        from: Option<&Target>,
        to: Option<&Target>,
    ) -> Box<dyn Iterator<Item = (&Target, Recorded<'_>)> + '_> {
        Box::new(between(self, from, to).map(|(t, r)| (t, Recorded::of(r))))
    }
    fn chat_entries<'s, 'c>(
        &'s self,
        chat_id: &'c str,
    ) -> Box<dyn Iterator<Item = (&'s Target, Recorded<'s>)> + 'c>
    where
        's: 'c,
    {
        Box::new(chat_range(self, chat_id).map(|(t, r)| (t, Recorded::of(r))))
    }
}

/// Another config's desired targets (`plan --base`): every one applied as declared.
impl Applied for BTreeMap<Target, Arc<ButtonList>> {
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn range(
        &self,
        from: Option<&Target>,
        to: Option<&Target>,
    ) -> Box<dyn Iterator<Item = (&Target, Recorded<'_>)> + '_> {
        Box::new(between(self, from, to).map(|(t, b)| (t, Recorded::applied(b))))
    }
    fn chat_entries<'s, 'c>(
        &'s self,
        chat_id: &'c str,
    ) -> Box<dyn Iterator<Item = (&'s Target, Recorded<'s>)> + 'c>
    where
        's: 'c,
    {
        Box::new(chat_range(self, chat_id).map(|(t, b)| (t, Recorded::applied(b))))
    }
}

/// When `watch` tries a waiting target again: `first` after the first refusal, doubling with
/// every refusal up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitingBackoff {
    /// Now, in Unix seconds.
    pub now: u64,
    pub first: u64,
    pub max: u64,
}

impl WaitingBackoff {
    /// When a target refused `tries` times, the last time at `last_try`, is due again.
    pub fn due_at(&self, tries: u32, last_try: u64) -> u64 {
        let doublings = tries.saturating_sub(1).min(32);
        let wait = self
            .first
            .saturating_mul(1u64 << doublings)
            .min(self.max.max(self.first));
        last_try.saturating_add(wait)
    }
}

/// Options that shape a plan without changing what is compared.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Only these chats (all when empty).
    pub chats: Vec<String>,
    /// Calls per second, for the ETA.
    pub rate_limit: u32,
    /// Hold back waiting targets until their next try (watch); `None`: retry them now.
    pub waiting_backoff: Option<WaitingBackoff>,
    /// Send every recorded target that nothing is pending for, even if unchanged (resync).
    pub resend_all: bool,
    /// Threads to plan on, each taking a run of whole chats: 0 plans a large plan on every
    /// core and a small one on this thread alone; any other number splits every plan that
    /// many ways (fewer when it has fewer chats). The plan is the same whichever is used.
    pub threads: usize,
}

impl PlanOptions {
    /// Whether `target`'s chat is one the plan compares (every chat when none is named).
    fn wants(&self, target: &Target) -> bool {
        self.chats.is_empty() || self.chats.iter().any(|c| *c == target.chat_id)
    }
}

/// Compares the desired targets with the recorded ones and batches the changes into calls.
pub fn plan<'a>(
    desired: &'a BTreeMap<Target, Arc<ButtonList>>,
    chat_names: &BTreeMap<String, String>,
    applied: &'a dyn Applied,
    options: &PlanOptions,
) -> Plan<'a> {
    plan_in(
        desired,
        chat_names,
        applied,
        options,
        Scope::Every,
        &mut |_, _| {},
    )
}

/// What one chat adds to a plan beyond its calls. A chat whose plan is *quiet* (no call, nothing
/// to settle, no waiting target held back) plans the same way again for as long as neither its
/// declared targets nor its records change, so `watch` keeps its tally and plans only the chats
/// an edit or a call touched ([`Scope::Chats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChatTally {
    /// Its targets by fate (`requests` is not counted here).
    pub summary: Summary,
    /// Its recorded targets that the config manages (not followers).
    pub managed: usize,
    /// Its declared targets.
    pub declared: usize,
    /// Nothing to send, settle or wait for.
    pub quiet: bool,
}

impl Summary {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Summary) {
        self.add += other.add;
        self.change += other.change;
        self.remove += other.remove;
        self.unchanged += other.unchanged;
        self.resend += other.resend;
        self.follow += other.follow;
        self.waiting += other.waiting;
        self.requests += other.requests;
    }
}

impl ChatTally {
    /// The counts of `self` and `other` together (quiet when both are).
    pub fn add(&mut self, other: &ChatTally) {
        self.summary.add(&other.summary);
        self.managed += other.managed;
        self.declared += other.declared;
        self.quiet &= other.quiet;
    }
}

/// Which chats a plan compares.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'s> {
    /// Every chat of the desired and applied targets.
    Every,
    /// Only these chats; `rest` is the sum of the tallies of every other chat, all quiet, so
    /// that the plan is the one [`Scope::Every`] would give.
    Chats {
        chats: &'s BTreeSet<String>,
        rest: ChatTally,
    },
}

/// [`plan`] over a [`Scope`], telling `tally` what each chat it compared adds (in chat order).
pub fn plan_in<'a>(
    desired: &'a BTreeMap<Target, Arc<ButtonList>>,
    chat_names: &BTreeMap<String, String>,
    applied: &'a dyn Applied,
    options: &PlanOptions,
    scope: Scope<'_>,
    tally: &mut dyn FnMut(&str, ChatTally),
) -> Plan<'a> {
    let mut ctx: Ctx<'_, 'a> = Ctx::new(options);
    let mut chat: Vec<Pair<'_>> = Vec::new();
    let desired_total = match scope {
        Scope::Every => {
            split::plan_every(&mut ctx, desired, applied, tally);
            desired.len()
        }
        Scope::Chats { chats, rest } => {
            let mut declared = rest.declared;
            let mut counted = |chat_id: &str, t: ChatTally| {
                declared += t.declared;
                tally(chat_id, t);
            };
            for chat_id in chats {
                let d = chat_range(desired, chat_id).filter(|(t, _)| options.wants(t));
                let a = applied
                    .chat_entries(chat_id)
                    .filter(|(t, _)| options.wants(t));
                ctx.merge(d, a, &mut chat, &mut counted);
            }
            let mut total = rest;
            total.add(&ChatTally {
                summary: ctx.summary,
                managed: ctx.managed,
                ..ChatTally::default()
            });
            ctx.summary = total.summary;
            ctx.managed = total.managed;
            declared
        }
    };
    let mut summary = ctx.summary;
    summary.requests = ctx.requests.len();

    // Only targets the config manages count: followers left it already.
    let applied_total = ctx.managed;
    let mass_removal = if summary.remove > 0 && desired_total == 0 {
        Some(MassRemoval {
            remove: summary.remove,
            applied: applied_total,
            reason:
                "the config declares no targets at all, so every applied target would be removed"
                    .to_owned(),
        })
    } else if applied_total >= MASS_MIN_APPLIED
        && summary.remove as f64 > MASS_REMOVAL_SHARE * applied_total as f64
    {
        Some(MassRemoval {
            remove: summary.remove,
            applied: applied_total,
            reason: format!(
                "{} of {} applied targets ({}%) would be removed, more than {}%",
                summary.remove,
                applied_total,
                summary.remove * 100 / applied_total.max(1),
                (MASS_REMOVAL_SHARE * 100.0) as u32
            ),
        })
    } else {
        None
    };

    let chat_names = ctx
        .requests
        .iter()
        .filter_map(|r: &Request| {
            chat_names
                .get(r.body.chat_id.as_str())
                .map(|n| (r.body.chat_id.to_string(), n.clone()))
        })
        .collect();
    Plan {
        summary,
        requests: ctx.requests,
        chat_names,
        people: BTreeMap::new(),
        mass_removal,
        rate_limit: options.rate_limit,
        settle: ctx.settle,
        next_retry: ctx.next_retry,
    }
}

/// One target of a chat: desired list (if declared) and record (if recorded).
type Pair<'a> = (
    &'a Target,
    Option<&'a Arc<ButtonList>>,
    Option<Recorded<'a>>,
);

impl Plan<'_> {
    /// Takes from `people` (id -> email, mobile or name) the labels of the users this plan
    /// sends, so that it shows them beside their ids.
    pub fn label_people(&mut self, people: &BTreeMap<String, String>) {
        if people.is_empty() {
            return;
        }
        for r in &self.requests {
            for c in &r.changes {
                if let Some(id) = c.target.user_id()
                    && let Some(label) = people.get(id)
                {
                    self.people.insert(id.to_owned(), label.clone());
                }
            }
        }
    }

    /// Whether applying the plan would send anything.
    pub fn has_changes(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Seconds the calls take at the plan's rate (at least 1 when there is any call).
    pub fn eta_seconds(&self) -> u64 {
        let n = self.requests.len() as u64;
        if n == 0 {
            return 0;
        }
        let rate = u64::from(self.rate_limit.max(1));
        n.div_ceil(rate).max(1)
    }

    /// `Plan: 12 to add, 3 to change, 2 to remove, 40 unchanged; 5 calls (about 1 s at 10 calls/s).`
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let calls = count(s.requests, "call", "calls");
        let eta = if s.requests == 0 {
            String::new()
        } else {
            format!(
                " (about {} at {} calls/s)",
                human_duration(self.eta_seconds()),
                self.rate_limit.max(1)
            )
        };
        let mut more = String::new();
        if s.follow > 0 {
            more.push_str(&format!(
                ", {} following the whole-chat buttons",
                group_digits(s.follow as u64)
            ));
        }
        if s.waiting > 0 {
            more.push_str(&format!(
                ", {} waiting for their users to join the chat",
                group_digits(s.waiting as u64)
            ));
        }
        format!(
            "Plan: {} to add, {} to change, {} to remove, {} unchanged{more}; {calls}{eta}.",
            group_digits(s.add as u64),
            group_digits(s.change as u64),
            group_digits(s.remove as u64),
            group_digits(s.unchanged as u64),
        )
    }
}
