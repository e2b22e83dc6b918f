//! Attacks on the real `refsys-server` binary on PostgreSQL and Redis: brute-forcing a code
//! from many client IPs, forged and misused tokens, and arbitrary or hostile request bodies
//! (property tests). Runs with the `services` feature; prints `METRIC` lines with what it
//! measured (`-- --nocapture`).
#![cfg(feature = "services")]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_suite::gateway::{Mode, Receiver, webhook_env};
use http_suite::{Client, Res, assert_error};
use proptest::prelude::*;
use refsys_test_support::postgres::{TestDatabase, fresh_database};
use refsys_test_support::redis::{TestRedis, fresh_prefix};
use serde_json::{Value, json};
use support::Server;

const JWT_SECRET: &str = "attack tests: a signing secret of 32+ bytes";
const HOOK_SECRET: &str = "attack tests webhook secret";
const ALICE: &str = "+375291000001";
const BOB: &str = "+375291000002";
const TEST_PHONES: &str = "+375291000001:0000,+375291000002:0000";

/// A server on a fresh database and Redis prefix.
struct Stack {
    server: Server,
    database: TestDatabase,
    redis: TestRedis,
}

impl Stack {
    async fn start(extra: Vec<(&'static str, String)>, args: &[&str]) -> Stack {
        let database = fresh_database().await;
        let redis = fresh_prefix().await;
        let mut env: Vec<(&'static str, String)> = vec![
            ("DATABASE_URL", database.url().to_owned()),
            ("REDIS_URL", redis.url.clone()),
            ("REDIS_PREFIX", redis.prefix.clone()),
            ("JWT_SECRET", JWT_SECRET.into()),
            ("TEST_PHONES", TEST_PHONES.into()),
        ];
        env.extend(extra);
        let server = Server::start(&env, args).await;
        Stack {
            server,
            database,
            redis,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.server.base)
    }

    async fn stop(self) {
        drop(self.server);
        self.redis.cleanup().await;
        self.database.drop_database().await;
    }
}

/// Client IP number `n`, all distinct, for `X-Forwarded-For`.
fn ip(n: u32) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// 10 000 code guesses, in parallel from 10 000 client IPs, against one ordinary phone, while
/// the attacker also asks for new codes as often as the server lets it. The attacker never
/// logs in; each code is evaluated at most `OTP_MAX_ATTEMPTS` times; at most `OTP_MAX_SENDS`
/// codes are sent in the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brute_force_from_many_ips_never_logs_in_on_axum() {
    brute_force_from_many_ips(&[]).await;
}

/// The same on actix-web.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brute_force_from_many_ips_never_logs_in_on_actix() {
    brute_force_from_many_ips(&["--framework", "actix"]).await;
}

