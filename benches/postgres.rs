//! Benchmark (issue: the PostgreSQL state): against a real server started for the run (as the
//! tests start one, but durable: fsync and synchronous commits on), the time to record one call (its mark before it goes out, and its outcome:
//! 20 targets), p50 and p99 over 2,000 calls; and loading, then planning against, a state of
//! 1,000,000 user targets over 10,000 chats. Run with `cargo bench --bench postgres`; without a
//! PostgreSQL to start it says why and does nothing.

#[path = "common/gen.rs"]
mod generate;
#[path = "../tests/pgserver.rs"]
mod pgserver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use feedbuttons::feishu::wire::{ActionType, Button, Text, UserIdType};
use feedbuttons::plan::{self, PlanOptions};
use feedbuttons::state::postgres::PgStore;
use feedbuttons::state::{AppliedState, Pending, PendingStatus, Record, StateStore, TargetRecord};
use feedbuttons::target::Target;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // A durable server (fsync and synchronous commits on), as in production.
    let Some(pg) = pgserver::start_with(true) else {
        return;
    };
    let url = pg.url("postgres");

    // Recording one call: 20 users marked uncertain before it, then their outcome.
    let store = PgStore::new(&url, "calls").expect("store");
    let mut w = store.writer("bench").expect("writer");
    let list = Arc::new(vec![Button {
        multi_url: None,
        action_type: ActionType::Webhook,
        text: Text {
            text: "Ack".to_owned(),
        },
        button_type: None,
        action_map: None,
    }]);
    let (mut marks, mut outcomes) = (Vec::new(), Vec::new());
    for call in 0..2_000u64 {
        let targets: Vec<Target> = (0..20)
            .map(|u| {
                Target::user(
                    generate::hex_id("oc_", call % 50),
                    UserIdType::OpenId,
                    generate::hex_id("ou_", call * 20 + u),
                )
            })
            .collect();
        let mark: Vec<Record> = targets
            .iter()
            .map(|t| Record::Put {
                target: t.clone(),
                record: TargetRecord::new(
                    None,
                    false,
                    Some(Pending {
                        status: PendingStatus::Uncertain { sent: list.clone() },
                        since: 1_764_000_000,
                    }),
                )
                .expect("a record"),
            })
            .collect();
        let t = Instant::now();
        w.record(&mark).expect("mark");
        marks.push(t.elapsed());
        let outcome: Vec<Record> = targets
            .into_iter()
            .map(|target| Record::Set {
                target,
                buttons: list.clone(),
            })
            .collect();
        let t = Instant::now();
        w.record(&outcome).expect("outcome");
        outcomes.push(t.elapsed());
    }
    drop(w);
    marks.sort();
    outcomes.sort();
    println!(
        "record one call (20 targets), 2,000 calls: mark p50 {:.2} ms, p99 {:.2} ms; outcome p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&marks, 0.5)),
        ms(percentile(&marks, 0.99)),
        ms(percentile(&outcomes, 0.5)),
        ms(percentile(&outcomes, 0.99)),
    );

    // A state of 1,000,000 user targets (the plan bench's "other" config, applied).
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let other_dir = tmp.path().join("other");
    let config_dir = tmp.path().join("config");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    generate::write_config(&other_dir, 100, 10_000, 100, 1);
    generate::write_config(&config_dir, 100, 10_000, 100, 0);
    let other = feedbuttons::config::load_dir(&other_dir)
        .expect("load")
        .desired
        .expect("valid");
    let mut big = AppliedState {
        lineage: "bench".to_owned(),
        serial: 1,
        ..AppliedState::default()
    };
    big.targets = other
        .targets
        .iter()
        .map(|(t, l)| (t.clone(), TargetRecord::applied(l.clone())))
        .collect();
    drop(other);
    let store = PgStore::new(&url, "big").expect("store");
    let t = Instant::now();
    {
        let mut w = store.writer("bench").expect("writer");
        w.replace(&big).expect("write the whole state");
    }
    let write = t.elapsed();
    drop(big);
    let desired = feedbuttons::config::load_dir(&config_dir)
        .expect("load")
        .desired
        .expect("valid");
    let mut loads = Vec::new();
    let mut plans = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let applied = store.load().expect("load");
        loads.push(t.elapsed());
        let t = Instant::now();
        let p = plan::plan(
            &desired.targets,
            &desired.chat_names,
            &applied.targets,
            &PlanOptions {
                rate_limit: 10,
                ..Default::default()
            },
        );
        plans.push(t.elapsed());
        assert_eq!(applied.targets.len(), 1_000_000);
        assert!(p.summary.requests > 0);
    }
    loads.sort();
    plans.sort();
    println!(
        "1,000,000-target state in PostgreSQL: written whole in {:.2} s; load {:.2} s (median of 3; {:.2}-{:.2}), plan against it {:.2} s (median); peak RSS {} MiB",
        write.as_secs_f64(),
        loads[1].as_secs_f64(),
        loads[0].as_secs_f64(),
        loads[2].as_secs_f64(),
        plans[1].as_secs_f64(),
        generate::peak_rss_mib()
    );
}
