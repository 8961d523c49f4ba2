//! Words for people, shared by every output: a count with its noun, digit groups, durations
//! (and hex digits, for checksums and ids).

use std::time::Duration;

/// `1 call`, `2 calls`, `12,000 calls`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    let noun = if n == 1 { one } else { many };
    format!("{} {noun}", group_digits(n as u64))
}

/// An error with its causes, each once: "error sending request: connection refused" (a
/// library's own text often names only the first, and the cause that says what happened sits a
/// few sources down).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `75` -> `1 min 15 s`; `4000` -> `1 h 6 min`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 if secs.is_multiple_of(60) => format!("{} min", secs / 60),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// How long something took: `12 ms`, `1.4 s`, `3 min 5 s`.
pub fn human_elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        human_duration(d.as_secs())
    }
}

/// Lower-case hex digits of `bytes` (checksums, made-up ids).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_durations_and_digits_read_like_prose() {
        assert_eq!(count(1, "call", "calls"), "1 call");
        assert_eq!(count(0, "call", "calls"), "0 calls");
        assert_eq!(count(12_000, "try", "tries"), "12,000 tries");
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(group_digits(999), "999");
        assert_eq!(human_duration(75), "1 min 15 s");
        assert_eq!(human_duration(120), "2 min");
        assert_eq!(human_duration(4000), "1 h 6 min");
        assert_eq!(human_elapsed(Duration::from_millis(12)), "12 ms");
        assert_eq!(human_elapsed(Duration::from_millis(1400)), "1.4 s");
        assert_eq!(human_elapsed(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
