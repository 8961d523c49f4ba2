//! Stage 1 errors: a serde-saphyr error -> a diagnostic in the config's own terms.
//!
//! serde-saphyr's texts are written for developers: some name its API ("use from_str_multiple")
//! or print its types' Debug form ("budget breached: RecordedAnchorEvents { .. }"). So its
//! Display text never reaches a user: every error kind a config can cause is mapped here to a
//! message, a place that is the mistake (not where the parser noticed it) and a hint.

use serde_saphyr::Error;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::ErrorKind;

use super::diag::{Diagnostic, FileId};
use super::yaml::Pos;
use crate::text::count;

mod scan;

#[cfg(test)]
use scan::{continued_value, indentation_help, tab_after};
use scan::{line, line_before, plain_message, scan_error, word_at};

/// The parser limits one file is read with, so that a breach can say which limit and its value.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_nodes: usize,
    pub max_events: usize,
    pub max_scalar_bytes: usize,
    pub max_depth: usize,
    pub max_aliases: usize,
    pub max_anchors: usize,
    pub aliases_per_anchor: usize,
    pub max_alias_events: usize,
    pub max_alias_bytes: usize,
    pub max_merge_keys: usize,
}

impl Limits {
    /// The limits for a file of at most `max_nodes` nodes: the rest follow from it or are
    /// serde-saphyr's defaults, written out here so that messages can quote them.
    pub fn for_nodes(max_nodes: usize) -> Limits {
        Limits {
            max_nodes,
            max_events: 2 * max_nodes + 1_000,
            max_scalar_bytes: 1 << 30,
            max_depth: 64,
            max_aliases: 50_000,
            max_anchors: 50_000,
            aliases_per_anchor: 10,
            max_alias_events: 1_000_000,
            max_alias_bytes: 64 << 20,
            max_merge_keys: 10_000,
        }
    }

    pub fn budget(&self) -> serde_saphyr::Budget {
        let mut b = serde_saphyr::Budget::default();
        b.max_nodes = self.max_nodes;
        b.max_events = self.max_events;
        b.max_total_scalar_bytes = self.max_scalar_bytes;
        b.max_depth = self.max_depth;
        b.max_aliases = self.max_aliases;
        b.max_anchors = self.max_anchors;
        b.alias_anchor_ratio_multiplier = self.aliases_per_anchor;
        b.max_recorded_anchor_events = self.max_alias_events;
        b.max_recorded_anchor_bytes = self.max_alias_bytes;
        b.max_merge_keys = self.max_merge_keys;
        b
    }
}

/// The deepest a valid config nests: file > chats > chat > assign > assignment > buttons >
/// inline button > url.
const CONFIG_DEPTH: usize = 8;

const INDENT_TABS_HELP: &str = "YAML indents with spaces only: replace the tab with spaces";
const QUOTE_HELP: &str = "put the value in quotes";
const ALIAS_HELP: &str = "an alias (`*name`) repeats what its anchor (`&name`) holds, so a small file can \
     expand into a huge one; write the values out instead";

/// The diagnostic for a file that serde-saphyr could not read.
pub fn diagnostic(file: FileId, text: &str, e: &Error, limits: &Limits) -> Diagnostic {
    // For an error met while replaying an alias, the primary place is where the alias is used
    // (the inner error's own place is inside the anchor's value).
    let pos = e
        .location()
        .and_then(|l| pos_of(&l))
        .map_or(Pos::START, |p| within(text, p));
    let (e, defined) = match e.without_snippet() {
        Error::AliasError {
            error, locations, ..
        } => (error.without_snippet(), pos_of(&locations.defined_location)),
        other => (other, None),
    };
    let mut d = describe(file, text, e, pos, limits);
    if let Some(defined) = defined.filter(|p| p.line != pos.line || p.column != pos.column) {
        d = d.label(file, defined, "the anchor it repeats");
    }
    d
}

