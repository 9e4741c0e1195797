//! Admin operations on integrations and keys, for the `meetingd integrations` and `meetingd keys`
//! commands (and later the HTTP API's connect callback).
//!
//! Tokens arrive as `SecretString` and leave only as ciphertext; reports never contain them.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::crypto::{Column, Keyring};
use crate::db::jobs::{AuditEntry, insert_audit};
use crate::db::{DbError, integrations};
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
    tx: &tokio_postgres::Transaction<'_>,
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

/// Marks an integration inactive and wipes its tokens. `false` when there was none.
pub async fn disable_integration(
    client: &mut tokio_postgres::Client,
    actor: &str,
    user_id: Uuid,
    platform: Platform,
) -> Result<bool, DbError> {
    let tx = client.transaction().await?;
    let n = tx
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
        insert_audit(&tx, actor, None, Some(user_id), None, &entry).await?;
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
pub async fn rotate_keys(
    client: &mut tokio_postgres::Client,
    keyring: &Keyring,
    batch: i64,
) -> Result<Rotation, DbError> {
    let mut report = Rotation::default();
    let mut after = Uuid::nil();
    loop {
        let page = integrations::page(&*client, after, batch).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            let stale = |t: &str| !t.is_empty() && !keyring.is_current(t);
            if !stale(&row.access_token) && !row.refresh_token.as_deref().is_some_and(stale) {
                report.already_current += 1;
                continue;
            }
            let tx = client.transaction().await?;
            let Some(row) = integrations::lock_by_id(&tx, row.id).await? else { continue };
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
                    integrations::rewrite_tokens(&tx, row.id, &access, refresh.as_deref()).await?;
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
