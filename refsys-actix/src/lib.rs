//! refsys over [actix-web](actix_web): phone-number login with one-time SMS codes, JWT
//! sessions and invite codes.
//!
//! [`configure`] registers the whole HTTP contract of refsys (`API.md`: `send_code`,
//! `verify_code`, the profile, invite codes, token refresh and logout, `/health`, `/ready`,
//! and with the default `openapi` feature the OpenAPI document at `/api/schema/`) on an `App`
//! or `Scope`. [`AuthUser`] guards your own handlers
//! with the same access tokens. All the HTTP logic lives in [`refsys_core::http`]; this crate
//! only translates, so it answers byte for byte like `refsys-axum`.
//!
//! # Features
//!
//! - `openapi` (default): the OpenAPI document at `/api/schema/`.
//!
//! # Quick start
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use refsys_actix::AuthUser;
//! use refsys_core::{JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, ReferralService};
//!
//! /// Your own handler: only reachable with a valid access token.
//! async fn me(AuthUser(user): AuthUser) -> web::Json<i64> {
//!     web::Json(user.0)
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let service = ReferralService::builder(
//!         MemoryUserStore::new(),
//!         MemoryOtpStore::new(),
//!         LogSender,
//!         JwtKeys::hs256(std::env::var("JWT_SECRET")?)?,
//!     )
//!     .build();
//!
//!     HttpServer::new(move || {
//!         App::new()
//!             .configure(refsys_actix::configure(service.clone()))
//!             .route("/me", web::get().to(me))
//!     })
//!     .bind("127.0.0.1:8000")?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```
//!
//! # Notes
//!
//! - [`configure`] also sets the default service to [`not_found`] (a JSON 404). Set your own
//!   with `App::default_service` after `configure` to override it; inside a `web::scope`,
//!   `.default_service(web::to(refsys_actix::not_found))` gives the scope the same JSON 404.
//! - The service is registered as `web::Data<ReferralService>` app data; [`AuthUser`] finds it
//!   there. Configured on a `web::scope`, the data and the routes belong to that scope.
//! - Behind a proxy, configure [`TrustedProxies`](refsys_core::TrustedProxies), or the
//!   per-client limits count every client as the proxy.
//! - The routes time out a request body that stops arriving
//!   ([`ClientLimits::body_read_timeout`](refsys_core::ClientLimits::body_read_timeout), 408).
//!   Connection limits are the server's: set them on `HttpServer`, e.g.
//!   `.client_request_timeout(Duration::from_secs(10)).keep_alive(Duration::from_secs(10))
//!   .backlog(1024)`, and cap the open connections with a [`ConnectionCap`] (three lines: it
//!   closes the oldest idle connection for each new one when full, where actix-web's own
//!   `max_connections` would stop accepting).
#![forbid(unsafe_code)]

mod connections;

pub use connections::{ConnectionCap, ConnectionSlot, track_requests};

use std::future::{Ready, ready};

use actix_web::body::BoxBody;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use refsys_core::http::{self, Reply, RequestInfo};
use refsys_core::{Error, ReferralService, UserId};

/// Registers all the routes of the contract, the service as app data, and a JSON 404 default
/// service. Use with `App::configure` or `Scope::configure`.
///
/// Each path of the contract is a resource of its own that takes every method;
/// [`refsys_core::http::resolve`] decides, answering a method the path does not serve with the
/// contract's JSON 405 and its `Allow` header. (One resource per path: a resource with several
/// paths is matched with a regex set, which is slower than comparing static paths.)
pub fn configure(service: ReferralService) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config.app_data(web::Data::new(service));
        for route in http::routes() {
            for &path in route.paths {
                let handler =
                    move |request: HttpRequest,
                          payload: web::Payload,
                          service: web::Data<ReferralService>| {
                        serve(service, path, request, payload)
                    };
                config.service(web::resource(path).route(web::route().to(handler)));
            }
        }
        config.default_service(web::to(not_found));
    }
}

/// The contract's JSON `404 not_found`: a default service for apps and scopes.
pub async fn not_found() -> HttpResponse {
    ApiError(Error::NotFound).error_response()
}

/// Serves a request to `path`, a path of the contract: a CORS preflight, or the route's reply
/// with `Access-Control-Allow-Origin` for an allowed origin.
async fn serve(
    service: web::Data<ReferralService>,
    path: &'static str,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let headers = request.headers();
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = text(header::ORIGIN);
    if request.method() == actix_web::http::Method::OPTIONS
        && let Some(reply) = http::preflight(
            &service,
            path,
            origin,
            text(header::ACCESS_CONTROL_REQUEST_METHOD),
        )
    {
        return into_response(reply);
    }
    let mut reply = reply_to(&service, path, &request, payload).await;
    http::allow_origin(&service, origin, &mut reply);
    into_response(reply)
}

/// The route's reply to a request to `path`.
async fn reply_to(
    service: &ReferralService,
    path: &'static str,
    request: &HttpRequest,
    payload: web::Payload,
) -> Reply {
    let endpoint = match http::resolve(request.method().as_str(), path) {
        Ok(endpoint) => endpoint,
        Err(reply) => return reply,
    };
    let length = request.headers().get(header::CONTENT_LENGTH);
    if let Some(reply) = http::refuse_announced_length(length.and_then(|v| v.to_str().ok())) {
        return reply;
    }
    let timeout = service.client_limits().body_read_timeout;
    let read = payload.to_bytes_limited(http::MAX_BODY_BYTES);
    let body = match actix_web::rt::time::timeout(timeout, read).await {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(error))) => {
            let why = format!("The request body could not be read: {error}.");
            return Reply::from(Error::InvalidRequest(why));
        }
        Ok(Err(_)) => return Reply::from(Error::PayloadTooLarge),
        Err(_) => return http::body_timed_out(),
    };
    let headers = request.headers();
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let info = RequestInfo {
        peer: request.peer_addr().map(|a| a.ip()),
        forwarded_for: headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect(),
        content_type: text(header::CONTENT_TYPE),
        authorization: text(header::AUTHORIZATION),
        user_agent: text(header::USER_AGENT),
        id: request.match_info().get("id"),
        query: Some(request.query_string()).filter(|q| !q.is_empty()),
    };
    http::handle(service, endpoint, &info, &body).await
}

fn into_response(reply: Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::with_body(status, BoxBody::new(reply.body.into_owned()));
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// A [`refsys_core::Error`] as a response: the contract's status, JSON body and headers.
///
/// Return it from your own handlers to answer in the same shape.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        into_response(Reply::error(&self.0))
    }
}

/// The user of a valid access token (`Authorization: Bearer <access>`).
///
/// Put it on your own handlers to require login; the rejection is the contract's
/// `401 unauthorized` with `WWW-Authenticate: Bearer`. The service comes from the app data
/// that [`configure`] registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(service) = request.app_data::<web::Data<ReferralService>>() else {
            let why = "AuthUser needs the ReferralService: use refsys_actix::configure";
            return ready(Err(ApiError(Error::Internal(why.into()))));
        };
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        ready(
            service
                .authenticate_header(header)
                .map(AuthUser)
                .map_err(ApiError),
        )
    }
}
