//! The plan: desired state vs applied state -> per-target changes -> the fewest full-replacement
//! calls that make them so, in the order apply sends them. Rendering lives in `render` and `json`.

pub mod json;
pub mod render;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::feishu::wire::{self, UserIdType, api};
use crate::target::{Audience, ButtonList, Target};

/// What happens to one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Declared, never applied: its buttons are set.
    Add,
    /// Applied with other buttons: they are replaced.
    Change,
    /// Applied, no longer declared: its buttons are cleared, then it is forgotten.
    Remove,
    /// Unchanged, but sent again because its chat's whole-chat buttons change (`format.md`).
    Resend,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Change => "change",
            Action::Remove => "remove",
            Action::Resend => "resend",
        }
    }
}

/// One target's change: its buttons before (as recorded) and after.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub target: Target,
    pub action: Action,
    pub old: Option<Arc<ButtonList>>,
    /// Empty for a removal (the clearing call's list).
    pub new: Arc<ButtonList>,
}

/// One call: its query, its exact body, and the target changes it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub user_id_type: UserIdType,
    pub body: wire::ChatButtonRequest,
    pub changes: Vec<Change>,
}

/// Counts of targets by fate, and of calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
    pub unchanged: usize,
    /// Unchanged targets sent again after their chat's whole-chat change (counted in `unchanged` too).
    pub resend: usize,
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
pub struct Plan {
    pub summary: Summary,
    pub requests: Vec<Request>,
    /// `name:` labels of the chats in the plan.
    pub chat_names: BTreeMap<String, String>,
    pub mass_removal: Option<MassRemoval>,
    /// Calls per second the ETA assumes.
    pub rate_limit: u32,
}

/// What the plan compares against: the applied targets, sorted (a `BTreeMap`'s order).
pub trait Applied {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&Target, &ButtonList)> + '_>;
}

impl Applied for BTreeMap<Target, ButtonList> {
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&Target, &ButtonList)> + '_> {
        Box::new(self.iter())
    }
}

impl Applied for BTreeMap<Target, Arc<ButtonList>> {
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&Target, &ButtonList)> + '_> {
        Box::new(self.iter().map(|(t, b)| (t, b.as_ref())))
    }
}

/// Options that shape a plan without changing what is compared.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Only these chats (all when empty).
    pub chats: Vec<String>,
    /// Calls per second, for the ETA.
    pub rate_limit: u32,
}

/// Compares the desired targets with the applied ones and batches the changes into calls.
pub fn plan(
    desired: &BTreeMap<Target, Arc<ButtonList>>,
    chat_names: &BTreeMap<String, String>,
    applied: &dyn Applied,
    options: &PlanOptions,
) -> Plan {
    let wanted = |t: &Target| options.chats.is_empty() || options.chats.contains(&t.chat_id);
    let empty: Arc<ButtonList> = Arc::new(Vec::new());
    // The state holds one list per target; a plan shares one copy of each distinct old list.
    let mut old_lists: HashMap<&ButtonList, Arc<ButtonList>> = HashMap::new();
    let mut summary = Summary::default();

    // Merge-join the two sorted sequences, one chat at a time.
    let mut d = desired.iter().filter(|(t, _)| wanted(t)).peekable();
    let mut a = applied.entries().filter(|(t, _)| wanted(t)).peekable();
    let mut requests = Vec::new();
    let mut chat: Vec<Pair<'_>> = Vec::new();
    loop {
        let next_chat: &str = match (d.peek(), a.peek()) {
            (None, None) => break,
            (Some((dt, _)), None) => &dt.chat_id,
            (None, Some((at, _))) => &at.chat_id,
            (Some((dt, _)), Some((at, _))) => dt.chat_id.as_str().min(at.chat_id.as_str()),
        };
        chat.clear();
        loop {
            let dt = d.peek().map(|(t, _)| *t).filter(|t| t.chat_id == next_chat);
            let at = a.peek().map(|(t, _)| *t).filter(|t| t.chat_id == next_chat);
            let (take_d, take_a) = match (dt, at) {
                (None, None) => break,
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, true),
                (Some(x), Some(y)) => (x <= y, y <= x),
            };
            let desired_entry = if take_d { d.next() } else { None };
            let applied_entry = if take_a { a.next() } else { None };
            match (desired_entry, applied_entry) {
                (Some((t, new)), old) => chat.push((t, Some(new), old.map(|(_, b)| b))),
                (None, Some((t, old))) => chat.push((t, None, Some(old))),
                (None, None) => break,
            }
        }
        plan_chat(
            next_chat,
            &chat,
            &empty,
            &mut old_lists,
            &mut summary,
            &mut requests,
        );
    }
    summary.requests = requests.len();

    let applied_total = applied.len();
    let desired_total = desired.len();
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

    let chat_names = requests
        .iter()
        .filter_map(|r: &Request| {
            chat_names
                .get(&r.body.chat_id)
                .map(|n| (r.body.chat_id.clone(), n.clone()))
        })
        .collect();
    Plan {
        summary,
        requests,
        chat_names,
        mass_removal,
        rate_limit: options.rate_limit,
    }
}

/// One target of a chat: desired list (if declared) and applied list (if recorded).
type Pair<'a> = (
    &'a Target,
    Option<&'a Arc<ButtonList>>,
    Option<&'a ButtonList>,
);

