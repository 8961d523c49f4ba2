//! The CI examples, run as their CI would run them: the GitHub workflow's jobs step by step (each
//! `run:` script with `bash -e`, its `${{ }}` expressions, `if:` conditions and step outputs;
//! the checkouts made from a bare git repository in a temporary directory, standing for the
//! hosted one) and the GitLab apply job's script, with the built binary on PATH and the
//! in-process emulator over HTTP as the Feishu API. Each scenario ends with what a team sees:
//! the plan comment, whether the job passed, what the branch holds, and the buttons.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, Fixtures, RunningEmulator,
};

use crate::util::{self, Dir};

const GITHUB: &str = "examples/ci/github-actions/feedbuttons-file-state.yml";
const GITLAB: &str = "examples/ci/gitlab/file-state.gitlab-ci.yml";
/// The examples that keep the state in PostgreSQL.
const GITHUB_PG: &str = "examples/ci/github-actions/feedbuttons.yml";
const GITLAB_PG: &str = "examples/ci/gitlab/.gitlab-ci.yml";
/// The subject of the commit that records the applied state.
const RECORD: &str = "feedbuttons: record the applied state [skip ci]";
const STATE: &str = "buttons/.feedbuttons/state.json";

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(util::root().join(rel)).expect("read the CI example");
    serde_saphyr::from_str(&text).expect("the CI example is YAML")
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

/// A command with the built binary first on PATH (after `path_first`, if any), a HOME of its
/// own (no global git config), colour off, and nothing inherited that the CI would not have.
fn command(program: &str, cwd: &Path, home: &Path, path_first: Option<&Path>) -> Command {
    let bin_dir = util::bin().parent().expect("bin dir").to_path_buf();
    let mut path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    if let Some(first) = path_first {
        path = format!("{}:{path}", first.display());
    }
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .env("PATH", path)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    for var in [
        "FEISHU_APP_ID",
        "FEISHU_APP_SECRET",
        "FEISHU_BASE_URL",
        "FEEDBUTTONS_STATE",
        "FEEDBUTTONS_LOG",
        "RUST_LOG",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_CONFIG_GLOBAL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn git(cwd: &Path, home: &Path, args: &[&str]) -> String {
    let out = command("git", cwd, home, None)
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", util::stderr(&out));
    util::stdout(&out)
}

// ---------------------------------------------------------------- a GitHub Actions runner

/// One step of a job run: `None` when its `if:` skipped it.
struct StepRun {
    name: String,
    code: Option<i32>,
    output: String,
}

struct JobRun {
    steps: Vec<StepRun>,
}

impl JobRun {
    fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.code.is_none_or(|c| c == 0))
    }

    fn step(&self, name: &str) -> &StepRun {
        self.steps
            .iter()
            .find(|s| s.name.starts_with(name))
            .unwrap_or_else(|| panic!("no step `{name}`:\n{}", self.log()))
    }

    fn log(&self) -> String {
        self.steps
            .iter()
            .map(|s| match s.code {
                Some(c) => format!("== {} (exit {c})\n{}", s.name, s.output),
                None => format!("== {} (skipped)\n", s.name),
            })
            .collect()
    }
}

/// What a job runs with: the workspace (`$GITHUB_WORKSPACE`), the values of the expressions it
/// uses (`github.ref_name`, `vars.FEISHU_APP_ID`...), and variables the test adds (the
/// emulator's URL, as a repository variable would be set).
struct Runner<'a> {
    workspace: &'a Path,
    home: &'a Path,
    exprs: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    path_first: Option<&'a Path>,
    /// The workflow file.
    workflow: &'static str,
}

impl<'a> Runner<'a> {
    fn new(workspace: &'a Path, home: &'a Path) -> Runner<'a> {
        let exprs = [
            ("github.ref_name", "main"),
            ("github.base_ref", "main"),
            ("github.run_id", "4242"),
            ("vars.FEISHU_APP_ID", BUILTIN_APP_ID),
            ("secrets.FEISHU_APP_SECRET", BUILTIN_APP_SECRET),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Runner {
            workspace,
            home,
            exprs,
            env: Vec::new(),
            path_first: None,
            workflow: GITHUB,
        }
    }

