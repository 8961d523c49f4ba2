//! What `feedbuttons state list|show|rm|adopt` does, for the CLI to wrap. Takes a loaded state
//! (to inspect) or a writer (to repair); gives the text to print, or records the repair.
//!
//! Every listing is in target order (chat, then the whole chat before users, users by id type
//! and id), so the same state prints the same bytes.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::{
    AppliedState, PendingStatus, Record, StateError, StateWriter, TargetRecord, audience_spec,
};
use crate::feishu::wire::{Button, UserIdType};
use crate::target::{Audience, ButtonList, Target};

/// Which recorded targets a `show` or `rm` is about: a whole chat, or one audience in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub chat_id: String,
    /// `None`: every target of the chat. `everyone`: the whole-chat target. `open_id:ou_…`: that
    /// user. A bare id (`ou_…`): that user under any id type.
    pub audience: Option<String>,
}

impl Selector {
    /// Every recorded target of `chat_id`.
    pub fn chat(chat_id: impl Into<String>) -> Selector {
        Selector {
            chat_id: chat_id.into(),
            audience: None,
        }
    }

    /// One audience of `chat_id`: `everyone`, `open_id:ou_…` or a bare user id.
    pub fn audience(chat_id: impl Into<String>, audience: impl Into<String>) -> Selector {
        Selector {
            chat_id: chat_id.into(),
            audience: Some(audience.into()),
        }
    }

    /// Whether `target` is one the selector names.
    pub fn matches(&self, target: &Target) -> bool {
        if target.chat_id != self.chat_id {
            return false;
        }
        let Some(wanted) = &self.audience else {
            return true;
        };
        match &target.audience {
            Audience::Everyone => wanted == "everyone",
            Audience::User { id_type, id } => match wanted.split_once(':') {
                Some((ty, wanted_id)) if UserIdType::parse(ty).is_some() => {
                    UserIdType::parse(ty) == Some(*id_type) && wanted_id == id
                }
                _ => wanted == id,
            },
        }
    }

    /// The targets of `state` the selector names, in order.
    pub fn select<'a>(&'a self, state: &'a AppliedState) -> Vec<(&'a Target, &'a TargetRecord)> {
        state
            .chat(&self.chat_id)
            .filter(|(t, _)| self.matches(t))
            .collect()
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.audience {
            None => write!(f, "chat {}", self.chat_id),
            Some(a) => write!(f, "{} in chat {}", a, self.chat_id),
        }
    }
}

/// A few lines about the state as a whole: where, lineage and serial, binding, counts.
pub fn summary(state: &AppliedState, location: &str) -> String {
    let mut out = format!("state: {location}\n");
    if state.lineage.is_empty() {
        out.push_str("lineage: none yet (nothing recorded)\n");
    } else {
        let _ = writeln!(out, "lineage: {}, serial {}", state.lineage, state.serial);
    }
    match &state.binding {
        Some(b) => {
            let _ = writeln!(out, "bound to: {b}");
        }
        None => out.push_str("bound to: nothing yet (bound by the first apply)\n"),
    }
    let _ = writeln!(
        out,
        "targets: {} in {} chats, {} distinct button lists",
        state.targets.len(),
        state.chat_ids().len(),
        state.distinct_button_lists()
    );
    let c = state.counts();
    if c.followers > 0 {
        let _ = writeln!(
            out,
            "followers: {} (no longer in the config; they show their chat's whole-chat buttons)",
            c.followers
        );
    }
    if c.uncertain + c.owed + c.waiting > 0 {
        let _ = writeln!(
            out,
            "pending: {} uncertain, {} owed, {} waiting (the next apply sends them; see below)",
            c.uncertain, c.owed, c.waiting
        );
    }
    out
}

