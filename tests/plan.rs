//! The plan: what changes, which calls make it so, and how it reads (text, markdown, JSON).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use feedbuttons::feishu::wire::{ActionType, Button, ButtonType, MultiUrl, Text, UserIdType};
use feedbuttons::plan::{self, Action, Plan, PlanOptions, json::PlanDoc, render};
use feedbuttons::state::{OwedReason, Pending, PendingStatus, TargetRecord};
use feedbuttons::target::{Audience, ButtonList, Target};
use proptest::prelude::*;

use crate::util::{self, Dir};

fn button(text: &str) -> Button {
    Button {
        multi_url: Some(MultiUrl {
            url: Some(format!(
                "https://example.com/{}",
                text.to_lowercase().replace(' ', "-")
            )),
            ..MultiUrl::default()
        }),
        action_type: ActionType::UrlPage,
        text: Text {
            text: text.to_owned(),
        },
        button_type: Some(ButtonType::Default),
        action_map: None,
    }
}

fn list(texts: &[&str]) -> ButtonList {
    texts.iter().map(|t| button(t)).collect()
}

fn user(chat: &str, id: &str) -> Target {
    Target::user(chat, UserIdType::OpenId, id)
}

type Desired = BTreeMap<Target, Arc<ButtonList>>;
type AppliedMap = BTreeMap<Target, Arc<ButtonList>>;

/// Nothing applied yet.
static NO_STATE: AppliedMap = BTreeMap::new();

fn make_plan<'a>(desired: &'a Desired, applied: &'a AppliedMap) -> Plan<'a> {
    let names = BTreeMap::from([("oc_war".to_owned(), "War room".to_owned())]);
    plan::plan(
        desired,
        &names,
        applied,
        &PlanOptions {
            chats: vec![],
            rate_limit: 10,
            ..Default::default()
        },
    )
}

/// The three renderings of one plan, as a reviewer and a script see them.
fn all_formats(p: &Plan) -> String {
    format!(
        "--- text ---\n{}\n--- markdown ---\n{}\n--- json ---\n{}",
        render::text(p, render::Style { color: false }),
        render::markdown(p),
        PlanDoc::new(p).to_json()
    )
}

#[test]
fn first_apply() {
    let mut desired = Desired::new();
    desired.insert(Target::everyone("oc_war"), Arc::new(list(&["Status"])));
    desired.insert(user("oc_war", "ou_a"), Arc::new(list(&["Runbook", "Ack"])));
    desired.insert(user("oc_war", "ou_b"), Arc::new(list(&["Runbook", "Ack"])));
    desired.insert(user("oc_ops", "ou_c"), Arc::new(list(&[])));
    let p = make_plan(&desired, &NO_STATE);
    assert_eq!((p.summary.add, p.summary.requests), (4, 3));
    // The whole-chat call comes first in its chat.
    assert_eq!(p.requests[1].body.user_ids, None);
    assert_eq!(p.requests[1].body.chat_id, "oc_war");
    insta::assert_snapshot!(all_formats(&p));
}

#[test]
fn no_change() {
    let mut desired = Desired::new();
    desired.insert(user("oc_war", "ou_a"), Arc::new(list(&["Runbook"])));
    let applied: AppliedMap = desired.clone();
    let p = make_plan(&desired, &applied);
    assert!(!p.has_changes());
    assert_eq!(p.summary.unchanged, 1);
    insta::assert_snapshot!(all_formats(&p));
}

#[test]
fn mixed_add_change_remove() {
    let mut desired = Desired::new();
    let mut applied = AppliedMap::new();
    desired.insert(user("oc_war", "ou_new"), Arc::new(list(&["Runbook"])));
    desired.insert(
        user("oc_war", "ou_changed1"),
        Arc::new(list(&["Runbook", "Ack"])),
    );
    desired.insert(
        user("oc_war", "ou_changed2"),
        Arc::new(list(&["Runbook", "Ack"])),
    );
    applied.insert(user("oc_war", "ou_changed1"), Arc::new(list(&["Runbook"])));
    applied.insert(user("oc_war", "ou_changed2"), Arc::new(list(&["Runbook"])));
    desired.insert(user("oc_war", "ou_same"), Arc::new(list(&["Runbook"])));
    applied.insert(user("oc_war", "ou_same"), Arc::new(list(&["Runbook"])));
    applied.insert(user("oc_war", "ou_gone"), Arc::new(list(&["Ack"])));
    let p = make_plan(&desired, &applied);
    let s = p.summary;
    assert_eq!((s.add, s.change, s.remove, s.unchanged), (1, 2, 1, 1));
    // ou_new joins the two changed users' list? No: it gets [Runbook], they get [Runbook, Ack].
    assert_eq!(s.requests, 3);
    insta::assert_snapshot!(all_formats(&p));
}

