//! refsys inside an actix-web app, next to the app's own handler guarded by `AuthUser`.
//!
//! `JWT_SECRET=$(head -c 32 /dev/urandom | base64) cargo run -p refsys-server --example embed_actix`,
//! then log in (the code is in the log) and call `GET /api/me` with the access token.

use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};
use refsys_actix::AuthUser;
use refsys_core::{JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, ReferralService};
use serde_json::{Value, json};

/// The app's own handler: only reachable with a valid access token.
async fn me(AuthUser(user): AuthUser) -> web::Json<Value> {
    web::Json(json!({ "user_id": user }))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // LogSender writes each code to this log, at INFO.
    tracing_subscriber::fmt().init();
    let secret = std::env::var("JWT_SECRET").map_err(|_| "set JWT_SECRET (32+ bytes)")?;
    let service = ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256(secret)?,
    )
    .build();

    // Connection limits: slow clients time out, and a full cap closes the oldest idle
    // connection for each new one (actix-web's own cap would stop accepting).
    let cap = refsys_actix::ConnectionCap::new(4_000);
    let workers = 2;
    HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(refsys_actix::track_requests))
            .route("/api/me", web::get().to(me))
            .configure(refsys_actix::configure(service.clone()))
    })
    .workers(workers)
    .on_connect(cap.on_connect())
    .max_connections(cap.actix_max_connections(workers))
    .client_request_timeout(Duration::from_secs(10))
    .keep_alive(Duration::from_secs(10))
    .backlog(1024)
    .bind("127.0.0.1:8002")?
    .run()
    .await?;
    Ok(())
}
