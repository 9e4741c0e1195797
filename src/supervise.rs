//! Keeps the daemon's long-running loops (the dispatcher, the LISTEN connection, the webhook
//! sender) running.
//!
//! A loop that ends or panics before shutdown is logged with what happened, marked down (so
//! `/readyz` answers 503 and the systemd watchdog is not fed), and started again after a
//! back-off that doubles up to 30 s and starts over once a run has lasted a minute. It must not
//! restart anything after shutdown began: the loops drain themselves then.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::systemd::{Liveness, Loop};

/// The first pause before a restart; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next failure starts the back-off over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs the loop `start` makes until `shutdown`, restarting it whenever it stops on its own.
pub async fn supervise<F, Fut>(which: Loop, liveness: Arc<Liveness>, shutdown: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        liveness.set_running(which, true);
        let started = Instant::now();
        let ended = tokio::spawn(start()).await;
        if shutdown.is_cancelled() {
            return;
        }
        liveness.set_running(which, false);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        let how = match ended {
            Ok(()) => "ended on its own".to_string(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(e) => format!("was cancelled: {e}"),
        };
        tracing::error!(
            r#loop = which.name(),
            restart_in_ms = backoff.as_millis() as u64,
            "the {} {how}; restarting it (not ready meanwhile)",
            which.name()
        );
        metrics::counter!(crate::metrics::LOOP_RESTARTS, "loop" => which.name()).increment(1);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The text of a panic's payload.
pub fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}
