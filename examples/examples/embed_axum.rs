//! refsys inside an axum app, next to the app's own handler guarded by `AuthUser`.
//!
//! `JWT_SECRET=$(head -c 32 /dev/urandom | base64) cargo run -p refsys-server --example embed_axum`,
//! then log in (the code is in the log) and call `GET /api/me` with the access token.

use axum::{Json, Router, routing::get};
use refsys_axum::AuthUser;
use refsys_core::{JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, ReferralService};
use serde_json::{Value, json};

/// The app's own handler: only reachable with a valid access token.
async fn me(AuthUser(user): AuthUser) -> Json<Value> {
    Json(json!({ "user_id": user }))
}

#[tokio::main]
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

    let app = Router::new()
        .route("/api/me", get(me))
        .with_state(service.clone())
        .merge(refsys_axum::router(service));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8001").await?;
    // axum::serve with header, idle and connection limits; requests carry the peer address
    // that the per-client rate limits count.
    let limits = refsys_axum::ServeLimits::default();
    refsys_axum::serve(listener, app, limits, std::future::pending()).await?;
    Ok(())
}
