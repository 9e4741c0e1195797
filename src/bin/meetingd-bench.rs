//! `meetingd-bench`: how fast the `meetingd` daemon turns confirmed bookings into meeting links.
//!
//! This is a benchmark, not a test: it measures and reports, and fails only when the daemon's
//! result is wrong (a booking without exactly one live meeting), never because a figure is slow.
//!
//! Each run gets its own scratch database on the PostgreSQL server named by `DATABASE_URL`: the
//! reference marketplace schema, meetingd's migrations, and set-based seed data (providers with an
//! online Jitsi service, customers, pending bookings). The `meetingd` binary built next to this
//! one runs against it as a child process, exactly as in production. Then:
//!
//! * burst: N bookings confirmed by one statement; throughput, commit-to-link latency, the
//!   daemon's peak RSS and the database transactions it spends per booking;
//! * sequential: M further bookings confirmed one at a time, each waited for before the next (on
//!   the daemon's `meeting_ready` notification, as the app would); commit-to-link latency of a
//!   daemon that is not busy, right after the burst (the queue's indexes still hold the burst's
//!   dead entries);
//! * settled: after `VACUUM ANALYZE` (what autovacuum does within a minute of the burst), M more
//!   bookings one at a time;
//! * slow platform: L bookings of Google Meet services, confirmed by one statement, against an
//!   in-process fake of Google Calendar that takes `--provider-latency-ms` to answer every call
//!   (rate limits lifted): throughput against the bound `worker.concurrency / latency`.
//!
//! Before the burst, the idle daemon's CPU use is sampled from /proc for a few seconds.
//!
//! Latencies come from database timestamps only: from `meetingd.jobs.requested_at` (set by the
//! trigger while the confirmation is recorded) to `meetingd.meetings.linked_at` (set when the link
//! is written back), so the bench's own polling interval does not enter them. Jitsi rooms need no
//! network call, so the burst and sequential figures are meetingd's and PostgreSQL's own.

#[allow(dead_code)]
#[path = "../../tests/it/helpers/fake_google.rs"]
mod fake_google;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use fake_google::FakeGoogle;
use meetingd::admin::{NewIntegration, store_integration};
use meetingd::crypto::Keyring;
use meetingd::demo::{MARKETPLACE_FIXTURE, with_dbname};
use meetingd::providers::Platform;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const READY_POLL: Duration = Duration::from_millis(20);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BURST_POLL: Duration = Duration::from_millis(20);
const BURST_TIMEOUT: Duration = Duration::from_secs(600);
/// The sequential phase waits for the daemon's `meeting_ready` notification; polling is only
/// the backstop, slow enough not to compete with the daemon for the CPU.
const SEQUENTIAL_POLL: Duration = Duration::from_millis(50);
const SEQUENTIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// The daemon's own drain deadline is 20 s by default (`worker.shutdown_grace_ms`).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// PostgreSQL (15+) flushes a busy backend's statistics at most once a second and an idle
/// backend's pending counters only after 10 s idle, so `xact_commit` is final only after this.
const STATS_SETTLE: Duration = Duration::from_millis(11_500);
/// Longer than PostgreSQL's minimum interval between two statistics flushes of one backend.
const STATS_MIN_INTERVAL: Duration = Duration::from_millis(1_100);

/// Tags in `bookings.notes` telling the two phases' bookings apart.
const BURST_TAG: &str = "bench:burst";
const SEQUENTIAL_TAG: &str = "bench:sequential";
const SETTLED_TAG: &str = "bench:settled";
const SLOW_TAG: &str = "bench:slow";
const BURST_SERVICE: &str = "Bench burst session";
const SEQUENTIAL_SERVICE: &str = "Bench sequential session";
const SLOW_SERVICE: &str = "Bench slow-platform session";
/// Providers of the slow-platform phase, each with a Google connection.
const SLOW_PROVIDERS: i32 = 20;
/// How long the idle daemon's CPU use is sampled.
const IDLE_SAMPLE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "meetingd-bench",
    about = "Benchmark meetingd (run as a child process) against scratch databases on DATABASE_URL's server"
)]
struct Args {
    /// Bookings confirmed at once by one statement (burst phase).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    bookings: u32,
    /// Bookings confirmed one at a time afterwards, each waited for (sequential phase); as many
    /// again once the database has settled (settled phase).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sequential: u32,
    /// Providers the burst bookings are spread across, each with one online service.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    providers: u32,
    /// The daemon's worker.concurrency (its default, 32, unless given).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Google Meet bookings confirmed at once against the slow fake platform (0 skips that phase).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    slow_bookings: u32,
    /// How long the fake platform takes to answer each call in the slow-platform phase.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    provider_latency_ms: u64,
    /// Repetitions, each on a fresh scratch database and a fresh daemon.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Keep the scratch databases (their names are printed).
    #[arg(long)]
    keep: bool,
    /// The daemon's log filter (MEETINGD_LOG); its log goes to the bench's standard error.
    #[arg(long, default_value = "warn")]
    daemon_log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("meetingd-bench: FAILED: not every booking ended with exactly one live meeting of its own");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("meetingd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// All runs; `Ok(false)` when a run's check failed.
async fn bench(args: &Args) -> Result<bool> {
    let server_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_string());
    let daemon_bin = daemon_binary()?;
    let admin = connect(&server_url).await.context(
        "the bench needs a PostgreSQL server (set DATABASE_URL, default postgres://postgres@127.0.0.1:5432)",
    )?;
    print_header(&admin, args).await?;

    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let figures =
            scratch_run(&admin, &server_url, &daemon_bin, args).await.with_context(|| format!("run {run}"))?;
        figures.print(run);
        runs.push(figures);
    }
    if runs.len() > 1 {
        print_summary(&runs);
    }
    Ok(runs.iter().all(|r| r.check.ok()))
}

