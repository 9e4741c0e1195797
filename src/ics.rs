//! The calendar file (RFC 5545) for one booking, written with the `icalendar` crate.
//!
//! Stable UID per booking, SEQUENCE rising with every booking change, DTSTAMP, UTC times; the
//! meeting link in LOCATION, URL, DESCRIPTION and an RFC 7986 CONFERENCE property; a cancelled
//! booking is `METHOD:CANCEL` with `STATUS:CANCELLED`. Escaping and line folding are the crate's.
//! Pure: the HTTP layer decides what the caller may see.

use chrono::{DateTime, Utc};
use icalendar::{Calendar, Component, Event, EventLike, EventStatus, Property};
use uuid::Uuid;

/// What goes in the file.
#[derive(Debug, Clone)]
pub struct CalendarBooking {
    pub booking_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub cancelled: bool,
    /// Rises with every change of the booking.
    pub sequence: u32,
    /// The meeting link, when the caller may see it.
    pub link: Option<String>,
    /// The platform's name for people, e.g. "Google Meet".
    pub platform: Option<String>,
    pub provider_name: Option<String>,
}

/// The stable UID of a booking's calendar entry.
pub fn uid(booking: Uuid) -> String {
    format!("booking-{booking}@meetingd")
}

pub fn render(b: &CalendarBooking, now: DateTime<Utc>) -> String {
    let mut event = Event::new();
    event
        .uid(&uid(b.booking_id))
        .sequence(b.sequence)
        .timestamp(now)
        .starts(b.start)
        .ends(b.end)
        .summary(&b.title)
        .status(if b.cancelled { EventStatus::Cancelled } else { EventStatus::Confirmed });
    let mut description = b.description.clone().unwrap_or_default();
    if let Some(provider) = &b.provider_name {
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("With {provider}."));
    }
    if let Some(link) = &b.link {
        let platform = b.platform.as_deref().unwrap_or("the meeting");
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("Join {platform}: {link}"));
        event.location(link).url(link);
        let mut conference = Property::new("CONFERENCE", link);
        conference.add_parameter("VALUE", "URI").add_parameter("FEATURE", "AUDIO,VIDEO");
        if let Some(name) = &b.platform {
            conference.add_parameter("LABEL", name);
        }
        event.append_property(conference);
    }
    if !description.is_empty() {
        event.description(&description);
    }
    let mut calendar = Calendar::new();
    calendar.append_property(("METHOD", if b.cancelled { "CANCEL" } else { "PUBLISH" }));
    calendar.append_property(("CALSCALE", "GREGORIAN"));
    calendar.push(event.done());
    calendar.done().to_string()
}
