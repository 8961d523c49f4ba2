//! Diagnostics: what is wrong in a config, where (one or more places in one or more files), and
//! how to render it for a person (rustc-style, with the source line and carets, through
//! annotate-snippets) or for CI (JSON, GitHub annotations).

use std::fmt::Write as _;
use std::path::PathBuf;

use annotate_snippets::{
    AnnotationKind, Group, Level, Origin, Renderer, Snippet, normalize_untrusted_str,
};
use serde::Serialize;

use super::yaml::Pos;

/// The version of `validate --format json`'s shape, its `format_version`.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// Index of a file in [`Sources`].
pub type FileId = usize;

/// How bad a diagnostic is: errors block every later stage, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One place a diagnostic points at, with what to say there.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub file: FileId,
    pub pos: Pos,
    pub message: String,
}

/// One finding: a stable code, a message, the places it concerns and an optional hint.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Stable, kebab-case identifier (`button-text-too-long`): scripts may match on it.
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The first label is the primary place; the others are related places (a duplicate's twin).
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn label(mut self, file: FileId, pos: Pos, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            file,
            pos,
            message: message.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    fn sort_key(&self) -> (Option<(FileId, u32, u32)>, &'static str, &str) {
        let primary = self
            .labels
            .first()
            .map(|l| (l.file, l.pos.line, l.pos.column));
        (primary, self.code, &self.message)
    }
}

/// One config file as read: its path as shown to the user and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as given on the command line joined with the file's place under it.
    pub path: PathBuf,
    pub text: String,
}

/// Every file of a config, indexed by [`FileId`], so that labels can be rendered with their lines.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    pub fn path(&self, file: FileId) -> String {
        self.files
            .get(file)
            .map(|f| f.path.display().to_string())
            .unwrap_or_else(|| "<unknown>".to_owned())
    }

    fn line(&self, file: FileId, line: u32) -> Option<&str> {
        let text = &self.files.get(file)?.text;
        text.lines()
            .nth(usize::try_from(line).ok()?.checked_sub(1)?)
    }
}

/// All diagnostics of one run, sorted by where they point (then by code) so output is stable.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    /// Puts the diagnostics in their reporting order.
    pub fn sort(&mut self) {
        self.diagnostics
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }

    /// Renders every diagnostic the way rustc does, each followed by a blank line.
    pub fn render_text(&self, sources: &Sources) -> String {
        self.render(sources, &Renderer::plain())
    }

    /// [`Report::render_text`] with colours (ANSI escapes), for a terminal.
    pub fn render_styled(&self, sources: &Sources) -> String {
        self.render(sources, &Renderer::styled())
    }

    fn render(&self, sources: &Sources, renderer: &Renderer) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&render_one(d, sources, renderer));
            out.push_str("\n\n");
        }
        out
    }

    /// Renders every diagnostic as GitHub Actions annotations: one workflow command per label, so a
    /// duplicate is annotated in both places. Properties and messages are escaped as GitHub asks.
    pub fn render_github(&self, sources: &Sources) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut message = d.message.clone();
            if let Some(help) = &d.help {
                message.push_str(&format!("\nhelp: {help}"));
            }
            if d.labels.is_empty() {
                let _ = writeln!(
                    out,
                    "::{level} title={}::{}",
                    gh_property(d.code),
                    gh_data(&message)
                );
            }
            for l in &d.labels {
                let text = if l.message.is_empty() {
                    message.clone()
                } else {
                    format!("{message}\n({})", l.message)
                };
                let _ = writeln!(
                    out,
                    "::{level} file={},line={},col={},endColumn={},title={}::{}",
                    gh_property(&sources.path(l.file)),
                    l.pos.line,
                    l.pos.column,
                    l.pos.column + l.pos.len.max(1),
                    gh_property(d.code),
                    gh_data(&text)
                );
            }
        }
        out
    }

    /// Renders every diagnostic as JSON for CI: one object per diagnostic, one entry per label.
    pub fn to_json(&self, sources: &Sources) -> serde_json::Value {
        let diagnostics: Vec<JsonDiagnostic> = self
            .diagnostics
            .iter()
            .map(|d| {
                let labels: Vec<JsonLabel> = d
                    .labels
                    .iter()
                    .map(|l| JsonLabel {
                        file: sources.path(l.file),
                        line: l.pos.line,
                        column: l.pos.column,
                        end_column: l.pos.column + l.pos.len.max(1),
                        message: l.message.clone(),
                    })
                    .collect();
                let primary = labels.first();
                JsonDiagnostic {
                    code: d.code,
                    severity: d.severity,
                    message: d.message.clone(),
                    help: d.help.clone(),
                    file: primary.map(|l| l.file.clone()),
                    line: primary.map(|l| l.line),
                    column: primary.map(|l| l.column),
                    labels,
                }
            })
            .collect();
        serde_json::json!({
            "format_version": JSON_FORMAT_VERSION,
            "valid": !self.has_errors(),
            "errors": self.errors(),
            "warnings": self.warnings(),
            "diagnostics": diagnostics,
        })
    }
}

