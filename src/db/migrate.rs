//! Schema migrations (refinery), applied under a PostgreSQL advisory lock.
//!
//! Owns the embedded `sql/migrations`, where the history is kept (`meetingd.schema_history`) and
//! what "the schema is current" means. Concurrent starts of several daemons are safe: the second
//! waits for the lock, then finds nothing to do.

use tokio_postgres::Client;

use super::{DbError, Mode, Sql};

refinery::embed_migrations!("sql/migrations");

/// Migration history table, inside meetingd's own schema.
pub const HISTORY_TABLE: &str = "meetingd.schema_history";

/// Advisory lock key ("meetingd" in ASCII) serialising migrations across processes.
const LOCK_KEY: i64 = 0x6d65_6574_696e_6764;

/// The marketplace tables meetingd works beside; migrations refuse to run without them.
const MARKETPLACE_TABLES: [&str; 3] = ["users", "services", "bookings"];

/// The newest migration version compiled into this binary.
pub fn latest_version() -> i32 {
    migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

/// How many migrations this binary carries (versions need not be contiguous: each branch of
/// work is given its own number).
pub fn embedded_count() -> usize {
    migrations::runner().get_migrations().len()
}

/// What `migrate` did.
#[derive(Debug)]
pub struct Applied {
    pub applied: Vec<String>,
    pub version: i32,
}

/// Applies every pending migration. A second run is a no-op.
pub async fn migrate(client: &mut Client) -> Result<Applied, DbError> {
    let missing = missing_marketplace_tables(Sql::new(client, Mode::DIRECT)).await?;
    if !missing.is_empty() {
        return Err(DbError::Schema(format!(
            "the marketplace tables {} are missing: meetingd runs beside the marketplace database, whose schema must exist first (sql/fixtures/marketplace.sql is the reference)",
            missing.join(", ")
        )));
    }
    // Nothing to do: touch nothing, so a daemon role without the right to create schemas (the
    // migrations are the tables' owner's to run) starts on a current schema.
    if status(Sql::new(client, Mode::DIRECT)).await?.is_current() {
        return Ok(Applied { applied: Vec::new(), version: latest_version() });
    }
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let result = async {
        client.batch_execute("CREATE SCHEMA IF NOT EXISTS meetingd").await?;
        let report = migrations::runner().set_migration_table_name(HISTORY_TABLE).run_async(client).await?;
        Ok::<_, DbError>(report.applied_migrations().iter().map(|m| m.to_string()).collect::<Vec<_>>())
    }
    .await;
    // Also released when the session ends, should this fail.
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    let applied = result?;
    unlock?;
    Ok(Applied { applied, version: latest_version() })
}

/// The schema as `check` and start-up see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Highest applied migration, `None` when meetingd's schema was never installed.
    pub applied: Option<i32>,
    /// Highest migration this binary carries.
    pub latest: i32,
    pub missing_marketplace_tables: Vec<String>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.missing_marketplace_tables.is_empty() && self.applied == Some(self.latest)
    }

    /// One sentence for a report or an error.
    pub fn explain(&self) -> String {
        match (self.applied, &self.missing_marketplace_tables) {
            (_, missing) if !missing.is_empty() => {
                format!("marketplace tables missing: {}", missing.join(", "))
            }
            (None, _) => {
                format!("meetingd's schema is not installed (binary carries V{}): run `meetingd migrate`", self.latest)
            }
            (Some(v), _) if v < self.latest => {
                format!("schema at V{v}, this binary needs V{}: run `meetingd migrate`", self.latest)
            }
            (Some(v), _) if v > self.latest => {
                format!("schema at V{v} is newer than this binary (V{}): upgrade meetingd", self.latest)
            }
            (Some(v), _) => format!("schema current at V{v}"),
        }
    }
}

pub async fn status(client: Sql<'_>) -> Result<SchemaStatus, DbError> {
    let missing_marketplace_tables = missing_marketplace_tables(client).await?;
    let history: Option<String> = client.query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE]).await?.get(0);
    let applied = match history {
        None => None,
        Some(_) => {
            client.query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[]).await?.get::<_, Option<i32>>(0)
        }
    };
    Ok(SchemaStatus { applied, latest: latest_version(), missing_marketplace_tables })
}

async fn missing_marketplace_tables(client: Sql<'_>) -> Result<Vec<String>, DbError> {
    let mut missing = Vec::new();
    for table in MARKETPLACE_TABLES {
        let found: Option<String> = client.query_one("SELECT to_regclass($1)::text", &[&table]).await?.get(0);
        if found.is_none() {
            missing.push(table.to_string());
        }
    }
    Ok(missing)
}
