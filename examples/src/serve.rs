//! Serving the service over the chosen framework, with the web UI, a request id and latency
//! per request in the log, and graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use refsys_core::ReferralService;
use refsys_core::http::Method;

use crate::config::Framework;
use crate::listen::ConnectionLimits;

/// A file embedded in the binary and served on `GET` and `HEAD`.
pub(crate) struct StaticFile {
    /// Where it is served.
    pub(crate) path: &'static str,
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Its `Cache-Control`, if any.
    pub(crate) cache_control: Option<&'static str>,
    /// Its bytes.
    pub(crate) body: &'static [u8],
}

const fn ui(path: &'static str, content_type: &'static str, body: &'static [u8]) -> StaticFile {
    StaticFile {
        path,
        content_type,
        cache_control: None,
        body,
    }
}

/// Swagger UI files (`swagger-ui/README.md`) are cached for an hour.
const fn swagger(
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
) -> StaticFile {
    StaticFile {
        path,
        content_type,
        cache_control: Some("public, max-age=3600"),
        body,
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The web UI and Swagger UI (vendored, no CDN), embedded in the binary.
pub(crate) const STATIC_FILES: &[StaticFile] = &[
    ui("/", HTML, include_bytes!("../ui/index.html")),
    ui("/ui/app.js", JS, include_bytes!("../ui/app.js")),
    ui("/ui/style.css", CSS, include_bytes!("../ui/style.css")),
    swagger(SWAGGER_UI, HTML, include_bytes!("../swagger-ui/index.html")),
    swagger(
        "/api/schema/swagger-ui/index.html",
        HTML,
        include_bytes!("../swagger-ui/index.html"),
    ),
    swagger(
        "/api/schema/swagger-ui/swagger-ui.css",
        CSS,
        include_bytes!("../swagger-ui/swagger-ui.css"),
    ),
    swagger(
        "/api/schema/swagger-ui/swagger-ui-bundle.js",
        JS,
        include_bytes!("../swagger-ui/swagger-ui-bundle.js"),
    ),
    swagger(
        "/api/schema/swagger-ui/swagger-initializer.js",
        JS,
        include_bytes!("../swagger-ui/swagger-initializer.js"),
    ),
];

/// Swagger UI's page. Its path without the slash redirects here (`308`, relative `Location`),
/// so that the page's relative links resolve.
const SWAGGER_UI: &str = "/api/schema/swagger-ui/";

/// The path that redirects to [`SWAGGER_UI`], and the `Location` it answers.
const SWAGGER_UI_REDIRECT: (&str, &str) = ("/api/schema/swagger-ui", "swagger-ui/");

/// The Content-Security-Policy of the HTML pages (web UI, Swagger UI): scripts, styles and
/// connections from this origin only, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The headers a page, asset or redirect of the server carries (the API's replies have the
/// contract's security headers already): the security headers, and for an HTML page its CSP
/// and `X-Frame-Options: DENY`.
fn edge_headers(content_type: Option<&str>) -> impl Iterator<Item = (&'static str, &'static str)> {
    let html = content_type.is_some_and(|t| t.starts_with("text/html"));
    let page = [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
    ];
    refsys_core::http::SECURITY_HEADERS
        .into_iter()
        .chain(page.into_iter().filter(move |_| html))
}

/// A fresh request id: 32 hex digits (a random UUID).
fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Logs one finished request. Only method, path (no query string), status and latency: no
/// bodies, tokens or phone numbers.
fn log_request(id: &str, method: &str, path: &str, status: u16, started: Instant) {
    tracing::info!(
        request_id = id,
        method,
        path,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
}

/// Serves until SIGINT or SIGTERM, then finishes in-flight requests.
pub(crate) async fn serve(
    framework: Framework,
    bind: SocketAddr,
    limits: &ConnectionLimits,
    service: ReferralService,
) -> Result<(), Box<dyn std::error::Error>> {
    match framework {
        Framework::Axum => axum_server::serve(bind, limits, service).await,
        Framework::Actix => actix_server::serve(bind, limits, service).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

mod axum_server {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{HeaderValue, header};
    use axum::middleware::{self, Next};
    use axum::response::{Redirect, Response};
    use axum::routing::get;

    use super::*;

    async fn trace(request: Request, next: Next) -> Response {
        let started = Instant::now();
        let id = super::request_id();
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let mut response = next.run(request).await;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-request-id", value);
        }
        log_request(&id, &method, &path, response.status().as_u16(), started);
        response
    }

    pub(super) async fn serve(
        bind: SocketAddr,
        limits: &ConnectionLimits,
        service: ReferralService,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut ui = Router::new();
        for file in STATIC_FILES {
            let (content_type, cache_control, body) =
                (file.content_type, file.cache_control, file.body);
            ui = ui.route(
                file.path,
                get(move || async move {
                    let mut response = Response::new(Body::from(body));
                    let headers = response.headers_mut();
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                    if let Some(cache_control) = cache_control {
                        headers.insert(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static(cache_control),
                        );
                    }
                    for (name, value) in edge_headers(Some(content_type)) {
                        headers.insert(name, HeaderValue::from_static(value));
                    }
                    response
                }),
            );
        }
        let (from, to) = SWAGGER_UI_REDIRECT;
        ui = ui.route(
            from,
            get(move || async move {
                let mut response =
                    axum::response::IntoResponse::into_response(Redirect::permanent(to));
                for (name, value) in edge_headers(None) {
                    response
                        .headers_mut()
                        .insert(name, HeaderValue::from_static(value));
                }
                response
            }),
        );
        // The API's routes answer a wrong method with the contract's JSON 405 themselves; this
        // gives the UI's routes the same answer.
        let app = ui
            .merge(refsys_axum::router(service))
            .method_not_allowed_fallback(|| async {
                refsys_axum::ApiError(refsys_core::Error::MethodNotAllowed)
            })
            .layer(middleware::from_fn(trace));
        let listener = listen(bind, limits.backlog)
            .map_err(|e| format!("REFSYS_BIND: cannot listen on {bind}: {e}"))?;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        let serve_limits = refsys_axum::ServeLimits {
            header_read_timeout: limits.header_read_timeout,
            // A quarter of room for connections accepted while evicted ones still close.
            max_connections: crate::listen::max_connections(limits.max_connections, 5, 4),
            ..refsys_axum::ServeLimits::default()
        };
        refsys_axum::serve(listener, app, serve_limits, shutdown_signal()).await?;
        Ok(())
    }

    /// A listener on `bind` with a listen backlog of `backlog`.
    fn listen(bind: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
        let socket = if bind.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(bind)?;
        socket.listen(backlog)
    }
}

mod actix_server {
    use actix_web::dev::Service as _;
    use actix_web::http::header::{self, HeaderName, HeaderValue};
    use actix_web::{App, HttpResponse, HttpServer, ResponseError as _, guard, web};

    use super::*;

    /// A resource answering `GET` and `HEAD` (as on axum); any other method is the contract's
    /// JSON 405.
    fn get_only<F, R>(path: &str, handler: F) -> actix_web::Resource
    where
        F: Fn() -> R + Clone + 'static,
        R: std::future::Future<Output = HttpResponse> + 'static,
    {
        web::resource(path)
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(handler),
            )
            .default_service(web::to(|| async {
                let mut response =
                    refsys_actix::ApiError(refsys_core::Error::MethodNotAllowed).error_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(Method::Get.allow()));
                response
            }))
    }

    pub(super) async fn serve(
        bind: SocketAddr,
        limits: &ConnectionLimits,
        service: ReferralService,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        // Each connection the cap holds takes two descriptors (it keeps one to close it by),
        // and actix-web may hold a quarter more before the evicted ones are gone
        // (`actix_max_connections`): 9 descriptors for every 4 connections of the cap.
        let cap = refsys_actix::ConnectionCap::new(crate::listen::max_connections(
            limits.max_connections,
            9,
            4,
        ));
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(actix_web::middleware::from_fn(refsys_actix::track_requests))
                .wrap_fn(|request, next| {
                    let started = Instant::now();
                    let id = super::request_id();
                    let method = request.method().to_string();
                    let path = request.path().to_owned();
                    let response = next.call(request);
                    async move {
                        let mut response = response.await?;
                        if let Ok(value) = HeaderValue::from_str(&id) {
                            response
                                .headers_mut()
                                .insert(HeaderName::from_static("x-request-id"), value);
                        }
                        log_request(&id, &method, &path, response.status().as_u16(), started);
                        Ok(response)
                    }
                })
                .configure(refsys_actix::configure(service.clone()));
            for file in STATIC_FILES {
                let (content_type, cache_control, body) =
                    (file.content_type, file.cache_control, file.body);
                app = app.service(get_only(file.path, move || async move {
                    let mut response = HttpResponse::Ok();
                    response.content_type(content_type);
                    if let Some(cache_control) = cache_control {
                        response.insert_header((header::CACHE_CONTROL, cache_control));
                    }
                    for header in edge_headers(Some(content_type)) {
                        response.insert_header(header);
                    }
                    response.body(body)
                }));
            }
            let (from, to) = SWAGGER_UI_REDIRECT;
            app.service(get_only(from, move || async move {
                let mut response = HttpResponse::PermanentRedirect();
                response.insert_header((header::LOCATION, to));
                for header in edge_headers(None) {
                    response.insert_header(header);
                }
                response.finish()
            }))
        })
        .shutdown_timeout(30)
        .workers(workers)
        // A full cap closes the oldest idle connection for each new one; actix-web's own cap
        // (per worker, and it stops accepting) stays above it.
        .on_connect(cap.on_connect())
        .max_connections(cap.actix_max_connections(workers))
        .backlog(limits.backlog)
        .client_request_timeout(limits.header_read_timeout)
        .keep_alive(limits.header_read_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .bind(bind)
        .map_err(|e| format!("REFSYS_BIND: cannot listen on {bind}: {e}"))?;
        for addr in server.addrs() {
            tracing::info!("listening on http://{addr}");
        }
        // actix-web stops gracefully on SIGINT/SIGTERM by itself: it stops accepting, then
        // waits up to `shutdown_timeout` for in-flight requests.
        server.run().await?;
        Ok(())
    }
}
