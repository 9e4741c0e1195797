//! Statements on `meetingd.integration_health`: what meetingd knows about each connection's
//! grant (consent, last refresh, last check, the lifetime its provider was warned about), and the
//! one SQL definition of a grant's known end and of "expiring" that the monitor, the API, `status`
//! and the metrics share.
//!
//! It never sees a token, and it knows no platform: each platform's lifetime comes in as
//! [`LifetimeParams`] (built by `monitor::Lifetimes` from the platforms' OAuth facts).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Param, Sql};

/// The known lifetimes of the platforms' grants, as the statements take them: parallel arrays,
/// one entry per platform whose refresh tokens die after a known time. `anchor` is `consent`
/// (counted from the consent, whatever refreshes happen) or `refresh` (counted from the last
/// successful refresh, which starts it again).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifetimeParams {
    pub platforms: Vec<String>,
    pub anchors: Vec<String>,
    pub length_secs: Vec<f64>,
    /// How long before the end a connection counts as expiring.
    pub warn_secs: Vec<f64>,
}

impl LifetimeParams {
    /// `$1`–`$4` of a statement that uses [`LIFETIME`].
    fn params(&self) -> [&dyn Param; 4] {
        [&self.platforms, &self.anchors, &self.length_secs, &self.warn_secs]
    }
}

/// Joined to `user_meeting_integrations i`: its health row `h`, its platform's lifetime `p`
/// (`$1`–`$4`, [`LifetimeParams`]) and `l.ends_at`, when its grant dies unless reconnected (or,
/// for a `refresh` anchor, refreshed); NULL on a platform without a known lifetime. A row
/// meetingd has no health row for (connected before it kept them, or by another way) counts from
/// its `created_at` (consent) or its `updated_at` (last refresh, which updates it).
pub(crate) const LIFETIME: &str = "
  LEFT JOIN meetingd.integration_health h ON h.integration_id = i.id
  LEFT JOIN unnest($1::text[], $2::text[], $3::float8[], $4::float8[]) AS p(platform, anchor, length_secs, warn_secs)
         ON p.platform = i.platform
  CROSS JOIN LATERAL (SELECT CASE p.anchor
           WHEN 'consent' THEN COALESCE(h.consented_at, i.created_at)
           WHEN 'refresh' THEN COALESCE(h.refreshed_at, h.consented_at, i.updated_at, i.created_at)
         END + make_interval(secs => p.length_secs) AS ends_at) l";

/// Whether the joined row's grant ends within its platform's warning window (needs [`LIFETIME`]).
pub(crate) const EXPIRING: &str = "COALESCE(l.ends_at - make_interval(secs => p.warn_secs) <= now(), false)";

/// Active and holding a token (needs `i`).
const ACTIVE: &str = "COALESCE(i.is_active, false) AND COALESCE(i.access_token, '') <> ''";

/// A new grant (connect or reconnect): its lifetime starts now, and a warning about the old one
/// no longer counts.
pub async fn consented(db: Sql<'_>, integration_id: Uuid) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO meetingd.integration_health AS h (integration_id, consented_at, refreshed_at) VALUES ($1, now(), now())
         ON CONFLICT (integration_id) DO UPDATE SET consented_at = now(), refreshed_at = now(), warned_for = NULL",
        &[&integration_id],
    )
    .await?;
    Ok(())
}

/// A refresh succeeded (in the refresh's transaction).
pub async fn refreshed(db: Sql<'_>, integration_id: Uuid) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO meetingd.integration_health AS h (integration_id, refreshed_at) VALUES ($1, now())
         ON CONFLICT (integration_id) DO UPDATE SET refreshed_at = now()",
        &[&integration_id],
    )
    .await?;
    Ok(())
}

/// The monitor finished a check of the connection (whatever it found, but for a transient
/// failure, which leaves it due at the next run).
pub async fn checked(db: Sql<'_>, integration_id: Uuid) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO meetingd.integration_health AS h (integration_id, checked_at) VALUES ($1, now())
         ON CONFLICT (integration_id) DO UPDATE SET checked_at = now()",
        &[&integration_id],
    )
    .await?;
    Ok(())
}

