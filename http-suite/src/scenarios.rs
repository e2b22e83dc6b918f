//! The scenarios: one async function per behaviour of `API.md`, each on its own fresh server.

use std::time::Duration;

use refsys_core::{ClientLimits, TrustedProxies};
use serde_json::{Value, json};

use crate::{Framework, Setup, TEST_PHONES, TestServer, assert_error};

mod accounts;
mod invitees;
pub use accounts::*;
pub use invitees::*;

const SEND: &str = "/login/send_code/";
const VERIFY: &str = "/login/verify_code/";
const PROFILE: &str = "/get_profile/";
const USE_INVITE: &str = "/use_invite_code/";
const REFRESH: &str = "/api/token/refresh/";
const LOGOUT: &str = "/api/token/logout/";

/// Ordinary (non-test) phones: their codes go through the recording SMS sender.
const PHONE: &str = "+375291000010";

fn phone(i: usize) -> String {
    format!("+37529100{:04}", 100 + i)
}

/// send → verify → profile → use_invite_code → profile shows the invitee.
pub async fn happy_path(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let (alice_phone, alice_code) = TEST_PHONES[0];
    let (bob_phone, bob_code) = TEST_PHONES[1];

    let sent = c.post(SEND, json!({ "phone": alice_phone })).await;
    assert_eq!(sent.status, 200);
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.body,
        br#"{"message":"Verification code has been sent successfully."}"#
    );
    let login = c
        .post(VERIFY, json!({ "phone": alice_phone, "code": alice_code }))
        .await;
    assert_eq!(login.status, 200);
    let alice = login.json();
    let keys: Vec<&String> = alice.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{alice}");
    assert!(alice["user_id"].is_i64());
    let alice_access = alice["access"].as_str().unwrap();
    assert_eq!(alice_access.split('.').count(), 3, "a JWT");

    let profile = c.get(PROFILE, Some(alice_access)).await;
    assert_eq!(profile.status, 200);
    let body = profile.json();
    assert_eq!(body["phone"], alice_phone);
    assert_eq!(body["activated_invite_code"], Value::Null);
    assert_eq!(body["invited_users"], json!([]));
    assert_eq!(body["invited_count"], 0);
    let alice_invite = body["own_invite_code"].as_str().unwrap().to_owned();
    assert_eq!(alice_invite.len(), 6);
    assert_eq!(body.as_object().unwrap().len(), 5, "{body}");

    let bob = c.login(bob_phone, bob_code).await;
    assert_ne!(bob["user_id"], alice["user_id"]);
    let bob_access = bob["access"].as_str().unwrap();
    let applied = c
        .post_as(
            USE_INVITE,
            Some(bob_access),
            json!({ "invite_code": alice_invite }),
        )
        .await;
    assert_eq!(applied.status, 200);
    assert_eq!(
        applied.body,
        br#"{"message":"Invite code applied successfully. Welcome!"}"#
    );

    let alice_profile = c.get(PROFILE, Some(alice_access)).await.json();
    assert_eq!(alice_profile["invited_users"], json!([bob_phone]));
    assert_eq!(alice_profile["invited_count"], 1);
    let bob_profile = c.get(PROFILE, Some(bob_access)).await.json();
    assert_eq!(bob_profile["activated_invite_code"], json!(alice_invite));

    // A second login finds the same user.
    server.advance(Duration::from_secs(61));
    let again = c.login(alice_phone, alice_code).await;
    assert_eq!(again["user_id"], alice["user_id"]);
}