#[test]
fn whole_chat_change_resends_the_chats_users_after_it() {
    let mut desired = Desired::new();
    let mut applied = AppliedMap::new();
    desired.insert(Target::everyone("oc_war"), Arc::new(list(&["Status v2"])));
    applied.insert(Target::everyone("oc_war"), Arc::new(list(&["Status"])));
    for u in ["ou_a", "ou_b"] {
        desired.insert(user("oc_war", u), Arc::new(list(&["Runbook"])));
        applied.insert(user("oc_war", u), Arc::new(list(&["Runbook"])));
    }
    // Another chat's users are not touched.
    desired.insert(user("oc_ops", "ou_c"), Arc::new(list(&["Runbook"])));
    applied.insert(user("oc_ops", "ou_c"), Arc::new(list(&["Runbook"])));
    let p = make_plan(&desired, &applied);
    assert_eq!(p.summary.change, 1);
    assert_eq!(p.summary.resend, 2);
    assert_eq!(p.requests.len(), 2);
    assert!(
        p.requests[0].body.user_ids.is_none(),
        "whole-chat call first"
    );
    assert_eq!(
        p.requests[1].body.user_ids,
        Some(vec!["ou_a".into(), "ou_b".into()])
    );
    assert!(
        p.requests[1]
            .changes
            .iter()
            .all(|c| c.action == Action::Resend)
    );
    insta::assert_snapshot!(all_formats(&p));
}

#[test]
fn a_removal_clears_with_an_explicit_empty_list() {
    let desired = Desired::new();
    let mut applied = AppliedMap::new();
    applied.insert(user("oc_war", "ou_gone"), Arc::new(list(&["Runbook"])));
    let p = make_plan(&desired, &applied);
    assert_eq!(p.summary.remove, 1);
    let body = serde_json::to_string(&p.requests[0].body).expect("serialize");
    assert_eq!(
        body,
        r#"{"user_ids":["ou_gone"],"chat_id":"oc_war","buttons":{"buttons":[]}}"#
    );
    // Removing everything a config once declared is always a mass removal.
    assert!(p.mass_removal.is_some());
    insta::assert_snapshot!(all_formats(&p));
}

#[test]
fn a_thousand_users_in_one_group_take_fifty_calls_and_a_short_listing() {
    let mut desired = Desired::new();
    let shared = Arc::new(list(&["Runbook"]));
    for i in 0..1000 {
        desired.insert(user("oc_war", &format!("ou_{i:04}")), shared.clone());
    }
    let p = make_plan(&desired, &NO_STATE);
    assert_eq!(p.requests.len(), 50);
    assert!(
        p.requests
            .iter()
            .all(|r| r.body.user_ids.as_ref().is_some_and(|u| u.len() == 20))
    );
    let text = render::text(&p, render::Style { color: false });
    assert!(text.contains("and 990 more"), "{text}");
    let json = PlanDoc::new(&p).to_json();
    let first_request_only: serde_json::Value = serde_json::from_str(&json).expect("json");
    let mut short = first_request_only.clone();
    short["requests"] = serde_json::Value::Array(
        first_request_only["requests"].as_array().expect("requests")[..1].to_vec(),
    );
    insta::assert_snapshot!(format!(
        "--- text ---\n{text}\n--- markdown ---\n{}\n--- json (first of 50 requests) ---\n{}",
        render::markdown(&p),
        serde_json::to_string_pretty(&short).expect("json")
    ));
}

