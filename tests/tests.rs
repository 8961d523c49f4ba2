//! All integration tests: one binary, one module per topic.

mod util;

mod apply;
mod ci;
mod client;
mod emulator;
mod emulator_directory;
mod model;
mod ordering;
mod outage;
mod pgserver;
mod plan;
mod postgres;
mod readme;
mod records;
mod redteam;
mod state;
mod state_cmd;
mod validate;
mod watch;
