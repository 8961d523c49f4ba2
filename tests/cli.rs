//! One command line: `state` takes the config directory like every other command, `plan --out`
//! prints the exact apply command, formats a command cannot print are refused, a stopped apply
//! exits with the signal's code, and every JSON output is machine-readable with a
//! `format_version`.

use std::process::Command;
use std::time::Duration;

use feedbuttons::emulator::EmulatorConfig;
use serde_json::Value;

use crate::apply::{
    Admin, Background, Config, FAST, apply_cmd, config_dir, fast, feedbuttons, run, start,
    with_fixtures,
};
use crate::util::{self, Dir};

const CONFIG: &str = "version: 1
chats:
  - chat_id: oc_abc
    assign:
      - users: [ou_1, ou_2]
        buttons:
          - {text: Runbook, url: 'https://wiki.example.com'}
";

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            util::stdout(out),
            util::stderr(out)
        )
    })
}

#[test]
fn state_takes_the_config_directory_as_its_argument_and_dir_still_works() {
    let dir = Dir::new().file("team/buttons.yaml", CONFIG);
    let team = dir.path().join("team");
    let team_arg = team.to_str().expect("UTF-8 path");
    let elsewhere = Dir::new();

    let adopt = util::run(elsewhere.path(), &["state", "adopt", team_arg]);
    assert_eq!(adopt.status.code(), Some(0), "{}", util::stderr(&adopt));
    assert!(team.join(".feedbuttons/state.json").is_file());

    let positional = util::run(elsewhere.path(), &["state", "list", team_arg]);
    let flag = util::run(elsewhere.path(), &["state", "list", "--dir", team_arg]);
    assert_eq!(
        positional.status.code(),
        Some(0),
        "{}",
        util::stderr(&positional)
    );
    assert!(util::stdout(&positional).contains("targets: 2 in 1 chat"));
    assert_eq!(util::stdout(&positional), util::stdout(&flag));
    // `show` and `rm` take a chat and an audience, so the directory stays a flag for them.
    let show = util::run(
        elsewhere.path(),
        &["state", "show", "oc_abc", "ou_1", "--dir", team_arg],
    );
    assert_eq!(show.status.code(), Some(0), "{}", util::stderr(&show));
    // Two different directories are refused rather than one silently winning.
    let both = util::run(
        elsewhere.path(),
        &["state", "list", team_arg, "--dir", "other"],
    );
    util::assert_error(&both, "two config directories");
}

#[test]
fn state_with_a_config_directory_that_does_not_exist_is_an_error_and_creates_nothing() {
    // A typo in DIR read as an empty state ("targets: 0", exit 0), as if everything had been
    // forgotten, and `state rm --dir` created the typo's `.feedbuttons/` before failing.
    let dir = Dir::new().file("team/buttons.yaml", CONFIG);
    for args in [
        &["state", "list", "taem"][..],
        &["state", "list", "taem", "--format", "json"],
        &["state", "show", "oc_abc", "--dir", "taem"],
        &["state", "rm", "oc_abc", "--dir", "taem"],
    ] {
        let out = util::run(dir.path(), args);
        util::assert_error(&out, "config directory taem does not exist");
        assert!(
            util::stdout(&out).is_empty(),
            "{args:?}: {}",
            util::stdout(&out)
        );
        assert!(!dir.path().join("taem").exists(), "{args:?} created taem/");
    }
    // The same directory written two ways is one directory.
    let adopt = util::run(dir.path(), &["state", "adopt", "team"]);
    assert_eq!(adopt.status.code(), Some(0), "{}", util::stderr(&adopt));
    let same = util::run(dir.path(), &["state", "list", "./team", "--dir", "team/"]);
    assert_eq!(same.status.code(), Some(0), "{}", util::stderr(&same));
    assert!(util::stdout(&same).contains("targets: 2 in 1 chat"));
}

#[test]
fn a_rate_limit_of_zero_is_refused_not_unlimited() {
    // `--rate-limit 0` made the client unlimited (the emulator's meaning of 0) while plan
    // estimated "at 1 calls/s", and the help and README promise the limit is never exceeded.
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    for args in [
        &["plan", ".", "--rate-limit", "0"][..],
        &["apply", ".", "--yes", "--rate-limit", "0"],
        &["watch", ".", "--rate-limit", "0"],
    ] {
        let out = util::run(dir.path(), args);
        util::assert_error(&out, "invalid value '0' for '--rate-limit <N>'");
        assert!(util::stdout(&out).is_empty(), "{args:?}");
    }
    assert!(!dir.path().join(".feedbuttons").exists());
}

#[test]
fn state_show_refuses_a_format_it_cannot_print() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let out = util::run(
        dir.path(),
        &["state", "show", "oc_abc", "--format", "github"],
    );
    util::assert_error(&out, "invalid value 'github'");
    assert!(util::stdout(&out).is_empty());
}

