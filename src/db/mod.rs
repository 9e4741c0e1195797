//! Connections to the marketplace database.
//!
//! Owns how connections are configured (keepalives, timeouts, application name), the worker pool,
//! and the error type of the data layer. The SQL itself lives in the submodules: `migrate` (schema),
//! `listen` (the LISTEN connection), `jobs` (the queue and the write-back); TLS is decided in `tls`.

pub mod integrations;
pub mod jobs;
pub mod listen;
pub mod marketplace;
pub mod migrate;
pub mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;

use crate::config::DatabaseConfig;

pub type Pool = deadpool_postgres::Pool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url is not a PostgreSQL connection string: {0}")]
    Config(String),
    #[error("cannot set up TLS to the database: {0}")]
    Tls(String),
    #[error("cannot connect to the database: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),
    #[error("no database connection available: {}", describe_pool(.0))]
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
                // A read-only server (a standby after a failover) is as good as unavailable:
                // the connection is dropped (see `discard_if_read_only`) and a new one made.
                [
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                ]
                .contains(code)
            }
            // An I/O error is the network's, unless it carries a TLS verdict (a certificate
            // refused, a name that does not parse): trying again changes nothing then.
            None => {
                e.is_closed()
                    || std::error::Error::source(e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .is_some_and(|io| !io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()))
            }
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

impl DbError {
    /// The server refused a write because it is read-only (SQLSTATE 25006): after a failover the
    /// connection still leads to the old primary, now a standby.
    pub fn is_read_only(&self) -> bool {
        let code = match self {
            DbError::Connect(e) | DbError::Query(e) => e.code(),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        };
        code == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    }
}

/// After `error` on `client`: a connection to a read-only server is not returned to the pool,
/// and the idle ones are closed too (they lead to the same server), so the next statements run
/// on new connections, which find the writable server.
pub fn discard_if_read_only(pool: &Pool, client: deadpool_postgres::Client, error: &DbError) {
    if error.is_read_only() {
        let _ = deadpool_postgres::Object::take(client);
        let closed = pool.retain(|_, _| false).removed.len();
        tracing::warn!(
            closed_idle = closed,
            "the database server is read-only (a standby after a failover?); reconnecting"
        );
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

/// A pool error as one line; a failed connection says why (deadpool's own text leaves out the
/// cause, such as a refused certificate).
fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => format!("cannot connect to the database: {}", describe(e)),
        other => other.to_string(),
    }
}

/// The connection settings every meetingd connection uses, and the TLS connector that goes with
/// them (`sslmode`, `sslrootcert`: see `tls`).
pub fn pg_config(cfg: &DatabaseConfig) -> Result<(tokio_postgres::Config, tls::MakeRustlsConnect), DbError> {
    let (url, tls) = tls_settings(cfg)?;
    let mut pg: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
    pg.ssl_mode(tls.mode.negotiation());
    if pg.get_application_name().is_none() {
        pg.application_name("meetingd");
    }
    // Only a writable server will do (libpq's target_session_attrs=read-write): with several
    // hosts, or a name that moves on failover, a new connection finds the primary. The URL may
    // say otherwise.
    if !url.contains("target_session_attrs") {
        pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    // A dead peer is otherwise noticed only when the kernel gives up, hours later.
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(cfg.keepalive_idle_secs.max(1)));
    pg.keepalives_interval(Duration::from_secs(10));
    pg.keepalives_retries(3);
    Ok((pg, tls.connector().map_err(DbError::Tls)?))
}

/// The TLS settings `database.url` and `database.sslrootcert` ask for, and the URL without them.
fn tls_settings(cfg: &DatabaseConfig) -> Result<(String, tls::Tls), DbError> {
    tls::split(cfg.url.expose_secret(), Some(&cfg.sslrootcert)).map_err(DbError::Config)
}

/// The TLS settings connections to this database use.
pub fn tls(cfg: &DatabaseConfig) -> Result<tls::Tls, DbError> {
    Ok(tls_settings(cfg)?.1)
}

/// Whether this session is encrypted, as the server sees it.
pub async fn session_encrypted(client: &tokio_postgres::Client) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)", &[])
        .await?
        .get(0))
}

/// How long a worker statement waits for a row lock the app holds (a booking row in a long
/// transaction) before giving up; the job then runs again after its lease expires instead of
/// occupying a worker slot indefinitely.
const WORKER_LOCK_TIMEOUT: &str = "-c lock_timeout=10s";

/// The pool the worker (and the admin commands) run queries on.
pub fn pool(cfg: &DatabaseConfig, size: usize) -> Result<Pool, DbError> {
    let (mut pg, tls) = pg_config(cfg)?;
    let options = match pg.get_options() {
        Some(existing) => format!("{existing} {WORKER_LOCK_TIMEOUT}"),
        None => WORKER_LOCK_TIMEOUT.to_string(),
    };
    pg.options(options);
    let manager = Manager::from_config(pg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
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
    let (pg, tls) = pg_config(cfg)?;
    let (client, connection) = pg.connect(tls).await.map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "database connection closed");
        }
    });
    Ok(client)
}
