//! Applied state <-> snapshot bytes: the JSON document a compaction writes and every load starts
//! from. Takes an `AppliedState`; gives deterministic bytes, and back.
//!
//! ```text
//! {"format_version":1,"lineage":"…","serial":42,"binding":{"base_url":"…","app_id":"…"},
//! "button_lists":[
//! [{"action_type":"url_page","text":{"text":"Runbook"},…}],
//! []
//! ],
//! "chats":[
//! {"chat_id":"oc_…","everyone":1,"open_id":{"ou_…":0,"ou_…":0}},
//! …
//! ]}
//! ```
//!
//! Each distinct button list is stored once (`button_lists`, sorted) and targets refer to it by
//! index; targets are grouped by chat and id type, one chat per line, all sorted, so that the
//! same state gives the same bytes and a diff of two snapshots reads chat by chat. The writer is
//! hand-rolled and the reader expects the sorted order, because both run over a million targets.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::{AppliedState, Binding, StateError};
use crate::feishu::wire::UserIdType;
use crate::target::{Audience, ButtonList, Target};

/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// Encodes `state` as a snapshot: same state, same bytes.
pub fn encode(state: &AppliedState) -> Vec<u8> {
    let (lists, index_of_target) = list_table(state);

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
    for (i, list) in lists.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        push_json(&mut out, list);
    }
    out.extend_from_slice(b"\n],\n\"chats\":[");

    let mut chat: Option<&str> = None;
    // The id type whose `"open_id":{` object is open, and whether it has an entry yet.
    let mut open_type: Option<UserIdType> = None;
    for ((target, _), &index) in state.targets.iter().zip(&index_of_target) {
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
        push_u64(&mut out, u64::from(index));
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

/// The distinct button lists, sorted, and for each target (in order) the index of its list.
fn list_table(state: &AppliedState) -> (Vec<&ButtonList>, Vec<u32>) {
    // Targets share their lists (`Arc`), so tell them apart by pointer first, which is cheap;
    // the few distinct pointers are then merged by content, since equal lists recorded in
    // different batches are separate allocations until the next load.
    let mut by_pointer: HashMap<*const ButtonList, u32> = HashMap::new();
    let mut distinct: Vec<&ButtonList> = Vec::new();
    let mut ids: Vec<u32> = Vec::with_capacity(state.targets.len());
    let mut last: Option<(*const ButtonList, u32)> = None;
    for list in state.targets.values() {
        let pointer = Arc::as_ptr(list);
        let id = match last {
            Some((p, id)) if p == pointer => id,
            _ => {
                let next = distinct.len() as u32;
                let id = *by_pointer.entry(pointer).or_insert(next);
                if id == next {
                    distinct.push(list);
                }
                id
            }
        };
        last = Some((pointer, id));
        ids.push(id);
    }
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_by(|&a, &b| distinct[a as usize].cmp(distinct[b as usize]));
    let mut sorted: Vec<&ButtonList> = Vec::new();
    let mut final_id = vec![0u32; distinct.len()];
    for &old in &order {
        let list = distinct[old as usize];
        if sorted.last() != Some(&list) {
            sorted.push(list);
        }
        final_id[old as usize] = sorted.len() as u32 - 1;
    }
    for id in &mut ids {
        *id = final_id[*id as usize];
    }
    (sorted, ids)
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
                && v != FORMAT_VERSION
            {
                return Err(unsupported_version(path, v));
            }
            return Err(corrupt(format!("not a feedbuttons state snapshot: {e}")));
        }
    };
    if doc.format_version != FORMAT_VERSION {
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
    let list = |i: u32, target: &Target| -> Result<Arc<ButtonList>, StateError> {
        lists.get(i as usize).cloned().ok_or_else(|| {
            corrupt(format!(
                "target {target} refers to button list {i}, but there are only {}",
                lists.len()
            ))
        })
    };

    let mut targets: Vec<(Target, Arc<ButtonList>)> = Vec::with_capacity(total);
    let mut previous_chat: Option<String> = None;
    for chat in doc.chats {
        if let Some(p) = &previous_chat
            && *p >= chat.chat_id
        {
            return Err(corrupt(format!(
                "chat {} is out of order or listed twice (chats are sorted by id)",
                chat.chat_id
            )));
        }
        if let Some(i) = chat.everyone {
            let target = Target::everyone(chat.chat_id.clone());
            let buttons = list(i, &target)?;
            targets.push((target, buttons));
        }
        for (id_type, users) in [
            (UserIdType::OpenId, chat.open_id),
            (UserIdType::UnionId, chat.union_id),
            (UserIdType::UserId, chat.user_id),
        ] {
            let mut previous_user: Option<usize> = None;
            for (id, i) in users.0 {
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
                let buttons = list(i, &target)?;
                previous_user = Some(targets.len());
                targets.push((target, buttons));
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
            "snapshot format_version {v} is not supported by this feedbuttons (it reads {FORMAT_VERSION}); \
             use the feedbuttons version that wrote it"
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
    chat_id: String,
    #[serde(default)]
    everyone: Option<u32>,
    #[serde(default)]
    open_id: Users,
    #[serde(default)]
    union_id: Users,
    #[serde(default)]
    user_id: Users,
}

/// A `{"user id": list index}` object, kept in file order (a map type would re-sort and
/// silently merge duplicates).
#[derive(Default)]
struct Users(Vec<(String, u32)>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Users, D::Error> {
        struct UsersVisitor;
        impl<'de> Visitor<'de> for UsersVisitor {
            type Value = Users;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of user id to button list index")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Users, A::Error> {
                let mut users = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, u32>()? {
                    users.push(entry);
                }
                Ok(Users(users))
            }
        }
        d.deserialize_map(UsersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::wire::{ActionType, Button, MultiUrl, Text};

    fn button(text: &str) -> Button {
        Button {
            multi_url: Some(MultiUrl {
                url: Some(format!("https://example.com/{text}")),
                ..MultiUrl::default()
            }),
            action_type: ActionType::UrlPage,
            text: Text { text: text.into() },
            button_type: None,
            action_map: None,
        }
    }

    fn sample() -> AppliedState {
        let mut s = AppliedState {
            lineage: "0123abcd".into(),
            serial: 7,
            binding: Some(Binding::new("https://open.feishu.cn", "cli_x")),
            targets: BTreeMap::new(),
        };
        let a = Arc::new(vec![button("Runbook"), button("Ack")]);
        // An equal list in another allocation (as two recorded batches leave it) is stored once.
        let a2 = Arc::new(vec![button("Runbook"), button("Ack")]);
        let b = Arc::new(vec![button("Dash \"quoted\" \\ \n ü")]);
        s.targets.insert(Target::everyone("oc_2"), a.clone());
        s.targets
            .insert(Target::user("oc_2", UserIdType::OpenId, "ou_b"), a.clone());
        s.targets
            .insert(Target::user("oc_2", UserIdType::OpenId, "ou_a"), b.clone());
        s.targets.insert(
            Target::user("oc_2", UserIdType::UserId, "x\"y"),
            Arc::new(vec![]),
        );
        s.targets
            .insert(Target::user("oc_1", UserIdType::UnionId, "on_a"), a2);
        s.targets
            .insert(Target::user("oc_1", UserIdType::OpenId, "ou_a"), b);
        s
    }

    #[test]
    fn roundtrip_and_determinism() {
        let s = sample();
        let bytes = encode(&s);
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert_eq!(decode(&bytes, Path::new("s.json")).expect("decode"), s);
        assert_eq!(encode(&s.clone()), bytes);
        // Valid JSON as a whole, one list and one chat per line, lists stored once.
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["button_lists"].as_array().map(Vec::len), Some(3));
        assert_eq!(text.lines().count(), 1 + 1 + 3 + 1 + 1 + 2 + 1);
    }

    #[test]
    fn empty_state_roundtrips() {
        let s = AppliedState::new();
        let bytes = encode(&s);
        assert_eq!(decode(&bytes, Path::new("s.json")).expect("decode"), s);
    }

    #[test]
    fn duplicates_and_bad_indexes_are_errors() {
        let dup =
            br#"{"format_version":1,"lineage":"l","serial":1,"binding":null,"button_lists":[[]],
            "chats":[{"chat_id":"oc_1","open_id":{"ou_a":0,"ou_a":0}}]}"#;
        let msg = decode(dup, Path::new("s.json"))
            .expect_err("dup")
            .to_string();
        assert!(msg.contains("listed twice"), "{msg}");
        let bad = br#"{"format_version":1,"lineage":"l","serial":1,"button_lists":[],
            "chats":[{"chat_id":"oc_1","everyone":3}]}"#;
        let msg = decode(bad, Path::new("s.json"))
            .expect_err("index")
            .to_string();
        assert!(msg.contains("button list 3"), "{msg}");
        let newer = br#"{"format_version":2,"something":"else"}"#;
        let msg = decode(newer, Path::new("s.json"))
            .expect_err("v2")
            .to_string();
        assert!(msg.contains("format_version 2"), "{msg}");
    }
}
