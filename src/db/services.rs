//! Statements on the marketplace's `services` for the API: a service's meeting platform and
//! settings, read and written whatever the app's column types are.
//!
//! The write is `meetingd.set_service_meeting` (V12): it checks the rules, writes through
//! `json_populate_record(NULL::services, …)`, so each value takes the column's own type (text,
//! varchar, an enum, json or jsonb) by its input function, and re-arms the service's upcoming
//! confirmed bookings, in one statement.

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

/// Why the database refused a service's meeting platform and settings
/// (`meetingd.set_service_meeting`, `sql/migrations/V12__service_meeting_rules.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid_settings`, `platform_required`, `unknown_platform`, `platform_unavailable`,
    /// `unsupported_option`, `platform_not_connected`, `platforms_unpublished`, `not_found`.
    pub code: String,
    /// The setting or option at fault, or `platform`.
    pub key: Option<String>,
    /// A sentence for the provider.
    pub message: String,
}

impl Refusal {
    /// The refusal a `meetingd.set_service_meeting` error carries (SQLSTATE `MD…`, the code as its
    /// DETAIL, the key as its COLUMN); `None` for any other error.
    pub fn of(error: &tokio_postgres::Error) -> Option<Refusal> {
        let db = error.as_db_error()?;
        if !db.code().code().starts_with("MD") {
            return None;
        }
        Some(Refusal {
            code: db.detail()?.to_string(),
            key: db.column().map(str::to_string),
            message: db.message().to_string(),
        })
    }

    /// Also a refusal: a value PostgreSQL cannot hold at all (`\u0000` in the settings, a NUL in
    /// the platform's name), which the function never saw.
    fn of_value(error: &tokio_postgres::Error) -> Option<Refusal> {
        use tokio_postgres::error::SqlState;
        let (code, key, message) = match error.code()? {
            c if *c == SqlState::UNTRANSLATABLE_CHARACTER => (
                "invalid_settings",
                "settings",
                "The meeting settings hold a character that cannot be stored (\\u0000).",
            ),
            c if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
                ("unknown_platform", "platform", "The meeting platform's name holds a character that cannot be stored.")
            }
            _ => return None,
        };
        Some(Refusal { code: code.into(), key: Some(key.into()), message: message.into() })
    }
}

/// Sets service `id`'s meeting platform (`None`: none) and settings by the rules of
/// `meetingd.set_service_meeting` (the same the app's own writes may call), and re-arms its
/// upcoming confirmed bookings: how many were re-armed, or why the rules refused the change
/// (then nothing changed).
pub async fn set_meeting(
    db: Sql<'_>,
    id: Uuid,
    platform: Option<&str>,
    settings: &serde_json::Value,
) -> Result<Result<i64, Refusal>, DbError> {
    match db.query_one("SELECT meetingd.set_service_meeting($1, $2, $3)", &[&id, &platform, &settings]).await {
        Ok(row) => Ok(Ok(row.get(0))),
        Err(e) => Refusal::of(&e).or_else(|| Refusal::of_value(&e)).map(Err).ok_or(DbError::Query(e)),
    }
}
