//! Statements on `meetingd.rate_buckets` outside the claim (which takes its tokens itself,
//! `db/jobs/claim.sql`): a token for one more platform call, and the prune of idle buckets
//! (`db/maintenance.rs`). The buckets' arithmetic is `meetingd.take_rate_tokens` (V13); what the
//! buckets mean is `ratelimit.rs`.

use std::time::Duration;

use uuid::Uuid;

use super::{DbError, Param, Sql};
use crate::ratelimit::Budgets;

/// Takes one token for a call of `job` on `platform` for the provider `account` from its
/// account's and its platform's buckets: `None` when taken, else how long until the turn kept for
/// it. One statement, atomic across daemons (the buckets are locked until it commits).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn take(
    db: Sql<'_>,
    job: i64,
    platform: &str,
    account: Uuid,
    budgets: &Budgets,
) -> Result<Option<Duration>, DbError> {
    let params: [&dyn Param; 8] = [
        &job,
        &platform,
        &account,
        &budgets.platforms,
        &budgets.account_every,
        &budgets.account_span,
        &budgets.platform_every,
        &budgets.platform_span,
    ];
    let row = db
        .query_opt(
            "SELECT EXTRACT(epoch FROM h.retry_at - clock_timestamp())::float8
               FROM meetingd.take_rate_tokens(ARRAY[$1::bigint], ARRAY[$2::text], ARRAY[$3::uuid], $4, $5, $6, $7, $8) h",
            &params,
        )
        .await?;
    Ok(row.map(|r| Duration::from_secs_f64(r.get::<_, f64>(0).max(0.0))))
}
