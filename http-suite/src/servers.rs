//! Starting a server of each framework, with the refsys routes and a user's `/me` handler.

use std::net::SocketAddr;

use refsys_core::ReferralService;

use crate::Framework;

/// Stops a server.
pub(crate) type Stop = Box<dyn FnOnce() + Send>;

/// The body of `GET /me`: `{"user_id": N}`.
#[cfg(any(feature = "axum", feature = "actix"))]
fn me_body(user: refsys_core::UserId) -> String {
    serde_json::json!({ "user_id": user }).to_string()
}

pub(crate) async fn start(framework: Framework, service: ReferralService) -> (SocketAddr, Stop) {
    match framework {
        #[cfg(feature = "axum")]
        Framework::Axum => axum_server(service).await,
        #[cfg(feature = "actix")]
        Framework::Actix => actix_server(service),
        #[allow(unreachable_patterns)]
        other @ (Framework::Axum | Framework::Actix | Framework::Binary(_)) => {
            drop(service);
            panic!("enable http-suite's feature for {other:?}")
        }
    }
}

#[cfg(feature = "axum")]
async fn axum_server(service: ReferralService) -> (SocketAddr, Stop) {
    use axum::Router;
    use axum::routing::get;
    use refsys_axum::AuthUser;

    async fn me(AuthUser(user): AuthUser) -> impl axum::response::IntoResponse {
        ([("content-type", "application/json")], me_body(user))
    }

    let app = Router::new()
        .route("/me", get(me))
        .with_state(service.clone())
        .merge(refsys_axum::router(service));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (addr, Box::new(move || task.abort()))
}

#[cfg(feature = "actix")]
fn actix_server(service: ReferralService) -> (SocketAddr, Stop) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use refsys_actix::AuthUser;

    async fn me(AuthUser(user): AuthUser) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(me_body(user))
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("an address");
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .configure(refsys_actix::configure(service.clone()))
                    .route("/me", web::get().to(me))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listening")
            .run();
            handle_tx.send(server.handle()).expect("the starter waits");
            server.await
        })
    });
    let handle = handle_rx.recv().expect("the server started");
    (
        addr,
        Box::new(move || {
            // Sends the stop command now; the server thread winds down on its own.
            drop(handle.stop(false));
        }),
    )
}

/// Starts a `refsys-server` process configured like the in-process servers (test phones,
/// regions, secret) and with `extra_env`, on a free port, and waits for `/health`. A port
/// picked free and taken by someone else before the server bound it is replaced by another
/// (up to 5 times).
pub(crate) async fn start_binary(
    binary: crate::Binary,
    extra_env: Vec<(&'static str, String)>,
) -> (SocketAddr, Stop) {
    use std::process::{Command, Stdio};

    let free = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        SocketAddr::from(([127, 0, 0, 1], port))
    };
    let dir = std::env::temp_dir().join(format!("http-suite-{}", uuid_hex()));
    std::fs::create_dir_all(&dir).expect("a working directory");
    let phones: Vec<String> = crate::TEST_PHONES
        .iter()
        .map(|(phone, code)| format!("{phone}:{code}"))
        .collect();
    let mut command = Command::new(binary.path);
    command
        .args(["--framework", binary.framework])
        .env_clear()
        .env("TEST_PHONES", phones.join(","))
        .env("ALLOWED_REGIONS", "BY,US")
        .env("JWT_SECRET", crate::SECRET)
        .env("RUST_LOG", "warn")
        .envs(extra_env)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let mut database = None;
    if binary.postgres_redis {
        let admin = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("http_suite_{}", uuid_hex());
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let (server, _) = admin.rsplit_once('/').expect("a database URL");
        command
            .env("DATABASE_URL", format!("{server}/{name}"))
            .env(
                "REDIS_URL",
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            )
            .env("REDIS_PREFIX", format!("http-suite:{name}:"));
        database = Some((admin, name));
    }
    let client = reqwest::Client::new();
    let mut tries = 0;
    let (mut child, addr) = 'start: loop {
        let addr = free();
        command
            .env("REFSYS_BIND", addr.to_string())
            // The log (stdout) goes to a file in the working directory, shown if the server
            // exits at start.
            .stdout(
                std::fs::File::create(dir.join("server.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
        let mut child = command.spawn().expect("the refsys-server binary starts");
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                if tries < 5 && log.contains("Address already in use") {
                    tries += 1;
                    continue 'start;
                }
                panic!("refsys-server exited at start: {status}\n{log}");
            }
            let health = client.get(format!("http://{addr}/health")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break 'start (child, addr);
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "refsys-server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let stop = move || {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        if let Some((admin, name)) = database {
            psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
        // Redis keys all carry TTLs; they expire by themselves.
    };
    (addr, Box::new(stop))
}

fn psql(url: &str, sql: &str) {
    let status = std::process::Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("psql (PostgreSQL client) is needed; DATABASE_URL={url}: {e}"));
    assert!(
        status.success(),
        "psql failed: {sql} (is PostgreSQL up at DATABASE_URL={url}?)"
    );
}

fn uuid_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
