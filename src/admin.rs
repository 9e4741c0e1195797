//! Admin operations: storing and disabling integrations (for `meetingd integrations` and the
//! HTTP API's connect callback and disconnect), key rotation and the token-envelope upgrade,
//! `status`, `bookings show/retry`.
//!
//! Tokens arrive as `SecretString` and leave only as ciphertext; reports never contain them. It
//! holds no SQL: statements are `db`'s (`integrations`, `bookings`, `requeue`, `status`, `audit`).

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::crypto::{Column, CryptoError, Keyring, Owner};
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
    let owner = Owner { user_id: new.user_id, platform: new.platform.as_str() };
    let access = keyring.encrypt(&new.access_token, id, Column::AccessToken(owner));
    let refresh = new.refresh_token.as_ref().map(|t| keyring.encrypt(t, id, Column::RefreshToken(owner)));
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
    // A new grant: its known lifetime (if any) starts now.
    crate::db::health::consented(tx, id).await?;
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

/// What a key rotation or an envelope upgrade did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Rows and retired copies re-encrypted.
    pub rotated: usize,
    pub already_current: usize,
    /// Of `rotated`, those that held an old-format envelope, now bound to their owner.
    pub upgraded: usize,
    /// Rows whose tokens could not be re-encrypted (integration id, reason).
    pub failed: Vec<(Uuid, String)>,
    /// Whether old-format envelopes are refused from now on (no row holds one any more).
    pub legacy_refused: bool,
}

/// Which envelopes a pass re-encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reseal {
    /// Every one not in the current format under the current key (`meetingd keys rotate`).
    Stale,
    /// Old-format ones only (start-up and `meetingd migrate`).
    Legacy,
}

/// Re-encrypts every stored token (integration rows and their retired copies) with the current
/// key and format, `batch` rows at a time. Each row is rewritten under the same row lock a token
/// refresh takes, so daemons may keep running.
pub async fn rotate_keys(client: &mut Session, keyring: &Keyring, batch: i64) -> Result<Rotation, DbError> {
    reseal(client, keyring, batch, Reseal::Stale).await
}

/// Re-encrypts every old-format envelope bound to its owner (the row's user and platform as
/// stored now), unless a pass already found none left: then it costs one query. Safe to run from
/// several daemons at once (row locks, re-read after locking) and idempotent.
pub async fn upgrade_envelopes(client: &mut Session, keyring: &Keyring) -> Result<Rotation, DbError> {
    if integrations::legacy_refused(client.sql()).await? {
        return Ok(Rotation { legacy_refused: true, ..Rotation::default() });
    }
    reseal(client, keyring, 500, Reseal::Legacy).await
}

/// [`upgrade_envelopes`] on a connection of its own, logged: the daemon runs it at start-up,
/// before anything reads a token.
pub async fn upgrade_envelopes_at_start(db: &crate::config::DatabaseConfig, keyring: &Keyring) -> Result<(), DbError> {
    let mut session = crate::db::session(db).await?;
    let report = upgrade_envelopes(&mut session, keyring).await?;
    if report.upgraded > 0 {
        tracing::info!(upgraded = report.upgraded, "old-format token envelopes re-encrypted, bound to their owner");
    }
    for (id, reason) in &report.failed {
        tracing::warn!(integration_id = %id, reason = %reason, "stored tokens could not be re-encrypted");
    }
    if !report.legacy_refused {
        tracing::warn!(
            "old-format token envelopes remain (their key is not configured): add it to encryption.old_keys and run `meetingd keys rotate`"
        );
    }
    Ok(())
}

async fn reseal(client: &mut Session, keyring: &Keyring, batch: i64, mode: Reseal) -> Result<Rotation, DbError> {
    let refused = integrations::legacy_refused(client.sql()).await?;
    let mut pass = Pass { keyring, mode, refused, report: Rotation::default(), legacy_left: 0 };
    let mut after = Uuid::nil();
    loop {
        let page = integrations::page(client.sql(), after, batch).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            if pass.skips(&row) {
                continue;
            }
            let tx = client.transaction().await?;
            let Some(row) = integrations::lock_by_id(tx.sql(), row.id).await? else { continue };
            pass.rewrite(tx, &row).await?;
        }
    }
    let mut after = 0;
    loop {
        let page = integrations::page_retired(client.sql(), after, batch).await?;
        let Some(last) = page.last() else { break };
        after = last.retired.unwrap_or(i64::MAX);
        for row in page {
            if pass.skips(&row) {
                continue;
            }
            let tx = client.transaction().await?;
            let Some(row) = integrations::load_retired(tx.sql(), row.retired.unwrap_or_default(), true).await? else {
                continue;
            };
            pass.rewrite(tx, &row).await?;
        }
    }
    // An old-format envelope under a key that is not configured may still be opened once the
    // key is added; any other one that is left will never open. Until none of the first kind
    // is left, the next pass looks again.
    if !refused && pass.legacy_left == 0 {
        integrations::refuse_legacy(client.sql()).await?;
    }
    pass.report.legacy_refused = refused || pass.legacy_left == 0;
    Ok(pass.report)
}