/// What a record's condition is, for people: empty when it is simply applied.
pub fn condition(record: &TargetRecord) -> String {
    let at = crate::time::rfc3339_seconds;
    let mut parts = Vec::new();
    if record.follows() {
        parts.push("follows the whole-chat buttons".to_owned());
    }
    if let Some(p) = record.pending() {
        parts.push(match &p.status {
            PendingStatus::Uncertain { sent } => format!(
                "uncertain since {}: a call setting {} was never answered",
                at(p.since),
                texts(sent)
            ),
            PendingStatus::Owed { reason } => {
                format!("owed since {}: {}", at(p.since), reason.describe())
            }
            PendingStatus::Waiting {
                goal,
                reason,
                tries,
                last_try,
                ..
            } => format!(
                "waiting since {} ({}, the last at {}): {}; wants {}",
                at(p.since),
                crate::text::count(*tries as usize, "try", "tries"),
                at(*last_try),
                reason,
                texts(goal)
            ),
        });
    }
    parts.join("; ")
}

/// The shown list's texts, or what stands for none.
fn shown_texts(record: &TargetRecord) -> String {
    match record.shown() {
        Some(list) => texts(list),
        None => "(nothing applied yet)".to_owned(),
    }
}

/// One line per recorded target (of one chat, if `chat` is given): chat id, audience (`everyone`
/// or `open_id:ou_…`), the quoted button texts, in columns, and after them the target's
/// condition when it is more than applied (a follower; uncertain, owed or waiting, since when
/// and why). Empty when nothing matches.
pub fn list(state: &AppliedState, chat: Option<&str>) -> String {
    list_people(state, chat, &std::collections::BTreeMap::new())
}

/// [`list`], with each user the lock knows shown by email (or mobile, or name) after the id:
/// `open_id:ou_… (alice@example.com)`.
pub fn list_people(
    state: &AppliedState,
    chat: Option<&str>,
    people: &std::collections::BTreeMap<String, String>,
) -> String {
    let spec = |t: &Target| match t.user_id().and_then(|id| people.get(id)) {
        Some(person) => format!("{} ({person})", audience_spec(t)),
        None => audience_spec(t),
    };
    let rows: Vec<(&Target, String, &TargetRecord)> = match chat {
        Some(c) => state.chat(c).map(|(t, r)| (t, spec(t), r)).collect(),
        None => state.targets.iter().map(|(t, r)| (t, spec(t), r)).collect(),
    };
    let chat_width = rows
        .iter()
        .map(|(t, ..)| t.chat_id.len())
        .max()
        .unwrap_or(0);
    let audience_width = rows
        .iter()
        .map(|(_, a, _)| a.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(rows.len() * (chat_width + audience_width + 40));
    for (target, audience, record) in &rows {
        let condition = condition(record);
        let _ = write!(
            out,
            "{:chat_width$}  {:audience_width$}  {}",
            target.chat_id,
            audience,
            shown_texts(record)
        );
        if !condition.is_empty() {
            let _ = write!(out, "  [{condition}]");
        }
        out.push('\n');
    }
    out
}

/// `"Runbook", "Acknowledge"`, or `(no buttons)`: texts quoted, so that one with a comma or a
/// line break cannot break the listing.
fn texts(buttons: &ButtonList) -> String {
    if buttons.is_empty() {
        return "(no buttons)".to_owned();
    }
    buttons
        .iter()
        .map(|b| quote(&b.text.text))
        .collect::<Vec<_>>()
        .join(", ")
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// How `show` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowFormat {
    /// Each target and its buttons, field by field.
    Text,
    /// `{"format_version": 1, "targets": [{"chat_id", "audience": {"kind", "id_type", "id"},
    /// "buttons": [wire buttons], "follows", "pending"}]}`.
    Json,
}

/// The full button lists of the targets `selector` names; [`StateError::NotFound`] if none.
pub fn show(
    state: &AppliedState,
    location: &str,
    selector: &Selector,
    format: ShowFormat,
) -> Result<String, StateError> {
    let selected = selector.select(state);
    if selected.is_empty() {
        return Err(StateError::NotFound {
            location: location.to_owned(),
            selector: selector.to_string(),
        });
    }
    Ok(match format {
        ShowFormat::Json => show_json(&selected),
        ShowFormat::Text => show_text(&selected),
    })
}

/// The version of the JSON that `state list` and `state show` print, their `format_version`.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// One recorded target in `state list|show --format json`.
#[derive(Serialize)]
struct TargetJson<'a> {
    #[serde(flatten)]
    target: &'a Target,
    /// `null` when the API never accepted a list for it.
    buttons: Option<&'a ButtonList>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    follows: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<PendingJson<'a>>,
}

