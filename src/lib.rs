//! meetingd: automatic online-meeting links for a services marketplace.
//!
//! [`run`] is the daemon: it connects to the marketplace database, brings the schema up to date,
//! listens for booking changes and reconciles each booking's meeting until it is told to stop.
//! `main.rs` only parses the command line; tests and the demo call the same [`run`].

pub mod admin;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod fixtures;
pub mod http;
pub mod ics;
pub mod job;
pub mod links;
pub mod metrics;
pub mod monitor;
pub mod oauth;
pub mod providers;
pub mod quota;
pub mod ratelimit;
pub mod reconcile;
pub mod retry;
pub mod settings;
pub mod supervise;
pub mod systemd;
pub mod telemetry;
pub mod tokens;
pub mod webhooks;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::db::DbError;
use crate::db::listen::{Listener, ListenerState};
use crate::providers::{ProviderDeps, Providers};
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<deadpool_postgres::PoolError> for RunError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RunError::Db(DbError::Pool(e))
    }
}

/// What tests (and embedders) may supply instead of what the configuration describes.
#[derive(Default)]
pub struct RunOptions {
    /// Builds the providers (default: [`Providers::real`]).
    #[allow(clippy::type_complexity)]
    pub providers: Option<Box<dyn FnOnce(&ProviderDeps) -> Result<Providers, String> + Send>>,
    /// An already-bound HTTP listener (default: bind `http.listen`, unless it is empty).
    pub http_listener: Option<tokio::net::TcpListener>,
    /// An already-bound listener for /metrics, /healthz, /readyz (default: `http.metrics_listen`).
    pub ops_listener: Option<tokio::net::TcpListener>,
}

