//! `[monitor]`: the connection-health monitor (see `monitor.rs`): how often it runs, how often
//! each connection is checked, and how long before a grant's known end a connection counts as
//! expiring.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    pub enabled: bool,
    /// How often the daemon runs it (one daemon of many).
    pub interval_secs: u64,
    /// How often one connection is checked with a call to its platform.
    pub check_every_hours: u64,
    /// Warning window of a lifetime counted from the consent (Google's "Testing" apps: 7 days).
    pub consent_warning_hours: u64,
    /// Warning window of a lifetime that a refresh starts again (Microsoft, Zoom: 90 days); the
    /// monitor refreshes a connection that enters it, so only one it cannot refresh stays there.
    pub refresh_warning_days: u64,
    /// The most connections one run checks (the rest wait for the next run).
    pub batch: u32,
}

impl MonitorConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    pub fn check_every(&self) -> Duration {
        Duration::from_secs(self.check_every_hours * 3600)
    }

    pub fn consent_warning(&self) -> Duration {
        Duration::from_secs(self.consent_warning_hours * 3600)
    }

    pub fn refresh_warning(&self) -> Duration {
        Duration::from_secs(self.refresh_warning_days * 86_400)
    }

    /// What is wrong with the section, added to `problems`.
    pub(super) fn problems(&self, problems: &mut Vec<String>) {
        if self.interval_secs < 60 {
            problems.push(format!("monitor.interval_secs must be at least 60, not {}", self.interval_secs));
        }
        if self.check_every_hours == 0 {
            problems.push("monitor.check_every_hours must be at least 1".into());
        }
        if self.consent_warning_hours >= 7 * 24 {
            problems.push(format!(
                "monitor.consent_warning_hours must be below 168 (a Google testing grant lasts 7 days), not {}",
                self.consent_warning_hours
            ));
        }
        if self.refresh_warning_days >= 90 {
            problems.push(format!(
                "monitor.refresh_warning_days must be below 90 (Microsoft's and Zoom's lifetime), not {}",
                self.refresh_warning_days
            ));
        }
        if self.batch == 0 {
            problems.push("monitor.batch must be at least 1".into());
        }
    }
}
