//! Errors of the YAML grammar itself (unclosed brackets, tabs, indentation), placed at the
//! mistake, and the line-reading helpers that find it.

use super::*;

/// Errors of the YAML grammar itself, with the place of the mistake and what usually fixes it.
pub(super) fn scan_error(
    file: FileId,
    text: &str,
    kind: &ErrorKind,
    pos: Pos,
    limits: &Limits,
) -> Diagnostic {
    match kind {
        // The scanner reports a tab that follows a plain value at the value's start, often a
        // line above the tab: point at the tab itself.
        ErrorKind::TabInPlainScalar => {
            let tab = tab_after(text, pos).unwrap_or(pos);
            syntax(file, tab, "a tab in the indentation", "tab").help(INDENT_TABS_HELP)
        }
        ErrorKind::TabInBlockIndentation
        | ErrorKind::TabInIndentation
        | ErrorKind::TabAtBlockScalarStart => {
            let tab = tab_in_line(text, pos.line).unwrap_or(pos);
            syntax(file, tab, "a tab in the indentation", "tab").help(INDENT_TABS_HELP)
        }
        ErrorKind::TabNotAllowed => syntax(file, pos, "a tab where YAML allows none", "tab")
            .help("use spaces instead of the tab"),
        ErrorKind::ExpectedBlockMappingKey
        | ErrorKind::ExpectedBlockSequenceEntry
        | ErrorKind::InvalidIndentation
        | ErrorKind::InvalidBlockScalarIndent
        | ErrorKind::InvalidFlowScalarIndent
        | ErrorKind::InvalidQuotedScalarIndent => {
            let label = match kind {
                ErrorKind::ExpectedBlockMappingKey => "expected a `key: value` at this indentation",
                ErrorKind::ExpectedBlockSequenceEntry => {
                    "expected a `- ` list item at this indentation"
                }
                _ => "indented wrongly",
            };
            syntax(file, pos, "bad indentation", label).help(indentation_help(text, pos.line))
        }
        ErrorKind::MappingValueNotAllowed | ErrorKind::InvalidColonPlacement => {
            match continued_value(text, pos.line) {
                Some((above, column)) => syntax(
                    file,
                    pos,
                    "bad indentation",
                    &format!("read as more of the value on line {above}"),
                )
                .help(format!(
                    "this line is indented further than line {above}, so YAML reads it as the rest of that line's value: start it in column {column}, like the key above it"
                )),
                None => syntax(file, pos, "a `:` that YAML cannot place", "unexpected `:`").help(
                    "quote a value that holds `: ` (as in `text: \"Note: read me\"`), and check that a `[` or `{` above is closed",
                ),
            }
        }
        ErrorKind::BlockEntryInFlowCollection => syntax(
            file,
            pos,
            "a `- ` list item inside brackets",
            "`- ` item",
        )
        .help("inside `[...]` separate the items with `,`; or remove the brackets and write one `- ` item per line"),
        ErrorKind::BlockSequenceEntryNotAllowed => syntax(
            file,
            pos,
            "a `- ` list item cannot start here",
            "`- ` item",
        )
        .help("start the list on the line after its key, indented further than the key"),
        ErrorKind::InvalidBlockEntryWhitespace => {
            syntax(file, pos, "a `-` must be followed by a space", "here")
                .help("write `- item`")
        }
        ErrorKind::InvalidMappingValueWhitespace => {
            syntax(file, pos, "a `:` must be followed by a space", "here")
                .help("write `key: value`, and quote a value that holds `:`")
        }
        ErrorKind::InvalidTrailingSingleQuotedScalar
        | ErrorKind::InvalidTrailingDoubleQuotedScalar => syntax(
            file,
            pos,
            "text after a quoted value",
            "after the closing quote",
        )
        .help("quote the whole value, or remove what follows the closing quote"),
        ErrorKind::UnclosedQuotedScalar => syntax(
            file,
            pos,
            "a quoted value is never closed",
            "this quote is not closed",
        )
        .help("end the value with the quote it starts with (`\"` or `'`)"),
        ErrorKind::UnclosedFlowCollection { open } => syntax(
            file,
            pos,
            format!("a `{open}` is never closed"),
            "not closed",
        )
        .help(format!("close it with `{}`", closing(*open))),
        ErrorKind::UnexpectedEofFlowSequence => {
            syntax(file, pos, "the file ends inside a `[...]` list", "here")
                .help("close the list with `]`")
        }
        ErrorKind::UnexpectedEofFlowMapping | ErrorKind::UnexpectedEofImplicitFlowMapping => {
            syntax(file, pos, "the file ends inside a `{...}` mapping", "here")
                .help("close the mapping with `}`")
        }
        ErrorKind::UnexpectedEofBlockSequence
        | ErrorKind::UnexpectedEofBlockMapping
        | ErrorKind::UnexpectedEof => {
            syntax(file, pos, "the file ends in the middle of a value", "here")
        }
        ErrorKind::ExpectedFlowSequenceSeparator => syntax(
            file,
            pos,
            "expected `,` or `]` in a `[...]` list",
            "here",
        )
        .help("separate the items with `,`, close the list with `]`, and quote an item that holds `,` `[` `]` or `: `"),
        ErrorKind::ExpectedFlowMappingSeparator => syntax(
            file,
            pos,
            "expected `,` or `}` in a `{...}` mapping",
            "here",
        )
        .help("separate the entries with `,`, close the mapping with `}`, and quote a value that holds `,` `{` `}` or `: `"),
        ErrorKind::MismatchedFlowCollectionEnd { open, close } => syntax(
            file,
            pos,
            format!("a `{open}` is closed with `{close}`"),
            "wrong bracket",
        )
        .help(format!("close it with `{}`", closing(*open))),
        ErrorKind::MisplacedFlowCollectionEnd => syntax(
            file,
            pos,
            "a closing bracket that closes nothing",
            "nothing to close",
        )
        .help("remove it, or quote the value it belongs to"),
        ErrorKind::UnexpectedCharacter { character } => syntax(
            file,
            pos,
            format!("a value cannot start with `{character}`"),
            "reserved character",
        )
        .help(QUOTE_HELP),
        ErrorKind::CommentNotSeparated => syntax(
            file,
            pos,
            "a `#` comment needs a space before it",
            "here",
        )
        .help("put a space before `#`, or quote the value if the `#` is part of it"),
        ErrorKind::CommentInterceptedScalar => syntax(
            file,
            pos,
            "a comment inside a value that runs over several lines",
            "here",
        )
        .help("move the comment, or quote the value"),
        ErrorKind::ExpectedNodeContent => {
            syntax(file, pos, "expected a value here", "here").help(QUOTE_HELP)
        }
        ErrorKind::SimpleKeyExpected | ErrorKind::InvalidSimpleKey => syntax(
            file,
            pos,
            "a key must be on one line with its `:`",
            "here",
        )
        .help("write `key: value` on one line, and quote a key that holds `: `"),
        ErrorKind::UnknownQuotedScalarEscape
        | ErrorKind::InvalidQuotedScalarHexEscape
        | ErrorKind::InvalidLowSurrogateHexEscape
        | ErrorKind::InvalidLowSurrogate
        | ErrorKind::MissingLowSurrogate
        | ErrorKind::UnpairedLowSurrogate
        | ErrorKind::InvalidUnicodeEscape => syntax(
            file,
            pos,
            "an invalid `\\` escape in a double-quoted value",
            "here",
        )
        .help("write `\\\\` for a backslash, or use single quotes, which have no escapes"),
        ErrorKind::UnknownAnchor => unknown_alias(file, pos, &word_at(text, pos, 1)),
        ErrorKind::RecursionLimitExceeded => too_deep(file, pos, limits.max_depth),
        ErrorKind::MultipleDocumentsUnsupported => syntax(
            file,
            pos,
            "the file holds more than one YAML document",
            "here",
        )
        .help("a config file is one document: remove the `---` lines"),
        // The rest are the grammar's rarer corners (directives, tags, document markers): the
        // parser's own wording says what is wrong without naming any of its internals.
        other => syntax(file, pos, other.to_string(), "here"),
    }
}

