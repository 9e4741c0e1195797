//! One job run: carries out the job's [`Plan`] against the platforms and collects what the run
//! learned (outcome, audit lines, the event for the app, what became of the create intent).
//!
//! Owns the platform calls of one run, the create intent and claim confirmation before them,
//! the mapping from platform errors to retries and failures, and the check of every link a
//! platform answers (`crate::links`: a link that breaks it fails the job and is never written).
//! It must not hold a database transaction across a platform call, and records nothing itself:
//! `complete.rs` writes the result back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use uuid::Uuid;

use super::Worker;
use super::plan::{Plan, next_generation, plan};
use crate::config::Fallback;
use crate::db::jobs;
use crate::job::{AuditEntry, Event, Finished, Intent, MeetingRecord, Outcome, Snapshot};
use crate::links::Link;
use crate::providers::{Choice, Meeting, MeetingProvider, MeetingRequest, Platform, ProviderError};
use crate::retry::jitter_unit;

mod rate;

/// One run of one claimed job: the worker, the job's snapshot, and what the run has done so far.
pub(super) struct Run<'a> {
    worker: &'a Worker,
    s: &'a Snapshot,
    /// Audit lines of the platform calls made, in order.
    audit: Vec<AuditEntry>,
    intents: Intents,
    /// The platform whose rate-limit token the claim took for this run's first call there.
    rate_paid: Option<Platform>,
}

/// What a run ends with, before it is recorded.
pub(super) struct Executed {
    pub outcome: Outcome,
    pub audit: Vec<AuditEntry>,
    pub event: Option<Event>,
    /// The create intent the run settled (see [`Finished::resolved`]).
    pub resolved: Option<Intent>,
    /// The run deleted the booking's recorded meeting.
    pub removed: bool,
}

impl Executed {
    pub(super) fn into_finished(self, snapshot: Snapshot) -> Finished {
        let Executed { outcome, audit, event, resolved, removed } = self;
        Finished { snapshot, outcome, audit, event, resolved, removed }
    }
}

/// Runs one claimed job. Never panics: a panic inside is that job's (retryable) error.
pub(super) async fn execute(worker: &Worker, s: &Snapshot) -> Executed {
    let mut run = Run {
        worker,
        s,
        audit: Vec::new(),
        intents: Intents {
            current: s.claim.intent.clone(),
            discarded: None,
            claimed: s.claim.claimed.clone().filter(|_| s.claim.durable),
            held: s.claim.durable,
            removed: false,
        },
        rate_paid: s.claim.rate_paid.as_deref().and_then(|p| p.parse().ok()),
    };
    let reconciled = AssertUnwindSafe(run.reconcile()).catch_unwind().await;
    let (outcome, audit, event) = match reconciled {
        Ok((outcome, event)) => (outcome, std::mem::take(&mut run.audit), event),
        Err(panic) => {
            let what = crate::supervise::panic_message(panic);
            tracing::error!(panic = %what, "internal error while reconciling; recorded on the job");
            let error = format!("internal error in meetingd: {what}");
            (run.after_error(ProviderError::Transient(error.clone()), "reconcile", None), Vec::new(), None)
        }
    };
    let resolved = run.intents.resolved(&outcome);
    Executed { outcome, audit, event, resolved, removed: run.intents.removed }
}

