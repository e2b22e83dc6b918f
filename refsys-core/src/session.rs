//! Sessions: one login's refresh-token family, as a user sees it in a session list.
//!
//! A session is recorded with the client it started from ([`SessionClient`]: the client's
//! network, never its address, and its user agent, bounded) and listed with when it was
//! created and last used ([`Session`]). [`SessionScope`] says which of a user's sessions a
//! revocation ends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{FamilyId, Timestamp};

/// The longest user agent kept with a session, in characters; a longer one is cut.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// Where a session started: what a session list shows so that a user can tell their devices
/// apart, and no more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionClient {
    /// The client's network: an IPv4 `/24` (`203.0.113.0/24`) or an IPv6 `/48`
    /// (`2001:db8::/48`), never the full address. `None` when the address was not known.
    pub network: Option<String>,
    /// The client's `User-Agent`, at most [`MAX_USER_AGENT_CHARS`] characters, control
    /// characters removed. `None` when there was none.
    pub user_agent: Option<String>,
}

impl SessionClient {
    /// The client at `ip` (if known) with `user_agent` (if sent), bounded as the fields say.
    /// An IPv4 address mapped into IPv6 (`::ffff:203.0.113.7`) counts as IPv4.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(|agent| {
                agent
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .map(|agent| agent.trim().to_owned())
            .filter(|agent| !agent.is_empty());
        Self {
            network: ip.map(session_network),
            user_agent,
        }
    }
}

/// The network shown for a session from `ip`: its IPv4 `/24` or IPv6 `/48`.
pub fn session_network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("{}/24", Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => {
            let kept = u128::from(v6) & !((1u128 << 80) - 1);
            format!("{}/48", Ipv6Addr::from(kept))
        }
    }
}

/// A live session (not revoked, not expired) of a user, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session's id: its refresh-token family, also carried by its access tokens.
    pub id: FamilyId,
    /// When it started (the login).
    pub created_at: Timestamp,
    /// When it was last used: its last refresh, or its start if it was never refreshed.
    pub last_used_at: Timestamp,
    /// Where it started.
    pub client: SessionClient,
}

/// Who is calling: the user of an access token and the session it belongs to (see
/// [`ReferralService::caller`](crate::ReferralService::caller)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user: crate::UserId,
    /// The session (refresh-token family) the access token was issued in.
    pub session: FamilyId,
}

/// Which of a user's live sessions a revocation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionScope<'a> {
    /// That one, if it is the user's and live.
    One(&'a FamilyId),
    /// All but that one (the caller's own: "sign out everywhere else").
    AllBut(&'a FamilyId),
    /// All of them.
    All,
}

impl SessionScope<'_> {
    /// Whether a session `id` of the user is in this scope.
    pub fn covers(&self, id: &FamilyId) -> bool {
        match self {
            Self::One(one) => *one == id,
            Self::AllBut(kept) => *kept != id,
            Self::All => true,
        }
    }
}

/// What an operator's [`delete_user`](crate::ReferralService::delete_user) or
/// [`revoke_user_sessions`](crate::ReferralService::revoke_user_sessions) revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionsRevoked {
    /// How many live sessions it revoked.
    pub sessions: u64,
    /// Whether the revocations reached the list the other instances read (with
    /// [instant revocation](crate::revocation)); `false` when the OTP store could not be
    /// written: the other instances then accept those sessions' access tokens until they
    /// expire (the refresh tokens are refused everywhere).
    pub shared: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_keep_the_prefix_only() {
        let net = |ip: &str| session_network(ip.parse().unwrap());
        assert_eq!(net("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(net("::ffff:203.0.113.77"), "203.0.113.0/24");
        assert_eq!(net("2001:db8:abcd:12:1:2:3:4"), "2001:db8:abcd::/48");
        assert_eq!(net("::1"), "::/48");
    }

    #[test]
    fn user_agents_are_bounded_and_cleaned() {
        let long = "a".repeat(1000);
        let client = SessionClient::new(None, Some(&long));
        assert_eq!(
            client.user_agent.unwrap().chars().count(),
            MAX_USER_AGENT_CHARS
        );
        let client = SessionClient::new(None, Some("Mozilla/5.0\r\nX-Evil: 1\u{7}"));
        assert_eq!(client.user_agent.as_deref(), Some("Mozilla/5.0X-Evil: 1"));
        assert_eq!(SessionClient::new(None, Some(" \t ")).user_agent, None);
        let wide = "é".repeat(300);
        let client = SessionClient::new(None, Some(&wide));
        assert_eq!(
            client.user_agent.unwrap().chars().count(),
            MAX_USER_AGENT_CHARS
        );
        assert_eq!(SessionClient::new(None, None), SessionClient::default());
    }

    #[test]
    fn scopes() {
        let (a, b) = (FamilyId::random(), FamilyId::random());
        assert!(SessionScope::One(&a).covers(&a));
        assert!(!SessionScope::One(&a).covers(&b));
        assert!(!SessionScope::AllBut(&a).covers(&a));
        assert!(SessionScope::AllBut(&a).covers(&b));
        assert!(SessionScope::All.covers(&a));
    }
}
