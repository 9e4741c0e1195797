//! The bench's figures: commit-to-link latencies from the database's own timestamps, the end-state
//! check (exactly one live meeting per booking), each run's report and the summary across runs.
//! It reads and prints; it decides nothing about speed.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::RunFigures;
use crate::phases::Burst;

/// Commit-to-link latencies of one phase, in milliseconds, and the span they cover.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub count: i64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// From the earliest confirmation to the latest link, seconds.
    pub span_secs: f64,
}

impl Latency {
    pub async fn read(db: &Client, tag: &str) -> Result<Latency> {
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

/// The end state: every booking must have exactly one live meeting with a link of its own.
pub struct Check {
    expected: i64,
    live: i64,
    distinct_links: i64,
    /// Bookings showing `ready` and their live meeting's link.
    bookings_linked: i64,
    /// Attempts beyond one per job (retries).
    pub extra_attempts: i64,
}

impl Check {
    pub async fn read(db: &Client, expected: u64) -> Result<Check> {
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

    pub fn ok(&self) -> bool {
        self.live == self.expected && self.distinct_links == self.expected && self.bookings_linked == self.expected
    }
}

impl RunFigures {
    pub fn print(&self, run: u32) {
        let c = &self.check;
        println!("run {run}");
        if let Some(j) = &self.jitsi {
            print_burst("burst", "Jitsi", &j.burst);
            for (phase, s) in [("sequential", &j.sequential), ("settled", &j.settled)] {
                println!(
                    "  {phase:<11} {} bookings one at a time; commit-to-link p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    s.count, s.p50_ms, s.p99_ms, s.max_ms
                );
            }
        }
        if let Some(b) = &self.google_burst {
            print_burst("google", "Google Meet", b);
        }
        if let Some(t) = &self.google_trickle {
            println!(
                "  google 1x1  {} Google Meet bookings one at a time; commit-to-link p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                t.count, t.p50_ms, t.p99_ms, t.max_ms
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
            "  daemon      RSS {:.1} MB idle, {:.1} MB peak (every phase but the slow platform); idle CPU {:.2} % of a core",
            mb(self.idle_rss_kb),
            mb(self.peak_rss_kb),
            self.idle_cpu_pct,
        );
        if let Some(p) = &self.peer {
            println!(
                "  peer        graphile-worker: burst {:.0} bookings/s; one at a time p50 {:.1} ms, p99 {:.1} ms; peak RSS {:.1} MB",
                p.burst.per_s,
                p.trickle.p50_ms,
                p.trickle.p99_ms,
                mb(p.burst.peak_rss_kb.max(p.trickle.peak_rss_kb))
            );
            if let (Some(b), Some(t)) = (&self.google_burst, &self.google_trickle) {
                println!(
                    "  ratios      burst {:.2}x the peer's rate; one at a time p50 {:.2}, p99 {:.2} of the peer's; peak RSS {:.2} of the peer's",
                    b.rate / p.burst.per_s,
                    t.p50_ms / p.trickle.p50_ms,
                    t.p99_ms / p.trickle.p99_ms,
                    self.peak_rss_kb as f64 / p.burst.peak_rss_kb.max(p.trickle.peak_rss_kb) as f64
                );
            }
        }
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

fn print_burst(phase: &str, platform: &str, b: &Burst) {
    let l = &b.latency;
    println!(
        "  {phase:<11} {} {platform} bookings linked in {:.2} s = {:.0} bookings/s; commit-to-link p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        l.count, l.span_secs, b.rate, l.p50_ms, l.p99_ms, l.max_ms
    );
    println!(
        "  {:<11} {:.2} transactions and {:.2} WAL fsyncs per booking; {}",
        "", b.tx_per_booking, b.fsyncs_per_booking, b.cpu
    );
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Min, median and max of each figure across runs.
pub fn print_summary(runs: &[RunFigures]) {
    type Figure = fn(&RunFigures) -> Option<f64>;
    let figures: [(&str, Figure, usize); 28] = [
        ("Jitsi burst bookings/s", |r| r.jitsi.as_ref().map(|j| j.burst.rate), 0),
        ("Jitsi burst p50 ms", |r| r.jitsi.as_ref().map(|j| j.burst.latency.p50_ms), 0),
        ("Jitsi burst p99 ms", |r| r.jitsi.as_ref().map(|j| j.burst.latency.p99_ms), 0),
        ("Jitsi tx/booking", |r| r.jitsi.as_ref().map(|j| j.burst.tx_per_booking), 2),
        ("Jitsi fsyncs/booking", |r| r.jitsi.as_ref().map(|j| j.burst.fsyncs_per_booking), 3),
        ("sequential p50 ms", |r| r.jitsi.as_ref().map(|j| j.sequential.p50_ms), 1),
        ("sequential p99 ms", |r| r.jitsi.as_ref().map(|j| j.sequential.p99_ms), 1),
        ("settled p50 ms", |r| r.jitsi.as_ref().map(|j| j.settled.p50_ms), 1),
        ("settled p99 ms", |r| r.jitsi.as_ref().map(|j| j.settled.p99_ms), 1),
        ("Google burst bookings/s", |r| r.google_burst.as_ref().map(|b| b.rate), 0),
        ("Google burst p50 ms", |r| r.google_burst.as_ref().map(|b| b.latency.p50_ms), 0),
        ("Google burst p99 ms", |r| r.google_burst.as_ref().map(|b| b.latency.p99_ms), 0),
        ("Google tx/booking", |r| r.google_burst.as_ref().map(|b| b.tx_per_booking), 2),
        ("Google fsyncs/booking", |r| r.google_burst.as_ref().map(|b| b.fsyncs_per_booking), 3),
        ("Google 1x1 p50 ms", |r| r.google_trickle.map(|t| t.p50_ms), 1),
        ("Google 1x1 p99 ms", |r| r.google_trickle.map(|t| t.p99_ms), 1),
        ("daemon peak RSS MB", |r| Some(mb(r.peak_rss_kb)), 1),
        ("idle CPU % of a core", |r| Some(r.idle_cpu_pct), 2),
        ("slow-platform % of bound", |r| r.slow.as_ref().map(|s| s.rate / s.bound * 100.0), 0),
        ("peer burst bookings/s", |r| r.peer.map(|p| p.burst.per_s), 0),
        ("peer 1x1 p50 ms", |r| r.peer.map(|p| p.trickle.p50_ms), 1),
        ("peer 1x1 p99 ms", |r| r.peer.map(|p| p.trickle.p99_ms), 1),
        ("peer peak RSS MB", |r| r.peer.map(|p| mb(p.burst.peak_rss_kb.max(p.trickle.peak_rss_kb))), 1),
        ("burst / peer", |r| Some(r.google_burst.as_ref()?.rate / r.peer?.burst.per_s), 2),
        ("1x1 p50 / peer", |r| Some(r.google_trickle?.p50_ms / r.peer?.trickle.p50_ms), 2),
        ("1x1 p99 / peer", |r| Some(r.google_trickle?.p99_ms / r.peer?.trickle.p99_ms), 2),
        ("peak RSS / peer", |r| Some(r.peak_rss_kb as f64 / peer_rss(r)?), 2),
        ("retries", |r| Some(r.check.extra_attempts as f64), 0),
    ];
    let title = format!("summary over {} runs", runs.len());
    println!("{title:<26} {:>10} {:>10} {:>10}", "min", "median", "max");
    for (name, figure, decimals) in figures {
        let mut values: Vec<f64> = runs.iter().filter_map(figure).filter(|v| !v.is_nan()).collect();
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let (min, median, max) = (values[0], median(&values), values[values.len() - 1]);
        println!("  {name:<24} {min:>10.decimals$} {median:>10.decimals$} {max:>10.decimals$}");
    }
}

/// The peer's peak RSS over its two runs, in kB.
fn peer_rss(r: &RunFigures) -> Option<f64> {
    r.peer.map(|p| p.burst.peak_rss_kb.max(p.trickle.peak_rss_kb) as f64)
}

/// Median of sorted, non-empty values.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}
