//! Outbound Standard Webhooks: every row of `meetingd.events` POSTed, signed, to `[webhooks] url`,
//! at least once, for apps that cannot hold a LISTEN connection.
//!
//! A trigger writes one delivery row per event (V10, `meetingd.webhook_deliveries`) while the
//! feed is on; this loop claims due rows in batches (`db/webhooks.rs`: `FOR UPDATE SKIP LOCKED`,
//! a lease on the database clock, a random lease token), POSTs them with no connection or
//! transaction held (`send.rs`), and records each answer fenced on its claim: a 2xx is delivered,
//! a 410 Gone dead-letters the message, anything else is retried after `retry.rs`'s back-off
//! (with jitter, a `Retry-After` as a floor) until `max_age` since the event has passed, when it
//! is dead-lettered. The `webhook-id` is the row's, the same on every attempt. It is woken by a
//! NOTIFY on `meetingd_events` (the LISTEN connection, `db/listen.rs`), by its own next due time
//! and by the timer (`worker.sweep_interval_ms`, or `poll_interval_ms` without LISTEN).
//!
//! It must not hold a transaction across a POST, log the secret or a body, or label a metric
//! with an id or a URL.

pub mod send;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{WebhooksConfig, WorkerConfig};
use crate::db::webhooks::{self as store, Claimed, Failed, Failure};
use crate::db::{DbError, Pool};
pub use send::{Answer, Sender};

/// The delivery loop of one daemon.
pub struct Webhooks {
    pool: Pool,
    sender: Sender,
    config: WebhooksConfig,
    instance: Uuid,
    wake: Arc<Notify>,
    /// The timer: how long it waits without a wake-up.
    idle_wait: Duration,
    /// On shutdown, how long the POSTs in flight may still take.
    grace: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Deliveries claimed and POSTed.
    pub sent: usize,
    /// Due deliveries dead-lettered at the claim (past `max_age`).
    pub expired: u64,
}

impl Webhooks {
    /// The loop for `config`, `None` when webhooks are off (no `url`). `wake` is the one the
    /// LISTEN connection notifies on channel `meetingd_events`.
    pub fn new(
        pool: Pool,
        config: &WebhooksConfig,
        worker: &WorkerConfig,
        instance: Uuid,
        wake: Arc<Notify>,
    ) -> Result<Option<Webhooks>, String> {
        if !config.is_on() {
            return Ok(None);
        }
        let url = config.url().ok_or("webhooks.url is not a URL")?;
        let secret = config.secret()?.ok_or("webhooks.url is set but no webhooks.secret")?;
        let sender = Sender::new(url, &secret, config.timeout())?;
        Ok(Some(Webhooks {
            pool,
            sender,
            config: config.clone(),
            instance,
            wake,
            idle_wait: worker.idle_wait(),
            grace: Duration::from_millis(worker.shutdown_grace_ms),
        }))
    }

    /// Switches the feed on in the database: events from now on are queued for delivery. The
    /// daemon does it at start, before it is ready.
    pub async fn switch_on(&self) -> Result<(), DbError> {
        let conn = self.pool.get().await?;
        let since = store::switch_on(conn.sql()).await?;
        tracing::info!(
            receiver = %self.config.shown_url(),
            since = %since.format("%Y-%m-%d %H:%M:%S UTC"),
            "webhooks on: every event since then is POSTed to the receiver"
        );
        Ok(())
    }

    /// Runs until `shutdown`: a pass whenever something may be due. On shutdown the POSTs in
    /// flight get `worker.shutdown_grace_ms` to finish; what is left goes to whoever claims it
    /// after its lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let pass = self.run_once();
            tokio::pin!(pass);
            let result = tokio::select! {
                r = &mut pass => r,
                () = shutdown.cancelled() => match tokio::time::timeout(self.grace, &mut pass).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("webhook POSTs still in flight at shutdown; they are sent again after their lease");
                        return;
                    }
                },
            };
            let pause = match result {
                Ok(p) if p.sent + p.expired as usize >= self.config.concurrency => Duration::ZERO,
                Ok(_) => self.next_wait().await,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook deliveries could not be claimed; trying again");
                    self.idle_wait
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// How long to wait for a wake-up: until the next pending delivery falls due, at most the timer.
    async fn next_wait(&self) -> Duration {
        let next = async {
            let conn = self.pool.get().await?;
            store::next_due_in(conn.sql()).await
        }
        .await;
        match next {
            Ok(Some(due)) => due.min(self.idle_wait),
            _ => self.idle_wait,
        }
    }

    /// One pass: claims up to `concurrency` due deliveries, POSTs them concurrently, records each
    /// answer. For tests, and the loop.
    pub async fn run_once(&self) -> Result<Pass, DbError> {
        let (claimed, expired) = {
            let conn = self.pool.get().await?;
            store::claim(
                conn.sql(),
                self.config.concurrency as i64,
                self.instance,
                self.config.lease(),
                self.config.max_age(),
            )
            .await?
        };
        if expired > 0 {
            tracing::warn!(
                count = expired,
                "webhook messages not delivered within webhooks.max_age_secs were dead-lettered (`meetingd webhooks retry --all-dead` sends them again)"
            );
            metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "dead").increment(expired);
        }
        let sent = claimed.len();
        futures_util::future::join_all(claimed.into_iter().map(|c| self.deliver(c))).await;
        Ok(Pass { sent, expired })
    }

    /// One message: the POST, then its fenced write-back.
    #[tracing::instrument(level = "debug", skip_all, fields(event_id = c.event_id, attempt = c.attempt))]
    async fn deliver(&self, c: Claimed) {
        let msg_id = format!("msg_{}", c.webhook_id.simple());
        let answer = self.sender.send(&msg_id, &c.payload).await;
        let outcome = match self.record(&c, &answer).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(error = %e, "webhook answer not recorded; the message is sent again after its lease");
                "not_recorded"
            }
        };
        metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
    }

    /// Records `answer`; the outcome label.
    async fn record(&self, c: &Claimed, answer: &Answer) -> Result<&'static str, DbError> {
        let conn = self.pool.get().await?;
        let (status, error, retry_in) = match answer {
            Answer::Delivered { status } => {
                if store::delivered(conn.sql(), c, i32::from(*status)).await? {
                    tracing::debug!(webhook_id = %c.webhook_id, status, "webhook delivered");
                    return Ok("delivered");
                }
                tracing::info!("webhook delivered after its lease ran out; another daemon may send it too");
                return Ok("lease_lost");
            }
            Answer::Gone => {
                (Some(410), "answered 410 Gone: the receiver wants no more of this message".to_string(), None)
            }
            Answer::Failed { status, error, retry_after } => {
                let attempt = u32::try_from(c.attempt).unwrap_or(1).max(1);
                let delay = self.config.retry_policy().next_delay(attempt, *retry_after, crate::retry::jitter_unit());
                (status.map(i32::from), error.clone(), delay)
            }
        };
        let failure = Failure { status, error: &error, retry_in, max_age: self.config.max_age() };
        Ok(match store::failed(conn.sql(), c, &failure).await? {
            Failed::Retry => {
                tracing::warn!(
                    status,
                    error = %error,
                    retry_in_ms = retry_in.map_or(0, |d| d.as_millis() as u64),
                    "webhook not delivered; trying again"
                );
                "retry"
            }
            Failed::Dead => {
                tracing::warn!(
                    status,
                    error = %error,
                    "webhook dead-lettered (`meetingd webhooks retry` sends it again)"
                );
                if matches!(answer, Answer::Gone) { "gone" } else { "dead" }
            }
            Failed::LeaseLost => "lease_lost",
        })
    }
}
