//! The PostgreSQL state with real processes against the emulator: two applies at once (one
//! refused naming the holder; `--lock-timeout` waits), an apply killed mid-run, watch replicas
//! (one leads, a standby takes over when the leader is killed or cut off from the database),
//! two states of one app sharing its rate limit, and `state migrate` both ways.

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;

use crate::apply::{self, Admin, Config, feedbuttons};
use crate::pgserver::{self, PgServer};
use crate::util::{self, Dir};
use crate::watch::{Daemon, chat_text, config, write};

/// `feedbuttons ARGS --state URL` (and its state name, when given) in `dir`.
fn with_state(
    emu: &RunningEmulator,
    dir: &Path,
    url: &str,
    name: Option<&str>,
    args: &[&str],
) -> std::process::Command {
    let mut c = feedbuttons(emu, dir, args);
    c.env("FEEDBUTTONS_STATE", url);
    match name {
        Some(n) => c.env("FEEDBUTTONS_STATE_NAME", n),
        None => c.env_remove("FEEDBUTTONS_STATE_NAME"),
    };
    c
}

fn spawn(mut c: std::process::Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start feedbuttons")
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("wait for feedbuttons")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        util::stdout(o),
        util::stderr(o)
    )
}

/// Who holds the state `name`, as recorded beside its lock (empty when nobody).
fn holder(pg: &PgServer, name: &str) -> String {
    pg.sql(
        "postgres",
        &format!("SELECT coalesce(holder, '') FROM feedbuttons_states WHERE name = '{name}'"),
    )
}

/// Waits up to `limit` for `check`.
async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn slow_emulator(latency: Duration) -> RunningEmulator {
    apply::start(EmulatorConfig {
        latency,
        rate_limit: apply::FAST,
        ..EmulatorConfig::default()
    })
    .await
}

