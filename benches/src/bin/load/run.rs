//! The runner: which servers to measure ([`Target`]), starting them (the bench server from
//! this build or the baseline's, the example server) with their stores and seeding them,
//! measuring them group by group (a store's servers side by side), and the report at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use refsys_benches::{TEST_CODE, test_phone};

use crate::BoxError;
use crate::client::{Conn, Seeded, seed};
use crate::measure::measure_group;
use crate::options::Options;
use crate::protocol::{LOGIN_POOL_START, SECRET};
use crate::report::{Report, Row};

/// Runs everything `options` asks for, then writes and prints the table.
pub(crate) fn main(options: &Options) -> Result<(), BoxError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let report = runtime.block_on(run_all(options))?;
    let markdown = report.markdown(options, started.elapsed());
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&options.out, &markdown)?;
    println!("{markdown}");
    eprintln!("load: results written to {}", options.out.display());
    if options.smoke
        && report
            .rows
            .iter()
            .any(|r| r.failed.is_some() || r.errors > 0 || r.ops == 0)
    {
        return Err("smoke run had failures (see the table)".into());
    }
    Ok(())
}

/// Which server a row measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// `load serve`: the adapter in a bare server.
    Bench,
    /// `refsys-server`, the example binary.
    Example,
}

impl ServerKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ServerKind::Bench => "bench",
            ServerKind::Example => "example",
        }
    }
}

