//! The framework-independent half of the HTTP API: routes, request handling, replies.
//!
//! `refsys-axum` and `refsys-actix` only translate between their framework and this module:
//! they register every [`Route`] of [`routes`], read the body (at most [`MAX_BODY_BYTES`]),
//! collect a [`RequestInfo`], call [`handle`], and write the [`Reply`] back. Everything the
//! contract (`API.md`) decides — which check comes first, status codes, JSON bodies, the
//! `WWW-Authenticate` and `Retry-After` headers — is decided here once, so both frameworks
//! answer byte for byte the same.
//!
//! Per-client rate limits ([`ClientLimits`]) live here too: the service counts
//! `send_code` and `verify_code` calls per client IP, and `use_invite_code` calls per user,
//! through a [`RateLimitStore`](crate::RateLimitStore), and resolves the client IP from the
//! peer address and `X-Forwarded-For` with [`TrustedProxies`].

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ReferralService;
use crate::dto::{
    HealthResponse, MessageResponse, RefreshRequest, SendCodeRequest, UseInviteCodeRequest,
    VerifyCodeRequest, parse_body,
};
use crate::error::Error;

/// Request bodies larger than this get `413 payload_too_large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

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
}

/// What a route does; [`handle`] runs it.
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
    /// A Swagger UI file (`/api/schema/swagger-ui/...`).
    #[cfg(feature = "openapi")]
    SwaggerUi(&'static crate::openapi::Asset),
    /// `GET /api/schema/swagger-ui` (no slash): a redirect to the slashed path, so the page's
    /// relative asset links resolve.
    #[cfg(feature = "openapi")]
    SwaggerUiRedirect,
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
/// Path of Swagger UI.
pub const SWAGGER_UI: &str = "/api/schema/swagger-ui/";

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
    #[cfg(feature = "openapi")]
    route(
        Method::Get,
        &["/api/schema/swagger-ui"],
        Endpoint::SwaggerUiRedirect,
    ),
    #[cfg(feature = "openapi")]
    route(
        Method::Get,
        &[SWAGGER_UI, "/api/schema/swagger-ui/index.html"],
        Endpoint::SwaggerUi(&crate::openapi::INDEX_HTML),
    ),
    #[cfg(feature = "openapi")]
    route(
        Method::Get,
        &["/api/schema/swagger-ui/swagger-ui.css"],
        Endpoint::SwaggerUi(&crate::openapi::SWAGGER_UI_CSS),
    ),
    #[cfg(feature = "openapi")]
    route(
        Method::Get,
        &["/api/schema/swagger-ui/swagger-ui-bundle.js"],
        Endpoint::SwaggerUi(&crate::openapi::SWAGGER_UI_BUNDLE_JS),
    ),
    #[cfg(feature = "openapi")]
    route(
        Method::Get,
        &["/api/schema/swagger-ui/swagger-initializer.js"],
        Endpoint::SwaggerUi(&crate::openapi::SWAGGER_INITIALIZER_JS),
    ),
];

/// Every route the framework crates register.
pub fn routes() -> &'static [Route] {
    ROUTES
}

/// What [`handle`] needs to know about a request besides its body.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo<'a> {
    /// The TCP peer's address, if the framework knows it (needed when client limits are on).
    pub peer: Option<IpAddr>,
    /// Every `X-Forwarded-For` header value, in order. Only read when the peer is a
    /// [trusted proxy](TrustedProxies).
    pub forwarded_for: Vec<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
}

/// A response, ready for a framework to write: status, headers, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers (lower-case names), `Content-Type` included when there is a body.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The body.
    pub body: Cow<'static, [u8]>,
}

