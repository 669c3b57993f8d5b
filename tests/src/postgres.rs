//! A real PostgreSQL server for the tests, from Debian's `postgresql` binaries: `initdb` into a
//! temporary directory (as the `postgres` user when running as root, which the server refuses
//! to run as), started with `pg_ctl` on 127.0.0.1 and a free port, stopped (immediately) when
//! dropped — also when the test panics. Each server can hand out fresh databases.
//! Missing binaries fail loudly with the install hint — a test never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running server.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the maintenance database.
    pub url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// Debian's server binaries (`/usr/lib/postgresql/<version>/bin`), newest version first.
fn binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/initdb): install them with \
             `apt-get install postgresql` (tools/dev/test.sh does)"
        )
    })
}

/// Runs `program` with `args`, as the `postgres` user when this process is root.
fn run_as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Postgres {
    /// Starts a server (about 2 s).
    pub fn start() -> Postgres {
        let bin = binaries();
        let dir = tempfile::Builder::new().prefix("spendguard-pg-").tempdir().expect("temp dir");
        // The server runs as `postgres`: it must be able to write there.
        set_mode(dir.path(), 0o777);
        let data = dir.path().join("data");
        let data_text = data.to_string_lossy().into_owned();
        let init =
            run_as_postgres(&bin.join("initdb"), &["-D", &data_text, "-A", "trust", "-U", "postgres", "-E", "UTF8"]);
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        let port = free_port();
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", dir.path().display());
        let log = dir.path().join("server.log").to_string_lossy().into_owned();
        let start =
            run_as_postgres(&bin.join("pg_ctl"), &["-D", &data_text, "-o", &options, "-l", &log, "-w", "start"]);
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), port, bin, data, _dir: dir }
    }

    /// A new, empty database on this server; its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        // The blocking client drives a runtime of its own: not inside the test's.
        let url = self.url.clone();
        let create = format!("CREATE DATABASE {name}");
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect to the test server");
            client.batch_execute(&create).expect("create a test database");
        })
        .join()
        .expect("create a test database");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = run_as_postgres(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "stop"]);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod the server's directory");
}
