//! API client stage: the client's own counters, as Prometheus families that every clone of a
//! client shares: each HTTP request by endpoint and how it ended, the waits before another
//! try, and the tokens the API refused. The daemon registers them for `/metrics`
//! ([`ClientMetrics::register`]); [`super::client::Client::stats`] sums them for people.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Which endpoint a request went to (the `endpoint` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointLabel {
    /// `PUT /open-apis/im/v2/chat_button`.
    ChatButton,
    /// The tenant token endpoint.
    Token,
    /// The directory's `POST /open-apis/contact/v3/users/batch_get_id` (`resolve`, and `watch
    /// --resolve-every`).
    BatchGetId,
    /// The directory's `GET /open-apis/im/v1/chats/:chat_id/members`.
    ChatMembers,
    /// The directory's `GET /open-apis/contact/v3/users/find_by_department`.
    FindByDepartment,
}

impl EndpointLabel {
    pub const ALL: [EndpointLabel; 5] = [
        EndpointLabel::ChatButton,
        EndpointLabel::Token,
        EndpointLabel::BatchGetId,
        EndpointLabel::ChatMembers,
        EndpointLabel::FindByDepartment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointLabel::ChatButton => "chat_button",
            EndpointLabel::Token => "token",
            EndpointLabel::BatchGetId => "batch_get_id",
            EndpointLabel::ChatMembers => "chat_members",
            EndpointLabel::FindByDepartment => "find_by_department",
        }
    }
}

/// How one HTTP request ended (the `outcome` label of `feedbuttons_api_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Answered with success (a chat-button answer may still list failed users).
    Success,
    /// Answered with an error that another try would not change (credentials refused,
    /// content rejected, the bot not in the chat, an answer that is not the API's JSON).
    Failed,
    /// 429 / 99991400: throttled.
    RateLimited,
    /// The token was refused (expired early, invalid): the client fetched another.
    TokenRefused,
    /// A 5xx.
    ServerError,
    /// Sent, and no answer came back (a timeout, a dropped connection, an answer too large).
    NoAnswer,
    /// No connection could be made: nothing reached the API.
    NoConnection,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Success,
        RequestOutcome::Failed,
        RequestOutcome::RateLimited,
        RequestOutcome::TokenRefused,
        RequestOutcome::ServerError,
        RequestOutcome::NoAnswer,
        RequestOutcome::NoConnection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::Failed => "failed",
            RequestOutcome::RateLimited => "rate_limited",
            RequestOutcome::TokenRefused => "token_refused",
            RequestOutcome::ServerError => "server_error",
            RequestOutcome::NoAnswer => "no_answer",
            RequestOutcome::NoConnection => "no_connection",
        }
    }
}

impl EncodeLabelValue for EndpointLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for RequestOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    endpoint: EndpointLabel,
    outcome: RequestOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: EndpointLabel,
}

/// The client's counters. Clones share them.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    requests: Family<RequestLabels, Counter>,
    retries: Family<EndpointLabels, Counter>,
    tokens_refused: Counter,
}

impl Default for ClientMetrics {
    /// Every series exists from the start, at zero, so that rates and alerts work before the
    /// first request.
    fn default() -> ClientMetrics {
        let m = ClientMetrics {
            requests: Family::default(),
            retries: Family::default(),
            tokens_refused: Counter::default(),
        };
        for endpoint in EndpointLabel::ALL {
            // Every request but the token's own carries a token that can be refused.
            let outcomes = RequestOutcome::ALL
                .into_iter()
                .filter(|o| endpoint != EndpointLabel::Token || *o != RequestOutcome::TokenRefused);
            for outcome in outcomes {
                let _ = m
                    .requests
                    .get_or_create(&RequestLabels { endpoint, outcome });
            }
            let _ = m.retries.get_or_create(&EndpointLabels { endpoint });
        }
        m
    }
}

impl ClientMetrics {
    /// Counts one HTTP request and how it ended.
    pub fn request(&self, endpoint: EndpointLabel, outcome: RequestOutcome) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, outcome })
            .inc();
    }

    /// Counts one wait before another try.
    pub fn retry(&self, endpoint: EndpointLabel) {
        self.retries
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    /// Counts a token the API refused, which the client dropped.
    pub fn token_refused(&self) {
        self.tokens_refused.inc();
    }

    /// Requests to `endpoint` that ended as one of `outcomes` (all of them when empty).
    pub fn requests(&self, endpoint: EndpointLabel, outcomes: &[RequestOutcome]) -> u64 {
        RequestOutcome::ALL
            .into_iter()
            .filter(|o| outcomes.is_empty() || outcomes.contains(o))
            .filter_map(|outcome| {
                self.requests
                    .get(&RequestLabels { endpoint, outcome })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// Waits before another try, every endpoint together.
    pub fn retries(&self) -> u64 {
        EndpointLabel::ALL
            .into_iter()
            .map(|endpoint| {
                self.retries
                    .get_or_create(&EndpointLabels { endpoint })
                    .get()
            })
            .sum()
    }

    pub fn tokens_refused(&self) -> u64 {
        self.tokens_refused.get()
    }

    /// Registers the families in `registry` (as `feedbuttons_api_*`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedbuttons_api_requests",
            "HTTP requests the API client sent, by endpoint and how each ended",
            self.requests.clone(),
        );
        registry.register(
            "feedbuttons_api_retries",
            "Waits before another try after a throttled, failed or unanswered request",
            self.retries.clone(),
        );
        registry.register(
            "feedbuttons_api_tokens_refused",
            "Tokens the API refused (expired early, invalid) and the client dropped",
            self.tokens_refused.clone(),
        );
    }
}
