//! Applied state <-> snapshot bytes: the JSON document a compaction writes and every load starts
//! from. Takes an `AppliedState`; gives deterministic bytes, and back.
//!
//! ```text
//! {"format_version":2,"lineage":"…","serial":42,"binding":{"base_url":"…","app_id":"…"},
//! "button_lists":[
//! [{"action_type":"url_page","text":{"text":"Runbook"},…}],
//! []
//! ],
//! "chats":[
//! {"chat_id":"oc_…","everyone":1,"open_id":{"ou_…":0,"ou_…":{"shown":0,"pending":{"status":"owed","since":1764000000,"reason":"whole_chat"}}}},
//! …
//! ]}
//! ```
//!
//! Each distinct button list is stored once (`button_lists`, sorted) and targets refer to it by
//! index: a target that is simply applied is its list's index, the rare one that follows its
//! chat's whole-chat buttons or has something pending is an object ([`RecordDoc`]). Format 1
//! (before followers and pending targets) is read as well: every target in it is applied; targets are grouped by chat and id type, one chat per line, all sorted, so that the
//! same state gives the same bytes and a diff of two snapshots reads chat by chat. The writer is
//! hand-rolled and the reader expects the sorted order, because both run over a million targets.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{AppliedState, Binding, OwedReason, Pending, PendingStatus, StateError, TargetRecord};
use crate::feishu::wire::UserIdType;
use crate::id::Id;
use crate::target::{Audience, ButtonList, Target};

/// The snapshot format this build writes.
pub const FORMAT_VERSION: u64 = 2;

/// The oldest snapshot format this build reads (format 1 is format 2 without objects).
pub const OLDEST_FORMAT_VERSION: u64 = 1;

/// A record that is more than an applied list, as snapshots and journal lines store it, with
/// its lists as references `L` into a table beside it (indexes in files, ids in PostgreSQL).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordDoc<L = u32> {
    #[serde(default = "Option::default")]
    pub shown: Option<L>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub follows: bool,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingDoc<L>>,
}