/// `plan --format json` against the state: the plan's requests, or panics with the output.
fn planned_requests(emu: &RunningEmulator, dir: &Path, url: &str, name: Option<&str>) -> usize {
    let out = with_state(emu, dir, url, name, &["plan", ".", "--format", "json"])
        .output()
        .expect("plan");
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a JSON plan");
    doc["requests"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_is_refused_naming_the_holder_and_with_a_lock_timeout_it_waits_then_applies()
{
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    // Ten whole-chat calls of 300 ms each, five a second: the first apply holds the lock for
    // about two seconds.
    let emu = slow_emulator(Duration::from_millis(300)).await;
    let cfg = Config::generated("lk", 10, true, 0, 0, 0);
    let dir = apply::config_dir(&cfg);
    let first = spawn(with_state(
        &emu,
        dir.path(),
        &url,
        None,
        &["apply", ".", "--yes", "--rate-limit", "5"],
    ));
    let pid = first.id();
    until(
        "the first apply to hold the lock",
        Duration::from_secs(20),
        || !lock_sessions(&pg).is_empty(),
    )
    .await;
    // The lock comes first; the holder is written as the writer reads the state, just after.
    until(
        "the first apply to name itself the holder",
        Duration::from_secs(20),
        || {
            pg.try_sql(
                "postgres",
                "SELECT coalesce(holder, '') FROM feedbuttons_states WHERE name = 'default'",
            )
            .is_ok_and(|h| h.contains("apply"))
        },
    )
    .await;

    let refused = with_state(
        &emu,
        dir.path(),
        &url,
        None,
        &["apply", ".", "--yes", "--rate-limit", "5"],
    )
    .output()
    .expect("the second apply");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = util::stderr(&refused);
    assert!(
        err.contains(&format!("locked by feedbuttons apply (pid {pid}"))
            && err.contains("--lock-timeout"),
        "{err}"
    );

    let waited = Instant::now();
    let third = with_state(
        &emu,
        dir.path(),
        &url,
        None,
        &[
            "apply",
            ".",
            "--yes",
            "--rate-limit",
            "5",
            "--lock-timeout",
            "60s",
        ],
    )
    .output()
    .expect("the waiting apply");
    let first = finish(first);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert!(
        util::stdout(&third).contains("No changes"),
        "it planned after the first finished:\n{}",
        text(&third)
    );
    assert!(waited.elapsed() > Duration::from_millis(300));
    assert_eq!(
        apply::applied_calls(&Admin::of(&emu).calls().await).len(),
        10
    );
    assert_eq!(planned_requests(&emu, dir.path(), &url, None), 0);
    assert_eq!(holder(&pg, "default"), "", "the lock was released");
    // A plan says which state it was made against, without the password.
    let plan = with_state(&emu, dir.path(), &url, None, &["plan", "."])
        .output()
        .expect("plan");
    assert!(
        util::stderr(&plan).contains("(state \"default\") at serial"),
        "{}",
        text(&plan)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_killed_with_calls_in_flight_converges_on_the_next_run() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let emu = slow_emulator(Duration::from_millis(400)).await;
    let admin = Admin::of(&emu);
    let cfg = Config::generated("kl", 12, true, 1, 3, 0);
    let dir = apply::config_dir(&cfg);
    let mut first = spawn(with_state(
        &emu,
        dir.path(),
        &url,
        None,
        &["apply", ".", "--yes", "--rate-limit", "6"],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while apply::applied_calls(&admin.calls().await).len() < 4 {
        assert!(Instant::now() < deadline, "no calls were answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    // The next run takes the lock at once (the killed session freed it), waits out the calls
    // the killed one may still have had in flight, and applies the rest.
    let second = with_state(
        &emu,
        dir.path(),
        &url,
        None,
        &["apply", ".", "--yes", "--rate-limit", "100"],
    )
    .output()
    .expect("the second apply");
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(planned_requests(&emu, dir.path(), &url, None), 0);
    // What the state says is what the chats show.
    let seen = admin.seen().await;
    let loaded = feedbuttons::state::open(Path::new(&url))
        .expect("the store")
        .load()
        .expect("the state");
    let desired = apply::desired(dir.path());
    for (target, list) in &desired {
        assert_eq!(loaded.shown(target), Some(list), "{target}");
    }
    let recorded: Vec<_> = loaded
        .targets
        .iter()
        .filter_map(|(t, r)| r.shown().map(|l| (t.clone(), l.clone())))
        .collect();
    let mismatches = seen.mismatches(recorded.iter().map(|(t, l)| (t, l)));
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

/// A watch replica with the state in `url`.
fn replica(emu: &RunningEmulator, dir: &Path, url: &str) -> Daemon {
    Daemon::start_with(
        emu,
        dir,
        &["--state", url, "--debounce", "50ms", "--interval", "1h"],
        &[],
    )
}

async fn role(d: &Daemon) -> String {
    crate::watch::get_json(&d.url("/status")).await["role"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_within_five_seconds_when_the_leader_is_killed() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let emu = crate::watch::emulator(Duration::ZERO).await;
    let dir = Dir::new().file("a.yaml", &config(&[("oc_ha", "One")]));
    let mut leader = replica(&emu, dir.path(), &url);
    leader
        .eventually("the leader to apply", || async {
            (chat_text(&emu, "oc_ha").await.as_deref() == Some("One")).then_some(())
        })
        .await;
    let standby = replica(&emu, dir.path(), &url);
    standby
        .eventually("the standby to stand by", || async {
            (role(&standby).await == "standby").then_some(())
        })
        .await;
    assert_eq!(role(&leader).await, "leader", "{}", leader.log());
    assert_eq!(leader.metric("feedbuttons_leader").await, Some(1.0));
    assert_eq!(standby.metric("feedbuttons_leader").await, Some(0.0));
    let status = crate::watch::get_json(&standby.url("/status")).await;
    assert!(
        status["leader"]
            .as_str()
            .is_some_and(|l| l.contains(&format!("pid {}", leader.child.id()))),
        "{status}"
    );
    assert!(
        status["state"]
            .as_str()
            .is_some_and(|s| s.contains("\"default\"")),
        "{status}"
    );
    // A healthy standby is ready: a rolling update can go on.
    let (code, body) = standby.readyz().await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("standby: "), "{body}");

    leader.child.kill().expect("SIGKILL the leader");
    let _ = leader.child.wait();
    let killed = Instant::now();
    write(&dir.path().join("a.yaml"), &config(&[("oc_ha", "Two")]));
    standby
        .eventually("the standby to apply the edit", || async {
            (chat_text(&emu, "oc_ha").await.as_deref() == Some("Two")).then_some(())
        })
        .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took over in {took:?}:\n{}",
        standby.log()
    );
    assert_eq!(role(&standby).await, "leader");
    assert_eq!(standby.metric("feedbuttons_leader").await, Some(1.0));
    assert_eq!(
        standby
            .metric("feedbuttons_reconcile_reasons_total{reason=\"leader\"}")
            .await,
        Some(1.0)
    );
}

/// The server pids of the sessions holding an advisory lock.
fn lock_sessions(pg: &PgServer) -> Vec<String> {
    pg.sql(
        "postgres",
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

async fn chat_button_requests(d: &Daemon) -> f64 {
    d.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("feedbuttons_api_requests_total{endpoint=\"chat_button\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_stops_sending_and_steps_down_and_the_standby_finishes()
{
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    // Slow calls, so that the cut comes in the middle of a long reconcile.
    let emu = crate::watch::emulator(Duration::from_millis(250)).await;
    let chats: Vec<(String, String)> = (0..40)
        .map(|c| (format!("oc_cut{c}"), "One".to_owned()))
        .collect();
    let as_refs = |v: &[(String, String)]| -> String {
        let r: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        config(&r)
    };
    let dir = Dir::new().file("a.yaml", &as_refs(&chats));
    let leader = Daemon::start_with(
        &emu,
        dir.path(),
        &[
            "--state",
            &url,
            "--debounce",
            "50ms",
            "--interval",
            "1h",
            "--rate-limit",
            "4",
        ],
        &[],
    );
    leader
        .eventually("the leader to start sending", || async {
            (chat_button_requests(&leader).await >= 2.0).then_some(())
        })
        .await;
    let standby = replica(&emu, dir.path(), &url);
    standby
        .eventually("the standby", || async {
            (role(&standby).await == "standby").then_some(())
        })
        .await;
    // Cut every session of the leader's: its lock goes with them.
    let cut = pg.sql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'feedbuttons pid {}'",
            leader.child.id()
        ),
    );
    assert_ne!(cut, "0", "the leader's sessions");
    leader
        .eventually("the leader to step down", || async {
            (role(&leader).await == "standby").then_some(())
        })
        .await;
    assert!(
        leader.log().contains("stopped sending and stands by"),
        "{}",
        leader.log()
    );
    // It sends nothing more: its request count stands still (a call already on the wire may
    // still be answered within the attempt timeout).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_step_down = chat_button_requests(&leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chat_button_requests(&leader).await, after_step_down);
    assert_eq!(leader.metric("feedbuttons_leader").await, Some(0.0));

    // The standby took over (the old leader pauses before it tries again), finishes the job,
    // and the state agrees with the chats.
    standby
        .eventually("the standby to lead", || async {
            (role(&standby).await == "leader").then_some(())
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for (chat, _) in &chats {
            done &= chat_text(&emu, chat).await.as_deref() == Some("One");
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not applied:\n--- leader\n{}\n--- standby\n{}",
            leader.log(),
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leaders = [role(&leader).await, role(&standby).await];
    assert_eq!(
        leaders.iter().filter(|r| *r == "leader").count(),
        1,
        "{leaders:?}"
    );
    let state = feedbuttons::state::open(Path::new(&url))
        .expect("the store")
        .load()
        .expect("the state");
    for (chat, _) in &chats {
        let target = feedbuttons::target::Target::everyone(chat);
        assert!(state.shown(&target).is_some(), "{chat} not recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_states_of_one_app_applying_at_once_share_its_limit_with_no_429() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    // The emulator enforces Feishu's 10 calls a second.
    let emu = apply::start(EmulatorConfig::default()).await;
    let a = apply::config_dir(&Config::generated("sa", 30, true, 0, 0, 0));
    let b = apply::config_dir(&Config::generated("sb", 30, true, 0, 0, 0));
    let run = |dir: &Dir, name: &str| {
        spawn(with_state(
            &emu,
            dir.path(),
            &url,
            Some(name),
            &["apply", ".", "--yes"],
        ))
    };
    let (ra, rb) = (run(&a, "repo-a"), run(&b, "repo-b"));
    let (ra, rb) = (finish(ra), finish(rb));
    assert_eq!(ra.status.code(), Some(0), "{}", text(&ra));
    assert_eq!(rb.status.code(), Some(0), "{}", text(&rb));
    let log = Admin::of(&emu).calls().await;
    let throttled = log.iter().filter(|r| r["status"] == 429).count();
    assert_eq!(throttled, 0, "429s from the emulator");
    let applied = apply::applied_calls(&log);
    assert_eq!(applied.len(), 60);
    let times: Vec<u64> = applied
        .iter()
        .filter_map(|r| r["unix_ms"].as_u64())
        .collect();
    let span = (times[times.len() - 1] - times[0]) as f64 / 1000.0;
    let rate = (times.len() - 1) as f64 / span;
    assert!(
        (9.0..=10.0).contains(&rate),
        "{rate:.2} calls a second together"
    );
    // While both ran, they shared the budget about evenly (each process starts at its own
    // pace, so only the time both were sending counts).
    let of = |tag: &str| -> Vec<u64> {
        applied
            .iter()
            .filter(|r| {
                r["body"]["chat_id"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(tag))
            })
            .filter_map(|r| r["unix_ms"].as_u64())
            .collect()
    };
    let (ta, tb) = (of("oc_sa"), of("oc_sb"));
    let from = ta[0].max(tb[0]);
    let to = ta[ta.len() - 1].min(tb[tb.len() - 1]);
    let within = |t: &[u64]| t.iter().filter(|x| (from..=to).contains(*x)).count();
    let (na, nb) = (within(&ta), within(&tb));
    assert!(na + nb >= 10, "they hardly overlapped: {na} + {nb} calls");
    for n in [na, nb] {
        let share = n as f64 / (na + nb) as f64;
        assert!((0.35..=0.65).contains(&share), "shares {na} and {nb}");
    }
    // Each state holds its own chats only.
    for (name, tag) in [("repo-a", "oc_sa"), ("repo-b", "oc_sb")] {
        let st = feedbuttons::state::open_named(Path::new(&url), Some(name))
            .expect("the store")
            .load()
            .expect("the state");
        assert_eq!(st.targets.len(), 30);
        assert!(st.targets.keys().all(|t| t.chat_id.starts_with(tag)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_migrate_moves_a_state_to_postgres_and_back_with_the_same_plan() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let emu = apply::fast().await;
    let cfg = Config::generated("mg", 4, true, 2, 3, 0);
    let dir = apply::config_dir(&cfg);
    let out = apply::apply_cmd(&emu, dir.path(), &[])
        .output()
        .expect("apply");
    assert!(out.status.success(), "{}", text(&out));
    // One change, planned but not applied: the plan must survive both moves.
    Config::generated("mg", 4, true, 2, 3, 1).write(dir.path());
    let file = apply::state_path(dir.path());
    let plan_json = |state: &str, name: Option<&str>| {
        let o = with_state(
            &emu,
            dir.path(),
            state,
            name,
            &["plan", ".", "--format", "json"],
        )
        .output()
        .expect("plan");
        assert!(o.status.success(), "{}", text(&o));
        util::stdout(&o)
    };
    let file_s = file.to_string_lossy().into_owned();
    let before = plan_json(&file_s, None);

    let to_pg = feedbuttons(
        &emu,
        dir.path(),
        &[
            "state",
            "migrate",
            "--from",
            &file_s,
            "--to",
            &url,
            "--to-name",
            "team",
        ],
    )
    .output()
    .expect("migrate");
    assert!(to_pg.status.success(), "{}", text(&to_pg));
    let said = util::stdout(&to_pg);
    assert!(
        said.contains("lineage") && said.contains("serial"),
        "{said}"
    );
    assert_eq!(plan_json(&url, Some("team")), before);

    // Into a state that already holds something: refused, nothing changed.
    let again = feedbuttons(
        &emu,
        dir.path(),
        &[
            "state",
            "migrate",
            "--from",
            &file_s,
            "--to",
            &url,
            "--to-name",
            "team",
        ],
    )
    .output()
    .expect("migrate again");
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        util::stderr(&again).contains("already holds a state"),
        "{}",
        text(&again)
    );

    let back = dir.path().join("back.json");
    let back_s = back.to_string_lossy().into_owned();
    let to_file = feedbuttons(
        &emu,
        dir.path(),
        &[
            "state",
            "migrate",
            "--from",
            &url,
            "--from-name",
            "team",
            "--to",
            &back_s,
        ],
    )
    .output()
    .expect("migrate back");
    assert!(to_file.status.success(), "{}", text(&to_file));
    assert_eq!(plan_json(&back_s, None), before);
    let original = feedbuttons::state::open(&file)
        .expect("file")
        .load()
        .expect("load");
    let returned = feedbuttons::state::open(&back)
        .expect("file")
        .load()
        .expect("load");
    assert_eq!(original, returned);
}
