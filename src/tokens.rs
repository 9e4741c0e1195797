//! Access tokens for a provider's connected account: decrypt, refresh when due, save.
//!
//! A refresh happens under `SELECT … FOR UPDATE` on the integration row, re-reading the row after
//! taking the lock, and saves the new ciphertext in the same transaction: two daemons (or two jobs)
//! that need a refresh at once make one refresh, and a platform that rotates refresh tokens never
//! sees the dead one again. This is the one place a transaction stays open across an HTTP call; the
//! call is bounded by the OAuth client's timeout and the pool's `lock_timeout`.
//!
//! Plaintext tokens exist only as `SecretString` in memory; nothing here logs one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::crypto::{Column, CryptoError, Keyring};
use crate::db::audit::{insert_audit, insert_event};
use crate::db::{DbError, Pool, health, integrations};
use crate::job::{AuditEntry, Event};
use crate::oauth::{OAuthClient, OAuthError};
use crate::providers::{Account, Platform};

/// Refresh an access token that expires within this margin.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Assumed lifetime when the token endpoint does not say (Google's is 3600 s).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the provider has not connected {}", .0.display_name())]
    NotConnected(Platform),
    /// The account a meeting was made in is neither connected nor kept any more.
    #[error("the {} account the meeting was made in is no longer connected", .0.display_name())]
    AccountGone(Platform),
    #[error("{name} access was revoked or has expired: the provider must reconnect {name}", name = .0.display_name())]
    Revoked(Platform),
    /// The provider connected another account while this one was being used; tried again, the
    /// account is found where it is kept now.
    #[error("the provider connected another {} account meanwhile; trying again", .0.display_name())]
    Changed(Platform),
    #[error("the stored {name} token cannot be used ({1}); the provider must reconnect {name}", name = .0.display_name())]
    Unreadable(Platform, CryptoError),
    #[error(transparent)]
    OAuth(OAuthError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for TokenError {
    fn from(e: tokio_postgres::Error) -> Self {
        TokenError::Db(DbError::Query(e))
    }
}

impl From<deadpool_postgres::PoolError> for TokenError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        TokenError::Db(DbError::Pool(e))
    }
}

/// How long an integration row read by a job's claim confirmation stands in for reading it again.
const PRIMED_FOR: Duration = Duration::from_secs(1);

/// Tokens of every provider, for every platform that uses OAuth.
pub struct TokenStore {
    pool: Pool,
    keyring: Arc<Keyring>,
    actor: String,
    /// Integration rows read moments ago (with a job's claim confirmation, in the same round
    /// trip), by user and platform: the first read of a token uses one instead of reading again.
    primed: Mutex<HashMap<(Uuid, String), (Instant, integrations::IntegrationRow)>>,
}

impl TokenStore {
    pub fn new(pool: Pool, keyring: Arc<Keyring>, actor: String) -> TokenStore {
        TokenStore { pool, keyring, actor, primed: Mutex::new(HashMap::new()) }
    }

    /// Keeps `row`, just read, for the token reads of the next [`PRIMED_FOR`].
    pub fn prime(&self, row: integrations::IntegrationRow) {
        let mut primed = self.primed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if primed.len() >= 1024 {
            primed.retain(|_, (at, _)| now.duration_since(*at) < PRIMED_FOR);
        }
        primed.insert((row.user_id, row.platform.clone()), (now, row));
    }

    /// The row primed for `user` on `platform`, if it is recent enough.
    fn primed(&self, user: Uuid, platform: Platform) -> Option<integrations::IntegrationRow> {
        let primed = self.primed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (at, row) = primed.get(&(user, platform.as_str().to_string()))?;
        (at.elapsed() < PRIMED_FOR).then(|| row.clone())
    }

    /// Forgets the row primed for `user` on `platform`: its tokens are being replaced or wiped.
    fn forget(&self, user: Uuid, platform: Platform) {
        let mut primed = self.primed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        primed.remove(&(user, platform.as_str().to_string()));
    }

