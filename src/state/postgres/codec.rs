//! Records <-> rows: how the PostgreSQL store keeps a state (see `specs/state.md`). Each
//! distinct button list is one row of `feedbuttons_lists`, named by a hash of its JSON; each
//! target one row of `feedbuttons_targets`, with its list's id and, when it is more than applied,
//! its record as JSON (`RecordDoc` with list ids).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio_postgres::GenericClient;

use super::super::snapshot::RecordDoc;
use super::super::{AppliedState, Binding, Record, TargetRecord, audience_spec};
use super::conn::{answered, describe};
use crate::feishu::wire::UserIdType;
use crate::id::Id;
use crate::target::{Audience, ButtonList, Target};

/// A list's id: the first 128 bits of the SHA-256 of its JSON, in hex. Equal lists get equal
/// ids, so writing one again is a no-op.
pub fn list_id(list: &ButtonList) -> String {
    let json = serde_json::to_vec(list).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The target a row names.
pub fn target_of(chat_id: impl Into<Id>, audience: &str) -> Option<Target> {
    if audience == "everyone" {
        return Some(Target::everyone(chat_id));
    }
    let (ty, id) = audience.split_once(':')?;
    Some(Target {
        chat_id: chat_id.into(),
        audience: Audience::User {
            id_type: UserIdType::parse(ty)?,
            id: id.into(),
        },
    })
}

/// A state as loaded, with the ids of the lists the database holds.
pub struct Loaded {
    pub state: AppliedState,
    pub list_ids: HashSet<String>,
}

/// Reads the state named `name`: `None` when there is none yet.
pub async fn load(client: &tokio_postgres::Client, name: &str) -> Result<Option<Loaded>, String> {
    let reading = "reading the state";
    let row = async {
        let sql =
            "SELECT lineage, serial, base_url, app_id FROM feedbuttons_states WHERE name = $1";
        client
            .query_opt(sql, &[&name])
            .await
            .map_err(|e| describe(&e))
    };
    let Some(row) = answered(reading, row).await? else {
        return Ok(None);
    };
    let serial: i64 = row.get(1);
    let base_url: Option<String> = row.get(2);
    let app_id: Option<String> = row.get(3);
    let mut state = AppliedState {
        lineage: row.get(0),
        serial: u64::try_from(serial).unwrap_or(0),
        binding: match (base_url, app_id) {
            (Some(b), Some(a)) => Some(Binding::new(b, a)),
            _ => None,
        },
        targets: Default::default(),
    };
    let mut lists: HashMap<String, Arc<ButtonList>> = HashMap::new();
    let rows = async {
        let sql = "SELECT id, list FROM feedbuttons_lists WHERE state = $1";
        client.query(sql, &[&name]).await.map_err(|e| describe(&e))
    };
    for row in answered(reading, rows).await? {
        let id: String = row.get(0);
        let json: String = row.get(1);
        let list: ButtonList = serde_json::from_str(&json)
            .map_err(|e| format!("button list {id} is not a button list: {e}"))?;
        lists.insert(id, Arc::new(list));
    }
    // COPY is several times faster than rows for a million targets; the name is checked to be
    // plain (see `PgStore::new`), so it can stand in the statement.
    let copy = format!(
        "COPY (SELECT chat_id, audience, shown, extra FROM feedbuttons_targets WHERE state = '{name}') TO STDOUT"
    );
    let stream = client.copy_out(copy.as_str());
    let stream = answered(reading, async { stream.await.map_err(|e| describe(&e)) }).await?;
    let mut stream = std::pin::pin!(stream);
    let mut carry: Vec<u8> = Vec::new();
    let mut targets: Vec<(Target, TargetRecord)> = Vec::new();
    while let Some(chunk) =
        answered(reading, async { Ok::<_, String>(stream.next().await) }).await?
    {
        let chunk = chunk.map_err(|e| describe(&e))?;
        carry.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = carry[start..].iter().position(|&b| b == b'\n') {
            targets.push(row_of(&carry[start..start + nl], &lists)?);
            start += nl + 1;
        }
        carry.drain(..start);
    }
    if !carry.is_empty() {
        targets.push(row_of(&carry, &lists)?);
    }
    state.targets = targets.into_iter().collect();
    let list_ids = lists.keys().cloned().collect();
    Ok(Some(Loaded { state, list_ids }))
}

/// One COPY text line: chat, audience, shown, extra.
fn row_of(
    line: &[u8],
    lists: &HashMap<String, Arc<ButtonList>>,
) -> Result<(Target, TargetRecord), String> {
    let fields: Vec<Option<String>> = line.split(|&b| b == b'\t').map(copy_field).collect();
    let [Some(chat), Some(audience), shown, extra] = <[Option<String>; 4]>::try_from(fields)
        .map_err(|_| "a target row does not have its four fields".to_owned())?
    else {
        return Err("a target row has no chat or audience".to_owned());
    };
    let target = target_of(chat.clone(), &audience)
        .ok_or_else(|| format!("chat {chat}: {audience:?} is not an audience"))?;
    let get = |id: &String| lists.get(id).cloned();
    let record = match extra {
        Some(json) => {
            let doc: RecordDoc<String> = serde_json::from_str(&json)
                .map_err(|e| format!("target {target}: its record is not readable: {e}"))?;
            doc.into_record(get)
                .map_err(|why| format!("target {target} {why}"))?
        }
        None => {
            let id = shown.ok_or_else(|| format!("target {target} has no list and no record"))?;
            TargetRecord::applied(
                get(&id).ok_or_else(|| format!("target {target} refers to a missing list {id}"))?,
            )
        }
    };
    Ok((target, record))
}

/// A field of COPY's text format: `\N` is NULL, and backslash escapes are undone.
fn copy_field(raw: &[u8]) -> Option<String> {
    if raw == b"\\N" {
        return None;
    }
    if !raw.contains(&b'\\') {
        return Some(String::from_utf8_lossy(raw).into_owned());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A batch of records as rows to write: lists the database lacks, targets to upsert, and
/// targets to delete.
#[derive(Default)]
pub struct Rows {
    pub list_ids: Vec<String>,
    pub list_json: Vec<String>,
    pub chats: Vec<String>,
    pub audiences: Vec<String>,
    pub shown: Vec<Option<String>>,
    pub extra: Vec<Option<String>>,
    pub gone_chats: Vec<String>,
    pub gone_audiences: Vec<String>,
}

impl Rows {
    /// The rows for `records`; lists in `known` are not written again.
    pub fn of(records: &[Record], known: &HashSet<String>) -> Rows {
        let mut rows = Rows::default();
        let mut ids: HashMap<*const ButtonList, String> = HashMap::new();
        let mut fresh: HashSet<String> = HashSet::new();
        let mut id_of = |list: &ButtonList, rows: &mut Rows| -> String {
            let id = ids
                .entry(list as *const ButtonList)
                .or_insert_with(|| list_id(list))
                .clone();
            if !known.contains(&id) && fresh.insert(id.clone()) {
                rows.list_ids.push(id.clone());
                rows.list_json
                    .push(serde_json::to_string(list).unwrap_or_default());
            }
            id
        };
        for record in records {
            match record {
                Record::Set { target, buttons } => {
                    let id = id_of(buttons, &mut rows);
                    rows.upsert(target, Some(id), None);
                }
                Record::Put { target, record } => {
                    let shown = record.shown.as_ref().map(|l| id_of(l, &mut rows));
                    let extra = if record.extra.is_some() || record.shown.is_none() {
                        let mut lists: Vec<&Arc<ButtonList>> = Vec::new();
                        let doc = RecordDoc::of(record, |l| {
                            lists.push(l);
                            list_id(l)
                        });
                        for l in lists {
                            id_of(l, &mut rows);
                        }
                        Some(serde_json::to_string(&doc).unwrap_or_default())
                    } else {
                        None
                    };
                    rows.upsert(target, shown, extra);
                }
                Record::Forget { target } => {
                    rows.gone_chats.push(target.chat_id.to_string());
                    rows.gone_audiences.push(audience_spec(target));
                }
            }
        }
        rows
    }

    fn upsert(&mut self, target: &Target, shown: Option<String>, extra: Option<String>) {
        self.chats.push(target.chat_id.to_string());
        self.audiences.push(audience_spec(target));
        self.shown.push(shown);
        self.extra.push(extra);
    }

    /// Writes the rows for state `name` (inside the caller's transaction).
    pub async fn write(&self, tx: &impl GenericClient, name: &str) -> Result<(), String> {
        if !self.list_ids.is_empty() {
            tx.execute(
                "INSERT INTO feedbuttons_lists (state, id, list)
                 SELECT $1, * FROM unnest($2::text[], $3::text[])
                 ON CONFLICT (state, id) DO NOTHING",
                &[&name, &self.list_ids, &self.list_json],
            )
            .await
            .map_err(|e| describe(&e))?;
        }
        if !self.gone_chats.is_empty() {
            tx.execute(
                "DELETE FROM feedbuttons_targets t
                 USING unnest($2::text[], $3::text[]) AS g (chat_id, audience)
                 WHERE t.state = $1 AND t.chat_id = g.chat_id AND t.audience = g.audience",
                &[&name, &self.gone_chats, &self.gone_audiences],
            )
            .await
            .map_err(|e| describe(&e))?;
        }
        if !self.chats.is_empty() {
            tx.execute(
                "INSERT INTO feedbuttons_targets (state, chat_id, audience, shown, extra)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                 ON CONFLICT (state, chat_id, audience)
                 DO UPDATE SET shown = EXCLUDED.shown, extra = EXCLUDED.extra",
                &[
                    &name,
                    &self.chats,
                    &self.audiences,
                    &self.shown,
                    &self.extra,
                ],
            )
            .await
            .map_err(|e| describe(&e))?;
        }
        Ok(())
    }

    /// The lists written.
    pub fn new_lists(&self) -> impl Iterator<Item = &String> {
        self.list_ids.iter()
    }
}

/// The rows of a whole state (for `state migrate` and adopting a large config), in batches.
pub fn whole_state(state: &AppliedState) -> Vec<Record> {
    state
        .targets
        .iter()
        .map(|(t, r)| match (&r.shown, &r.extra) {
            (Some(list), None) => Record::Set {
                target: t.clone(),
                buttons: Arc::clone(list),
            },
            _ => Record::Put {
                target: t.clone(),
                record: r.clone(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_are_unescaped() {
        assert_eq!(copy_field(b"\\N"), None);
        assert_eq!(copy_field(b"a\\tb\\\\c\\nd"), Some("a\tb\\c\nd".to_owned()));
        assert_eq!(copy_field(b"x\\101\\x42"), Some("xAB".to_owned()));
    }

    #[test]
    fn audiences_round_trip() {
        for t in [
            Target::everyone("oc_1"),
            Target::user("oc_1", UserIdType::UnionId, "on_x:y"),
        ] {
            assert_eq!(target_of(t.chat_id.clone(), &audience_spec(&t)), Some(t));
        }
        assert_eq!(target_of("oc", "nobody"), None);
    }
}
