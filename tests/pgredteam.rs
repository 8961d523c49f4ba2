//! Red-team findings on the PostgreSQL state (issue 12), each kept as a test: a role that may
//! only read and write the tables, a takeover wait that a second takeover forgot, and a writer
//! cut off by a silent partition that counted itself alive past its lease.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use feedbuttons::feishu::client::Budget;
use feedbuttons::feishu::wire::{ActionType, Button, Text, UserIdType};
use feedbuttons::state::postgres::{
    ATTEMPT_TIMEOUT, LEASE, PgStore, PgUrl, STALL_TIMEOUT, budget::PgBudget,
};
use feedbuttons::state::{Record, StateError, StateStore};
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

fn set(chat: &str, id: &str, text: &str) -> Record {
    Record::Set {
        target: Target::user(chat, UserIdType::OpenId, id),
        buttons: std::sync::Arc::new(list(text)),
    }
}

fn store(url: &str, name: &str) -> PgStore {
    PgStore::new(url, name).expect("a store")
}

fn lock_holders(pg: &pgserver::PgServer) -> Vec<String> {
    pg.sql(
        "postgres",
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// README: "The database user needs to create tables in the database once; after that, read
/// and write them." PostgreSQL 15 no longer lets every role create in `public`, and `CREATE
/// TABLE IF NOT EXISTS` checks that right even when the table exists.
#[test]
fn a_role_that_may_only_read_and_write_the_tables_uses_a_migrated_database() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    store(&url, "default").load().expect("the owner migrates");
    pg.sql(
        "postgres",
        "CREATE ROLE rw LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO rw",
    );
    let rw = url.replacen("postgres://postgres@", "postgres://rw@", 1);
    let s = store(&rw, "team");
    s.load().expect("plan's load as the read-write role");
    {
        let mut w = s.writer("rw").expect("the writer as the read-write role");
        w.record(&[set("oc_1", "ou_a", "Hi")]).expect("record");
    }
    let loaded = s.load().expect("load");
    assert_eq!(
        loaded.shown(&Target::user("oc_1", UserIdType::OpenId, "ou_a")),
        Some(&list("Hi"))
    );
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let url = PgUrl::parse(&rw).expect("url");
        let budget = PgBudget::connect(&url, "https://x cli_a", 10)
            .await
            .expect("the rate budget as the read-write role");
        budget.reserve().await.expect("a slot");
    });
}

/// A writer takes over from a busy one and must wait before it sends; it is stopped (Ctrl-C
/// during the wait, a replica killed again) before it sent anything. The next writer must still
/// wait for the first one's calls: they can land until the first writer's bound.
#[test]
fn a_takeover_wait_survives_a_second_takeover() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    let mut first = s.writer("first").expect("the writer");
    first.calls_in_flight(1).expect("calls in flight");
    pg.sql(
        "postgres",
        &format!("SELECT pg_terminate_backend({})", lock_holders(&pg)[0]),
    );
    let second = s.writer("second").expect("taken over");
    let bound = second
        .sends_from()
        .expect("waits for the first one's calls");
    // Stopped during its wait (it never sent anything), and let go cleanly.
    drop(second);
    let third = s.writer("third").expect("taken over again");
    let from = third
        .sends_from()
        .expect("the first writer's calls can still land: the third must wait too");
    assert!(
        from + Duration::from_millis(500) >= bound,
        "{from:?} {bound:?}"
    );
    // A writer that is killed during its wait passes it on as well.
    pg.sql(
        "postgres",
        &format!("SELECT pg_terminate_backend({})", lock_holders(&pg)[0]),
    );
    let fourth = s.writer("fourth").expect("taken over once more");
    let from = fourth.sends_from().expect("still within the first's bound");
    assert!(
        from + Duration::from_millis(500) >= bound,
        "{from:?} {bound:?}"
    );
    assert!(
        from <= Instant::now() + LEASE + ATTEMPT_TIMEOUT + Duration::from_secs(2),
        "{from:?}"
    );
    drop(first);
    drop(third);
    drop(fourth);
}

/// A TCP proxy that can stop forwarding without closing anything: a silent network partition.
/// It can also go silent by itself once the server has sent a number of bytes.
struct Partition {
    port: u16,
    frozen: Arc<AtomicBool>,
    /// Bytes forwarded from the server, over every connection.
    from_server: Arc<AtomicUsize>,
    /// Freeze once `from_server` reaches this.
    freeze_at: Arc<AtomicUsize>,
}

