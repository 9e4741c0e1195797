//! One fresh database per test on the shared server, cloned from a migrated template, and the
//! daemon's configuration for it. Every database it creates it drops again; it never touches one
//! it did not create.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use meetingd::config::Config;
use meetingd::fixtures::{MARKETPLACE_FIXTURE, with_dbname};
use secrecy::SecretString;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::cluster::admin_url;

pub struct TestDb {
    pub name: String,
    pub url: String,
}

/// A migrated test database with the reference market seeded (`market::seed`): the database
/// (keep it: dropping it ends the test's database), a client, the market and the test
/// configuration, for a test to point at its fakes.
pub struct Seeded {
    pub db: TestDb,
    pub c: Client,
    pub m: crate::market::Market,
    pub config: Config,
}

impl TestDb {
    pub async fn seeded() -> Seeded {
        let db = TestDb::migrated().await;
        let c = db.client().await;
        let m = crate::market::seed(&c).await;
        let config = db.config();
        Seeded { db, c, m, config }
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to test database");
    tokio::spawn(connection);
    client
}

impl TestDb {
    /// A database with the marketplace fixture and meetingd's schema, empty of rows.
    pub async fn migrated() -> TestDb {
        let template = template().await;
        Self::create(&format!("TEMPLATE {template}")).await
    }

    /// A database with the marketplace tables only (meetingd not installed yet).
    pub async fn marketplace_only() -> TestDb {
        let db = Self::create("").await;
        db.client().await.batch_execute(MARKETPLACE_FIXTURE).await.expect("load fixture");
        db
    }

    /// An empty database.
    pub async fn empty() -> TestDb {
        Self::create("").await
    }

    async fn create(clause: &str) -> TestDb {
        let name = format!("meetingd_test_{}", Uuid::new_v4().simple());
        let admin = connect(admin_url()).await;
        admin.batch_execute(&format!("CREATE DATABASE {name} {clause}")).await.expect("create test database");
        TestDb { url: with_dbname(admin_url(), &name), name }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// The daemon's configuration for this database: defaults, with back-off and timers short
    /// enough for tests.
    pub fn config(&self) -> Config {
        let mut c = Config::defaults();
        c.database.url = SecretString::from(self.url.clone());
        c.worker.concurrency = 4;
        c.worker.retry_base_ms = 20;
        c.worker.retry_max_ms = 100;
        c.worker.sweep_interval_ms = 1000;
        c.worker.poll_interval_ms = 50;
        c.worker.lease_secs = 5;
        c.worker.shutdown_grace_ms = 3000;
        c.worker.listen_ping_interval_ms = 1000;
        c.encryption.key = meetingd::crypto::Keyring::generate_key();
        c.http.listen = String::new();
        c.http.metrics_listen = String::new();
        // The connection monitor would call the fakes at every daemon's start; its tests drive
        // `Monitor::run_once` instead.
        c.monitor.enabled = false;
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let admin = connect(admin_url()).await;
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            });
        })
        .join();
    }
}

/// The migrated template for this build's migrations and fixture, created once per server.
async fn template() -> String {
    let mut hasher = DefaultHasher::new();
    MARKETPLACE_FIXTURE.hash(&mut hasher);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        std::fs::read_to_string(f).unwrap().hash(&mut hasher);
    }
    let name = format!("meetingd_tpl_{:016x}", hasher.finish());

    let admin = connect(admin_url()).await;
    admin.execute("SELECT pg_advisory_lock(7007)", &[]).await.unwrap();
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some();
    if !exists {
        let building = format!("{name}_building");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {building}")).await.unwrap();
        {
            let (mut client, connection) =
                tokio_postgres::connect(&with_dbname(admin_url(), &building), NoTls).await.unwrap();
            let driver = tokio::spawn(connection);
            client.batch_execute(MARKETPLACE_FIXTURE).await.unwrap();
            meetingd::db::migrate::migrate(&mut client).await.expect("migrate template");
            drop(client);
            let _ = driver.await;
        }
        // Renamed only when complete, so no test ever clones a half-built template.
        admin.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}")).await.unwrap();
    }
    admin.execute("SELECT pg_advisory_unlock(7007)", &[]).await.unwrap();
    name
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`. For waiting on a
/// daemon running in the background; logic tests drive `Worker::run_once` instead.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
