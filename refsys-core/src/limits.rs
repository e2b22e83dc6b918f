//! Per-client limits: how many `send_code` and `verify_code` calls one client IP may make,
//! how many `use_invite_code` calls one user may make, and which proxies' `X-Forwarded-For`
//! to believe when finding the client IP.
//!
//! The service counts these through a [`RateLimitStore`](crate::RateLimitStore); the HTTP
//! layer only passes the peer address and headers in.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::{Phone, UserId};

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
    /// `POST /login/send_code/` to one phone, counted per client network.
    SendCodeToPhone,
    /// `POST /login/verify_code/` for one phone, counted per client network.
    VerifyCodeForPhone,
}

impl ClientAction {
    /// A short name, used in rate-limit store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAction::SendCode => "send_code",
            ClientAction::VerifyCode => "verify_code",
            ClientAction::UseInviteCode => "use_invite_code",
            ClientAction::SendCodeToPhone => "send_code_to_phone",
            ClientAction::VerifyCodeForPhone => "verify_code_for_phone",
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
/// The default is on: **10 `send_code` and 30 `verify_code` per IP per minute, 5 codes to
/// one phone and 20 `verify_code` calls for one phone per client network per hour, 10
/// `use_invite_code` per user per hour**, trusting no proxy (the client is the TCP peer).
/// The per-phone limits keep one client from spending a phone's own budgets (its send window
/// and failure budget in the [`Policy`](crate::Policy)) and so locking its owner out.
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
    /// `send_code` calls to one phone from one client network (an IPv4 `/24`, an IPv6
    /// `/64`); `None` for no limit. Kept below the phone's own window
    /// ([`OtpPolicy::max_sends_per_window`](crate::OtpPolicy::max_sends_per_window)), so that
    /// no single client can use that window up and keep the phone's owner from getting codes.
    pub send_code_per_phone: Option<RateLimit>,
    /// `verify_code` calls for one phone from one client network; `None` for no limit. Kept
    /// below the phone's failure budget ([`OtpPolicy::max_failures`](crate::OtpPolicy::max_failures)),
    /// so that no single client can lock the phone.
    pub verify_code_per_phone: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Web origins (`https://app.example`) whose pages may call the API from a browser (CORS);
    /// empty by default: no CORS headers at all, so browsers keep other sites' pages from
    /// reading the API's answers.
    pub allowed_origins: Vec<String>,
    /// How long a client may take to send a request body once its headers arrived; the
    /// framework crates answer `408 request_timeout` and close the connection after it
    /// (default 10 s). Not a rate limit: [`disabled`](Self::disabled) keeps it.
    pub body_read_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            send_code: Some(RateLimit::per_minute(10)),
            verify_code: Some(RateLimit::per_minute(30)),
            use_invite_code: Some(RateLimit::per_hour(10)),
            send_code_per_phone: Some(RateLimit::per_hour(5)),
            verify_code_per_phone: Some(RateLimit::per_hour(20)),
            trusted_proxies: TrustedProxies::none(),
            allowed_origins: Vec::new(),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientLimits {
    /// No per-client rate limits (the per-phone limits of the policy still hold, and so does
    /// the default body-read timeout).
    pub fn disabled() -> Self {
        ClientLimits {
            send_code: None,
            verify_code: None,
            use_invite_code: None,
            send_code_per_phone: None,
            verify_code_per_phone: None,
            ..ClientLimits::default()
        }
    }

    /// Replaces the origins allowed to call the API from a browser (exact match, e.g.
    /// `https://app.example`; no trailing slash).
    #[must_use]
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Whether `origin` (an `Origin` header's value) may call the API from a browser.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }

    /// Replaces the body-read timeout.
    #[must_use]
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
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
            ClientAction::SendCodeToPhone => self.send_code_per_phone,
            ClientAction::VerifyCodeForPhone => self.verify_code_per_phone,
        }
    }

    /// The rate-limit store key for `action` on `phone` by the network of `ip`: an IPv4 `/24`
    /// or an IPv6 `/64`.
    pub fn phone_key(action: ClientAction, phone: &Phone, ip: IpAddr) -> String {
        format!(
            "phone:{}:{}:{}",
            action.as_str(),
            network(ip),
            phone.as_str()
        )
    }

    /// The rate-limit store key for `action` by authenticated user `user`.
    pub fn user_key(action: ClientAction, user: UserId) -> String {
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

/// The network a client address belongs to, for limits per network: its IPv4 `/24` or its
/// IPv6 `/64`, e.g. `203.0.113.0/24`.
pub fn network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("{}/24", std::net::Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => {
            format!(
                "{}/64",
                Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))
            )
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
}
