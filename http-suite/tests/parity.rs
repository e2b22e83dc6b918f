//! The same request sequence against an axum server and an actix server: identical status,
//! headers (but `Date`) and body, once tokens and invite codes are normalised.

use http_suite::transcript::transcript;
use http_suite::{Framework, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_and_actix_answer_byte_for_byte_the_same() {
    let axum = TestServer::start(Framework::Axum).await;
    let actix = TestServer::start(Framework::Actix).await;
    let from_axum = transcript(&axum).await;
    let from_actix = transcript(&actix).await;
    assert_eq!(from_axum.len(), from_actix.len());
    assert!(from_axum.len() >= 80, "{} steps", from_axum.len());
    let mut codes = std::collections::BTreeSet::new();
    for (a, b) in from_axum.iter().zip(&from_actix) {
        assert_eq!(a, b, "axum (left) and actix (right) differ");
        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&a.body)
            && let Some(code) = body["code"].as_str()
        {
            codes.insert(code.to_owned());
        }
    }
    // Every error code of the contract came up.
    for code in [
        "invalid_request",
        "invalid_phone",
        "resend_cooldown",
        "sms_failed",
        "code_expired",
        "code_invalid",
        "too_many_attempts",
        "unauthorized",
        "own_invite_code",
        "invite_code_not_found",
        "invite_already_activated",
        "invite_cycle",
        "invalid_token",
        "rate_limited",
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
        "not_ready",
        "store_unavailable",
    ] {
        assert!(codes.contains(code), "{code} not exercised");
    }
}
