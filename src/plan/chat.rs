//! One chat at a time: the diff of a chat's desired targets against its records, and its calls
//! in phases (whole-chat, leaving users, the rest), batched up to the API's 20 users a call.

use super::*;
use crate::id::Id;

/// A chat's calls go in phases: its whole-chat call, then the calls for users leaving the
/// config (they all carry the chat's whole-chat list), then the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Phase {
    WholeChat,
    Leaving,
    Rest,
}

pub(super) struct Ctx<'o, 'a> {
    pub(super) empty: Arc<ButtonList>,
    pub(super) options: &'o PlanOptions,
    pub(super) summary: Summary,
    pub(super) requests: Vec<Request<'a>>,
    pub(super) settle: Vec<Record>,
    pub(super) next_retry: Option<u64>,
    /// Recorded targets that the config manages (not followers).
    pub(super) managed: usize,
}

/// A recorded user target no call is planned for yet: it may still be sent again.
struct Quiet<'a> {
    target: &'a Target,
    shown: &'a Arc<ButtonList>,
    follows: bool,
}

impl<'o, 'a> Ctx<'o, 'a> {
    pub(super) fn new(options: &'o PlanOptions) -> Ctx<'o, 'a> {
        Ctx {
            empty: Arc::new(Vec::new()),
            options,
            summary: Summary::default(),
            requests: Vec::new(),
            settle: Vec::new(),
            next_retry: None,
            managed: 0,
        }
    }

