//! All integration tests: one binary, one module per topic.

mod util;

mod client;
mod emulator;
mod plan;
mod state;
mod state_cmd;
mod validate;
