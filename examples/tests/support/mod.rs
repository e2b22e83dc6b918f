//! Starting the real `refsys-server` binary for tests.

#![allow(dead_code, unreachable_pub)]

pub mod services;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The test phones every server here is started with.
pub const TEST_PHONES: &str = "+375291000001:0000,+375291000002:0000,+375291000003:0000";

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running server process; stopped with SIGTERM when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Everything the process wrote to stdout and stderr.
    pub output: Arc<Mutex<Vec<String>>>,
    /// How long the server took from spawn to answering `/health`.
    pub startup: Duration,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the binary with exactly `env` (plus PATH), in a fresh working directory, with
    /// `args`, and waits until `/health` answers. Without a `REFSYS_BIND` in `env` it picks
    /// a free port, and another if that one was taken before the server bound it.
    pub async fn start(env: &[(&str, String)], args: &[&str]) -> Server {
        let own_port = !env.iter().any(|(k, _)| *k == "REFSYS_BIND");
        let mut tries = 0;
        loop {
            match Self::try_start(env, args).await {
                Ok(server) => return server,
                Err(log) if own_port && tries < 5 && log.contains("Address already in use") => {
                    tries += 1;
                }
                Err(log) => panic!("{log}"),
            }
        }
    }

    /// One start: the server, or what it logged before it exited.
    async fn try_start(env: &[(&str, String)], args: &[&str]) -> Result<Server, String> {
        let port = free_port();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if !env.iter().any(|(k, _)| k == "REFSYS_BIND") {
            env.push(("REFSYS_BIND".into(), format!("127.0.0.1:{port}")));
        }
        let bind = env
            .iter()
            .find(|(k, _)| k == "REFSYS_BIND")
            .unwrap()
            .1
            .clone();
        let dir = tempfile::tempdir().expect("a temp dir");
        let started = Instant::now();
        let mut child = spawn(&env, args, dir.path());
        let output = Arc::new(Mutex::new(Vec::new()));
        drop(collect(&mut child, &output)); // the readers run until the process exits
        let base = format!("http://{bind}");
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Let the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(format!(
                    "server exited with {status}:\n{}",
                    output.lock().unwrap().join("\n")
                ));
            }
            let health = client.get(format!("{base}/health")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server did not answer /health in 60 s:\n{}",
                output.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Server {
            child: Some(child),
            base,
            output,
            startup: started.elapsed(),
            _dir: dir,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The log so far, one line per entry.
    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Kills the process with SIGKILL (`kill -9`: no shutdown, nothing flushed) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for the exit (at most 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server ignored SIGTERM for 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pseudo-variable (read by these helpers, not the server) that starts the server with
/// that open-files limit (`ulimit -n`).
pub const OPEN_FILES_LIMIT: &str = "TEST_OPEN_FILES_LIMIT";

fn spawn(env: &[(String, String)], args: &[&str], dir: &std::path::Path) -> Child {
    let binary = env!("CARGO_BIN_EXE_refsys-server");
    let limit = env.iter().find(|(k, _)| k == OPEN_FILES_LIMIT);
    let env = env.iter().filter(|(k, _)| k != OPEN_FILES_LIMIT);
    let mut command = match limit {
        None => Command::new(binary),
        Some((_, n)) => {
            let mut bash = Command::new("bash");
            bash.args([
                "-c",
                r#"ulimit -n "$1" && shift && exec "$@""#,
                "bash",
                n,
                binary,
            ]);
            bash
        }
    };
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the refsys-server binary starts")
}

/// Collects the child's stdout and stderr lines into `output`, each on a thread of its own;
/// the threads end when the child has exited and its output is all read.
fn collect(
    child: &mut Child,
    output: &Arc<Mutex<Vec<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ]
    .into_iter()
    .map(|stream| {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.lock().unwrap().push(line);
            }
        })
    })
    .collect()
}

/// Runs the binary with `env` and `args` until it exits (at most 30 s): (status, output).
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = spawn(&env, args, dir.path());
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers = collect(&mut child, &output);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Every line the process wrote, read to the end of its pipes.
            for reader in readers {
                reader.join().expect("an output reader");
            }
            return (status, output.lock().unwrap().join("\n"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the server did not exit: {}",
                output.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of a process, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
