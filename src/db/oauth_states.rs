//! Statements on `meetingd.oauth_states`: the pending OAuth connections of the connect flow.
//!
//! A state is stored as its SHA-256 (the caller hashes it) with the user, the platform and the
//! PKCE verifier as ciphertext; this module never sees the state or the verifier in plaintext.
//! It must not keep a row past its first presentation: [`take`] deletes what it returns.

use uuid::Uuid;

use super::{DbError, Sql};

/// A pending connection to store.
pub struct NewState<'a> {
    pub state_hash: &'a str,
    /// The row id, which the verifier's ciphertext is bound to.
    pub id: Uuid,
    pub user_id: Uuid,
    pub platform: &'a str,
    /// The encrypted PKCE verifier.
    pub pkce_verifier: &'a str,
    /// Seconds from now until it expires.
    pub ttl_secs: f64,
}

/// A pending connection, consumed.
pub struct TakenState {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The encrypted PKCE verifier.
    pub pkce_verifier: String,
    /// Not yet expired (by the database clock).
    pub fresh: bool,
}

/// Deletes the states that expired.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_expired(db: Sql<'_>) -> Result<u64, DbError> {
    Ok(db.execute("DELETE FROM meetingd.oauth_states WHERE expires_at < now()", &[]).await?)
}

/// Stores a pending connection, expiring `ttl_secs` from now (database clock).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn insert(db: Sql<'_>, s: &NewState<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO meetingd.oauth_states (state_hash, id, user_id, platform, pkce_verifier, expires_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
        &[&s.state_hash, &s.id, &s.user_id, &s.platform, &s.pkce_verifier, &s.ttl_secs],
    )
    .await?;
    Ok(())
}

/// Deletes and returns the state with this hash for this platform (single use: whoever presents
/// it first consumes it, expired or not); `None` when there is none.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn take(db: Sql<'_>, state_hash: &str, platform: &str) -> Result<Option<TakenState>, DbError> {
    let row = db
        .query_opt(
            "DELETE FROM meetingd.oauth_states WHERE state_hash = $1 AND platform = $2
             RETURNING id, user_id, pkce_verifier, expires_at > now()",
            &[&state_hash, &platform],
        )
        .await?;
    Ok(row.map(|r| TakenState { id: r.get(0), user_id: r.get(1), pkce_verifier: r.get(2), fresh: r.get(3) }))
}
