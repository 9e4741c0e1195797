//! How statements reach the server: the one seam between meetingd's SQL and the connection mode.
//!
//! Every statement meetingd sends on the marketplace database goes through [`Sql`], which takes
//! the SQL text and [`Param`]s (values that know their PostgreSQL type) and sends it the way the
//! connection allows (`database.pooler`):
//!
//! * directly to PostgreSQL (`none`): a pooled connection prepares each statement once and reuses
//!   it (deadpool's statement cache); a connection outside the pool prepares it per call, as
//!   tokio-postgres does. Session settings come with the connection (`lock_timeout` in the
//!   startup packet).
//! * through PgBouncer in transaction mode (`pgbouncer-transaction`): each statement is the
//!   unnamed one, sent as Parse+Bind+Describe+Execute+Sync in one batch with the parameter types
//!   given (`query_typed`), so nothing outlives it on a server connection that other clients
//!   share next. The startup packet carries no `options` (PgBouncer refuses them), so a pooled
//!   statement outside a transaction is sent as `BEGIN; SET LOCAL lock_timeout …`, the statement
//!   and `COMMIT`, queued together: one round trip still.
//!
//! Result columns must be of built-in types (cast the marketplace's own types to `text`): an
//! unknown type would be looked up with a prepared statement.

use deadpool_postgres::StatementCache;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Error, Row};

use crate::config::{DatabaseConfig, Pooler};

/// A statement parameter: a value and the PostgreSQL type it is sent as.
pub trait Param: ToSql + Sync {
    fn pg_type(&self) -> Type;
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

/// The PostgreSQL type a Rust type is sent as, and the type of an array of it.
pub trait Typed {
    const TYPE: Type;
    const ARRAY: Type;
}

impl<T: ToSql + Sync + Typed> Param for T {
    fn pg_type(&self) -> Type {
        T::TYPE
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

macro_rules! typed {
    ($($t:ty => $ty:ident, $array:ident;)*) => {
        $(impl Typed for $t {
            const TYPE: Type = Type::$ty;
            const ARRAY: Type = Type::$array;
        })*
    };
}

typed! {
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    str => TEXT, TEXT_ARRAY;
    String => TEXT, TEXT_ARRAY;
    uuid::Uuid => UUID, UUID_ARRAY;
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    serde_json::Value => JSONB, JSONB_ARRAY;
}

impl<T: Typed + ?Sized> Typed for &T {
    const TYPE: Type = T::TYPE;
    const ARRAY: Type = T::ARRAY;
}

impl<T: Typed> Typed for Option<T> {
    const TYPE: Type = T::TYPE;
    const ARRAY: Type = T::ARRAY;
}

/// Arrays of arrays are not sent.
impl<T: Typed> Typed for Vec<T> {
    const TYPE: Type = T::ARRAY;
    const ARRAY: Type = Type::UNKNOWN;
}

impl<T: Typed> Typed for [T] {
    const TYPE: Type = T::ARRAY;
    const ARRAY: Type = Type::UNKNOWN;
}

/// How a connection's statements are sent; set from `database.pooler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Unnamed statements with their parameter types, nothing kept on the server connection.
    pub unnamed: bool,
    /// `lock_timeout` (ms) to set with `SET LOCAL` in every transaction: a pooled connection
    /// behind a transaction pooler, which cannot carry it as a session setting.
    pub lock_timeout_ms: Option<u64>,
}

impl Mode {
    /// Statements prepared as tokio-postgres does (a connection to PostgreSQL itself).
    pub const DIRECT: Mode = Mode { unnamed: false, lock_timeout_ms: None };

    /// The mode of a connection outside the pool (admin commands).
    pub fn session(cfg: &DatabaseConfig) -> Mode {
        Mode { unnamed: cfg.pooler == Pooler::PgbouncerTransaction, lock_timeout_ms: None }
    }

    /// The mode of a pooled connection.
    pub fn pooled(cfg: &DatabaseConfig) -> Mode {
        match cfg.pooler {
            Pooler::None => Mode::DIRECT,
            Pooler::PgbouncerTransaction => Mode { unnamed: true, lock_timeout_ms: Some(cfg.lock_timeout_ms) },
        }
    }

    /// `SET LOCAL …` for the start of a transaction ("" when the session already has its settings).
    pub fn local_settings(&self) -> String {
        match self.lock_timeout_ms {
            Some(ms) => format!("SET LOCAL lock_timeout = {ms}"),
            None => String::new(),
        }
    }
}

/// Where statements go: a connection (or transaction) and how to send on it. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Sql<'a> {
    client: &'a Client,
    cache: Option<&'a StatementCache>,
    mode: Mode,
    in_transaction: bool,
}

impl<'a> Sql<'a> {
    /// A connection outside the pool, or one whose statements are not cached.
    pub fn new(client: &'a Client, mode: Mode) -> Sql<'a> {
        Sql { client, cache: None, mode, in_transaction: false }
    }

    /// A pooled connection: statements are prepared once per connection (direct mode only).
    pub fn cached(client: &'a Client, cache: &'a StatementCache, mode: Mode) -> Sql<'a> {
        Sql { client, cache: Some(cache), mode, in_transaction: false }
    }