    /// `${{ expr }}` replaced by its value; an expression the test does not know fails it.
    fn subst(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${{") {
            out.push_str(&rest[..at]);
            let end = rest[at..].find("}}").expect("closed expression") + at;
            let expr = rest[at + 3..end].trim();
            let value = self
                .exprs
                .get(expr)
                .unwrap_or_else(|| panic!("unknown expression `{expr}` in {text}"));
            out.push_str(value);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// GitHub's `if:`: `always()`, `failure()`, or a comparison (with the implied `success()`).
    fn condition(&self, cond: Option<&str>, failed: bool) -> bool {
        let Some(cond) = cond else { return !failed };
        match cond.trim() {
            "always()" => true,
            "failure()" => failed,
            c => {
                let (left, right) = c
                    .split_once(" != ")
                    .unwrap_or_else(|| panic!("unknown condition `{c}`"));
                let left = self.exprs.get(left.trim()).cloned().unwrap_or_default();
                !failed && left != right.trim().trim_matches('\'')
            }
        }
    }

    fn env_map(&self, v: &Value) -> Vec<(String, String)> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), self.subst(&v))
            })
            .collect()
    }

    /// Runs `job` of the GitHub workflow. `uses:` steps are the test's part: the checkouts are
    /// made before, the cache restores the binary already on PATH, the comment is read from
    /// plan.md, an artifact is noted as uploaded.
    fn run_github(mut self, job: &str) -> JobRun {
        let wf = yaml(self.workflow);
        let def = &wf["jobs"][job];
        assert!(def.is_object(), "the workflow has a `{job}` job");
        for (k, v) in wf["env"].as_object().into_iter().flatten() {
            self.exprs.insert(
                format!("env.{k}"),
                v.as_str().unwrap_or_default().to_owned(),
            );
        }
        let mut env = self.env_map(&wf["env"]);
        env.extend(self.env_map(&def["env"]));
        env.extend(self.env.clone());
        let mut failed = false;
        let mut steps = Vec::new();
        let scratch = self.home.join("runner");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        for (i, step) in def["steps"].as_array().expect("steps").iter().enumerate() {
            let name = step["name"]
                .as_str()
                .or(step["uses"].as_str())
                .expect("a name")
                .to_owned();
            if !self.condition(step["if"].as_str(), failed) {
                steps.push(StepRun {
                    name,
                    code: None,
                    output: String::new(),
                });
                continue;
            }
            let id = step["id"].as_str().unwrap_or_default().to_owned();
            if let Some(uses) = step["uses"].as_str() {
                if uses.starts_with("actions/cache@") {
                    self.exprs
                        .insert(format!("steps.{id}.outputs.cache-hit"), "true".to_owned());
                }
                steps.push(StepRun {
                    name,
                    code: Some(0),
                    output: format!("(uses {uses})\n"),
                });
                continue;
            }
            let script = self.subst(step["run"].as_str().expect("run"));
            let cwd = match step["working-directory"].as_str() {
                Some(d) => self.workspace.join(d),
                None => self.workspace.to_path_buf(),
            };
            let outputs = scratch.join(format!("output-{i}"));
            std::fs::write(&outputs, "").expect("GITHUB_OUTPUT");
            let out = command("bash", &cwd, self.home, self.path_first)
                .args(["-e", "-c", &script])
                .envs(env.iter().cloned())
                .envs(self.env_map(&step["env"]))
                .env("GITHUB_OUTPUT", &outputs)
                .env("GITHUB_STEP_SUMMARY", scratch.join("step-summary.md"))
                .output()
                .expect("run bash");
            let code = out.status.code().unwrap_or(-1);
            failed |= code != 0;
            for line in std::fs::read_to_string(&outputs).expect("read").lines() {
                if let Some((k, v)) = line.split_once('=') {
                    self.exprs
                        .insert(format!("steps.{id}.outputs.{k}"), v.to_owned());
                }
            }
            steps.push(StepRun {
                name,
                code: Some(code),
                output: format!("{}{}", util::stdout(&out), util::stderr(&out)),
            });
        }
        JobRun { steps }
    }
}

/// Runs the GitLab job `job`: its (inherited) `before_script` and its `script` in one
/// `bash` with `set -eo pipefail`, as GitLab's runner does, with `variables:` expanded.
/// Returns the exit code and the log.
fn run_gitlab(
    job: &str,
    workspace: &Path,
    home: &Path,
    ci: &[(String, String)],
    base_url: &str,
) -> (i32, String) {
    run_gitlab_file(GITLAB, job, workspace, home, ci, base_url)
}

/// [`run_gitlab`] for the pipeline in `file`.
fn run_gitlab_file(
    file: &str,
    job: &str,
    workspace: &Path,
    home: &Path,
    ci: &[(String, String)],
    base_url: &str,
) -> (i32, String) {
    let doc = yaml(file);
    let def = &doc[job];
    let base = &doc[def["extends"].as_str().unwrap_or_default()];
    let lines = |key: &str| -> Vec<String> {
        let v = if def[key].is_null() {
            &base[key]
        } else {
            &def[key]
        };
        v.as_array()
            .into_iter()
            .flatten()
            .map(|l| l.as_str().expect("a script line").to_owned())
            .collect()
    };
    let mut script = vec!["set -eo pipefail".to_owned()];
    script.extend(lines("before_script"));
    script.extend(lines("script"));
    let mut vars: Vec<(String, String)> = ci.to_vec();
    vars.push(("CI_PROJECT_DIR".to_owned(), workspace.display().to_string()));
    for scope in [&doc["variables"], &base["variables"], &def["variables"]] {
        for (k, v) in scope.as_object().into_iter().flatten() {
            let mut v = v.as_str().unwrap_or_default().to_owned();
            if let Some(name) = v.strip_prefix('$') {
                v = vars
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
            }
            vars.push((k.clone(), v));
        }
    }
    vars.push(("FEISHU_APP_ID".to_owned(), BUILTIN_APP_ID.to_owned()));
    vars.push((
        "FEISHU_APP_SECRET".to_owned(),
        BUILTIN_APP_SECRET.to_owned(),
    ));
    vars.push(("FEISHU_BASE_URL".to_owned(), base_url.to_owned()));
    let out = command("bash", workspace, home, None)
        .args(["-c", &script.join("\n")])
        .envs(vars)
        .output()
        .expect("run bash");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", util::stdout(&out), util::stderr(&out)),
    )
}

