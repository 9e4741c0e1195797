//! Statements on the marketplace's `users` for the HTTP API: who a caller is.
//!
//! Read-only; it must not change a marketplace row.

use uuid::Uuid;

use super::{DbError, Sql};

/// Whether the user is a provider (`users.role = 'provider'`, or owns a service); `None` when
/// there is no such user.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn is_provider(db: Sql<'_>, user: Uuid) -> Result<Option<bool>, DbError> {
    Ok(db
        .query_opt(
            "SELECT u.role = 'provider' OR EXISTS (SELECT 1 FROM services s WHERE s.provider_id = u.id)
               FROM users u WHERE u.id = $1",
            &[&user],
        )
        .await?
        .map(|row| row.get::<_, Option<bool>>(0).unwrap_or(false)))
}
