//! Checks for the framework crates inside an app of their own: the contract under a prefix
//! (axum's `nest`, actix's `scope`) and beside the app's own routes. Each framework crate
//! builds its app and runs these against it.

use refsys_core::{
    ClientLimits, JwtKeys, LogSender, MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore,
    Policy, ReferralService,
};
use serde_json::json;

use crate::{Client, TEST_PHONES, assert_error};

/// A service on in-memory stores that knows the first test phone, with the default client
/// limits.
pub fn service() -> ReferralService {
    let (phone, code) = TEST_PHONES[0];
    let policy = Policy::builder()
        .test_phone(phone, code)
        .build()
        .expect("a policy");
    ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256_random(),
    )
    .policy(policy)
    .client_limits(MemoryRateLimitStore::new(), ClientLimits::default())
    .build()
}

/// The contract answers under `prefix` (a login, a profile, a 405 with `Allow`) and not at
/// the root; the app's own `GET /api/me` still answers.
pub async fn contract_under(client: &Client, prefix: &str) {
    let (phone, code) = TEST_PHONES[0];
    let path = |p: &str| format!("{prefix}{p}");
    let sent = client
        .post(&path("/login/send_code/"), json!({ "phone": phone }))
        .await;
    assert_eq!(sent.status, 200, "send_code under {prefix}");
    let verified = client
        .post(
            &path("/login/verify_code/"),
            json!({ "phone": phone, "code": code }),
        )
        .await;
    let access = verified.str("access");
    let profile = client.get(&path("/get_profile/"), Some(&access)).await;
    assert_eq!(profile.status, 200, "profile under {prefix}");
    let wrong = client.get(&path("/login/send_code/"), None).await;
    assert_error(&wrong, 405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    // Outside the prefix the app answers (its own 404, in whatever shape it has).
    let at_root = client.get("/get_profile/", Some(&access)).await;
    assert_eq!(at_root.status, 404, "the contract at the root too");
    assert_eq!(client.get("/api/me", None).await.status, 200);
}
