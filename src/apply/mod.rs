//! Apply: runs a plan's calls through the API client and records each call's fate in the state
//! as it comes (see `outcome`). A chat's calls go in phases (whole-chat, users leaving the
//! config, the rest); a chat whose bot is missing is skipped; a fatal error (credentials, scope)
//! or a stop signal ends the run after the calls in flight are answered and recorded.

pub mod outcome;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::feishu::client::{CallError, ChatButtonOutcome, Client};
use crate::plan::json::{PlanDoc, RequestDoc};
use crate::state::{Record, StateWriter};

use outcome::InFlight;

/// One target that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Failure {
    pub chat_id: String,
    /// The user id, or `everyone`.
    pub target: String,
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Calls answered with success (some of their users may still have been refused).
    pub calls_ok: usize,
    /// Calls that failed, went unanswered, or were skipped because their chat could not go on.
    pub calls_failed: usize,
    /// Calls never sent because the run stopped (signal or fatal error).
    pub calls_not_sent: usize,
    /// Targets the API accepted (set, followed, or cleared and forgotten).
    pub targets_applied: usize,
    /// Targets whose call failed: they keep what they showed, and the next apply sends them.
    pub failures: Vec<Failure>,
    /// Targets whose call went unanswered: recorded as uncertain, so that the next apply sends
    /// them again whatever the config says then.
    pub uncertain: Vec<Failure>,
    /// Users the API refused (not in the chat): recorded as waiting, retried by later runs.
    pub waiting: Vec<Failure>,
    /// Chats that answered "the bot is not in the chat".
    pub bot_not_in: Vec<String>,
    /// Why the run stopped early, if it did: a fatal API error.
    pub fatal: Option<String>,
    /// The run was asked to stop (SIGINT/SIGTERM).
    pub interrupted: bool,
    /// Recording in the state failed: the run stopped, and this says why.
    pub state_error: Option<String>,
    pub elapsed: Duration,
}

impl ApplyReport {
    /// Every call was sent and applied, except for users the API refused (they wait), even if
    /// a signal came while the last ones were answered.
    pub fn every_call_applied(&self) -> bool {
        self.failures.is_empty()
            && self.uncertain.is_empty()
            && self.calls_failed == 0
            && self.calls_not_sent == 0
            && self.fatal.is_none()
            && self.state_error.is_none()
    }

    /// Everything was applied, except users the API refused (they wait), and no signal came.
    pub fn complete_but_waiting(&self) -> bool {
        self.every_call_applied() && !self.interrupted
    }

