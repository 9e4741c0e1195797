//! `meetingd-soak`: two `meetingd run` daemons against a fake Google, a fake Zoom and a fake
//! Microsoft Graph (Teams) under chaos, then a check that every booking ended with exactly the
//! meeting it should have.
//!
//! This is a soak program, not a test: `cargo build --workspace --bins`, then
//! `target/debug/meetingd-soak --bookings 500`. It exits non-zero when the end state is wrong,
//! and prints the evidence. It owns the run's plan (this file) and leaves the cluster, the fakes,
//! the daemon processes and seed primitives to `meetingd-testkit`; it changes no code path of the
//! daemon.
//!
//! What it does:
//!
//! * starts its own throwaway PostgreSQL cluster (initdb into a temporary directory, fsync off,
//!   a free port; as the `postgres` user when run as root), because it restarts the server mid-run;
//!   the cluster is stopped and deleted at the end, also on failure, time-out or Ctrl-C;
//! * loads the reference marketplace schema, runs meetingd's migrations and seeds 20 providers:
//!   10 with an online `google_meet` service and a Google connection, 6 with an online `zoom`
//!   service and a Zoom connection, 4 with an online `teams` service and a Microsoft connection,
//!   each to a mailbox of its own (on each platform half of them with an access token about to
//!   expire, so refreshes happen), and N pending bookings spread over them (so about 30 % are
//!   Zoom's and 20 % Teams');
//! * starts an in-process fake of Google's token endpoint and Calendar API with chaos: 503s, 429s
//!   with `Retry-After: 1`, answers slower than meetingd's HTTP time-out, lost responses (the work is
//!   done, the answer is an error) and, now and then, Meet conferences that stay pending a while;
//! * and an in-process fake of Zoom's token endpoint and Meetings API with chaos: code-less 503s,
//!   429s with and without `Retry-After` (never the daily limit), 401 code 124 (the access token
//!   expired: meetingd refreshes, and the refresh token rotates), lost answers of creates (the
//!   meeting made, found again by its marker), moves and deletes, and answers slower than
//!   meetingd's time-out (with or without the work done); its token endpoint fails with 503s now
//!   and then, always before rotating anything;
//! * and an in-process fake of Microsoft's token endpoint and Graph's online meetings with chaos:
//!   503s and 429s with `Retry-After: 1`, 401 `InvalidAuthenticationToken` (the access token
//!   expired: meetingd refreshes), lost answers of `createOrGet` (the same meeting answered again
//!   when repeated), moves and deletes, and answers slower than meetingd's time-out (with or
//!   without the work done); its token endpoint answers 503 now and then, before or after rotating
//!   the refresh token (the old one stays valid, as Microsoft's do); meetingd's 4 calls at once per
//!   mailbox stay;
//! * runs two `meetingd run` child processes (the binary built next to this one) and, while they
//!   work, confirms the bookings in batches, SIGKILLs a daemon every few seconds (alternating) and
//!   restarts it, crashes and restarts PostgreSQL once (`-m immediate`), terminates the LISTEN
//!   connections once, and reschedules, cancels and re-confirms random bookings; deletes two
//!   services with confirmed bookings (the bookings go with them, `ON DELETE CASCADE`) and
//!   reconnects two providers with another Google account; a few rows have NULL columns (a
//!   service without a title, bookings without a customer, bookings without a start time);
//! * stops the chaos, waits until no job is pending or leased, stops the daemons with SIGTERM and
//!   checks: every confirmed Google booking has exactly one live event at the fake Google, a live
//!   `meetingd.meetings` row with the booking's times, an event starting when the booking starts
//!   and the event's Meet link on the booking; every confirmed Zoom booking has exactly one live
//!   meeting at the fake Zoom carrying its marker, a live row with the booking's times naming
//!   that meeting, a meeting whose start and duration are the booking's, and its `join_url` on the
//!   booking; every confirmed Teams booking has exactly one live online meeting at the fake Graph
//!   whose `externalId` is the booking's current generation's, a live row naming it, a meeting at
//!   the booking's times (to the second) and its `joinWebUrl` on the booking; every cancelled
//!   booking has neither a live event, Zoom or Teams meeting nor a live meetings row; no job is
//!   left pending or failed but those of the bookings without a start time, which failed with a
//!   sentence; no live event, Zoom or Teams meeting is left for a deleted
//!   booking or an old generation (an orphan), no meeting was reported orphaned and no
//!   integration deactivated — with one tolerance, printed: a Zoom provider whose refresh token
//!   Zoom rotated while a daemon that never saved the new one died (SIGKILL or the PostgreSQL
//!   crash mid-refresh) must reconnect, by design; their integration is inactive, they were told,
//!   and their bookings are checked against the fallback (a Jitsi link; Zoom meetings left behind
//!   only if reported orphaned). No Teams provider ever must: Microsoft's old refresh token stays
//!   valid after a rotation.
//!
//! The last line is `soak: N bookings, lost=…, duplicates=…, orphans=…, stuck=…, mismatched=…: ok`
//! (or `FAILED`).