impl Reply {
    /// `status` with `value` as its JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                headers: vec![("content-type", "application/json".into())],
                body: body.into(),
            },
            Err(e) => Reply::error(&Error::Internal(format!("serializing a reply: {e}"))),
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            headers: Vec::new(),
            body: Cow::Borrowed(&[]),
        }
    }

    /// The contract's response for `error`: its status, the [`ErrorBody`](crate::ErrorBody)
    /// as JSON, `WWW-Authenticate: Bearer` on 401 and `Retry-After` on 429. Server-side
    /// failures (5xx) are logged here, with their cause.
    pub fn error(error: &Error) -> Reply {
        let (status, code) = error.http();
        if status >= 500 {
            tracing::error!(code, error = ?error, "request failed");
        }
        let mut reply = Reply::json(status, &error.body());
        if error.is_unauthorized() {
            reply.headers.push(("www-authenticate", "Bearer".into()));
        }
        if let Some(seconds) = error.retry_after() {
            reply
                .headers
                .push(("retry-after", seconds.to_string().into()));
        }
        reply
    }

    /// The value of header `name` (lower case), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl From<Error> for Reply {
    fn from(error: Error) -> Reply {
        Reply::error(&error)
    }
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
            check_client(service, ClientAction::SendCode, request).await?;
            let input: SendCodeRequest = json_body(request, body)?;
            service.send_code(&input.phone).await?;
            Ok(Reply::json(200, &MessageResponse::CODE_SENT))
        }
        Endpoint::VerifyCode => {
            check_client(service, ClientAction::VerifyCode, request).await?;
            let input: VerifyCodeRequest = json_body(request, body)?;
            let login = service.verify_code(&input.phone, &input.code).await?;
            Ok(Reply::json(200, &login))
        }
        Endpoint::Profile => {
            let user = service.authenticate_header(request.authorization)?;
            Ok(Reply::json(200, &service.profile(user).await?))
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
        Endpoint::Health => Ok(Reply::json(200, &HealthResponse::OK)),
        Endpoint::Ready => {
            service.ready().await?;
            Ok(Reply::json(200, &HealthResponse::OK))
        }
        #[cfg(feature = "openapi")]
        Endpoint::Schema => Ok(Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: Cow::Borrowed(crate::openapi::json()),
        }),
        #[cfg(feature = "openapi")]
        Endpoint::SwaggerUi(asset) => Ok(Reply {
            status: 200,
            headers: vec![
                ("content-type", asset.content_type.into()),
                ("cache-control", "public, max-age=3600".into()),
            ],
            body: Cow::Borrowed(asset.bytes),
        }),
        #[cfg(feature = "openapi")]
        Endpoint::SwaggerUiRedirect => Ok(Reply {
            status: 308,
            headers: vec![("location", "swagger-ui/".into())],
            body: Cow::Borrowed(&[]),
        }),
    }
}

async fn check_client(
    service: &ReferralService,
    action: ClientAction,
    request: &RequestInfo<'_>,
) -> Result<(), Error> {
    if service.client_limits().limit(action).is_none() {
        return Ok(());
    }
    let peer = request.peer.ok_or_else(|| {
        Error::Internal(
            "client limits are on but the peer address is unknown (axum: serve with \
             `into_make_service_with_connect_info::<SocketAddr>()`)"
                .into(),
        )
    })?;
    let ip = service.client_ip(peer, &request.forwarded_for);
    service.check_client(action, ip).await
}

/// Whether `content_type` is JSON: `application/json` or `application/*+json`, parameters
/// allowed. A missing `Content-Type` is accepted (the body must still be JSON).
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return true;
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

/// An operation limited per client IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAction {
    /// `POST /login/send_code/`.
    SendCode,
    /// `POST /login/verify_code/`.
    VerifyCode,
    /// `POST /use_invite_code/` (counted per user, not per IP).
    UseInviteCode,
}

impl ClientAction {
    /// A short name, used in rate-limit store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAction::SendCode => "send_code",
            ClientAction::VerifyCode => "verify_code",
            ClientAction::UseInviteCode => "use_invite_code",
        }
    }
}

/// At most `max` calls per `window` (fixed windows), per client or, for the SMS budget, per
/// deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed per window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

impl RateLimit {
    /// `max` calls per minute.
    pub const fn per_minute(max: u32) -> RateLimit {
        RateLimit {
            max,
            window: Duration::from_secs(60),
        }
    }

    /// `max` calls per hour.
    pub const fn per_hour(max: u32) -> RateLimit {
        RateLimit {
            max,
            window: Duration::from_secs(3600),
        }
    }
}

/// Per-client limits: on `send_code` and `verify_code` per client IP, on top of the per-phone
/// limits of the [`Policy`](crate::Policy), and on `use_invite_code` per user, so invite codes
/// cannot be found by sweeping the code space. Set with
/// [`ServiceBuilder::client_limits`](crate::ServiceBuilder::client_limits).
///
/// The default is on: **10 `send_code` and 30 `verify_code` per IP per minute, 10
/// `use_invite_code` per user per hour**, trusting no proxy (the client is the TCP peer).
/// Over a limit the answer is `429 rate_limited` with `Retry-After`. IPv6 clients are counted per `/64`, the block one
/// subscriber usually gets. Behind a reverse proxy, set [`trusted_proxies`](Self::trusted_proxies),
/// or every client shares the proxy's budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// `send_code` calls per client; `None` for no limit.
    pub send_code: Option<RateLimit>,
    /// `verify_code` calls per client; `None` for no limit.
    pub verify_code: Option<RateLimit>,
    /// `use_invite_code` calls per user (counted by the service, whoever calls it, malformed
    /// codes included); `None` for no limit.
    pub use_invite_code: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            send_code: Some(RateLimit::per_minute(10)),
            verify_code: Some(RateLimit::per_minute(30)),
            use_invite_code: Some(RateLimit::per_hour(10)),
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

impl ClientLimits {
    /// No per-client limits (the per-phone limits of the policy still hold).
    pub fn disabled() -> Self {
        ClientLimits {
            send_code: None,
            verify_code: None,
            use_invite_code: None,
            trusted_proxies: TrustedProxies::none(),
        }
    }

