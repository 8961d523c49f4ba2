//! The plan as JSON (`plan --format json`, `cli.md`) and as a saved plan file (`plan --out`): the
//! same document plus the state it was made against and a checksum, so that apply can refuse a
//! plan whose state moved on or whose file was altered.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Action, MassRemoval, Note, Plan, Summary};
use crate::feishu::wire::{ChatButtonRequest, UserIdType};
use crate::target::Target;

/// The version of the plan document's shape.
pub const FORMAT_VERSION: u32 = 1;

/// One change in a request: which target, and what happens to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDoc {
    /// The user id, or `everyone` for the whole chat.
    pub target: String,
    pub action: Action,
    /// Why the target is sent beyond its lists, or what the state says about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<NoteDoc>,
}

/// A change's [`Note`] as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteDoc {
    /// `whole_chat`, `id_type_move`, `owed`, `uncertain` or `waiting`.
    pub kind: String,
    /// Why it is owed (`whole_chat`, `id_type_move`) or waiting (the API's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when (RFC 3339), for owed, uncertain and waiting targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// How often the API refused a waiting target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
}

impl NoteDoc {
    pub fn of(note: &Note) -> NoteDoc {
        let at = |t: &u64| Some(crate::time::rfc3339_seconds(*t));
        let (reason, since, tries) = match note {
            Note::WholeChat | Note::IdTypeMove => (None, None, None),
            Note::Owed { reason, since } => (Some(reason.as_str().to_owned()), at(since), None),
            Note::Uncertain { since } => (None, at(since), None),
            Note::Waiting {
                reason,
                since,
                tries,
            } => (Some(reason.clone()), at(since), Some(*tries)),
        };
        NoteDoc {
            kind: note.kind().to_owned(),
            reason,
            since,
            tries,
        }
    }
}

/// One call as JSON: `body` is byte for byte what the API receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestDoc {
    pub user_id_type: UserIdType,
    pub body: ChatButtonRequest,
    pub changes: Vec<ChangeDoc>,
}

/// The state a saved plan was made against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRef {
    pub lineage: String,
    pub serial: u64,
}

/// The plan document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDoc {
    pub format_version: u32,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_removal: Option<MassRemoval>,
    /// Present in saved plans: the applied state the plan was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateRef>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub chat_names: std::collections::BTreeMap<String, String>,
    /// User id -> the email, mobile or name `feedbuttons.lock` knows it by, for the users the
    /// requests name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub people: std::collections::BTreeMap<String, String>,
    /// In saved plans: the app whose open_ids the requests hold, when they came from
    /// `feedbuttons.lock` (apply refuses another app's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ids_of: Option<String>,
    pub requests: Vec<RequestDoc>,
    /// Present in saved plans: `sha256:` of the document without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl PlanDoc {
    /// The document for a plan (no state, no checksum).
    pub fn new(plan: &Plan) -> PlanDoc {
        PlanDoc {
            format_version: FORMAT_VERSION,
            summary: plan.summary,
            mass_removal: plan.mass_removal.clone(),
            state: None,
            chat_names: plan.chat_names.clone(),
            people: plan.people.clone(),
            open_ids_of: None,
            requests: plan
                .requests
                .iter()
                .map(|r| RequestDoc {
                    user_id_type: r.user_id_type,
                    body: r.body.clone(),
                    changes: r
                        .changes
                        .iter()
                        .map(|c| ChangeDoc {
                            target: c.target.audience_label().to_owned(),
                            action: c.action,
                            note: c.note.as_deref().map(NoteDoc::of),
                        })
                        .collect(),
                })
                .collect(),
            checksum: None,
        }
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    fn digest(&self) -> String {
        let mut unsummed = self.clone();
        unsummed.checksum = None;
        let bytes = serde_json::to_vec(&unsummed).unwrap_or_default();
        format!("sha256:{}", crate::text::hex(&Sha256::digest(&bytes)))
    }

    /// Writes a saved plan bound to `state`.
    pub fn save(mut self, path: &Path, state: StateRef) -> Result<(), PlanFileError> {
        self.state = Some(state);
        self.checksum = None;
        self.checksum = Some(self.digest());
        std::fs::write(path, self.to_json()).map_err(|source| PlanFileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a saved plan and checks that it is whole and unaltered.
    pub fn load(path: &Path) -> Result<PlanDoc, PlanFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let doc: PlanDoc = serde_json::from_str(&text).map_err(|e| PlanFileError::Invalid {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        if doc.format_version != FORMAT_VERSION {
            return Err(PlanFileError::Invalid {
                path: path.to_path_buf(),
                why: format!(
                    "plan format version {} is not supported (this build reads {FORMAT_VERSION})",
                    doc.format_version
                ),
            });
        }
        let Some(sum) = &doc.checksum else {
            return Err(PlanFileError::Invalid {
                path: path.to_path_buf(),
                why: "it has no checksum: save plans with `plan --out`".to_owned(),
            });
        };
        if doc.state.is_none() {
            return Err(PlanFileError::Invalid {
                path: path.to_path_buf(),
                why: "it names no state".to_owned(),
            });
        }
        if *sum != doc.digest() {
            return Err(PlanFileError::Altered {
                path: path.to_path_buf(),
            });
        }
        Ok(doc)
    }

    /// The targets each request sets (or, for removals, clears and forgets), for recording.
    pub fn request_targets(r: &RequestDoc) -> Vec<(Target, Action)> {
        r.changes
            .iter()
            .map(|c| {
                let t = match (&r.body.user_ids, c.target.as_str()) {
                    (None, _) => Target::everyone(r.body.chat_id.clone()),
                    (Some(_), id) => Target::user(r.body.chat_id.clone(), r.user_id_type, id),
                };
                (t, c.action)
            })
            .collect()
    }
}

/// A saved plan that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// The plan file could not be read or written.
    #[error("cannot access plan file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a plan this build can read.
    #[error("{path} is not a usable feedbuttons plan: {why}")]
    Invalid { path: PathBuf, why: String },
    /// The checksum does not match: the file was edited after `plan --out` wrote it.
    #[error("{path} was altered after it was saved (its checksum does not match); make a new plan")]
    Altered { path: PathBuf },
}

/// The plan document borrowed from a [`Plan`]: the same JSON as [`PlanDoc::new`], without
/// copying a million targets first.
#[derive(Serialize)]
struct PlanView<'a> {
    format_version: u32,
    summary: &'a Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    mass_removal: Option<&'a MassRemoval>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    chat_names: &'a std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    people: &'a std::collections::BTreeMap<String, String>,
    requests: Vec<RequestView<'a>>,
}

#[derive(Serialize)]
struct RequestView<'a> {
    user_id_type: UserIdType,
    body: &'a ChatButtonRequest,
    changes: ChangesView<'a>,
}

