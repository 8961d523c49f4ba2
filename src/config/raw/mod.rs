//! Stage 2 of loading: one file's spanned YAML tree -> raw typed values that keep their positions.
//!
//! Shape errors (an unknown field, a wrong type, a missing required field, an unknown enum value)
//! are reported here, all of them; what is left is decoded as far as it can be, so that the
//! cross-file checks in `validate` still run on the rest.

use super::diag::{Diagnostic, FileId, Report};
use super::people::Source;
use super::yaml::{Node, Pos, Value};
use crate::feishu::wire::{ActionType, ButtonType, UserIdType};
use crate::id::Id;

mod decode;

/// A value and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub pos: Pos,
}

/// One config file, decoded.
#[derive(Debug, Default)]
pub struct RawFile {
    pub user_id_type: Option<At<UserIdType>>,
    pub buttons: Vec<(At<String>, RawButton)>,
    pub user_sets: Vec<RawUserSet>,
    pub chats: Vec<RawChat>,
}

/// A user set: its name, the users it lists (ids, emails, mobiles), and the directory sources
/// it draws people from.
pub type RawUserSet = (At<String>, Vec<At<Id>>, Vec<At<Source>>);

/// A button as written (named under `buttons:` or inline in an assignment).
#[derive(Debug, Clone, PartialEq)]
pub struct RawButton {
    pub pos: Pos,
    pub text: Option<At<String>>,
    pub style: Option<At<ButtonType>>,
    pub url: Option<RawUrl>,
    pub action: Option<At<ActionType>>,
    pub action_map: Option<Vec<(At<String>, At<String>)>>,
    /// A field was unknown or could not be decoded: later checks that infer from absence skip it.
    pub incomplete: bool,
}

/// `url:` is one URL for every platform, or one per platform.
#[derive(Debug, Clone, PartialEq)]
pub enum RawUrl {
    One(At<String>),
    PerPlatform {
        pos: Pos,
        default: Option<At<String>>,
        android: Option<At<String>>,
        ios: Option<At<String>>,
        pc: Option<At<String>>,
    },
}

/// One entry of `chats:`.
#[derive(Debug)]
pub struct RawChat {
    pub pos: Pos,
    pub chat_id: Option<At<String>>,
    pub name: Option<At<String>>,
    pub user_id_type: Option<At<UserIdType>>,
    pub assign: Vec<RawAssign>,
}

/// One entry of a chat's `assign:`.
#[derive(Debug)]
pub struct RawAssign {
    pub pos: Pos,
    pub user_sets: Vec<At<String>>,
    pub users: Vec<At<Id>>,
    pub everyone: Option<At<bool>>,
    /// `None` when `buttons:` is missing (an error) or not a list.
    pub buttons: Option<At<Vec<RawButtonRef>>>,
    /// A field was unknown or could not be decoded: later checks that infer from absence skip it.
    pub incomplete: bool,
}

/// An entry of an assignment's `buttons:`: the name of a defined button, or an inline one.
#[derive(Debug)]
pub enum RawButtonRef {
    Named(At<String>),
    Inline(Box<RawButton>),
}

const TOP_FIELDS: &[&str] = &["version", "user_id_type", "buttons", "user_sets", "chats"];
const BUTTON_FIELDS: &[&str] = &["text", "style", "url", "action", "action_map"];
const URL_FIELDS: &[&str] = &["default", "android", "ios", "pc"];
const CHAT_FIELDS: &[&str] = &["chat_id", "name", "user_id_type", "assign"];
const ASSIGN_FIELDS: &[&str] = &["user_sets", "users", "everyone", "buttons"];
const SOURCE_FIELDS: &[&str] = &["members_of", "department"];

/// The only config format version this build reads.
pub const VERSION: i128 = 1;

/// Decodes one file's tree, reporting into `report`.
pub fn decode_file(file: FileId, root: &Node, report: &mut Report) -> RawFile {
    let mut d = Decoder {
        file,
        report,
        unknown_seen: false,
    };
    d.file(root)
}

struct Decoder<'a> {
    file: FileId,
    report: &'a mut Report,
    /// Whether the last `fields` call reported an unknown key.
    unknown_seen: bool,
}

