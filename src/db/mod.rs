//! Connections to the marketplace database.
//!
//! Owns how connections are configured (keepalives, timeouts, application name), the worker pool,
//! and the error type of the data layer. The SQL itself lives in the submodules, one per table or
//! purpose: `jobs` (the queue: claim, create intents, the write-back), `bookings`, `integrations`,
//! `oauth_states`, `requeue`, `audit`, `users`, `status` (read-only aggregates), `maintenance`,
//! `reconcile`, `marketplace` (what `check` inspects), `demo`; `migrate` (schema), `listen` (the
//! LISTEN connection); TLS is decided in `tls`, and every statement is sent through `sql`.

pub mod audit;
pub mod bookings;
pub mod demo;
pub mod health;
pub mod integrations;
pub mod jobs;
pub mod listen;
pub mod maintenance;
pub mod marketplace;
pub mod migrate;
pub mod oauth_states;
pub mod platforms;
pub mod quota;
pub mod ratelimit;
pub mod reconcile;
pub mod requeue;
pub mod services;
pub mod sql;
pub mod status;
pub mod tls;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;

use crate::config::DatabaseConfig;

pub use sql::{Mode, Param, Sql};

/// The worker pool, and how its connections send statements (`database.pooler`).
#[derive(Clone, Debug)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    mode: Mode,
}

impl Pool {
    pub async fn get(&self) -> Result<Conn, deadpool_postgres::PoolError> {
        Ok(Conn { client: self.inner.get().await?, mode: self.mode })
    }

    pub fn status(&self) -> deadpool_postgres::Status {
        self.inner.status()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// A pooled connection; its statements go through [`Conn::sql`].
pub struct Conn {
    client: deadpool_postgres::Client,
    mode: Mode,
}

impl Conn {
    pub fn sql(&self) -> Sql<'_> {
        Sql::cached(&self.client, &self.client.statement_cache, self.mode)
    }

    /// Opens a transaction (with the mode's `SET LOCAL` settings).
    pub async fn transaction(&mut self) -> Result<Tx<'_>, tokio_postgres::Error> {
        Tx::begin(&mut self.client, self.mode).await
    }
}

/// The connection itself, for tests that look at it; meetingd's own statements go through
/// [`Conn::sql`].
impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Client;
    fn deref(&self) -> &deadpool_postgres::Client {
        &self.client
    }
}

/// A connection outside the pool and how it sends statements.
pub struct Session {
    pub client: tokio_postgres::Client,
    pub mode: Mode,
}

impl Session {
    pub fn sql(&self) -> Sql<'_> {
        Sql::new(&self.client, self.mode)
    }

    pub async fn transaction(&mut self) -> Result<Tx<'_>, tokio_postgres::Error> {
        Tx::begin(&mut self.client, self.mode).await
    }
}

/// A transaction on either kind of connection; dropped without `commit`, it rolls back.
pub struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    mode: Mode,
}

impl<'a> Tx<'a> {
    async fn begin(client: &'a mut tokio_postgres::Client, mode: Mode) -> Result<Tx<'a>, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let settings = mode.local_settings();
        if !settings.is_empty() {
            tx.batch_execute(&settings).await?;
        }
        Ok(Tx { tx, mode })
    }

    pub fn sql(&self) -> Sql<'_> {
        Sql::new(self.tx.client(), self.mode).in_transaction()
    }

    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), tokio_postgres::Error> {
        self.tx.rollback().await
    }
}

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
pub fn discard_if_read_only(pool: &Pool, conn: Conn, error: &DbError) {
    if error.is_read_only() {
        let _ = deadpool_postgres::Object::take(conn.client);
        let closed = pool.inner.retain(|_, _| false).removed.len();
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

/// The pool the worker (and the HTTP API) run queries on.
///
/// A worker statement waits at most `database.lock_timeout_ms` for a row lock the app holds (a
/// booking row in a long transaction); the job then runs again after its lease expires instead
/// of occupying a worker slot indefinitely. Directly on PostgreSQL the setting comes with every
/// connection (startup `options`), so it costs nothing per statement; PgBouncer refuses startup
/// options, so behind it the [`Mode`] sets it with `SET LOCAL` in every transaction.
pub fn pool(cfg: &DatabaseConfig, size: usize) -> Result<Pool, DbError> {
    pool_waiting(cfg, size, None)
}

/// [`pool`], whose callers give up after `wait` for a free connection (`PoolError::Timeout`).
pub fn pool_waiting(cfg: &DatabaseConfig, size: usize, wait: Option<Duration>) -> Result<Pool, DbError> {
    let (mut pg, tls) = pg_config(cfg)?;
    let mode = Mode::pooled(cfg);
    if mode.lock_timeout_ms.is_none() {
        let lock_timeout = format!("-c lock_timeout={}", cfg.lock_timeout_ms);
        let options = match pg.get_options() {
            Some(existing) => format!("{existing} {lock_timeout}"),
            None => lock_timeout,
        };
        pg.options(options);
    }
    let manager = Manager::from_config(pg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let inner = deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        // The most recently used connection first: under light load a few connections, whose
        // statements are already prepared, serve everything.
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .wait_timeout(wait)
        .build()
        .map_err(|e| DbError::Config(e.to_string()))?;
    Ok(Pool { inner, mode })
}

/// One connection outside the pool (admin commands), its driver spawned on the runtime.
pub async fn session(cfg: &DatabaseConfig) -> Result<Session, DbError> {
    Ok(Session { client: connect(cfg).await?, mode: Mode::session(cfg) })
}

/// The connection migrations run on: `database.migration_url` (else `database.url`), always sent
/// as to PostgreSQL itself (refinery prepares statements and holds a session advisory lock).
pub async fn connect_for_migrations(cfg: &DatabaseConfig) -> Result<tokio_postgres::Client, DbError> {
    let direct = DatabaseConfig { url: cfg.migration_url().clone(), ..cfg.clone() };
    connect(&direct).await
}

/// One connection outside the pool, its driver spawned on the runtime.
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
