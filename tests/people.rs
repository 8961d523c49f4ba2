//! People, not ids (issue 15): a config written with emails, mobiles, a chat's members and a
//! department, resolved against the emulator into `feedbuttons.lock`; validate and plan from the
//! lock alone; a membership change seen by `resolve --check`, then in the plan; an unknown email
//! reported at its file:line; `watch --resolve-every` applying a membership change.

use std::path::Path;
use std::process::Output;

use reqwest::Method;
use serde_json::json;

use crate::apply::{Admin, feedbuttons, with_fixtures};
use crate::util::{self, Dir, stderr, stdout};
use crate::watch::{Daemon, get_json};

const TENANT: &str = r#"
chats:
  - chat_id: oc_oncall
    members: [ou_alice, ou_bob]
  - chat_id: oc_war
    members: everyone
  - chat_id: oc_sre
    members: everyone
departments:
  - {department_id: sre, open_department_id: od-sre, name: SRE}
people:
  - {open_id: ou_alice, union_id: on_alice, name: Alice, email: alice@example.com, departments: [od-sre]}
  - {open_id: ou_bob, name: Bob, email: bob@example.com, mobile: "+8613800000002"}
  - {open_id: ou_carol, union_id: on_carol, name: Carol, email: carol@example.com, departments: [od-sre]}
  - {open_id: ou_dan, name: Dan, mobile: "+14155550100"}
  - {open_id: ou_erin, name: Erin, email: erin@example.com}
"#;

const CONFIG: &str = r#"version: 1
buttons:
  runbook: {text: Runbook, url: "https://wiki.example.com/runbook"}
user_sets:
  oncall:
    - members_of: oc_oncall
  sre:
    - department: od-sre
chats:
  - chat_id: oc_war
    name: War room
    assign:
      - user_sets: [oncall]
        buttons: [runbook]
      - users: [carol@example.com, "+14155550100"]
        buttons: []
  - chat_id: oc_sre
    user_id_type: union_id
    assign:
      - user_sets: [sre]
        buttons: [runbook]
"#;

fn run(emu: &feedbuttons::emulator::RunningEmulator, dir: &Path, args: &[&str]) -> Output {
    feedbuttons(emu, dir, args)
        .output()
        .expect("run feedbuttons")
}

