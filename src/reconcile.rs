//! The reconcile sweep: what exists at the platform, compared with what the bookings want.
//!
//! meetingd marks every meeting it makes (Google: the event id `meetingd<booking>g<n>` and
//! `extendedProperties.private.booking_id`; Zoom: the booking and generation sealed in the
//! agenda), so for each connected account it can list the marked meetings that have not ended and
//! compare them with its records. A marked meeting no booking
//! wants (the booking is gone or cancelled, or has another meeting) is deleted, through that
//! account; a recorded meeting that vanished at the platform is recorded as deleted and its
//! booking's job re-armed, so the worker makes a new one. Any leak (meetingd's, the app's, a
//! platform's) becomes a bounded, visible delay. Meetings being made right now (a recorded
//! create, a job under lease) are left alone. `--dry-run` only reports.
//!
//! It runs on demand (`meetingd reconcile`) and in the daemon once a day at
//! `reconcile.hour_utc` (one daemon of many, through `meetingd.maintenance`), pausing
//! `reconcile.pause_ms` between platform calls of an account. It must not touch a meeting
//! without a mark.

use std::time::Duration;

use uuid::Uuid;

use crate::config::ReconcileConfig;
use crate::db::{self, DbError, Pool};
use crate::providers::{Account, Meeting, Platform, Providers};

/// What one sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub accounts: usize,
    /// Marked meetings listed at the platforms.
    pub listed: usize,
    /// Marked meetings no booking wants: (platform id, booking), deleted unless a dry run.
    pub strays: Vec<(String, Uuid)>,
    pub deleted: usize,
    /// Bookings whose recorded meeting was gone at the platform (re-armed unless a dry run).
    pub vanished: Vec<Uuid>,
    /// Accounts or meetings the sweep could not handle, as sentences.
    pub problems: Vec<String>,
}

/// What to sweep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    /// Only this provider's accounts.
    pub provider: Option<Uuid>,
    /// Pause between platform calls of one account.
    pub pause: Duration,
}

/// Sweeps every connected account of every platform that can list its meetings.
pub async fn sweep(pool: &Pool, providers: &Providers, actor: &str, options: Options) -> Result<Report, DbError> {
    let mut report = Report::default();
    for platform in Platform::ALL {
        let Some(provider) = providers.get(platform) else { continue };
        let accounts = db::reconcile::accounts(pool.get().await?.sql(), platform.as_str(), options.provider).await?;
        for account in accounts {
            let listed_at = chrono::Utc::now();
            let listed = match provider.list_marked(&account).await {
                None => break,
                Some(Ok(listed)) => listed,
                Some(Err(e)) => {
                    report.problems.push(format!(
                        "{} account of provider {}: cannot list its meetings ({e})",
                        platform.display_name(),
                        account.user_id
                    ));
                    continue;
                }
            };
            report.accounts += 1;
            report.listed += listed.len();
            // Every listed meeting is present; only a marked one can be a stray.
            let ids: Vec<String> = listed.iter().map(|m| m.external_id.clone()).collect();
            let (marked_ids, bookings): (Vec<String>, Vec<Uuid>) =
                listed.iter().filter_map(|m| Some((m.external_id.clone(), m.booking_id?))).unzip();
            let strays = db::reconcile::strays(pool.get().await?.sql(), &marked_ids, &bookings).await?;
            for (external_id, booking) in &strays {
                if options.dry_run {
                    continue;
                }
                tokio::time::sleep(options.pause).await;
                let meeting = Meeting {
                    external_id: external_id.clone(),
                    join_url: String::new(),
                    account: Some(account.clone()),
                };
                match provider.delete(&meeting, account.user_id).await {
                    Ok(()) => {
                        report.deleted += 1;
                        audit(pool, actor, *booking, &account, platform, external_id).await?;
                        tracing::info!(platform = %platform, booking_id = %booking, meeting_id = %external_id, "reconcile: deleted a meeting no booking wants");
                    }
                    Err(e) => report.problems.push(format!("{platform} meeting {external_id}: cannot delete it ({e})")),
                }
            }
            report.strays.extend(strays);
            let vanished = db::reconcile::vanished(
                pool.get().await?.sql(),
                &account,
                platform.as_str(),
                &ids,
                listed_at,
                options.dry_run,
            )
            .await?;
            for booking in &vanished {
                tracing::warn!(platform = %platform, booking_id = %booking, "reconcile: the booking's meeting is gone at the platform; re-armed");
            }
            report.vanished.extend(vanished);
            tokio::time::sleep(options.pause).await;
        }
    }
    Ok(report)
}

async fn audit(
    pool: &Pool,
    actor: &str,
    booking: Uuid,
    account: &Account,
    platform: Platform,
    external_id: &str,
) -> Result<(), DbError> {
    let entry = crate::job::AuditEntry {
        action: "meeting.reconcile_delete",
        platform: Some(platform.as_str().to_string()),
        outcome: "ok",
        duration_ms: None,
        detail: Some(format!("meeting {external_id} no booking wants")),
    };
    db::audit::insert_audit(pool.get().await?.sql(), actor, Some(booking), Some(account.user_id), None, &entry).await
}

/// The daemon's schedule: once a day at `config.hour_utc`, one daemon of many, until `shutdown`.
pub async fn every_day(
    pool: Pool,
    providers: Providers,
    actor: String,
    config: ReconcileConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let now = chrono::Utc::now();
        let today = now.date_naive().and_hms_opt(config.hour_utc, 0, 0).map(|t| t.and_utc());
        let next = match today {
            Some(t) if t > now => t,
            Some(t) => t + chrono::Duration::days(1),
            None => return,
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        let turn = async { db::reconcile::take_turn(pool.get().await?.sql(), "reconcile", 20.0 * 3600.0).await }.await;
        match turn {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile sweep not started");
                continue;
            }
        }
        let options = Options { dry_run: false, provider: None, pause: Duration::from_millis(config.pause_ms) };
        match sweep(&pool, &providers, &actor, options).await {
            Ok(r) => tracing::info!(
                accounts = r.accounts,
                listed = r.listed,
                deleted = r.deleted,
                vanished = r.vanished.len(),
                problems = r.problems.len(),
                "reconcile sweep done"
            ),
            Err(e) => tracing::warn!(error = %e, "reconcile sweep failed; next one tomorrow"),
        }
    }
}
