//! Loading a config for a command that plans (plan, apply, state adopt): its diagnostics go to
//! stderr, then the config's text is dropped; a config with errors plans nothing.

use std::path::{Path, PathBuf};

use super::{Error, term};
use crate::config::{self, Loaded};
use crate::desired::DesiredState;
use crate::state::AppliedState;
use crate::target::Target;

/// The desired state `dir` declares, and the paths of the files it was read from.
pub fn desired(dir: &Path) -> Result<(DesiredState, Vec<PathBuf>), Error> {
    let loaded = config::load_dir(dir)?;
    desired_of(loaded, "the config", dir)
}

/// The base of `plan --base`, loaded like [`desired`], except that a base without a config is
/// an empty config (everything is an add): the first pull request, whose base branch has no
/// such directory yet, or has it without any config file. A base that exists and is invalid
/// (or is not a directory) stays an error.
pub fn base(dir: &Path) -> Result<DesiredState, Error> {
    let empty = |why: &str| {
        eprintln!(
            "note: the base config {} {why}: planning against an empty base (everything is an add)",
            dir.display()
        );
        Ok(DesiredState::default())
    };
    match config::load_dir(dir) {
        Ok(l) if l.sources.files.is_empty() => empty("holds no config files"),
        Ok(l) => desired_of(l, "the base config", dir).map(|(d, _)| d),
        Err(_) if matches!(std::fs::symlink_metadata(dir), Err(m) if m.kind() == std::io::ErrorKind::NotFound) => {
            empty("does not exist")
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints `loaded`'s diagnostics on stderr and gives its desired state, if it has no errors.
fn desired_of(
    loaded: Loaded,
    what: &'static str,
    dir: &Path,
) -> Result<(DesiredState, Vec<PathBuf>), Error> {
    term::eprint_diagnostics(&loaded);
    let Some(desired) = loaded.desired else {
        return Err(Error::InvalidConfig {
            what,
            dir: dir.to_path_buf(),
            errors: loaded.report.errors(),
        });
    };
    let files = loaded.sources.files.into_iter().map(|f| f.path).collect();
    Ok((desired, files))
}

/// Whether `desired` declares any target in `chat`.
pub fn declares(desired: &DesiredState, chat: &str) -> bool {
    desired
        .targets
        .range(Target::everyone(chat)..)
        .next()
        .is_some_and(|(t, _)| t.chat_id == chat)
}

/// Refuses `--chat` ids that neither the config nor the record knows: a mistyped id would plan
/// nothing and look like "No changes".
pub fn check_chats_known(
    chats: &[String],
    desired: &DesiredState,
    recorded: impl Fn(&str) -> bool,
    record: &'static str,
) -> Result<(), Error> {
    let unknown: Vec<&str> = chats
        .iter()
        .map(String::as_str)
        .filter(|c| !recorded(c) && !declares(desired, c))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::UnknownChats {
        chats: unknown.join(", "),
        record,
    })
}

/// Refuses a run without credentials of its own (`plan`, `state adopt`) for an app whose
/// open_ids the lock does not hold: the app is `FEISHU_APP_ID`'s when set, else the one the
/// state was applied with (none yet: nothing to compare).
pub fn check_lock_app(desired: &DesiredState, applied: &AppliedState) -> Result<(), Error> {
    let app = crate::settings::app_id_from_env()
        .or_else(|| applied.binding.as_ref().map(|b| b.app_id.clone()));
    if let Some(app) = app {
        desired.check_app(&app)?;
    }
    Ok(())
}
