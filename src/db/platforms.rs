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
