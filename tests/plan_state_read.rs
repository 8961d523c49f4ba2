//! `feedbuttons plan` reads the applied state on a thread of its own while the config is parsed
//! and checked. A user must not be able to tell: a config error is the one (and only) thing
//! reported, nothing is read into or written to the state's store for an invalid config, `--out`
//! is refused as before, and an unreachable or stuck state does not hold up a config error.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pgserver;
use crate::util::{self, Dir};

/// A config large enough that parsing it takes a while (50,000 users), whose last chat names a
/// button nobody defined: the error is found only at the end, long after the state was read.
fn slow_invalid_config() -> Dir {
    let mut yaml = String::from(
        "version: 1\nbuttons:\n  runbook:\n    text: Runbook\n    url: https://example.com/r\nchats:\n",
    );
    for c in 0..200 {
        yaml.push_str(&format!(
            "  - chat_id: oc_{c:04}\n    assign:\n      - buttons: [runbook]\n        users:\n"
        ));
        for u in 0..250 {
            yaml.push_str(&format!("          - ou_{c:04}x{u:04}\n"));
        }
    }
    yaml.push_str(
        "  - chat_id: oc_last\n    assign:\n      - buttons: [nope]\n        users: [ou_x]\n",
    );
    Dir::new().file("buttons.yaml", &yaml)
}

const CONFIG_ERROR: &str = "button `nope` is not defined";

/// `feedbuttons plan DIR ARGS`, without inherited settings, killed if it takes over `limit`.
fn plan_within(dir: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(util::bin())
        .arg("plan")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("FEISHU_APP_ID")
        .env_remove("FEISHU_APP_SECRET")
        .env_remove("FEISHU_BASE_URL")
        .env_remove("FEEDBUTTONS_STATE")
        .env_remove("FEEDBUTTONS_STATE_NAME")
        .env_remove("FEEDBUTTONS_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run feedbuttons");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "plan {args:?} still running after {limit:?}\n{}",
                util::stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    (child.wait_with_output().expect("output"), elapsed)
}

/// Exit 1 with the config's error, and nothing else said: no word of the state.
fn assert_only_the_config_error(out: &Output, what: &str) {
    let err = util::stderr(out);
    assert_eq!(out.status.code(), Some(1), "{what}:\n{err}");
    assert!(err.contains(CONFIG_ERROR), "{what}:\n{err}");
    assert!(
        util::stdout(out).is_empty(),
        "{what}: {}",
        util::stdout(out)
    );
    for word in ["state", "journal", "snapshot", "WARN"] {
        assert!(!err.contains(word), "{what}: {word:?} in\n{err}");
    }
}

/// A state that cannot be read (corrupt snapshot, corrupt journal, a directory, a file where
/// a directory should be) and an invalid config: the config's error wins, as it did when the
/// state was read only after the config.
#[test]
fn an_invalid_config_is_reported_alone_whatever_is_wrong_with_the_state() {
    let cfg = slow_invalid_config();
    let states = Dir::new();
    let s = states.path();
    std::fs::write(
        s.join("corrupt.json"),
        "{\"format_version\": 2, \"chats\": [",
    )
    .expect("write");
    std::fs::write(s.join("journal.json"), "").expect("write");
    std::fs::write(s.join("journal.journal"), "not a journal line\nnor this\n").expect("write");
    std::fs::create_dir(s.join("dir.json")).expect("mkdir");
    std::fs::write(s.join("file"), "a file").expect("write");
    for state in [
        s.join("corrupt.json"),
        s.join("journal.json"),
        s.join("dir.json"),
        s.join("file/state.json"),
        s.join("no/such/dir/state.json"),
        s.join("state.lock"),
    ] {
        let state = state.to_str().expect("utf-8");
        let (out, _) = plan_within(
            cfg.path(),
            &["--state", state, "--detailed-exitcode"],
            Duration::from_secs(60),
        );
        assert_only_the_config_error(&out, state);
    }
}

