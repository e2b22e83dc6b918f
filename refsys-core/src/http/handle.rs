//! [`handle`]: runs an endpoint for a request whose route is already resolved.

use std::net::IpAddr;

use serde::de::DeserializeOwned;

use crate::dto::{
    ChangePhoneRequest, DeleteAccountRequest, HealthResponse, InviteesQuery, InviteesResponse,
    MessageResponse, PhoneResponse, PhoneSendCodeRequest, ProfileView, RefreshRequest,
    RevokeSessionsRequest, RevokedResponse, SendCodeRequest, SessionView, SessionsResponse,
    UseInviteCodeRequest, VerifyCodeRequest, parse_body,
};
use crate::error::Error;
use crate::http::reply::Reply;
use crate::http::routes::Endpoint;
use crate::limits::ClientAction;
use crate::service::ReferralService;

/// Request bodies larger than this get `413 payload_too_large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The reply to a request whose `Content-Length` announces a body larger than
/// [`MAX_BODY_BYTES`], if it does: `413 payload_too_large` with `Connection: close`, which the
/// framework crates send at once, without waiting for a body they would refuse (and without
/// reading it: the connection closes). A missing or malformed value is left to the framework.
pub fn refuse_announced_length(content_length: Option<&str>) -> Option<Reply> {
    let length = content_length?.trim().parse::<u64>().ok()?;
    (length > MAX_BODY_BYTES as u64).then(|| {
        let mut reply = Reply::error(&Error::PayloadTooLarge);
        reply.headers.push(("connection", "close".into()));
        reply
    })
}

/// The reply to a request whose body did not arrive within the
/// [body-read timeout](crate::ClientLimits::body_read_timeout): `408 request_timeout` with
/// `Connection: close` (the rest of the body is never read).
pub fn body_timed_out() -> Reply {
    let mut reply = Reply::error(&Error::RequestTimeout);
    reply.headers.push(("connection", "close".into()));
    reply
}

/// The answer to a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) for contract path `path`, when the origin is
/// [allowed](crate::ClientLimits::allowed_origins): `204` with the route's methods, the
/// request headers the API reads, and a 10-minute cache. `None` otherwise: the request is then
/// answered as any other (`OPTIONS` is `405`), with no CORS headers.
pub fn preflight(
    service: &ReferralService,
    path: &str,
    origin: Option<&str>,
    request_method: Option<&str>,
) -> Option<Reply> {
    let origin = origin.filter(|o| service.client_limits().allows_origin(o))?;
    request_method?;
    let allow = match crate::http::routes::resolve("OPTIONS", path) {
        Err(refused) => refused.header("allow")?.to_owned(),
        Ok(_) => return None,
    };
    let mut reply = Reply::no_content();
    reply.headers.extend([
        ("access-control-allow-origin", origin.to_owned().into()),
        ("access-control-allow-methods", allow.into()),
        (
            "access-control-allow-headers",
            "authorization, content-type".into(),
        ),
        ("access-control-max-age", "600".into()),
        ("vary", "Origin".into()),
    ]);
    Some(reply)
}

/// Adds `Access-Control-Allow-Origin` (and `Vary: Origin`) to `reply` when the request's
/// `origin` is [allowed](crate::ClientLimits::allowed_origins); the framework crates call it
/// on every answer of the contract's routes.
pub fn allow_origin(service: &ReferralService, origin: Option<&str>, reply: &mut Reply) {
    if let Some(origin) = origin.filter(|o| service.client_limits().allows_origin(o)) {
        reply
            .headers
            .push(("access-control-allow-origin", origin.to_owned().into()));
        reply.headers.push(("vary", "Origin".into()));
    }
}

/// What [`handle`] needs to know about a request besides its body.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo<'a> {
    /// The TCP peer's address, if the framework knows it (needed when client limits are on).
    pub peer: Option<IpAddr>,
    /// Every `X-Forwarded-For` header value, in order. Only read when the peer is a
    /// [trusted proxy](crate::TrustedProxies).
    pub forwarded_for: Vec<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `User-Agent` header (kept, bounded, with the session a login starts).
    pub user_agent: Option<&'a str>,
    /// The `{id}` segment of the request's path, for a route that has one
    /// ([`path_id`](crate::http::path_id) reads it, if the router does not).
    pub id: Option<&'a str>,
    /// The query string, without the `?` (read by `GET /api/invitees/`).
    pub query: Option<&'a str>,
}