/// The `meetingd` binary built alongside this one (same target directory and profile).
fn daemon_binary() -> Result<PathBuf> {
    let path = std::env::current_exe().context("locating the bench's own executable")?.with_file_name("meetingd");
    if !path.is_file() {
        bail!(
            "the daemon binary {} is missing: build it with cargo build --release (or cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A plain connection with its driver spawned, named so its sessions are recognisable.
async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = pg_config(url)?.connect(NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("meetingd-bench: database connection closed: {e}");
        }
    });
    Ok(client)
}

fn pg_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config =
        url.parse().context("DATABASE_URL is not a PostgreSQL connection string")?;
    config.application_name("meetingd-bench");
    Ok(config)
}

async fn print_header(admin: &Client, args: &Args) -> Result<()> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).context("counting CPUs")?;
    let model = cpu_model().map(|m| format!(" ({m})")).unwrap_or_default();
    let version: String =
        admin.query_one("SHOW server_version", &[]).await.context("reading the server version")?.get(0);
    println!("meetingd-bench — a benchmark, not a test");
    println!("machine     nproc {cpus}{model}; PostgreSQL {version}");
    println!(
        "workload    burst N={} over {} providers, sequential M={}, slow platform L={} at {} ms, concurrency {}, runs {}",
        args.bookings,
        args.providers,
        args.sequential,
        args.slow_bookings,
        args.provider_latency_ms,
        args.concurrency,
        args.runs
    );
    Ok(())
}

