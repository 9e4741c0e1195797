//! A platform's daily allowance of requests per connected account (Zoom: 100 meeting creations
//! and updates per user per day, reset at 00:00 UTC), counted in the database so that every
//! daemon draws on the same count and a refused request is never sent.
//!
//! Owns the store a provider asks before such a request ([`QuotaStore::take`]) and tells when the
//! platform answered that the day's allowance is gone ([`QuotaStore::exhaust`]). It is how a
//! provider reaches the count: providers never touch the database except through a store. It
//! must not call a platform; its statements are `db/quota.rs`.

use uuid::Uuid;

use crate::db::{DbError, Pool, quota};
use crate::providers::Platform;

/// The daily count of one platform's requests of one kind, per connected account.
pub struct QuotaStore {
    pool: Pool,
    platform: Platform,
    /// Requests per account per UTC day; 0: not counted.
    limit: u32,
}

impl QuotaStore {
    pub fn new(pool: Pool, platform: Platform, limit: u32) -> QuotaStore {
        QuotaStore { pool, platform, limit }
    }

    /// Whether requests are counted at all.
    pub fn counts(&self) -> bool {
        self.limit > 0
    }

    /// Takes one request from today's allowance of `integration`: `false` when it is used up
    /// (the request must not be sent). Always `true` when nothing is counted.
    pub async fn take(&self, integration: Uuid) -> Result<bool, DbError> {
        if !self.counts() {
            return Ok(true);
        }
        let client = self.pool.get().await?;
        let taken = quota::take(client.sql(), integration, self.platform.as_str(), self.limit()).await?;
        if !taken {
            metrics::counter!(crate::metrics::QUOTA_REFUSALS, "platform" => self.platform.as_str()).increment(1);
        }
        Ok(taken)
    }

    /// The platform answered that today's allowance of `integration` is used up: no more
    /// requests are sent for it until 00:00 UTC.
    pub async fn exhaust(&self, integration: Uuid) -> Result<(), DbError> {
        if !self.counts() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        quota::exhaust(client.sql(), integration, self.platform.as_str(), self.limit()).await
    }

    fn limit(&self) -> i32 {
        i32::try_from(self.limit).unwrap_or(i32::MAX)
    }
}
