//! Exact records, model-checked: random configs, edits and reverts, users leaving and joining
//! chats, id-type moves, whole-chat changes, answers lost after the emulator applied the call,
//! and runs killed with calls in flight, applied to the emulator over HTTP. After every step,
//! for every recorded target, what the emulator shows is what the state records, or the state
//! marks the target (uncertain, owed, waiting) and the next plan sends it. Once the faults stop,
//! applies converge to the emulator showing the config, and `plan` says "No changes" only when
//! it does.
//!
//! `FEEDBUTTONS_MODEL_CASES` sets the number of random cases (default 64).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use feedbuttons::apply;
use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, Fixtures, RunningEmulator,
};
use feedbuttons::feishu::client::{Client, ClientConfig, RetryPolicy, Secret};
use feedbuttons::feishu::wire::{ActionType, Button, Text, UserIdType};
use feedbuttons::plan::{self, PlanOptions, json::PlanDoc};
use feedbuttons::state::{AppliedState, Binding, StateStore, StateWriter};
use feedbuttons::target::{Audience, ButtonList, Target};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::util::Dir;

const CHATS: [&str; 2] = ["oc_m0", "oc_m1"];
/// People p0..p4, each known by an open id and a union id.
const PEOPLE: usize = 5;

fn open_id(p: usize) -> String {
    format!("ou_p{p}")
}

fn union_id(p: usize) -> String {
    format!("on_p{p}")
}

/// The person an id names.
fn person_of(id: &str) -> Option<usize> {
    id.strip_prefix("ou_p")
        .or_else(|| id.strip_prefix("on_p"))
        .and_then(|n| n.parse().ok())
}

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

/// The lists configs hand out, by index; 0 is the explicit clear.
fn list(i: u8) -> ButtonList {
    match i % 4 {
        0 => vec![],
        1 => vec![button("A")],
        2 => vec![button("B")],
        _ => vec![button("A"), button("B")],
    }
}

/// One chat's config: its id type, its whole-chat list, and its people's lists.
#[derive(Clone, Debug)]
struct ChatCfg {
    union: bool,
    everyone: Option<u8>,
    users: BTreeMap<usize, u8>,
}

type Cfg = Vec<ChatCfg>;

