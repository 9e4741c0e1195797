//! The reconcile decision: what a claimed job must do, from its snapshot alone.
//!
//! Owns [`Plan`] and [`plan`], the table in ARCHITECTURE.md ("What reconcile decides") as code,
//! and the rules it rests on (a manual link, the account a create intent was made in, the next
//! generation). Pure: it must not do I/O, read a clock or call a platform.

use crate::config::Fallback;
use crate::job::{BookingView, Intent, MeetingRecord, Outcome, Snapshot};
use crate::providers::{Account, Choice, MeetingRequest, Platform, choose_platform};
use crate::settings::{self, TitleContext};

/// What a job must do, decided from the snapshot alone.
#[derive(Debug, Clone)]
pub enum Plan {
    /// No platform call: record this outcome.
    Record(Outcome),
    /// Retrying cannot help; the sentence tells the provider what to fix.
    Fail(String),
    Create {
        choice: Choice,
        req: MeetingRequest,
    },
    /// The meeting is right; make sure the booking shows it.
    Keep {
        record: MeetingRecord,
        req: MeetingRequest,
    },
    /// The booking moved: move the meeting (same link).
    Update {
        record: MeetingRecord,
        req: MeetingRequest,
    },
    Delete {
        record: MeetingRecord,
    },
    /// The service switched platforms: remove the old meeting, then create on the new platform.
    Replace {
        old: MeetingRecord,
        choice: Choice,
        req: MeetingRequest,
    },
}

/// Decides what reconciling a booking takes.
///
/// A confirmed booking of an online service (without a manual link) must have exactly one live
/// meeting at the booking's times; a completed booking keeps what it has; anything else (pending,
/// cancelled, rejected, deleted, no longer online, manual link) must have none.
pub fn plan(s: &Snapshot, available: impl Fn(Platform) -> bool, fallback: Fallback) -> Plan {
    let live = s.meeting.as_ref().filter(|m| m.live).cloned();
    let Some(b) = &s.booking else {
        return remove(live);
    };
    if let Some(problem) = &b.unreadable {
        return Plan::Fail(format!("meetingd cannot read this booking: {problem}."));
    }
    if b.status == "completed" {
        return Plan::Record(Outcome::Unchanged);
    }
    let wanted = b.is_online && b.status == "confirmed" && !is_manual(b, s.meeting.as_ref());
    if !wanted {
        return remove(live);
    }
    let (Some(start), Some(end)) = (b.start, b.end) else {
        return Plan::Fail("The booking has no start or end time; set both to get a meeting link.".to_string());
    };
    if end <= start {
        return Plan::Fail(format!(
            "The booking ends ({}) before it starts ({}); correct its times to get a meeting link.",
            end.to_rfc3339(),
            start.to_rfc3339()
        ));
    }
    let Some(provider) = b.provider_id else {
        return Plan::Fail("The booking's service has no provider; set one to get a meeting link.".to_string());
    };
    let settings = match settings::parse(&b.meeting_settings) {
        Ok(settings) => settings,
        Err(reason) => return Plan::Fail(reason),
    };
    let title = settings.title(&TitleContext {
        service: b.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).unwrap_or(settings::UNTITLED_SERVICE),
        customer: b.customer_name.as_deref().unwrap_or("customer"),
        provider: b.provider_name.as_deref().unwrap_or("provider"),
    });
    let description = settings.description.clone().or_else(|| b.description.clone());
    // A create recorded but never answered may exist on its platform under its generation: a new
    // create there reuses that identity (the platform adopts it); anywhere else, it gets a new one.
    let generation_on = |choice: &Choice| match &s.claim.intent {
        Some(i)
            if i.platform == choice.platform.as_str()
                && i.owner.is_none_or(|o| o == provider)
                && same_account(i, b.integration.as_ref())
                && i.generation > s.meeting.as_ref().map_or(0, |m| m.generation) =>
        {
            i.generation
        }
        _ => next_generation(s),
    };
    let request = |generation| MeetingRequest {
        booking_id: b.booking_id,
        generation,
        provider_user_id: provider,
        title: title.clone(),
        description: description.clone(),
        customer_email: b.customer_email.clone(),
        start,
        end,
        settings: b.meeting_settings.clone(),
        options: settings.options,
        expected_account: b.meeting_platform.as_deref().and_then(|p| p.parse().ok()).zip(b.integration.clone()),
    };
    let choose = || choose_platform(b.meeting_platform.as_deref(), b.connected, &available, fallback);
    match live {
        Some(record) => {
            // The service moved to another provider: the meeting belongs in the new provider's
            // account, and the old one's must go.
            if record.owner.is_some_and(|o| o != provider)
                && let Ok(choice) = choose()
            {
                let generation = next_generation(s);
                return Plan::Replace { old: record, choice, req: request(generation) };
            }
            if record.requested_platform != b.meeting_platform {
                // The service now asks for another platform. Replace the meeting only when that
                // platform can really be used; otherwise keep the working link.
                if let Ok(choice) = choose()
                    && choice.platform.as_str() != record.platform
                {
                    let generation = generation_on(&choice);
                    return Plan::Replace { old: record, choice, req: request(generation) };
                }
            }
            let req = request(record.generation);
            if record.start == start && record.end == end {
                Plan::Keep { record, req }
            } else {
                Plan::Update { record, req }
            }
        }
        None => match choose() {
            Ok(choice) => {
                let generation = generation_on(&choice);
                Plan::Create { choice, req: request(generation) }
            }
            Err(reason) => Plan::Fail(reason),
        },
    }
}

/// The booking's link is the provider's own: set as manual through meetingd, or written by the
/// app itself (any link that is not one meetingd recorded for the booking). meetingd never
/// replaces it.
fn is_manual(b: &BookingView, recorded: Option<&MeetingRecord>) -> bool {
    if b.meeting_status.as_deref() == Some("manual") {
        return true;
    }
    match b.meeting_link.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => false,
        Some(link) => recorded.is_none_or(|m| m.meeting.join_url != link),
    }
}

/// Whether a create recorded in `intent` was made in the account a new create would use now.
fn same_account(intent: &Intent, now: Option<&Account>) -> bool {
    match (&intent.account, now) {
        (Some(then), Some(now)) => {
            then.integration_id == now.integration_id
                && (then.identity.is_none() || now.identity.is_none() || then.identity == now.identity)
        }
        _ => true,
    }
}

/// A generation no meeting of the booking has used: past the recorded meeting and any recorded intent.
pub(super) fn next_generation(s: &Snapshot) -> i32 {
    let recorded = s.meeting.as_ref().map_or(0, |m| m.generation);
    recorded.max(s.claim.intended_generation) + 1
}

impl Plan {
    /// Whether carrying out the plan creates the meeting `intent` stands for (same platform and
    /// generation), so that meeting is adopted rather than deleted first.
    pub(super) fn reuses(&self, intent: &Intent) -> bool {
        match self {
            Plan::Create { choice, req } | Plan::Replace { choice, req, .. } => {
                choice.platform.as_str() == intent.platform && req.generation == intent.generation
            }
            _ => false,
        }
    }
}

fn remove(live: Option<MeetingRecord>) -> Plan {
    match live {
        Some(record) => Plan::Delete { record },
        None => Plan::Record(Outcome::Unlinked { deleted: false }),
    }
}

#[cfg(test)]
mod tests;
