//! The router inside an app: nested under a prefix, next to the app's own routes and
//! fallback.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use http_suite::{Client, TEST_PHONES, assert_error};
use refsys_core::{
    ClientLimits, JwtKeys, LogSender, MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore,
    Policy, ReferralService,
};

fn service() -> ReferralService {
    let (phone, code) = TEST_PHONES[0];
    let policy = Policy::builder().test_phone(phone, code).build().unwrap();
    ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256_random(),
    )
    .policy(policy)
    .client_limits(MemoryRateLimitStore::new(), ClientLimits::default())
    .build()
}

async fn serve(app: Router) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Client::new(&base)
}

#[tokio::test]
async fn nested_under_a_prefix_the_contract_answers_there_only() {
    let app = Router::new()
        .route("/api/me", get(|| async { "mine" }))
        .nest("/auth", refsys_axum::router(service()));
    let client = serve(app).await;
    let (phone, code) = TEST_PHONES[0];
    let sent = client
        .post(
            "/auth/login/send_code/",
            serde_json::json!({ "phone": phone }),
        )
        .await;
    assert_eq!(sent.status, 200);
    let verified = client
        .post(
            "/auth/login/verify_code/",
            serde_json::json!({ "phone": phone, "code": code }),
        )
        .await;
    let access = verified.str("access");
    assert_eq!(
        client.get("/auth/get_profile/", Some(&access)).await.status,
        200
    );
    let wrong = client.get("/auth/login/send_code/", None).await;
    assert_error(&wrong, 405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    // Not at the root, and the app's own routes are untouched.
    assert_eq!(client.get("/get_profile/", Some(&access)).await.status, 404);
    assert_eq!(client.get("/api/me", None).await.status, 200);
}

#[tokio::test]
async fn the_apps_own_fallback_leaves_the_contract_alone() {
    let app = Router::new()
        .merge(refsys_axum::router(service()))
        .fallback(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "the app's own") });
    let client = serve(app).await;
    assert_eq!(client.get("/health", None).await.status, 200);
    let wrong = client.request("DELETE", "/health", &[], None).await;
    assert_error(&wrong, 405, "method_not_allowed");
    assert_eq!(client.get("/nope", None).await.status, 418);
}