/// Best effort: the CPU model name from /proc/cpuinfo.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// One run on its own scratch database, dropped afterwards (also on error or Ctrl-C) unless `--keep`.
async fn scratch_run(admin: &Client, server_url: &str, daemon_bin: &Path, args: &Args) -> Result<RunFigures> {
    let dbname = format!("meetingd_bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
    admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.context("creating the scratch database")?;
    let url = with_dbname(server_url, &dbname);
    let result = tokio::select! {
        r = measure(&url, daemon_bin, args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if args.keep {
        eprintln!("kept database {dbname}");
        return result;
    }
    let dropped = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping the scratch database {dbname}"));
    match (result, dropped) {
        (Ok(figures), Ok(())) => Ok(figures),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(drop_error)) => {
            eprintln!("meetingd-bench: {drop_error:#}");
            Err(e)
        }
    }
}

/// Everything one run measured.
struct RunFigures {
    burst: Latency,
    /// Bookings per second, from the first confirmation to the last link (database clock).
    burst_rate: f64,
    /// Database transactions committed per burst booking, the bench's own excluded.
    tx_per_booking: f64,
    sequential: Latency,
    settled: Latency,
    slow: Option<Slow>,
    /// CPU the idle daemon used, in % of one core.
    idle_cpu_pct: f64,
    idle_rss_kb: u64,
    peak_rss_kb: u64,
    check: Check,
    daemon_exit: ExitStatus,
}

async fn measure(url: &str, daemon_bin: &Path, args: &Args) -> Result<RunFigures> {
    let mut db = connect(url).await?;
    eprintln!(
        "· loading the marketplace schema, migrating, seeding {} + 2 × {} bookings",
        args.bookings, args.sequential
    );
    prepare_schema(&mut db).await?;
    let (sequential_ids, settled_ids) = seed(&db, args).await?;
    let google = FakeGoogle::start().await;
    google.state.lock().map_err(|_| anyhow!("the fake platform's state is poisoned"))?.latency =
        Some(Duration::from_millis(args.provider_latency_ms));
    let key = Keyring::generate_key();
    if args.slow_bookings > 0 {
        seed_slow(&mut db, &google, &key, args.slow_bookings).await?;
    }

    let started = Instant::now();
    let mut daemon = Daemon::start(daemon_bin, url, args, &key, &google.base())?;
    daemon.wait_listening(&db).await?;
    let idle_rss_kb = daemon.proc_status_kb("VmRSS")?;
    eprintln!(
        "· meetingd (pid {}) listening after {} ms; sampling its idle CPU for {} s",
        daemon.pid,
        started.elapsed().as_millis(),
        IDLE_SAMPLE.as_secs()
    );
    let idle_cpu_pct = daemon.idle_cpu_pct(IDLE_SAMPLE).await?;
    eprintln!("· burst of {}", args.bookings);

    let burst = run_burst(&db, &mut daemon, args.bookings).await?;
    eprintln!("· sequential: {} bookings one at a time", sequential_ids.len());
    let sequential = run_sequential(&db, url, &mut daemon, SEQUENTIAL_TAG, &sequential_ids).await?;
    eprintln!("· settled: VACUUM ANALYZE, then {} more bookings one at a time", settled_ids.len());
    db.batch_execute("VACUUM ANALYZE").await.context("vacuuming the scratch database")?;
    let settled = run_sequential(&db, url, &mut daemon, SETTLED_TAG, &settled_ids).await?;
    let peak_rss_kb = daemon.proc_status_kb("VmHWM")?.max(daemon.max_rss_kb);
    let slow = if args.slow_bookings > 0 {
        eprintln!(
            "· slow platform: {} Google Meet bookings at {} ms a call",
            args.slow_bookings, args.provider_latency_ms
        );
        Some(run_slow(&db, &mut daemon, args).await?)
    } else {
        None
    };
    let expected = u64::from(args.bookings) + 2 * u64::from(args.sequential) + u64::from(args.slow_bookings);
    let check = Check::read(&db, expected).await?;
    let daemon_exit = daemon.stop().await?;
    Ok(RunFigures {
        burst: burst.latency,
        burst_rate: burst.rate,
        tx_per_booking: burst.tx_per_booking,
        sequential,
        settled,
        slow,
        idle_cpu_pct,
        idle_rss_kb,
        peak_rss_kb,
        check,
        daemon_exit,
    })
}

/// The marketplace's tables first (meetingd's migrations refuse to run without them), then meetingd's.
async fn prepare_schema(db: &mut Client) -> Result<()> {
    db.batch_execute(MARKETPLACE_FIXTURE).await.context("loading the marketplace fixture")?;
    meetingd::db::migrate::migrate(db).await.context("running meetingd's migrations")?;
    Ok(())
}

/// Seeds providers, services, customers and every phase's pending bookings, set-based; returns the
/// sequential and the settled bookings' ids in confirmation order.
async fn seed(db: &Client, args: &Args) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let providers = i32::try_from(args.providers).context("--providers")?;
    let burst = i32::try_from(args.bookings).context("--bookings")?;
    let sequential = i32::try_from(args.sequential).context("--sequential")?;
    let customers = (burst + sequential).min(1_000);

    db.execute(
        "INSERT INTO users (email, full_name, role)
         SELECT format('provider-%s@bench.example', g), format('Bench provider %s', g), 'provider'
           FROM generate_series(1, $1::int) g
         UNION ALL
         SELECT 'sequential-provider@bench.example', 'Bench sequential provider', 'provider'
         UNION ALL
         SELECT format('customer-%s@bench.example', g), format('Bench customer %s', g), 'customer'
           FROM generate_series(1, $2::int) g",
        &[&providers, &customers],
    )
    .await
    .context("seeding users")?;
    db.execute(
        "INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
         SELECT id, CASE WHEN email = 'sequential-provider@bench.example' THEN $1 ELSE $2 END,
                'Online session', 60, true, 'jitsi'
           FROM users WHERE role = 'provider'",
        &[&SEQUENTIAL_SERVICE, &BURST_SERVICE],
    )
    .await
    .context("seeding services")?;

    seed_bookings(db, BURST_SERVICE, BURST_TAG, burst, 1).await?;
    // Further in the future than any burst booking, so the two phases never share a slot.
    let sequential_day = 2 + burst / 24;
    seed_bookings(db, SEQUENTIAL_SERVICE, SEQUENTIAL_TAG, sequential, sequential_day).await?;
    seed_bookings(db, SEQUENTIAL_SERVICE, SETTLED_TAG, sequential, sequential_day + 1 + sequential / 24).await?;
    db.batch_execute("ANALYZE").await.context("analyzing the seeded tables")?;

    let ids = |tag: &'static str| async move {
        let rows = db
            .query("SELECT id FROM bookings WHERE notes = $1 ORDER BY start_time, id", &[&tag])
            .await
            .with_context(|| format!("listing the {tag} bookings"))?;
        Ok::<Vec<Uuid>, anyhow::Error>(rows.iter().map(|r| r.get(0)).collect())
    };
    Ok((ids(SEQUENTIAL_TAG).await?, ids(SETTLED_TAG).await?))
}