    /// Replaces the trusted proxies.
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The limit on `action`, if any.
    pub fn limit(&self, action: ClientAction) -> Option<RateLimit> {
        match action {
            ClientAction::SendCode => self.send_code,
            ClientAction::VerifyCode => self.verify_code,
            ClientAction::UseInviteCode => self.use_invite_code,
        }
    }

    /// The rate-limit store key for `action` by authenticated user `user`.
    pub fn user_key(action: ClientAction, user: crate::UserId) -> String {
        format!("user:{}:{user}", action.as_str())
    }

    /// The rate-limit store key for `action` by `ip`: IPv4 addresses as they are, IPv6
    /// addresses by their `/64`.
    pub fn key(action: ClientAction, ip: IpAddr) -> String {
        match ip.to_canonical() {
            IpAddr::V4(v4) => format!("client:{}:{v4}", action.as_str()),
            IpAddr::V6(v6) => {
                let block = Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)));
                format!("client:{}:{block}/64", action.as_str())
            }
        }
    }
}

/// The proxies whose `X-Forwarded-For` header is believed: a list of CIDR blocks.
///
/// The client IP is found by walking `X-Forwarded-For` from the right (the entry the nearest
/// proxy appended) while the hop is trusted; the first untrusted address is the client. An
/// untrusted peer's header is ignored, so clients cannot spoof their address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a ^ b) >> shift == 0
}

/// A trusted-proxy entry that is not an IP address or a CIDR block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR block: {0:?}")]
pub struct InvalidCidr(pub String);

impl TrustedProxies {
    /// Trust no proxy: the client is always the TCP peer (the default).
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    /// Trust these addresses or CIDR blocks, e.g. `["127.0.0.1", "10.0.0.0/8", "fd00::/8"]`.
    pub fn new<I, S>(entries: I) -> Result<Self, InvalidCidr>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                let invalid = || InvalidCidr(entry.to_owned());
                let (addr, prefix) = match entry.split_once('/') {
                    Some((addr, prefix)) => (addr, Some(prefix)),
                    None => (entry, None),
                };
                let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
                let addr = addr.to_canonical();
                let bits = if addr.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    Some(p) => p
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= bits)
                        .ok_or_else(invalid)?,
                    None => bits,
                };
                Ok(Cidr { addr, prefix })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client IP of a request from `peer` carrying these `X-Forwarded-For` values.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops = forwarded_for.iter().rev().flat_map(|v| v.rsplit(','));
        for hop in hops {
            let Some(ip) = parse_hop(hop.trim()) else {
                // Garbage: the trusted proxy to its right is the best we know.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cidr) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}/{}", cidr.addr, cidr.prefix)?;
        }
        Ok(())
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let none = TrustedProxies::none();
        assert_eq!(none.client_ip(ip("1.2.3.4"), &["9.9.9.9"]), ip("1.2.3.4"));
    }

    #[test]
    fn walks_forwarded_for_from_the_right_through_trusted_hops() {
        let proxies = TrustedProxies::new(["10.0.0.0/8", "127.0.0.1"]).unwrap();
        let peer = ip("127.0.0.1");
        assert_eq!(proxies.client_ip(peer, &[]), peer);
        assert_eq!(
            proxies.client_ip(peer, &["6.6.6.6, 5.5.5.5, 10.1.2.3"]),
            ip("5.5.5.5")
        );
        // Several headers read as one list, in order.
        assert_eq!(
            proxies.client_ip(peer, &["6.6.6.6", "5.5.5.5", "10.0.0.1"]),
            ip("5.5.5.5")
        );
        assert_eq!(proxies.client_ip(peer, &["10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(proxies.client_ip(peer, &["junk, 10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(
            proxies.client_ip(peer, &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.9"), &["7.7.7.7"]),
            ip("7.7.7.7")
        );
    }

    #[test]
    fn cidrs_parse_and_match() {
        let proxies = TrustedProxies::new(["192.168.0.0/16", "fd00::/8", "::1"]).unwrap();
        assert!(proxies.trusts(ip("192.168.44.1")));
        assert!(!proxies.trusts(ip("192.169.0.1")));
        assert!(proxies.trusts(ip("fd12::5")));
        assert!(proxies.trusts(ip("::1")));
        assert!(!proxies.trusts(ip("::2")));
        assert!(
            TrustedProxies::new(["0.0.0.0/0"])
                .unwrap()
                .trusts(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(TrustedProxies::new([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = ClientLimits::key(ClientAction::SendCode, ip("2001:db8:1:2:aaaa::1"));
        let b = ClientLimits::key(ClientAction::SendCode, ip("2001:db8:1:2:bbbb::2"));
        assert_eq!(a, b);
        assert_eq!(a, "client:send_code:2001:db8:1:2::/64");
        assert_eq!(
            ClientLimits::key(ClientAction::VerifyCode, ip("::ffff:1.2.3.4")),
            "client:verify_code:1.2.3.4"
        );
    }

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
        let unknown_peer = RequestInfo::default();
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
    fn json_content_types() {
        for ok in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("application/merge-patch+json"),
        ] {
            assert!(is_json(ok), "{ok:?}");
        }
        for bad in [
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
