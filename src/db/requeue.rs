//! Re-arming jobs from outside the dispatcher: the API, the connect callback and admin commands.
//!
//! Owns `meetingd.touch_job` calls for one booking, the re-queue of failed jobs (all of them, or
//! one provider's after a reconnect) and the wake-up NOTIFY on channel `meetingd`. It must not
//! claim or finish a job: that is the dispatcher's (`jobs.rs`).

use uuid::Uuid;

use super::{DbError, Sql};

/// Which failed jobs [`requeue_failed`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Every failed job.
    All,
    /// The failed jobs of this provider's (`services.provider_id`) bookings.
    OfProvider(Uuid),
}

// The re-queue: a new attempt series, due now.
const REQUEUE_ALL: &str = "UPDATE meetingd.jobs j
                SET state = 'pending', run_at = now(), attempts = 0, write_failures = 0, last_error = NULL, updated_at = now()
              WHERE j.state = 'failed'";

const REQUEUE_PROVIDER: &str = "UPDATE meetingd.jobs j
                SET state = 'pending', run_at = now(), attempts = 0, write_failures = 0, last_error = NULL, updated_at = now()
               FROM bookings b JOIN services s ON s.id = b.service_id
              WHERE j.booking_id = b.id AND s.provider_id = $1 AND j.state = 'failed'";

/// Re-arms one booking's job (creating it if needed) and wakes the daemons (`meetingd.touch_job`).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn touch_job(db: Sql<'_>, booking: Uuid) -> Result<(), DbError> {
    db.query_one("SELECT meetingd.touch_job($1)", &[&booking]).await?;
    Ok(())
}

/// Whether meetingd has a job for the booking.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn has_job(db: Sql<'_>, booking: Uuid) -> Result<bool, DbError> {
    Ok(db.query_opt("SELECT 1 FROM meetingd.jobs WHERE booking_id = $1", &[&booking]).await?.is_some())
}

/// Gives the chosen failed jobs a new attempt series, due now, and wakes the daemons when there
/// was any; returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn requeue_failed(db: Sql<'_>, which: Failed) -> Result<u64, DbError> {
    let n = match which {
        Failed::All => db.execute(REQUEUE_ALL, &[]).await?,
        Failed::OfProvider(provider) => db.execute(REQUEUE_PROVIDER, &[&provider]).await?,
    };
    if n > 0 {
        notify_daemons(db).await?;
    }
    Ok(n)
}

/// Wakes every listening daemon's dispatcher (a NOTIFY on channel `meetingd`; the payload names
/// no job, so each one looks for due jobs).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn notify_daemons(db: Sql<'_>) -> Result<(), DbError> {
    db.execute("SELECT pg_notify('meetingd', '0')", &[]).await?;
    Ok(())
}
