//! The PostgreSQL state store against a real server: what is recorded is what loads, one writer
//! at a time (refusals name the holder, `--lock-timeout` waits), a writer whose connection is
//! killed stops and is fenced, a writer taking over waits for the calls the last one may still
//! have in flight, named states stay apart, schema versions, and the shared rate budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use feedbuttons::feishu::client::Budget;
use feedbuttons::feishu::wire::{ActionType, Button, Text, UserIdType};
use feedbuttons::state::postgres::{PgStore, PgUrl, budget::PgBudget};
use feedbuttons::state::{
    self, Binding, OwedReason, Pending, PendingStatus, Record, StateError, StateStore, TargetRecord,
};
use feedbuttons::target::{ButtonList, Target};

use crate::pgserver;

fn list(text: &str) -> ButtonList {
    vec![Button {
        multi_url: None,
        action_type: ActionType::Webhook,
        text: Text {
            text: text.to_owned(),
        },
        button_type: None,
        action_map: None,
    }]
}

fn user(chat: &str, id: &str) -> Target {
    Target::user(chat, UserIdType::OpenId, id)
}

fn store(url: &str, name: &str) -> PgStore {
    PgStore::new(url, name).expect("a store")
}

/// The backends holding an advisory lock (the writers' lock connections).
fn lock_holders(pg: &pgserver::PgServer) -> Vec<String> {
    pg.sql(
        "postgres",
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn what_is_recorded_is_what_loads_in_every_condition() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    assert_eq!(
        s.load().expect("an empty state"),
        state::AppliedState::new()
    );
    let mut w = s.writer("test").expect("the writer");
    w.bind(&Binding::new("https://open.feishu.cn", "cli_a"))
        .expect("bind");
    let shared = Arc::new(list("Shared"));
    w.record(&[
        Record::Set {
            target: Target::everyone("oc_1"),
            buttons: std::sync::Arc::new(list("All")),
        },
        Record::Set {
            target: user("oc_1", "ou_a"),
            buttons: std::sync::Arc::new(list("Mine")),
        },
        Record::Put {
            target: user("oc_1", "ou_f"),
            record: TargetRecord::new(Some(shared.clone()), true, None).expect("a follower"),
        },
        Record::Put {
            target: user("oc_2", "ou\tb"),
            record: TargetRecord::new(
                None,
                false,
                Some(Pending {
                    status: PendingStatus::Waiting {
                        goal: shared.clone(),
                        goal_follows: false,
                        unsure: true,
                        reason: "The user is not in the chat".to_owned(),
                        tries: 2,
                        last_try: 1_764_000_100,
                    },
                    since: 1_764_000_000,
                }),
            )
            .expect("a waiting record"),
        },
        Record::Put {
            target: user("oc_2", "ou_c"),
            record: TargetRecord::new(
                Some(shared.clone()),
                false,
                Some(Pending {
                    status: PendingStatus::Owed {
                        reason: OwedReason::WholeChat,
                    },
                    since: 1_764_000_001,
                }),
            )
            .expect("an owed record"),
        },
    ])
    .expect("record");
    w.record(&[Record::Forget {
        target: user("oc_1", "ou_a"),
    }])
    .expect("forget");
    let recorded = w.state().clone();
    assert_eq!(recorded.serial, 3);
    drop(w);
    let loaded = s.load().expect("load");
    assert_eq!(loaded, recorded);
    // Compaction drops the lists nothing refers to any more ("Mine").
    let mut w = s.writer("test").expect("the writer");
    w.compact().expect("compact");
    drop(w);
    assert_eq!(
        pg.sql("postgres", "SELECT count(*) FROM feedbuttons_lists"),
        "2"
    );
    assert_eq!(s.load().expect("load"), recorded);
}

#[test]
fn one_writer_at_a_time_the_refusal_names_the_holder_and_a_timeout_waits() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    let held = s.writer(&state::holder("apply")).expect("the first writer");
    let err = s
        .writer(&state::holder("watch"))
        .err()
        .expect("the second is refused");
    let StateError::Locked { holder, location } = &err else {
        panic!("not Locked: {err:?}");
    };
    assert!(holder.starts_with("feedbuttons apply (pid "), "{holder}");
    assert!(holder.contains(" since 20"), "{holder}");
    assert!(location.contains("(state \"default\")"), "{location}");
    assert!(err.to_string().contains("--lock-timeout"), "{err}");

    // Waiting: the lock is taken as soon as the first writer lets go.
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let w = s.writer_waiting(&state::holder("apply"), Duration::from_secs(20));
            (w.map(drop), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    drop(held);
    let (taken, waited) = waiter.join().expect("the waiter");
    taken.expect("taken after waiting");
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A timeout that runs out is still a refusal naming the holder.
    let _held = s.writer(&state::holder("apply")).expect("taken again");
    let started = Instant::now();
    let err = s
        .writer_waiting(&state::holder("watch"), Duration::from_millis(600))
        .err()
        .expect("refused after waiting");
    assert!(matches!(err, StateError::Locked { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(550));
}

#[test]
fn a_writer_whose_connection_is_killed_stops_and_can_record_nothing_after_a_takeover() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    let mut old = s.writer("old").expect("the writer");
    old.record(&[Record::Set {
        target: user("oc_1", "ou_a"),
        buttons: std::sync::Arc::new(list("Before")),
    }])
    .expect("record");
    let lost = old.lost().expect("a PostgreSQL writer can lose its lock");
    let pids = lock_holders(&pg);
    assert_eq!(pids.len(), 1, "{pids:?}");
    pg.sql(
        "postgres",
        &format!("SELECT pg_terminate_backend({})", pids[0]),
    );
    // The lock goes with the session: another writer takes it at once.
    let mut new = s.writer("new").expect("taken over");
    let started = Instant::now();
    while !*lost.borrow() {
        assert!(
            started.elapsed() < feedbuttons::state::postgres::LEASE + Duration::from_secs(2),
            "the old writer did not notice"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = old
        .record(&[Record::Set {
            target: user("oc_1", "ou_a"),
            buttons: std::sync::Arc::new(list("Stale")),
        }])
        .expect_err("fenced");
    assert!(matches!(err, StateError::Lost { .. }), "{err:?}");
    new.record(&[Record::Set {
        target: user("oc_1", "ou_a"),
        buttons: std::sync::Arc::new(list("After")),
    }])
    .expect("the new writer records");
    drop(old);
    drop(new);
    let loaded = s.load().expect("load");
    assert_eq!(loaded.shown(&user("oc_1", "ou_a")), Some(&list("After")));
}

#[test]
fn a_fenced_writer_that_kept_its_connection_records_nothing() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    let mut old = s.writer("old").expect("the writer");
    // Another writer took the state over (the generation moved on) while the old one's
    // session lives on, as a partition that healed too late would leave it.
    pg.sql(
        "postgres",
        "UPDATE feedbuttons_states SET generation = generation + 1",
    );
    let err = old
        .record(&[Record::Set {
            target: user("oc_1", "ou_a"),
            buttons: std::sync::Arc::new(list("Stale")),
        }])
        .expect_err("fenced by the generation");
    assert!(matches!(err, StateError::Lost { .. }), "{err:?}");
    assert!(*old.lost().expect("a receiver").borrow());
    assert_eq!(
        pg.sql("postgres", "SELECT count(*) FROM feedbuttons_targets"),
        "0"
    );
}

#[test]
fn a_writer_taking_over_from_a_busy_one_waits_for_its_calls_and_from_an_idle_one_does_not() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    let mut busy = s.writer("busy").expect("the writer");
    busy.calls_in_flight(1).expect("calls in flight");
    pg.sql(
        "postgres",
        &format!("SELECT pg_terminate_backend({})", lock_holders(&pg)[0]),
    );
    let next = s.writer("next").expect("taken over");
    let from = next.sends_from().expect("a wait");
    let bound = feedbuttons::state::postgres::LEASE + feedbuttons::state::postgres::ATTEMPT_TIMEOUT;
    let left = from.saturating_duration_since(Instant::now());
    assert!(
        left > bound - Duration::from_secs(2) && left <= bound + Duration::from_secs(1),
        "{left:?}"
    );
    drop(busy);
    drop(next);

    // On a state of its own: the busy writer's calls above can still land for a while, and
    // every writer that takes this state over within that time must wait for them too.
    let s = store(&url, "idle-case");
    let mut idle = s.writer("idle").expect("the writer");
    idle.calls_in_flight(1).expect("busy");
    idle.calls_in_flight(0).expect("idle");
    // The heartbeat records that nothing is in flight.
    std::thread::sleep(feedbuttons::state::postgres::HEARTBEAT * 2);
    pg.sql(
        "postgres",
        &format!("SELECT pg_terminate_backend({})", lock_holders(&pg)[0]),
    );
    let next = s.writer("next").expect("taken over");
    assert_eq!(next.sends_from(), None);
}

#[test]
fn named_states_in_one_database_stay_apart_and_a_file_state_has_no_name() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let a = store(&url, "repo-a");
    let b = store(&url, "repo-b");
    let mut wa = a.writer("a").expect("a");
    let mut wb = b.writer("b").expect("b, while a is held");
    wa.record(&[Record::Set {
        target: user("oc_1", "ou_a"),
        buttons: std::sync::Arc::new(list("A")),
    }])
    .expect("a");
    wb.record(&[Record::Set {
        target: user("oc_1", "ou_a"),
        buttons: std::sync::Arc::new(list("B")),
    }])
    .expect("b");
    drop((wa, wb));
    assert_eq!(
        a.load().expect("a").shown(&user("oc_1", "ou_a")),
        Some(&list("A"))
    );
    assert_eq!(
        b.load().expect("b").shown(&user("oc_1", "ou_a")),
        Some(&list("B"))
    );
    assert!(PgStore::new(&url, "no spaces").is_err());
    let err = state::open_named(std::path::Path::new("state.json"), Some("x"))
        .err()
        .expect("a file holds one state");
    assert!(err.to_string().contains("--state-name"), "{err}");
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    s.load().expect("creates the schema");
    pg.sql("postgres", "UPDATE feedbuttons_schema SET version = 99");
    let err = s.load().expect_err("a newer schema");
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn the_password_never_shows_and_a_wrong_one_is_a_clear_error() {
    let Some(pg) = pgserver::start() else { return };
    pg.sql(
        "postgres",
        "CREATE ROLE bot LOGIN PASSWORD 'hunter2-secret'",
    );
    // Trust authentication accepts any password; the message must still not show it.
    let url = format!(
        "postgres://bot:hunter2-secret@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    let s = store(&url, "default");
    assert!(!s.location().contains("hunter2"), "{}", s.location());
    let bad = store(
        &format!(
            "postgres://bot:hunter2-secret@127.0.0.1:{}/nodb?sslmode=disable",
            pg.port
        ),
        "default",
    );
    let err = bad.load().expect_err("no such database").to_string();
    assert!(err.contains("nodb") && !err.contains("hunter2"), "{err}");
    assert!(PgUrl::parse(&format!("{url}&sslmod=x")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_budgets_for_one_app_share_its_rate() {
    let Some(pg) = pgserver::start() else { return };
    let url = PgUrl::parse(&pg.url("postgres")).expect("url");
    let a = PgBudget::connect(&url, "https://x cli_a", 10)
        .await
        .expect("a");
    let b = PgBudget::connect(&url, "https://x cli_a", 10)
        .await
        .expect("b");
    let other = PgBudget::connect(&url, "https://x cli_b", 10)
        .await
        .expect("other");
    let started = Instant::now();
    let take = |budget: PgBudget| async move {
        let mut times = Vec::new();
        for _ in 0..10 {
            let wait = budget.reserve().await.expect("a slot");
            tokio::time::sleep(wait).await;
            times.push(Instant::now());
        }
        times
    };
    let (ta, tb, tother) = tokio::join!(take(a), take(b), take(other));
    let mut shared: Vec<Instant> = ta.into_iter().chain(tb).collect();
    shared.sort();
    // 20 calls of one app at 10 a second: about two seconds, never two within 100 ms.
    let spread = shared[19] - shared[0];
    assert!(spread >= Duration::from_millis(1900), "{spread:?}");
    for pair in shared.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(90), "{shared:?}");
    }
    // Another app's budget is its own: ten calls in about one second, beside them.
    assert!(
        tother[9] - started < Duration::from_millis(1500),
        "{tother:?}"
    );
}

#[test]
fn a_state_migrates_from_a_file_to_postgres_and_back_with_its_lineage_serial_and_plan() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let dir = crate::util::Dir::new();
    // The previous release's state, with its journal.
    crate::ci::copy_dir(
        &crate::util::root().join("tests/fixtures/state-v1/state"),
        dir.path(),
    );
    let file = state::FileStore::new(dir.path().join("state.json")).expect("a file store");
    let before = file.load().expect("load the file");
    let config =
        feedbuttons::config::load_dir(&crate::util::root().join("tests/fixtures/state-v1/config"))
            .expect("load")
            .desired
            .expect("valid");
    let plan_of = |applied: &state::AppliedState| {
        let p = feedbuttons::plan::plan(
            &config.targets,
            &config.chat_names,
            &applied.targets,
            &feedbuttons::plan::PlanOptions::default(),
        );
        feedbuttons::plan::json::PlanDoc::new(&p).to_json()
    };

    let pg_store = store(&url, "migrated");
    let done = state::migrate(&file, &pg_store, "migrate").expect("file -> postgres");
    assert_eq!(
        (done.lineage.as_str(), done.serial, done.targets),
        (before.lineage.as_str(), before.serial, before.targets.len())
    );
    let in_pg = pg_store.load().expect("load from postgres");
    assert_eq!(in_pg, before);
    assert_eq!(plan_of(&in_pg), plan_of(&before));
    // Into a state that already holds one: refused, nothing touched.
    let err =
        state::migrate(&file, &pg_store, "migrate").expect_err("not into a state that holds one");
    assert!(err.to_string().contains("already holds a state"), "{err}");

    let back = state::FileStore::new(dir.path().join("back/state.json")).expect("a file store");
    state::migrate(&pg_store, &back, "migrate").expect("postgres -> file");
    let round_trip = back.load().expect("load the file");
    assert_eq!(round_trip, before);
    assert_eq!(plan_of(&round_trip), plan_of(&before));
}