impl Partition {
    fn to(upstream: u16) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let from_server = Arc::new(AtomicUsize::new(0));
        let freeze_at = Arc::new(AtomicUsize::new(usize::MAX));
        let f = Arc::clone(&frozen);
        let counts = (Arc::clone(&from_server), Arc::clone(&freeze_at));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to, counted) in [
                    (client.try_clone(), server.try_clone(), None),
                    (server.try_clone(), client.try_clone(), Some(counts.clone())),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let f = Arc::clone(&f);
                    std::thread::spawn(move || pump(from, to, &f, counted));
                }
            }
        });
        Partition {
            port,
            frozen,
            from_server,
            freeze_at,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

type Counted = Option<(Arc<AtomicUsize>, Arc<AtomicUsize>)>;

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool, counted: Counted) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some((sent, at)) = &counted
                    && sent.fetch_add(n, Ordering::SeqCst) + n >= at.load(Ordering::SeqCst)
                {
                    frozen.store(true, Ordering::SeqCst);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// README: a writer that lost its connection "notices within 3 s (its heartbeat lease) and starts
/// no new call after that". Here the network goes silent (no reset: a partition) just as the
/// writer records a call's marks: the writer must count itself lost within the lease, not when
/// the write gives up.
#[test]
fn a_writer_cut_off_by_a_silent_partition_counts_itself_lost_within_its_lease() {
    let Some(pg) = pgserver::start() else { return };
    let port: u16 = pg
        .url("postgres")
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the server's port");
    let net = Partition::to(port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        net.port
    );
    let s = store(&url, "default");
    let mut w = s.writer("cut off").expect("the writer");
    w.record(&[set("oc_1", "ou_a", "Before")]).expect("record");
    let lost = w.lost().expect("a receiver");
    // A heartbeat or two go through.
    std::thread::sleep(Duration::from_millis(1500));
    net.freeze();
    let cut = Instant::now();
    let watcher = std::thread::spawn(move || {
        while !*lost.borrow() {
            if cut.elapsed() > Duration::from_secs(30) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(cut.elapsed())
    });
    let err = w
        .record(&[set("oc_1", "ou_a", "During")])
        .expect_err("the database is out of reach");
    let returned = cut.elapsed();
    assert!(matches!(err, StateError::Lost { .. }), "{err:?}");
    let noticed = watcher
        .join()
        .expect("the watcher")
        .expect("the writer never counted itself lost");
    assert!(
        noticed <= LEASE + Duration::from_millis(500),
        "the writer counted itself lost {noticed:?} after the partition, beyond its {LEASE:?} lease"
    );
    assert!(returned < Duration::from_secs(10), "{returned:?}");
}

/// A reader (`plan`, `state list`, a daemon's first load) whose network goes silent halfway
/// through a big state's stream gives up with an error once the server has said nothing for
/// `STALL_TIMEOUT`, instead of waiting forever: the proxy keeps the connection open and its
/// kernel keeps acknowledging, so no TCP timeout would ever fire.
#[test]
fn a_load_cut_off_midway_by_a_silent_partition_fails_instead_of_hanging() {
    let Some(pg) = pgserver::start() else { return };
    let port: u16 = pg
        .url("postgres")
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the server's port");
    // A state big enough that its stream takes many reads.
    let records: Vec<Record> = (0..20_000)
        .map(|i| set(&format!("oc_{}", i % 50), &format!("ou_{i:08}"), "Join"))
        .collect();
    store(&pg.url("postgres"), "default")
        .writer("filler")
        .expect("the writer")
        .record(&records)
        .expect("record");

    let net = Partition::to(port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        net.port
    );
    let whole = store(&url, "default")
        .load()
        .expect("a load through the proxy");
    assert_eq!(whole.targets.len(), 20_000);
    let bytes = net.from_server.swap(0, Ordering::SeqCst);
    assert!(bytes > 500_000, "the whole load was {bytes} bytes");
    // The same load again, going silent halfway through the targets' stream.
    net.freeze_at.store(bytes / 2, Ordering::SeqCst);
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(store(&url, "default").load().map(|s| s.targets.len()));
    });
    let err = match rx.recv_timeout(STALL_TIMEOUT + Duration::from_secs(30)) {
        Ok(loaded) => loaded.expect_err("the network went silent halfway"),
        Err(_) => panic!(
            "the load still waits, {:?} after the network went silent",
            started.elapsed()
        ),
    };
    let took = started.elapsed();
    assert!(net.frozen.load(Ordering::SeqCst), "the proxy never froze");
    assert!(
        err.to_string().contains("answered nothing"),
        "the error does not say what happened: {err}"
    );
    assert!(
        took >= STALL_TIMEOUT && took < STALL_TIMEOUT + Duration::from_secs(10),
        "gave up after {took:?}"
    );
}

