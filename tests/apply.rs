//! `feedbuttons apply` end to end: the real binary against the in-process emulator over HTTP.
//! After each run the emulator's view of what every user sees is compared with the config, and
//! the applied state with the emulator: convergence, partial failures, faults, crashes, signals,
//! secrets, exit codes, saved plans, `--chat` and the state's binding.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, Fixtures, RunningEmulator,
};
use feedbuttons::feishu::wire::UserIdType;
use feedbuttons::target::{Audience, ButtonList, Target};
use serde_json::{Value, json};

use crate::util::{self, Dir};

pub(crate) const BUTTONS: &str = "/open-apis/im/v2/chat_button";
pub(crate) const TOKEN: &str = "/open-apis/auth/v3/tenant_access_token/internal";
/// Calls per second for the CLI and the emulator, so that hundreds of calls take seconds.
pub(crate) const FAST: u32 = 100;
pub(crate) const FAST_ARG: &str = "100";
/// No run or wait in this module should come near this.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- configs

/// The buttons every generated config defines; lists are made of their names.
pub(crate) const BUTTON_DEFS: &str = "version: 1
buttons:
  runbook:
    text: Runbook
    style: primary
    url: https://wiki.example.com/runbook
  ack:
    text: Acknowledge
    action: webhook
    action_map:
      op: ack
  dash:
    text: Dashboards
    url: https://grafana.example.com/d/oncall
  status:
    text: Status page
    style: success
    url: https://status.example.com
";

/// Per-user lists the generator hands out, in turn.
pub(crate) const LISTS: [&[&str]; 4] = [
    &["runbook", "ack"],
    &["dash"],
    &["status", "runbook"],
    &["ack", "dash"],
];

#[derive(Clone, Debug, Default)]
pub(crate) struct ChatSpec {
    pub(crate) id: String,
    pub(crate) everyone: Option<Vec<String>>,
    /// (button names, users).
    pub(crate) assign: Vec<(Vec<String>, Vec<String>)>,
}

/// A config directory's contents, built in code and written as one YAML file.
#[derive(Clone, Debug, Default)]
pub(crate) struct Config {
    pub(crate) chats: Vec<ChatSpec>,
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Config {
    /// Starts a chat; `everyone` and `users` add to the last chat started.
    pub(crate) fn chat(mut self, id: &str) -> Config {
        self.chats.push(ChatSpec {
            id: id.to_owned(),
            ..ChatSpec::default()
        });
        self
    }

    pub(crate) fn everyone(mut self, buttons: &[&str]) -> Config {
        self.chats.last_mut().expect("a chat").everyone = Some(strings(buttons));
        self
    }

    pub(crate) fn users(mut self, buttons: &[&str], users: &[&str]) -> Config {
        self.chats
            .last_mut()
            .expect("a chat")
            .assign
            .push((strings(buttons), strings(users)));
        self
    }

    /// `chats` chats `oc_{tag}{c}`, each with a whole-chat list when `everyone`, and `lists`
    /// per-user lists of `users` users each (`ou_{tag}c{c}l{l}u{u}`). `turn` shifts which list
    /// goes where, so that two turns differ in every list.
    pub(crate) fn generated(
        tag: &str,
        chats: usize,
        everyone: bool,
        lists: usize,
        users: usize,
        turn: usize,
    ) -> Config {
        let mut config = Config::default();
        for c in 0..chats {
            config = config.chat(&format!("oc_{tag}{c}"));
            if everyone {
                config = config.everyone(LISTS[(c + turn + 3) % LISTS.len()]);
            }
            for l in 0..lists {
                let ids: Vec<String> = (0..users)
                    .map(|u| format!("ou_{tag}c{c}l{l}u{u}"))
                    .collect();
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                config = config.users(LISTS[(c + l + turn) % LISTS.len()], &ids);
            }
        }
        config
    }

    /// The calls a first apply of this config takes: one per chat's whole-chat list, and one
    /// per 20 users of each list (the generator gives each list of a chat other buttons).
    pub(crate) fn first_apply_calls(&self) -> usize {
        self.chats
            .iter()
            .map(|c| {
                usize::from(c.everyone.is_some())
                    + c.assign
                        .iter()
                        .map(|(_, users)| users.len().div_ceil(20))
                        .sum::<usize>()
            })
            .sum()
    }

    pub(crate) fn yaml(&self) -> String {
        let list = |b: &[String]| format!("[{}]", b.join(", "));
        let mut s = String::from(BUTTON_DEFS);
        s.push_str("chats:\n");
        for chat in &self.chats {
            let _ = writeln!(s, "  - chat_id: {}\n    assign:", chat.id);
            if let Some(b) = &chat.everyone {
                let _ = writeln!(s, "      - everyone: true\n        buttons: {}", list(b));
            }
            for (buttons, users) in &chat.assign {
                let _ = writeln!(s, "      - buttons: {}\n        users:", list(buttons));
                for u in users {
                    let _ = writeln!(s, "          - {u}");
                }
            }
        }
        s
    }

    /// Writes (or replaces) the config in `dir`.
    pub(crate) fn write(&self, dir: &Path) {
        std::fs::write(dir.join("buttons.yaml"), self.yaml()).expect("write the config");
    }
}

/// A new config directory holding `config`.
pub(crate) fn config_dir(config: &Config) -> Dir {
    let dir = Dir::new();
    config.write(dir.path());
    dir
}

/// The desired state the config in `dir` declares.
pub(crate) fn desired(dir: &Path) -> BTreeMap<Target, ButtonList> {
    let loaded = feedbuttons::config::load_dir(dir).expect("load the config");
    let desired = loaded.desired.expect("a valid config");
    desired
        .targets
        .into_iter()
        .map(|(t, l)| (t, l.as_ref().clone()))
        .collect()
}

pub(crate) fn state_path(dir: &Path) -> PathBuf {
    feedbuttons::state::default_path(dir)
}

/// The applied state's targets that the config manages, recorded as applied (with nothing
/// pending), and their lists.
pub(crate) fn recorded(dir: &Path) -> BTreeMap<Target, ButtonList> {
    load_state(dir)
        .targets
        .into_iter()
        .filter(|(_, r)| r.is_settled() && !r.follows())
        .filter_map(|(t, r)| r.shown().map(|l| (t, l.clone())))
        .collect()
}

/// The recorded followers (users no longer declared) and the lists they show.
pub(crate) fn followers(dir: &Path) -> BTreeMap<Target, ButtonList> {
    load_state(dir)
        .targets
        .into_iter()
        .filter(|(_, r)| r.follows())
        .filter_map(|(t, r)| r.shown().map(|l| (t, l.clone())))
        .collect()
}

/// The applied state as it is on disk.
pub(crate) fn load_state(dir: &Path) -> feedbuttons::state::AppliedState {
    feedbuttons::state::open(&state_path(dir))
        .expect("open the state")
        .load()
        .expect("load the state")
}

// ---------------------------------------------------------------- the emulator

pub(crate) async fn start(config: EmulatorConfig) -> RunningEmulator {
    Emulator::start(config).await.expect("start the emulator")
}

/// The open world (bot in every chat, everyone a member) at `FAST` calls a second.
pub(crate) async fn fast() -> RunningEmulator {
    start(EmulatorConfig {
        rate_limit: FAST,
        ..EmulatorConfig::default()
    })
    .await
}

pub(crate) async fn with_fixtures(yaml: &str) -> RunningEmulator {
    start(EmulatorConfig {
        rate_limit: FAST,
        fixtures: Some(Fixtures::parse(yaml).expect("valid fixtures")),
        ..EmulatorConfig::default()
    })
    .await
}

/// The emulator's `/_emulator/` API, cloneable into background tasks.
#[derive(Clone)]
pub(crate) struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    pub(crate) fn of(emu: &RunningEmulator) -> Admin {
        Admin {
            base: emu.base_url(),
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("a JSON answer")
    }

    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("admin call");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("admin answer")
    }

