//! The log of Feishu API requests received (`GET /_emulator/requests`): bounded, oldest dropped
//! first, secrets and tokens never kept.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// What replaces a secret or a token in the log.
const REDACTED: &str = "<redacted>";

/// One request and how it was answered.
#[derive(Clone, Debug, Serialize)]
pub struct LoggedRequest {
    /// 1, 2, 3... in the order requests were answered; never reused, even after a clear.
    pub seq: u64,
    /// When the answer was decided, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// `null` when the connection was dropped before an answer.
    pub status: Option<u16>,
    /// The answer's `code`, when it had one.
    pub code: Option<i64>,
    /// The app the token or the credentials belong to, when known.
    pub app_id: Option<String>,
    /// The injected fault: `dropped`, `dropped_after_processing`, `server_error`, `rate_limited`.
    pub fault: Option<&'static str>,
    /// The request body as JSON (a string when it was not JSON, `null` when empty), with
    /// `app_secret` redacted.
    pub body: Value,
    /// The answer body, with `tenant_access_token` redacted; `null` when dropped.
    pub response: Value,
}

pub struct RequestLog {
    capacity: usize,
    entries: VecDeque<LoggedRequest>,
    next_seq: u64,
    /// Entries pushed out by the capacity since the last clear.
    dropped: u64,
}

impl RequestLog {
    pub fn new(capacity: usize) -> RequestLog {
        RequestLog {
            capacity,
            entries: VecDeque::new(),
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Adds an entry, filling in `seq` and the time.
    pub fn push(&mut self, mut entry: LoggedRequest) {
        let now = SystemTime::now();
        entry.seq = self.next_seq;
        self.next_seq += 1;
        entry.unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX));
        entry.timestamp = rfc3339_millis(entry.unix_ms);
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
    }

    /// The entries, oldest first, optionally only those for `path`.
    pub fn entries(&self, path: Option<&str>) -> Vec<LoggedRequest> {
        self.entries
            .iter()
            .filter(|e| path.is_none_or(|p| e.path == p))
            .cloned()
            .collect()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Empties the log; returns how many entries it had.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.dropped = 0;
        n
    }
}

/// A request body as the log keeps it.
pub fn body_for_log(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => redact(v),
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    }
}

/// Replaces secrets and tokens at the top level of a JSON object.
pub fn redact(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        for key in ["app_secret", "tenant_access_token"] {
            if let Some(field) = map.get_mut(key) {
                *field = Value::String(REDACTED.to_owned());
            }
        }
    }
    v
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm),
/// so the log needs no date crate.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_724_931_991_000),
            "2024-08-29T11:46:31.000Z"
        );
    }

    #[test]
    fn secrets_and_tokens_are_redacted() {
        let v = body_for_log(br#"{"app_id":"cli_a","app_secret":"s"}"#);
        assert_eq!(v["app_secret"], REDACTED);
        assert_eq!(v["app_id"], "cli_a");
        let v = redact(serde_json::json!({"tenant_access_token": "t-1", "expire": 7200}));
        assert_eq!(v["tenant_access_token"], REDACTED);
    }

    #[test]
    fn the_oldest_entries_go_first() {
        let mut log = RequestLog::new(2);
        for path in ["/a", "/b", "/c"] {
            log.push(LoggedRequest {
                seq: 0,
                timestamp: String::new(),
                unix_ms: 0,
                method: "PUT".into(),
                path: path.into(),
                query: None,
                status: Some(200),
                code: Some(0),
                app_id: None,
                fault: None,
                body: Value::Null,
                response: Value::Null,
            });
        }
        let paths: Vec<_> = log.entries(None).into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/b", "/c"]);
        assert_eq!(log.dropped(), 1);
    }
}
