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
        use crate::providers::{google, teams, zoom};
        let (g, z, t) = (&self.google, &self.zoom, &self.teams);
        let google_on = !g.client_id.trim().is_empty() && matches!(g.client_secret(), Ok(Some(_)));
        // (configured, name, most calls, requests per call, config section, its request
        // time-out, a wait of its own beside the calls, what the calls are)
        let platforms = [
            (
                google_on,
                "Google Meet",
                google::MOST_CALLS_PER_JOB,
                google::MOST_REQUESTS_PER_CALL,
                "google",
                g.request_timeout_ms,
                Some(("google.conference_wait_ms", g.conference_wait_ms)),
                "Calendar calls (delete a stray create, delete or move the recorded meeting, insert, fetch and move an adopted event, 3 conference re-requests, a last conference poll)",
            ),
            (
                z.is_configured(),
                "Zoom",
                zoom::MOST_CALLS_PER_JOB,
                zoom::MOST_REQUESTS_PER_CALL,
                "zoom",
                z.request_timeout_ms,
                None,
                "Meetings API calls (list and delete a stray create's meeting, read the recorded meeting, move it and read it back, list for an earlier attempt's meeting, delete a second copy, move and read the adopted one; lists of one page)",
            ),
            (
                t.is_configured(),
                "Microsoft Teams",
                teams::MOST_CALLS_PER_JOB,
                teams::MOST_REQUESTS_PER_CALL,
                "teams",
                t.request_timeout_ms,
                None,
                "Graph calls (find and delete a stray create's meeting, move the recorded meeting, createOrGet and a move or the options)",
            ),
        ];
        platforms
            .into_iter()
            .filter(|p| p.0)
            .map(|(_, name, calls, per_call, section, timeout_ms, wait, what)| {
                let requests = calls * per_call + 1;
                let wait_ms = wait.map_or(0, |(_, ms)| ms);
                let total = Duration::from_millis(requests.saturating_mul(timeout_ms).saturating_add(wait_ms));
                let wait_text = wait.map_or(String::new(), |(key, ms)| format!(" + {key} ({ms} ms)"));
                let how = format!(
                    "up to {calls} {what}, each with a token refresh and a second try after a 401, plus one refresh when the token is due: {requests} requests × {section}.request_timeout_ms ({timeout_ms} ms){wait_text} = {} s",
                    total.as_secs_f64().ceil() as u64
                );
                (total, name, how)
            })
            .max_by_key(|(total, _, _)| *total)
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
pub(super) fn is_loopback(url: &url::Url) -> bool {
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
