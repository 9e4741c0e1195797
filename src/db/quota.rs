//! Statements on `meetingd.platform_quota`: a platform's daily allowance of requests per
//! connected account, counted in the database so that every daemon draws on one count.
//!
//! A day is a UTC day by the database clock (the platforms this serves reset at 00:00 UTC), so
//! daemons whose clocks disagree still count into the same row. It must not call a platform or
//! decide what a refusal means: `quota.rs` does.

use uuid::Uuid;

use super::{DbError, Sql};

/// Takes one request from the allowance of `integration` on `platform` for today, if fewer than
/// `limit` were taken: `true` when taken. One statement, atomic across daemons: the first take of
/// a day inserts the row, the others increment it under its row lock only while it is below the
/// limit (a refused take changes nothing).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn take(db: Sql<'_>, integration: Uuid, platform: &str, limit: i32) -> Result<bool, DbError> {
    let row = db
        .query_opt(
            "INSERT INTO meetingd.platform_quota AS q (integration_id, platform, day, used)
                  VALUES ($1, $2, (now() AT TIME ZONE 'UTC')::date, 1)
             ON CONFLICT (integration_id, platform, day) DO UPDATE SET used = q.used + 1
                   WHERE q.used < $3
             RETURNING used",
            &[&integration, &platform, &limit],
        )
        .await?;
    Ok(row.is_some())
}

/// Marks today's allowance of `integration` on `platform` used up (the platform said so: it
/// counts requests meetingd did not, such as the provider's own).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn exhaust(db: Sql<'_>, integration: Uuid, platform: &str, limit: i32) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO meetingd.platform_quota AS q (integration_id, platform, day, used)
              VALUES ($1, $2, (now() AT TIME ZONE 'UTC')::date, $3)
         ON CONFLICT (integration_id, platform, day) DO UPDATE SET used = GREATEST(q.used, EXCLUDED.used)",
        &[&integration, &platform, &limit],
    )
    .await?;
    Ok(())
}

/// How many requests `integration` took on `platform` today (0 when none).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn used_today(db: Sql<'_>, integration: Uuid, platform: &str) -> Result<i32, DbError> {
    let row = db
        .query_opt(
            "SELECT used FROM meetingd.platform_quota
              WHERE integration_id = $1 AND platform = $2 AND day = (now() AT TIME ZONE 'UTC')::date",
            &[&integration, &platform],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}
