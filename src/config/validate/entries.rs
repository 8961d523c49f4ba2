//! Checking what a config defines and names: buttons, user sets, user entries and their ids,
//! directory sources, button lists, texts and URLs.

use super::*;

impl Validator<'_> {
    pub(super) fn define_buttons<'a>(
        &mut self,
        files: &[(FileId, &'a RawFile)],
    ) -> HashMap<&'a str, (FileId, Pos, Option<wire::Button>)> {
        let mut out: HashMap<&'a str, (FileId, Pos, Option<wire::Button>)> = HashMap::new();
        for (file, raw) in files {
            for (name, b) in &raw.buttons {
                if let Some((f0, p0, _)) = out.get(name.value.as_str()) {
                    self.report.push(
                        Diagnostic::error(
                            "duplicate-button",
                            format!("button `{}` is defined twice", name.value),
                        )
                        .label(*file, name.pos, "defined again here")
                        .label(*f0, *p0, "first defined here")
                        .help("button names are unique across all files of a config: rename one"),
                    );
                    continue;
                }
                let button = self.button(*file, b);
                out.insert(&name.value, (*file, name.pos, button));
            }
        }
        out
    }

    pub(super) fn define_sets<'a>(
        &mut self,
        files: &[(FileId, &'a RawFile)],
    ) -> BTreeMap<&'a str, SetDef<'a>> {
        let mut out: BTreeMap<&'a str, SetDef<'a>> = BTreeMap::new();
        for (file, raw) in files {
            for (name, ids, sources) in &raw.user_sets {
                if let Some(first) = out.get(name.value.as_str()) {
                    self.report.push(
                        Diagnostic::error("duplicate-user-set", format!("user set `{}` is defined twice", name.value))
                            .label(*file, name.pos, "defined again here")
                            .label(first.file, first.pos, "first defined here")
                            .help("user set names are unique across all files of a config: rename or merge them"),
                    );
                    continue;
                }
                self.check_sources(*file, sources);
                let mut listed: HashMap<&str, Pos> = HashMap::new();
                for id in ids {
                    match listed.get(id.value.as_str()) {
                        Some(first) => self.report.push(
                            Diagnostic::warning(
                                "duplicate-user",
                                format!(
                                    "user `{}` is listed twice in user set `{}`",
                                    id.value, name.value
                                ),
                            )
                            .label(*file, id.pos, "listed again here")
                            .label(*file, *first, "first listed here")
                            .help("remove one of them: a set holds each user once"),
                        ),
                        None => {
                            listed.insert(&id.value, id.pos);
                        }
                    }
                }
                out.insert(
                    &name.value,
                    SetDef {
                        file: *file,
                        pos: name.pos,
                        ids,
                        sources,
                    },
                );
            }
        }
        out
    }

    /// The id a user entry names for `id_type`: the id itself, or the lock's id for an email or
    /// a mobile. Reports each bad (type, entry) once; `place` is where the entry is written and,
    /// for an entry of a user set, where the set is used.
    pub(super) fn user<'a>(
        &mut self,
        people: &'a People,
        id_type: UserIdType,
        written: &'a str,
        place: (FileId, Pos, Option<(FileId, Pos)>),
        bad: &mut foldhash::HashSet<(UserIdType, &'a str)>,
    ) -> Option<&'a str> {
        let (file, pos, reference) = place;
        match crate::config::people::Written::of(written) {
            crate::config::people::Written::Id(id) => self
                .check_user_id(id_type, id, file, pos, reference, bad)
                .then_some(id),
            person => match people.id(written, id_type) {
                Ok(id) => Some(id),
                Err(missing) => {
                    if bad.insert((id_type, written)) {
                        let d = crate::config::people::unresolved_user(person, id_type, missing);
                        let label = match person.problem() {
                            Some(_) => "cannot be looked up as written",
                            None => missing.label(),
                        };
                        self.report
                            .push(located(d, (file, pos, label), reference, id_type));
                    }
                    None
                }
            },
        }
    }

    /// The ids a directory source gives for `id_type`, from the lock; reported once when the
    /// lock has none.
    pub(super) fn source<'a>(
        &mut self,
        people: &'a People,
        id_type: UserIdType,
        source: &'a Source,
        place: (FileId, Pos, Option<(FileId, Pos)>),
        bad: &mut foldhash::HashSet<(UserIdType, &'a Source)>,
    ) -> &'a [String] {
        if source.problem().is_some() {
            return &[];
        }
        match people.members(source, id_type) {
            Ok(ids) => ids,
            Err(missing) => {
                let (file, pos, reference) = place;
                if bad.insert((id_type, source)) {
                    let d = crate::config::people::unresolved_source(source, id_type, missing);
                    let at = (file, pos, missing.label());
                    self.report.push(located(d, at, reference, id_type));
                }
                &[]
            }
        }
    }

    /// Reports directory sources whose id cannot be a chat's or a department's.
    pub(super) fn check_sources(&mut self, file: FileId, sources: &[At<Source>]) {
        for s in sources {
            if let Some(rule) = s.value.problem() {
                self.report.push(
                    Diagnostic::error(
                        "invalid-source",
                        format!("`{}` is not a directory source", s.value),
                    )
                    .label(file, s.pos, rule),
                );
            }
        }
    }

    /// Checks an id against its type; reports each bad (type, id) once. `reference` is the place
    /// that used the id through a user set.
    pub(super) fn check_user_id<'a>(
        &mut self,
        id_type: UserIdType,
        id: &'a str,
        file: FileId,
        pos: Pos,
        reference: Option<(FileId, Pos)>,
        bad: &mut foldhash::HashSet<(UserIdType, &'a str)>,
    ) -> bool {
        let Some(problem) = IdProblem::of(id, id_type.prefix()) else {
            return true;
        };
        if bad.insert((id_type, id)) {
            let kind = format!("{id_type} ids");
            let mut d = Diagnostic::error(
                "invalid-user-id",
                format!(
                    "{} is not a valid {id_type}{}",
                    shown_id(id),
                    problem.because()
                ),
            )
            .label(file, pos, problem.rule(&kind, id_type.prefix()));
            if let Some((f, p)) = reference {
                d = d.label(f, p, format!("used here, where ids are {id_type}"));
            }
            let hint = match problem {
                IdProblem::Everyone => "for the whole chat write `everyone: true`; for this user, use their open_id (ou_...) under `user_id_type: open_id`".to_owned(),
                IdProblem::Prefix(_) => match UserIdType::ALL
                    .iter()
                    .find(|t| t.prefix().is_some_and(|p| id.starts_with(p)))
                {
                    Some(t) => format!(
                        "these look like {t}s: set `user_id_type: {t}` on the chat or the file"
                    ),
                    None if (7..=15).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) => {
                        // A mainland China mobile is 11 digits from 1; longer ones may hold
                        // their country code already.
                        let example = if id.len() == 11 && id.starts_with('1') {
                            format!("\"+86{id}\"")
                        } else {
                            format!("\"+{id}\" if it begins with its country code")
                        };
                        format!("if this is a mobile number, write it with `+` and its country code, in quotes: {example}; otherwise set `user_id_type` on the chat or the file to the type of these ids")
                    }
                    None => "set `user_id_type` on the chat or the file to the type of these ids"
                        .to_owned(),
                },
                _ => "copy the id as the API or the admin console gives it".to_owned(),
            };
            self.report.push(d.help(hint));
        }
        false
    }

    /// Resolves an assignment's `buttons:` to one interned list; `None` when it has errors.
    pub(super) fn button_list(
        &mut self,
        file: FileId,
        refs: &At<Vec<RawButtonRef>>,
        defined: &HashMap<&str, (FileId, Pos, Option<wire::Button>)>,
    ) -> Option<Arc<ButtonList>> {
        let mut ok = true;
        if refs.value.len() > api::MAX_BUTTONS {
            self.report.push(
                Diagnostic::error(
                    "too-many-buttons",
                    format!(
                        "an assignment lists {} buttons; a chat shows at most {}",
                        refs.value.len(),
                        api::MAX_BUTTONS
                    ),
                )
                .label(file, refs.pos, format!("{} buttons", refs.value.len()))
                .help("keep at most 2 buttons per assignment"),
            );
            ok = false;
        }
        let mut list = Vec::with_capacity(refs.value.len());
        for r in &refs.value {
            match r {
                RawButtonRef::Named(name) => match defined.get(name.value.as_str()) {
                    Some((_, _, Some(b))) => list.push(b.clone()),
                    Some((_, _, None)) => ok = false,
                    None if self.waits(file, name.pos, &name.value) => ok = false,
                    None => {
                        let names: Vec<&str> = defined.keys().copied().collect();
                        let mut d = Diagnostic::error(
                            "undefined-button",
                            format!("button `{}` is not defined", name.value),
                        )
                        .label(
                            file,
                            name.pos,
                            "not defined under `buttons:` in any file of this config",
                        );
                        if let Some(near) = suggest(&name.value, &names) {
                            d = d.help(format!("did you mean `{near}`?"));
                        }
                        self.report.push(d);
                        ok = false;
                    }
                },
                RawButtonRef::Inline(b) => match self.button(file, b) {
                    Some(b) => list.push(b),
                    None => ok = false,
                },
            }
        }
        if !ok {
            return None;
        }
        if let Some(shared) = self.interned.get(&list) {
            return Some(shared.clone());
        }
        let shared = Arc::new(list.clone());
        self.interned.insert(list, shared.clone());
        Some(shared)
    }

    /// Checks one button's fields and builds its wire form; `None` when it has errors.
    pub(super) fn button(&mut self, file: FileId, b: &RawButton) -> Option<wire::Button> {
        let mut ok = true;
        let text = match &b.text {
            Some(t) => {
                ok &= self.check_text(file, t);
                Some(t.value.clone())
            }
            None => {
                ok = false;
                None
            }
        };
        let action = b.action.as_ref().map_or(ActionType::UrlPage, |a| a.value);
        let multi_url = match &b.url {
            None => None,
            Some(RawUrl::One(u)) => {
                ok &= self.check_url(file, u);
                Some(MultiUrl {
                    url: Some(u.value.clone()),
                    ..MultiUrl::default()
                })
            }
            Some(RawUrl::PerPlatform {
                default,
                android,
                ios,
                pc,
                ..
            }) => {
                for u in [default, android, ios, pc].into_iter().flatten() {
                    ok &= self.check_url(file, u);
                }
                let get = |u: &Option<At<String>>| u.as_ref().map(|u| u.value.clone());
                let m = MultiUrl {
                    url: get(default),
                    android_url: get(android),
                    ios_url: get(ios),
                    pc_url: get(pc),
                };
                (m != MultiUrl::default()).then_some(m)
            }
        };
        if action == ActionType::UrlPage && multi_url.is_none() && !b.incomplete {
            let pos = match &b.url {
                Some(RawUrl::PerPlatform { pos, .. }) => *pos,
                _ => b.text.as_ref().map_or(b.pos, |t| t.pos),
            };
            self.report.push(
                Diagnostic::error("url-missing", "a `url_page` button has no URL")
                    .label(file, pos, "this button opens nothing")
                    .help("add `url: https://...`, or make it `action: webhook`"),
            );
            ok = false;
        }
        let action_map = b.action_map.as_ref().filter(|m| !m.is_empty()).map(|m| {
            m.iter()
                .map(|(k, v)| (k.value.clone(), v.value.clone()))
                .collect()
        });
        let button_type = Some(b.style.as_ref().map_or(ButtonType::Default, |s| s.value));
        match (ok, text) {
            (true, Some(text)) => Some(wire::Button {
                multi_url,
                action_type: action,
                text: Text { text },
                button_type,
                action_map,
            }),
            _ => None,
        }
    }

    /// A label Feishu shows: 1 to 30 characters on one line, of which some can be seen.
    pub(super) fn check_text(&mut self, file: FileId, t: &At<String>) -> bool {
        let n = t.value.chars().count();
        // A line break or a control character would be sent as it is; what a client draws
        // for it is nobody's guess.
        if let Some((i, c)) = t
            .value
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        {
            let breaks = describe_char(c).starts_with("a line break");
            let help = if breaks
                && t.value.trim_end() != t.value
                && t.value.trim_end().chars().all(|c| !c.is_control())
            {
                "a button label is one line; a `|` or `>` block keeps a line break at its end: write `|-` or `>-`, or a plain value"
            } else if breaks {
                "a button label is one line: remove the line break"
            } else if c == '\t' {
                "write a space instead of the tab: a button label is plain text"
            } else {
                "remove the control character: a button label is plain text"
            };
            self.report.push(
                Diagnostic::error(
                    "button-text-control",
                    format!("button text holds {}", describe_char(c)),
                )
                .label(file, t.pos, format!("at character {}", i + 1))
                .help(help),
            );
            return false;
        }
        if t.value.trim().is_empty() {
            self.report.push(
                Diagnostic::error("button-text-empty", "button text is empty")
                    .label(file, t.pos, "empty text")
                    .help(format!(
                        "write a label of 1 to {} characters",
                        api::MAX_TEXT_CHARS
                    )),
            );
            return false;
        }
        if let Some(c) = t.value.chars().find(|c| is_invisible(*c)).filter(|_| {
            t.value
                .chars()
                .all(|c| c.is_whitespace() || is_invisible(c))
        }) {
            self.report.push(
                Diagnostic::error(
                    "button-text-empty",
                    format!(
                        "button text shows nothing: it holds only invisible characters, such as U+{:04X}",
                        u32::from(c)
                    ),
                )
                .label(file, t.pos, "nothing to see")
                .help(format!(
                    "write a label of 1 to {} characters that can be seen",
                    api::MAX_TEXT_CHARS
                )),
            );
            return false;
        }
        if n > api::MAX_TEXT_CHARS {
            self.report.push(
                Diagnostic::error(
                    "button-text-too-long",
                    format!(
                        "button text is {n} characters; at most {} are allowed",
                        api::MAX_TEXT_CHARS
                    ),
                )
                .label(file, t.pos, format!("{n} characters"))
                .help("shorten the label"),
            );
            return false;
        }
        true
    }

    pub(super) fn check_url(&mut self, file: FileId, u: &At<String>) -> bool {
        // The URL is sent as written, so it must not lean on the parser's cleaning: a space or a
        // control character would reach the API (and the user's client) as it is.
        if has_blank(&u.value) {
            self.report.push(
                Diagnostic::error("url-invalid", "the URL has spaces or control characters")
                    .label(file, u.pos, "not a URL as written")
                    .help("remove surrounding spaces; write a space inside a URL as %20"),
            );
            return false;
        }
        let n = u.value.chars().count();
        if n > api::MAX_URL_CHARS {
            self.report.push(
                Diagnostic::error(
                    "url-too-long",
                    format!(
                        "URL is {n} characters; at most {} are allowed",
                        api::MAX_URL_CHARS
                    ),
                )
                .label(file, u.pos, format!("{n} characters"))
                .help("use a shorter link (a redirect or a link shortener)"),
            );
            return false;
        }
        // The URL is sent as written, and Feishu documents lower-case `https` URLs only; whether
        // it compares the scheme ignoring case is not documented, so an `HTTPS://` is refused
        // here rather than by the API.
        if let Some((scheme, _)) = u.value.split_once(':')
            && scheme.eq_ignore_ascii_case("https")
            && scheme != "https"
        {
            self.report.push(
                Diagnostic::error(
                    "url-not-https",
                    format!("URL scheme `{scheme}` is not written `https`"),
                )
                .label(file, u.pos, "write `https://`")
                .help("write the scheme in lower case: URLs are sent as written, and Feishu documents `https://` URLs only"),
            );
            return false;
        }
        match url::Url::parse(&u.value) {
            Err(e) => {
                self.report.push(
                    Diagnostic::error(
                        "url-invalid",
                        format!("`{}` is not a valid URL: {e}", u.value),
                    )
                    .label(file, u.pos, "not a URL")
                    .help("write a full URL such as `https://example.com/path`"),
                );
                false
            }
            Ok(parsed) if parsed.scheme() != "https" => {
                self.report.push(
                    Diagnostic::error(
                        "url-not-https",
                        format!(
                            "URL scheme `{}` is not allowed; buttons open https URLs only",
                            parsed.scheme()
                        ),
                    )
                    .label(file, u.pos, "not https")
                    .help("use an `https://` URL"),
                );
                false
            }
            // The URL parser forgives what browsers forgive (`https:host`, `https:///host`,
            // `\` for `/`), but the URL is sent as written: the written form must be plain.
            Ok(_) if !u.value.starts_with("https://") => {
                self.report.push(
                    Diagnostic::error(
                        "url-invalid",
                        format!("`{}` does not start with `https://`", u.value),
                    )
                    .label(file, u.pos, "not `https://` and a host")
                    .help("write `https://` and then the host, as in `https://example.com/path`"),
                );
                false
            }
            Ok(_) if u.value["https://".len()..].starts_with(['/', '\\']) => {
                self.report.push(
                    Diagnostic::error("url-invalid", format!("`{}` has no host", u.value))
                        .label(file, u.pos, "no host after `https://`")
                        .help("write the host right after `https://`, as in `https://example.com/path`"),
                );
                false
            }
            Ok(_)
                if u.value
                    .split(['?', '#'])
                    .next()
                    .is_some_and(|s| s.contains('\\')) =>
            {
                self.report.push(
                    Diagnostic::error("url-invalid", format!("`{}` holds a backslash", u.value))
                        .label(file, u.pos, "`\\` before the query")
                        .help("write `/` between the parts of a path (a browser reads `\\` as `/`, but the URL is sent as written), or `%5C` for a backslash"),
                );
                false
            }
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                self.report.push(
                    Diagnostic::error("url-invalid", format!("`{}` has no host", u.value))
                        .label(file, u.pos, "no host")
                        .help("write a full URL such as `https://example.com/path`"),
                );
                false
            }
            Ok(_) => true,
        }
    }
}

/// `d` labelled at the entry, and at the place that uses it through a user set.
fn located(
    d: Diagnostic,
    (file, pos, label): (FileId, Pos, &str),
    reference: Option<(FileId, Pos)>,
    id_type: UserIdType,
) -> Diagnostic {
    let d = d.label(file, pos, label);
    match reference {
        Some((f, p)) => d.label(f, p, format!("used here, where ids are {id_type}")),
        None => d,
    }
}
