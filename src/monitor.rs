//! The connection-health monitor: every active connection is checked on a schedule, so a dead
//! grant is found before a booking needs it, and a grant with a known lifetime is reported as
//! expiring before it dies.
//!
//! A check (at most every `monitor.check_every_hours` per connection, the platforms' rate limits
//! applied) goes through `tokens.rs`: an access token that is (nearly) expired is refreshed; else
//! one cheap call as the account (`PlatformAuth::identity`, the "who am I" GET) proves the token
//! works, and a 401 there leads to a refresh. A dead grant is marked by `tokens.rs` itself
//! (inactive, one `integration_needs_reconnect` event, in the refresh's transaction); a timeout
//! or a server error marks nothing and the connection is checked again at the next run.
//!
//! Lifetimes ([`Lifetimes`], from the platforms' OAuth facts and `[monitor]`): a connection
//! within its warning window is `expiring` (`db::health` says so for the API, `status` and the
//! metrics). One whose lifetime a refresh starts again (Microsoft's idle limit, Zoom's rotated
//! refresh token) is refreshed by the monitor; one it cannot renew (a Google app in "Testing",
//! or a refresh that keeps failing) gets one `integration_expiring` event per lifetime.
//!
//! It runs in the daemon every `monitor.interval_secs`, one daemon of many (`meetingd.maintenance`).
//! It never logs a token and holds no SQL (`db::health`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MonitorConfig};
use crate::crypto::Keyring;
use crate::db::health::{self, Due, LifetimeParams};
use crate::db::{self, DbError, Pool};
use crate::job::Event;
use crate::oauth::OAuthError;
use crate::providers::auth::{Anchor, Connectors, Lifetime, PlatformAuth};
use crate::providers::{Platform, ProviderError};
use crate::ratelimit::Budgets;
use crate::tokens::{REFRESH_MARGIN, TokenError, TokenStore, Whose};

/// Each configured platform's known grant lifetime and its warning window.
#[derive(Debug, Clone, Default)]
pub struct Lifetimes {
    entries: Vec<(Platform, Lifetime, Duration)>,
}

impl Lifetimes {
    /// The lifetimes of the platforms `connectors` can connect, with `config`'s warning windows.
    pub fn new(connectors: &Connectors, config: &MonitorConfig) -> Lifetimes {
        let entries = Platform::ALL
            .into_iter()
            .filter_map(|p| {
                let lifetime = connectors.get(p)?.grant_lifetime()?;
                let warn = match lifetime.anchor {
                    Anchor::Consent => config.consent_warning(),
                    Anchor::Refresh => config.refresh_warning(),
                };
                Some((p, lifetime, warn))
            })
            .collect();
        Lifetimes { entries }
    }

    /// As the statements of `db::health` take them.
    pub fn params(&self) -> LifetimeParams {
        let mut p = LifetimeParams::default();
        for (platform, lifetime, warn) in &self.entries {
            p.platforms.push(platform.as_str().to_string());
            p.anchors.push(lifetime.anchor.as_str().to_string());
            p.length_secs.push(f64::from(lifetime.days) * 86_400.0);
            p.warn_secs.push(warn.as_secs_f64());
        }
        p
    }
}

/// What one run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Connections looked at.
    pub checked: usize,
    /// Proven to work (by a call or a refresh).
    pub working: usize,
    /// Of `working`, refreshed by the check.
    pub refreshed: usize,
    /// Found dead: marked needs_reconnect (by `tokens.rs`).
    pub dead: usize,
    /// Not decided (a timeout, a server error): looked at again next run.
    pub undecided: usize,
    /// `integration_expiring` events written.
    pub warned: usize,
    /// Connections that could not be checked for another reason (an operator's to fix), as sentences.
    pub problems: Vec<String>,
}

/// What a check found about one connection.
#[derive(Debug)]
enum Found {
    Works {
        refreshed: bool,
    },
    Dead,
    Undecided(String),
    Problem(String),
    /// The connection is no longer there to check.
    Gone,
}

pub struct Monitor {
    pool: Pool,
    connectors: Connectors,
    tokens: TokenStore,
    lifetimes: Lifetimes,
    config: MonitorConfig,
    /// The rate limits of `[limits.*]`, in the database, shared with the worker and every daemon.
    budgets: Budgets,
}