/// The brute-force scenario against a server started with `args`.
async fn brute_force_from_many_ips(args: &[&str]) {
    const ROUNDS: u32 = 10;
    const GUESSES_PER_ROUND: u32 = 1_000;
    const CONCURRENCY: usize = 64;
    const MAX_ATTEMPTS: usize = 5;
    const MAX_SENDS: usize = 5;
    let receiver = Receiver::start(Mode::Ok).await;
    let mut extra = webhook_env(&receiver, HOOK_SECRET);
    extra.extend([
        ("TRUSTED_PROXIES", "127.0.0.1".to_owned()),
        ("OTP_MAX_ATTEMPTS", MAX_ATTEMPTS.to_string()),
        ("OTP_MAX_SENDS", MAX_SENDS.to_string()),
        // No cooldown: only the window limits how many codes the attacker gets.
        ("OTP_RESEND_COOLDOWN", "0".to_owned()),
    ]);
    let stack = Stack::start(extra, args).await;
    let client = stack.client();
    let victim = "+375292000001";
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut next_ip = 0u32;
    let mut answers = BTreeMap::<String, usize>::new();
    let mut sends = BTreeMap::<String, usize>::new();
    let mut evaluated_per_code = Vec::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        // The attacker asks for a new code from a fresh IP (in the last round, 20 times).
        let before = receiver.for_phone(victim).len();
        for _ in 0..if round + 1 == ROUNDS { 20 } else { 1 } {
            next_ip += 1;
            let res = client
                .post_from(
                    &ip(next_ip),
                    "/login/send_code/",
                    json!({ "phone": victim }),
                )
                .await;
            let code = res.json()["code"].as_str().unwrap_or("ok").to_owned();
            assert!(
                res.status == 200 || res.status == 429,
                "send_code: {}",
                res.json()
            );
            *sends.entry(code).or_default() += 1;
        }
        let sent_now = receiver.for_phone(victim).len() - before;
        let live = (sent_now > 0).then(|| receiver.last_code(victim));
        // The round's guesses: the next 1 000 codes of the 10 000, less the live code (the
        // attacker is unlucky in the guesses the server evaluates; see the end of the round).
        let guesses: Vec<String> = (round * GUESSES_PER_ROUND..(round + 1) * GUESSES_PER_ROUND)
            .map(|n| format!("{n:04}"))
            .filter(|g| Some(g) != live.as_ref())
            .collect();
        let mut tasks = Vec::with_capacity(guesses.len());
        for guess in guesses {
            next_ip += 1;
            let (client, ip, permit) = (
                client.clone(),
                ip(next_ip),
                semaphore.clone().acquire_owned().await.unwrap(),
            );
            tasks.push(tokio::spawn(async move {
                let res = client
                    .post_from(
                        &ip,
                        "/login/verify_code/",
                        json!({ "phone": victim, "code": guess }),
                    )
                    .await;
                drop(permit);
                res
            }));
        }
        let mut invalid_this_round = 0;
        for task in tasks {
            let res = task.await.unwrap();
            assert_ne!(res.status, 200, "the attacker logged in: {}", res.json());
            let body = res.json();
            let code = body["code"].as_str().expect("an error code").to_owned();
            assert!(
                matches!(
                    code.as_str(),
                    "code_invalid"
                        | "too_many_attempts"
                        | "code_expired"
                        | "phone_locked"
                        | "rate_limited"
                ),
                "{body}"
            );
            if code == "code_invalid" {
                invalid_this_round += 1;
            }
            *answers.entry(code).or_default() += 1;
        }
        // One pending code per phone: wrong guesses evaluated in a round ≤ max_attempts − 1.
        assert!(
            invalid_this_round < MAX_ATTEMPTS,
            "round {round}: {invalid_this_round} wrong guesses evaluated"
        );
        evaluated_per_code.push(invalid_this_round);
        // Even the right code, tried after the guesses (from a network of its own, which no
        // per-network limit has counted), no longer logs in.
        if let Some(live) = live {
            let res = client
                .post_from(
                    &format!("172.16.{round}.1"),
                    "/login/verify_code/",
                    json!({ "phone": victim, "code": live }),
                )
                .await;
            // Burned: refused as the burn was, unless the guesses also used up the phone's
            // failure budget, which locks it (the lock answers first).
            if answers.contains_key("phone_locked") {
                assert_error(&res, 429, "phone_locked");
            } else {
                assert_error(&res, 429, "too_many_attempts");
            }
            *answers
                .entry(format!("right code after burn: {}", res.json()["code"]))
                .or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    let delivered = receiver.for_phone(victim).len();
    assert!(delivered <= MAX_SENDS, "{delivered} codes sent");
    let guesses: usize = answers.values().sum();
    println!(
        "METRIC brute-force {args:?}: {guesses} guesses from {next_ip} IPs in {} ms ({:.0}/s), \
         concurrency {CONCURRENCY}; codes sent {delivered} (send_code answers {sends:?}); \
         wrong guesses evaluated per code {evaluated_per_code:?}; answers {answers:?}",
        elapsed.as_millis(),
        guesses as f64 / elapsed.as_secs_f64()
    );
    let invalid = answers.get("code_invalid").copied().unwrap_or_default();
    assert!(invalid <= (MAX_ATTEMPTS - 1) * delivered);
    // The real user still gets in once the window allows (not tested: an hour).
    stack.stop().await;
}

/// One client (one address, or its /24) tries to lock a chosen phone out: it asks for codes
/// as fast as it may and sends wrong codes. It gets 5 codes and 20 checks for that phone per
/// hour (`429 rate_limited`), never the phone's lock; the owner, from another network, gets
/// a code and logs in.
async fn one_client_cannot_lock_out_a_phone(args: &[&str]) {
    let receiver = Receiver::start(Mode::Ok).await;
    let mut extra = webhook_env(&receiver, HOOK_SECRET);
    extra.extend([
        ("TRUSTED_PROXIES", "127.0.0.1".to_owned()),
        // No cooldown: the attacker is limited by what this test is about, not by time.
        ("OTP_RESEND_COOLDOWN", "0".to_owned()),
    ]);
    let stack = Stack::start(extra, args).await;
    let client = stack.client();
    let victim = "+375292000002";
    let (attacker, owner) = ("198.51.100.23", "192.0.2.44");
    // The per-network limits count per clock hour: keep the attack inside one.
    http_suite::away_from_a_window_edge(3600).await;
    let mut sends = BTreeMap::<u16, usize>::new();
    for _ in 0..12 {
        let res = client
            .post_from(attacker, "/login/send_code/", json!({ "phone": victim }))
            .await;
        *sends.entry(res.status).or_default() += 1;
        if res.status != 200 {
            assert_error(&res, 429, "rate_limited");
        }
    }
    assert_eq!(sends.get(&200), Some(&5), "{sends:?}");
    let mut checks = BTreeMap::<String, usize>::new();
    for guess in 0..40 {
        let res = client
            .post_from(
                attacker,
                "/login/verify_code/",
                json!({ "phone": victim, "code": format!("{guess:04}") }),
            )
            .await;
        assert_ne!(res.status, 200, "the attacker guessed the code");
        *checks.entry(res.str("code")).or_default() += 1;
    }
    assert_eq!(checks.get("rate_limited"), Some(&20), "{checks:?}");
    assert!(!checks.contains_key("phone_locked"), "{checks:?}");
    // The owner gets a code and logs in.
    let res = client
        .post_from(owner, "/login/send_code/", json!({ "phone": victim }))
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
    let code = receiver.last_code(victim);
    let res = client
        .post_from(
            owner,
            "/login/verify_code/",
            json!({ "phone": victim, "code": code }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
    println!(
        "METRIC lockout {args:?}: attacker's sends {sends:?}, checks {checks:?}; owner logged in"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_lock_out_a_phone_on_axum() {
    one_client_cannot_lock_out_a_phone(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_lock_out_a_phone_on_actix() {
    one_client_cannot_lock_out_a_phone(&["--framework", "actix"]).await;
}

// ----- tokens -----

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (u32::from(value(*c)) << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn hs256(secret: &str, input: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    b64url(&mac.finalize().into_bytes())
}

/// The claims of a token.
fn claims(token: &str) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').nth(1).unwrap())).unwrap()
}

/// A token with `header` and `claims`, signed HS256 with `secret` (or unsigned).
fn forge(header: &Value, claims: &Value, secret: Option<&str>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = secret.map(|s| hs256(s, &input)).unwrap_or_default();
    format!("{input}.{signature}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn profile_status(client: &Client, auth: &str) -> Res {
    client
        .request("GET", "/get_profile/", &[("authorization", auth)], None)
        .await
}

/// Forged, altered, expired, misused and garbage tokens are 401, every time; a reused refresh
/// token revokes its family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misused_tokens_are_refused() {
    let stack = Stack::start(vec![], &[]).await;
    let c = stack.client();
    let alice = c.login(ALICE, "0000").await;
    let bob = c.login(BOB, "0000").await;
    let access = alice["access"].as_str().unwrap();
    let refresh = alice["refresh"].as_str().unwrap();
    let hs = json!({ "alg": "HS256", "typ": "JWT" });
    let mine = claims(access);

    // Control: the forging code is right (a token signed with the real secret is taken).
    let control = forge(&hs, &mine, Some(JWT_SECRET));
    assert_eq!(
        profile_status(&c, &format!("Bearer {control}"))
            .await
            .status,
        200
    );

    let signature = access.rsplit('.').next().unwrap();
    let mut to_bob = mine.clone();
    to_bob["sub"] = json!(bob["user_id"].as_i64().unwrap().to_string());
    let mut longer = mine.clone();
    longer["exp"] = json!(now() + 365 * 24 * 3600);
    let mut expired = mine.clone();
    expired["exp"] = json!(now() - 1);
    let mut not_yet = mine.clone();
    not_yet["nbf"] = json!(now() + 3600);
    let mut as_refresh_type = mine.clone();
    as_refresh_type["token_type"] = claims(refresh)["token_type"].clone();
    let resigned = |claims: &Value| {
        let unsigned = forge(&hs, claims, None);
        format!("{unsigned}{signature}")
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            forge(&json!({ "alg": "none", "typ": "JWT" }), &mine, None),
        ),
        ("alg None", forge(&json!({ "alg": "None" }), &mine, None)),
        (
            "alg none, original signature",
            format!(
                "{}{signature}",
                forge(&json!({ "alg": "none" }), &mine, None)
            ),
        ),
        (
            "alg HS512",
            forge(&json!({ "alg": "HS512" }), &mine, Some(JWT_SECRET)),
        ),
        (
            "wrong key",
            forge(&hs, &mine, Some("another secret that is 32+ bytes long")),
        ),
        ("empty key", forge(&hs, &mine, Some(""))),
        ("sub changed to bob", resigned(&to_bob)),
        ("exp extended", resigned(&longer)),
        ("expired (signed)", forge(&hs, &expired, Some(JWT_SECRET))),
        (
            "not yet valid (signed)",
            forge(&hs, &not_yet, Some(JWT_SECRET)),
        ),
        (
            "refresh claims",
            forge(&hs, &as_refresh_type, Some(JWT_SECRET)),
        ),
        ("refresh token as access", refresh.to_owned()),
        (
            "signature stripped",
            access.rsplit_once('.').unwrap().0.to_owned() + ".",
        ),
        ("truncated", access[..access.len() - 3].to_owned()),
        ("two parts", access.rsplit_once('.').unwrap().0.to_owned()),
        ("garbage", "a.b.c".to_owned()),
        ("long garbage", "x".repeat(8_000)),
    ];
    for (what, token) in &cases {
        let res = profile_status(&c, &format!("Bearer {token}")).await;
        assert_eq!(res.status, 401, "{what}");
        assert_error(&res, 401, "unauthorized");
    }
    let headers = [
        String::new(),
        "Bearer".into(),
        "Bearer ".into(),
        format!("Basic {access}"),
        format!("Token {access}"),
        format!("Bearer {access} {access}"),
        format!("Bearer\t{access}x"),
    ];
    for header in &headers {
        let res = profile_status(&c, header).await;
        assert_error(&res, 401, "unauthorized");
    }
    // Access as refresh.
    let res = c
        .post("/api/token/refresh/", json!({ "refresh": access }))
        .await;
    assert_error(&res, 401, "invalid_token");
    // The same forgeries made of a refresh token's claims, at both endpoints that take one.
    let theirs = claims(refresh);
    let refresh_signature = refresh.rsplit('.').next().unwrap();
    let mut theirs_longer = theirs.clone();
    theirs_longer["exp"] = json!(now() + 365 * 24 * 3600);
    let mut theirs_to_bob = theirs.clone();
    theirs_to_bob["sub"] = json!(bob["user_id"].as_i64().unwrap().to_string());
    let refresh_forgeries: Vec<(&str, String)> = vec![
        (
            "alg none",
            forge(&json!({ "alg": "none", "typ": "JWT" }), &theirs, None),
        ),
        ("alg None", forge(&json!({ "alg": "None" }), &theirs, None)),
        (
            "alg none, original signature",
            format!(
                "{}{refresh_signature}",
                forge(&json!({ "alg": "none" }), &theirs, None)
            ),
        ),
        (
            "alg HS512",
            forge(&json!({ "alg": "HS512" }), &theirs, Some(JWT_SECRET)),
        ),
        (
            "wrong key",
            forge(&hs, &theirs, Some("another secret that is 32+ bytes long")),
        ),
        ("empty key", forge(&hs, &theirs, Some(""))),
        (
            "exp extended",
            format!("{}{refresh_signature}", forge(&hs, &theirs_longer, None)),
        ),
        (
            "sub changed to bob",
            format!("{}{refresh_signature}", forge(&hs, &theirs_to_bob, None)),
        ),
        ("access as refresh", access.to_owned()),
    ];
    for endpoint in ["/api/token/refresh/", "/api/token/logout/"] {
        for (what, token) in &refresh_forgeries {
            let res = c.post(endpoint, json!({ "refresh": token })).await;
            assert_eq!(res.status, 401, "{endpoint}: {what}");
            assert_error(&res, 401, "invalid_token");
        }
    }
    // A refresh token forged from a real one with a changed family is refused too.
    let mut other_family = claims(refresh);
    other_family["fam"] = json!("0".repeat(32));
    let res = c
        .post(
            "/api/token/refresh/",
            json!({ "refresh": format!("{}{}", forge(&hs, &other_family, None), refresh.rsplit('.').next().unwrap()) }),
        )
        .await;
    assert_error(&res, 401, "invalid_token");

    // Reuse: R0 → (A1, R1). R0 again at once is within the reuse grace (a retry): a pair
    // of the same family. R1 → R2; now R0 is older than the token spent last: theft, and
    // R2 (newer, never used) is dead too.
    let r1 = c
        .post("/api/token/refresh/", json!({ "refresh": refresh }))
        .await;
    assert_eq!(r1.status, 200);
    let (a1, r1) = (r1.str("access"), r1.str("refresh"));
    let retry = c
        .post("/api/token/refresh/", json!({ "refresh": refresh }))
        .await;
    assert_eq!(retry.status, 200, "a retry within the grace");
    let r2 = c
        .post("/api/token/refresh/", json!({ "refresh": r1 }))
        .await;
    assert_eq!(r2.status, 200);
    let r2 = r2.str("refresh");
    let reuse = c
        .post("/api/token/refresh/", json!({ "refresh": refresh }))
        .await;
    assert_error(&reuse, 401, "invalid_token");
    let newer = c
        .post("/api/token/refresh/", json!({ "refresh": r2 }))
        .await;
    assert_error(&newer, 401, "invalid_token");
    // Another login's family is not touched.
    let bob_refresh = bob["refresh"].as_str().unwrap();
    let res = c
        .post("/api/token/refresh/", json!({ "refresh": bob_refresh }))
        .await;
    assert_eq!(res.status, 200);
    // Control: the refresh forging code is right (re-signed with the real secret, bob's new
    // refresh token is taken).
    let control = forge(&hs, &claims(&res.str("refresh")), Some(JWT_SECRET));
    let res = c
        .post("/api/token/refresh/", json!({ "refresh": control }))
        .await;
    assert_eq!(res.status, 200, "{}", res.json());
    // Instant revocation (the default): an access token of the family that reuse detection
    // revoked is refused at once, though it has not expired.
    let a1_after = profile_status(&c, &format!("Bearer {a1}")).await.status;
    assert_eq!(
        a1_after, 401,
        "an access token of a revoked family is refused (instant revocation)"
    );
    println!(
        "METRIC tokens: {} forged/misused tokens and {} bad headers → 401; access token of a revoked family: {a1_after} at once",
        cases.len() + 2 * refresh_forgeries.len() + 2,
        headers.len()
    );
    stack.stop().await;

    // Expiry, with 2 s access tokens (lifetimes are whole seconds from a whole-second `iat`,
    // so a 1 s token may live only a moment and make the fresh-token check below flaky).
    let stack = Stack::start(
        vec![("ACCESS_TOKEN_TTL", "2".into())],
        &["--framework", "actix"],
    )
    .await;
    let c = stack.client();
    let login = c.login(ALICE, "0000").await;
    let access = login["access"].as_str().unwrap();
    let issued = Instant::now();
    let bearer = format!("Bearer {access}");
    assert_eq!(
        profile_status(&c, &bearer).await.status,
        200,
        "a fresh token"
    );
    // Expires within its 2 s (at least 1 s after issue: `iat` is a whole second), and then
    // stays refused.
    let expired = loop {
        let res = profile_status(&c, &bearer).await;
        if res.status != 200 {
            break res;
        }
        assert!(issued.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        issued.elapsed() >= Duration::from_millis(900),
        "{:?}",
        issued.elapsed()
    );
    assert_error(&expired, 401, "unauthorized");
    // The refresh token still trades for a fresh access token.
    let fresh = c
        .post(
            "/api/token/refresh/",
            json!({ "refresh": login["refresh"] }),
        )
        .await;
    assert_eq!(fresh.status, 200);
    assert_eq!(
        profile_status(&c, &format!("Bearer {}", fresh.str("access")))
            .await
            .status,
        200
    );
    stack.stop().await;
}

// ----- input -----

const ROUTES: &[&str] = &[
    "/login/send_code/",
    "/login/send_code",
    "/login/verify_code/",
    "/get_profile/",
    "/use_invite_code/",
    "/api/token/refresh/",
    "/api/token/logout/",
    "/health",
    "/ready",
    "/api/schema/",
    "/",
    "/nope",
    "/login/",
];

#[derive(Clone, Debug)]
struct Request {
    method: &'static str,
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        "\\+?[0-9 ()-]{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("phone".to_owned()),
                    Just("code".to_owned()),
                    Just("invite_code".to_owned()),
                    Just("refresh".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => (
            prop::sample::select(vec!["phone", "code", "invite_code", "refresh"]),
            json_value()
        )
            .prop_map(|(k, v)| json!({ k: v }).to_string().into_bytes()),
        3 => ("\\+?[0-9 ()-]{0,16}", "[0-9a-zA-Z]{0,8}").prop_map(|(phone, code)| {
            json!({ "phone": phone, "code": code, "invite_code": code })
                .to_string()
                .into_bytes()
        }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![
            4 => Just("POST"),
            2 => Just("GET"),
            1 => prop::sample::select(vec!["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        ],
        prop::sample::select(ROUTES.to_vec()),
        prop::option::weighted(0.15, "[a-zA-Z0-9_./-]{0,12}"),
        prop::option::weighted(
            0.9,
            prop_oneof![
                3 => prop::sample::select(vec![
                    "application/json",
                    "application/json",
                    "application/json",
                    "application/json; charset=utf-8",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "application/json;charset=latin1",
                    "",
                    "*/*",
                ])
                .prop_map(str::to_owned),
                1 => "[ -~]{0,30}"
            ],
        ),
        prop::option::of(prop_oneof!["Bearer [ -~]{0,80}", "[ -~]{0,40}"]),
        body(),
    )
        .prop_map(
            |(method, route, suffix, content_type, authorization, body)| Request {
                method,
                path: format!("{route}{}", suffix.unwrap_or_default()),
                content_type,
                authorization,
                body,
            },
        )
}

/// What a server answered: status and error code, or why the answer broke the contract.
async fn send(http: &reqwest::Client, base: &str, req: &Request) -> Result<(u16, String), String> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut builder = http.request(method, format!("{base}{}", req.path));
    if let Some(ct) = &req.content_type {
        builder = builder.header("content-type", ct.trim());
    }
    if let Some(auth) = &req.authorization {
        builder = builder.header("authorization", auth.trim());
    }
    let res = builder
        .body(req.body.clone())
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = res.bytes().await.map_err(|e| format!("body cut: {e}"))?;
    if status >= 500 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if status < 400 || req.method == "HEAD" {
        return Ok((status, String::new()));
    }
    if content_type != "application/json" {
        return Err(format!("{status} with content type {content_type:?}"));
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{status}: {e}"))?;
    match (body["error"].as_str(), body["code"].as_str()) {
        (Some(_), Some(code)) => Ok((status, code.to_owned())),
        _ => Err(format!("{status}: not the error shape: {body}")),
    }
}

/// Arbitrary methods, routes, content types, authorization headers and bodies: both
/// frameworks answer every one, never 5xx, every error in the contract's shape, and both
/// answer the same status and code.
#[test]
fn arbitrary_requests_get_contract_answers_on_both_frameworks() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One stack per framework, so both see the same state after the same requests.
    let (axum, actix) = runtime.block_on(async {
        let limits = || {
            vec![
                ("RATE_LIMIT_SEND_CODE", "0".into()),
                ("RATE_LIMIT_VERIFY_CODE", "0".into()),
                ("RATE_LIMIT_SEND_CODE_PER_PHONE", "0".into()),
                ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0".into()),
            ]
        };
        (
            Stack::start(limits(), &[]).await,
            Stack::start(limits(), &["--framework", "actix"]).await,
        )
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let seen = std::sync::Mutex::new(BTreeMap::<(u16, String), usize>::new());
    let outcome = runner.run(&request(), |req| {
        let (a, b) = runtime.block_on(async {
            (
                send(&http, &axum.server.base, &req).await,
                send(&http, &actix.server.base, &req).await,
            )
        });
        let a = a.map_err(|e| TestCaseError::fail(format!("axum: {e}")))?;
        let b = b.map_err(|e| TestCaseError::fail(format!("actix: {e}")))?;
        prop_assert_eq!(&a, &b, "axum and actix differ");
        *seen.lock().unwrap().entry(a).or_default() += 1;
        Ok(())
    });
    println!(
        "METRIC proptest: 128 cases x 2 frameworks, answers {:?}",
        seen.lock().unwrap()
    );
    runtime.block_on(async {
        axum.stop().await;
        actix.stop().await;
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Writes a raw HTTP/1.1 request and reads the answer until the server closes or 10 s pass:
/// (status, body).
/// Whether `answer` holds a whole HTTP response with a `Content-Length`.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .is_some_and(|length| answer.len() >= end + 4 + length)
}

fn raw(base: &str, request: &[u8]) -> (u16, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Write while reading: the server may answer (and close) before it has read everything.
    let mut writer = stream.try_clone().unwrap();
    let request = request.to_vec();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    // Read until the answer is whole (its headers and `Content-Length` bytes of body), the
    // server closes, or the read times out: a server may keep the connection open after it.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    while !complete(&answer) {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writing.join();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| answer[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Oversized, deeply nested, invalid UTF-8 and chunked bodies: contract errors, no crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_contract_errors() {
    for args in [&[][..], &["--framework", "actix"][..]] {
        let stack = Stack::start(vec![("RATE_LIMIT_SEND_CODE", "0".into())], args).await;
        let c = stack.client();
        let post = |body: Vec<u8>| {
            let c = c.clone();
            async move {
                c.request(
                    "POST",
                    "/login/send_code/",
                    &[("content-type", "application/json")],
                    Some(body),
                )
                .await
            }
        };
        let padded = |n: usize| {
            format!(
                "{{\"phone\":\"+375291000001\",\"pad\":\"{}\"}}",
                "x".repeat(n)
            )
            .into_bytes()
        };
        assert_eq!(
            post(padded(16_000)).await.status,
            200,
            "under 16 KiB is fine"
        );
        assert_error(&post(padded(16_384)).await, 413, "payload_too_large");
        let deep_array = format!("{}{}", "[".repeat(8_000), "]".repeat(8_000)).into_bytes();
        assert_error(&post(deep_array).await, 400, "invalid_request");
        let deep_object =
            format!("{}1{}", "{\"phone\":".repeat(1_500), "}".repeat(1_500)).into_bytes();
        assert_error(&post(deep_object).await, 400, "invalid_request");
        let unclosed = "[".repeat(16_000).into_bytes();
        assert_error(&post(unclosed).await, 400, "invalid_request");
        for bad in [
            &b"{\"phone\":\"\xff\xfe\"}"[..],
            b"{\"phone\":\"+375\xc3\x28291000001\"}",
            b"\xef\xbb\xbf{\"phone\":\"+375291000001\"}",
            br#"{"phone":"\ud800"}"#,
            br#"{"phone":"+375291000001","phone":"+375291000002"}"#,
            b"{\"phone\":1e999999}",
            b"",
            b"null",
        ] {
            let res = post(bad.to_vec()).await;
            assert!(
                res.status == 400,
                "{:?}: {} {:?}",
                String::from_utf8_lossy(bad),
                res.status,
                String::from_utf8_lossy(&res.body)
            );
            assert!(res.json()["code"].is_string());
        }
        // A NUL after the number is not the same phone: refused, not silently dropped.
        let res = post(br#"{"phone":"+375291000001\u0000"}"#.to_vec()).await;
        assert_error(&res, 400, "invalid_phone");
        // 4 MiB announced with a Content-Length, and a chunked body past the limit: the
        // exact 413. The client sends only what the server must read before it can refuse
        // (the headers; 20 KiB of chunks) and then waits, so the server never closes on
        // unread bytes, which would reset the connection and could lose the answer.
        let base = stack.server.base.clone();
        let host = base.trim_start_matches("http://").to_owned();
        let (status, body) = tokio::task::spawn_blocking(move || {
            let request = format!(
                "POST /login/send_code/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                4 << 20
            );
            raw(&base, request.as_bytes())
        })
        .await
        .unwrap();
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["code"],
            "payload_too_large"
        );
        let base = stack.server.base.clone();
        let (chunked, body) = tokio::task::spawn_blocking(move || {
            let mut request = format!(
                "POST /login/send_code/ HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                base.trim_start_matches("http://")
            )
            .into_bytes();
            let chunk = vec![b' '; 4096];
            for _ in 0..5 {
                request.extend_from_slice(b"1000\r\n");
                request.extend_from_slice(&chunk);
                request.extend_from_slice(b"\r\n");
            }
            raw(&base, &request)
        })
        .await
        .unwrap();
        assert_eq!(chunked, 413, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["code"],
            "payload_too_large"
        );
        // Garbage that is not HTTP gets a 400 or a close, and the server lives on.
        let base = stack.server.base.clone();
        let (status, _) =
            tokio::task::spawn_blocking(move || raw(&base, b"\x16\x03\x01\x02\x00GARBAGE\r\n\r\n"))
                .await
                .unwrap();
        assert!(status == 400 || status == 0, "{status}");
        assert_eq!(c.get("/health", None).await.status, 200);
        stack.stop().await;
    }
}
