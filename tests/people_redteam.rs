//! Red team for issue 15 (people, the lock): a hand-edited lock, and a department listing that
//! comes back without some people's ids.

use std::collections::BTreeSet;

use feedbuttons::config::people::{Source, Wanted};
use feedbuttons::emulator::{DirectoryRateLimit, Emulator, EmulatorConfig, fixtures::Fixtures};
use feedbuttons::feishu::client::directory::Directory;
use feedbuttons::feishu::wire::UserIdType;
use feedbuttons::settings::{Connection, Credentials, Endpoint};

use crate::util::{self, Dir, stderr, stdout};

const CONFIG: &str = r#"version: 1
buttons:
  runbook: {text: Runbook, url: "https://wiki.example.com/runbook"}
user_sets:
  oncall:
    - members_of: oc_oncall
chats:
  - chat_id: oc_war
    assign:
      - users: [alice@example.com]
        buttons: [runbook]
      - user_sets: [oncall]
        buttons: [runbook]
"#;

fn lock_with(alice: &str, members: &[&str]) -> String {
    let mut s = format!(
        "version: 1\npeople:\n  alice@example.com: {{open_id: {alice}}}\nmembers_of:\n  oc_oncall:\n    open_id:\n"
    );
    for m in members {
        s.push_str(&format!("      - {m}\n"));
    }
    s.push_str("departments: {}\nnames: {}\n");
    s
}

