//! The soak's own database connection, which survives a server restart: a statement that fails
//! because the connection went away reconnects and runs again. It must not hide any other error.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use crate::{RECONNECT_TIMEOUT, STATEMENT_TRIES};

/// A plain connection with its driver spawned, named so its session is recognisable.
async fn connect(url: &str) -> Result<Client> {
    let mut config: tokio_postgres::Config = url.parse().context("parsing the database URL")?;
    config.application_name("meetingd-soak").connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await.context("connecting to PostgreSQL")?;
    // A closed connection shows up as the next statement's error, which reconnects.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The soak's connection: a statement that fails because the connection went away (server restart)
/// reconnects and runs again. Every statement the soak sends during the chaos may run twice.
pub struct Db {
    url: String,
    client: Client,
    pub reconnects: u32,
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db> {
        Ok(Db { url: url.to_string(), client: connect(url).await?, reconnects: 0 })
    }

    /// For set-up only (transactions): no reconnection.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    pub async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut tries = 1;
        loop {
            match self.client.query(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) if tries < STATEMENT_TRIES && lost_connection(&e) => {
                    tries += 1;
                    self.reconnect(&e).await?;
                }
                Err(e) => return Err(e).with_context(|| format!("running `{}`", summary(sql))),
            }
        }
    }

    pub async fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let rows = self.query(sql, params).await?;
        let n = rows.len();
        rows.into_iter()
            .next()
            .filter(|_| n == 1)
            .with_context(|| format!("`{}` returned {n} rows, not 1", summary(sql)))
    }

    pub async fn count(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<i64> {
        Ok(self.query_one(sql, params).await?.get(0))
    }

    async fn reconnect(&mut self, cause: &tokio_postgres::Error) -> Result<()> {
        let deadline = Instant::now() + RECONNECT_TIMEOUT;
        loop {
            match connect(&self.url).await {
                Ok(client) => {
                    self.client = client;
                    self.reconnects += 1;
                    return Ok(());
                }
                // The server is still coming back up: try again shortly.
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    return Err(e.context(format!(
                        "reconnecting for {} s after the connection was lost ({cause})",
                        RECONNECT_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }
}

/// The connection is gone (server restart, terminated session, socket error), not the statement wrong.
fn lost_connection(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code);
    }
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// The first line of a statement, for error messages.
fn summary(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    line.chars().take(80).collect()
}
