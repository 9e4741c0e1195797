//! The LISTEN connection: wakes the dispatcher when the trigger NOTIFYs, and the webhook
//! delivery loop (`webhooks/`) when an event is recorded (channel `meetingd_events`).
//!
//! Owns one dedicated connection (a pooled one cannot receive notifications), driven with
//! `poll_message`, pinged, with TCP keepalives, reconnected with back-off. A NOTIFY is only a
//! wake-up: every (re)connect also wakes the dispatcher for a full rescan, so a notification lost
//! while disconnected loses nothing. The connection never opens a transaction, so it never holds
//! back the server's notification queue.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::DbError;
use crate::config::DatabaseConfig;

/// The channel the trigger notifies on; the payload is the job id.
pub const CHANNEL: &str = "meetingd";

/// The channel every new row of `meetingd.events` is sent on (the app's; its payload is not read).
pub const EVENTS_CHANNEL: &str = "meetingd_events";

/// Shared view of the listener, for readiness and status.
#[derive(Debug)]
pub struct ListenerState {
    connected: tokio::sync::watch::Sender<bool>,
}

impl Default for ListenerState {
    fn default() -> Self {
        ListenerState { connected: tokio::sync::watch::Sender::new(false) }
    }
}

impl ListenerState {
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    fn set(&self, up: bool) {
        self.connected.send_replace(up);
    }

    /// Returns once the LISTEN connection is up.
    pub async fn wait_connected(&self) {
        let mut rx = self.connected.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }
}

#[derive(Clone)]
pub struct Listener {
    pub db: DatabaseConfig,
    /// Beats on every pass of the loops (for the systemd watchdog).
    pub liveness: Option<std::sync::Arc<crate::systemd::Liveness>>,
    pub ping_interval: Duration,
    pub wake: Arc<Notify>,
    /// Woken by every NOTIFY on [`EVENTS_CHANNEL`] and every (re)connect, when set: the webhook
    /// delivery loop's.
    pub events_wake: Option<Arc<Notify>>,
    pub state: Arc<ListenerState>,
}

impl Listener {
    /// Runs until `shutdown`: connect, LISTEN, wake for a rescan, forward notifications, ping;
    /// on any failure reconnect with capped exponential back-off.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            self.beat();
            let session = self.session(&shutdown);
            let result = tokio::select! {
                r = session => r,
                () = shutdown.cancelled() => Ok(()),
            };
            self.state.set(false);
            if shutdown.is_cancelled() {
                return;
            }
            match result {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => tracing::warn!(
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "LISTEN connection lost; jobs are still found by the sweep meanwhile"
                ),
            }
            self.beat();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    fn beat(&self) {
        if let Some(l) = &self.liveness {
            l.listener_beat();
        }
    }

    /// One connected session; returns when the connection fails.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), DbError> {
        let (pg, tls) = super::pg_config(&self.db)?;
        let (client, mut connection) = pg.connect(tls).await.map_err(DbError::Connect)?;
        let wake = self.wake.clone();
        let events_wake = self.events_wake.clone();
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let mut driver = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                        if job_id(n.payload()).is_none() {
                            tracing::warn!(
                                payload = %truncate(n.payload(), 64),
                                sender_pid = n.process_id(),
                                "ignoring a NOTIFY on channel 'meetingd' whose payload is not a job id; looking for due jobs anyway"
                            );
                        }
                        wake.notify_one();
                    }
                    Ok(AsyncMessage::Notification(n)) if n.channel() == EVENTS_CHANNEL => {
                        if let Some(events) = &events_wake {
                            events.notify_one();
                        }
                    }
                    Ok(AsyncMessage::Notice(notice)) => {
                        tracing::debug!(message = notice.message(), "notice on LISTEN connection");
                    }
                    Ok(_) => {}
                    Err(e) => return Err(DbError::Query(e)),
                }
            }
            Ok(())
        });
        let result = async {
            // One statement text, so `meetingd status` still finds it as `LISTEN meetingd%`.
            let listen = match self.events_wake {
                Some(_) => format!("LISTEN {CHANNEL}; LISTEN {EVENTS_CHANNEL}"),
                None => format!("LISTEN {CHANNEL}"),
            };
            client.batch_execute(&listen).await?;
            self.state.set(true);
            self.beat();
            tracing::info!("listening for booking changes on channel '{CHANNEL}'");
            // Anything committed while we were not listening is found by this rescan.
            self.wake.notify_one();
            if let Some(events) = &self.events_wake {
                events.notify_one();
            }
            let mut ping = tokio::time::interval(self.ping_interval);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = ping.tick() => {
                        self.beat();
                        match tokio::time::timeout(self.ping_interval.max(Duration::from_secs(1)), client.simple_query("")).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return Err(DbError::Query(e)),
                            Err(_) => return Err(DbError::Schema("LISTEN connection did not answer a ping".into())),
                        }
                    }
                    () = shutdown.cancelled() => return Ok(()),
                    ended = &mut driver => return match ended {
                        Ok(Err(e)) => Err(e),
                        _ => Err(DbError::Schema("LISTEN connection closed by the server".into())),
                    },
                }
            }
        }
        .await;
        driver.abort();
        result
    }
}

/// The job id a NOTIFY on channel `meetingd` carries. Anyone who may NOTIFY can send anything:
/// whatever the payload, the answer is a wake-up, and `None` only decides a log line.
fn job_id(payload: &str) -> Option<i64> {
    payload.parse::<i64>().ok()
}

/// A payload as it may appear in a log line: at most `max` characters, escaped.
fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// NOTIFY payloads are untrusted text (up to 8000 bytes): parsed or refused, never a panic,
        /// and what reaches the log is short and free of control characters.
        #[test]
        fn any_payload_is_a_job_id_or_ignored(payload in "\\PC{0,200}|[\\x00-\\x7f]{0,200}|-?[0-9]{1,25}", id in any::<i64>()) {
            let _ = job_id(&payload);
            prop_assert_eq!(job_id(&id.to_string()), Some(id));
            let shown = truncate(&payload, 64);
            prop_assert!(!shown.chars().any(char::is_control), "{shown:?}");
            prop_assert!(shown.chars().count() <= 64 * 10 + 1);
        }
    }
}