/// Runs `endpoint` for a request whose body (already read, at most [`MAX_BODY_BYTES`]) is
/// `body`, and returns the reply, error or not.
///
/// Order of checks: client rate limit (send/verify), authentication (protected routes),
/// content type, JSON body, then the service.
pub async fn handle(
    service: &ReferralService,
    endpoint: Endpoint,
    request: &RequestInfo<'_>,
    body: &[u8],
) -> Reply {
    respond(service, endpoint, request, body)
        .await
        .unwrap_or_else(Reply::from)
}

async fn respond(
    service: &ReferralService,
    endpoint: Endpoint,
    request: &RequestInfo<'_>,
    body: &[u8],
) -> Result<Reply, Error> {
    match endpoint {
        Endpoint::SendCode => {
            let client = check_client(service, ClientAction::SendCode, request).await?;
            let input: SendCodeRequest = json_body(request, body)?;
            service
                .send_code_with(&input.phone, client, input.human_check.as_ref())
                .await?;
            Ok(Reply::json(200, &MessageResponse::CODE_SENT))
        }
        Endpoint::VerifyCode => {
            let client = check_client(service, ClientAction::VerifyCode, request).await?;
            let input: VerifyCodeRequest = json_body(request, body)?;
            let login = match client {
                Some(ip) => {
                    service
                        .verify_code_by(&input.phone, &input.code, ip, request.user_agent)
                        .await?
                }
                None => service.verify_code(&input.phone, &input.code).await?,
            };
            Ok(Reply::json(200, &login))
        }
        Endpoint::Profile => {
            let user = service.authenticate_header(request.authorization)?;
            let profile = service.profile(user).await?;
            let shown = service.policy().invitee_phones();
            Ok(Reply::json(200, &ProfileView::new(profile, shown)))
        }
        Endpoint::UseInviteCode => {
            let user = service.authenticate_header(request.authorization)?;
            let input: UseInviteCodeRequest = json_body(request, body)?;
            service.use_invite_code(user, &input.invite_code).await?;
            Ok(Reply::json(200, &MessageResponse::INVITE_APPLIED))
        }
        Endpoint::Refresh => {
            let input: RefreshRequest = json_body(request, body)?;
            Ok(Reply::json(200, &service.refresh(&input.refresh).await?))
        }
        Endpoint::Logout => {
            let input: RefreshRequest = json_body(request, body)?;
            service.logout(&input.refresh).await?;
            Ok(Reply::no_content())
        }
        Endpoint::Sessions => {
            let caller = service.caller_header(request.authorization)?;
            let sessions = service.sessions(&caller).await?;
            let sessions = sessions
                .iter()
                .map(|session| SessionView::new(session, &caller.session))
                .collect();
            Ok(Reply::json(200, &SessionsResponse { sessions }))
        }
        Endpoint::RevokeSession => {
            let caller = service.caller_header(request.authorization)?;
            let id = request.id.ok_or(Error::SessionNotFound)?;
            service.revoke_session(&caller, id).await?;
            Ok(Reply::no_content())
        }
        Endpoint::RevokeSessions => {
            let caller = service.caller_header(request.authorization)?;
            let input: RevokeSessionsRequest = json_body(request, body)?;
            let revoked = service.revoke_sessions(&caller, input.scope).await?;
            Ok(Reply::json(200, &RevokedResponse { revoked }))
        }
        Endpoint::ExportAccount => {
            let caller = service.caller_header(request.authorization)?;
            Ok(Reply::json(200, &service.export_account(&caller).await?))
        }
        Endpoint::DeleteAccount => {
            let client = check_client(service, ClientAction::VerifyCode, request).await?;
            let caller = service.caller_header(request.authorization)?;
            let input: DeleteAccountRequest = json_body(request, body)?;
            service.delete_account(&caller, &input.code, client).await?;
            Ok(Reply::no_content())
        }
        Endpoint::PhoneSendCode => {
            let client = check_client(service, ClientAction::SendCode, request).await?;
            let caller = service.caller_header(request.authorization)?;
            let input: PhoneSendCodeRequest = json_body(request, body)?;
            service
                .send_phone_change_code(
                    &caller,
                    &input.phone,
                    &input.current_code,
                    client,
                    input.human_check.as_ref(),
                )
                .await?;
            Ok(Reply::json(200, &MessageResponse::CODE_SENT))
        }
        Endpoint::PhoneVerify => {
            let client = check_client(service, ClientAction::VerifyCode, request).await?;
            let caller = service.caller_header(request.authorization)?;
            let input: ChangePhoneRequest = json_body(request, body)?;
            let phone = service
                .change_phone(&caller, &input.phone, &input.code, client)
                .await?;
            Ok(Reply::json(200, &PhoneResponse { phone }))
        }
        Endpoint::Invitees => {
            let user = service.authenticate_header(request.authorization)?;
            let query = InviteesQuery::parse(request.query)?;
            let page = service
                .invitees(user, query.cursor.as_deref(), query.limit())
                .await?;
            let shown = service.policy().invitee_phones();
            Ok(Reply::json(200, &InviteesResponse::new(page, shown)))
        }
        Endpoint::Health => Ok(Reply::json(200, &HealthResponse::OK)),
        Endpoint::Ready => {
            service.ready().await?;
            Ok(Reply::json(200, &HealthResponse::OK))
        }
        #[cfg(feature = "openapi")]
        Endpoint::Schema => Ok(Reply::bytes(
            200,
            "application/json",
            crate::http::openapi::json(),
        )),
    }
}