/// Plans one chat: the whole-chat call first, then per-user calls grouped by id type and list,
/// clearing calls before the others.
fn plan_chat<'a>(
    chat_id: &str,
    entries: &[Pair<'a>],
    empty: &Arc<ButtonList>,
    old_lists: &mut HashMap<&'a ButtonList, Arc<ButtonList>>,
    summary: &mut Summary,
    requests: &mut Vec<Request>,
) {
    let mut everyone_changes = false;
    let mut per_user: Vec<Change> = Vec::new();
    let mut unchanged_users: Vec<(&Target, &Arc<ButtonList>)> = Vec::new();
    for &(target, new, old) in entries {
        let change = match (new, old) {
            (Some(new), None) => {
                summary.add += 1;
                Change {
                    target: target.clone(),
                    action: Action::Add,
                    old: None,
                    new: new.clone(),
                }
            }
            (Some(new), Some(old)) if new.as_slice() == old.as_slice() => {
                summary.unchanged += 1;
                if target.audience != Audience::Everyone {
                    unchanged_users.push((target, new));
                }
                continue;
            }
            (Some(new), Some(old)) => {
                summary.change += 1;
                Change {
                    target: target.clone(),
                    action: Action::Change,
                    old: Some(shared(old_lists, old)),
                    new: new.clone(),
                }
            }
            (None, Some(old)) => {
                summary.remove += 1;
                Change {
                    target: target.clone(),
                    action: Action::Remove,
                    old: Some(shared(old_lists, old)),
                    new: empty.clone(),
                }
            }
            (None, None) => continue,
        };
        if target.audience == Audience::Everyone {
            everyone_changes = true;
            requests.push(Request {
                user_id_type: UserIdType::OpenId,
                body: wire::ChatButtonRequest {
                    user_ids: None,
                    chat_id: chat_id.to_owned(),
                    buttons: wire::Buttons {
                        buttons: change.new.to_vec(),
                    },
                },
                changes: vec![change],
            });
        } else {
            per_user.push(change);
        }
    }
    // A whole-chat call may overwrite what users see: send their own lists again after it.
    if everyone_changes {
        for (target, list) in unchanged_users {
            summary.resend += 1;
            per_user.push(Change {
                target: target.clone(),
                action: Action::Resend,
                old: Some(list.clone()),
                new: list.clone(),
            });
        }
        per_user.sort_by(|a, b| a.target.cmp(&b.target));
    }
    // Group by (id type, new list), in the order of each group's first user, so output is
    // stable. Lists are compared by pointer first (the config shares one copy of each distinct
    // list) and by content once per distinct pointer, so equal lists always share a group.
    let mut groups: Vec<(UserIdType, Arc<ButtonList>, Vec<Change>)> = Vec::new();
    let mut by_ptr: HashMap<(UserIdType, *const ButtonList), usize> = HashMap::new();
    let mut by_content: HashMap<(UserIdType, ButtonList), usize> = HashMap::new();
    for change in per_user {
        let id_type = match &change.target.audience {
            Audience::User { id_type, .. } => *id_type,
            Audience::Everyone => UserIdType::OpenId,
        };
        let ptr = Arc::as_ptr(&change.new);
        let g = match by_ptr.get(&(id_type, ptr)) {
            Some(&g) => g,
            None => {
                let g = *by_content
                    .entry((id_type, change.new.to_vec()))
                    .or_insert_with(|| {
                        groups.push((id_type, change.new.clone(), Vec::new()));
                        groups.len() - 1
                    });
                by_ptr.insert((id_type, ptr), g);
                g
            }
        };
        groups[g].2.push(change);
    }
    // Clearing calls go before setting ones: when a chat's users move to another id type, the
    // old ids' clears reach the same people as the new ids' lists, and must land first.
    groups.sort_by_key(|(_, list, _)| !list.is_empty());
    for (id_type, list, changes) in groups {
        let mut changes = changes.into_iter();
        loop {
            let chunk: Vec<Change> = changes.by_ref().take(api::MAX_USERS_PER_CALL).collect();
            if chunk.is_empty() {
                break;
            }
            let user_ids = chunk
                .iter()
                .filter_map(|c| c.target.user_id().map(str::to_owned))
                .collect();
            requests.push(Request {
                user_id_type: id_type,
                body: wire::ChatButtonRequest {
                    user_ids: Some(user_ids),
                    chat_id: chat_id.to_owned(),
                    buttons: wire::Buttons {
                        buttons: list.to_vec(),
                    },
                },
                changes: chunk,
            });
        }
    }
}

/// The one shared copy of `list`.
fn shared<'a>(
    cache: &mut HashMap<&'a ButtonList, Arc<ButtonList>>,
    list: &'a ButtonList,
) -> Arc<ButtonList> {
    cache
        .entry(list)
        .or_insert_with(|| Arc::new(list.clone()))
        .clone()
}

impl Plan {
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
        let calls = if s.requests == 1 {
            "1 call".to_owned()
        } else {
            format!("{} calls", group_digits(s.requests as u64))
        };
        let eta = if s.requests == 0 {
            String::new()
        } else {
            format!(
                " (about {} at {} calls/s)",
                human_duration(self.eta_seconds()),
                self.rate_limit.max(1)
            )
        };
        format!(
            "Plan: {} to add, {} to change, {} to remove, {} unchanged; {calls}{eta}.",
            group_digits(s.add as u64),
            group_digits(s.change as u64),
            group_digits(s.remove as u64),
            group_digits(s.unchanged as u64),
        )
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `75` -> `1 min 15 s`; `4000` -> `1 h 7 min`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 if secs.is_multiple_of(60) => format!("{} min", secs / 60),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}