struct ChangesView<'a>(&'a [super::Change<'a>]);

#[derive(Serialize)]
struct ChangeView<'a> {
    target: &'a str,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<NoteDoc>,
}

impl Serialize for ChangesView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0 {
            seq.serialize_element(&ChangeView {
                target: c.target.audience_label(),
                action: c.action,
                note: c.note.as_deref().map(NoteDoc::of),
            })?;
        }
        seq.end()
    }
}

/// Writes the plan as pretty JSON with a final newline: byte for byte `PlanDoc::new(plan).to_json()`.
pub fn write_json(plan: &Plan, mut w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let view = PlanView {
        format_version: FORMAT_VERSION,
        summary: &plan.summary,
        mass_removal: plan.mass_removal.as_ref(),
        chat_names: &plan.chat_names,
        people: &plan.people,
        requests: plan
            .requests
            .iter()
            .map(|r| RequestView {
                user_id_type: r.user_id_type,
                body: &r.body,
                changes: ChangesView(&r.changes),
            })
            .collect(),
    };
    // A buffer of a known type in front of `w`: the formatter's many small writes (indents,
    // quotes, commas) are inlined copies, not calls through `dyn Write`.
    let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut w);
    serde_json::to_writer_pretty(&mut buffered, &view)?;
    std::io::Write::write_all(&mut buffered, b"\n")?;
    std::io::Write::flush(&mut buffered)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::feishu::wire::{ActionType, Button, Text};

    #[test]
    fn the_streamed_json_is_the_documents_json() {
        let list = Arc::new(vec![Button {
            multi_url: None,
            action_type: ActionType::Webhook,
            text: Text {
                text: "Ack".to_owned(),
            },
            button_type: None,
            action_map: None,
        }]);
        let mut desired = BTreeMap::new();
        desired.insert(Target::everyone("oc_a"), list.clone());
        desired.insert(Target::user("oc_a", UserIdType::OpenId, "ou_a"), list);
        let mut applied: BTreeMap<Target, Arc<crate::target::ButtonList>> = BTreeMap::new();
        applied.insert(
            Target::user("oc_b", UserIdType::OpenId, "ou_b"),
            Arc::new(Vec::new()),
        );
        let names = BTreeMap::from([("oc_a".to_owned(), "A".to_owned())]);
        let plan = super::super::plan(
            &desired,
            &names,
            &applied,
            &super::super::PlanOptions::default(),
        );
        let mut streamed = Vec::new();
        write_json(&plan, &mut streamed).expect("write");
        assert_eq!(
            String::from_utf8(streamed).expect("utf-8"),
            PlanDoc::new(&plan).to_json()
        );
    }
}
