//! Prometheus metrics: names, the process recorder, and the sampler of database-side gauges.
//!
//! Labels are bounded (platform, operation, outcome, class): never a booking id, user id or e-mail.
//! The gauges' statement is `db::status::gauges`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::db::health::LifetimeParams;
use crate::db::listen::ListenerState;
use crate::providers::Platform;

pub const JOBS_CLAIMED: &str = "meetingd_jobs_claimed_total";
pub const JOBS_COMPLETED: &str = "meetingd_jobs_completed_total";
pub const CONFIRM_TO_LINK: &str = "meetingd_confirm_to_link_seconds";
pub const PROVIDER_CALLS: &str = "meetingd_provider_calls_total";
pub const PROVIDER_CALL_SECONDS: &str = "meetingd_provider_call_seconds";
pub const TOKEN_REFRESHES: &str = "meetingd_token_refreshes_total";
pub const QUEUE_DEPTH: &str = "meetingd_queue_depth";
pub const OLDEST_DUE_AGE: &str = "meetingd_oldest_due_job_age_seconds";
pub const FAILED_JOBS: &str = "meetingd_failed_jobs";
pub const NEEDS_RECONNECT: &str = "meetingd_integrations_needing_reconnect";
pub const NOTIFY_QUEUE_USAGE: &str = "meetingd_pg_notification_queue_usage";
pub const LISTENER_UP: &str = "meetingd_listener_connected";
pub const LOOP_RESTARTS: &str = "meetingd_loop_restarts_total";
pub const QUOTA_REFUSALS: &str = "meetingd_platform_quota_refusals_total";
pub const WEBHOOK_DELIVERIES: &str = "meetingd_webhook_deliveries_total";
pub const WEBHOOKS_PENDING: &str = "meetingd_webhooks_pending";
pub const WEBHOOKS_FAILING: &str = "meetingd_webhooks_failing";
pub const WEBHOOKS_DEAD: &str = "meetingd_webhooks_dead";
pub const WEBHOOKS_OLDEST_PENDING_AGE: &str = "meetingd_webhooks_oldest_pending_age_seconds";
pub const RATE_LIMITED: &str = "meetingd_rate_limited_jobs_total";
pub const INTEGRATIONS: &str = "meetingd_integrations";
pub const INTEGRATION_CHECKS: &str = "meetingd_integration_checks_total";

/// The states of [`INTEGRATIONS`].
const STATES: [&str; 3] = ["active", "expiring", "needs_reconnect"];

/// The process-wide recorder (installed once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency =
                [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
            let handle = PrometheusBuilder::new()
                .set_buckets(&latency)
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(JOBS_CLAIMED, "Jobs claimed by this daemon");
    describe_counter!(
        JOBS_COMPLETED,
        "Jobs finished, by platform and outcome (linked, unlinked, unchanged, retry, failed, stale, lease_lost, not_recorded)"
    );
    describe_histogram!(
        CONFIRM_TO_LINK,
        metrics::Unit::Seconds,
        "From the booking change being recorded to its meeting link being written"
    );
    describe_counter!(PROVIDER_CALLS, "Meeting platform calls, by platform, operation and outcome class");
    describe_histogram!(PROVIDER_CALL_SECONDS, metrics::Unit::Seconds, "Meeting platform call latency");
    describe_counter!(TOKEN_REFRESHES, "OAuth token refreshes, by platform and outcome");
    describe_counter!(
        LOOP_RESTARTS,
        "Daemon loops (dispatcher, listener) that stopped on their own and were restarted"
    );
    describe_counter!(
        QUOTA_REFUSALS,
        "Platform requests not sent because the account's daily allowance is used up (Zoom's daily meeting creations and updates), by platform"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts by this daemon, by outcome (delivered, retry, gone, dead, lease_lost, not_recorded)"
    );
    describe_gauge!(WEBHOOKS_PENDING, "Webhook messages not delivered yet");
    describe_gauge!(WEBHOOKS_FAILING, "Pending webhook messages whose last attempt failed");
    describe_gauge!(WEBHOOKS_DEAD, "Dead-lettered webhook messages (meetingd webhooks retry sends them again)");
    describe_gauge!(WEBHOOKS_OLDEST_PENDING_AGE, "Age of the oldest pending webhook message, in seconds");
    describe_counter!(
        RATE_LIMITED,
        "Jobs held back until their turn because an account's or a platform's rate limit ([limits.*], shared by all daemons) had no token"
    );
    describe_gauge!(QUEUE_DEPTH, "Pending jobs in meetingd.jobs");
    describe_gauge!(OLDEST_DUE_AGE, "Age of the oldest job that is due and unclaimed, in seconds");
    describe_gauge!(FAILED_JOBS, "Jobs that ran out of attempts (bookings with meeting_status failed)");
    describe_gauge!(NEEDS_RECONNECT, "Integrations marked inactive, waiting for their provider to reconnect");
    describe_gauge!(NOTIFY_QUEUE_USAGE, "pg_notification_queue_usage(): the app's commits fail when this reaches 1");
    describe_gauge!(LISTENER_UP, "1 while the LISTEN connection is up");
    describe_gauge!(
        INTEGRATIONS,
        "Connected accounts by platform and state (active, expiring: its grant ends within the warning window, needs_reconnect)"
    );
    describe_counter!(
        INTEGRATION_CHECKS,
        "Connection checks of the monitor, by platform and outcome (ok, refreshed, needs_reconnect, undecided, problem, gone)"
    );
}

/// Refreshes the database-side gauges every `every` until `shutdown`; connections are counted
/// by state with the grants' `lifetimes` (see `monitor::Lifetimes`).
pub async fn sample(
    pool: Pool,
    listener: Option<std::sync::Arc<ListenerState>>,
    lifetimes: LifetimeParams,
    every: Duration,
    shutdown: CancellationToken,
) {
    let platforms: Vec<String> =
        Platform::ALL.into_iter().filter(|p| p.needs_account()).map(|p| p.as_str().to_string()).collect();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Some(l) = &listener {
            gauge!(LISTENER_UP).set(if l.is_connected() { 1.0 } else { 0.0 });
        }
        let Ok(client) = pool.get().await else { continue };
        match crate::db::status::gauges(client.sql()).await {
            Ok(g) => {
                gauge!(QUEUE_DEPTH).set(g.queue_depth);
                gauge!(OLDEST_DUE_AGE).set(g.oldest_due_age_secs);
                gauge!(FAILED_JOBS).set(g.failed_jobs);
                gauge!(NEEDS_RECONNECT).set(g.needs_reconnect);
                gauge!(NOTIFY_QUEUE_USAGE).set(g.notification_queue_usage);
                gauge!(WEBHOOKS_PENDING).set(g.webhooks.pending as f64);
                gauge!(WEBHOOKS_FAILING).set(g.webhooks.failing as f64);
                gauge!(WEBHOOKS_DEAD).set(g.webhooks.dead as f64);
                gauge!(WEBHOOKS_OLDEST_PENDING_AGE).set(g.webhooks.oldest_pending_secs);
            }
            Err(e) => tracing::debug!(error = %crate::db::describe(&e), "metrics sample failed"),
        }
        match crate::db::health::states(client.sql(), &lifetimes, &platforms).await {
            Ok(counts) => {
                for platform in &platforms {
                    for state in STATES {
                        let n = counts.iter().find(|(p, s, _)| p == platform && s == state).map_or(0, |c| c.2);
                        gauge!(INTEGRATIONS, "platform" => platform.clone(), "state" => state).set(n as f64);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %crate::db::describe(&e), "metrics sample of connections failed"),
        }
    }
}
