//! Starting a server of each framework, with the refsys routes and a user's `/me` handler.

use std::net::SocketAddr;

use refsys_core::ReferralService;

use crate::Framework;

/// Stops a server.
pub(crate) type Stop = Box<dyn FnOnce() + Send>;

/// The body of `GET /me`: `{"user_id": N}`.
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
        other => {
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
