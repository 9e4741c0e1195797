//! Random trouble at the fake platforms, for the soak: what a call can meet, one draw over
//! `(probability, trouble)` rules, and the trouble acted out around the fake's handler. Each fake
//! decides which calls draw, what a failure answers, and what it writes in its journal.

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Random trouble for one call; `F` is the fake's scripted failure.
#[derive(Debug, Clone)]
pub enum Trouble<F> {
    /// Answers the failure; after doing the call's work when the failure says so (a lost
    /// answer: the meeting is made, moved or deleted, the caller hears a failure).
    Fail(F),
    /// Answers only after `delay`, past the caller's time-out; the work is done at once when
    /// `after_work` (the answer is lost to the time-out), else not at all.
    Slow { delay: Duration, after_work: bool },
}

/// One draw over `rules`: the first whose cumulated probability exceeds the roll.
pub fn draw<T: Clone>(rules: &[(f64, T)]) -> Option<T> {
    let roll: f64 = rand::random();
    let mut sum = 0.0;
    rules
        .iter()
        .find(|(p, _)| {
            sum += p;
            roll < sum
        })
        .map(|(_, t)| t.clone())
}

/// Acts `trouble` out around the handler (`next`): `after_work` says whether a failure is
/// answered after the work is done, `answer` what it answers, and `note` journals the status
/// answered with what the trouble did.
pub async fn act_out<F>(
    trouble: Option<Trouble<F>>,
    request: Request,
    next: Next,
    after_work: impl Fn(&F) -> bool,
    answer: impl Fn(&F) -> Response,
    note: impl Fn(StatusCode, &str),
) -> Response {
    match trouble {
        None => {
            let answered = next.run(request).await;
            note(answered.status(), "");
            answered
        }
        Some(Trouble::Fail(f)) if !after_work(&f) => {
            let answered = answer(&f);
            note(answered.status(), " (chaos: failed, nothing done)");
            answered
        }
        Some(Trouble::Fail(f)) => {
            let done = next.run(request).await;
            if !done.status().is_success() {
                note(done.status(), " (chaos: a lost answer, but the call failed anyway)");
                return done;
            }
            let answered = answer(&f);
            note(answered.status(), &format!(" (chaos: done, its {} answer lost)", done.status().as_u16()));
            answered
        }
        Some(Trouble::Slow { delay, after_work }) => {
            // Noted before the wait: the caller gives up first, and its going away may end this.
            let answered = if after_work {
                let done = next.run(request).await;
                note(done.status(), &format!(" (chaos: done, answered after {} ms)", delay.as_millis()));
                done
            } else {
                note(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(" (chaos: nothing done, answered after {} ms)", delay.as_millis()),
                );
                StatusCode::GATEWAY_TIMEOUT.into_response()
            };
            tokio::time::sleep(delay).await;
            answered
        }
    }
}