/// libpq takes the password as a query parameter too (`?password=...`); this tool does not,
/// and its refusal quoted the URL with the password in it.
#[test]
fn a_password_given_as_a_query_parameter_never_shows() {
    let url = "postgres://bot@127.0.0.1:1/feedbuttons?password=hunter2&sslmode=disable";
    let err = PgUrl::parse(url).expect_err("not a parameter this tool takes");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("password"), "{err}");
    let shown = feedbuttons::state::redact_url(url);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("sslmode=disable"), "{shown}");
    let dir = tempfile::tempdir().expect("a directory");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_feedbuttons"))
        .args(["state", "list", "--state", url])
        .arg(dir.path())
        .env_remove("FEEDBUTTONS_STATE")
        .output()
        .expect("run feedbuttons");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

/// A server that accepts connections and never answers (a stopped PostgreSQL, a proxy or load
/// balancer with nothing behind it): the connect timeout only bounded the TCP connect, so every
/// command hung forever in the start-up exchange.
#[test]
fn a_server_that_accepts_but_never_answers_is_an_error_within_the_connect_timeout() {
    let port = crate::util::silent_server();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    for what in ["load", "writer"] {
        let url = url.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let s = store(&url, "default");
            let out = match what {
                "load" => s.load().map(drop),
                _ => s.writer("w").map(drop),
            };
            let _ = tx.send(out);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{what} hung on a server that never answers"));
        let err = out.expect_err("no answer").to_string();
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{what}: {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("did not complete the connection"),
            "{what}: {err}"
        );
    }
}

/// `feedbuttons ARGS` against `emu`, in `dir`, with the state at `url`.
fn with_state(
    emu: &feedbuttons::emulator::RunningEmulator,
    dir: &std::path::Path,
    url: &str,
    args: &[&str],
) -> std::process::Command {
    let mut c = crate::apply::feedbuttons(emu, dir, args);
    c.env("FEEDBUTTONS_STATE", url)
        .env_remove("FEEDBUTTONS_STATE_NAME");
    c
}

fn shown(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        crate::util::stdout(o),
        crate::util::stderr(o)
    )
}

