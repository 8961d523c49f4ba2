//! What makes a string an id Feishu could have issued, and how ids are quoted in messages.

/// Whether an id or a URL holds whitespace or a control character.
pub(super) fn has_blank(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(super) const CHAT_ID_PREFIX: &str = "oc_";

/// The longest id accepted, in characters. Every chat, open and union id Feishu shows is 35
/// characters (its prefix and 32 hex digits), and a tenant's own user ids are short codes; an id
/// twice that long is not one, but a pasted line or link. The bound leaves room for id formats
/// not seen yet.
pub const MAX_ID_CHARS: usize = 64;

/// Why `id` cannot be a user id of `id_type` (`it is empty`, `it does not start with `ou_``...),
/// if it cannot: the check the config's own ids get, for ids that come from elsewhere (the lock).
pub fn user_id_problem(id: &str, id_type: crate::feishu::wire::UserIdType) -> Option<String> {
    let prefix = id_type.prefix();
    IdProblem::of(id, prefix).map(|p| match p {
        IdProblem::Prefix(p) => format!("it does not start with `{p}`"),
        p => p.because().trim_start_matches(": ").to_owned(),
    })
}

/// The bytes of an id Feishu issues after its prefix: ASCII letters, digits, `_` and `-`.
static ISSUED_ID_BYTES: [bool; 256] = byte_table(true);

/// The bytes of a tenant's `user_id` that need no closer look: printable ASCII but `/ ? #`.
static FREE_ID_BYTES: [bool; 256] = byte_table(false);

/// [`ISSUED_ID_BYTES`] when `issued`, else [`FREE_ID_BYTES`].
const fn byte_table(issued: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = if issued {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        } else {
            b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#')
        };
        i += 1;
    }
    table
}

/// Whether every byte of `s` is one of `table`'s.
fn all_bytes(s: &str, table: &[bool; 256]) -> bool {
    s.bytes().fold(true, |ok, b| ok & table[usize::from(b)])
}

/// How the whole chat is named in plans, `state list` and `state` selectors.
const WHOLE_CHAT_LABEL: &str = "everyone";

/// Why a string is not an id that Feishu could have issued.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum IdProblem {
    Empty,
    /// It does not start with its type's prefix, or holds nothing after it.
    Prefix(&'static str),
    /// It holds a character Feishu ids never have.
    Char(char),
    TooLong(usize),
    /// A `user_id` that reads as the whole-chat label.
    Everyone,
}

impl IdProblem {
    /// The problem with `id`, of a type whose ids start with `prefix` (chat, open and union ids,
    /// all issued by Feishu: `prefix` and ASCII letters, digits, `_` or `-`) or of a tenant's own
    /// `user_id`s (`None`: free-form, but never blank, invisible, a URL's `/ ? #`, or the
    /// whole-chat label).
    pub(super) fn of(id: &str, prefix: Option<&'static str>) -> Option<IdProblem> {
        if id.is_empty() {
            return Some(IdProblem::Empty);
        }
        // Bytes first, through a table and without a branch per byte: a million ids are
        // checked, almost all plain ASCII, and hex digits mix letters and digits at random.
        let bad = match prefix {
            Some(p) => match id.strip_prefix(p) {
                Some(rest) if !rest.is_empty() && all_bytes(rest, &ISSUED_ID_BYTES) => None,
                Some(rest) if !rest.is_empty() => rest
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')),
                _ => return Some(IdProblem::Prefix(p)),
            },
            // Printable ASCII but `/ ? #` is none of the characters looked for.
            None if all_bytes(id, &FREE_ID_BYTES) => None,
            None => id.chars().find(|c| {
                c.is_whitespace() || c.is_control() || is_invisible(*c) || "/?#".contains(*c)
            }),
        };
        if let Some(c) = bad {
            return Some(IdProblem::Char(c));
        }
        // No more characters than bytes.
        if id.len() > MAX_ID_CHARS {
            let n = id.chars().count();
            if n > MAX_ID_CHARS {
                return Some(IdProblem::TooLong(n));
            }
        }
        // Any case: a person reads `Everyone` in a plan as the whole chat too.
        if prefix.is_none() && id.eq_ignore_ascii_case(WHOLE_CHAT_LABEL) {
            return Some(IdProblem::Everyone);
        }
        None
    }