#[test]
fn state_list_prints_json_with_counts_and_every_target() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let empty = json(&util::run(
        dir.path(),
        &["state", "list", "--format", "json"],
    ));
    assert_eq!(empty["format_version"], 1);
    assert_eq!(empty["lineage"], Value::Null);
    assert_eq!(empty["targets"], serde_json::json!([]));
    util::run(dir.path(), &["state", "adopt"]);
    let v = json(&util::run(
        dir.path(),
        &["state", "list", "--format", "json"],
    ));
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["counts"]["targets"], 2);
    assert_eq!(v["counts"]["chats"], 1);
    assert_eq!(v["counts"]["waiting"], 0);
    assert!(
        v["lineage"].is_string() && v["serial"].as_u64() >= Some(1),
        "{v}"
    );
    assert_eq!(v["targets"][1]["audience"]["id"], "ou_2");
    assert_eq!(v["targets"][1]["buttons"][0]["text"]["text"], "Runbook");
    let one = json(&util::run(
        dir.path(),
        &["state", "list", "--chat", "oc_nope", "--format", "json"],
    ));
    assert_eq!(one["targets"], serde_json::json!([]));
}

#[test]
fn every_json_output_carries_a_format_version() {
    let dir = Dir::new().file("buttons.yaml", CONFIG);
    let p = dir.path();
    util::run(p, &["state", "adopt"]);
    for args in [
        &["validate", "--format", "json"][..],
        &["plan", "--format", "json"],
        &["state", "list", "--format", "json"],
        &["state", "show", "oc_abc", "--format", "json"],
    ] {
        let v = json(&util::run(p, args));
        assert_eq!(v["format_version"], 1, "{args:?}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_out_prints_the_exact_apply_command_and_it_applies_the_plan() {
    let emu = fast().await;
    let root = Dir::new().file("my config/buttons.yaml", CONFIG);
    let config = root.path().join("my config");
    let plan_file = root.path().join("reviewed plan.json");
    let out = run(feedbuttons(
        &emu,
        root.path(),
        &[
            "plan",
            config.to_str().expect("UTF-8"),
            "--out",
            plan_file.to_str().expect("UTF-8"),
        ],
    ))
    .await;
    out.assert_code(0);
    let command = out
        .stderr
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {}", out.stderr))
        .to_owned();
    assert!(
        command.starts_with("feedbuttons apply '")
            && command.contains("my config'")
            && command.contains("--plan '"),
        "{command}"
    );
    // Run it word for word, as a shell would, from anywhere.
    let bin_dir = util::bin()
        .parent()
        .expect("the binary's folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let template = feedbuttons(&emu, root.path(), &[]);
    let mut sh = Command::new("sh");
    sh.args(["-c", &command])
        .env("PATH", path)
        .current_dir(std::env::temp_dir());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let sh = sh.output().expect("run sh");
    assert_eq!(sh.status.code(), Some(0), "{}", util::stderr(&sh));
    assert!(
        util::stdout(&sh).contains("Applying the saved plan"),
        "{}",
        util::stdout(&sh)
    );
    let calls = Admin::of(&emu).calls().await;
    assert_eq!(calls.len(), 1, "one call for the two users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_format_json_prints_the_plans_summary_and_the_result() {
    // ou_out is not in oc_w (it waits); oc_nobot has no bot (its call fails).
    let emu = with_fixtures(
        "
chats:
  - chat_id: oc_w
    members: [ou_in]
  - chat_id: oc_nobot
    bot_member: false
    members: everyone
",
    )
    .await;
    let config = Config::default()
        .chat("oc_w")
        .users(&["runbook"], &["ou_in", "ou_out"])
        .chat("oc_nobot")
        .everyone(&["dash"]);
    let dir = config_dir(&config);
    let out = run(apply_cmd(&emu, dir.path(), &["--format", "json"])).await;
    out.assert_code(3);
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["plan"]["summary"]["add"], 3, "{v}");
    assert_eq!(v["plan"]["summary"]["requests"], 2, "{v}");
    let r = &v["result"];
    assert_eq!(r["exit_code"], 3, "{v}");
    assert_eq!(r["complete"], false);
    assert_eq!(r["calls"]["planned"], 2);
    assert_eq!(r["calls"]["success"], 1);
    assert_eq!(r["calls"]["failed"], 1);
    assert_eq!(r["calls"]["not_sent"], 0);
    assert_eq!(r["targets_applied"], 1);
    assert_eq!(r["waiting"][0]["target"], "ou_out", "{v}");
    assert_eq!(r["waiting"][0]["reason"], "The user is not in the chat");
    assert_eq!(r["failures"][0]["chat_id"], "oc_nobot");
    assert!(
        r["failures"][0]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("230027")),
        "{v}"
    );
    assert_eq!(r["bot_not_in"], serde_json::json!(["oc_nobot"]));
    assert_eq!(r["interrupted_by"], Value::Null);
    // People still read the plan and the summary, on stderr.
    assert!(out.stderr.contains("Plan: 3 to add"), "{out:?}");
    assert!(out.stderr.contains("Waiting (1 targets"), "{out:?}");

    // Nothing left to do but the waiting user: still one JSON document.
    let again = run(apply_cmd(
        &emu,
        dir.path(),
        &["--format", "json", "--chat", "oc_w"],
    ))
    .await;
    let v: Value =
        serde_json::from_str(&again.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {again:?}"));
    assert_eq!(v["result"]["exit_code"], again.code.unwrap_or(-1), "{v}");
}

/// A run of `calls` whole-chat calls, each answered after `latency`.
async fn slow_apply(
    calls: usize,
    latency: Duration,
) -> (feedbuttons::emulator::RunningEmulator, Dir) {
    let emu = start(EmulatorConfig {
        rate_limit: FAST,
        latency,
        ..EmulatorConfig::default()
    })
    .await;
    let mut config = Config::default();
    for c in 0..calls {
        config = config.chat(&format!("oc_slow{c}")).everyone(&["status"]);
    }
    (emu, config_dir(&config))
}

fn signal(run: &Background, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &run.pid().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_apply_with_exit_130_and_says_what_was_left() {
    // Three hundred calls at 100/s take three seconds to send: the signal after the third
    // answer comes with most still unsent, however slow a loaded machine is to deliver it (with
    // forty, a busy CI machine once signalled after the last had left).
    let (emu, dir) = slow_apply(300, Duration::from_millis(200)).await;
    let admin = Admin::of(&emu);
    let mut run = Background::spawn(apply_cmd(&emu, dir.path(), &["--format", "json"]));
    run.wait_for_calls(&admin, 3).await;
    signal(&run, "INT");
    let out = run.wait().await;
    out.assert_code(130)
        .assert_stderr("SIGINT: stopping")
        .assert_stderr("Stopped by a signal: the calls in flight were answered and recorded")
        .assert_stderr("calls were not sent; run apply again");
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    assert_eq!(v["result"]["exit_code"], 130);
    assert_eq!(v["result"]["interrupted_by"], "SIGINT");
    assert!(v["result"]["calls"]["not_sent"].as_u64() > Some(0), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_after_every_call_went_out_stops_nothing_and_says_so() {
    // One call, answered after a second: the signal comes while it is in flight.
    let (emu, dir) = slow_apply(1, Duration::from_millis(1500)).await;
    let admin = Admin::of(&emu);
    let run = Background::spawn(apply_cmd(&emu, dir.path(), &[]));
    wait_for_request(&admin, dir.path()).await;
    signal(&run, "TERM");
    let out = run.wait().await;
    out.assert_code(143).assert_stderr(
        "Stopped by a signal after every call was applied and recorded: nothing was left to send.",
    );
    assert!(!out.stderr.contains("not sent"), "{out:?}");
    // It was recorded: the next plan has nothing to do.
    let plan = util::run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", util::stdout(&plan));
}

/// Waits until the first chat-button call of a run on a new state in `dir` is on the wire (the
/// emulator logs calls once answered, so this watches the token, then the state's journal: the
/// call's mark is written just before it is sent, after the binding).
async fn wait_for_request(admin: &Admin, dir: &std::path::Path) {
    let journal = dir.join(".feedbuttons/state.journal");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = admin.get("/_emulator/requests").await;
        let token_seen = log["requests"].as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x["path"].as_str().is_some_and(|p| p.contains("token")))
        });
        let marked = std::fs::read_to_string(&journal).is_ok_and(|j| j.lines().count() >= 2);
        if token_seen && marked {
            // And a little for the call to leave after its mark.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no request in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_the_token_request_is_retried_stops_the_run_at_once_with_its_code() {
    let (emu, dir) = slow_apply(3, Duration::ZERO).await;
    let admin = Admin::of(&emu);
    // The token endpoint fails for a long while: the credentials check backs off and retries
    // (half a minute of patience).
    admin
        .faults(serde_json::json!({"server_errors_next": 1000, "token_endpoint": true}))
        .await;
    let run = Background::spawn(apply_cmd(&emu, dir.path(), &["--format", "json"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = admin.get("/_emulator/requests").await;
        let tokens = log["requests"].as_array().map_or(0, |r| {
            r.iter()
                .filter(|x| x["path"].as_str().is_some_and(|p| p.contains("token")))
                .count()
        });
        if tokens >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token request in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = std::time::Instant::now();
    signal(&run, "INT");
    let out = run.wait().await;
    // Stopped by the signal, not by the credentials check giving up half a minute later.
    out.assert_code(130).assert_stderr("SIGINT: stopping");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the run went on for {:?} after SIGINT: {out:?}",
        signalled.elapsed()
    );
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    assert_eq!(v["result"]["interrupted_by"], "SIGINT", "{v}");
    assert_eq!(v["result"]["calls"]["not_sent"], 3, "{v}");
    assert!(admin.calls().await.is_empty(), "a call went out");
    // Nothing was recorded: the next plan still has every call to make.
    let plan = util::run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", util::stdout(&plan));
}