impl Run<'_> {
    async fn reconcile(&mut self) -> (Outcome, Option<Event>) {
        let (worker, s) = (self.worker, self.s);
        let available = |p: Platform| worker.providers.get(p).is_some();
        let plan = match plan(s, available, worker.fallback) {
            // A platform that keeps meetings is asked, not trusted: the record can outlive the
            // meeting (a delete whose answer was lost, then the booking wanted it again), and an
            // update of a meeting that is gone makes a new one.
            Plan::Keep { record, req }
                if worker.provider_for(&record.platform).is_ok_and(|(_, p)| p.keeps_meetings()) =>
            {
                Plan::Update { record, req }
            }
            other => other,
        };
        // A meeting an earlier create may have made, which this plan does not adopt: delete it first.
        if let Some(stray) = s.claim.intent.as_ref().filter(|i| !plan.reuses(i)) {
            if let Err((outcome, platform)) = self.discard(stray).await {
                let event = failed(&outcome, platform.as_str());
                return (outcome, event);
            }
            self.intents.current = None;
            self.intents.discarded = Some(stray.clone());
        }
        match plan {
            Plan::Record(Outcome::Unlinked { deleted: false }) if self.intents.discarded.is_some() => {
                (Outcome::Unlinked { deleted: true }, None)
            }
            Plan::Record(outcome) => (outcome, None),
            Plan::Fail(reason) => {
                tracing::warn!(outcome = "failed", reason = %reason, "booking cannot get a meeting");
                self.audit.push(entry("meeting.create", None, "failed", None, Some(reason.clone())));
                let event = Event { kind: "meeting_failed", platform: None, message: reason.clone() };
                (Outcome::Failed { error: reason }, Some(event))
            }
            Plan::Keep { record, req } => (kept(record, &req), None),
            Plan::Create { choice, req } => self.create(choice, &req).await,
            Plan::Update { record, req } => self.update(record, req).await,
            Plan::Delete { record } => {
                let outcome = match worker.provider_for(&record.platform) {
                    Err(reason) => Outcome::Failed { error: reason },
                    Ok((platform, provider)) => self.delete(platform, provider, &record.meeting, record.owner).await,
                };
                (outcome, None)
            }
            Plan::Replace { old, choice, req } => {
                let deleted = match worker.provider_for(&old.platform) {
                    Err(reason) => Outcome::Failed { error: reason },
                    Ok((platform, provider)) => self.delete(platform, provider, &old.meeting, old.owner).await,
                };
                match deleted {
                    Outcome::Unlinked { .. } => {
                        self.intents.removed = true;
                        self.create(choice, &req).await
                    }
                    other => {
                        let event = failed(&other, &old.platform);
                        (other, event)
                    }
                }
            }
        }
    }

    /// Moves the recorded meeting to the booking's times; makes a new one when it is gone.
    async fn update(&mut self, record: MeetingRecord, req: MeetingRequest) -> (Outcome, Option<Event>) {
        let (worker, s) = (self.worker, self.s);
        let outcome = match worker.provider_for(&record.platform) {
            Err(reason) => Outcome::Failed { error: reason },
            Ok((platform, provider)) => {
                if let Some(deferred) = self.held_back(platform, "update").await {
                    return (deferred, None);
                }
                if let Err(outcome) = self.hold_claim(provider.as_ref(), platform, "update").await {
                    let event = failed(&outcome, platform.as_str());
                    return (outcome, event);
                }
                let started = Instant::now();
                let result = provider.update(&record.meeting, &req).await;
                self.note("meeting.update", platform, started, &result);
                match result {
                    Ok(meeting) => match self.checked_link(platform, meeting) {
                        Ok(meeting) => {
                            self.note_ignored_options(provider.as_ref(), platform, &req);
                            linked(platform, &record.requested_platform, meeting, &req)
                        }
                        Err(error) => Outcome::Failed { error },
                    },
                    // Deleted at the platform by someone else, or out of reach in an
                    // account that is gone (reported as orphaned): make a new one.
                    Err(e @ (ProviderError::NotFound | ProviderError::AccountGone(_))) => {
                        if let ProviderError::AccountGone(reason) = &e
                            && let Err(outcome) = self.orphan(platform, &record.meeting, record.owner, reason).await
                        {
                            return (outcome, None);
                        }
                        self.intents.removed = true;
                        let again = MeetingRequest { generation: next_generation(s), ..req };
                        let choice = Choice { platform, fallback: false };
                        return self.create(choice, &again).await;
                    }
                    Err(e) => self.after_error(e.retried_on_existing(), "update", Some(platform)),
                }
            }
        };
        let event = failed(&outcome, &record.platform);
        (outcome, event)
    }

    /// Creates the meeting on `choice`; when the provider's account there cannot be used
    /// (revoked, undecryptable), or the platform asks to wait past the booking's start (a daily
    /// quota), on the fallback platform instead. Returns the event for the app.
    async fn create(&mut self, mut choice: Choice, req: &MeetingRequest) -> (Outcome, Option<Event>) {
        let (worker, s) = (self.worker, self.s);
        let mut fell_back_because: Option<String> = None;
        let fallback_to = match worker.fallback {
            Fallback::Platform(p) if worker.providers.get(p).is_some() => Some(p),
            _ => None,
        };
        loop {
            let Some(provider) = worker.providers.get(choice.platform) else {
                let error = format!("{} meetings are not available on this server.", choice.platform.display_name());
                return fail(choice.platform, error);
            };
            if let Some(deferred) = self.held_back(choice.platform, "create").await {
                return (deferred, None);
            }
            // A create intent for this very meeting, recorded before this run: its create may
            // have reached the platform.
            let again = self
                .intents
                .current
                .as_ref()
                .is_some_and(|i| i.platform == choice.platform.as_str() && i.generation == req.generation);
            let recorded = match self.record_intent(provider.as_ref(), choice.platform, req.generation).await {
                Ok(()) => self.hold_claim(provider.as_ref(), choice.platform, "create").await,
                Err(outcome) => Err(outcome),
            };
            if let Err(outcome) = recorded {
                let event = failed(&outcome, choice.platform.as_str());
                return (outcome, event);
            }
            let started = Instant::now();
            let result = if again { provider.create_again(req).await } else { provider.create(req).await };
            self.note("meeting.create", choice.platform, started, &result);
            if choice.fallback
                && let Some(last) = self.audit.last_mut()
            {
                let why = fell_back_because.clone().unwrap_or_else(|| {
                    format!("the service asks for {}", s.requested().as_deref().unwrap_or("no platform"))
                });
                last.detail = Some(format!(
                    "{}; fallback to {} because {why}",
                    last.detail.as_deref().unwrap_or(""),
                    choice.platform
                ));
            }
            match result.map(|meeting| self.checked_link(choice.platform, meeting)) {
                Ok(Err(error)) => {
                    return fail(choice.platform, error);
                }
                Ok(Ok(meeting)) => {
                    self.note_ignored_options(provider.as_ref(), choice.platform, req);
                    let event = Event {
                        kind: "meeting_ready",
                        platform: Some(choice.platform.as_str().to_string()),
                        message: ready_message(choice, s, fell_back_because.as_deref()),
                    };
                    return (linked(choice.platform, &s.requested(), meeting, req), Some(event));
                }
                Err(e) if !choice.fallback && waits_past_start(&e, req) && fallback_to.is_some() => {
                    let p = fallback_to.expect("checked");
                    fell_back_because = Some(format!(
                        "{} cannot make the meeting before the booking starts: {e}",
                        choice.platform.display_name()
                    ));
                    choice = Choice { platform: p, fallback: true };
                }
                Err(e) if e.needs_fallback() && !choice.fallback => match worker.fallback {
                    Fallback::Platform(p) if worker.providers.get(p).is_some() => {
                        fell_back_because = Some(format!("{}: {e}", choice.platform.display_name()));
                        choice = Choice { platform: p, fallback: true };
                    }
                    _ => {
                        let error = format!(
                            "Could not create the {} meeting: {e}. Reconnect {} under Integrations.",
                            choice.platform.display_name(),
                            choice.platform.display_name()
                        );
                        return fail(choice.platform, error);
                    }
                },
                Err(e) => {
                    let outcome = self.after_error(e, "create", Some(choice.platform));
                    let event = failed(&outcome, choice.platform.as_str());
                    return (outcome, event);
                }
            }
        }
    }

    /// Records, before the platform call, that `generation` is about to be created on `platform`
    /// (platforms whose meetings exist before their create answers; see `MeetingProvider::intent_id`).
    /// `Err(outcome)` when it could not be recorded: the call is not made.
    async fn record_intent(
        &mut self,
        provider: &dyn MeetingProvider,
        platform: Platform,
        generation: i32,
    ) -> Result<(), Outcome> {
        let (worker, s) = (self.worker, self.s);
        if provider.intent_id(s.claim.booking_id, generation).is_none() {
            return Ok(());
        }
        let owner = s.booking.as_ref().and_then(|b| b.provider_id);
        let account = s.booking.as_ref().and_then(|b| b.integration.clone());
        let intent = Intent { platform: platform.as_str().to_string(), generation, owner, account };
        if self.intents.current.as_ref() == Some(&intent) {
            return Ok(());
        }
        // The claim recorded exactly this intent, durably: the create may go ahead.
        if self.intents.claimed.as_ref() == Some(&intent) {
            self.intents.claimed = None;
            self.intents.current = Some(intent);
            return Ok(());
        }
        let problem = match worker.hold(&s.claim, Some(intent.clone()), owner.map(|o| (o, platform))).await {
            Ok(true) => {
                // A fenced, synchronously committed update: it holds the claim too.
                self.intents.current = Some(intent);
                self.intents.held = true;
                return Ok(());
            }
            // Another claim owns the job: its write-back is fenced out too.
            Ok(false) => "the job's lease expired before the meeting was created".to_string(),
            Err(e) => format!("could not record the create before making it: {e}"),
        };
        tracing::warn!(platform = %platform, problem = %problem, "platform call not made");
        Err(self.after_error(ProviderError::Transient(problem), "create", Some(platform)))
    }

    /// Makes sure, before the run's first call to a platform that keeps meetings, that the claim
    /// is durable and still this run's: a claim commits asynchronously (see [`jobs::claim`]), and
    /// a claim that a server crash lost must not act beside its successor. A fenced update of the
    /// job row, committed synchronously, does both (a create intent counts as one). Jitsi, which
    /// keeps nothing, needs none. `Err(outcome)` when the claim is gone: the call is not made.
    async fn hold_claim(
        &mut self,
        provider: &dyn MeetingProvider,
        platform: Platform,
        operation: &str,
    ) -> Result<(), Outcome> {
        if self.intents.held || !provider.keeps_meetings() {
            return Ok(());
        }
        let provider_id = self.s.booking.as_ref().and_then(|b| b.provider_id);
        let problem = match self.worker.hold(&self.s.claim, None, provider_id.map(|p| (p, platform))).await {
            Ok(true) => {
                self.intents.held = true;
                return Ok(());
            }
            Ok(false) => format!("the job's lease ended before the meeting could be {operation}d"),
            Err(e) => format!("could not confirm the job's claim before calling the platform: {e}"),
        };
        tracing::warn!(platform = %platform, problem = %problem, "platform call not made");
        Err(self.after_error(ProviderError::Transient(problem), operation, Some(platform)))
    }

    /// Deletes the meeting a recorded but unanswered create may have made (a platform answers a
    /// meeting that never existed as already deleted). `Err` when that must be retried first,
    /// with the platform it is on.
    async fn discard(&mut self, intent: &Intent) -> Result<(), (Outcome, Platform)> {
        let found = match self.worker.provider_for(&intent.platform) {
            Ok((platform, provider)) => {
                provider.intent_id(self.s.claim.booking_id, intent.generation).map(|id| (platform, provider, id))
            }
            Err(reason) => {
                tracing::warn!(platform = %intent.platform, reason = %reason, "a meeting an earlier create may have made cannot be deleted");
                None
            }
        };
        let Some((platform, provider, external_id)) = found else { return Ok(()) };
        // Deleted where it was made: the account recorded with the intent.
        let meeting = Meeting { external_id, join_url: String::new(), account: intent.account.clone() };
        match self.delete(platform, provider, &meeting, intent.owner).await {
            Outcome::Unlinked { .. } => Ok(()),
            other => Err((other, platform)),
        }
    }

    /// Deletes `meeting` through the account it lives in (`owner`: the provider it was made for,
    /// when the meeting does not name its account). A meeting whose account is gone is reported
    /// as orphaned; one whose account cannot be used right now (its tokens do not decrypt) is
    /// retried: neither is ever recorded as deleted without a report.
    async fn delete(
        &mut self,
        platform: Platform,
        provider: &Arc<dyn MeetingProvider>,
        meeting: &Meeting,
        owner: Option<Uuid>,
    ) -> Outcome {
        let s = self.s;
        let owner = owner.or_else(|| s.booking.as_ref().and_then(|b| b.provider_id));
        if let Some(deferred) = self.held_back(platform, "delete").await {
            return deferred;
        }
        if let Err(outcome) = self.hold_claim(provider.as_ref(), platform, "delete").await {
            return outcome;
        }
        let started = Instant::now();
        let result = provider.delete(meeting, owner.unwrap_or(Uuid::nil())).await;
        self.note("meeting.delete", platform, started, &result);
        match result {
            Ok(()) => Outcome::Unlinked { deleted: true },
            Err(e @ (ProviderError::AccountGone(_) | ProviderError::Revoked)) => {
                let reason = match e {
                    ProviderError::AccountGone(reason) => reason,
                    other => format!(
                        "the {} account it was made in is no longer connected ({other})",
                        platform.display_name()
                    ),
                };
                match self.orphan(platform, meeting, owner, &reason).await {
                    // Out of meetingd's reach, and reported: nothing more to do for the booking.
                    Ok(()) => Outcome::Unlinked { deleted: true },
                    Err(outcome) => outcome,
                }
            }
            Err(e) => self.after_error(e.retried_on_existing(), "delete", Some(platform)),
        }
    }

    /// Reports `meeting` as orphaned (it exists at the platform, out of meetingd's reach):
    /// a row in `meetingd.orphaned_meetings`, a `meeting_orphaned` event, an audit line.
    /// `Err(outcome)` when the report could not be recorded: the job retries.
    async fn orphan(
        &mut self,
        platform: Platform,
        meeting: &Meeting,
        owner: Option<Uuid>,
        reason: &str,
    ) -> Result<(), Outcome> {
        if meeting.external_id.is_empty() {
            return Ok(());
        }
        let recorded = async {
            let client = self.worker.pool.get().await?;
            jobs::record_orphan(client.sql(), self.s.claim.booking_id, platform.as_str(), meeting, owner, reason).await
        }
        .await;
        match recorded {
            Ok(()) => {
                tracing::warn!(platform = platform.as_str(), meeting_id = %meeting.external_id, reason, "meeting out of reach: reported as orphaned");
                self.audit.push(entry(
                    "meeting.orphaned",
                    Some(platform.as_str().to_string()),
                    "failed",
                    None,
                    Some(reason.to_string()),
                ));
                Ok(())
            }
            Err(e) => {
                let error = format!("could not report the unreachable meeting {}: {e}", meeting.external_id);
                Err(self.after_error(ProviderError::Transient(error), "delete", Some(platform)))
            }
        }
    }

    /// The meeting with its link in the form meetingd writes (`crate::links`), or the sentence
    /// the job fails with when the platform answered a link that breaks the rule: such a link is
    /// never written, and neither the sentence nor the audit line quotes it.
    fn checked_link(&mut self, platform: Platform, meeting: Meeting) -> Result<Meeting, String> {
        match Link::parse(&meeting.join_url) {
            Ok(link) => Ok(Meeting { join_url: link.into_string(), ..meeting }),
            Err(why) => {
                let name = platform.display_name();
                let error = format!(
                    "{name} answered a meeting link that meetingd does not write (the link {why}); the meeting {} was not linked to the booking.",
                    meeting.external_id
                );
                tracing::warn!(platform = %platform, meeting_id = %meeting.external_id, reason = %why, "platform answered an invalid meeting link");
                self.audit.push(entry(
                    "meeting.link_refused",
                    Some(platform.as_str().to_string()),
                    "failed",
                    None,
                    Some(format!("the link {why}")),
                ));
                Err(error)
            }
        }
    }

    /// Names, on the audit line of the call just made, the meeting options the service set that
    /// `platform` does not honour (`MeetingProvider::supported_options`): the meeting was made
    /// or moved without them.
    fn note_ignored_options(&mut self, provider: &dyn MeetingProvider, platform: Platform, req: &MeetingRequest) {
        let ignored = provider.ignored_options(&req.options);
        if ignored.is_empty() {
            return;
        }
        let names = ignored.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ");
        tracing::info!(platform = %platform, options = %names, "meeting options the platform does not support were ignored");
        let note = format!("options not supported by {}: {names}", platform.display_name());
        if let Some(last) = self.audit.last_mut() {
            last.detail = Some(match last.detail.take().filter(|d| !d.is_empty()) {
                Some(detail) => format!("{detail}; {note}"),
                None => note,
            });
        }
    }

    /// Retry with back-off while attempts remain and the error is worth it; otherwise fail.
    fn after_error(&self, error: ProviderError, operation: &str, platform: Option<Platform>) -> Outcome {
        let attempt = self.s.claim.attempt;
        let name = platform.map_or("the platform", |p| p.display_name());
        if let Some(outcome) = self.after_allowance_spent(&error, operation, name) {
            return outcome;
        }
        if error.is_retryable() {
            let policy = self.worker.config.retry_policy();
            if let Some(delay) = policy.next_delay(attempt as u32, error.retry_after(), jitter_unit()) {
                return Outcome::Retry { error: format!("{operation} on {name}: {error}"), delay };
            }
            return Outcome::Failed {
                error: format!(
                    "Could not {operation} the {name} meeting after {attempt} attempts (last error: {error}). It is tried again when the booking changes."
                ),
            };
        }
        Outcome::Failed { error: format!("Could not {operation} the {name} meeting: {error}.") }
    }

    /// A platform's allowance for the account is spent until a reset past the retry cap: an hour
    /// to a day away, or at 00:00 UTC however near (`RateLimited` with such a wait: Zoom's daily
    /// limit; Google's `quotaExceeded`): the job waits that long (one attempt) instead of spending
    /// its attempts against a limit that cannot have reset, and the sentence says when it
    /// resumes. A shorter wait is a throttle's `Retry-After`, capped as usual. `None` for any
    /// other error.
    fn after_allowance_spent(&self, error: &ProviderError, operation: &str, name: &str) -> Option<Outcome> {
        let ProviderError::RateLimited { retry_after: Some(wait) } = error else { return None };
        let policy = self.worker.config.retry_policy();
        if *wait <= policy.max || *wait > Duration::from_secs(86_400) {
            return None;
        }
        let resumes = Utc::now() + chrono::Duration::from_std(*wait).ok()?;
        let resumes = chrono::DurationRound::duration_round(resumes, chrono::Duration::minutes(1)).ok()?;
        let at_midnight = resumes.time() == chrono::NaiveTime::MIN;
        if *wait < Duration::from_secs(3600) && !at_midnight {
            return None;
        }
        let daily = if at_midnight { " daily" } else { "" };
        let sentence = format!(
            "{name}'s{daily} limit of requests for this account is reached; meetingd tries again at {} UTC",
            resumes.format("%Y-%m-%d %H:%M")
        );
        let attempt = self.s.claim.attempt;
        if policy.next_delay(attempt as u32, None, 0.0).is_none() {
            return Some(Outcome::Failed {
                error: format!(
                    "Could not {operation} the {name} meeting after {attempt} attempts (last error: {sentence}). It is tried again when the booking changes."
                ),
            });
        }
        // Spread over a minute: every job of the account waits for the same moment.
        let delay = *wait + Duration::from_secs(60).mul_f64(jitter_unit());
        Some(Outcome::Retry { error: format!("{operation} on {name}: {sentence}."), delay })
    }

    /// Audit entry and one log line for a platform call.
    fn note<T: MeetingId>(
        &mut self,
        action: &'static str,
        platform: Platform,
        started: Instant,
        result: &Result<T, ProviderError>,
    ) {
        let elapsed = started.elapsed();
        let duration_ms = elapsed.as_millis().min(i32::MAX as u128) as i32;
        let class = match result {
            Ok(_) => "ok",
            Err(e) => e.class(),
        };
        let labels = [
            ("platform", platform.as_str().to_string()),
            ("operation", action.to_string()),
            ("outcome", class.to_string()),
        ];
        metrics::counter!(crate::metrics::PROVIDER_CALLS, &labels).increment(1);
        metrics::histogram!(crate::metrics::PROVIDER_CALL_SECONDS, &labels).record(elapsed.as_secs_f64());
        let (outcome, detail) = match result {
            Ok(v) => ("ok", v.meeting_id().map(|id| format!("meeting {id}"))),
            Err(e) if e.is_retryable() && self.s.claim.attempt < self.worker.config.max_attempts as i32 => {
                ("retry", Some(e.to_string()))
            }
            Err(e) => ("failed", Some(e.to_string())),
        };
        if outcome == "ok" {
            tracing::info!(platform = %platform, operation = action, outcome, duration_ms, "meeting operation");
        } else {
            tracing::warn!(platform = %platform, operation = action, outcome, duration_ms, error = detail.as_deref().unwrap_or(""), "meeting operation");
        }
        self.audit.push(entry(action, Some(platform.as_str().to_string()), outcome, Some(duration_ms), detail));
    }
}

