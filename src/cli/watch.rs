//! `feedbuttons watch`: resolve the daemon's settings, then run it until SIGTERM/SIGINT. Its
//! own errors go to its log (JSON with `--log-format json`), like everything else it says.

use std::process::ExitCode;

use super::args::WatchArgs;
use crate::settings::{Settings, StateLocation};
use crate::watch::{self, Options};

/// Exit 0 after a clean stop, 1 when the daemon could not start.
pub fn run(args: WatchArgs) -> ExitCode {
    let endpoint = args.api.endpoint();
    let location = StateLocation::resolve(&args.dir, args.state.as_deref())
        .named(args.state_name.as_deref())
        .waiting(args.lock_timeout);
    let settings = match Settings::resolve(args.dir, location, &endpoint) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}; nothing was applied");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        listen: args.listen,
        interval: args.interval,
        debounce: args.debounce,
        resync: args.resync,
        allow_mass_removal: args.allow_mass_removal,
        retry_waiting: args.retry_waiting,
        resolve_every: args.resolve_every,
    };
    let rt = match crate::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(watch::run(settings, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
