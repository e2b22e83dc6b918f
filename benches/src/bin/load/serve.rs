//! The bench server, `load serve`: the refsys axum router or actix configuration over a
//! memory, SQLite or PostgreSQL user store (memory OTP store, client rate limits off, no
//! request logging), plus the bench-only routes of `protocol`: the bare handlers and the
//! user [`Minter`]. The runner starts one per framework as a child process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use refsys_benches::{NoopSender, bench_policy};
use refsys_core::event::EventStatus;
#[cfg(feature = "postgres")]
use refsys_core::postgres::PgUserStore;
use refsys_core::sqlite::SqliteUserStore;
use refsys_core::{
    AllowedRegions, ClientLimits, Event, EventDelivery, EventHandler, HandlerError, InviteCode,
    JwtKeys, MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore, Phone, ReferralService, UserId,
    UserStore,
};

use crate::BoxError;
use crate::options::{Framework, ServeArgs};
use crate::protocol::{
    BARE_BODY, BARE_ROUTE, EVENTS_ROUTE, MINT_ROUTE, SECRET, STORE_ROUTE, STORE_USER,
};

/// Builds the store and serves on 127.0.0.1:`--port` until killed.
pub(crate) fn main(args: &ServeArgs) -> Result<(), BoxError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    match args.framework {
        Framework::Axum => serve_axum(args, threads, addr),
        Framework::Actix => serve_actix(args, threads, addr),
    }
}

/// One current-thread runtime per core, like actix-web's workers, so that the actix/axum
/// pairs compare the framework crates rather than two schedulers. As actix does, the main
/// thread accepts the connections and hands them to the workers in turn; it built and seeded
/// the store on its runtime, which lives on.
fn serve_axum(args: &ServeArgs, threads: usize, addr: SocketAddr) -> Result<(), BoxError> {
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (service, minter) = setup.block_on(build(args))?;
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

/// actix-web with `threads` workers.
fn serve_actix(args: &ServeArgs, threads: usize, addr: SocketAddr) -> Result<(), BoxError> {
    actix_web::rt::System::new().block_on(async move {
        let (service, minter) = build(args).await?;
        async fn mint(
            minter: actix_web::web::Data<Minter>,
            n: actix_web::web::Path<usize>,
        ) -> actix_web::HttpResponse {
            match minter.mint(n.into_inner()).await {
                Ok(body) => actix_web::HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body),
                Err(e) => actix_web::HttpResponse::InternalServerError().body(e.to_string()),
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
        async fn events(minter: actix_web::web::Data<Minter>) -> actix_web::HttpResponse {
            actix_web::HttpResponse::Ok()
                .content_type("application/json")
                .body(minter.events_json().await)
        }
        actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(minter.clone()))
                .route(EVENTS_ROUTE, actix_web::web::get().to(events))
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
    })
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
    let events = |axum::extract::State(minter): axum::extract::State<Minter>| async move {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            minter.events_json().await,
        )
    };
    refsys_axum::router(service).merge(
        axum::Router::new()
            .route(MINT_ROUTE, axum::routing::post(mint))
            .route(EVENTS_ROUTE, axum::routing::get(events))
            .route(BARE_ROUTE, axum::routing::get(bare))
            .route(STORE_ROUTE, axum::routing::get(store_profile))
            .with_state(minter),
    )
}

/// Counts the events it takes (`--events`).
struct CountEvents(Arc<AtomicU64>);

#[async_trait::async_trait]
impl EventHandler for CountEvents {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn build(args: &ServeArgs) -> Result<(ReferralService, Minter), BoxError> {
    let (store, seed_users) = (args.store.as_str(), args.seed_users);
    let keys = JwtKeys::hs256(SECRET)?;
    let policy = bench_policy(args.test_phones);
    let events = args.events.then(|| Arc::new(AtomicU64::new(0)));
    let build = move |users: Arc<dyn UserStore>| {
        let mut builder =
            ReferralService::builder(users.clone(), MemoryOtpStore::new(), NoopSender, keys)
                .policy(policy)
                .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled());
        if let Some(count) = &events {
            builder =
                builder.event_handler(CountEvents(Arc::clone(count)), EventDelivery::default());
        }
        (builder.build(), Minter::new(users, events))
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
        store
            .find_or_create(
                &phone,
                &InviteCode::generate,
                refsys_core::Change::unrecorded(refsys_core::Timestamp::from_unix(0)),
            )
            .await?;
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
    /// Events delivered so far, with `--events`.
    delivered: Option<Arc<AtomicU64>>,
}

impl Minter {
    /// Phones `+37544 2 000 000` and up: neither test phones nor the seeded users.
    const FIRST_PHONE: usize = 2_000_000;
    /// At most this many users per request, and this many store calls at once.
    const MAX: usize = 1_000_000;
    const PARALLEL: usize = 16;

    fn new(users: Arc<dyn UserStore>, delivered: Option<Arc<AtomicU64>>) -> Self {
        Self {
            users,
            next: Arc::new(AtomicUsize::new(0)),
            delivered,
        }
    }

    /// The body of [`EVENTS_ROUTE`]: events delivered, and pending in the store (`null`
    /// without `--events`, or when the store does not answer).
    async fn events_json(&self) -> String {
        let delivered = self.delivered.as_ref().map(|n| n.load(Ordering::Relaxed));
        let pending = match delivered {
            Some(_) => self
                .users
                .events(EventStatus::Pending, 10_000_000)
                .await
                .ok()
                .map(|events| events.len()),
            None => None,
        };
        serde_json::json!({ "delivered": delivered, "pending": pending }).to_string()
    }

    /// The status and JSON body of [`STORE_ROUTE`] for the user id `user`.
    async fn profile_json(&self, user: Option<&str>) -> (u16, String) {
        let Some(id) = user.and_then(|v| v.parse().ok()) else {
            return (
                400,
                format!(r#"{{"error":"{STORE_USER} must be a user id"}}"#),
            );
        };
        match self
            .users
            .profile(UserId(id), refsys_core::PROFILE_INVITEES_LIMIT)
            .await
        {
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
                    let registration = users
                        .find_or_create(
                            &phone,
                            &InviteCode::generate,
                            refsys_core::Change::unrecorded(refsys_core::Timestamp::from_unix(0)),
                        )
                        .await?;
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
