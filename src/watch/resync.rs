//! Resync (`--resync PERIOD`): re-sends every applied target once per period, because the API
//! cannot be read and something else (a script, a person with another tool) may have changed
//! the buttons since. Takes the applied state; gives one call at a time, paced.
//!
//! A pass goes chat by chat, each chat's calls built as a first apply would make them (its
//! whole-chat call first, then its users in batches of 20 per button list), and spaces its
//! calls evenly over the period, never closer than two rate-limit intervals: on its own it
//! uses at most half of `--rate-limit`, and the client's limiter keeps the total under the
//! limit when a reconcile runs beside it. A re-send is recorded like any call (see
//! `apply::outcome`): a whole-chat one marks the chat's users owed until their own re-sends
//! land, and users the API refuses are recorded as waiting.
//!
//! The controller runs these calls between reconciles, never during one, so a re-send never
//! races a change to the same target. After a reconcile recorded changes, the chat in progress
//! is started again from the new state, so its whole-chat call still precedes its users'.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::feishu::client::{CallError, ChatButtonOutcome};
use crate::plan::json::{PlanDoc, RequestDoc};
use crate::plan::{self, PlanOptions};
use crate::state::{AppliedState, TargetRecord};
use crate::target::{ButtonList, Target};

use super::metrics::{CallKind, CallOutcome, Metrics};

/// The resync schedule and the pass in progress.
pub struct Resync {
    period: Duration,
    /// The closest two resync calls may be: half the rate limit.
    min_spacing: Duration,
    rate_limit: u32,
    /// When the next pass starts; `None` until the first reconcile has run.
    next_pass: Option<Instant>,
    pass: Option<Pass>,
}

struct Pass {
    started: Instant,
    spacing: Duration,
    next_call: Instant,
    /// Chats not started yet, in order.
    chats: VecDeque<String>,
    /// The chat in progress and its calls still to send.
    current: Option<String>,
    queue: VecDeque<RequestDoc>,
    /// The state changed under the chat in progress: build its calls again.
    restart_current: bool,
    calls_planned: usize,
    calls_ok: usize,
    calls_failed: usize,
    targets_sent: usize,
}

impl Resync {
    /// Re-sends everything once per `period`, within half of `rate_limit` calls a second
    /// (0: unlimited, so spacing comes from the period alone).
    pub fn new(period: Duration, rate_limit: u32) -> Resync {
        let min_spacing = match rate_limit {
            0 => Duration::ZERO,
            n => Duration::from_secs(2) / n,
        };
        Resync {
            period,
            min_spacing,
            rate_limit,
            next_pass: None,
            pass: None,
        }
    }

    /// When the next step is due: a call of the pass in progress, or the start of the next.
    pub fn due_at(&self) -> Option<Instant> {
        match &self.pass {
            Some(p) => Some(p.next_call),
            None => self.next_pass,
        }
    }

    /// Told after every reconcile: the first one starts the schedule (the state is current
    /// from then on); one that recorded changes restarts the chat in progress.
    pub fn after_reconcile(&mut self, recorded: bool) {
        if self.next_pass.is_none() && self.pass.is_none() {
            self.next_pass = Some(Instant::now());
        }
        if recorded && let Some(p) = &mut self.pass {
            p.restart_current = true;
        }
    }

    /// The next call to send now, if one is due; starts and ends passes on the way.
    pub fn next_request(
        &mut self,
        state: &AppliedState,
        now: Instant,
        metrics: &Metrics,
    ) -> Option<RequestDoc> {
        if self.pass.is_none() {
            if self.next_pass.is_none_or(|t| t > now) {
                return None;
            }
            self.pass = Some(self.begin(state, now));
        }
        let pass = self.pass.as_mut()?;
        if pass.next_call > now {
            return None;
        }
        if pass.restart_current {
            pass.restart_current = false;
            if let Some(chat) = &pass.current {
                pass.queue = requests_for(state, chat, self.rate_limit).into();
            }
        }
        loop {
            if let Some(r) = pass.queue.pop_front() {
                pass.next_call = now + pass.spacing;
                return Some(r);
            }
            match pass.chats.pop_front() {
                Some(chat) => {
                    pass.queue = requests_for(state, &chat, self.rate_limit).into();
                    pass.current = Some(chat);
                }
                None => {
                    self.finish(now, metrics);
                    return None;
                }
            }
        }
    }

