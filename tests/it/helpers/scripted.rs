//! A scripted meeting platform for worker tests.
//!
//! It behaves like a platform without idempotency keys: every successful create makes a new live
//! meeting, so a doubled create shows up as two live meetings for one booking. Failures are
//! scripted per call, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meetingd::providers::{Meeting, MeetingProvider, MeetingRequest, Platform, ProviderError};
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub enum Failure {
    Transient,
    RateLimited(Option<Duration>),
    Permanent(&'static str),
    Panic,
}

#[derive(Default)]
struct State {
    script: VecDeque<Failure>,
    /// external id -> booking
    live: HashMap<String, Uuid>,
    creates: Vec<(Uuid, i32)>,
    updates: usize,
    deletes: usize,
    next: u64,
}

pub struct Scripted {
    platform: Platform,
    state: Mutex<State>,
    /// Every call fails with this once the script is exhausted.
    always: Mutex<Option<Failure>>,
    /// When set, create waits for `release` after signalling `entered`.
    gate: Mutex<Option<Arc<Gate>>>,
}

pub struct Gate {
    pub entered: Notify,
    pub release: Notify,
}

impl Scripted {
    pub fn new(platform: Platform) -> Arc<Scripted> {
        Arc::new(Scripted { platform, state: Mutex::default(), always: Mutex::new(None), gate: Mutex::new(None) })
    }

    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.state.lock().unwrap().script.extend(failures);
    }

    pub fn fail_always(&self, failure: Failure) {
        *self.always.lock().unwrap() = Some(failure);
    }

    /// No more scripted failures.
    pub fn heal(&self) {
        self.state.lock().unwrap().script.clear();
        *self.always.lock().unwrap() = None;
    }

    pub fn gate(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate { entered: Notify::new(), release: Notify::new() });
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Creates no longer wait at the gate.
    pub fn ungate(&self) {
        *self.gate.lock().unwrap() = None;
    }

    pub fn creates(&self) -> Vec<(Uuid, i32)> {
        self.state.lock().unwrap().creates.clone()
    }

    pub fn updates(&self) -> usize {
        self.state.lock().unwrap().updates
    }

    pub fn deletes(&self) -> usize {
        self.state.lock().unwrap().deletes
    }

    /// Live meetings per booking at the "platform".
    pub fn live_per_booking(&self) -> HashMap<Uuid, usize> {
        let mut out = HashMap::new();
        for booking in self.state.lock().unwrap().live.values() {
            *out.entry(*booking).or_default() += 1;
        }
        out
    }

    fn scripted_failure(&self) -> Result<(), ProviderError> {
        let next = self.state.lock().unwrap().script.pop_front().or_else(|| self.always.lock().unwrap().clone());
        match next {
            None => Ok(()),
            Some(Failure::Transient) => Err(ProviderError::Transient("HTTP 503 from the platform".into())),
            Some(Failure::RateLimited(retry_after)) => Err(ProviderError::RateLimited { retry_after }),
            Some(Failure::Permanent(msg)) => Err(ProviderError::Permanent(msg.into())),
            Some(Failure::Panic) => panic!("scripted provider panic"),
        }
    }
}

#[async_trait::async_trait]
impl MeetingProvider for Scripted {
    fn platform(&self) -> Platform {
        self.platform
    }

    async fn create(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.entered.notify_one();
            gate.release.notified().await;
        }
        self.scripted_failure()?;
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let id = format!("m{}-{}", s.next, req.generation);
        s.live.insert(id.clone(), req.booking_id);
        s.creates.push((req.booking_id, req.generation));
        Ok(Meeting { join_url: format!("https://meet.example.test/{id}"), external_id: id, account: None })
    }

    async fn update(&self, existing: &Meeting, _req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        self.scripted_failure()?;
        let mut s = self.state.lock().unwrap();
        s.updates += 1;
        assert!(s.live.contains_key(&existing.external_id), "update of a meeting that does not exist: {existing:?}");
        Ok(existing.clone())
    }

    async fn delete(&self, existing: &Meeting, _provider: Uuid) -> Result<(), ProviderError> {
        self.scripted_failure()?;
        let mut s = self.state.lock().unwrap();
        s.deletes += 1;
        s.live.remove(&existing.external_id);
        Ok(())
    }
}
