//! What `meetingd check` says about timing and transport that does not stop the daemon: a lease
//! the slowest job can outlive, platform URLs in plain http to another machine.

use std::time::Duration;

use super::Config;

/// `meetingd check`'s findings about timing and transport that do not stop the daemon.
impl Config {
    /// The longest the platform calls of one job can take on the slowest configured platform,
    /// which platform that is, and how it is counted; `None` when no configured platform makes
    /// calls (Jitsi makes none).
    pub fn slowest_job(&self) -> Option<(Duration, &'static str, String)> {
        let mut slowest: Option<(Duration, &'static str, String)> = None;
        let g = &self.google;
        if !g.client_id.trim().is_empty() && matches!(g.client_secret(), Ok(Some(_))) {
            use crate::providers::google::{MOST_CALLS_PER_JOB, MOST_REQUESTS_PER_CALL};
            let requests = MOST_CALLS_PER_JOB * MOST_REQUESTS_PER_CALL + 1;
            let total = Duration::from_millis(
                requests.saturating_mul(g.request_timeout_ms).saturating_add(g.conference_wait_ms),
            );
            let how = format!(
                "up to {MOST_CALLS_PER_JOB} Calendar calls (delete a stray create, delete or move the recorded meeting, insert, fetch and move an adopted event, 3 conference re-requests, a last conference poll), each with a token refresh and a second try after a 401, plus one refresh when the token is due: {requests} requests × google.request_timeout_ms ({} ms) + google.conference_wait_ms ({} ms) = {} s",
                g.request_timeout_ms,
                g.conference_wait_ms,
                total.as_secs_f64().ceil() as u64
            );
            slowest = Some((total, "Google Meet", how));
        }
        let z = &self.zoom;
        if z.is_configured() {
            use crate::providers::zoom::{MOST_CALLS_PER_JOB, MOST_REQUESTS_PER_CALL};
            let requests = MOST_CALLS_PER_JOB * MOST_REQUESTS_PER_CALL + 1;
            let total = Duration::from_millis(requests.saturating_mul(z.request_timeout_ms));
            let how = format!(
                "up to {MOST_CALLS_PER_JOB} Meetings API calls (list and delete a stray create's meeting, move the recorded meeting and read it back, list for an earlier attempt's meeting, delete a second copy, move and read the adopted one; lists of one page), each with a token refresh and a second try after a 401, plus one refresh when the token is due: {requests} requests × zoom.request_timeout_ms ({} ms) = {} s",
                z.request_timeout_ms,
                total.as_secs_f64().ceil() as u64
            );
            if slowest.as_ref().is_none_or(|(longest, _, _)| total > *longest) {
                slowest = Some((total, "Zoom", how));
            }
        }
        let t = &self.teams;
        if t.is_configured() {
            use crate::providers::teams::{MOST_CALLS_PER_JOB, MOST_REQUESTS_PER_CALL};
            let requests = MOST_CALLS_PER_JOB * MOST_REQUESTS_PER_CALL + 1;
            let total = Duration::from_millis(requests.saturating_mul(t.request_timeout_ms));
            let how = format!(
                "up to {MOST_CALLS_PER_JOB} Graph calls (find and delete a stray create's meeting, move the recorded meeting, createOrGet and a move or the options), each with a token refresh and a second try after a 401, plus one refresh when the token is due: {requests} requests × teams.request_timeout_ms ({} ms) = {} s",
                t.request_timeout_ms,
                total.as_secs_f64().ceil() as u64
            );
            if slowest.as_ref().is_none_or(|(longest, _, _)| total > *longest) {
                slowest = Some((total, "Microsoft Teams", how));
            }
        }
        slowest
    }

    /// A lease that can run out while its job still calls a platform: another daemon would then
    /// claim the job and call too.
    pub fn lease_problem(&self) -> Option<String> {
        let (slowest, platform, how) = self.slowest_job()?;
        (self.worker.lease() < slowest).then(|| {
            format!(
                "worker.lease_secs ({} s) is shorter than the slowest {platform} job can take: {how}. Another daemon may claim a job while it still runs: raise worker.lease_secs to at least {} or lower the platform's request_timeout_ms",
                self.worker.lease_secs,
                slowest.as_secs_f64().ceil() as u64
            )
        })
    }

    /// Platform URLs that are plain `http` to a host other than this machine: tokens, codes and
    /// client secrets would cross the network unencrypted.
    pub fn plain_http_problems(&self) -> Vec<String> {
        let (g, z, t) = (&self.google, &self.zoom, &self.teams);
        let (teams_auth, teams_token) = (t.auth_url().ok(), t.token_url().ok());
        [
            ("google.auth_url", Some(&g.auth_url)),
            ("google.token_url", Some(&g.token_url)),
            ("google.revoke_url", Some(&g.revoke_url)),
            ("google.api_base_url", Some(&g.api_base_url)),
            ("zoom.auth_url", Some(&z.auth_url)),
            ("zoom.token_url", Some(&z.token_url)),
            ("zoom.revoke_url", Some(&z.revoke_url)),
            ("zoom.api_base_url", Some(&z.api_base_url)),
            ("teams.auth_url", teams_auth.as_ref()),
            ("teams.token_url", teams_token.as_ref()),
            ("teams.api_base_url", Some(&t.api_base_url)),
        ]
        .into_iter()
        .filter_map(|(key, url)| Some((key, url?)))
        .filter(|(_, url)| url.scheme() == "http" && !is_loopback(url))
        .map(|(key, url)| {
            format!(
                "{key} is plain http to {}: tokens and secrets would cross the network unencrypted; use https (plain http only to this machine, for tests)",
                url.host_str().unwrap_or("?")
            )
        })
        .collect()
    }
}

/// Whether `url` names this machine: a loopback address or `localhost`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}
