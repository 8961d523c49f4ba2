//! Checking one chat: its name, its assignments, who gets buttons twice, and its targets.

use super::*;

impl Validator<'_> {
    /// Checks the assignments of chat `chat_id`, declared at `places`, and pushes its targets
    /// (unsorted) and the user sets it uses. Returns the chat's name, where one is given.
    pub(super) fn chat<'a>(
        &mut self,
        chat_id: &'a str,
        places: &[(FileId, &'a RawFile, &'a RawChat)],
        defs: &Defs<'a>,
        used_sets: &mut Vec<&'a str>,
        targets: &mut Vec<(Target, Arc<ButtonList>)>,
    ) -> Option<(FileId, &'a At<String>)> {
        let mut name: Option<(FileId, &At<String>)> = None;
        // (id type, user id) -> index into `origins`, for finding users assigned twice.
        // A fast hash: these maps see every user of the config (the ids come from the
        // config's own files, not from strangers).
        // Sized for the users written in the chat (set members come on top).
        let named = chat_weight(places);
        let mut seen: foldhash::HashMap<(UserIdType, &str), usize> =
            foldhash::HashMap::with_capacity_and_hasher(named, Default::default());
        let mut origins: Vec<Origin> = Vec::with_capacity(named);
        let mut twice: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
        // Users named twice within one assignment: (first place, second place) -> ids.
        let mut repeated: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
        let mut everyone: Option<usize> = None;
        let mut bad_ids: foldhash::HashSet<(UserIdType, &str)> = Default::default();
        let mut bad_sources: foldhash::HashSet<(UserIdType, &Source)> = Default::default();

        for (file, raw, chat) in places {
            if let Some(n) = &chat.name {
                match name {
                    Some((f0, n0)) if n0.value != n.value => self.report.push(
                        Diagnostic::warning(
                            "chat-name-conflict",
                            format!(
                                "chat `{chat_id}` is named both `{}` and `{}`",
                                n0.value, n.value
                            ),
                        )
                        .label(*file, n.pos, "named here")
                        .label(f0, n0.pos, "and here")
                        .help("plans show the first name; give the chat one name"),
                    ),
                    Some(_) => {}
                    None => name = Some((*file, n)),
                }
            }
            let id_type = chat
                .user_id_type
                .as_ref()
                .or(raw.user_id_type.as_ref())
                .map_or(UserIdType::OpenId, |t| t.value);

            for a in &chat.assign {
                let list = a
                    .buttons
                    .as_ref()
                    .and_then(|b| self.button_list(*file, b, &defs.buttons));
                let is_everyone = a.everyone.as_ref().is_some_and(|e| e.value);
                if is_everyone && (!a.users.is_empty() || !a.user_sets.is_empty()) {
                    let pos = a.everyone.as_ref().map_or(a.pos, |e| e.pos);
                    self.report.push(
                        Diagnostic::error(
                            "everyone-with-users",
                            "an assignment cannot be for `everyone` and for users at once",
                        )
                        .label(*file, pos, "the whole chat")
                        .help("split it into two assignments: one with `everyone: true`, one with the users"),
                    );
                    continue;
                }
                if !is_everyone && a.users.is_empty() && a.user_sets.is_empty() && !a.incomplete {
                    self.report.push(
                        Diagnostic::error("assignment-no-audience", "an assignment names nobody")
                            .label(*file, a.pos, "no `users`, `user_sets` or `everyone: true`")
                            .help("say who gets these buttons: `users`, `user_sets`, or `everyone: true`"),
                    );
                    continue;
                }
                if is_everyone {
                    let pos = a.everyone.as_ref().map_or(a.pos, |e| e.pos);
                    origins.push(Origin {
                        file: *file,
                        pos,
                        via: None,
                    });
                    let here = origins.len() - 1;
                    match everyone {
                        Some(first) => self.report.push(
                            Diagnostic::error(
                                "duplicate-assignment",
                                format!("chat `{chat_id}` gets whole-chat buttons twice"),
                            )
                            .label(*file, pos, "assigned again here")
                            .label(
                                origins[first].file,
                                origins[first].pos,
                                "first assigned here",
                            )
                            .help("keep one `everyone: true` assignment per chat"),
                        ),
                        None => {
                            everyone = Some(here);
                            if let Some(list) = &list {
                                targets.push((Target::everyone(chat_id), list.clone()));
                            }
                        }
                    }
                    continue;
                }

                // The users of this assignment, each with the place that named it.
                let mut members: Vec<(&str, usize)> = Vec::with_capacity(a.users.len());
                for u in &a.users {
                    origins.push(Origin {
                        file: *file,
                        pos: u.pos,
                        via: None,
                    });
                    let o = origins.len() - 1;
                    let place = (*file, u.pos, None);
                    if let Some(id) = self.user(defs.people, id_type, &u.value, place, &mut bad_ids)
                    {
                        members.push((id, o));
                    }
                }
                for s in &a.user_sets {
                    let Some(set) = defs.sets.get(s.value.as_str()) else {
                        if self.waits(*file, s.pos, &s.value) {
                            continue;
                        }
                        let names: Vec<&str> = defs.sets.keys().copied().collect();
                        let mut d = Diagnostic::error(
                            "undefined-user-set",
                            format!("user set `{}` is not defined", s.value),
                        )
                        .label(
                            *file,
                            s.pos,
                            "not defined in any file of this config",
                        );
                        if let Some(near) = suggest(&s.value, &names) {
                            d = d.help(format!("did you mean `{near}`?"));
                        }
                        self.report.push(d);
                        continue;
                    };
                    used_sets.push(s.value.as_str());
                    origins.push(Origin {
                        file: *file,
                        pos: s.pos,
                        via: Some(s.value.clone()),
                    });
                    let o = origins.len() - 1;
                    for id in set.ids {
                        let place = (set.file, id.pos, Some((*file, s.pos)));
                        if let Some(id) =
                            self.user(defs.people, id_type, &id.value, place, &mut bad_ids)
                        {
                            members.push((id, o));
                        }
                    }
                    for source in set.sources {
                        let place = (set.file, source.pos, Some((*file, s.pos)));
                        let ids = self.source(
                            defs.people,
                            id_type,
                            &source.value,
                            place,
                            &mut bad_sources,
                        );
                        members.extend(ids.iter().map(|id| (id.as_str(), o)));
                    }
                }
                let mut in_this: foldhash::HashMap<&str, usize> =
                    foldhash::HashMap::with_capacity_and_hasher(members.len(), Default::default());
                for (id, o) in members {
                    if let Some(&o0) = in_this.get(id) {
                        // Named twice in one assignment: harmless, but one of the two is dead
                        // weight. Two user sets that overlap are not warned about: sets are kept
                        // apart on purpose (on call, leads), and people belong to several. A set
                        // that lists someone twice is warned about where it is defined.
                        let both_sets = origins[o0].via.is_some() && origins[o].via.is_some();
                        if o0 != o && !both_sets {
                            repeated.entry((o0, o)).or_default().push(id);
                        }
                        continue;
                    }
                    in_this.insert(id, o);
                    match seen.get(&(id_type, id)) {
                        Some(&first) => twice.entry((first, o)).or_default().push(id),
                        None => {
                            seen.insert((id_type, id), o);
                            if let Some(list) = &list {
                                targets.push((Target::user(chat_id, id_type, id), list.clone()));
                            }
                        }
                    }
                }
            }
        }
        for ((first, again), mut ids) in repeated {
            ids.sort_unstable();
            ids.dedup();
            let (f, s) = (&origins[first], &origins[again]);
            let message = if ids.len() == 1 {
                format!("user `{}` is named twice in one assignment", ids[0])
            } else {
                format!(
                    "{} users are named twice in one assignment: {}",
                    ids.len(),
                    list_some(&ids, 5)
                )
            };
            self.report.push(
                Diagnostic::warning("duplicate-user", message)
                    .label(s.file, s.pos, s.describe("named again here"))
                    .label(f.file, f.pos, f.describe("first named here"))
                    .help("remove one of them: the user gets the assignment's buttons once either way"),
            );
        }
        for ((first, again), mut ids) in twice {
            ids.sort_unstable();
            ids.dedup();
            let (f, s) = (&origins[first], &origins[again]);
            let shown = list_some(&ids, 5);
            let message = if ids.len() == 1 {
                format!("user `{}` gets buttons twice in chat `{chat_id}`", ids[0])
            } else {
                format!(
                    "{} users get buttons twice in chat `{chat_id}`: {shown}",
                    ids.len()
                )
            };
            self.report.push(
                Diagnostic::error("duplicate-assignment", message)
                    .label(s.file, s.pos, s.describe("assigned again here"))
                    .label(f.file, f.pos, f.describe("first assigned here"))
                    .help("a user gets one button list per chat: remove one of the assignments"),
            );
        }
        name
    }
}

/// Where a user was named: directly (`users:`) or through a user set (`user_sets:`).
struct Origin {
    file: FileId,
    pos: Pos,
    via: Option<String>,
}

impl Origin {
    fn describe(&self, what: &str) -> String {
        match &self.via {
            Some(set) => format!("{what} (through user set `{set}`)"),
            None => what.to_owned(),
        }
    }
}
