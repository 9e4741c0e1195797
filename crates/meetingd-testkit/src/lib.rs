//! meetingd's test harness, shared by the integration tests (`tests/it`), `meetingd-bench` and
//! `meetingd-soak`.
//!
//! It owns where a PostgreSQL server comes from ([`cluster`]: the shared throwaway cluster or a
//! private one), per-test databases cloned from a migrated template ([`db`]), the in-process fake of
//! Google ([`fake_google`]), of Zoom ([`fake_zoom`]) and of Microsoft Graph ([`fake_graph`]), an auth service's JWKS endpoint ([`jwks`]), certificates ([`certs`]),
//! a private PgBouncer ([`pgbouncer`]), running the daemon in-process or as a `meetingd run` child
//! ([`daemon`]), seed data ([`market`]) and a webhook receiver ([`webhook_receiver`]). It
//! is never part of the daemon: nothing under `src/` may depend on it, and it holds no assertion of
//! a test, only the means to set one up.

pub mod certs;
pub mod chaos;
pub mod cluster;
pub mod daemon;
pub mod db;
pub mod fake_google;
pub mod fake_graph;
pub mod fake_zoom;
pub mod jwks;
pub mod logs;
pub mod market;
pub mod pgbouncer;
pub mod webhook_receiver;

use std::path::{Path, PathBuf};

/// A child process that is killed (SIGKILL) when dropped, so a failing test leaves no daemon behind.
pub struct Running(pub std::process::Child);

impl Running {
    /// SIGKILL now and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves `app` on a free port of 127.0.0.1 for the rest of the test (the in-process fakes of the
/// platforms and of an auth service); its address.
pub async fn serve_locally(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The cargo target directory the running program was built in: the nearest directory above the
/// executable that holds cargo's `CACHEDIR.TAG` (a test binary lives in `target/debug/deps`, a
/// tool in `target/release`), else `CARGO_TARGET_DIR` when absolute, else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    let built_in = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().skip(1).find(|d| d.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf));
    if let Some(dir) = built_in {
        return dir;
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).filter(|d| d.is_absolute()) {
        return dir;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// `target/tmp`, where cargo's own integration tests keep scratch files (`CARGO_TARGET_TMPDIR`).
pub fn target_tmp_dir() -> PathBuf {
    target_dir().join("tmp")
}