/// The phone is normalised; the code goes to the SMS sender, never into the response.
pub async fn send_code_succeeds_and_normalises_the_phone(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let sent = c
        .post(SEND, json!({ "phone": "+375 (29) 100-00-10" }))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    let code = server.last_code(PHONE);
    assert_eq!(code.len(), 4);
    assert!(code.chars().all(|c| c.is_ascii_digit()));
    assert!(!String::from_utf8_lossy(&sent.body).contains(&code));
    let login = c
        .post(VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    assert_eq!(login.status, 200, "{}", login.json());
    let access = login.str("access");
    assert_eq!(c.get(PROFILE, Some(&access)).await.json()["phone"], PHONE);
}

/// 400 `invalid_request`: not JSON, `phone` missing or not a string.
pub async fn send_code_rejects_malformed_bodies(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for body in [
        &b"not json"[..],
        b"",
        b"{",
        b"[]",
        b"{}",
        br#"{"phone": 375333478282}"#,
        br#"{"phone": null}"#,
    ] {
        let res = c
            .request(
                "POST",
                SEND,
                &[("content-type", "application/json")],
                Some(body.to_vec()),
            )
            .await;
        assert_error(&res, 400, "invalid_request");
    }
}

/// 400 `invalid_phone`: not a number, or outside the allowed regions (BY and US here).
pub async fn send_code_rejects_invalid_phones(framework: Framework) {
    let server = TestServer::start(framework).await;
    for phone in ["12", "not a phone", "+375 29 1", "+44 20 7946 0958"] {
        let res = server.client.post(SEND, json!({ "phone": phone })).await;
        assert_error(&res, 400, "invalid_phone");
    }
}

/// 429 `resend_cooldown` with `Retry-After`.
pub async fn send_code_resend_cooldown(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    assert_eq!(c.post(SEND, json!({ "phone": PHONE })).await.status, 200);
    let res = c.post(SEND, json!({ "phone": PHONE })).await;
    let body = assert_error(&res, 429, "resend_cooldown");
    assert!(body["retry_after"].as_u64().unwrap() <= 60);
    server.advance(Duration::from_secs(61));
    assert_eq!(c.post(SEND, json!({ "phone": PHONE })).await.status, 200);
}

/// 429 `too_many_codes` once the rolling window is full.
pub async fn send_code_too_many_codes(framework: Framework) {
    let server = TestServer::start_with(framework, behind_a_proxy()).await;
    let c = &server.client;
    let max = server.service.policy().otp().max_sends_per_window;
    // From ever new client networks, so that only the phone's own window counts.
    for i in 0..max {
        let res = c
            .post_from(&network(i), SEND, json!({ "phone": PHONE }))
            .await;
        assert_eq!(res.status, 200, "{}", res.json());
        server.advance(Duration::from_secs(61));
    }
    let res = c
        .post_from(&network(max), SEND, json!({ "phone": PHONE }))
        .await;
    assert_error(&res, 429, "too_many_codes");
}

/// A setup whose server believes `X-Forwarded-For` from the test client (127.0.0.1 / ::1).
fn behind_a_proxy() -> Setup {
    Setup {
        limits: ClientLimits::default()
            .trusted_proxies(TrustedProxies::new(["127.0.0.1", "::1"]).unwrap()),
        ..Setup::default()
    }
}

/// A client address in network `i` (a `/24` of its own).
fn network(i: u32) -> String {
    format!("198.51.{}.7", i % 256)
}

/// One client network cannot use up a phone's send window or lock it: it gets at most 5 codes
/// and 20 `verify_code` calls for the phone per hour (`429 rate_limited`), and the phone's
/// owner, from another network, still gets a code and logs in.
pub async fn one_network_cannot_lock_out_a_phone(framework: Framework) {
    let server = TestServer::start_with(framework, behind_a_proxy()).await;
    let c = &server.client;
    let (attacker, other_host, owner) = ("203.0.113.5", "203.0.113.77", "192.0.2.10");
    for _ in 0..5 {
        let res = c.post_from(attacker, SEND, json!({ "phone": PHONE })).await;
        assert_eq!(res.status, 200, "{}", res.json());
        server.advance(Duration::from_secs(61));
    }
    // The sixth, also from another host of the same /24: refused for that network only.
    for ip in [attacker, other_host] {
        let res = c.post_from(ip, SEND, json!({ "phone": PHONE })).await;
        let body = assert_error(&res, 429, "rate_limited");
        assert!(body["retry_after"].as_u64().unwrap() > 0);
    }
    // 20 wrong codes, then refused before the code is even checked.
    let wrong = wrong_code(&server.last_code(PHONE));
    for _ in 0..20 {
        let res = c
            .post_from(attacker, VERIFY, json!({ "phone": PHONE, "code": wrong }))
            .await;
        assert!(res.status == 400 || res.status == 429, "{}", res.json());
        assert_ne!(res.json()["code"], "phone_locked");
    }
    let res = c
        .post_from(attacker, VERIFY, json!({ "phone": PHONE, "code": wrong }))
        .await;
    assert_error(&res, 429, "rate_limited");
    // The owner gets a code and logs in.
    let res = c.post_from(owner, SEND, json!({ "phone": PHONE })).await;
    assert_eq!(res.status, 200, "{}", res.json());
    let code = server.last_code(PHONE);
    let res = c
        .post_from(owner, VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
}

/// 502 `sms_failed`, and the failed send costs the user nothing.
pub async fn send_code_sms_failed(framework: Framework) {
    let server = TestServer::start(framework).await;
    server.fail_sms(true);
    let res = server.client.post(SEND, json!({ "phone": PHONE })).await;
    assert_error(&res, 502, "sms_failed");
    server.fail_sms(false);
    let res = server.client.post(SEND, json!({ "phone": PHONE })).await;
    assert_eq!(res.status, 200, "no cooldown after a failed send");
}

/// 400 `invalid_request` and `invalid_phone` on `verify_code`.
pub async fn verify_code_rejects_malformed_bodies(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for body in [
        json!({}),
        json!({ "phone": PHONE }),
        json!({ "code": "1234" }),
        json!({ "phone": PHONE, "code": 1234 }),
        json!({ "phone": PHONE, "code": "12a4" }),
        json!({ "phone": PHONE, "code": "12345" }),
    ] {
        assert_error(&c.post(VERIFY, body).await, 400, "invalid_request");
    }
    let res = c
        .request(
            "POST",
            VERIFY,
            &[("content-type", "application/json")],
            Some(b"{nope".to_vec()),
        )
        .await;
    assert_error(&res, 400, "invalid_request");
    let res = c
        .post(VERIFY, json!({ "phone": "12", "code": "1234" }))
        .await;
    assert_error(&res, 400, "invalid_phone");
}

/// 400 `code_expired`: never sent, used, or expired.
pub async fn verify_code_code_expired(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let res = c
        .post(VERIFY, json!({ "phone": PHONE, "code": "1234" }))
        .await;
    assert_error(&res, 400, "code_expired");

    c.post(SEND, json!({ "phone": PHONE })).await;
    let code = server.last_code(PHONE);
    let ok = c
        .post(VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    assert_eq!(ok.status, 200);
    let used = c
        .post(VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    assert_error(&used, 400, "code_expired");

    server.advance(Duration::from_secs(61));
    c.post(SEND, json!({ "phone": PHONE })).await;
    let code = server.last_code(PHONE);
    server.advance(server.service.policy().otp().code_ttl + Duration::from_secs(1));
    let late = c
        .post(VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    assert_error(&late, 400, "code_expired");
}

/// 400 `code_invalid` with `attempts_left`, then 429 `too_many_attempts` burns the code.
pub async fn verify_code_code_invalid_then_too_many_attempts(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    c.post(SEND, json!({ "phone": PHONE })).await;
    let code = server.last_code(PHONE);
    let wrong = if code == "0000" { "0001" } else { "0000" };
    let max = server.service.policy().otp().max_attempts;
    for left in (1..max).rev() {
        let res = c
            .post(VERIFY, json!({ "phone": PHONE, "code": wrong }))
            .await;
        let body = assert_error(&res, 400, "code_invalid");
        assert_eq!(body["attempts_left"], left);
    }
    let res = c
        .post(VERIFY, json!({ "phone": PHONE, "code": wrong }))
        .await;
    assert_error(&res, 429, "too_many_attempts");
    let res = c
        .post(VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    assert_error(&res, 429, "too_many_attempts");
}

/// 401 `unauthorized` with `WWW-Authenticate: Bearer`: header missing, malformed, bad
/// signature, expired, or a refresh token.
pub async fn profile_unauthorized_cases(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let access = login["access"].as_str().unwrap();
    let refresh = login["refresh"].as_str().unwrap();
    let mut tampered = access.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // A well-formed access token for the same user id, signed with another key.
    let (phone, code) = TEST_PHONES[0];
    let elsewhere = refsys_core::ReferralService::builder(
        refsys_core::MemoryUserStore::new(),
        refsys_core::MemoryOtpStore::new(),
        refsys_core::LogSender,
        refsys_core::JwtKeys::hs256("another secret, also thirty-two bytes long").unwrap(),
    )
    .policy(
        refsys_core::Policy::builder()
            .test_phone(phone, code)
            .build()
            .unwrap(),
    )
    .build();
    elsewhere.send_code(phone).await.unwrap();
    let foreign = elsewhere.verify_code(phone, code).await.unwrap().access;

    assert_error(&c.get(PROFILE, None).await, 401, "unauthorized");
    for header in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Token {access}"),
        format!("bearer{access}"),
        "Bearer not.a.jwt".to_owned(),
        format!("Bearer {tampered}"),
        format!("Bearer {foreign}"),
        format!("Bearer {refresh}"),
    ] {
        let res = c
            .request("GET", PROFILE, &[("authorization", &header)], None)
            .await;
        assert_error(&res, 401, "unauthorized");
    }
    assert_eq!(c.get(PROFILE, Some(access)).await.status, 200);
    for header in [format!("bearer {access}"), format!("BEARER {access}")] {
        let res = c
            .request("GET", PROFILE, &[("authorization", &header)], None)
            .await;
        assert_eq!(res.status, 200, "{header}: the scheme is case-insensitive");
    }
    server.advance(server.service.policy().access_ttl() + Duration::from_secs(1));
    assert_error(&c.get(PROFILE, Some(access)).await, 401, "unauthorized");
}

/// Every error row of `use_invite_code`.
pub async fn use_invite_code_errors(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let a = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let b = c.login(TEST_PHONES[1].0, TEST_PHONES[1].1).await;
    let a_access = a["access"].as_str().unwrap();
    let b_access = b["access"].as_str().unwrap();
    let code_of = |profile: Value| profile["own_invite_code"].as_str().unwrap().to_owned();
    let a_code = code_of(c.get(PROFILE, Some(a_access)).await.json());
    let b_code = code_of(c.get(PROFILE, Some(b_access)).await.json());

    // Not authenticated.
    let res = c.post(USE_INVITE, json!({ "invite_code": a_code })).await;
    assert_error(&res, 401, "unauthorized");
    // Malformed, or not 6 characters of the alphabet.
    for body in [
        json!({}),
        json!({ "invite_code": 123456 }),
        json!({ "invite_code": "ABC" }),
        json!({ "invite_code": "ABCDEFG" }),
        json!({ "invite_code": "ABCDE1" }),
        json!({ "invite_code": "ABC-EF" }),
    ] {
        let res = c.post_as(USE_INVITE, Some(b_access), body).await;
        assert_error(&res, 400, "invalid_request");
    }
    // Own code.
    let res = c
        .post_as(USE_INVITE, Some(a_access), json!({ "invite_code": a_code }))
        .await;
    assert_error(&res, 400, "own_invite_code");
    // No such code.
    let unknown = ["ZZZZZZ", "YYYYYY"]
        .into_iter()
        .find(|code| *code != a_code && *code != b_code)
        .unwrap();
    let res = c
        .post_as(
            USE_INVITE,
            Some(a_access),
            json!({ "invite_code": unknown }),
        )
        .await;
    assert_error(&res, 404, "invite_code_not_found");
    // B applies A's code; then A applying B's code would close a cycle.
    let res = c
        .post_as(USE_INVITE, Some(b_access), json!({ "invite_code": a_code }))
        .await;
    assert_eq!(res.status, 200);
    let res = c
        .post_as(USE_INVITE, Some(a_access), json!({ "invite_code": b_code }))
        .await;
    assert_error(&res, 409, "invite_cycle");
    // Transitively too: C applies B's code, then A applying C's is a cycle.
    let cc = c.login(TEST_PHONES[2].0, TEST_PHONES[2].1).await;
    let c_access = cc["access"].as_str().unwrap();
    let c_code = code_of(c.get(PROFILE, Some(c_access)).await.json());
    let res = c
        .post_as(USE_INVITE, Some(c_access), json!({ "invite_code": b_code }))
        .await;
    assert_eq!(res.status, 200);
    let res = c
        .post_as(USE_INVITE, Some(a_access), json!({ "invite_code": c_code }))
        .await;
    assert_error(&res, 409, "invite_cycle");
    // B already applied a code.
    let res = c
        .post_as(USE_INVITE, Some(b_access), json!({ "invite_code": c_code }))
        .await;
    assert_error(&res, 409, "invite_already_activated");
}

/// Input is trimmed and case-insensitive.
pub async fn use_invite_code_is_trimmed_and_case_insensitive(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let a = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let b = c.login(TEST_PHONES[1].0, TEST_PHONES[1].1).await;
    let a_access = a["access"].as_str().unwrap();
    let b_access = b["access"].as_str().unwrap();
    let a_code = c.get(PROFILE, Some(a_access)).await.str("own_invite_code");
    let messy = format!("  {} ", a_code.to_lowercase());
    let res = c
        .post_as(USE_INVITE, Some(b_access), json!({ "invite_code": messy }))
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
    let profile = c.get(PROFILE, Some(b_access)).await.json();
    assert_eq!(profile["activated_invite_code"], json!(a_code));
}

/// Refresh rotates; presenting a spent token revokes the family, the rotated-to token too.
pub async fn refresh_rotation_and_reuse_detection(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let first = login["refresh"].as_str().unwrap().to_owned();

    let rotated = c.post(REFRESH, json!({ "refresh": first })).await;
    assert_eq!(rotated.status, 200, "{}", rotated.json());
    let pair = rotated.json();
    let mut keys: Vec<&String> = pair.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["access", "refresh"]);
    let second = pair["refresh"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let access = pair["access"].as_str().unwrap();
    assert_eq!(c.get(PROFILE, Some(access)).await.status, 200);

    // `first` again within the reuse grace (a retry after a lost answer): a working pair of
    // the same family, and nothing is revoked.
    server.advance(Duration::from_secs(9));
    let retried = c.post(REFRESH, json!({ "refresh": first })).await;
    assert_eq!(retried.status, 200, "{}", retried.json());
    let access = retried.str("access");
    assert_eq!(c.get(PROFILE, Some(&access)).await.status, 200);
    let live = retried.str("refresh");

    // The token the retry got is the live one: it rotates.
    let third = c.post(REFRESH, json!({ "refresh": live })).await;
    assert_eq!(third.status, 200);
    let third = third.str("refresh");

    // The token spent last, presented again after its grace: theft. The whole family goes.
    server.advance(Duration::from_secs(10));
    let reused = c.post(REFRESH, json!({ "refresh": second })).await;
    assert_error(&reused, 401, "invalid_token");
    let res = c.post(REFRESH, json!({ "refresh": third })).await;
    assert_error(&res, 401, "invalid_token");

    // Another login is another family, unaffected.
    server.advance(Duration::from_secs(61));
    let other = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let res = c
        .post(REFRESH, json!({ "refresh": other["refresh"] }))
        .await;
    assert_eq!(res.status, 200);
}

/// 30 refreshes of one token at once (tabs, retries): every one gets a working pair, and the
/// family lives on; a token two rotations old is still theft.
pub async fn concurrent_refreshes_of_one_token_all_succeed(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[1].0, TEST_PHONES[1].1).await;
    let first = login["refresh"].as_str().unwrap().to_owned();
    let answers = futures_join_all((0..30).map(|_| {
        let (c, first) = (c.clone(), first.clone());
        async move { c.post(REFRESH, json!({ "refresh": first })).await }
    }))
    .await;
    let mut refreshed = Vec::new();
    for res in &answers {
        assert_eq!(res.status, 200, "{}", res.json());
        assert_eq!(c.get(PROFILE, Some(&res.str("access"))).await.status, 200);
        refreshed.push(res.str("refresh"));
    }
    // Each answer's refresh token is the family's live one (or the one that made it live).
    let next = c.post(REFRESH, json!({ "refresh": refreshed[29] })).await;
    assert_eq!(next.status, 200, "the family survived: {}", next.json());
    let next = next.str("refresh");
    let again = c.post(REFRESH, json!({ "refresh": next })).await;
    assert_eq!(again.status, 200);
    let newest = again.str("refresh");
    // `first` is now older than the token spent last: theft.
    let reused = c.post(REFRESH, json!({ "refresh": first })).await;
    assert_error(&reused, 401, "invalid_token");
    let res = c.post(REFRESH, json!({ "refresh": newest })).await;
    assert_error(&res, 401, "invalid_token");
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("the task finished"));
    }
    out
}

/// 400 `invalid_request`; 401 `invalid_token` for garbage, an access token, an expired token.
pub async fn refresh_errors(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for body in [json!({}), json!({ "refresh": 1 }), json!(["x"])] {
        assert_error(&c.post(REFRESH, body).await, 400, "invalid_request");
    }
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    for token in [json!("garbage"), json!(""), login["access"].clone()] {
        let res = c.post(REFRESH, json!({ "refresh": token })).await;
        assert_error(&res, 401, "invalid_token");
    }
    server.advance(server.service.policy().refresh_ttl() + Duration::from_secs(1));
    let res = c
        .post(REFRESH, json!({ "refresh": login["refresh"] }))
        .await;
    assert_error(&res, 401, "invalid_token");
}

/// `POST /api/token/logout/` → 204, then the family's refresh tokens fail.
pub async fn logout_revokes_the_family(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let rotated = c
        .post(REFRESH, json!({ "refresh": login["refresh"] }))
        .await;
    let refresh = rotated.str("refresh");
    let res = c.post(LOGOUT, json!({ "refresh": refresh })).await;
    assert_eq!(res.status, 204);
    assert!(res.body.is_empty());
    let res = c.post(REFRESH, json!({ "refresh": refresh })).await;
    assert_error(&res, 401, "invalid_token");
    // Logging out twice is fine; garbage and bad bodies are not.
    assert_eq!(
        c.post(LOGOUT, json!({ "refresh": refresh })).await.status,
        204
    );
    let res = c.post(LOGOUT, json!({ "refresh": "garbage" })).await;
    assert_error(&res, 401, "invalid_token");
    assert_error(&c.post(LOGOUT, json!({})).await, 400, "invalid_request");
}

/// Every route answers with and without the trailing slash.
pub async fn trailing_slashes(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let (phone, code) = TEST_PHONES[0];
    assert_eq!(
        c.post("/login/send_code", json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let login = c
        .post(
            "/login/verify_code",
            json!({ "phone": phone, "code": code }),
        )
        .await;
    assert_eq!(login.status, 200);
    let access = login.str("access");
    assert_eq!(c.get("/get_profile", Some(&access)).await.status, 200);
    let res = c
        .post_as(
            "/use_invite_code",
            Some(&access),
            json!({ "invite_code": "ZZZZZZ" }),
        )
        .await;
    assert_eq!(res.status, 404, "route found, code not");
    let refreshed = c
        .post(
            "/api/token/refresh",
            json!({ "refresh": login.str("refresh") }),
        )
        .await;
    assert_eq!(refreshed.status, 200);
    let res = c
        .post(
            "/api/token/logout",
            json!({ "refresh": refreshed.str("refresh") }),
        )
        .await;
    assert_eq!(res.status, 204);
    for path in ["/health/", "/ready/", "/api/schema"] {
        assert_eq!(c.get(path, None).await.status, 200, "{path}");
    }
}

/// Bodies over 16 KiB get 413 in the error shape; 16 KiB exactly is fine.
pub async fn payload_too_large(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let json_of_len = |len: usize| {
        let mut body = format!(r#"{{"phone": "{PHONE}"}}"#).into_bytes();
        body.resize(len, b' ');
        body
    };
    let headers = [("content-type", "application/json")];
    let res = c
        .request("POST", SEND, &headers, Some(json_of_len(16 * 1024)))
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
    for path in [SEND, VERIFY, REFRESH, LOGOUT, USE_INVITE] {
        let res = c
            .request("POST", path, &headers, Some(json_of_len(16 * 1024 + 1)))
            .await;
        assert_error(&res, 413, "payload_too_large");
    }
    let res = c
        .request("POST", SEND, &headers, Some(vec![b' '; 1024 * 1024]))
        .await;
    assert_error(&res, 413, "payload_too_large");
}

/// A body that stops arriving gets `408 request_timeout`, in the error shape and with
/// `Connection: close`, once the body-read timeout (1 s here) has passed; a body that
/// arrives in time is served.
pub async fn slow_body_times_out(framework: Framework) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limits = ClientLimits::default().body_read_timeout(Duration::from_secs(1));
    let server = TestServer::start_with(
        framework,
        Setup {
            limits,
            ..Setup::default()
        },
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = format!(r#"{{"phone": "{PHONE}"}}"#);
    let head = |length: usize| {
        format!(
            "POST {SEND} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };
    // Announces 100 bytes, sends 1, then waits.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    stream
        .write_all(format!("{}{{", head(100)).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // The same body sent slowly but within the timeout is served.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream.write_all(head(body.len()).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
}

/// A missing or non-JSON content type gets 415 `unsupported_media_type`; JSON with
/// parameters is fine.
pub async fn unsupported_media_type(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let body = format!(r#"{{"phone": "{PHONE}"}}"#).into_bytes();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for path in [SEND, VERIFY, REFRESH, LOGOUT] {
            let res = c
                .request(
                    "POST",
                    path,
                    &[("content-type", content_type)],
                    Some(body.clone()),
                )
                .await;
            assert_error(&res, 415, "unsupported_media_type");
        }
    }
    let res = c
        .request(
            "POST",
            SEND,
            &[("content-type", "application/json; charset=utf-8")],
            Some(body.clone()),
        )
        .await;
    assert_eq!(res.status, 200);
    // No Content-Type at all: never read as JSON (a browser sends such a body cross-site
    // without a preflight), on every JSON route, whatever the body.
    for path in [SEND, VERIFY, REFRESH, LOGOUT] {
        let res = c.request("POST", path, &[], Some(body.clone())).await;
        assert_error(&res, 415, "unsupported_media_type");
    }
    let res = c.request("POST", SEND, &[], None).await;
    assert_error(&res, 415, "unsupported_media_type");
}

/// Every answer, success or error, carries `X-Content-Type-Options: nosniff` and
/// `Referrer-Policy: no-referrer`.
pub async fn every_answer_carries_the_security_headers(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let refresh = login["refresh"].as_str().unwrap();
    let big = vec![b' '; 17 * 1024];
    let answers = [
        c.post(SEND, json!({ "phone": "12" })).await,
        c.get(PROFILE, None).await,
        c.get(PROFILE, login["access"].as_str()).await,
        c.get("/nope", None).await,
        c.request("DELETE", SEND, &[], None).await,
        c.request("POST", SEND, &[("content-type", "text/plain")], None)
            .await,
        c.request(
            "POST",
            SEND,
            &[("content-type", "application/json")],
            Some(big),
        )
        .await,
        c.post(LOGOUT, json!({ "refresh": refresh })).await,
        c.get("/health", None).await,
        c.get("/api/schema/", None).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [400, 401, 200, 404, 405, 415, 413, 204, 200, 200],
        "the answers this checks"
    );
    for res in &answers {
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{}",
            res.status
        );
        assert_eq!(
            res.header("referrer-policy"),
            Some("no-referrer"),
            "{}",
            res.status
        );
    }
}

/// CORS is off by default: a cross-origin preflight is refused like any `OPTIONS` (405) and no
/// answer carries `Access-Control-Allow-Origin`.
pub async fn cors_is_off_by_default(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let preflight = c
        .request(
            "OPTIONS",
            SEND,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        )
        .await;
    assert_error(&preflight, 405, "method_not_allowed");
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    let res = c
        .request(
            "POST",
            SEND,
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            Some(format!(r#"{{"phone": "{PHONE}"}}"#).into_bytes()),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), None);
}

/// With allowed origins, a preflight from one of them gets 204 with the route's methods and
/// the headers the API reads, and its requests carry `Access-Control-Allow-Origin`; any other
/// origin (a prefix, another scheme, a subdomain) gets nothing.
pub async fn cors_for_allowed_origins_only(framework: Framework) {
    let allowed = "https://app.example";
    let setup = Setup {
        limits: ClientLimits::default().allowed_origins([allowed]),
        ..Setup::default()
    };
    let server = TestServer::start_with(framework, setup).await;
    let c = &server.client;
    let preflight = |origin: &'static str, path: &'static str| async move {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ];
        c.request("OPTIONS", path, &headers, None).await
    };
    let res = preflight(allowed, SEND).await;
    assert_eq!(res.status, 204, "{:?}", res.headers);
    assert_eq!(res.header("access-control-allow-origin"), Some(allowed));
    assert_eq!(res.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        res.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(res.header("vary"), Some("Origin"));
    assert!(res.body.is_empty());
    let res = preflight(allowed, PROFILE).await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-methods"), Some("GET,HEAD"));
    for other in [
        "https://app.example.evil",
        "http://app.example",
        "https://sub.app.example",
        "null",
    ] {
        let res = preflight(other, SEND).await;
        assert_error(&res, 405, "method_not_allowed");
        assert_eq!(res.header("access-control-allow-origin"), None, "{other}");
    }
    // Answers, errors included, name the allowed origin.
    let res = c
        .request("GET", PROFILE, &[("origin", allowed)], None)
        .await;
    assert_error(&res, 401, "unauthorized");
    assert_eq!(res.header("access-control-allow-origin"), Some(allowed));
    let res = c
        .request("GET", PROFILE, &[("origin", "https://evil.example")], None)
        .await;
    assert_eq!(res.header("access-control-allow-origin"), None);
}

/// Unknown routes get 404 `not_found` in the error shape.
pub async fn not_found(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/nope/"),
        ("GET", "/login/"),
        ("GET", "/login/send_code/extra"),
        ("DELETE", "/api/token"),
        ("GET", "/api/schema/swagger-ui/missing.js"),
    ] {
        let res = c.request(method, path, &[], None).await;
        assert_error(&res, 404, "not_found");
    }
}

/// Known routes with the wrong method get 405 `method_not_allowed` and `Allow`.
pub async fn method_not_allowed(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for (method, path, allow) in [
        ("GET", SEND, "POST"),
        ("PUT", "/login/verify_code", "POST"),
        ("DELETE", REFRESH, "POST"),
        ("GET", LOGOUT, "POST"),
        ("POST", PROFILE, "GET,HEAD"),
        ("POST", "/health", "GET,HEAD"),
        ("PATCH", "/ready", "GET,HEAD"),
        ("POST", "/api/schema/", "GET,HEAD"),
        ("OPTIONS", USE_INVITE, "POST"),
    ] {
        let res = c.request(method, path, &[], None).await;
        assert_error(&res, 405, "method_not_allowed");
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
    }
}

/// `GET /health` and `GET /ready` → `{"status":"ok"}`; `HEAD /health` → 200 with no body.
pub async fn health_and_ready(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for path in ["/health", "/ready"] {
        let res = c.get(path, None).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.body, br#"{"status":"ok"}"#);
    }
    let head = c.request("HEAD", "/health", &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// `/ready` answers 503 naming a store that is down, while `/health` stays 200; 200 again
/// when it is back. (Against the binary, `examples/tests/resilience.rs` stops real stores.)
pub async fn ready_names_a_store_that_is_down(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    server.rate_store.set_down(true);
    assert_eq!(c.get("/health", None).await.status, 200, "liveness only");
    let res = c.get("/ready", None).await;
    let body = assert_error(&res, 503, "not_ready");
    assert_eq!(body["store"], "rate_limit");
    assert!(body["error"].as_str().unwrap().contains("rate_limit"));
    server.rate_store.set_down(false);
    assert_eq!(c.get("/ready", None).await.status, 200);
}

/// A store that fails is 503 `store_unavailable`, never the client's fault.
pub async fn store_down(framework: Framework) {
    let server = TestServer::start(framework).await;
    server.rate_store.set_down(true);
    let res = server.client.post(SEND, json!({ "phone": PHONE })).await;
    let body = assert_error(&res, 503, "store_unavailable");
    assert!(!body["error"].as_str().unwrap().contains("switched off"));
}

/// `/api/schema/` is the OpenAPI 3.1 document of every route.
pub async fn schema(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for path in ["/api/schema/", "/api/schema"] {
        let res = c.get(path, None).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        let doc = res.json();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            SEND, VERIFY, PROFILE, USE_INVITE, REFRESH, LOGOUT, "/health", "/ready",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} documented");
        }
    }
}

/// The framework crates serve the OpenAPI document but not Swagger UI: that is the example
/// server's (see [`swagger_ui`]).
pub async fn no_swagger_ui_in_the_framework_crates(framework: Framework) {
    let server = TestServer::start(framework).await;
    for path in [
        "/api/schema/swagger-ui/",
        "/api/schema/swagger-ui",
        "/api/schema/swagger-ui/swagger-ui-bundle.js",
    ] {
        let res = server.client.get(path, None).await;
        assert_error(&res, 404, "not_found");
    }
}

/// The example server serves Swagger UI from the binary (no CDN), cached for an hour; the
/// path without its slash redirects to the page.
pub async fn swagger_ui(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    for path in [
        "/api/schema/swagger-ui/",
        "/api/schema/swagger-ui/index.html",
    ] {
        let page = c.get(path, None).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.header("cache-control"), Some("public, max-age=3600"));
        let html = String::from_utf8(page.body).unwrap();
        assert!(html.contains("swagger-ui-bundle.js") && !html.contains("https://"));
    }
    for (file, kind) in [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("swagger-initializer.js", "text/javascript; charset=utf-8"),
    ] {
        let res = c.get(&format!("/api/schema/swagger-ui/{file}"), None).await;
        assert_eq!(res.status, 200, "{file}");
        assert_eq!(res.header("content-type"), Some(kind));
        assert_eq!(res.header("cache-control"), Some("public, max-age=3600"));
        assert!(!res.body.is_empty());
    }
    let redirect = c.get("/api/schema/swagger-ui", None).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("swagger-ui/"));
    let wrong = c
        .request("POST", "/api/schema/swagger-ui/", &[], None)
        .await;
    assert_error(&wrong, 405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("GET,HEAD"));
}

/// 10 `send_code` per IP per minute by default, then 429 `rate_limited`; a spoofed
/// `X-Forwarded-For` from an untrusted peer does not help.
pub async fn rate_limit_send_code(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let max = ClientLimits::default().send_code.unwrap().max as usize;
    assert_eq!(max, 10);
    for i in 0..max {
        let res = c.post(SEND, json!({ "phone": phone(i) })).await;
        assert_eq!(res.status, 200, "{i}: {}", res.json());
    }
    let res = c.post(SEND, json!({ "phone": phone(max) })).await;
    let body = assert_error(&res, 429, "rate_limited");
    assert!(body["retry_after"].as_u64().unwrap() <= 60);
    let spoofed = c
        .request(
            "POST",
            SEND,
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
            Some(json!({ "phone": phone(max) }).to_string().into_bytes()),
        )
        .await;
    assert_error(&spoofed, 429, "rate_limited");
    // Malformed requests count too, and are limited before they are parsed.
    let res = c.post(SEND, json!({})).await;
    assert_error(&res, 429, "rate_limited");
    server.advance(Duration::from_secs(60));
    let res = c.post(SEND, json!({ "phone": phone(max) })).await;
    assert_eq!(res.status, 200, "a new window");
}

/// 30 `verify_code` per IP per minute by default.
pub async fn rate_limit_verify_code(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let max = ClientLimits::default().verify_code.unwrap().max as usize;
    assert_eq!(max, 30);
    if matches!(framework, Framework::Binary(_)) {
        // The binary counts in the real clock's minutes: start the burst well inside one.
        crate::away_from_a_window_edge(60).await;
    }
    for i in 0..max {
        let res = c
            .post(VERIFY, json!({ "phone": phone(i), "code": "1234" }))
            .await;
        assert_error(&res, 400, "code_expired");
    }
    let res = c
        .post(VERIFY, json!({ "phone": PHONE, "code": "1234" }))
        .await;
    assert_error(&res, 429, "rate_limited");
}

/// With the loopback trusted as a proxy, `X-Forwarded-For` tells clients apart.
pub async fn trusted_proxy_forwarded_for(framework: Framework) {
    let limits =
        ClientLimits::default().trusted_proxies(TrustedProxies::new(["127.0.0.1", "::1"]).unwrap());
    let server = TestServer::start_with(
        framework,
        Setup {
            limits,
            ..Setup::default()
        },
    )
    .await;
    let c = &server.client;
    let send = |i: usize, forwarded: &'static str| {
        let body = json!({ "phone": phone(i) }).to_string().into_bytes();
        async move {
            c.request(
                "POST",
                SEND,
                &[
                    ("content-type", "application/json"),
                    ("x-forwarded-for", forwarded),
                ],
                Some(body),
            )
            .await
        }
    };
    for i in 0..10 {
        assert_eq!(send(i, "198.51.100.1").await.status, 200);
    }
    assert_error(&send(10, "198.51.100.1").await, 429, "rate_limited");
    // The client is the rightmost untrusted hop: the left entry is the client's own claim.
    assert_error(
        &send(10, "192.0.2.99, 198.51.100.1").await,
        429,
        "rate_limited",
    );
    assert_eq!(send(10, "198.51.100.2").await.status, 200);
    assert_error(
        &send(11, "198.51.100.1, 127.0.0.1").await,
        429,
        "rate_limited",
    );
}

/// A user's own handler guarded by `AuthUser` sees the token's user.
pub async fn auth_user_guards_user_handlers(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let res = c.get("/me", login["access"].as_str()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({ "user_id": login["user_id"] }));
    assert_error(&c.get("/me", None).await, 401, "unauthorized");
    let res = c.get("/me", login["refresh"].as_str()).await;
    assert_error(&res, 401, "unauthorized");
}

/// A code that is not `code`.
fn wrong_code(code: &str) -> String {
    format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000)
}

/// 50 wrong codes in a row across resends (from 10 client networks, so that no per-network
/// limit is reached): 429 `phone_locked` with `Retry-After` on
/// `verify_code` (the right code too) and `send_code`, until the lock ends.
pub async fn phone_locked_after_wrong_codes_across_resends(framework: Framework) {
    let server = TestServer::start_with(framework, behind_a_proxy()).await;
    let c = &server.client;
    let otp = server.service.policy().otp().clone();
    assert_eq!((otp.max_failures, otp.max_attempts), (50, 5));
    // From a new client network each round: the phone's own budget is what locks it.
    for round in 0..10 {
        let ip = network(round);
        let sent = c.post_from(&ip, SEND, json!({ "phone": PHONE })).await;
        assert_eq!(sent.status, 200, "{}", sent.json());
        let wrong = wrong_code(&server.last_code(PHONE));
        for _ in 0..4 {
            let res = c
                .post_from(&ip, VERIFY, json!({ "phone": PHONE, "code": wrong }))
                .await;
            assert_error(&res, 400, "code_invalid");
        }
        let res = c
            .post_from(&ip, VERIFY, json!({ "phone": PHONE, "code": wrong }))
            .await;
        if round < 9 {
            assert_error(&res, 429, "too_many_attempts");
        } else {
            let body = assert_error(&res, 429, "phone_locked");
            assert_eq!(body["retry_after"], 3600);
        }
        server.advance(Duration::from_secs(61));
    }
    let code = server.last_code(PHONE);
    let owner = network(100);
    let res = c
        .post_from(&owner, VERIFY, json!({ "phone": PHONE, "code": code }))
        .await;
    let body = assert_error(&res, 429, "phone_locked");
    assert_eq!(body["retry_after"], 3600 - 61);
    let res = c.post_from(&owner, SEND, json!({ "phone": PHONE })).await;
    assert_error(&res, 429, "phone_locked");
    server.advance(Duration::from_secs(3600 - 61));
    let res = c.post_from(&owner, SEND, json!({ "phone": PHONE })).await;
    assert_eq!(res.status, 200, "the lock is over: {}", res.json());
}

/// Over the deployment's SMS budget: 503 `sms_budget_exhausted` with `Retry-After`; test
/// phones (no SMS) still work, and the refused phone gets a code at once in the next window.
pub async fn send_code_sms_budget_exhausted(framework: Framework) {
    let setup = Setup {
        sms_budget: Some(2),
        sms_prefix_share: Some(100),
        ..Setup::default()
    };
    let server = TestServer::start_with(framework, setup).await;
    let c = &server.client;
    for i in 0..2 {
        assert_eq!(c.post(SEND, json!({ "phone": phone(i) })).await.status, 200);
    }
    server.advance(Duration::from_secs(100));
    let res = c.post(SEND, json!({ "phone": phone(2) })).await;
    let body = assert_error(&res, 503, "sms_budget_exhausted");
    // A sliding hour: the two sends count whole until their clock hour ends (3,500 s), then
    // as the share of it still within an hour: one of two has slid out 1,800 s later.
    assert_eq!(body["retry_after"], 5300);
    assert_eq!(res.header("retry-after"), Some("5300"));
    let res = c.post(SEND, json!({ "phone": TEST_PHONES[0].0 })).await;
    assert_eq!(res.status, 200, "test phones send no SMS");
    assert_eq!(server.sms.sent().len(), 2);
    server.advance(Duration::from_secs(5299));
    let res = c.post(SEND, json!({ "phone": phone(2) })).await;
    assert_error(&res, 503, "sms_budget_exhausted");
    server.advance(Duration::from_secs(1));
    let res = c.post(SEND, json!({ "phone": phone(2) })).await;
    assert_eq!(res.status, 200, "no cooldown from the refused sends");
}

/// One destination prefix gets its share of the SMS budget (here 2 of 8): over it, its numbers
/// get 503 `sms_budget_exhausted` while numbers of other prefixes still get codes.
pub async fn send_code_sms_budget_per_prefix(framework: Framework) {
    let setup = Setup {
        sms_budget: Some(8),
        sms_prefix_share: Some(25),
        ..Setup::default()
    };
    let server = TestServer::start_with(framework, setup).await;
    let c = &server.client;
    for i in 0..2 {
        assert_eq!(c.post(SEND, json!({ "phone": phone(i) })).await.status, 200);
    }
    let res = c.post(SEND, json!({ "phone": phone(2) })).await;
    let body = assert_error(&res, 503, "sms_budget_exhausted");
    assert!(body["retry_after"].as_u64().unwrap() > 0);
    // Another Belarusian range and a US area code: their own shares.
    for other in ["+375331000001", "+375441000001", "+12012000001"] {
        let res = c.post(SEND, json!({ "phone": other })).await;
        assert_eq!(res.status, 200, "{other}: {}", res.json());
    }
    assert_eq!(server.sms.sent().len(), 5);
}

/// A deployment that asks for a human check (here always: `human_check_at` 0) answers
/// `send_code` with 428 `human_check_required` and a proof-of-work challenge, sends nothing,
/// and sends the code once the same body comes back with the answer. An answer is spent once
/// and bound to its phone; a wrong one is 400 `human_check_failed`, a malformed one 400
/// `invalid_request`. Test phones are never asked (they send no SMS).
pub async fn send_code_human_check(framework: Framework) {
    let setup = Setup {
        human_check_at: Some(0),
        ..Setup::default()
    };
    let server = TestServer::start_with(framework, setup).await;
    let c = &server.client;
    let me = phone(0);
    let res = c.post(SEND, json!({ "phone": me })).await;
    let body = assert_error(&res, 428, "human_check_required");
    let challenge = &body["challenge"];
    assert_eq!(challenge["kind"], "pow", "{body}");
    assert_eq!(challenge["algorithm"], "sha256");
    assert_eq!(challenge["difficulty"], u64::from(crate::POW_DIFFICULTY));
    assert_eq!(challenge["expires_in"], 120);
    assert_eq!(res.header("retry-after"), None);
    let text = challenge["challenge"].as_str().expect("the string to hash");
    let answer = crate::pow_answer(challenge);
    // A wrong solution, and one for another phone, are refused; neither spends the answer.
    let wrong = (0u64..)
        .map(|n| n.to_string())
        .find(|n| refsys_core::human::leading_zero_bits(text, n) < u32::from(crate::POW_DIFFICULTY))
        .unwrap();
    let res = c
        .post(SEND, json!({ "phone": me, "human_check": { "kind": "pow", "challenge": text, "solution": wrong } }))
        .await;
    assert_error(&res, 400, "human_check_failed");
    let res = c
        .post(SEND, json!({ "phone": phone(1), "human_check": answer }))
        .await;
    assert_error(&res, 400, "human_check_failed");
    for malformed in [
        json!({ "kind": "nope" }),
        json!("pow"),
        json!({ "kind": "pow" }),
    ] {
        let res = c
            .post(SEND, json!({ "phone": me, "human_check": malformed }))
            .await;
        assert_error(&res, 400, "invalid_request");
    }
    // The answer sends the code, once.
    let res = c
        .post(SEND, json!({ "phone": me, "human_check": answer }))
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
    let code = server.last_code(&me);
    let res = c
        .post(SEND, json!({ "phone": me, "human_check": answer }))
        .await;
    assert_error(&res, 400, "human_check_failed");
    let res = c.post(VERIFY, json!({ "phone": me, "code": code })).await;
    assert_eq!(res.status, 200, "{}", res.json());
    // Test phones send no SMS and are not asked.
    let res = c.post(SEND, json!({ "phone": TEST_PHONES[0].0 })).await;
    assert_eq!(res.status, 200);
}

/// 10 `use_invite_code` calls per user per hour by default, then 429 `rate_limited`.
pub async fn use_invite_code_rate_limited_per_user(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let a = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let b = c.login(TEST_PHONES[1].0, TEST_PHONES[1].1).await;
    let a_access = a["access"].as_str().unwrap();
    let b_access = b["access"].as_str().unwrap();
    let b_code = c.get(PROFILE, Some(b_access)).await.str("own_invite_code");
    let unknown = if b_code == "ZZZZZZ" {
        "YYYYYY"
    } else {
        "ZZZZZZ"
    };
    for _ in 0..10 {
        let res = c
            .post_as(
                USE_INVITE,
                Some(a_access),
                json!({ "invite_code": unknown }),
            )
            .await;
        assert_error(&res, 404, "invite_code_not_found");
    }
    let res = c
        .post_as(USE_INVITE, Some(a_access), json!({ "invite_code": b_code }))
        .await;
    let body = assert_error(&res, 429, "rate_limited");
    let retry_after = body["retry_after"].as_u64().expect("retry_after");
    if matches!(framework, Framework::Binary(_)) {
        // The binary's window is the real clock hour: whatever of it is left.
        assert!((1..=3600).contains(&retry_after), "{retry_after}");
    } else {
        // The in-process servers' clock stands at the start of an hour.
        assert_eq!(retry_after, 3600);
    }
    // B has its own budget.
    let res = c
        .post_as(
            USE_INVITE,
            Some(b_access),
            json!({ "invite_code": unknown }),
        )
        .await;
    assert_error(&res, 404, "invite_code_not_found");
}

/// `send_code` and `verify_code` answer a registered phone exactly as a phone never seen:
/// same status, body and `Retry-After`, step by step.
pub async fn answers_do_not_reveal_registration(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let (registered, fresh) = (phone(1), phone(2));
    c.post(SEND, json!({ "phone": registered })).await;
    let code = server.last_code(&registered);
    let login = c
        .post(VERIFY, json!({ "phone": registered, "code": code }))
        .await;
    assert_eq!(login.status, 200);
    server.advance(Duration::from_secs(61));

    let same = |what: &str, one: &crate::Res, other: &crate::Res| {
        assert_eq!(one.status, other.status, "{what}");
        assert_eq!(one.body, other.body, "{what}");
        assert_eq!(
            one.header("retry-after"),
            other.header("retry-after"),
            "{what}"
        );
    };
    for (what, wait) in [
        ("verify without a code", 0),
        ("send", 0),
        ("send within the cooldown", 1),
        ("wrong code", 1),
        ("wrong code again", 0),
        ("wrong code again", 0),
        ("wrong code again", 0),
        ("wrong code: burned", 0),
    ] {
        server.advance(Duration::from_secs(wait));
        let mut answers = Vec::new();
        for p in [&registered, &fresh] {
            let res = match what {
                "send" | "send within the cooldown" => c.post(SEND, json!({ "phone": p })).await,
                "verify without a code" => {
                    c.post(VERIFY, json!({ "phone": p, "code": "1234" })).await
                }
                _ => {
                    let wrong = wrong_code(&server.last_code(p));
                    c.post(VERIFY, json!({ "phone": p, "code": wrong })).await
                }
            };
            answers.push(res);
        }
        same(what, &answers[0], &answers[1]);
    }
}

const SESSIONS: &str = "/api/sessions/";
const SESSIONS_REVOKE: &str = "/api/sessions/revoke/";

/// Logs in test phone `n` with `user_agent` (none if `None`); returns the login body.
async fn login_with_agent(server: &TestServer, n: usize, user_agent: Option<&str>) -> Value {
    let c = &server.client;
    let (phone, code) = TEST_PHONES[n];
    assert_eq!(c.post(SEND, json!({ "phone": phone })).await.status, 200);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(agent) = user_agent {
        headers.push(("user-agent", agent));
    }
    let body = serde_json::to_vec(&json!({ "phone": phone, "code": code })).unwrap();
    let login = c.request("POST", VERIFY, &headers, Some(body)).await;
    assert_eq!(login.status, 200, "{}", login.json());
    login.json()
}

/// `DELETE path` with a bearer token if given.
async fn delete(server: &TestServer, path: &str, bearer: Option<&str>) -> crate::Res {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", &a[..])).collect();
    server.client.request("DELETE", path, &headers, None).await
}

/// Three logins are three sessions, listed newest first with their user agent, network and
/// times; one is ended by id, the others by scope, and an ended session's refresh token is
/// refused. Another user's session, an ended one and a malformed id are all 404.
pub async fn sessions_are_listed_and_ended(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let first = login_with_agent(&server, 0, Some("Phone\tApp/1.0")).await;
    server.clock.advance(Duration::from_secs(60));
    let second = login_with_agent(&server, 0, None).await;
    server.clock.advance(Duration::from_secs(60));
    let long = "x".repeat(300);
    let third = login_with_agent(&server, 0, Some(&long)).await;
    let bob = c.login(TEST_PHONES[1].0, TEST_PHONES[1].1).await;
    let access = third["access"].as_str().unwrap();
    server.clock.advance(Duration::from_secs(60));
    let rotated = c
        .post(REFRESH, json!({ "refresh": first["refresh"] }))
        .await;
    assert_eq!(rotated.status, 200);

    let listed = c.get(SESSIONS, Some(access)).await;
    assert_eq!(listed.status, 200);
    let body = listed.json();
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{body}");
    for session in sessions {
        let mut keys: Vec<_> = session.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "created_at",
                "current",
                "id",
                "ip",
                "last_used_at",
                "user_agent"
            ],
        );
        assert!(
            session["ip"] == "127.0.0.0/24" || session["ip"] == "::/48",
            "the network only: {session}"
        );
        assert_eq!(session["id"].as_str().unwrap().len(), 32);
    }
    let current: Vec<_> = sessions
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [true, false, false], "newest first: {body}");
    assert_eq!(sessions[0]["user_agent"], "x".repeat(256));
    assert_eq!(sessions[1]["user_agent"], Value::Null);
    assert_eq!(sessions[2]["user_agent"], "PhoneApp/1.0");
    assert_eq!(sessions[2]["created_at"], "2027-01-15T08:00:00Z");
    assert_eq!(
        sessions[2]["last_used_at"], "2027-01-15T08:03:00Z",
        "its refresh"
    );
    assert_eq!(sessions[1]["created_at"], sessions[1]["last_used_at"]);
    let id = |n: usize| sessions[n]["id"].as_str().unwrap().to_owned();
    let (third_id, second_id, first_id) = (id(0), id(1), id(2));

    // Bob sees only his own, and cannot end Alice's.
    let bob_access = bob["access"].as_str().unwrap();
    let bobs = c.get(SESSIONS, Some(bob_access)).await.json();
    assert_eq!(bobs["sessions"].as_array().unwrap().len(), 1);
    let res = delete(&server, &format!("{SESSIONS}{first_id}/"), Some(bob_access)).await;
    assert_error(&res, 404, "session_not_found");

    // One by id (without the trailing slash too).
    let res = delete(&server, &format!("{SESSIONS}{first_id}"), Some(access)).await;
    assert_eq!(res.status, 204);
    assert!(res.body.is_empty());
    let refused = c
        .post(REFRESH, json!({ "refresh": rotated.str("refresh") }))
        .await;
    assert_error(&refused, 401, "invalid_token");
    // Its access tokens too, at once (instant revocation, the default).
    for ended in [first["access"].as_str().unwrap(), &rotated.str("access")] {
        assert_error(&c.get(PROFILE, Some(ended)).await, 401, "unauthorized");
    }
    let res = delete(&server, &format!("{SESSIONS}{first_id}/"), Some(access)).await;
    assert_error(&res, 404, "session_not_found");
    for garbage in ["nope", "0123456789ABCDEF0123456789ABCDEF", "%20"] {
        let res = delete(&server, &format!("{SESSIONS}{garbage}/"), Some(access)).await;
        assert_error(&res, 404, "session_not_found");
    }

    // The others, then all.
    let res = c
        .post_as(SESSIONS_REVOKE, Some(access), json!({ "scope": "others" }))
        .await;
    assert_eq!((res.status, res.json()), (200, json!({ "revoked": 1 })));
    let refused = c
        .post(REFRESH, json!({ "refresh": second["refresh"] }))
        .await;
    assert_error(&refused, 401, "invalid_token");
    let ended = second["access"].as_str().unwrap();
    assert_error(&c.get(PROFILE, Some(ended)).await, 401, "unauthorized");
    let left = c.get(SESSIONS, Some(access)).await.json();
    assert_eq!(left["sessions"][0]["id"], json!(third_id));
    assert_eq!(left["sessions"].as_array().unwrap().len(), 1);
    assert_ne!(second_id, third_id);
    let kept = c
        .post(REFRESH, json!({ "refresh": third["refresh"] }))
        .await;
    assert_eq!(kept.status, 200, "the caller's own session stays");
    let res = c
        .post_as(SESSIONS_REVOKE, Some(access), json!({ "scope": "all" }))
        .await;
    assert_eq!((res.status, res.json()), (200, json!({ "revoked": 1 })));
    let refused = c
        .post(REFRESH, json!({ "refresh": kept.str("refresh") }))
        .await;
    assert_error(&refused, 401, "invalid_token");
    // The caller's own session ended too: its access token is refused, at once.
    assert_error(&c.get(SESSIONS, Some(access)).await, 401, "unauthorized");
    let bobs = c.get(SESSIONS, Some(bob_access)).await.json();
    assert_eq!(bobs["sessions"].as_array().unwrap().len(), 1);
    // Bob's session was never touched.
    let bob_refresh = c.post(REFRESH, json!({ "refresh": bob["refresh"] })).await;
    assert_eq!(bob_refresh.status, 200);
}

/// The session routes need a valid access token, a known scope, and their own methods.
pub async fn session_routes_refuse_bad_requests(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c.login(TEST_PHONES[0].0, TEST_PHONES[0].1).await;
    let access = login["access"].as_str().unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let one = format!("{SESSIONS}{id}/");
    assert_error(&c.get(SESSIONS, None).await, 401, "unauthorized");
    assert_error(&c.get(SESSIONS, Some("garbage")).await, 401, "unauthorized");
    let refresh_token = login["refresh"].as_str().unwrap();
    assert_error(
        &c.get(SESSIONS, Some(refresh_token)).await,
        401,
        "unauthorized",
    );
    assert_error(&delete(&server, &one, None).await, 401, "unauthorized");
    let res = c
        .post_as(SESSIONS_REVOKE, None, json!({ "scope": "all" }))
        .await;
    assert_error(&res, 401, "unauthorized");
    for body in [json!({ "scope": "mine" }), json!({}), json!({ "scope": 1 })] {
        let res = c.post_as(SESSIONS_REVOKE, Some(access), body).await;
        assert_error(&res, 400, "invalid_request");
    }
    let res = c.get(&one, Some(access)).await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("DELETE"));
    let res = delete(&server, SESSIONS_REVOKE, Some(access)).await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("POST"));
    let res = delete(&server, SESSIONS, Some(access)).await;
    assert_eq!(res.header("allow"), Some("GET,HEAD"));
    // Nothing was ended by any of it.
    let listed = c.get(SESSIONS, Some(access)).await.json();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
}
