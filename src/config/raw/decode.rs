//! Decoding the parts of a file: the top level, buttons and their URLs and actions, user sets
//! and their directory sources, chats and their assignments.

use super::*;

impl Decoder<'_> {
    pub(super) fn file(&mut self, root: &Node) -> RawFile {
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
                    // `1.0`, and `01`, which the parser reads as a float.
                    Value::Float(f) if *f == VERSION as f64 => (
                        format!(
                            "the config version is the whole number {VERSION}, written with no decimal point or leading zero"
                        ),
                        format!("write `version: {VERSION}`"),
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

    pub(super) fn named_buttons(&mut self, node: &Node) -> Vec<(At<String>, RawButton)> {
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

    pub(super) fn button(&mut self, node: &Node, what: &str) -> Option<RawButton> {
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

    pub(super) fn url(&mut self, node: &Node) -> Option<RawUrl> {
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

    pub(super) fn action_map(&mut self, node: &Node) -> Option<Vec<(At<String>, At<String>)>> {
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

    pub(super) fn user_sets(&mut self, node: &Node) -> Vec<RawUserSet> {
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
                    _ => ids.extend(self.id(item, &what)),
                }
            }
            out.push((name, ids, sources));
        }
        out
    }

    /// A user set entry that draws people from the directory: `{members_of: oc_...}` or
    /// `{department: od-...}`, one key each.
    pub(super) fn source(&mut self, node: &Node) -> Option<At<Source>> {
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

    pub(super) fn chats(&mut self, node: &Node) -> Vec<RawChat> {
        let Value::Seq(items) = &node.value else {
            self.wrong_type(node, "`chats`", "a list of chats");
            return Vec::new();
        };
        items.iter().filter_map(|n| self.chat(n)).collect()
    }

    pub(super) fn chat(&mut self, node: &Node) -> Option<RawChat> {
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

    pub(super) fn assignment(&mut self, node: &Node) -> Option<RawAssign> {
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
                "users" => a.users = self.ids(v, "users"),
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
                                        value: s.to_string(),
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