pub(super) fn closing(open: char) -> char {
    if open == '{' { '}' } else { ']' }
}

/// serde-saphyr's message without its own location suffix (we print the location ourselves).
pub(super) fn plain_message(e: &Error) -> String {
    let s = e.to_string();
    let s = s.lines().next().unwrap_or_default().trim().to_owned();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The 1-based line `n` of `text`.
pub(super) fn line(text: &str, n: u32) -> Option<&str> {
    text.lines()
        .nth(usize::try_from(n).ok()?.checked_sub(1)?)
        .map(|l| l.trim_end_matches('\r'))
}

/// The 1-based column where a line's content starts, `None` for a blank or comment line.
pub(super) fn indent(l: &str) -> Option<u32> {
    let n = l.chars().take_while(|c| *c == ' ').count();
    let rest = &l[n..];
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    u32::try_from(n + 1).ok()
}

/// The first tab in the indentation of the lines after `pos` that have content.
pub(super) fn tab_after(text: &str, pos: Pos) -> Option<Pos> {
    let first = usize::try_from(pos.line).ok()?;
    text.lines()
        .enumerate()
        .skip(first)
        .find_map(|(i, l)| {
            let lead: String = l.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
            let has_content = l.len() > lead.len() && !l.trim().is_empty();
            let tab = lead.chars().position(|c| c == '\t')?;
            has_content.then_some((i, tab))
        })
        .and_then(|(i, tab)| {
            Some(Pos {
                line: u32::try_from(i + 1).ok()?,
                column: u32::try_from(tab + 1).ok()?,
                len: 1,
            })
        })
}

/// The first tab in the indentation of line `n`.
pub(super) fn tab_in_line(text: &str, n: u32) -> Option<Pos> {
    let l = line(text, n)?;
    let tab = l
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .position(|c| c == '\t')?;
    Some(Pos {
        line: n,
        column: u32::try_from(tab + 1).ok()?,
        len: 1,
    })
}

/// The nearest line at or before `pos.line` that `is` recognises.
pub(super) fn line_before(text: &str, pos: Pos, is: impl Fn(&str) -> bool) -> Option<Pos> {
    (1..=pos.line).rev().find_map(|n| {
        is(line(text, n)?).then_some(Pos {
            line: n,
            column: 1,
            len: 0,
        })
    })
}

/// The name after the `skip` characters at `pos` (an alias' name after its `*`).
pub(super) fn word_at(text: &str, pos: Pos, skip: usize) -> String {
    line(text, pos.line)
        .map(|l| {
            l.chars()
                .skip(pos.column.saturating_sub(1) as usize + skip)
                .take_while(|c| !c.is_whitespace() && !",[]{}".contains(*c))
                .collect()
        })
        .unwrap_or_default()
}

/// For a line that YAML read as the continuation of the value above it (it is indented
/// further than a `key: value` line): that line's number and the column its key starts in.
pub(super) fn continued_value(text: &str, n: u32) -> Option<(u32, u32)> {
    let here = indent(line(text, n)?)?;
    let (above, l) = (1..n)
        .rev()
        .find_map(|m| Some((m, line(text, m)?)).filter(|(_, l)| indent(l).is_some()))?;
    let start = indent(l)?;
    let content = l.trim_start_matches(' ');
    let (content, key_column) = match content.strip_prefix("- ") {
        Some(rest) => {
            let dash = u32::try_from(content.len() - rest.trim_start_matches(' ').len()).ok()?;
            (rest.trim_start_matches(' '), start + dash)
        }
        None => (content, start),
    };
    let (_, value) = content.split_once(": ")?;
    let value = value.trim();
    let plain = !value.is_empty()
        && !value.starts_with(['[', '{', '|', '>', '"', '\'', '&', '*', '!', '#']);
    (plain && here > key_column).then_some((above, key_column))
}

/// How line `n`'s indentation compares with the lines it could belong to.
pub(super) fn indentation_help(text: &str, n: u32) -> String {
    const GENERAL: &str = "YAML nests by indentation: start this line in the same column as the other entries of its mapping or list, with spaces only";
    let Some(here) = line(text, n).and_then(indent) else {
        return GENERAL.to_owned();
    };
    // The columns of the lines above that could hold this one: walking up, each line that
    // starts further left than every line seen so far opens an enclosing level.
    let mut levels: Vec<u32> = Vec::new();
    for m in (1..n).rev() {
        let Some(c) = line(text, m).and_then(indent) else {
            continue;
        };
        if levels.last().is_none_or(|&last| c < last) {
            levels.push(c);
        }
        if c == 1 {
            break;
        }
    }
    if levels.is_empty() || levels.contains(&here) {
        return GENERAL.to_owned();
    }
    levels.reverse();
    let shown: Vec<String> = levels.iter().map(u32::to_string).collect();
    let columns = match shown.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("columns {} or {last}", rest.join(", ")),
        _ => format!("column {}", shown.join("")),
    };
    format!(
        "this line starts in column {here}, but the lines above it start in {columns}: line it up with the entries of the mapping or list it belongs to (spaces only)"
    )
}
