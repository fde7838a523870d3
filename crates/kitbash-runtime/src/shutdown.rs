//! Shutdown and reload signals. SIGTERM/SIGINT cancel a [`CancellationToken`] that every loop
//! watches; SIGHUP bumps a reload counter. Daemons take the token as an argument, so tests pass
//! their own and cancel it instead of sending signals.

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::watch;
pub use tokio_util::sync::CancellationToken;

/// The signals a daemon reacts to.
#[derive(Clone, Debug)]
pub struct Signals {
    /// Cancelled on the first SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Incremented on each SIGHUP; daemons reload what they can when it changes.
    pub reload: watch::Receiver<u64>,
}

/// Installs the signal handlers (signal-hook) and returns the handles. A second SIGTERM/SIGINT
/// while draining exits at once with status 130, for operators who really mean it.
pub fn install() -> std::io::Result<Signals> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reload) = watch::channel(0u64);
    let token = shutdown.clone();
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading");
                    reload_tx.send_modify(|n| *n += 1);
                }
                _ if token.is_cancelled() => {
                    tracing::warn!(signal = sig, "second stop signal: exiting without draining");
                    std::process::exit(130);
                }
                _ => {
                    tracing::info!(signal = sig, "stop signal: draining");
                    token.cancel();
                }
            }
        }
    });
    Ok(Signals { shutdown, reload })
}

/// Signals for tests and embedders: nothing is installed; cancel the token yourself.
pub fn manual() -> (Signals, watch::Sender<u64>) {
    let (tx, reload) = watch::channel(0u64);
    (
        Signals {
            shutdown: CancellationToken::new(),
            reload,
        },
        tx,
    )
}