/// A lock is not to be edited, but one is: ids of another type filed under `open_id` (a lock
/// copied from a config for a chat of `union_id`), an id that is no id, a member listed twice.
/// Plans must not carry them to `apply`: `validate` refuses the lock, naming what is wrong.
#[test]
fn a_hand_edited_lock_with_ids_that_are_not_its_types_is_refused() {
    // The lock as resolve would write it is fine.
    let good = Dir::new()
        .file("people.yaml", CONFIG)
        .file("feedbuttons.lock", &lock_with("ou_alice", &["ou_bob"]));
    let out = util::run(good.path(), &["validate", "."]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    for (lock, says) in [
        (lock_with("on_alice", &["ou_bob"]), "not a valid open_id"),
        (lock_with("ou_alice", &["on_bob"]), "not a valid open_id"),
        (lock_with("\"\"", &["ou_bob"]), "not a valid open_id"),
        (lock_with("ou_alice", &["everyone"]), "not a valid open_id"),
        (lock_with("ou_alice", &["ou_bob", "ou_bob"]), "twice"),
    ] {
        let dir = Dir::new()
            .file("people.yaml", CONFIG)
            .file("feedbuttons.lock", &lock);
        let out = util::run(dir.path(), &["validate", "."]);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{lock}\n{said}");
        assert!(
            said.contains("feedbuttons.lock") && said.contains(says),
            "{lock}\n{said}"
        );
        let plan = util::run(dir.path(), &["plan", "."]);
        assert_ne!(plan.status.code(), Some(0), "{lock}\n{}", stdout(&plan));
    }
}

/// An app whose scopes give a department's people without their `user_id`s: the department
/// fails, and the resolution holds no list for it (the watch daemon reconciles with what the
/// resolution holds, so an empty list there would take the buttons of the whole department).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_listed_without_ids_gives_no_partial_member_list() {
    let fixtures = r#"
apps:
  - {app_id: cli_ids, app_secret: s-ids, scopes: [contact:contact.base:readonly]}
departments:
  - {department_id: sre, open_department_id: od-sre, name: SRE}
people:
  - {open_id: ou_alice, union_id: on_alice, user_id: alice, name: Alice, departments: [od-sre]}
  - {open_id: ou_carol, union_id: on_carol, user_id: carol, name: Carol, departments: [od-sre]}
"#;
    let emu = Emulator::start(EmulatorConfig {
        fixtures: Some(Fixtures::parse(fixtures).expect("fixtures")),
        directory_rate_limit: DirectoryRateLimit {
            per_second: 0,
            per_minute: 0,
        },
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let endpoint = Endpoint {
        base_url: emu.base_url(),
        rate_limit: 0,
    };
    let credentials = Credentials::new("cli_ids".into(), "s-ids".to_owned().into()).unwrap();
    let connection = Connection::new(&endpoint, credentials).expect("connection");
    let directory = Directory::new(connection.client, 0, 0);
    let sre = Source::Department("od-sre".into());
    let mut wanted = Wanted::default();
    wanted.sources.insert(
        sre.clone(),
        BTreeSet::from([UserIdType::OpenId, UserIdType::UserId]),
    );
    let resolution = feedbuttons::resolve::resolve(&directory, &wanted)
        .await
        .expect("resolve");
    assert!(
        resolution.failed_sources.contains_key(&sre),
        "{resolution:?}"
    );
    let listed = resolution.lock.source(&sre);
    assert_eq!(
        listed.and_then(|by_type| by_type.get(&UserIdType::UserId)),
        None,
        "{resolution:?}"
    );
    // The open ids came whole.
    assert_eq!(
        listed.and_then(|by_type| by_type.get(&UserIdType::OpenId)),
        Some(&vec!["ou_alice".to_owned(), "ou_carol".to_owned()])
    );
}

/// A lock that cannot be read fails `validate` ("run `feedbuttons resolve` to write it again"),
/// also when the config no longer names anyone; `resolve` must then write it again, and
/// `resolve --check` must fail.
#[test]
fn resolve_replaces_an_unreadable_lock_even_when_the_config_names_nobody() {
    let config = "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/r\"}\nchats:\n  - chat_id: oc_war\n    assign:\n      - users: [ou_alice]\n        buttons: [runbook]\n";
    let dir = Dir::new().file("people.yaml", config).file(
        "feedbuttons.lock",
        "version: 1\npeople: {alice@example.com: [\n",
    );
    let out = util::run(dir.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let check = util::run(dir.path(), &["resolve", ".", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));

    let out = util::run(dir.path(), &["resolve", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = util::run(dir.path(), &["validate", "."]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let check = util::run(dir.path(), &["resolve", ".", "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

/// A directory name is anyone's to set: one holding a terminal escape or a line break must not
/// reach the terminal (`plan`, `state list`, `resolve`'s diff) or forge a line of the PR
/// comment's plan. Labels show such characters escaped; the lock keeps the name as it is.
#[test]
fn labels_never_carry_control_characters() {
    let text = "version: 1\npeople: {}\nmembers_of:\n  oc_x:\n    open_id:\n      - ou_c\ndepartments: {}\nnames:\n  ou_c: \"Eve\\u001b[2J\\n+ \\\"Admin\\\" opens https://evil.example\\u2028\"\n";
    let lock = feedbuttons::lock::Lock::parse(text).expect("a lock");
    assert!(lock.names["ou_c"].contains('\u{1b}'));
    let label = &lock.labels()["ou_c"];
    assert!(
        !label.chars().any(|c| c.is_control() || c == '\u{2028}'),
        "{label:?}"
    );
    assert_eq!(
        label,
        "Eve\\u{1b}[2J\\u{a}+ \"Admin\" opens https://evil.example\\u{2028}"
    );
}

/// A chat of `n` members (three pages of 100 for 250), and a config that gives them buttons.
fn big_chat(n: usize) -> (String, String) {
    let members: Vec<String> = (0..n).map(|i| format!("ou_m{i:04}")).collect();
    let tenant = format!(
        "chats:\n  - chat_id: oc_big\n    members: [{}]\n  - chat_id: oc_war\n    members: everyone\n",
        members.join(", ")
    );
    let config = "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/r\"}\nuser_sets:\n  big:\n    - members_of: oc_big\nchats:\n  - chat_id: oc_war\n    assign:\n      - user_sets: [big]\n        buttons: [runbook]\n";
    (tenant, config.to_owned())
}

/// A directory whose paging goes wrong while answering `code: 0`: a page that gives back the
/// token it was asked with, a token that leads back to the start, `has_more` without a token.
/// Before, the first two ended the listing as if it were whole (the lock, and `watch`, lost
/// everyone past the second page) or looped forever; now the listing fails, the run stops and
/// the committed lock stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_that_repeats_or_never_ends_fails_the_listing() {
    use crate::apply::{Admin, feedbuttons, with_fixtures};
    use feedbuttons::emulator::{BUILTIN_APP_ID, BUILTIN_APP_SECRET};

    let (tenant, config) = big_chat(250);
    let emu = with_fixtures(&tenant).await;
    let dir = Dir::new().file("people.yaml", &config);
    let out = feedbuttons(&emu, dir.path(), &["resolve", "."])
        .output()
        .expect("run feedbuttons");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lock = std::fs::read_to_string(dir.path().join("feedbuttons.lock")).expect("a lock");
    assert!(lock.contains("ou_m0249"), "{lock}");

    let big = Source::MembersOf("oc_big".into());
    let mut wanted = Wanted::default();
    wanted
        .sources
        .insert(big.clone(), BTreeSet::from([UserIdType::OpenId]));
    let admin = Admin::of(&emu);
    for fault in ["no_token", "rewind", "repeat_token"] {
        admin.faults(serde_json::json!({ "listing": fault })).await;
        let endpoint = Endpoint {
            base_url: emu.base_url(),
            rate_limit: 0,
        };
        let credentials =
            Credentials::new(BUILTIN_APP_ID.into(), BUILTIN_APP_SECRET.to_owned().into())
                .expect("credentials");
        let connection = Connection::new(&endpoint, credentials).expect("connection");
        let directory = Directory::new(connection.client, 50, 0);
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            feedbuttons::resolve::resolve(&directory, &wanted),
        )
        .await;
        let Ok(answer) = answer else {
            panic!("{fault}: the listing never ended");
        };
        match answer {
            Err(e) => assert!(e.to_string().contains("oc_big"), "{fault}: {e}"),
            Ok(r) => panic!(
                "{fault}: a listing that never ended was taken as {} members",
                r.lock
                    .source(&big)
                    .and_then(|t| t.get(&UserIdType::OpenId))
                    .map_or(0, Vec::len)
            ),
        }

        // The CLI: nothing written, exit 1, the lock as it was.
        let check = feedbuttons(&emu, dir.path(), &["resolve", ".", "--check"])
            .output()
            .expect("run feedbuttons");
        assert_eq!(check.status.code(), Some(1), "{fault}: {}", stderr(&check));
        let out = feedbuttons(&emu, dir.path(), &["resolve", "."])
            .output()
            .expect("run feedbuttons");
        assert_eq!(out.status.code(), Some(1), "{fault}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("feedbuttons.lock")).expect("a lock"),
            lock,
            "{fault}"
        );
    }
}

/// `watch --resolve-every` while the directory answers every listing with nobody (`code: 0`,
/// no items), as a broken gateway might: before, the daemon took the on-call chat as empty and
/// took the buttons of everyone in it (two of three targets: under the mass-removal guard's
/// floor). Now
/// a source the lock lists people for and the directory lists nobody keeps the members it had,
/// and `/status` says why; only a committed lock empties it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_a_sources_members_when_the_directory_lists_nobody() {
    use crate::apply::{Admin, feedbuttons, with_fixtures};
    use crate::watch::{Daemon, get_json};

    let tenant = "chats:\n  - chat_id: oc_oncall\n    members: [ou_alice, ou_bob]\n  - chat_id: oc_war\n    members: everyone\npeople:\n  - {open_id: ou_alice, name: Alice, email: alice@example.com}\n  - {open_id: ou_bob, name: Bob}\n";
    let config = "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/r\"}\nuser_sets:\n  oncall:\n    - members_of: oc_oncall\nchats:\n  - chat_id: oc_war\n    assign:\n      - user_sets: [oncall]\n        buttons: [runbook]\n      - everyone: true\n        buttons: []\n";
    let emu = with_fixtures(tenant).await;
    let dir = Dir::new().file("people.yaml", config);
    let out = feedbuttons(&emu, dir.path(), &["resolve", "."])
        .output()
        .expect("run feedbuttons");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let state = Dir::new();
    let state_path = state.path().join("state.json");
    let daemon = Daemon::start(
        &emu,
        dir.path(),
        &[
            "--state",
            state_path.to_str().expect("a UTF-8 path"),
            "--resolve-every",
            "200ms",
        ],
    );
    let sees = |user: &'static str| {
        let url = emu.url(&format!("/_emulator/chats/oc_war/users/{user}"));
        async move {
            let v = get_json(&url).await;
            v["buttons"][0]["text"]["text"].as_str().map(str::to_owned)
        }
    };
    for user in ["ou_alice", "ou_bob"] {
        daemon
            .eventually("the on-call people see the runbook", || async {
                sees(user).await.filter(|t| t == "Runbook")
            })
            .await;
    }

    Admin::of(&emu)
        .faults(serde_json::json!({"listing": "empty"}))
        .await;
    let drift = daemon
        .eventually("a look-up of the empty listing", || async {
            let status = get_json(&daemon.url("/status")).await;
            let drift = status["lock_drift"].clone();
            let seen = drift["error"].is_string() || drift["removed"] != serde_json::json!([]);
            seen.then_some(drift)
        })
        .await;
    assert_eq!(drift["removed"], serde_json::json!([]), "{drift}");
    let error = drift["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("members_of: oc_oncall") && error.contains("nobody"),
        "{drift}"
    );
    // Several look-ups and reconciles later, nobody has lost the runbook.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for user in ["ou_alice", "ou_bob"] {
        assert_eq!(sees(user).await.as_deref(), Some("Runbook"), "{user}");
    }
}

/// SIGTERM while a `--resolve-every` look-up waits on a directory that does not answer: a
/// look-up changes nothing and can be dropped. Before, the daemon sat out every attempt's
/// timeout (10 tries of 10 s) before it noticed the signal, past any orchestrator's grace
/// period; now it stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stops_on_sigterm_while_the_directory_hangs() {
    use crate::apply::{Admin, feedbuttons, with_fixtures};
    use crate::watch::Daemon;

    let tenant = "chats:\n  - chat_id: oc_oncall\n    members: [ou_alice]\n  - chat_id: oc_war\n    members: everyone\n";
    let config = "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/r\"}\nuser_sets:\n  oncall:\n    - members_of: oc_oncall\nchats:\n  - chat_id: oc_war\n    assign:\n      - user_sets: [oncall]\n        buttons: [runbook]\n";
    let emu = with_fixtures(tenant).await;
    let dir = Dir::new().file("people.yaml", config);
    let out = feedbuttons(&emu, dir.path(), &["resolve", "."])
        .output()
        .expect("run feedbuttons");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    Admin::of(&emu)
        .faults(serde_json::json!({"latency_ms": 60_000, "directory_only": true}))
        .await;
    let state = Dir::new();
    let state_path = state.path().join("state.json");
    let mut daemon = Daemon::start(
        &emu,
        dir.path(),
        &[
            "--state",
            state_path.to_str().expect("a UTF-8 path"),
            "--resolve-every",
            "1s",
        ],
    );
    // The first look-up is under way (beside the first reconcile).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    daemon.signal("TERM");
    let status = daemon.exit_within(std::time::Duration::from_secs(4)).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

/// Two `resolve`s at once in one checkout (a pre-commit hook and a hand-run, two CI steps)
/// wrote through the same temporary file: one truncated the other's half-written lock, and the
/// slower one's rename found the file gone ("cannot write feedbuttons.lock", exit 1) or renamed
/// the other's mixed bytes into place. Each save now writes its own temporary file: every save
/// succeeds and the lock is always one of the whole locks written.
#[test]
fn two_saves_at_once_never_mix_or_fail() {
    use feedbuttons::lock::Lock;

    let dir = Dir::new();
    let lock_of = |n: usize, prefix: &str| {
        let mut lock = Lock::default();
        let ids = (0..n).map(|i| format!("ou_{prefix}{i:05}")).collect();
        lock.set_source(
            &Source::MembersOf(format!("oc_{prefix}")),
            UserIdType::OpenId,
            ids,
        );
        lock
    };
    let (long, short) = (lock_of(2000, "long"), lock_of(3, "short"));
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for lock in [&long, &short] {
            let (dir, failures) = (dir.path(), &failures);
            s.spawn(move || {
                for _ in 0..200 {
                    if let Err(e) = lock.save(dir) {
                        failures.lock().expect("failures").push(e.to_string());
                    }
                }
            });
        }
        let (dir, failures, long, short) = (dir.path(), &failures, &long, &short);
        s.spawn(move || {
            for _ in 0..400 {
                match Lock::load(dir) {
                    Ok(Some(l)) if l != *long && l != *short => {
                        failures
                            .lock()
                            .expect("failures")
                            .push("a lock that is neither".to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => failures.lock().expect("failures").push(e.to_string()),
                }
            }
        });
    });
    let failures = failures.into_inner().expect("failures");
    assert!(
        failures.is_empty(),
        "{} failures, the first: {:?}",
        failures.len(),
        failures.first()
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("the directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["feedbuttons.lock"], "temporary files left behind");
}

/// `watch --resolve-every 1h` on a checkout that a pull updates: the commit names a new person
/// by email and brings the lock `resolve` wrote for it. Before, the daemon validated with the
/// lock as it was at its last look-up (up to an hour old): the new email had "no open_id in
/// feedbuttons.lock", the whole config was invalid and nothing was applied, in any chat, until
/// the next look-up. Now the committed lock is read as it stands, with the live members of the
/// sources it shares with the last look-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reads_a_newly_committed_lock_between_look_ups() {
    use crate::apply::{feedbuttons, with_fixtures};
    use crate::watch::{Daemon, get_json};

    let tenant = "chats:\n  - chat_id: oc_oncall\n    members: [ou_alice]\n  - chat_id: oc_war\n    members: everyone\npeople:\n  - {open_id: ou_alice, name: Alice}\n  - {open_id: ou_erin, name: Erin, email: erin@example.com}\n";
    let config = "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/r\"}\nuser_sets:\n  oncall:\n    - members_of: oc_oncall\nchats:\n  - chat_id: oc_war\n    assign:\n      - user_sets: [oncall]\n        buttons: [runbook]\n";
    let emu = with_fixtures(tenant).await;
    let checkout = Dir::new().file("people.yaml", config);
    let resolve = |dir: &std::path::Path| {
        let out = feedbuttons(&emu, dir, &["resolve", "."])
            .output()
            .expect("run feedbuttons");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    resolve(checkout.path());
    let state = Dir::new();
    let state_path = state.path().join("state.json");
    let daemon = Daemon::start(
        &emu,
        checkout.path(),
        &[
            "--state",
            state_path.to_str().expect("a UTF-8 path"),
            "--resolve-every",
            "1h",
            "--debounce",
            "50ms",
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

    // The commit, made elsewhere (config and lock together), lands in the checkout.
    let edited = config.replace(
        "        buttons: [runbook]\n",
        "        buttons: [runbook]\n      - users: [erin@example.com]\n        buttons: [runbook]\n",
    );
    let elsewhere = Dir::new().file("people.yaml", &edited);
    resolve(elsewhere.path());
    let lock = std::fs::read_to_string(elsewhere.path().join("feedbuttons.lock")).expect("lock");
    std::fs::write(checkout.path().join("feedbuttons.lock"), lock).expect("write the lock");
    std::fs::write(checkout.path().join("people.yaml"), &edited).expect("write the config");
    daemon
        .eventually("Erin, newly named by email, sees the runbook", || async {
            sees("ou_erin").await.filter(|t| t == "Runbook")
        })
        .await;
}

/// A mobile written without its country code reads as an id (only `+...` is a mobile): the
/// error named the wrong fix ("set `user_id_type`"). It now says how to write a mobile.
#[test]
fn a_mobile_without_its_country_code_gets_told_how_to_write_one() {
    let dir = Dir::new().file(
        "chats.yaml",
        "version: 1\nchats:\n  - chat_id: oc_war\n    assign:\n      - users: [\"13800000005\"]\n        buttons: [{text: Runbook, url: \"https://wiki.example.com/r\"}]\n",
    );
    let out = util::run(dir.path(), &["validate", "."]);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("chats.yaml:5:17"), "{err}");
    assert!(
        err.contains("write it with `+` and its country code, in quotes: \"+8613800000005\""),
        "{err}"
    );
    // With its country code already, `+` is all it lacks.
    let dir = Dir::new().file(
        "chats.yaml",
        "version: 1\nchats:\n  - chat_id: oc_war\n    assign:\n      - users: [\"8613800000005\"]\n        buttons: [{text: Runbook, url: \"https://wiki.example.com/r\"}]\n",
    );
    let out = util::run(dir.path(), &["validate", "."]);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        err.contains("\"+8613800000005\" if it begins with its country code"),
        "{err}"
    );
}

/// A `--resolve-every` look-up waits on a directory that does not answer (each attempt its
/// timeout, ten attempts): before, the daemon's loop waited with it, and an edit pushed
/// meanwhile reached Feishu only once the look-up gave up, minutes later. The look-up now runs
/// beside the reconciles: the edit goes out at once, with the members last found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_is_applied_while_a_look_up_waits_on_a_directory_that_hangs() {
    use crate::apply::{Admin, feedbuttons, with_fixtures};
    use crate::watch::Daemon;

    let tenant = "chats:\n  - chat_id: oc_oncall\n    members: [ou_alice]\n  - chat_id: oc_war\n    members: everyone\n  - chat_id: oc_ops\n    members: everyone\n";
    let config = "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/r\"}\nuser_sets:\n  oncall:\n    - members_of: oc_oncall\nchats:\n  - chat_id: oc_war\n    assign:\n      - user_sets: [oncall]\n        buttons: [runbook]\n";
    let emu = with_fixtures(tenant).await;
    let dir = Dir::new().file("people.yaml", config);
    let out = feedbuttons(&emu, dir.path(), &["resolve", "."])
        .output()
        .expect("run feedbuttons");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
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
            "--debounce",
            "50ms",
        ],
    );
    let sees = |chat: &str| {
        let url = emu.url(&format!("/_emulator/chats/{chat}/users/ou_alice"));
        async move {
            let v = crate::watch::get_json(&url).await;
            v["buttons"][0]["text"]["text"].as_str().map(str::to_owned)
        }
    };
    daemon
        .eventually("Alice sees the runbook", || async {
            sees("oc_war").await.filter(|t| t == "Runbook")
        })
        .await;
    // The directory stops answering; the chat-button API works on.
    Admin::of(&emu)
        .faults(serde_json::json!({"latency_ms": 120_000, "directory_only": true}))
        .await;
    // Past the next look-up's start.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let edited = std::time::Instant::now();
    std::fs::write(
        dir.path().join("people.yaml"),
        config.replace("chat_id: oc_war", "chat_id: oc_ops"),
    )
    .expect("edit");
    daemon
        .eventually("the edit reaches Feishu", || async {
            sees("oc_ops").await.filter(|t| t == "Runbook")
        })
        .await;
    assert!(
        edited.elapsed() < std::time::Duration::from_secs(5),
        "the edit took {:?}:\n{}",
        edited.elapsed(),
        daemon.log()
    );
}

/// A `resolve` killed mid-write leaves its temporary file (`.feedbuttons.lock.*.tmp`), which a
/// `git add -A` would commit. The next save removes those older than ten minutes, and leaves a
/// fresh one alone (another save may be writing it right now).
#[test]
fn a_save_sweeps_temporary_files_that_killed_saves_left() {
    let dir = Dir::new();
    let stale = dir.path().join(".feedbuttons.lock.killed.tmp");
    let fresh = dir.path().join(".feedbuttons.lock.writing.tmp");
    let other = dir.path().join("notes.tmp");
    for f in [&stale, &fresh, &other] {
        std::fs::write(f, "half a lock").expect("write");
    }
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in [&stale, &other] {
        std::fs::File::options()
            .write(true)
            .open(f)
            .and_then(|file| file.set_modified(hour_ago))
            .expect("age the file");
    }
    feedbuttons::lock::Lock::default()
        .save(dir.path())
        .expect("save");
    assert!(!stale.exists(), "a killed save's temporary file is left");
    assert!(fresh.exists(), "a save under way lost its temporary file");
    assert!(other.exists(), "a file that is no lock's was removed");
    assert!(dir.path().join("feedbuttons.lock").exists());
}
