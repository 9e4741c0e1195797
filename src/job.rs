//! A job's data as the worker sees it: the claim, the booking and meeting it read, the create
//! intent, and what a run learned (outcome, audit lines, the event for the app).
//!
//! Plain data shared by the worker (`worker/`) and the queue's statements (`db/jobs.rs`). It must
//! not hold SQL, do I/O or decide anything: `worker::plan` decides, `db::jobs` reads and writes.
//!
//! Platform names stay text here where they come from a stored row (`MeetingRecord`, `Intent`,
//! `Outcome::Linked`, audit and event lines): a row may name a platform this build does not
//! know, and the worker turns that into a failed job with a sentence, never a failed claim. The
//! worker's own functions take [`crate::providers::Platform`]; it parses a stored name where it
//! needs that platform's provider (`Worker::provider_for`), and `worker::plan` compares a stored
//! name with the platform it chose by that platform's name.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::providers::{Account, Meeting};

/// A job this daemon holds the lease on.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: i64,
    pub booking_id: Uuid,
    /// Numbers the job's claims (bumped by every claim).
    pub claim_seq: i64,
    /// Fencing token, drawn at random by every claim: only the holder of this claim may record
    /// the job's outcome or a create intent. Unlike `claim_seq`, it is never handed out twice,
    /// even when a server crash loses the (asynchronously committed) claim that drew it.
    pub token: Uuid,
    /// The booking change this claim answers; the write-back finds the result stale when the job
    /// has moved past it.
    pub version: i64,
    /// 1 for the first attempt since the booking last changed.
    pub attempt: i32,
    /// When the booking change was recorded (for confirm-to-link latency).
    pub requested_at: DateTime<Utc>,
    /// A create that an earlier run recorded before calling the platform and whose result was
    /// never recorded: that meeting may exist.
    pub intent: Option<Intent>,
    /// The highest generation a create was ever recorded for (0: none): never used again.
    pub intended_generation: i32,
    /// Write-backs the database refused since the booking last changed (see [`crate::db::jobs::note_write_failure`]).
    pub write_failures: i32,
    /// The rate-limited platform whose token the claim took for this run's first call there
    /// (`ratelimit.rs`); `None`: none taken.
    pub rate_paid: Option<String>,
    /// The create intent this claim recorded itself (`db/jobs/claim.sql`), for the common case of
    /// a booking that needs a new meeting; no create has been attempted for it yet. A run whose
    /// plan makes exactly this create needs no hold; one that does not use it has its write-back
    /// clear it.
    pub claimed: Option<Intent>,
    /// The claim committed synchronously (it may lead to a call on a platform that keeps
    /// meetings): it is durable, so no claim confirmation is needed before such a call.
    pub durable: bool,
}

/// A create recorded before its platform call (`meetingd.jobs.intent_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub platform: String,
    pub generation: i32,
    /// The provider whose account the create was for (`None`: recorded before owners were).
    pub owner: Option<Uuid>,
    /// The account the create was made in, when the provider had one connected: a retry adopts
    /// the meeting only in that account, and the meeting is deleted through it otherwise.
    pub account: Option<Account>,
}

/// A booking as the worker reconciles it, read by the claim. Every marketplace column may be
/// NULL (or of a type meetingd cannot read: then `unreadable` says so).
#[derive(Debug, Clone)]
pub struct BookingView {
    pub booking_id: Uuid,
    /// `""` when NULL.
    pub status: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub customer_id: Option<Uuid>,
    pub meeting_status: Option<String>,
    /// `bookings.meeting_link` as the app left it.
    pub meeting_link: Option<String>,
    pub service_id: Uuid,
    pub provider_id: Option<Uuid>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub is_online: bool,
    pub meeting_platform: Option<String>,
    pub meeting_settings: serde_json::Value,
    /// The provider has an active integration for `meeting_platform`.
    pub connected: bool,
    /// That integration (active or not), as the account a new meeting would be made in.
    pub integration: Option<Account>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub provider_name: Option<String>,
    /// What could not be read, as a sentence (a job with such a booking fails with it).
    pub unreadable: Option<String>,
}

/// The meeting meetingd recorded for a booking.
#[derive(Debug, Clone, PartialEq)]
pub struct MeetingRecord {
    pub platform: String,
    pub requested_platform: Option<String>,
    pub meeting: Meeting,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub generation: i32,
    pub live: bool,
    /// The provider it was made for (`None`: recorded before owners were).
    pub owner: Option<Uuid>,
}

/// Everything reconcile needs about one claimed job.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub claim: Claim,
    /// `None` when the booking was deleted.
    pub booking: Option<BookingView>,
    pub meeting: Option<MeetingRecord>,
}

/// One line of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: &'static str,
    pub platform: Option<String>,
    pub outcome: &'static str,
    pub duration_ms: Option<i32>,
    pub detail: Option<String>,
}

/// A notification for the app (also sent on channel `meetingd_events` by a trigger).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub platform: Option<String>,
    pub message: String,
}

/// What the worker learned, to be recorded.
// Made once per job and moved a few times: not worth a heap allocation for the large variant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A live meeting exists for the booking (created, moved or already right).
    Linked {
        platform: String,
        requested_platform: Option<String>,
        meeting: Meeting,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        generation: i32,
        settings: serde_json::Value,
        /// The provider it was made for (the account is in `meeting`).
        owner: Option<Uuid>,
    },
    /// The booking needs no meeting; `deleted` says whether a live one was removed. The booking's
    /// link is cleared unless it is a provider's manual link.
    Unlinked { deleted: bool },
    /// Nothing to do or record (a completed booking keeps what it has).
    Unchanged,
    /// Try again after `delay`.
    Retry { error: String, delay: Duration },
    /// Out of attempts, or retrying cannot help: the provider is told.
    Failed { error: String },
    /// Not attempted (a rate limit): run again after `delay`, without spending an attempt.
    Defer { delay: Duration },
}

/// Result of a write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteBack {
    /// Recorded; the job is finished (or scheduled for its retry).
    Done,
    /// Recorded what exists at the platform, but the booking changed meanwhile: the job runs again.
    Stale,
    /// Another claim owns the job now (our lease expired); nothing was written.
    LeaseLost,
}

/// One finished job, as handed to [`crate::db::jobs::write_back`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub snapshot: Snapshot,
    pub outcome: Outcome,
    pub audit: Vec<AuditEntry>,
    pub event: Option<Event>,
    /// The create intent this run settled (its meeting is now recorded, or was deleted); it is
    /// cleared only if it is still the job's intent.
    pub resolved: Option<Intent>,
    /// The run deleted the booking's recorded meeting (whatever came after).
    pub removed: bool,
}

impl Snapshot {
    /// The platform the booking's service asks for, if any.
    pub(crate) fn requested(&self) -> Option<String> {
        self.booking.as_ref().and_then(|b| b.meeting_platform.clone())
    }
}