    /// Puts a call back that could not be sent now (credentials not checked yet), to try it
    /// again one spacing later.
    pub fn retry_later(&mut self, request: RequestDoc, now: Instant) {
        if let Some(p) = &mut self.pass {
            p.queue.push_front(request);
            p.next_call = now + p.spacing.max(Duration::from_secs(1));
        }
    }

    /// Holds the schedule back until `until` (the state cannot be read now).
    pub fn postpone(&mut self, until: Instant) {
        match &mut self.pass {
            Some(p) => p.next_call = p.next_call.max(until),
            None => self.next_pass = self.next_pass.map(|t| t.max(until)),
        }
    }

    /// Counts a call's answer; a chat without the bot is skipped, a fatal error ends the pass.
    pub fn answered(
        &mut self,
        request: &RequestDoc,
        result: &Result<ChatButtonOutcome, CallError>,
        metrics: &Metrics,
    ) {
        let Some(pass) = self.pass.as_mut() else {
            return;
        };
        let targets = request.changes.len();
        let mut not_sent = 0;
        let outcome = match result {
            Ok(outcome) => {
                pass.calls_ok += 1;
                pass.targets_sent += targets - outcome.failed_users.len().min(targets);
                if !outcome.failed_users.is_empty() {
                    tracing::warn!(
                        chat_id = %request.body.chat_id,
                        failed_users = outcome.failed_users.len(),
                        "resync: the API refused some users (not in the chat): they are recorded as waiting, and reconciles retry them with a backoff"
                    );
                }
                CallOutcome::Success
            }
            Err(e) => {
                pass.calls_failed += 1;
                tracing::warn!(chat_id = %request.body.chat_id, error = %e, "resync: a call failed");
                if matches!(e.final_error(), CallError::BotNotInChat { .. }) {
                    not_sent = pass.queue.len();
                    pass.queue.clear();
                } else if e.is_fatal() {
                    not_sent = pass.queue.len();
                    tracing::error!(error = %e, "resync: stopping this pass");
                    pass.queue.clear();
                    pass.chats.clear();
                }
                CallOutcome::Failed
            }
        };
        metrics.calls(CallKind::Resync, outcome, 1);
        metrics.calls(CallKind::Resync, CallOutcome::NotSent, not_sent);
    }

    /// Whether a pass is under way.
    #[cfg(test)]
    pub fn in_progress(&self) -> bool {
        self.pass.is_some()
    }

    fn begin(&self, state: &AppliedState, now: Instant) -> Pass {
        let chats: VecDeque<String> = state.chat_ids().into_iter().map(str::to_owned).collect();
        let calls: usize = chats
            .iter()
            .map(|c| requests_for(state, c, self.rate_limit).len())
            .sum();
        let spacing = match calls {
            0 => self.min_spacing,
            n => (self.period / u32::try_from(n).unwrap_or(u32::MAX)).max(self.min_spacing),
        };
        let takes = spacing * u32::try_from(calls).unwrap_or(u32::MAX);
        if takes > self.period {
            tracing::warn!(
                calls,
                "resync: a pass needs {calls} calls, which take {} at half the rate limit: longer than --resync {}; passes run back to back",
                humantime::format_duration(round_secs(takes)),
                humantime::format_duration(self.period)
            );
        }
        tracing::info!(
            calls,
            targets = state.targets.len(),
            "resync: re-sending {} applied targets in {calls} calls, one every {} ms",
            state.targets.len(),
            spacing.as_millis()
        );
        Pass {
            started: now,
            spacing,
            next_call: now,
            chats,
            current: None,
            queue: VecDeque::new(),
            restart_current: false,
            calls_planned: calls,
            calls_ok: 0,
            calls_failed: 0,
            targets_sent: 0,
        }
    }

    fn finish(&mut self, now: Instant, metrics: &Metrics) {
        let Some(p) = self.pass.take() else { return };
        tracing::info!(
            reason = "resync",
            calls_ok = p.calls_ok,
            calls_failed = p.calls_failed,
            targets = p.targets_sent,
            "resync: pass done in {:.1} s: {} of {} calls succeeded, {} targets re-sent",
            now.duration_since(p.started).as_secs_f64(),
            p.calls_ok,
            p.calls_planned,
            p.targets_sent
        );
        self.next_pass = Some((p.started + self.period).max(now));
        metrics.resync_cycle();
    }
}