/// One pass over the stored tokens.
struct Pass<'k> {
    keyring: &'k Keyring,
    mode: Reseal,
    /// Old-format envelopes are refused (the marker was set before this pass).
    refused: bool,
    report: Rotation,
    /// Old-format envelopes left because their key is not configured.
    legacy_left: usize,
}

impl Pass<'_> {
    fn stale(&self, stored: &str) -> bool {
        !stored.is_empty()
            && match self.mode {
                Reseal::Stale => !self.keyring.is_current(stored),
                Reseal::Legacy => Keyring::is_legacy(stored),
            }
    }

    /// Whether the row (as read without a lock) needs nothing; counted as current.
    fn skips(&mut self, row: &integrations::IntegrationRow) -> bool {
        let skip = !self.stale(&row.access_token) && !row.refresh_token.as_deref().is_some_and(|t| self.stale(t));
        if skip {
            self.report.already_current += 1;
        }
        skip
    }

    /// The value re-encrypted for the row's owner, or as it is.
    fn reseal(&self, stored: &str, row: &integrations::IntegrationRow, column: Column) -> Result<String, CryptoError> {
        if !self.stale(stored) {
            return Ok(stored.to_string());
        }
        let plain = if Keyring::is_legacy(stored) {
            if self.refused {
                return Err(CryptoError::Legacy);
            }
            self.keyring.decrypt_legacy(stored, row.id, column)?
        } else {
            self.keyring.decrypt(stored, row.id, column)?
        };
        Ok(self.keyring.encrypt(&plain, row.id, column))
    }

    /// Rewrites the locked row (re-read under the lock) in `tx`, and commits.
    async fn rewrite(&mut self, tx: Tx<'_>, row: &integrations::IntegrationRow) -> Result<(), DbError> {
        let legacy =
            Keyring::is_legacy(&row.access_token) || row.refresh_token.as_deref().is_some_and(Keyring::is_legacy);
        let access = self.reseal(&row.access_token, row, Column::AccessToken(row.owner()));
        let refresh =
            row.refresh_token.as_deref().map(|t| self.reseal(t, row, Column::RefreshToken(row.owner()))).transpose();
        match (access, refresh) {
            (Ok(access), Ok(refresh)) if access == row.access_token && refresh == row.refresh_token => {
                // Another daemon's pass (or a refresh) got there first.
                tx.commit().await?;
                self.report.already_current += 1;
            }
            (Ok(access), Ok(refresh)) => {
                integrations::rewrite_tokens(tx.sql(), row, &access, refresh.as_deref()).await?;
                tx.commit().await?;
                self.report.rotated += 1;
                if legacy {
                    self.report.upgraded += 1;
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tx.rollback().await?;
                if legacy && matches!(e, CryptoError::UnknownKey(_)) {
                    self.legacy_left += 1;
                }
                let reason = match row.retired {
                    None => e.to_string(),
                    Some(copy) => format!("retired copy {copy}: {e}"),
                };
                self.report.failed.push((row.id, reason));
            }
        }
        Ok(())
    }
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
    /// Connections whose grant ends soon, soonest first.
    pub expiring: Vec<crate::db::health::Expiring>,
    pub recent_failures: Vec<status::Failure>,
    /// Meetings out of meetingd's reach, newest first.
    pub orphans: Vec<status::Orphan>,
    pub orphan_count: i64,
    /// Webhook deliveries (`[webhooks]`).
    pub webhooks: status::Webhooks,
}

/// `lifetimes`: the platforms' grant lifetimes (`monitor::Lifetimes`), for the expiring connections.
pub async fn status(client: Sql<'_>, lifetimes: &crate::db::health::LifetimeParams) -> Result<Status, DbError> {
    Ok(Status {
        queue: status::queue(client).await?,
        needs_reconnect: status::needs_reconnect(client).await?,
        expiring: crate::db::health::expiring(client, lifetimes).await?,
        recent_failures: status::recent_failures(client).await?,
        orphans: status::recent_orphans(client).await?,
        orphan_count: status::orphan_count(client).await?,
        webhooks: status::webhooks(client).await?,
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
