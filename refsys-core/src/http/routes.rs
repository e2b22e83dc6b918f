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
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The `Allow` header value of a 405 on a route of this method.
    pub fn allow(self) -> &'static str {
        match self {
            Method::Get => "GET,HEAD",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    /// Whether a route of this method answers a request with method `method` (case-sensitive,
    /// as HTTP methods are).
    pub fn answers(self, method: &str) -> bool {
        match self {
            Method::Get => method == "GET" || method == "HEAD",
            Method::Post => method == "POST",
            Method::Delete => method == "DELETE",
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
    /// `GET /api/sessions/`: the caller's sessions.
    Sessions,
    /// `DELETE /api/sessions/{id}/`: ends one of the caller's sessions.
    RevokeSession,
    /// `POST /api/sessions/revoke/`: ends the caller's other sessions, or all.
    RevokeSessions,
    /// `GET /api/account/export/`: everything stored about the caller.
    ExportAccount,
    /// `POST /api/account/delete/`: deletes the caller's account, after a code.
    DeleteAccount,
    /// `POST /api/account/phone/send_code/`: a code to the number the caller moves to.
    PhoneSendCode,
    /// `POST /api/account/phone/verify/`: moves the caller's account to a proven number.
    PhoneVerify,
    /// `GET /api/invitees/`: a page of the caller's invitees.
    Invitees,
    /// `GET /api/schema/`: the OpenAPI document.
    #[cfg(feature = "openapi")]
    Schema,
}

/// One route of the contract: a method, the paths it answers on, and what it does. A path
/// segment `{id}` stands for any one non-empty segment (the framework crates register the
/// paths as they are: axum and actix-web both read `{id}` so).
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
/// Path of the session list.
pub const SESSIONS: &str = "/api/sessions/";
/// Path of one session (`{id}`: its id).
pub const SESSION: &str = "/api/sessions/{id}/";
/// Path of revoking sessions by scope.
pub const SESSIONS_REVOKE: &str = "/api/sessions/revoke/";
/// Path of the account export.
pub const ACCOUNT_EXPORT: &str = "/api/account/export/";
/// Path of account deletion.
pub const ACCOUNT_DELETE: &str = "/api/account/delete/";
/// Path of the code for a phone change.
pub const PHONE_SEND_CODE: &str = "/api/account/phone/send_code/";
/// Path of a phone change.
pub const PHONE_VERIFY: &str = "/api/account/phone/verify/";
/// Path of the invitee list.
pub const INVITEES: &str = "/api/invitees/";

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
    route(
        Method::Get,
        &[SESSIONS, "/api/sessions"],
        Endpoint::Sessions,
    ),
    // Before `{id}`: "revoke" is this route's (a session id is 32 hex characters).
    route(
        Method::Post,
        &[SESSIONS_REVOKE, "/api/sessions/revoke"],
        Endpoint::RevokeSessions,
    ),
    route(
        Method::Delete,
        &[SESSION, "/api/sessions/{id}"],
        Endpoint::RevokeSession,
    ),
    route(
        Method::Get,
        &[ACCOUNT_EXPORT, "/api/account/export"],
        Endpoint::ExportAccount,
    ),
    route(
        Method::Post,
        &[ACCOUNT_DELETE, "/api/account/delete"],
        Endpoint::DeleteAccount,
    ),
    route(
        Method::Post,
        &[PHONE_SEND_CODE, "/api/account/phone/send_code"],
        Endpoint::PhoneSendCode,
    ),
    route(
        Method::Post,
        &[PHONE_VERIFY, "/api/account/phone/verify"],
        Endpoint::PhoneVerify,
    ),
    route(
        Method::Get,
        &[INVITEES, "/api/invitees"],
        Endpoint::Invitees,
    ),
    route(Method::Get, &[HEALTH, "/health/"], Endpoint::Health),
    route(Method::Get, &[READY, "/ready/"], Endpoint::Ready),
    #[cfg(feature = "openapi")]
    route(Method::Get, &[SCHEMA, "/api/schema"], Endpoint::Schema),
];

/// Whether `path` is one that `pattern` (a path of [`routes`]) stands for.
fn matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('{') {
        return pattern == path;
    }
    let mut wanted = pattern.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The segment of `path` that stands where `pattern` (a path of [`routes`]) has `{id}`, if
/// `pattern` has one and `path` is one of its paths: what the framework crates pass as
/// [`RequestInfo::id`](crate::http::RequestInfo::id) when their router does not say it.
pub fn path_id<'a>(pattern: &str, path: &'a str) -> Option<&'a str> {
    if !matches(pattern, path) {
        return None;
    }
    pattern
        .split('/')
        .zip(path.split('/'))
        .find(|(wanted, _)| wanted.starts_with('{'))
        .map(|(_, given)| given)
}

