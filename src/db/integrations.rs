//! Statements on `user_meeting_integrations`, the providers' connected accounts.
//!
//! Token columns hold ciphertext only: this module takes and returns the stored strings and never
//! sees a plaintext token (encryption happens in `tokens.rs` / `crypto.rs`). It also keeps the
//! envelope-format marker (`meetingd.token_format`): whether old-format envelopes are refused.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Sql};

/// One integration row as stored.
#[derive(Clone)]
pub struct IntegrationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub platform: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub email: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// The platform's identity of the account: `platform_user_id`, else `platform_user_email`.
    pub identity: Option<String>,
    /// `Some(id)` for a copy in `meetingd.retired_integrations` (an account that left
    /// `user_meeting_integrations` while meetings may still live in it); `id` is then the
    /// integration id it had, which its ciphertexts are bound to.
    pub retired: Option<i64>,
}

impl IntegrationRow {
    /// Whom the row's tokens are bound to (part of their AAD): its user and platform as stored.
    pub fn owner(&self) -> crate::crypto::Owner<'_> {
        crate::crypto::Owner { user_id: self.user_id, platform: &self.platform }
    }
}

impl std::fmt::Debug for IntegrationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("platform", &self.platform)
            .field("expires_at", &self.expires_at)
            .field("is_active", &self.is_active)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// `user_id` may be NULL in the app's table: such a row belongs to nobody (no provider's lookup
/// finds it), and reads as the nil user rather than failing a whole listing or pass.
const COLUMNS: &str = "id, COALESCE(user_id, '00000000-0000-0000-0000-000000000000'), platform, access_token, refresh_token, expires_at, \
                       COALESCE(is_active, false), platform_user_email, created_at, \
                       COALESCE(platform_user_id, platform_user_email), NULL::bigint";

const RETIRED_COLUMNS: &str = "integration_id, COALESCE(user_id, '00000000-0000-0000-0000-000000000000'), platform, access_token, refresh_token, expires_at, \
                               is_active, platform_user_email, retired_at, \
                               COALESCE(platform_user_id, platform_user_email), id";

fn from_row(r: &tokio_postgres::Row) -> IntegrationRow {
    integration_row_at(r, 0)
}

/// An integration row whose [`COLUMNS`] start at column `at` of `r`.
pub fn integration_row_at(r: &tokio_postgres::Row, at: usize) -> IntegrationRow {
    IntegrationRow {
        id: r.get(at),
        user_id: r.get(at + 1),
        platform: r.get(at + 2),
        access_token: r.get(at + 3),
        refresh_token: r.get(at + 4),
        expires_at: r.get(at + 5),
        is_active: r.get(at + 6),
        email: r.get(at + 7),
        created_at: r.get(at + 8),
        identity: r.get(at + 9),
        retired: r.get(at + 10),
    }
}

/// A query of the provider `user`'s row for `platform` (SQL expressions), as [`load`] reads it,
/// for a statement that reads it along with something else.
pub fn select_current(user: &str, platform: &str) -> String {
    format!("SELECT {COLUMNS} FROM user_meeting_integrations WHERE user_id = {user} AND platform = {platform}")
}

/// The row for a provider and platform; `lock` takes `FOR UPDATE` (inside a transaction).
pub async fn load(
    client: Sql<'_>,
    user_id: Uuid,
    platform: &str,
    lock: bool,
) -> Result<Option<IntegrationRow>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM user_meeting_integrations WHERE user_id = $1 AND platform = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(client.query_opt(&sql, &[&user_id, &platform]).await?.as_ref().map(from_row))
}