impl Monitor {
    pub fn new(pool: Pool, keyring: Arc<Keyring>, actor: String, connectors: Connectors, config: &Config) -> Monitor {
        Monitor {
            tokens: TokenStore::new(pool.clone(), keyring, actor),
            lifetimes: Lifetimes::new(&connectors, &config.monitor),
            pool,
            connectors,
            config: config.monitor.clone(),
            budgets: Budgets::default(),
        }
    }

    /// Its platform calls share these rate limits (the worker's).
    pub fn with_budgets(mut self, budgets: Budgets) -> Monitor {
        self.budgets = budgets;
        self
    }

    /// One run: every connection that is due (see `db::health::due`), one after another.
    pub async fn run_once(&self) -> Result<Report, DbError> {
        let mut report = Report::default();
        let platforms: Vec<String> = Platform::ALL
            .into_iter()
            .filter(|p| self.connectors.get(*p).is_some())
            .map(|p| p.as_str().to_string())
            .collect();
        if platforms.is_empty() {
            return Ok(report);
        }
        let params = self.lifetimes.params();
        let due = {
            let client = self.pool.get().await?;
            health::prune(client.sql()).await?;
            let every = self.config.check_every().as_secs_f64();
            health::due(client.sql(), &params, &platforms, every, i64::from(self.config.batch)).await?
        };
        for connection in due {
            let Ok(platform) = connection.platform.parse::<Platform>() else { continue };
            let Some(auth) = self.connectors.get(platform) else { continue };
            report.checked += 1;
            let found = self.check(auth.as_ref(), platform, &connection).await;
            let outcome = match &found {
                Found::Works { refreshed: true } => "refreshed",
                Found::Works { refreshed: false } => "ok",
                Found::Dead => "needs_reconnect",
                Found::Undecided(_) => "undecided",
                Found::Problem(_) => "problem",
                Found::Gone => "gone",
            };
            metrics::counter!(crate::metrics::INTEGRATION_CHECKS, "platform" => platform.as_str(), "outcome" => outcome)
                .increment(1);
            match &found {
                Found::Works { refreshed } => {
                    report.working += 1;
                    report.refreshed += usize::from(*refreshed);
                }
                Found::Dead => report.dead += 1,
                Found::Undecided(why) => {
                    report.undecided += 1;
                    tracing::info!(user_id = %connection.user_id, platform = %platform, reason = %why, "connection check undecided; trying again at the next run");
                }
                Found::Problem(why) => {
                    tracing::warn!(user_id = %connection.user_id, platform = %platform, problem = %why, "connection cannot be checked");
                    report.problems.push(format!(
                        "{} connection of provider {}: {why}",
                        platform.display_name(),
                        connection.user_id
                    ));
                }
                Found::Gone => {}
            }
            if !matches!(found, Found::Undecided(_) | Found::Gone) {
                health::checked(self.pool.get().await?.sql(), connection.integration_id).await?;
            }
            // Renewed by this check's refresh: no longer expiring.
            let renewed = connection.refresh_renews && matches!(found, Found::Works { refreshed: true });
            if connection.expiring && !renewed && !matches!(found, Found::Dead | Found::Gone) {
                report.warned += usize::from(self.warn(platform, &connection).await?);
            }
        }
        Ok(report)
    }

    /// Checks one connection: a refresh when its access token is (nearly) expired or its
    /// lifetime wants renewing, else one call as the account.
    async fn check(&self, auth: &dyn PlatformAuth, platform: Platform, connection: &Due) -> Found {
        self.wait_for_limits(platform, connection).await;
        let whose = Whose::Provider(connection.user_id);
        let oauth = auth.client();
        let stale = connection.expires_at.is_none_or(|at| at <= Utc::now() + REFRESH_MARGIN);
        // A refresh of a stale token happens inside this read.
        let token = match self.tokens.access_token(whose, platform, oauth, None).await {
            Ok((token, _)) => token,
            Err(e) => return found(e),
        };
        if stale {
            return Found::Works { refreshed: true };
        }
        // A refresh forced by naming the current token as refused (unless another holder
        // replaced it meanwhile).
        let refresh = || async {
            match self.tokens.access_token(whose, platform, oauth, Some(&token)).await {
                Ok(_) => Found::Works { refreshed: true },
                Err(e) => found(e),
            }
        };
        if connection.expiring && connection.refresh_renews {
            return refresh().await;
        }
        match auth.identity(&token).await {
            Ok(_) => Found::Works { refreshed: false },
            Err(ProviderError::Unauthorized) => refresh().await,
            Err(e) => Found::Undecided(e.to_string()),
        }
    }