    pub(crate) async fn faults(&self, spec: Value) {
        self.send(reqwest::Method::PUT, "/_emulator/faults", spec)
            .await;
    }

    pub(crate) async fn expire_tokens(&self) {
        self.send(reqwest::Method::POST, "/_emulator/tokens/expire", json!({}))
            .await;
    }

    /// The token the emulator hands `app` now: the one a client of that app holds, as long as
    /// it has half an hour left.
    pub(crate) async fn token(&self, app: (&str, &str)) -> String {
        let v: Value = self
            .http
            .post(format!("{}{TOKEN}", self.base))
            .json(&json!({"app_id": app.0, "app_secret": app.1}))
            .send()
            .await
            .expect("token call")
            .json()
            .await
            .expect("token answer");
        v["tenant_access_token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// Every chat-button request the emulator logged, oldest first.
    pub(crate) async fn calls(&self) -> Vec<Value> {
        let v = self
            .get(&format!("/_emulator/requests?path={BUTTONS}"))
            .await;
        assert_eq!(v["dropped"], 0, "the request log overflowed");
        v["requests"].as_array().expect("requests").clone()
    }

    pub(crate) async fn seen(&self) -> Seen {
        Seen::of(&self.get("/_emulator/chats").await)
    }
}

/// The chat-button calls that were applied (HTTP 200, code 0).
pub(crate) fn applied_calls(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|r| r["status"] == 200 && r["code"] == 0)
        .collect()
}

/// The chats the logged calls were for.
pub(crate) fn chats_called(log: &[Value]) -> BTreeSet<String> {
    log.iter()
        .map(|r| r["body"]["chat_id"].as_str().expect("chat_id").to_owned())
        .collect()
}

/// What the emulator shows: each chat's whole-chat list and what each person in it sees.
pub(crate) struct Seen {
    /// Chat -> its whole-chat list (`null` when never sent).
    pub(crate) chat_buttons: BTreeMap<String, Value>,
    /// (chat, id type, id) -> (source, buttons), for every id of every person listed.
    pub(crate) users: HashMap<(String, UserIdType, String), (String, Value)>,
    /// Chat -> each person listed.
    pub(crate) people: BTreeMap<String, Vec<Person>>,
}

/// One person of a chat in the emulator's view: their ids, and what they see.
pub(crate) struct Person {
    pub(crate) ids: Vec<(UserIdType, String)>,
    pub(crate) source: String,
    pub(crate) buttons: Value,
}

impl Seen {
    pub(crate) fn of(chats: &Value) -> Seen {
        let mut seen = Seen {
            chat_buttons: BTreeMap::new(),
            users: HashMap::new(),
            people: BTreeMap::new(),
        };
        for chat in chats["chats"].as_array().expect("chats") {
            let id = chat["chat_id"].as_str().expect("chat_id").to_owned();
            seen.chat_buttons
                .insert(id.clone(), chat["chat_buttons"].clone());
            let people = seen.people.entry(id.clone()).or_default();
            for user in chat["users"].as_array().expect("users") {
                let source = user["source"].as_str().expect("source").to_owned();
                let buttons = user["buttons"].clone();
                let ids: Vec<(UserIdType, String)> = user["ids"]
                    .as_object()
                    .expect("ids")
                    .iter()
                    .map(|(t, v)| {
                        (
                            UserIdType::parse(t).expect("an id type"),
                            v.as_str().expect("an id").to_owned(),
                        )
                    })
                    .collect();
                for (t, v) in &ids {
                    seen.users.insert(
                        (id.clone(), *t, v.clone()),
                        (source.clone(), buttons.clone()),
                    );
                }
                people.push(Person {
                    ids,
                    source,
                    buttons,
                });
            }
        }
        seen
    }