// ---------------------------------------------------------------- the hosted repository

/// A bare repository standing for the hosted one, whose `main` holds a config in `buttons/`,
/// and a developer's clone that merges into it.
struct Repo {
    dir: Dir,
}

impl Repo {
    fn new(example: &str) -> Repo {
        let repo = Repo { dir: Dir::new() };
        std::fs::create_dir_all(repo.home()).expect("mkdir home");
        let (root, home) = (repo.dir.path(), repo.home());
        git(
            root,
            &home,
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git(root, &home, &["clone", "-q", "origin.git", "dev"]);
        let dev = repo.dev();
        git(&dev, &home, &["config", "user.name", "A Developer"]);
        git(
            &dev,
            &home,
            &["config", "user.email", "dev@example.invalid"],
        );
        git(&dev, &home, &["checkout", "-q", "-b", "main"]);
        copy_dir(&util::root().join(example), &dev.join("buttons"));
        std::fs::write(dev.join(".gitignore"), "buttons/.feedbuttons/state.lock\n")
            .expect("write .gitignore");
        git(&dev, &home, &["add", "-A"]);
        git(
            &dev,
            &home,
            &["commit", "-q", "-m", "Merge #1: the first buttons"],
        );
        git(&dev, &home, &["push", "-q", "origin", "main"]);
        repo
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn dev(&self) -> PathBuf {
        self.dir.path().join("dev")
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("origin.git").display())
    }

    /// What `actions/checkout` makes of `ref: main`: a shallow clone of the tip.
    fn checkout(&self, name: &str) -> PathBuf {
        let dest = self.dir.path().join(name);
        git(
            self.dir.path(),
            &self.home(),
            &[
                "clone",
                "-q",
                "--depth",
                "1",
                "--branch",
                "main",
                &self.url(),
                dest.to_str().expect("utf-8"),
            ],
        );
        dest
    }

    /// A developer merges a change into `main`.
    fn merge(&self, subject: &str, edit: impl FnOnce(&Path)) {
        let (dev, home) = (self.dev(), self.home());
        git(&dev, &home, &["pull", "-q", "--rebase", "origin", "main"]);
        edit(&dev.join("buttons"));
        git(&dev, &home, &["commit", "-q", "-am", subject]);
        git(&dev, &home, &["push", "-q", "origin", "main"]);
    }

    /// `main`'s commit subjects, newest first.
    fn log(&self, branch: &str) -> Vec<String> {
        let bare = self.dir.path().join("origin.git");
        git(&bare, &self.home(), &["log", "--format=%s", branch])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn branches(&self) -> Vec<String> {
        let bare = self.dir.path().join("origin.git");
        git(
            &bare,
            &self.home(),
            &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The applied state recorded on `rev`: targets by (chat, audience) -> button texts.
    fn state(&self, rev: &str) -> BTreeMap<String, Vec<String>> {
        let bare = self.dir.path().join("origin.git");
        let json = git(&bare, &self.home(), &["show", &format!("{rev}:{STATE}")]);
        let tmp = Dir::new().file("state.json", &json);
        let state = feedbuttons::state::open(&tmp.path().join("state.json"))
            .expect("open the recorded state")
            .load()
            .expect("load the recorded state");
        state
            .targets
            .iter()
            .map(|(t, list)| {
                let texts = serde_json::to_value(list.shown()).expect("json");
                let texts = texts
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
                    .collect();
                (t.to_string(), texts)
            })
            .collect()
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} holds `{from}`", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

async fn emulator(fixtures: Option<&str>) -> RunningEmulator {
    Emulator::start(EmulatorConfig {
        rate_limit: 0,
        fixtures: fixtures.map(|f| Fixtures::parse(f).expect("valid fixtures")),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator")
}

/// The button texts `user` sees in `chat`.
async fn sees(emulator: &RunningEmulator, chat: &str, user: &str) -> Vec<String> {
    let v: Value = reqwest::get(emulator.url(&format!("/_emulator/chats/{chat}/users/{user}")))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    v["buttons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

/// The apply job of the GitHub workflow in `workspace`, against the emulator.
async fn github_apply(repo: &Repo, workspace: PathBuf, emulator: &RunningEmulator) -> JobRun {
    let (home, url) = (repo.home(), emulator.base_url());
    blocking(move || {
        let mut runner = Runner::new(&workspace, &home);
        runner.env.push(("FEISHU_BASE_URL".to_owned(), url));
        runner.run_github("apply")
    })
    .await
}

const INCIDENTS: &str = "oc_a0553eda9014c201e6969b478895c230";
const SRE_TEAM: &str = "oc_b7e2c91f0a3d4e5f6a7b8c9d0e1f2a3b";
const ONCALL: &str = "ou_89553eda9014c201e6969b478895c276";

// ---------------------------------------------------------------- what the examples say

#[test]
fn the_examples_install_the_version_this_is_and_gitlab_does_what_github_does() {
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(yaml(GITHUB)["env"]["FEEDBUTTONS_VERSION"], version);
    let gitlab = yaml(GITLAB);
    assert_eq!(gitlab["variables"]["FEEDBUTTONS_VERSION"], version);
    let github_text = std::fs::read_to_string(util::root().join(GITHUB)).expect("read");
    let gitlab_text = std::fs::read_to_string(util::root().join(GITLAB)).expect("read");
    for text in [&github_text, &gitlab_text] {
        assert!(
            text.contains(r#"cargo install --locked feedbuttons --version "$FEEDBUTTONS_VERSION""#)
        );
        assert!(!text.contains("FEEDBUTTONS_SOURCE"));
    }
    let readme = std::fs::read_to_string(util::root().join("README.md")).expect("README");
    assert!(
        readme.contains(&format!(
            "cargo install --locked feedbuttons --version {version}"
        )),
        "the README installs {version}"
    );

    // GitLab plans and applies with the same command lines, and records the state
    // with the same script (GitLab's runs in a subshell, so that its `exit` ends only it).
    let wf = yaml(GITHUB);
    let runs: Vec<&str> = ["plan", "apply"]
        .iter()
        .flat_map(|j| wf["jobs"][j]["steps"].as_array().expect("steps"))
        .filter_map(|s| s["run"].as_str())
        .collect();
    let plan = runs
        .iter()
        .find(|r| r.starts_with("feedbuttons plan"))
        .expect("a plan line");
    // The same command; GitLab writes plan.md where it runs it.
    let plan = plan.split(" >").next().unwrap_or_default();
    assert!(gitlab_text.contains(plan), "{plan}");
    assert!(gitlab_text.contains("feedbuttons apply buttons --yes || code=$?"));
    let push = runs
        .iter()
        .find(|r| r.contains("git push"))
        .expect("the push script");
    let gitlab_push = gitlab["feedbuttons-apply"]["script"]
        .as_array()
        .expect("script")
        .iter()
        .filter_map(Value::as_str)
        .find(|l| l.contains("git push"))
        .expect("GitLab pushes the state");
    let body: Vec<&str> = gitlab_push
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .expect("in a subshell")
        .trim()
        .lines()
        .map(str::trim)
        .collect();
    let github_lines: Vec<&str> = push.trim().lines().map(str::trim).collect();
    assert_eq!(body, github_lines);
}

// ---------------------------------------------------------------- pull requests

/// A plan job's workspace: `head/buttons` (the pull request) and `base` (the base branch).
fn pull_request(head: &str, base: Option<&str>) -> Dir {
    let dir = Dir::new();
    copy_dir(
        &util::root().join(head),
        &dir.path().join("ws/head/buttons"),
    );
    std::fs::create_dir_all(dir.path().join("ws/base")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("home")).expect("mkdir");
    if let Some(base) = base {
        copy_dir(
            &util::root().join(base),
            &dir.path().join("ws/base/buttons"),
        );
    }
    dir
}

fn plan_job(dir: &Dir) -> (JobRun, String) {
    let ws = dir.path().join("ws");
    let run = Runner::new(&ws, &dir.path().join("home")).run_github("plan");
    let comment = std::fs::read_to_string(ws.join("plan.md")).unwrap_or_default();
    (run, comment)
}

#[test]
fn the_first_pull_request_plans_every_button_as_an_add() {
    // The base branch has no buttons/ yet.
    let dir = pull_request("examples/teams", None);
    let (run, comment) = plan_job(&dir);
    assert!(run.passed(), "{}", run.log());
    assert!(
        comment.starts_with(
            "<!-- feedbuttons-plan -->\n**Plan: 14 to add, 0 to change, 0 to remove, 0 unchanged"
        ),
        "{comment}"
    );
    assert!(!comment.contains("REMOVED"), "{comment}");
    assert!(
        run.step("Plan against the base branch")
            .output
            .contains("does not exist: planning against an empty base (everything is an add)"),
        "{}",
        run.log()
    );
    let summary = std::fs::read_to_string(dir.path().join("home/runner/step-summary.md"))
        .expect("the job summary");
    assert_eq!(summary, comment);

    // The same when the folder exists on the base branch but holds no config file yet.
    let dir = pull_request("examples/teams", None);
    std::fs::create_dir_all(dir.path().join("ws/base/buttons")).expect("mkdir");
    std::fs::write(
        dir.path().join("ws/base/buttons/README.md"),
        "Our buttons\n",
    )
    .expect("write");
    let (run, again) = plan_job(&dir);
    assert!(run.passed(), "{}", run.log());
    assert_eq!(again, comment);

    // A base that exists and is broken is still an error: nothing is planned, the job fails.
    let dir = pull_request(
        "examples/teams",
        Some("tests/fixtures/invalid/duplicate-key"),
    );
    let (run, _) = plan_job(&dir);
    assert!(!run.passed());
    assert_eq!(run.step("Plan against the base branch").code, Some(1));
    assert!(
        run.step("Plan against the base branch")
            .output
            .contains("the base config ../base/buttons has 1 error(s)"),
        "{}",
        run.log()
    );
}

#[test]
fn a_pull_request_gets_annotations_and_one_plan_comment() {
    let dir = pull_request("examples/teams", Some("examples/quickstart"));
    let (run, comment) = plan_job(&dir);
    assert!(
        run.passed(),
        "changes present is not a failure: {}",
        run.log()
    );
    assert_eq!(run.step("Validate").code, Some(0), "{}", run.log());
    assert!(!run.step("Validate").output.contains("::error"));
    assert_eq!(
        run.step("Install feedbuttons").code,
        None,
        "restored from the cache"
    );
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

    // A broken edit: annotations on the right file and line, and the job fails there.
    edit(
        &dir.path().join("ws/head/buttons/teams/sre.yaml"),
        "buttons: [runbook, ack]",
        "buttons: [runbook, ack, status]",
    );
    let (run, _) = plan_job(&dir);
    assert!(!run.passed());
    let validate = run.step("Validate");
    assert_eq!(validate.code, Some(1));
    assert!(
        validate.output.lines().any(|l| l
            .starts_with("::error file=buttons/teams/sre.yaml,line=11,col=18,")
            && l.contains("title=too-many-buttons::")),
        "{}",
        validate.output
    );
    assert_eq!(
        run.step("Plan against").code,
        None,
        "nothing after a failure"
    );
}

#[test]
fn no_changes_still_comments_and_passes() {
    let dir = pull_request("examples/teams", Some("examples/teams"));
    let (run, comment) = plan_job(&dir);
    assert!(run.passed(), "{}", run.log());
    assert!(
        comment.starts_with("<!-- feedbuttons-plan -->\n**Plan: no changes.**"),
        "{comment}"
    );
}

// ---------------------------------------------------------------- merges

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_applies_and_commits_the_state_to_the_branch() {
    let repo = Repo::new("examples/teams");
    let emu = emulator(None).await;
    let run = github_apply(&repo, repo.checkout("runner-1"), &emu).await;
    assert!(run.passed(), "{}", run.log());
    assert!(
        run.step("Apply").output.contains("Plan: 14 to add"),
        "{}",
        run.log()
    );
    assert!(
        run.step("Commit and push")
            .output
            .contains("The applied state is recorded on main."),
        "{}",
        run.log()
    );
    assert_eq!(run.step("Keep the state").code, None);
    assert_eq!(repo.log("main"), [RECORD, "Merge #1: the first buttons"]);
    assert_eq!(repo.state("main").len(), 14);
    let bare = repo.dir.path().join("origin.git");
    let files = git(
        &bare,
        &repo.home(),
        &["ls-tree", "-r", "--name-only", "main"],
    );
    assert!(!files.contains("state.lock"), "{files}");
    assert_eq!(
        sees(&emu, INCIDENTS, ONCALL).await,
        ["Runbook", "Acknowledge"]
    );

    // The next run (another change elsewhere, say) has nothing to apply and commits nothing.
    let run = github_apply(&repo, repo.checkout("runner-2"), &emu).await;
    assert!(run.passed(), "{}", run.log());
    assert!(
        run.step("Apply").output.contains("No changes"),
        "{}",
        run.log()
    );
    assert_eq!(repo.log("main").len(), 2, "{:?}", repo.log("main"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_push_that_races_another_merge_rebases_and_both_are_recorded() {
    let repo = Repo::new("examples/teams");
    let emu = emulator(None).await;
    // The runner checks out #1; while it applies, #2 is merged.
    let first = repo.checkout("runner-1");
    repo.merge("Merge #2: runbook for the SRE team", |buttons| {
        edit(
            &buttons.join("teams/sre.yaml"),
            "buttons: [dashboards]",
            "buttons: [dashboards, runbook]",
        );
    });
    let run = github_apply(&repo, first, &emu).await;
    assert!(run.passed(), "{}", run.log());
    let push = &run.step("Commit and push").output;
    assert!(
        push.contains("Push to main rejected (attempt 1 of 5); rebasing"),
        "{push}"
    );
    assert!(
        push.contains("The applied state is recorded on main."),
        "{push}"
    );
    assert_eq!(
        repo.log("main"),
        [
            RECORD,
            "Merge #2: runbook for the SRE team",
            "Merge #1: the first buttons"
        ],
        "the record sits on top of the other merge"
    );
    let recorded = repo.state("main");
    assert_eq!(recorded.len(), 14);

    // #2's own run starts from the tip: it applies only #2's change, and records it on top.
    let run = github_apply(&repo, repo.checkout("runner-2"), &emu).await;
    assert!(run.passed(), "{}", run.log());
    assert!(
        run.step("Apply")
            .output
            .contains("Plan: 0 to add, 4 to change, 0 to remove, 10 unchanged"),
        "{}",
        run.log()
    );
    assert_eq!(repo.log("main")[..2], [RECORD, RECORD]);
    let both = repo.state("main");
    assert_eq!(both.len(), 14);
    assert_ne!(both, recorded);
    assert_eq!(
        sees(&emu, SRE_TEAM, ONCALL).await,
        ["Dashboards", "Runbook"]
    );
    assert_eq!(
        sees(&emu, INCIDENTS, ONCALL).await,
        ["Runbook", "Acknowledge"]
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_failed_apply_commits_what_it_applied_and_fails_the_job() {
    let repo = Repo::new("examples/teams");
    // The bot was never added to the SRE team's chat.
    let emu = emulator(Some(&format!(
        "open_chats: true\nchats:\n  - chat_id: {SRE_TEAM}\n    bot_member: false\n"
    )))
    .await;
    let run = github_apply(&repo, repo.checkout("runner"), &emu).await;
    assert!(!run.passed());
    assert_eq!(
        run.step("Apply").code,
        Some(0),
        "the apply step only records"
    );
    assert_eq!(run.step("Commit and push").code, Some(0), "{}", run.log());
    let verdict = run.step("Pass on 0 and 4");
    assert_eq!(verdict.code, Some(1));
    assert!(
        verdict.output.contains("::error::Partly applied"),
        "{}",
        verdict.output
    );
    assert_eq!(repo.log("main")[0], RECORD);
    let recorded = repo.state("main");
    assert_eq!(
        recorded.len(),
        10,
        "the 4 SRE team targets are not recorded"
    );
    assert!(
        recorded.keys().all(|k| !k.contains(SRE_TEAM)),
        "{recorded:?}"
    );
    emu.shutdown().await;
}

#[test]
fn the_job_passes_on_0_and_4_fails_on_1_and_3_and_always_pushes_the_record() {
    // A stand-in for `feedbuttons apply` that records something and exits with a given code.
    for (code, passes) in [(0, true), (4, true), (3, false), (1, false)] {
        let repo = Repo::new("examples/quickstart");
        let stub = repo.dir.path().join("stub");
        std::fs::create_dir_all(&stub).expect("mkdir");
        std::fs::write(
            stub.join("feedbuttons"),
            format!(
                "#!/bin/sh\nmkdir -p buttons/.feedbuttons\n\
                 echo '{{\"exit\": {code}}}' > buttons/.feedbuttons/state.json\n\
                 touch buttons/.feedbuttons/state.lock\nexit {code}\n"
            ),
        )
        .expect("write the stub");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                stub.join("feedbuttons"),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod");
        }
        if !passes {
            // The lock stays out of the record even without a .gitignore that says so.
            repo.merge("No .gitignore", |buttons| {
                std::fs::remove_file(buttons.join("../.gitignore")).expect("rm");
            });
        }
        let ws = repo.checkout("runner");
        let home = repo.home();
        let mut runner = Runner::new(&ws, &home);
        runner.path_first = Some(&stub);
        let run = runner.run_github("apply");
        assert_eq!(run.passed(), passes, "exit {code}: {}", run.log());
        assert_eq!(repo.log("main")[0], RECORD, "exit {code}");
        let bare = repo.dir.path().join("origin.git");
        let state = git(&bare, &home, &["show", &format!("main:{STATE}")]);
        assert_eq!(state.trim(), format!("{{\"exit\": {code}}}"));
        let files = git(&bare, &home, &["ls-tree", "-r", "--name-only", "main"]);
        assert!(!files.contains("state.lock"), "{files}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_rebase_is_kept_on_a_branch_and_the_job_fails() {
    let repo = Repo::new("examples/teams");
    let emu = emulator(None).await;
    let runner = repo.checkout("runner");
    // Meanwhile something else records a state on main (someone ran apply by hand).
    repo.merge("A state recorded by hand", |buttons| {
        std::fs::create_dir_all(buttons.join(".feedbuttons")).expect("mkdir");
        std::fs::write(buttons.join(".feedbuttons/state.json"), "{}\n").expect("write");
        git(buttons, &repo.home(), &["add", ".feedbuttons/state.json"]);
    });
    let run = github_apply(&repo, runner, &emu).await;
    assert!(!run.passed());
    let push = run.step("Commit and push");
    assert_eq!(push.code, Some(1));
    assert!(
        push.output.contains(
            "the applied state could not be pushed to main; it is on the branch feedbuttons/state-4242"
        ),
        "{}",
        push.output
    );
    assert_eq!(run.step("Keep the state").code, Some(0), "the artifact too");
    assert_eq!(
        repo.log("main")[0],
        "A state recorded by hand",
        "main untouched"
    );
    assert!(
        repo.branches()
            .contains(&"feedbuttons/state-4242".to_owned())
    );
    assert_eq!(
        repo.state("feedbuttons/state-4242").len(),
        14,
        "nothing lost"
    );
    emu.shutdown().await;
}

/// Makes a change land on `main` (a developer's merge) right after the job's clone next checks
/// out a commit: while the job applies, before it pushes.
fn race(repo: &Repo, job_clone: &Path, subject: &str, file: &str, contents: &str) {
    let new = job_clone.join(".git/race-contents");
    std::fs::write(&new, contents).expect("write");
    let hook = job_clone.join(".git/hooks/post-checkout");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n\
             [ -e \"$0.done\" ] && exit 0\n\
             touch \"$0.done\"\n\
             unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_PREFIX\n\
             cd '{dev}' || exit 1\n\
             git pull -q --rebase origin main\n\
             mkdir -p \"$(dirname 'buttons/{file}')\"\n\
             cp '{new}' 'buttons/{file}'\n\
             git add -A && git commit -q -m '{subject}' && git push -q origin main\n",
            dev = repo.dev().display(),
            new = new.display(),
        ),
    )
    .expect("write the hook");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// GitLab's predefined variables for a pipeline on `main`, and the project token's push URL
/// rewritten to the bare repository.
fn gitlab_ci(repo: &Repo) -> Vec<(String, String)> {
    [
        ("CI_COMMIT_BRANCH", "main".to_owned()),
        ("CI_PIPELINE_ID", "77".to_owned()),
        ("CI_SERVER_HOST", "gitlab.example.invalid".to_owned()),
        ("CI_PROJECT_PATH", "team/buttons".to_owned()),
        ("GITLAB_API_TOKEN", "glpat-test".to_owned()),
        ("GIT_CONFIG_COUNT", "1".to_owned()),
        ("GIT_CONFIG_KEY_0", format!("url.{}.insteadOf", repo.url())),
        (
            "GIT_CONFIG_VALUE_0",
            "https://oauth2:glpat-test@gitlab.example.invalid/team/buttons.git".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn gitlab_apply(repo: &Repo, ws: PathBuf, emulator: &RunningEmulator) -> (i32, String) {
    let (home, vars, url) = (repo.home(), gitlab_ci(repo), emulator.base_url());
    blocking(move || run_gitlab("feedbuttons-apply", &ws, &home, &vars, &url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gitlab_apply_job_rebases_its_record_and_fails_loudly_when_it_cannot_push() {
    let repo = Repo::new("examples/teams");
    let emu = emulator(None).await;
    let sre =
        std::fs::read_to_string(util::root().join("examples/teams/teams/sre.yaml")).expect("read");
    let with_runbook = sre.replacen("buttons: [dashboards]", "buttons: [dashboards, runbook]", 1);

    // #2 is merged while the job applies #1: the job rebases its record onto it.
    let ws = repo.checkout("gitlab-1");
    race(
        &repo,
        &ws,
        "Merge #2: runbook for the SRE team",
        "teams/sre.yaml",
        &with_runbook,
    );
    let (code, log) = gitlab_apply(&repo, ws, &emu).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("Push to main rejected (attempt 1 of 5)"),
        "{log}"
    );
    assert!(
        log.contains("The applied state is recorded on main."),
        "{log}"
    );
    assert!(log.contains("Everything is applied."), "{log}");
    assert_eq!(
        repo.log("main"),
        [
            RECORD,
            "Merge #2: runbook for the SRE team",
            "Merge #1: the first buttons"
        ]
    );
    assert_eq!(repo.state("main").len(), 14);
    assert_eq!(
        sees(&emu, SRE_TEAM, ONCALL).await,
        ["Dashboards"],
        "#1 applied"
    );

    // #2's job: while it applies, someone records a state by hand. The record cannot be put
    // on top of that: the job fails (not silently, as a push in after_script would), and the
    // record is kept on a branch of its own.
    let ws = repo.checkout("gitlab-2");
    race(
        &repo,
        &ws,
        "A state recorded by hand",
        ".feedbuttons/state.json",
        "{}\n",
    );
    let (code, log) = gitlab_apply(&repo, ws, &emu).await;
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(
            "error: the applied state could not be pushed to main; it is on the branch feedbuttons/state-77"
        ),
        "{log}"
    );
    assert!(!log.contains("Everything is applied."), "{log}");
    assert_eq!(repo.log("main")[0], "A state recorded by hand");
    let kept = repo.state("feedbuttons/state-77");
    assert_eq!(kept.len(), 14);
    assert_eq!(
        sees(&emu, SRE_TEAM, ONCALL).await,
        ["Dashboards", "Runbook"],
        "#2 applied"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_state_in_postgres_merges_apply_and_nothing_is_committed_back() {
    let Some(pg) = crate::pgserver::start() else {
        return;
    };
    let url = pg.url("postgres");
    let repo = Repo::new("examples/teams");
    let emu = emulator(None).await;
    let github = |workspace: PathBuf| {
        let (home, base, url) = (repo.home(), emu.base_url(), url.clone());
        blocking(move || {
            let mut runner = Runner::new(&workspace, &home);
            runner.workflow = GITHUB_PG;
            runner
                .exprs
                .insert("secrets.FEEDBUTTONS_STATE".to_owned(), url);
            runner.exprs.insert(
                "github.event.repository.name".to_owned(),
                "buttons".to_owned(),
            );
            runner.env.push(("FEISHU_BASE_URL".to_owned(), base));
            runner.run_github("apply")
        })
    };
    let run = github(repo.checkout("runner-1")).await;
    assert!(run.passed(), "{}", run.log());
    let apply = run.step("Apply (pass on 0 and 4, fail on 1 and 3)");
    assert!(apply.output.contains("Plan: 14 to add"), "{}", run.log());
    assert!(
        apply.output.contains("Everything is applied."),
        "{}",
        run.log()
    );
    assert_eq!(
        sees(&emu, INCIDENTS, ONCALL).await,
        ["Runbook", "Acknowledge"]
    );
    // Nothing goes back to the branch: the record is in the database, under the repository's
    // name.
    assert_eq!(repo.log("main"), ["Merge #1: the first buttons"]);
    let recorded = feedbuttons::state::open_named(Path::new(&url), Some("buttons"))
        .expect("the store")
        .load()
        .expect("the state");
    assert_eq!(recorded.targets.len(), 14);

    // A merge, applied by the next run against the same record; the GitLab job of another
    // checkout then finds nothing to do in the same state.
    let sre =
        std::fs::read_to_string(util::root().join("examples/teams/teams/sre.yaml")).expect("read");
    let with_runbook = sre.replacen("buttons: [dashboards]", "buttons: [dashboards, runbook]", 1);
    assert_ne!(sre, with_runbook);
    repo.merge("Merge #2: runbook for the SRE team", |dev| {
        std::fs::write(dev.join("teams/sre.yaml"), &with_runbook).expect("write")
    });
    let run = github(repo.checkout("runner-2")).await;
    assert!(run.passed(), "{}", run.log());
    let apply = run.step("Apply (pass on 0 and 4, fail on 1 and 3)");
    assert!(
        apply.output.contains("Plan: 0 to add, 4 to change"),
        "{}",
        run.log()
    );
    assert_eq!(
        repo.log("main"),
        [
            "Merge #2: runbook for the SRE team",
            "Merge #1: the first buttons"
        ]
    );

    let mut vars = gitlab_ci(&repo);
    vars.push(("CI_PROJECT_NAME".to_owned(), "buttons".to_owned()));
    vars.push(("FEEDBUTTONS_STATE".to_owned(), url.clone()));
    let (ws, home, base) = (repo.checkout("gitlab-1"), repo.home(), emu.base_url());
    let (code, log) =
        blocking(move || run_gitlab_file(GITLAB_PG, "feedbuttons-apply", &ws, &home, &vars, &base))
            .await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("No changes"), "{log}");
    assert!(!log.contains(&url), "the URL is printed whole:\n{log}");
    assert_eq!(repo.log("main").len(), 2);
    emu.shutdown().await;
}

/// A GitLab runner with the `fetch` Git strategy (GitLab's default) keeps a project's clone
/// from one job to the next, cleaned with `git clean -ffdx` and `git reset --hard`, but not its
/// registered worktrees. The plan job's checkout of the target branch must work in the second
/// merge request's pipeline too, whether the last job's `../base` is still there or was removed.
#[test]
fn the_gitlab_plan_job_checks_out_its_base_again_in_a_reused_clone() {
    for file in [GITLAB, GITLAB_PG] {
        let repo = Repo::new("examples/quickstart");
        let home = repo.home();
        let ws = repo.checkout("builds/team/buttons");
        let git_lines: Vec<String> = yaml(file)["feedbuttons-plan"]["script"]
            .as_array()
            .expect("script")
            .iter()
            .filter_map(Value::as_str)
            .filter(|l| l.starts_with("git "))
            .map(str::to_owned)
            .collect();
        assert!(
            git_lines.iter().any(|l| l.contains("worktree add")),
            "{file}: {git_lines:?}"
        );
        let script = format!("set -eo pipefail\n{}", git_lines.join("\n"));
        let base = ws.join("../base/buttons");
        for (job, remove_base) in [(1, false), (2, false), (3, true)] {
            if remove_base {
                std::fs::remove_dir_all(ws.join("../base")).expect("remove ../base");
            }
            let out = command("bash", &ws, &home, None)
                .args(["-c", &script])
                .env("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")
                .output()
                .expect("run bash");
            assert!(
                out.status.success(),
                "{file}, job {job}:\n{}{}",
                util::stdout(&out),
                util::stderr(&out)
            );
            assert!(base.join("buttons.yaml").is_file(), "{file}, job {job}");
            // What the runner does before the next job in this clone.
            git(&ws, &home, &["clean", "-ffdxq"]);
            git(&ws, &home, &["reset", "-q", "--hard"]);
        }
    }
}
