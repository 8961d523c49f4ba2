//! Apply stage: what a call's fate records. Takes one call (its request, and its targets'
//! records before it) and what came back; gives the records to write before the call is sent
//! and once its fate is known, so that the state never says more than Feishu accepted.
//!
//! - Before: each target the call could change is marked *uncertain* (with the list sent),
//!   durably, so that a call whose answer never comes (a kill, a lost connection) leaves a
//!   mark that makes any later plan send the target again, even after the config is reverted.
//! - Accepted: the targets show the list sent; users in `failed_user_reasons` keep what they
//!   showed and *wait* (the API refused them, e.g. not in the chat). A whole-chat call marks
//!   the chat's users *owed* a re-send (it may have overwritten their lists), and a call for
//!   users leaving the config marks the chat's users under another id type owed (it may have
//!   reached the same people), in the same durable step.
//! - Refused (an error answer, or never sent): each target goes back to what it was.
//! - Unanswered: the uncertain marks stay.

use std::collections::HashMap;
use std::sync::Arc;

use crate::feishu::client::ChatButtonOutcome;
use crate::plan::Action;
use crate::plan::json::{PlanDoc, RequestDoc};
use crate::state::{AppliedState, OwedReason, Pending, PendingStatus, Record, TargetRecord};
use crate::target::{Audience, ButtonList, Target};

/// One call on its way: its targets and what each was before the call.
#[derive(Debug)]
pub struct InFlight {
    /// Each target, its change's action, and its record before the call.
    pub targets: Vec<(Target, Action, Option<TargetRecord>)>,
    /// Whether the call marked its targets uncertain (only those it could change).
    pub marked: Vec<bool>,
    /// The list the call sends, shared by its records.
    pub sent: Arc<ButtonList>,
}

/// The records to write before `request` goes out, and what to remember about it.
pub fn before(state: &AppliedState, request: &RequestDoc, now: u64) -> (Vec<Record>, InFlight) {
    let sent = Arc::new(request.body.buttons.buttons.clone());
    // A whole-chat call may overwrite users' lists, and a call for users leaving the config
    // may reach the same people under another id type: even when it sends what its own
    // targets show, an unanswered one must leave a mark, so that the next plan sends it again
    // and the chat's other users after it.
    let whole_chat = request.body.user_ids.is_none()
        || (!request.changes.is_empty() && request.changes.iter().all(|c| c.action.follows()));
    let mut records = Vec::new();
    let mut targets = Vec::new();
    let mut marked = Vec::new();
    for (target, action) in PlanDoc::request_targets(request) {
        let prior = state.targets.get(&target).cloned();
        let mark = whole_chat || could_change(prior.as_ref(), &sent, action);
        if mark {
            let (shown, follows) = prior
                .as_ref()
                .map_or((None, false), |r| (r.shown.clone(), r.follows()));
            let pending = Pending {
                status: PendingStatus::Uncertain { sent: sent.clone() },
                since: now,
            };
            records.push(Record::put_or_forget(
                target.clone(),
                TargetRecord::new(shown, follows, Some(pending)),
            ));
        }
        marked.push(mark);
        targets.push((target, action, prior));
    }
    (
        records,
        InFlight {
            targets,
            marked,
            sent,
        },
    )
}

/// Whether a call sending `sent` could leave Feishu showing something the state does not
/// already account for. A target already uncertain or owed is sent again whatever happens; one
/// that shows `sent` as recorded stays the same.
fn could_change(prior: Option<&TargetRecord>, sent: &ButtonList, action: Action) -> bool {
    let Some(r) = prior else { return true };
    match r.pending().map(|p| &p.status) {
        Some(PendingStatus::Uncertain { .. } | PendingStatus::Owed { .. }) => false,
        Some(PendingStatus::Waiting { .. }) => true,
        None => r.shown() != Some(sent) || r.follows() != action.follows(),
    }
}

