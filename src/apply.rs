//! Apply: runs a plan's calls through the API client and records every success in the state as
//! it completes. Whole-chat calls go before their chat's per-user calls; a chat whose bot is
//! missing is skipped; a fatal error (credentials, scope) or a stop signal ends the run after the
//! calls in flight are answered and recorded.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::feishu::client::{CallError, ChatButtonOutcome, Client};
use crate::plan::Action;
use crate::plan::json::{PlanDoc, RequestDoc};
use crate::state::{Record, StateLock};
use crate::target::Target;

/// One target that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    pub chat_id: String,
    /// The user id, or `everyone`.
    pub target: String,
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Calls answered with success (some of their users may still have failed).
    pub calls_ok: usize,
    /// Calls that failed, or were skipped because their chat or the run could not go on.
    pub calls_failed: usize,
    /// Calls never sent because the run stopped (signal or fatal error).
    pub calls_not_sent: usize,
    /// Targets recorded as applied (set or forgotten).
    pub targets_applied: usize,
    pub failures: Vec<Failure>,
    /// Chats that answered "the bot is not in the chat".
    pub bot_not_in: Vec<String>,
    /// Chats whose whole-chat call applied but whose other calls did not all apply: the
    /// whole-chat change is not recorded, so the next apply sends it (and the users' lists) again.
    pub deferred_chats: Vec<String>,
    /// Why the run stopped early, if it did: a fatal API error.
    pub fatal: Option<String>,
    /// The run was asked to stop (SIGINT/SIGTERM).
    pub interrupted: bool,
    /// Recording in the state failed: the run stopped, and this says why.
    pub state_error: Option<String>,
    pub elapsed: Duration,
}

impl ApplyReport {
    /// Everything was applied.
    pub fn complete(&self) -> bool {
        self.failures.is_empty()
            && self.calls_failed == 0
            && self.calls_not_sent == 0
            && self.fatal.is_none()
            && self.state_error.is_none()
            && !self.interrupted
    }
}

/// Told about each finished call, to draw progress.
pub trait Progress: Send {
    fn call_done(&mut self, done: usize, total: usize);
    fn finish(&mut self) {}
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn call_done(&mut self, _done: usize, _total: usize) {}
}

/// Calls in a row that give up after all their retries before the run stops (the API is down).
pub const OUTAGE_CALLS: usize = 3;

/// How many calls may be in flight at once: enough for the rate limit to be reached at the
/// latency the API shows (rate x latency), with room for slow answers.
pub fn concurrency_for(rate_limit: u32) -> usize {
    if rate_limit == 0 {
        64
    } else {
        (rate_limit as usize * 2).clamp(4, 64)
    }
}

