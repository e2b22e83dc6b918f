//! refsys over [axum]: phone-number login with one-time SMS codes, JWT sessions and invite
//! codes.
//!
//! [`router`] serves the whole HTTP contract of refsys (`API.md`: `send_code`, `verify_code`,
//! the profile, invite codes, token refresh and logout, `/health`, `/ready`, and with the
//! default `openapi` feature the OpenAPI document at `/api/schema/`). [`AuthUser`] guards your own handlers with the same access
//! tokens. All the HTTP logic lives in [`refsys_core::http`]; this crate only translates, so
//! it answers byte for byte like `refsys-actix`.
//!
//! # Features
//!
//! - `openapi` (default): the OpenAPI document at `/api/schema/`.
//!
//! # Quick start
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use refsys_axum::AuthUser;
//! use refsys_core::{JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, ReferralService};
//!
//! /// Your own handler: only reachable with a valid access token.
//! async fn me(AuthUser(user): AuthUser) -> Json<i64> {
//!     Json(user.0)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let service = ReferralService::builder(
//!     MemoryUserStore::new(),
//!     MemoryOtpStore::new(),
//!     LogSender,
//!     JwtKeys::hs256(std::env::var("JWT_SECRET")?)?,
//! )
//! .build();
//!
//! let app = Router::new()
//!     .route("/me", get(me))
//!     .with_state(service.clone()) // AuthUser finds the service in the state
//!     .merge(refsys_axum::router(service));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! // Like axum::serve, with header, idle and connection limits; each request carries the
//! // peer address the per-client rate limits need.
//! refsys_axum::serve(listener, app, refsys_axum::ServeLimits::default(), std::future::pending())
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Notes
//!
//! - The client limits key on the peer address: [`serve`] provides it, and with `axum::serve`
//!   use [`into_make_service_with_connect_info::<SocketAddr>()`](axum::Router::into_make_service_with_connect_info);
//!   without it `send_code` and `verify_code` answer 500 (unless the limits are disabled).
//!   Behind a proxy, configure [`TrustedProxies`](refsys_core::TrustedProxies).
//! - The router has a JSON 404 fallback, and answers a wrong method on a contract path with
//!   the contract's JSON 405 (through [`refsys_core::http::resolve`]). `Router::merge` panics
//!   when both routers set a fallback: set yours on the merged router instead.
//! - `axum::serve` has no header-read or idle timeout and no connection cap: a client that
//!   opens connections and sends nothing holds them. Serve with [`serve`] instead
//!   (`refsys_axum::serve(listener, app, ServeLimits::default(), shutdown)`): the same
//!   router, with those limits. The routes themselves time out a request body that stops
//!   arriving ([`ClientLimits::body_read_timeout`](refsys_core::ClientLimits::body_read_timeout), 408).
#![forbid(unsafe_code)]

mod server;

pub use server::{ServeLimits, serve};

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Router, body};
use refsys_core::http::{self, Reply, RequestInfo};
use refsys_core::{Error, ReferralService, UserId};

/// All the routes of the contract, with the service as state, and a JSON 404 fallback. Merge
/// or nest it into your app.
///
/// Each path of the contract is a route of its own that takes every method;
/// [`refsys_core::http::resolve`] decides, answering a method the path does not serve with the
/// contract's JSON 405 and its `Allow` header.
pub fn router(service: ReferralService) -> Router {
    let mut router = Router::new();
    for route in http::routes() {
        for &path in route.paths {
            let handler = move |State(service): State<ReferralService>, request: Request| {
                answer(service, path, request)
            };
            router = router.route(path, any(handler));
        }
    }
    router
        .fallback(|| async { ApiError(Error::NotFound) })
        .with_state(service)
}

/// Answers a request to `path`, a path of the contract: a CORS preflight, or the route's
/// reply with `Access-Control-Allow-Origin` for an allowed origin.
async fn answer(service: ReferralService, path: &'static str, request: Request) -> Response {
    let headers = request.headers();
    let origin = text(headers, header::ORIGIN).map(str::to_owned);
    if request.method() == axum::http::Method::OPTIONS
        && let Some(reply) = http::preflight(
            &service,
            path,
            origin.as_deref(),
            text(headers, header::ACCESS_CONTROL_REQUEST_METHOD),
        )
    {
        return into_response(reply);
    }
    let mut reply = reply_to(&service, path, request).await;
    http::allow_origin(&service, origin.as_deref(), &mut reply);
    into_response(reply)
}

/// The route's reply to a request to `path`.
async fn reply_to(service: &ReferralService, path: &'static str, request: Request) -> Reply {
    let endpoint = match http::resolve(request.method().as_str(), path) {
        Ok(endpoint) => endpoint,
        Err(reply) => return reply,
    };
    let (parts, body) = request.into_parts();
    if let Some(reply) = http::refuse_announced_length(text(&parts.headers, header::CONTENT_LENGTH))
    {
        return reply;
    }
    let timeout = service.client_limits().body_read_timeout;
    let body = match tokio::time::timeout(timeout, body::to_bytes(body, http::MAX_BODY_BYTES)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => return Reply::from(body_error(error)),
        Err(_) => return http::body_timed_out(),
    };
    let headers = &parts.headers;
    let info = RequestInfo {
        peer: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        forwarded_for: headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
        content_type: text(headers, header::CONTENT_TYPE),
        authorization: text(headers, header::AUTHORIZATION),
        user_agent: text(headers, header::USER_AGENT),
        // Relative to where the router is nested: axum strips the prefix from the URI.
        id: http::path_id(path, parts.uri.path()),
        query: parts.uri.query(),
    };
    http::handle(service, endpoint, &info, &body).await
}

fn body_error(error: axum::Error) -> Error {
    match error
        .into_inner()
        .downcast::<http_body_util::LengthLimitError>()
    {
        Ok(_) => Error::PayloadTooLarge,
        Err(error) => {
            Error::InvalidRequest(format!("The request body could not be read: {error}."))
        }
    }
}

fn text(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn into_response(reply: Reply) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        into_response(Reply::error(&self.0))
    }
}

/// The user of a valid access token (`Authorization: Bearer <access>`).
///
/// Put it on your own handlers to require login; the rejection is the contract's
/// `401 unauthorized` with `WWW-Authenticate: Bearer`. The service comes from the router
/// state (`ReferralService: FromRef<S>`), so give your routes a state that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthUser(pub UserId);

impl<S> FromRequestParts<S> for AuthUser
where
    ReferralService: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let service = ReferralService::from_ref(state);
        let header = text(&parts.headers, header::AUTHORIZATION);
        Ok(AuthUser(service.authenticate_header(header)?))
    }
}
