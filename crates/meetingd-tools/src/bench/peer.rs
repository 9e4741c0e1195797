//! The peer: `../shared/bench-peer/run.sh` (graphile-worker doing meetingd's Google Meet job
//! against its own zero-latency fake Google), run beside meetingd in the same session so the two
//! can be compared as ratios. The bench only runs it and reads the two lines it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};

/// What one peer run printed.
#[derive(Debug, Clone, Copy)]
pub struct PeerRun {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_s: f64,
    pub peak_rss_kb: u64,
}

/// The peer's burst of `n` and its one-at-a-time run of `m` (10 ms apart), each run right after
/// meetingd's phase of the same workload, so that the two see the machine in the same state.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub burst: PeerRun,
    pub trickle: PeerRun,
}

/// The peer harness in `dir` (`run.sh`), run against the server of `server_url` (its own
/// database, `peerbench`) with `concurrency` workers.
pub struct Harness {
    script: PathBuf,
    pgurl: String,
    concurrency: u32,
}

impl Harness {
    pub fn new(dir: &Path, server_url: &str, concurrency: u32) -> Result<Harness> {
        let script = dir.join("run.sh");
        ensure!(script.is_file(), "{} not found (--peer names the peer harness's folder)", script.display());
        Ok(Harness { script, pgurl: server_root(server_url), concurrency })
    }

    /// A burst of `n` confirmed by one statement.
    pub async fn burst(&self, n: u32) -> Result<PeerRun> {
        eprintln!("· peer: graphile-worker burst of {n}");
        run_once(&self.script, &self.pgurl, "burst", n, self.concurrency).await
    }

    /// `m` bookings confirmed one at a time, 10 ms apart (`MODE=trickle`).
    pub async fn trickle(&self, m: u32) -> Result<PeerRun> {
        eprintln!("· peer: graphile-worker, {m} bookings one at a time");
        run_once(&self.script, &self.pgurl, "trickle", m, self.concurrency).await
    }
}

async fn run_once(script: &Path, pgurl: &str, mode: &str, n: u32, concurrency: u32) -> Result<PeerRun> {
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .args([n.to_string(), "0".into(), concurrency.to_string()])
        .env("MODE", mode)
        .env("PGURL", pgurl)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the peer harness ({mode}) failed with {}; it printed:\n{stdout}", output.status);
    }
    parse(&stdout).with_context(|| format!("reading the peer harness's output ({mode}):\n{stdout}"))
}

/// Reads `key=value` pairs from the harness's two result lines.
fn parse(stdout: &str) -> Result<PeerRun> {
    let value = |key: &str| -> Result<f64> {
        let found = stdout
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key}="))?;
        found.parse().with_context(|| format!("{key}={found} is not a number"))
    };
    Ok(PeerRun {
        p50_ms: value("p50_ms")?,
        p99_ms: value("p99_ms")?,
        per_s: value("per_s")?,
        peak_rss_kb: value("peak_rss_kb")? as u64,
    })
}

/// `postgres://user@host:port/db?opts` → `postgres://user@host:port`: the harness appends its database.
fn server_root(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_harness_lines() {
        let out = "p50_ms=7.0 p99_ms=74.8 max_ms=80.1\n\
                   peer=graphile-worker mode=burst n=2000 latency_ms=0 concurrency=32 wall_s=8.3 per_s=239 peak_rss_kb=127000\n";
        let run = parse(out).unwrap();
        assert_eq!((run.p50_ms, run.p99_ms, run.per_s, run.peak_rss_kb), (7.0, 74.8, 239.0, 127_000));
        assert!(parse("p50_ms=1").is_err());
    }

    #[test]
    fn strips_the_database() {
        assert_eq!(server_root("postgres://postgres@127.0.0.1:5432/postgres"), "postgres://postgres@127.0.0.1:5432");
        assert_eq!(server_root("postgresql://u@h/db?sslmode=disable"), "postgresql://u@h");
    }
}
