//! Fault injection: what `PUT /_emulator/faults` switches on, and the per-call decision
//! (added latency, a 5xx answer, a dropped connection, a 429) made before the call is handled.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::ceil_secs;

/// Which kind of Feishu API call a fault decision is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Called {
    Token,
    ChatButton,
    /// batch_get_id, chat members, find_by_department.
    Directory,
}

/// The body of `PUT /_emulator/faults` (every field optional; a PUT replaces the whole set)
/// and of `GET /_emulator/faults` (the counters show what is left).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Added to every affected call, on top of `--latency-ms`.
    pub latency_ms: u64,
    /// Share (0..=1) of affected calls answered with `server_error_status`.
    pub server_error_rate: f64,
    /// The next N affected calls are answered with `server_error_status`.
    pub server_errors_next: u32,
    /// 500..=599.
    pub server_error_status: u16,
    /// Share (0..=1) of affected calls whose connection is closed without an answer.
    pub drop_rate: f64,
    /// The next N affected calls are dropped.
    pub drops_next: u32,
    /// Drop after the call took effect (the answer is lost, the buttons changed) instead of
    /// before.
    pub drop_after_processing: bool,
    /// The next N affected calls get HTTP 429 / 99991400.
    pub rate_limited_next: u32,
    /// Every affected call gets HTTP 429 / 99991400 for this long from the PUT.
    pub rate_limited_for_ms: u64,
    /// Seed for the shares: the same seed and the same sequence of calls give the same faults.
    pub seed: Option<u64>,
    /// Also affect the token endpoint (by default only chat-button calls are affected).
    pub token_endpoint: bool,
    /// Affect only the directory calls (batch_get_id, chat members, find_by_department): the
    /// chat-button calls go through untouched (a directory that hangs while the API works).
    pub directory_only: bool,
    /// The next N affected calls are refused (HTTP 400, code 99992402) with a message that
    /// quotes the request's credentials back (its `Authorization` header, or the app secret
    /// on the token endpoint), as some gateways do: a client must never print them.
    pub echo_credentials_next: u32,
    /// The next N affected chat-button calls are not applied, and every user they name is
    /// refused in `failed_user_reasons` with a message quoting the request's `Authorization`
    /// header.
    pub echo_credentials_to_users_next: u32,
    /// The token endpoint answers `expire` with this JSON value instead of the lifetime left
    /// (`"soon"`, `18446744073709551615`...), on every token call while set.
    pub token_expire: Option<serde_json::Value>,
    /// Every affected answer is followed by this many spaces (sent as a stream, so the
    /// emulator holds none of it): a client must not read an unbounded answer into memory.
    pub answer_padding_bytes: u64,
    /// How the directory's listings (a chat's members, a department's users) go wrong, on
    /// every page while set; the other faults still come first.
    pub listing: Option<ListingFault>,
}

/// A listing that answers `code: 0` and is still wrong, as a broken gateway might answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingFault {
    /// A page asked for with a page token says `has_more: true` and gives that same token
    /// back (the last page too): following the tokens asks for the same page forever.
    RepeatToken,
    /// A page past the list's start says `has_more: true` and gives a token for the start:
    /// following the tokens goes round the list forever.
    Rewind,
    /// Every page says `has_more: true` and gives no `page_token`.
    NoToken,
    /// Every listing is empty (`has_more: false`, no items), as if nobody were there.
    Empty,
}

impl Default for FaultSpec {
    fn default() -> FaultSpec {
        FaultSpec {
            latency_ms: 0,
            server_error_rate: 0.0,
            server_errors_next: 0,
            server_error_status: 500,
            drop_rate: 0.0,
            drops_next: 0,
            drop_after_processing: false,
            rate_limited_next: 0,
            rate_limited_for_ms: 0,
            seed: None,
            token_endpoint: false,
            directory_only: false,
            echo_credentials_next: 0,
            echo_credentials_to_users_next: 0,
            token_expire: None,
            answer_padding_bytes: 0,
            listing: None,
        }
    }
}

impl FaultSpec {
    /// Every reason this spec cannot be used.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, rate) in [
            ("server_error_rate", self.server_error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{name}: must be between 0 and 1, got {rate}"));
            }
        }
        if !(500..=599).contains(&self.server_error_status) {
            problems.push(format!(
                "server_error_status: must be 500..=599, got {}",
                self.server_error_status
            ));
        }
        problems
    }
}

/// What to do to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Close the connection without answering.
    Drop { after_processing: bool },
    /// Answer with this 5xx status.
    ServerError(u16),
    /// Answer HTTP 429 / 99991400, `x-ogw-ratelimit-reset` = this many seconds.
    RateLimited { reset_secs: u64 },
    /// Refuse the call with a message quoting its credentials.
    EchoCredentials,
    /// Refuse every user the call names with a message quoting its credentials.
    EchoCredentialsToUsers,
}

