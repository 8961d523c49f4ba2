//! Records <-> journal lines: what a writer appends for each recorded batch and what a load
//! replays on top of the snapshot. Takes batches; gives checksummed lines, and back.
//!
//! A line is `CRC32 JSON\n`: eight hex digits of the CRC-32 of the JSON, a space, then
//! `{"lineage":"…","serial":N,"lists":[…],"ops":[{"set":{"target":…,"list":0}},{"forget":{"target":…}}]}`
//! (a target whose record is more than an applied list is `{"put":{"target":…,"record":{…}}}`,
//! the record as the snapshot writes it) or, for a binding, `{"lineage":"…","serial":N,"bind":{"base_url":"…","app_id":"…"}}`.
//! `lists` holds each distinct button list of the batch once (one call's users share one list).
//!
//! A crash can only tear the line being appended, which is the last one: a last line that is
//! unterminated or fails its checksum is dropped. A bad line with intact lines after it is not a
//! crash, and is reported.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::snapshot::RecordDoc;
use super::{AppliedState, Binding, Record, StateError};
use crate::target::{ButtonList, Target};

/// One journal line's content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    pub lineage: String,
    pub serial: u64,
    #[serde(default)]
    pub bind: Option<Binding>,
    #[serde(default)]
    pub lists: Vec<ButtonList>,
    #[serde(default)]
    pub ops: Vec<Op>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Op {
    Set { target: Target, list: u32 },
    Put { target: Target, record: RecordDoc },
    Forget { target: Target },
}

/// The borrowed twin of `Entry`, so that writing a batch copies nothing.
#[derive(Serialize)]
struct EntryOut<'a> {
    lineage: &'a str,
    serial: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<&'a Binding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lists: Vec<&'a ButtonList>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ops: Vec<OpOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum OpOut<'a> {
    Set {
        target: &'a Target,
        list: u32,
    },
    Put {
        target: &'a Target,
        record: RecordDoc,
    },
    Forget {
        target: &'a Target,
    },
}

/// The line recording `records` as change number `serial` of lineage `lineage`.
pub(crate) fn batch_line<'a>(lineage: &str, serial: u64, records: &'a [Record]) -> Vec<u8> {
    let mut index: HashMap<&ButtonList, u32> = HashMap::new();
    let mut lists: Vec<&ButtonList> = Vec::new();
    let mut ops = Vec::with_capacity(records.len());
    for r in records {
        let mut intern = |buttons: &'a ButtonList| {
            *index.entry(buttons).or_insert_with(|| {
                lists.push(buttons);
                lists.len() as u32 - 1
            })
        };
        ops.push(match r {
            Record::Set { target, buttons } => OpOut::Set {
                target,
                list: intern(buttons),
            },
            Record::Put { target, record } => OpOut::Put {
                target,
                record: RecordDoc::of(record, |l| intern(l.as_ref())),
            },
            Record::Forget { target } => OpOut::Forget { target },
        });
    }
    line(&EntryOut {
        lineage,
        serial,
        bind: None,
        lists,
        ops,
    })
}

/// The line recording that lineage `lineage` was bound to `binding` as change number `serial`.
pub(crate) fn bind_line(lineage: &str, serial: u64, binding: &Binding) -> Vec<u8> {
    line(&EntryOut {
        lineage,
        serial,
        bind: Some(binding),
        lists: Vec::new(),
        ops: Vec::new(),
    })
}

fn line(entry: &EntryOut) -> Vec<u8> {
    // Serializing plain data into memory does not fail; an empty body would fail its load loudly.
    let json = serde_json::to_vec(entry).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// What a journal holds: its intact entries (with 1-based line numbers) and where they end.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub entries: Vec<(usize, Entry)>,
    /// The length of the intact prefix; anything after it is a torn last line.
    pub valid_len: u64,
}

/// Reads the journal `bytes` of `path`, dropping a torn last line.
pub(crate) fn scan(bytes: &[u8], path: &Path) -> Result<Scanned, StateError> {
    let mut entries = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            // Unterminated: the append that a crash interrupted.
            break;
        };
        let end = pos + nl + 1;
        let json = match verify(&bytes[pos..pos + nl]) {
            Ok(json) => json,
            Err(_) if end == bytes.len() => break,
            Err(why) => {
                return Err(StateError::Corrupt {
                    path: path.to_owned(),
                    line: Some(line_no),
                    why: format!(
                        "{why}, and intact lines follow it, so this is damage rather than an \
                         interrupted write; restore the journal from a backup, or remove it to \
                         lose the changes recorded since the last snapshot"
                    ),
                });
            }
        };
        let entry: Entry = serde_json::from_slice(json).map_err(|e| StateError::Corrupt {
            path: path.to_owned(),
            line: Some(line_no),
            why: format!("the line's checksum matches but it is not a journal entry: {e}"),
        })?;
        entries.push((line_no, entry));
        pos = end;
    }
    Ok(Scanned {
        entries,
        valid_len: pos as u64,
    })
}

