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
//! * Google burst: G bookings of Google Meet services (20 providers, each with a connection),
//!   confirmed by one statement, against an in-process fake of Google Calendar that answers at
//!   once (rate limits lifted): the path users pay for (claim, create intent, the Calendar call,
//!   write-back), with transactions and WAL fsyncs per booking and where the CPU went;
//! * Google one at a time: T more, confirmed 10 ms apart without waiting (as the peer harness's
//!   `MODE=trickle` does);
//! * slow platform: L bookings of Google Meet services, confirmed by one statement, against the
//!   fake taking `--provider-latency-ms` to answer every call (rate limits lifted): throughput
//!   against the bound `worker.concurrency / latency`.
//!
//! With `--peer DIR` (the peer harness, `../shared/bench-peer/`), each run also runs
//! graphile-worker doing the same Google job, a burst of G right after meetingd's Google burst and
//! T one at a time right after meetingd's (meetingd's daemon idle meanwhile), and the bench prints
//! meetingd's figures as ratios to the peer's: only ratios measured in one run compare, and the
//! two sides of each ratio are measured within a minute of each other, as the machine's speed
//! drifts.
//!
//! Before the burst, the idle daemon's CPU use is sampled from /proc for a few seconds.
//!
//! Latencies come from database timestamps only: from `meetingd.jobs.requested_at` (set by the
//! trigger while the confirmation is recorded) to `meetingd.meetings.linked_at` (set when the link
//! is written back), so the bench's own polling interval does not enter them. Jitsi rooms need no
//! network call, so the burst and sequential figures are meetingd's and PostgreSQL's own.

mod cpu;
mod peer;
mod phases;
mod report;
mod seed;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use meetingd::crypto::Keyring;
use meetingd::fixtures::with_dbname;
use meetingd_testkit::fake_google::FakeGoogle;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use phases::{Burst, Daemon, Slow, run_burst, run_sequential, run_slow, run_trickle};
use report::{Check, Latency, print_summary};
use seed::{booking_ids, prepare_schema, seed, seed_google};

const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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
const GOOGLE_BURST_TAG: &str = "bench:google-burst";
const GOOGLE_TRICKLE_TAG: &str = "bench:google-trickle";
const BURST_SERVICE: &str = "Bench burst session";
const SEQUENTIAL_SERVICE: &str = "Bench sequential session";
const GOOGLE_SERVICE: &str = "Bench Google Meet session";
/// Providers of the Google Meet phases, each with a Google connection (as in the peer harness).
const GOOGLE_PROVIDERS: i32 = 20;
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
    /// Google Meet bookings confirmed at once against the fake Google answering at once (0 skips
    /// that phase).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    google_bookings: u32,
    /// Google Meet bookings confirmed one at a time afterwards, `--trickle-gap-ms` apart (0 skips).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    google_trickle: u32,
    /// The gap between two one-at-a-time Google Meet confirmations (the peer harness's is 10 ms).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    trickle_gap_ms: u64,
    /// Run the peer harness in this folder (`../shared/bench-peer`) with the same Google
    /// workload, each of its phases right after meetingd's, and print meetingd's figures as
    /// ratios to the peer's.
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Google Meet bookings confirmed at once against the slow fake platform (0 skips that phase).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    slow_bookings: u32,
    /// Connect the daemon to PostgreSQL over TLS (`sslmode=prefer`, meetingd's default) instead
    /// of plain TCP, which the bench's own connections and the peer use.
    #[arg(long)]
    db_tls: bool,
    /// Only the Google Meet phases (and the peer's): no Jitsi burst, sequential or settled phase.
    #[arg(long)]
    google_only: bool,
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
    let daemon_bin = meetingd_testkit::daemon::built_alongside()?;
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
        "workload    daemon to PostgreSQL over {}; Jitsi burst N={} over {} providers, sequential M={}{}; Google burst G={} and T={} one at a time {} ms apart over {} providers; \
         slow platform L={} at {} ms; concurrency {}, runs {}{}",
        if args.db_tls { "TLS" } else { "plain TCP (as the peer)" },
        args.bookings,
        args.providers,
        args.sequential,
        if args.google_only { " (skipped)" } else { "" },
        args.google_bookings,
        args.google_trickle,
        args.trickle_gap_ms,
        GOOGLE_PROVIDERS,
        args.slow_bookings,
        args.provider_latency_ms,
        args.concurrency,
        args.runs,
        args.peer.as_ref().map(|p| format!("; peer {}", p.display())).unwrap_or_default()
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
        r = measure(server_url, &url, daemon_bin, args) => r,
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
    /// The Jitsi phases (none with `--google-only`).
    jitsi: Option<Jitsi>,
    google_burst: Option<Burst>,
    google_trickle: Option<Latency>,
    peer: Option<peer::Peer>,
    slow: Option<Slow>,
    /// CPU the idle daemon used, in % of one core.
    idle_cpu_pct: f64,
    idle_rss_kb: u64,
    peak_rss_kb: u64,
    check: Check,
    daemon_exit: ExitStatus,
}

