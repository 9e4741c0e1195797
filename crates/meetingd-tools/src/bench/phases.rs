//! The bench's phases against one running daemon: the burst, the one-at-a-time confirmations
//! (sequential and settled) and the slow platform, each waiting until its bookings are linked;
//! and the daemon child with its /proc figures. It measures; it changes nothing but the bookings
//! it confirms.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use meetingd_testkit::daemon::{Child, DaemonCommand, LISTENING_SESSIONS, wait_listening};
use meetingd_testkit::fake_google::FakeGoogle;
use secrecy::SecretString;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::cpu::{CpuSample, CpuSplit, ticks_of};
use crate::report::Latency;
use crate::{
    Args, BURST_POLL, BURST_TIMEOUT, READY_TIMEOUT, SEQUENTIAL_POLL, SEQUENTIAL_TIMEOUT, SLOW_TAG, STATS_MIN_INTERVAL,
    STATS_SETTLE, STOP_TIMEOUT, pg_config,
};

/// The daemon as a child process, and what /proc says about it. Dropping it without `stop` kills
/// it (error paths, Ctrl-C).
pub struct Daemon {
    child: Child,
    pub pid: u32,
    /// Highest VmRSS sampled so far.
    pub max_rss_kb: u64,
}

impl Daemon {
    /// `key` encrypts the scratch database's tokens; `google` is the fake platform.
    pub fn start(bin: &Path, url: &str, args: &Args, key: &SecretString, google: &FakeGoogle) -> Result<Daemon> {
        let url = daemon_url(url, args.db_tls);
        let child = DaemonCommand::new(bin, &url, key)
            .log(&args.daemon_log)
            // The benchmark measures the worker: the API and metrics ports stay off.
            .set("WORKER__CONCURRENCY", args.concurrency.to_string())
            // Google Meet at the bench's fake, with its rate limits lifted: the slow-platform
            // phase measures the worker against the platform's latency, not the token buckets.
            .google(google)
            .set("LIMITS__GOOGLE_MEET__INTEGRATION_RATE", "100000")
            .set("LIMITS__GOOGLE_MEET__INTEGRATION_BURST", "100000")
            .set("LIMITS__GOOGLE_MEET__PLATFORM_RATE", "100000")
            .set("LIMITS__GOOGLE_MEET__PLATFORM_BURST", "100000")
            // Its warnings and errors show up in the bench's output, which is where they are wanted.
            .spawn("meetingd", Stdio::null(), Stdio::inherit())?;
        let pid = child.pid();
        Ok(Daemon { child, pid, max_rss_kb: 0 })
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.exited()? {
            bail!("meetingd exited unexpectedly ({status}); its log is above");
        }
        Ok(())
    }

    /// Ready means its LISTEN connection is up (it listens last, after migrating and opening its pool).
    pub async fn wait_listening(&mut self, db: &Client) -> Result<()> {
        let listening = db.prepare(LISTENING_SESSIONS).await?;
        let count = async || -> Result<i64> {
            Ok(db.query_one(&listening, &[]).await.context("reading pg_stat_activity")?.get(0))
        };
        wait_listening(std::slice::from_mut(&mut self.child), 1, READY_TIMEOUT, count).await
    }

    /// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM).
    pub fn proc_status_kb(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .with_context(|| format!("{path} has no {field}"))?;
        let kb = value.trim().trim_end_matches("kB").trim();
        kb.parse().with_context(|| format!("{path}: {field} {value:?} is not a number of kB"))
    }

    /// CPU used while nothing happens, in % of one core (clock ticks are 1/100 s on Linux).
    pub async fn idle_cpu_pct(&self, window: Duration) -> Result<f64> {
        let pid = self.pid.to_string();
        let before = ticks_of(&pid)?.1;
        tokio::time::sleep(window).await;
        let used = ticks_of(&pid)?.1 - before;
        Ok(used as f64 / 100.0 / window.as_secs_f64() * 100.0)
    }

    fn sample_rss(&mut self) -> Result<()> {
        self.max_rss_kb = self.max_rss_kb.max(self.proc_status_kb("VmRSS")?);
        Ok(())
    }

    /// SIGTERM, then wait for the graceful drain; returns how it exited.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        self.child.stop(STOP_TIMEOUT).await
    }
}

