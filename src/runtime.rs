//! The async runtime every command runs on, and the one way a run learns that it should stop
//! (apply, watch and the emulator alike).

use std::future::Future;

/// The runtime for one command: a multi-threaded tokio runtime with I/O and timers.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// A runtime on the calling thread alone, for a thread of its own that bridges synchronous
/// callers to async I/O (the PostgreSQL state's connection).
pub fn on_this_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A signal that asks a run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C on a terminal.
    Interrupt,
    /// SIGTERM: a service manager, a container runtime or `kill` stopping the process.
    Terminate,
}

impl Signal {
    /// `SIGINT`, `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The exit code of a run the signal stopped, as shells report one killed by it:
    /// 128 + its number (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Installs the handlers for SIGINT and SIGTERM now (so that a failure shows before any work
/// starts) and gives a future that resolves with the first of them to arrive. Must be called
/// inside the runtime. Where there is no SIGTERM (Windows), Ctrl-C alone.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = Signal> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            }
        })
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        Ok(async move {
            if ctrl_c.await.is_err() {
                // No handler, so no signal can come.
                std::future::pending::<()>().await;
            }
            Signal::Interrupt
        })
    }
}
