//! `feedbuttons state list|show|rm|adopt`: inspect the applied state, and repair it by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{StateArgs, StateCommand, StateFormat};
use super::{Error, load, term};
use crate::config::LoadError;
use crate::settings::StateLocation;
use crate::state::commands::{self, Selector, ShowFormat};
use crate::state::{self, StateError};

pub fn run(args: StateArgs) -> Result<ExitCode, Error> {
    let StateArgs {
        command,
        state: state_flag,
        state_name,
        lock_timeout,
        dir_flag,
    } = args;
    let given = match &command {
        StateCommand::List { dir, .. } | StateCommand::Adopt { dir, .. } => dir.clone(),
        StateCommand::Show { .. } | StateCommand::Rm { .. } | StateCommand::Migrate { .. } => None,
    };
    let dir = config_dir(given, dir_flag)?;
    let location = StateLocation::resolve(&dir, state_flag.as_deref())
        .named(state_name.as_deref())
        .waiting(lock_timeout);
    // The state beside a directory that is not there is a typo, not an empty state: reading it
    // would show nothing recorded, and writing it would create the typo's `.feedbuttons/`.
    let uses_dir = !location.was_given() || matches!(command, StateCommand::Adopt { .. });
    if uses_dir && !matches!(command, StateCommand::Migrate { .. }) && !dir.is_dir() {
        return Err(LoadError::NotADirectory { path: dir }.into());
    }
    // Opened by the commands that use it (migrate names its own two).
    let open = || location.open();
    let text = match command {
        StateCommand::List { chat, format, .. } => {
            let store = open()?;
            let st = store.load()?;
            // People by email beside their ids, when the config has a lock.
            let people = crate::lock::Lock::load(&dir)
                .ok()
                .flatten()
                .map(|l| l.labels())
                .unwrap_or_default();
            match format {
                StateFormat::Json => {
                    commands::list_json(&st, &store.location(), chat.as_deref(), &people)
                }
                StateFormat::Text => {
                    let mut out = commands::summary(&st, &store.location());
                    out.push('\n');
                    out.push_str(&commands::list_people(&st, chat.as_deref(), &people));
                    out
                }
            }
        }
        StateCommand::Show {
            chat_id,
            audience,
            format,
        } => {
            let format = match format {
                StateFormat::Text => ShowFormat::Text,
                StateFormat::Json => ShowFormat::Json,
            };
            let store = open()?;
            let st = store.load()?;
            commands::show(&st, &store.location(), &selector(chat_id, audience), format)?
        }
        StateCommand::Rm { chat_id, audience } => {
            let selector = selector(chat_id, audience);
            let store = open()?;
            let removed = location
                .writer(store.as_ref(), &state::holder("state rm"))
                .and_then(|mut writer| {
                    let removed = commands::rm(writer.as_mut(), &selector)?;
                    writer.compact()?;
                    Ok::<_, StateError>(removed)
                })?;
            let mut out = format!(
                "Forgot {} recorded target(s) of {selector}:\n",
                removed.len()
            );
            for t in removed {
                out.push_str(&format!("  {t}\n"));
            }
            out
        }
        StateCommand::Adopt { chats, .. } => {
            let (mut desired, _) = load::desired(&dir)?;
            desired.retain_chats(&chats);
            let store = open()?;
            let mut writer = location.writer(store.as_ref(), &state::holder("state adopt"))?;
            // Recording another app's open_ids as applied would have later plans remove them.
            load::check_lock_app(&desired, writer.state())?;
            let adopted = commands::adopt(writer.as_mut(), desired.targets.iter())?;
            writer.compact()?;
            super::leave_to_exit(desired);
            format!(
                "Adopted {} target(s) as applied ({} were already recorded with these buttons); no call was made.\n",
                adopted.recorded, adopted.unchanged
            )
        }
        StateCommand::Migrate {
            from,
            to,
            from_name,
            to_name,
        } => {
            let name = state_name.as_deref();
            migrate(
                (&from, from_name.as_deref().or(name)),
                (&to, to_name.as_deref().or(name)),
                lock_timeout,
            )?
        }
    };
    term::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `state migrate`: copies the state at `from` into the empty `to`, each a file or a PostgreSQL
/// URL; a name applies to a PostgreSQL side only (so FEEDBUTTONS_STATE_NAME set for the
/// database side does not trouble the file side).
fn migrate(
    (from, from_name): (&Path, Option<&str>),
    (to, to_name): (&Path, Option<&str>),
    wait: std::time::Duration,
) -> Result<String, Error> {
    let open = |spec: &Path, name: Option<&str>| {
        state::open_named(spec, name.filter(|_| state::is_postgres(spec)))
    };
    let source = open(from, from_name)?;
    let target = open(to, to_name)?;
    if source.location() == target.location() {
        return Err(StateError::InvalidPath {
            path: to.to_path_buf(),
            why: "it is the state to migrate from; name another place".to_owned(),
        }
        .into());
    }
    let done = state::migrate_waiting(
        source.as_ref(),
        target.as_ref(),
        &state::holder("state migrate"),
        wait,
    )?;
    Ok(format!(
        "Migrated the state from {} to {}: lineage {}, serial {}, {} target(s). {} is left as it was; point FEEDBUTTONS_STATE at the new one.\n",
        source.location(),
        target.location(),
        done.lineage,
        done.serial,
        done.targets,
        source.location(),
    ))
}

/// The config directory: `list DIR` and `adopt DIR` as every other command takes it, or
/// `--dir DIR` (which `show` and `rm`, whose arguments are a chat and an audience, need);
/// `.` when neither is given. Both at once must agree.
fn config_dir(given: Option<PathBuf>, flag: Option<PathBuf>) -> Result<PathBuf, Error> {
    match (given, flag) {
        (Some(given), Some(flag)) if !same_dir(&given, &flag) => {
            Err(Error::TwoDirs { given, flag })
        }
        (Some(dir), _) | (None, Some(dir)) => Ok(dir),
        (None, None) => Ok(Path::new(".").to_path_buf()),
    }
}

/// Whether two spellings name one directory (`./team` and `team/`, or a link and its target).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A whole chat, or one audience in it.
fn selector(chat_id: String, audience: Option<String>) -> Selector {
    match audience {
        Some(a) => Selector::audience(chat_id, a),
        None => Selector::chat(chat_id),
    }
}
