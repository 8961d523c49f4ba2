//! Stage 2 of loading: one file's spanned YAML tree -> raw typed values that keep their positions.
//!
//! Shape errors (an unknown field, a wrong type, a missing required field, an unknown enum value)
//! are reported here, all of them; what is left is decoded as far as it can be, so that the
//! cross-file checks in `validate.rs` still run on the rest.

use super::diag::{Diagnostic, FileId, Report};
use super::people::Source;
use super::yaml::{Node, Pos, Value};
use crate::feishu::wire::{ActionType, ButtonType, UserIdType};

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
pub type RawUserSet = (At<String>, Vec<At<String>>, Vec<At<Source>>);

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
    pub users: Vec<At<String>>,
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

    fn strings(&mut self, node: &Node, what: &str) -> Vec<At<String>> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|n| self.string(n, what)).collect(),
            _ => {
                self.wrong_type(node, &format!("`{what}` list"), "a list");
                Vec::new()
            }
        }
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

    fn file(&mut self, root: &Node) -> RawFile {
        let mut raw = RawFile::default();
        if root.value == Value::Null {
            self.err(
                "version-missing",
                Pos::START,
                "the file is empty: every config file starts with `version: 1`".to_owned(),
                "",
            );
            return raw;
        }
        let Some(fields) = self.fields(root, "a config file", TOP_FIELDS) else {
            return raw;
        };
        let mut version = None;
        for (key, k, v) in fields {
            match key {
                "version" => version = Some((k, v)),
                "user_id_type" => raw.user_id_type = self.user_id_type(v),
                "buttons" => raw.buttons = self.named_buttons(v),
                "user_sets" => raw.user_sets = self.user_sets(v),
                "chats" => raw.chats = self.chats(v),
                _ => {}
            }
        }
        match version {
            None => {
                let d = self.err(
                    "version-missing",
                    root.pos,
                    "missing `version`: every config file must say `version: 1`".to_owned(),
                    "in this file",
                );
                d.help = Some("add `version: 1` as the first line".to_owned());
            }
            Some((_, v)) if v.value == Value::Int(VERSION) => {}
            Some((_, v)) => {
                // A version that means 1 but is written otherwise gets told how to write it;
                // any other is a version this build does not read.
                let (message, help) = match &v.value {
                    Value::Float(f) if *f == VERSION as f64 => (
                        format!("the config version is the whole number {VERSION}, not {f:?}"),
                        format!("write `version: {VERSION}`, without `.0`"),
                    ),
                    Value::Str(s) if s.trim() == VERSION.to_string() => (
                        format!(
                            "the config version is the number {VERSION}, not the string \"{s}\""
                        ),
                        format!("write `version: {VERSION}`, without quotes"),
                    ),
                    value => {
                        let shown = match value {
                            Value::Int(i) => i.to_string(),
                            Value::Float(f) => format!("{f:?}"),
                            Value::Str(s) => format!("\"{s}\""),
                            other => other.kind().to_owned(),
                        };
                        (
                            format!(
                                "unsupported config version {shown}; this feedbuttons reads version {VERSION}"
                            ),
                            format!("write `version: {VERSION}`"),
                        )
                    }
                };
                let d = self.err("version-unsupported", v.pos, message, "unsupported version");
                d.help = Some(help);
            }
        }
        raw
    }

    fn named_buttons(&mut self, node: &Node) -> Vec<(At<String>, RawButton)> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "`buttons`", "a mapping of button names to buttons");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(name) = self.string(k, "a button name") else {
                continue;
            };
            if let Some(b) = self.button(v, &format!("button `{}`", name.value)) {
                out.push((name, b));
            }
        }
        out
    }

    fn button(&mut self, node: &Node, what: &str) -> Option<RawButton> {
        let fields = self.fields(node, what, BUTTON_FIELDS)?;
        let unknown = self.unknown_seen;
        let before = self.report.diagnostics.len();
        let mut b = RawButton {
            pos: node.pos,
            text: None,
            style: None,
            url: None,
            action: None,
            action_map: None,
            incomplete: false,
        };
        let mut text_seen = false;
        for (key, _, v) in fields {
            match key {
                "text" => {
                    text_seen = true;
                    b.text = self.string(v, "`text`");
                }
                "style" => {
                    b.style = self.choice(
                        v,
                        "style",
                        "unknown-style",
                        &ButtonType::ALL,
                        ButtonType::as_str,
                    )
                }
                "action" => {
                    b.action = self.choice(
                        v,
                        "action",
                        "unknown-action",
                        &ActionType::ALL,
                        ActionType::as_str,
                    )
                }
                "url" => b.url = self.url(v),
                "action_map" => b.action_map = self.action_map(v),
                _ => {}
            }
        }
        b.incomplete = unknown || self.report.diagnostics.len() > before;
        if !text_seen {
            let d = self.err(
                "missing-field",
                node.pos,
                format!("{what} has no `text`"),
                "`text` is required",
            );
            d.help = Some("every button needs a label of 1 to 30 characters".to_owned());
        }
        Some(b)
    }

    fn url(&mut self, node: &Node) -> Option<RawUrl> {
        if let Value::Str(_) = node.value {
            return self.string(node, "`url`").map(RawUrl::One);
        }
        let fields = self.fields(node, "`url`", URL_FIELDS)?;
        let (mut default, mut android, mut ios, mut pc) = (None, None, None, None);
        for (key, _, v) in fields {
            let s = self.string(v, &format!("`url.{key}`"));
            match key {
                "default" => default = s,
                "android" => android = s,
                "ios" => ios = s,
                "pc" => pc = s,
                _ => {}
            }
        }
        Some(RawUrl::PerPlatform {
            pos: node.pos,
            default,
            android,
            ios,
            pc,
        })
    }

    fn action_map(&mut self, node: &Node) -> Option<Vec<(At<String>, At<String>)>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "`action_map`", "a mapping of strings to strings");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = self.string(k, "an `action_map` key");
            let value = self.string(v, "an `action_map` value");
            if let (Some(key), Some(value)) = (key, value) {
                out.push((key, value));
            }
        }
        Some(out)
    }

    fn user_sets(&mut self, node: &Node) -> Vec<RawUserSet> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(
                node,
                "`user_sets`",
                "a mapping of set names to lists of user ids",
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(name) = self.string(k, "a user set name") else {
                continue;
            };
            let what = format!("user set `{}`", name.value);
            let Value::Seq(items) = &v.value else {
                self.wrong_type(v, &format!("`{what}` list"), "a list");
                out.push((name, Vec::new(), Vec::new()));
                continue;
            };
            let (mut ids, mut sources) = (Vec::with_capacity(items.len()), Vec::new());
            for item in items {
                match &item.value {
                    Value::Map(_) => sources.extend(self.source(item)),
                    _ => ids.extend(self.string(item, &what)),
                }
            }
            out.push((name, ids, sources));
        }
        out
    }

    /// A user set entry that draws people from the directory: `{members_of: oc_...}` or
    /// `{department: od-...}`, one key each.
    fn source(&mut self, node: &Node) -> Option<At<Source>> {
        let fields = self.fields(node, "a directory source", SOURCE_FIELDS)?;
        if self.unknown_seen {
            return None;
        }
        let [(key, _, v)] = fields.as_slice() else {
            self.err(
                "wrong-type",
                node.pos,
                "a directory source names one chat (`members_of`) or one department (`department`)"
                    .to_owned(),
                "expected one key",
            )
            .help = Some("write each source as its own entry: `- members_of: oc_...`".to_owned());
            return None;
        };
        let id = self.string(v, &format!("`{key}`"))?;
        let source = match *key {
            "members_of" => Source::MembersOf(id.value),
            _ => Source::Department(id.value),
        };
        Some(At {
            value: source,
            pos: id.pos,
        })
    }

    fn chats(&mut self, node: &Node) -> Vec<RawChat> {
        let Value::Seq(items) = &node.value else {
            self.wrong_type(node, "`chats`", "a list of chats");
            return Vec::new();
        };
        items.iter().filter_map(|n| self.chat(n)).collect()
    }

    fn chat(&mut self, node: &Node) -> Option<RawChat> {
        let fields = self.fields(node, "a chat", CHAT_FIELDS)?;
        let mut chat = RawChat {
            pos: node.pos,
            chat_id: None,
            name: None,
            user_id_type: None,
            assign: Vec::new(),
        };
        let mut id_seen = false;
        for (key, _, v) in fields {
            match key {
                "chat_id" => {
                    id_seen = true;
                    chat.chat_id = self.string(v, "`chat_id`");
                }
                "name" => chat.name = self.string(v, "`name`"),
                "user_id_type" => chat.user_id_type = self.user_id_type(v),
                "assign" => match &v.value {
                    Value::Seq(items) => {
                        chat.assign = items.iter().filter_map(|n| self.assignment(n)).collect()
                    }
                    _ => self.wrong_type(v, "`assign`", "a list of assignments"),
                },
                _ => {}
            }
        }
        if !id_seen {
            self.err(
                "missing-field",
                node.pos,
                "a chat has no `chat_id`".to_owned(),
                "`chat_id` is required",
            );
        }
        Some(chat)
    }

    fn assignment(&mut self, node: &Node) -> Option<RawAssign> {
        let fields = self.fields(node, "an assignment", ASSIGN_FIELDS)?;
        let unknown = self.unknown_seen;
        let before = self.report.diagnostics.len();
        let mut a = RawAssign {
            pos: node.pos,
            user_sets: Vec::new(),
            users: Vec::new(),
            everyone: None,
            buttons: None,
            incomplete: false,
        };
        let mut buttons_seen = false;
        for (key, _, v) in fields {
            match key {
                "user_sets" => a.user_sets = self.strings(v, "user_sets"),
                "users" => a.users = self.strings(v, "users"),
                "everyone" => match v.value {
                    Value::Bool(b) => {
                        a.everyone = Some(At {
                            value: b,
                            pos: v.pos,
                        })
                    }
                    _ => self.wrong_type(v, "`everyone`", "true or false"),
                },
                "buttons" => {
                    buttons_seen = true;
                    match &v.value {
                        Value::Seq(items) => {
                            let refs = items
                                .iter()
                                .enumerate()
                                .filter_map(|(i, n)| match &n.value {
                                    Value::Str(s) => Some(RawButtonRef::Named(At {
                                        value: s.clone(),
                                        pos: n.pos,
                                    })),
                                    Value::Map(_) => self
                                        .button(n, &format!("inline button #{}", i + 1))
                                        .map(|b| RawButtonRef::Inline(Box::new(b))),
                                    _ => {
                                        self.wrong_type(
                                            n,
                                            "a `buttons` entry",
                                            "a button name or an inline button",
                                        );
                                        None
                                    }
                                })
                                .collect();
                            a.buttons = Some(At {
                                value: refs,
                                pos: v.pos,
                            });
                        }
                        _ => self.wrong_type(v, "`buttons`", "a list of 0 to 2 buttons"),
                    }
                }
                _ => {}
            }
        }
        a.incomplete = unknown || self.report.diagnostics.len() > before;
        if !buttons_seen {
            let d = self.err(
                "missing-field",
                node.pos,
                "an assignment has no `buttons`".to_owned(),
                "`buttons` is required",
            );
            d.help = Some("list 0 to 2 buttons; `buttons: []` clears them".to_owned());
        }
        Some(a)
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