impl<'a> TargetJson<'a> {
    fn of(target: &'a Target, record: &'a TargetRecord) -> TargetJson<'a> {
        TargetJson {
            target,
            buttons: record.shown(),
            follows: record.follows(),
            pending: record.pending().map(PendingJson::of),
        }
    }
}

fn to_json_text(value: &impl Serialize) -> String {
    let mut out = serde_json::to_string_pretty(value).unwrap_or_default();
    out.push('\n');
    out
}

fn show_json(selected: &[(&Target, &TargetRecord)]) -> String {
    #[derive(Serialize)]
    struct Shown<'a> {
        format_version: u32,
        targets: Vec<TargetJson<'a>>,
    }
    to_json_text(&Shown {
        format_version: JSON_FORMAT_VERSION,
        targets: selected
            .iter()
            .map(|&(target, record)| TargetJson::of(target, record))
            .collect(),
    })
}

/// [`summary`] and [`list`] as one JSON document: `format_version`, `state` (where), `lineage`
/// and `serial`, `binding` (`base_url`, `app_id`, or `null`), `counts` (`targets`, `chats`,
/// `button_lists`, `followers`, `uncertain`, `owed`, `waiting`) and `targets` (as `show` gives
/// them), every target or one chat's; and `people` (user id -> the email, mobile or name the
/// config's lock knows it by, for the targets listed; left out when empty).
pub fn list_json(
    state: &AppliedState,
    location: &str,
    chat: Option<&str>,
    people: &std::collections::BTreeMap<String, String>,
) -> String {
    #[derive(Serialize)]
    struct Listing<'a> {
        format_version: u32,
        state: &'a str,
        /// `null` until something is recorded.
        lineage: Option<&'a str>,
        serial: u64,
        binding: Option<&'a super::Binding>,
        counts: CountsJson,
        targets: Vec<TargetJson<'a>>,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        people: std::collections::BTreeMap<&'a str, &'a str>,
    }
    #[derive(Serialize)]
    struct CountsJson {
        targets: usize,
        chats: usize,
        button_lists: usize,
        #[serde(flatten)]
        conditions: super::Counts,
    }
    let targets: Vec<TargetJson> = match chat {
        Some(c) => state.chat(c).map(|(t, r)| TargetJson::of(t, r)).collect(),
        None => state
            .targets
            .iter()
            .map(|(t, r)| TargetJson::of(t, r))
            .collect(),
    };
    let listed = |t: &&Target| chat.is_none_or(|c| t.chat_id == c);
    let people = state
        .targets
        .keys()
        .filter(listed)
        .filter_map(|t| t.user_id())
        .filter_map(|id| people.get_key_value(id))
        .map(|(id, label)| (id.as_str(), label.as_str()))
        .collect();
    to_json_text(&Listing {
        format_version: JSON_FORMAT_VERSION,
        state: location,
        lineage: (!state.lineage.is_empty()).then_some(state.lineage.as_str()),
        serial: state.serial,
        binding: state.binding.as_ref(),
        counts: CountsJson {
            targets: state.targets.len(),
            chats: state.chat_ids().len(),
            button_lists: state.distinct_button_lists(),
            conditions: state.counts(),
        },
        targets,
        people,
    })
}

/// A pending condition in `state show --format json`.
#[derive(Serialize)]
pub struct PendingJson<'a> {
    /// `uncertain`, `owed` or `waiting`.
    pub status: &'static str,
    /// RFC 3339.
    pub since: String,
    /// Why it is owed (`whole_chat`, `id_type_move`) or waiting (the API's words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The list the unanswered call (uncertain) or the refused one (waiting) carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<&'a ButtonList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
}