fn desired(cfg: &Cfg) -> BTreeMap<Target, Arc<ButtonList>> {
    let mut out = BTreeMap::new();
    for (chat, c) in CHATS.iter().zip(cfg) {
        if let Some(l) = c.everyone {
            out.insert(Target::everyone(*chat), Arc::new(list(l)));
        }
        for (&p, &l) in &c.users {
            let (ty, id) = if c.union {
                (UserIdType::UnionId, union_id(p))
            } else {
                (UserIdType::OpenId, open_id(p))
            };
            out.insert(Target::user(*chat, ty, id), Arc::new(list(l)));
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Step {
    /// A new config.
    Edit(Cfg),
    /// Back to the config `n` edits ago.
    Revert(usize),
    /// The chat's members become these people (the others are refused by the API).
    Members(usize, BTreeSet<usize>),
    /// An apply: `drop_percent` of the answers lost after the call applied, `attempts` tries a
    /// call, and the run killed once the emulator has answered `kill_after` calls.
    Apply {
        drop_percent: u8,
        attempts: u32,
        kill_after: Option<usize>,
        seed: u64,
    },
}

fn chat_cfg() -> impl Strategy<Value = ChatCfg> {
    (
        any::<bool>(),
        proptest::option::of(0u8..4),
        proptest::collection::btree_map(0..PEOPLE, 0u8..4, 0..=PEOPLE),
    )
        .prop_map(|(union, everyone, users)| ChatCfg {
            union,
            everyone,
            users,
        })
}

fn cfg() -> impl Strategy<Value = Cfg> {
    proptest::collection::vec(chat_cfg(), CHATS.len())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => cfg().prop_map(Step::Edit),
        1 => (1usize..4).prop_map(Step::Revert),
        2 => (0..CHATS.len(), proptest::collection::btree_set(0..PEOPLE, 0..=PEOPLE))
            .prop_map(|(c, m)| Step::Members(c, m)),
        5 => (
            prop::sample::select(vec![0u8, 0, 30, 100]),
            prop::sample::select(vec![1u32, 3]),
            proptest::option::of(0usize..6),
            any::<u64>(),
        )
            .prop_map(|(drop_percent, attempts, kill_after, seed)| Step::Apply {
                drop_percent,
                attempts,
                kill_after,
                seed,
            }),
    ]
}

/// Every person is a member of every chat, known by both ids.
fn fixtures() -> Fixtures {
    let people: Vec<String> = (0..PEOPLE)
        .map(|p| format!("{{open_id: {}, union_id: {}}}", open_id(p), union_id(p)))
        .collect();
    let chats: String = CHATS
        .iter()
        .map(|c| format!("  - chat_id: {c}\n    members: [{}]\n", people.join(", ")))
        .collect();
    Fixtures::parse(&format!("chats:\n{chats}")).expect("fixtures")
}

async fn admin(emu: &RunningEmulator, method: reqwest::Method, path: &str, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .request(method, emu.url(path))
        .json(&body)
        .send()
        .await
        .expect("admin call");
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
    answer.json().await.unwrap_or(Value::Null)
}

async fn set_members(emu: &RunningEmulator, chat: &str, people: &BTreeSet<usize>) {
    let members: Vec<Value> = people
        .iter()
        .map(|p| json!({"open_id": open_id(*p), "union_id": union_id(*p)}))
        .collect();
    admin(
        emu,
        reqwest::Method::PUT,
        &format!("/_emulator/chats/{chat}/members"),
        json!({ "members": members }),
    )
    .await;
}

async fn chat_buttons_calls(emu: &RunningEmulator) -> usize {
    let log: Value = reqwest::get(emu.url("/_emulator/requests"))
        .await
        .expect("GET requests")
        .json()
        .await
        .expect("json");
    log.as_array().map_or(0, |l| {
        l.iter()
            .filter(|r| r["path"] == "/open-apis/im/v2/chat_button")
            .count()
    })
}

/// What the emulator shows: each chat's whole-chat list, and each person's own list.
#[derive(Debug)]
struct Seen {
    chat_buttons: BTreeMap<String, Option<ButtonList>>,
    persons: BTreeMap<(String, usize), ButtonList>,
}

async fn seen(emu: &RunningEmulator) -> Seen {
    let mut out = Seen {
        chat_buttons: BTreeMap::new(),
        persons: BTreeMap::new(),
    };
    for chat in CHATS {
        let v: Value = reqwest::get(emu.url(&format!("/_emulator/chats/{chat}")))
            .await
            .expect("GET chat")
            .json()
            .await
            .expect("json");
        let chat_list: Option<ButtonList> =
            serde_json::from_value(v["chat_buttons"].clone()).expect("a list or null");
        out.chat_buttons.insert(chat.to_owned(), chat_list);
        for u in v["users"].as_array().into_iter().flatten() {
            // A person out of the chat keeps their list for when they rejoin.
            let own = match (&u["source"], &u["kept"]) {
                (s, _) if s == "user" => &u["buttons"],
                (_, kept) if !kept.is_null() => kept,
                _ => continue,
            };
            let id = u["ids"]["open_id"].as_str().unwrap_or_default();
            let Some(p) = person_of(id) else { continue };
            let buttons: ButtonList = serde_json::from_value(own.clone()).expect("buttons");
            out.persons.insert((chat.to_owned(), p), buttons);
        }
    }
    out
}

fn plan_for<'a>(
    desired: &'a BTreeMap<Target, Arc<ButtonList>>,
    state: &'a AppliedState,
) -> plan::Plan<'a> {
    plan::plan(
        desired,
        &BTreeMap::new(),
        &state.targets,
        &PlanOptions::default(),
    )
}

