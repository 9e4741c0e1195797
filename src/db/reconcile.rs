//! Statements of the reconcile sweep (see `reconcile.rs`): the accounts to sweep, which listed
//! meetings no booking wants, which recorded meetings vanished at their platform, and a lease so
//! one daemon sweeps at a time.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Param, Sql};
use crate::providers::Account;

/// The active connected accounts on `platform` (of one provider, when given).
pub async fn accounts(db: Sql<'_>, platform: &str, provider: Option<Uuid>) -> Result<Vec<Account>, DbError> {
    let rows = db
        .query(
            "SELECT user_id, id, COALESCE(platform_user_id, platform_user_email) FROM user_meeting_integrations
              WHERE platform = $1 AND is_active IS TRUE AND user_id IS NOT NULL AND COALESCE(access_token, '') <> ''
                AND ($2::uuid IS NULL OR user_id = $2)
              ORDER BY user_id",
            &[&platform, &provider],
        )
        .await?;
    Ok(rows.iter().map(|r| Account { user_id: r.get(0), integration_id: r.get(1), identity: r.get(2) }).collect())
}

/// Of the meetings listed at the platform, those no booking wants: not the live meeting meetingd
/// recorded for the booking the mark names (the booking is gone, or has another meeting), and
/// not in the middle of being made (a recorded create, a job being worked on).
pub async fn strays(
    db: Sql<'_>,
    external_ids: &[String],
    booking_ids: &[Uuid],
) -> Result<Vec<(String, Uuid)>, DbError> {
    let params: [&dyn Param; 2] = [&external_ids, &booking_ids];
    let rows = db
        .query(
            "SELECT x.external_id, x.booking_id FROM unnest($1::text[], $2::uuid[]) AS x(external_id, booking_id)
              WHERE NOT EXISTS (SELECT 1 FROM meetingd.meetings m
                                 WHERE m.booking_id = x.booking_id AND m.external_id = x.external_id AND m.state = 'live')
                AND NOT EXISTS (SELECT 1 FROM meetingd.jobs j
                                 WHERE j.booking_id = x.booking_id
                                   AND (j.intent_platform IS NOT NULL OR j.lease_until > now()))",
            &params,
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The live meetings recorded in `account` (its row and, when known, its identity) on `platform`, not ended, recorded before `listed_at`
/// (when the listing began), that the listing did not show: gone at the platform. Each is
/// recorded as deleted and its booking's job re-armed, so the worker makes a new one if the
/// booking still wants it. With `dry_run`, only found. Returns the bookings.
pub async fn vanished(
    db: Sql<'_>,
    account: &Account,
    platform: &str,
    listed: &[String],
    listed_at: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Uuid>, DbError> {
    // Only meetings made in this very account: after a reconnect to another account the row id
    // stays, but the old account's meetings are not in the new account's listing.
    let found = "SELECT m.booking_id, m.external_id FROM meetingd.meetings m
                  WHERE m.integration_id = $1 AND m.platform = $2 AND m.state = 'live'
                    AND ($5::text IS NULL OR m.account IS NULL OR m.account = $5)
                    AND m.end_time > now() + interval '1 minute' AND m.updated_at < $4
                    AND m.external_id <> ALL ($3::text[])";
    let sql = if dry_run {
        format!("SELECT booking_id FROM ({found}) v")
    } else {
        format!(
            "WITH v AS ({found}), gone AS (
                UPDATE meetingd.meetings m SET state = 'deleted', updated_at = now()
                  FROM v WHERE m.booking_id = v.booking_id AND m.external_id = v.external_id AND m.state = 'live'
                RETURNING m.booking_id)
             SELECT booking_id, meetingd.touch_job(booking_id) FROM gone"
        )
    };
    let params: [&dyn Param; 5] = [&account.integration_id, &platform, &listed, &listed_at, &account.identity];
    Ok(db.query(&sql, &params).await?.iter().map(|r| r.get(0)).collect())
}

/// Takes the sweep for this day (`true`) unless another daemon did within `every`.
pub async fn take_turn(db: Sql<'_>, task: &str, every_secs: f64) -> Result<bool, DbError> {
    let rows = db
        .query(
            "INSERT INTO meetingd.maintenance AS t (task, last_run) VALUES ($1, now())
             ON CONFLICT (task) DO UPDATE SET last_run = now()
              WHERE t.last_run < now() - make_interval(secs => $2)
             RETURNING task",
            &[&task, &every_secs],
        )
        .await?;
    Ok(!rows.is_empty())
}
