//! The calendar file (RFC 5545) for one booking, written with the `icalendar` crate.
//!
//! Stable UID per booking, SEQUENCE rising with every booking change, DTSTAMP, UTC times; the
//! meeting link in LOCATION, URL, DESCRIPTION and an RFC 7986 CONFERENCE property; a cancelled
//! booking is `METHOD:CANCEL` with `STATUS:CANCELLED`. VERSION, PRODID and CALSCALE are written
//! once each, here, not left to the crate's defaults. TEXT escaping is the crate's; line breaks
//! and folding are not left to it: every value enters through [`property`], which turns a text
//! value's line breaks into the `\n` escape and drops every other control character, and
//! [`content_lines`] strips any CR or LF that is not a line end from what the crate wrote and
//! folds each line at 75 octets, so no value can start a line of its own. The link is a
//! [`Link`], checked by `crate::links`.
//! Pure: the HTTP layer decides what the caller may see.

use chrono::{DateTime, Utc};
use icalendar::{Calendar, Component, Event, EventLike, EventStatus, Property};
use uuid::Uuid;

use crate::links::Link;

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
    /// The meeting link, when the caller may see it and it passed the link rule.
    pub link: Option<Link>,
    /// The platform's name for people, e.g. "Google Meet".
    pub platform: Option<String>,
    pub provider_name: Option<String>,
}

/// The stable UID of a booking's calendar entry.
pub fn uid(booking: Uuid) -> String {
    format!("booking-{booking}@meetingd")
}

/// The identifier of the product that wrote the file (RFC 5545 §3.7.3).
pub const PRODID: &str = "-//meetingd//meetingd//EN";

pub fn render(b: &CalendarBooking, now: DateTime<Utc>) -> String {
    let mut event = Event::new();
    event
        .uid(&uid(b.booking_id))
        .sequence(b.sequence)
        .timestamp(now)
        .starts(b.start)
        .ends(b.end)
        .append_property(property("SUMMARY", &b.title, Kind::Text, &[]))
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
        event.append_property(property("LOCATION", link.as_str(), Kind::Text, &[]));
        event.append_property(property("URL", link.as_str(), Kind::Other, &[]));
        let mut params = vec![("VALUE", "URI"), ("FEATURE", "AUDIO,VIDEO")];
        if let Some(name) = &b.platform {
            params.push(("LABEL", name.as_str()));
        }
        event.append_property(property("CONFERENCE", link.as_str(), Kind::Other, &params));
    }
    if !description.is_empty() {
        event.append_property(property("DESCRIPTION", &description, Kind::Text, &[]));
    }
    let mut calendar = Calendar::empty();
    calendar
        .append_property(property("VERSION", "2.0", Kind::Other, &[]))
        .append_property(property("PRODID", PRODID, Kind::Text, &[]))
        .append_property(property("CALSCALE", "GREGORIAN", Kind::Other, &[]))
        .append_property(property("METHOD", if b.cancelled { "CANCEL" } else { "PUBLISH" }, Kind::Other, &[]));
    calendar.push(event.done());
    content_lines(&calendar.to_string())
}

/// How a value may carry a line break.
#[derive(Clone, Copy)]
enum Kind {
    /// TEXT (RFC 5545 §3.3.11): a line break is part of the value, written as the `\n` escape.
    Text,
    /// Everything else (URIs, keywords): a line break has no place and is dropped.
    Other,
}

/// The one way a value enters the file. Text: CRLF, CR and the Unicode line breaks become LF
/// (which the crate escapes as `\n`), other control characters but TAB are dropped. Other
/// values and every parameter value: all control characters are dropped, and DQUOTE too from
/// parameters (the crate quotes a parameter value, and one cannot hold a quote).
fn property(name: &str, value: &str, kind: Kind, params: &[(&str, &str)]) -> Property {
    let value = match kind {
        Kind::Text => text(value),
        Kind::Other => value.chars().filter(|c| !c.is_control()).collect(),
    };
    let mut property = Property::new(name, value);
    for (key, raw) in params {
        let clean: String = raw.chars().filter(|c| !c.is_control() && *c != '"').collect();
        property.add_parameter(key, &clean);
    }
    property.done()
}

fn text(value: &str) -> String {
    let unified = value.replace("\r\n", "\n").replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n");
    unified.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).collect()
}

/// The file as sent: the crate's folds undone (no value holds a CR, so every CRLF followed by a
/// space is one), any CR or LF left inside a line dropped, whatever the crate did with a value,
/// and each line folded again at 75 octets (the crate's folding can leave 76).
fn content_lines(rendered: &str) -> String {
    let unfolded = rendered.replace("\r\n ", "");
    let mut out = String::with_capacity(rendered.len() + rendered.len() / 32);
    for line in unfolded.split_terminator("\r\n") {
        let line: String = line.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        fold(&line, &mut out);
    }
    out
}

/// One content line, folded as RFC 5545 §3.1 asks: at most 75 octets a physical line, the next
/// one after CRLF and a space, never inside a character.
fn fold(line: &str, out: &mut String) {
    const LIMIT: usize = 75;
    let mut room = LIMIT;
    for c in line.chars() {
        if c.len_utf8() > room {
            out.push_str("\r\n ");
            room = LIMIT - 1;
        }
        out.push(c);
        room -= c.len_utf8();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests;
