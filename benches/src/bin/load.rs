//! The refsys HTTP load runner: starts servers, drives them over keep-alive connections from
//! 127.0.0.1, and writes a markdown table of requests/s, p50/p99 latency and peak server RSS.
//!
//! `cargo run --release -p refsys-benches --bin load -- [--smoke] [options]`; see
//! `benches/README.md`. `load serve ...` is the bench server this runner spawns (a child
//! process, so its RSS is its own): the axum or actix adapter over a memory, SQLite or
//! PostgreSQL user store, client rate limits off, no request logging.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use refsys_benches::{NoopSender, TEST_CODE, bench_policy, test_phone};
use refsys_core::ClientLimits;
#[cfg(feature = "postgres")]
use refsys_core::postgres::PgUserStore;
use refsys_core::sqlite::SqliteUserStore;
use refsys_core::{
    AllowedRegions, Claims, FamilyId, InviteCode, JwtKeys, MemoryOtpStore, MemoryRateLimitStore,
    MemoryUserStore, Phone, ReferralService, Timestamp, TokenId, TokenKind, UserId, UserStore,
};

/// HS256 secret shared by the runner and every server it starts.
const SECRET: &str = "refsys-load-runner-secret-0123456789abcdef";

/// Test-phone layout: 0 owns the profile, 1..=10 are its invitees, 11 is the invite hub, the
/// rest is the login pool.
const PROFILE_OWNER: usize = 0;
const INVITEES: usize = 10;
const HUB: usize = 11;
const LOGIN_POOL_START: usize = 12;

/// The bench server's extra route that makes fresh users (see `serve::Minter`).
const MINT_ROUTE: &str = "/__bench/users/{n}";

/// The bench server's framework-native handler (`{"status":"ok"}`, no refsys code).
const BARE_ROUTE: &str = "/__bench/bare";

/// What the bare handler answers.
const BARE_BODY: &str = r#"{"status":"ok"}"#;

/// The bench server's framework-native handler that reads the profile of the user named by
/// the [`STORE_USER`] header straight from the store (no refsys HTTP code: no auth, no
/// rate limit, no route table) and answers it as JSON.
const STORE_ROUTE: &str = "/__bench/store_profile";