/// Migrates and opens the pool, waiting up to `database.startup_wait_secs` for a database that
/// cannot be reached yet; `None` when shut down meanwhile. Any other problem fails at once.
async fn start_database(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<(db::migrate::Applied, db::Pool)>, RunError> {
    let started = std::time::Instant::now();
    let wait = std::time::Duration::from_secs(config.database.startup_wait_secs);
    let mut pause = std::time::Duration::from_millis(250);
    loop {
        let attempt = async {
            let mut client = db::connect_for_migrations(&config.database).await?;
            let applied = db::migrate::migrate(&mut client).await?;
            for name in &applied.applied {
                tracing::info!(migration = %name, "applied migration");
            }
            drop(client);
            let pool = db::pool(&config.database, config.pool_size())?;
            // Fail at start, not at the first booking, when the database cannot be reached.
            drop(pool.get().await?);
            Ok::<_, DbError>((applied, pool))
        };
        match attempt.await {
            Ok(started) => return Ok(Some(started)),
            Err(e) if e.is_unavailable() && started.elapsed() + pause < wait => {
                tracing::warn!(
                    error = %e,
                    retry_in_ms = pause.as_millis() as u64,
                    waited_secs = started.elapsed().as_secs(),
                    "database not reachable yet; waiting for it (up to database.startup_wait_secs)"
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs the daemon as the configuration describes until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    run_with(config, RunOptions::default(), shutdown).await
}

/// Runs the daemon: migrations, the worker, the listener and the HTTP API.
pub async fn run_with(config: Config, options: RunOptions, shutdown: CancellationToken) -> Result<(), RunError> {
    // Tokens are never stored or read in plaintext: no key, no daemon.
    let keyring = Arc::new(config.encryption.keyring().map_err(RunError::Config)?);
    // The API is opt-in: without a JWT key to verify the app's callers it is not served, and
    // the daemon still links meetings (database.url and the encryption key are enough).
    let api_key = http::auth::JwtVerifier::from_config(&config.http).map_err(RunError::Config)?.is_some();
    let listener = match options.http_listener {
        Some(listener) => Some(listener),
        None if config.http.listen.is_empty() => None,
        None if !api_key => {
            tracing::info!(
                "HTTP API off: no JWT key is configured (http.jwt_secret, jwt_secret_file, jwt_public_key_file or jwt_jwks_url); meetings are linked without it"
            );
            None
        }
        None => Some(
            tokio::net::TcpListener::bind(&config.http.listen)
                .await
                .map_err(|e| RunError::Config(format!("cannot listen on http.listen {}: {e}", config.http.listen)))?,
        ),
    };

    let Some((applied, pool)) = start_database(&config, &shutdown).await? else {
        tracing::info!("shut down while waiting for the database");
        return Ok(());
    };

    // Tokens written in the old envelope format are bound to their owner before anything reads one.
    admin::upgrade_envelopes_at_start(&config.database, &keyring).await?;

    let instance = Uuid::new_v4();
    let deps = ProviderDeps { pool: pool.clone(), keyring: keyring.clone(), actor: worker::actor(instance) };
    let providers = match options.providers {
        Some(make) => make(&deps),
        None => Providers::real(&config, &deps),
    }
    .map_err(RunError::Config)?;
    // What this deployment offers, for the database's rules of a service's meeting platform
    // (meetingd.check_service_meeting): published before the API serves.
    let connectors = providers::auth::Connectors::from_config(&config).map_err(RunError::Config)?;
    let offer = providers::offer::offering(&providers, &connectors, config.fallback.platform);
    db::platforms::publish(pool.get().await?.sql(), &offer, &worker::actor(instance)).await?;
    let metrics = crate::metrics::install();
    let ops = match (options.ops_listener, config.http.metrics_listen.as_str()) {
        (Some(listener), _) => Some(listener),
        (None, "") => None,
        (None, addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Config(format!("cannot listen on http.metrics_listen {addr}: {e}")))?,
        ),
    };
    let listener_state = config.worker.listen.then(|| Arc::new(ListenerState::default()));
    let liveness = systemd::Liveness::new(config.worker.listen);
    let health =
        http::health::Health { pool: pool.clone(), listener: listener_state.clone(), liveness: Some(liveness.clone()) };
    let api = match listener {
        Some(listener) => {
            // A pool of its own, so API traffic never takes the worker's connections.
            let api_pool = db::pool_waiting(
                &config.database,
                config.http.pool_size,
                Some(std::time::Duration::from_millis(config.http.pool_wait_ms)),
            )?;
            let state = http::AppState::new(api_pool, keyring.clone(), &config).map_err(RunError::Config)?;
            Some((listener, state.with_providers(providers.clone())))
        }
        None => None,
    };
    let wake = Arc::new(Notify::new());
    let events_wake = Arc::new(Notify::new());
    let webhooks =
        webhooks::Webhooks::new(pool.clone(), &config.webhooks, &config.worker, instance, events_wake.clone())
            .map_err(RunError::Config)?
            .map(Arc::new);
    // Before anything is ready: an event recorded once the daemon listens is queued for delivery.
    if let Some(webhooks) = &webhooks {
        webhooks.switch_on().await?;
    }
    let sampler_pool = pool.clone();
    let sweep = config.reconcile.enabled.then(|| {
        reconcile::every_day(
            pool.clone(),
            providers.clone(),
            worker::actor(instance),
            config.reconcile.clone(),
            shutdown.clone(),
        )
    });
    let connectors = providers::auth::Connectors::from_config(&config).map_err(RunError::Config)?;
    let lifetimes = monitor::Lifetimes::new(&connectors, &config.monitor).params();
    let monitor = monitor::Monitor::new(pool.clone(), keyring.clone(), worker::actor(instance), connectors, &config);
    let worker = Arc::new(
        Worker::new(pool, providers, config.worker.clone(), config.fallback.platform, wake.clone(), instance)
            .with_liveness(liveness.clone())
            .with_limits(config.limits.clone()),
    );
    let tasks = TaskTracker::new();
    if let Some(sweep) = sweep {
        tasks.spawn(sweep);
    }
    if config.monitor.enabled {
        tasks.spawn(monitor.with_budgets(worker.budgets()).every(shutdown.clone()));
    }
    if let Some(state) = &listener_state {
        let listener = Listener {
            db: config.database.clone(),
            liveness: Some(liveness.clone()),
            ping_interval: std::time::Duration::from_millis(config.worker.listen_ping_interval_ms),
            wake: wake.clone(),
            events_wake: webhooks.is_some().then(|| events_wake.clone()),
            state: state.clone(),
        };
        let stop = shutdown.clone();
        tasks.spawn(supervise::supervise(systemd::Loop::Listener, liveness.clone(), shutdown.clone(), move || {
            listener.clone().run(stop.clone())
        }));
    } else {
        tracing::info!(poll_interval_ms = config.worker.poll_interval_ms, "LISTEN disabled: polling for due jobs");
    }
    if let Some((listener, state)) = api {
        let stop = shutdown.clone();
        let router = http::router(state).merge(http::health::routes(health.clone()));
        tasks.spawn(async move {
            if let Err(e) = http::serve(listener, router, stop).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        });
    }
    if let Some(ops) = ops {
        let stop = shutdown.clone();
        let router = http::health::ops_routes(health, metrics);
        tasks.spawn(async move {
            if let Err(e) = http::serve(ops, router, stop).await {
                tracing::error!(error = %e, "operations endpoint stopped");
            }
        });
    }
    if config.retention.interval_secs > 0 {
        tasks.spawn(db::maintenance::prune_every(
            sampler_pool.clone(),
            config.retention.clone(),
            std::time::Duration::from_secs(config.retention.interval_secs),
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::metrics::sample(
        sampler_pool,
        listener_state.clone(),
        lifetimes,
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    ));
    if let Some(webhooks) = webhooks {
        liveness.enable_webhooks();
        let stop = shutdown.clone();
        tasks.spawn(supervise::supervise(systemd::Loop::Webhooks, liveness.clone(), shutdown.clone(), move || {
            webhooks.clone().run(stop.clone())
        }));
    }
    let (dispatcher, stop) = (worker.clone(), shutdown.clone());
    tasks.spawn(supervise::supervise(systemd::Loop::Dispatcher, liveness.clone(), shutdown.clone(), move || {
        dispatcher.clone().run(stop.clone())
    }));

    // Ready only when the work really happens: LISTEN up (when enabled), everything else bound.
    if let Some(state) = &listener_state {
        tokio::select! {
            () = state.wait_connected() => {}
            () = shutdown.cancelled() => {}
        }
    }
    if !shutdown.is_cancelled() {
        tracing::info!(
            instance = %instance,
            schema_version = applied.version,
            concurrency = config.worker.concurrency,
            listen = config.worker.listen,
            "meetingd ready"
        );
        systemd::ready(&worker.status_line());
    }
    let status_worker = worker.clone();
    tasks.spawn(systemd::watchdog(liveness, move || status_worker.status_line(), shutdown.clone()));
    tasks.close();
    shutdown.cancelled().await;
    systemd::stopping();
    tasks.wait().await;
    tracing::info!("meetingd stopped");
    Ok(())
}