mod chaos;
mod check;
mod daemons;
mod db;
mod market;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Parser;
use meetingd::crypto::Keyring;
use meetingd_testkit::cluster::PrivateCluster;
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::fake_graph::FakeGraph;
use meetingd_testkit::fake_zoom::FakeZoom;
use uuid::Uuid;

use chaos::{Chaos, Counters, History, daemon_trouble, settle};
use check::{Check, Verdict, print_evidence};
use daemons::{DaemonEnv, Daemons};
use db::Db;
use market::{
    Fakes, google_chaos_rules, graph_chaos_rules, graph_token_chaos_rules, prepare_schema, seed, zoom_chaos_rules,
    zoom_token_chaos_rules,
};

const PROVIDERS: usize = 20;
const DAEMONS: usize = 2;
/// The soak cluster's `max_connections`.
const MAX_CONNECTIONS: u32 = 200;
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
/// The providers (by e-mail order) on Zoom; the rest are on Google. Not the first (its service has
/// no title), not the two the chaos reconnects (the 4th and 5th: another Google account) nor the
/// last two (their doomed services are Google's).
const ZOOM_PROVIDERS: [usize; 6] = [2, 5, 8, 11, 14, 17];
/// The providers on Microsoft Teams, each with a mailbox of its own; none of those excluded above.
const TEAMS_PROVIDERS: [usize; 4] = [1, 7, 10, 13];

/// meetingd's HTTP time-outs towards Google, Zoom and Microsoft, and the fakes' slow answers, which
/// exceed them.
const GOOGLE_TIMEOUT_MS: u64 = 1000;
const ZOOM_TIMEOUT_MS: u64 = 1000;
const TEAMS_TIMEOUT_MS: u64 = 1000;
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
    about = "Soak two meetingd daemons against a fake Google, a fake Zoom and a fake Microsoft Graph under chaos (kills, a PostgreSQL \
             restart, API failures) on a throwaway PostgreSQL cluster, then check every booking's meeting"
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
    let root = std::env::temp_dir().join(format!("meetingd-soak-{}", &Uuid::new_v4().simple().to_string()[..8]));
    let cluster = match tokio::task::block_in_place(|| PrivateCluster::create(&root, MAX_CONNECTIONS)) {
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
async fn soak(args: &Args, cluster: &PrivateCluster, started: Instant) -> Result<Verdict> {
    println!("meetingd-soak — a soak run, not a test");
    let daemon_bin = meetingd_testkit::daemon::built_alongside()?;
    let url = cluster.create_database(DBNAME).await?;
    let mut db = Db::connect(&url).await?;
    println!("· PostgreSQL on port {} ({}); seeding {} bookings", cluster.port, cluster.root.display(), args.bookings);
    prepare_schema(db.client_mut()).await?;
    let google = FakeGoogle::start().await;
    let zoom = FakeZoom::start().await;
    let graph = FakeGraph::start().await;
    let key = Keyring::generate_key();
    let marks = meetingd::providers::zoom::Marks::new(std::sync::Arc::new(Keyring::new(&key, &[])?));
    seed(&mut db, Fakes { google: &google, zoom: &zoom, graph: &graph, marks: &marks }, &key, args.bookings).await?;

    let env = DaemonEnv {
        bin: daemon_bin,
        url,
        key,
        google: google.clone(),
        zoom: zoom.clone(),
        graph: graph.clone(),
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

    google.chaos(google_chaos_rules());
    zoom.chaos(zoom_chaos_rules());
    zoom.token_chaos(zoom_token_chaos_rules());
    graph.chaos(graph_chaos_rules());
    graph.token_chaos(graph_token_chaos_rules());
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
    zoom.chaos(Vec::new());
    zoom.token_chaos(Vec::new());
    graph.chaos(Vec::new());
    graph.token_chaos(Vec::new());

    let settled = settle(&mut db, &mut daemons, &mut counters).await?;
    let exits = daemons.stop_all().await?;
    let fakes = Fakes { google: &google, zoom: &zoom, graph: &graph, marks: &marks };
    let mut check = Check::read(&mut db, &fakes).await?;
    check.settled = settled;
    check.daemon_trouble = daemon_trouble(&counters, &exits);
    check.print(&fakes);
    counters.print(db.reconnects);
    if !check.ok() {
        print_evidence(&mut db, &fakes, &history, &env.log_dir, &check.problems).await?;
    }
    Ok(Verdict { check })
}
