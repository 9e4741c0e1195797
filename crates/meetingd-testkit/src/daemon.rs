//! Running the daemon for a test, the bench or the soak: in-process ([`InProcess`], with injected
//! providers) or as a `meetingd run` child process ([`DaemonCommand`], [`Child`]).
//!
//! The child's whole configuration comes from the environment this module builds: it removes the
//! variables through which the caller's own environment could reach the child (`DATABASE_URL`,
//! `MEETINGD_CONFIG`, the key file, `RUST_LOG`), turns the API and metrics listeners off, and
//! points Google and Zoom at their fakes when asked. It starts, waits for and stops daemons; what
//! they are expected to do is the caller's to check.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use meetingd::RunError;
use meetingd::config::Config;
use meetingd::providers::Providers;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Running;
use crate::fake_google::{self, FakeGoogle};
use crate::fake_graph::{self, FakeGraph};
use crate::fake_zoom::{self, FakeZoom};

/// Counts the sessions of the current database waiting in LISTEN: a daemon listens last, after
/// migrating and opening its pool, so one such session per daemon means they are ready.
pub const LISTENING_SESSIONS: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'";

/// The daemon in this process (`meetingd::run_with`) with the given providers.
pub struct InProcess {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), RunError>>,
}

impl InProcess {
    pub fn start(config: Config, providers: Providers) -> InProcess {
        let shutdown = CancellationToken::new();
        let options = meetingd::RunOptions {
            providers: Some(Box::new(move |_| Ok(providers))),
            http_listener: None,
            ops_listener: None,
        };
        let task = tokio::spawn(meetingd::run_with(config, options, shutdown.clone()));
        InProcess { shutdown, task }
    }

    /// Cancels it and waits up to `timeout` for a clean stop; panics otherwise.
    pub async fn stop(self, timeout: Duration) {
        self.shutdown.cancel();
        tokio::time::timeout(timeout, self.task).await.expect("daemon stops in time").unwrap().unwrap();
    }
}

/// `meetingd run` as a child process, configured through its environment.
pub struct DaemonCommand {
    command: Command,
}

impl DaemonCommand {
    /// `bin run` against the database `url`, with `key` as the encryption key, the API and
    /// metrics listeners off, and nothing from the caller's environment that configures meetingd
    /// differently.
    pub fn new(bin: impl AsRef<Path>, url: &str, key: &SecretString) -> DaemonCommand {
        let mut command = Command::new(bin.as_ref());
        command
            .arg("run")
            .env_remove("DATABASE_URL")
            .env_remove("MEETINGD_CONFIG")
            .env_remove("MEETINGD_ENCRYPTION__KEY_FILE")
            .env_remove("RUST_LOG")
            .env("MEETINGD_DATABASE__URL", url)
            .env("MEETINGD_ENCRYPTION__KEY", key.expose_secret())
            .env("MEETINGD_HTTP__LISTEN", "")
            .env("MEETINGD_HTTP__METRICS_LISTEN", "")
            // As in `TestDb::config`: no connection monitor calling the fakes at start.
            .env("MEETINGD_MONITOR__ENABLED", "false")
            .stdin(Stdio::null());
        DaemonCommand { command }
    }

    /// Sets the configuration key `key` (`WORKER__CONCURRENCY`: `worker.concurrency`) by its
    /// `MEETINGD_` variable.
    pub fn set(mut self, key: &str, value: impl AsRef<OsStr>) -> DaemonCommand {
        self.command.env(format!("MEETINGD_{key}"), value);
        self
    }

    /// Sets an environment variable that is not a configuration key (`NOTIFY_SOCKET`, …).
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> DaemonCommand {
        self.command.env(name, value);
        self
    }

    /// The log filter (`MEETINGD_LOG`).
    pub fn log(self, filter: &str) -> DaemonCommand {
        self.set("LOG", filter)
    }

    /// Google's OAuth client, token, revocation and Calendar endpoints at the fake.
    pub fn google(self, google: &FakeGoogle) -> DaemonCommand {
        let base = google.base();
        self.set("GOOGLE__CLIENT_ID", fake_google::CLIENT_ID)
            .set("GOOGLE__CLIENT_SECRET", fake_google::CLIENT_SECRET)
            .set("GOOGLE__TOKEN_URL", format!("{base}/token"))
            .set("GOOGLE__REVOKE_URL", format!("{base}/revoke"))
            .set("GOOGLE__API_BASE_URL", format!("{base}/calendar/v3/"))
    }

