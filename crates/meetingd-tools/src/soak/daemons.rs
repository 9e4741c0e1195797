//! The soak's two `meetingd run` children: their configuration (fast retries, short leases, the
//! fake Google, the fake Zoom and the fake Microsoft Graph with short time-outs), one log file per slot, kills, restarts and
//! revivals. It starts and stops daemons; it never touches the database but to see them listen.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use anyhow::{Context, Result};
use chrono::Utc;
use meetingd_testkit::daemon::{Child, DaemonCommand, LISTENING_SESSIONS, wait_listening};
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::fake_graph::FakeGraph;
use meetingd_testkit::fake_zoom::FakeZoom;
use secrecy::SecretString;

use crate::db::Db;
use crate::{DAEMONS, GOOGLE_TIMEOUT_MS, READY_TIMEOUT, STOP_TIMEOUT, TEAMS_TIMEOUT_MS, ZOOM_TIMEOUT_MS};

/// Everything a `meetingd run` child needs.
pub struct DaemonEnv {
    pub bin: PathBuf,
    pub url: String,
    pub key: SecretString,
    pub google: FakeGoogle,
    pub zoom: FakeZoom,
    pub graph: FakeGraph,
    pub log_dir: PathBuf,
    pub log_filter: String,
}

impl DaemonEnv {
    pub fn log_path(&self, slot: usize) -> PathBuf {
        self.log_dir.join(format!("daemon-{}.log", slot + 1))
    }

    /// Starts `meetingd run` in `slot`; its stdout and stderr are appended to the slot's log.
    fn spawn(&self, slot: usize) -> Result<Child> {
        let path = self.log_path(slot);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(log, "--- meetingd-soak: starting daemon {} at {}", slot + 1, Utc::now().to_rfc3339())
            .with_context(|| format!("writing {}", path.display()))?;
        let stderr = log.try_clone().with_context(|| format!("opening {}", path.display()))?;
        let child = self.command().spawn(&format!("daemon {}", slot + 1), Stdio::from(log), Stdio::from(stderr))?;
        Ok(child.with_log(&path))
    }

    fn command(&self) -> DaemonCommand {
        DaemonCommand::new(&self.bin, &self.url, &self.key)
            .google(&self.google)
            .set("GOOGLE__REQUEST_TIMEOUT_MS", GOOGLE_TIMEOUT_MS.to_string())
            .set("GOOGLE__CONFERENCE_WAIT_MS", "1000")
            .set("WORKER__CONCURRENCY", "16")
            .set("LIMITS__GOOGLE_MEET__INTEGRATION_RATE", "50")
            .set("LIMITS__GOOGLE_MEET__PLATFORM_RATE", "500")
            .zoom(&self.zoom)
            .set("ZOOM__REQUEST_TIMEOUT_MS", ZOOM_TIMEOUT_MS.to_string())
            .set("LIMITS__ZOOM__INTEGRATION_RATE", "50")
            .set("LIMITS__ZOOM__PLATFORM_RATE", "500")
            // Counted, as in production, but far above what a provider's share of a large run needs.
            .set("LIMITS__ZOOM__DAILY_MEETING_WRITES", "100000")
            .teams(&self.graph)
            .set("TEAMS__REQUEST_TIMEOUT_MS", TEAMS_TIMEOUT_MS.to_string())
            // Graph's 4 calls at once per mailbox stay (`integration_concurrency`, the default).
            .set("LIMITS__TEAMS__INTEGRATION_RATE", "50")
            .set("LIMITS__TEAMS__PLATFORM_RATE", "500")
            .set("WORKER__MAX_ATTEMPTS", "50")
            .set("WORKER__RETRY_BASE_MS", "50")
            .set("WORKER__RETRY_MAX_MS", "1000")
            .set("WORKER__LEASE_SECS", "5")
            .set("WORKER__SWEEP_INTERVAL_MS", "500")
            .log(&self.log_filter)
    }
}

/// The daemons of the run, one per slot.
pub struct Daemons<'a> {
    env: &'a DaemonEnv,
    slots: Vec<Child>,
}

impl<'a> Daemons<'a> {
    pub fn start(env: &'a DaemonEnv) -> Result<Daemons<'a>> {
        let slots = (0..DAEMONS).map(|slot| env.spawn(slot)).collect::<Result<_>>()?;
        Ok(Daemons { env, slots })
    }

    /// SIGKILL the daemon in `slot` and start a new one there; returns (old pid, new pid).
    pub fn kill_and_restart(&mut self, slot: usize) -> Result<(u32, u32)> {
        let old = self.slots[slot].pid();
        self.slots[slot].kill()?;
        self.slots[slot] = self.env.spawn(slot)?;
        Ok((old, self.slots[slot].pid()))
    }

    /// Restarts daemons that exited without being told to; returns what happened to them.
    pub fn revive(&mut self) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for slot in 0..self.slots.len() {
            if let Some(status) = self.slots[slot].exited()? {
                // Its last words, before the restarted daemon appends to the same log.
                let path = self.env.log_path(slot);
                let log = fs::read_to_string(&path).unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(5).collect();
                let last: Vec<&str> = last.into_iter().rev().collect();
                notes.push(format!(
                    "daemon {} (pid {}) exited on its own ({status}); last lines of {}:\n    {}",
                    slot + 1,
                    self.slots[slot].pid(),
                    path.display(),
                    last.join("\n    ")
                ));
                self.slots[slot] = self.env.spawn(slot)?;
            }
        }
        Ok(notes)
    }

    /// Ready means both LISTEN connections are up (a daemon listens last, after migrating).
    pub async fn wait_listening(&mut self, db: &mut Db) -> Result<()> {
        wait_listening(&mut self.slots, DAEMONS as i64, READY_TIMEOUT, async || db.count(LISTENING_SESSIONS, &[]).await)
            .await
    }

    /// SIGTERM to every daemon; returns each one's exit status.
    pub async fn stop_all(&mut self) -> Result<Vec<ExitStatus>> {
        let mut exits = Vec::new();
        for daemon in &mut self.slots {
            exits.push(daemon.stop(STOP_TIMEOUT).await?);
        }
        Ok(exits)
    }
}
