//! Admin operations on integrations and keys, for the `meetingd integrations` and `meetingd keys`
//! commands (and later the HTTP API's connect callback).
//!
//! Tokens arrive as `SecretString` and leave only as ciphertext; reports never contain them.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::crypto::{Column, Keyring};
use crate::db::jobs::{AuditEntry, insert_audit};
use crate::db::{DbError, Session, Sql, Tx, integrations};
use crate::providers::Platform;

/// A connection to store.
pub struct NewIntegration {
    pub user_id: Uuid,
    pub platform: Platform,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    pub platform_user_id: Option<String>,
    pub email: Option<String>,
}

/// Stores (or replaces) a provider's connection, encrypted, active, in the caller's transaction
/// (the caller commits); returns the row id.
pub async fn store_integration(
    tx: Sql<'_>,
    keyring: &Keyring,
    actor: &str,
    new: &NewIntegration,
) -> Result<Uuid, DbError> {
    let id = integrations::lock_or_create(tx, new.user_id, new.platform.as_str()).await?;
    let access = keyring.encrypt(&new.access_token, id, Column::AccessToken);
    let refresh = new.refresh_token.as_ref().map(|t| keyring.encrypt(t, id, Column::RefreshToken));
    integrations::connect(
        tx,
        id,
        &integrations::Connected {
            access_token: &access,
            refresh_token: refresh.as_deref(),
            expires_at: new.expires_at,
            scopes: &new.scopes,
            platform_user_id: new.platform_user_id.as_deref(),
            email: new.email.as_deref(),
        },
    )
    .await?;
    let entry = AuditEntry {
        action: "integration.connect",
        platform: Some(new.platform.as_str().into()),
        outcome: "ok",
        duration_ms: None,
        detail: new.email.as_ref().map(|e| format!("account {e}")),
    };
    insert_audit(tx, actor, None, Some(new.user_id), None, &entry).await?;
    Ok(id)
}

/// Marks an integration inactive and wipes its tokens, and commits `tx`. `false` when there was none.
pub async fn disable_integration(tx: Tx<'_>, actor: &str, user_id: Uuid, platform: Platform) -> Result<bool, DbError> {
    let n = tx
        .sql()
        .execute(
            "UPDATE user_meeting_integrations
                SET is_active = false, access_token = '', refresh_token = NULL, expires_at = NULL, updated_at = now()
              WHERE user_id = $1 AND platform = $2",
            &[&user_id, &platform.as_str()],
        )
        .await?;
    if n > 0 {
        let entry = AuditEntry {
            action: "integration.disable",
            platform: Some(platform.as_str().into()),
            outcome: "ok",
            duration_ms: None,
            detail: Some("tokens wiped".into()),
        };
        insert_audit(tx.sql(), actor, None, Some(user_id), None, &entry).await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

/// What a key rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub rotated: usize,
    pub already_current: usize,
    /// Rows whose tokens could not be decrypted with any configured key (id, reason).
    pub failed: Vec<(Uuid, String)>,
}

/// Re-encrypts every stored token with the current key, `batch` rows at a time. Each row is
/// rewritten under the same row lock a token refresh takes, so daemons may keep running.
pub async fn rotate_keys(client: &mut Session, keyring: &Keyring, batch: i64) -> Result<Rotation, DbError> {
    let mut report = Rotation::default();
    let mut after = Uuid::nil();
    loop {
        let page = integrations::page(client.sql(), after, batch).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            let stale = |t: &str| !t.is_empty() && !keyring.is_current(t);
            if !stale(&row.access_token) && !row.refresh_token.as_deref().is_some_and(stale) {
                report.already_current += 1;
                continue;
            }
            let tx = client.transaction().await?;
            let Some(row) = integrations::lock_by_id(tx.sql(), row.id).await? else { continue };
            let reseal = |stored: &str, column| -> Result<String, String> {
                if stored.is_empty() || keyring.is_current(stored) {
                    return Ok(stored.to_string());
                }
                let plain = keyring.decrypt(stored, row.id, column).map_err(|e| e.to_string())?;
                Ok(keyring.encrypt(&plain, row.id, column))
            };
            let access = reseal(&row.access_token, Column::AccessToken);
            let refresh = row.refresh_token.as_deref().map(|t| reseal(t, Column::RefreshToken)).transpose();
            match (access, refresh) {
                (Ok(access), Ok(refresh)) => {
                    integrations::rewrite_tokens(tx.sql(), row.id, &access, refresh.as_deref()).await?;
                    tx.commit().await?;
                    report.rotated += 1;
                }
                (Err(e), _) | (_, Err(e)) => {
                    tx.rollback().await?;
                    report.failed.push((row.id, e));
                }
            }
        }
    }
    Ok(report)
}