    /// Takes in what `later` planned, for chats that all come after this one's.
    pub(super) fn absorb(&mut self, later: Ctx<'_, 'a>) {
        self.summary.add(&later.summary);
        self.requests.extend(later.requests);
        self.settle.extend(later.settle);
        self.next_retry = match (self.next_retry, later.next_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.managed += later.managed;
    }

    /// Merge-joins two sorted sequences of targets, planning one chat at a time, and tells
    /// `tally` what each chat added.
    pub(super) fn merge(
        &mut self,
        desired: impl Iterator<Item = (&'a Target, &'a Arc<ButtonList>)>,
        applied: impl Iterator<Item = (&'a Target, Recorded<'a>)>,
        chat: &mut Vec<Pair<'a>>,
        tally: &mut dyn FnMut(&str, ChatTally),
    ) {
        let mut d = desired.peekable();
        let mut a = applied.peekable();
        loop {
            let next_chat: &str = match (d.peek(), a.peek()) {
                (None, None) => break,
                (Some((dt, _)), None) => &dt.chat_id,
                (None, Some((at, _))) => &at.chat_id,
                (Some((dt, _)), Some((at, _))) => dt.chat_id.as_str().min(at.chat_id.as_str()),
            };
            chat.clear();
            let mut declared = 0;
            loop {
                let dt = d.peek().map(|(t, _)| *t).filter(|t| t.chat_id == next_chat);
                let at = a.peek().map(|(t, _)| *t).filter(|t| t.chat_id == next_chat);
                let (take_d, take_a) = match (dt, at) {
                    (None, None) => break,
                    (Some(_), None) => (true, false),
                    (None, Some(_)) => (false, true),
                    // Both are of `next_chat`: their audiences order them.
                    (Some(x), Some(y)) => (x.audience <= y.audience, y.audience <= x.audience),
                };
                let desired_entry = if take_d { d.next() } else { None };
                let applied_entry = if take_a { a.next() } else { None };
                match (desired_entry, applied_entry) {
                    (Some((t, new)), old) => {
                        declared += 1;
                        chat.push((t, Some(new), old.map(|(_, r)| r)));
                    }
                    (None, Some((t, old))) => chat.push((t, None, Some(old))),
                    (None, None) => break,
                }
            }
            let before = (
                self.summary,
                self.managed,
                self.requests.len(),
                self.settle.len(),
                self.next_retry,
            );
            self.chat(next_chat, chat);
            let s = &self.summary;
            let b = &before.0;
            tally(
                next_chat,
                ChatTally {
                    summary: Summary {
                        add: s.add - b.add,
                        change: s.change - b.change,
                        remove: s.remove - b.remove,
                        unchanged: s.unchanged - b.unchanged,
                        resend: s.resend - b.resend,
                        follow: s.follow - b.follow,
                        waiting: s.waiting - b.waiting,
                        requests: 0,
                    },
                    managed: self.managed - before.1,
                    declared,
                    quiet: self.requests.len() == before.2
                        && self.settle.len() == before.3
                        && self.next_retry == before.4
                        && s.waiting == b.waiting,
                },
            );
        }
    }

    /// Plans one chat.
    fn chat(&mut self, chat_id: &str, entries: &[Pair<'a>]) {
        let everyone_desired = entries
            .first()
            .filter(|(t, ..)| t.audience == Audience::Everyone)
            .and_then(|(_, d, _)| *d);
        let follow_list = everyone_desired.unwrap_or(&self.empty).clone();
        let mut calls: Vec<(Phase, Change<'a>)> = Vec::new();
        let mut quiet: Vec<Quiet<'a>> = Vec::new();

        for &(target, desired, recorded) in entries {
            if recorded.is_some_and(|r| !r.follows) {
                self.managed += 1;
            }
            let everyone = target.audience == Audience::Everyone;
            let (goal, goal_follows) = match desired {
                Some(list) => (list, false),
                // A whole-chat target that left the config is cleared, a user follows.
                None if everyone => (&self.empty, false),
                None => (&follow_list, true),
            };
            let Some(r) = recorded else {
                if desired.is_some() {
                    self.summary.add += 1;
                    let phase = if everyone {
                        Phase::WholeChat
                    } else {
                        Phase::Rest
                    };
                    calls.push((phase, self.change(target, Action::Add, None, goal, None)));
                }
                continue;
            };
            let action = match (desired, r.shown) {
                (None, _) if everyone => Action::Remove,
                (None, _) if r.follows => Action::Follow,
                (None, _) => Action::Remove,
                (Some(_), None) => Action::Add,
                (Some(_), Some(shown)) if shown.as_slice() == goal.as_slice() => Action::Resend,
                (Some(_), Some(_)) => Action::Change,
            };
            let matches = r.shown.is_some_and(|s| s.as_slice() == goal.as_slice())
                && r.follows == goal_follows
                && !(everyone && desired.is_none());
            let note = match r.pending.map(|p| (p, &p.status)) {
                Some((
                    p,
                    PendingStatus::Waiting {
                        goal: tried,
                        goal_follows: tried_follows,
                        unsure,
                        tries,
                        last_try,
                        ..
                    },
                )) => {
                    if !unsure && (matches || (r.shown.is_none() && desired.is_none())) {
                        // The refused call no longer matters: the config asks for what Feishu
                        // shows (or for nothing, where nothing was ever set).
                        let settled = r
                            .shown
                            .map(|s| TargetRecord::new(Some(s.clone()), r.follows, None));
                        self.settle
                            .push(Record::put_or_forget(target.clone(), settled.flatten()));
                        if let Some(shown) = r.shown {
                            if desired.is_some() {
                                self.summary.unchanged += 1;
                            }
                            if !everyone {
                                quiet.push(Quiet {
                                    target,
                                    shown,
                                    follows: r.follows,
                                });
                            }
                        }
                        continue;
                    }
                    let same_goal =
                        tried.as_slice() == goal.as_slice() && *tried_follows == goal_follows;
                    if let Some(backoff) = &self.options.waiting_backoff
                        && same_goal
                    {
                        let due = backoff.due_at(*tries, *last_try);
                        if due > backoff.now {
                            self.summary.waiting += 1;
                            self.next_retry = Some(self.next_retry.map_or(due, |t| t.min(due)));
                            continue;
                        }
                    }
                    Some(Note::of(p))
                }
                Some((p, _)) => Some(Note::of(p)),
                None if matches => {
                    if desired.is_some() {
                        self.summary.unchanged += 1;
                    }
                    if let (false, Some(shown)) = (everyone, r.shown) {
                        quiet.push(Quiet {
                            target,
                            shown,
                            follows: r.follows,
                        });
                    } else if self.options.resend_all
                        && let Some(shown) = r.shown
                    {
                        calls.push((
                            Phase::WholeChat,
                            self.change(target, Action::Resend, Some(shown), goal, None),
                        ));
                    }
                    continue;
                }
                None => None,
            };
            let phase = if everyone {
                Phase::WholeChat
            } else if goal_follows {
                Phase::Leaving
            } else {
                Phase::Rest
            };
            let change = self.change(target, action, r.shown, goal, note);
            self.count(&change, false);
            calls.push((phase, change));
        }

        // Users whose lists look unchanged are sent again after a call that may have
        // overwritten them: the chat's whole-chat call, or (during an id-type move) a call
        // for a user leaving the config under another id type, which may be the same person.
        let whole_chat = calls.iter().any(|(p, _)| *p == Phase::WholeChat);
        let leaving_types: BTreeSet<UserIdType> = calls
            .iter()
            .filter(|(p, _)| *p == Phase::Leaving)
            .filter_map(|(_, c)| id_type(c.target))
            .collect();
        for q in quiet {
            let ty = id_type(q.target).unwrap_or(UserIdType::OpenId);
            let note = if whole_chat {
                Some(Note::WholeChat)
            } else if !q.follows && leaving_types.iter().any(|t| *t != ty) {
                Some(Note::IdTypeMove)
            } else if self.options.resend_all {
                None
            } else {
                continue;
            };
            let (phase, action) = if q.follows {
                (Phase::Leaving, Action::Follow)
            } else {
                (Phase::Rest, Action::Resend)
            };
            let change = self.change(q.target, action, Some(q.shown), q.shown, note);
            // A quiet declared target was counted unchanged already.
            self.count(&change, true);
            calls.push((phase, change));
        }
        self.batch(chat_id, calls);
    }

    fn change(
        &self,
        target: &'a Target,
        action: Action,
        old: Option<&Arc<ButtonList>>,
        new: &Arc<ButtonList>,
        note: Option<Note>,
    ) -> Change<'a> {
        Change {
            target,
            action,
            old: old.cloned(),
            new: new.clone(),
            note: note.map(Box::new),
        }
    }

    fn count(&mut self, change: &Change, counted_unchanged: bool) {
        let s = &mut self.summary;
        if change.waiting() {
            s.waiting += 1;
            return;
        }
        match change.action {
            Action::Add => s.add += 1,
            Action::Change => s.change += 1,
            Action::Remove => s.remove += 1,
            Action::Resend => {
                s.resend += 1;
                s.unchanged += usize::from(!counted_unchanged);
            }
            Action::Follow => s.follow += 1,
        }
    }

    /// Turns a chat's changes into calls: its whole-chat call, then the users leaving the
    /// config, then the rest, each grouped by (id type, list), 20 users a call.
    fn batch(&mut self, chat_id: &str, mut calls: Vec<(Phase, Change<'a>)>) {
        // One chat's calls: their targets differ in their audience only.
        calls.sort_by(|(pa, a), (pb, b)| {
            pa.cmp(pb)
                .then_with(|| a.target.audience.cmp(&b.target.audience))
        });
        let mut per_user: Vec<(Phase, Change<'a>)> = Vec::new();
        for (phase, change) in calls {
            if phase == Phase::WholeChat {
                self.requests.push(Request {
                    user_id_type: UserIdType::OpenId,
                    body: wire::ChatButtonRequest {
                        user_ids: None,
                        chat_id: chat_id.into(),
                        buttons: wire::Buttons {
                            buttons: change.new.to_vec(),
                        },
                    },
                    changes: vec![change],
                });
            } else {
                per_user.push((phase, change));
            }
        }
        // Group by (phase, id type, new list), in the order of each group's first user, so
        // output is stable. Lists are compared by pointer first (the config shares one copy
        // of each distinct list) and by content once per distinct pointer, so equal lists
        // always share a group.
        type Key = (Phase, UserIdType);
        let mut groups: Vec<(Key, Arc<ButtonList>, Vec<Change<'a>>)> = Vec::new();
        // A fast hash: a plan looks up every change it makes.
        let mut by_ptr: foldhash::HashMap<(Key, *const ButtonList), usize> = Default::default();
        let mut by_content: foldhash::HashMap<(Key, ButtonList), usize> = Default::default();
        for (phase, change) in per_user {
            let key = (phase, id_type(change.target).unwrap_or(UserIdType::OpenId));
            let ptr = Arc::as_ptr(&change.new);
            let g = match by_ptr.get(&(key, ptr)) {
                Some(&g) => g,
                None => {
                    let g = *by_content
                        .entry((key, change.new.to_vec()))
                        .or_insert_with(|| {
                            groups.push((key, change.new.clone(), Vec::new()));
                            groups.len() - 1
                        });
                    by_ptr.insert((key, ptr), g);
                    g
                }
            };
            groups[g].2.push(change);
        }
        // Within a phase, clearing calls first (a stable order a reviewer can predict).
        groups.sort_by_key(|((phase, _), list, _)| (*phase, !list.is_empty()));
        for ((_, id_type), list, changes) in groups {
            let mut changes = changes.into_iter();
            loop {
                let chunk: Vec<Change<'a>> =
                    changes.by_ref().take(api::MAX_USERS_PER_CALL).collect();
                if chunk.is_empty() {
                    break;
                }
                let user_ids = chunk
                    .iter()
                    .filter_map(|c| c.target.user_id().map(Id::new))
                    .collect();
                self.requests.push(Request {
                    user_id_type: id_type,
                    body: wire::ChatButtonRequest {
                        user_ids: Some(user_ids),
                        chat_id: chat_id.into(),
                        buttons: wire::Buttons {
                            buttons: list.to_vec(),
                        },
                    },
                    changes: chunk,
                });
            }
        }
    }
}

fn id_type(target: &Target) -> Option<UserIdType> {
    match &target.audience {
        Audience::User { id_type, .. } => Some(*id_type),
        Audience::Everyone => None,
    }
}
