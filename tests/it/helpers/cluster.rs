//! Where the tests' PostgreSQL server comes from.
//!
//! `DATABASE_URL` set: that server (any database on it; tests create their own). Not set: a
//! throwaway cluster started from the system's PostgreSQL binaries under the target directory,
//! shared by every test process of the run (a file lock makes one process start it) and reused by
//! later runs while it is up. It runs with fsync off: it holds nothing worth keeping.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A connection string for the server's `postgres` database.
pub fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => meetingd::demo::with_dbname(&url, "postgres"),
        _ => throwaway_cluster(),
    })
}

fn throwaway_cluster() -> String {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&root).expect("create target tmp dir");
    let lock = File::create(root.join("pg-cluster.lock")).expect("create cluster lock file");
    lock.lock().expect("lock the cluster lock file");
    let data = root.join("pg-cluster");
    let port = ensure_running(&data);
    drop(lock);
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

fn ensure_running(data: &Path) -> u16 {
    let bin = pg_bindir();
    let port_file = data.join("meetingd-test-port");
    if let Ok(port) = fs::read_to_string(&port_file).map(|s| s.trim().parse::<u16>()) {
        let port = port.expect("port file holds a port");
        if as_pg_user(&bin.join("pg_ctl")).arg("status").arg("-D").arg(data).output().is_ok_and(|o| o.status.success())
        {
            return port;
        }
        start(&bin, data, port);
        return port;
    }
    let _ = fs::remove_dir_all(data);
    fs::create_dir_all(data).expect("create cluster dir");
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(data, Some(uid), Some(gid)).expect("chown cluster dir to postgres");
    }
    let out = as_pg_user(&bin.join("initdb"))
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
        .arg(data)
        .output()
        .expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    start(&bin, data, port);
    fs::write(&port_file, port.to_string()).expect("write port file");
    port
}

fn start(bin: &Path, data: &Path, port: u16) {
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=500 -c shared_buffers=128MB",
        data.display()
    );
    let out = as_pg_user(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(data.join("server.log"))
        .args(["-w", "-t", "60", "-o", &options, "start"])
        .output()
        .expect("run pg_ctl start");
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The newest PostgreSQL server binaries on the machine (`PG_BINDIR` overrides).
fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set DATABASE_URL / PG_BINDIR)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin").1
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// PostgreSQL refuses to run as root: run its tools as the `postgres` user then.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("run id");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a postgres user on the machine")
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}