#[derive(Serialize)]
struct JsonLabel {
    file: String,
    line: u32,
    column: u32,
    end_column: u32,
    message: String,
}

#[derive(Serialize)]
struct JsonDiagnostic {
    code: &'static str,
    severity: Severity,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    labels: Vec<JsonLabel>,
}

/// One diagnostic as annotate-snippets renders it: the title with its code, each label on its
/// source line (the first as the primary place, the others as related ones, `:::`), and the
/// help. Carets span display columns, so a label under CJK text is underlined in full. Text
/// from the config (messages quote it) is normalized: it cannot move the cursor or colour the
/// terminal.
fn render_one(d: &Diagnostic, sources: &Sources, renderer: &Renderer) -> String {
    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let mut group = Group::with_title(level.primary_title(d.message.as_str()).id(d.code));
    for (i, l) in d.labels.iter().enumerate() {
        let kind = if i == 0 {
            AnnotationKind::Primary
        } else {
            AnnotationKind::Context
        };
        let path = sources.path(l.file);
        group = match sources.line(l.file, l.pos.line) {
            Some(line) => {
                let line = line.trim_end_matches('\r');
                let span = byte_span(line, l.pos);
                let annotation = kind.span(span);
                let annotation = if l.message.is_empty() {
                    annotation
                } else {
                    annotation.label(l.message.as_str())
                };
                group.element(
                    Snippet::source(line)
                        .line_start(l.pos.line as usize)
                        .path(path)
                        .annotation(annotation),
                )
            }
            None => {
                let origin = Origin::path(path)
                    .line(l.pos.line as usize)
                    .char_column(l.pos.column as usize);
                let group = group.element(origin);
                if l.message.is_empty() {
                    group
                } else {
                    group.element(
                        Level::NOTE
                            .no_name()
                            .message(normalize_untrusted_str(&l.message)),
                    )
                }
            }
        };
    }
    if let Some(help) = &d.help {
        group = group.element(Level::HELP.message(normalize_untrusted_str(help)));
    }
    renderer.render(&[group])
}

/// The bytes of `line` a label covers: from its column for its length, both in characters
/// (a zero length is one caret's place), kept within the line.
fn byte_span(line: &str, pos: Pos) -> std::ops::Range<usize> {
    let byte_at = |chars: usize| {
        line.char_indices()
            .nth(chars)
            .map_or(line.len(), |(i, _)| i)
    };
    let start = byte_at(pos.column.saturating_sub(1) as usize);
    let end = byte_at(pos.column.saturating_sub(1) as usize + pos.len as usize);
    start..end.max(start)
}

/// Escapes a workflow command's message (GitHub's `escapeData`).
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value (GitHub's `escapeProperty`).
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file(text: &str) -> Sources {
        Sources {
            files: vec![SourceFile {
                path: PathBuf::from("a.yaml"),
                text: text.to_owned(),
            }],
        }
    }

    #[test]
    fn carets_cover_every_display_column_of_wide_text() {
        let sources = one_file("text: 事故手册\n");
        let mut report = Report::default();
        report.push(Diagnostic::error("x", "too long").label(
            0,
            Pos {
                line: 1,
                column: 7,
                len: 4,
            },
            "here",
        ));
        let text = report.render_text(&sources);
        assert!(text.contains("--> a.yaml:1:7"), "{text}");
        // Four characters, two columns each.
        assert!(text.contains("|       ^^^^^^^^ here"), "{text}");
    }

    #[test]
    fn terminal_escapes_from_the_config_are_shown_not_obeyed() {
        let sources = one_file("key: \u{1b}[2Jvalue\n");
        let mut report = Report::default();
        report.push(
            Diagnostic::error("x", "unknown key `\u{1b}[31mkey`")
                .label(0, Pos::START, "")
                .help("remove `\u{1b}[2J`"),
        );
        let text = report.render_text(&sources);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains('␛'), "{text}");
    }
}