    /// Everything was applied.
    pub fn complete(&self) -> bool {
        self.complete_but_waiting() && self.waiting.is_empty()
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

/// Runs `plan`'s requests through `client`, recording each call's fate through `lock`.
///
/// `stop` resolves when the run should stop sending (a signal); calls in flight are still
/// awaited and recorded.
pub async fn apply(
    plan: &PlanDoc,
    client: &Client,
    lock: &mut dyn StateWriter,
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
    let mut calls: HashMap<usize, InFlight> = HashMap::new();
    let mut done = 0usize;
    let mut stopping = false;
    let mut stop = stop;
    // A shared store's writer can lose its lock; then nothing more may be sent.
    let mut lost = lock.lost();
    // The writer can count itself lost while this loop waits for it (a write hanging on a
    // silent network): calls waiting for a retry or a slot stop then, not when the write ends.
    let stop_on_lost = lost.clone().map(|mut lost| {
        let client = client.clone();
        tokio::spawn(async move {
            if lost.wait_for(|l| *l).await.is_ok() {
                client.stop_sending();
            }
        })
    });
    // A writer that took over from one with calls in flight waits until none can still land.
    if let Some(from) = lock.sends_from() {
        let wait = tokio::time::sleep_until(from.into());
        tokio::select! {
            () = wait => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    loop {
        if !stopping && *stop.borrow() {
            stopping = true;
            report.interrupted = true;
        }
        if !stopping && lost.as_ref().is_some_and(|l| *l.borrow()) {
            stopping = true;
            report.state_error.get_or_insert_with(|| {
                "this run lost the state's lock (another writer took over, or the database went away); it stopped sending".to_owned()
            });
        }
        if stopping {
            // Calls still waiting for a slot or a retry end unsent; those on the wire finish.
            client.stop_sending();
        }
        while !stopping && in_flight.len() < concurrency.max(1) {
            let Some(i) = schedule.next() else { break };
            let r = &requests[i];
            if dead_chats.contains(r.body.chat_id.as_str()) {
                skip(&mut report, r, "the bot is not in this chat");
                done += 1;
                progress.call_done(done, total);
                schedule.call_over(&r.body.chat_id);
                continue;
            }
            // The mark goes to disk before the call goes out: if the answer never comes, the
            // state already says the target is uncertain.
            let (marks, call) = outcome::before(lock.state(), r, outcome::unix_now());
            let busy = lock.calls_in_flight(in_flight.len() + 1);
            if let Err(e) = busy {
                report.state_error.get_or_insert_with(|| e.to_string());
                stopping = true;
                schedule.unsend(i);
                break;
            }
            if !record_or_stop(lock, &marks, &mut report, &mut stopping) {
                schedule.unsend(i);
                break;
            }
            calls.insert(i, call);
            let client = client.clone();
            let user_id_type = r.user_id_type;
            let body = r.body.clone();
            in_flight.spawn(async move { (i, client.put_chat_button(user_id_type, &body).await) });
        }
        if in_flight.is_empty() {
            break;
        }
        let lost_changed = async {
            match lost.as_mut() {
                Some(l) => {
                    if l.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let joined = tokio::select! {
            j = in_flight.join_next() => j,
            _ = stop.changed(), if !stopping => continue,
            () = lost_changed, if !stopping => continue,
        };
        let Some(joined) = joined else { break };
        let (i, result) = match joined {
            Ok(x) => x,
            // A panicked call task: nothing is known about that call; its targets stay
            // marked uncertain.
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
        let Some(call) = calls.remove(&i) else {
            continue;
        };
        let chat = r.body.chat_id.as_str();
        done += 1;
        progress.call_done(done, total);
        match result {
            Ok(answer) => {
                gave_up_in_a_row = 0;
                report.calls_ok += 1;
                let records =
                    outcome::accepted(lock.state(), r, &call, &answer, outcome::unix_now());
                let refused = failure_reasons(&answer);
                for (target, ..) in &call.targets {
                    match target.user_id().and_then(|u| refused.get(u)) {
                        Some(why) => report.waiting.push(Failure {
                            chat_id: target.chat_id.to_string(),
                            target: target.audience_label().to_owned(),
                            reason: (*why).to_owned(),
                        }),
                        None => report.targets_applied += 1,
                    }
                }
                record_or_stop(lock, &records, &mut report, &mut stopping);
            }
            Err(CallError::Stopped) => {
                report.calls_not_sent += 1;
                record_or_stop(lock, &outcome::refused(&call), &mut report, &mut stopping);
            }
            Err(e) => {
                if matches!(e.final_error(), CallError::BotNotInChat { .. })
                    && dead_chats.insert(r.body.chat_id.to_string())
                {
                    report.bot_not_in.push(r.body.chat_id.to_string());
                }
                if e.is_fatal() {
                    report.fatal.get_or_insert_with(|| e.to_string());
                    stopping = true;
                }
                if e.is_exhausted() {
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
                let unanswered = e.may_have_applied();
                let list = if unanswered {
                    &mut report.uncertain
                } else {
                    &mut report.failures
                };
                for (target, ..) in &call.targets {
                    list.push(Failure {
                        chat_id: target.chat_id.to_string(),
                        target: target.audience_label().to_owned(),
                        reason: e.to_string(),
                    });
                }
                if !unanswered {
                    record_or_stop(lock, &outcome::refused(&call), &mut report, &mut stopping);
                }
            }
        }
        schedule.call_over(chat);
        if let Err(e) = lock.calls_in_flight(in_flight.len()) {
            report.state_error.get_or_insert_with(|| e.to_string());
            stopping = true;
        }
    }
    if let Some(task) = stop_on_lost {
        task.abort();
    }
    report.calls_not_sent += schedule.waiting();
    progress.finish();
    report.failures.sort();
    report.uncertain.sort();
    report.waiting.sort();
    report.bot_not_in.sort();
    report.elapsed = started.elapsed();
    report
}

/// The users an answer lists as failed, and why.
fn failure_reasons(answer: &ChatButtonOutcome) -> HashMap<&str, &str> {
    answer
        .failed_users
        .iter()
        .map(|f| {
            let why = if f.error_message.is_empty() {
                "reported as failed by the API"
            } else {
                f.error_message.as_str()
            };
            (f.user_id.as_str(), why)
        })
        .collect()
}

/// A chat's phase for a call: 0 its whole-chat call, 1 a call for users leaving the config,
/// 2 any other call.
fn phase(r: &RequestDoc) -> u8 {
    if r.body.user_ids.is_none() {
        0
    } else if !r.changes.is_empty() && r.changes.iter().all(|c| c.action.follows()) {
        1
    } else {
        2
    }
}

/// Records one batch; a state that refuses it stops the run. Whether it was recorded.
fn record_or_stop(
    lock: &mut dyn StateWriter,
    records: &[Record],
    report: &mut ApplyReport,
    stopping: &mut bool,
) -> bool {
    match lock.record(records) {
        Ok(()) => true,
        Err(e) => {
            report.state_error.get_or_insert_with(|| e.to_string());
            *stopping = true;
            false
        }
    }
}

/// Which calls may go now, per chat: a chat's calls go in phases ([`phase`]), each starting
/// when the chat's previous one has been answered, so that its whole-chat call lands before
/// its users' lists, and an old id type's calls before the new one's.
struct Schedule<'a> {
    requests: &'a [RequestDoc],
    ready: VecDeque<usize>,
    /// Calls of a later phase, in plan order.
    held: HashMap<&'a str, VecDeque<usize>>,
    /// The phase a chat is in, and how many of its calls are not answered yet.
    running: HashMap<&'a str, (u8, usize)>,
}

impl<'a> Schedule<'a> {
    fn new(requests: &'a [RequestDoc]) -> Schedule<'a> {
        let mut s = Schedule {
            requests,
            ready: VecDeque::new(),
            held: HashMap::new(),
            running: HashMap::new(),
        };
        for (i, r) in requests.iter().enumerate() {
            let chat = r.body.chat_id.as_str();
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

    /// Puts back a call that was taken but not sent.
    fn unsend(&mut self, i: usize) {
        self.ready.push_front(i);
    }

    /// A call of `chat` was answered (or skipped): releases the chat's next phase when this
    /// was the last call of its phase.
    fn call_over(&mut self, chat: &str) {
        let Some((&chat, (_, in_phase))) = self.running.get_key_value(chat).map(|(k, v)| (k, *v))
        else {
            return;
        };
        let in_phase = in_phase.saturating_sub(1);
        if let Some(entry) = self.running.get_mut(chat) {
            entry.1 = in_phase;
        }
        if in_phase > 0 {
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
}

fn skip(report: &mut ApplyReport, r: &RequestDoc, why: &str) {
    report.calls_failed += 1;
    for (target, _) in PlanDoc::request_targets(r) {
        report.failures.push(Failure {
            chat_id: target.chat_id.to_string(),
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
            "Not applied ({} targets; they keep what they showed and the next apply sends them):",
            report.failures.len()
        );
        by_reason(&mut s, &report.failures);
    }
    if !report.uncertain.is_empty() {
        let _ = writeln!(
            s,
            "Unanswered ({} targets; recorded as uncertain, so the next apply sends them again whatever the config says then):",
            report.uncertain.len()
        );
        by_reason(&mut s, &report.uncertain);
    }
    if !report.waiting.is_empty() {
        let _ = writeln!(
            s,
            "Waiting ({} targets; the API refused these users, and later runs retry them):",
            report.waiting.len()
        );
        by_reason(&mut s, &report.waiting);
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
    if report.interrupted && report.every_call_applied() {
        let _ = writeln!(
            s,
            "Stopped by a signal after every call was applied and recorded: nothing was left to send."
        );
    } else if report.interrupted {
        let _ = writeln!(
            s,
            "Stopped by a signal: the calls in flight were answered and recorded."
        );
    }
    s
}

/// Failures grouped per chat and reason, ten targets shown per line.
fn by_reason(s: &mut String, failures: &[Failure]) {
    use std::fmt::Write as _;
    let mut grouped: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for f in failures {
        grouped
            .entry((&f.chat_id, &f.reason))
            .or_default()
            .push(&f.target);
    }
    for ((chat, reason), targets) in grouped {
        let shown: Vec<&str> = targets.iter().take(10).copied().collect();
        let more = if targets.len() > 10 {
            format!(" and {} more", targets.len() - 10)
        } else {
            String::new()
        };
        let _ = writeln!(s, "  {chat}: {}{more}: {reason}", shown.join(", "));
    }
}

/// Exit code of an apply run (`cli.md`): 0 complete, 4 complete but for users the API refused
/// (they wait), 3 partly applied, 1 nothing applied.
pub fn exit_code(report: &ApplyReport) -> u8 {
    if report.complete() {
        0
    } else if report.complete_but_waiting() {
        4
    } else if report.targets_applied > 0 {
        3
    } else {
        1
    }
}
