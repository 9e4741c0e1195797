//! Where a PostgreSQL server comes from: the tests' shared server, or a private throwaway cluster.
//!
//! Shared ([`admin_url`]): `DATABASE_URL` set: that server (any database on it; tests create their
//! own). Not set: a throwaway cluster started from the system's PostgreSQL binaries under the
//! target directory (`target/tmp/pg-cluster`), shared by every test process of the run (a file
//! lock makes one process start it) and reused by later runs while it is up. It runs with fsync
//! off: it holds nothing worth keeping, and with TLS on: a CA made at cluster creation ([`tls`]
//! says where its certificate is) signed a server certificate that names `localhost` only, so
//! `verify-full` to 127.0.0.1 must fail.
//!
//! Private ([`PrivateCluster`]): a fresh cluster in a directory of the caller's, which it may
//! crash and restart at will (the soak does); stopped and deleted when dropped. This module starts
//! and stops servers; it creates no database but a private cluster's on request.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};
use meetingd::fixtures::with_dbname;

/// A connection string for the shared server's `postgres` database.
pub fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => with_dbname(&url, "postgres"),
        _ => throwaway_cluster(),
    })
}

/// What the TLS tests need to know about the server's certificate.
pub struct ServerTls {
    /// The root certificate (PEM) that the server's certificate chains to.
    pub ca: PathBuf,
    /// A host name the server's certificate names and that reaches the server.
    pub host: String,
}

/// The shared server's TLS, when the tests know it: always for the throwaway cluster; for a
/// `DATABASE_URL` server, when `DATABASE_URL_SSLROOTCERT` names its CA (and
/// `DATABASE_URL_SSLHOST` a name its certificate holds, else the URL's host). `None`: tests that
/// verify certificates have nothing to verify against and say so.
pub fn tls() -> Option<ServerTls> {
    let url = admin_url();
    if !external() {
        return Some(ServerTls { ca: ca_cert_path(), host: "localhost".into() });
    }
    let ca = std::env::var("DATABASE_URL_SSLROOTCERT").ok().filter(|s| !s.is_empty())?;
    let host = match std::env::var("DATABASE_URL_SSLHOST") {
        Ok(h) if !h.is_empty() => h,
        _ => url::Url::parse(url).ok()?.host_str()?.to_string(),
    };
    Some(ServerTls { ca: ca.into(), host })
}

/// Whether the tests run against a `DATABASE_URL` server rather than the throwaway cluster.
pub fn external() -> bool {
    std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty())
}

/// The throwaway cluster's CA certificate (PEM).
pub fn ca_cert_path() -> PathBuf {
    crate::target_tmp_dir().join("pg-cluster-ca.crt")
}

fn throwaway_cluster() -> String {
    let root = crate::target_tmp_dir();
    fs::create_dir_all(&root).expect("create target tmp dir");
    let lock = File::create(root.join("pg-cluster.lock")).expect("create cluster lock file");
    lock.lock().expect("lock the cluster lock file");
    let data = root.join("pg-cluster");
    let port = ensure_running(&data);
    drop(lock);
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// The shared cluster's settings: nothing in it is worth an fsync or a synchronous commit.
fn shared_options(port: u16, data: &Path) -> String {
    format!(
        "{} -c synchronous_commit=off -c max_connections=500 \
         -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
        base_options(port, data)
    )
}

/// What every cluster of the harness runs with: its own port and socket directory, loopback
/// only, fsync off (the machine does not crash, at most PostgreSQL does).
fn base_options(port: u16, data: &Path) -> String {
    format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c shared_buffers=128MB",
        data.display()
    )
}

fn ensure_running(data: &Path) -> u16 {
    let pg = Pg::find().expect("PostgreSQL server binaries");
    let port_file = data.join("meetingd-test-port");
    let has_tls = data.join("server.crt").exists() && ca_cert_path().exists();
    if !has_tls && port_file.exists() {
        // A cluster from before the tests used TLS: replace it.
        let _ = pg.tool("pg_ctl").args(["stop", "-m", "immediate", "-D"]).arg(data).output();
        let _ = fs::remove_file(&port_file);
    }
    let log = data.join("server.log");
    if let Ok(port) = fs::read_to_string(&port_file).map(|s| s.trim().parse::<u16>()) {
        let port = port.expect("port file holds a port");
        if pg.tool("pg_ctl").arg("status").arg("-D").arg(data).output().is_ok_and(|o| o.status.success()) {
            return port;
        }
        pg.start(data, &log, &shared_options(port, data)).expect("start the test cluster");
        return port;
    }
    let _ = fs::remove_dir_all(data);
    fs::create_dir_all(data).expect("create cluster dir");
    pg.hand_over(data).expect("chown cluster dir to postgres");
    pg.initdb(data).expect("initdb the test cluster");
    write_certificates(&pg, data);
    let port = free_port().expect("a free port");
    pg.start(data, &log, &shared_options(port, data)).expect("start the test cluster");
    fs::write(&port_file, port.to_string()).expect("write port file");
    port
}

/// A new CA, and a server certificate it signed for `localhost`, in the data directory (the key
/// readable by the postgres user only, as the server insists); the CA's certificate at
/// [`ca_cert_path`].
fn write_certificates(pg: &Pg, data: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let ca = crate::certs::Ca::new("meetingd test CA");
    let (cert, key) = ca.server_cert(&["localhost"]);
    for (name, pem) in [("server.crt", &cert), ("server.key", &key)] {
        let path = data.join(name);
        fs::write(&path, pem).expect("write server certificate");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod server certificate");
        pg.hand_over(&path).expect("chown server certificate to postgres");
    }
    // Written last: its presence says the cluster is complete.
    fs::write(ca_cert_path(), ca.cert_pem()).expect("write CA certificate");
}

