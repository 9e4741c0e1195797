//! A private PgBouncer (Debian's `pgbouncer`, 1.18) in transaction pooling mode in front of the
//! tests' shared server, killed when dropped. It configures and runs PgBouncer only; what goes
//! through it is the test's business.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Running;
use crate::cluster::admin_url;

pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    _process: Running,
}

fn binary() -> PathBuf {
    for candidate in ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v pgbouncer"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!(
        "the pgbouncer binary is missing: install it (Debian: apt-get update && apt-get install -y pgbouncer) to run the PgBouncer tests"
    );
}

impl PgBouncer {
    /// Starts one with `default_pool_size` server connections per database and user.
    pub fn start(pool_size: u32) -> PgBouncer {
        let bin = binary();
        let server: tokio_postgres::Config = admin_url().parse().expect("the cluster's URL");
        let port_of_server = server.get_ports().first().copied().unwrap_or(5432);
        let user = server.get_user().unwrap_or("postgres").to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("meetingd-pgbouncer-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={port_of_server} user={user}\n\n[pgbouncer]\n\
                 pool_mode = transaction\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\nmax_client_conn = 200\ndefault_pool_size = {pool_size}\n\
                 max_db_connections = {pool_size}\nserver_reset_query =\n\
                 logfile = {log}\npidfile = {pid}\n",
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() == 0 };
        let mut cmd = if root {
            // PgBouncer refuses to run as root.
            let _ = Command::new("chown").arg("-R").arg("postgres").arg(&dir).status();
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let child = cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start pgbouncer");
        let process = Running(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {port}: {}",
                std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PgBouncer { port, dir, _process: process }
    }

    /// `url` (a test database on the cluster) as reached through this PgBouncer.
    pub fn url_for(&self, url: &str) -> String {
        let cfg: tokio_postgres::Config = url.parse().unwrap();
        let dbname = cfg.get_dbname().expect("a database name");
        let user = cfg.get_user().unwrap_or("postgres");
        format!("postgres://{user}@127.0.0.1:{}/{dbname}?sslmode=disable", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Run through runuser, the process to stop is runuser's child: the pid it wrote.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: kill(2) on the pgbouncer this helper started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