impl<'a> PendingJson<'a> {
    pub fn of(p: &'a super::Pending) -> PendingJson<'a> {
        let since = crate::time::rfc3339_seconds(p.since);
        match &p.status {
            PendingStatus::Uncertain { sent } => PendingJson {
                status: "uncertain",
                since,
                reason: None,
                list: Some(sent),
                tries: None,
            },
            PendingStatus::Owed { reason } => PendingJson {
                status: "owed",
                since,
                reason: Some(reason.as_str()),
                list: None,
                tries: None,
            },
            PendingStatus::Waiting {
                goal,
                reason,
                tries,
                ..
            } => PendingJson {
                status: "waiting",
                since,
                reason: Some(reason),
                list: Some(goal),
                tries: Some(*tries),
            },
        }
    }
}

fn show_text(selected: &[(&Target, &TargetRecord)]) -> String {
    let mut out = String::new();
    for (target, record) in selected {
        let _ = writeln!(out, "{}  {}", target.chat_id, audience_spec(target));
        let condition = condition(record);
        if !condition.is_empty() {
            let _ = writeln!(out, "  [{condition}]");
        }
        match record.shown().map(Vec::as_slice) {
            None => out.push_str("  (nothing applied yet)\n"),
            Some([]) => out.push_str("  (no buttons)\n"),
            Some(buttons) => {
                for (i, b) in buttons.iter().enumerate() {
                    button_text(&mut out, i + 1, b);
                }
            }
        }
    }
    out
}

fn button_text(out: &mut String, n: usize, b: &Button) {
    let _ = write!(
        out,
        "  {n}. {}  {}",
        quote(&b.text.text),
        b.action_type.as_str()
    );
    if let Some(t) = b.button_type {
        let _ = write!(out, ", {}", t.as_str());
    }
    out.push('\n');
    if let Some(u) = &b.multi_url {
        for (name, url) in [
            ("url", &u.url),
            ("android_url", &u.android_url),
            ("ios_url", &u.ios_url),
            ("pc_url", &u.pc_url),
        ] {
            if let Some(url) = url {
                let _ = writeln!(out, "     {name}: {url}");
            }
        }
    }
    if let Some(map) = &b.action_map {
        let _ = writeln!(
            out,
            "     action_map: {}",
            serde_json::to_string(map).unwrap_or_default()
        );
    }
}

/// Forgets the targets `selector` names, as one recorded change, and returns them. The buttons
/// stay wherever they are in Feishu: the state simply stops tracking them. [`StateError::NotFound`]
/// if none match.
pub fn rm(lock: &mut dyn StateWriter, selector: &Selector) -> Result<Vec<Target>, StateError> {
    let targets: Vec<Target> = selector
        .select(lock.state())
        .into_iter()
        .map(|(t, _)| t.clone())
        .collect();
    if targets.is_empty() {
        return Err(StateError::NotFound {
            location: lock.location(),
            selector: selector.to_string(),
        });
    }
    let records: Vec<Record> = targets
        .iter()
        .map(|t| Record::Forget { target: t.clone() })
        .collect();
    lock.record(&records)?;
    Ok(targets)
}

/// What `adopt` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Targets recorded as applied (new, or recorded with another list before).
    pub recorded: usize,
    /// Targets already recorded with exactly these buttons.
    pub unchanged: usize,
}

/// Records `targets` as applied with their buttons, without calling the API: for buttons that
/// were set before this tool managed them. One recorded change (none if nothing differs).
///
/// The CLI passes the desired state, e.g.
/// `adopt(lock.as_mut(), desired.targets.iter())`; the records share the lists given.
pub fn adopt<'a>(
    lock: &mut dyn StateWriter,
    targets: impl IntoIterator<Item = (&'a Target, &'a Arc<ButtonList>)>,
) -> Result<Adopted, StateError> {
    let state = lock.state();
    let mut records = Vec::new();
    let mut done = Adopted::default();
    for (target, buttons) in targets {
        let recorded = state.targets.get(target);
        if recorded.is_some_and(|r| r.is_settled() && !r.follows() && r.shown() == Some(&**buttons))
        {
            done.unchanged += 1;
        } else {
            records.push(Record::Set {
                target: target.clone(),
                buttons: Arc::clone(buttons),
            });
        }
    }
    done.recorded = records.len();
    lock.record(&records)?;
    Ok(done)
}
