//! feedbuttons: a declarative reconciler for Feishu/Lark chat feed-card buttons.
//!
//! The pipeline: `config` (files -> validated config) -> `desired` (targets and their buttons)
//! -> `plan` (diff against the applied `state`, batched calls) -> apply through `feishu`.
//! The `emulator` is a local stand-in for the API; `watch` is the daemon that runs the pipeline
//! on every change.

pub mod apply;
pub mod cli;
pub mod config;
pub mod demo;
pub mod desired;
pub mod emulator;
pub mod feishu;
pub mod id;
pub mod lock;
pub mod plan;
pub mod resolve;
pub mod runtime;
pub mod settings;
pub mod state;
pub mod sync;
pub mod target;
pub mod text;
pub mod time;
pub mod watch;
