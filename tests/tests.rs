//! All integration tests: one binary, one module per topic.

mod util;

mod apply;
mod ci;
mod cli;
mod client;
mod color;
mod emulator;
mod emulator_directory;
mod incremental;
mod model;
mod monitoring;
mod ordering;
mod outage;
mod people;
mod people_redteam;
mod pgprocess;
mod pgredteam;
mod pgserver;
mod plan;
mod plan_state_read;
mod postgres;
mod readme;
mod records;
mod redteam;
mod state;
mod state_cmd;
mod tls;
mod validate;
mod watch;