/// Counts `action` against the client's per-IP limit, if it has one, and returns the client's
/// address when it is known (or needed: with client limits on, an unknown peer is an error).
async fn check_client(
    service: &ReferralService,
    action: ClientAction,
    request: &RequestInfo<'_>,
) -> Result<Option<IpAddr>, Error> {
    let limits = service.client_limits();
    let needed = limits.limit(action).is_some()
        || limits.send_code_per_phone.is_some()
        || limits.verify_code_per_phone.is_some();
    if !needed {
        return Ok(request
            .peer
            .map(|peer| service.client_ip(peer, &request.forwarded_for)));
    }
    let peer = request.peer.ok_or_else(|| {
        Error::Internal(
            "client limits are on but the peer address is unknown (axum: serve with \
             `into_make_service_with_connect_info::<SocketAddr>()`)"
                .into(),
        )
    })?;
    let ip = service.client_ip(peer, &request.forwarded_for);
    service.check_client(action, ip).await?;
    Ok(Some(ip))
}

/// Whether `content_type` is JSON: `application/json` or `application/*+json`, parameters
/// allowed. A missing `Content-Type` is not: browsers send a body without a type cross-site
/// with no CORS preflight, so such a body must never be read as JSON.
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Checks the content type (`415 unsupported_media_type`) and parses the body
/// (`400 invalid_request`).
pub fn json_body<T: DeserializeOwned>(request: &RequestInfo<'_>, body: &[u8]) -> Result<T, Error> {
    if !is_json(request.content_type) {
        return Err(Error::UnsupportedMediaType);
    }
    parse_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ClientLimits;

    fn service(limits: ClientLimits) -> ReferralService {
        let policy = crate::Policy::builder()
            .test_phone("+375291000001", "1111")
            .build()
            .unwrap();
        ReferralService::builder(
            crate::MemoryUserStore::new(),
            crate::MemoryOtpStore::new(),
            crate::LogSender,
            crate::JwtKeys::hs256_random(),
        )
        .policy(policy)
        .client_limits(crate::MemoryRateLimitStore::new(), limits)
        .build()
    }

    #[tokio::test]
    async fn limited_routes_need_the_peer_address_unless_limits_are_off() {
        let body = br#"{"phone": "+375291000001"}"#;
        let unknown_peer = RequestInfo {
            content_type: Some("application/json"),
            ..RequestInfo::default()
        };
        let reply = handle(
            &service(ClientLimits::default()),
            Endpoint::SendCode,
            &unknown_peer,
            body,
        )
        .await;
        assert_eq!(reply.status, 500);
        let reply = handle(
            &service(ClientLimits::disabled()),
            Endpoint::SendCode,
            &unknown_peer,
            body,
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }

    #[test]
    fn announced_lengths_over_the_limit_are_refused_at_once() {
        let limit = MAX_BODY_BYTES.to_string();
        let over = (MAX_BODY_BYTES + 1).to_string();
        for refused in [over.as_str(), "99999999999", " 20000 "] {
            let reply = refuse_announced_length(Some(refused)).expect(refused);
            assert_eq!(reply.status, 413);
            assert_eq!(reply.header("connection"), Some("close"));
        }
        for left in [
            Some(limit.as_str()),
            Some("0"),
            None,
            Some("-1"),
            Some("lots"),
        ] {
            assert_eq!(refuse_announced_length(left), None, "{left:?}");
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("application/merge-patch+json"),
        ] {
            assert!(is_json(ok), "{ok:?}");
        }
        for bad in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some(""),
            Some("json"),
            Some("application/+json"),
        ] {
            assert!(!is_json(bad), "{bad:?}");
        }
    }
}