    /// The end of the "is not a ..." message: why.
    pub(super) fn because(self) -> String {
        match self {
            IdProblem::Empty => ": it is empty".to_owned(),
            IdProblem::Prefix(_) => String::new(),
            IdProblem::Char(c) => format!(": it holds {}", describe_char(c)),
            IdProblem::TooLong(n) => format!(": it is {n} characters long"),
            IdProblem::Everyone => format!(
                ": `{WHOLE_CHAT_LABEL}` is how plans and `state` commands name the whole chat"
            ),
        }
    }

    /// The rule, for the label: "chat ids start with `oc_`".
    pub(super) fn rule(self, kind: &str, prefix: Option<&str>) -> String {
        match (self, prefix) {
            (IdProblem::Everyone, _) => "reads as the whole chat".to_owned(),
            (IdProblem::TooLong(_), _) => {
                format!("{kind} are at most {MAX_ID_CHARS} characters")
            }
            (IdProblem::Prefix(p), _) => format!("{kind} start with `{p}`"),
            (_, Some(p)) => format!("{kind} are `{p}` and then letters, digits, `_` or `-`"),
            (_, None) => {
                format!("{kind} have no spaces, invisible or control characters, `/`, `?` or `#`")
            }
        }
    }
}

/// An id as quoted in a message: invisible and control characters escaped, a long one cut.
pub(super) fn shown_id(id: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::from("`");
    for (i, c) in id.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c != ' ' && (c.is_whitespace() || c.is_control() || is_invisible(c)) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// A character named so that a person can find it, even when it cannot be seen.
pub(super) fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '\t' => "a tab".to_owned(),
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
            format!("a line break (U+{:04X})", u32::from(c))
        }
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        c if c.is_whitespace() => format!("a space character (U+{:04X})", u32::from(c)),
        c if is_invisible(c) => format!("an invisible character (U+{:04X})", u32::from(c)),
        c if !c.is_ascii() => format!("`{c}` (U+{:04X}, not ASCII)", u32::from(c)),
        c => format!("`{c}`"),
    }
}

/// Whether a character shows nothing although it is not whitespace: Unicode's default-ignorable
/// code points (zero-width spaces and joiners, direction marks, variation selectors, tags, the
/// byte order mark...) and the blank-looking fillers (Hangul filler, Braille blank).
pub(super) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{2800}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// `a`, `b`, `c` and N more.
pub(super) fn list_some(ids: &[&str], max: usize) -> String {
    let shown: Vec<String> = ids.iter().take(max).map(|i| format!("`{i}`")).collect();
    if ids.len() > max {
        format!("{} and {} more", shown.join(", "), ids.len() - max)
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte tables say what the character checks say, for every ASCII character.
    #[test]
    fn every_ascii_character_is_judged_as_the_rules_say() {
        for b in 0u8..128 {
            let c = char::from(b);
            let issued = IdProblem::of(&format!("ou_a{c}z"), Some("ou_"));
            let ok = c.is_ascii_alphanumeric() || c == '_' || c == '-';
            assert_eq!(
                issued,
                (!ok).then_some(IdProblem::Char(c)),
                "{c:?} in an open_id"
            );
            let free = IdProblem::of(&format!("a{c}z"), None);
            let ok = !(c.is_whitespace() || c.is_control() || "/?#".contains(c));
            assert_eq!(
                free,
                (!ok).then_some(IdProblem::Char(c)),
                "{c:?} in a user_id"
            );
        }
        assert_eq!(
            IdProblem::of("ou_é", Some("ou_")),
            Some(IdProblem::Char('é'))
        );
        assert_eq!(
            IdProblem::of("a\u{200B}b", None),
            Some(IdProblem::Char('\u{200B}'))
        );
        assert_eq!(IdProblem::of("名字", None), None);
        assert_eq!(
            IdProblem::of(&"x".repeat(65), None),
            Some(IdProblem::TooLong(65))
        );
        assert_eq!(IdProblem::of(&"名".repeat(64), None), None);
        assert_eq!(IdProblem::of("EveryOne", None), Some(IdProblem::Everyone));
    }
}
