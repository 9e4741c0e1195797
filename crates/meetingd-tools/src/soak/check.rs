//! The end-state check: every booking against its meetings row and the fake Google's live
//! events (lost, duplicated, orphaned, stuck, mismatched), the evidence for the first problems,
//! and the verdict line. It only reads.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use meetingd::providers::google::event_id;
use meetingd_testkit::fake_google::{FakeGoogle, StoredEvent};
use uuid::Uuid;

use crate::chaos::History;
use crate::db::Db;
use crate::{DAEMONS, EVIDENCE_LIMIT, ODD_TAG, TAG};

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
pub struct Problem {
    pub booking: Uuid,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Default)]
pub struct Check {
    pub bookings: usize,
    pub confirmed: usize,
    pub cancelled: usize,
    pub other: usize,
    pub live_events: usize,
    pub live_rows: i64,
    /// Confirmed bookings with one live event, a live row, the right times and link.
    pub good: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Live events of deleted bookings, and meetings reported out of meetingd's reach.
    pub orphans: usize,
    /// Bookings without a start time that did not fail with a sentence.
    pub odd_unfailed: i64,
    pub mismatched: usize,
    pub stuck: i64,
    pub jobs: String,
    pub settled: bool,
    pub daemon_trouble: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Check {
    pub async fn read(db: &mut Db, google: &FakeGoogle) -> Result<Check> {
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

    pub fn ok(&self) -> bool {
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

    pub fn print(&self, google: &FakeGoogle) {
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
pub async fn print_evidence(
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

pub struct Verdict {
    pub check: Check,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.check.ok()
    }

    pub fn print(&self, bookings: u32, took: Duration) {
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