/// The header with the user id for [`STORE_ROUTE`].
const STORE_USER: &str = "x-bench-user";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("serve") {
        serve::main(&args[1..])
    } else {
        runner::main(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `--name value` pairs after the subcommand; flags without a value map to `""`.
fn parse_flags(args: &[String]) -> Result<BTreeMap<String, String>, BoxError> {
    let mut flags = BTreeMap::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let name = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{arg}`; try --help"))?;
        let value = match iter.peek() {
            Some(next) if !next.starts_with("--") => iter.next().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        flags.insert(name.to_owned(), value);
    }
    Ok(flags)
}

/// The bench server (`load serve`).
mod serve {
    use super::*;

    pub(super) fn main(args: &[String]) -> Result<(), BoxError> {
        let flags = parse_flags(args)?;
        let get = |name: &str| {
            flags
                .get(name)
                .cloned()
                .ok_or(format!("serve: --{name} is required"))
        };
        let framework = get("framework")?;
        let store = get("store")?;
        let port: u16 = get("port")?.parse()?;
        let test_phones: usize = get("test-phones")?.parse()?;
        let seed_users: usize = flags.get("seed-users").map_or(Ok(0), |v| v.parse())?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match framework.as_str() {
            // One current-thread runtime per core, like actix-web's workers, so that the
            // actix/axum pairs compare the framework crates rather than two schedulers. As
            // actix does, the main thread accepts the connections and hands them to the
            // workers in turn; it built and seeded the store on its runtime, which lives on.
            "axum" => {
                let setup = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let (service, minter) = setup.block_on(build(&store, test_phones, seed_users))?;
                let mut workers = Vec::with_capacity(threads);
                let mut handoff = Vec::with_capacity(threads);
                for _ in 0..threads {
                    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
                    handoff.push(send);
                    let app = axum_app(service.clone(), minter.clone());
                    workers.push(std::thread::spawn(move || -> Result<(), String> {
                        let listener = Handed { receive, addr };
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .and_then(|runtime| {
                                runtime.block_on(async move { axum::serve(listener, app).await })
                            })
                            .map_err(|e| e.to_string())
                    }));
                }
                // Runs until a worker stops (its receiver is gone); then that worker's error.
                let stopped = setup.block_on(async {
                    let listener = tokio::net::TcpListener::bind(addr).await?;
                    let mut next = 0;
                    loop {
                        let (stream, _) = listener.accept().await?;
                        if handoff[next].send(stream.into_std()?).is_err() {
                            return Ok::<_, BoxError>(next);
                        }
                        next = (next + 1) % threads;
                    }
                })?;
                match workers.swap_remove(stopped).join() {
                    Ok(Err(e)) => Err(format!("serve: an axum worker failed: {e}").into()),
                    Ok(Ok(())) => Err("serve: an axum worker stopped".into()),
                    Err(_) => Err("serve: an axum worker panicked".into()),
                }
            }
            "actix" => actix_web::rt::System::new().block_on(async move {
                let (service, minter) = build(&store, test_phones, seed_users).await?;
                async fn mint(
                    minter: actix_web::web::Data<Minter>,
                    n: actix_web::web::Path<usize>,
                ) -> actix_web::HttpResponse {
                    match minter.mint(n.into_inner()).await {
                        Ok(body) => actix_web::HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body),
                        Err(e) => {
                            actix_web::HttpResponse::InternalServerError().body(e.to_string())
                        }
                    }
                }
                async fn store_profile(
                    minter: actix_web::web::Data<Minter>,
                    request: actix_web::HttpRequest,
                ) -> actix_web::HttpResponse {
                    let user = request
                        .headers()
                        .get(STORE_USER)
                        .and_then(|v| v.to_str().ok());
                    let (status, body) = minter.profile_json(user).await;
                    actix_web::HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status)
                            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
                    )
                    .content_type("application/json")
                    .body(body)
                }
                actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .app_data(actix_web::web::Data::new(minter.clone()))
                        .route(
                            BARE_ROUTE,
                            actix_web::web::get().to(|| async {
                                actix_web::HttpResponse::Ok()
                                    .content_type("application/json")
                                    .body(BARE_BODY)
                            }),
                        )
                        .route(STORE_ROUTE, actix_web::web::get().to(store_profile))
                        .configure(refsys_actix::configure(service.clone()))
                        // Dynamic, so matched by a regex: after the routes being measured.
                        .route(MINT_ROUTE, actix_web::web::post().to(mint))
                })
                .workers(threads)
                .bind(addr)?
                .run()
                .await?;
                Ok(())
            }),
            other => Err(format!("serve: unknown framework `{other}`").into()),
        }
    }

    /// The connections the main thread hands one axum worker (`axum::serve`'s listener).
    struct Handed {
        receive: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
        addr: SocketAddr,
    }

    impl axum::serve::Listener for Handed {
        type Io = tokio::net::TcpStream;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let Some(stream) = self.receive.recv().await else {
                    // The acceptor is gone: serve what is open, take nothing new.
                    std::future::pending::<()>().await;
                    continue;
                };
                let peer = stream.peer_addr();
                // On this worker's runtime, so that its reactor drives the socket.
                if let (Ok(stream), Ok(peer)) = (tokio::net::TcpStream::from_std(stream), peer) {
                    return (stream, peer);
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(self.addr)
        }
    }

    /// The refsys router plus the bench-only [`MINT_ROUTE`].
    fn axum_app(service: ReferralService, minter: Minter) -> axum::Router {
        let mint = |axum::extract::State(minter): axum::extract::State<Minter>,
                    axum::extract::Path(n): axum::extract::Path<usize>| async move {
            let body = minter
                .mint(n)
                .await
                .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok::<_, (axum::http::StatusCode, String)>((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            ))
        };
        let bare = || async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                BARE_BODY,
            )
        };
        let store_profile = |axum::extract::State(minter): axum::extract::State<Minter>,
                             headers: axum::http::HeaderMap| async move {
            let user = headers.get(STORE_USER).and_then(|v| v.to_str().ok());
            let (status, body) = minter.profile_json(user).await;
            (
                axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        };
        refsys_axum::router(service).merge(
            axum::Router::new()
                .route(MINT_ROUTE, axum::routing::post(mint))
                .route(BARE_ROUTE, axum::routing::get(bare))
                .route(STORE_ROUTE, axum::routing::get(store_profile))
                .with_state(minter),
        )
    }

    async fn build(
        store: &str,
        test_phones: usize,
        seed_users: usize,
    ) -> Result<(ReferralService, Minter), BoxError> {
        let keys = JwtKeys::hs256(SECRET)?;
        let policy = bench_policy(test_phones);
        let build = move |users: Arc<dyn UserStore>| {
            let service =
                ReferralService::builder(users.clone(), MemoryOtpStore::new(), NoopSender, keys)
                    .policy(policy)
                    .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled())
                    .build();
            (service, Minter::new(users))
        };
        if store == "memory" {
            let users = MemoryUserStore::new();
            seed(&users, seed_users).await?;
            Ok(build(Arc::new(users)))
        } else if let Some(path) = store.strip_prefix("sqlite:") {
            let users = SqliteUserStore::connect(path).await?;
            users.migrate().await?;
            seed(&users, seed_users).await?;
            Ok(build(Arc::new(users)))
        } else if store.starts_with("postgres://") {
            postgres_users(store, seed_users).await.map(build)
        } else {
            Err(format!("serve: unknown store `{store}`").into())
        }
    }

    /// A PostgreSQL store on `url` (`PgUserStore::connect`), seeded with `n` users.
    #[cfg(feature = "postgres")]
    async fn postgres_users(url: &str, n: usize) -> Result<Arc<dyn UserStore>, BoxError> {
        let users = PgUserStore::connect(url).await?;
        users.migrate().await?;
        seed(&users, n).await?;
        Ok(Arc::new(users))
    }

    #[cfg(not(feature = "postgres"))]
    async fn postgres_users(_store: &str, _n: usize) -> Result<Arc<dyn UserStore>, BoxError> {
        Err("PostgreSQL scenarios need `--features postgres`".into())
    }

    /// `n` users that are not test phones (`+37544…`), straight into the store.
    async fn seed(store: &impl UserStore, n: usize) -> Result<(), BoxError> {
        let all = AllowedRegions::all();
        for i in 0..n {
            let phone = Phone::parse(&format!("+37544{:07}", 1_000_000 + i), &all)?;
            store.find_or_create(&phone, &InviteCode::generate).await?;
        }
        Ok(())
    }

    /// Makes fresh users straight in the store for `POST /__bench/users/{n}`, which answers
    /// their ids as a JSON array: the runner signs access tokens for them, so the
    /// `use_invite_code` load has as many never-activated users as it needs without logging
    /// each one in over HTTP (or holding a test-phone table that large).
    #[derive(Clone)]
    struct Minter {
        users: Arc<dyn UserStore>,
        next: Arc<AtomicUsize>,
    }

    impl Minter {
        /// Phones `+37544 2 000 000` and up: neither test phones nor the seeded users.
        const FIRST_PHONE: usize = 2_000_000;
        /// At most this many users per request, and this many store calls at once.
        const MAX: usize = 1_000_000;
        const PARALLEL: usize = 16;

        fn new(users: Arc<dyn UserStore>) -> Self {
            Self {
                users,
                next: Arc::new(AtomicUsize::new(0)),
            }
        }

        /// The status and JSON body of [`STORE_ROUTE`] for the user id `user`.
        async fn profile_json(&self, user: Option<&str>) -> (u16, String) {
            let Some(id) = user.and_then(|v| v.parse().ok()) else {
                return (
                    400,
                    format!(r#"{{"error":"{STORE_USER} must be a user id"}}"#),
                );
            };
            match self.users.profile(UserId(id)).await {
                // `Profile` is the endpoint's body type: the same JSON as `GET /get_profile/`.
                Ok(Some(profile)) => match serde_json::to_string(&profile) {
                    Ok(body) => (200, body),
                    Err(e) => (
                        500,
                        serde_json::json!({ "error": e.to_string() }).to_string(),
                    ),
                },
                Ok(None) => (404, r#"{"error":"no such user"}"#.to_owned()),
                Err(e) => (
                    503,
                    serde_json::json!({ "error": e.to_string() }).to_string(),
                ),
            }
        }

        async fn mint(&self, n: usize) -> Result<String, BoxError> {
            let n = n.min(Self::MAX);
            let first = self.next.fetch_add(n, Ordering::Relaxed);
            let mut tasks = tokio::task::JoinSet::new();
            for lane in 0..Self::PARALLEL {
                let users = self.users.clone();
                tasks.spawn(async move {
                    let all = AllowedRegions::all();
                    let mut ids = Vec::new();
                    for i in (lane..n).step_by(Self::PARALLEL) {
                        let number = Self::FIRST_PHONE + first + i;
                        let phone = Phone::parse(&format!("+37544{number:07}"), &all)?;
                        let registration =
                            users.find_or_create(&phone, &InviteCode::generate).await?;
                        ids.push(registration.user.id.0);
                    }
                    Ok::<_, BoxError>(ids)
                });
            }
            let mut ids = Vec::with_capacity(n);
            while let Some(lane) = tasks.join_next().await {
                ids.extend(lane??);
            }
            Ok(serde_json::to_string(&ids)?)
        }
    }
}

/// An HTTP/1.1 keep-alive connection.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr, local: Option<IpAddr>) -> Result<Conn, BoxError> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    /// Sends one request; returns the status and the body.
    async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        header: Option<(&str, &str)>,
        body: Option<String>,
    ) -> Result<(u16, Bytes), BoxError> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "127.0.0.1");
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.map(Bytes::from).unwrap_or_default()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A GET, with `auth` as its `Authorization` header if given.
    async fn get(&mut self, path: &str, auth: Option<&str>) -> Result<(u16, Bytes), BoxError> {
        let header = auth.map(|auth| (hyper::header::AUTHORIZATION.as_str(), auth));
        self.call(hyper::Method::GET, path, header, None).await
    }

    /// A GET with one extra header.
    async fn get_with(
        &mut self,
        path: &str,
        name: &str,
        value: &str,
    ) -> Result<(u16, Bytes), BoxError> {
        self.call(hyper::Method::GET, path, Some((name, value)), None)
            .await
    }

    async fn post(
        &mut self,
        path: &str,
        auth: Option<&str>,
        body: serde_json::Value,
    ) -> Result<(u16, Bytes), BoxError> {
        let header = auth.map(|auth| (hyper::header::AUTHORIZATION.as_str(), auth));
        self.call(hyper::Method::POST, path, header, Some(body.to_string()))
            .await
    }

    /// send_code + verify_code for a test phone; returns the access token.
    async fn login(&mut self, phone: &str) -> Result<String, BoxError> {
        let (status, body) = self
            .post(
                "/login/send_code/",
                None,
                serde_json::json!({ "phone": phone }),
            )
            .await?;
        expect_ok("send_code", status, &body)?;
        let (status, body) = self
            .post(
                "/login/verify_code/",
                None,
                serde_json::json!({ "phone": phone, "code": TEST_CODE }),
            )
            .await?;
        expect_ok("verify_code", status, &body)?;
        let login: serde_json::Value = serde_json::from_slice(&body)?;
        login["access"]
            .as_str()
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| "verify_code: no access token".into())
    }
}

fn expect_ok(what: &str, status: u16, body: &[u8]) -> Result<(), BoxError> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!("{what}: {status} {}", String::from_utf8_lossy(body)).into())
    }
}

/// The load runner.
mod runner {
    use super::*;

    /// What one run is told to do.
    #[derive(Clone, Debug)]
    struct Options {
        smoke: bool,
        duration: Duration,
        warmup: Duration,
        rounds: usize,
        connections: usize,
        max_ops: u64,
        seed_users: usize,
        login_pool: usize,
        frameworks: Vec<String>,
        stores: Vec<String>,
        example_server: Option<PathBuf>,
        /// Another build's `load` binary whose bench servers run beside this one's (`--baseline`).
        baseline: Option<PathBuf>,
        pg: PgAdmin,
        pgbench: bool,
        out: PathBuf,
    }

    /// How to reach PostgreSQL as an administrator (psql/pgbench, trust auth).
    #[derive(Clone, Debug)]
    struct PgAdmin {
        host: String,
        port: String,
        user: String,
        db: String,
        /// The servers' `sslmode` (default `disable`: TLS on loopback measures the cipher).
        sslmode: String,
    }

    impl PgAdmin {
        fn psql(&self, sql: &str) -> Result<(), BoxError> {
            let output = Command::new("psql")
                .args([
                    "-h", &self.host, "-p", &self.port, "-U", &self.user, "-d", &self.db,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
                .stdin(Stdio::null())
                .output()?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr).trim()).into())
            }
        }

        fn url(&self, db: &str) -> String {
            format!(
                "postgres://{}@{}:{}/{db}?sslmode={}",
                self.user, self.host, self.port, self.sslmode
            )
        }
    }

    const HELP: &str = "\
usage: load [--smoke] [--duration SECS] [--warmup SECS] [--rounds N] [--connections N]
            [--frameworks axum,actix] [--stores memory,sqlite,postgres]
            [--example-server PATH | --no-example-server] [--no-pgbench]
            [--pg-host H] [--pg-port P] [--pg-user U] [--pg-db D] [--pg-sslmode M]
            [--baseline PATH] [--out FILE]

--baseline PATH: also start PATH (the `load` binary of another build) as a bench server
beside each of this build's, measured in the same rounds; rows `<framework> (baseline)`
and a `this build / baseline` table.";

    fn options(args: &[String]) -> Result<Options, BoxError> {
        let flags = parse_flags(args)?;
        if flags.contains_key("help") {
            return Err(HELP.into());
        }
        let smoke = flags.contains_key("smoke");
        let secs = |name: &str, default: f64| -> Result<Duration, BoxError> {
            let secs = flags.get(name).map_or(Ok(default), |v| v.parse::<f64>())?;
            Ok(Duration::from_secs_f64(secs.clamp(0.05, 120.0)))
        };
        let list = |name: &str, default: &str| -> Vec<String> {
            flags
                .get(name)
                .map_or(default, String::as_str)
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let default_example = PathBuf::from("target/release/refsys-server");
        let example_server = if smoke || flags.contains_key("no-example-server") {
            None
        } else {
            Some(
                flags
                    .get("example-server")
                    .map_or(default_example, PathBuf::from),
            )
        };
        let pg_flag = |name: &str, default: &str| {
            flags
                .get(name)
                .cloned()
                .unwrap_or_else(|| default.to_owned())
        };
        Ok(Options {
            smoke,
            duration: secs("duration", if smoke { 0.3 } else { 5.0 })?,
            warmup: secs("warmup", if smoke { 0.1 } else { 1.0 })?,
            rounds: flags
                .get("rounds")
                .map_or(Ok(if smoke { 1 } else { 4 }), |v| v.parse())?,
            connections: flags
                .get("connections")
                .map_or(Ok(if smoke { 2 } else { 32 }), |v| v.parse())?,
            max_ops: if smoke { 50 } else { 2_000_000 },
            seed_users: if smoke { 100 } else { 10_000 },
            login_pool: if smoke { 400 } else { 60_000 },
            frameworks: list("frameworks", "axum,actix"),
            stores: list(
                "stores",
                if smoke {
                    "memory,sqlite"
                } else {
                    "memory,sqlite,postgres"
                },
            ),
            example_server,
            baseline: flags.get("baseline").map(PathBuf::from),
            pg: PgAdmin {
                host: pg_flag("pg-host", "127.0.0.1"),
                port: pg_flag("pg-port", "5432"),
                user: pg_flag("pg-user", "postgres"),
                db: pg_flag("pg-db", "test"),
                sslmode: pg_flag("pg-sslmode", "disable"),
            },
            pgbench: !smoke && !flags.contains_key("no-pgbench"),
            out: PathBuf::from(pg_flag("out", "target/refsys-bench/results.md")),
        })
    }

    pub(super) fn main(args: &[String]) -> Result<(), BoxError> {
        let options = options(args)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        let started = Instant::now();
        let report = runtime.block_on(run_all(&options))?;
        let markdown = report.markdown(&options, started.elapsed());
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

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Scenario {
        /// A framework-native handler answering `{"status":"ok"}`, no refsys code: the
        /// framework's own ceiling (bench server only).
        Bare,
        /// A framework-native handler that reads the profile straight from the store: what
        /// the profile costs without refsys's HTTP half (bench server only).
        BareStore,
        Health,
        Profile,
        Login,
        Invite,
    }

    impl Scenario {
        fn name(self) -> &'static str {
            match self {
                Scenario::Bare => "GET bare handler (no refsys)",
                Scenario::BareStore => "GET bare handler + store profile read",
                Scenario::Health => "GET /health",
                Scenario::Profile => "GET /get_profile/ (10 invitees)",
                Scenario::Login => "login (send_code + verify_code)",
                Scenario::Invite => "POST /use_invite_code/",
            }
        }
    }

    /// Which server a row measured.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum ServerKind {
        /// `load serve`: the adapter in a bare server.
        Bench,
        /// `refsys-server`, the example binary.
        Example,
    }

    impl ServerKind {
        fn name(&self) -> &'static str {
            match self {
                ServerKind::Bench => "bench",
                ServerKind::Example => "example",
            }
        }
    }

    /// One measured (server, framework, store, scenario).
    #[derive(Clone, Debug)]
    struct Row {
        server: ServerKind,
        framework: String,
        store: String,
        scenario: Scenario,
        ops: u64,
        errors: u64,
        rate: f64,
        p50_ms: f64,
        p99_ms: f64,
        /// VmHWM of the server process after this scenario, MiB.
        peak_rss_mib: Option<f64>,
        /// CPU time (user + system) per op in the measured phase: the server's, the runner's.
        server_cpu_us: Option<f64>,
        runner_cpu_us: Option<f64>,
        failed: Option<String>,
        note: Option<String>,
    }

    impl Row {
        /// An empty row of `target`, for the `/health` scenario.
        fn base(target: &Target) -> Row {
            Row {
                server: target.server.clone(),
                framework: target.framework.clone(),
                store: target.store.clone(),
                scenario: Scenario::Health,
                ops: 0,
                errors: 0,
                rate: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                peak_rss_mib: None,
                server_cpu_us: None,
                runner_cpu_us: None,
                failed: None,
                note: None,
            }
        }
    }

    #[derive(Default)]
    struct Report {
        rows: Vec<Row>,
        pgbench: Vec<PgbenchResult>,
        notes: Vec<String>,
    }

    #[derive(Clone, Debug)]
    struct PgbenchResult {
        framework: String,
        store: String,
        clients: usize,
        /// Statements each client sends before it waits for their answers (1: no pipeline).
        pipeline: usize,
        /// Statements per second (pgbench's tps times `pipeline`).
        rate: f64,
        latency_ms: f64,
    }

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

    struct Target {
        server: ServerKind,
        framework: String,
        store: String,
    }

    /// What marks a baseline server's framework (`--baseline`).
    const BASELINE: &str = " (baseline)";

    /// One target per framework, for `server` on `store`; with `--baseline`, a bench server
    /// of the baseline build after each.
    fn targets(options: &Options, server: ServerKind, store: &str) -> Vec<Target> {
        let baseline = options.baseline.is_some() && server == ServerKind::Bench;
        options
            .frameworks
            .iter()
            .flat_map(|framework| {
                let based = baseline.then(|| format!("{framework}{BASELINE}"));
                std::iter::once(framework.clone()).chain(based)
            })
            .map(|framework| Target {
                server: server.clone(),
                framework,
                store: store.to_owned(),
            })
            .collect()
    }

    /// A running server process; killed on drop.
    struct Server {
        child: std::process::Child,
        addr: SocketAddr,
    }

    impl Server {
        fn peak_rss_mib(&self) -> Option<f64> {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// utime + stime of process `pid` (all its threads), in clock ticks.
    fn cpu_ticks(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start at `) `.
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    fn free_port() -> Result<u16, BoxError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(listener.local_addr()?.port())
    }

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
                let (binary, framework) = match target.framework.strip_suffix(BASELINE) {
                    Some(framework) => (options.baseline.clone().ok_or("no baseline")?, framework),
                    None => (std::env::current_exe()?, target.framework.as_str()),
                };
                let mut command = Command::new(binary);
                command.args(["serve", "--framework", framework, "--store", store_arg]);
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

    /// What the scenarios share: tokens and the next free phone or token.
    struct Ctx {
        scenario: Scenario,
        profile_auth: String,
        profile_user_id: String,
        hub_code: String,
        phones_end: usize,
        next_phone: AtomicUsize,
        collected: Mutex<Vec<String>>,
        invite_tokens: Vec<String>,
        next_token: AtomicUsize,
        budget: AtomicU64,
    }

    /// The seeded state: the profile owner with 10 invitees, and the hub.
    struct Seeded {
        profile_auth: String,
        hub_code: String,
        profile_user_id: i64,
    }

    /// Logs in the profile owner, its 10 invitees and the hub over HTTP, each from its own
    /// loopback address (127.0.0.x) so per-IP limits of a server that has them do not bite.
    async fn seed(addr: SocketAddr) -> Result<Seeded, BoxError> {
        let mut tokens = Vec::new();
        for i in 0..LOGIN_POOL_START {
            let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(2 + i)?));
            let mut conn = Conn::open(addr, Some(local)).await?;
            tokens.push(conn.login(&test_phone(i)).await?);
        }
        let mut conn = Conn::open(addr, None).await?;
        let profile = |body: &[u8]| -> Result<serde_json::Value, BoxError> {
            Ok(serde_json::from_slice(body)?)
        };
        let (status, body) = conn
            .get("/get_profile/", Some(&tokens[PROFILE_OWNER]))
            .await?;
        expect_ok("get_profile", status, &body)?;
        let owner_code = profile(&body)?["own_invite_code"]
            .as_str()
            .ok_or("no own_invite_code")?
            .to_owned();
        for token in &tokens[1..=INVITEES] {
            let (status, body) = conn
                .post(
                    "/use_invite_code/",
                    Some(token),
                    serde_json::json!({ "invite_code": owner_code }),
                )
                .await?;
            expect_ok("use_invite_code", status, &body)?;
        }
        let (status, body) = conn
            .get("/get_profile/", Some(&tokens[PROFILE_OWNER]))
            .await?;
        expect_ok("get_profile", status, &body)?;
        let invited = profile(&body)?["invited_users"]
            .as_array()
            .map_or(0, Vec::len);
        if invited != INVITEES {
            return Err(format!("seeded profile has {invited} invitees, not {INVITEES}").into());
        }
        let (status, body) = conn.get("/get_profile/", Some(&tokens[HUB])).await?;
        expect_ok("get_profile", status, &body)?;
        let hub_code = profile(&body)?["own_invite_code"]
            .as_str()
            .ok_or("no own_invite_code")?
            .to_owned();
        // The owner's id, from the token's `sub` (the payload is base64url JSON).
        let profile_user_id = user_id_of(&tokens[PROFILE_OWNER]).ok_or("bad token")?;
        Ok(Seeded {
            profile_auth: tokens[PROFILE_OWNER].clone(),
            hub_code,
            profile_user_id,
        })
    }

    /// The user id of a `Bearer <access token>`, checked with the servers' secret.
    fn user_id_of(auth: &str) -> Option<i64> {
        let keys = JwtKeys::hs256(SECRET).ok()?;
        let now =
            Timestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs());
        let claims = keys.decode(auth.strip_prefix("Bearer ")?, TokenKind::Access, now)?;
        Some(claims.user_id()?.0)
    }

    /// `Bearer` access tokens for the users `ids`, signed with the servers' secret and
    /// carrying the claims `ReferralService` puts in its own (valid for an hour).
    fn access_tokens(ids: &[i64]) -> Result<Vec<String>, BoxError> {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        ids.iter()
            .map(|id| {
                let claims = Claims {
                    sub: id.to_string(),
                    exp: now + 3600,
                    iat: now,
                    nbf: now,
                    jti: TokenId::random().to_string(),
                    token_type: TokenKind::Access,
                    fam: FamilyId::random().to_string(),
                };
                Ok(format!(
                    "Bearer {}",
                    jsonwebtoken::encode(&header, &claims, &key)?
                ))
            })
            .collect()
    }

    /// Asks the bench server for `n` fresh users and signs an access token for each.
    async fn fresh_users(addr: SocketAddr, n: usize) -> Result<Vec<String>, BoxError> {
        let mut conn = Conn::open(addr, None).await?;
        let path = MINT_ROUTE.replace("{n}", &n.to_string());
        let (status, body) = conn.call(hyper::Method::POST, &path, None, None).await?;
        expect_ok("minting users", status, &body)?;
        access_tokens(&serde_json::from_slice::<Vec<i64>>(&body)?)
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
        for server in live {
            let pg_db = server.pg_db.clone();
            drop(server);
            drop_database(options, pg_db.as_deref(), report);
        }
    }

    /// A started and seeded server, with what its scenarios carry from one to the next.
    struct Live<'a> {
        target: &'a Target,
        process: Server,
        pg_db: Option<String>,
        seeded: Seeded,
        /// Users who have not applied an invite code yet (from logins, then minted).
        tokens: Vec<String>,
        login_rate: Option<f64>,
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
            target.framework.replace(BASELINE, "_baseline")
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
                    .psql(&format!("CREATE DATABASE {db}"))
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

    fn drop_database(options: &Options, pg_db: Option<&str>, report: &mut Report) {
        if let Some(db) = pg_db
            && let Err(e) = options
                .pg
                .psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        {
            report.notes.push(format!("could not drop {db}: {e}"));
        }
    }

    /// What one server did in one scenario, summed over the rounds.
    #[derive(Default)]
    struct Tally {
        outcome: Outcome,
        server_ticks: Option<u64>,
        runner_ticks: Option<u64>,
        failed: Option<String>,
    }

    impl Tally {
        fn add(&mut self, outcome: Result<Outcome, BoxError>, server: u64, runner: u64) {
            match outcome {
                Ok(mut outcome) => {
                    let total = &mut self.outcome;
                    total.ops += outcome.ops;
                    total.errors += outcome.errors;
                    total.elapsed += outcome.elapsed;
                    total.latencies_us.append(&mut outcome.latencies_us);
                    total.first_error = total.first_error.take().or(outcome.first_error);
                    total.exhausted |= outcome.exhausted;
                    self.server_ticks = Some(self.server_ticks.unwrap_or(0) + server);
                    self.runner_ticks = Some(self.runner_ticks.unwrap_or(0) + runner);
                }
                Err(e) => self.failed = Some(e.to_string()),
            }
        }
    }

    async fn measure_group(
        options: &Options,
        live: &mut [Live<'_>],
        tmp: &Path,
        report: &mut Report,
    ) -> Result<(), BoxError> {
        let Some(first) = live.first() else {
            return Ok(());
        };
        let scenarios: &[Scenario] = match first.target.server {
            ServerKind::Bench => &[
                Scenario::Bare,
                Scenario::BareStore,
                Scenario::Health,
                Scenario::Profile,
                Scenario::Login,
                Scenario::Invite,
            ],
            // The example server keeps its per-IP limits on (10 send_code a minute): no login
            // load until it has a knob for them.
            ServerKind::Example => &[Scenario::Health, Scenario::Profile],
        };
        let rounds = options.rounds.max(1);
        let slice = options.duration.div_f64(rounds as f64);
        // The bare handler, `/health` and the profile read nothing but the seeded state, so
        // they share rounds too: their ratios are as steady as actix / axum.
        let reads = scenarios
            .iter()
            .take_while(|s| {
                matches!(
                    s,
                    Scenario::Bare | Scenario::BareStore | Scenario::Health | Scenario::Profile
                )
            })
            .count();
        let (reads, writes) = scenarios.split_at(reads);
        let groups: Vec<&[Scenario]> = std::iter::once(reads)
            .filter(|g| !g.is_empty())
            .chain(writes.chunks(1))
            .collect();
        for group in groups {
            // contexts[server][scenario], warmed up.
            let mut contexts: Vec<Vec<Arc<Ctx>>> = Vec::new();
            for server in live.iter_mut() {
                let mut mine = Vec::new();
                for &scenario in group {
                    mine.push(prepare(options, server, scenario).await?);
                }
                contexts.push(mine);
            }
            let mut tallies: Vec<Vec<Tally>> = contexts
                .iter()
                .map(|c| c.iter().map(|_| Tally::default()).collect())
                .collect();
            for round in 0..rounds {
                // Alternate which server and which scenario go first.
                let mut servers: Vec<usize> = (0..live.len()).collect();
                let mut steps: Vec<usize> = (0..group.len()).collect();
                if round % 2 == 1 {
                    servers.reverse();
                    steps.reverse();
                }
                for &i in &servers {
                    for &j in &steps {
                        let (server, ctx) = (&live[i], &contexts[i][j]);
                        ctx.budget.store(options.max_ops, Ordering::Relaxed);
                        let pid = server.process.child.id();
                        let before = (cpu_ticks(pid), cpu_ticks(std::process::id()));
                        let outcome = phase(server.process.addr, options, ctx, slice, true).await;
                        let after = (cpu_ticks(pid), cpu_ticks(std::process::id()));
                        let delta = |a: Option<u64>, b: Option<u64>| b?.checked_sub(a?);
                        tallies[i][j].add(
                            outcome,
                            delta(before.0, after.0).unwrap_or(0),
                            delta(before.1, after.1).unwrap_or(0),
                        );
                    }
                }
            }
            for (j, &scenario) in group.iter().enumerate() {
                for (i, server) in live.iter_mut().enumerate() {
                    let tally = std::mem::take(&mut tallies[i][j]);
                    let row = tally.into_row(server, scenario);
                    eprintln!(
                        "load:   {:<6} {:<34} {:>9.0}/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  rss {:.1} MiB",
                        server.target.framework,
                        scenario.name(),
                        row.rate,
                        row.p50_ms,
                        row.p99_ms,
                        row.errors,
                        row.peak_rss_mib.unwrap_or(0.0)
                    );
                    if scenario == Scenario::Login {
                        server.login_rate = (row.ops > 0).then_some(row.rate);
                        server.tokens = contexts[i][j]
                            .collected
                            .lock()
                            .map(|mut t| std::mem::take(&mut *t))
                            .unwrap_or_default();
                    }
                    report.rows.push(row);
                }
            }
            if group.contains(&Scenario::Profile) && options.pgbench {
                for server in live.iter() {
                    if let (ServerKind::Bench, Some(pg_db)) = (&server.target.server, &server.pg_db)
                    {
                        pgbench_ceiling(options, server, pg_db, tmp, report);
                    }
                }
            }
        }
        Ok(())
    }

    /// The context of `scenario` on `server`, warmed up (unrecorded, with at most a fifth of
    /// a phone or token pool); `use_invite_code` first gets enough fresh users.
    async fn prepare(
        options: &Options,
        server: &mut Live<'_>,
        scenario: Scenario,
    ) -> Result<Arc<Ctx>, BoxError> {
        if scenario == Scenario::Invite && server.target.server == ServerKind::Bench {
            // Every op needs a user who has not applied a code yet. Logins made some; top
            // up to what the scenario can use: `use_invite_code` has run at up to 4x the
            // login rate, plus a quarter for luck.
            let window = (options.warmup + options.duration).as_secs_f64();
            let wanted = server
                .login_rate
                .map_or(10_000.0, |rate| 4.0 * rate * window * 1.25);
            let wanted = (wanted as usize).clamp(200, 1_000_000);
            if let Some(missing) = wanted.checked_sub(server.tokens.len()) {
                let minted = fresh_users(server.process.addr, missing).await?;
                server.tokens.extend(minted);
            }
        }
        let ctx = Arc::new(Ctx {
            scenario,
            profile_auth: server.seeded.profile_auth.clone(),
            profile_user_id: server.seeded.profile_user_id.to_string(),
            hub_code: server.seeded.hub_code.clone(),
            phones_end: LOGIN_POOL_START + options.login_pool,
            next_phone: AtomicUsize::new(LOGIN_POOL_START),
            collected: Mutex::new(Vec::new()),
            invite_tokens: std::mem::take(&mut server.tokens),
            next_token: AtomicUsize::new(0),
            budget: AtomicU64::new(0),
        });
        let warmup_budget = match scenario {
            Scenario::Login => options.login_pool as u64 / 5,
            Scenario::Invite => ctx.invite_tokens.len() as u64 / 5,
            Scenario::Bare | Scenario::BareStore | Scenario::Health | Scenario::Profile => {
                options.max_ops
            }
        };
        ctx.budget
            .store(warmup_budget.min(options.max_ops), Ordering::Relaxed);
        let _ = phase(server.process.addr, options, &ctx, options.warmup, false).await;
        Ok(ctx)
    }

    impl Tally {
        fn into_row(self, server: &Live<'_>, scenario: Scenario) -> Row {
            let mut row = Row {
                scenario,
                peak_rss_mib: server.process.peak_rss_mib(),
                ..Row::base(server.target)
            };
            if let Some(failed) = self.failed {
                row.failed = Some(failed);
                return row;
            }
            let mut outcome = self.outcome;
            // Each round's latencies are sorted; all of them together are not.
            outcome.latencies_us.sort_unstable();
            row.ops = outcome.ops;
            row.errors = outcome.errors;
            row.rate = outcome.ops as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
            row.p50_ms = outcome.percentile_ms(50.0);
            row.p99_ms = outcome.percentile_ms(99.0);
            // Clock ticks are 1/100 s on Linux.
            let per_op = |ticks: Option<u64>| {
                (outcome.ops > 0).then(|| ticks.unwrap_or(0) as f64 * 10_000.0 / outcome.ops as f64)
            };
            row.server_cpu_us = per_op(self.server_ticks);
            row.runner_cpu_us = per_op(self.runner_ticks);
            if let Some(error) = outcome.first_error {
                row.note = Some(format!("first error: {error}"));
            } else if outcome.exhausted {
                row.note = Some(format!(
                    "all {} users used in {:.1} s",
                    outcome.ops,
                    outcome.elapsed.as_secs_f64()
                ));
            }
            row
        }
    }

    /// pgbench with the profile's SQL on `server`'s database, with 10 clients (the server's
    /// connection budget) and with as many as the HTTP load has connections: the ceiling.
    /// Then, for reference, 10 clients that pipeline [`PIPELINE`] statements at a time, as
    /// `PgUserStore` does under load.
    fn pgbench_ceiling(
        options: &Options,
        server: &Live<'_>,
        pg_db: &str,
        tmp: &Path,
        report: &mut Report,
    ) {
        for (clients, pipeline) in [(10, 1), (options.connections, 1), (10, PIPELINE)] {
            let user = server.seeded.profile_user_id;
            match pgbench(options, pg_db, user, clients, pipeline, tmp) {
                Ok((tps, latency_ms)) => {
                    let rate = tps * pipeline as f64;
                    eprintln!(
                        "load:   pgbench -c {clients}, pipeline {pipeline}: {rate:.0} statements/s, \
                         {latency_ms:.2} ms"
                    );
                    report.pgbench.push(PgbenchResult {
                        framework: server.target.framework.clone(),
                        store: server.target.store.clone(),
                        clients,
                        pipeline,
                        rate,
                        latency_ms,
                    });
                }
                Err(e) => report.notes.push(format!("pgbench failed: {e}")),
            }
        }
    }

    /// The exact SQL of `PgUserStore::profile`, for pgbench.
    const PROFILE_SQL: &str = "SELECT u.phone, u.invite_code, inviter.invite_code, \
        ARRAY(SELECT g.phone FROM users g WHERE g.invited_by = u.id ORDER BY g.activation_seq) \
        FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by WHERE u.id = :uid;";

    /// How deep the reference pgbench run pipelines: `PgUserStore`'s threshold for opening
    /// another connection.
    const PIPELINE: usize = 8;

    fn pgbench(
        options: &Options,
        db: &str,
        user_id: i64,
        clients: usize,
        pipeline: usize,
        tmp: &Path,
    ) -> Result<(f64, f64), BoxError> {
        let script = tmp.join("profile.sql");
        let statements = if pipeline > 1 {
            format!(
                "\\startpipeline\n{}\\endpipeline\n",
                format!("{PROFILE_SQL}\n").repeat(pipeline)
            )
        } else {
            format!("{PROFILE_SQL}\n")
        };
        std::fs::write(&script, format!("\\set uid {user_id}\n{statements}"))?;
        let secs = options.duration.as_secs().max(1).to_string();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pg = &options.pg;
        let output = Command::new("pgbench")
            .args(["-h", &pg.host, "-p", &pg.port, "-U", &pg.user])
            .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
            .args(["-j", &threads.min(clients).to_string(), "-T", &secs, "-f"])
            .arg(&script)
            .arg(db)
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("{}{}", text, String::from_utf8_lossy(&output.stderr)).into());
        }
        let number_after = |prefix: &str| -> Option<f64> {
            let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
            line.split('=')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let tps = number_after("tps").ok_or("pgbench printed no tps")?;
        let latency = number_after("latency average").unwrap_or(0.0);
        Ok((tps, latency))
    }

    #[derive(Default)]
    struct Outcome {
        ops: u64,
        errors: u64,
        elapsed: Duration,
        latencies_us: Vec<u32>,
        first_error: Option<String>,
        exhausted: bool,
    }

    impl Outcome {
        fn percentile_ms(&self, p: f64) -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
            f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)]) / 1000.0
        }
    }

    enum Step {
        Done,
        Exhausted,
    }

    /// One operation of the scenario on `conn`.
    async fn operation(
        conn: &mut Conn,
        ctx: &Ctx,
        mine: &mut Vec<String>,
    ) -> Result<Step, BoxError> {
        match ctx.scenario {
            Scenario::Bare => {
                let (status, body) = conn.get(BARE_ROUTE, None).await?;
                expect_ok("bare handler", status, &body)?;
            }
            Scenario::BareStore => {
                let (status, body) = conn
                    .get_with(STORE_ROUTE, STORE_USER, &ctx.profile_user_id)
                    .await?;
                expect_ok("bare store handler", status, &body)?;
            }
            Scenario::Health => {
                let (status, body) = conn.get("/health", None).await?;
                expect_ok("health", status, &body)?;
            }
            Scenario::Profile => {
                let (status, body) = conn.get("/get_profile/", Some(&ctx.profile_auth)).await?;
                expect_ok("get_profile", status, &body)?;
            }
            Scenario::Login => {
                let i = ctx.next_phone.fetch_add(1, Ordering::Relaxed);
                if i >= ctx.phones_end {
                    return Ok(Step::Exhausted);
                }
                mine.push(conn.login(&test_phone(i)).await?);
            }
            Scenario::Invite => {
                let i = ctx.next_token.fetch_add(1, Ordering::Relaxed);
                let Some(token) = ctx.invite_tokens.get(i) else {
                    return Ok(Step::Exhausted);
                };
                let (status, body) = conn
                    .post(
                        "/use_invite_code/",
                        Some(token),
                        serde_json::json!({ "invite_code": ctx.hub_code }),
                    )
                    .await?;
                expect_ok("use_invite_code", status, &body)?;
            }
        }
        Ok(Step::Done)
    }

    /// Runs the scenario on `options.connections` connections for `duration` (or until the
    /// op budget or the phone/token pool runs out).
    async fn phase(
        addr: SocketAddr,
        options: &Options,
        ctx: &Arc<Ctx>,
        duration: Duration,
        record: bool,
    ) -> Result<Outcome, BoxError> {
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = Vec::new();
        for _ in 0..options.connections {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut ops, mut errors) = (0u64, 0u64);
                let mut first_error = None;
                let mut exhausted = false;
                let mut mine = Vec::new();
                let mut conn = Conn::open(addr, None).await?;
                let mut reconnects = 0;
                while Instant::now() < deadline {
                    if ctx
                        .budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                        .is_err()
                    {
                        break;
                    }
                    let t = Instant::now();
                    match operation(&mut conn, &ctx, &mut mine).await {
                        Ok(Step::Done) => {
                            ops += 1;
                            if record {
                                latencies.push(
                                    u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX),
                                );
                            }
                        }
                        Ok(Step::Exhausted) => {
                            exhausted = true;
                            break;
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                            if conn.sender.is_closed() {
                                reconnects += 1;
                                if reconnects > 10 {
                                    break;
                                }
                                conn = Conn::open(addr, None).await?;
                            }
                        }
                    }
                }
                if let Ok(mut collected) = ctx.collected.lock() {
                    collected.append(&mut mine);
                }
                Ok::<_, BoxError>((
                    ops,
                    errors,
                    latencies,
                    first_error,
                    exhausted,
                    Instant::now(),
                ))
            }));
        }
        let mut outcome = Outcome {
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
            first_error: None,
            exhausted: false,
        };
        let mut last_end = started;
        for task in tasks {
            let (ops, errors, mut latencies, first_error, exhausted, ended) = task.await??;
            outcome.ops += ops;
            outcome.errors += errors;
            outcome.latencies_us.append(&mut latencies);
            if outcome.first_error.is_none() {
                outcome.first_error = first_error;
            }
            outcome.exhausted |= exhausted;
            last_end = last_end.max(ended);
        }
        outcome.elapsed = last_end - started;
        outcome.latencies_us.sort_unstable();
        Ok(outcome)
    }

    /// `text` made safe for one markdown table cell.
    fn cell(text: &str) -> String {
        text.replace('|', "/").replace('\n', " ")
    }

    impl Report {
        fn find(
            &self,
            server: &ServerKind,
            framework: &str,
            store: &str,
            scenario: Scenario,
        ) -> Option<&Row> {
            self.rows.iter().find(|r| {
                r.server == *server
                    && r.framework == framework
                    && r.store == store
                    && r.scenario == scenario
                    && r.failed.is_none()
            })
        }

        fn markdown(&self, options: &Options, took: Duration) -> String {
            let mut md = String::new();
            let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
            let _ = writeln!(
                md,
                "Run: {}{} connections, {:.1} s warm-up + {:.1} s measured per scenario and server, \
                 in {} rounds that alternate the frameworks, {cpus} CPUs \
                 (load generator, server and database share them), took {:.0} s.\n",
                if options.smoke { "**smoke**, " } else { "" },
                options.connections,
                options.warmup.as_secs_f64(),
                options.duration.as_secs_f64(),
                options.rounds.max(1),
                took.as_secs_f64()
            );
            md.push_str(
                "| server | framework | store | scenario | ops/s | p50 ms | p99 ms | errors | vs /health | actix / axum | peak RSS MiB | server CPU µs/op | runner CPU µs/op |\n\
                 | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            );
            for row in &self.rows {
                if let Some(why) = &row.failed {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | failed: {} | | | | | | | | |",
                        row.server.name(),
                        row.framework,
                        row.store,
                        row.scenario.name(),
                        cell(why)
                    );
                    continue;
                }
                let health = self
                    .find(&row.server, &row.framework, &row.store, Scenario::Health)
                    .filter(|h| h.rate > 0.0);
                let vs_health = match (row.scenario, health) {
                    (Scenario::Health, _) | (_, None) => String::new(),
                    (_, Some(h)) => format!("{:.0} %", 100.0 * row.rate / h.rate),
                };
                let actix_vs_axum = if row.framework == "actix" {
                    self.find(&row.server, "axum", &row.store, row.scenario)
                        .filter(|a| a.rate > 0.0)
                        .map_or(String::new(), |a| format!("{:.2}", row.rate / a.rate))
                } else {
                    String::new()
                };
                let note = row
                    .note
                    .as_deref()
                    .map_or(String::new(), |n| format!(" ({})", cell(n)));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {}{} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                    row.server.name(),
                    row.framework,
                    row.store,
                    row.scenario.name(),
                    note,
                    row.rate,
                    row.p50_ms,
                    row.p99_ms,
                    row.errors,
                    vs_health,
                    actix_vs_axum,
                    row.peak_rss_mib
                        .map_or(String::new(), |m| format!("{m:.1}")),
                    row.server_cpu_us
                        .map_or(String::new(), |c| format!("{c:.0}")),
                    row.runner_cpu_us
                        .map_or(String::new(), |c| format!("{c:.0}"))
                );
            }
            if !self.pgbench.is_empty() {
                md.push_str(
                    "\nPostgreSQL ceiling: pgbench running the exact profile SQL (`-M prepared`) \
                     against the same database and user:\n\n\
                     | database of | store | pgbench clients | pipeline depth | statements/s | latency ms |\n\
                     | --- | --- | ---: | ---: | ---: | ---: |\n",
                );
                for p in &self.pgbench {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {:.0} | {:.2} |",
                        p.framework, p.store, p.clients, p.pipeline, p.rate, p.latency_ms
                    );
                }
                md.push_str(
                    "\nThe ceiling is the best run without a pipeline; pipelined pgbench is a \
                     reference for what PostgreSQL does with pipelined reads (latency is per \
                     pipeline).\n",
                );
            }
            self.baseline_table(&mut md);
            md.push_str("\nTargets:\n\n");
            for line in self.targets(options.seed_users) {
                let _ = writeln!(md, "- {line}");
            }
            for note in &self.notes {
                let _ = writeln!(md, "- note: {note}");
            }
            md
        }

        /// This build's rows beside the baseline's from the same rounds (`--baseline`).
        fn baseline_table(&self, md: &mut String) {
            let mut rows = self.rows.iter().filter_map(|old| {
                let framework = old.framework.strip_suffix(BASELINE)?;
                let new = self.find(&old.server, framework, &old.store, old.scenario)?;
                (old.failed.is_none() && old.rate > 0.0).then_some((new, old))
            });
            let Some(first) = rows.next() else { return };
            md.push_str(
                "\nThis build beside the baseline (`--baseline`), same rounds:\n\n\
                 | framework | store | scenario | ops/s | baseline ops/s | ratio | server CPU µs/op | baseline µs/op |\n\
                 | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
            );
            for (new, old) in std::iter::once(first).chain(rows) {
                let cpu = |row: &Row| {
                    row.server_cpu_us
                        .map_or(String::new(), |c| format!("{c:.0}"))
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {} | {} |",
                    new.framework,
                    new.store,
                    new.scenario.name(),
                    new.rate,
                    old.rate,
                    new.rate / old.rate,
                    cpu(new),
                    cpu(old)
                );
            }
        }

        fn targets(&self, seed_users: usize) -> Vec<String> {
            let mark = |ok: bool| if ok { "met" } else { "**missed**" };
            let mut lines = Vec::new();
            let bench = ServerKind::Bench;
            for framework in ["axum", "actix"] {
                if let (Some(p), Some(h)) = (
                    self.find(&bench, framework, "memory", Scenario::Profile),
                    self.find(&bench, framework, "memory", Scenario::Health),
                ) {
                    let ratio = p.rate / h.rate;
                    lines.push(format!(
                        "{} — {framework}: profile on memory = {:.0} % of /health (target ≥ 70 %)",
                        mark(ratio >= 0.70),
                        100.0 * ratio
                    ));
                }
                {
                    let store = "postgres";
                    let of_this = |p: &&PgbenchResult| p.framework == framework && p.store == store;
                    let ceiling = self
                        .pgbench
                        .iter()
                        .filter(of_this)
                        .filter(|p| p.pipeline == 1)
                        .map(|p| p.rate)
                        .fold(0.0, f64::max);
                    let pipelined = self
                        .pgbench
                        .iter()
                        .filter(of_this)
                        .filter(|p| p.pipeline > 1)
                        .map(|p| p.rate)
                        .fold(0.0, f64::max);
                    if let Some(p) = self.find(&bench, framework, store, Scenario::Profile)
                        && ceiling > 0.0
                    {
                        let ratio = p.rate / ceiling;
                        lines.push(format!(
                            "{} — {framework}: profile on {store} = {:.0} % of the pgbench ceiling \
                             ({:.0} of {:.0}/s; target ≥ 60 %)",
                            mark(ratio >= 0.60),
                            100.0 * ratio,
                            p.rate,
                            ceiling
                        ));
                        if let Some(bare) = self.find(&bench, framework, store, Scenario::BareStore)
                        {
                            lines.push(format!(
                                "for comparison — {framework}: a bare handler reading the same \
                                 profile from the store = {:.0} % of the pgbench ceiling \
                                 ({:.0}/s; the endpoint = {:.0} % of it)",
                                100.0 * bare.rate / ceiling,
                                bare.rate,
                                100.0 * p.rate / bare.rate.max(1e-9)
                            ));
                        }
                        if pipelined > 0.0 {
                            lines.push(format!(
                                "for comparison — {framework}: profile on {store} = {:.0} % of \
                                 pipelined pgbench ({PIPELINE} statements deep, {pipelined:.0} \
                                 statements/s)",
                                100.0 * p.rate / pipelined
                            ));
                        }
                    }
                }
                if let Some(p) = self.find(&bench, framework, "memory", Scenario::Profile)
                    && let Some(rss) = p.peak_rss_mib
                {
                    lines.push(format!(
                            "{} — {framework}: peak RSS with the memory store, {seed_users} seeded users, after \
                             profile load = {rss:.1} MiB (target ≤ 50 MiB)",
                            mark(rss <= 50.0)
                        ));
                }
            }
            let mut worst: Option<(f64, String)> = None;
            let mut pairs = 0;
            for row in self.rows.iter().filter(|r| {
                r.framework == "actix"
                    && r.failed.is_none()
                    && !matches!(r.scenario, Scenario::Bare | Scenario::BareStore)
            }) {
                if let Some(axum) = self.find(&row.server, "axum", &row.store, row.scenario)
                    && axum.rate > 0.0
                    && row.rate > 0.0
                {
                    pairs += 1;
                    let ratio = row.rate / axum.rate;
                    let off = (ratio.max(1.0 / ratio)) - 1.0;
                    if worst.as_ref().is_none_or(|(w, _)| off > *w) {
                        worst = Some((
                            off,
                            format!(
                                "{} {} {}: actix/axum = {ratio:.2}",
                                row.server.name(),
                                row.store,
                                row.scenario.name()
                            ),
                        ));
                    }
                }
            }
            if let Some((off, which)) = worst {
                lines.push(format!(
                    "{} — actix vs axum within 10 % on all {pairs} scenarios; the widest gap: {which}",
                    mark(off <= 0.10)
                ));
            }
            // The frameworks' own difference, for comparison: no refsys code in it.
            for actix in self
                .rows
                .iter()
                .filter(|r| r.framework == "actix" && r.scenario == Scenario::Bare)
            {
                if let Some(axum) = self.find(&actix.server, "axum", &actix.store, Scenario::Bare)
                    && axum.rate > 0.0
                {
                    lines.push(format!(
                        "for comparison — bare framework handlers ({} store's servers): actix/axum = {:.2}",
                        actix.store,
                        actix.rate / axum.rate
                    ));
                }
            }
            lines
        }
    }
}
