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
pub mod oauth;
pub mod providers;
pub mod retry;
pub mod settings;
pub mod telemetry;
pub mod tokens;
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

/// Runs the daemon with every platform the configuration enables until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let cfg = config.clone();
    run_with(config, move |deps| Providers::real(&cfg, deps), shutdown).await
}

/// Runs the daemon with the providers `make_providers` builds (tests pass scripted ones).
pub async fn run_with(
    config: Config,
    make_providers: impl FnOnce(&ProviderDeps) -> Result<Providers, String>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // Tokens are never stored or read in plaintext: no key, no daemon.
    let keyring = Arc::new(config.encryption.keyring().map_err(RunError::Config)?);

    let mut client = db::connect(&config.database).await?;
    let applied = db::migrate::migrate(&mut client).await?;
    for name in &applied.applied {
        tracing::info!(migration = %name, "applied migration");
    }
    drop(client);

    let pool = db::pool(&config.database, config.pool_size())?;
    // Fail at start, not at the first booking, when the database cannot be reached.
    drop(pool.get().await?);

    let instance = Uuid::new_v4();
    let deps = ProviderDeps { pool: pool.clone(), keyring, actor: worker::actor(instance) };
    let providers = make_providers(&deps).map_err(RunError::Config)?;
    let wake = Arc::new(Notify::new());
    let worker =
        Arc::new(Worker::new(pool, providers, config.worker.clone(), config.fallback.platform, wake.clone(), instance));
    let tasks = TaskTracker::new();
    if config.worker.listen {
        let listener = Listener {
            db: config.database.clone(),
            ping_interval: std::time::Duration::from_millis(config.worker.listen_ping_interval_ms),
            wake: wake.clone(),
            state: Arc::new(ListenerState::default()),
        };
        tasks.spawn(listener.run(shutdown.clone()));
    } else {
        tracing::info!(poll_interval_ms = config.worker.poll_interval_ms, "LISTEN disabled: polling for due jobs");
    }
    tracing::info!(
        instance = %instance,
        schema_version = applied.version,
        concurrency = config.worker.concurrency,
        listen = config.worker.listen,
        "meetingd started"
    );
    tasks.spawn(worker.run(shutdown.clone()));
    tasks.close();
    tasks.wait().await;
    tracing::info!("meetingd stopped");
    Ok(())
}