/// The invariant: every settled record is what the emulator shows (a follower whose person is
/// declared in the chat under another id type aside: that record speaks for the person), and
/// every other record is sent by the next plan.
fn check_records(cfg: &Cfg, state: &AppliedState, seen: &Seen) -> Result<(), String> {
    let wanted = desired(cfg);
    let next = plan_for(&wanted, state);
    // Sent again, or settled without a call (a refusal that no longer matters).
    let sent: BTreeSet<&Target> = next
        .requests
        .iter()
        .flat_map(|r| r.changes.iter().map(|c| c.target))
        .chain(next.settle.iter().map(|r| r.target()))
        .collect();
    // People with a record in the chat that is pending, or that the config declares.
    let mut pending_people: BTreeSet<(&str, usize)> = BTreeSet::new();
    let mut declared_people: BTreeMap<(&str, usize), &Target> = BTreeMap::new();
    for (t, r) in &state.targets {
        if let Some(p) = t.user_id().and_then(person_of) {
            if r.pending().is_some() {
                pending_people.insert((&t.chat_id, p));
            }
            if !r.follows() {
                declared_people.insert((&t.chat_id, p), t);
            }
        }
    }
    for (t, r) in &state.targets {
        if r.pending().is_some() {
            if !sent.contains(t) {
                return Err(format!(
                    "{t} is {r:?} but the next plan neither sends nor settles it"
                ));
            }
            continue;
        }
        let shown = r.shown().cloned();
        match &t.audience {
            Audience::Everyone => {
                let got = seen.chat_buttons.get(t.chat_id.as_str()).cloned().flatten();
                if got != shown {
                    return Err(format!(
                        "{t}: recorded {shown:?}, the emulator shows {got:?}"
                    ));
                }
            }
            Audience::User { id, .. } => {
                let Some(p) = person_of(id) else { continue };
                let key = (t.chat_id.as_str(), p);
                if pending_people.contains(&key) {
                    continue;
                }
                if r.follows() && declared_people.get(&key).is_some_and(|d| *d != t) {
                    continue;
                }
                let got = seen.persons.get(&(t.chat_id.to_string(), p)).cloned();
                if got != shown {
                    return Err(format!(
                        "{t}: recorded {shown:?}, the emulator shows {got:?}"
                    ));
                }
            }
        }
    }
    // A whole-chat list the state forgot was cleared.
    for (chat, list) in &seen.chat_buttons {
        if !state.targets.contains_key(&Target::everyone(chat.clone()))
            && list.as_ref().is_some_and(|l| !l.is_empty())
        {
            return Err(format!(
                "{chat}: whole-chat list {list:?} that the state does not know"
            ));
        }
    }
    Ok(())
}

/// Whether the emulator shows the config: each chat its whole-chat list, each declared person
/// their list, each person the state follows the chat's whole-chat list (or none).
fn shows_config(cfg: &Cfg, state: &AppliedState, seen: &Seen) -> Result<(), String> {
    for (chat, c) in CHATS.iter().zip(cfg) {
        let whole = c.everyone.map(list);
        let got = seen.chat_buttons.get(*chat).cloned().flatten();
        let got = got.filter(|l| !l.is_empty() || whole.is_some());
        if got != whole {
            return Err(format!(
                "{chat}: whole-chat {got:?}, the config says {whole:?}"
            ));
        }
        let mut want: BTreeMap<usize, ButtonList> =
            c.users.iter().map(|(p, l)| (*p, list(*l))).collect();
        for (t, r) in state.chat(chat) {
            if let (true, Some(p)) = (r.follows(), t.user_id().and_then(person_of)) {
                want.entry(p)
                    .or_insert_with(|| whole.clone().unwrap_or_default());
            }
        }
        for (p, l) in want {
            let got = seen.persons.get(&((*chat).to_owned(), p));
            if got != Some(&l) {
                return Err(format!("{chat}/p{p}: sees {got:?}, the config says {l:?}"));
            }
        }
    }
    Ok(())
}

struct World {
    emu: RunningEmulator,
    store: Box<dyn StateStore>,
    lock: Option<Box<dyn StateWriter>>,
    _dir: Dir,
    /// What happened, for a failure's message.
    trace: Vec<String>,
    /// Emulator log entries already traced.
    logged: usize,
}