/// `count` pending bookings of the services titled `service`, round-robin over those services and
/// the customers, one hour apart from `first_day` days ahead.
async fn seed_bookings(db: &Client, service: &str, tag: &str, count: i32, first_day: i32) -> Result<()> {
    let inserted = db
        .execute(
            "WITH s AS (SELECT array_agg(id ORDER BY id) AS ids FROM services WHERE title = $1),
                  c AS (SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE role = 'customer')
             INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
             SELECT s.ids[1 + g % cardinality(s.ids)], c.ids[1 + g % cardinality(c.ids)],
                    date_trunc('hour', now()) + make_interval(days => $4::int, hours => g),
                    date_trunc('hour', now()) + make_interval(days => $4::int, hours => g + 1),
                    'pending', $2
               FROM s, c, generate_series(0, $3::int - 1) g",
            &[&service, &tag, &count, &first_day],
        )
        .await
        .with_context(|| format!("seeding the {tag} bookings"))?;
    ensure!(inserted == count as u64, "seeded {inserted} {tag} bookings instead of {count}");
    Ok(())
}

/// Providers with a Google Meet service and a Google connection at the fake, and `n` pending
/// bookings of those services, after every other phase's.
async fn seed_slow(db: &mut Client, google: &FakeGoogle, key: &SecretString, n: u32) -> Result<()> {
    let providers = db
        .query(
            "INSERT INTO users (email, full_name, role)
             SELECT format('slow-provider-%s@bench.example', g), format('Bench slow provider %s', g), 'provider'
               FROM generate_series(1, $1::int) g
             RETURNING id",
            &[&SLOW_PROVIDERS],
        )
        .await
        .context("seeding the slow-platform providers")?;
    db.execute(
        "INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
         SELECT id, $1, 'Online session', 60, true, 'google_meet'
           FROM users WHERE email LIKE 'slow-provider-%'",
        &[&SLOW_SERVICE],
    )
    .await
    .context("seeding the slow-platform services")?;
    let keyring = Keyring::new(key, &[]).context("building the keyring")?;
    let tx = db.transaction().await.context("starting the integrations transaction")?;
    for (i, row) in providers.iter().enumerate() {
        let (access, refresh) = google.issue();
        let new = NewIntegration {
            user_id: row.get(0),
            platform: Platform::GoogleMeet,
            access_token: SecretString::from(access),
            refresh_token: Some(SecretString::from(refresh)),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(2)),
            scopes: vec!["https://www.googleapis.com/auth/calendar.events".into()],
            platform_user_id: None,
            email: Some(format!("slow-provider-{i}@bench.example")),
        };
        store_integration(
            meetingd::db::Sql::new(tx.client(), meetingd::db::Mode::DIRECT).in_transaction(),
            &keyring,
            "bench",
            &new,
        )
        .await
        .context("storing a Google integration")?;
    }
    tx.commit().await.context("committing the integrations")?;
    let count = i32::try_from(n).context("--slow-bookings")?;
    let last_day: i32 =
        db.query_one("SELECT (max(start_time)::date - now()::date)::int FROM bookings", &[]).await?.get(0);
    seed_bookings(db, SLOW_SERVICE, SLOW_TAG, count, last_day + 2).await?;
    db.batch_execute("ANALYZE").await.context("analyzing the seeded tables")?;
    Ok(())
}

/// The slow-platform phase's figures.
struct Slow {
    latency: Latency,
    rate: f64,
    /// `worker.concurrency / latency`: what the worker could do at best.
    bound: f64,
}

