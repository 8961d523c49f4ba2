//! Benchmark (issue: plan): plan 1,000,000 user targets over 10,000 chats (100 files) against a
//! state holding a different 1,000,000, with the breakdown (parse+validate, state load, diff,
//! render) and the peak memory. Run with `cargo bench --bench plan`.

#[path = "common/gen.rs"]
mod generate;

use std::time::Instant;

use feedbuttons::plan::{self, PlanOptions, render};
use feedbuttons::state::{self, Record};

/// Builds the state in a child process, so that the measured process's peak memory is the plan's.
const SETUP: &str = "FEEDBUTTONS_BENCH_SETUP";

fn setup(tmp: &std::path::Path) {
    let other_dir = tmp.join("other");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    // The state: the same chats; half of each chat's users are the config's with other lists
    // (changes), half are other users (removals; the config's other half are additions).
    generate::write_config(&other_dir, 100, 10_000, 100, 1);
    let other = feedbuttons::config::load_dir(&other_dir)
        .expect("load")
        .desired
        .expect("valid");
    let store = state::open(&tmp.join("state.json")).expect("open");
    let mut lock = store.writer("bench").expect("lock");
    let records: Vec<Record> = other
        .targets
        .iter()
        .map(|(t, b)| Record::Set {
            target: t.clone(),
            buttons: b.clone(),
        })
        .collect();
    lock.record(&records).expect("record");
    lock.compact().expect("compact");
}

fn main() {
    if let Some(dir) = std::env::var_os(SETUP) {
        setup(std::path::Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let config_dir = tmp.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    generate::write_config(&config_dir, 100, 10_000, 100, 0);
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(SETUP, tmp.path())
        .status()
        .expect("run the setup");
    assert!(status.success(), "setup failed");
    let state_path = tmp.path().join("state.json");

    // What a user waits for: the command itself, output to /dev/null, alternating formats.
    // First, while this process is small: a child's peak memory counts this one's at the spawn.
    let bin = env!("CARGO_BIN_EXE_feedbuttons");
    let command = |format: &str| {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("plan")
            .arg(&config_dir)
            .arg("--state")
            .arg(&state_path)
            .args(["--format", format])
            .env_remove("FEISHU_APP_ID")
            .env_remove("FEISHU_APP_SECRET")
            .env("NO_COLOR", "1");
        cmd
    };
    let (mut text_runs, mut json_runs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        text_runs.push(generate::run_measured(&mut command("text")));
        json_runs.push(generate::run_measured(&mut command("json")));
    }
    let mut commands = Vec::new();
    for (name, runs) in [("text", text_runs), ("json", json_runs)] {
        let secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let peak = runs.iter().map(|r| r.1).fold(0.0, f64::max);
        commands.push(format!(
            "  the command `feedbuttons plan --format {name}`: median {:.3} s of {:?}; peak RSS {peak:.0} MiB",
            generate::median(secs.clone()),
            secs.iter()
                .map(|s| (s * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        ));
    }

    let t = Instant::now();
    let t0 = Instant::now();
    let loaded = feedbuttons::config::load_dir(&config_dir).expect("load");
    let desired = loaded.desired.expect("valid");
    let parse = t0.elapsed().as_secs_f64();
    let peak_parse = generate::peak_rss_mib();
    drop(loaded.sources);

    let t0 = Instant::now();
    let applied = state::open(&state_path)
        .expect("open")
        .load()
        .expect("load state");
    let load_state = t0.elapsed().as_secs_f64();
    let peak_state = generate::peak_rss_mib();

    let t0 = Instant::now();
    let options = PlanOptions {
        chats: Vec::new(),
        rate_limit: 10,
        ..Default::default()
    };
    let p = plan::plan(
        &desired.targets,
        &desired.chat_names,
        &applied.targets,
        &options,
    );
    let diff = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let text = render::text(&p, render::Style { color: false });
    let text_s = t0.elapsed().as_secs_f64();
    let total = t.elapsed().as_secs_f64();
    let peak_text = generate::peak_rss_mib();
    let t0 = Instant::now();
    let md = render::markdown(&p);
    let md_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut json = std::io::BufWriter::new(
        std::fs::File::create(tmp.path().join("plan.json")).expect("create"),
    );
    plan::json::write_json(&p, &mut json).expect("write json");
    drop(json);
    let json_s = t0.elapsed().as_secs_f64();
    let json_len = std::fs::metadata(tmp.path().join("plan.json")).map_or(0, |m| m.len());

    let bound = generate::parser_bound_secs(&config_dir, 3);
    let s = p.summary;
    println!(
        "plan: {} desired vs {} applied targets: {} add, {} change, {} remove, {} unchanged; {} calls",
        desired.targets.len(),
        applied.targets.len(),
        s.add,
        s.change,
        s.remove,
        s.unchanged,
        s.requests
    );
    println!(
        "  parse+validate {parse:.3} s, load state {load_state:.3} s, diff+batch {diff:.3} s, render text {text_s:.3} s ({:.0} MB)",
        text.len() as f64 / 1e6,
    );
    println!(
        "  total (the default text plan) {total:.3} s; peak RSS {peak_text:.0} MiB (after parse+validate {peak_parse:.0} MiB, after loading the state {peak_state:.0} MiB); the YAML parser alone on the same files: {bound:.3} s"
    );
    println!(
        "  other formats: markdown {md_s:.3} s ({} KB, cut at the comment limit), json streamed to a file {json_s:.3} s ({:.0} MB); peak RSS then {:.0} MiB",
        md.len() / 1000,
        json_len as f64 / 1e6,
        generate::peak_rss_mib()
    );
    for line in commands {
        println!("{line}");
    }
}

/// How many times each command is run.
const RUNS: usize = 5;
