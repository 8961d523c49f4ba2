//! `feedbuttons plan`: what apply would change, against the applied state or another config
//! directory (`--base`), as text, markdown or JSON; optionally saved for `apply --plan`.

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::JoinHandle;

use super::args::{PlanArgs, PlanFormat};
use super::{Error, load, term};
use crate::plan::{self, Plan};
use crate::settings::{self, DEFAULT_BASE_URL, StateLocation};
use crate::state::file::TornTail;
use crate::state::{self, AppliedState, Binding, FileStore, StateError, StateStore};

/// Exit 0, or 2 with `--detailed-exitcode` when there are changes.
pub fn run(args: &PlanArgs) -> Result<ExitCode, Error> {
    // The applied state is read on a thread of its own while the config is parsed and checked,
    // which leaves a core idle part of the time. A config error is still the one reported
    // first: the read is waited for only once the config is valid.
    let against_what = match &args.base {
        Some(base_dir) => Against::Base(base_dir),
        None => Against::State(StateRead::start(
            StateLocation::resolve(&args.dir, args.state.as_deref())
                .named(args.state_name.as_deref()),
        )),
    };
    let (desired, config_files) = load::desired(&args.dir)?;
    let options = plan::PlanOptions {
        chats: args.chats.clone(),
        rate_limit: args.rate_limit,
        ..Default::default()
    };
    // What the plan is compared with; it borrows their targets. Left to the exit, like the
    // plan (see `leave_to_exit`).
    let base;
    let applied;
    // A shared store holds several states: a plan says which one it was made against.
    let mut against: Option<String> = None;
    let (the_plan, state_ref) = match against_what {
        Against::Base(base_dir) => {
            base = ManuallyDrop::new(load::base(base_dir)?);
            let known = |c: &str| load::declares(&base, c);
            load::check_chats_known(&args.chats, &desired, known, "the base config")?;
            // Chats that only the base declares keep their names in the plan.
            let mut names = base.chat_names.clone();
            names.extend(desired.chat_names.clone());
            let mut p = plan::plan(&desired.targets, &names, &base.targets, &options);
            // People the base names and this config no longer does are shown by the base's lock.
            let mut people = base.people.clone();
            people.extend(desired.people.clone());
            p.label_people(&people);
            (p, None)
        }
        Against::State(read) => {
            let location = read.location.clone();
            if let Some(out) = &args.out {
                check_plan_out(out, &args.dir, location.spec(), &config_files)?;
            }
            let (store_location, state) = read.finish()?;
            applied = ManuallyDrop::new(state);
            if location.is_shared() {
                against = Some(format!("{store_location} at serial {}", applied.serial));
            }
            let known = |c: &str| applied.chat(c).next().is_some();
            load::check_chats_known(&args.chats, &desired, known, "the state")?;
            // With an app configured, a plan against another app's state would mislead.
            if let Some(app_id) = settings::app_id_from_env() {
                // Without a base URL given, the app id alone is compared: a state applied with
                // `--base-url` is still the same app's.
                let base_url = match args.base_url.as_deref().filter(|u| !u.is_empty()) {
                    Some(u) => u.to_owned(),
                    None => applied
                        .binding
                        .as_ref()
                        .map_or_else(|| DEFAULT_BASE_URL.to_owned(), |b| b.base_url.clone()),
                };
                applied.check_binding(&Binding::new(base_url, app_id.clone()))?;
            }
            // Another app's open_ids (from the lock) would name no one under this one.
            load::check_lock_app(&desired, &applied)?;
            let mut p = plan::plan(
                &desired.targets,
                &desired.chat_names,
                &applied.targets,
                &options,
            );
            p.label_people(&desired.people);
            let state_ref = plan::json::StateRef {
                lineage: applied.lineage.clone(),
                serial: applied.serial,
            };
            (p, Some(state_ref))
        }
    };
    if let (Some(out), Some(state_ref)) = (&args.out, state_ref) {
        let doc = plan::json::PlanDoc {
            open_ids_of: desired.open_ids_of.clone(),
            ..plan::json::PlanDoc::new(&the_plan)
        };
        doc.save(out, state_ref)?;
    }
    print(&the_plan, args.format)?;
    if let Some(against) = &against {
        match args.format {
            PlanFormat::Markdown => term::print(&format!("\n_Planned against {against}._\n"))?,
            PlanFormat::Text | PlanFormat::Json => eprintln!("Planned against {against}."),
        }
    }
    if let Some(out) = &args.out {
        eprintln!(
            "Saved the plan to {}; apply it with `{}`.",
            out.display(),
            apply_command(args, out)
        );
    }
    let code = if args.detailed_exitcode && the_plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    super::leave_to_exit(the_plan);
    super::leave_to_exit(desired);
    Ok(code)
}

/// What a plan compares the config with: `--base`'s config, or the applied state.
enum Against<'a> {
    Base(&'a Path),
    State(StateRead),
}