/// A one-line description with the line and column, for a file read outside the config
/// directory (the emulator's fixtures): the same words as [`diagnostic`].
pub fn one_line(text: &str, e: &Error) -> String {
    let d = diagnostic(0, text, e, &Limits::for_nodes(250_000));
    match d.labels.first() {
        Some(l) => format!(
            "line {}, column {}: {}",
            l.pos.line, l.pos.column, d.message
        ),
        None => d.message,
    }
}

/// `pos`, or the end of the last line when the parser placed it past the end of the file (a
/// limit checked once the whole file was read), so that the renderer can show a line.
fn within(text: &str, pos: Pos) -> Pos {
    if line(text, pos.line).is_some() {
        return pos;
    }
    let lines = text.lines().count();
    let last = text.lines().last().unwrap_or_default();
    Pos {
        line: u32::try_from(lines.max(1)).unwrap_or(u32::MAX),
        column: u32::try_from(last.chars().count() + 1).unwrap_or(u32::MAX),
        len: 0,
    }
}

fn pos_of(l: &serde_saphyr::Location) -> Option<Pos> {
    let line = u32::try_from(l.line()).ok().filter(|&n| n > 0)?;
    Some(Pos {
        line,
        column: u32::try_from(l.column()).unwrap_or(u32::MAX).max(1),
        len: 0,
    })
}

fn syntax(file: FileId, pos: Pos, message: impl AsRef<str>, label: &str) -> Diagnostic {
    Diagnostic::error("yaml-syntax", format!("invalid YAML: {}", message.as_ref()))
        .label(file, pos, label)
}

fn describe(file: FileId, text: &str, e: &Error, pos: Pos, limits: &Limits) -> Diagnostic {
    match e {
        Error::ExternalMessage { source, .. } => match source.as_ref() {
            serde_saphyr::ExternalMessageSource::Parser(scan) => {
                scan_error(file, text, scan.kind(), pos, limits)
            }
            _ => syntax(file, pos, "the file is not YAML this tool can read", "here"),
        },
        Error::Eof { .. } => syntax(file, pos, "the file ends in the middle of a value", "here")
            .help("a quote, `[` or `{` may be left open above"),
        Error::MultipleDocuments { .. } => {
            // The parser stops at the second document's first value; the mistake is the
            // `---` line that started it.
            let pos = line_before(text, pos, |l| l.starts_with("---")).unwrap_or(pos);
            syntax(
                file,
                pos,
                "the file holds more than one YAML document",
                "a second document starts here",
            )
            .help("a config file is one document: remove the `---` line, or move what follows it into a file of its own")
        }
        Error::UnknownAnchor { .. } => {
            let name = word_at(text, pos, 1);
            unknown_alias(file, pos, &name).help(format!(
                "define `&{name}` on a value before this line, or write the value out"
            ))
        }
        Error::DuplicateMappingKey { key, .. } => {
            let message = match key {
                Some(k) => format!("`{k}` is written twice in one mapping"),
                None => "a key is written twice in one mapping".to_owned(),
            };
            Diagnostic::error("duplicate-key", message)
                .label(file, pos, "written again here")
                .help("YAML keeps one value per key: remove one of them")
        }
        Error::Budget { breach, .. } => budget(file, pos, breach, limits),
        Error::AliasReplayLimitExceeded {
            max_total_replayed_events,
            ..
        } => aliases(
            file,
            pos,
            format!("aliases expand to more than {max_total_replayed_events} values"),
        ),
        Error::AliasExpansionLimitExceeded {
            max_expansions_per_anchor,
            ..
        } => aliases(
            file,
            pos,
            format!("one anchor is repeated more than {max_expansions_per_anchor} times"),
        ),
        Error::AliasReplayStackDepthExceeded { max_depth, .. } => aliases(
            file,
            pos,
            format!("aliases repeat aliases more than {max_depth} levels deep"),
        ),
        Error::AliasReplayCounterOverflow { .. } => aliases(
            file,
            pos,
            "aliases expand to more values than can be counted".to_owned(),
        ),
        Error::NonFiniteFloat { value, .. } => syntax(
            file,
            pos,
            format!("`{value}` is not a number this tool can hold"),
            "not a finite number",
        )
        .help(QUOTE_HELP),
        Error::UnsupportedTag { tag, .. } => syntax(
            file,
            pos,
            format!("the tag `{tag}` is not supported"),
            "tag",
        )
        .help("a config needs no YAML tags: remove it"),
        Error::InvalidBinaryBase64 { .. } | Error::BinaryNotUtf8 { .. } => syntax(
            file,
            pos,
            "a `!!binary` value that is not base64 text",
            "here",
        )
        .help("a config needs no YAML tags: remove `!!binary`"),
        Error::MergeValueNotMapOrSeqOfMaps { .. } => syntax(
            file,
            pos,
            "a `<<` merge key takes a mapping, or a list of mappings",
            "not a mapping",
        ),
        // Nothing else can come out of reading a string into a generic tree; should a newer
        // serde-saphyr add a kind, its text is shown without its location suffix.
        other => syntax(file, pos, plain_message(other), "here"),
    }
}

