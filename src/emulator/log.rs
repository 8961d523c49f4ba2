//! The log of Feishu API requests received (`GET /_emulator/requests`): bounded, oldest dropped
//! first, secrets and tokens never kept.

use std::collections::VecDeque;

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
        entry.seq = self.next_seq;
        self.next_seq += 1;
        entry.unix_ms = crate::time::unix_millis_now();
        entry.timestamp = crate::time::rfc3339_millis(entry.unix_ms);
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

#[cfg(test)]
mod tests {
    use super::*;

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
