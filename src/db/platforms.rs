//! `meetingd.platforms`: what this deployment offers, published by every daemon at start-up so
//! that the database's rules for a service's meeting platform (`meetingd.check_service_meeting`,
//! `sql/migrations/V12__service_meeting_rules.sql`) know it.
//!
//! Must not decide what is offered: `providers::offer` does.

use super::{DbError, Sql};
use crate::providers::offer::PlatformOffer;

/// Replaces the published offering with `offer` (every platform meetingd knows), in one statement:
/// a platform this binary no longer knows is removed. The last daemon to start wins; daemons of
/// one deployment are expected to share their platform configuration.
pub async fn publish(db: Sql<'_>, offer: &[PlatformOffer], by: &str) -> Result<(), DbError> {
    let rows =
        serde_json::to_value(offer).map_err(|e| DbError::Schema(format!("cannot publish the platforms: {e}")))?;
    db.execute(
        "WITH p AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(platform text, display_name text,
                      needs_account boolean, offered boolean, options text[], option_values jsonb,
                      connect_path text, fallback boolean)),
              gone AS (DELETE FROM meetingd.platforms t WHERE NOT EXISTS (SELECT 1 FROM p WHERE p.platform = t.platform))
         INSERT INTO meetingd.platforms AS t (platform, display_name, needs_account, offered, options, option_values,
                                              connect_path, fallback, published_at, published_by)
         SELECT platform, display_name, needs_account, offered, options, option_values, connect_path, fallback, now(), $2
           FROM p
         ON CONFLICT (platform) DO UPDATE
           SET display_name = EXCLUDED.display_name, needs_account = EXCLUDED.needs_account,
               offered = EXCLUDED.offered, options = EXCLUDED.options, option_values = EXCLUDED.option_values,
               connect_path = EXCLUDED.connect_path, fallback = EXCLUDED.fallback,
               published_at = EXCLUDED.published_at, published_by = EXCLUDED.published_by",
        &[&rows, &by],
    )
    .await?;
    Ok(())
}

/// One row of `meetingd.platforms` as `check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub platform: String,
    pub offered: bool,
    pub fallback: bool,
    pub by: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What was published, in `meetingd.platforms`' order of names; empty when no daemon has.
pub async fn published(db: Sql<'_>) -> Result<Vec<Published>, DbError> {
    Ok(db
        .query(
            "SELECT platform, offered, fallback, published_by, published_at FROM meetingd.platforms ORDER BY platform",
            &[],
        )
        .await?
        .iter()
        .map(|r| Published { platform: r.get(0), offered: r.get(1), fallback: r.get(2), by: r.get(3), at: r.get(4) })
        .collect())
}
