//! Tenant access tokens: issuing (the same token while at least 30 minutes are left, a new one
//! after that, the old one staying valid until it expires), checking, and early expiry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::feishu::wire::api::TOKEN_REUSE_MIN_REMAINING_SECS;

use super::ceil_secs;

/// Expired tokens are remembered this long, so that using one says "expired", not "invalid".
const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

struct Issued {
    app_id: String,
    expires_at: Instant,
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// Never issued by this emulator (or long forgotten).
    Unknown,
    Expired,
}

pub struct Tokens {
    ttl: Duration,
    by_token: HashMap<String, Issued>,
    /// Each app's newest token.
    latest: HashMap<String, String>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            by_token: HashMap::new(),
            latest: HashMap::new(),
        }
    }

    /// A token for `app_id` and its remaining lifetime in whole seconds.
    pub fn issue(&mut self, app_id: &str, now: Instant) -> (String, u64) {
        let reuse = Duration::from_secs(TOKEN_REUSE_MIN_REMAINING_SECS);
        if let Some(token) = self.latest.get(app_id)
            && let Some(issued) = self.by_token.get(token)
            && issued.expires_at.saturating_duration_since(now) >= reuse
        {
            return (token.clone(), remaining_secs(issued.expires_at, now));
        }
        self.by_token
            .retain(|_, issued| now.saturating_duration_since(issued.expires_at) < FORGET_AFTER);
        // The shape of the documented example: `t-` and hex.
        let token = format!("t-{:032x}", rand::rng().random::<u128>());
        let expires_at = now + self.ttl;
        self.by_token.insert(
            token.clone(),
            Issued {
                app_id: app_id.to_owned(),
                expires_at,
            },
        );
        self.latest.insert(app_id.to_owned(), token.clone());
        (token, remaining_secs(expires_at, now))
    }

    /// The app a token belongs to, if it is valid now.
    pub fn check(&self, token: &str, now: Instant) -> Result<&str, TokenProblem> {
        match self.by_token.get(token) {
            None => Err(TokenProblem::Unknown),
            Some(issued) if issued.expires_at <= now => Err(TokenProblem::Expired),
            Some(issued) => Ok(&issued.app_id),
        }
    }

    /// Ends every valid token now; returns how many there were.
    pub fn expire_all(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for issued in self.by_token.values_mut() {
            if issued.expires_at > now {
                issued.expires_at = now;
                n += 1;
            }
        }
        n
    }
}

/// Rounded up, so a fresh token reports exactly the configured lifetime.
fn remaining_secs(expires_at: Instant, now: Instant) -> u64 {
    ceil_secs(expires_at.saturating_duration_since(now))
}

/// Whether `token` has the shape of a tenant token (`t-` and URL-safe characters).
pub fn well_formed(token: &str) -> bool {
    token.len() > 2
        && token.starts_with("t-")
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_token_while_half_an_hour_is_left_then_a_new_one_and_the_old_still_works() {
        let start = Instant::now();
        let mut tokens = Tokens::new(Duration::from_secs(7200));
        let (a, expire_a) = tokens.issue("cli_x", start);
        assert_eq!(expire_a, 7200);
        let (b, expire_b) = tokens.issue("cli_x", start + Duration::from_secs(100));
        assert_eq!((&b, expire_b), (&a, 7100));
        let late = start + Duration::from_secs(7200 - 1799);
        let (c, expire_c) = tokens.issue("cli_x", late);
        assert_ne!(c, a);
        assert_eq!(expire_c, 7200);
        assert_eq!(tokens.check(&a, late), Ok("cli_x"));
        assert_eq!(
            tokens.check(&a, start + Duration::from_secs(7200)),
            Err(TokenProblem::Expired)
        );
    }

    #[test]
    fn tokens_are_per_app() {
        let now = Instant::now();
        let mut tokens = Tokens::new(Duration::from_secs(7200));
        let (a, _) = tokens.issue("cli_a", now);
        let (b, _) = tokens.issue("cli_b", now);
        assert_ne!(a, b);
        assert_eq!(tokens.check(&b, now), Ok("cli_b"));
    }
}