/// [`Pending`] with its lists as references.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum PendingDoc<L = u32> {
    Uncertain {
        since: u64,
        sent: L,
    },
    Owed {
        since: u64,
        reason: OwedReason,
    },
    Waiting {
        since: u64,
        goal: L,
        #[serde(default, skip_serializing_if = "is_false")]
        goal_follows: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        unsure: bool,
        reason: String,
        tries: u32,
        last_try: u64,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<L> RecordDoc<L> {
    /// `record` with each list replaced by `index(list)`.
    pub(crate) fn of<'r>(
        record: &'r TargetRecord,
        mut index: impl FnMut(&'r Arc<ButtonList>) -> L,
    ) -> RecordDoc<L> {
        let pending = record.pending().map(|p| match &p.status {
            PendingStatus::Uncertain { sent } => PendingDoc::Uncertain {
                since: p.since,
                sent: index(sent),
            },
            PendingStatus::Owed { reason } => PendingDoc::Owed {
                since: p.since,
                reason: *reason,
            },
            PendingStatus::Waiting {
                goal,
                goal_follows,
                unsure,
                reason,
                tries,
                last_try,
            } => PendingDoc::Waiting {
                since: p.since,
                goal: index(goal),
                goal_follows: *goal_follows,
                unsure: *unsure,
                reason: reason.clone(),
                tries: *tries,
                last_try: *last_try,
            },
        });
        RecordDoc {
            shown: record.shown.as_ref().map(&mut index),
            follows: record.follows(),
            pending,
        }
    }

    /// The record, with each index resolved by `list`; why not, when an index is out of range
    /// or the record would say nothing.
    pub(crate) fn into_record(
        self,
        list: impl Fn(&L) -> Option<Arc<ButtonList>>,
    ) -> Result<TargetRecord, String>
    where
        L: std::fmt::Display,
    {
        let get = |i: L| {
            list(&i).ok_or_else(|| format!("refers to button list {i}, which does not exist"))
        };
        let shown = self.shown.map(get).transpose()?;
        let pending = match self.pending {
            None => None,
            Some(PendingDoc::Uncertain { since, sent }) => Some(Pending {
                since,
                status: PendingStatus::Uncertain { sent: get(sent)? },
            }),
            Some(PendingDoc::Owed { since, reason }) => Some(Pending {
                since,
                status: PendingStatus::Owed { reason },
            }),
            Some(PendingDoc::Waiting {
                since,
                goal,
                goal_follows,
                unsure,
                reason,
                tries,
                last_try,
            }) => Some(Pending {
                since,
                status: PendingStatus::Waiting {
                    goal: get(goal)?,
                    goal_follows,
                    unsure,
                    reason,
                    tries,
                    last_try,
                },
            }),
        };
        TargetRecord::new(shown, self.follows, pending)
            .ok_or_else(|| "has neither a shown list nor anything pending".to_owned())
    }
}

/// Encodes `state` as a snapshot: same state, same bytes.
pub fn encode(state: &AppliedState) -> Vec<u8> {
    let mut table = ListTable::new(state);

    // About 40 bytes per user target: reserve once instead of growing through 40 MB.
    let mut out = Vec::with_capacity(256 + state.targets.len() * 48);
    out.extend_from_slice(b"{\"format_version\":");
    push_u64(&mut out, FORMAT_VERSION);
    out.extend_from_slice(b",\"lineage\":");
    push_str(&mut out, &state.lineage);
    out.extend_from_slice(b",\"serial\":");
    push_u64(&mut out, state.serial);
    out.extend_from_slice(b",\"binding\":");
    push_json(&mut out, &state.binding);
    out.extend_from_slice(b",\n\"button_lists\":[");
    for (i, list) in table.sorted.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        push_json(&mut out, list);
    }
    out.extend_from_slice(b"\n],\n\"chats\":[");

    let mut chat: Option<&str> = None;
    // The id type whose `"open_id":{` object is open, and whether it has an entry yet.
    let mut open_type: Option<UserIdType> = None;
    for (target, record) in &state.targets {
        if chat != Some(target.chat_id.as_str()) {
            if chat.is_some() {
                if open_type.is_some() {
                    out.push(b'}');
                }
                out.extend_from_slice(b"},\n");
            } else {
                out.push(b'\n');
            }
            out.extend_from_slice(b"{\"chat_id\":");
            push_str(&mut out, &target.chat_id);
            chat = Some(&target.chat_id);
            open_type = None;
        }
        match &target.audience {
            Audience::Everyone => {
                out.extend_from_slice(b",\"everyone\":");
            }
            Audience::User { id_type, id } => {
                if open_type != Some(*id_type) {
                    if open_type.is_some() {
                        out.push(b'}');
                    }
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(id_type.as_str().as_bytes());
                    out.extend_from_slice(b"\":{");
                    open_type = Some(*id_type);
                } else {
                    out.push(b',');
                }
                push_str(&mut out, id);
                out.push(b':');
            }
        }
        match (&record.shown, &record.extra) {
            (Some(list), None) => push_u64(&mut out, u64::from(table.index(list))),
            _ => push_json(&mut out, &RecordDoc::of(record, |l| table.index(l))),
        }
    }
    if chat.is_some() {
        if open_type.is_some() {
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// The distinct button lists a state refers to, sorted, and the index of each.
struct ListTable<'a> {
    sorted: Vec<&'a ButtonList>,
    /// Targets share their lists (`Arc`), so they are told apart by pointer, which is cheap;
    /// equal lists recorded in different batches are separate allocations until the next
    /// load, and get the same index.
    by_pointer: HashMap<*const ButtonList, u32>,
    /// The last lookup: neighbouring targets mostly share a list.
    last: Option<(*const ButtonList, u32)>,
}

impl<'a> ListTable<'a> {
    fn new(state: &'a AppliedState) -> ListTable<'a> {
        let mut distinct: Vec<&'a Arc<ButtonList>> = Vec::new();
        let mut seen: HashMap<*const ButtonList, ()> = HashMap::new();
        let mut last: Option<*const ButtonList> = None;
        let mut visit = |list: &'a Arc<ButtonList>| {
            let pointer = Arc::as_ptr(list);
            if last != Some(pointer) && seen.insert(pointer, ()).is_none() {
                distinct.push(list);
            }
            last = Some(pointer);
        };
        for record in state.targets.values() {
            if let Some(shown) = &record.shown {
                visit(shown);
            }
            if let Some(pending) = record.pending() {
                match &pending.status {
                    PendingStatus::Uncertain { sent } => visit(sent),
                    PendingStatus::Waiting { goal, .. } => visit(goal),
                    PendingStatus::Owed { .. } => {}
                }
            }
        }
        distinct.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let mut sorted: Vec<&'a ButtonList> = Vec::new();
        let mut by_pointer = HashMap::with_capacity(distinct.len());
        for list in distinct {
            if sorted.last() != Some(&list.as_ref()) {
                sorted.push(list);
            }
            by_pointer.insert(Arc::as_ptr(list), sorted.len() as u32 - 1);
        }
        ListTable {
            sorted,
            by_pointer,
            last: None,
        }
    }

    fn index(&mut self, list: &Arc<ButtonList>) -> u32 {
        let pointer = Arc::as_ptr(list);
        if let Some((p, i)) = self.last
            && p == pointer
        {
            return i;
        }
        // Every list of the state was visited in `new`.
        let i = self.by_pointer.get(&pointer).copied().unwrap_or(0);
        self.last = Some((pointer, i));
        i
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes `s` as a JSON string; ids almost never need escaping, so check before paying for it.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        push_json(out, s);
    }
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing plain data (strings, maps with string keys) into a Vec cannot fail; should it
    // ever, the snapshot would not parse and the load would say so.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Decodes a snapshot read from `path` (named in errors).
pub fn decode(bytes: &[u8], path: &Path) -> Result<AppliedState, StateError> {
    build(parse(bytes, path)?, path)
}

/// Decodes a snapshot, freeing its bytes before the targets are built: with a million
/// targets, that is tens of megabytes less at the peak.
pub(crate) fn decode_owned(bytes: Vec<u8>, path: &Path) -> Result<AppliedState, StateError> {
    let doc = parse(&bytes, path)?;
    drop(bytes);
    build(doc, path)
}

fn parse(bytes: &[u8], path: &Path) -> Result<SnapshotDoc, StateError> {
    let corrupt = |why: String| StateError::Corrupt {
        path: path.to_owned(),
        line: None,
        why,
    };
    let doc: SnapshotDoc = match serde_json::from_slice(bytes) {
        Ok(doc) => doc,
        Err(e) => {
            // A newer format may not even parse as this one: say that rather than the parse error.
            #[derive(Deserialize)]
            struct VersionOnly {
                format_version: Option<u64>,
            }
            if let Ok(VersionOnly {
                format_version: Some(v),
            }) = serde_json::from_slice(bytes)
                && !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&v)
            {
                return Err(unsupported_version(path, v));
            }
            return Err(corrupt(format!("not a feedbuttons state snapshot: {e}")));
        }
    };
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&doc.format_version) {
        return Err(unsupported_version(path, doc.format_version));
    }
    Ok(doc)
}

fn build(doc: SnapshotDoc, path: &Path) -> Result<AppliedState, StateError> {
    let corrupt = |why: String| StateError::Corrupt {
        path: path.to_owned(),
        line: None,
        why,
    };

    let total: usize = doc
        .chats
        .iter()
        .map(|c| {
            usize::from(c.everyone.is_some())
                + c.open_id.0.len()
                + c.union_id.0.len()
                + c.user_id.0.len()
        })
        .sum();
    let lists: Vec<Arc<ButtonList>> = doc.button_lists.into_iter().map(Arc::new).collect();
    let record = |value: ValueDoc, target: &Target| -> Result<TargetRecord, StateError> {
        match value {
            ValueDoc::Index(i) => lists
                .get(i as usize)
                .cloned()
                .map(TargetRecord::applied)
                .ok_or_else(|| {
                    corrupt(format!(
                        "target {target} refers to button list {i}, but there are only {}",
                        lists.len()
                    ))
                }),
            ValueDoc::Record(doc) => doc
                .into_record(|i| lists.get(*i as usize).cloned())
                .map_err(|why| corrupt(format!("target {target} {why}"))),
        }
    };

    let mut targets: Vec<(Target, TargetRecord)> = Vec::with_capacity(total);
    let mut previous_chat: Option<Id> = None;
    for chat in doc.chats {
        if let Some(p) = &previous_chat
            && *p >= chat.chat_id
        {
            return Err(corrupt(format!(
                "chat {} is out of order or listed twice (chats are sorted by id)",
                chat.chat_id
            )));
        }
        if let Some(value) = chat.everyone {
            let target = Target::everyone(chat.chat_id.clone());
            let r = record(value, &target)?;
            targets.push((target, r));
        }
        for (id_type, users) in [
            (UserIdType::OpenId, chat.open_id),
            (UserIdType::UnionId, chat.union_id),
            (UserIdType::UserId, chat.user_id),
        ] {
            let mut previous_user: Option<usize> = None;
            for (id, value) in users.0 {
                // The sorted order is what lets the map below be built without sorting, and it
                // catches a user listed twice, which JSON objects do not.
                if let Some(p) = previous_user
                    && targets[p].0.user_id().is_some_and(|p| p >= id.as_str())
                {
                    return Err(corrupt(format!(
                        "user {id_type}:{id} in chat {} is out of order or listed twice",
                        chat.chat_id
                    )));
                }
                let target = Target {
                    chat_id: chat.chat_id.clone(),
                    audience: Audience::User { id_type, id },
                };
                let r = record(value, &target)?;
                previous_user = Some(targets.len());
                targets.push((target, r));
            }
        }
        previous_chat = Some(chat.chat_id);
    }

    Ok(AppliedState {
        lineage: doc.lineage,
        serial: doc.serial,
        binding: doc.binding,
        // Already sorted and unique (checked above), so this is a linear build.
        targets: BTreeMap::from_iter(targets),
    })
}

fn unsupported_version(path: &Path, v: u64) -> StateError {
    StateError::Corrupt {
        path: path.to_owned(),
        line: None,
        why: format!(
            "snapshot format_version {v} is not supported by this feedbuttons (it reads \
             {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); use the feedbuttons version that wrote it"
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotDoc {
    format_version: u64,
    lineage: String,
    serial: u64,
    #[serde(default)]
    binding: Option<Binding>,
    #[serde(default)]
    button_lists: Vec<ButtonList>,
    #[serde(default)]
    chats: Vec<ChatDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatDoc {
    chat_id: Id,
    #[serde(default)]
    everyone: Option<ValueDoc>,
    #[serde(default)]
    open_id: Users,
    #[serde(default)]
    union_id: Users,
    #[serde(default)]
    user_id: Users,
}

/// A target's value: its list's index (applied, nothing else to say), or a whole record.
enum ValueDoc {
    Index(u32),
    Record(RecordDoc),
}

impl<'de> Deserialize<'de> for ValueDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ValueDoc, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = ValueDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a button list index or a target record")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ValueDoc, E> {
                u32::try_from(v)
                    .map(ValueDoc::Index)
                    .map_err(|_| E::custom(format!("button list index {v} is out of range")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ValueDoc, A::Error> {
                RecordDoc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ValueDoc::Record)
            }
        }
        // `any`: an index is far more common than a record, and needs no buffering.
        d.deserialize_any(ValueVisitor)
    }
}

/// A `{"user id": value}` object, kept in file order (a map type would re-sort and silently
/// merge duplicates).
#[derive(Default)]
struct Users(Vec<(Id, ValueDoc)>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Users, D::Error> {
        struct UsersVisitor;
        impl<'de> Visitor<'de> for UsersVisitor {
            type Value = Users;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of user id to button list index or record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Users, A::Error> {
                let mut users = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<Id, ValueDoc>()? {
                    users.push(entry);
                }
                Ok(Users(users))
            }
        }
        d.deserialize_map(UsersVisitor)
    }
}

#[cfg(test)]
mod tests;