/// Confirms every slow-platform booking in one statement and waits until all are linked.
async fn run_slow(db: &Client, daemon: &mut Daemon, args: &Args) -> Result<Slow> {
    let confirmed = db
        .execute("UPDATE bookings SET status = 'confirmed' WHERE status = 'pending' AND notes = $1", &[&SLOW_TAG])
        .await
        .context("confirming the slow-platform bookings")?;
    ensure!(confirmed == u64::from(args.slow_bookings), "confirmed {confirmed} slow-platform bookings");
    let ready = db
        .prepare("SELECT count(*) FROM bookings WHERE meeting_status = 'ready' AND notes = $1")
        .await
        .context("preparing the slow-platform poll")?;
    let deadline = Instant::now() + BURST_TIMEOUT;
    loop {
        daemon.ensure_running()?;
        let linked: i64 = db.query_one(&ready, &[&SLOW_TAG]).await.context("counting ready bookings")?.get(0);
        if linked >= i64::from(args.slow_bookings) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {linked} slow-platform bookings were linked after {} s; jobs: {}",
                BURST_TIMEOUT.as_secs(),
                job_states(db).await?
            );
        }
        tokio::time::sleep(BURST_POLL).await;
    }
    let latency = Latency::read(db, SLOW_TAG).await?;
    Ok(Slow {
        rate: f64::from(args.slow_bookings) / latency.span_secs,
        bound: f64::from(args.concurrency) / (args.provider_latency_ms as f64 / 1000.0),
        latency,
    })
}

/// The daemon as a child process. Dropping it without `stop` kills it (error paths, Ctrl-C).
struct Daemon {
    child: Child,
    pid: u32,
    /// Highest VmRSS sampled so far.
    max_rss_kb: u64,
}

impl Daemon {
    /// `key` encrypts the scratch database's tokens; `google` is the fake platform's base URL.
    fn start(bin: &Path, url: &str, args: &Args, key: &SecretString, google: &str) -> Result<Daemon> {
        let mut command = Command::new(bin);
        command
            .arg("run")
            .env_remove("MEETINGD_CONFIG")
            .env_remove("MEETINGD_ENCRYPTION__KEY_FILE")
            .env("MEETINGD_DATABASE__URL", url)
            .env("MEETINGD_ENCRYPTION__KEY", key.expose_secret())
            .env("MEETINGD_LOG", &args.daemon_log)
            // The benchmark measures the worker; it needs neither the API nor the metrics port.
            .env("MEETINGD_HTTP__LISTEN", "")
            .env("MEETINGD_HTTP__METRICS_LISTEN", "")
            .env("MEETINGD_WORKER__CONCURRENCY", args.concurrency.to_string())
            // Google Meet at the bench's fake, with its rate limits lifted: the slow-platform
            // phase measures the worker against the platform's latency, not the token buckets.
            .env("MEETINGD_GOOGLE__CLIENT_ID", fake_google::CLIENT_ID)
            .env("MEETINGD_GOOGLE__CLIENT_SECRET", fake_google::CLIENT_SECRET)
            .env("MEETINGD_GOOGLE__TOKEN_URL", format!("{google}/token"))
            .env("MEETINGD_GOOGLE__REVOKE_URL", format!("{google}/revoke"))
            .env("MEETINGD_GOOGLE__API_BASE_URL", format!("{google}/calendar/v3/"))
            .env("MEETINGD_LIMITS__GOOGLE_MEET__INTEGRATION_RATE", "100000")
            .env("MEETINGD_LIMITS__GOOGLE_MEET__INTEGRATION_BURST", "100000")
            .env("MEETINGD_LIMITS__GOOGLE_MEET__PLATFORM_RATE", "100000")
            .env("MEETINGD_LIMITS__GOOGLE_MEET__PLATFORM_BURST", "100000");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its warnings and errors show up in the bench's output, which is where they are wanted.
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        Ok(Daemon { child, pid, max_rss_kb: 0 })
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("checking on meetingd")? {
            bail!("meetingd exited unexpectedly ({status}); its log is above");
        }
        Ok(())
    }