    /// A usable access token for the account `whose` names on `platform`, and that account.
    /// `refused` is a token the platform just answered 401 to: it forces a refresh unless another
    /// holder already replaced it.
    ///
    /// [`Whose::Account`] acts in exactly the account a meeting was made in: the provider's
    /// integration row while it still is that account, else the copy meetingd kept when the row
    /// was deleted or reconnected to another account, else [`TokenError::AccountGone`].
    pub async fn access_token(
        &self,
        whose: Whose<'_>,
        platform: Platform,
        oauth: &OAuthClient,
        refused: Option<&SecretString>,
    ) -> Result<(SecretString, Account), TokenError> {
        // A row primed moments ago, still the account wanted, with a usable token: no read.
        let user = match whose {
            Whose::Provider(user) => user,
            Whose::Account(account) => account.user_id,
        };
        if refused.is_none()
            && let Some(row) = self.primed(user, platform)
            && row.is_active
            && match whose {
                Whose::Provider(_) => true,
                Whose::Account(account) => is_account(&row, account),
            }
        {
            let access = self.decrypt(&row.access_token, &row, Column::AccessToken(row.owner()), platform)?;
            if usable(&row, &access, None) {
                return Ok((access, account_of(&row)));
            }
        }
        let mut client = self.pool.get().await?;
        // The row read here is the one used: a reconnect between two reads cannot put another
        // account's token on this account's meeting.
        let (user, retired, current) = match whose {
            Whose::Provider(user) => (user, None, None),
            Whose::Account(account) => {
                let current = integrations::load(client.sql(), account.user_id, platform.as_str(), false).await?;
                match current {
                    Some(row) if is_account(&row, account) => (account.user_id, None, Some(row)),
                    _ => {
                        match integrations::find_retired(
                            client.sql(),
                            account.integration_id,
                            account.identity.as_deref(),
                        )
                        .await?
                        {
                            Some(id) => (account.user_id, Some(id), None),
                            None => return Err(TokenError::AccountGone(platform)),
                        }
                    }
                }
            }
        };
        let row = match current {
            Some(row) => row,
            None => {
                load(client.sql(), user, retired, platform, false).await?.ok_or(TokenError::NotConnected(platform))?
            }
        };
        if !row.is_active {
            return Err(TokenError::Revoked(platform));
        }
        let access = self.decrypt(&row.access_token, &row, Column::AccessToken(row.owner()), platform)?;
        if usable(&row, &access, refused) {
            return Ok((access, account_of(&row)));
        }

        self.forget(user, platform);
        let tx = client.transaction().await?;
        let row = load(tx.sql(), user, retired, platform, true).await?.ok_or(TokenError::NotConnected(platform))?;
        if let Whose::Account(account) = whose
            && retired.is_none()
            && !is_account(&row, account)
        {
            // Reconnected to another account since the first read: the meeting's account is
            // now a retired copy, which the next attempt finds.
            return Err(TokenError::Changed(platform));
        }
        if !row.is_active {
            return Err(TokenError::Revoked(platform));
        }
        let access = self.decrypt(&row.access_token, &row, Column::AccessToken(row.owner()), platform)?;
        if usable(&row, &access, refused) {
            // Another daemon refreshed while this one waited for the lock.
            tx.commit().await?;
            return Ok((access, account_of(&row)));
        }
        let Some(stored_refresh) = row.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(self.revoke(tx, &row, platform, "no refresh token stored").await);
        };
        let refresh = self.decrypt(stored_refresh, &row, Column::RefreshToken(row.owner()), platform)?;
        let started = std::time::Instant::now();
        match oauth.refresh(&refresh).await {
            Ok(fresh) => {
                let lifetime = fresh.expires_in.unwrap_or(DEFAULT_LIFETIME);
                let expires_at =
                    Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
                let access_ct = self.keyring.encrypt(&fresh.access_token, row.id, Column::AccessToken(row.owner()));
                let refresh_ct = fresh
                    .refresh_token
                    .as_ref()
                    .map(|t| self.keyring.encrypt(t, row.id, Column::RefreshToken(row.owner())));
                integrations::save_tokens(tx.sql(), &row, &access_ct, refresh_ct.as_deref(), Some(expires_at)).await?;
                if row.retired.is_none() {
                    // A refresh starts a grant's idle lifetime again (Microsoft, Zoom): the monitor's clock.
                    health::refreshed(tx.sql(), row.id).await?;
                }
                let rotated = if fresh.refresh_token.is_some() { "; refresh token rotated" } else { "" };
                let entry = audit(
                    "integration.refresh",
                    platform,
                    "ok",
                    Some(format!("expires in {} s{rotated}", lifetime.as_secs())),
                );
                insert_audit(tx.sql(), &self.actor, None, Some(user), None, &with_duration(entry, started)).await?;
                tx.commit().await?;
                metrics::counter!(crate::metrics::TOKEN_REFRESHES, "platform" => platform.as_str(), "outcome" => "ok")
                    .increment(1);
                tracing::info!(user_id = %user, platform = %platform, duration_ms = started.elapsed().as_millis() as u64, "access token refreshed");
                Ok((fresh.access_token, account_of(&row)))
            }
            Err(OAuthError::Revoked) => {
                Err(self.revoke(tx, &row, platform, "the token endpoint answered invalid_grant").await)
            }
            Err(e) => {
                drop(tx);
                tracing::warn!(user_id = %user, platform = %platform, error = %e, "token refresh failed");
                Err(TokenError::OAuth(e))
            }
        }
    }

    /// A token of `row`, bound to the row's id and its owner (user and platform) as stored.
    fn decrypt(
        &self,
        stored: &str,
        row: &integrations::IntegrationRow,
        column: Column,
        platform: Platform,
    ) -> Result<SecretString, TokenError> {
        self.keyring.decrypt(stored, row.id, column).map_err(|e| {
            tracing::error!(integration_id = %row.id, platform = %platform, error = %e, "stored token cannot be decrypted");
            TokenError::Unreadable(platform, e)
        })
    }

    /// Marks the integration as needing a reconnect and tells the provider, in the lock's transaction.
    async fn revoke(
        &self,
        tx: crate::db::Tx<'_>,
        row: &integrations::IntegrationRow,
        platform: Platform,
        why: &str,
    ) -> TokenError {
        let result = async {
            integrations::deactivate(tx.sql(), row).await?;
            let message = format!(
                "{} access was revoked or has expired. Reconnect {} under Integrations; until then bookings get the fallback meeting platform.",
                platform.display_name(),
                platform.display_name()
            );
            // A retired copy is an account the provider already left: nothing to reconnect.
            if row.retired.is_none() {
                let event =
                    Event { kind: "integration_needs_reconnect", platform: Some(platform.as_str().into()), message };
                insert_event(tx.sql(), &event, Some(row.user_id), None).await?;
            }
            insert_audit(tx.sql(), &self.actor, None, Some(row.user_id), None, &audit("integration.deactivate", platform, "ok", Some(why.into())))
                .await?;
            tx.commit().await?;
            Ok::<_, TokenError>(())
        }
        .await;
        tracing::warn!(
            user_id = %row.user_id, platform = %platform, reason = why,
            "provider {} must reconnect {}: integration marked inactive", row.user_id, platform.display_name()
        );
        match result {
            Ok(()) => TokenError::Revoked(platform),
            Err(e) => e,
        }
    }
}

