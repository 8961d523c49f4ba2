//! `feedbuttons state list|show|rm|adopt`: inspecting and repairing the applied state by hand.

use crate::util::{self, Dir};

const CONFIG: &str = "version: 1
chats:
  - chat_id: oc_abc
    assign:
      - users: [ou_1, ou_2]
        buttons:
          - {text: Runbook, url: 'https://wiki.example.com'}
      - everyone: true
        buttons: []
";

#[test]
fn adopt_then_list_show_and_rm() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let p = dir.path();
    let empty = util::run(p, &["state", "list"]);
    assert_eq!(empty.status.code(), Some(0), "{}", util::stderr(&empty));
    assert!(
        util::stdout(&empty).contains("lineage: none yet"),
        "{}",
        util::stdout(&empty)
    );

    // Adopting records the config as applied without any call: the plan is then empty.
    let adopt = util::run(p, &["state", "adopt"]);
    assert_eq!(adopt.status.code(), Some(0), "{}", util::stderr(&adopt));
    assert!(
        util::stdout(&adopt).starts_with("Adopted 3 target(s)"),
        "{}",
        util::stdout(&adopt)
    );
    assert!(
        p.join(".feedbuttons/state.json").is_file(),
        "the default state lives beside the config"
    );
    let plan = util::run(p, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", util::stdout(&plan));

    let list = util::stdout(&util::run(p, &["state", "list"]));
    assert!(list.contains("targets: 3 in 1 chat"), "{list}");
    assert!(list.contains("oc_abc  open_id:ou_1  \"Runbook\""), "{list}");

    let show = util::run(p, &["state", "show", "oc_abc", "ou_2", "--format", "json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&show.stdout).expect("state show --format json");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["targets"][0]["buttons"][0]["text"]["text"], "Runbook");

    // Forgetting a user makes the next plan add it again.
    let rm = util::run(p, &["state", "rm", "oc_abc", "ou_1"]);
    assert_eq!(rm.status.code(), Some(0), "{}", util::stderr(&rm));
    let plan = util::run(p, &["plan"]);
    assert!(
        util::stdout(&plan)
            .contains("Plan: 1 to add, 0 to change, 0 to remove, 2 unchanged; 1 call"),
        "{}",
        util::stdout(&plan)
    );

    let missing = util::run(p, &["state", "show", "oc_nope"]);
    util::assert_error(&missing, "no recorded target matches");
}

#[test]
fn an_unreachable_postgres_state_is_a_clear_error_without_the_password() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let out = util::run(
        dir.path(),
        &[
            "plan",
            "--state",
            "postgres://feedbuttons:hunter2@127.0.0.1:1/state?sslmode=disable",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = util::stderr(&out);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.contains("127.0.0.1:1/state"), "{err}");
    assert!(!err.contains("hunter2"), "the password is not shown: {err}");
}

#[test]
fn a_plan_with_another_apps_credentials_refuses_the_state() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let p = dir.path();
    let state = p.join(".feedbuttons/state.json");
    {
        let store = feedbuttons::state::open(&state).expect("open");
        let mut lock = store.writer("test").expect("lock");
        lock.bind(&feedbuttons::state::Binding::new(
            "https://open.feishu.cn",
            "cli_one",
        ))
        .expect("bind");
    }
    let out = std::process::Command::new(util::bin())
        .args(["plan"])
        .current_dir(p)
        .env("FEISHU_APP_ID", "cli_two")
        .env_remove("FEISHU_BASE_URL")
        .env_remove("FEEDBUTTONS_STATE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        util::stderr(&out).contains("app id cli_one, but this run uses"),
        "{}",
        util::stderr(&out)
    );
    // Without credentials (a pull-request plan) the state is read as it is.
    let out = util::run(p, &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
}

#[test]
fn a_state_applied_with_another_base_url_is_the_same_apps_unless_a_base_url_is_given() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let p = dir.path();
    {
        let store = feedbuttons::state::open(&p.join(".feedbuttons/state.json")).expect("open");
        let mut lock = store.writer("test").expect("lock");
        lock.bind(&feedbuttons::state::Binding::new(
            "https://open.larksuite.com",
            "cli_one",
        ))
        .expect("bind");
    }
    let plan = |extra: &[&str]| {
        std::process::Command::new(util::bin())
            .arg("plan")
            .args(extra)
            .current_dir(p)
            .env("FEISHU_APP_ID", "cli_one")
            .env_remove("FEISHU_BASE_URL")
            .env_remove("FEEDBUTTONS_STATE")
            .output()
            .expect("run")
    };
    assert_eq!(
        plan(&[]).status.code(),
        Some(0),
        "the app id matches: {}",
        util::stderr(&plan(&[]))
    );
    assert_eq!(
        plan(&["--base-url", "https://open.larksuite.com"])
            .status
            .code(),
        Some(0)
    );
    let other = plan(&["--base-url", "https://open.feishu.cn"]);
    assert_eq!(other.status.code(), Some(1));
    assert!(
        util::stderr(&other).contains("refusing to mix them"),
        "{}",
        util::stderr(&other)
    );
}
