//! `meetingd-soak`: two `meetingd run` daemons against a fake Google under chaos, then a check
//! that every booking ended with exactly the meeting it should have.
//!
//! This is a soak program, not a test: `cargo run --bin meetingd-soak -- --bookings 500`. It
//! exits non-zero when the end state is wrong, and prints the evidence.
//!
//! What it does:
//!
//! * starts its own throwaway PostgreSQL cluster (initdb into a temporary directory, fsync off,
//!   a free port; as the `postgres` user when run as root), because it restarts the server mid-run;
//!   the cluster is stopped and deleted at the end, also on failure, time-out or Ctrl-C;
//! * loads the reference marketplace schema, runs meetingd's migrations and seeds 20 providers, each
//!   with an online `google_meet` service and a Google connection (half of them with an access token
//!   about to expire, so refreshes happen), and N pending bookings spread over them;
//! * starts an in-process fake of Google's token endpoint and Calendar API with chaos: 503s, 429s
//!   with `Retry-After: 1`, answers slower than meetingd's HTTP time-out, lost responses (the work is
//!   done, the answer is an error) and, now and then, Meet conferences that stay pending a while;
//! * runs two `meetingd run` child processes (the binary built next to this one) and, while they
//!   work, confirms the bookings in batches, SIGKILLs a daemon every few seconds (alternating) and
//!   restarts it, crashes and restarts PostgreSQL once (`-m immediate`), terminates the LISTEN
//!   connections once, and reschedules, cancels and re-confirms random bookings; deletes two
//!   services with confirmed bookings (the bookings go with them, `ON DELETE CASCADE`) and
//!   reconnects two providers with another Google account; a few rows have NULL columns (a
//!   service without a title, bookings without a customer, bookings without a start time);
//! * stops the chaos, waits until no job is pending or leased, stops the daemons with SIGTERM and
//!   checks: every confirmed booking has exactly one live event at the fake Google, a live
//!   `meetingd.meetings` row with the booking's times, an event starting when the booking starts
//!   and the event's Meet link on the booking; every cancelled booking has neither a live event nor
//!   a live meetings row; no job is left pending or failed but those of the bookings without a
//!   start time, which failed with a sentence; no live event is left for a deleted booking
//!   (an orphan), and no meeting was reported orphaned.
//!
//! The last line is `soak: N bookings, lost=…, duplicates=…, orphans=…, stuck=…, mismatched=…: ok`
//! (or `FAILED`).

#[allow(dead_code)]
#[path = "../../tests/it/helpers/fake_google.rs"]
mod fake_google;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use clap::Parser;
use meetingd::admin::{NewIntegration, store_integration};
use meetingd::crypto::Keyring;
use meetingd::demo::{MARKETPLACE_FIXTURE, with_dbname};
use meetingd::providers::Platform;
use meetingd::providers::google::event_id;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};
use uuid::Uuid;

use fake_google::{Fail, FakeGoogle, StoredEvent};

const PROVIDERS: usize = 20;
const DAEMONS: usize = 2;
const DBNAME: &str = "meetingd_soak";
/// Tag in `bookings.notes` for the soak's bookings.
const TAG: &str = "soak";
/// Bookings without a start time: each must fail with a sentence, and nothing else may stop.
const ODD_TAG: &str = "soak-odd";
const ODD_BOOKINGS: i32 = 3;
/// Confirmed bookings of the services the chaos deletes.
const DOOMED_TAG: &str = "soak-doomed";
const DOOMED_SERVICES: usize = 2;
const DOOMED_BOOKINGS: i32 = 10;
/// Providers the chaos reconnects with another Google account.
const RECONNECTED: usize = 2;

/// meetingd's HTTP time-out towards Google, and the fake's slow answers, which exceed it.
const GOOGLE_TIMEOUT_MS: u64 = 1000;
const SLOW_ANSWER: Duration = Duration::from_millis(1500);

/// Confirmation batches, spread over the first part of the chaos.
const BATCHES: u32 = 5;
const TICK: Duration = Duration::from_millis(250);
const KILL_EVERY: Duration = Duration::from_secs(4);
const MUTATE_EVERY: Duration = Duration::from_secs(2);
const PENDING_EVERY: Duration = Duration::from_secs(3);
/// Conference-pending settings cycled through during the chaos (events.get calls before the Meet
/// link appears): 2 resolves within one attempt, 4 outlasts it and is adopted by the next.
const PENDING_CYCLE: [u32; 4] = [0, 2, 0, 4];

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
const SETTLE_REPORT_EVERY: Duration = Duration::from_secs(5);
/// The daemon's own drain deadline is 20 s (`worker.shutdown_grace_ms`).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const STATEMENT_TRIES: u32 = 5;
/// Problem bookings whose full story is printed on failure.
const EVIDENCE_LIMIT: usize = 10;

#[derive(Debug, Parser)]
#[command(
    name = "meetingd-soak",
    about = "Soak two meetingd daemons against a fake Google under chaos (kills, a PostgreSQL restart, \
             API failures) on a throwaway PostgreSQL cluster, then check every booking's meeting"
)]
struct Args {
    /// Bookings seeded and confirmed during the run.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    bookings: u32,
    /// How long the chaos phase lasts, in seconds (the settling afterwards comes on top).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(10..=3600))]
    chaos_secs: u64,
    /// Give up (and fail) after this many seconds in all.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    timeout_secs: u64,
    /// The daemons' log filter (MEETINGD_LOG), e.g. `error,meetingd=debug` to gather evidence.
    #[arg(long, default_value = "error")]
    daemon_log: String,
    /// Keep the temporary directory (stopped cluster, daemon logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let cluster = match tokio::task::block_in_place(Cluster::create) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("meetingd-soak: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let overall = Duration::from_secs(args.timeout_secs);
    let result = tokio::select! {
        r = tokio::time::timeout(overall, soak(&args, &cluster, started)) => {
            r.unwrap_or_else(|_| Err(anyhow!("the soak did not finish within {} s", overall.as_secs())))
        }
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Every daemon is dead by now (they are killed when dropped); the cluster goes last.
    if let Err(e) = tokio::task::block_in_place(|| cluster.destroy(args.keep)) {
        eprintln!("meetingd-soak: cleaning up: {e:#}");
    }
    match result {
        Ok(verdict) => {
            verdict.print(args.bookings, started.elapsed());
            if verdict.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("meetingd-soak: {e:#}");
            println!("soak: {} bookings: FAILED ({e})", args.bookings);
            ExitCode::FAILURE
        }
    }
}

/// The whole run on an already started cluster.
async fn soak(args: &Args, cluster: &Cluster, started: Instant) -> Result<Verdict> {
    println!("meetingd-soak — a soak run, not a test");
    let daemon_bin = daemon_binary()?;
    let url = cluster.create_database(DBNAME).await?;
    let mut db = Db::connect(&url).await?;
    println!("· PostgreSQL on port {} ({}); seeding {} bookings", cluster.port, cluster.root.display(), args.bookings);
    prepare_schema(db.client_mut()).await?;
    let google = FakeGoogle::start().await;
    let key = Keyring::generate_key();
    seed(&mut db, &google, &key, args.bookings).await?;

    let env = DaemonEnv {
        bin: daemon_bin,
        url,
        key,
        google: google.base(),
        log_dir: cluster.root.clone(),
        log_filter: args.daemon_log.clone(),
    };
    let mut daemons = Daemons::start(&env)?;
    daemons.wait_listening(&mut db).await?;
    println!(
        "· {DAEMONS} daemons listening after {:.1} s; chaos for {} s",
        started.elapsed().as_secs_f64(),
        args.chaos_secs
    );

    google.chaos(chaos_rules());
    let mut counters = Counters::default();
    let mut history = History::new();
    let chaos = Chaos {
        db: &mut db,
        key: &env.key,
        cluster,
        google: &google,
        daemons: &mut daemons,
        counters: &mut counters,
        history: &mut history,
    };
    chaos.run(args).await?;
    google.chaos(Vec::new());
    google.set_pending_gets(0);

    let settled = settle(&mut db, &mut daemons, &mut counters).await?;
    let exits = daemons.stop_all().await?;
    let mut check = Check::read(&mut db, &google).await?;
    check.settled = settled;
    check.daemon_trouble = daemon_trouble(&counters, &exits);
    check.print(&google);
    counters.print(db.reconnects);
    if !check.ok() {
        print_evidence(&mut db, &google, &history, &env.log_dir, &check.problems).await?;
    }
    Ok(Verdict { check })
}

// ---------------------------------------------------------------------------------------------
// The throwaway PostgreSQL cluster
// ---------------------------------------------------------------------------------------------

/// A PostgreSQL cluster of the soak's own in a temporary directory, which also holds the daemons'
/// logs. Dropping it stops the server and deletes the directory (`destroy` does so with reports).
struct Cluster {
    root: PathBuf,
    data: PathBuf,
    server_log: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL's tools run as the `postgres` user.
    as_postgres: bool,
    destroyed: bool,
}

impl Cluster {
    /// initdb into a new temporary directory and start the server on a free port.
    fn create() -> Result<Cluster> {
        let bin = pg_bindir()?;
        let as_postgres = is_root()?;
        let root = std::env::temp_dir().join(format!("meetingd-soak-{}", &Uuid::new_v4().simple().to_string()[..8]));
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let pg_dir = root.join("pg");
        let cluster = Cluster {
            data: pg_dir.join("data"),
            server_log: pg_dir.join("server.log"),
            root,
            bin,
            port: free_port()?,
            as_postgres,
            destroyed: false,
        };
        fs::create_dir(&pg_dir).with_context(|| format!("creating {}", pg_dir.display()))?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&pg_dir, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the postgres user", pg_dir.display()))?;
        }
        cluster.initdb()?;
        cluster.start()?;
        Ok(cluster)
    }