impl World {
    fn lock(&mut self) -> &mut dyn StateWriter {
        if self.lock.is_none() {
            self.lock = Some(self.store.writer("model").expect("lock"));
        }
        self.lock.as_deref_mut().expect("just taken")
    }

    /// One apply as `apply --yes` makes it, with faults; killed (the future dropped, the
    /// lock released and taken again from disk) once `kill_after` calls were answered.
    async fn apply(
        &mut self,
        cfg: &Cfg,
        drop_percent: u8,
        attempts: u32,
        kill_after: Option<usize>,
        seed: u64,
    ) -> Option<apply::ApplyReport> {
        let emu_url = self.emu.base_url();
        admin(
            &self.emu,
            reqwest::Method::PUT,
            "/_emulator/faults",
            json!({
                "drop_rate": f64::from(drop_percent) / 100.0,
                "drop_after_processing": true,
                "seed": seed,
            }),
        )
        .await;
        let client = Client::new(ClientConfig {
            rate_limit: 0,
            retry: RetryPolicy {
                max_attempts: attempts,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            timeout: Duration::from_secs(5),
            ..ClientConfig::new(
                emu_url.clone(),
                BUILTIN_APP_ID,
                Secret::new(BUILTIN_APP_SECRET.to_owned()),
            )
        })
        .expect("client");
        let calls_before = chat_buttons_calls(&self.emu).await;
        let mut lock = match self.lock.take() {
            Some(l) => l,
            None => self.store.writer("model").expect("lock"),
        };
        lock.bind(&Binding::new(&emu_url, BUILTIN_APP_ID))
            .expect("bind");
        let desired = desired(cfg);
        let mut p = plan::plan(
            &desired,
            &BTreeMap::new(),
            &lock.state().targets,
            &PlanOptions::default(),
        );
        let settle = std::mem::take(&mut p.settle);
        let doc = PlanDoc::new(&p);
        drop(p);
        lock.record(&settle).expect("settle");
        for r in &doc.requests {
            let texts: Vec<&str> = r
                .body
                .buttons
                .buttons
                .iter()
                .map(|b| b.text.text.as_str())
                .collect();
            let changes: Vec<String> = r
                .changes
                .iter()
                .map(|c| format!("{}:{}", c.target, c.action.as_str()))
                .collect();
            self.trace.push(format!(
                "   call {} {} {:?} {texts:?} {changes:?}",
                r.body.chat_id, r.user_id_type, r.body.user_ids
            ));
        }
        let (_tx, stop) = tokio::sync::watch::channel(false);
        let mut quiet = apply::Quiet;
        let report = {
            let run = apply::apply(&doc, &client, lock.as_mut(), 4, &mut quiet, stop);
            match kill_after {
                None => Some(run.await),
                Some(n) => {
                    let emu = &self.emu;
                    let killer = async {
                        while chat_buttons_calls(emu).await < calls_before + n {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    };
                    tokio::select! {
                        r = run => Some(r),
                        () = killer => None,
                    }
                }
            }
        };
        if let Some(r) = &report {
            self.trace.push(format!(
                "   ok {} failed {} uncertain {:?} waiting {:?}",
                r.calls_ok, r.calls_failed, r.uncertain, r.waiting
            ));
        }
        if report.is_some() {
            self.lock = Some(lock);
        } else {
            // Killed: what is on disk is all that survives. Calls cut off on the wire may
            // still land; give them the emulator's latency and more.
            drop(lock);
            tokio::time::sleep(Duration::from_millis(40)).await;
            self.trace.push("   killed".to_owned());
        }
        let log: Value = reqwest::get(self.emu.url("/_emulator/requests"))
            .await
            .expect("GET requests")
            .json()
            .await
            .expect("json");
        for r in log["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .skip(self.logged)
        {
            self.trace.push(format!(
                "   emulator #{} {} {} {}",
                r["seq"], r["path"], r["status"], r["body"]
            ));
        }
        self.logged = log["requests"].as_array().map_or(0, Vec::len);
        admin(
            &self.emu,
            reqwest::Method::DELETE,
            "/_emulator/faults",
            Value::Null,
        )
        .await;
        report
    }

    fn state(&mut self) -> AppliedState {
        self.lock().state().clone()
    }
}

async fn run_case(steps: Vec<Step>, first: Cfg) -> Result<(), String> {
    let emu = Emulator::start(EmulatorConfig {
        fixtures: Some(fixtures()),
        rate_limit: 0,
        latency: Duration::from_millis(3),
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let dir = Dir::new();
    let store =
        feedbuttons::state::open(&dir.path().join("state.json")).map_err(|e| e.to_string())?;
    let mut w = World {
        emu,
        store,
        lock: None,
        _dir: dir,
        trace: Vec::new(),
        logged: 0,
    };
    let mut history: Vec<Cfg> = vec![first];
    let mut members: Vec<BTreeSet<usize>> = vec![(0..PEOPLE).collect(); CHATS.len()];
    for (i, step) in steps.into_iter().enumerate() {
        let cfg = history.last().cloned().unwrap_or_default();
        w.trace.push(format!("{i}: {step:?}"));
        match step {
            Step::Edit(c) => history.push(c),
            Step::Revert(n) => {
                let back = history[history.len().saturating_sub(n + 1)].clone();
                history.push(back);
            }
            Step::Members(c, m) => {
                set_members(&w.emu, CHATS[c], &m).await;
                members[c] = m;
            }
            Step::Apply {
                drop_percent,
                attempts,
                kill_after,
                seed,
            } => {
                w.apply(&cfg, drop_percent, attempts, kill_after, seed)
                    .await;
            }
        }
        let cfg = history.last().cloned().unwrap_or_default();
        let state = w.state();
        let seen = seen(&w.emu).await;
        let traced = |e: String| {
            format!(
                "{e}\n--- trace\n{}\n--- state\n{}",
                w.trace.join("\n"),
                feedbuttons::state::commands::list(&state, None)
            )
        };
        check_records(&cfg, &state, &seen).map_err(|e| traced(format!("after step {i}: {e}")))?;
        if !plan_for(&desired(&cfg), &state).has_changes() {
            shows_config(&cfg, &state, &seen)
                .map_err(|e| traced(format!("after step {i}, plan says \"No changes\" but {e}")))?;
        }
    }
    // The faults stop: everyone is let in, nothing is lost, nothing is killed.
    let cfg = history.last().cloned().unwrap_or_default();
    for chat in CHATS {
        set_members(&w.emu, chat, &(0..PEOPLE).collect()).await;
    }
    for _ in 0..2 {
        let state = w.state();
        if !plan_for(&desired(&cfg), &state).has_changes() {
            break;
        }
        let report = w.apply(&cfg, 0, 3, None, 0).await.ok_or("not killed")?;
        if !report.complete() {
            return Err(format!("a fault-free apply did not complete: {report:?}"));
        }
    }
    let state = w.state();
    if plan_for(&desired(&cfg), &state).has_changes() {
        return Err("two fault-free applies did not converge".to_owned());
    }
    let seen = seen(&w.emu).await;
    shows_config(&cfg, &state, &seen).map_err(|e| format!("converged, but {e}"))?;
    check_records(&cfg, &state, &seen).map_err(|e| format!("converged, but {e}"))?;
    w.emu.shutdown().await;
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FEEDBUTTONS_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_state_never_disagrees_with_the_emulator_unmarked(first in cfg(), steps in proptest::collection::vec(step(), 1..12)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let result = rt.block_on(run_case(steps, first));
        if let (Err(e), Ok(path)) = (&result, std::env::var("FEEDBUTTONS_MODEL_TRACE")) {
            // The first failure, with its whole trace (shrinking runs many more).
            if !std::path::Path::new(&path).exists() {
                let _ = std::fs::write(&path, e);
            }
        }
        prop_assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
    }
}
