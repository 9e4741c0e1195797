//! Where the tests' PostgreSQL server comes from.
//!
//! `DATABASE_URL` set: that server (any database on it; tests create their own). Not set: a
//! throwaway cluster started from the system's PostgreSQL binaries under the target directory,
//! shared by every test process of the run (a file lock makes one process start it) and reused by
//! later runs while it is up. It runs with fsync off: it holds nothing worth keeping, and with TLS
//! on: a CA made at cluster creation ([`tls`] says where its certificate is) signed a server
//! certificate that names `localhost` only, so `verify-full` to 127.0.0.1 must fail.

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

/// What the TLS tests need to know about the server's certificate.
pub struct ServerTls {
    /// The root certificate (PEM) that the server's certificate chains to.
    pub ca: PathBuf,
    /// A host name the server's certificate names and that reaches the server.
    pub host: String,
}

/// The server's TLS, when the tests know it: always for the throwaway cluster; for a
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
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg-cluster-ca.crt")
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
    let has_tls = data.join("server.crt").exists() && ca_cert_path().exists();
    if !has_tls && port_file.exists() {
        // A cluster from before the tests used TLS: replace it.
        let _ = as_pg_user(&bin.join("pg_ctl")).args(["stop", "-m", "immediate", "-D"]).arg(data).output();
        let _ = fs::remove_file(&port_file);
    }
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
    write_certificates(data);
    let port = free_port();
    start(&bin, data, port);
    fs::write(&port_file, port.to_string()).expect("write port file");
    port
}

fn start(bin: &Path, data: &Path, port: u16) {
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=500 -c shared_buffers=128MB \
         -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
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

/// A new CA, and a server certificate it signed for `localhost`, in the data directory (the key
/// readable by the postgres user only, as the server insists); the CA's certificate at
/// [`ca_cert_path`].
fn write_certificates(data: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let ca = super::certs::Ca::new("meetingd test CA");
    let (cert, key) = ca.server_cert(&["localhost"]);
    for (name, pem) in [("server.crt", &cert), ("server.key", &key)] {
        let path = data.join(name);
        fs::write(&path, pem).expect("write server certificate");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod server certificate");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown server certificate to postgres");
        }
    }
    // Written last: its presence says the cluster is complete.
    fs::write(ca_cert_path(), ca.cert_pem()).expect("write CA certificate");
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
