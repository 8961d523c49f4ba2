//! The Feishu/Lark Open API as this tool speaks it: wire types, and the client that applies
//! plans through it (tokens, rate limit, retries, errors).

mod answer;
pub mod client;
pub mod metrics;
pub mod ratelimit;
mod retry;
mod secret;
mod token;
pub mod windows;
pub mod wire;
