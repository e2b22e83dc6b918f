//! The framework-independent half of the HTTP API: route lookup, request handling, replies.
//!
//! `refsys-axum` and `refsys-actix` only translate between their framework and this module:
//! they [`resolve`] the method and path to an [`Endpoint`] (or to the contract's 404 / 405),
//! read the body (at most [`MAX_BODY_BYTES`]), collect a [`RequestInfo`], call [`handle`],
//! and write the [`Reply`] back. Everything the contract (`docs/API.md`) decides — which
//! check comes first, status codes, JSON bodies, the `Allow`, `WWW-Authenticate` and
//! `Retry-After` headers — is decided here once, so both frameworks answer byte for byte the
//! same.
//!
//! Four parts, each using only the ones before it:
//!
//! - [`reply`](Reply): a response ready to write, and the contract's error response;
//! - routes: the route table ([`routes`]) and [`resolve`];
//! - the document: `openapi` (feature `openapi`) describes every route in OpenAPI 3.1;
//! - handling: [`handle`] runs an endpoint (client limits, authentication, content type,
//!   JSON body, then the service), serving the document at `/api/schema/`.

pub(crate) mod handle;
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub mod openapi;
pub(crate) mod reply;
pub(crate) mod routes;

pub use handle::{
    MAX_BODY_BYTES, RequestInfo, allow_origin, body_timed_out, handle, is_json, json_body,
    preflight, refuse_announced_length,
};
pub use reply::{Reply, SECURITY_HEADERS};
pub use routes::{
    ACCOUNT_DELETE, ACCOUNT_EXPORT, Endpoint, GET_PROFILE, HEALTH, INVITEES, Method,
    PHONE_SEND_CODE, PHONE_VERIFY, READY, Route, SCHEMA, SEND_CODE, SESSION, SESSIONS,
    SESSIONS_REVOKE, TOKEN_LOGOUT, TOKEN_REFRESH, USE_INVITE_CODE, VERIFY_CODE, path_id, resolve,
    routes,
};
