//! The routes inside an app: in a scope, next to the app's own scopes.

use actix_web::{App, HttpResponse, HttpServer, web};
use http_suite::{Client, assert_error, embedding};
use refsys_core::ReferralService;

/// Serves an app that `routes` sets up, on a free port, from a thread of its own (actix-web's
/// runtime).
fn serve(routes: fn(&mut web::ServiceConfig, ReferralService)) -> Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = embedding::service();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let service = service.clone();
                App::new().configure(move |config| routes(config, service))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    Client::new(&base)
}

async fn mine() -> HttpResponse {
    HttpResponse::Ok().body("mine")
}

#[tokio::test]
async fn in_a_scope_the_contract_answers_there_only() {
    let client = serve(|config, service| {
        config
            .route("/api/me", web::get().to(mine))
            .service(web::scope("/auth").configure(refsys_actix::configure(service)));
    });
    embedding::contract_under(&client, "/auth").await;
}

#[tokio::test]
async fn the_apps_own_scopes_keep_their_paths() {
    // An app scope at /api registered after refsys: /api/token/refresh/ is still refsys's,
    // and the scope's other paths are the app's; refsys does not answer under other scopes.
    let client = serve(|config, service| {
        refsys_actix::configure(service)(config);
        config
            .service(web::scope("/api").route("/me", web::get().to(mine)))
            .service(web::scope("/admin").route("/stats", web::get().to(mine)));
    });
    let refresh = client
        .post("/api/token/refresh/", serde_json::json!({ "refresh": "x" }))
        .await;
    assert_error(&refresh, 401, "invalid_token");
    assert_eq!(client.get("/api/me", None).await.status, 200);
    assert_eq!(client.get("/admin/stats", None).await.status, 200);
    assert_error(&client.get("/admin/health", None).await, 404, "not_found");
}
