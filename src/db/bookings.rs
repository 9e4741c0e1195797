//! Statements on the marketplace's `bookings` for the HTTP API and admin commands: a booking as
//! the API shows it, a provider's manual link, a re-sync, and the report `meetingd bookings show`
//! prints.
//!
//! The daemon's own reads and writes of bookings (the claim's snapshot, the write-back) are the
//! queue's (`jobs.rs`). A change here that the daemon must act on re-arms the booking's job in
//! the same statement (`meetingd.touch_job`), so a run that read the booking before is stale and
//! cannot write over it. Nothing here calls a platform.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Sql};

/// A booking as the API reads it, with who may see it.
pub struct ApiBooking {
    pub id: Uuid,
    pub status: String,
    pub is_online: bool,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub title: String,
    pub description: Option<String>,
    pub provider_name: Option<String>,
    pub link: Option<String>,
    pub platform: Option<String>,
    pub meeting_status: Option<String>,
    pub meeting_error: Option<String>,
    /// The job's change counter (0 without a job): the calendar file's SEQUENCE.
    pub version: i64,
    /// The provider of the booking's service.
    pub provider_id: Uuid,
    pub customer_id: Uuid,
}

/// The booking `id`, for the API; `None` when there is none.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn for_api(db: Sql<'_>, id: Uuid) -> Result<Option<ApiBooking>, DbError> {
    let row = db
        .query_opt(
            "SELECT b.id, b.status, COALESCE(s.is_online, false), b.start_time, b.end_time, s.title, s.description,
                    pu.full_name, b.meeting_link, b.meeting_platform, b.meeting_status, b.meeting_error,
                    COALESCE(j.version, 0), s.provider_id, b.customer_id
               FROM bookings b
               JOIN services s ON s.id = b.service_id
               LEFT JOIN users pu ON pu.id = s.provider_id
               LEFT JOIN meetingd.jobs j ON j.booking_id = b.id
              WHERE b.id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|row| ApiBooking {
        id: row.get(0),
        status: row.get(1),
        is_online: row.get(2),
        start: row.get(3),
        end: row.get(4),
        title: row.get(5),
        description: row.get(6),
        provider_name: row.get(7),
        link: row.get(8),
        platform: row.get(9),
        meeting_status: row.get(10),
        meeting_error: row.get(11),
        version: row.get(12),
        provider_id: row.get(13),
        customer_id: row.get(14),
    }))
}

/// Sets a provider's own link (status `manual`) and re-arms the job, in one statement.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn set_manual_link(db: Sql<'_>, id: Uuid, link: &str) -> Result<(), DbError> {
    db.query(
        "WITH u AS (
            UPDATE bookings SET meeting_status = 'manual', meeting_link = $2, meeting_id = NULL,
                                meeting_platform = NULL, meeting_error = NULL
             WHERE id = $1 RETURNING id)
         SELECT meetingd.touch_job(id) FROM u",
        &[&id, &link],
    )
    .await?;
    Ok(())
}

/// Hands the booking's meeting back to meetingd (status `pending`; a link meetingd did not write
/// goes) and re-arms the job, in one statement.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn resync(db: Sql<'_>, id: Uuid) -> Result<(), DbError> {
    db.query(
        "WITH u AS (
            UPDATE bookings SET meeting_status = 'pending', meeting_error = NULL,
                   meeting_link = CASE WHEN meeting_status = 'manual'
                                         OR meeting_link IS DISTINCT FROM
                                            (SELECT m.join_url FROM meetingd.meetings m WHERE m.booking_id = $1)
                                       THEN NULL ELSE meeting_link END
             WHERE id = $1 RETURNING id)
         SELECT meetingd.touch_job(id) FROM u",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Clears the booking's link and leaves its meeting to the provider (status `manual`). The job
/// is re-armed separately ([`super::requeue::touch_job`]), so the daemon deletes the meeting.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn clear_to_manual(db: Sql<'_>, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE bookings SET meeting_status = 'manual', meeting_link = NULL, meeting_id = NULL, meeting_error = NULL
          WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Whether the booking's service is online (`Some(false)` when it is not or does not say);
/// `None` when there is no such booking.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn is_online(db: Sql<'_>, booking: Uuid) -> Result<Option<bool>, DbError> {
    Ok(db
        .query_opt(
            "SELECT COALESCE(s.is_online, false) FROM bookings b JOIN services s ON s.id = b.service_id WHERE b.id = $1",
            &[&booking],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Everything `meetingd bookings show` reports about a booking's meeting.
pub struct Report {
    pub status: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub service_title: String,
    pub service_online: Option<bool>,
    pub service_platform: Option<String>,
    pub provider_id: Uuid,
    pub meeting_status: Option<String>,
    pub meeting_platform: Option<String>,
    pub meeting_id: Option<String>,
    pub meeting_link: Option<String>,
    pub meeting_error: Option<String>,
    /// `None` when meetingd never had work for the booking.
    pub job: Option<JobReport>,
    /// The meeting meetingd recorded, if any.
    pub meeting: Option<MeetingReport>,
}

pub struct JobReport {
    pub state: String,
    pub version: i64,
    pub attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub struct MeetingReport {
    pub platform: String,
    pub external_id: String,
    pub generation: i32,
    pub state: String,
    pub start: Option<DateTime<Utc>>,
}

/// The booking, its service, job and recorded meeting; `None` when there is no such booking.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn report(db: Sql<'_>, booking: Uuid) -> Result<Option<Report>, DbError> {
    let Some(b) = db
        .query_opt(
            "SELECT b.status, b.start_time, b.end_time, s.title, s.is_online, s.meeting_platform, s.provider_id,
                    b.meeting_status, b.meeting_platform, b.meeting_id, b.meeting_link, b.meeting_error,
                    j.state, j.version, j.attempts, j.run_at, j.lease_until, j.last_error,
                    m.platform, m.external_id, m.generation, m.state, m.start_time
               FROM bookings b JOIN services s ON s.id = b.service_id
               LEFT JOIN meetingd.jobs j ON j.booking_id = b.id
               LEFT JOIN meetingd.meetings m ON m.booking_id = b.id
              WHERE b.id = $1",
            &[&booking],
        )
        .await?
    else {
        return Ok(None);
    };
    let job = b.get::<_, Option<String>>(12).map(|state| JobReport {
        state,
        version: b.get(13),
        attempts: b.get(14),
        run_at: b.get(15),
        lease_until: b.get(16),
        last_error: b.get(17),
    });
    let meeting = b.get::<_, Option<String>>(18).map(|platform| MeetingReport {
        platform,
        external_id: b.get(19),
        generation: b.get(20),
        state: b.get(21),
        start: b.get(22),
    });
    Ok(Some(Report {
        status: b.get(0),
        start: b.get(1),
        end: b.get(2),
        service_title: b.get(3),
        service_online: b.get(4),
        service_platform: b.get(5),
        provider_id: b.get(6),
        meeting_status: b.get(7),
        meeting_platform: b.get(8),
        meeting_id: b.get(9),
        meeting_link: b.get(10),
        meeting_error: b.get(11),
        job,
        meeting,
    }))
}