/// An alias `*name` with no anchor `&name` before it, at `pos`.
fn unknown_alias(file: FileId, pos: Pos, name: &str) -> Diagnostic {
    syntax(
        file,
        pos,
        format!("the alias `*{name}` names no anchor above it"),
        "unknown alias",
    )
}

fn aliases(file: FileId, pos: Pos, message: String) -> Diagnostic {
    Diagnostic::error("yaml-too-many-aliases", message)
        .label(file, pos, "the limit was reached here")
        .help(ALIAS_HELP)
}

fn too_deep(file: FileId, pos: Pos, max_depth: usize) -> Diagnostic {
    Diagnostic::error(
        "yaml-too-deep",
        format!("lists and mappings are nested more than {max_depth} levels deep"),
    )
    .label(file, pos, format!("level {} starts here", max_depth + 1))
    .help(format!(
        "a config nests at most {CONFIG_DEPTH} levels; look for stray `[` or `{{`"
    ))
}

fn budget(file: FileId, pos: Pos, breach: &BudgetBreach, limits: &Limits) -> Diagnostic {
    let too_large = |message: String| {
        Diagnostic::error("file-too-large", message)
            .label(file, pos, "the limit was reached here")
            .help("split it into several files: every file in the directory is part of the config")
    };
    match breach {
        BudgetBreach::Nodes { .. } => too_large(format!(
            "the file has more than {} YAML nodes (values, lists and mappings)",
            limits.max_nodes
        )),
        BudgetBreach::Events { .. } => too_large(format!(
            "the file has more than {} YAML events (values, and the starts and ends of lists and mappings)",
            limits.max_events
        )),
        BudgetBreach::ScalarBytes { .. } | BudgetBreach::InputBytes { .. } => too_large(format!(
            "the file's values hold more than {} bytes of text",
            limits.max_scalar_bytes
        )),
        BudgetBreach::Depth { .. } => too_deep(file, pos, limits.max_depth),
        BudgetBreach::Aliases { .. } => aliases(
            file,
            pos,
            format!(
                "the file uses more than {} aliases (`*name`)",
                limits.max_aliases
            ),
        ),
        BudgetBreach::Anchors { .. } => aliases(
            file,
            pos,
            format!(
                "the file defines more than {} anchors (`&name`)",
                limits.max_anchors
            ),
        ),
        BudgetBreach::AliasAnchorRatio {
            aliases: n,
            anchors,
        } => aliases(
            file,
            pos,
            format!(
                "the file uses {} (`*name`) for {} (`&name`): more than {} per anchor",
                count(*n, "alias", "aliases"),
                count(*anchors, "anchor", "anchors"),
                limits.aliases_per_anchor
            ),
        ),
        BudgetBreach::RecordedAnchorEvents { .. } => aliases(
            file,
            pos,
            format!(
                "aliases expand to more than {} YAML events",
                limits.max_alias_events
            ),
        ),
        BudgetBreach::RecordedAnchorBytes { .. } => aliases(
            file,
            pos,
            format!(
                "aliases copy more than {} bytes of text",
                limits.max_alias_bytes
            ),
        ),
        BudgetBreach::MergeKeys { .. } => aliases(
            file,
            pos,
            format!(
                "the file has more than {} merge keys (`<<`)",
                limits.max_merge_keys
            ),
        ),
        BudgetBreach::Documents { .. } => syntax(
            file,
            pos,
            "the file holds more than one YAML document",
            "here",
        )
        .help("a config file is one document: remove the `---` lines"),
        BudgetBreach::SequenceUnbalanced => syntax(
            file,
            pos,
            "a list or mapping ends that never started",
            "here",
        ),
        // Limits this tool does not use (comments, includes, properties): not reachable.
        _ => too_large("the file exceeds a limit of the YAML parser".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulator_fixtures_get_the_same_plain_words() {
        let problems = crate::emulator::fixtures::Fixtures::parse("apps: []\n---\napps: []\n")
            .err()
            .unwrap_or_default();
        assert_eq!(
            problems,
            ["line 2, column 1: invalid YAML: the file holds more than one YAML document"]
        );
    }

    #[test]
    fn a_limit_is_named_with_its_value() {
        // On a stack as large as the parsing threads' (a debug build recurses deep).
        let parse = |text: &str| {
            let text = text.to_owned();
            std::thread::Builder::new()
                .stack_size(crate::config::PARSER_STACK_BYTES)
                .spawn(move || {
                    let mut report = crate::config::diag::Report::default();
                    assert!(
                        crate::config::parse_with_limit(0, &text, 1_000, &mut report).is_none()
                    );
                    report.diagnostics.remove(0)
                })
                .expect("a thread")
                .join()
                .expect("no panic")
        };
        let d = parse(&format!("a: {}1{}\n", "[".repeat(70), "]".repeat(70)));
        assert_eq!(d.code, "yaml-too-deep");
        assert_eq!(
            d.message,
            "lists and mappings are nested more than 64 levels deep"
        );
        let d = parse(&format!("a: &a x\nb: [{}]\n", vec!["*a"; 200].join(", ")));
        assert_eq!(d.code, "yaml-too-many-aliases");
        assert_eq!(
            d.message,
            "the file uses 200 aliases (`*name`) for 1 anchor (`&name`): more than 10 per anchor"
        );
        // Checked once the file is read: shown on its last line, not past its end.
        assert_eq!(d.labels[0].pos.line, 2);
    }

    #[test]
    fn a_tab_after_a_plain_value_is_found_on_its_own_line() {
        let text = "a:\n  b: c\n\td: e\n";
        let pos = Pos {
            line: 2,
            column: 6,
            len: 0,
        };
        assert_eq!(
            tab_after(text, pos),
            Some(Pos {
                line: 3,
                column: 1,
                len: 1
            })
        );
    }

    #[test]
    fn indentation_help_names_the_columns_above() {
        let text = "a:\n  b:\n    c: 1\n   d: 2\n";
        assert!(
            indentation_help(text, 4)
                .contains("column 4, but the lines above it start in columns 1, 3 or 5"),
            "{}",
            indentation_help(text, 4)
        );
    }

    #[test]
    fn a_more_indented_key_reads_as_a_continued_value() {
        let text = "a:\n  text: Hi\n     url: x\n";
        assert_eq!(continued_value(text, 3), Some((2, 3)));
        let text = "a:\n  - text: Hi\n       url: x\n";
        assert_eq!(continued_value(text, 3), Some((2, 5)));
        assert_eq!(continued_value("a: b: c\n", 1), None);
    }
}
