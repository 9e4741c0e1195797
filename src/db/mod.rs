//! Connections to the marketplace database.
//!
//! Owns how connections are configured (keepalives, timeouts, application name), the worker pool,
//! and the error type of the data layer. The SQL itself lives in the submodules: `migrate` (schema),
//! `listen` (the LISTEN connection), `jobs` (the queue and the write-back).

pub mod integrations;
pub mod jobs;
pub mod listen;
pub mod migrate;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;

pub type Pool = deadpool_postgres::Pool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url is not a PostgreSQL connection string: {0}")]
    Config(String),
    #[error("cannot connect to the database: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),
    #[error("no database connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Schema(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
}

/// A PostgreSQL error as one readable line: the server's message (and detail) when there is one.
impl DbError {
    /// The server could not be reached or is not accepting sessions yet (starting up, shutting
    /// down, restarting): worth trying again shortly.
    pub fn is_unavailable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let unavailable = |e: &tokio_postgres::Error| match e.code() {
            Some(code) => {
                [SqlState::CANNOT_CONNECT_NOW, SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN].contains(code)
            }
            None => e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
        };
        match self {
            DbError::Connect(e) | DbError::Query(e) => unavailable(e),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => unavailable(e),
            DbError::Pool(deadpool_postgres::PoolError::Timeout(_)) => true,
            DbError::Migrate(e) => match e.kind() {
                refinery::error::Kind::Connection(_, source) => {
                    source.downcast_ref::<tokio_postgres::Error>().is_some_and(unavailable)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// The connection settings every meetingd connection uses.
pub fn pg_config(cfg: &DatabaseConfig) -> Result<tokio_postgres::Config, DbError> {
    let mut pg: tokio_postgres::Config =
        cfg.url.expose_secret().parse().map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
    if pg.get_application_name().is_none() {
        pg.application_name("meetingd");
    }
    pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    // A dead peer is otherwise noticed only when the kernel gives up, hours later.
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(cfg.keepalive_idle_secs.max(1)));
    pg.keepalives_interval(Duration::from_secs(10));
    pg.keepalives_retries(3);
    Ok(pg)
}

/// How long a worker statement waits for a row lock the app holds (a booking row in a long
/// transaction) before giving up; the job then runs again after its lease expires instead of
/// occupying a worker slot indefinitely.
const WORKER_LOCK_TIMEOUT: &str = "-c lock_timeout=10s";

/// The pool the worker (and the admin commands) run queries on.
pub fn pool(cfg: &DatabaseConfig, size: usize) -> Result<Pool, DbError> {
    let mut pg = pg_config(cfg)?;
    let options = match pg.get_options() {
        Some(existing) => format!("{existing} {WORKER_LOCK_TIMEOUT}"),
        None => WORKER_LOCK_TIMEOUT.to_string(),
    };
    pg.options(options);
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        // The most recently used connection first: under light load a few connections, whose
        // statements are already prepared, serve everything.
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// One connection outside the pool (migrations, admin commands), its driver spawned on the runtime.
pub async fn connect(cfg: &DatabaseConfig) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = pg_config(cfg)?.connect(NoTls).await.map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "database connection closed");
        }
    });
    Ok(client)
}