impl Decoder<'_> {
    fn err(
        &mut self,
        code: &'static str,
        pos: Pos,
        message: String,
        label: &str,
    ) -> &mut Diagnostic {
        self.report
            .push(Diagnostic::error(code, message).label(self.file, pos, label));
        let last = self.report.diagnostics.len() - 1;
        &mut self.report.diagnostics[last]
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        let found = node.value.kind();
        let d = self.err(
            "wrong-type",
            node.pos,
            format!("{what} must be {expected}, found {found}"),
            &format!("expected {expected}"),
        );
        if expected == "a string"
            && matches!(node.value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
        {
            d.help = Some("put it in quotes to make it a string".to_owned());
        }
    }

    /// The entries of a mapping whose keys are all allowed; unknown keys are reported.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
        let before = self.report.diagnostics.len();
        let fields = self.fields_inner(node, what, allowed);
        self.unknown_seen = self.report.diagnostics.len() > before;
        fields
    }

    fn fields_inner<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Str(key) = &k.value else {
                self.wrong_type(k, &format!("a key in {what}"), "a string");
                continue;
            };
            if allowed.contains(&key.as_str()) {
                out.push((key.as_str(), k, v));
            } else {
                let mut message = format!("unknown field `{key}` in {what}");
                if let Some(near) = suggest(key, allowed) {
                    message.push_str(&format!(" (did you mean `{near}`?)"));
                }
                let allowed_list = allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>();
                let d = self.err("unknown-field", k.pos, message, "unknown field");
                d.help = Some(format!(
                    "the fields allowed here are {}",
                    allowed_list.join(", ")
                ));
            }
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<At<String>> {
        self.id(node, what).map(|s| At {
            value: s.value.into(),
            pos: s.pos,
        })
    }

    /// A string value as an [`Id`]: a user as written (an id, an email, a mobile) is kept so,
    /// inline, as most are short.
    fn id(&mut self, node: &Node, what: &str) -> Option<At<Id>> {
        match &node.value {
            Value::Str(s) => Some(At {
                value: s.clone(),
                pos: node.pos,
            }),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    fn ids(&mut self, node: &Node, what: &str) -> Vec<At<Id>> {
        match &node.value {
            Value::Seq(items) => {
                // Sized up front: the daemon keeps these lists, and growing one by doubling
                // leaves it up to half empty.
                let mut ids = Vec::with_capacity(items.len());
                ids.extend(items.iter().filter_map(|n| self.id(n, what)));
                ids
            }
            _ => {
                self.wrong_type(node, &format!("`{what}` list"), "a list");
                Vec::new()
            }
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<At<String>> {
        self.ids(node, what)
            .into_iter()
            .map(|s| At {
                value: s.value.into(),
                pos: s.pos,
            })
            .collect()
    }

    fn choice<T: Copy>(
        &mut self,
        node: &Node,
        what: &str,
        code: &'static str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Option<At<T>> {
        let s = self.string(node, what)?;
        if let Some(v) = all.iter().copied().find(|v| name(*v) == s.value) {
            return Some(At {
                value: v,
                pos: s.pos,
            });
        }
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        let mut message = format!(
            "unknown {what} `{}`; expected one of {}",
            s.value,
            names.join(", ")
        );
        if let Some(near) = suggest(&s.value, &names) {
            message.push_str(&format!(" (did you mean `{near}`?)"));
        }
        self.err(code, s.pos, message, &format!("unknown {what}"));
        None
    }

    fn user_id_type(&mut self, node: &Node) -> Option<At<UserIdType>> {
        self.choice(
            node,
            "user_id_type",
            "unknown-user-id-type",
            &UserIdType::ALL,
            UserIdType::as_str,
        )
    }
}

/// The allowed name closest to `given`, when it is close enough to be a likely typo. Ties go to
/// the first name in sorted order, so the same config always gets the same suggestion.
pub fn suggest<'a>(given: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::jaro_winkler(given, a), *a))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|x, y| x.0.total_cmp(&y.0).then_with(|| y.1.cmp(x.1)))
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn a_tie_is_broken_by_name_whatever_the_order() {
        let names = ["runbook4", "runbook2", "runbook1"];
        for perm in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let shuffled: Vec<&str> = perm.iter().map(|&i| names[i]).collect();
            assert_eq!(suggest("runbook3", &shuffled), Some("runbook1"));
        }
        assert_eq!(suggest("zzz", &names), None);
    }
}