/// The applied state, read from a state file on a thread of its own while the config is
/// checked; a PostgreSQL state (or a store that cannot be read ahead) is read when asked for,
/// after the config: a plan that stops at a config error never connects to a database (nor
/// creates its tables). A read ahead keeps its warning until its state is used, so that a
/// config error is the only thing such a plan reports.
struct StateRead {
    location: StateLocation,
    ahead: Option<JoinHandle<ReadAhead>>,
}

/// A state file read ahead: the store, and the state with its untold warning.
type ReadAhead = Result<(FileStore, AppliedState, TornTail), StateError>;

impl StateRead {
    fn start(location: StateLocation) -> StateRead {
        let ahead = (!location.is_shared() && location.name().is_none())
            .then(|| {
                let path = location.spec().to_path_buf();
                std::thread::Builder::new()
                    .name("state-read".into())
                    .spawn(move || -> ReadAhead {
                        let store = FileStore::new(&path)?;
                        let (state, torn) = store.load_untold()?;
                        Ok((store, state, torn))
                    })
                    .ok()
            })
            .flatten();
        StateRead { location, ahead }
    }

    /// Where the store is (for messages) and the state it holds.
    fn finish(self) -> Result<(String, AppliedState), StateError> {
        match self.ahead {
            Some(thread) => {
                let (store, state, torn) = thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                torn.tell(&store);
                Ok((store.location(), state))
            }
            None => {
                let store = self.location.open()?;
                let state = store.load()?;
                Ok((store.location(), state))
            }
        }
    }
}

fn print(the_plan: &Plan, format: PlanFormat) -> Result<(), Error> {
    match format {
        PlanFormat::Text => term::print(&plan::render::text(
            the_plan,
            plan::render::Style {
                color: term::stdout_color(),
            },
        )),
        PlanFormat::Markdown => term::print(&plan::render::markdown(the_plan)),
        PlanFormat::Json => term::write_stdout(|w| plan::json::write_json(the_plan, w)),
    }
}

/// The command that applies a plan saved to `out`: the config directory (whose default state
/// the plan was made against) and, when one was named, the state, each quoted for a POSIX
/// shell where needed.
fn apply_command(args: &PlanArgs, out: &Path) -> String {
    let mut words = vec![
        "feedbuttons".to_owned(),
        "apply".to_owned(),
        shell_word(&args.dir.to_string_lossy()),
    ];
    // What the environment gives apply as well is left out; a database URL's password is
    // never printed (apply takes it from PGPASSWORD or the password file just as well).
    let from_env =
        |var: &str, value: &std::ffi::OsStr| std::env::var_os(var).as_deref() == Some(value);
    if let Some(state) = args.state.as_deref()
        && !from_env("FEEDBUTTONS_STATE", state.as_os_str())
    {
        let shown = match state::is_postgres(state) {
            true => without_password(&state.to_string_lossy()),
            false => state.to_string_lossy().into_owned(),
        };
        words.push("--state".to_owned());
        words.push(shell_word(&shown));
    }
    if let Some(name) = &args.state_name
        && !from_env("FEEDBUTTONS_STATE_NAME", std::ffi::OsStr::new(name))
    {
        words.push("--state-name".to_owned());
        words.push(shell_word(name));
    }
    words.push("--plan".to_owned());
    words.push(shell_word(&out.to_string_lossy()));
    words.join(" ")
}

/// A database URL without its password (which apply reads from PGPASSWORD or the password
/// file as well).
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => state::redact_url(url),
    }
}

/// `s` as one word for a POSIX shell: as it is when it holds nothing special, else in single
/// quotes.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The path with its parent resolved (symbolic links, `..`), for comparing where files land.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(p), Some(name)) => p.join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses a `plan --out` path that would overwrite what the plan was made from: the state's
/// files, or a config file (or a YAML file in the config directory, which the next run would
/// read as config).
fn check_plan_out(
    out: &Path,
    dir: &Path,
    state_path: &Path,
    config_files: &[PathBuf],
) -> Result<(), Error> {
    let target = resolved(out);
    let refuse = |what: &'static str| {
        Err(Error::PlanOut {
            path: out.to_path_buf(),
            what,
        })
    };
    if let Ok(store) = state::FileStore::new(state_path) {
        for (p, what) in [
            (store.snapshot_path(), "the state snapshot"),
            (store.journal_path(), "the state journal"),
            (store.lock_path(), "the state lock"),
        ] {
            if resolved(p) == target {
                return refuse(what);
            }
        }
        let mut temp = store.snapshot_path().as_os_str().to_owned();
        temp.push(".tmp");
        if resolved(Path::new(&temp)) == target {
            return refuse("the state's next snapshot");
        }
    }
    if config_files.iter().any(|f| resolved(f) == target) {
        return refuse("a file of the config");
    }
    let yaml = target
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml");
    if yaml && target.starts_with(resolved(dir)) {
        return refuse(
            "a YAML file in the config directory, which the next run would read as config",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn words_are_quoted_only_when_a_shell_would_split_or_expand_them() {
        assert_eq!(shell_word("buttons/team-a"), "buttons/team-a");
        assert_eq!(shell_word("my config"), "'my config'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word(""), "''");
    }
}
