//! The router inside an app: nested under a prefix, next to the app's own routes and
//! fallback.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use http_suite::{Client, assert_error, embedding};

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
        .nest("/auth", refsys_axum::router(embedding::service()));
    let client = serve(app).await;
    embedding::contract_under(&client, "/auth").await;
}

#[tokio::test]
async fn the_apps_own_fallback_leaves_the_contract_alone() {
    let app = Router::new()
        .merge(refsys_axum::router(embedding::service()))
        .fallback(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "the app's own") });
    let client = serve(app).await;
    assert_eq!(client.get("/health", None).await.status, 200);
    let wrong = client.request("DELETE", "/health", &[], None).await;
    assert_error(&wrong, 405, "method_not_allowed");
    assert_eq!(client.get("/nope", None).await.status, 418);
}
