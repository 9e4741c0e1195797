//! The end-state check: every booking against its meetings row and its platform's live meetings,
//! the fake Google's events (by booking id), the fake Zoom's meetings (by marker) or the fake
//! Graph's Teams meetings (by `externalId`): lost,
//! duplicated, orphaned, stuck, mismatched; the Zoom providers who must reconnect (the one
//! tolerance, see [`Reconnects`]); the evidence for the first problems, and the verdict line. It
//! only reads.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use meetingd::providers::google::event_id;
use meetingd::providers::zoom::{Marks, intent_of};
use meetingd_testkit::fake_google::{FakeGoogle, StoredEvent};
use meetingd_testkit::fake_graph::FakeGraph;
use meetingd_testkit::fake_zoom::{FakeZoom, StoredMeeting, marker_in};
use uuid::Uuid;

use crate::chaos::History;
use crate::db::Db;
use crate::market::Fakes;
use crate::{DAEMONS, EVIDENCE_LIMIT, ODD_TAG, TAG};

struct Booking {
    id: Uuid,
    status: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    link: Option<String>,
    meeting_status: Option<String>,
    meeting_id: Option<String>,
    /// The platform its service asks for.
    platform: Option<String>,
    provider: Option<Uuid>,
}

struct MeetingRow {
    platform: String,
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

/// A live meeting at the fake Zoom whose marker names a booking, as far as the check needs it.
struct LiveZoom {
    id: String,
    generation: i32,
    start: Option<DateTime<Utc>>,
    duration: Option<i64>,
    link: Option<String>,
}

/// The fake Zoom's live meetings, by the booking whose marker they carry (every booking meetingd
/// has a job or the marketplace a row for, every generation meetingd may have used).
/// Every booking meetingd knows of: those with a job, and those still in `bookings`.
async fn known_bookings(db: &mut Db) -> Result<HashSet<Uuid>> {
    Ok(db
        .query("SELECT booking_id FROM meetingd.jobs UNION SELECT id FROM bookings", &[])
        .await
        .context("reading the booking ids")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

struct ZoomMeetings {
    by_booking: HashMap<Uuid, Vec<LiveZoom>>,
    /// Live meetings whose agenda carries no marker of a known booking.
    unknown: Vec<String>,
    live: usize,
}

impl ZoomMeetings {
    /// `ids`: the bookings meetingd knows of ([`known_bookings`]).
    fn read(ids: &HashSet<Uuid>, zoom: &FakeZoom, marks: &Marks) -> Result<ZoomMeetings> {
        let live = zoom.live_meetings();
        let mut meetings = ZoomMeetings { by_booking: HashMap::new(), unknown: Vec::new(), live: live.len() };
        for m in &live {
            let id = m.body["id"].as_u64().map(|n| n.to_string()).unwrap_or_default();
            let named = m.body["agenda"].as_str().and_then(|a| marks.read(a)).filter(|(b, _)| ids.contains(b));
            match named {
                Some((booking, generation)) => {
                    let start = m.body["start_time"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
                    let meeting = LiveZoom {
                        id,
                        generation,
                        start,
                        duration: m.body["duration"].as_i64(),
                        link: m.body["join_url"].as_str().map(str::to_string),
                    };
                    meetings.by_booking.entry(booking).or_default().push(meeting);
                }
                None => meetings.unknown.push(id),
            }
        }
        Ok(meetings)
    }
}

/// A live Teams meeting at the fake Graph whose `externalId` names a booking, as far as the check
/// needs it.
struct LiveTeams {
    id: String,
    generation: i32,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    link: Option<String>,
}

/// A live meeting at a fake whose platform names its booking and generation on the meeting (a
/// Zoom mark, a Teams `externalId`), as the per-booking check needs it.
trait Named {
    /// The platform's stored name and how the check's sentences call it, and what names the
    /// booking on the meeting.
    const PLATFORM: (&'static str, &'static str, &'static str);
    fn id(&self) -> &str;
    fn generation(&self) -> i32;
}

impl Named for LiveZoom {
    const PLATFORM: (&'static str, &'static str, &'static str) = ("zoom", "Zoom", "marker");
    fn id(&self) -> &str {
        &self.id
    }
    fn generation(&self) -> i32 {
        self.generation
    }
}

impl Named for LiveTeams {
    const PLATFORM: (&'static str, &'static str, &'static str) = ("teams", "Teams", "externalId");
    fn id(&self) -> &str {
        &self.id
    }
    fn generation(&self) -> i32 {
        self.generation
    }
}

/// The booking and generation an `externalId` of meetingd's names (`meetingd-<booking>-g<n>`,
/// see `meetingd::providers::teams::external_id`).
fn teams_intent(external: &str) -> Option<(Uuid, i32)> {
    let (booking, generation) = external.strip_prefix("meetingd-")?.split_once("-g")?;
    let (booking, generation) = (Uuid::parse_str(booking).ok()?, generation.parse().ok()?);
    (meetingd::providers::teams::external_id(booking, generation) == external).then_some((booking, generation))
}

/// The fake Graph's live Teams meetings (every mailbox), by the booking their `externalId` names
/// (every booking meetingd has a job or the marketplace a row for, every generation).
struct TeamsMeetings {
    by_booking: HashMap<Uuid, Vec<LiveTeams>>,
    /// Live meetings whose `externalId` names no known booking.
    unknown: Vec<String>,
    live: usize,
}

impl TeamsMeetings {
    /// `ids`: the bookings meetingd knows of ([`known_bookings`]).
    fn read(ids: &HashSet<Uuid>, graph: &FakeGraph) -> Result<TeamsMeetings> {
        let live = graph.live_meetings();
        let mut meetings = TeamsMeetings { by_booking: HashMap::new(), unknown: Vec::new(), live: live.len() };
        for m in &live {
            let id = m.body["id"].as_str().unwrap_or_default().to_string();
            let named = m.body["externalId"].as_str().and_then(teams_intent).filter(|(b, _)| ids.contains(b));
            let time = |key: &str| m.body[key].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
            match named {
                Some((booking, generation)) => {
                    let meeting = LiveTeams {
                        id,
                        generation,
                        start: time("startDateTime"),
                        end: time("endDateTime"),
                        link: m.body["joinWebUrl"].as_str().map(str::to_string),
                    };
                    meetings.by_booking.entry(booking).or_default().push(meeting);
                }
                None => meetings.unknown.push(format!("{id} ({})", m.body["externalId"])),
            }
        }
        Ok(meetings)
    }
}

/// The one tolerance: a Zoom provider who must reconnect because a daemon died between Zoom
/// rotating their refresh token and meetingd committing the new one. Zoom kills the old refresh
/// token at once, so the next refresh answers `invalid_grant` and meetingd deactivates the
/// integration and tells the provider (`integration_needs_reconnect`), by design: nothing can
/// recover a rotated token whose answer was lost. (The fake's token endpoint never loses an
/// answer by itself: a SIGKILL or the PostgreSQL crash mid-refresh is the only way here.)
/// Such a provider's bookings are checked against the fallback: a Jitsi link, and no live Zoom
/// meeting but those meetingd reported in `meetingd.orphaned_meetings` (out of its reach). Any
/// other deactivation is a failure.
#[derive(Default)]
struct Reconnects {
    providers: HashSet<Uuid>,
    /// The external ids (meeting ids, or markers of unanswered creates) reported orphaned in
    /// those providers' Zoom accounts.
    reported: HashSet<String>,
    /// Orphaned-meeting reports of anyone else: failures.
    other_orphans: Vec<String>,
    /// Deactivations that are not that: failures.
    unexpected: Vec<String>,
    /// When each provider was told to reconnect, for the report.
    told: Vec<String>,
}

impl Reconnects {
    async fn read(db: &mut Db) -> Result<Reconnects> {
        let mut r = Reconnects::default();
        let rows = db
            .query(
                "SELECT i.user_id, i.platform, u.email,
                        (SELECT to_char(max(e.created_at), 'HH24:MI:SS.MS') FROM meetingd.events e
                          WHERE e.kind = 'integration_needs_reconnect' AND e.user_id = i.user_id
                            AND e.platform = i.platform)
                   FROM user_meeting_integrations i LEFT JOIN users u ON u.id = i.user_id
                  WHERE NOT COALESCE(i.is_active, false)
                  ORDER BY u.email",
                &[],
            )
            .await
            .context("reading the inactive integrations")?;
        for row in rows {
            let (user, platform, email, told): (Uuid, String, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let who = email.unwrap_or_else(|| user.to_string());
            match told {
                Some(at) if platform == "zoom" => {
                    r.providers.insert(user);
                    r.told.push(format!("{who} (told at {at})"));
                }
                _ => r.unexpected.push(format!(
                    "{who}'s {platform} integration is inactive{}",
                    if told.is_some() { "" } else { " and the provider was never told" }
                )),
            }
        }
        let rows = db
            .query(
                "SELECT platform, external_id, owner_id, booking_id, reason FROM meetingd.orphaned_meetings ORDER BY id",
                &[],
            )
            .await
            .context("reading the orphaned meetings")?;
        for row in rows {
            let (platform, external_id, owner, booking, reason): (String, String, Option<Uuid>, Uuid, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            if platform == "zoom" && owner.is_some_and(|o| r.providers.contains(&o)) {
                r.reported.insert(external_id);
            } else {
                r.other_orphans.push(format!("{platform} meeting {external_id} of booking {booking}: {reason}"));
            }
        }
        Ok(r)
    }

    /// Whether `m`, a meeting of `booking`'s, was reported out of reach in such a provider's account.
    fn reported(&self, m: &LiveZoom, booking: Uuid) -> bool {
        self.reported.contains(&m.id) || self.reported.contains(&intent_of(booking, m.generation))
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
    pub live_zoom: usize,
    pub live_teams: usize,
    pub live_rows: i64,
    /// Confirmed bookings with one live event, Zoom or Teams meeting, a live row, the right times and
    /// link; or, for a Zoom provider who must reconnect, the fallback's.
    pub good: usize,
    /// Zoom providers who must reconnect (the tolerance, see [`Reconnects`]), and when told.
    pub reconnects: Vec<String>,
    /// Their confirmed bookings on the fallback, and their meetings left at Zoom, reported.
    pub fell_back: usize,
    pub reported_kept: usize,
    /// Deactivated integrations other than those: failures.
    pub deactivated: Vec<String>,
    pub lost: usize,
    pub duplicates: usize,
    /// Live events, Zoom and Teams meetings of deleted bookings or old generations, and meetings reported
    /// out of meetingd's reach (but those of the tolerance).
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
    pub async fn read(db: &mut Db, fakes: &Fakes<'_>) -> Result<Check> {
        let bookings = read_bookings(db).await?;
        let meetings = read_meetings(db).await?;
        let reconnects = Reconnects::read(db).await?;
        let known = known_bookings(db).await?;
        let mut zoom = ZoomMeetings::read(&known, fakes.zoom, fakes.marks)?;
        let mut teams = TeamsMeetings::read(&known, fakes.graph)?;
        let mut events: HashMap<String, Vec<LiveEvent>> = HashMap::new();
        let live = fakes.google.live_events();
        for e in &live {
            events.entry(e.booking_id().unwrap_or_default()).or_default().push(LiveEvent::from_stored(e));
        }
        let mut check = Check {
            bookings: bookings.len(),
            live_events: live.len(),
            live_zoom: zoom.live,
            live_teams: teams.live,
            reconnects: reconnects.told.clone(),
            deactivated: reconnects.unexpected.clone(),
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
            orphans: reconnects.other_orphans.len(),
            jobs: job_states(db).await?,
            ..Check::default()
        };
        for orphan in &reconnects.other_orphans {
            println!("check: reported orphaned: {orphan}");
        }
        for b in &bookings {
            if b.platform.as_deref() == Some("zoom") {
                let live = zoom.by_booking.remove(&b.id).unwrap_or_default();
                check.zoom_booking(b, meetings.get(&b.id), live, &reconnects);
            } else if b.platform.as_deref() == Some("teams") {
                let live = teams.by_booking.remove(&b.id).unwrap_or_default();
                check.teams_booking(b, meetings.get(&b.id), live);
            } else {
                let evs = events.remove(&b.id.to_string()).unwrap_or_default();
                check.booking(b, meetings.get(&b.id), &evs);
            }
        }
        // Live Zoom meetings of deleted bookings, of bookings not on Zoom, or of no known booking:
        // orphans, but those reported out of reach in the account of a provider who must reconnect.
        for (booking, live) in zoom.by_booking {
            let (reported, left): (Vec<LiveZoom>, Vec<LiveZoom>) =
                live.into_iter().partition(|m| reconnects.reported(m, booking));
            check.reported_kept += reported.len();
            if !left.is_empty() {
                check.orphans += left.len();
                let ids: Vec<&str> = left.iter().map(|m| m.id.as_str()).collect();
                println!(
                    "check: {} live Zoom meeting(s) of deleted or non-Zoom booking {booking}: {ids:?}",
                    left.len()
                );
            }
        }
        if !zoom.unknown.is_empty() {
            check.orphans += zoom.unknown.len();
            println!(
                "check: {} live Zoom meeting(s) without a known booking's marker: {:?}",
                zoom.unknown.len(),
                zoom.unknown
            );
        }
        // Live Teams meetings of deleted bookings, of bookings not on Teams, or of no known booking.
        for (booking, live) in teams.by_booking {
            check.orphans += live.len();
            let ids: Vec<&str> = live.iter().map(|m| m.id.as_str()).collect();
            println!("check: {} live Teams meeting(s) of deleted or non-Teams booking {booking}: {ids:?}", live.len());
        }
        if !teams.unknown.is_empty() {
            check.orphans += teams.unknown.len();
            println!(
                "check: {} live Teams meeting(s) without a known booking's externalId: {:?}",
                teams.unknown.len(),
                teams.unknown
            );
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

    /// A booking whose service asks for Zoom: its meetings at the fake Zoom are those carrying one
    /// of its markers.
    fn zoom_booking(&mut self, b: &Booking, row: Option<&MeetingRow>, live: Vec<LiveZoom>, reconnects: &Reconnects) {
        let must_reconnect = b.provider.is_some_and(|p| reconnects.providers.contains(&p));
        let (reported, live): (Vec<LiveZoom>, Vec<LiveZoom>) =
            live.into_iter().partition(|m| must_reconnect && reconnects.reported(m, b.id));
        self.reported_kept += reported.len();
        match b.status.as_str() {
            "confirmed" => {
                self.confirmed += 1;
                if must_reconnect && row.is_none_or(|r| r.platform != "zoom") {
                    self.fell_back += 1;
                    self.fallback_booking(b, row, &live);
                } else {
                    self.confirmed_named_booking(b, row, live, zoom_mismatches);
                }
            }
            "cancelled" => self.cancelled_named_booking(b, row, &live),
            _ => self.other += 1,
        }
    }

    /// A booking whose service asks for Teams: its meetings at the fake Graph are those whose
    /// `externalId` names it. Microsoft's refresh tokens survive rotation, so no Teams provider
    /// may have to reconnect.
    fn teams_booking(&mut self, b: &Booking, row: Option<&MeetingRow>, live: Vec<LiveTeams>) {
        match b.status.as_str() {
            "confirmed" => {
                self.confirmed += 1;
                self.confirmed_named_booking(b, row, live, teams_mismatches);
            }
            "cancelled" => self.cancelled_named_booking(b, row, &live),
            _ => self.other += 1,
        }
    }

    /// A cancelled booking on a platform whose meetings name it: none of them live, no live row.
    fn cancelled_named_booking<M: Named>(&mut self, b: &Booking, row: Option<&MeetingRow>, live: &[M]) {
        let (_, vendor, _) = M::PLATFORM;
        self.cancelled += 1;
        if !live.is_empty() {
            self.duplicates += live.len();
            let ids: Vec<&str> = live.iter().map(Named::id).collect();
            self.problem(b.id, "duplicate", format!("cancelled, yet live at the fake {vendor}: {ids:?}"));
        }
        if let Some(r) = row.filter(|r| r.state == "live") {
            self.mismatched += 1;
            self.problem(b.id, "mismatched", format!("cancelled, yet its meetings row {} is live", r.external_id));
        }
    }

    /// A confirmed booking on a platform whose meetings name it: exactly one live meeting of the
    /// recorded generation, as `mismatches` wants it; none of another generation.
    fn confirmed_named_booking<M: Named>(
        &mut self,
        b: &Booking,
        row: Option<&MeetingRow>,
        live: Vec<M>,
        mismatches: fn(&Booking, Option<&MeetingRow>, &M) -> Vec<String>,
    ) {
        let (platform, vendor, name) = M::PLATFORM;
        let generation = row.filter(|r| r.platform == platform).map(|r| r.generation);
        let (current, older): (Vec<M>, Vec<M>) = live.into_iter().partition(|m| Some(m.generation()) == generation);
        if !older.is_empty() {
            self.orphans += older.len();
            let ids: Vec<String> =
                older.iter().map(|m| format!("{} (generation {})", m.id(), m.generation())).collect();
            self.problem(
                b.id,
                "orphan",
                format!("live {vendor} meetings of other generations than {generation:?}: {ids:?}"),
            );
        }
        if b.link.is_none() || current.is_empty() {
            self.lost += 1;
            let detail = format!(
                "confirmed on {vendor}; link {:?}, meeting_status {:?}, meetings row generation {generation:?}, \
                 no live {vendor} meeting with its {name}",
                b.link, b.meeting_status
            );
            self.problem(b.id, "lost", detail);
            return;
        }
        if current.len() > 1 {
            self.duplicates += current.len() - 1;
            let ids: Vec<&str> = current.iter().map(Named::id).collect();
            self.problem(
                b.id,
                "duplicate",
                format!("{} live {vendor} meetings with its {name}: {ids:?}", current.len()),
            );
            return;
        }
        let reasons = mismatches(b, row, &current[0]);
        if reasons.is_empty() {
            self.good += 1;
        } else {
            self.mismatched += 1;
            self.problem(b.id, "mismatched", reasons.join("; "));
        }
    }

    /// A confirmed booking of a Zoom provider who must reconnect, which meetingd moved to the
    /// fallback platform: its link is the fallback's, and no unreported Zoom meeting of it is live.
    fn fallback_booking(&mut self, b: &Booking, row: Option<&MeetingRow>, live: &[LiveZoom]) {
        if !live.is_empty() {
            self.orphans += live.len();
            let ids: Vec<&str> = live.iter().map(|m| m.id.as_str()).collect();
            self.problem(b.id, "orphan", format!("on the fallback, yet live at the fake Zoom, unreported: {ids:?}"));
        }
        let mut reasons = Vec::new();
        if b.meeting_status.as_deref() != Some("ready") {
            reasons.push(format!("meeting_status {:?}", b.meeting_status));
        }
        match row {
            None => reasons.push("no meetings row".into()),
            Some(r) => {
                if r.state != "live" || r.platform != "jitsi" {
                    reasons.push(format!(
                        "meetings row is {} on {}, not live on the fallback (jitsi)",
                        r.state, r.platform
                    ));
                }
                if r.start != b.start || r.end != b.end {
                    reasons.push(format!("meetings row at {}–{}, booking at {}–{}", r.start, r.end, b.start, b.end));
                }
                if b.meeting_id.as_deref() != Some(r.external_id.as_str())
                    || b.link.as_deref() != Some(r.join_url.as_str())
                {
                    reasons.push(format!(
                        "booking shows {:?} {:?}, meetings row {} {}",
                        b.meeting_id, b.link, r.external_id, r.join_url
                    ));
                }
            }
        }
        if reasons.is_empty() {
            self.good += 1;
        } else {
            self.mismatched += 1;
            self.problem(b.id, "mismatched", format!("on the fallback: {}", reasons.join("; ")));
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
            && self.deactivated.is_empty()
            && self.other == 0
    }

    pub fn print(&self, fakes: &Fakes<'_>) {
        let (inserts, calls) = {
            let state = fakes.google.state.lock().unwrap();
            (state.inserts, state.calls.len())
        };
        let creates = fakes.zoom.state.lock().unwrap().creates;
        let journal = fakes.zoom.journal();
        let troubled = journal.iter().filter(|call| call.contains("(chaos")).count();
        let teams_made = fakes.graph.state.lock().unwrap().meetings.len();
        let graph_journal = fakes.graph.journal();
        let graph_troubled = graph_journal.iter().filter(|call| call.contains("(chaos")).count();
        println!(
            "check: {} bookings: {} confirmed, {} cancelled, {} other",
            self.bookings, self.confirmed, self.cancelled, self.other
        );
        println!(
            "check: fake Google holds {} live events ({inserts} inserts, {calls} Calendar calls, {} token refreshes)",
            self.live_events,
            fakes.google.refresh_calls()
        );
        println!(
            "check: fake Zoom holds {} live meetings ({creates} creates, {} calls of which {troubled} met the chaos, \
             {} token requests)",
            self.live_zoom,
            journal.len(),
            fakes.zoom.refresh_calls()
        );
        println!(
            "check: fake Graph holds {} live Teams meetings ({teams_made} made, {} calls of which {graph_troubled} \
             met the chaos, {} token refreshes)",
            self.live_teams,
            graph_journal.len(),
            fakes.graph.refresh_calls()
        );
        println!("check: meetingd.meetings holds {} live rows; jobs: {}", self.live_rows, self.jobs);
        println!(
            "check: {} of {} confirmed bookings have exactly one live event, Zoom or Teams meeting, a live row with \
             their times, the meeting's start and its link, or the fallback's ({})",
            self.good, self.confirmed, self.fell_back
        );
        // The tolerance (see `Reconnects`), printed whether it was needed or not.
        println!(
            "check: tolerated: {} Zoom provider(s) must reconnect, their refresh token rotated at Zoom but \
             never saved (a daemon killed, or PostgreSQL crashed, mid-refresh): {} booking(s) on the \
             fallback, {} meeting(s) left at Zoom and reported orphaned{}",
            self.reconnects.len(),
            self.fell_back,
            self.reported_kept,
            if self.reconnects.is_empty() { String::new() } else { format!(": {}", self.reconnects.join(", ")) }
        );
        for d in &self.deactivated {
            println!("check: DEACTIVATED {d}");
        }
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

/// Where a confirmed booking, its meetings row and its one live meeting disagree, on every
/// platform: the booking not ready; `times`, the platform's own comparison of the meeting's times
/// with the booking's; the meeting's link (`what` names the meeting in sentences) not the
/// booking's; the row not live, at other times, naming another meeting (`wrong_meeting` says how,
/// or `None` when it names this one), or not what the booking shows.
fn mismatches_of(
    b: &Booking,
    row: Option<&MeetingRow>,
    times: Option<String>,
    what: &str,
    link: &Option<String>,
    wrong_meeting: impl Fn(&MeetingRow) -> Option<String>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if b.meeting_status.as_deref() != Some("ready") {
        reasons.push(format!("meeting_status {:?}", b.meeting_status));
    }
    reasons.extend(times);
    if link.is_none() || *link != b.link {
        reasons.push(format!("{what} link {link:?}, booking link {:?}", b.link));
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
            reasons.extend(wrong_meeting(r));
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

/// Where a confirmed Teams booking, its meetings row and its one live Teams meeting disagree.
fn teams_mismatches(b: &Booking, row: Option<&MeetingRow>, meeting: &LiveTeams) -> Vec<String> {
    // To the second: meetingd sends whole seconds, Graph keeps fractions of its own.
    let second = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp());
    let times = (second(meeting.start) != Some(b.start.timestamp()) || second(meeting.end) != Some(b.end.timestamp()))
        .then(|| {
            format!(
                "Teams meeting {} at {:?}–{:?}, booking at {}–{}",
                meeting.id, meeting.start, meeting.end, b.start, b.end
            )
        });
    mismatches_of(b, row, times, "Teams", &meeting.link, |r| {
        (r.external_id != meeting.id).then(|| {
            format!(
                "meetings row names {} (generation {}), live Teams meeting is {} (generation {})",
                r.external_id, r.generation, meeting.id, meeting.generation
            )
        })
    })
}

/// Where a confirmed Zoom booking, its meetings row and its one live Zoom meeting disagree.
fn zoom_mismatches(b: &Booking, row: Option<&MeetingRow>, meeting: &LiveZoom) -> Vec<String> {
    // Zoom keeps whole seconds and whole minutes.
    let start = chrono::SubsecRound::trunc_subsecs(b.start, 0);
    let minutes = ((b.end - b.start).num_seconds().max(1) + 59) / 60;
    let times = (meeting.start != Some(start) || meeting.duration != Some(minutes)).then(|| {
        format!(
            "Zoom meeting {} at {:?} for {:?} min, booking at {} for {minutes} min",
            meeting.id, meeting.start, meeting.duration, b.start
        )
    });
    mismatches_of(b, row, times, "Zoom", &meeting.link, |r| {
        (r.external_id != meeting.id).then(|| {
            format!(
                "meetings row names {} (generation {}), live Zoom meeting is {}",
                r.external_id, r.generation, meeting.id
            )
        })
    })
}

/// Where a confirmed Google booking, its meetings row and its one live event disagree.
fn mismatches(b: &Booking, row: Option<&MeetingRow>, event: &LiveEvent) -> Vec<String> {
    let times = (event.start != Some(b.start) || event.end != Some(b.end))
        .then(|| format!("event {} at {:?}–{:?}, booking at {}–{}", event.id, event.start, event.end, b.start, b.end));
    mismatches_of(b, row, times, "event", &event.link, |r| {
        (r.external_id != event.id || r.external_id != event_id(b.id, r.generation)).then(|| {
            format!("meetings row names {} (generation {}), live event is {}", r.external_id, r.generation, event.id)
        })
    })
}

async fn read_bookings(db: &mut Db) -> Result<Vec<Booking>> {
    let rows = db
        .query(
            "SELECT b.id, b.status, b.start_time, b.end_time, b.meeting_link, b.meeting_status, b.meeting_id,
                    s.meeting_platform, s.provider_id
               FROM bookings b LEFT JOIN services s ON s.id = b.service_id
              WHERE b.notes = $1 ORDER BY b.start_time, b.id",
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
            platform: r.get(7),
            provider: r.get(8),
        })
        .collect())
}

async fn read_meetings(db: &mut Db) -> Result<HashMap<Uuid, MeetingRow>> {
    let rows = db
        .query(
            "SELECT booking_id, state, external_id, join_url, start_time, end_time, generation, platform
               FROM meetingd.meetings",
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
                platform: r.get(7),
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
    fakes: &Fakes<'_>,
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
        fake_evidence(fakes.google, p.booking);
        fake_zoom_evidence(fakes.zoom, fakes.marks, p.booking);
        fake_teams_evidence(fakes.graph, p.booking);
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

/// The fake Zoom's meetings whose mark names the booking (deleted ones too) and the calls
/// carrying such a mark or naming those meetings.
fn fake_zoom_evidence(zoom: &FakeZoom, marks: &Marks, booking: Uuid) {
    let meetings: Vec<StoredMeeting> = zoom.state.lock().unwrap().meetings.values().cloned().collect();
    let mut ids = Vec::new();
    for m in &meetings {
        let agenda = m.body["agenda"].as_str().unwrap_or_default();
        let Some((_, generation)) = marks.read(agenda).filter(|(b, _)| *b == booking) else { continue };
        let id = m.body["id"].as_u64().unwrap_or_default();
        println!(
            "  zoom     {id} generation {generation} deleted={} start={} duration={} link={}",
            m.deleted, m.body["start_time"], m.body["duration"], m.body["join_url"]
        );
        ids.push(format!("/v2/meetings/{id} "));
    }
    for call in zoom.journal() {
        let ours = marker_in(&call).and_then(|mark| marks.read(mark)).is_some_and(|(b, _)| b == booking);
        if ours || ids.iter().any(|id| call.contains(id.as_str())) {
            println!("  call     {call}");
        }
    }
}

/// The fake Graph's Teams meetings whose `externalId` names the booking (deleted ones too) and
/// the calls carrying such an `externalId` or naming those meetings.
fn fake_teams_evidence(graph: &FakeGraph, booking: Uuid) {
    let meetings: Vec<_> = graph.state.lock().unwrap().meetings.values().cloned().collect();
    let mut ids = Vec::new();
    for m in &meetings {
        let external = m.body["externalId"].as_str().unwrap_or_default();
        let Some((_, generation)) = teams_intent(external).filter(|(b, _)| *b == booking) else { continue };
        let id = m.body["id"].as_str().unwrap_or_default().to_string();
        println!(
            "  teams    {id} generation {generation} mailbox {} deleted={} start={} end={} link={}",
            m.owner, m.deleted, m.body["startDateTime"], m.body["endDateTime"], m.body["joinWebUrl"]
        );
        ids.push(format!("/onlineMeetings/{id} "));
    }
    let simple = booking.simple().to_string();
    for call in graph.journal() {
        if call.contains(&simple) || ids.iter().any(|id| call.contains(id.as_str())) {
            println!("  call     {call}");
        }
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
