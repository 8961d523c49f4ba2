//! The CI examples: the workflow's own `feedbuttons` command lines, run in order on a base and a
//! head checkout, give the annotations, the plan comment and the exit codes the workflow relies on.

use std::path::{Path, PathBuf};
use std::process::Output;

use feedbuttons::emulator::{BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig};

use crate::util::{self, Dir};

/// The one-line `run:` commands of the GitHub workflow that call feedbuttons, in order.
fn workflow_commands() -> Vec<String> {
    let text =
        std::fs::read_to_string(util::root().join("examples/ci/github-actions/feedbuttons.yml"))
            .expect("the GitHub workflow exists");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("run: "))
        .filter(|c| c.starts_with("feedbuttons "))
        .map(str::to_owned)
        .collect()
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// Runs one workflow line with `sh` in `cwd`, with the built binary first on PATH.
fn sh(cwd: &Path, line: &str, env: &[(&str, &str)]) -> Output {
    let bin_dir = util::bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path)
        .env("NO_COLOR", "1");
    for var in [
        "FEISHU_APP_ID",
        "FEISHU_APP_SECRET",
        "FEISHU_BASE_URL",
        "FEEDBUTTONS_STATE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sh")
}

/// `tmp/head/buttons` (the pull request) and `tmp/base/buttons` (the base branch).
fn checkouts(head: &str, base: &str) -> (Dir, PathBuf) {
    let dir = Dir::new();
    copy_dir(&util::root().join(head), &dir.path().join("head/buttons"));
    copy_dir(&util::root().join(base), &dir.path().join("base/buttons"));
    let head = dir.path().join("head");
    (dir, head)
}

#[test]
fn the_workflow_calls_validate_plan_and_apply_in_that_order() {
    let cmds = workflow_commands();
    let verbs: Vec<&str> = cmds
        .iter()
        .filter_map(|c| c.split_whitespace().nth(1))
        .collect();
    assert_eq!(verbs, ["validate", "plan", "apply"], "{cmds:?}");
    let gitlab = std::fs::read_to_string(util::root().join("examples/ci/gitlab/.gitlab-ci.yml"))
        .expect("GitLab CI file");
    let plan_command = cmds[1].split(" >").next().unwrap_or_default();
    assert!(
        gitlab.contains(plan_command),
        "GitLab plans the same way: {plan_command}"
    );
    assert!(
        gitlab.contains(&cmds[2]),
        "GitLab applies the same way: {}",
        cmds[2]
    );
}

#[test]
fn a_pull_request_gets_annotations_and_one_plan_comment() {
    let cmds = workflow_commands();
    let (dir, head) = checkouts("examples/teams", "examples/quickstart");

    let validate = sh(&head, &cmds[0], &[]);
    assert_eq!(
        validate.status.code(),
        Some(0),
        "{}",
        util::stdout(&validate)
    );
    assert!(!util::stdout(&validate).contains("::error"));

    let plan = sh(&head, &cmds[1], &[]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "changes present is not a failure: {}",
        util::stderr(&plan)
    );
    let comment =
        std::fs::read_to_string(dir.path().join("plan.md")).expect("the plan comment was written");
    assert!(
        comment
            .starts_with("<!-- feedbuttons-plan -->\n**Plan: 13 to add, 1 to change, 3 to remove"),
        "{comment}"
    );
    assert!(
        comment.contains("> [!WARNING]\n> 3 targets will have their buttons REMOVED."),
        "{comment}"
    );
    assert!(comment.contains("<details><summary><code>oc_5ad11d72b830411d72b836c20</code> Incident war room: 3 to remove"), "{comment}");

    // A broken edit: annotations on the right file and line, and the job fails.
    let sre = head.join("buttons/teams/sre.yaml");
    let text = std::fs::read_to_string(&sre).expect("read");
    std::fs::write(
        &sre,
        text.replace("buttons: [runbook, ack]", "buttons: [runbook, ack, status]"),
    )
    .expect("write");
    let validate = sh(&head, &cmds[0], &[]);
    assert_eq!(validate.status.code(), Some(1));
    let out = util::stdout(&validate);
    assert!(
        out.lines().any(
            |l| l.starts_with("::error file=buttons/teams/sre.yaml,line=11,col=18,")
                && l.contains("title=too-many-buttons::")
        ),
        "{out}"
    );
    let plan = sh(&head, &cmds[1], &[]);
    assert_ne!(plan.status.code(), Some(0), "a broken config plans nothing");
}

#[test]
fn no_changes_still_comments_and_exits_0() {
    let cmds = workflow_commands();
    let (dir, head) = checkouts("examples/teams", "examples/teams");
    let plan = sh(&head, &cmds[1], &[]);
    assert_eq!(plan.status.code(), Some(0));
    let comment = std::fs::read_to_string(dir.path().join("plan.md")).expect("plan.md");
    assert!(
        comment.starts_with("<!-- feedbuttons-plan -->\n**Plan: no changes.**"),
        "{comment}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_job_applies_and_records_the_state_where_the_workflow_commits_it() {
    let cmds = workflow_commands();
    let (_dir, head) = checkouts("examples/teams", "examples/quickstart");
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("start the emulator");
    let base_url = emulator.base_url();
    let env = [
        ("FEISHU_BASE_URL", base_url.as_str()),
        ("FEISHU_APP_ID", BUILTIN_APP_ID),
        ("FEISHU_APP_SECRET", BUILTIN_APP_SECRET),
    ];
    let apply = {
        let (head, line) = (head.clone(), cmds[2].clone());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            sh(&head, &line, &env)
        })
        .await
        .expect("join")
    };
    assert_eq!(apply.status.code(), Some(0), "{}", util::stderr(&apply));
    assert!(
        head.join("buttons/.feedbuttons/state.json").is_file(),
        "the state the workflow commits back"
    );
    let state = feedbuttons::state::open(&head.join("buttons/.feedbuttons/state.json"))
        .expect("open")
        .load()
        .expect("load");
    assert_eq!(state.targets.len(), 14);
    emulator.shutdown().await;
}
