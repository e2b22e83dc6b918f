//! Private services for fault tests, and a fake SMS gateway.
//!
//! The shared PostgreSQL (5432) and Redis (6379) must never be stopped: other tests use them.
//! Tests that stop a service start their own: [`PrivatePostgres`] (`initdb` + `pg_ctl` in a
//! temp dir, as the `postgres` OS user when running as root) and [`PrivateRedis`] (a child
//! `redis-server` without persistence). [`Receiver`] is an SMS webhook on 127.0.0.1 that
//! records what it is sent and answers 200, 500 or slowly, as the test says.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// How the fake SMS gateway answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200.
    Ok,
    /// 500.
    Fail,
    /// Sleeps 3 s, then 200 (past any `SMS_WEBHOOK_TIMEOUT=1`).
    Slow,
}

/// One request the gateway got.
#[derive(Clone, Debug)]
pub struct Received {
    /// `X-Refsys-Timestamp`.
    pub timestamp: Option<String>,
    /// `X-Refsys-Signature`.
    pub signature: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// When it arrived (Unix seconds).
    pub arrived: u64,
}

impl Received {
    /// `phone` of the JSON body.
    pub fn phone(&self) -> String {
        self.json()["phone"].as_str().unwrap_or_default().to_owned()
    }

    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The digits at the end of the message.
    pub fn code(&self) -> String {
        let message = self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        message
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether `X-Refsys-Signature` is `sha256=hex(HMAC-SHA256(secret, "<ts>.<body>"))` and
    /// the timestamp is within `skew` of its arrival.
    pub fn signed_with(&self, secret: &str, skew: u64) -> bool {
        use hmac::{Hmac, KeyInit, Mac};
        let (Some(ts), Some(sig)) = (&self.timestamp, &self.signature) else {
            return false;
        };
        let Ok(sent) = ts.parse::<u64>() else {
            return false;
        };
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        *sig == format!("sha256={hex}") && sent.abs_diff(self.arrived) <= skew
    }
}

struct ReceiverState {
    mode: AtomicU8,
    received: Mutex<Vec<Received>>,
}

/// A fake SMS gateway on 127.0.0.1 (any path, POST).
pub struct Receiver {
    /// `http://127.0.0.1:<port>/sms`.
    pub url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts it on a free port, answering `mode`. Needs a tokio runtime.
    pub async fn start(mode: Mode) -> Receiver {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};

        async fn handle(
            State(state): State<Arc<ReceiverState>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            state.received.lock().unwrap().push(Received {
                timestamp: header("x-refsys-timestamp"),
                signature: header("x-refsys-signature"),
                content_type: header("content-type"),
                body: body.to_vec(),
                arrived: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
            match state.mode.load(Ordering::SeqCst) {
                0 => StatusCode::OK,
                1 => StatusCode::INTERNAL_SERVER_ERROR,
                _ => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    StatusCode::OK
                }
            }
        }

        let state = Arc::new(ReceiverState {
            mode: AtomicU8::new(0),
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(axum::routing::post(handle))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let receiver = Receiver {
            url: format!("http://127.0.0.1:{port}/sms"),
            state,
            task,
        };
        receiver.set_mode(mode);
        receiver
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        let value = match mode {
            Mode::Ok => 0,
            Mode::Fail => 1,
            Mode::Slow => 2,
        };
        self.state.mode.store(value, Ordering::SeqCst);
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Everything received for `phone` (E.164).
    pub fn for_phone(&self, phone: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.phone() == phone)
            .collect()
    }

    /// The code in the last message to `phone`.
    pub fn last_code(&self, phone: &str) -> String {
        self.for_phone(phone)
            .last()
            .unwrap_or_else(|| panic!("no SMS to {phone}"))
            .code()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The webhook settings for a server that sends to `receiver` with `secret`.
pub fn webhook_env(receiver: &Receiver, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SMS_SENDER", "webhook".into()),
        ("SMS_WEBHOOK_URL", receiver.url.clone()),
        ("SMS_WEBHOOK_SECRET", secret.into()),
    ]
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