    /// Ready means its LISTEN connection is up (it listens last, after migrating and opening its pool).
    async fn wait_listening(&mut self, db: &Client) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let listening = db
            .prepare(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .await?;
        loop {
            self.ensure_running()?;
            let sessions: i64 = db.query_one(&listening, &[]).await.context("reading pg_stat_activity")?.get(0);
            if sessions > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("meetingd did not LISTEN within {} s of starting", READY_TIMEOUT.as_secs());
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM).
    fn proc_status_kb(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .with_context(|| format!("{path} has no {field}"))?;
        let kb = value.trim().trim_end_matches("kB").trim();
        kb.parse().with_context(|| format!("{path}: {field} {value:?} is not a number of kB"))
    }

    /// utime + stime of the process, in clock ticks (/proc/<pid>/stat fields 14 and 15).
    fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("{path} is malformed"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| -> Result<u64> {
            fields.get(i).and_then(|f| f.parse().ok()).with_context(|| format!("{path}: field {} unreadable", i + 3))
        };
        Ok(tick(11)? + tick(12)?)
    }

    /// CPU used while nothing happens, in % of one core (clock ticks are 1/100 s on Linux).
    async fn idle_cpu_pct(&self, window: Duration) -> Result<f64> {
        let before = self.cpu_ticks()?;
        tokio::time::sleep(window).await;
        let used = self.cpu_ticks()? - before;
        Ok(used as f64 / 100.0 / window.as_secs_f64() * 100.0)
    }

    fn sample_rss(&mut self) -> Result<()> {
        self.max_rss_kb = self.max_rss_kb.max(self.proc_status_kb("VmRSS")?);
        Ok(())
    }

    /// SIGTERM, then wait for the graceful drain; returns how it exited.
    async fn stop(&mut self) -> Result<ExitStatus> {
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .context("running kill -TERM on meetingd")?;
        ensure!(kill.success(), "kill -TERM {} failed ({kill})", self.pid);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for meetingd")? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("meetingd did not stop within {} s of SIGTERM (killed)", STOP_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Nothing to report from here: the run already failed or was interrupted.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Commit-to-link latencies of one phase, in milliseconds, and the span they cover.
#[derive(Debug, Clone, Copy)]
struct Latency {
    count: i64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// From the earliest confirmation to the latest link, seconds.
    span_secs: f64,
}

impl Latency {
    async fn read(db: &Client, tag: &str) -> Result<Latency> {
        let row = db
            .query_one(
                "SELECT count(*),
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY x.ms),
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY x.ms),
                        max(x.ms),
                        EXTRACT(EPOCH FROM max(x.linked_at) - min(x.requested_at))::float8
                   FROM (SELECT m.linked_at, j.requested_at,
                                EXTRACT(EPOCH FROM m.linked_at - j.requested_at)::float8 * 1000 AS ms
                           FROM bookings b
                           JOIN meetingd.meetings m ON m.booking_id = b.id
                           JOIN meetingd.jobs j ON j.booking_id = b.id
                          WHERE b.notes = $1) x",
                &[&tag],
            )
            .await
            .with_context(|| format!("reading the {tag} latencies"))?;
        let figure = |i: usize| -> Result<f64> {
            row.get::<_, Option<f64>>(i).with_context(|| format!("no linked meetings for the {tag} bookings"))
        };
        Ok(Latency {
            count: row.get(0),
            p50_ms: figure(1)?,
            p99_ms: figure(2)?,
            max_ms: figure(3)?,
            span_secs: figure(4)?,
        })
    }
}

struct Burst {
    latency: Latency,
    rate: f64,
    tx_per_booking: f64,
}

/// Confirms every burst booking in one statement and waits until all are linked.
async fn run_burst(db: &Client, daemon: &mut Daemon, n: u32) -> Result<Burst> {
    // Prepared up front: with the extended protocol, preparing is itself a counted transaction.
    let commits = db.prepare("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").await?;
    let confirm =
        db.prepare("UPDATE bookings SET status = 'confirmed' WHERE status = 'pending' AND notes = $1").await?;
    let ready = db.prepare("SELECT count(*) FROM bookings WHERE meeting_status = 'ready'").await?;
    flush_own_stats(db).await?;

    let before: i64 = db.query_one(&commits, &[]).await.context("reading xact_commit")?.get(0);
    let confirmed = db.execute(&confirm, &[&BURST_TAG]).await.context("confirming the burst bookings")?;
    ensure!(confirmed == u64::from(n), "confirmed {confirmed} bookings instead of {n}");
    let polls = wait_all_ready(db, daemon, &ready, i64::from(n)).await?;

    eprintln!("· all linked; waiting {} s for PostgreSQL's statistics to settle", STATS_SETTLE.as_secs());
    tokio::time::sleep(STATS_SETTLE).await;
    let after: i64 = db.query_one(&commits, &[]).await.context("reading xact_commit")?.get(0);
    // The bench's own: the first read, the confirming UPDATE and every poll.
    let own = 2 + polls;
    let tx_per_booking = ((after - before) as f64 - own as f64) / f64::from(n);

    let latency = Latency::read(db, BURST_TAG).await?;
    Ok(Burst { rate: f64::from(n) / latency.span_secs, latency, tx_per_booking })
}

/// Makes this session's statistics current: a statement more than PostgreSQL's minimum flush
/// interval after the last one flushes the counters pending in this backend.
async fn flush_own_stats(db: &Client) -> Result<()> {
    tokio::time::sleep(STATS_MIN_INTERVAL).await;
    db.batch_execute("SELECT 1").await.context("flushing the session's statistics")?;
    Ok(())
}

/// Polls until `n` bookings show a ready meeting, sampling the daemon's RSS; returns the polls made.
async fn wait_all_ready(db: &Client, daemon: &mut Daemon, ready: &Statement, n: i64) -> Result<i64> {
    let deadline = Instant::now() + BURST_TIMEOUT;
    let mut polls = 0;
    loop {
        daemon.ensure_running()?;
        daemon.sample_rss()?;
        let linked: i64 = db.query_one(ready, &[]).await.context("counting ready bookings")?.get(0);
        polls += 1;
        if linked >= n {
            return Ok(polls);
        }
        if Instant::now() > deadline {
            bail!(
                "only {linked} of {n} bookings had a meeting link after {} s; jobs: {}",
                BURST_TIMEOUT.as_secs(),
                job_states(db).await?
            );
        }
        tokio::time::sleep(BURST_POLL).await;
    }
}

/// The queue at a glance, for an error message.
async fn job_states(db: &Client) -> Result<String> {
    let rows = db
        .query(
            "SELECT state, count(*), max(attempts), max(last_error) FROM meetingd.jobs GROUP BY state ORDER BY state",
            &[],
        )
        .await
        .context("reading the job queue")?;
    let states: Vec<String> = rows
        .iter()
        .map(|r| {
            let error: Option<String> = r.get(3);
            format!(
                "{} {} (max attempts {}{})",
                r.get::<_, i64>(1),
                r.get::<_, String>(0),
                r.get::<_, i32>(2),
                error.map(|e| format!(", e.g. {e:?}")).unwrap_or_default()
            )
        })
        .collect();
    Ok(if states.is_empty() { "none".into() } else { states.join("; ") })
}

/// Confirms each booking on its own and waits for its link before the next, as the app would:
/// on the daemon's `meeting_ready` notification.
async fn run_sequential(db: &Client, url: &str, daemon: &mut Daemon, tag: &str, ids: &[Uuid]) -> Result<Latency> {
    let confirm = db.prepare("UPDATE bookings SET status = 'confirmed' WHERE id = $1 AND status = 'pending'").await?;
    let ready = db.prepare("SELECT coalesce(meeting_status = 'ready', false) FROM bookings WHERE id = $1").await?;
    let mut events = ReadyEvents::listen(url).await?;
    for id in ids {
        let confirmed = db.execute(&confirm, &[id]).await.context("confirming a sequential booking")?;
        ensure!(confirmed == 1, "booking {id} was not pending");
        wait_one_ready(db, daemon, &mut events, &ready, *id).await?;
    }
    daemon.sample_rss()?;
    Latency::read(db, tag).await
}

/// The bookings named by `meeting_ready` events (channel `meetingd_events`) as they commit.
struct ReadyEvents {
    bookings: tokio::sync::mpsc::UnboundedReceiver<Uuid>,
    _client: Client,
}

impl ReadyEvents {
    async fn listen(url: &str) -> Result<ReadyEvents> {
        let (client, mut connection) = pg_config(url)?.connect(NoTls).await.context("connecting to PostgreSQL")?;
        let (tx, bookings) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        let event: serde_json::Value = serde_json::from_str(n.payload()).unwrap_or_default();
                        if event["kind"] == "meeting_ready"
                            && let Some(id) = event["booking_id"].as_str().and_then(|s| s.parse().ok())
                        {
                            let _ = tx.send(id);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("meetingd-bench: event connection closed: {e}");
                        break;
                    }
                }
            }
        });
        client.batch_execute("LISTEN meetingd_events").await.context("LISTEN meetingd_events")?;
        Ok(ReadyEvents { bookings, _client: client })
    }
}