/// The records for a call the API accepted: what applied, who waits, and who is owed a
/// re-send because of it. `state` is the state as it is now (after the call's marks).
pub fn accepted(
    state: &AppliedState,
    request: &RequestDoc,
    call: &InFlight,
    answer: &ChatButtonOutcome,
    now: u64,
) -> Vec<Record> {
    // An earlier attempt that went unanswered may have applied, even to the users this
    // answer refuses.
    let unanswered_before = answer.unanswered_before;
    let failed: HashMap<&str, &str> = answer
        .failed_users
        .iter()
        .map(|f| (f.user_id.as_str(), f.error_message.as_str()))
        .collect();
    let mut records = Vec::with_capacity(call.targets.len());
    for (target, action, prior) in &call.targets {
        if let Some(why) = target.user_id().and_then(|u| failed.get(u)) {
            records.push(Record::put_or_forget(
                target.clone(),
                waiting(
                    prior.as_ref(),
                    &call.sent,
                    *action,
                    why,
                    now,
                    unanswered_before,
                ),
            ));
        } else if target.audience == Audience::Everyone && *action == Action::Remove {
            records.push(Record::Forget {
                target: target.clone(),
            });
        } else if action.follows() {
            records.push(Record::put_or_forget(
                target.clone(),
                TargetRecord::new(Some(call.sent.clone()), true, None),
            ));
        } else {
            records.push(Record::Set {
                target: target.clone(),
                buttons: Arc::clone(&call.sent),
            });
        }
    }
    let refused = call
        .targets
        .iter()
        .filter(|(t, ..)| t.user_id().is_some_and(|u| failed.contains_key(u)))
        .count();
    if refused < call.targets.len() || unanswered_before {
        records.extend(owed_after(state, request, call, now));
    }
    records
}

/// A target the API refused: it keeps what it showed and waits to be sent `sent`.
fn waiting(
    prior: Option<&TargetRecord>,
    sent: &Arc<ButtonList>,
    action: Action,
    reason: &str,
    now: u64,
    unanswered_before: bool,
) -> Option<TargetRecord> {
    let (shown, follows) = prior.map_or((None, false), |r| (r.shown.clone(), r.follows()));
    // What the user shows stays unknown if it was: a refusal does not settle it.
    let (tries, since, unsure) = match prior.and_then(TargetRecord::pending) {
        Some(Pending {
            status: PendingStatus::Waiting { tries, unsure, .. },
            since,
        }) => (tries.saturating_add(1), *since, *unsure),
        Some(Pending {
            status: PendingStatus::Uncertain { .. } | PendingStatus::Owed { .. },
            ..
        }) => (1, now, true),
        None => (1, now, false),
    };
    let unsure = unsure || unanswered_before;
    let reason = if reason.is_empty() {
        "reported as failed by the API".to_owned()
    } else {
        reason.to_owned()
    };
    TargetRecord::new(
        shown,
        follows,
        Some(Pending {
            status: PendingStatus::Waiting {
                goal: sent.clone(),
                goal_follows: action.follows(),
                unsure,
                reason,
                tries,
                last_try: now,
            },
            since,
        }),
    )
}

/// The chat's other users that the accepted call may have overwritten, marked owed: all of
/// them after a whole-chat call; after a call for users leaving the config, those under
/// another id type, except followers that already show the list it sent.
/// Targets already pending keep their mark: it makes the next plan send them as well.
fn owed_after(
    state: &AppliedState,
    request: &RequestDoc,
    call: &InFlight,
    now: u64,
) -> Vec<Record> {
    let reason = if request.body.user_ids.is_none() {
        OwedReason::WholeChat
    } else if call.targets.iter().all(|(_, a, _)| a.follows()) {
        OwedReason::IdTypeMove
    } else {
        return Vec::new();
    };
    let in_call: Vec<&Target> = call.targets.iter().map(|(t, ..)| t).collect();
    state
        .chat(&request.body.chat_id)
        .filter(|(t, r)| {
            let Audience::User { id_type, .. } = &t.audience else {
                return false;
            };
            r.is_settled()
                && !in_call.contains(t)
                && match reason {
                    OwedReason::WholeChat => true,
                    // A follower that already shows the list sent is what the person now
                    // sees either way; any other may have been overwritten.
                    OwedReason::IdTypeMove => {
                        *id_type != request.user_id_type
                            && (!r.follows() || r.shown() != Some(call.sent.as_ref()))
                    }
                }
        })
        .filter_map(|(t, r)| {
            let owed = Pending {
                status: PendingStatus::Owed { reason },
                since: now,
            };
            r.with_pending(Some(owed)).map(|record| Record::Put {
                target: t.clone(),
                record,
            })
        })
        .collect()
}

/// The records for a call that did not apply (an error answer, or never sent): each target
/// it marked goes back to what it was.
pub fn refused(call: &InFlight) -> Vec<Record> {
    call.targets
        .iter()
        .zip(&call.marked)
        .filter(|(_, marked)| **marked)
        .map(|((target, _, prior), _)| Record::put_or_forget(target.clone(), prior.clone()))
        .collect()
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    crate::time::unix_secs_now()
}