    /// Each target whose audience does not see exactly its list, described.
    pub(crate) fn mismatches<'a>(
        &self,
        targets: impl IntoIterator<Item = (&'a Target, &'a ButtonList)>,
    ) -> Vec<String> {
        let mut bad = Vec::new();
        for (target, list) in targets {
            let want = serde_json::to_value(list).expect("buttons as JSON");
            match &target.audience {
                Audience::Everyone => {
                    let got = self.chat_buttons.get(target.chat_id.as_str());
                    if got != Some(&want) {
                        bad.push(format!("{target}: whole-chat list {got:?}, want {want}"));
                    }
                }
                Audience::User { id_type, id } => {
                    let got =
                        self.users
                            .get(&(target.chat_id.to_string(), *id_type, id.to_string()));
                    match got {
                        Some((source, buttons)) if source == "user" && *buttons == want => {}
                        other => bad.push(format!("{target}: sees {other:?}, want {want}")),
                    }
                }
            }
        }
        bad
    }
}

pub(crate) fn assert_none(what: &str, bad: &[String]) {
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches, the first ones:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// What every user sees is what the config in `dir` declares: each declared user their own
/// list, each chat with a whole-chat target that list; anybody else with a list of their own
/// (a removed user) sees the chat's declared whole-chat list, or nothing; no other chat shows
/// a whole-chat list.
pub(crate) async fn assert_converged(admin: &Admin, dir: &Path) {
    let desired = desired(dir);
    let seen = admin.seen().await;
    let mut bad = seen.mismatches(desired.iter());
    for (chat, buttons) in &seen.chat_buttons {
        let declared = desired.contains_key(&Target::everyone(chat.clone()));
        let empty = buttons.is_null() || *buttons == json!([]);
        if !declared && !empty {
            bad.push(format!("{chat}: undeclared whole-chat list {buttons}"));
        }
    }
    for (chat, people) in &seen.people {
        for Person {
            ids,
            source,
            buttons,
        } in people
        {
            let declared = ids
                .iter()
                .any(|(t, id)| desired.contains_key(&Target::user(chat.clone(), *t, id.clone())));
            let whole_chat = desired
                .get(&Target::everyone(chat.clone()))
                .map_or(json!([]), |l| serde_json::to_value(l).unwrap_or_default());
            if !declared && source == "user" && *buttons != whole_chat {
                bad.push(format!(
                    "{chat}/{ids:?}: undeclared, sees {buttons} instead of the whole-chat {whole_chat}"
                ));
            }
        }
    }
    assert_none("the emulator's view vs the config", &bad);
}

/// Everything the state records as applied is what the emulator shows.
pub(crate) async fn assert_recorded_present(admin: &Admin, dir: &Path) {
    let recorded = recorded(dir);
    let seen = admin.seen().await;
    assert_none(
        "the applied state vs the emulator",
        &seen.mismatches(recorded.iter()),
    );
}

// ---------------------------------------------------------------- the binary

/// `feedbuttons ARGS` in `dir`, pointed at `emu` as the built-in app, stdin off a terminal.
pub(crate) fn feedbuttons(emu: &RunningEmulator, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(util::bin());
    c.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env("FEISHU_BASE_URL", emu.base_url())
        .env("FEISHU_APP_ID", BUILTIN_APP_ID)
        .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
        .env_remove("FEEDBUTTONS_STATE")
        .env_remove("FEEDBUTTONS_LOG")
        .env_remove("RUST_LOG");
    c
}

/// `feedbuttons apply . --yes --rate-limit 100 EXTRA...`.
pub(crate) fn apply_cmd(emu: &RunningEmulator, dir: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["apply", ".", "--yes", "--rate-limit", FAST_ARG];
    args.extend_from_slice(extra);
    feedbuttons(emu, dir, &args)
}

/// How a run ended.
pub(crate) struct Outcome {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Outcome {
    pub(crate) fn assert_code(&self, code: i32) -> &Outcome {
        assert_eq!(self.code, Some(code), "{self:?}");
        self
    }

    pub(crate) fn assert_stderr(&self, part: &str) -> &Outcome {
        assert!(self.stderr.contains(part), "no {part:?} in\n{self:?}");
        self
    }
}

/// Runs to the end on a blocking thread, so that the emulator keeps serving.
pub(crate) async fn run(mut c: Command) -> Outcome {
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("the runner thread")
        .expect("run feedbuttons");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) async fn apply(emu: &RunningEmulator, dir: &Path, extra: &[&str]) -> Outcome {
    run(apply_cmd(emu, dir, extra)).await
}

/// A run in the background, its output going to files (nothing to drain while it runs).
pub(crate) struct Background {
    child: std::process::Child,
    out: tempfile::TempDir,
    started: Instant,
}

impl Background {
    pub(crate) fn spawn(mut c: Command) -> Background {
        let out = tempfile::tempdir().expect("a directory for the output");
        let file = |name: &str| std::fs::File::create(out.path().join(name)).expect("output file");
        let child = c
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("start feedbuttons");
        Background {
            child,
            out,
            started: Instant::now(),
        }
    }

    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.path().join(name)).unwrap_or_default()
    }

    /// Waits until the emulator has logged `n` chat-button calls in all. Panics if the run
    /// ends first.
    pub(crate) async fn wait_for_calls(&mut self, admin: &Admin, n: usize) {
        loop {
            if admin.calls().await.len() >= n {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll the run") {
                panic!(
                    "the run ended ({status}) before {n} calls:\n{}",
                    self.read("stderr")
                );
            }
            assert!(self.started.elapsed() < PATIENCE, "no {n} calls in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL");
    }

    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    pub(crate) async fn wait(self) -> Outcome {
        let Background { mut child, out, .. } = self;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("the waiting thread")
            .expect("wait for feedbuttons");
        let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap_or_default();
        Outcome {
            code: status.code(),
            stdout: read("stdout"),
            stderr: read("stderr"),
        }
    }
}

// ---------------------------------------------------------------- convergence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_apply_then_no_op_then_change_then_removal_each_leave_the_emulator_as_configured() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let many: Vec<String> = (0..45).map(|i| format!("ou_many{i:02}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let first = Config::default()
        .chat("oc_war")
        .everyone(&["status"])
        .users(&["runbook", "ack"], &many)
        .users(&["dash"], &["ou_lead", "ou_chief"])
        .chat("oc_release")
        .users(&["runbook"], &["ou_rel1", "ou_rel2"]);
    let dir = config_dir(&first);

    // First apply: the whole-chat call, 3 calls for 45 users, one per other list.
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("6 calls"), "{out:?}");
    assert_eq!(applied_calls(&admin.calls().await).len(), 6);
    assert_converged(&admin, dir.path()).await;
    assert_eq!(recorded(dir.path()), desired(dir.path()));

    // Nothing changed: no call at all.
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("No changes"), "{out:?}");
    assert_eq!(admin.calls().await.len(), 6, "a no-op apply made calls");

    // A change: the leads get other buttons, one user moves from the 45 to the leads.
    let changed = Config::default()
        .chat("oc_war")
        .everyone(&["status"])
        .users(&["runbook", "ack"], &many[1..])
        .users(&["status", "dash"], &["ou_lead", "ou_chief", many[0]])
        .chat("oc_release")
        .users(&["runbook"], &["ou_rel1", "ou_rel2"]);
    changed.write(dir.path());
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert_eq!(
        admin.calls().await.len(),
        7,
        "one call for the three changed users"
    );
    assert_converged(&admin, dir.path()).await;
    assert_eq!(recorded(dir.path()), desired(dir.path()));

    // A removal: the whole-chat list and one user go (few enough not to be a mass removal).
    let removed = Config::default()
        .chat("oc_war")
        .users(&["runbook", "ack"], &many[1..])
        .users(&["status", "dash"], &["ou_lead", "ou_chief", many[0]])
        .chat("oc_release")
        .users(&["runbook"], &["ou_rel1"]);
    removed.write(dir.path());
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("2 to remove"), "{out:?}");
    // The whole-chat list changed, so the chat's users are sent their lists again (3 + 1
    // calls) after it; one more call clears the removed user.
    assert_eq!(admin.calls().await.len(), 13);
    assert_converged(&admin, dir.path()).await;
    let seen = admin.seen().await;
    assert_eq!(
        seen.chat_buttons["oc_war"],
        json!([]),
        "whole-chat list cleared"
    );
    assert_eq!(
        seen.users[&(
            "oc_release".to_owned(),
            UserIdType::OpenId,
            "ou_rel2".to_owned()
        )],
        ("user".to_owned(), json!([])),
        "a removed user's buttons are cleared"
    );
    assert_eq!(recorded(dir.path()), desired(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_not_in_the_chat_wait_visibly_and_are_applied_once_let_in() {
    let emu = with_fixtures(
        "
chats:
  - chat_id: oc_team
    members: [ou_alice, ou_bob]
",
    )
    .await;
    let admin = Admin::of(&emu);
    let config = Config::default().chat("oc_team").users(
        &["runbook", "ack"],
        &["ou_alice", "ou_bob", "ou_carol", "ou_dave"],
    );
    let dir = config_dir(&config);

    let out = apply(&emu, dir.path(), &[]).await;
    // Everything that could apply did; the rest waits: exit 4, not a failure.
    out.assert_code(4)
        .assert_stderr("ou_carol, ou_dave: The user is not in the chat")
        .assert_stderr("Waiting (2 targets");
    let state = recorded(dir.path());
    let users: Vec<&str> = state.keys().filter_map(Target::user_id).collect();
    assert_eq!(
        users,
        ["ou_alice", "ou_bob"],
        "refused users are not recorded as applied"
    );
    assert_recorded_present(&admin, dir.path()).await;
    // They are recorded as waiting, and every listing says so.
    let listing = feedbuttons(&emu, dir.path(), &["state", "list"])
        .output()
        .expect("state list");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.contains("pending: 0 uncertain, 0 owed, 2 waiting"),
        "{listing}"
    );
    for user in ["ou_carol", "ou_dave"] {
        let line = listing
            .lines()
            .find(|l| l.contains(user))
            .unwrap_or_default();
        assert!(
            line.contains("(nothing applied yet)")
                && line.contains("waiting since")
                && line.contains("The user is not in the chat"),
            "{listing}"
        );
    }
    let plan = feedbuttons(&emu, dir.path(), &["plan", "."])
        .output()
        .expect("plan");
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("2 waiting for their users to join the chat"),
        "{plan}"
    );

    admin
        .send(
            reqwest::Method::POST,
            "/_emulator/chats/oc_team/members",
            json!({"members": ["ou_carol", "ou_dave"]}),
        )
        .await;
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("waiting since"), "{out:?}");
    let log = admin.calls().await;
    assert_eq!(log.len(), 2, "one more call, for the two users let in");
    assert_eq!(log[1]["body"]["user_ids"], json!(["ou_carol", "ou_dave"]));
    assert_converged(&admin, dir.path()).await;
    assert_eq!(recorded(dir.path()), desired(dir.path()));
    assert!(
        load_state(dir.path())
            .targets
            .values()
            .all(|r| r.is_settled())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_without_the_bot_is_reported_and_the_other_chats_still_apply() {
    let emu = with_fixtures(
        "
open_chats: true
chats:
  - chat_id: oc_nobot
    bot_member: false
    members: everyone
",
    )
    .await;
    let admin = Admin::of(&emu);
    let many: Vec<String> = (0..60).map(|i| format!("ou_n{i:02}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let config = Config::default()
        .chat("oc_nobot")
        .everyone(&["status"])
        .users(&["runbook"], &many)
        .chat("oc_fine")
        .everyone(&["dash"])
        .users(&["runbook", "ack"], &["ou_f1", "ou_f2"]);
    let dir = config_dir(&config);

    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(3).assert_stderr(
        "The bot is not in chat oc_nobot: add the bot to the chat, then apply again.",
    );
    let log = admin.calls().await;
    let to_nobot = log
        .iter()
        .filter(|r| r["body"]["chat_id"] == "oc_nobot")
        .count();
    assert_eq!(
        to_nobot, 1,
        "the chat's other calls wait for its whole-chat call, then are skipped"
    );
    assert!(log.iter().any(|r| r["code"] == 230027));
    let state = recorded(dir.path());
    assert!(state.keys().all(|t| t.chat_id == "oc_fine"), "{state:?}");
    assert_eq!(state.len(), 3);
    assert_recorded_present(&admin, dir.path()).await;

    admin
        .send(
            reqwest::Method::PUT,
            "/_emulator/chats/oc_nobot/bot",
            json!({"member": true}),
        )
        .await;
    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert_eq!(
        chats_called(&admin.calls().await[log.len()..]),
        BTreeSet::from(["oc_nobot".to_owned()])
    );
    assert_converged(&admin, dir.path()).await;
}

// ---------------------------------------------------------------- faults, crashes, signals

/// Drives faults while a run goes on: each time another `every` calls were applied, sets off a
/// burst of `burst` 429s on top of `base`; the first time, also notes the token in use and
/// expires every token early. Returns the token noted, and the one in use when stopped.
///
/// Once only: the client replaces a refused token once per call, so a second early expiry
/// while calls that already replaced theirs are still queued or retrying fails those calls.
fn chaos(
    admin: Admin,
    app: (&'static str, &'static str),
    every: usize,
    base: Value,
    burst: u32,
) -> (
    tokio::task::JoinHandle<Vec<String>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut tokens = Vec::new();
        let mut next = every;
        loop {
            if applied_calls(&admin.calls().await).len() >= next {
                next += every;
                if tokens.is_empty() {
                    tokens.push(admin.token(app).await);
                    admin.expire_tokens().await;
                }
                let mut spec = base.clone();
                spec["rate_limited_next"] = json!(burst);
                admin.faults(spec).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut stopped => break,
            }
        }
        tokens.push(admin.token(app).await);
        tokens
    });
    (task, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_calls_through_5xx_429_bursts_latency_and_token_expiry_converge() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    // 10 chats, each a whole-chat list and two lists of 500 users: 510 calls.
    let config = Config::generated("f", 10, true, 2, 500, 0);
    assert_eq!(config.first_apply_calls(), 510);
    let dir = config_dir(&config);
    let base = json!({"latency_ms": 300, "server_error_rate": 0.2});
    let mut first = base.clone();
    first["rate_limited_next"] = json!(5);
    admin.faults(first).await;

    let (chaos, stop) = chaos(
        admin.clone(),
        (BUILTIN_APP_ID, BUILTIN_APP_SECRET),
        150,
        base,
        5,
    );
    let out = apply(&emu, dir.path(), &[]).await;
    let _ = stop.send(());
    let tokens = chaos.await.expect("the chaos task");
    out.assert_code(0);

    let log = admin.calls().await;
    let count = |f: &dyn Fn(&Value) -> bool| log.iter().filter(|r| f(r)).count();
    let server_errors = count(&|r| r["fault"] == "server_error");
    let throttled = count(&|r| r["status"] == 429);
    let refused_tokens = count(&|r| r["code"] == 99991677);
    assert_eq!(applied_calls(&log).len(), 510, "each call applied once");
    assert!(
        server_errors >= 60,
        "{server_errors} 5xx answers in {}",
        log.len()
    );
    assert!(throttled >= 15, "{throttled} 429 answers");
    assert_eq!(tokens.len(), 2, "the token was expired during the run");
    assert_ne!(tokens[0], tokens[1]);
    assert!(refused_tokens >= 1, "no call met the expired token");
    assert_converged(&admin, dir.path()).await;
    assert_eq!(recorded(dir.path()), desired(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_apply_at_several_points_loses_nothing_recorded_and_the_next_run_converges() {
    let emu = start(EmulatorConfig {
        rate_limit: FAST,
        // Calls are in flight when the process dies.
        latency: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let admin = Admin::of(&emu);
    // 20 chats, each a whole-chat list and two lists of 140 users: 300 calls.
    let config = Config::generated("k", 20, true, 2, 140, 0);
    assert_eq!(config.first_apply_calls(), 300);
    let dir = config_dir(&config);

    let mut kills = 0;
    for calls_before_kill in [1, 30, 60, 100] {
        let sent = admin.calls().await.len();
        let mut run = Background::spawn(apply_cmd(&emu, dir.path(), &[]));
        run.wait_for_calls(&admin, sent + calls_before_kill).await;
        run.sigkill();
        let out = run.wait().await;
        assert_eq!(out.code, None, "killed by a signal: {out:?}");
        kills += 1;
        // The state loads (the lock went with the process) and all it records is applied.
        assert_recorded_present(&admin, dir.path()).await;
    }
    assert_eq!(kills, 4);
    let recorded_before = recorded(dir.path()).len();
    assert!(
        recorded_before > 0 && recorded_before < desired(dir.path()).len(),
        "{recorded_before} recorded after the kills"
    );

    let out = apply(&emu, dir.path(), &[]).await;
    out.assert_code(0);
    assert_converged(&admin, dir.path()).await;
    assert_eq!(recorded(dir.path()), desired(dir.path()));
    let sent = admin.calls().await.len();
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(
        admin.calls().await.len(),
        sent,
        "converged: nothing left to send"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_apply_after_recording_the_calls_in_flight() {
    let emu = start(EmulatorConfig {
        rate_limit: FAST,
        latency: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let admin = Admin::of(&emu);
    let config = Config::generated("t", 20, true, 2, 140, 0);
    let dir = config_dir(&config);

    let mut run = Background::spawn(apply_cmd(&emu, dir.path(), &[]));
    run.wait_for_calls(&admin, 50).await;
    run.sigterm();
    let out = run.wait().await;
    // Stopped by SIGTERM: the shell's code for it (128 + 15), with what was applied recorded.
    out.assert_code(143)
        .assert_stderr("Stopped by a signal")
        .assert_stderr("calls were not sent; run apply again");

    // Every call the emulator applied is recorded, and all that is recorded is applied.
    let log = admin.calls().await;
    assert!(log.len() < 300, "the run went on after SIGTERM: {out:?}");
    let mut applied: BTreeSet<Target> = BTreeSet::new();
    for call in applied_calls(&log) {
        let chat = call["body"]["chat_id"].as_str().expect("chat_id");
        match call["body"]["user_ids"].as_array() {
            None => {
                applied.insert(Target::everyone(chat));
            }
            Some(ids) => applied.extend(
                ids.iter()
                    .map(|id| Target::user(chat, UserIdType::OpenId, id.as_str().expect("an id"))),
            ),
        }
    }
    let state: BTreeSet<Target> = recorded(dir.path()).into_keys().collect();
    // Everything recorded was applied; everything applied is recorded, except a whole-chat list
    // whose chat's other calls were cut short: that one is recorded once they all apply.
    assert!(
        state.is_subset(&applied),
        "recorded but not applied: {:?}",
        state.difference(&applied).collect::<Vec<_>>()
    );
    let unrecorded: Vec<&Target> = applied.difference(&state).collect();
    assert!(
        unrecorded
            .iter()
            .all(|t| t.audience == feedbuttons::target::Audience::Everyone),
        "applied but not recorded: {unrecorded:?}"
    );
    assert_recorded_present(&admin, dir.path()).await;

    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_converged(&admin, dir.path()).await;
}

// ---------------------------------------------------------------- secrets

/// Runs of one fixtures app whose secret and tokens must show nowhere.
const SECRET_APP: (&str, &str) = ("cli_secretive", "s3cr3t-9a7e1c55b0d4");

/// Any `t-` followed by 32 hex digits: the shape of every token the emulator issues.
fn token_shaped(text: &str) -> Option<&str> {
    text.match_indices("t-").find_map(|(i, _)| {
        let rest = &text[i + 2..];
        let hex = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        (hex >= 32).then(|| &text[i..i + 2 + hex])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trace_logging_neither_the_secret_nor_any_token_is_shown() {
    let emu = with_fixtures(&format!(
        "
apps:
  - {{app_id: {}, app_secret: {}}}
open_chats: true
",
        SECRET_APP.0, SECRET_APP.1
    ))
    .await;
    let admin = Admin::of(&emu);
    let config = Config::generated("s", 4, true, 2, 100, 0);
    let dir = config_dir(&config);
    let with_trace = |mut c: Command, secret: &str| {
        c.env("FEISHU_APP_ID", SECRET_APP.0)
            .env("FEISHU_APP_SECRET", secret)
            .env("FEEDBUTTONS_LOG", "trace");
        c
    };
    admin
        .faults(json!({"server_errors_next": 2, "rate_limited_next": 1}))
        .await;

    // A wrong secret; a run through a 5xx, 429s and early token expiry; a no-op.
    let wrong = "s3cr3t-but-wrong-3f81";
    let refused = run(with_trace(apply_cmd(&emu, dir.path(), &[]), wrong)).await;
    refused
        .assert_code(1)
        .assert_stderr("refused the app credentials");
    let (chaos, stop) = chaos(admin.clone(), SECRET_APP, 15, json!({}), 1);
    let full = run(with_trace(apply_cmd(&emu, dir.path(), &[]), SECRET_APP.1)).await;
    let _ = stop.send(());
    let tokens = chaos.await.expect("the chaos task");
    full.assert_code(0);
    let noop = run(with_trace(apply_cmd(&emu, dir.path(), &[]), SECRET_APP.1)).await;
    noop.assert_code(0);

    assert_eq!(tokens.len(), 2, "the token was expired during the run");
    assert_ne!(tokens[0], tokens[1]);
    assert!(
        full.stderr.contains("TRACE") && full.stderr.contains("chat_button answered"),
        "trace logging was not on:\n{}",
        full.stderr
    );
    assert!(
        full.stderr.contains("token refused"),
        "no token was refused"
    );
    let mut texts: Vec<(String, String)> = Vec::new();
    for (name, out) in [
        ("full", &full),
        ("wrong secret", &refused),
        ("no-op", &noop),
    ] {
        texts.push((format!("{name}: stdout"), out.stdout.clone()));
        texts.push((format!("{name}: stderr"), out.stderr.clone()));
    }
    for entry in std::fs::read_dir(state_path(dir.path()).parent().expect("state dir"))
        .expect("list the state files")
    {
        let path = entry.expect("a state file").path();
        let bytes = std::fs::read(&path).expect("read a state file");
        texts.push((
            path.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    for (what, text) in &texts {
        for secret in [SECRET_APP.1, wrong]
            .into_iter()
            .chain(tokens.iter().map(String::as_str))
        {
            assert!(!text.contains(secret), "{what} shows {secret:?}");
        }
        assert_eq!(token_shaped(text), None, "{what} shows a token");
    }
}

// ---------------------------------------------------------------- exit codes and refusals

/// Asserts that a refused run changed nothing: no chat-button call, the state as it was.
async fn assert_nothing_applied(admin: &Admin, dir: &Path, calls_before: usize) {
    assert_eq!(
        admin.calls().await.len(),
        calls_before,
        "a refused run made calls"
    );
    assert_recorded_present(admin, dir).await;
}

fn small() -> Config {
    Config::default()
        .chat("oc_small")
        .everyone(&["status"])
        .users(&["runbook", "ack"], &["ou_s1", "ou_s2", "ou_s3"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_or_with_a_wrong_secret_nothing_is_applied() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(&small());

    let mut none = apply_cmd(&emu, dir.path(), &[]);
    none.env_remove("FEISHU_APP_ID")
        .env_remove("FEISHU_APP_SECRET");
    run(none)
        .await
        .assert_code(1)
        .assert_stderr("no credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET")
        .assert_stderr("nothing was applied");
    let mut no_secret = apply_cmd(&emu, dir.path(), &[]);
    no_secret.env_remove("FEISHU_APP_SECRET");
    run(no_secret)
        .await
        .assert_code(1)
        .assert_stderr("no app secret: set FEISHU_APP_SECRET");

    let mut wrong = apply_cmd(&emu, dir.path(), &[]);
    wrong.env("FEISHU_APP_SECRET", "not-the-secret");
    let out = run(wrong).await;
    out.assert_code(1)
        .assert_stderr("Feishu refused the app credentials")
        .assert_stderr("nothing was applied");
    assert!(!out.stderr.contains("not-the-secret"), "{out:?}");
    assert_nothing_applied(&admin, dir.path(), 0).await;
    let state = feedbuttons::state::open(&state_path(dir.path()))
        .expect("open")
        .load()
        .expect("load");
    assert_eq!(state.binding, None, "a refused run does not bind the state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_and_a_missing_confirmation_refuse_the_run() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(&small());

    {
        let store = feedbuttons::state::open(&state_path(dir.path())).expect("open the state");
        let _held = store
            .writer("the lock-holding test")
            .expect("take the lock");
        apply(&emu, dir.path(), &[])
            .await
            .assert_code(1)
            .assert_stderr("the state is locked by the lock-holding test")
            .assert_stderr("nothing was applied");
    }

    // Off a terminal, without --yes.
    let out = run(feedbuttons(
        &emu,
        dir.path(),
        &["apply", ".", "--rate-limit", FAST_ARG],
    ))
    .await;
    out.assert_code(1)
        .assert_stderr(
            "not on a terminal: pass --yes to apply, or apply a reviewed plan with --plan",
        )
        .assert_stderr("nothing was applied");
    assert_nothing_applied(&admin, dir.path(), 0).await;
    assert!(recorded(dir.path()).is_empty());

    // The lock went with the holder; with --yes the run goes ahead.
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_converged(&admin, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_removal_needs_allow_mass_removal() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let users: Vec<String> = (0..12).map(|i| format!("ou_m{i:02}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let dir = config_dir(&Config::default().chat("oc_mass").users(&["dash"], &users));
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    // 8 of 12 applied targets would go.
    Config::default()
        .chat("oc_mass")
        .users(&["dash"], &users[..4])
        .write(dir.path());
    let sent = admin.calls().await.len();
    apply(&emu, dir.path(), &[])
        .await
        .assert_code(1)
        .assert_stderr("mass removal refused: 8 of 12 applied targets")
        .assert_stderr("--allow-mass-removal");
    assert_nothing_applied(&admin, dir.path(), sent).await;
    assert_eq!(recorded(dir.path()).len(), 12);

    apply(&emu, dir.path(), &["--allow-mass-removal"])
        .await
        .assert_code(0);
    assert_converged(&admin, dir.path()).await;
    assert_eq!(recorded(dir.path()), desired(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_applies_exactly_its_calls_and_is_refused_when_stale_or_altered() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let users: Vec<String> = (0..30).map(|i| format!("ou_p{i:02}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let reviewed = Config::default()
        .chat("oc_plan")
        .everyone(&["status"])
        .users(&["runbook", "ack"], &users)
        .chat("oc_other")
        .users(&["dash"], &["ou_o1"]);
    let dir = config_dir(&reviewed);
    let plan = dir.path().join("reviewed.json");
    let plan_arg = plan.to_str().expect("a UTF-8 path");
    run(feedbuttons(
        &emu,
        dir.path(),
        &["plan", ".", "--out", plan_arg],
    ))
    .await
    .assert_code(0);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).expect("read the plan"))
            .expect("plan JSON");
    assert_eq!(saved["summary"]["requests"], 4, "{saved}");

    // An altered copy is refused.
    let altered = dir.path().join("altered.json");
    std::fs::write(
        &altered,
        std::fs::read_to_string(&plan)
            .expect("read the plan")
            .replace("Status page", "Status pagE"),
    )
    .expect("write the altered plan");
    run(feedbuttons(
        &emu,
        dir.path(),
        &[
            "apply",
            "--plan",
            altered.to_str().expect("UTF-8"),
            "--rate-limit",
            FAST_ARG,
        ],
    ))
    .await
    .assert_code(1)
    .assert_stderr("was altered after it was saved")
    .assert_stderr("nothing was applied");
    assert_eq!(admin.calls().await.len(), 0);

    // The config moves on after the review; the saved plan is applied as reviewed, without
    // --yes and off a terminal.
    Config::default()
        .chat("oc_plan")
        .everyone(&["dash"])
        .users(&["runbook"], &users)
        .chat("oc_late")
        .users(&["dash"], &["ou_l1"])
        .write(dir.path());
    let out = run(feedbuttons(
        &emu,
        dir.path(),
        &["apply", "--plan", plan_arg, "--rate-limit", FAST_ARG],
    ))
    .await;
    out.assert_code(0);
    let log = admin.calls().await;
    let sent: BTreeSet<String> = log
        .iter()
        .map(|r| format!("{} {}", r["query"], r["body"]))
        .collect();
    let planned: BTreeSet<String> = saved["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| {
            format!(
                "\"user_id_type={}\" {}",
                r["user_id_type"].as_str().expect("type"),
                r["body"]
            )
        })
        .collect();
    assert_eq!(
        log.len(),
        saved["requests"].as_array().expect("requests").len()
    );
    assert_eq!(sent, planned, "the calls sent are the saved plan's");
    let reviewed_dir = config_dir(&reviewed);
    assert_eq!(
        recorded(dir.path()),
        desired(reviewed_dir.path()),
        "what was reviewed is what got recorded"
    );

    // The state moved on: applying the same plan again is refused.
    run(feedbuttons(
        &emu,
        dir.path(),
        &["apply", "--plan", plan_arg, "--rate-limit", FAST_ARG],
    ))
    .await
    .assert_code(1)
    .assert_stderr("is stale")
    .assert_stderr("make a new plan");
    assert_nothing_applied(&admin, dir.path(), log.len()).await;

    // A plan saved, then overtaken by another apply, is stale too.
    run(feedbuttons(
        &emu,
        dir.path(),
        &["plan", ".", "--out", plan_arg],
    ))
    .await
    .assert_code(0);
    apply(&emu, dir.path(), &["--chat", "oc_late"])
        .await
        .assert_code(0);
    let sent = admin.calls().await.len();
    run(feedbuttons(
        &emu,
        dir.path(),
        &["apply", "--plan", plan_arg, "--rate-limit", FAST_ARG],
    ))
    .await
    .assert_code(1)
    .assert_stderr("is stale");
    assert_nothing_applied(&admin, dir.path(), sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_limits_the_calls_to_the_chats_named() {
    let emu = fast().await;
    let admin = Admin::of(&emu);
    let config = Config::generated("c", 3, true, 1, 5, 0);
    let dir = config_dir(&config);

    let out = apply(&emu, dir.path(), &["--chat", "oc_c0", "--chat", "oc_c2"]).await;
    out.assert_code(0);
    let log = admin.calls().await;
    assert_eq!(log.len(), 4);
    assert_eq!(
        chats_called(&log),
        BTreeSet::from(["oc_c0".to_owned(), "oc_c2".to_owned()])
    );
    let chats: BTreeSet<String> = recorded(dir.path())
        .into_keys()
        .map(|t| t.chat_id.to_string())
        .collect();
    assert_eq!(
        chats,
        BTreeSet::from(["oc_c0".to_owned(), "oc_c2".to_owned()])
    );
    assert_recorded_present(&admin, dir.path()).await;

    apply(&emu, dir.path(), &[]).await.assert_code(0);
    assert_eq!(
        chats_called(&admin.calls().await[log.len()..]),
        BTreeSet::from(["oc_c1".to_owned()])
    );
    assert_converged(&admin, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_is_refused_with_another_base_url_or_app_id() {
    let emu = fast().await;
    let other = fast().await;
    let admin = Admin::of(&emu);
    let dir = config_dir(&small());
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    Config::default()
        .chat("oc_small")
        .users(&["dash"], &["ou_s1", "ou_s2", "ou_s3"])
        .write(dir.path());
    let sent = admin.calls().await.len();

    // Another endpoint.
    let out = apply(&other, dir.path(), &[]).await;
    out.assert_code(1)
        .assert_stderr(&format!("was applied with base URL {}", emu.base_url()))
        .assert_stderr(&format!("but this run uses base URL {}", other.base_url()))
        .assert_stderr("refusing to mix them");
    assert!(Admin::of(&other).calls().await.is_empty());

    // Another app on the same endpoint.
    let mut other_app = apply_cmd(&emu, dir.path(), &[]);
    other_app.env("FEISHU_APP_ID", "cli_someone_else");
    run(other_app)
        .await
        .assert_code(1)
        .assert_stderr("app id cli_someone_else")
        .assert_stderr("refusing to mix them");
    assert_nothing_applied(&admin, dir.path(), sent).await;

    // The same app and endpoint, with a trailing slash, is the same binding.
    let mut same = apply_cmd(&emu, dir.path(), &[]);
    same.env("FEISHU_BASE_URL", format!("{}/", emu.base_url()));
    run(same).await.assert_code(0);
    assert_converged(&admin, dir.path()).await;
}