#[test]
fn mass_removal_is_flagged_above_a_quarter_of_at_least_ten() {
    let mut applied = AppliedMap::new();
    let mut desired = Desired::new();
    for i in 0..12 {
        applied.insert(
            user("oc_war", &format!("ou_{i:02}")),
            Arc::new(list(&["Runbook"])),
        );
        if i >= 3 {
            desired.insert(
                user("oc_war", &format!("ou_{i:02}")),
                Arc::new(list(&["Runbook"])),
            );
        }
    }
    // 3 of 12 is exactly 25%: allowed.
    assert!(make_plan(&desired, &applied).mass_removal.is_none());
    desired.remove(&user("oc_war", "ou_03"));
    let p = make_plan(&desired, &applied);
    let m = p.mass_removal.as_ref().expect("4 of 12 is a mass removal");
    assert_eq!((m.remove, m.applied), (4, 12));
    assert!(render::text(&p, render::Style { color: false }).contains("--allow-mass-removal"));
    // Below ten applied targets, removing most of them is not flagged.
    let small: AppliedMap = applied.into_iter().take(5).collect();
    assert!(
        make_plan(&Desired::new(), &small).mass_removal.is_some(),
        "an empty config still is"
    );
    let mut one_left = Desired::new();
    one_left.insert(user("oc_war", "ou_00"), Arc::new(list(&["Runbook"])));
    assert!(make_plan(&one_left, &small).mass_removal.is_none());
}

#[test]
fn markdown_never_exceeds_the_comment_limit() {
    let mut desired = Desired::new();
    for c in 0..400 {
        for u in 0..3 {
            desired.insert(
                user(&format!("oc_{c:04}"), &format!("ou_{c:04}_{u}")),
                Arc::new(list(&[&format!("B{u}")])),
            );
        }
    }
    let p = make_plan(&desired, &NO_STATE);
    let md = render::markdown_limited(&p, 20_000);
    assert!(md.chars().count() <= 20_000, "{}", md.chars().count());
    assert!(md.contains("more chats are not shown"), "the cut is said");
    assert!(md.starts_with(render::COMMENT_MARKER));
    assert!(render::markdown(&p).chars().count() <= render::GITHUB_COMMENT_LIMIT);
}

