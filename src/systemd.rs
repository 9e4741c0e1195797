//! systemd integration: readiness, watchdog, status line, stopping.
//!
//! `READY=1` is sent once the daemon really works (schema current, pool answering, LISTEN up when
//! enabled, HTTP bound); the watchdog is fed only while the worker and listener loops beat; `STATUS=`
//! carries a one-line state; `STOPPING=1` starts shutdown. Without `NOTIFY_SOCKET` every call is a
//! no-op, so this costs nothing outside systemd.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The loops the daemon cannot work without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Dispatcher,
    Listener,
    /// The webhook delivery loop (`webhooks/`), when `[webhooks] url` is set.
    Webhooks,
}

impl Loop {
    pub fn name(self) -> &'static str {
        match self {
            Loop::Dispatcher => "dispatcher",
            Loop::Listener => "listener",
            Loop::Webhooks => "webhook sender",
        }
    }
}

/// When each loop last proved it is alive, and whether it is running at all (a loop that died
/// is down until its supervisor has started it again).
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    worker: AtomicU64,
    listener: AtomicU64,
    listener_enabled: bool,
    dispatcher_running: AtomicBool,
    listener_running: AtomicBool,
    webhooks_enabled: AtomicBool,
    webhooks_running: AtomicBool,
}

impl Liveness {
    pub fn new(listener_enabled: bool) -> Arc<Liveness> {
        Arc::new(Liveness {
            start: Instant::now(),
            worker: AtomicU64::new(0),
            listener: AtomicU64::new(0),
            listener_enabled,
            dispatcher_running: AtomicBool::new(true),
            listener_running: AtomicBool::new(true),
            webhooks_enabled: AtomicBool::new(false),
            webhooks_running: AtomicBool::new(true),
        })
    }

    fn running_flag(&self, which: Loop) -> &AtomicBool {
        match which {
            Loop::Dispatcher => &self.dispatcher_running,
            Loop::Listener => &self.listener_running,
            Loop::Webhooks => &self.webhooks_running,
        }
    }

    /// The webhook delivery loop runs too: its being down counts (it has no beat of its own).
    pub fn enable_webhooks(&self) {
        self.webhooks_enabled.store(true, Ordering::Relaxed);
    }

    pub fn set_running(&self, which: Loop, up: bool) {
        self.running_flag(which).store(up, Ordering::Relaxed);
    }

    /// The loops that are down right now (stopped, waiting to be restarted).
    pub fn down(&self) -> Vec<Loop> {
        let mut loops = vec![Loop::Dispatcher];
        if self.listener_enabled {
            loops.push(Loop::Listener);
        }
        if self.webhooks_enabled.load(Ordering::Relaxed) {
            loops.push(Loop::Webhooks);
        }
        loops.into_iter().filter(|l| !self.running_flag(*l).load(Ordering::Relaxed)).collect()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn worker_beat(&self) {
        self.worker.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn listener_beat(&self) {
        self.listener.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Every loop is running and beat within `within`.
    pub fn alive(&self, within: Duration) -> bool {
        let now = self.now_ms();
        let fresh = |beat: &AtomicU64| now.saturating_sub(beat.load(Ordering::Relaxed)) <= within.as_millis() as u64;
        self.down().is_empty() && fresh(&self.worker) && (!self.listener_enabled || fresh(&self.listener))
    }
}

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping: draining in-flight jobs")]);
}

pub fn status(line: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(line)]);
}

/// Feeds the watchdog (when systemd asked for one) at half its period, only while every loop beat
/// within the period; refreshes `STATUS=` from `status_line` at the same pace.
pub async fn watchdog(liveness: Arc<Liveness>, status_line: impl Fn() -> String, shutdown: CancellationToken) {
    let period = sd_notify::watchdog_enabled();
    let every = period.map_or(Duration::from_secs(10), |p| (p / 2).max(Duration::from_millis(100)));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        status(&status_line());
        if let Some(period) = period {
            if liveness.alive(period) {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    "a daemon loop stopped beating; not feeding the watchdog (systemd will restart meetingd)"
                );
            }
        }
    }
}