/// The Jitsi phases' figures: no platform call, so they are meetingd's and PostgreSQL's own.
struct Jitsi {
    burst: Burst,
    sequential: Latency,
    settled: Latency,
}

async fn measure(server_url: &str, url: &str, daemon_bin: &Path, args: &Args) -> Result<RunFigures> {
    let mut db = connect(url).await?;
    eprintln!("· loading the marketplace schema, migrating, seeding");
    prepare_schema(&mut db).await?;
    let (sequential_ids, settled_ids) = seed(&db, args).await?;
    let google = FakeGoogle::start().await;
    let key = Keyring::generate_key();
    let google_phases = [
        (GOOGLE_BURST_TAG, args.google_bookings),
        (GOOGLE_TRICKLE_TAG, args.google_trickle),
        (SLOW_TAG, args.slow_bookings),
    ];
    seed_google(&mut db, &google, &key, &google_phases).await?;

    let harness = match &args.peer {
        Some(dir) => Some(peer::Harness::new(dir, server_url, args.concurrency)?),
        None => None,
    };
    let started = Instant::now();
    let mut daemon = Daemon::start(daemon_bin, url, args, &key, &google)?;
    daemon.wait_listening(&db).await?;
    let idle_rss_kb = daemon.proc_status_kb("VmRSS")?;
    eprintln!(
        "· meetingd (pid {}) listening after {} ms; sampling its idle CPU for {} s",
        daemon.pid,
        started.elapsed().as_millis(),
        IDLE_SAMPLE.as_secs()
    );
    let idle_cpu_pct = daemon.idle_cpu_pct(IDLE_SAMPLE).await?;

    let jitsi = if args.google_only {
        None
    } else {
        eprintln!("· Jitsi burst of {}", args.bookings);
        let burst = run_burst(&db, &mut daemon, BURST_TAG, args.bookings).await?;
        eprintln!("· sequential: {} bookings one at a time", sequential_ids.len());
        let sequential = run_sequential(&db, url, &mut daemon, SEQUENTIAL_TAG, &sequential_ids).await?;
        eprintln!("· settled: VACUUM ANALYZE, then {} more bookings one at a time", settled_ids.len());
        db.batch_execute("VACUUM ANALYZE").await.context("vacuuming the scratch database")?;
        let settled = run_sequential(&db, url, &mut daemon, SETTLED_TAG, &settled_ids).await?;
        Some(Jitsi { burst, sequential, settled })
    };

    // Each Google phase starts on a settled database, as the peer's fresh one is.
    let google_burst = if args.google_bookings > 0 {
        db.batch_execute("VACUUM ANALYZE").await.context("vacuuming the scratch database")?;
        eprintln!("· Google Meet burst of {} (the fake answers at once)", args.google_bookings);
        Some(run_burst(&db, &mut daemon, GOOGLE_BURST_TAG, args.google_bookings).await?)
    } else {
        None
    };
    let peer_burst = match &harness {
        Some(h) => Some(h.burst(args.google_bookings.max(1)).await.context("the peer's burst")?),
        None => None,
    };
    let google_trickle = if args.google_trickle > 0 {
        db.batch_execute("VACUUM ANALYZE").await.context("vacuuming the scratch database")?;
        let ids = booking_ids(&db, GOOGLE_TRICKLE_TAG).await?;
        eprintln!("· Google Meet: {} bookings one at a time, {} ms apart", ids.len(), args.trickle_gap_ms);
        let gap = Duration::from_millis(args.trickle_gap_ms);
        Some(run_trickle(&db, &mut daemon, GOOGLE_TRICKLE_TAG, &ids, gap).await?)
    } else {
        None
    };
    let peer = match (&harness, peer_burst) {
        (Some(h), Some(burst)) => Some(peer::Peer {
            burst,
            trickle: h.trickle(args.google_trickle.max(1)).await.context("the peer's trickle")?,
        }),
        _ => None,
    };
    let peak_rss_kb = daemon.proc_status_kb("VmHWM")?.max(daemon.max_rss_kb);
    let slow = if args.slow_bookings > 0 {
        eprintln!(
            "· slow platform: {} Google Meet bookings at {} ms a call",
            args.slow_bookings, args.provider_latency_ms
        );
        google.state.lock().map_err(|_| anyhow!("the fake platform's state is poisoned"))?.latency =
            Some(Duration::from_millis(args.provider_latency_ms));
        Some(run_slow(&db, &mut daemon, args).await?)
    } else {
        None
    };
    let jitsi_bookings = if args.google_only { 0 } else { u64::from(args.bookings) + 2 * u64::from(args.sequential) };
    let expected = jitsi_bookings
        + u64::from(args.google_bookings)
        + u64::from(args.google_trickle)
        + u64::from(args.slow_bookings);
    let check = Check::read(&db, expected).await?;
    let daemon_exit = daemon.stop().await?;
    Ok(RunFigures {
        jitsi,
        google_burst,
        google_trickle,
        peer,
        slow,
        idle_cpu_pct,
        idle_rss_kb,
        peak_rss_kb,
        check,
        daemon_exit,
    })
}