/// The job's recorded create intent as one run changes it.
struct Intents {
    /// The intent in the job row, as this run left it.
    current: Option<Intent>,
    /// An intent whose meeting this run deleted.
    discarded: Option<Intent>,
    /// The intent the claim recorded (durably) while the run has not used it: no create was
    /// attempted for it, so a run that ends without using it clears it at no platform's expense.
    claimed: Option<Intent>,
    /// The claim is known to be durable and still this run's (see [`Run::hold_claim`]).
    held: bool,
    /// The run deleted (or gave up as orphaned) the booking's recorded meeting.
    removed: bool,
}

impl Intents {
    /// The intent the write-back clears: the one the outcome's meeting stands for, or the one
    /// whose meeting was deleted when no newer one was recorded.
    fn resolved(&self, outcome: &Outcome) -> Option<Intent> {
        match (&self.current, outcome) {
            (Some(i), Outcome::Linked { platform, generation, .. })
                if i.platform == *platform && i.generation == *generation =>
            {
                Some(i.clone())
            }
            (Some(_), _) => None,
            (None, _) => self.discarded.clone().or_else(|| self.claimed.clone()),
        }
    }
}

/// A wait the platform asked for (a daily quota: Zoom's, Google's) longer than a few minutes
/// and ending after the booking starts: the meeting would come too late.
fn waits_past_start(e: &ProviderError, req: &MeetingRequest) -> bool {
    const SHORT: std::time::Duration = std::time::Duration::from_secs(300);
    e.retry_after().is_some_and(|wait| {
        wait > SHORT && chrono::Duration::from_std(wait).is_ok_and(|w| chrono::Utc::now() + w > req.start)
    })
}