/// The bench servers of each store, then the example server's, measured group by group.
async fn run_all(options: &Options) -> Result<Report, BoxError> {
    let mut report = Report::default();
    let pg_ok = match options.pg.psql("SELECT 1") {
        Ok(()) => true,
        Err(e) => {
            if options.stores.iter().any(|s| s.starts_with("postgres")) {
                report.notes.push(format!("PostgreSQL skipped: {e}"));
            }
            false
        }
    };
    let tmp = std::env::temp_dir().join(format!("refsys-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    for store in &options.stores {
        if store.starts_with("postgres") && !pg_ok {
            continue;
        }
        let targets = targets(options, ServerKind::Bench, store);
        run_group(options, &targets, &tmp, &mut report).await;
    }
    if let Some(binary) = &options.example_server {
        if binary.exists() {
            // The memory store is bench-only: the example server has none.
            for store in options
                .stores
                .iter()
                .filter(|s| *s == "sqlite" || *s == "postgres")
            {
                if store == "postgres" && !pg_ok {
                    continue;
                }
                let targets = targets(options, ServerKind::Example, store);
                run_group(options, &targets, &tmp, &mut report).await;
            }
        } else {
            report.notes.push(format!(
                "example server not measured: {} does not exist (build it with \
                 `cargo build --release -p refsys-server`)",
                binary.display()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(report)
}

/// A server to measure: which kind, framework and store.
pub(crate) struct Target {
    pub(crate) server: ServerKind,
    pub(crate) framework: String,
    pub(crate) store: String,
}

/// What marks a baseline server's framework (`--baseline`).
pub(crate) const BASELINE: &str = " (baseline)";

/// What marks a bench server that records and delivers events (`axum (events)`).
pub(crate) const EVENTS: &str = " (events)";

/// One target per framework, for `server` on `store`; with `--baseline`, a bench server
/// of the baseline build after each; on SQLite and PostgreSQL (unless `--no-events`), an
/// axum bench server with events on after axum's.
fn targets(options: &Options, server: ServerKind, store: &str) -> Vec<Target> {
    let bench = server == ServerKind::Bench;
    let baseline = options.baseline.is_some() && bench;
    let events = options.events && bench && store != "memory";
    options
        .frameworks
        .iter()
        .flat_map(|framework| {
            let based = baseline.then(|| format!("{framework}{BASELINE}"));
            let with_events =
                (events && framework == "axum").then(|| format!("{framework}{EVENTS}"));
            std::iter::once(framework.clone())
                .chain(based)
                .chain(with_events)
        })
        .map(|framework| Target {
            server: server.clone(),
            framework,
            store: store.to_owned(),
        })
        .collect()
}

/// A running server process; killed on drop.
pub(crate) struct Server {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 for a server.
fn free_port() -> Result<u16, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts the server of `target` on a free port (a bench server from this build or the
/// baseline, or the example server with its environment).
fn spawn(
    options: &Options,
    target: &Target,
    store_arg: &str,
    workdir: &Path,
) -> Result<Server, BoxError> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = match target.server {
        ServerKind::Bench => {
            let events = target.framework.strip_suffix(EVENTS);
            let (binary, framework) = match target.framework.strip_suffix(BASELINE) {
                Some(framework) => (options.baseline.clone().ok_or("no baseline")?, framework),
                None => (
                    std::env::current_exe()?,
                    events.unwrap_or(target.framework.as_str()),
                ),
            };
            let mut command = Command::new(binary);
            command.args(["serve", "--framework", framework, "--store", store_arg]);
            if events.is_some() {
                command.arg("--events");
            }
            command.args(["--port", &port.to_string()]);
            command.args([
                "--test-phones",
                &(LOGIN_POOL_START + options.login_pool).to_string(),
            ]);
            let seed = if target.store == "memory" {
                options.seed_users
            } else {
                0
            };
            command.args(["--seed-users", &seed.to_string()]);
            command
        }
        ServerKind::Example => {
            let binary = options
                .example_server
                .as_ref()
                .ok_or("no example server")?
                .canonicalize()?;
            let mut command = Command::new(binary);
            let phones: Vec<String> = (0..LOGIN_POOL_START)
                .map(|i| format!("{}:{TEST_CODE}", test_phone(i)))
                .collect();
            command
                .env("REFSYS_BIND", addr.to_string())
                .env("REFSYS_FRAMEWORK", &target.framework)
                .env("DATABASE_URL", store_arg)
                .env("JWT_SECRET", SECRET)
                .env("TEST_PHONES", phones.join(","))
                .env("OTP_RESEND_COOLDOWN", "0")
                .env("OTP_MAX_SENDS", "1000000")
                .env("OTP_SEND_WINDOW", "1")
                .env("RATE_LIMIT_SEND_CODE_PER_PHONE", "0")
                .env("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0")
                .env("SMS_SENDER", "log")
                .env("RUST_LOG", "warn")
                .env_remove("REDIS_URL")
                .env_remove("REFSYS_ENV");
            command
        }
    };
    let child = command
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Server { child, addr })
}

/// Waits (up to 60 s) until the server answers `/health`.
async fn wait_healthy(server: &mut Server) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("server exited at start: {status}").into());
        }
        if let Ok(mut conn) = Conn::open(server.addr, None).await
            && let Ok((200, _)) = conn.get("/health", None).await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("server not healthy within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Measures the servers of one kind and store, one per framework, side by side: each
/// scenario runs in `options.rounds` rounds, and every round gives each server an equal
/// slice of the measured time, alternating which goes first. Whatever else loads the
/// machine then weighs on both frameworks alike, so their ratio holds still.
async fn run_group(options: &Options, targets: &[Target], tmp: &Path, report: &mut Report) {
    let mut live = Vec::new();
    for target in targets {
        eprintln!(
            "load: {} server, {}, {} store",
            target.server.name(),
            target.framework,
            target.store
        );
        match start(options, target, tmp).await {
            Ok(server) => live.push(server),
            Err((pg_db, e)) => {
                eprintln!("load:   failed: {e}");
                report.rows.push(Row {
                    failed: Some(e.to_string()),
                    ..Row::base(target)
                });
                drop_database(options, pg_db.as_deref(), report);
            }
        }
    }
    if let Err(e) = measure_group(options, &mut live, tmp, report).await {
        eprintln!("load:   failed: {e}");
        for server in &live {
            report.rows.push(Row {
                failed: Some(e.to_string()),
                ..Row::base(server.target)
            });
        }
    }
    for server in &live {
        if server.target.framework.ends_with(EVENTS) {
            report.notes.push(events_note(server).await);
        }
    }
    for server in live {
        let pg_db = server.pg_db.clone();
        drop(server);
        drop_database(options, pg_db.as_deref(), report);
    }
}

/// A started and seeded server, with what its scenarios carry from one to the next.
pub(crate) struct Live<'a> {
    pub(crate) target: &'a Target,
    pub(crate) process: Server,
    pub(crate) pg_db: Option<String>,
    pub(crate) seeded: Seeded,
    /// Users who have not applied an invite code yet (from logins, then minted).
    pub(crate) tokens: Vec<String>,
    pub(crate) login_rate: Option<f64>,
}

/// Creates the server's store (a PostgreSQL database, a SQLite file), starts the server
/// and seeds it. On failure, says which database (if any) is left to drop.
async fn start<'a>(
    options: &Options,
    target: &'a Target,
    tmp: &Path,
) -> Result<Live<'a>, (Option<String>, BoxError)> {
    let tag = format!(
        "{}_{}",
        target.server.name(),
        target
            .framework
            .replace(BASELINE, "_baseline")
            .replace(EVENTS, "_events")
    );
    let mut pg_db = None;
    let store_arg = match target.store.as_str() {
        "memory" => "memory".to_owned(),
        "sqlite" => {
            let path = tmp.join(format!("{tag}.db"));
            match target.server {
                ServerKind::Bench => format!("sqlite:{}", path.display()),
                ServerKind::Example => format!("sqlite:{}?mode=rwc", path.display()),
            }
        }
        "postgres" => {
            let db = format!("refsys_bench_{}_{tag}", std::process::id());
            options
                .pg
                .create_database(&db)
                .map_err(|e| (None, format!("creating the database: {e}").into()))?;
            pg_db = Some(db.clone());
            options.pg.url(&db)
        }
        other => return Err((None, format!("unknown store `{other}`").into())),
    };
    let started = async {
        let mut process = spawn(options, target, &store_arg, tmp)?;
        wait_healthy(&mut process).await?;
        let seeded = seed(process.addr).await?;
        Ok::<_, BoxError>((process, seeded))
    };
    match started.await {
        Ok((process, seeded)) => Ok(Live {
            target,
            process,
            pg_db,
            seeded,
            tokens: Vec::new(),
            login_rate: None,
        }),
        Err(e) => Err((pg_db, e)),
    }
}

/// How far an events-on server's dispatcher kept up: events delivered, and still pending,
/// when its group was measured.
async fn events_note(server: &Live<'_>) -> String {
    let what = format!("{} on {}", server.target.framework, server.target.store);
    let answer = async {
        let mut conn = Conn::open(server.process.addr, None).await?;
        let (status, body) = conn.get(crate::protocol::EVENTS_ROUTE, None).await?;
        if status != 200 {
            return Err(format!("{} answered {status}", crate::protocol::EVENTS_ROUTE).into());
        }
        Ok::<_, BoxError>(serde_json::from_slice::<serde_json::Value>(&body)?)
    };
    match answer.await {
        Ok(counts) => format!(
            "{what}: {} events delivered to the handler during the run, {} pending at its end",
            counts["delivered"], counts["pending"]
        ),
        Err(e) => format!("{what}: could not read the event counts: {e}"),
    }
}

/// Drops the server's PostgreSQL database, if it has one; a note in the report if that fails.
fn drop_database(options: &Options, pg_db: Option<&str>, report: &mut Report) {
    if let Some(db) = pg_db
        && let Err(e) = options.pg.drop_database(db)
    {
        report.notes.push(format!("could not drop {db}: {e}"));
    }
}