/// The daemon's connection string: plain TCP, as the bench's own connections and the peer's
/// (node-postgres connects without TLS unless told), unless `tls` or the URL names an `sslmode`.
fn daemon_url(url: &str, tls: bool) -> String {
    if tls || url.contains("sslmode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// The slow-platform phase's figures.
pub struct Slow {
    pub latency: Latency,
    pub rate: f64,
    /// `worker.concurrency / latency`: what the worker could do at best.
    pub bound: f64,
}

/// Confirms every slow-platform booking in one statement and waits until all are linked.
pub async fn run_slow(db: &Client, daemon: &mut Daemon, args: &Args) -> Result<Slow> {
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

pub struct Burst {
    pub latency: Latency,
    pub rate: f64,
    /// Transactions committed in the scratch database per booking, the bench's own excluded.
    pub tx_per_booking: f64,
    /// WAL fsyncs per booking, server-wide (`pg_stat_wal.wal_sync`), the bench's own excluded:
    /// what the disk pays, after group commit.
    pub fsyncs_per_booking: f64,
    /// CPU from the confirmation to the last link.
    pub cpu: CpuSplit,
}

/// Confirms every booking tagged `tag` in one statement and waits until all are linked.
pub async fn run_burst(db: &Client, daemon: &mut Daemon, tag: &str, n: u32) -> Result<Burst> {
    // Prepared up front: with the extended protocol, preparing is itself a counted transaction.
    let counters = db
        .prepare(
            "SELECT d.xact_commit, w.wal_sync FROM pg_stat_database d, pg_stat_wal w
              WHERE d.datname = current_database()",
        )
        .await?;
    let confirm =
        db.prepare("UPDATE bookings SET status = 'confirmed' WHERE status = 'pending' AND notes = $1").await?;
    let ready = db.prepare("SELECT count(*) FROM bookings WHERE meeting_status = 'ready' AND notes = $1").await?;
    flush_own_stats(db).await?;

    let read = async || -> Result<(i64, i64)> {
        let row = db.query_one(&counters, &[]).await.context("reading xact_commit and wal_sync")?;
        Ok((row.get(0), row.get(1)))
    };
    let (commits_before, syncs_before) = read().await?;
    let cpu_before = CpuSample::take(daemon.pid)?;
    let confirmed = db.execute(&confirm, &[&tag]).await.with_context(|| format!("confirming the {tag} bookings"))?;
    ensure!(confirmed == u64::from(n), "confirmed {confirmed} bookings instead of {n}");
    let polls = wait_all_ready(db, daemon, &ready, tag, i64::from(n)).await?;
    let cpu = CpuSample::take(daemon.pid)?.since(&cpu_before);

    eprintln!("· all linked; waiting {} s for PostgreSQL's statistics to settle", STATS_SETTLE.as_secs());
    tokio::time::sleep(STATS_SETTLE).await;
    let (commits_after, syncs_after) = read().await?;
    // The bench's own: the first read, the confirming UPDATE and every poll; one fsync, the UPDATE's.
    let own = 2 + polls;
    let tx_per_booking = ((commits_after - commits_before) as f64 - own as f64) / f64::from(n);
    let fsyncs_per_booking = ((syncs_after - syncs_before) as f64 - 1.0).max(0.0) / f64::from(n);

    let latency = Latency::read(db, tag).await?;
    Ok(Burst { rate: f64::from(n) / latency.span_secs, latency, tx_per_booking, fsyncs_per_booking, cpu })
}

/// Confirms each booking on its own, one every `gap`, without waiting for the links (as the
/// peer harness's `MODE=trickle` does), then waits until all are linked.
pub async fn run_trickle(db: &Client, daemon: &mut Daemon, tag: &str, ids: &[Uuid], gap: Duration) -> Result<Latency> {
    let confirm = db.prepare("UPDATE bookings SET status = 'confirmed' WHERE id = $1 AND status = 'pending'").await?;
    let ready = db.prepare("SELECT count(*) FROM bookings WHERE meeting_status = 'ready' AND notes = $1").await?;
    let mut ticks = tokio::time::interval(gap);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for id in ids {
        ticks.tick().await;
        let confirmed = db.execute(&confirm, &[id]).await.context("confirming a booking")?;
        ensure!(confirmed == 1, "booking {id} was not pending");
    }
    daemon.sample_rss()?;
    wait_all_ready(db, daemon, &ready, tag, ids.len() as i64).await?;
    Latency::read(db, tag).await
}

/// Makes this session's statistics current: a statement more than PostgreSQL's minimum flush
/// interval after the last one flushes the counters pending in this backend.
async fn flush_own_stats(db: &Client) -> Result<()> {
    tokio::time::sleep(STATS_MIN_INTERVAL).await;
    db.batch_execute("SELECT 1").await.context("flushing the session's statistics")?;
    Ok(())
}

/// Polls until `n` bookings show a ready meeting, sampling the daemon's RSS; returns the polls made.
async fn wait_all_ready(db: &Client, daemon: &mut Daemon, ready: &Statement, tag: &str, n: i64) -> Result<i64> {
    let deadline = Instant::now() + BURST_TIMEOUT;
    let mut polls = 0;
    loop {
        daemon.ensure_running()?;
        daemon.sample_rss()?;
        let linked: i64 = db.query_one(ready, &[&tag]).await.context("counting ready bookings")?.get(0);
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
pub async fn run_sequential(db: &Client, url: &str, daemon: &mut Daemon, tag: &str, ids: &[Uuid]) -> Result<Latency> {
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