async fn wait_one_ready(
    db: &Client,
    daemon: &mut Daemon,
    events: &mut ReadyEvents,
    ready: &Statement,
    id: Uuid,
) -> Result<()> {
    let deadline = Instant::now() + SEQUENTIAL_TIMEOUT;
    loop {
        let poll = tokio::time::sleep(SEQUENTIAL_POLL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                Some(booking) = events.bookings.recv() => if booking == id { return Ok(()) },
                () = &mut poll => break,
            }
        }
        if db.query_one(ready, &[&id]).await.context("polling a sequential booking")?.get::<_, bool>(0) {
            return Ok(());
        }
        daemon.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "booking {id} had no meeting link {} s after its confirmation; jobs: {}",
                SEQUENTIAL_TIMEOUT.as_secs(),
                job_states(db).await?
            );
        }
    }
}

/// The end state: every booking must have exactly one live meeting with a link of its own.
struct Check {
    expected: i64,
    live: i64,
    distinct_links: i64,
    /// Bookings showing `ready` and their live meeting's link.
    bookings_linked: i64,
    /// Attempts beyond one per job (retries).
    extra_attempts: i64,
}

impl Check {
    async fn read(db: &Client, expected: u64) -> Result<Check> {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM meetingd.meetings WHERE state = 'live'),
                        (SELECT count(DISTINCT join_url) FROM meetingd.meetings WHERE state = 'live'),
                        (SELECT count(*) FROM bookings b
                           JOIN meetingd.meetings m ON m.booking_id = b.id AND m.state = 'live'
                          WHERE b.meeting_status = 'ready' AND b.meeting_link = m.join_url),
                        (SELECT coalesce(sum(attempts), 0) - count(*) FROM meetingd.jobs)",
                &[],
            )
            .await
            .context("checking the meetings")?;
        Ok(Check {
            expected: i64::try_from(expected).context("booking count")?,
            live: row.get(0),
            distinct_links: row.get(1),
            bookings_linked: row.get(2),
            extra_attempts: row.get(3),
        })
    }

    fn ok(&self) -> bool {
        self.live == self.expected && self.distinct_links == self.expected && self.bookings_linked == self.expected
    }
}

