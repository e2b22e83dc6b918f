//! Private services for fault tests.
//!
//! The shared PostgreSQL (5432) and Redis (6379) must never be stopped: other tests use them.
//! Tests that stop a service start their own: [`PrivatePostgres`] (`initdb` + `pg_ctl` in a
//! temp dir, as the `postgres` OS user when running as root) and [`PrivateRedis`] (a child
//! `redis-server` without persistence). The fake SMS gateway lives in
//! `http_suite::gateway`, which the binary's HTTP-suite runs use too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Runs `cmd`, panicking with its output if it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` (or `PG_BIN`).
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("pg_ctl").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "fault tests need PostgreSQL's initdb and pg_ctl (/usr/lib/postgresql/*/bin, or PG_BIN)",
    )
}

/// A PostgreSQL cluster of this test's own, on a free port, that the test may stop and start.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
    /// The port it listens on (127.0.0.1 only).
    pub port: u16,
    running: bool,
}

impl PrivatePostgres {
    /// `initdb` (trust auth) and start.
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = is_root();
        if root {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
                "chown the PostgreSQL dir",
            );
        }
        let mut pg = PrivatePostgres {
            bin: postgres_bin(),
            root,
            port: free_port(),
            running: false,
            dir,
        };
        let data = pg.data();
        run(
            pg.command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        if self.root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(tool);
            cmd
        } else {
            Command::new(tool)
        }
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start -w` on the same port and data.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        );
        self.running = true;
    }

    /// `pg_ctl stop -m fast -w`: clients are disconnected, committed data is kept.
    pub fn stop(&mut self) {
        self.stop_with("fast");
    }

    fn stop_with(&mut self, mode: &str) {
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", mode, "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        );
        self.running = false;
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `redis-server` child of this test: no persistence, on a free port.
pub struct PrivateRedis {
    /// The port it listens on (127.0.0.1 only).
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts it and waits until it answers PING.
    pub fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
        };
        redis.start_again();
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts a new process on the same port (empty: nothing was persisted).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fault tests need redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pong() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// SIGTERM and wait: every key is gone (no persistence).
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Logs `user` in on `verifier` with a `code` sent through the other server `sender`, and
/// checks the two agree: `sender` accepts the new access token, and refuses the code now that
/// `verifier` spent it. Returns the access token.
pub async fn login_across(
    sender: &http_suite::Client,
    verifier: &http_suite::Client,
    user: &str,
    code: &str,
) -> String {
    let verify = serde_json::json!({ "phone": user, "code": code });
    let login = verifier.post("/login/verify_code/", verify.clone()).await;
    assert_eq!(login.status, 200, "{}", login.json());
    let access = login.str("access");
    let profile = sender.get("/get_profile/", Some(&access)).await;
    assert_eq!(profile.status, 200, "{}", profile.json());
    let reused = sender.post("/login/verify_code/", verify).await;
    http_suite::assert_error(&reused, 400, "code_expired");
    access
}