/// What an audit line says about a successful call.
trait MeetingId {
    fn meeting_id(&self) -> Option<&str>;
}
impl MeetingId for Meeting {
    fn meeting_id(&self) -> Option<&str> {
        Some(&self.external_id)
    }
}
impl MeetingId for () {
    fn meeting_id(&self) -> Option<&str> {
        None
    }
}

/// A meeting made or moved on `platform` for `req`.
fn linked(platform: Platform, requested: &Option<String>, meeting: Meeting, req: &MeetingRequest) -> Outcome {
    Outcome::Linked {
        owner: Some(req.provider_user_id),
        platform: platform.as_str().to_string(),
        requested_platform: requested.clone(),
        meeting,
        start: req.start,
        end: req.end,
        generation: req.generation,
        settings: req.settings.clone(),
    }
}

/// The recorded meeting, re-asserted as it is recorded (its platform as stored).
fn kept(record: MeetingRecord, req: &MeetingRequest) -> Outcome {
    Outcome::Linked {
        owner: Some(req.provider_user_id),
        platform: record.platform,
        requested_platform: record.requested_platform,
        meeting: record.meeting,
        start: req.start,
        end: req.end,
        generation: req.generation,
        settings: req.settings.clone(),
    }
}

fn entry(
    action: &'static str,
    platform: Option<String>,
    outcome: &'static str,
    duration_ms: Option<i32>,
    detail: Option<String>,
) -> AuditEntry {
    AuditEntry { action, platform, outcome, duration_ms, detail }
}