pub struct Faults {
    spec: FaultSpec,
    rng: StdRng,
    rate_limited_until: Option<Instant>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            spec: FaultSpec::default(),
            rng: rand::make_rng::<StdRng>(),
            rate_limited_until: None,
        }
    }
}

impl Faults {
    /// Replaces the fault set; on failure nothing changes.
    pub fn set(&mut self, spec: FaultSpec, now: Instant) -> Result<(), Vec<String>> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        self.rng = match spec.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng::<StdRng>(),
        };
        self.rate_limited_until = (spec.rate_limited_for_ms > 0)
            .then(|| now + Duration::from_millis(spec.rate_limited_for_ms));
        self.spec = spec;
        Ok(())
    }

    /// The fault set as it stands: counters show what is left.
    pub fn view(&self, now: Instant) -> FaultSpec {
        let left = self
            .rate_limited_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        FaultSpec {
            rate_limited_for_ms: left.as_millis().try_into().unwrap_or(u64::MAX),
            ..self.spec.clone()
        }
    }

    /// The `expire` a token answer carries instead of the real one, if set.
    pub fn token_expire(&self) -> Option<serde_json::Value> {
        self.spec.token_expire.clone()
    }

    /// How listings go wrong, if they do.
    pub fn listing(&self) -> Option<ListingFault> {
        self.spec.listing
    }

    /// Spaces to add after an affected answer.
    pub fn padding(&self, token_call: bool) -> u64 {
        if token_call && !self.spec.token_endpoint {
            return 0;
        }
        self.spec.answer_padding_bytes
    }

    /// The added latency and the fault, if any, for one call.
    pub fn decide(&mut self, now: Instant, call: Called) -> (Duration, Option<FaultAction>) {
        let token_call = call == Called::Token;
        if token_call && !self.spec.token_endpoint
            || self.spec.directory_only && call != Called::Directory
        {
            return (Duration::ZERO, None);
        }
        let latency = Duration::from_millis(self.spec.latency_ms);
        // Both draws happen on every call, so a seeded sequence does not depend on which
        // counters happened to be running.
        let drop_draw: f64 = self.rng.random();
        let error_draw: f64 = self.rng.random();
        let s = &mut self.spec;
        let action = if s.echo_credentials_next > 0 {
            s.echo_credentials_next -= 1;
            Some(FaultAction::EchoCredentials)
        } else if s.echo_credentials_to_users_next > 0 && !token_call {
            s.echo_credentials_to_users_next -= 1;
            Some(FaultAction::EchoCredentialsToUsers)
        } else if s.drops_next > 0 {
            s.drops_next -= 1;
            Some(FaultAction::Drop {
                after_processing: s.drop_after_processing,
            })
        } else if s.server_errors_next > 0 {
            s.server_errors_next -= 1;
            Some(FaultAction::ServerError(s.server_error_status))
        } else if s.rate_limited_next > 0 {
            s.rate_limited_next -= 1;
            Some(FaultAction::RateLimited { reset_secs: 1 })
        } else if let Some(until) = self.rate_limited_until.filter(|u| *u > now) {
            Some(FaultAction::RateLimited {
                reset_secs: ceil_secs(until.saturating_duration_since(now)).max(1),
            })
        } else if drop_draw < s.drop_rate {
            Some(FaultAction::Drop {
                after_processing: s.drop_after_processing,
            })
        } else if error_draw < s.server_error_rate {
            Some(FaultAction::ServerError(s.server_error_status))
        } else {
            None
        };
        (latency, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(seed: u64) -> Vec<Option<FaultAction>> {
        let now = Instant::now();
        let mut faults = Faults::default();
        let spec = FaultSpec {
            server_error_rate: 0.3,
            drop_rate: 0.1,
            seed: Some(seed),
            ..FaultSpec::default()
        };
        faults.set(spec, now).expect("a valid spec");
        (0..200)
            .map(|_| faults.decide(now, Called::ChatButton).1)
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_faults_and_roughly_the_asked_share() {
        let a = outcomes(7);
        assert_eq!(a, outcomes(7));
        let errors = a
            .iter()
            .filter(|o| matches!(o, Some(FaultAction::ServerError(500))))
            .count();
        assert!((30..=85).contains(&errors), "{errors} errors in 200");
    }

    #[test]
    fn counters_run_out_and_the_token_endpoint_is_spared_by_default() {
        let now = Instant::now();
        let mut faults = Faults::default();
        let spec = FaultSpec {
            server_errors_next: 2,
            ..FaultSpec::default()
        };
        faults.set(spec, now).expect("a valid spec");
        assert_eq!(faults.decide(now, Called::Token).1, None);
        assert_eq!(
            faults.decide(now, Called::ChatButton).1,
            Some(FaultAction::ServerError(500))
        );
        assert_eq!(faults.view(now).server_errors_next, 1);
        assert_eq!(
            faults.decide(now, Called::ChatButton).1,
            Some(FaultAction::ServerError(500))
        );
        assert_eq!(faults.decide(now, Called::ChatButton).1, None);
    }
}
