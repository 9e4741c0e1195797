//! Where a phase's CPU time went: PostgreSQL's processes (backends, WAL writer, checkpointer),
//! the daemon, and the bench itself (which also runs the fake platform), from /proc.

use std::time::Instant;

use anyhow::{Context, Result};

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Cumulative CPU ticks of each party at one instant.
pub struct CpuSample {
    postgres: u64,
    daemon: u64,
    bench: u64,
    at: Instant,
}

/// CPU seconds each party used between two samples, and the wall time between them.
#[derive(Debug, Clone, Copy)]
pub struct CpuSplit {
    pub postgres_s: f64,
    pub daemon_s: f64,
    pub bench_s: f64,
    pub wall_s: f64,
}

impl CpuSample {
    pub fn take(daemon_pid: u32) -> Result<CpuSample> {
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc").context("reading /proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            // A process may end between the listing and the read: it is skipped.
            if let Ok((comm, ticks)) = ticks_of(&pid.to_string())
                && comm == "postgres"
            {
                postgres += ticks;
            }
        }
        let (_, daemon) = ticks_of(&daemon_pid.to_string())?;
        let (_, bench) = ticks_of("self")?;
        Ok(CpuSample { postgres, daemon, bench, at: Instant::now() })
    }

    pub fn since(&self, earlier: &CpuSample) -> CpuSplit {
        let secs = |now: u64, then: u64| now.saturating_sub(then) as f64 / TICKS_PER_SEC;
        CpuSplit {
            postgres_s: secs(self.postgres, earlier.postgres),
            daemon_s: secs(self.daemon, earlier.daemon),
            bench_s: secs(self.bench, earlier.bench),
            wall_s: self.at.duration_since(earlier.at).as_secs_f64(),
        }
    }
}

impl std::fmt::Display for CpuSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.postgres_s + self.daemon_s + self.bench_s;
        let pct = |x: f64| if total > 0.0 { x / total * 100.0 } else { 0.0 };
        write!(
            f,
            "CPU {:.2} s over {:.2} s wall: PostgreSQL {:.2} s ({:.0} %), meetingd {:.2} s ({:.0} %), bench and fake {:.2} s ({:.0} %)",
            total,
            self.wall_s,
            self.postgres_s,
            pct(self.postgres_s),
            self.daemon_s,
            pct(self.daemon_s),
            self.bench_s,
            pct(self.bench_s)
        )
    }
}

/// The command name and utime + stime of /proc/<pid>/stat (fields 2, 14 and 15).
pub fn ticks_of(pid: &str) -> Result<(String, u64)> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: it ends at the last ')'.
    let (head, after) = stat.rsplit_once(')').with_context(|| format!("{path} is malformed"))?;
    let comm = head.split_once('(').map(|(_, c)| c.to_string()).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).with_context(|| format!("{path}: field {} unreadable", i + 3))
    };
    Ok((comm, tick(11)? + tick(12)?))
}