    /// Zoom's OAuth client, token, revocation and Meetings API endpoints at the fake.
    pub fn zoom(self, zoom: &FakeZoom) -> DaemonCommand {
        let base = zoom.base();
        self.set("ZOOM__CLIENT_ID", fake_zoom::CLIENT_ID)
            .set("ZOOM__CLIENT_SECRET", fake_zoom::CLIENT_SECRET)
            .set("ZOOM__AUTH_URL", format!("{base}/oauth/authorize"))
            .set("ZOOM__TOKEN_URL", format!("{base}/oauth/token"))
            .set("ZOOM__REVOKE_URL", format!("{base}/oauth/revoke"))
            .set("ZOOM__API_BASE_URL", format!("{base}/v2/"))
    }

    /// Microsoft's OAuth client, token endpoint and Graph at the fake.
    pub fn teams(self, graph: &FakeGraph) -> DaemonCommand {
        let base = graph.base();
        let tenant = fake_graph::TENANT;
        self.set("TEAMS__CLIENT_ID", fake_graph::CLIENT_ID)
            .set("TEAMS__CLIENT_SECRET", fake_graph::CLIENT_SECRET)
            .set("TEAMS__AUTH_URL", format!("{base}/{tenant}/oauth2/v2.0/authorize"))
            .set("TEAMS__TOKEN_URL", format!("{base}/{tenant}/oauth2/v2.0/token"))
            .set("TEAMS__API_BASE_URL", format!("{base}/v1.0/"))
    }

    /// Starts it with its output thrown away, killed when dropped (tests).
    pub fn spawn_quiet(mut self) -> Running {
        let child = self.command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start meetingd");
        Running(child)
    }

    /// Starts it with `stdout` and `stderr` as given; `name` says which daemon it is in messages.
    pub fn spawn(mut self, name: &str, stdout: Stdio, stderr: Stdio) -> Result<Child> {
        let bin = PathBuf::from(self.command.get_program());
        let child = self
            .command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Child { name: name.to_string(), log: None, child })
    }
}

/// A `meetingd run` child of a tool. Dropping it kills it (error paths, time-out, Ctrl-C).
pub struct Child {
    name: String,
    /// Where its output goes, when not to the caller's own.
    log: Option<PathBuf>,
    child: std::process::Child,
}

impl Child {
    /// Says where its output goes, for messages about it.
    pub fn with_log(mut self, log: &Path) -> Child {
        self.log = Some(log.to_path_buf());
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().with_context(|| format!("killing {} (pid {})", self.name, self.pid()))?;
        self.child.wait().with_context(|| format!("reaping {}", self.name))?;
        Ok(())
    }

    /// `Some(status)` when it exited on its own.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().with_context(|| format!("checking on {}", self.name))
    }

    /// SIGTERM, then wait up to `timeout` for the graceful drain; returns how it exited.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited()? {
            return Ok(status);
        }
        let pid = i32::try_from(self.pid()).context("a child's pid")?;
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        ensure!(sent == 0, "kill -TERM {pid} failed: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not stop within {} s of SIGTERM", self.name, timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Only reached when the run already failed: nothing more to report.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `listening()` (e.g. a count of [`LISTENING_SESSIONS`]) reaches `n`, failing when
/// one of `daemons` exits meanwhile or after `timeout`.
pub async fn wait_listening(
    daemons: &mut [Child],
    n: i64,
    timeout: Duration,
    mut listening: impl AsyncFnMut() -> Result<i64>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for daemon in daemons.iter_mut() {
            if let Some(status) = daemon.exited()? {
                let log = match &daemon.log {
                    Some(path) => format!("see {}", path.display()),
                    None => "its log is above".to_string(),
                };
                bail!("{} exited at start ({status}); {log}", daemon.name);
            }
        }
        if listening().await? >= n {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "meetingd did not LISTEN within {} s of starting", timeout.as_secs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `meetingd` binary built alongside the running executable (same target directory and
/// profile), as the tools run it.
pub fn built_alongside() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let path = exe.with_file_name("meetingd");
    let release = exe.parent().and_then(Path::file_name).is_some_and(|p| p == "release");
    ensure!(
        path.is_file(),
        "the daemon binary {} is missing: build it with cargo build{} --workspace --bins",
        path.display(),
        if release { " --release" } else { "" }
    );
    Ok(path)
}