/// The snapshot or journal is a FIFO nobody writes to: reading it would block forever. An
/// invalid config is still reported at once; the reader stuck on the FIFO does not keep the
/// process alive.
#[cfg(unix)]
#[test]
fn an_invalid_config_is_reported_at_once_while_the_state_read_is_stuck_on_a_fifo() {
    let cfg = Dir::new().file(
        "buttons.yaml",
        "version: 1\nchats:\n  - chat_id: oc_a\n    assign:\n      - buttons: [nope]\n        users: [ou_x]\n",
    );
    let states = Dir::new();
    for name in ["fifo.json", "other.journal"] {
        let fifo = states.path().join(name);
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
    }
    for state in ["fifo.json", "other.json"] {
        let state = states.path().join(state);
        let (out, took) = plan_within(
            cfg.path(),
            &["--state", state.to_str().expect("utf-8")],
            Duration::from_secs(30),
        );
        assert_only_the_config_error(&out, &state.display().to_string());
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}

/// A journal whose last line was torn by a crash is read with a warning. With an invalid
/// config the plan stops at the config: the warning belongs to a state read the user never
/// got to, and printed before the config's error it buries the one thing to fix (before the
/// state was read on a thread, it was never printed).
#[test]
fn a_torn_journal_warning_never_precedes_or_joins_a_config_error() {
    let cfg = slow_invalid_config();
    let journal = cfg.path().join(".feedbuttons/state.journal");
    std::fs::create_dir_all(journal.parent().expect("parent")).expect("mkdir");
    std::fs::write(&journal, "{\"serial\": 1, \"torn").expect("write");
    let (out, _) = plan_within(cfg.path(), &[], Duration::from_secs(60));
    assert_only_the_config_error(&out, "torn journal");
}

/// `--out` onto the state's own files or a config file is refused, the config's error first
/// when the config is invalid, and nothing is written either way.
#[test]
fn plan_out_onto_the_state_or_config_is_refused_while_the_state_is_read() {
    let valid = Dir::new().file(
        "buttons.yaml",
        "version: 1\nbuttons:\n  r:\n    text: R\n    url: https://example.com/r\nchats:\n  - chat_id: oc_a\n    assign:\n      - buttons: [r]\n        users: [ou_x]\n",
    );
    let fb = valid.path().join(".feedbuttons");
    std::fs::create_dir_all(&fb).expect("mkdir");
    // A state whose journal is torn, so that the reader has work (and a warning) to give.
    std::fs::write(fb.join("state.journal"), "{\"torn").expect("write");
    let invalid = slow_invalid_config();
    for (cfg, out_name, refused) in [
        (&valid, ".feedbuttons/state.journal", "the state journal"),
        (&valid, ".feedbuttons/state.json", "the state snapshot"),
        (&valid, ".feedbuttons/state.lock", "the state lock"),
        (&valid, ".feedbuttons/state.json.tmp", "next snapshot"),
        (&valid, "buttons.yaml", "a file of the config"),
        (&invalid, ".feedbuttons/state.journal", CONFIG_ERROR),
        (&invalid, "buttons.yaml", CONFIG_ERROR),
    ] {
        let before = std::fs::read(cfg.path().join(out_name)).ok();
        let out_path = cfg.path().join(out_name);
        let (out, _) = plan_within(
            cfg.path(),
            &["--out", out_path.to_str().expect("utf-8")],
            Duration::from_secs(60),
        );
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{out_name}: {err}");
        assert!(err.contains(refused), "{out_name}: {err}");
        assert_eq!(
            std::fs::read(cfg.path().join(out_name)).ok(),
            before,
            "{out_name} was written"
        );
    }
}

/// A PostgreSQL state that never answers (a proxy with nothing behind it): an invalid config
/// is reported at once, not after the database's timeouts; so is an `--out` onto the config.
#[test]
fn an_invalid_config_or_out_is_reported_at_once_while_the_database_never_answers() {
    let port = util::silent_server();
    let url =
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable&connect_timeout=30");
    let invalid = Dir::new().file(
        "buttons.yaml",
        "version: 1\nchats:\n  - chat_id: oc_a\n    assign:\n      - buttons: [nope]\n        users: [ou_x]\n",
    );
    let (out, took) = plan_within(invalid.path(), &["--state", &url], Duration::from_secs(60));
    assert_only_the_config_error(&out, "a database that never answers");
    assert!(took < Duration::from_secs(5), "{took:?}");

    let valid = Dir::new().file(
        "buttons.yaml",
        "version: 1\nbuttons:\n  r:\n    text: R\n    url: https://example.com/r\nchats:\n  - chat_id: oc_a\n    assign:\n      - buttons: [r]\n        users: [ou_x]\n",
    );
    let onto = valid.path().join("buttons.yaml");
    let (out, took) = plan_within(
        valid.path(),
        &["--state", &url, "--out", onto.to_str().expect("utf-8")],
        Duration::from_secs(60),
    );
    util::assert_error(&out, "a file of the config");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A plan with an invalid config must not touch the state's database: before the state was
/// read on a thread, `plan` reported the config's error without connecting, so a fresh
/// database stayed empty. Now the reader connects and migrates the schema (creating the
/// tables) while the config is still being parsed, for a plan that then stops at the config.
#[test]
fn an_invalid_config_leaves_a_fresh_state_database_untouched() {
    let Some(pg) = pgserver::start() else { return };
    pg.create_db("untouched");
    let cfg = slow_invalid_config();
    let url = pg.url("untouched");
    let (out, _) = plan_within(cfg.path(), &["--state", &url], Duration::from_secs(60));
    assert_only_the_config_error(&out, "a fresh database");
    // The reader may still be at it when the process exits: give it no chance to hide.
    std::thread::sleep(Duration::from_millis(300));
    let tables = pg.sql(
        "untouched",
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'feedbuttons%'",
    );
    assert_eq!(tables, "0", "the plan created tables:\n{}", pg.log());
}

/// With a valid config, a plan against PostgreSQL reads the state as before: the run says
/// which state it planned against, and `--detailed-exitcode` gives 2 for changes.
#[test]
fn a_plan_against_postgres_still_reads_the_state_after_a_valid_config() {
    let Some(pg) = pgserver::start() else { return };
    pg.create_db("plain");
    let cfg = Dir::new().file(
        "buttons.yaml",
        "version: 1\nbuttons:\n  r:\n    text: R\n    url: https://example.com/r\nchats:\n  - chat_id: oc_a\n    assign:\n      - buttons: [r]\n        users: [ou_x]\n",
    );
    let url = pg.url("plain");
    let (out, _) = plan_within(
        cfg.path(),
        &["--state", &url, "--detailed-exitcode"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    assert!(
        util::stdout(&out).contains("oc_a"),
        "{}",
        util::stdout(&out)
    );
    assert!(
        util::stderr(&out).contains("Planned against"),
        "{}",
        util::stderr(&out)
    );
}

/// `--base` reads no state at all, not even on the side: a PostgreSQL state named by
/// `--state` is never connected to (a fresh database keeps no tables).
#[test]
fn a_plan_against_a_base_never_touches_the_state_database() {
    let Some(pg) = pgserver::start() else { return };
    pg.create_db("based");
    let root = util::root();
    let teams = root.join("examples/teams");
    let url = pg.url("based");
    let (out, _) = plan_within(
        &teams,
        &[
            "--base",
            teams.to_str().expect("utf-8"),
            "--state",
            &url,
            "--detailed-exitcode",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    std::thread::sleep(Duration::from_millis(300));
    let tables = pg.sql(
        "based",
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'feedbuttons%'",
    );
    assert_eq!(tables, "0", "{}", pg.log());
}