/// Re-queues one booking's job (a new attempt series, now). `false` if meetingd has no job for it
/// and the booking is not of an online service.
pub async fn retry_booking(client: Sql<'_>, booking: Uuid) -> Result<bool, DbError> {
    let online: Option<bool> = client
        .query_opt(
            "SELECT COALESCE(s.is_online, false) FROM bookings b JOIN services s ON s.id = b.service_id WHERE b.id = $1",
            &[&booking],
        )
        .await?
        .map(|r| r.get(0));
    let has_job = client.query_opt("SELECT 1 FROM meetingd.jobs WHERE booking_id = $1", &[&booking]).await?.is_some();
    if !(has_job || online == Some(true)) {
        return Ok(false);
    }
    client.query_one("SELECT meetingd.touch_job($1)", &[&booking]).await?;
    Ok(true)
}

/// Re-queues every failed job; returns how many.
pub async fn retry_all_failed(client: Sql<'_>) -> Result<u64, DbError> {
    let n = client
        .execute(
            "UPDATE meetingd.jobs SET state = 'pending', run_at = now(), attempts = 0, write_failures = 0, last_error = NULL, updated_at = now()
              WHERE state = 'failed'",
            &[],
        )
        .await?;
    if n > 0 {
        client.execute("SELECT pg_notify('meetingd', '0')", &[]).await?;
    }
    Ok(n)
}

/// An integration waiting for its provider: user, platform, account e-mail, since.
pub type NeedsReconnect = (Uuid, String, Option<String>, Option<DateTime<Utc>>);

/// The queue and what needs attention, for `meetingd status`.
pub struct Status {
    pub pending: i64,
    pub due_now: i64,
    pub oldest_due_secs: f64,
    pub leased: i64,
    pub failed: i64,
    pub done: i64,
    pub listening_daemons: i64,
    pub needs_reconnect: Vec<NeedsReconnect>,
    pub recent_failures: Vec<(Uuid, DateTime<Utc>, String)>,
    pub notification_queue_usage: f64,
    /// Meetings out of meetingd's reach, newest first: (booking, platform, meeting id, found, reason).
    pub orphans: Vec<(Uuid, String, String, DateTime<Utc>, String)>,
    pub orphan_count: i64,
}