/// The database crashes (`pg_ctl stop -m immediate`) while apply sends, and comes back: apply
/// stops with a clear error (no panic, no hang), and afterwards the state claims nothing the
/// chats do not show; the next apply converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_crashing_mid_apply_leaves_no_false_record_and_the_next_run_converges() {
    use crate::apply::{self, Admin, Config};
    let Some(pg) = pgserver::start_with(true) else {
        return;
    };
    let url = pg.url("postgres");
    let emu = apply::start(feedbuttons::emulator::EmulatorConfig {
        latency: Duration::from_millis(300),
        rate_limit: apply::FAST,
        ..feedbuttons::emulator::EmulatorConfig::default()
    })
    .await;
    let admin = Admin::of(&emu);
    let cfg = Config::generated("dbc", 12, true, 1, 3, 0);
    let dir = apply::config_dir(&cfg);
    let first = with_state(
        &emu,
        dir.path(),
        &url,
        &["apply", ".", "--yes", "--rate-limit", "6"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start apply");
    let deadline = Instant::now() + Duration::from_secs(30);
    while apply::applied_calls(&admin.calls().await).len() < 3 {
        assert!(Instant::now() < deadline, "no calls were answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.stop_immediate();
    let crashed = Instant::now();
    let out = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .expect("the waiting task")
        .expect("wait for apply");
    let took = crashed.elapsed();
    let all = shown(&out);
    assert!(
        took < Duration::from_secs(30),
        "apply took {took:?} to stop\n{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
    assert!(
        matches!(out.status.code(), Some(1 | 3)),
        "apply's exit after the database went away\n{all}"
    );
    pg.start_again();
    // Whatever the state records as applied (nothing pending) is what the chats show.
    let loaded = feedbuttons::state::open(std::path::Path::new(&url))
        .expect("the store")
        .load()
        .expect("the state after the restart");
    let seen = admin.seen().await;
    let recorded: Vec<_> = loaded
        .targets
        .iter()
        .filter(|(_, r)| r.pending().is_none())
        .filter_map(|(t, r)| r.shown().map(|l| (t.clone(), l.clone())))
        .collect();
    let bad = seen.mismatches(recorded.iter().map(|(t, l)| (t, l)));
    assert!(bad.is_empty(), "{bad:?}\n{all}");
    let second = with_state(
        &emu,
        dir.path(),
        &url,
        &["apply", ".", "--yes", "--rate-limit", "100"],
    )
    .output()
    .expect("the second apply");
    assert_eq!(second.status.code(), Some(0), "{}", shown(&second));
    let plan = with_state(
        &emu,
        dir.path(),
        &url,
        &["plan", ".", "--detailed-exitcode"],
    )
    .output()
    .expect("plan");
    assert_eq!(plan.status.code(), Some(0), "{}", shown(&plan));
    apply::assert_converged(&admin, dir.path()).await;
}

/// `--resync` on a PostgreSQL state: a resync call goes out like any other, so the leader must
/// say durably that it is in flight (else a replica that takes over when the leader dies sends at
/// once, and the dead leader's call can land after its calls), and a replica that took over must
/// not resync before the dead leader's calls can no longer land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_during_a_resync_call_makes_the_next_leader_wait_for_it() {
    use crate::watch::{Daemon, chat_text, config, get_json};
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let emu = crate::watch::emulator(Duration::from_millis(1500)).await;
    let admin = crate::apply::Admin::of(&emu);
    let dir = crate::util::Dir::new().file("a.yaml", &config(&[("oc_rs", "One")]));
    let args = [
        "--state",
        &url,
        "--debounce",
        "50ms",
        "--interval",
        "1h",
        "--resync",
        "2s",
    ];
    let mut leader = Daemon::start_with(&emu, dir.path(), &args, &[]);
    leader
        .eventually("the leader to apply", || async {
            (chat_text(&emu, "oc_rs").await.as_deref() == Some("One")).then_some(())
        })
        .await;
    let standby = Daemon::start_with(&emu, dir.path(), &args, &[]);
    standby
        .eventually("the standby to stand by", || async {
            (get_json(&standby.url("/status")).await["role"] == "standby").then_some(())
        })
        .await;
    let busy = || {
        pg.sql(
            "postgres",
            "SELECT busy FROM feedbuttons_states WHERE name = 'default'",
        ) == "t"
    };
    // The first apply's call is over; then a resync call goes out every 2 s and takes 1.5 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while busy() {
        assert!(Instant::now() < deadline, "{}", leader.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while !busy() {
        assert!(
            Instant::now() < deadline,
            "the leader never said a resync call was in flight:\n{}",
            leader.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    leader.child.kill().expect("SIGKILL the leader");
    let _ = leader.child.wait();
    let killed = Instant::now();
    standby
        .eventually("the standby to lead", || async {
            (get_json(&standby.url("/status")).await["role"] == "leader").then_some(())
        })
        .await;
    // The dead leader's call lands within its latency; after that, nothing until its bound.
    tokio::time::sleep_until((killed + Duration::from_secs(2)).into()).await;
    let landed = admin.calls().await.len();
    tokio::time::sleep_until((killed + Duration::from_secs(9)).into()).await;
    assert_eq!(
        admin.calls().await.len(),
        landed,
        "the new leader sent while the dead leader's call could still land:\n{}",
        standby.log()
    );
    // Then it resyncs again.
    standby
        .eventually("the new leader to resync", || async {
            (admin.calls().await.len() > landed).then_some(())
        })
        .await;
}

/// README: "Readers (`plan`, `state list`) take no lock and always see a whole state." The
/// loader read the state's row, its lists and its targets in three statements, each in a
/// snapshot of its own: a plan beside a running apply saw targets newer than its serial, or a
/// target whose list it had not read ("refers to a missing list").
#[test]
fn a_reader_sees_one_whole_state_while_a_writer_records() {
    let Some(pg) = pgserver::start() else { return };
    let url = pg.url("postgres");
    let s = store(&url, "default");
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let s = store(&url, "default");
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut w = s.writer("writer").expect("the writer");
            for i in 0..400 {
                // One new target with a list of its own per record: serial i + 1, i + 1 targets.
                w.record(&[set("oc_1", &format!("ou_{i}"), &format!("List {i}"))])
                    .expect("record");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut loads = 0;
    while !done.load(Ordering::SeqCst) {
        let loaded = s
            .load()
            .unwrap_or_else(|e| panic!("load {loads} beside a writer: {e}"));
        assert_eq!(
            loaded.targets.len() as u64,
            loaded.serial,
            "load {loads}: the targets of one moment, the serial of another"
        );
        loads += 1;
    }
    writer.join().expect("the writer");
    assert!(loads > 5, "only {loads} loads");
}

/// Held: eight processes' first connections to a fresh database migrate it at once; every one
/// succeeds and the schema is made once.
#[test]
fn first_time_migrations_at_once_all_succeed() {
    let Some(pg) = pgserver::start() else { return };
    pg.create_db("fresh");
    let url = pg.url("fresh");
    let loads: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || store(&url, &format!("s{i}")).load().map(drop))
        })
        .collect();
    for l in loads {
        l.join()
            .expect("a loader")
            .expect("migrated or found migrated");
    }
    assert_eq!(
        pg.sql("fresh", "SELECT count(*) FROM feedbuttons_schema"),
        "1"
    );
}