    /// Waits until the platform's and the account's rate limits allow a call.
    /// A database error takes no token: the check goes ahead (the monitor makes one call).
    async fn wait_for_limits(&self, platform: Platform, connection: &Due) {
        // The monitor holds no job: its turns are kept under job 0.
        loop {
            match self.budgets.take(&self.pool, 0, platform, connection.user_id).await {
                Ok(None) => return,
                Ok(Some(wait)) => tokio::time::sleep(wait + Duration::from_millis(5)).await,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot take a rate-limit token for a connection check");
                    return;
                }
            }
        }
    }

    /// Tells the provider once per lifetime that the connection expires; `true` when told now.
    async fn warn(&self, platform: Platform, connection: &Due) -> Result<bool, DbError> {
        let Some(ends_at) = connection.ends_at else { return Ok(false) };
        if connection.warned_for == Some(ends_at) {
            return Ok(false);
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !health::warn_once(tx.sql(), connection.integration_id, ends_at).await? {
            return Ok(false);
        }
        let name = platform.display_name();
        let message = format!(
            "Your {name} connection stops working on {} unless you reconnect {name} under Integrations; after that bookings get the fallback meeting platform.",
            ends_at.format("%Y-%m-%d %H:%M UTC")
        );
        let event = Event { kind: "integration_expiring", platform: Some(platform.as_str().into()), message };
        db::audit::insert_event(tx.sql(), &event, Some(connection.user_id), None).await?;
        tx.commit().await?;
        tracing::info!(user_id = %connection.user_id, platform = %platform, ends_at = %ends_at, "connection expiring: provider told");
        Ok(true)
    }

    /// The daemon's schedule: a run every `monitor.interval_secs` (the first at start), one
    /// daemon of many, until `shutdown`.
    pub async fn every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.config.interval().as_secs_f64() * 0.9;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let turn = async { db::reconcile::take_turn(self.pool.get().await?.sql(), "monitor", every).await }.await;
            match turn {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "connection monitor not started");
                    continue;
                }
            }
            let result = tokio::select! {
                r = self.run_once() => r,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(r) => tracing::info!(
                    checked = r.checked,
                    working = r.working,
                    refreshed = r.refreshed,
                    needs_reconnect = r.dead,
                    undecided = r.undecided,
                    warned = r.warned,
                    problems = r.problems.len(),
                    "connection monitor run done"
                ),
                Err(e) => tracing::warn!(error = %e, "connection monitor run failed; next one at the next interval"),
            }
        }
    }
}

/// What a token read's failure says about the connection. Only a dead grant (`Revoked`, marked
/// by `tokens.rs`) counts against it.
fn found(e: TokenError) -> Found {
    match e {
        TokenError::Revoked(_) => Found::Dead,
        TokenError::NotConnected(_) | TokenError::AccountGone(_) | TokenError::Changed(_) => Found::Gone,
        TokenError::OAuth(OAuthError::Transient(m)) => Found::Undecided(m),
        TokenError::Db(e) => Found::Undecided(e.to_string()),
        e @ (TokenError::OAuth(_) | TokenError::Unreadable(_, _)) => Found::Problem(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_the_configured_platforms_with_their_warning_windows() {
        let mut config = Config::defaults();
        config.google.client_id = "id".into();
        config.google.client_secret = "secret".into();
        config.teams.client_id = "id".into();
        config.teams.client_secret = "secret".into();
        let of = |config: &Config| Lifetimes::new(&Connectors::from_config(config).unwrap(), &config.monitor).params();
        // A published Google app has no known end; Teams' idle limit, 14 days ahead; Zoom is not configured.
        let p = of(&config);
        assert_eq!((p.platforms, p.anchors), (vec!["teams".to_string()], vec!["refresh".to_string()]));
        assert_eq!((p.length_secs, p.warn_secs), (vec![90.0 * 86_400.0], vec![14.0 * 86_400.0]));
        config.google.publishing_status = "testing".into();
        let p = of(&config);
        assert_eq!(p.platforms, ["google_meet", "teams"]);
        assert_eq!(
            (p.anchors[0].as_str(), p.length_secs[0], p.warn_secs[0]),
            ("consent", 7.0 * 86_400.0, 48.0 * 3600.0)
        );
    }
}