fn lock(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("feedbuttons.lock")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_writes_a_reviewable_lock_and_plans_read_it_without_credentials() {
    let emu = with_fixtures(TENANT).await;
    let dir = Dir::new().file("people.yaml", CONFIG);

    let out = run(&emu, dir.path(), &["resolve", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = lock(dir.path());
    // Sorted, one person or one member a line, the mobile quoted, names for listed people.
    for line in [
        "version: 1\n",
        "  \"+14155550100\": {open_id: ou_dan}\n",
        "  carol@example.com: {open_id: ou_carol}\n",
        "  oc_oncall:\n    open_id:\n      - ou_alice\n      - ou_bob\n",
        "  od-sre:\n    union_id:\n      - on_alice\n      - on_carol\n",
        "  ou_bob: \"Bob\"\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    // batch_get_id: one call for the email and the mobile together.
    assert!(stderr(&out).contains("1 batch_get_id"), "{}", stderr(&out));

    // The same directory gives the same bytes.
    let again = run(&emu, dir.path(), &["resolve", "."]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert_eq!(lock(dir.path()), text);

    // validate and plan with no credentials at all: the lock is all they read.
    let valid = util::run(dir.path(), &["validate", "."]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));
    let plan = util::run(dir.path(), &["plan", "."]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let shown = stdout(&plan);
    assert!(
        shown.contains("2 users: Alice (ou_alice), Bob (ou_bob)")
            && shown.contains("carol@example.com (ou_carol), +14155550100 (ou_dan)")
            && shown.contains("alice@example.com (on_alice), carol@example.com (on_carol)"),
        "{shown}"
    );
    let markdown = util::run(dir.path(), &["plan", ".", "--format", "markdown"]);
    assert!(stdout(&markdown).contains("Alice (ou_alice)"));
    let json = util::run(dir.path(), &["plan", ".", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("plan JSON");
    assert_eq!(doc["people"]["ou_dan"], "+14155550100");
    // Byte for byte the same plan twice.
    assert_eq!(stdout(&util::run(dir.path(), &["plan", "."])), shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_shows_as_a_lock_diff_then_in_the_plan() {
    let emu = with_fixtures(TENANT).await;
    let dir = Dir::new().file("people.yaml", CONFIG);
    assert_eq!(
        run(&emu, dir.path(), &["resolve", "."]).status.code(),
        Some(0)
    );
    let applied = run(&emu, dir.path(), &["apply", ".", "--yes"]);
    assert_eq!(applied.status.code(), Some(0), "{}", stderr(&applied));
    // state list names the people beside their ids, from the config's lock.
    let listed = stdout(&util::run(dir.path(), &["state", "list", "."]));
    assert!(listed.contains("open_id:ou_dan (+14155550100)"), "{listed}");
    let listed = util::run(dir.path(), &["state", "list", ".", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("JSON");
    assert_eq!(doc["people"]["ou_carol"], "carol@example.com");

    // Erin joins the on-call chat; Bob leaves it.
    let admin = Admin::of(&emu);
    admin
        .send(
            Method::POST,
            "/_emulator/chats/oc_oncall/members",
            json!({"members": ["ou_erin"]}),
        )
        .await;
    let left = reqwest::Client::new()
        .delete(emu.url("/_emulator/chats/oc_oncall/members/ou_bob"))
        .send()
        .await
        .expect("remove Bob");
    assert!(left.status().is_success());

    // CI: the committed lock is stale, and says who came and went; nothing is written.
    let before = lock(dir.path());
    let check = run(&emu, dir.path(), &["resolve", ".", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert_eq!(
        stdout(&check),
        "~ members_of: oc_oncall (open_id): +ou_erin (Erin), -ou_bob (Bob)\n"
    );
    assert!(stderr(&check).contains("feedbuttons.lock is stale"));
    assert_eq!(lock(dir.path()), before);

    // Until the lock is resolved again, the plan has nothing to do.
    let plan = util::run(dir.path(), &["plan", "."]);
    assert!(stdout(&plan).starts_with("No changes"), "{}", stdout(&plan));
    // The base branch of the pull request that commits the new lock.
    let base = Dir::new()
        .file("people.yaml", CONFIG)
        .file("feedbuttons.lock", &before);

    let resolved = run(&emu, dir.path(), &["resolve", "."]);
    assert_eq!(resolved.status.code(), Some(0), "{}", stderr(&resolved));
    let after = lock(dir.path());
    assert!(after.contains("      - ou_erin\n") && !after.contains("      - ou_bob\n"));
    assert_eq!(
        run(&emu, dir.path(), &["resolve", ".", "--check"])
            .status
            .code(),
        Some(0)
    );

    let plan = util::run(dir.path(), &["plan", "."]);
    let shown = stdout(&plan);
    assert!(shown.contains("+ add, 1 user: Erin (ou_erin)"), "{shown}");
    assert!(
        shown.contains("REMOVE (buttons cleared), 1 user: ou_bob"),
        "{shown}"
    );
    // The pull request's plan: each side's lock names its own people, Bob by the base's.
    let base_dir = base.path().to_str().expect("a UTF-8 path");
    let pr = util::run(
        dir.path(),
        &["plan", ".", "--base", base_dir, "--format", "markdown"],
    );
    let shown = stdout(&pr);
    assert!(
        shown.contains("@@ REMOVE (buttons cleared), 1 user: Bob (ou_bob) @@")
            && shown.contains("@@ add, 1 user: Erin (ou_erin) @@"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_email_is_reported_at_its_line_and_nothing_is_written() {
    let emu = with_fixtures(TENANT).await;
    let config = CONFIG.replace("carol@example.com", "nobody@example.com");
    let dir = Dir::new().file("people.yaml", &config);

    let out = run(&emu, dir.path(), &["resolve", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "error[unresolved-user]: email `nobody@example.com`: not found in the directory"
        ) && err.contains("--> people.yaml:15:17")
            && err.contains("feedbuttons.lock was not written"),
        "{err}"
    );
    assert!(!dir.path().join("feedbuttons.lock").exists());

    // Without a lock, validate says where and what to run.
    let valid = util::run(dir.path(), &["validate", "."]);
    assert_eq!(valid.status.code(), Some(1));
    let text = stdout(&valid);
    assert!(
        text.contains(
            "email `nobody@example.com` has no open_id: the config has no feedbuttons.lock"
        ) && text.contains("people.yaml:15:17")
            && text.contains("run `feedbuttons resolve`"),
        "{text}"
    );
    // A plan refuses it too, still without credentials.
    util::assert_error(
        &util::run(dir.path(), &["plan", "."]),
        "nothing was planned",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_check_fails_a_ci_job_without_a_lock_and_passes_with_a_current_one() {
    let emu = with_fixtures(TENANT).await;
    let dir = Dir::new().file("buttons/people.yaml", CONFIG);
    let check = run(&emu, dir.path(), &["resolve", "buttons", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check)
            .contains("buttons has no feedbuttons.lock: run `feedbuttons resolve buttons`"),
        "{}",
        stderr(&check)
    );
    assert!(!dir.path().join("buttons/feedbuttons.lock").exists());
    assert_eq!(
        run(&emu, dir.path(), &["resolve", "buttons"]).status.code(),
        Some(0)
    );
    let check = run(&emu, dir.path(), &["resolve", "buttons", "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert_eq!(stdout(&check), "");

    // An entry the config no longer uses is dropped.
    let smaller = CONFIG.replace(", \"+14155550100\"", "");
    std::fs::write(dir.path().join("buttons/people.yaml"), smaller).expect("edit");
    let check = run(&emu, dir.path(), &["resolve", "buttons", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        stdout(&check),
        "- +14155550100 (no longer named by the config)\n"
    );
    // Without credentials resolve says which variable is missing.
    util::assert_error(
        &util::run(dir.path(), &["resolve", "buttons"]),
        "FEISHU_APP_ID",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resolve_every_applies_a_membership_change() {
    let emu = with_fixtures(TENANT).await;
    let dir = Dir::new().file("people.yaml", CONFIG);
    assert_eq!(
        run(&emu, dir.path(), &["resolve", "."]).status.code(),
        Some(0)
    );
    let state = Dir::new();
    let state_path = state.path().join("state.json");
    let daemon = Daemon::start(
        &emu,
        dir.path(),
        &[
            "--state",
            state_path.to_str().expect("a UTF-8 path"),
            "--resolve-every",
            "300ms",
        ],
    );
    let sees = |user: &'static str| {
        let url = emu.url(&format!("/_emulator/chats/oc_war/users/{user}"));
        async move {
            let v = get_json(&url).await;
            v["buttons"][0]["text"]["text"].as_str().map(str::to_owned)
        }
    };
    daemon
        .eventually("Alice sees the runbook", || async {
            sees("ou_alice").await.filter(|t| t == "Runbook")
        })
        .await;
    assert_eq!(sees("ou_erin").await, None);

    Admin::of(&emu)
        .send(
            Method::POST,
            "/_emulator/chats/oc_oncall/members",
            json!({"members": ["ou_erin"]}),
        )
        .await;
    daemon
        .eventually(
            "Erin, who joined the on-call chat, sees the runbook",
            || async { sees("ou_erin").await.filter(|t| t == "Runbook") },
        )
        .await;
    let status = get_json(&daemon.url("/status")).await;
    assert_eq!(
        status["lock_drift"]["added"],
        json!(["ou_erin"]),
        "{status}"
    );
    assert_eq!(
        status["lock_drift"]["sources"],
        json!(["members_of: oc_oncall"])
    );
    assert_eq!(
        daemon.metric("feedbuttons_lock_drift_users").await,
        Some(1.0)
    );
    assert!(
        daemon.log().contains("(membership change)"),
        "{}",
        daemon.log()
    );
    // The look-ups are the API client's requests like any other, in its metrics.
    let metrics = daemon.metrics().await;
    assert!(
        daemon
            .metric(r#"feedbuttons_api_requests_total{endpoint="chat_members",outcome="success"}"#)
            .await
            .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    // The committed lock is the daemon's reference, never rewritten by it.
    assert!(!lock(dir.path()).contains("ou_erin"));
}

/// An open_id is per app: a lock resolved with one app's credentials holds ids that name no
/// one (or someone else) under another. Found by the red team: a staging app's `apply` sent the
/// production app's open_ids from the shared lock, and Feishu refused those users forever. The
/// lock now says whose ids it holds, and apply (live or from a saved plan), plan and watch
/// refuse another app's before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_of_another_apps_open_ids_is_refused_before_anything_is_sent() {
    let tenant = format!(
        "apps:\n  - {{app_id: cli_prod, app_secret: prod-secret}}\n  - {{app_id: cli_staging, app_secret: staging-secret}}\n{TENANT}"
    );
    let emu = with_fixtures(&tenant).await;
    let as_app = |app: &str, dir: &Path, args: &[&str]| {
        let mut c = feedbuttons(&emu, dir, args);
        c.env("FEISHU_APP_ID", app)
            .env("FEISHU_APP_SECRET", app.replace("cli_", "") + "-secret");
        c.output().expect("run feedbuttons")
    };
    let dir = Dir::new().file("people.yaml", CONFIG);
    let resolved = as_app("cli_prod", dir.path(), &["resolve", "."]);
    assert_eq!(resolved.status.code(), Some(0), "{}", stderr(&resolved));
    assert!(
        lock(dir.path()).contains("\napp_id: cli_prod\n"),
        "{}",
        lock(dir.path())
    );

    // Live: refused, naming both apps, and nothing sent.
    let staging = as_app("cli_staging", dir.path(), &["apply", ".", "--yes"]);
    assert_eq!(staging.status.code(), Some(1), "{}", stderr(&staging));
    let said = stderr(&staging);
    assert!(
        said.contains(
            "feedbuttons.lock holds open_ids of app cli_prod, but this run is for app cli_staging"
        ) && said.contains("nothing was applied"),
        "{said}"
    );
    assert!(Admin::of(&emu).calls().await.is_empty());

    // From a plan saved without credentials (the state is new: it names no app yet).
    let saved = util::run(dir.path(), &["plan", ".", "--out", "plan.json"]);
    assert_eq!(saved.status.code(), Some(0), "{}", stderr(&saved));
    let from_plan = as_app(
        "cli_staging",
        dir.path(),
        &["apply", ".", "--plan", "plan.json", "--yes"],
    );
    assert_eq!(from_plan.status.code(), Some(1), "{}", stderr(&from_plan));
    assert!(
        stderr(&from_plan).contains("holds open_ids of app cli_prod"),
        "{}",
        stderr(&from_plan)
    );
    assert!(Admin::of(&emu).calls().await.is_empty());

    // The app the lock was resolved for applies it; a plan for the other app is refused too.
    let prod = as_app(
        "cli_prod",
        dir.path(),
        &["apply", ".", "--plan", "plan.json", "--yes"],
    );
    assert_eq!(prod.status.code(), Some(0), "{}", stderr(&prod));
    assert!(!Admin::of(&emu).calls().await.is_empty());
    let plan = as_app("cli_staging", dir.path(), &["plan", "."]);
    assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));

    // A lock of union_ids only names the same people under every app of the developer: no
    // refusal (the check is for open_ids alone).
    let unions = Dir::new().file(
        "people.yaml",
        "version: 1\nuser_id_type: union_id\nchats:\n  - chat_id: oc_war\n    assign:\n      - users: [alice@example.com]\n        buttons: [{text: Runbook, url: \"https://wiki.example.com/r\"}]\n",
    );
    let resolved = as_app("cli_prod", unions.path(), &["resolve", "."]);
    assert_eq!(resolved.status.code(), Some(0), "{}", stderr(&resolved));
    assert!(
        !lock(unions.path()).contains("app_id"),
        "{}",
        lock(unions.path())
    );
    let check = as_app("cli_staging", unions.path(), &["resolve", ".", "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let other = as_app("cli_staging", unions.path(), &["apply", ".", "--yes"]);
    assert_eq!(other.status.code(), Some(0), "{}", stderr(&other));

    // `state adopt` would record another app's ids as applied (later plans would remove them).
    let adopt_state = Dir::new();
    let adopt_path = adopt_state.path().join("state.json");
    let adopt = as_app(
        "cli_staging",
        dir.path(),
        &[
            "state",
            "adopt",
            ".",
            "--state",
            adopt_path.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_eq!(adopt.status.code(), Some(1), "{}", stderr(&adopt));
    assert!(
        stderr(&adopt).contains("holds open_ids of app cli_prod"),
        "{}",
        stderr(&adopt)
    );
    let calls = Admin::of(&emu).calls().await.len();

    // The daemon for the other app reconciles nothing, says why, and is not ready.
    let state = Dir::new();
    let state_path = state.path().join("state.json");
    let daemon = Daemon::start_with(
        &emu,
        dir.path(),
        &["--state", state_path.to_str().expect("a UTF-8 path")],
        &[
            ("FEISHU_APP_ID", "cli_staging"),
            ("FEISHU_APP_SECRET", "staging-secret"),
        ],
    );
    let last = daemon
        .eventually("a first reconcile", || async {
            let status = get_json(&daemon.url("/status")).await;
            (!status["last_reconcile"].is_null()).then_some(status)
        })
        .await;
    assert_eq!(
        last["last_reconcile"]["outcome"], "invalid_config",
        "{last}"
    );
    assert_eq!(last["ready"], false, "{last}");
    let message = last["last_reconcile"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("holds open_ids of app cli_prod"), "{last}");
    assert_eq!(Admin::of(&emu).calls().await.len(), calls);
}
