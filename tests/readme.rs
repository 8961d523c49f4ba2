//! The README is the manual: every command it shows exists with the flags it shows, the outputs
//! it quotes are what the tool prints, and the quick start and the emulator walk-through work.

use std::path::Path;

use feedbuttons::emulator::{Emulator, EmulatorConfig};

use crate::util::{self, Dir};

fn readme() -> String {
    std::fs::read_to_string(util::root().join("README.md")).expect("README.md")
}

/// `(command, following output lines)` of every `$ ` line in the README's console blocks.
fn console_commands(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_console = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_console = line == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(cmd) => {
                let cmd = cmd.split("  #").next().unwrap_or(cmd).trim_end();
                out.push((cmd.to_owned(), Vec::new()));
            }
            None => {
                if let Some((_, lines)) = out.last_mut() {
                    lines.push(line.to_owned());
                }
            }
        }
    }
    out
}

/// The words of a README command line with its optional parts written out (`[--chat ID]` ->
/// `--chat ID`, `...` dropped), for checking that the flags exist.
fn words(cmd: &str) -> Vec<String> {
    cmd.split_whitespace()
        .map(|w| {
            w.trim_start_matches('[')
                .trim_end_matches("...")
                .trim_end_matches(']')
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn the_quick_start_is_two_commands_and_ci_runs_the_test_one() {
    let cmds = console_commands(&readme());
    let firsts: Vec<&str> = cmds.iter().take(2).map(|(c, _)| c.as_str()).collect();
    assert_eq!(firsts, ["cargo run --release -- demo", "cargo test"]);
    let ci = std::fs::read_to_string(util::root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test"),
        "CI runs the README's test command word for word"
    );
}

#[test]
fn every_feedbuttons_command_in_the_readme_exists_with_its_flags() {
    let cmds = console_commands(&readme());
    let ours: Vec<&String> = cmds
        .iter()
        .map(|(c, _)| c)
        .filter(|c| c.starts_with("feedbuttons "))
        .collect();
    assert!(ours.len() >= 10, "{ours:?}");
    for cmd in ours {
        // The command's own words: a redirection or a pipe ends them.
        let mut args: Vec<String> = words(cmd)
            .into_iter()
            .skip(1)
            .take_while(|w| !matches!(w.as_str(), ">" | ">>" | "<" | "|" | "&&" | "||"))
            .collect();
        // clap checks every flag before it honours --help, so this fails on any unknown flag.
        args.push("--help".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = util::run(&util::root(), &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "`{cmd}`: {}",
            util::stderr(&out)
        );
    }
}

#[test]
fn the_quoted_validate_output_is_what_validate_prints() {
    let cmds = console_commands(&readme());
    let (cmd, shown) = cmds
        .iter()
        .find(|(c, _)| c.starts_with("feedbuttons validate tests/fixtures/"))
        .expect("the README shows a validate error");
    let args = words(cmd);
    let args: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let out = util::run(&util::root(), &args);
    assert_eq!(out.status.code(), Some(1));
    let printed = util::stdout(&out);
    let shown = shown.join("\n");
    assert_eq!(printed.trim_end(), shown.trim_end());
}

#[test]
fn the_quoted_plan_lines_appear_in_order() {
    let cmds = console_commands(&readme());
    let (cmd, shown) = cmds
        .iter()
        .find(|(c, _)| c.starts_with("feedbuttons plan examples/teams --base"))
        .expect("the README shows a plan");
    let args = words(cmd);
    let args: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let out = util::run(&util::root(), &args);
    assert_eq!(out.status.code(), Some(0));
    let printed = util::stdout(&out);
    let mut rest = printed.as_str();
    for line in shown.iter().filter(|l| l.as_str() != "...") {
        let at = rest
            .find(line.as_str())
            .unwrap_or_else(|| panic!("`{line}` is not printed (in order):\n{printed}"));
        rest = &rest[at + line.len()..];
    }
}

#[test]
fn version_and_validate_and_plan_work_as_shown() {
    let out = util::run(&util::root(), &["--version"]);
    assert!(
        util::stdout(&out).starts_with("feedbuttons 0.1.0 (git "),
        "{}",
        util::stdout(&out)
    );
    let dir = Dir::new();
    let state = dir.path().join("state.json");
    let out = util::run(&util::root(), &["validate", "examples/teams"]);
    assert_eq!(out.status.code(), Some(0));
    let out = util::run(
        &util::root(),
        &[
            "plan",
            "examples/teams",
            "--state",
            state.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(!state.exists(), "plan never writes");
}

/// Runs a README command line with `sh` against the emulator, from a copy of the examples.
fn sh(cwd: &Path, line: &str, base_url: &str) -> std::process::Output {
    let bin_dir = util::bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("FEISHU_BASE_URL", base_url)
        .env("FEISHU_APP_ID", "cli_emulator")
        .env("FEISHU_APP_SECRET", "emulator-secret")
        .env_remove("FEEDBUTTONS_STATE")
        .output()
        .expect("run sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_walk_through_works_word_for_word() {
    let text = readme();
    let cmds = console_commands(&text);
    let start = cmds
        .iter()
        .position(|(c, _)| c == "export FEISHU_BASE_URL=http://127.0.0.1:8089")
        .expect("the walk-through");
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("start the emulator");
    let base_url = emulator.base_url();
    let work = Dir::new();
    let examples = work.path().join("examples/quickstart");
    std::fs::create_dir_all(&examples).expect("mkdir");
    std::fs::copy(
        util::root().join("examples/quickstart/buttons.yaml"),
        examples.join("buttons.yaml"),
    )
    .expect("copy");
    for (cmd, _) in &cmds[start..] {
        if cmd.starts_with("export ") {
            continue;
        }
        if !cmd.starts_with("feedbuttons ") && !cmd.starts_with("curl -s http") {
            break;
        }
        if let Some(url) = cmd.strip_prefix("curl -s ") {
            let url = url
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .replace("http://127.0.0.1:8089", &base_url);
            let status = reqwest::get(&url).await.expect("GET").status();
            assert!(status.is_success(), "`{cmd}`: {status}");
            continue;
        }
        let (cwd, line, url) = (work.path().to_path_buf(), cmd.clone(), base_url.clone());
        let out = tokio::task::spawn_blocking(move || sh(&cwd, &line, &url))
            .await
            .expect("join");
        assert_eq!(
            out.status.code(),
            Some(0),
            "`{cmd}`: {}",
            util::stderr(&out)
        );
    }
    let chats: serde_json::Value = reqwest::get(format!("{base_url}/_emulator/chats"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(
        chats["chats"].as_array().map(Vec::len),
        Some(2),
        "the quick start's two chats got their buttons"
    );
    emulator.shutdown().await;
}

#[test]
fn the_demo_runs_the_whole_loop_and_ends_with_no_changes() {
    let dir = Dir::new();
    let out = util::run(dir.path(), &["demo"]);
    let stdout = util::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        util::stderr(&out)
    );
    assert!(
        stdout.contains("Plan: 4 to add, 0 to change, 0 to remove, 0 unchanged; 3 calls"),
        "{stdout}"
    );
    assert!(stdout.contains("Applied 3 of 3 calls"), "{stdout}");
    assert!(
        stdout.contains("ou_1c2b3a4d5e6f708192a3b4c5d6e7f809: [Runbook] [Acknowledge]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("everyone (whole chat): [Release calendar]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("No changes: the applied buttons match the config (4 targets unchanged)."),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "the demo leaves no state behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixtures_walk_through_starts_from_a_fresh_state_as_it_says() {
    let text = readme();
    let fixtures = text
        .split("```yaml\n# fixtures.yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the fixtures example");
    let cmds = console_commands(&text);
    let at = cmds
        .iter()
        .position(|(c, _)| c == "feedbuttons emulator --fixtures fixtures.yaml")
        .expect("the fixtures walk-through");
    let (export, apply) = (&cmds[at + 1].0, &cmds[at + 2].0);
    assert!(
        export.starts_with("export FEISHU_APP_ID=cli_demo"),
        "{export}"
    );
    assert!(
        apply.contains("--state /tmp/fixtures-state.json"),
        "{apply}"
    );

    let work = Dir::new();
    let examples = work.path().join("examples/quickstart");
    std::fs::create_dir_all(&examples).expect("mkdir");
    std::fs::copy(
        util::root().join("examples/quickstart/buttons.yaml"),
        examples.join("buttons.yaml"),
    )
    .expect("copy");
    let run = |emu: &feedbuttons::emulator::RunningEmulator, line: String| {
        let (cwd, url) = (work.path().to_path_buf(), emu.base_url());
        tokio::task::spawn_blocking(move || sh(&cwd, &line, &url))
    };
    // Step 2, against the emulator without fixtures: the default state is bound to its app.
    let plain = Emulator::start(EmulatorConfig::default())
        .await
        .expect("start the emulator");
    let out = run(
        &plain,
        "feedbuttons apply examples/quickstart --yes".to_owned(),
    )
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));

    let with_fixtures = Emulator::start(EmulatorConfig {
        fixtures: Some(
            feedbuttons::emulator::Fixtures::parse(fixtures).expect("the README's fixtures"),
        ),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    // Without a fresh state, the fixtures' app is refused by the old state.
    let stale = run(
        &with_fixtures,
        format!("{export} && feedbuttons apply examples/quickstart --yes"),
    )
    .await
    .expect("join");
    assert_eq!(stale.status.code(), Some(1));
    assert!(
        util::stderr(&stale).contains("refusing to mix"),
        "{}",
        util::stderr(&stale)
    );
    // As the README says: everything is planned and sent again. The fixtures leave one user out
    // of the first chat (waiting) and the bot out of the second (failed): exit 3.
    let fresh_state = work.path().join("fixtures-state.json");
    let line = format!(
        "{export} && {}",
        apply.replace("/tmp/fixtures-state.json", &fresh_state.to_string_lossy())
    );
    let out = run(&with_fixtures, line).await.expect("join");
    let said = format!("{}{}", util::stdout(&out), util::stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("the bot is not in"), "{said}");
    assert!(fresh_state.exists());
    plain.shutdown().await;
    with_fixtures.shutdown().await;
}
