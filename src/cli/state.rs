//! `feedbuttons state list|show|rm|adopt`: inspect the applied state, and repair it by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{StateArgs, StateCommand, StateFormat};
use super::{Error, load, term};
use crate::settings::StateLocation;
use crate::state::commands::{self, Selector, ShowFormat};
use crate::state::{self, StateError};

pub fn run(args: StateArgs) -> Result<ExitCode, Error> {
    let StateArgs {
        command,
        state: state_flag,
        dir_flag,
    } = args;
    let given = match &command {
        StateCommand::List { dir, .. } | StateCommand::Adopt { dir, .. } => dir.clone(),
        StateCommand::Show { .. } | StateCommand::Rm { .. } => None,
    };
    let dir = config_dir(given, dir_flag)?;
    let store = StateLocation::resolve(&dir, state_flag.as_deref()).open()?;
    let text = match command {
        StateCommand::List { chat, format, .. } => {
            let st = store.load()?;
            match format {
                StateFormat::Json => commands::list_json(&st, &store.location(), chat.as_deref()),
                StateFormat::Text => {
                    let mut out = commands::summary(&st, &store.location());
                    out.push('\n');
                    out.push_str(&commands::list(&st, chat.as_deref()));
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
            let st = store.load()?;
            commands::show(&st, &store.location(), &selector(chat_id, audience), format)?
        }
        StateCommand::Rm { chat_id, audience } => {
            let selector = selector(chat_id, audience);
            let removed = store
                .writer(&state::holder("state rm"))
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
            let adopted = store
                .writer(&state::holder("state adopt"))
                .and_then(|mut writer| {
                    let targets = desired.targets.iter().map(|(t, b)| (t, b.as_ref()));
                    let adopted = commands::adopt(writer.as_mut(), targets)?;
                    writer.compact()?;
                    Ok::<_, StateError>(adopted)
                })?;
            format!(
                "Adopted {} target(s) as applied ({} were already recorded with these buttons); no call was made.\n",
                adopted.recorded, adopted.unchanged
            )
        }
    };
    term::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The config directory: `list DIR` and `adopt DIR` as every other command takes it, or
/// `--dir DIR` (which `show` and `rm`, whose arguments are a chat and an audience, need);
/// `.` when neither is given. Both at once must agree.
fn config_dir(given: Option<PathBuf>, flag: Option<PathBuf>) -> Result<PathBuf, Error> {
    match (given, flag) {
        (Some(given), Some(flag)) if given != flag => Err(Error::TwoDirs { given, flag }),
        (Some(dir), _) | (None, Some(dir)) => Ok(dir),
        (None, None) => Ok(Path::new(".").to_path_buf()),
    }
}

/// A whole chat, or one audience in it.
fn selector(chat_id: String, audience: Option<String>) -> Selector {
    match audience {
        Some(a) => Selector::audience(chat_id, a),
        None => Selector::chat(chat_id),
    }
}