/// The provider's integration row, or the retired copy `retired`.
async fn load(
    client: crate::db::Sql<'_>,
    user: Uuid,
    retired: Option<i64>,
    platform: Platform,
    lock: bool,
) -> Result<Option<integrations::IntegrationRow>, DbError> {
    match retired {
        None => integrations::load(client, user, platform.as_str(), lock).await,
        Some(id) => integrations::load_retired(client, id, lock).await,
    }
}

/// Whose account a platform call acts in.
#[derive(Debug, Clone, Copy)]
pub enum Whose<'a> {
    /// The provider's connected account, whichever it is now (a new meeting).
    Provider(Uuid),
    /// Exactly the account an existing meeting lives in.
    Account(&'a Account),
}

fn account_of(row: &integrations::IntegrationRow) -> Account {
    Account { user_id: row.user_id, integration_id: row.id, identity: row.identity.clone() }
}

/// Whether `row` is still `account`: the same row, connected to the same identity.
fn is_account(row: &integrations::IntegrationRow, account: &Account) -> bool {
    row.id == account.integration_id && same_identity(row, account)
}

/// An unknown identity on either side (recorded before identities were, or never told by the
/// platform) does not count as another account.
fn same_identity(row: &integrations::IntegrationRow, account: &Account) -> bool {
    match (&row.identity, &account.identity) {
        (Some(now), Some(then)) => now == then,
        _ => true,
    }
}

/// Fresh enough, and not the token the platform just refused.
fn usable(row: &integrations::IntegrationRow, access: &SecretString, refused: Option<&SecretString>) -> bool {
    let fresh = row.expires_at.is_some_and(|at| at > Utc::now() + chrono::Duration::from_std(REFRESH_MARGIN).unwrap());
    let refused_this = refused.is_some_and(|r| r.expose_secret() == access.expose_secret());
    fresh && !refused_this
}

fn audit(action: &'static str, platform: Platform, outcome: &'static str, detail: Option<String>) -> AuditEntry {
    AuditEntry { action, platform: Some(platform.as_str().into()), outcome, duration_ms: None, detail }
}

fn with_duration(mut entry: AuditEntry, started: std::time::Instant) -> AuditEntry {
    entry.duration_ms = Some(started.elapsed().as_millis().min(i32::MAX as u128) as i32);
    entry
}
