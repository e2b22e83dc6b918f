//! What the fuzz targets share: a service on the memory stores with a fixed key and clock, a
//! test login, tokens signed with the service's key, and a poll loop for its futures.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use refsys_core::{ClientLimits, TrustedProxies};
use refsys_core::{
    JwtKeys, LogSender, ManualClock, MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore, Policy,
    ReferralService, Timestamp, TokenPair,
};
use serde_json::{Value, json};

/// The HS256 secret of the fuzzed service; the committed token seeds are signed with it.
pub const SECRET: &[u8] = b"refsys fuzzing: a signing secret of 32+ bytes";

/// The service's clock stands here (2023-11-14T22:13:20Z) and never moves.
pub const NOW: u64 = 1_700_000_000;

/// The test phone that logs in without an SMS, and its code.
pub const TEST_PHONE: &str = "+375291000001";
/// The code of [`TEST_PHONE`].
pub const TEST_CODE: &str = "1111";
/// A second test phone, so invite codes can be applied.
pub const TEST_PHONE_2: &str = "+375291000002";
/// The code of [`TEST_PHONE_2`].
pub const TEST_CODE_2: &str = "2222";

/// A fresh service on the memory stores, with the default client limits (peers in
/// `10.0.0.0/8` are trusted proxies) and two test phones.
pub fn service() -> ReferralService {
    let policy = Policy::builder()
        .test_phone(TEST_PHONE, TEST_CODE)
        .test_phone(TEST_PHONE_2, TEST_CODE_2)
        .build()
        .expect("a valid policy");
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).expect("valid CIDRs");
    ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256(SECRET).expect("a long enough secret"),
    )
    .policy(policy)
    .clock(Arc::new(ManualClock::new(Timestamp::from_unix(NOW))))
    .client_limits(
        MemoryRateLimitStore::new(),
        ClientLimits::default().trusted_proxies(proxies),
    )
    .build()
}

/// Logs the test phone in: its first token pair.
pub fn login(service: &ReferralService, phone: &str, code: &str) -> TokenPair {
    let login = block_on(async {
        service.send_code(phone).await.expect("test phone send");
        service
            .verify_code(phone, code)
            .await
            .expect("test phone login")
    });
    TokenPair {
        access: login.access,
        refresh: login.refresh,
    }
}

/// Runs a future of the service on the memory stores, which never wait on anything: it is
/// polled until ready (it is a bug if that takes long).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
    panic!("a memory-store future did not finish");
}

/// Signs `claims` with `alg` and `key`, as refsys does (header `{"typ":"JWT","alg":...}`).
pub fn sign(alg: Algorithm, claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key))
        .expect("HMAC signing does not fail")
}

/// The claims refsys issues, for `sub` and `token_type`, live at [`NOW`].
pub fn claims(sub: &str, token_type: &str) -> Value {
    json!({
        "sub": sub,
        "exp": NOW + 3600,
        "iat": NOW,
        "nbf": NOW,
        "jti": "00000000000000000000000000000001",
        "token_type": token_type,
        "fam": "00000000000000000000000000000002",
    })
}

/// Tokens signed with [`SECRET`] (so "signed by the key") that the service must accept:
/// access tokens for `authenticate`, refresh tokens for `logout` (a refresh whose family the
/// store does not know is refused). The committed token seeds are these strings.
pub struct Signed {
    /// Live access tokens, well-formed claims.
    pub access: Vec<String>,
    /// Live refresh tokens, well-formed claims.
    pub refresh: Vec<String>,
}

impl Signed {
    /// The fixed set (HS256 signing is deterministic, so it is the same every run).
    pub fn new() -> Self {
        Signed {
            access: vec![
                sign(Algorithm::HS256, &claims("1", "access"), SECRET),
                sign(Algorithm::HS256, &claims("2", "access"), SECRET),
            ],
            refresh: vec![sign(Algorithm::HS256, &claims("1", "refresh"), SECRET)],
        }
    }
}

impl Default for Signed {
    fn default() -> Self {
        Self::new()
    }
}