/// Records that the provider is warned about the lifetime ending at `ends_at`; `false` when they
/// already were (another run, another daemon). Call in the transaction that writes the event.
pub async fn warn_once(db: Sql<'_>, integration_id: Uuid, ends_at: DateTime<Utc>) -> Result<bool, DbError> {
    let rows = db
        .query(
            "INSERT INTO meetingd.integration_health AS h (integration_id, warned_for) VALUES ($1, $2)
             ON CONFLICT (integration_id) DO UPDATE SET warned_for = $2 WHERE h.warned_for IS DISTINCT FROM $2
             RETURNING 1",
            &[&integration_id, &ends_at],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Deletes health rows whose integration row is gone; returns how many.
pub async fn prune(db: Sql<'_>) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM meetingd.integration_health h
              WHERE NOT EXISTS (SELECT 1 FROM user_meeting_integrations i WHERE i.id = h.integration_id)",
            &[],
        )
        .await?)
}

/// An active connection the monitor should look at now.
#[derive(Debug, Clone)]
pub struct Due {
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub platform: String,
    /// When the stored access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the grant dies (see [`LIFETIME`]), on a platform with a known lifetime.
    pub ends_at: Option<DateTime<Utc>>,
    /// `ends_at` is within the warning window.
    pub expiring: bool,
    /// A refresh starts the lifetime again (`refresh` anchor).
    pub refresh_renews: bool,
    /// The lifetime end the provider was last warned about.
    pub warned_for: Option<DateTime<Utc>>,
}

/// The active connections on `platforms` not checked for `check_every_secs`, and those whose
/// provider is yet to be warned that they expire; the least recently checked first, at most
/// `limit`.
pub async fn due(
    db: Sql<'_>,
    lifetimes: &LifetimeParams,
    platforms: &[String],
    check_every_secs: f64,
    limit: i64,
) -> Result<Vec<Due>, DbError> {
    let sql = format!(
        "SELECT i.id, i.user_id, i.platform, i.expires_at, l.ends_at, {EXPIRING}, p.anchor = 'refresh', h.warned_for
           FROM user_meeting_integrations i {LIFETIME}
          WHERE i.platform = ANY($5) AND i.user_id IS NOT NULL AND {ACTIVE}
            AND (h.checked_at IS NULL OR h.checked_at < now() - make_interval(secs => $6)
                 OR ({EXPIRING} AND h.warned_for IS DISTINCT FROM l.ends_at))
          ORDER BY h.checked_at NULLS FIRST, i.id
          LIMIT $7"
    );
    let [a, b, c, d] = lifetimes.params();
    let rows = db.query(&sql, &[a, b, c, d, &platforms, &check_every_secs, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            integration_id: r.get(0),
            user_id: r.get(1),
            platform: r.get(2),
            expires_at: r.get(3),
            ends_at: r.get(4),
            expiring: r.get(5),
            refresh_renews: r.get::<_, Option<bool>>(6).unwrap_or(false),
            warned_for: r.get(7),
        })
        .collect())
}

/// Connections by platform (of `platforms`) and state (`active`, `expiring`, `needs_reconnect`),
/// for the metrics; a connection without a token (disconnected) is none of them.
pub async fn states(
    db: Sql<'_>,
    lifetimes: &LifetimeParams,
    platforms: &[String],
) -> Result<Vec<(String, String, i64)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT i.platform,
                CASE WHEN NOT COALESCE(i.is_active, false) THEN 'needs_reconnect'
                     WHEN {EXPIRING} THEN 'expiring' ELSE 'active' END,
                count(*)
           FROM user_meeting_integrations i {LIFETIME}
          WHERE i.platform = ANY($5) AND COALESCE(i.access_token, '') <> ''
          GROUP BY 1, 2"
    );
    let [a, b, c, d] = lifetimes.params();
    Ok(db.query(&sql, &[a, b, c, d, &platforms]).await?.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// A connection that dies soon unless its provider reconnects (or a refresh succeeds).
pub struct Expiring {
    pub user_id: Uuid,
    pub platform: String,
    pub email: Option<String>,
    pub ends_at: DateTime<Utc>,
}

/// The 20 active connections that end soonest within their warning window, for `meetingd status`.
pub async fn expiring(db: Sql<'_>, lifetimes: &LifetimeParams) -> Result<Vec<Expiring>, DbError> {
    let sql = format!(
        "SELECT i.user_id, i.platform, i.platform_user_email, l.ends_at
           FROM user_meeting_integrations i {LIFETIME}
          WHERE i.user_id IS NOT NULL AND {ACTIVE} AND {EXPIRING}
          ORDER BY l.ends_at LIMIT 20"
    );
    let [a, b, c, d] = lifetimes.params();
    Ok(db
        .query(&sql, &[a, b, c, d])
        .await?
        .iter()
        .map(|r| Expiring { user_id: r.get(0), platform: r.get(1), email: r.get(2), ends_at: r.get(3) })
        .collect())
}
