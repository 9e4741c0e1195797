//! Statements on the marketplace's `services` for the API: a service's meeting platform and
//! settings, read and written whatever the app's column types are.
//!
//! The write goes through `json_populate_record(NULL::services, …)`, so each value takes the
//! column's own type (text, varchar, an enum, json or jsonb) by its input function, and re-arms
//! the service's upcoming confirmed bookings in the same statement.

use uuid::Uuid;

use super::{DbError, Sql};

/// A service's meeting columns, as the API shows and checks them.
#[derive(Debug, Clone)]
pub struct ServiceMeeting {
    pub provider_id: Option<Uuid>,
    pub is_online: bool,
    pub platform: Option<String>,
    /// `meeting_settings` as text (JSON, unless the app wrote something else there).
    pub settings: Option<String>,
}

/// The meeting columns of service `id`; `None` when there is no such service.
pub async fn meeting_of(db: Sql<'_>, id: Uuid) -> Result<Option<ServiceMeeting>, DbError> {
    let row = db
        .query_opt(
            "SELECT provider_id, COALESCE(is_online, false), meeting_platform::text, meeting_settings::text
               FROM services WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| ServiceMeeting {
        provider_id: r.get(0),
        is_online: r.get(1),
        platform: r.get(2),
        settings: r.get(3),
    }))
}

/// Sets service `id`'s meeting platform and settings, and re-arms its upcoming confirmed
/// bookings; returns how many were re-armed.
pub async fn set_meeting(
    db: Sql<'_>,
    id: Uuid,
    platform: Option<&str>,
    settings: &serde_json::Value,
) -> Result<i64, DbError> {
    let row = db
        .query_one(
            "WITH r AS (SELECT * FROM json_populate_record(NULL::services,
                          json_build_object('meeting_platform', $2::text, 'meeting_settings', $3::json))),
                  u AS (UPDATE services s SET meeting_platform = r.meeting_platform, meeting_settings = r.meeting_settings
                          FROM r WHERE s.id = $1 RETURNING s.id)
             SELECT count(meetingd.touch_job(b.id))
               FROM bookings b JOIN u ON b.service_id = u.id
              WHERE b.status::text = 'confirmed' AND b.start_time > now()",
            &[&id, &platform, &settings],
        )
        .await?;
    Ok(row.get(0))
}