pub async fn status(client: Sql<'_>) -> Result<Status, DbError> {
    let q = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'pending' AND run_at <= now() AND (lease_until IS NULL OR lease_until < now())),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()
                                     AND (lease_until IS NULL OR lease_until < now()))), 0)::float8,
                    count(*) FILTER (WHERE state = 'pending' AND lease_until >= now()),
                    count(*) FILTER (WHERE state = 'failed'),
                    count(*) FILTER (WHERE state = 'done'),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN meetingd%'),
                    pg_notification_queue_usage()
               FROM meetingd.jobs",
            &[],
        )
        .await?;
    let needs_reconnect = client
        .query(
            "SELECT user_id, platform, platform_user_email, updated_at FROM user_meeting_integrations
              WHERE is_active IS NOT TRUE AND access_token <> '' ORDER BY updated_at DESC LIMIT 20",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let recent_failures = client
        .query(
            "SELECT booking_id, updated_at, COALESCE(last_error, '') FROM meetingd.jobs
              WHERE state = 'failed' ORDER BY updated_at DESC LIMIT 10",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let orphans = client
        .query(
            "SELECT booking_id, platform, external_id, found_at, reason FROM meetingd.orphaned_meetings
              ORDER BY found_at DESC LIMIT 10",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let orphan_count = client.query_one("SELECT count(*) FROM meetingd.orphaned_meetings", &[]).await?.get(0);
    Ok(Status {
        orphans,
        orphan_count,
        pending: q.get(0),
        due_now: q.get(1),
        oldest_due_secs: q.get(2),
        leased: q.get(3),
        failed: q.get(4),
        done: q.get(5),
        listening_daemons: q.get(6),
        notification_queue_usage: q.get(7),
        needs_reconnect,
        recent_failures,
    })
}

/// A booking's meeting state and audit trail, as lines for `meetingd bookings show`.
pub async fn show_booking(client: Sql<'_>, booking: Uuid) -> Result<Option<Vec<String>>, DbError> {
    let Some(b) = client
        .query_opt(
            "SELECT b.status, b.start_time, b.end_time, s.title, s.is_online, s.meeting_platform, s.provider_id,
                    b.meeting_status, b.meeting_platform, b.meeting_id, b.meeting_link, b.meeting_error,
                    j.state, j.version, j.attempts, j.run_at, j.lease_until, j.last_error,
                    m.platform, m.external_id, m.generation, m.state, m.start_time
               FROM bookings b JOIN services s ON s.id = b.service_id
               LEFT JOIN meetingd.jobs j ON j.booking_id = b.id
               LEFT JOIN meetingd.meetings m ON m.booking_id = b.id
              WHERE b.id = $1",
            &[&booking],
        )
        .await?
    else {
        return Ok(None);
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let time = |v: Option<DateTime<Utc>>| {
        v.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "-".into())
    };
    let mut out = vec![
        format!("booking   {booking}: {} from {} to {}", b.get::<_, String>(0), time(b.get(1)), time(b.get(2))),
        format!(
            "service   {} ({}, platform {}), provider {}",
            b.get::<_, String>(3),
            if b.get::<_, Option<bool>>(4).unwrap_or(false) { "online" } else { "in person" },
            opt(b.get(5)),
            b.get::<_, uuid::Uuid>(6)
        ),
        format!(
            "meeting   status {}, platform {}, id {}, link {}",
            opt(b.get(7)),
            opt(b.get(8)),
            opt(b.get(9)),
            opt(b.get(10))
        ),
    ];
    if let Some(error) = b.get::<_, Option<String>>(11) {
        out.push(format!("error     {error}"));
    }
    match b.get::<_, Option<String>>(12) {
        None => out.push("job       none (meetingd never had work for this booking)".into()),
        Some(state) => out.push(format!(
            "job       {state}, change #{}, attempt {}, next run {}, lease until {}{}",
            b.get::<_, i64>(13),
            b.get::<_, i32>(14),
            time(b.get(15)),
            time(b.get(16)),
            b.get::<_, Option<String>>(17).map(|e| format!(", last error: {e}")).unwrap_or_default()
        )),
    }
    if let Some(platform) = b.get::<_, Option<String>>(18) {
        out.push(format!(
            "recorded  {platform} meeting {} (generation {}, {}), starts {}",
            b.get::<_, String>(19),
            b.get::<_, i32>(20),
            b.get::<_, String>(21),
            time(b.get(22))
        ));
    }
    out.push("audit trail:".into());
    for r in client
        .query(
            "SELECT at, actor, action, COALESCE(platform, '-'), outcome, attempt, duration_ms, COALESCE(detail, '')
               FROM meetingd.audit_log WHERE booking_id = $1 ORDER BY id",
            &[&booking],
        )
        .await?
    {
        out.push(format!(
            "  {}  {:<16} {:<12} {:<7} attempt {:<2} {:>6} ms  {}  ({})",
            time(r.get(0)),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, Option<i32>>(5).map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            r.get::<_, Option<i32>>(6).map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            r.get::<_, String>(7),
            r.get::<_, String>(1),
        ));
    }
    Ok(Some(out))
}