/// Runs `plan`'s requests through `client`, recording successes through `lock`.
///
/// `stop` resolves when the run should stop sending (a signal); calls in flight are still
/// awaited and recorded.
pub async fn apply(
    plan: &PlanDoc,
    client: &Client,
    lock: &mut dyn StateLock,
    concurrency: usize,
    progress: &mut dyn Progress,
    stop: tokio::sync::watch::Receiver<bool>,
) -> ApplyReport {
    let started = Instant::now();
    let requests = &plan.requests;
    let total = requests.len();
    let mut report = ApplyReport::default();

    let mut schedule = Schedule::new(requests);

    let mut dead_chats: HashSet<String> = HashSet::new();
    // Calls in a row that exhausted their retries: the API looks down, so stop rather than make
    // every remaining call spend a minute finding that out.
    let mut gave_up_in_a_row = 0usize;
    let mut in_flight: JoinSet<(usize, Result<ChatButtonOutcome, CallError>)> = JoinSet::new();
    let mut done = 0usize;
    let mut stopping = false;
    let mut stop = stop;
    loop {
        if !stopping && *stop.borrow() {
            stopping = true;
            report.interrupted = true;
        }
        if stopping {
            // Calls still waiting for a slot or a retry end unsent; those on the wire finish.
            client.stop_sending();
        }
        while !stopping && in_flight.len() < concurrency.max(1) {
            let Some(i) = schedule.next() else { break };
            let r = &requests[i];
            if dead_chats.contains(&r.body.chat_id) {
                skip(&mut report, r, "the bot is not in this chat");
                done += 1;
                progress.call_done(done, total);
                if let Some(records) = schedule.call_over(&r.body.chat_id, false) {
                    record_or_stop(lock, &records, &mut report, &mut stopping);
                }
                continue;
            }
            let client = client.clone();
            let user_id_type = r.user_id_type;
            let body = r.body.clone();
            in_flight.spawn(async move { (i, client.put_chat_button(user_id_type, &body).await) });
        }
        if in_flight.is_empty() {
            break;
        }
        let joined = tokio::select! {
            j = in_flight.join_next() => j,
            _ = stop.changed(), if !stopping => continue,
        };
        let Some(joined) = joined else { break };
        let (i, result) = match joined {
            Ok(x) => x,
            // A panicked call task: nothing is known about that call, so nothing is recorded.
            Err(e) => {
                report.calls_failed += 1;
                report
                    .fatal
                    .get_or_insert_with(|| format!("internal error in a call: {e}"));
                stopping = true;
                continue;
            }
        };
        let r = &requests[i];
        let chat = r.body.chat_id.as_str();
        done += 1;
        progress.call_done(done, total);
        let mut complete = false;
        match result {
            Ok(outcome) => {
                gave_up_in_a_row = 0;
                report.calls_ok += 1;
                let failed: HashMap<&str, &str> = outcome
                    .failed_users
                    .iter()
                    .map(|f| (f.user_id.as_str(), f.error_message.as_str()))
                    .collect();
                let mut records = Vec::with_capacity(r.changes.len());
                for (target, action) in PlanDoc::request_targets(r) {
                    if let Some(why) = target.user_id().and_then(|u| failed.get(u)) {
                        report.failures.push(Failure {
                            chat_id: target.chat_id.clone(),
                            target: target.audience_label().to_owned(),
                            reason: if why.is_empty() {
                                "reported as failed by the API".to_owned()
                            } else {
                                (*why).to_owned()
                            },
                        });
                        continue;
                    }
                    records.push(record_for(target, action, r));
                }
                complete = records.len() == r.changes.len();
                if r.body.user_ids.is_none() {
                    schedule.defer(chat, records);
                } else {
                    record_or_stop(lock, &records, &mut report, &mut stopping);
                }
            }
            Err(CallError::Stopped) => report.calls_not_sent += 1,
            Err(e) => {
                if matches!(e, CallError::BotNotInChat { .. })
                    && dead_chats.insert(r.body.chat_id.clone())
                {
                    report.bot_not_in.push(r.body.chat_id.clone());
                }
                if e.is_fatal() {
                    report.fatal.get_or_insert_with(|| e.to_string());
                    stopping = true;
                }
                if matches!(e, CallError::GaveUp { .. }) {
                    gave_up_in_a_row += 1;
                    if gave_up_in_a_row >= OUTAGE_CALLS {
                        report.fatal.get_or_insert_with(|| {
                            format!(
                                "the API kept failing ({OUTAGE_CALLS} calls in a row gave up after retries); stopped sending, run apply again later"
                            )
                        });
                        stopping = true;
                    }
                }
                report.calls_failed += 1;
                for (target, _) in PlanDoc::request_targets(r) {
                    report.failures.push(Failure {
                        chat_id: target.chat_id.clone(),
                        target: target.audience_label().to_owned(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        if let Some(records) = schedule.call_over(chat, complete) {
            record_or_stop(lock, &records, &mut report, &mut stopping);
        }
    }
    report.calls_not_sent += schedule.waiting();
    report.deferred_chats = schedule.deferred_chats();
    progress.finish();
    report.failures.sort();
    report.bot_not_in.sort();
    report.elapsed = started.elapsed();
    report
}

/// A chat's phase for a call: 0 its whole-chat call, 1 a clearing call, 2 any other call.
fn phase(r: &RequestDoc) -> u8 {
    match (&r.body.user_ids, r.body.buttons.buttons.is_empty()) {
        (None, _) => 0,
        (Some(_), true) => 1,
        (Some(_), false) => 2,
    }
}

/// Records one call's successes and counts them; a state that refuses them stops the run.
fn record_or_stop(
    lock: &mut dyn StateLock,
    records: &[Record],
    report: &mut ApplyReport,
    stopping: &mut bool,
) {
    match lock.record(records) {
        Ok(()) => report.targets_applied += records.len(),
        Err(e) => {
            report.state_error = Some(e.to_string());
            *stopping = true;
        }
    }
}

/// Which calls may go now, per chat: a chat's calls go in phases ([`phase`]), each starting when
/// the chat's previous one has been answered. A whole-chat change is recorded only once every
/// later call of its chat has applied in full: until then the next plan must still see it, so
/// that it sends the chat's users' lists again.
struct Schedule<'a> {
    requests: &'a [RequestDoc],
    ready: VecDeque<usize>,
    /// Calls of a later phase, in plan order.
    held: HashMap<&'a str, VecDeque<usize>>,
    /// The phase a chat is in, and how many of its calls are not answered yet.
    running: HashMap<&'a str, (u8, usize)>,
    /// Calls of a chat not answered yet, all phases.
    calls_left: HashMap<&'a str, usize>,
    /// Whole-chat records waiting for their chat's other calls.
    deferred: HashMap<&'a str, Vec<Record>>,
    /// Chats with a call that did not apply in full.
    incomplete: HashSet<&'a str>,
}

impl<'a> Schedule<'a> {
    fn new(requests: &'a [RequestDoc]) -> Schedule<'a> {
        let mut s = Schedule {
            requests,
            ready: VecDeque::new(),
            held: HashMap::new(),
            running: HashMap::new(),
            calls_left: HashMap::new(),
            deferred: HashMap::new(),
            incomplete: HashSet::new(),
        };
        for (i, r) in requests.iter().enumerate() {
            let chat = r.body.chat_id.as_str();
            *s.calls_left.entry(chat).or_default() += 1;
            let p = phase(r);
            match s.running.get_mut(chat) {
                None => {
                    s.running.insert(chat, (p, 1));
                    s.ready.push_back(i);
                }
                Some((current, n))
                    if *current == p && s.held.get(chat).is_none_or(VecDeque::is_empty) =>
                {
                    *n += 1;
                    s.ready.push_back(i);
                }
                Some(_) => s.held.entry(chat).or_default().push_back(i),
            }
        }
        s
    }

    /// The next call that may go.
    fn next(&mut self) -> Option<usize> {
        self.ready.pop_front()
    }

    /// Keeps a chat's whole-chat records until the chat's other calls are over.
    fn defer(&mut self, chat: &'a str, records: Vec<Record>) {
        self.deferred.insert(chat, records);
    }

    /// A call of `chat` was answered (or skipped); `complete` when all its targets applied.
    /// Releases the chat's next phase when this was the last call of its phase, and returns the
    /// chat's deferred whole-chat records once all its calls are over and all applied.
    fn call_over(&mut self, chat: &str, complete: bool) -> Option<Vec<Record>> {
        let (&chat, left) = self.calls_left.get_key_value(chat)?;
        let left = left.saturating_sub(1);
        self.calls_left.insert(chat, left);
        if !complete {
            self.incomplete.insert(chat);
        }
        self.release_next_phase(chat);
        if left > 0 || self.incomplete.contains(chat) {
            return None;
        }
        self.deferred.remove(chat)
    }

    fn release_next_phase(&mut self, chat: &'a str) {
        let Some((_, in_phase)) = self.running.get_mut(chat) else {
            return;
        };
        *in_phase = in_phase.saturating_sub(1);
        if *in_phase > 0 {
            return;
        }
        let Some(queue) = self.held.get_mut(chat) else {
            return;
        };
        let Some(&first) = queue.front() else { return };
        let next = phase(&self.requests[first]);
        let mut released = Vec::new();
        while let Some(&j) = queue.front() {
            if phase(&self.requests[j]) != next {
                break;
            }
            released.push(j);
            queue.pop_front();
        }
        self.running.insert(chat, (next, released.len()));
        // The chat's next calls go before other chats' calls, in plan order.
        for &j in released.iter().rev() {
            self.ready.push_front(j);
        }
    }

    /// Calls that never got to go.
    fn waiting(&self) -> usize {
        self.ready.len() + self.held.values().map(VecDeque::len).sum::<usize>()
    }

    /// Chats whose whole-chat change was applied but not recorded, sorted.
    fn deferred_chats(&self) -> Vec<String> {
        let mut chats: Vec<String> = self.deferred.keys().map(|c| (*c).to_owned()).collect();
        chats.sort();
        chats
    }
}

/// The state record for one applied target of a successful call.
fn record_for(target: Target, action: Action, r: &RequestDoc) -> Record {
    match action {
        Action::Remove => Record::Forget { target },
        _ => Record::Set {
            target,
            buttons: r.body.buttons.buttons.clone(),
        },
    }
}

fn skip(report: &mut ApplyReport, r: &RequestDoc, why: &str) {
    report.calls_failed += 1;
    for (target, _) in PlanDoc::request_targets(r) {
        report.failures.push(Failure {
            chat_id: target.chat_id.clone(),
            target: target.audience_label().to_owned(),
            reason: why.to_owned(),
        });
    }
}

/// The end-of-run summary a person reads.
pub fn summary(report: &ApplyReport, total_calls: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Applied {} of {} calls in {:.1} s: {} targets recorded.",
        report.calls_ok,
        total_calls,
        report.elapsed.as_secs_f64(),
        report.targets_applied
    );
    if !report.bot_not_in.is_empty() {
        for chat in &report.bot_not_in {
            let _ = writeln!(
                s,
                "The bot is not in chat {chat}: add the bot to the chat, then apply again."
            );
        }
    }
    if !report.failures.is_empty() {
        let _ = writeln!(
            s,
            "Not applied ({} targets; they stay pending and the next apply retries them):",
            report.failures.len()
        );
        let mut by_reason: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for f in &report.failures {
            by_reason
                .entry((&f.chat_id, &f.reason))
                .or_default()
                .push(&f.target);
        }
        for ((chat, reason), targets) in by_reason {
            let shown: Vec<&str> = targets.iter().take(10).copied().collect();
            let more = if targets.len() > 10 {
                format!(" and {} more", targets.len() - 10)
            } else {
                String::new()
            };
            let _ = writeln!(s, "  {chat}: {}{more}: {reason}", shown.join(", "));
        }
    }
    if !report.deferred_chats.is_empty() {
        let _ = writeln!(
            s,
            "The whole-chat buttons of {} were sent, but are recorded only once every call of the chat applies: the next apply sends them, and the chat's users' lists, again.",
            report.deferred_chats.join(", ")
        );
    }
    if report.calls_not_sent > 0 {
        let _ = writeln!(
            s,
            "{} calls were not sent; run apply again to send them.",
            report.calls_not_sent
        );
    }
    if let Some(f) = &report.fatal {
        let _ = writeln!(s, "Stopped: {f}");
    }
    if let Some(e) = &report.state_error {
        let _ = writeln!(s, "Stopped: recording in the state failed: {e}");
    }
    if report.interrupted {
        let _ = writeln!(
            s,
            "Stopped by a signal: the calls in flight were answered and recorded."
        );
    }
    s
}

/// Exit code of an apply run (`cli.md`): 0 complete, 3 partly applied, 1 nothing applied.
pub fn exit_code(report: &ApplyReport) -> u8 {
    if report.complete() {
        0
    } else if report.targets_applied > 0 {
        3
    } else {
        1
    }
}