/// The newest retired copy of integration `integration_id` for the platform account `identity`
/// (any copy of that integration when `identity` is unknown).
pub async fn find_retired(
    client: Sql<'_>,
    integration_id: Uuid,
    identity: Option<&str>,
) -> Result<Option<i64>, DbError> {
    let row = client
        .query_opt(
            "SELECT id FROM meetingd.retired_integrations
              WHERE integration_id = $1
                AND ($2::text IS NULL OR COALESCE(platform_user_id, platform_user_email) = $2)
              ORDER BY id DESC LIMIT 1",
            &[&integration_id, &identity],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// A retired copy by its own id; `lock` takes `FOR UPDATE` (inside a transaction).
pub async fn load_retired(client: Sql<'_>, id: i64, lock: bool) -> Result<Option<IntegrationRow>, DbError> {
    let sql = format!(
        "SELECT {RETIRED_COLUMNS} FROM meetingd.retired_integrations WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(client.query_opt(&sql, &[&id]).await?.as_ref().map(from_row))
}

/// Stores refreshed tokens (ciphertext) and their expiry, in the row (or retired copy) they came from.
pub async fn save_tokens(
    client: Sql<'_>,
    row: &IntegrationRow,
    access_token: &str,
    refresh_token: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    match row.retired {
        None => client
            .execute(
                "UPDATE user_meeting_integrations
                    SET access_token = $2, refresh_token = COALESCE($3, refresh_token), expires_at = $4, updated_at = now()
                  WHERE id = $1",
                &[&row.id, &access_token, &refresh_token, &expires_at],
            )
            .await?,
        Some(retired) => client
            .execute(
                "UPDATE meetingd.retired_integrations
                    SET access_token = $2, refresh_token = COALESCE($3, refresh_token), expires_at = $4
                  WHERE id = $1",
                &[&retired, &access_token, &refresh_token, &expires_at],
            )
            .await?,
    };
    Ok(())
}

/// Marks the integration (or retired copy) as needing a reconnect.
pub async fn deactivate(client: Sql<'_>, row: &IntegrationRow) -> Result<(), DbError> {
    match row.retired {
        None => {
            client
                .execute(
                    "UPDATE user_meeting_integrations SET is_active = false, updated_at = now() WHERE id = $1",
                    &[&row.id],
                )
                .await?
        }
        Some(retired) => {
            client
                .execute("UPDATE meetingd.retired_integrations SET is_active = false WHERE id = $1", &[&retired])
                .await?
        }
    };
    Ok(())
}

/// Locks (creating if needed) the row for `(user_id, platform)` and returns its id, so tokens can
/// be encrypted for that id before they are written. Call inside a transaction.
pub async fn lock_or_create(client: Sql<'_>, user_id: Uuid, platform: &str) -> Result<Uuid, DbError> {
    client
        .execute(
            "INSERT INTO user_meeting_integrations (user_id, platform, access_token, is_active)
             VALUES ($1, $2, '', false) ON CONFLICT (user_id, platform) DO NOTHING",
            &[&user_id, &platform],
        )
        .await?;
    Ok(client
        .query_one(
            "SELECT id FROM user_meeting_integrations WHERE user_id = $1 AND platform = $2 FOR UPDATE",
            &[&user_id, &platform],
        )
        .await?
        .get(0))
}

/// What a new connection stores.
pub struct Connected<'a> {
    pub access_token: &'a str,
    pub refresh_token: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: &'a [String],
    pub platform_user_id: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// Writes a (re)connection: new ciphertexts, active again.
pub async fn connect(client: Sql<'_>, id: Uuid, c: &Connected<'_>) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE user_meeting_integrations
                SET access_token = $2, refresh_token = $3, expires_at = $4, scope = $5,
                    platform_user_id = COALESCE($6, platform_user_id), platform_user_email = COALESCE($7, platform_user_email),
                    is_active = true, updated_at = now()
              WHERE id = $1",
            &[&id, &c.access_token, &c.refresh_token, &c.expires_at, &c.scopes, &c.platform_user_id, &c.email],
        )
        .await?;
    Ok(())
}

/// Every integration, for listings (the token columns are read but callers must not show them).
pub async fn list(client: Sql<'_>) -> Result<Vec<IntegrationRow>, DbError> {
    Ok(client
        .query(&format!("SELECT {COLUMNS} FROM user_meeting_integrations ORDER BY user_id, platform"), &[])
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// A page of rows after `after` (by id), for key rotation.
pub async fn page(client: Sql<'_>, after: Uuid, limit: i64) -> Result<Vec<IntegrationRow>, DbError> {
    Ok(client
        .query(
            &format!("SELECT {COLUMNS} FROM user_meeting_integrations WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&after, &limit],
        )
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// Locks one row by id (key rotation), `None` if it disappeared.
pub async fn lock_by_id(client: Sql<'_>, id: Uuid) -> Result<Option<IntegrationRow>, DbError> {
    Ok(client
        .query_opt(&format!("SELECT {COLUMNS} FROM user_meeting_integrations WHERE id = $1 FOR UPDATE"), &[&id])
        .await?
        .as_ref()
        .map(from_row))
}

/// Replaces both token ciphertexts of a row or retired copy (key rotation, envelope upgrade).
pub async fn rewrite_tokens(
    client: Sql<'_>,
    row: &IntegrationRow,
    access_token: &str,
    refresh_token: Option<&str>,
) -> Result<(), DbError> {
    match row.retired {
        None => {
            client
                .execute(
                    "UPDATE user_meeting_integrations SET access_token = $2, refresh_token = $3 WHERE id = $1",
                    &[&row.id, &access_token, &refresh_token],
                )
                .await?
        }
        Some(retired) => {
            client
                .execute(
                    "UPDATE meetingd.retired_integrations SET access_token = $2, refresh_token = $3 WHERE id = $1",
                    &[&retired, &access_token, &refresh_token],
                )
                .await?
        }
    };
    Ok(())
}

/// A page of retired copies after `after` (by their own id), for key rotation and the upgrade.
pub async fn page_retired(client: Sql<'_>, after: i64, limit: i64) -> Result<Vec<IntegrationRow>, DbError> {
    Ok(client
        .query(
            &format!("SELECT {RETIRED_COLUMNS} FROM meetingd.retired_integrations WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&after, &limit],
        )
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// Whether old-format token envelopes are refused everywhere (an upgrade pass found none left).
pub async fn legacy_refused(client: Sql<'_>) -> Result<bool, DbError> {
    let row = client.query_opt("SELECT legacy_refused_at IS NOT NULL FROM meetingd.token_format", &[]).await?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// Records that no row holds an old-format envelope any more: from now on none is opened.
pub async fn refuse_legacy(client: Sql<'_>) -> Result<(), DbError> {
    client
        .execute("UPDATE meetingd.token_format SET legacy_refused_at = now() WHERE legacy_refused_at IS NULL", &[])
        .await?;
    Ok(())
}

/// An integration as its provider sees it in the API (no token, not even its ciphertext).
pub struct Summary {
    pub platform: String,
    pub email: Option<String>,
    /// Active and holding a token.
    pub active: bool,
    /// Holding a token, active or not (a disconnected or deauthorized one holds none).
    pub has_token: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// Active, and its grant ends within its platform's warning window (`db::health`).
    pub expiring: bool,
    /// When its grant ends unless reconnected (or refreshed), on a platform with a known lifetime.
    pub ends_at: Option<DateTime<Utc>>,
}

/// The provider's integrations, by platform, with their grants' lifetimes (`lifetimes`).
pub async fn of_user(
    client: Sql<'_>,
    user_id: Uuid,
    lifetimes: &super::health::LifetimeParams,
) -> Result<Vec<Summary>, DbError> {
    use super::health::{EXPIRING, LIFETIME};
    let sql = format!(
        "SELECT i.platform, i.platform_user_email, COALESCE(i.is_active, false) AND i.access_token <> '', i.created_at,
                COALESCE(i.access_token, '') <> '', {EXPIRING}, l.ends_at
           FROM user_meeting_integrations i {LIFETIME}
          WHERE i.user_id = $5 ORDER BY i.platform"
    );
    let l = lifetimes;
    Ok(client
        .query(&sql, &[&l.platforms, &l.anchors, &l.length_secs, &l.warn_secs, &user_id])
        .await?
        .iter()
        .map(|r| {
            let active: bool = r.get(2);
            Summary {
                platform: r.get(0),
                email: r.get(1),
                active,
                created_at: r.get(3),
                has_token: r.get(4),
                expiring: active && r.get::<_, bool>(5),
                ends_at: r.get(6),
            }
        })
        .collect())
}

/// Marks the provider's integration inactive and wipes its tokens; `false` when there was none.
pub async fn disable(client: Sql<'_>, user_id: Uuid, platform: &str) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE user_meeting_integrations
                SET is_active = false, access_token = '', refresh_token = NULL, expires_at = NULL, updated_at = now()
              WHERE user_id = $1 AND platform = $2",
            &[&user_id, &platform],
        )
        .await?;
    Ok(n > 0)
}

/// What [`deauthorize`] changed: the integration rows that held the account (their users) and
/// the retired copies of it (their users), each only if it was still active or held a token.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deauthorized {
    /// Users whose current integration row was the account.
    pub integrations: Vec<Uuid>,
    /// Users of the retired copies of the account that were wiped.
    pub retired: Vec<Uuid>,
}

/// The platform revoked meetingd's access to the account `platform_user_id` (Zoom's App
/// Deauthorized): every integration row and retired copy of that account on `platform` is made
/// inactive and its tokens wiped. A row already inactive and empty is left alone, so a repeated
/// notification changes nothing. Call inside a transaction.
pub async fn deauthorize(
    client: Sql<'_>,
    platform: &str,
    platform_user_id: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Deauthorized, DbError> {
    // A row connected (again) after the deauthorization holds a new grant: left alone. A
    // refresh of the old grant, the only other write, cannot succeed after it.
    let integrations = client
        .query(
            "UPDATE user_meeting_integrations
                SET is_active = false, access_token = '', refresh_token = NULL, expires_at = NULL, updated_at = now()
              WHERE platform = $1 AND platform_user_id = $2
                AND (COALESCE(is_active, false) OR access_token <> '' OR refresh_token IS NOT NULL)
                AND ($3::timestamptz IS NULL OR updated_at IS NULL OR updated_at <= $3 + interval '30 seconds')
             RETURNING COALESCE(user_id, '00000000-0000-0000-0000-000000000000')",
            &[&platform, &platform_user_id, &at],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let retired = client
        .query(
            "UPDATE meetingd.retired_integrations
                SET is_active = false, access_token = '', refresh_token = NULL, expires_at = NULL
              WHERE platform = $1 AND platform_user_id = $2
                AND (is_active OR access_token <> '' OR refresh_token IS NOT NULL)
             RETURNING COALESCE(user_id, '00000000-0000-0000-0000-000000000000')",
            &[&platform, &platform_user_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Deauthorized { integrations, retired })
}

/// Re-arms the upcoming confirmed bookings of `providers` whose live meeting is on `platform`
/// (through `meetingd.touch_job`, which also wakes the daemons), so the worker moves them off an
/// account that can no longer be used; returns how many.
pub async fn rearm_meetings_of(client: Sql<'_>, providers: &[Uuid], platform: &str) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT count(meetingd.touch_job(b.id))
               FROM bookings b
               JOIN services s ON s.id = b.service_id
               JOIN meetingd.meetings m ON m.booking_id = b.id
              WHERE s.provider_id = ANY($1) AND b.status::text = 'confirmed' AND b.start_time > now()
                AND m.state = 'live' AND m.platform = $2",
            &[&providers, &platform],
        )
        .await?;
    Ok(row.get(0))
}