/// Returns every route of the contract.
pub fn routes() -> &'static [Route] {
    ROUTES
}

/// The endpoint that answers `method` on `path` (a path without its query string), or the
/// contract's reply when none does: `404 not_found` for an unknown path, `405
/// method_not_allowed` with `Allow` for a known path and another method. `GET` routes answer
/// `HEAD` too.
pub fn resolve(method: &str, path: &str) -> Result<Endpoint, Reply> {
    let found = ROUTES
        .iter()
        .find(|route| route.paths.contains(&path))
        .or_else(|| {
            ROUTES
                .iter()
                .find(|route| route.paths.iter().any(|pattern| matches(pattern, path)))
        });
    let Some(route) = found else {
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
            (
                Method::Get,
                ["/api/sessions/", "/api/sessions"],
                Endpoint::Sessions,
            ),
            (
                Method::Post,
                ["/api/sessions/revoke/", "/api/sessions/revoke"],
                Endpoint::RevokeSessions,
            ),
            (
                Method::Delete,
                ["/api/sessions/{id}/", "/api/sessions/{id}"],
                Endpoint::RevokeSession,
            ),
            (
                Method::Get,
                ["/api/account/export/", "/api/account/export"],
                Endpoint::ExportAccount,
            ),
            (
                Method::Post,
                ["/api/account/delete/", "/api/account/delete"],
                Endpoint::DeleteAccount,
            ),
            (
                Method::Post,
                [
                    "/api/account/phone/send_code/",
                    "/api/account/phone/send_code",
                ],
                Endpoint::PhoneSendCode,
            ),
            (
                Method::Post,
                ["/api/account/phone/verify/", "/api/account/phone/verify"],
                Endpoint::PhoneVerify,
            ),
            (
                Method::Get,
                ["/api/invitees/", "/api/invitees"],
                Endpoint::Invitees,
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
                Method::Delete => (&["DELETE"], &["GET", "HEAD", "POST", "PUT", "delete"]),
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
    fn a_session_path_resolves_with_its_id_and_revoke_is_not_an_id() {
        let id = "0123456789abcdef0123456789abcdef";
        for path in [
            format!("/api/sessions/{id}/"),
            format!("/api/sessions/{id}"),
        ] {
            assert_eq!(resolve("DELETE", &path), Ok(Endpoint::RevokeSession));
            assert_eq!(path_id(SESSION, &format!("/api/sessions/{id}/")), Some(id));
            assert_eq!(
                path_id("/api/sessions/{id}", &format!("/api/sessions/{id}")),
                Some(id)
            );
            let reply = resolve("GET", &path).unwrap_err();
            assert_eq!((reply.status, reply.header("allow")), (405, Some("DELETE")));
        }
        assert_eq!(
            resolve("POST", "/api/sessions/revoke/"),
            Ok(Endpoint::RevokeSessions)
        );
        let reply = resolve("DELETE", "/api/sessions/revoke/").unwrap_err();
        assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));
        for path in ["/api/sessions//", "/api/sessions/a/b/", "/api/sessions/a/b"] {
            assert_eq!(resolve("DELETE", path).unwrap_err().status, 404, "{path}");
        }
        assert_eq!(path_id(SESSION, "/api/sessions/"), None);
        assert_eq!(path_id(GET_PROFILE, GET_PROFILE), None);
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
