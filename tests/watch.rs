//! The watch daemon as a real process against the in-process emulator over HTTP: edits,
//! symbolic link swaps, broken and emptied configs, the lock, signals, resync, health, metrics,
//! logs, and what it costs at idle.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, RunningEmulator,
};
use feedbuttons::feishu::client::{Client, ClientConfig, Secret};
use feedbuttons::feishu::wire::{
    ActionType, Button, Buttons, ChatButtonRequest, MultiUrl, Text, UserIdType,
};
use serde_json::Value;

use crate::util::{Dir, bin};

const BUTTONS: &str = "/open-apis/im/v2/chat_button";
const WAIT: Duration = Duration::from_secs(10);

/// A config where each chat shows one whole-chat button with the given text.
pub(crate) fn config(chats: &[(&str, &str)]) -> String {
    let mut s = String::from("version: 1\nchats:\n");
    for (chat, text) in chats {
        s.push_str(&format!(
            "  - chat_id: {chat}\n    assign:\n      - everyone: true\n        buttons:\n          - text: {text}\n            url: https://example.com/{chat}\n"
        ));
    }
    s
}

pub(crate) async fn emulator(latency: Duration) -> RunningEmulator {
    Emulator::start(EmulatorConfig {
        latency,
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator")
}

pub(crate) async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// The text of the first whole-chat button the chat shows, if any.
pub(crate) async fn chat_text(emu: &RunningEmulator, chat: &str) -> Option<String> {
    let v = get_json(&emu.url(&format!("/_emulator/chats/{chat}"))).await;
    v["chat_buttons"][0]["text"]["text"]
        .as_str()
        .map(str::to_owned)
}

/// Every chat-button request the emulator answered, oldest first.
pub(crate) async fn calls(emu: &RunningEmulator) -> Vec<Value> {
    let v = get_json(&emu.url(&format!("/_emulator/requests?path={BUTTONS}"))).await;
    v["requests"].as_array().cloned().unwrap_or_default()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A `feedbuttons watch` child process, killed when dropped.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: String,
}

impl Daemon {
    /// Starts `feedbuttons watch DIR ARGS...` against `emu` and waits for its address.
    pub(crate) fn start(emu: &RunningEmulator, dir: &Path, args: &[&str]) -> Daemon {
        Daemon::start_with(emu, dir, args, &[])
    }

    /// [`Daemon::start`] with more environment variables.
    pub(crate) fn start_with(
        emu: &RunningEmulator,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut d = Daemon::spawn_with(emu, dir, args, env);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(addr) = d.find_line(|l| {
                l.split("health and metrics on http://")
                    .nth(1)
                    .and_then(|rest| rest.split([' ', '"']).next())
                    .map(str::to_owned)
            }) {
                d.addr = addr;
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("the daemon exited with {status}:\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "no address logged:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it without waiting for anything.
    pub(crate) fn spawn(emu: &RunningEmulator, dir: &Path, args: &[&str]) -> Daemon {
        Daemon::spawn_with(emu, dir, args, &[])
    }

    pub(crate) fn spawn_with(
        emu: &RunningEmulator,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut child = Command::new(bin())
            .arg("watch")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("FEISHU_BASE_URL", emu.base_url())
            .env("FEISHU_APP_ID", BUILTIN_APP_ID)
            .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
            .env("NO_COLOR", "1")
            .env_remove("FEEDBUTTONS_STATE")
            .env_remove("FEEDBUTTONS_LOG")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start feedbuttons watch");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log lines").push(line);
            }
        });
        Daemon {
            child,
            lines,
            addr: String::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn log(&self) -> String {
        self.lines.lock().expect("log lines").join("\n")
    }

    pub(crate) fn find_line<T>(&self, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.lines
            .lock()
            .expect("log lines")
            .iter()
            .find_map(|l| f(l))
    }

    /// Polls `check` until it gives a value; fails with the daemon's log after `WAIT`.
    pub(crate) async fn eventually<T, Fut>(&self, what: &str, mut check: impl FnMut() -> Fut) -> T
    where
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the daemon's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample line (`name{labels}`), if present.
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
        })
    }

    pub(crate) async fn readyz(&self) -> (u16, String) {
        let r = reqwest::get(self.url("/readyz"))
            .await
            .expect("GET /readyz");
        let code = r.status().as_u16();
        (code, r.text().await.expect("readyz body"))
    }

    /// Waits for the process to exit on its own.
    pub(crate) async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a config file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_is_applied_within_a_second_with_one_json_summary_line_per_reconcile() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("buttons.yaml", &config(&[("oc_edit", "Before")]));
    let d = Daemon::start(&emu, dir.path(), &["--log-format", "json"]);
    d.eventually("the first apply", || async {
        (chat_text(&emu, "oc_edit").await.as_deref() == Some("Before")).then_some(())
    })
    .await;
    d.eventually("ready", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    let health = reqwest::get(d.url("/healthz")).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);

    let before = calls(&emu).await.len();
    let written = unix_ms();
    write(
        &dir.path().join("buttons.yaml"),
        &config(&[("oc_edit", "After")]),
    );
    let first_call_ms = d
        .eventually("the edit's call", || async {
            calls(&emu)
                .await
                .get(before)
                .and_then(|c| c["unix_ms"].as_u64())
        })
        .await;
    let latency = first_call_ms.saturating_sub(written);
    assert!(latency < 1000, "write -> first call took {latency} ms");
    assert_eq!(chat_text(&emu, "oc_edit").await.as_deref(), Some("After"));

    // One summary line per reconcile, every line JSON, the secret nowhere.
    d.eventually("two summary lines", || async {
        let log = d.log();
        (log.matches("reconciled in").count() >= 2).then_some(())
    })
    .await;
    let log = d.log();
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let summaries: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["outcome"].is_string())
        .collect();
    assert_eq!(summaries.len(), 2, "{log}");
    assert_eq!(summaries[1]["outcome"], "success");
    assert_eq!(summaries[1]["change"], 1);
    assert_eq!(summaries[1]["calls_ok"], 1);
    assert!(!log.contains(BUILTIN_APP_SECRET), "{log}");

    let metrics = d.metrics().await;
    for line in [
        "feedbuttons_reconciles_total{outcome=\"success\"} 2",
        "feedbuttons_calls_total{kind=\"reconcile\",outcome=\"success\"} 2",
        "feedbuttons_targets_managed 1",
        "feedbuttons_targets_pending 0",
        "feedbuttons_config_valid 1",
        "feedbuttons_mass_removal_blocked 0",
        "feedbuttons_reconcile_duration_seconds_count 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    let last = d
        .metric("feedbuttons_last_success_timestamp_seconds")
        .await
        .expect("last success");
    assert!(last * 1000.0 >= written as f64, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_symbolic_link_is_followed_to_the_new_revision() {
    let emu = emulator(Duration::ZERO).await;
    let root = Dir::new()
        .file("rev-a/buttons.yaml", &config(&[("oc_rev", "Revision A")]))
        .file("rev-b/buttons.yaml", &config(&[("oc_rev", "Revision B")]))
        .file("rev-c/buttons.yaml", &config(&[("oc_rev", "Revision C")]));
    let link = root.path().join("current");
    std::os::unix::fs::symlink("rev-a", &link).expect("symlink");

    // A state inside a revision would vanish with it: refused without --state.
    let refused = Command::new(bin())
        .args(["watch", "--listen", "127.0.0.1:0"])
        .arg(&link)
        .env("FEISHU_BASE_URL", emu.base_url())
        .env("FEISHU_APP_ID", BUILTIN_APP_ID)
        .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
        .env_remove("FEEDBUTTONS_STATE")
        .output()
        .expect("run watch");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--state"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let state = root.path().join("state/state.json");
    let state_arg = state.to_str().expect("UTF-8 path");
    let d = Daemon::start(&emu, &link, &["--state", state_arg]);
    d.eventually("revision A", || async {
        (chat_text(&emu, "oc_rev").await.as_deref() == Some("Revision A")).then_some(())
    })
    .await;
    // git-sync's swap: a new link renamed over the old one.
    for rev in ["rev-b", "rev-c"] {
        let tmp = root.path().join("current.tmp");
        std::os::unix::fs::symlink(rev, &tmp).expect("symlink");
        std::fs::rename(&tmp, &link).expect("swap the link");
        let want = format!("Revision {}", &rev[4..].to_uppercase());
        d.eventually(&want, || async {
            (chat_text(&emu, "oc_rev").await.as_deref() == Some(want.as_str())).then_some(())
        })
        .await;
    }
    // An edit inside the new revision is seen too (the watch moved with the link).
    write(
        &root.path().join("rev-c/buttons.yaml"),
        &config(&[("oc_rev", "Edited C")]),
    );
    d.eventually("the edit in revision C", || async {
        (chat_text(&emu, "oc_rev").await.as_deref() == Some("Edited C")).then_some(())
    })
    .await;
    assert!(!root.path().join("rev-a/.feedbuttons").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_applies_nothing_and_fails_readiness_until_fixed() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("buttons.yaml", &config(&[("oc_broken", "Good")]));
    let file = dir.path().join("buttons.yaml");
    let d = Daemon::start(&emu, dir.path(), &["--log-format", "json"]);
    d.eventually("ready", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    let sent = calls(&emu).await.len();

    write(
        &file,
        "version: 1\nchats:\n  - chat_id: oc_broken\n    assign: [\n",
    );
    let body = d
        .eventually("not ready", || async {
            let (code, body) = d.readyz().await;
            (code == 503).then_some(body)
        })
        .await;
    assert!(body.contains("invalid_config"), "{body}");
    assert!(body.contains("yaml-syntax"), "the diagnostics: {body}");
    assert!(body.contains("buttons.yaml:4"), "file:line: {body}");
    let status = get_json(&d.url("/status")).await;
    assert_eq!(status["config_valid"], false, "{status}");
    assert!(
        status["diagnostics"]
            .as_str()
            .is_some_and(|s| s.contains("yaml-syntax")),
        "{status}"
    );
    assert_eq!(d.metric("feedbuttons_config_valid").await, Some(0.0));
    assert!(
        d.log().contains("yaml-syntax"),
        "the log has the diagnostics"
    );
    // An error the validator finds (not the parser) is held back the same way.
    write(
        &file,
        &config(&[(
            "oc_broken",
            "A button text far longer than thirty characters",
        )]),
    );
    d.eventually("two invalid reconciles", || async {
        (d.metric("feedbuttons_reconciles_total{outcome=\"invalid_config\"}")
            .await
            >= Some(2.0))
        .then_some(())
    })
    .await;
    assert_eq!(calls(&emu).await.len(), sent, "nothing was sent");
    assert_eq!(chat_text(&emu, "oc_broken").await.as_deref(), Some("Good"));

    write(&file, &config(&[("oc_broken", "Fixed")]));
    d.eventually("the fix applied", || async {
        (chat_text(&emu, "oc_broken").await.as_deref() == Some("Fixed")).then_some(())
    })
    .await;
    d.eventually("ready again", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(d.metric("feedbuttons_config_valid").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_every_file_applies_nothing_and_metrics_show_it() {
    let emu = emulator(Duration::ZERO).await;
    let chats: Vec<(String, String)> = (0..12)
        .map(|i| (format!("oc_del{i:02}"), format!("Button {i}")))
        .collect();
    let refs: Vec<(&str, &str)> = chats
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    let dir = Dir::new()
        .file("a.yaml", &config(&refs[..6]))
        .file("team/b.yaml", &config(&refs[6..]));
    let d = Daemon::start(&emu, dir.path(), &[]);
    d.eventually("ready", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(d.metric("feedbuttons_targets_managed").await, Some(12.0));
    let sent = calls(&emu).await.len();

    // Every file gone: no config at all, which never prunes.
    std::fs::remove_file(dir.path().join("a.yaml")).expect("rm");
    std::fs::remove_dir_all(dir.path().join("team")).expect("rm -r");
    d.eventually("the empty directory refused", || async {
        (d.metric("feedbuttons_reconciles_total{outcome=\"invalid_config\"}")
            .await
            >= Some(1.0))
        .then_some(())
    })
    .await;
    assert_eq!(d.metric("feedbuttons_config_valid").await, Some(0.0));
    assert_eq!(d.readyz().await.0, 503);

    // A config that declares nothing: the mass-removal guard holds the removal back.
    write(&dir.path().join("a.yaml"), "version: 1\n");
    d.eventually("the mass removal blocked", || async {
        (d.metric("feedbuttons_mass_removal_blocked").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(
        d.metric("feedbuttons_reconciles_total{outcome=\"mass_removal_blocked\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(d.metric("feedbuttons_targets_pending").await, Some(12.0));
    assert_eq!(d.metric("feedbuttons_targets_managed").await, Some(12.0));
    let (code, body) = d.readyz().await;
    assert_eq!(code, 503);
    assert!(body.contains("mass removal refused"), "{body}");
    assert!(d.log().contains("--allow-mass-removal"), "{}", d.log());
    assert_eq!(calls(&emu).await.len(), sent, "nothing was sent");
    for (chat, text) in &chats {
        assert_eq!(chat_text(&emu, chat).await.as_deref(), Some(text.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_mass_removal_an_emptied_config_clears_the_buttons() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("a.yaml", &config(&[("oc_gone", "Soon gone")]));
    // At the most talkative level too, the secret never shows.
    let d = Daemon::start_with(
        &emu,
        dir.path(),
        &["--allow-mass-removal"],
        &[("FEEDBUTTONS_LOG", "trace")],
    );
    d.eventually("applied", || async {
        chat_text(&emu, "oc_gone").await.map(drop)
    })
    .await;
    write(&dir.path().join("a.yaml"), "version: 1\n");
    d.eventually("cleared", || async {
        chat_text(&emu, "oc_gone").await.is_none().then_some(())
    })
    .await;
    d.eventually("nothing managed", || async {
        (d.metric("feedbuttons_targets_managed").await == Some(0.0)).then_some(())
    })
    .await;
    let log = d.log();
    assert!(log.contains("TRACE"), "trace logs are on");
    assert!(!log.contains(BUILTIN_APP_SECRET), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_apply_exits_cleanly_with_every_sent_call_recorded() {
    // 40 calls at 10 a second with 100 ms latency: about four seconds of applying.
    let emu = emulator(Duration::from_millis(100)).await;
    let chats: Vec<(String, String)> = (0..40)
        .map(|i| (format!("oc_long{i:02}"), format!("Button {i}")))
        .collect();
    let refs: Vec<(&str, &str)> = chats
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    let dir = Dir::new().file("a.yaml", &config(&refs));
    let state = dir.path().join("elsewhere/state.json");
    let state_arg = state.to_str().expect("UTF-8 path");
    let mut d = Daemon::start(&emu, dir.path(), &["--state", state_arg]);
    d.eventually("some calls answered", || async {
        (calls(&emu).await.len() >= 8).then_some(())
    })
    .await;
    d.signal("TERM");
    let stopped_at = Instant::now();
    let status = d.exit_within(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(stopped_at.elapsed() < Duration::from_secs(3));

    let answered: std::collections::BTreeSet<String> = calls(&emu)
        .await
        .iter()
        .filter(|c| c["code"] == 0)
        .filter_map(|c| c["body"]["chat_id"].as_str().map(str::to_owned))
        .collect();
    assert!(answered.len() < chats.len(), "the stop came before the end");
    let recorded: std::collections::BTreeSet<String> = feedbuttons::state::open(&state)
        .expect("open the state")
        .load()
        .expect("load the state")
        .targets
        .keys()
        .map(|t| t.chat_id.to_string())
        .collect();
    assert_eq!(recorded, answered, "every call sent is recorded, no other");

    // The lock is released: a new daemon takes it and finishes the job.
    let d2 = Daemon::start(&emu, dir.path(), &["--state", state_arg]);
    d2.eventually("the rest applied", || async {
        (d2.readyz().await.0 == 200).then_some(())
    })
    .await;
    for (chat, text) in &chats {
        assert_eq!(chat_text(&emu, chat).await.as_deref(), Some(text.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_is_refused() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("a.yaml", &config(&[("oc_lock", "Mine")]));
    let first = Daemon::start(&emu, dir.path(), &[]);
    first
        .eventually("ready", || async {
            (first.readyz().await.0 == 200).then_some(())
        })
        .await;
    let mut second = Daemon::spawn(&emu, dir.path(), &[]);
    let status = second.exit_within(WAIT).await;
    assert_eq!(status.code(), Some(1));
    second
        .eventually("the reason", || async {
            second.find_line(|l| l.contains("locked by feedbuttons watch").then_some(()))
        })
        .await;
    // Human-readable by default: no JSON, no colour codes.
    let log = second.log();
    assert!(!log.starts_with('{') && !log.contains('\u{1b}'), "{log}");
    assert!(log.contains("nothing was applied"), "{log}");
    assert_eq!(first.readyz().await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lock_timeout_a_second_daemon_waits_for_the_first_to_stop_then_runs() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("a.yaml", &config(&[("oc_wait", "First")]));
    let mut first = Daemon::start(&emu, dir.path(), &[]);
    first
        .eventually("ready", || async {
            (first.readyz().await.0 == 200).then_some(())
        })
        .await;
    let mut second = Daemon::spawn(&emu, dir.path(), &["--lock-timeout", "30s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        second.child.try_wait().expect("try_wait").is_none(),
        "the second daemon gave up instead of waiting:\n{}",
        second.log()
    );
    first.signal("TERM");
    assert_eq!(first.exit_within(WAIT).await.code(), Some(0));
    write(
        &dir.path().join("a.yaml"),
        &config(&[("oc_wait", "Second")]),
    );
    second
        .eventually("the second daemon to apply", || async {
            (chat_text(&emu, "oc_wait").await.as_deref() == Some("Second")).then_some(())
        })
        .await;
}

fn button(text: &str) -> Button {
    Button {
        multi_url: Some(MultiUrl {
            url: Some("https://example.com/other".to_owned()),
            ..MultiUrl::default()
        }),
        action_type: ActionType::UrlPage,
        text: Text {
            text: text.to_owned(),
        },
        button_type: None,
        action_map: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_restores_buttons_something_else_changed() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file(
        "a.yaml",
        &config(&[("oc_rs1", "Ours 1"), ("oc_rs2", "Ours 2")]),
    );
    let d = Daemon::start(&emu, dir.path(), &["--resync", "1s"]);
    d.eventually("applied", || async {
        (chat_text(&emu, "oc_rs2").await.as_deref() == Some("Ours 2")).then_some(())
    })
    .await;
    // Another tool overwrites a chat's buttons; the config and the state do not change.
    let other = Client::new(ClientConfig::new(
        emu.base_url(),
        BUILTIN_APP_ID,
        Secret::new(BUILTIN_APP_SECRET.to_owned()),
    ))
    .expect("a client");
    other
        .put_chat_button(
            UserIdType::OpenId,
            &ChatButtonRequest {
                user_ids: None,
                chat_id: "oc_rs1".into(),
                buttons: Buttons {
                    buttons: vec![button("Theirs")],
                },
            },
        )
        .await
        .expect("the other tool's call");
    assert_eq!(chat_text(&emu, "oc_rs1").await.as_deref(), Some("Theirs"));
    d.eventually("restored by resync", || async {
        (chat_text(&emu, "oc_rs1").await.as_deref() == Some("Ours 1")).then_some(())
    })
    .await;
    d.eventually("a full pass", || async {
        (d.metric("feedbuttons_resync_cycles_total").await >= Some(1.0)).then_some(())
    })
    .await;
    assert!(
        d.metric("feedbuttons_calls_total{kind=\"resync\",outcome=\"success\"}")
            .await
            >= Some(2.0)
    );
    // Resync calls keep within half the rate limit (10/s: 200 ms apart on average; these two
    // chats over 1 s are 500 ms apart). Averaged, since the emulator stamps each call when it
    // answers, and a busy machine delays some answers more than others. (The first two calls
    // are the first apply's; the other tool's call is left out.)
    let resync_times: Vec<u64> = calls(&emu)
        .await
        .iter()
        .skip(2)
        .filter(|c| !c["body"].to_string().contains("Theirs"))
        .filter_map(|c| c["unix_ms"].as_u64())
        .collect();
    assert!(resync_times.len() >= 2, "{resync_times:?}");
    let span = resync_times[resync_times.len() - 1] - resync_times[0];
    assert!(
        span >= 200 * (resync_times.len() as u64 - 1),
        "{resync_times:?}"
    );
}

/// Resident memory (kB) and CPU ticks (user + system) of a process, from /proc.
fn rss_and_ticks(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').expect("comm").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    (rss, ticks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_is_small_and_uses_no_cpu() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("a.yaml", &config(&[("oc_idle", "Idle")]));
    let d = Daemon::start(&emu, dir.path(), &[]);
    d.eventually("ready", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, before) = rss_and_ticks(d.child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_kb, after) = rss_and_ticks(d.child.id());
    assert!(rss_kb < 30 * 1024, "resident memory {rss_kb} kB");
    assert!(
        after - before <= 1,
        "{} CPU ticks in 3 s idle",
        after - before
    );
}

#[test]
fn the_deployment_examples_run_valid_watch_command_lines() {
    use clap::Parser as _;
    use feedbuttons::cli::{Cli, Command as Cmd};
    let read = |name: &str| {
        std::fs::read_to_string(crate::util::root().join("examples/deploy").join(name))
            .expect("read the example")
    };
    let unit = read("feedbuttons-watch.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut unit_args = vec!["feedbuttons"];
    unit_args.extend(exec.split_whitespace().skip(1));
    let watch_args = |manifest: &str| -> Vec<String> {
        let args_line = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("args: [\"watch\""))
            .expect("the watch container's args");
        serde_json::from_str(&format!("[\"watch\"{args_line}")).expect("a JSON list")
    };
    let shared = read("kubernetes.yaml");
    let single = read("kubernetes-file-state.yaml");
    let (k8s, k8s_file) = (watch_args(&shared), watch_args(&single));
    let mut runs = vec![unit_args];
    for k in [&k8s, &k8s_file] {
        let mut args = vec!["feedbuttons"];
        args.extend(k.iter().map(String::as_str));
        runs.push(args);
    }
    for args in runs {
        let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Cmd::Watch(w) = cli.command else {
            panic!("{args:?} is not a watch command")
        };
        assert!(w.listen.ends_with(":9464"), "{args:?}");
    }
    assert!(unit.contains("FEEDBUTTONS_STATE=/var/lib/feedbuttons/"));
    // Two replicas share a PostgreSQL state whose URL comes from a Secret; the file-state
    // variant keeps one replica and its state on a volume.
    assert!(shared.contains("replicas: 2"));
    assert!(shared.contains("- name: FEEDBUTTONS_STATE\n              valueFrom:\n                secretKeyRef: {name: feedbuttons-state, key: url}"));
    assert!(!k8s.iter().any(|a| a == "--state"));
    assert!(single.contains("replicas: 1") && single.contains("type: Recreate"));
    assert!(single.contains("--state\", \"/var/lib/feedbuttons/state.json"));
    for manifest in [&shared, &single] {
        for probe in ["path: /healthz", "path: /readyz"] {
            assert!(manifest.contains(probe), "{probe}");
        }
    }
}

/// The emulator with `fixtures` (YAML).
async fn emulator_with(fixtures: &str) -> RunningEmulator {
    Emulator::start(EmulatorConfig {
        fixtures: Some(feedbuttons::emulator::Fixtures::parse(fixtures).expect("fixtures")),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator")
}

/// How many chat-button calls named `user`.
async fn calls_for(emu: &RunningEmulator, user: &str) -> usize {
    calls(emu)
        .await
        .iter()
        .filter(|c| {
            c["body"]["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id == user))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_is_not_in_the_chat_waits_visibly_is_retried_with_a_backoff_and_blocks_nothing()
{
    let emu = emulator_with(
        "chats:\n  - chat_id: oc_w\n    members: [ou_in]\n  - chat_id: oc_other\n    members: everyone\n",
    )
    .await;
    let team = |other: &str| {
        format!(
            "{}  - chat_id: oc_w\n    assign:\n      - users: [ou_in, ou_out]\n        buttons: [{{text: Mine, action: webhook}}]\n",
            config(&[("oc_other", other)])
        )
    };
    let dir = Dir::new().file("buttons.yaml", &team("One"));
    let d = Daemon::start(
        &emu,
        dir.path(),
        &["--retry-waiting", "3s", "--log-format", "json"],
    );
    d.eventually("ready with a user waiting", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    let status = get_json(&d.url("/status")).await;
    assert_eq!(status["pending"]["waiting"], 1, "{status}");
    assert_eq!(status["waiting"][0]["target"], "open_id:ou_out", "{status}");
    assert_eq!(
        status["waiting"][0]["reason"], "The user is not in the chat",
        "{status}"
    );
    assert_eq!(d.metric("feedbuttons_targets_waiting").await, Some(1.0));
    assert!(
        d.log()
            .contains("1 target waits for users who are not in the chat"),
        "{}",
        d.log()
    );

    // Edits elsewhere are applied at once; the refused user is not sent again with each.
    for text in ["Two", "Three"] {
        write(&dir.path().join("buttons.yaml"), &team(text));
        d.eventually("the edit", || async {
            (chat_text(&emu, "oc_other").await.as_deref() == Some(text)).then_some(())
        })
        .await;
    }
    assert_eq!(calls_for(&emu, "ou_out").await, 1, "{}", d.log());

    // Once the user joins, the next try (after the backoff) applies the list.
    reqwest::Client::new()
        .post(emu.url("/_emulator/chats/oc_w/members"))
        .json(&serde_json::json!({"members": ["ou_out"]}))
        .send()
        .await
        .expect("add a member");
    d.eventually("the waiting user applied", || async {
        let v = get_json(&emu.url("/_emulator/chats/oc_w/users/ou_out")).await;
        (v["source"] == "user").then_some(())
    })
    .await;
    d.eventually("nothing waits", || async {
        (d.metric("feedbuttons_targets_waiting").await == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_api_quotes_back_stay_out_of_readyz_status_and_the_log() {
    let emu = emulator(Duration::ZERO).await;
    let token: Value = reqwest::Client::new()
        .post(emu.url("/open-apis/auth/v3/tenant_access_token/internal"))
        .json(&serde_json::json!({"app_id": BUILTIN_APP_ID, "app_secret": BUILTIN_APP_SECRET}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["tenant_access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    reqwest::Client::new()
        .put(emu.url("/_emulator/faults"))
        .json(&serde_json::json!({"echo_credentials_next": 1000}))
        .send()
        .await
        .expect("faults");
    let dir = Dir::new().file("buttons.yaml", &config(&[("oc_echo", "Hi")]));
    let d = Daemon::start_with(&emu, dir.path(), &[], &[("FEEDBUTTONS_LOG", "trace")]);
    let body = d
        .eventually("a failed reconcile", || async {
            let (code, body) = d.readyz().await;
            (code == 503 && body.contains("echoed by the emulator")).then_some(body)
        })
        .await;
    let status = reqwest::get(d.url("/status"))
        .await
        .expect("status")
        .text()
        .await
        .expect("text");
    for shown in [&body, &status, &d.log()] {
        for secret in [BUILTIN_APP_SECRET, token.as_str()] {
            assert!(!shown.contains(secret), "{secret} in:\n{shown}");
        }
    }
}
