//! The route table of the contract and [`resolve`], the one route lookup that the framework
//! crates and the fuzz harness share.

use crate::error::Error;
use crate::http::reply::Reply;

/// The HTTP method of a [`Route`]. `GET` routes also answer `HEAD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET` (and `HEAD`).
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The `Allow` header value of a 405 on a route of this method.
    pub fn allow(self) -> &'static str {
        match self {
            Method::Get => "GET,HEAD",
            Method::Post => "POST",
        }
    }

    /// Whether a route of this method answers a request with method `method` (case-sensitive,
    /// as HTTP methods are).
    pub fn answers(self, method: &str) -> bool {
        match self {
            Method::Get => method == "GET" || method == "HEAD",
            Method::Post => method == "POST",
        }
    }
}

/// What a route does; [`handle`](crate::http::handle) runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /login/send_code/`.
    SendCode,
    /// `POST /login/verify_code/`.
    VerifyCode,
    /// `GET /get_profile/`.
    Profile,
    /// `POST /use_invite_code/`.
    UseInviteCode,
    /// `POST /api/token/refresh/`.
    Refresh,
    /// `POST /api/token/logout/`.
    Logout,
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `GET /api/schema/`: the OpenAPI document.
    #[cfg(feature = "openapi")]
    Schema,
}

/// One route of the contract: a method, the paths it answers on, and what it does.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The paths, with and without the trailing slash.
    pub paths: &'static [&'static str],
    /// What it does.
    pub endpoint: Endpoint,
}

const fn route(method: Method, paths: &'static [&'static str], endpoint: Endpoint) -> Route {
    Route {
        method,
        paths,
        endpoint,
    }
}

/// Path of `send_code`.
pub const SEND_CODE: &str = "/login/send_code/";
/// Path of `verify_code`.
pub const VERIFY_CODE: &str = "/login/verify_code/";
/// Path of the profile.
pub const GET_PROFILE: &str = "/get_profile/";
/// Path of `use_invite_code`.
pub const USE_INVITE_CODE: &str = "/use_invite_code/";
/// Path of token refresh.
pub const TOKEN_REFRESH: &str = "/api/token/refresh/";
/// Path of logout.
pub const TOKEN_LOGOUT: &str = "/api/token/logout/";
/// Path of the liveness probe.
pub const HEALTH: &str = "/health";
/// Path of the readiness probe.
pub const READY: &str = "/ready";
/// Path of the OpenAPI document.
pub const SCHEMA: &str = "/api/schema/";

static ROUTES: &[Route] = &[
    route(
        Method::Post,
        &[SEND_CODE, "/login/send_code"],
        Endpoint::SendCode,
    ),
    route(
        Method::Post,
        &[VERIFY_CODE, "/login/verify_code"],
        Endpoint::VerifyCode,
    ),
    route(
        Method::Get,
        &[GET_PROFILE, "/get_profile"],
        Endpoint::Profile,
    ),
    route(
        Method::Post,
        &[USE_INVITE_CODE, "/use_invite_code"],
        Endpoint::UseInviteCode,
    ),
    route(
        Method::Post,
        &[TOKEN_REFRESH, "/api/token/refresh"],
        Endpoint::Refresh,
    ),
    route(
        Method::Post,
        &[TOKEN_LOGOUT, "/api/token/logout"],
        Endpoint::Logout,
    ),
    route(Method::Get, &[HEALTH, "/health/"], Endpoint::Health),
    route(Method::Get, &[READY, "/ready/"], Endpoint::Ready),
    #[cfg(feature = "openapi")]
    route(Method::Get, &[SCHEMA, "/api/schema"], Endpoint::Schema),
];

/// Returns every route of the contract.
pub fn routes() -> &'static [Route] {
    ROUTES
}

/// The endpoint that answers `method` on `path` (a path without its query string), or the
/// contract's reply when none does: `404 not_found` for an unknown path, `405
/// method_not_allowed` with `Allow` for a known path and another method. `GET` routes answer
/// `HEAD` too.
pub fn resolve(method: &str, path: &str) -> Result<Endpoint, Reply> {
    let Some(route) = ROUTES.iter().find(|route| route.paths.contains(&path)) else {
        return Err(Reply::error(&Error::NotFound));
    };
    if route.method.answers(method) {
        Ok(route.endpoint)
    } else {
        let mut reply = Reply::error(&Error::MethodNotAllowed);
        reply.headers.push(("allow", route.method.allow().into()));
        Err(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes of `docs/API.md`, written out: (method, paths, endpoint).
    fn contract() -> Vec<(Method, [&'static str; 2], Endpoint)> {
        vec![
            (
                Method::Post,
                ["/login/send_code/", "/login/send_code"],
                Endpoint::SendCode,
            ),
            (
                Method::Post,
                ["/login/verify_code/", "/login/verify_code"],
                Endpoint::VerifyCode,
            ),
            (
                Method::Get,
                ["/get_profile/", "/get_profile"],
                Endpoint::Profile,
            ),
            (
                Method::Post,
                ["/use_invite_code/", "/use_invite_code"],
                Endpoint::UseInviteCode,
            ),
            (
                Method::Post,
                ["/api/token/refresh/", "/api/token/refresh"],
                Endpoint::Refresh,
            ),
            (
                Method::Post,
                ["/api/token/logout/", "/api/token/logout"],
                Endpoint::Logout,
            ),
            (Method::Get, ["/health", "/health/"], Endpoint::Health),
            (Method::Get, ["/ready", "/ready/"], Endpoint::Ready),
            #[cfg(feature = "openapi")]
            (
                Method::Get,
                ["/api/schema/", "/api/schema"],
                Endpoint::Schema,
            ),
        ]
    }

    #[test]
    fn the_table_is_the_contract() {
        let table: Vec<_> = routes()
            .iter()
            .map(|r| (r.method, r.paths.to_vec(), r.endpoint))
            .collect();
        let contract: Vec<_> = contract()
            .into_iter()
            .map(|(method, paths, endpoint)| (method, paths.to_vec(), endpoint))
            .collect();
        assert_eq!(table, contract);
    }

    #[test]
    fn every_path_resolves_to_its_route_and_other_methods_get_405_with_allow() {
        for (method, paths, endpoint) in contract() {
            let (yes, no): (&[&str], &[&str]) = match method {
                Method::Get => (
                    &["GET", "HEAD"],
                    &["POST", "PUT", "DELETE", "OPTIONS", "get"],
                ),
                Method::Post => (&["POST"], &["GET", "HEAD", "PUT", "PATCH", "post"]),
            };
            for path in paths {
                for verb in yes {
                    assert_eq!(resolve(verb, path), Ok(endpoint), "{verb} {path}");
                }
                for verb in no {
                    let reply = resolve(verb, path).unwrap_err();
                    assert_eq!(reply.status, 405, "{verb} {path}");
                    assert_eq!(reply.header("allow"), Some(method.allow()));
                }
            }
        }
    }

    #[test]
    fn unknown_paths_get_404() {
        for path in [
            "/",
            "/nope",
            "/health//",
            "/login/send_code//",
            "/Login/send_code/",
            "",
        ] {
            for method in ["GET", "POST"] {
                let reply = resolve(method, path).unwrap_err();
                assert_eq!(reply.status, 404, "{method} {path:?}");
                assert_eq!(reply.header("allow"), None);
            }
        }
    }
}