/// One chat's calls as a first apply would batch them: every applied target of the chat sent
/// again with what it shows, followers as followers. Targets with something pending are left
/// to the reconciles, which send what the config says.
fn requests_for(state: &AppliedState, chat_id: &str, rate_limit: u32) -> Vec<RequestDoc> {
    let settled: BTreeMap<Target, TargetRecord> = state
        .chat(chat_id)
        .filter(|(_, r)| r.is_settled() && r.shown.is_some())
        .map(|(t, r)| (t.clone(), r.clone()))
        .collect();
    let shown: BTreeMap<Target, Arc<ButtonList>> = settled
        .iter()
        .filter(|(_, r)| !r.follows())
        .filter_map(|(t, r)| r.shown.clone().map(|s| (t.clone(), s)))
        .collect();
    let p = plan::plan(
        &shown,
        &BTreeMap::new(),
        &settled,
        &PlanOptions {
            rate_limit,
            resend_all: true,
            ..Default::default()
        },
    );
    PlanDoc::new(&p).requests
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::wire::{ActionType, Button, Text, UserIdType};
    use crate::state::Record;

    fn button(text: &str) -> Button {
        Button {
            multi_url: None,
            action_type: ActionType::Webhook,
            text: Text {
                text: text.to_owned(),
            },
            button_type: None,
            action_map: None,
        }
    }

    fn state() -> AppliedState {
        let mut s = AppliedState::new();
        let mut records = vec![Record::Set {
            target: Target::everyone("oc_a"),
            buttons: Arc::new(vec![button("All")]),
        }];
        for u in 0..25 {
            records.push(Record::Set {
                target: Target::user("oc_a", UserIdType::OpenId, format!("ou_{u:02}")),
                buttons: Arc::new(vec![button("Mine")]),
            });
        }
        records.push(Record::Set {
            target: Target::everyone("oc_b"),
            buttons: Arc::default(),
        });
        s.apply(&records);
        s
    }

    #[test]
    fn a_pass_sends_each_chat_whole_chat_first_and_spaces_calls_within_half_the_rate() {
        let state = state();
        let h = Metrics::new(&crate::feishu::metrics::ClientMetrics::default());
        let mut r = Resync::new(Duration::from_secs(60), 10);
        let start = Instant::now();
        assert!(
            r.next_request(&state, start, &h).is_none(),
            "not before a reconcile"
        );
        r.after_reconcile(false);
        let mut sent = Vec::new();
        let mut now = start + Duration::from_millis(1);
        while sent.len() < 4 {
            match r.next_request(&state, now, &h) {
                Some(req) => sent.push(req),
                None => now = r.due_at().expect("a pass is due"),
            }
        }
        // oc_a: whole chat, then 25 users in two batches; oc_b: its cleared whole-chat list.
        assert!(sent[0].body.user_ids.is_none() && sent[0].body.chat_id == "oc_a");
        assert_eq!(sent[1].body.user_ids.as_ref().map(Vec::len), Some(20));
        assert_eq!(sent[2].body.user_ids.as_ref().map(Vec::len), Some(5));
        assert!(sent[3].body.chat_id == "oc_b" && sent[3].body.buttons.buttons.is_empty());
        // 4 calls over 60 s: 15 s apart, well under half of 10/s.
        let spacing = r.due_at().expect("due") - now;
        assert_eq!(spacing, Duration::from_secs(15));
        assert!(
            r.next_request(&state, now + spacing, &h).is_none(),
            "the pass is over"
        );
        assert!(!r.in_progress());
        assert!(r.due_at().expect("next pass") >= start + Duration::from_secs(60));
        assert_eq!(h.resync_cycles(), 1);
    }

    #[test]
    fn a_short_period_is_held_to_half_the_rate_limit() {
        let state = state();
        let h = Metrics::new(&crate::feishu::metrics::ClientMetrics::default());
        let mut r = Resync::new(Duration::from_millis(100), 10);
        r.after_reconcile(false);
        let now = Instant::now() + Duration::from_millis(1);
        assert!(r.next_request(&state, now, &h).is_some());
        assert_eq!(
            r.due_at().expect("due") - now,
            Duration::from_millis(200),
            "2 / rate"
        );
    }
}