/// A PostgreSQL cluster of the caller's own in `root` (which also holds whatever else the caller
/// puts there, e.g. daemon logs): `synchronous_commit` on as in production, no TLS. Dropping it
/// stops the server immediately and deletes `root`; [`PrivateCluster::destroy`] does so with
/// reports, or keeps the directory.
pub struct PrivateCluster {
    pub root: PathBuf,
    pub port: u16,
    data: PathBuf,
    server_log: PathBuf,
    pg: Pg,
    destroyed: bool,
}

impl PrivateCluster {
    /// initdb into `root/pg/data` (`root` is created) and start the server on a free port with
    /// at most `max_connections` sessions.
    pub fn create(root: &Path, max_connections: u32) -> Result<PrivateCluster> {
        let pg = Pg::find()?;
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let pg_dir = root.join("pg");
        let cluster = PrivateCluster {
            data: pg_dir.join("data"),
            server_log: pg_dir.join("server.log"),
            root: root.to_path_buf(),
            port: free_port()?,
            pg,
            destroyed: false,
        };
        fs::create_dir(&pg_dir).with_context(|| format!("creating {}", pg_dir.display()))?;
        cluster.pg.hand_over(&pg_dir)?;
        cluster.pg.initdb(&cluster.data)?;
        // A commit that returned has its WAL with the operating system and survives a crash
        // restart; an asynchronous one (a claim) may not.
        let options = format!(
            "{} -c synchronous_commit=on -c max_connections={max_connections}",
            base_options(cluster.port, &cluster.data)
        );
        cluster.pg.start(&cluster.data, &cluster.server_log, &options)?;
        Ok(cluster)
    }

    /// `pg_ctl restart -m immediate`, a crash: every session is cut off, no checkpoint is made, and
    /// the server recovers from its WAL, without the asynchronously committed transactions that
    /// were not written yet. The options of the first start are kept.
    pub fn restart(&self) -> Result<()> {
        let mut restart = self.pg_ctl();
        restart.args(["-w", "-t", "60", "-m", "immediate", "restart"]);
        run_tool("pg_ctl restart", restart)
    }

    fn stop(&self, mode: &str) -> Result<()> {
        let mut stop = self.pg_ctl();
        stop.args(["-w", "-t", "60", "-m", mode, "stop"]);
        run_tool("pg_ctl stop", stop)
    }

    /// Stops the server and deletes the directory (unless `keep`).
    pub fn destroy(mut self, keep: bool) -> Result<()> {
        self.destroyed = true;
        let stopped = self.stop("fast");
        if keep {
            println!("· kept {} (cluster stopped; daemon logs daemon-*.log)", self.root.display());
        } else {
            fs::remove_dir_all(&self.root).with_context(|| format!("deleting {}", self.root.display()))?;
        }
        stopped
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.pg.tool("pg_ctl");
        command.current_dir(&self.root).arg("-D").arg(&self.data).arg("-l").arg(&self.server_log);
        command
    }

    /// A connection string for `dbname` on this cluster.
    pub fn url(&self, dbname: &str) -> String {
        with_dbname(&format!("postgres://postgres@127.0.0.1:{}/postgres", self.port), dbname)
    }

    /// Creates an empty database; returns its URL.
    pub async fn create_database(&self, dbname: &str) -> Result<String> {
        let (admin, connection) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to PostgreSQL")?;
        let driver = tokio::spawn(connection);
        admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.context("creating a database")?;
        drop(admin);
        let _ = driver.await;
        Ok(self.url(dbname))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if !self.destroyed {
            // Best effort on a path that already failed: nothing more to report.
            let _ = self.stop("immediate");
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// The machine's PostgreSQL server binaries, and whether they must run as the `postgres` user.
struct Pg {
    bin: PathBuf,
    /// Running as root: PostgreSQL refuses to, its tools run as the `postgres` user.
    as_postgres: bool,
}

impl Pg {
    fn find() -> Result<Pg> {
        Ok(Pg { bin: pg_bindir()?, as_postgres: is_root() })
    }

    /// A PostgreSQL tool, as the `postgres` user when running as root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    /// Gives `path` to the `postgres` user when the tools run as that user.
    fn hand_over(&self, path: &Path) -> Result<()> {
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    fn initdb(&self, data: &Path) -> Result<()> {
        let mut initdb = self.tool("initdb");
        initdb.args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"]).arg(data);
        run_tool("initdb", initdb)
    }

    fn start(&self, data: &Path, log: &Path, options: &str) -> Result<()> {
        let mut start = self.tool("pg_ctl");
        start.arg("-D").arg(data).arg("-l").arg(log).args(["-w", "-t", "60", "-o", options, "start"]);
        run_tool("pg_ctl start", start)
    }
}

fn run_tool(what: &str, mut command: Command) -> Result<()> {
    let out = command.output().with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The newest PostgreSQL server binaries under /usr/lib/postgresql (`PG_BINDIR` overrides).
fn pg_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let entries = fs::read_dir("/usr/lib/postgresql").context(
        "looking for PostgreSQL server binaries under /usr/lib/postgresql (or set DATABASE_URL / PG_BINDIR)",
    )?;
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql/*/bin (set PG_BINDIR)")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_ids() -> Result<(u32, u32)> {
    Ok((id(&["-u", "postgres"]).context("a postgres user")?, id(&["-g", "postgres"]).context("a postgres group")?))
}

/// `id <args>` as a number.
fn id(args: &[&str]) -> Result<u32> {
    let out = Command::new("id").args(args).output().context("running id")?;
    ensure!(out.status.success(), "id {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("reading the output of id {}", args.join(" ")))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}