fn ready_message(choice: Choice, s: &Snapshot, account_problem: Option<&str>) -> String {
    if let (true, Some(problem)) = (choice.fallback, account_problem) {
        return format!("The meeting is ready on {} because {problem}.", choice.platform.display_name());
    }
    match (choice.fallback, s.requested()) {
        (true, Some(requested)) => format!(
            "The meeting is ready on {} because {requested} is not connected; connect it under Integrations to use it for future bookings.",
            choice.platform.display_name()
        ),
        _ => format!("The meeting is ready on {}.", choice.platform.display_name()),
    }
}

/// The job fails on `platform` with `error`, and the provider is told.
fn fail(platform: Platform, error: String) -> (Outcome, Option<Event>) {
    let outcome = Outcome::Failed { error };
    let event = failed(&outcome, platform.as_str());
    (outcome, event)
}

/// The `meeting_failed` event for a failed outcome on `platform`: a platform's name, or a
/// recorded meeting's platform as stored (which may be one this build does not know: that is why
/// it failed).
fn failed(outcome: &Outcome, platform: &str) -> Option<Event> {
    match outcome {
        Outcome::Failed { error } => {
            Some(Event { kind: "meeting_failed", platform: Some(platform.to_string()), message: error.clone() })
        }
        _ => None,
    }
}