impl RunFigures {
    fn print(&self, run: u32) {
        let (b, c) = (&self.burst, &self.check);
        println!("run {run}");
        println!(
            "  burst       {} bookings linked in {:.2} s = {:.0} bookings/s; commit-to-link p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            b.count, b.span_secs, self.burst_rate, b.p50_ms, b.p99_ms, b.max_ms
        );
        for (phase, s) in [("sequential", &self.sequential), ("settled", &self.settled)] {
            println!(
                "  {phase:<11} {} bookings one at a time; commit-to-link p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                s.count, s.p50_ms, s.p99_ms, s.max_ms
            );
        }
        if let Some(slow) = &self.slow {
            println!(
                "  slow        {} Google Meet bookings linked in {:.2} s = {:.1} bookings/s, {:.0} % of concurrency/latency ({:.0}/s); \
                 commit-to-link p50 {:.0} ms, p99 {:.0} ms",
                slow.latency.count,
                slow.latency.span_secs,
                slow.rate,
                slow.rate / slow.bound * 100.0,
                slow.bound,
                slow.latency.p50_ms,
                slow.latency.p99_ms
            );
        }
        println!(
            "  daemon      RSS {:.1} MB idle, {:.1} MB peak (burst and one-at-a-time phases); idle CPU {:.2} % of a core; \
             {:.2} database transactions per burst booking",
            mb(self.idle_rss_kb),
            mb(self.peak_rss_kb),
            self.idle_cpu_pct,
            self.tx_per_booking
        );
        if !self.daemon_exit.success() {
            println!("  WARNING     meetingd exited with {} after SIGTERM", self.daemon_exit);
        }
        println!(
            "  check       {} live meetings, {} distinct links, {} bookings showing their link (expected {}), {} retries: {}",
            c.live,
            c.distinct_links,
            c.bookings_linked,
            c.expected,
            c.extra_attempts,
            if c.ok() { "ok" } else { "FAILED" }
        );
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Min, median and max of each figure across runs.
fn print_summary(runs: &[RunFigures]) {
    type Figure = fn(&RunFigures) -> f64;
    let figures: [(&str, Figure, usize); 13] = [
        ("burst bookings/s", |r| r.burst_rate, 0),
        ("burst p50 ms", |r| r.burst.p50_ms, 0),
        ("burst p99 ms", |r| r.burst.p99_ms, 0),
        ("burst max ms", |r| r.burst.max_ms, 0),
        ("sequential p50 ms", |r| r.sequential.p50_ms, 1),
        ("sequential p99 ms", |r| r.sequential.p99_ms, 1),
        ("sequential max ms", |r| r.sequential.max_ms, 1),
        ("settled p50 ms", |r| r.settled.p50_ms, 1),
        ("settled p99 ms", |r| r.settled.p99_ms, 1),
        ("daemon peak RSS MB", |r| mb(r.peak_rss_kb), 1),
        ("idle CPU % of a core", |r| r.idle_cpu_pct, 2),
        ("slow-platform % of bound", |r| r.slow.as_ref().map_or(f64::NAN, |s| s.rate / s.bound * 100.0), 0),
        ("transactions/booking", |r| r.tx_per_booking, 2),
    ];
    let title = format!("summary over {} runs", runs.len());
    println!("{title:<24} {:>10} {:>10} {:>10}", "min", "median", "max");
    for (name, figure, decimals) in figures {
        let mut values: Vec<f64> = runs.iter().map(figure).filter(|v| !v.is_nan()).collect();
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let (min, median, max) = (values[0], median(&values), values[values.len() - 1]);
        println!("  {name:<22} {min:>10.decimals$} {median:>10.decimals$} {max:>10.decimals$}");
    }
}

/// Median of sorted, non-empty values.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}