#[test]
fn the_same_inputs_give_the_same_plan_byte_for_byte() {
    let plan = || {
        let args = [
            "plan",
            "examples/teams",
            "--format",
            "json",
            "--state",
            "/nonexistent/state.json",
        ];
        util::run(&util::root(), &args)
    };
    let (a, b) = (plan(), plan());
    assert_eq!(a.status.code(), Some(0), "{}", util::stderr(&a));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn base_compares_two_config_directories_without_state_or_credentials() {
    let root = util::root();
    let out = util::run(
        &root,
        &[
            "plan",
            "examples/teams",
            "--base",
            "examples/quickstart",
            "--format",
            "markdown",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "changes present: {}",
        util::stderr(&out)
    );
    let md = util::stdout(&out);
    assert!(
        md.contains("> 3 targets will have their buttons REMOVED."),
        "{md}"
    );
    insta::assert_snapshot!(md);
    let same = util::run(
        &root,
        &[
            "plan",
            "examples/teams",
            "--base",
            "examples/teams",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(same.status.code(), Some(0));
    assert!(
        util::stdout(&same).starts_with("No changes"),
        "{}",
        util::stdout(&same)
    );
}

#[test]
fn an_invalid_config_plans_nothing_and_exits_1() {
    let dir = Dir::new().file("a.yaml", "version: 1\nchats: [\n");
    let out = util::run(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        util::stdout(&out)
    );
    assert!(
        util::stderr(&out).contains("a.yaml:2:"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn chat_filter_plans_only_the_named_chats() {
    let out = util::run(
        &util::root(),
        &[
            "plan",
            "examples/teams",
            "--state",
            "/nonexistent/state.json",
            "--chat",
            "oc_b7e2c91f0a3d4e5f6a7b8c9d0e1f2a3b",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let chats: Vec<&str> = v["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["body"]["chat_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(chats, ["oc_b7e2c91f0a3d4e5f6a7b8c9d0e1f2a3b"]);
}

#[test]
fn a_saved_plan_is_bound_to_its_state_and_refuses_edits() {
    let dir = Dir::new();
    let out_path = dir.path().join("plan.json");
    let out = util::run(
        &util::root(),
        &[
            "plan",
            "examples/quickstart",
            "--state",
            dir.path().join("state.json").to_str().expect("utf-8"),
            "--out",
            out_path.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    let doc = PlanDoc::load(&out_path).expect("a fresh saved plan loads");
    assert_eq!(doc.state.as_ref().map(|s| s.serial), Some(0));
    let text = std::fs::read_to_string(&out_path).expect("read");
    std::fs::write(&out_path, text.replacen("Runbook", "Runbo0k", 1)).expect("write");
    let err = PlanDoc::load(&out_path).expect_err("an edited plan is refused");
    assert!(err.to_string().contains("was altered"), "{err}");
}

// ---- property: applying the plan to a model of the API yields the desired state, minimally ----

type Model = BTreeMap<Target, ButtonList>;

/// What the API would show per target after the calls, starting from what was recorded: a
/// user leaving the config keeps the list it was sent (its chat's whole-chat list, or none);
/// a whole-chat target leaving it is cleared and forgotten.
fn apply_to_model(applied: &AppliedMap, p: &Plan) -> Model {
    let mut model: Model = applied
        .iter()
        .map(|(t, l)| (t.clone(), l.to_vec()))
        .collect();
    for r in &p.requests {
        let list = r.body.buttons.buttons.clone();
        for c in &r.changes {
            match (&r.body.user_ids, &c.target.audience) {
                (None, Audience::Everyone) => {}
                (Some(ids), Audience::User { id, .. }) => {
                    assert!(ids.contains(id), "a change rides in its own call")
                }
                _ => panic!("a change in the wrong kind of call"),
            }
            if c.action == Action::Remove && c.target.audience == Audience::Everyone {
                assert!(list.is_empty(), "a whole-chat removal sends an empty list");
                model.remove(c.target);
            } else {
                model.insert(c.target.clone(), list.clone());
            }
        }
    }
    model
}

/// What the config means for every target: its list if declared; a recorded user that is not
/// declared shows its chat's declared whole-chat list (none if there is none).
fn wanted(desired: &Desired, applied: &AppliedMap) -> Model {
    let mut out: Model = desired
        .iter()
        .map(|(t, l)| (t.clone(), l.to_vec()))
        .collect();
    for t in applied.keys() {
        if t.audience != Audience::Everyone && !desired.contains_key(t) {
            let whole = desired
                .get(&Target::everyone(t.chat_id.clone()))
                .map(|l| l.to_vec())
                .unwrap_or_default();
            out.insert(t.clone(), whole);
        }
    }
    out
}

/// The calls the rules ask for: the whole-chat call when its list changes; every user whose
/// list changes or who leaves the config; when a whole-chat call goes, every recorded user of
/// the chat; when users leave under one id type, the declared recorded users of the others.
/// Each group of (phase, id type, list) takes ceil(users / 20) calls.
fn minimum_calls(desired: &Desired, applied: &AppliedMap) -> usize {
    let chats: std::collections::BTreeSet<&str> = desired
        .keys()
        .chain(applied.keys())
        .map(|t| t.chat_id.as_str())
        .collect();
    let mut calls = 0;
    for chat in chats {
        let everyone = Target::everyone(chat);
        let whole_chat = desired.get(&everyone).map(|l| l.to_vec())
            != applied.get(&everyone).map(|l| l.to_vec());
        calls += usize::from(whole_chat);
        let follow_list = desired
            .get(&everyone)
            .map(|l| l.to_vec())
            .unwrap_or_default();
        let users: std::collections::BTreeSet<&Target> = desired
            .keys()
            .chain(applied.keys())
            .filter(|t| t.chat_id == chat && t.audience != Audience::Everyone)
            .collect();
        let leaving_types: std::collections::BTreeSet<UserIdType> = users
            .iter()
            .filter(|t| !desired.contains_key(**t))
            .filter_map(|t| match &t.audience {
                Audience::User { id_type, .. } => Some(*id_type),
                Audience::Everyone => None,
            })
            .collect();
        let mut groups: HashMap<(bool, UserIdType, ButtonList), usize> = HashMap::new();
        for t in users {
            let Audience::User { id_type, .. } = &t.audience else {
                continue;
            };
            let leaving = !desired.contains_key(t);
            let new = desired
                .get(t)
                .map(|l| l.to_vec())
                .unwrap_or_else(|| follow_list.clone());
            let old = applied.get(t).map(|l| l.to_vec());
            let recorded = old.is_some();
            let sent = leaving
                || old.as_ref() != Some(&new)
                || (whole_chat && recorded)
                || (recorded && leaving_types.iter().any(|x| x != id_type));
            if sent {
                *groups.entry((leaving, *id_type, new)).or_default() += 1;
            }
        }
        calls += groups.values().map(|n| n.div_ceil(20)).sum::<usize>();
    }
    calls
}

fn arb_list() -> impl Strategy<Value = ButtonList> {
    prop::sample::select(vec![vec![], vec!["A"], vec!["B"], vec!["A", "B"]]).prop_map(|t| list(&t))
}

fn arb_targets() -> impl Strategy<Value = BTreeMap<Target, ButtonList>> {
    let target =
        (0..3usize, prop::option::of((0..2usize, 0..45usize))).prop_map(|(c, u)| match u {
            None => Target::everyone(format!("oc_{c}")),
            Some((ty, u)) => Target::user(
                format!("oc_{c}"),
                if ty == 0 {
                    UserIdType::OpenId
                } else {
                    UserIdType::UnionId
                },
                format!("u_{u:02}"),
            ),
        });
    prop::collection::btree_map(target, arb_list(), 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn applying_the_plan_yields_the_desired_state_with_the_fewest_calls(desired in arb_targets(), applied in arb_targets()) {
        let desired: Desired = desired.into_iter().map(|(t, l)| (t, Arc::new(l))).collect();
        let applied: AppliedMap = applied.into_iter().map(|(t, l)| (t, Arc::new(l))).collect();
        let p = make_plan(&desired, &applied);
        let after = apply_to_model(&applied, &p);
        prop_assert_eq!(&after, &wanted(&desired, &applied));
        prop_assert!(p.requests.iter().all(|r| r.body.user_ids.as_ref().is_none_or(|u| (1..=20).contains(&u.len()))));
        prop_assert_eq!(p.requests.len(), minimum_calls(&desired, &applied));
        // A chat's whole-chat call precedes its per-user calls.
        for (i, r) in p.requests.iter().enumerate() {
            if r.body.user_ids.is_none() {
                prop_assert!(p.requests[..i].iter().all(|q| q.body.chat_id != r.body.chat_id));
            }
        }
    }
}

#[test]
fn a_usage_error_exits_1_never_the_changes_code_2() {
    let out = util::run(
        &util::root(),
        &[
            "plan",
            "examples/teams",
            "--detailed-exitcode",
            "--formt",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", util::stderr(&out));
    assert!(util::stderr(&out).contains("unexpected argument '--formt'"));
    let help = util::run(&util::root(), &["plan", "--help"]);
    assert_eq!(help.status.code(), Some(0));
}

#[test]
fn base_ignores_a_state_set_in_the_environment() {
    let out = std::process::Command::new(util::bin())
        .args([
            "plan",
            "examples/teams",
            "--base",
            "examples/teams",
            "--detailed-exitcode",
        ])
        .current_dir(util::root())
        .env("FEEDBUTTONS_STATE", "/nonexistent/state.json")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
}

/// A recorded target of any kind: applied, following, or with each kind of pending call.
fn arb_record() -> impl Strategy<Value = TargetRecord> {
    (
        prop::option::of(arb_list()),
        any::<bool>(),
        0..5usize,
        arb_list(),
        any::<bool>(),
        0..4u32,
        0..200u64,
    )
        .prop_map(|(shown, follows, kind, other, flag, tries, last)| {
            let other = Arc::new(other);
            let status = match kind {
                0 | 1 => None,
                2 => Some(PendingStatus::Uncertain { sent: other }),
                3 => Some(PendingStatus::Owed {
                    reason: OwedReason::WholeChat,
                }),
                _ => Some(PendingStatus::Waiting {
                    goal: other,
                    goal_follows: flag,
                    reason: "not in the chat".to_owned(),
                    unsure: !flag && tries % 2 == 0,
                    tries,
                    last_try: 1_000 + last,
                }),
            };
            let pending = status.map(|status| Pending { status, since: 900 });
            TargetRecord::new(shown.map(Arc::new), follows, pending).unwrap_or_else(|| {
                TargetRecord::new(Some(Arc::new(vec![])), false, None).expect("shown")
            })
        })
}

fn arb_many_chats() -> impl Strategy<Value = (Desired, BTreeMap<Target, TargetRecord>)> {
    let target = (0..12usize, prop::option::of(0..25usize)).prop_map(|(c, u)| match u {
        None => Target::everyone(format!("oc_{c:02}")),
        Some(u) => user(&format!("oc_{c:02}"), &format!("ou_{u:02}")),
    });
    (
        prop::collection::btree_map(target.clone(), arb_list().prop_map(Arc::new), 0..150),
        prop::collection::btree_map(target, arb_record(), 0..150),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Planned on several threads, each taking a run of whole chats, a plan is the one a single
    /// thread makes: the same calls in the same order, counts, records to settle, next retry,
    /// and each chat's tally told in chat order.
    #[test]
    fn a_plan_split_across_threads_is_the_plan_of_one(
        (desired, applied) in arb_many_chats(),
        threads in 2..5usize,
        backoff in any::<bool>(),
        only in prop::option::of(0..12usize),
    ) {
        let names = BTreeMap::from([("oc_03".to_owned(), "Three".to_owned())]);
        let options = |threads| PlanOptions {
            chats: only.map(|c| vec![format!("oc_{c:02}")]).unwrap_or_default(),
            rate_limit: 10,
            waiting_backoff: backoff.then_some(plan::WaitingBackoff { now: 1_050, first: 30, max: 600 }),
            resend_all: false,
            threads,
        };
        let run = |threads| {
            let mut told = Vec::new();
            let p = plan::plan_in(&desired, &names, &applied, &options(threads), plan::Scope::Every, &mut |c, t| told.push((c.to_owned(), t)));
            (p, told)
        };
        let (one, one_told) = run(1);
        let (split, split_told) = run(threads);
        prop_assert_eq!(&split, &one);
        prop_assert_eq!(split_told, one_told);
        prop_assert_eq!(PlanDoc::new(&split).to_json(), PlanDoc::new(&one).to_json());
    }
}

/// A large state and config (hundreds of thousands of targets) of every shape a split could
/// trip on: one huge chat, thousands of tiny ones, chat ids that are prefixes of each other or
/// sort oddly (upper case, punctuation, non-ASCII), chats only the config or only the state
/// has, and records of every kind (applied, changed, following, uncertain, owed, waiting due or
/// not, unsure).
fn big_plan_inputs(
    desired_share: u64,
    applied_share: u64,
) -> (Desired, BTreeMap<Target, TargetRecord>) {
    let lists: Vec<Arc<ButtonList>> = [vec![], vec!["A"], vec!["B"], vec!["A", "B"], vec!["C"]]
        .iter()
        .map(|t| Arc::new(list(t)))
        .collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut chats: Vec<(String, usize)> = vec![("oc_huge".to_owned(), 130_000)];
    for c in 0..4_000 {
        chats.push((format!("oc_{c}"), c % 37));
    }
    for (odd, users) in [
        ("oc_", 5),
        ("OC_UPPER", 3),
        ("oc_huge ", 2),
        ("oc_huge0", 40_000),
        ("oc_hugé", 7),
        ("oc_~", 1),
        ("a", 25_000),
        ("oc_1!", 4),
        ("zz_last", 21),
    ] {
        chats.push((odd.to_owned(), users));
    }
    let mut desired = Desired::new();
    let mut applied = BTreeMap::new();
    for (chat, users) in &chats {
        let targets =
            std::iter::once(Target::everyone(chat.as_str())).chain((0..*users).map(|u| {
                let ty = if u % 11 == 0 {
                    UserIdType::UnionId
                } else {
                    UserIdType::OpenId
                };
                Target::user(chat.as_str(), ty, format!("ou_{u}"))
            }));
        for t in targets {
            let r = next();
            let pick = |n: u64| lists[(n % lists.len() as u64) as usize].clone();
            if r % 100 < desired_share {
                desired.insert(t.clone(), pick(r >> 8));
            }
            if (r >> 16) % 100 >= applied_share {
                continue;
            }
            let shown = Some(pick(r >> 24));
            let since = 900;
            let pending = match (r >> 32) % 10 {
                0 => Some(PendingStatus::Uncertain {
                    sent: pick(r >> 36),
                }),
                1 => Some(PendingStatus::Owed {
                    reason: OwedReason::WholeChat,
                }),
                2 => Some(PendingStatus::Owed {
                    reason: OwedReason::IdTypeMove,
                }),
                3 | 4 => Some(PendingStatus::Waiting {
                    goal: pick(r >> 36),
                    goal_follows: (r >> 40) % 3 == 0,
                    reason: "not in the chat".to_owned(),
                    unsure: (r >> 42) % 4 == 0,
                    tries: ((r >> 44) % 5) as u32,
                    last_try: 800 + (r >> 48) % 400,
                }),
                _ => None,
            };
            let shown = if (r >> 52) % 13 == 0 && pending.is_some() {
                None
            } else {
                shown
            };
            let follows = (r >> 56) % 9 == 0;
            let pending = pending.map(|status| Pending { status, since });
            if let Some(rec) = TargetRecord::new(shown, follows, pending) {
                applied.insert(t, rec);
            }
        }
    }
    (desired, applied)
}

/// The plan of a large config against a large state, made as `feedbuttons plan` and the
/// daemon make it (split by size, `threads: 0`) and split many ways, is byte for byte the plan
/// a single thread makes: calls, counts, records to settle, next retry, mass removal, each
/// chat's tally.
#[test]
fn a_large_plan_split_by_size_is_the_plan_of_one_thread() {
    let names = BTreeMap::from([
        ("oc_huge".to_owned(), "Huge <team> & co".to_owned()),
        ("oc_7".to_owned(), "Seven".to_owned()),
        ("a".to_owned(), "A".to_owned()),
    ]);
    // Mostly both; a config much smaller than the state; a state much smaller than the config;
    // an empty config (mass removal).
    for (desired_share, applied_share) in [(70, 70), (5, 90), (90, 3), (0, 80)] {
        let (desired, applied) = big_plan_inputs(desired_share, applied_share);
        assert!(
            desired.len() + applied.len() >= 200_000,
            "large enough to be split by size"
        );
        // Every chat, with the daemon's backoff; some chats (odd ids among them), without.
        let backoff = plan::WaitingBackoff {
            now: 1_100,
            first: 30,
            max: 600,
        };
        let filtered = vec!["oc_huge ".to_owned(), "a".to_owned(), "oc_1".to_owned()];
        for (chats, backoff, thread_counts) in [
            (vec![], Some(backoff), &[0, 3, 64][..]),
            (filtered, None, &[0, 5][..]),
        ] {
            let options = |threads| PlanOptions {
                chats: chats.clone(),
                rate_limit: 10,
                waiting_backoff: backoff,
                resend_all: false,
                threads,
            };
            let run = |threads| {
                let mut told = Vec::new();
                let p = plan::plan_in(
                    &desired,
                    &names,
                    &applied,
                    &options(threads),
                    plan::Scope::Every,
                    &mut |c, t| told.push((c.to_owned(), t)),
                );
                (p, told)
            };
            let (one, one_told) = run(1);
            let what = format!("{desired_share}/{applied_share} {chats:?} {backoff:?}");
            if chats.is_empty() && desired_share == 0 {
                assert!(one.mass_removal.is_some(), "{what}");
            }
            for &threads in thread_counts {
                let (split, split_told) = run(threads);
                assert!(split == one, "{what}: {threads} threads");
                assert!(split_told == one_told, "{what}: {threads} threads' tallies");
            }
        }
    }
}