/// The JSON of one line, if its checksum matches.
fn verify(line: &[u8]) -> Result<&[u8], &'static str> {
    if line.len() < 9 || line[8] != b' ' {
        return Err("the line does not start with a checksum");
    }
    let sum = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("the line does not start with a checksum")?;
    let json = &line[9..];
    if crc32fast::hash(json) != sum {
        return Err("the line fails its checksum");
    }
    Ok(json)
}

/// How many journal entries a replay applied, and how many the snapshot already held.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub applied: usize,
    pub already_in_snapshot: usize,
}

/// Applies `entries` to `state` (loaded from the snapshot). Entries the snapshot already holds
/// (left by a compaction that stopped before it emptied the journal) are skipped; the rest must
/// continue the snapshot's lineage and serial without a gap.
pub(crate) fn replay(
    state: &mut AppliedState,
    entries: Vec<(usize, Entry)>,
    path: &Path,
) -> Result<Replayed, StateError> {
    let corrupt = |line: usize, why: String| StateError::Corrupt {
        path: path.to_owned(),
        line: Some(line),
        why,
    };
    let snapshot_serial = state.serial;
    let mut done = Replayed::default();
    for (line, entry) in entries {
        if entry.lineage != state.lineage {
            return Err(corrupt(
                line,
                format!(
                    "the entry belongs to state lineage {:?} but the snapshot is lineage {:?}: \
                     the snapshot was replaced; remove the journal if the snapshot is the one to keep",
                    entry.lineage, state.lineage
                ),
            ));
        }
        if entry.serial <= snapshot_serial && done.applied == 0 {
            done.already_in_snapshot += 1;
            continue;
        }
        if Some(entry.serial) != state.serial.checked_add(1) {
            return Err(corrupt(
                line,
                format!(
                    "the entry is change {} but the state is at change {}: a change is missing",
                    entry.serial, state.serial
                ),
            ));
        }
        if let Some(b) = entry.bind {
            state.binding = Some(b);
        }
        let lists: Vec<Arc<ButtonList>> = entry.lists.into_iter().map(Arc::new).collect();
        for op in entry.ops {
            match op {
                Op::Set { target, list } => {
                    let buttons = lists.get(list as usize).cloned().ok_or_else(|| {
                        corrupt(
                            line,
                            format!(
                                "target {target} refers to button list {list}, but the entry has {}",
                                lists.len()
                            ),
                        )
                    })?;
                    state
                        .targets
                        .insert(target, super::TargetRecord::applied(buttons));
                }
                Op::Put { target, record } => {
                    let record = record
                        .into_record(|i| lists.get(*i as usize).cloned())
                        .map_err(|why| corrupt(line, format!("target {target} {why}")))?;
                    state.targets.insert(target, record);
                }
                Op::Forget { target } => {
                    state.targets.remove(&target);
                }
            }
        }
        state.serial = entry.serial;
        done.applied += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::wire::{ActionType, Button, Text, UserIdType};

    fn list(text: &str) -> ButtonList {
        vec![Button {
            multi_url: None,
            action_type: ActionType::Webhook,
            text: Text { text: text.into() },
            button_type: None,
            action_map: None,
        }]
    }

    #[test]
    fn a_batch_stores_each_list_once_and_replays() {
        let records: Vec<Record> = (0..20)
            .map(|i| Record::Set {
                target: Target::user("oc_1", UserIdType::OpenId, format!("ou_{i}")),
                buttons: Arc::new(list("Ack")),
            })
            .chain([Record::Forget {
                target: Target::everyone("oc_1"),
            }])
            .collect();
        let l = batch_line("lin", 1, &records);
        let text = String::from_utf8(l.clone()).expect("utf-8");
        assert_eq!(text.matches("\"Ack\"").count(), 1, "{text}");
        let scanned = scan(&l, Path::new("j")).expect("scan");
        assert_eq!(scanned.valid_len, l.len() as u64);
        let mut state = AppliedState {
            lineage: "lin".into(),
            ..AppliedState::default()
        };
        state.targets.insert(
            Target::everyone("oc_1"),
            crate::state::TargetRecord::applied(Arc::new(list("Old"))),
        );
        let done = replay(&mut state, scanned.entries, Path::new("j")).expect("replay");
        assert_eq!(done.applied, 1);
        assert_eq!(state.serial, 1);
        assert_eq!(state.targets.len(), 20);
    }

    #[test]
    fn a_flipped_byte_is_torn_at_the_end_and_corrupt_in_the_middle() {
        let b = Binding::new("https://x", "cli");
        let mut j = bind_line("lin", 1, &b);
        j.extend(batch_line("lin", 2, &[]));
        let last = j.len() - 3;
        let mut torn = j.clone();
        torn[last] ^= 1;
        let s = scan(&torn, Path::new("j")).expect("torn tail is fine");
        assert_eq!(s.entries.len(), 1);
        let mut bad = j.clone();
        bad[12] ^= 1;
        let msg = scan(&bad, Path::new("j")).expect_err("middle").to_string();
        assert!(msg.starts_with("j:1: "), "{msg}");
        assert!(msg.contains("checksum"), "{msg}");
    }
}
