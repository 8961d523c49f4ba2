//! Exact records, scenario by scenario: the cases where the state and Feishu used to disagree
//! while `plan` said "No changes", each run against the emulator until it shows the config.
//! Also the robustness fixes found with them: secrets quoted back by the API, odd token
//! answers, endless answers, `plan --out` over the state, `--chat` with an unknown chat, and a
//! state written by the previous release.

use std::path::Path;
use std::time::Duration;

use feedbuttons::emulator::{BUILTIN_APP_ID, BUILTIN_APP_SECRET, RunningEmulator};
use feedbuttons::feishu::client::{Client, ClientConfig, RetryPolicy, Secret};
use feedbuttons::target::Target;
use serde_json::{Value, json};

use crate::apply::{
    Admin, Background, Config, apply, assert_converged, assert_recorded_present, config_dir, fast,
    feedbuttons, followers, load_state, recorded, run, with_fixtures,
};
use crate::util::{self, Dir};

/// `n` users `ou_{tag}00`, `ou_{tag}01`...
fn users(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ou_{tag}{i:02}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Fixtures with one chat whose members are `members`.
fn one_chat(chat: &str, members: &[String]) -> String {
    format!(
        "chats:\n  - chat_id: {chat}\n    members: [{}]\n",
        members.join(", ")
    )
}

async fn set_members(admin: &Admin, chat: &str, members: &[String]) {
    admin
        .send(
            reqwest::Method::PUT,
            &format!("/_emulator/chats/{chat}/members"),
            json!({ "members": members }),
        )
        .await;
}

/// The plan's text for the config in `dir`.
async fn plan_text(emu: &RunningEmulator, dir: &Path) -> String {
    run(feedbuttons(emu, dir, &["plan", "."])).await.stdout
}

/// The texts of the buttons `user` has of their own in `chat` (`None`: no list of their own).
async fn own_list(admin: &Admin, chat: &str, user: &str) -> Option<Vec<String>> {
    let v = admin
        .get(&format!("/_emulator/chats/{chat}/users/{user}"))
        .await;
    let list = if v["source"] == "user" {
        &v["buttons"]
    } else if !v["kept"].is_null() {
        &v["kept"]
    } else {
        return None;
    };
    Some(
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
            .collect(),
    )
}

async fn whole_chat(admin: &Admin, chat: &str) -> Value {
    admin.get(&format!("/_emulator/chats/{chat}")).await["chat_buttons"].clone()
}

// ---------------------------------------------------------------- 1. whole-chat changes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_not_in_a_thirty_user_chat_costs_one_call_next_time_not_the_whole_chat() {
    let everybody = users("big", 30);
    let emu = with_fixtures(&one_chat("oc_big", &everybody[..29])).await;
    let admin = Admin::of(&emu);
    let config = Config::default()
        .chat("oc_big")
        .everyone(&["status"])
        .users(&["runbook", "ack"], &refs(&everybody));
    let dir = config_dir(&config);

    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(4)
        .assert_stderr("ou_big29: The user is not in the chat");
    let first = admin.calls().await.len();
    assert_eq!(
        first, 3,
        "the whole-chat call and two calls of 20 and 10 users"
    );
    // The whole-chat list is recorded as soon as it was accepted.
    assert!(
        recorded(dir.path()).contains_key(&Target::everyone("oc_big")),
        "{:?}",
        load_state(dir.path())
    );

    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(4);
    let log = admin.calls().await;
    assert_eq!(log.len() - first, 1, "only the refused user's call again");
    assert_eq!(log[first]["body"]["user_ids"], json!(["ou_big29"]));

    set_members(&admin, "oc_big", &everybody).await;
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(admin.calls().await.len() - first, 2);
    assert!(plan_text(&emu, dir.path()).await.contains("No changes"));
    assert_converged(&admin, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_chat_change_beside_a_refused_user_can_be_reverted_and_dropped() {
    let emu = with_fixtures(&one_chat("oc_war", &users("w", 2))).await;
    let admin = Admin::of(&emu);
    let before = Config::default()
        .chat("oc_war")
        .everyone(&["status"])
        .users(&["runbook"], &["ou_w00", "ou_w01"]);
    let dir = config_dir(&before);
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    // A new whole-chat list, and a user who is not in the chat.
    Config::default()
        .chat("oc_war")
        .everyone(&["dash"])
        .users(&["runbook"], &["ou_w00", "ou_w01", "ou_gone"])
        .write(dir.path());
    apply(&emu, dir.path(), &[]).await.assert_code(4);
    assert_eq!(
        whole_chat(&admin, "oc_war").await[0]["text"]["text"],
        "Dashboards"
    );

    // Reverted: the plan sees the whole-chat list to put back.
    before.write(dir.path());
    let plan = plan_text(&emu, dir.path()).await;
    assert!(plan.contains("change, everyone"), "{plan}");
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(
        whole_chat(&admin, "oc_war").await[0]["text"]["text"],
        "Status page"
    );
    assert_converged(&admin, dir.path()).await;

    // Dropped: the whole-chat list is cleared.
    Config::default()
        .chat("oc_war")
        .users(&["runbook"], &["ou_w00", "ou_w01"])
        .write(dir.path());
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(whole_chat(&admin, "oc_war").await, json!([]));
    assert_converged(&admin, dir.path()).await;
    assert!(plan_text(&emu, dir.path()).await.contains("No changes"));
}

// ---------------------------------------------------------------- 3. answers that never came

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_with_a_call_in_flight_leaves_it_uncertain_and_a_revert_still_sends_it() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let before = Config::default()
        .chat("oc_k")
        .users(&["runbook"], &["ou_k1"]);
    let dir = config_dir(&before);
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    Config::default()
        .chat("oc_k")
        .users(&["dash"], &["ou_k1"])
        .write(dir.path());
    admin.faults(json!({"latency_ms": 1500})).await;
    let mut run = Background::spawn({
        let mut c = crate::apply::apply_cmd(&emu, dir.path(), &[]);
        c.env("FEEDBUTTONS_LOG", "feedbuttons=trace");
        c
    });
    // The call is on its way once the client logged that it sends it.
    let started = std::time::Instant::now();
    while !run.read("stderr").contains("chat_button request") {
        assert!(started.elapsed() < Duration::from_secs(20), "no call sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.sigkill();
    let _ = run.wait().await;
    admin.faults(json!({})).await;
    // The killed call may still land: give it its latency.
    tokio::time::sleep(Duration::from_millis(1800)).await;

    // Reverted before anyone looked: the state knows the call may have applied.
    before.write(dir.path());
    let plan = plan_text(&emu, dir.path()).await;
    assert!(plan.contains("uncertain"), "{plan}");
    assert!(plan.contains("ou_k1"), "{plan}");
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(
        own_list(&admin, "oc_k", "ou_k1").await,
        Some(vec!["Runbook".to_owned()])
    );
    assert_converged(&admin, dir.path()).await;
    assert!(plan_text(&emu, dir.path()).await.contains("No changes"));
}

/// A client that tries each call `attempts` times, quickly, with `timeout` per attempt.
fn client(emu: &RunningEmulator, attempts: u32, timeout: Duration) -> Client {
    Client::new(ClientConfig {
        rate_limit: 0,
        retry: RetryPolicy {
            max_attempts: attempts,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        timeout,
        ..ClientConfig::new(
            emu.base_url(),
            BUILTIN_APP_ID,
            Secret::new(BUILTIN_APP_SECRET.to_owned()),
        )
    })
    .expect("a client")
}

/// Plans the config in `dir` against the state beside it and applies it with `client`.
async fn apply_with(client: &Client, dir: &Path) -> feedbuttons::apply::ApplyReport {
    let desired = feedbuttons::config::load_dir(dir)
        .expect("load")
        .desired
        .expect("valid");
    let store = feedbuttons::state::open(&feedbuttons::state::default_path(dir)).expect("open");
    let mut lock = store.writer("test").expect("lock");
    let mut p = feedbuttons::plan::plan(
        &desired.targets,
        &desired.chat_names,
        &lock.state().targets,
        &feedbuttons::plan::PlanOptions::default(),
    );
    let settle = std::mem::take(&mut p.settle);
    let doc = feedbuttons::plan::json::PlanDoc::new(&p);
    drop(p);
    lock.record(&settle).expect("settle");
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let mut quiet = feedbuttons::apply::Quiet;
    feedbuttons::apply::apply(&doc, client, lock.as_mut(), 4, &mut quiet, stop).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_after_the_call_applied_or_timed_out_are_uncertain_until_sent_again() {
    for (name, faults, timeout) in [
        (
            "connection dropped after the call applied",
            json!({"drops_next": 2, "drop_after_processing": true}),
            Duration::from_secs(5),
        ),
        (
            "timed out",
            json!({"latency_ms": 400}),
            Duration::from_millis(100),
        ),
    ] {
        let emu = fast().await;
        let admin = Admin::of(&emu);
        let before = Config::default()
            .chat("oc_lost")
            .users(&["runbook"], &["ou_l1"]);
        let dir = config_dir(&before);
        apply(&emu, dir.path(), &[]).await.assert_code(0);
        Config::default()
            .chat("oc_lost")
            .users(&["dash"], &["ou_l1"])
            .write(dir.path());
        let c = client(&emu, 2, timeout);
        c.check_credentials().await.expect("credentials");
        admin.faults(faults).await;
        let report = apply_with(&c, dir.path()).await;
        assert_eq!(report.uncertain.len(), 1, "{name}: {report:?}");
        assert_eq!(feedbuttons::apply::exit_code(&report), 1, "{name}");
        admin.faults(json!({})).await;
        tokio::time::sleep(Duration::from_millis(500)).await;

        before.write(dir.path());
        let plan = plan_text(&emu, dir.path()).await;
        assert!(
            plan.contains("re-send") && plan.contains("uncertain"),
            "{name}: {plan}"
        );
        apply(&emu, dir.path(), &[]).await.assert_code(0);
        assert_converged(&admin, dir.path()).await;
        assert_eq!(recorded(dir.path()).len(), 1, "{name}");
        assert!(
            plan_text(&emu, dir.path()).await.contains("No changes"),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------- 2. id-type moves

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clear_during_an_id_type_move_never_wipes_the_new_list() {
    let emu = with_fixtures(
        "chats:\n  - chat_id: oc_mv\n    members:\n      - {open_id: ou_mv1, union_id: on_mv1}\n      - {open_id: ou_mv2, union_id: on_mv2}\n",
    )
    .await;
    let admin = Admin::of(&emu);
    let dir = Dir::new().file(
        "buttons.yaml",
        "version: 1\nchats:\n  - chat_id: oc_mv\n    assign:\n      - users: [ou_mv1, ou_mv2]\n        buttons: [{text: Old, action: webhook}]\n",
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    // The chat moves to union ids; the old open ids' clear goes first and fails (no answer
    // from a 5xx), the new lists go after it.
    std::fs::write(
        dir.path().join("buttons.yaml"),
        "version: 1\nchats:\n  - chat_id: oc_mv\n    user_id_type: union_id\n    assign:\n      - users: [on_mv1, on_mv2]\n        buttons: [{text: New, action: webhook}]\n",
    )
    .expect("write");
    let c = client(&emu, 1, Duration::from_secs(5));
    c.check_credentials().await.expect("credentials");
    admin.faults(json!({"server_errors_next": 1})).await;
    let report = apply_with(&c, dir.path()).await;
    assert_eq!(report.uncertain.len(), 2, "{report:?}");
    assert_eq!(
        own_list(&admin, "oc_mv", "on_mv1").await,
        Some(vec!["New".to_owned()])
    );

    // The next apply sends the clear again, and the new lists after it: the clear reaches the
    // same people, so the lists it wipes are put back in the same run.
    let plan = plan_text(&emu, dir.path()).await;
    assert!(
        plan.contains("re-send after a removal under another id type"),
        "{plan}"
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    for id in ["on_mv1", "on_mv2"] {
        assert_eq!(
            own_list(&admin, "oc_mv", id).await,
            Some(vec!["New".to_owned()])
        );
    }
    assert!(plan_text(&emu, dir.path()).await.contains("No changes"));
    assert!(
        load_state(dir.path())
            .targets
            .values()
            .all(|r| r.is_settled())
    );
}

// ---------------------------------------------------------------- 4. followers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_sees_what_the_rest_of_the_chat_sees_and_keeps_following_it() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(
        &Config::default()
            .chat("oc_f")
            .everyone(&["status"])
            .users(&["runbook"], &["ou_stay", "ou_leave"]),
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    let without = |everyone: Option<&[&str]>| {
        let c = Config::default().chat("oc_f");
        let c = match everyone {
            Some(list) => c.everyone(list),
            None => c,
        };
        c.users(&["runbook"], &["ou_stay"])
    };
    without(Some(&["status"])).write(dir.path());
    let plan = plan_text(&emu, dir.path()).await;
    assert!(
        plan.contains("REMOVE (they get the whole-chat buttons and follow them), 1 user: ou_leave"),
        "{plan}"
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(
        own_list(&admin, "oc_f", "ou_leave").await,
        Some(vec!["Status page".to_owned()])
    );
    assert_eq!(followers(dir.path()).len(), 1);
    assert_converged(&admin, dir.path()).await;

    // The whole-chat buttons change: the follower gets them too.
    without(Some(&["dash"])).write(dir.path());
    let plan = plan_text(&emu, dir.path()).await;
    assert!(
        plan.contains("follow the whole-chat buttons, 1 user: ou_leave"),
        "{plan}"
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(
        own_list(&admin, "oc_f", "ou_leave").await,
        Some(vec!["Dashboards".to_owned()])
    );
    assert_converged(&admin, dir.path()).await;

    // The whole-chat buttons go: the follower's are cleared too.
    without(None).write(dir.path());
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(own_list(&admin, "oc_f", "ou_leave").await, Some(vec![]));
    assert_eq!(whole_chat(&admin, "oc_f").await, json!([]));
    assert_converged(&admin, dir.path()).await;
    assert!(plan_text(&emu, dir.path()).await.contains("No changes"));
}

// ---------------------------------------------------------------- 5. removals that wait

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_refused_for_users_who_left_wait_and_never_trip_the_mass_removal_guard() {
    let team = users("t", 12);
    let emu = with_fixtures(&one_chat("oc_team", &team)).await;
    let admin = Admin::of(&emu);
    let dir = config_dir(
        &Config::default()
            .chat("oc_team")
            .users(&["runbook"], &refs(&team)),
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    // Four people leave the chat, and the config drops them: a third of the targets.
    set_members(&admin, "oc_team", &team[..8]).await;
    Config::default()
        .chat("oc_team")
        .users(&["runbook"], &refs(&team[..8]))
        .write(dir.path());
    apply(&emu, dir.path(), &[])
        .await
        .assert_code(1)
        .assert_stderr("mass removal refused: 4 of 12");
    apply(&emu, dir.path(), &["--allow-mass-removal"])
        .await
        .assert_code(4)
        .assert_stderr("Waiting (4 targets");

    // An unrelated addition is not refused: the four wait, they are not removed again.
    let mut more = team[..8].to_vec();
    more.push("ou_new".to_owned());
    let mut members = more.clone();
    members.push("ou_other".to_owned());
    set_members(&admin, "oc_team", &members).await;
    Config::default()
        .chat("oc_team")
        .users(&["runbook"], &refs(&more))
        .write(dir.path());
    let plan = plan_text(&emu, dir.path()).await;
    assert!(!plan.contains("Mass removal"), "{plan}");
    assert!(
        plan.contains("1 to add, 0 to change, 0 to remove"),
        "{plan}"
    );
    assert!(
        plan.contains("4 waiting for their users to join the chat"),
        "{plan}"
    );
    apply(&emu, dir.path(), &[]).await.assert_code(4);
    let listing = run(feedbuttons(&emu, dir.path(), &["state", "list"]))
        .await
        .stdout;
    assert!(
        listing.contains("0 uncertain, 0 owed, 4 waiting"),
        "{listing}"
    );

    // They come back: the removal lands, and nothing waits any more.
    let mut everybody = team.clone();
    everybody.push("ou_new".to_owned());
    set_members(&admin, "oc_team", &everybody).await;
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    for gone in &team[8..] {
        assert_eq!(own_list(&admin, "oc_team", gone).await, Some(vec![]));
    }
    assert_converged(&admin, dir.path()).await;
    assert_recorded_present(&admin, dir.path()).await;
    assert!(plan_text(&emu, dir.path()).await.contains("No changes"));
}

// ---------------------------------------------------------------- robustness

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_quoted_back_by_the_api_are_never_printed() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(
        &Config::default()
            .chat("oc_s")
            .users(&["runbook"], &["ou_s1"]),
    );
    let token = admin.token((BUILTIN_APP_ID, BUILTIN_APP_SECRET)).await;
    admin
        .faults(json!({"echo_credentials_next": 5, "token_endpoint": true}))
        .await;
    let out = run({
        let mut c = crate::apply::apply_cmd(&emu, dir.path(), &[]);
        c.env("FEEDBUTTONS_LOG", "trace");
        c
    })
    .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("echoed by the emulator"), "{out:?}");
    for secret in [BUILTIN_APP_SECRET, token.as_str()] {
        assert!(
            !out.stderr.contains(secret) && !out.stdout.contains(secret),
            "{secret} shown:\n{out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_token_answers_neither_leak_the_token_nor_panic() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(
        &Config::default()
            .chat("oc_t")
            .users(&["runbook"], &["ou_t1"]),
    );
    admin.faults(json!({"token_expire": "soon"})).await;
    let token = admin.token((BUILTIN_APP_ID, BUILTIN_APP_SECRET)).await;
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(1)
        .assert_stderr("expire as a whole number of seconds");
    assert!(!out.stderr.contains(&token), "{out:?}");

    // The longest number JSON can carry: capped to a token's two hours, no overflow.
    admin
        .faults(json!({"token_expire": 18_446_744_073_709_551_615u64}))
        .await;
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_converged(&admin, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_answer_is_not_read_into_memory() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(
        &Config::default()
            .chat("oc_big")
            .users(&["runbook"], &["ou_b1"]),
    );
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    Config::default()
        .chat("oc_big")
        .users(&["dash"], &["ou_b1"])
        .write(dir.path());
    admin
        .faults(json!({"answer_padding_bytes": 1u64 << 30}))
        .await;
    // GNU time reports the run's peak resident memory, in KiB, on its last line.
    let mut c = std::process::Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg(util::bin());
    let cmd = crate::apply::apply_cmd(&emu, dir.path(), &[]);
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("FEEDBUTTONS_LOG", "feedbuttons=debug")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null());
    let run = Background::spawn(c);
    // A few endless answers, then the API behaves again and the retry applies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    admin.faults(json!({})).await;
    let out = run.wait().await;
    let peak_kib: u64 = out
        .stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {out:?}"));
    assert!(peak_kib < 100 * 1024, "peak {peak_kib} KiB: {out:?}");
    assert!(out.stderr.contains("larger than 256 KiB"), "{out:?}");
    out.assert_code(0);
    assert_converged(&admin, dir.path()).await;
}

#[test]
fn plan_out_never_overwrites_the_state_or_the_config() {
    let dir = Dir::new().file(
        "buttons.yaml",
        "version: 1\nchats:\n  - chat_id: oc_o\n    assign:\n      - users: [ou_o1]\n        buttons: [{text: X, action: webhook}]\n",
    );
    std::fs::create_dir_all(dir.path().join(".feedbuttons")).expect("mkdir");
    for out in [
        ".feedbuttons/state.json",
        ".feedbuttons/state.journal",
        ".feedbuttons/state.lock",
        "buttons.yaml",
        "saved-plan.yaml",
    ] {
        let before = std::fs::read(dir.path().join(out)).ok();
        let o = util::run(dir.path(), &["plan", ".", "--out", out]);
        assert_eq!(o.status.code(), Some(1), "{out}: {}", util::stderr(&o));
        assert!(
            util::stderr(&o).contains("save the plan somewhere else"),
            "{out}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(out)).ok(),
            before,
            "{out} untouched"
        );
    }
    let o = util::run(dir.path(), &["plan", ".", "--out", "plan.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", util::stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_neither_declared_nor_recorded_is_an_error_not_no_changes() {
    let emu = fast().await;
    let dir = config_dir(
        &Config::default()
            .chat("oc_real")
            .users(&["runbook"], &["ou_r1"]),
    );
    for args in [
        &["apply", ".", "--yes", "--chat", "oc_typo"][..],
        &["plan", ".", "--chat", "oc_typo"][..],
    ] {
        let out = run(feedbuttons(&emu, dir.path(), args)).await;
        out.assert_code(1)
            .assert_stderr("--chat oc_typo: neither declared in the config nor recorded");
    }
    assert!(Admin::of(&emu).calls().await.is_empty());
}

// ---------------------------------------------------------------- the previous release's state

#[test]
fn a_state_written_by_the_previous_release_loads_lists_and_plans_the_same() {
    let fixture = util::root().join("tests/fixtures/state-v1");
    let dir = Dir::new();
    crate::ci::copy_dir(&fixture.join("state"), &dir.path().join("state"));
    let state = dir.path().join("state/state.json");
    let state = state.to_str().expect("utf-8");
    let config = fixture.join("config");
    let config = config.to_str().expect("utf-8");

    let listing = util::run(dir.path(), &["state", "list", "--state", state]);
    let listed = std::fs::read_to_string(fixture.join("state-list.v1.txt")).expect("read");
    let got = util::stdout(&listing).replace(state, "st/state.json");
    assert_eq!(got, listed, "{}", util::stderr(&listing));

    let plan = util::run(
        dir.path(),
        &["plan", config, "--state", state, "--format", "json"],
    );
    let got: Value = serde_json::from_slice(&plan.stdout).expect("json");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("plan.v1.json")).expect("read"))
            .expect("json");
    assert_eq!(got["requests"], want["requests"]);
    for n in ["add", "change", "remove", "unchanged", "requests"] {
        assert_eq!(got["summary"][n], want["summary"][n], "{n}");
    }

    // A change through this release writes the new format; what was there stays.
    let rm = util::run(dir.path(), &["state", "rm", "oc_more05", "--state", state]);
    assert_eq!(rm.status.code(), Some(0), "{}", util::stderr(&rm));
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).expect("read"))
            .expect("json");
    assert_eq!(snapshot["format_version"], 2);
    let after = util::run(dir.path(), &["state", "list", "--state", state]);
    let after = util::stdout(&after);
    let targets = |listing: &str| listing.lines().filter(|l| l.starts_with("oc_")).count();
    assert_eq!(targets(&after), targets(&listed) - 2, "{after}");
    assert!(!after.contains("oc_more05"), "{after}");
}
