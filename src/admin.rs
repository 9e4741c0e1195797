//! Admin operations: storing and disabling integrations (for `meetingd integrations` and the
//! HTTP API's connect callback and disconnect), key rotation, `status`, `bookings show/retry`.
//!
//! Tokens arrive as `SecretString` and leave only as ciphertext; reports never contain them. It
//! holds no SQL: statements are `db`'s (`integrations`, `bookings`, `requeue`, `status`, `audit`).

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::crypto::{Column, Keyring};
use crate::db::audit::{self, insert_audit};
use crate::db::{DbError, Session, Sql, Tx, bookings, integrations, requeue, status};
use crate::job::AuditEntry;
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
    let disabled = integrations::disable(tx.sql(), user_id, platform.as_str()).await?;
    if disabled {
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
    Ok(disabled)
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
    let online = bookings::is_online(client, booking).await?;
    let has_job = requeue::has_job(client, booking).await?;
    if !(has_job || online == Some(true)) {
        return Ok(false);
    }
    requeue::touch_job(client, booking).await?;
    Ok(true)
}

/// The queue and what needs attention, for `meetingd status`.
pub struct Status {
    pub queue: status::Queue,
    pub needs_reconnect: Vec<status::NeedsReconnect>,
    pub recent_failures: Vec<status::Failure>,
    /// Meetings out of meetingd's reach, newest first.
    pub orphans: Vec<status::Orphan>,
    pub orphan_count: i64,
}

pub async fn status(client: Sql<'_>) -> Result<Status, DbError> {
    Ok(Status {
        queue: status::queue(client).await?,
        needs_reconnect: status::needs_reconnect(client).await?,
        recent_failures: status::recent_failures(client).await?,
        orphans: status::recent_orphans(client).await?,
        orphan_count: status::orphan_count(client).await?,
    })
}

/// A booking's meeting state and audit trail, as lines for `meetingd bookings show`.
pub async fn show_booking(client: Sql<'_>, booking: Uuid) -> Result<Option<Vec<String>>, DbError> {
    let Some(b) = bookings::report(client, booking).await? else {
        return Ok(None);
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let time = |v: Option<DateTime<Utc>>| {
        v.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "-".into())
    };
    let mut out = vec![
        format!("booking   {booking}: {} from {} to {}", b.status, time(b.start), time(b.end)),
        format!(
            "service   {} ({}, platform {}), provider {}",
            b.service_title,
            if b.service_online.unwrap_or(false) { "online" } else { "in person" },
            opt(b.service_platform),
            b.provider_id
        ),
        format!(
            "meeting   status {}, platform {}, id {}, link {}",
            opt(b.meeting_status),
            opt(b.meeting_platform),
            opt(b.meeting_id),
            opt(b.meeting_link)
        ),
    ];
    if let Some(error) = b.meeting_error {
        out.push(format!("error     {error}"));
    }
    match b.job {
        None => out.push("job       none (meetingd never had work for this booking)".into()),
        Some(j) => out.push(format!(
            "job       {}, change #{}, attempt {}, next run {}, lease until {}{}",
            j.state,
            j.version,
            j.attempts,
            time(j.run_at),
            time(j.lease_until),
            j.last_error.map(|e| format!(", last error: {e}")).unwrap_or_default()
        )),
    }
    if let Some(m) = b.meeting {
        out.push(format!(
            "recorded  {} meeting {} (generation {}, {}), starts {}",
            m.platform,
            m.external_id,
            m.generation,
            m.state,
            time(m.start)
        ));
    }
    out.push("audit trail:".into());
    for r in audit::trail(client, booking).await? {
        out.push(format!(
            "  {}  {:<16} {:<12} {:<7} attempt {:<2} {:>6} ms  {}  ({})",
            time(r.at),
            r.action,
            r.platform,
            r.outcome,
            r.attempt.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            r.duration_ms.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            r.detail,
            r.actor,
        ));
    }
    Ok(Some(out))
}