    fn initdb(&self) -> Result<()> {
        let mut initdb = self.tool("initdb");
        initdb.args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"]).arg(&self.data);
        run_tool("initdb", initdb)
    }

    /// `fsync` off (the machine does not crash, only PostgreSQL does), `synchronous_commit` on as
    /// in production: a commit that returned has its WAL with the operating system and survives
    /// the crash restart, an asynchronous one (a claim) may not.
    fn start(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on \
             -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB",
            self.port,
            self.data.display()
        );
        let mut start = self.pg_ctl();
        start.args(["-w", "-t", "60", "-o", &options, "start"]);
        run_tool("pg_ctl start", start)
    }

    /// `pg_ctl restart -m immediate`, a crash: every session is cut off, no checkpoint is made, and
    /// the server recovers from its WAL, without the asynchronously committed transactions (the
    /// daemons' claims) that were not written yet. The options of the first start are kept.
    fn restart(&self) -> Result<()> {
        let mut restart = self.pg_ctl();
        restart.args(["-w", "-t", "60", "-m", "immediate", "restart"]);
        run_tool("pg_ctl restart", restart)
    }

    fn stop(&self, mode: &str) -> Result<()> {
        let mut stop = self.pg_ctl();
        stop.args(["-w", "-t", "60", "-m", mode, "stop"]);
        run_tool("pg_ctl stop", stop)
    }

    /// Stops the server and deletes the directory (unless `keep`).
    fn destroy(mut self, keep: bool) -> Result<()> {
        self.destroyed = true;
        let stopped = self.stop("fast");
        if keep {
            println!("· kept {} (cluster stopped; daemon logs daemon-*.log)", self.root.display());
        } else {
            fs::remove_dir_all(&self.root).with_context(|| format!("deleting {}", self.root.display()))?;
        }
        stopped
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.tool("pg_ctl");
        command.arg("-D").arg(&self.data).arg("-l").arg(&self.server_log);
        command
    }

    /// A PostgreSQL tool, as the `postgres` user when the soak runs as root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        command.current_dir(&self.root).stdin(Stdio::null());
        command
    }

    fn server_url(&self, dbname: &str) -> String {
        with_dbname(&format!("postgres://postgres@127.0.0.1:{}/postgres", self.port), dbname)
    }

    /// Creates an empty database; returns its URL.
    async fn create_database(&self, dbname: &str) -> Result<String> {
        let admin = connect(&self.server_url("postgres")).await?;
        admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.context("creating the soak database")?;
        Ok(self.server_url(dbname))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.destroyed {
            // Best effort on a path that already failed: nothing more to report.
            let _ = self.stop("immediate");
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn run_tool(what: &str, mut command: Command) -> Result<()> {
    let out = command.output().with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The newest PostgreSQL server binaries under /usr/lib/postgresql (`PG_BINDIR` overrides).
fn pg_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let entries = fs::read_dir("/usr/lib/postgresql")
        .context("looking for PostgreSQL server binaries under /usr/lib/postgresql (or set PG_BINDIR)")?;
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql/*/bin (set PG_BINDIR)")
}

fn is_root() -> Result<bool> {
    Ok(id(&["-u"])? == 0)
}

fn postgres_ids() -> Result<(u32, u32)> {
    Ok((id(&["-u", "postgres"]).context("a postgres user")?, id(&["-g", "postgres"]).context("a postgres group")?))
}

/// `id <args>` as a number.
fn id(args: &[&str]) -> Result<u32> {
    let out = Command::new("id").args(args).output().context("running id")?;
    ensure!(out.status.success(), "id {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("reading the output of id {}", args.join(" ")))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

// ---------------------------------------------------------------------------------------------
// The soak's own database connection, which survives a server restart
// ---------------------------------------------------------------------------------------------

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
struct Db {
    url: String,
    client: Client,
    reconnects: u32,
}

impl Db {
    async fn connect(url: &str) -> Result<Db> {
        Ok(Db { url: url.to_string(), client: connect(url).await?, reconnects: 0 })
    }

    /// For set-up only (transactions): no reconnection.
    fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
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

    async fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let rows = self.query(sql, params).await?;
        let n = rows.len();
        rows.into_iter()
            .next()
            .filter(|_| n == 1)
            .with_context(|| format!("`{}` returned {n} rows, not 1", summary(sql)))
    }

    async fn count(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<i64> {
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

// ---------------------------------------------------------------------------------------------
// Schema and seed data
// ---------------------------------------------------------------------------------------------

/// The marketplace's tables first (meetingd's migrations refuse to run without them), then meetingd's.
async fn prepare_schema(db: &mut Client) -> Result<()> {
    db.batch_execute(MARKETPLACE_FIXTURE).await.context("loading the marketplace fixture")?;
    // Real marketplaces are looser than the reference schema.
    db.batch_execute(
        "ALTER TABLE services ALTER COLUMN title DROP NOT NULL;
         ALTER TABLE bookings ALTER COLUMN start_time DROP NOT NULL, ALTER COLUMN customer_id DROP NOT NULL",
    )
    .await
    .context("loosening the marketplace columns")?;
    meetingd::db::migrate::migrate(db).await.context("running meetingd's migrations")?;
    Ok(())
}

/// Providers with a `google_meet` service and a Google connection each, customers, and `n`
/// pending bookings round-robin over the services, one hour apart from tomorrow on.
async fn seed(db: &mut Db, google: &FakeGoogle, key: &SecretString, n: u32) -> Result<()> {
    let providers = i32::try_from(PROVIDERS).context("provider count")?;
    let customers = i32::try_from(n.min(50)).context("customer count")?;
    db.query(
        "INSERT INTO users (email, full_name, role)
         SELECT format('provider-%s@soak.example', g), format('Soak provider %s', g), 'provider'
           FROM generate_series(1, $1::int) g
         UNION ALL
         SELECT format('customer-%s@soak.example', g), format('Soak customer %s', g), 'customer'
           FROM generate_series(1, $2::int) g",
        &[&providers, &customers],
    )
    .await
    .context("seeding users")?;
    db.query(
        "INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
         SELECT id, 'Soak session', 'Online session', 60, true, 'google_meet' FROM users WHERE role = 'provider'",
        &[],
    )
    .await
    .context("seeding services")?;
    connect_providers(db, google, key).await?;
    seed_bookings(db, n).await?;
    seed_odd_rows(db).await
}

/// NULL columns: the first provider's service has no title, every 25th booking no customer, and
/// a few bookings no start time; plus the services the chaos deletes, with their own bookings.
async fn seed_odd_rows(db: &mut Db) -> Result<()> {
    db.query(
        "UPDATE services SET title = NULL
          WHERE id = (SELECT s.id FROM services s JOIN users u ON u.id = s.provider_id ORDER BY u.email LIMIT 1)",
        &[],
    )
    .await
    .context("a service without a title")?;
    db.query(
        "UPDATE bookings SET customer_id = NULL
          WHERE id IN (SELECT id FROM bookings WHERE notes = $1 ORDER BY start_time OFFSET 3 LIMIT 1000)
            AND extract(hour FROM start_time)::int % 25 = 0",
        &[&TAG],
    )
    .await
    .context("bookings without a customer")?;
    db.query(
        "INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
         SELECT (SELECT id FROM services ORDER BY id LIMIT 1), NULL, NULL,
                date_trunc('hour', now()) + make_interval(days => 2, hours => g), 'pending', $1
           FROM generate_series(1, $2::int) g",
        &[&ODD_TAG, &ODD_BOOKINGS],
    )
    .await
    .context("bookings without a start time")?;
    let doomed = i64::try_from(DOOMED_SERVICES).context("doomed services")?;
    db.query(
        "WITH p AS (SELECT id FROM users WHERE role = 'provider' ORDER BY email DESC LIMIT $1),
              s AS (INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
                    SELECT id, 'Doomed session', 'Deleted during the soak', 60, true, 'google_meet' FROM p
                    RETURNING id)
         INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
         SELECT s.id, (SELECT id FROM users WHERE role = 'customer' ORDER BY id LIMIT 1),
                date_trunc('hour', now()) + make_interval(days => 3, hours => g),
                date_trunc('hour', now()) + make_interval(days => 3, hours => g + 1), 'pending', $2
           FROM s, generate_series(1, $3::int) g",
        &[&doomed, &DOOMED_TAG, &DOOMED_BOOKINGS],
    )
    .await
    .context("the services the chaos deletes")?;
    Ok(())
}

/// A Google connection per provider, tokens issued by the fake; every other one expires in 30 s
/// (meetingd refreshes five minutes ahead, so at its first use).
async fn connect_providers(db: &mut Db, google: &FakeGoogle, key: &SecretString) -> Result<()> {
    let keyring = Keyring::new(key, &[]).context("building the keyring")?;
    let rows = db.query("SELECT id FROM users WHERE role = 'provider' ORDER BY email", &[]).await?;
    let client = db.client_mut();
    let tx = client.transaction().await.context("starting the integrations transaction")?;
    for (i, row) in rows.iter().enumerate() {
        let expires_in = if i % 2 == 0 { 3600 } else { 30 };
        let new = google_account(google, row.get(0), &format!("provider-{i}@soak.example"), expires_in);
        store(&tx, &keyring, &new).await.context("storing a Google integration")?;
    }
    tx.commit().await.context("committing the integrations")?;
    Ok(())
}

/// Stores a Google connection in the soak's own transaction.
async fn store(tx: &tokio_postgres::Transaction<'_>, keyring: &Keyring, new: &NewIntegration) -> Result<()> {
    let sql = meetingd::db::Sql::new(tx.client(), meetingd::db::Mode::DIRECT).in_transaction();
    store_integration(sql, keyring, "soak", new).await?;
    Ok(())
}

/// A Google connection of `user` to the fake's account `email`.
fn google_account(google: &FakeGoogle, user: Uuid, email: &str, expires_in: i64) -> NewIntegration {
    let (access, refresh) = google.issue_for(email);
    NewIntegration {
        user_id: user,
        platform: Platform::GoogleMeet,
        access_token: SecretString::from(access),
        refresh_token: Some(SecretString::from(refresh)),
        expires_at: Some(Utc::now() + chrono::Duration::seconds(expires_in)),
        scopes: vec!["https://www.googleapis.com/auth/calendar.events".into()],
        platform_user_id: None,
        email: Some(email.to_string()),
    }
}

/// The provider `n` (by e-mail order) connects another Google account, as a provider who
/// switches accounts on the consent screen does; their existing events stay in the first one.
async fn reconnect_provider(db: &mut Db, google: &FakeGoogle, key: &SecretString, n: usize) -> Result<String> {
    let keyring = Keyring::new(key, &[]).context("building the keyring")?;
    let offset = i64::try_from(n).context("provider index")?;
    let row = db
        .query_one("SELECT id FROM users WHERE role = 'provider' ORDER BY email OFFSET $1 LIMIT 1", &[&offset])
        .await?;
    let email = format!("second-account-{n}@soak.example");
    let new = google_account(google, row.get(0), &email, 3600);
    let client = db.client_mut();
    let tx = client.transaction().await.context("starting the reconnect")?;
    store(&tx, &keyring, &new).await.context("reconnecting a provider")?;
    tx.commit().await.context("committing the reconnect")?;
    Ok(email)
}

/// Deletes one of the doomed services; its bookings go with it. How many bookings went.
async fn delete_doomed_service(db: &mut Db) -> Result<u64> {
    let rows = db
        .query(
            "WITH gone AS (DELETE FROM services WHERE id = (SELECT id FROM services WHERE title = 'Doomed session'
                                                             ORDER BY id LIMIT 1)
                           RETURNING id)
             SELECT count(*) FROM bookings b JOIN gone ON b.service_id = gone.id",
            &[],
        )
        .await
        .context("deleting a service")?;
    Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
}

async fn seed_bookings(db: &mut Db, n: u32) -> Result<()> {
    let count = i32::try_from(n).context("--bookings")?;
    let rows = db
        .query(
            "WITH s AS (SELECT array_agg(id ORDER BY id) AS ids FROM services),
                  c AS (SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE role = 'customer')
             INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
             SELECT s.ids[1 + g % cardinality(s.ids)], c.ids[1 + g % cardinality(c.ids)],
                    date_trunc('hour', now()) + make_interval(days => 1, hours => g),
                    date_trunc('hour', now()) + make_interval(days => 1, hours => g + 1),
                    'pending', $2
               FROM s, c, generate_series(0, $1::int - 1) g
             RETURNING id",
            &[&count, &TAG],
        )
        .await
        .context("seeding bookings")?;
    ensure!(rows.len() == n as usize, "seeded {} bookings instead of {n}", rows.len());
    db.query("ANALYZE", &[]).await.context("analyzing the seeded tables")?;
    Ok(())
}

/// Random failures on every Calendar call (about 11 % in all).
fn chaos_rules() -> Vec<(f64, Fail)> {
    vec![
        (0.05, Fail::status(503, "backendError")),
        (0.03, Fail { retry_after: Some("1".into()), ..Fail::status(429, "rateLimitExceeded") }),
        // Slower than meetingd's time-out: it gives up; nothing was done.
        (0.01, Fail { delay: Some(SLOW_ANSWER), ..Fail::status(200, "slow") }),
        // Done, but the answer is lost.
        (0.02, Fail { after_work: true, ..Fail::status(502, "backendError") }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The daemons
// ---------------------------------------------------------------------------------------------

/// The `meetingd` binary built alongside this one (same target directory and profile).
fn daemon_binary() -> Result<PathBuf> {
    let path = std::env::current_exe().context("locating the soak's own executable")?.with_file_name("meetingd");
    ensure!(path.is_file(), "the daemon binary {} is missing: build it with cargo build --bins", path.display());
    Ok(path)
}

/// Everything a `meetingd run` child needs.
struct DaemonEnv {
    bin: PathBuf,
    url: String,
    key: SecretString,
    google: String,
    log_dir: PathBuf,
    log_filter: String,
}

impl DaemonEnv {
    fn log_path(&self, slot: usize) -> PathBuf {
        self.log_dir.join(format!("daemon-{}.log", slot + 1))
    }

    /// Starts `meetingd run` in `slot`; its stdout and stderr are appended to the slot's log.
    fn spawn(&self, slot: usize) -> Result<Daemon> {
        let path = self.log_path(slot);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(log, "--- meetingd-soak: starting daemon {} at {}", slot + 1, Utc::now().to_rfc3339())
            .with_context(|| format!("writing {}", path.display()))?;
        let stderr = log.try_clone().with_context(|| format!("opening {}", path.display()))?;
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        Ok(Daemon { slot, child })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("run")
            .env_remove("DATABASE_URL")
            .env_remove("MEETINGD_CONFIG")
            .env_remove("RUST_LOG")
            .env("MEETINGD_DATABASE__URL", &self.url)
            .env("MEETINGD_ENCRYPTION__KEY", self.key.expose_secret())
            .env("MEETINGD_GOOGLE__CLIENT_ID", fake_google::CLIENT_ID)
            .env("MEETINGD_GOOGLE__CLIENT_SECRET", fake_google::CLIENT_SECRET)
            .env("MEETINGD_GOOGLE__TOKEN_URL", format!("{}/token", self.google))
            .env("MEETINGD_GOOGLE__REVOKE_URL", format!("{}/revoke", self.google))
            .env("MEETINGD_GOOGLE__API_BASE_URL", format!("{}/calendar/v3/", self.google))
            .env("MEETINGD_GOOGLE__REQUEST_TIMEOUT_MS", GOOGLE_TIMEOUT_MS.to_string())
            .env("MEETINGD_GOOGLE__CONFERENCE_WAIT_MS", "1000")
            .env("MEETINGD_WORKER__CONCURRENCY", "16")
            .env("MEETINGD_LIMITS__GOOGLE_MEET__INTEGRATION_RATE", "50")
            .env("MEETINGD_LIMITS__GOOGLE_MEET__PLATFORM_RATE", "500")
            .env("MEETINGD_WORKER__MAX_ATTEMPTS", "50")
            .env("MEETINGD_WORKER__RETRY_BASE_MS", "50")
            .env("MEETINGD_WORKER__RETRY_MAX_MS", "1000")
            .env("MEETINGD_WORKER__LEASE_SECS", "5")
            .env("MEETINGD_WORKER__SWEEP_INTERVAL_MS", "500")
            .env("MEETINGD_LOG", &self.log_filter)
            .env("MEETINGD_HTTP__LISTEN", "")
            .env("MEETINGD_HTTP__METRICS_LISTEN", "");
        command
    }
}

/// One `meetingd run` child. Dropping it kills it (error paths, time-out, Ctrl-C).
struct Daemon {
    slot: usize,
    child: Child,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    fn kill(&mut self) -> Result<()> {
        self.child.kill().with_context(|| format!("killing daemon {} (pid {})", self.slot + 1, self.pid()))?;
        self.child.wait().with_context(|| format!("reaping daemon {}", self.slot + 1))?;
        Ok(())
    }

    /// `Some(status)` when it exited on its own.
    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().with_context(|| format!("checking on daemon {}", self.slot + 1))
    }

    /// SIGTERM, then wait for the graceful drain.
    async fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited()? {
            return Ok(status);
        }
        let kill =
            Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().context("running kill -TERM")?;
        ensure!(kill.success(), "kill -TERM {} failed ({kill})", self.pid());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("daemon {} did not stop within {} s of SIGTERM", self.slot + 1, STOP_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Only reached when the run already failed: nothing more to report.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The daemons of the run, one per slot.
struct Daemons<'a> {
    env: &'a DaemonEnv,
    slots: Vec<Daemon>,
}

impl<'a> Daemons<'a> {
    fn start(env: &'a DaemonEnv) -> Result<Daemons<'a>> {
        let slots = (0..DAEMONS).map(|slot| env.spawn(slot)).collect::<Result<_>>()?;
        Ok(Daemons { env, slots })
    }

    /// SIGKILL the daemon in `slot` and start a new one there; returns (old pid, new pid).
    fn kill_and_restart(&mut self, slot: usize) -> Result<(u32, u32)> {
        let old = self.slots[slot].pid();
        self.slots[slot].kill()?;
        self.slots[slot] = self.env.spawn(slot)?;
        Ok((old, self.slots[slot].pid()))
    }

    /// Restarts daemons that exited without being told to; returns what happened to them.
    fn revive(&mut self) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for slot in 0..self.slots.len() {
            if let Some(status) = self.slots[slot].exited()? {
                // Its last words, before the restarted daemon appends to the same log.
                let path = self.env.log_path(slot);
                let log = fs::read_to_string(&path).unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(5).collect();
                let last: Vec<&str> = last.into_iter().rev().collect();
                notes.push(format!(
                    "daemon {} (pid {}) exited on its own ({status}); last lines of {}:\n    {}",
                    slot + 1,
                    self.slots[slot].pid(),
                    path.display(),
                    last.join("\n    ")
                ));
                self.slots[slot] = self.env.spawn(slot)?;
            }
        }
        Ok(notes)
    }

    /// Ready means both LISTEN connections are up (a daemon listens last, after migrating).
    async fn wait_listening(&mut self, db: &mut Db) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for daemon in &mut self.slots {
                if let Some(status) = daemon.exited()? {
                    bail!(
                        "daemon {} exited at start ({status}); see {}",
                        daemon.slot + 1,
                        self.env.log_path(daemon.slot).display()
                    );
                }
            }
            let listening = db
                .count(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
                    &[],
                )
                .await?;
            if listening >= DAEMONS as i64 {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the daemons did not LISTEN within {} s", READY_TIMEOUT.as_secs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to every daemon; returns each one's exit status.
    async fn stop_all(&mut self) -> Result<Vec<ExitStatus>> {
        let mut exits = Vec::new();
        for daemon in &mut self.slots {
            exits.push(daemon.stop().await?);
        }
        Ok(exits)
    }
}

// ---------------------------------------------------------------------------------------------
// The chaos phase
// ---------------------------------------------------------------------------------------------

/// What happened during the run.
#[derive(Default)]
struct Counters {
    confirmed: u64,
    kills: u32,
    daemon_restarts: u32,
    unexpected_exits: Vec<String>,
    pg_restarts: u32,
    listen_terminated: u64,
    reschedules: u64,
    cancels: u64,
    reconfirms: u64,
    pending_switches: u32,
    services_deleted: u32,
    reconnected: u32,
}

impl Counters {
    fn print(&self, reconnects: u32) {
        println!(
            "chaos: {} confirmed, {} rescheduled, {} cancelled, {} re-confirmed; {} daemon kills ({} restarts, {} unexpected exits), \
             {} PostgreSQL restart(s), {} LISTEN connection(s) terminated, {} conference-pending switches, \
             {} service(s) deleted, {} provider(s) reconnected to another account, {} soak reconnects",
            self.confirmed,
            self.reschedules,
            self.cancels,
            self.reconfirms,
            self.kills,
            self.daemon_restarts,
            self.unexpected_exits.len(),
            self.pg_restarts,
            self.listen_terminated,
            self.pending_switches,
            self.services_deleted,
            self.reconnected,
            reconnects
        );
    }
}

/// One thing the chaos does at a point of its timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    ConfirmBatch(u32),
    Kill(usize),
    TerminateListen,
    RestartPostgres,
    Mutate,
    SwitchPending(u32),
    /// Confirms the bookings with odd rows and those of the services to be deleted.
    ConfirmOdd,
    DeleteService,
    Reconnect(usize),
}

/// When each action falls due, from the start of the chaos.
struct Timeline {
    length: Duration,
    batches_done: u32,
    next_kill: Duration,
    kills: usize,
    listen_done: bool,
    postgres_done: bool,
    next_mutation: Duration,
    next_pending: Duration,
    pending_step: usize,
    odd_done: bool,
    services_deleted: usize,
    reconnects: usize,
}

impl Timeline {
    fn new(length: Duration) -> Timeline {
        Timeline {
            length,
            batches_done: 0,
            next_kill: Duration::from_secs(3),
            kills: 0,
            listen_done: false,
            postgres_done: false,
            next_mutation: MUTATE_EVERY,
            next_pending: PENDING_EVERY,
            pending_step: 1,
            odd_done: false,
            services_deleted: 0,
            reconnects: 0,
        }
    }

    /// Confirmations over the first 60 % of the chaos; edits until 85 %.
    fn batch_gap(&self) -> Duration {
        self.length.mul_f64(0.6) / BATCHES
    }

    fn mutation_end(&self) -> Duration {
        self.length.mul_f64(0.85)
    }

    /// Mutation rounds in the whole chaos, to spread ~10 % of the bookings over them.
    fn mutation_rounds(&self) -> u32 {
        let window = self.mutation_end().saturating_sub(MUTATE_EVERY);
        (window.as_millis() / MUTATE_EVERY.as_millis()) as u32 + 1
    }

    /// The actions due at `t` (each returned once, except a LISTEN termination that found nothing).
    fn due(&mut self, t: Duration) -> Vec<Action> {
        let mut due = Vec::new();
        if self.batches_done < BATCHES && t >= self.batch_gap() * self.batches_done {
            self.batches_done += 1;
            due.push(Action::ConfirmBatch(self.batches_done));
        }
        if t >= self.next_kill {
            due.push(Action::Kill(self.kills % DAEMONS));
            self.kills += 1;
            self.next_kill += KILL_EVERY;
        }
        if !self.listen_done && t >= self.length.mul_f64(0.25) {
            due.push(Action::TerminateListen);
        }
        if !self.postgres_done && t >= self.length.mul_f64(0.45) {
            self.postgres_done = true;
            due.push(Action::RestartPostgres);
        }
        if t >= self.next_mutation && t <= self.mutation_end() {
            self.next_mutation += MUTATE_EVERY;
            due.push(Action::Mutate);
        }
        if !self.odd_done {
            self.odd_done = true;
            due.push(Action::ConfirmOdd);
        }
        // The doomed services go at 40 % and 70 %, after their meetings were made (or while).
        if self.services_deleted < DOOMED_SERVICES && t >= self.length.mul_f64(0.4 + 0.3 * self.services_deleted as f64)
        {
            self.services_deleted += 1;
            due.push(Action::DeleteService);
        }
        // Reconnects at 30 % and 55 %: later reschedules and cancels reach the first account.
        if self.reconnects < RECONNECTED && t >= self.length.mul_f64(0.3 + 0.25 * self.reconnects as f64) {
            due.push(Action::Reconnect(self.reconnects + 3));
            self.reconnects += 1;
        }
        if t >= self.next_pending {
            self.next_pending += PENDING_EVERY;
            due.push(Action::SwitchPending(PENDING_CYCLE[self.pending_step % PENDING_CYCLE.len()]));
            self.pending_step += 1;
        }
        due
    }
}

/// The chaos phase: confirmations, kills, a PostgreSQL restart, a LISTEN termination, edits.
struct Chaos<'a, 'e> {
    db: &'a mut Db,
    key: &'a SecretString,
    cluster: &'a Cluster,
    google: &'a FakeGoogle,
    daemons: &'a mut Daemons<'e>,
    counters: &'a mut Counters,
    history: &'a mut History,
}

impl Chaos<'_, '_> {
    async fn run(self, args: &Args) -> Result<()> {
        let Chaos { db, key, cluster, google, daemons, counters, history } = self;
        let length = Duration::from_secs(args.chaos_secs);
        let mut timeline = Timeline::new(length);
        let per_round =
            ((f64::from(args.bookings) * 0.10) / f64::from(timeline.mutation_rounds())).round().max(1.0) as i64;
        let batch = i64::from(args.bookings.div_ceil(BATCHES));
        let t0 = history.t0;
        let mut mutations = 0u32;
        while t0.elapsed() < length {
            for note in daemons.revive()? {
                stamp(t0, &format!("WARNING {note}; restarted"));
                counters.unexpected_exits.push(note);
                counters.daemon_restarts += 1;
            }
            for action in timeline.due(t0.elapsed()) {
                match action {
                    Action::ConfirmBatch(k) => {
                        let limit = if k == BATCHES { i64::MAX } else { batch };
                        let ids = confirm_pending(db, limit).await?;
                        history.note(&ids, "confirmed");
                        counters.confirmed += ids.len() as u64;
                        stamp(t0, &format!("confirmed batch {k}/{BATCHES}: {} bookings", ids.len()));
                    }
                    Action::Kill(slot) => {
                        let (old, new) = tokio::task::block_in_place(|| daemons.kill_and_restart(slot))?;
                        counters.kills += 1;
                        counters.daemon_restarts += 1;
                        stamp(t0, &format!("SIGKILL daemon {} (pid {old}); restarted as pid {new}", slot + 1));
                    }
                    Action::TerminateListen => {
                        let n = terminate_listeners(db).await?;
                        if n > 0 {
                            timeline.listen_done = true;
                            counters.listen_terminated += n;
                            stamp(t0, &format!("terminated {n} LISTEN connection(s)"));
                        }
                    }
                    Action::RestartPostgres => {
                        let started = Instant::now();
                        tokio::task::block_in_place(|| cluster.restart())?;
                        counters.pg_restarts += 1;
                        stamp(
                            t0,
                            &format!(
                                "PostgreSQL crashed and restarted (-m immediate, {:.1} s)",
                                started.elapsed().as_secs_f64()
                            ),
                        );
                    }
                    Action::Mutate => {
                        mutations += 1;
                        let edits = mutate(db, per_round, mutations.is_multiple_of(2)).await?;
                        history.note(&edits.rescheduled, "rescheduled");
                        history.note(&edits.cancelled, "cancelled");
                        history.note(&edits.reconfirmed, "re-confirmed");
                        counters.reschedules += edits.rescheduled.len() as u64;
                        counters.cancels += edits.cancelled.len() as u64;
                        counters.reconfirms += edits.reconfirmed.len() as u64;
                        let ready = ready_count(db).await?;
                        stamp(
                            t0,
                            &format!(
                                "rescheduled {}, cancelled {}, re-confirmed {}; {ready} bookings show a link",
                                edits.rescheduled.len(),
                                edits.cancelled.len(),
                                edits.reconfirmed.len()
                            ),
                        );
                    }
                    Action::SwitchPending(gets) => {
                        google.set_pending_gets(gets);
                        counters.pending_switches += 1;
                    }
                    Action::ConfirmOdd => {
                        let rows = db
                            .query(
                                "UPDATE bookings SET status = 'confirmed' WHERE notes IN ($1, $2) RETURNING id",
                                &[&ODD_TAG, &DOOMED_TAG],
                            )
                            .await
                            .context("confirming the odd and doomed bookings")?;
                        stamp(
                            t0,
                            &format!("confirmed {} bookings with NULL start times or of doomed services", rows.len()),
                        );
                    }
                    Action::DeleteService => {
                        let gone = delete_doomed_service(db).await?;
                        counters.services_deleted += 1;
                        stamp(t0, &format!("deleted a service and its {gone} confirmed bookings"));
                    }
                    Action::Reconnect(n) => {
                        let email = reconnect_provider(db, google, key, n).await?;
                        counters.reconnected += 1;
                        stamp(t0, &format!("provider {n} reconnected Google as {email}"));
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
        if !timeline.listen_done {
            stamp(t0, "WARNING no LISTEN connection was found to terminate");
        }
        // Whatever a short --chaos-secs left unconfirmed.
        let rest = confirm_pending(db, i64::MAX).await?;
        history.note(&rest, "confirmed");
        counters.confirmed += rest.len() as u64;
        for note in daemons.revive()? {
            counters.unexpected_exits.push(note);
            counters.daemon_restarts += 1;
        }
        stamp(t0, "chaos stopped");
        Ok(())
    }
}

/// A line of the run's log, stamped with the seconds since the chaos began and the UTC time of day
/// (to compare with the database's timestamps).
fn stamp(t0: Instant, what: &str) {
    println!("[{:6.1}s {}] {what}", t0.elapsed().as_secs_f64(), Utc::now().format("%H:%M:%S%.3f"));
}

/// What the soak itself did to each booking, and when, for the evidence.
struct History {
    t0: Instant,
    entries: HashMap<Uuid, Vec<String>>,
}

impl History {
    fn new() -> History {
        History { t0: Instant::now(), entries: HashMap::new() }
    }

    fn note(&mut self, ids: &[Uuid], what: &str) {
        let at = format!("{:.1} s ({}) {what}", self.t0.elapsed().as_secs_f64(), Utc::now().format("%H:%M:%S%.3f"));
        for id in ids {
            self.entries.entry(*id).or_default().push(at.clone());
        }
    }

    fn of(&self, id: Uuid) -> &[String] {
        self.entries.get(&id).map_or(&[], Vec::as_slice)
    }
}

async fn confirm_pending(db: &mut Db, limit: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "UPDATE bookings SET status = 'confirmed', updated_at = now()
              WHERE id IN (SELECT id FROM bookings WHERE notes = $1 AND status = 'pending'
                            ORDER BY start_time LIMIT $2)
             RETURNING id",
            &[&TAG, &limit],
        )
        .await
        .context("confirming bookings")?;
    Ok(ids(&rows))
}

async fn terminate_listeners(db: &mut Db) -> Result<u64> {
    let rows = db
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'", &[])
        .await
        .context("terminating the LISTEN connections")?;
    Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
}

struct Edits {
    rescheduled: Vec<Uuid>,
    cancelled: Vec<Uuid>,
    reconfirmed: Vec<Uuid>,
}

/// The first column of each row, a booking id.
fn ids(rows: &[Row]) -> Vec<Uuid> {
    rows.iter().map(|r| r.get(0)).collect()
}

/// Moves `n` random confirmed bookings by an hour (either way), cancels `n` others and, when
/// `reconfirm`, confirms one cancelled booking again.
async fn mutate(db: &mut Db, n: i64, reconfirm: bool) -> Result<Edits> {
    let rescheduled = db
        .query(
            "WITH shift AS (SELECT id, make_interval(hours => CASE WHEN random() < 0.5 THEN -1 ELSE 1 END) AS by
                              FROM bookings WHERE notes = $1 AND status = 'confirmed' ORDER BY random() LIMIT $2)
             UPDATE bookings b
                SET start_time = b.start_time + shift.by, end_time = b.end_time + shift.by, updated_at = now()
               FROM shift WHERE b.id = shift.id
             RETURNING b.id",
            &[&TAG, &n],
        )
        .await
        .context("rescheduling bookings")?;
    let rescheduled = ids(&rescheduled);
    let cancelled = set_random_status(db, "confirmed", "cancelled", n).await?;
    let reconfirmed = if reconfirm { set_random_status(db, "cancelled", "confirmed", 1).await? } else { Vec::new() };
    Ok(Edits { rescheduled, cancelled, reconfirmed })
}

async fn set_random_status(db: &mut Db, from: &str, to: &str, n: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "UPDATE bookings SET status = $3, updated_at = now()
              WHERE id IN (SELECT id FROM bookings WHERE notes = $1 AND status = $2 ORDER BY random() LIMIT $4)
             RETURNING id",
            &[&TAG, &from, &to, &n],
        )
        .await
        .with_context(|| format!("setting bookings {from} -> {to}"))?;
    Ok(ids(&rows))
}

async fn ready_count(db: &mut Db) -> Result<i64> {
    db.count("SELECT count(*) FROM bookings WHERE notes = $1 AND meeting_status = 'ready'", &[&TAG]).await
}

// ---------------------------------------------------------------------------------------------
// Settling
// ---------------------------------------------------------------------------------------------

/// Waits until no job is pending or leased (the daemons kept running and revived); `false` on time-out.
async fn settle(db: &mut Db, daemons: &mut Daemons<'_>, counters: &mut Counters) -> Result<bool> {
    let started = Instant::now();
    let mut next_report = Duration::ZERO;
    loop {
        for note in daemons.revive()? {
            println!("settling: WARNING {note}; restarted");
            counters.unexpected_exits.push(note);
            counters.daemon_restarts += 1;
        }
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE lease_until > now()),
                        count(*) FILTER (WHERE state = 'failed'),
                        (SELECT count(*) FROM bookings WHERE notes = $1 AND meeting_status = 'ready')
                   FROM meetingd.jobs",
                &[&TAG],
            )
            .await
            .context("reading the job queue")?;
        let (pending, leased, failed, ready): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let waited = started.elapsed();
        if pending == 0 && leased == 0 {
            println!(
                "settled after {:.1} s: no job pending or leased ({failed} failed, {ready} bookings show a link)",
                waited.as_secs_f64()
            );
            return Ok(true);
        }
        if waited >= next_report {
            println!(
                "settling: {pending} jobs pending, {leased} leased, {failed} failed; {ready} bookings show a link ({:.0} s)",
                waited.as_secs_f64()
            );
            next_report += SETTLE_REPORT_EVERY;
        }
        if waited > SETTLE_TIMEOUT {
            println!(
                "settling: gave up after {} s with {pending} jobs pending and {leased} leased",
                SETTLE_TIMEOUT.as_secs()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn daemon_trouble(counters: &Counters, exits: &[ExitStatus]) -> Vec<String> {
    let mut trouble = counters.unexpected_exits.clone();
    for (slot, status) in exits.iter().enumerate() {
        if !status.success() {
            trouble.push(format!("daemon {} exited with {status} after SIGTERM", slot + 1));
        }
    }
    trouble
}

// ---------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------

struct Booking {
    id: Uuid,
    status: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    link: Option<String>,
    meeting_status: Option<String>,
    meeting_id: Option<String>,
}

struct MeetingRow {
    state: String,
    external_id: String,
    join_url: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    generation: i32,
}

/// A live event at the fake Google, as far as the check needs it.
struct LiveEvent {
    id: String,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    link: Option<String>,
}

impl LiveEvent {
    fn from_stored(e: &StoredEvent) -> LiveEvent {
        let time = |key: &str| e.body[key]["dateTime"].as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
        let video = e.body["conferenceData"]["entryPoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|ep| ep["entryPointType"] == "video"))
            .and_then(|ep| ep["uri"].as_str());
        LiveEvent {
            id: e.body["id"].as_str().unwrap_or_default().to_string(),
            start: time("start"),
            end: time("end"),
            link: video.or_else(|| e.body["hangoutLink"].as_str()).map(str::to_string),
        }
    }
}

/// What was wrong with one booking.
struct Problem {
    booking: Uuid,
    kind: &'static str,
    detail: String,
}

#[derive(Default)]
struct Check {
    bookings: usize,
    confirmed: usize,
    cancelled: usize,
    other: usize,
    live_events: usize,
    live_rows: i64,
    /// Confirmed bookings with one live event, a live row, the right times and link.
    good: usize,
    lost: usize,
    duplicates: usize,
    /// Live events of deleted bookings, and meetings reported out of meetingd's reach.
    orphans: usize,
    /// Bookings without a start time that did not fail with a sentence.
    odd_unfailed: i64,
    mismatched: usize,
    stuck: i64,
    jobs: String,
    settled: bool,
    daemon_trouble: Vec<String>,
    problems: Vec<Problem>,
}

impl Check {
    async fn read(db: &mut Db, google: &FakeGoogle) -> Result<Check> {
        let bookings = read_bookings(db).await?;
        let meetings = read_meetings(db).await?;
        let mut events: HashMap<String, Vec<LiveEvent>> = HashMap::new();
        let live = google.live_events();
        for e in &live {
            events.entry(e.booking_id().unwrap_or_default()).or_default().push(LiveEvent::from_stored(e));
        }
        let mut check = Check {
            bookings: bookings.len(),
            live_events: live.len(),
            live_rows: db.count("SELECT count(*) FROM meetingd.meetings WHERE state = 'live'", &[]).await?,
            // The bookings without a start time fail, and stay failed: they are not stuck.
            stuck: db
                .count(
                    "SELECT count(*) FROM meetingd.jobs j WHERE state IN ('pending', 'failed')
                        AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.id = j.booking_id AND b.notes = $1)",
                    &[&ODD_TAG],
                )
                .await?,
            odd_unfailed: db
                .count(
                    "SELECT count(*) FROM bookings WHERE notes = $1
                        AND (meeting_status IS DISTINCT FROM 'failed' OR meeting_error NOT LIKE '%no start or end time%')",
                    &[&ODD_TAG],
                )
                .await?,
            orphans: db.count("SELECT count(*) FROM meetingd.orphaned_meetings", &[]).await? as usize,
            jobs: job_states(db).await?,
            ..Check::default()
        };
        for b in &bookings {
            let evs = events.remove(&b.id.to_string()).unwrap_or_default();
            check.booking(b, meetings.get(&b.id), &evs);
        }
        // Live events whose booking is gone (deleted with its service) or unknown: orphans.
        for (booking, evs) in events {
            check.orphans += evs.len();
            let ids: Vec<&str> = evs.iter().map(|e| e.id.as_str()).collect();
            println!("check: {} live event(s) for deleted or unknown booking {booking:?}: {ids:?}", evs.len());
        }
        Ok(check)
    }

    fn problem(&mut self, booking: Uuid, kind: &'static str, detail: String) {
        self.problems.push(Problem { booking, kind, detail });
    }

    fn booking(&mut self, b: &Booking, row: Option<&MeetingRow>, events: &[LiveEvent]) {
        match b.status.as_str() {
            "confirmed" => {
                self.confirmed += 1;
                self.confirmed_booking(b, row, events);
            }
            "cancelled" => {
                self.cancelled += 1;
                if !events.is_empty() {
                    self.duplicates += events.len();
                    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                    self.problem(b.id, "duplicate", format!("cancelled, yet live at the fake Google: {ids:?}"));
                }
                if let Some(r) = row.filter(|r| r.state == "live") {
                    self.mismatched += 1;
                    self.problem(
                        b.id,
                        "mismatched",
                        format!("cancelled, yet its meetings row {} is live", r.external_id),
                    );
                }
            }
            _ => self.other += 1,
        }
    }

    fn confirmed_booking(&mut self, b: &Booking, row: Option<&MeetingRow>, events: &[LiveEvent]) {
        if b.link.is_none() || events.is_empty() {
            self.lost += 1;
            let detail = format!(
                "confirmed; link {:?}, meeting_status {:?}, {} live event(s) at the fake",
                b.link,
                b.meeting_status,
                events.len()
            );
            self.problem(b.id, "lost", detail);
            return;
        }
        if events.len() > 1 {
            self.duplicates += events.len() - 1;
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            self.problem(b.id, "duplicate", format!("{} live events at the fake: {ids:?}", events.len()));
            return;
        }
        let reasons = mismatches(b, row, &events[0]);
        if reasons.is_empty() {
            self.good += 1;
        } else {
            self.mismatched += 1;
            self.problem(b.id, "mismatched", reasons.join("; "));
        }
    }

    fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.orphans == 0
            && self.odd_unfailed == 0
            && self.stuck == 0
            && self.mismatched == 0
            && self.settled
            && self.daemon_trouble.is_empty()
            && self.other == 0
    }

    fn print(&self, google: &FakeGoogle) {
        let (inserts, calls) = {
            let state = google.state.lock().unwrap();
            (state.inserts, state.calls.len())
        };
        println!(
            "check: {} bookings: {} confirmed, {} cancelled, {} other",
            self.bookings, self.confirmed, self.cancelled, self.other
        );
        println!(
            "check: fake Google holds {} live events ({inserts} inserts, {calls} Calendar calls, {} token refreshes)",
            self.live_events,
            google.refresh_calls()
        );
        println!("check: meetingd.meetings holds {} live rows; jobs: {}", self.live_rows, self.jobs);
        println!(
            "check: {} of {} confirmed bookings have exactly one live event, a live row with their times, \
             the event's start and the event's link",
            self.good, self.confirmed
        );
        println!(
            "check: lost {}, duplicates {}, orphans {}, mismatched {}, odd rows not failed {}, stuck jobs {}{}",
            self.lost,
            self.duplicates,
            self.orphans,
            self.mismatched,
            self.odd_unfailed,
            self.stuck,
            if self.settled { "" } else { " (the queue never settled)" }
        );
        for trouble in &self.daemon_trouble {
            println!("check: DAEMON {trouble}");
        }
        for p in self.problems.iter().take(50) {
            println!("problem: {} {}: {}", p.kind, p.booking, p.detail);
        }
        if self.problems.len() > 50 {
            println!("problem: … and {} more", self.problems.len() - 50);
        }
    }
}

/// Where a confirmed booking, its meetings row and its one live event disagree.
fn mismatches(b: &Booking, row: Option<&MeetingRow>, event: &LiveEvent) -> Vec<String> {
    let mut reasons = Vec::new();
    if b.meeting_status.as_deref() != Some("ready") {
        reasons.push(format!("meeting_status {:?}", b.meeting_status));
    }
    if event.start != Some(b.start) || event.end != Some(b.end) {
        reasons
            .push(format!("event {} at {:?}–{:?}, booking at {}–{}", event.id, event.start, event.end, b.start, b.end));
    }
    if event.link.is_none() || event.link != b.link {
        reasons.push(format!("event link {:?}, booking link {:?}", event.link, b.link));
    }
    match row {
        None => reasons.push("no meetings row".into()),
        Some(r) => {
            if r.state != "live" {
                reasons.push(format!("meetings row is {}", r.state));
            }
            if r.start != b.start || r.end != b.end {
                reasons.push(format!("meetings row at {}–{}, booking at {}–{}", r.start, r.end, b.start, b.end));
            }
            if r.external_id != event.id || r.external_id != event_id(b.id, r.generation) {
                reasons.push(format!(
                    "meetings row names {} (generation {}), live event is {}",
                    r.external_id, r.generation, event.id
                ));
            }
            if b.meeting_id.as_deref() != Some(r.external_id.as_str()) || b.link.as_deref() != Some(r.join_url.as_str())
            {
                reasons.push(format!(
                    "booking shows {:?} {:?}, meetings row {} {}",
                    b.meeting_id, b.link, r.external_id, r.join_url
                ));
            }
        }
    }
    reasons
}

async fn read_bookings(db: &mut Db) -> Result<Vec<Booking>> {
    let rows = db
        .query(
            "SELECT id, status, start_time, end_time, meeting_link, meeting_status, meeting_id
               FROM bookings WHERE notes = $1 ORDER BY start_time, id",
            &[&TAG],
        )
        .await
        .context("reading the bookings")?;
    Ok(rows
        .iter()
        .map(|r| Booking {
            id: r.get(0),
            status: r.get(1),
            start: r.get(2),
            end: r.get(3),
            link: r.get(4),
            meeting_status: r.get(5),
            meeting_id: r.get(6),
        })
        .collect())
}

async fn read_meetings(db: &mut Db) -> Result<HashMap<Uuid, MeetingRow>> {
    let rows = db
        .query(
            "SELECT booking_id, state, external_id, join_url, start_time, end_time, generation FROM meetingd.meetings",
            &[],
        )
        .await
        .context("reading meetingd.meetings")?;
    Ok(rows
        .iter()
        .map(|r| {
            let row = MeetingRow {
                state: r.get(1),
                external_id: r.get(2),
                join_url: r.get(3),
                start: r.get(4),
                end: r.get(5),
                generation: r.get(6),
            };
            (r.get(0), row)
        })
        .collect())
}

/// The queue at a glance.
async fn job_states(db: &mut Db) -> Result<String> {
    let rows = db
        .query("SELECT state, count(*), max(attempts) FROM meetingd.jobs GROUP BY state ORDER BY state", &[])
        .await
        .context("reading the job queue")?;
    let states: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} (max attempts {})", r.get::<_, i64>(1), r.get::<_, String>(0), r.get::<_, i32>(2)))
        .collect();
    Ok(if states.is_empty() { "none".into() } else { states.join(", ") })
}

/// The full story of the first problem bookings: rows, audit trail, the fake's events and calls,
/// and the daemon log lines naming them.
async fn print_evidence(
    db: &mut Db,
    google: &FakeGoogle,
    history: &History,
    log_dir: &Path,
    problems: &[Problem],
) -> Result<()> {
    let mut seen = Vec::new();
    for p in problems {
        if seen.contains(&p.booking) || seen.len() >= EVIDENCE_LIMIT {
            continue;
        }
        seen.push(p.booking);
        println!("evidence: booking {} ({})", p.booking, p.kind);
        for entry in history.of(p.booking) {
            println!("  soak     {entry}");
        }
        booking_rows_evidence(db, p.booking).await?;
        fake_evidence(google, p.booking);
        log_evidence(log_dir, p.booking)?;
    }
    Ok(())
}

async fn booking_rows_evidence(db: &mut Db, booking: Uuid) -> Result<()> {
    let queries: [(&str, &str); 4] = [
        (
            "booking",
            "SELECT concat_ws(' | ', status, start_time, end_time, meeting_status, meeting_id, meeting_link,
                              meeting_error, 'updated ' || updated_at)
               FROM bookings WHERE id = $1",
        ),
        (
            "job",
            "SELECT concat_ws(' | ', state, 'version ' || version, 'attempts ' || attempts, 'claim_seq ' || claim_seq,
                              lease_owner, lease_until, last_error, 'requested ' || requested_at,
                              'updated ' || updated_at, 'completed ' || completed_at)
               FROM meetingd.jobs WHERE booking_id = $1",
        ),
        (
            "meeting",
            "SELECT concat_ws(' | ', state, external_id, 'generation ' || generation, start_time, end_time, join_url,
                              created_at, linked_at, updated_at)
               FROM meetingd.meetings WHERE booking_id = $1",
        ),
        (
            "audit",
            "SELECT concat_ws(' | ', to_char(at, 'HH24:MI:SS.MS'), actor, action, platform, outcome, 'attempt ' || attempt,
                              duration_ms || ' ms', detail)
               FROM meetingd.audit_log WHERE booking_id = $1 ORDER BY id",
        ),
    ];
    for (label, sql) in queries {
        for row in db.query(sql, &[&booking]).await.with_context(|| format!("reading the {label} evidence"))? {
            println!("  {label:<8} {}", row.get::<_, String>(0));
        }
    }
    Ok(())
}

/// The fake's events of generations 1 to 10 and its calls naming them.
fn fake_evidence(google: &FakeGoogle, booking: Uuid) {
    for generation in 1..=10 {
        let id = event_id(booking, generation);
        if let Some(e) = google.event(&id) {
            let live = LiveEvent::from_stored(&e);
            println!(
                "  fake     {id} deleted={} start={:?} end={:?} link={:?}",
                e.deleted, live.start, live.end, live.link
            );
        }
    }
    let simple = booking.simple().to_string();
    for call in google.calls().iter().filter(|c| c.contains(&simple)) {
        println!("  call     {call}");
    }
}

fn log_evidence(log_dir: &Path, booking: Uuid) -> Result<()> {
    let (hyphenated, simple) = (booking.to_string(), booking.simple().to_string());
    for slot in 0..DAEMONS {
        let path = log_dir.join(format!("daemon-{}.log", slot + 1));
        let Ok(file) = File::open(&path) else { continue };
        let text = std::io::read_to_string(file).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| l.contains(&hyphenated) || l.contains(&simple)) {
            println!("  log {}   {line}", slot + 1);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The verdict
// ---------------------------------------------------------------------------------------------

struct Verdict {
    check: Check,
}

impl Verdict {
    fn ok(&self) -> bool {
        self.check.ok()
    }

    fn print(&self, bookings: u32, took: Duration) {
        let c = &self.check;
        println!("soak: finished in {:.1} s", took.as_secs_f64());
        println!(
            "soak: {bookings} bookings, lost={}, duplicates={}, orphans={}, stuck={}, mismatched={}: {}",
            c.lost,
            c.duplicates,
            c.orphans,
            c.stuck,
            c.mismatched,
            if self.ok() { "ok" } else { "FAILED" }
        );
    }
}
