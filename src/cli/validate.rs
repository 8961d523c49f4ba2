//! `feedbuttons validate`: load a config directory and explain every diagnostic.

use std::path::Path;
use std::process::ExitCode;

use super::args::ValidateFormat;
use super::{Error, term};
use crate::config::{self, Loaded};
use crate::text::count;

/// Exit 0 when the config is valid (warnings allowed), 1 otherwise.
pub fn run(dir: &Path, format: ValidateFormat) -> Result<ExitCode, Error> {
    let loaded = config::load_dir(dir)?;
    let text = match format {
        ValidateFormat::Json => {
            let mut s = serde_json::to_string_pretty(&loaded.report.to_json(&loaded.sources))
                .unwrap_or_default();
            s.push('\n');
            s
        }
        ValidateFormat::Text if term::stdout_color() => {
            loaded.report.render_styled(&loaded.sources) + &summary(&loaded)
        }
        ValidateFormat::Text => loaded.report.render_text(&loaded.sources) + &summary(&loaded),
        ValidateFormat::Github => loaded.report.render_github(&loaded.sources) + &summary(&loaded),
    };
    term::print(&text)?;
    let code = if loaded.report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    super::leave_to_exit(loaded);
    Ok(code)
}

/// `valid: 2 files, 3 chats, 14 targets` or `invalid: 2 errors and 0 warnings in 1 file`.
fn summary(loaded: &Loaded) -> String {
    let files = loaded.sources.files.len();
    let (errors, warnings) = (loaded.report.errors(), loaded.report.warnings());
    match &loaded.desired {
        Some(d) => {
            let mut s = format!(
                "valid: {}, {}, {}",
                count(files, "file", "files"),
                count(d.chat_count(), "chat", "chats"),
                count(d.targets.len(), "target", "targets"),
            );
            if warnings > 0 {
                s.push_str(&format!(" ({})", count(warnings, "warning", "warnings")));
            }
            s.push('\n');
            s
        }
        None => format!(
            "invalid: {} and {} in {}\n",
            count(errors, "error", "errors"),
            count(warnings, "warning", "warnings"),
            count(files, "file", "files"),
        ),
    }
}