    /// The same connection inside a transaction the caller opened.
    pub fn in_transaction(self) -> Sql<'a> {
        Sql { in_transaction: true, ..self }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, Error> {
        if self.mode.unnamed {
            let typed = typed(params);
            return self.around(self.client.query_typed(sql, &typed)).await;
        }
        let untyped = untyped(params);
        match self.cache {
            Some(cache) => self.client.query(&cache.prepare(self.client, sql).await?, &untyped).await,
            None => self.client.query(sql, &untyped).await,
        }
    }

    pub async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, Error> {
        if self.mode.unnamed {
            let typed = typed(params);
            return self.around(self.client.query_typed_one(sql, &typed)).await;
        }
        let untyped = untyped(params);
        match self.cache {
            Some(cache) => self.client.query_one(&cache.prepare(self.client, sql).await?, &untyped).await,
            None => self.client.query_one(sql, &untyped).await,
        }
    }

    pub async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, Error> {
        if self.mode.unnamed {
            let typed = typed(params);
            return self.around(self.client.query_typed_opt(sql, &typed)).await;
        }
        let untyped = untyped(params);
        match self.cache {
            Some(cache) => self.client.query_opt(&cache.prepare(self.client, sql).await?, &untyped).await,
            None => self.client.query_opt(sql, &untyped).await,
        }
    }

    /// Rows affected (for a statement that returns none).
    pub async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, Error> {
        if self.mode.unnamed {
            let typed = typed(params);
            let run = async {
                let stream = self.client.query_typed_raw(sql, typed).await?;
                futures_util::pin_mut!(stream);
                while futures_util::TryStreamExt::try_next(&mut stream).await?.is_some() {}
                Ok(stream.rows_affected().unwrap_or(0))
            };
            return self.around(run).await;
        }
        let untyped = untyped(params);
        match self.cache {
            Some(cache) => self.client.execute(&cache.prepare(self.client, sql).await?, &untyped).await,
            None => self.client.execute(sql, &untyped).await,
        }
    }

    /// Statements without parameters, sent as one simple query (no statement is prepared).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).await
    }

    /// `run` (one statement, already built) as it must be sent: inside the caller's transaction
    /// as it is; outside one, on a pooled connection behind a transaction pooler, between
    /// `BEGIN; SET LOCAL …` and `COMMIT`, queued together (see [`Sql::in_own_transaction`]).
    async fn around<T>(&self, run: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        if self.in_transaction || self.mode.lock_timeout_ms.is_none() {
            return run.await;
        }
        let begin = format!("BEGIN; {}", self.mode.local_settings());
        let (begun, result, committed) =
            futures_util::join!(self.client.batch_execute(&begin), run, self.client.batch_execute("COMMIT"));
        begun?;
        let result = result?;
        committed?;
        Ok(result)
    }

    /// Runs one statement in a transaction of its own with `settings` (`SET LOCAL …`), in one
    /// round trip: BEGIN, the settings, the statement and COMMIT are queued on the connection
    /// together (a statement to prepare is prepared first). `join!`, not `try_join!`, so BEGIN
    /// is never sent without the COMMIT that ends it; after a failed statement that COMMIT rolls
    /// back, and the connection goes back to the pool outside any transaction, with its own
    /// settings.
    pub async fn in_own_transaction(
        &self,
        settings: &str,
        sql: &str,
        params: &[&dyn Param],
    ) -> Result<Vec<Row>, Error> {
        let local = self.mode.local_settings();
        let begin = ["BEGIN", settings, &local].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ");
        let untyped = untyped(params);
        let typed = typed(params);
        let statement = match (self.mode.unnamed, self.cache) {
            (false, Some(cache)) => Some(cache.prepare(self.client, sql).await?),
            (false, None) => Some(self.client.prepare(sql).await?),
            (true, _) => None,
        };
        let run = async {
            match &statement {
                Some(statement) => self.client.query(statement, &untyped).await,
                None => self.client.query_typed(sql, &typed).await,
            }
        };
        let (begun, rows, committed) =
            futures_util::join!(self.client.batch_execute(&begin), run, self.client.batch_execute("COMMIT"));
        begun?;
        let rows = rows?;
        committed?;
        Ok(rows)
    }
}

fn typed<'p>(params: &[&'p dyn Param]) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p.as_sql(), p.pg_type())).collect()
}

fn untyped<'p>(params: &[&'p dyn Param]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_sql()).collect()
}
