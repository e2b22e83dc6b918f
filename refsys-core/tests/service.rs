//! Every rule of API.md's tables, through `ReferralService`, on the in-memory stores and a
//! manual clock.

use std::sync::Arc;
use std::time::Duration;

use refsys_core::ClientLimits;
use refsys_core::testing::RecordingSender;
use refsys_core::{
    AllowedRegions, Clock, Error, JwtKeys, KeyError, ManualClock, MemoryOtpStore,
    MemoryRateLimitStore, MemoryUserStore, Policy, ReferralService, Region, TokenKind, UserId,
};

const SECRET: &[u8] = b"test secret that is long enough for HS256";

struct World {
    service: ReferralService,
    sms: Arc<RecordingSender>,
    clock: Arc<ManualClock>,
}

fn world_with(policy: Policy, keys: JwtKeys) -> World {
    world_with_limits(policy, keys, ClientLimits::default())
}

fn world_with_limits(policy: Policy, keys: JwtKeys, limits: ClientLimits) -> World {
    let sms = Arc::new(RecordingSender::new());
    let clock = Arc::new(ManualClock::starting_now());
    let service = ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        sms.clone(),
        keys,
    )
    .policy(policy)
    .clock(clock.clone())
    .client_limits(MemoryRateLimitStore::new(), limits)
    .build();
    World {
        service,
        sms,
        clock,
    }
}

fn world() -> World {
    world_with(Policy::default(), JwtKeys::hs256(SECRET).unwrap())
}

impl World {
    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The code last sent to `phone` (E.164).
    fn code(&self, phone: &str) -> String {
        let phone = self.service.parse_phone(phone).unwrap();
        self.sms.last_code(&phone).expect("a code was sent")
    }

    /// Logs `phone` in and returns (user id, access, refresh).
    async fn login(&self, phone: &str) -> (UserId, String, String) {
        self.service.send_code(phone).await.unwrap();
        let login = self
            .service
            .verify_code(phone, &self.code(phone))
            .await
            .unwrap();
        (login.user_id, login.access, login.refresh)
    }

    async fn own_code(&self, user: UserId) -> String {
        self.service
            .profile(user)
            .await
            .unwrap()
            .own_invite_code
            .to_string()
    }
}

fn wrong(code: &str) -> String {
    format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000)
}

const A: &str = "+375291000001";
const B: &str = "+375291000002";
const C: &str = "+375291000003";

// ---- 1. send_code ----

#[tokio::test]
async fn send_code_sends_a_fresh_4_digit_code() {
    let w = world();
    w.service.send_code("+375 (29) 100-00-01").await.unwrap();
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].phone.as_str(), A, "normalised to E.164");
    let code = sent[0].code.expose();
    assert_eq!(code.len(), 4);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert!(sent[0].text.contains(code));
}

#[tokio::test]
async fn send_code_refuses_invalid_phones_and_regions() {
    let w = world();
    for phone in ["", "hello", "+375", "+37529100000100000"] {
        let error = w.service.send_code(phone).await.unwrap_err();
        assert_eq!(error.http(), (400, "invalid_phone"), "{phone}");
    }
    let by_only = world_with(
        Policy::builder()
            .regions("BY".parse().unwrap())
            .build()
            .unwrap(),
        JwtKeys::hs256(SECRET).unwrap(),
    );
    let error = by_only
        .service
        .send_code("+1 202 555 0143")
        .await
        .unwrap_err();
    assert_eq!(error.http(), (400, "invalid_phone"));
    by_only.service.send_code(A).await.unwrap();
    assert!(w.sms.sent().is_empty());
}

#[tokio::test]
async fn send_code_within_the_cooldown_is_429_with_retry_after() {
    let w = world();
    w.service.send_code(A).await.unwrap();
    w.advance(15);
    let error = w.service.send_code(A).await.unwrap_err();
    assert_eq!(error.http(), (429, "resend_cooldown"));
    assert_eq!(error.retry_after(), Some(45));
    assert_eq!(error.body().retry_after, Some(45));
    w.advance(45);
    w.service.send_code(A).await.unwrap();
    assert_eq!(w.sms.sent().len(), 2);
}

#[tokio::test]
async fn send_code_over_the_hourly_window_is_429() {
    let w = world();
    for _ in 0..10 {
        w.service.send_code(A).await.unwrap();
        w.advance(60);
    }
    let error = w.service.send_code(A).await.unwrap_err();
    assert_eq!(error.http(), (429, "too_many_codes"));
    assert_eq!(error.retry_after(), Some(3600 - 600));
    assert_eq!(w.sms.sent().len(), 10);
}

#[tokio::test]
async fn one_client_network_gets_five_codes_and_twenty_checks_per_phone_per_hour() {
    let w = world();
    let attacker: std::net::IpAddr = "203.0.113.5".parse().unwrap();
    let neighbour: std::net::IpAddr = "203.0.113.200".parse().unwrap();
    let owner: std::net::IpAddr = "2001:db8:1:2::9".parse().unwrap();
    // The client limits count in fixed clock hours: start at one.
    let now = w.clock.now().as_unix();
    w.advance(3600 - now % 3600);
    for _ in 0..5 {
        w.service.send_code_from(A, attacker).await.unwrap();
        w.advance(60);
    }
    for ip in [attacker, neighbour] {
        let error = w.service.send_code_from(A, ip).await.unwrap_err();
        assert_eq!(error.http(), (429, "rate_limited"));
        // What is left of the clock hour (fixed windows).
        assert!(error.retry_after().is_some_and(|s| (1..=3600).contains(&s)));
    }
    assert_eq!(w.sms.sent().len(), 5, "no SMS for a refused send");
    // Other phones are another count.
    w.service.send_code_from(B, attacker).await.unwrap();
    for _ in 0..20 {
        let error = w.service.verify_code_from(A, "0000", attacker).await;
        assert!(error.is_err());
    }
    let error = w
        .service
        .verify_code_from(A, "0000", attacker)
        .await
        .unwrap_err();
    assert_eq!(error.http(), (429, "rate_limited"));
    // The owner, on another network, gets a code and logs in.
    w.service.send_code_from(A, owner).await.unwrap();
    let code = w.code(A);
    w.service.verify_code_from(A, &code, owner).await.unwrap();
    // A library caller that names no client is not counted per network.
    w.advance(60);
    w.service.send_code(A).await.unwrap();
}

#[tokio::test]
async fn failed_sms_is_502_and_costs_nothing() {
    let w = world();
    w.sms.fail(true);
    for _ in 0..10 {
        let error = w.service.send_code(A).await.unwrap_err();
        assert_eq!(error.http(), (502, "sms_failed"));
    }
    w.sms.fail(false);
    // Neither the cooldown nor the window was used by the failures.
    w.service.send_code(A).await.unwrap();
    let code = w.code(A);
    w.service.verify_code(A, &code).await.unwrap();
}

#[tokio::test]
async fn test_phones_get_their_fixed_code_and_no_sms() {
    let w = world_with(
        Policy::builder().test_phone(A, "0042").build().unwrap(),
        JwtKeys::hs256(SECRET).unwrap(),
    );
    w.service.send_code(A).await.unwrap();
    assert!(w.sms.sent().is_empty());
    w.service.verify_code(A, "0042").await.unwrap();
    // The usual limits still hold for test phones.
    let error = w.service.send_code(A).await.unwrap_err();
    assert_eq!(error.code(), "resend_cooldown");
}

// ---- 2. verify_code ----

#[tokio::test]
async fn verify_code_creates_the_user_once_with_a_6_char_invite_code() {
    let w = world();
    let (first, access, refresh) = w.login(A).await;
    assert_ne!(access, refresh);
    assert_eq!(w.service.authenticate(&access).unwrap(), first);
    let code = w.own_code(first).await;
    assert_eq!(code.len(), 6);
    w.advance(60);
    let (again, _, _) = w.login(A).await;
    assert_eq!(again, first);
    assert_eq!(
        w.own_code(again).await,
        code,
        "the invite code does not change on re-login"
    );
    let (other, _, _) = w.login(B).await;
    assert_ne!(other, first);
}

#[tokio::test]
async fn verify_code_malformed_code_is_invalid_request() {
    let w = world();
    w.service.send_code(A).await.unwrap();
    for code in ["", "12", "12345", "abcd", "12 4"] {
        let error = w.service.verify_code(A, code).await.unwrap_err();
        assert_eq!(error.http(), (400, "invalid_request"), "{code:?}");
    }
    // Malformed input costs no attempt.
    let code = w.code(A);
    let error = w.service.verify_code(A, &wrong(&code)).await.unwrap_err();
    assert_eq!(error.body().attempts_left, Some(4));
}

#[tokio::test]
async fn verify_code_invalid_phone() {
    let w = world();
    let error = w
        .service
        .verify_code("not a phone", "1234")
        .await
        .unwrap_err();
    assert_eq!(error.http(), (400, "invalid_phone"));
}

#[tokio::test]
async fn verify_code_without_a_live_code_is_code_expired() {
    let w = world();
    // Never sent.
    assert_eq!(
        w.service.verify_code(A, "1234").await.unwrap_err().code(),
        "code_expired"
    );
    // Expired.
    w.service.send_code(A).await.unwrap();
    let code = w.code(A);
    w.advance(300);
    assert_eq!(
        w.service.verify_code(A, &code).await.unwrap_err().code(),
        "code_expired"
    );
    // Used.
    w.service.send_code(A).await.unwrap();
    let code = w.code(A);
    w.service.verify_code(A, &code).await.unwrap();
    let error = w.service.verify_code(A, &code).await.unwrap_err();
    assert_eq!(error.http(), (400, "code_expired"));
}

#[tokio::test]
async fn wrong_codes_count_down_then_burn_with_429() {
    let w = world();
    w.service.send_code(A).await.unwrap();
    let code = w.code(A);
    for left in [4, 3, 2, 1] {
        let error = w.service.verify_code(A, &wrong(&code)).await.unwrap_err();
        assert_eq!(error.http(), (400, "code_invalid"));
        assert_eq!(error.body().attempts_left, Some(left));
        let json = serde_json::to_value(error.body()).unwrap();
        assert_eq!(json["attempts_left"], left);
    }
    let error = w.service.verify_code(A, &wrong(&code)).await.unwrap_err();
    assert_eq!(error.http(), (429, "too_many_attempts"));
    assert_eq!(error.retry_after(), Some(60));
    // The right code no longer works: the code is burned.
    let error = w.service.verify_code(A, &code).await.unwrap_err();
    assert_eq!(error.code(), "too_many_attempts");
    // A new code works.
    w.advance(60);
    let (user, _, _) = w.login(A).await;
    assert_eq!(user, UserId(1));
}

/// With the defaults, an attacker guessing codes in order (with no client named, so only the
/// phone's own budgets count) gets 5 guesses at each code and, across codes, 50 wrong guesses
/// before the phone is locked for an hour: over two hours, 2 lock cycles of 10 codes and 50
/// guesses each, 100 of the 10 000 possible codes.
#[tokio::test]
async fn brute_force_is_capped_by_attempts_window_and_failure_budget() {
    // A fixed code the in-order guessing cannot reach within its budget keeps this
    // deterministic.
    let w = world_with(
        Policy::builder().test_phone(A, "9999").build().unwrap(),
        JwtKeys::hs256(SECRET).unwrap(),
    );
    let (mut sends, mut misses, mut burns, mut locks, mut guess) = (0, 0, 0, 0, 0u32);
    let mut locked = false;
    for _minute in 0..120 {
        match w.service.send_code(A).await {
            Ok(()) => {
                sends += 1;
                locked = false;
            }
            Err(Error::TooManyCodes { .. } | Error::ResendCooldown { .. }) => {}
            Err(Error::PhoneLocked { .. }) => assert!(locked),
            Err(other) => panic!("{other:?}"),
        }
        for _ in 0..100 {
            match w.service.verify_code(A, &format!("{guess:04}")).await {
                Ok(_) => panic!("brute force logged in after {guess} guesses"),
                Err(Error::CodeInvalid { .. }) => misses += 1,
                Err(Error::TooManyAttempts { .. }) => {
                    burns += 1;
                    break;
                }
                Err(Error::PhoneLocked { retry_after }) => {
                    if !locked {
                        assert_eq!(retry_after, 3600, "this guess locked the phone");
                        locks += 1;
                        locked = true;
                    }
                    break;
                }
                Err(Error::CodeExpired) => break,
                Err(other) => panic!("{other:?}"),
            }
            guess += 1;
        }
        w.advance(60);
    }
    assert_eq!(locks, 2, "locked at minutes 9 and 78");
    assert_eq!(sends, 20, "10 codes per lock cycle");
    assert_eq!(misses, 2 * 10 * 4, "4 misses per code answer code_invalid");
    assert_eq!(burns, 2 * 9, "9 codes per cycle burn, the 10th locks");
    assert_eq!(
        misses + burns + locks,
        2 * 50,
        "50 wrong guesses per lock cycle"
    );
}

// ---- 3. get_profile ----

#[tokio::test]
async fn profile_shows_codes_and_invitees_oldest_first() {
    let w = world();
    let (a, _, _) = w.login(A).await;
    let (b, _, _) = w.login(B).await;
    let (c, _, _) = w.login(C).await;
    let a_code = w.own_code(a).await;
    w.service.use_invite_code(c, &a_code).await.unwrap();
    w.service
        .use_invite_code(b, &format!("  {}  ", a_code.to_lowercase()))
        .await
        .unwrap();

    let profile = w.service.profile(a).await.unwrap();
    let json = serde_json::to_value(&profile).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "phone": A,
            "own_invite_code": a_code,
            "activated_invite_code": null,
            "invited_users": [C, B],
            "invited_count": 2,
        })
    );
    let b_profile = serde_json::to_value(w.service.profile(b).await.unwrap()).unwrap();
    assert_eq!(b_profile["activated_invite_code"], a_code.as_str());
}

#[tokio::test]
async fn access_is_refused_for_anything_but_a_live_access_token() {
    let w = world();
    let (user, access, refresh) = w.login(A).await;
    assert_eq!(w.service.authenticate(&access).unwrap(), user);
    // The scheme is case-insensitive (RFC 9110), and spaces around the token are ignored.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for header in [
            format!("{scheme} {access}"),
            format!("{scheme}   {access} "),
        ] {
            assert_eq!(
                w.service.authenticate_header(Some(&header)).unwrap(),
                user,
                "{header}"
            );
        }
    }

    let other_key = world_with(Policy::default(), JwtKeys::hs256([9u8; 32]).unwrap());
    let (_, foreign, _) = other_key.login(A).await;
    let mut tampered = access.clone();
    tampered.insert(access.find('.').unwrap() + 3, 'x');
    let alg_none = {
        let payload = access.split('.').nth(1).unwrap();
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    for token in [
        &refresh, &foreign, &tampered, &alg_none, "garbage", "", "a.b.c",
    ] {
        let error = w.service.authenticate(token).unwrap_err();
        assert_eq!(error.http(), (401, "unauthorized"), "{token}");
        assert!(error.is_unauthorized());
    }
    for header in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some(access.as_str()),
        Some("Basic abc"),
        Some(&format!("Basic {access}")),
        Some(&format!("Bearerx {access}")),
        Some(&format!("Bearer\t{access}")),
    ] {
        assert_eq!(
            w.service.authenticate_header(header).unwrap_err().code(),
            "unauthorized"
        );
    }

    // Access tokens expire after 20 minutes.
    w.advance(20 * 60 - 1);
    assert!(w.service.authenticate(&access).is_ok());
    w.advance(1);
    assert_eq!(
        w.service.authenticate(&access).unwrap_err().code(),
        "unauthorized"
    );
}

#[tokio::test]
async fn profile_of_a_user_that_does_not_exist_is_401() {
    let w = world();
    assert_eq!(
        w.service.profile(UserId(42)).await.unwrap_err().code(),
        "unauthorized"
    );
}

// ---- 4. use_invite_code ----

#[tokio::test]
async fn use_invite_code_rules() {
    let w = world();
    let (a, _, _) = w.login(A).await;
    let (b, _, _) = w.login(B).await;
    let (c, _, _) = w.login(C).await;
    let (a_code, b_code, c_code) = (
        w.own_code(a).await,
        w.own_code(b).await,
        w.own_code(c).await,
    );
    let apply = |user, code: String| {
        let service = w.service.clone();
        async move { service.use_invite_code(user, &code).await }
    };

    for malformed in ["", "ABC", "ABCDEFG", "ABCDE0", "ABCDEI", "ÄBCDEF"] {
        let error = apply(b, malformed.into()).await.unwrap_err();
        assert_eq!(error.http(), (400, "invalid_request"), "{malformed}");
    }
    assert_eq!(
        apply(a, a_code.clone()).await.unwrap_err().http(),
        (400, "own_invite_code")
    );
    let unused = if a_code == "ZZZZZZ" {
        "YYYYYY"
    } else {
        "ZZZZZZ"
    };
    let error = apply(a, unused.into()).await.unwrap_err();
    assert_eq!(error.http(), (404, "invite_code_not_found"));

    apply(b, a_code.clone()).await.unwrap();
    let error = apply(b, c_code.clone()).await.unwrap_err();
    assert_eq!(error.http(), (409, "invite_already_activated"));
    apply(c, b_code.clone()).await.unwrap();
    // a invited b, b invited c: a cannot apply b's or c's code.
    for code in [b_code, c_code] {
        assert_eq!(
            apply(a, code).await.unwrap_err().http(),
            (409, "invite_cycle")
        );
    }
    assert_eq!(
        apply(UserId(99), a_code).await.unwrap_err().http(),
        (401, "unauthorized")
    );
}

#[tokio::test]
async fn use_invite_code_is_exactly_once_under_concurrency() {
    // The per-user limit would refuse most of the 100 calls before the store sees them.
    let w = world_with_limits(
        Policy::default(),
        JwtKeys::hs256(SECRET).unwrap(),
        ClientLimits::disabled(),
    );
    let (user, _, _) = w.login(A).await;
    let mut codes = Vec::new();
    for phone in [B, C] {
        let (id, _, _) = w.login(phone).await;
        codes.push(w.own_code(id).await);
    }
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (service, code) = (w.service.clone(), codes[i % 2].clone());
            tokio::spawn(async move { service.use_invite_code(user, &code).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(e.code(), "invite_already_activated"),
        }
    }
    assert_eq!(ok, 1);
}

// ---- 5. token refresh and logout ----

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let w = world();
    let (user, _, r1) = w.login(A).await;
    let pair = w.service.refresh(&r1).await.unwrap();
    assert_eq!(w.service.authenticate(&pair.access).unwrap(), user);
    let pair2 = w.service.refresh(&pair.refresh).await.unwrap();
    // r1 again: theft. The family dies, including the newest refresh token.
    assert_eq!(
        w.service.refresh(&r1).await.unwrap_err().http(),
        (401, "invalid_token")
    );
    assert_eq!(
        w.service.refresh(&pair2.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
    // Another login's family is untouched.
    w.advance(60);
    let (_, _, other) = w.login(A).await;
    w.service.refresh(&other).await.unwrap();
}

#[tokio::test]
async fn a_refresh_token_spent_last_works_again_within_the_reuse_grace() {
    let w = world();
    let (user, _, r1) = w.login(A).await;
    let pair = w.service.refresh(&r1).await.unwrap();
    // A retry 9 s later: a pair of the same family whose refresh token is the live one.
    w.advance(9);
    let retried = w.service.refresh(&r1).await.unwrap();
    assert_eq!(w.service.authenticate(&retried.access).unwrap(), user);
    let keys = JwtKeys::hs256(SECRET).unwrap();
    let claims = |token: &str| {
        keys.decode(token, TokenKind::Refresh, w.clock.now())
            .expect("a valid refresh token")
    };
    assert_eq!(claims(&retried.refresh).jti, claims(&pair.refresh).jti);
    assert_eq!(claims(&retried.refresh).fam, claims(&r1).fam);
    // That token rotates; the one spent last, 10 s after its spend, is theft.
    let pair2 = w.service.refresh(&retried.refresh).await.unwrap();
    w.advance(10);
    assert_eq!(
        w.service.refresh(&pair.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
    assert_eq!(
        w.service.refresh(&pair2.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
}

#[tokio::test]
async fn with_no_reuse_grace_a_retry_revokes_the_family() {
    let policy = Policy::builder()
        .refresh_reuse_grace(Duration::ZERO)
        .build()
        .unwrap();
    let w = world_with(policy, JwtKeys::hs256([7u8; 32]).unwrap());
    let (_, _, r1) = w.login(A).await;
    let pair = w.service.refresh(&r1).await.unwrap();
    assert_eq!(
        w.service.refresh(&r1).await.unwrap_err().code(),
        "invalid_token"
    );
    assert_eq!(
        w.service.refresh(&pair.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
}

#[test]
fn the_reuse_grace_is_ten_seconds_by_default() {
    assert_eq!(
        Policy::default().refresh_reuse_grace(),
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn refresh_refuses_access_tokens_garbage_and_expired_tokens() {
    let w = world();
    let (_, access, refresh) = w.login(A).await;
    for token in [access.as_str(), "garbage", ""] {
        assert_eq!(
            w.service.refresh(token).await.unwrap_err().http(),
            (401, "invalid_token")
        );
    }
    w.advance(7 * 24 * 3600);
    assert_eq!(
        w.service.refresh(&refresh).await.unwrap_err().code(),
        "invalid_token"
    );
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let w = world();
    let (_, _, refresh) = w.login(A).await;
    let pair = w.service.refresh(&refresh).await.unwrap();
    w.service.logout(&pair.refresh).await.unwrap();
    assert_eq!(
        w.service.refresh(&pair.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
    assert_eq!(
        w.service.logout("garbage").await.unwrap_err().code(),
        "invalid_token"
    );
}

// ---- keys ----

#[tokio::test]
async fn rs256_and_eddsa_keys_work_and_are_not_interchangeable() {
    let rsa = JwtKeys::rs256_pem(
        include_bytes!("keys/rsa_private.pem"),
        include_bytes!("keys/rsa_public.pem"),
    )
    .unwrap();
    let ed = JwtKeys::eddsa_pem(
        include_bytes!("keys/ed25519_private.pem"),
        include_bytes!("keys/ed25519_public.pem"),
    )
    .unwrap();
    let hs = JwtKeys::hs256(SECRET).unwrap();
    let worlds = [
        world_with(Policy::default(), rsa),
        world_with(Policy::default(), ed),
    ];
    let hs_world = world_with(Policy::default(), hs);
    let mut tokens = Vec::new();
    for w in &worlds {
        let (user, access, refresh) = w.login(A).await;
        assert_eq!(w.service.authenticate(&access).unwrap(), user);
        w.service.refresh(&refresh).await.unwrap();
        assert!(matches!(
            hs_world.service.authenticate(&access),
            Err(Error::Unauthorized)
        ));
        tokens.push(access);
    }
    // RS256 and EdDSA tokens are not accepted by each other's service.
    assert!(matches!(
        worlds[1].service.authenticate(&tokens[0]),
        Err(Error::Unauthorized)
    ));
    assert!(matches!(
        worlds[0].service.authenticate(&tokens[1]),
        Err(Error::Unauthorized)
    ));
    let (_, hs_access, _) = hs_world.login(A).await;
    for w in &worlds {
        assert!(matches!(
            w.service.authenticate(&hs_access),
            Err(Error::Unauthorized)
        ));
    }
}

#[test]
fn weak_or_broken_keys_are_refused() {
    assert_eq!(
        JwtKeys::hs256(b"short").unwrap_err(),
        KeyError::SecretTooShort
    );
    assert!(JwtKeys::rs256_pem(b"not a pem", b"not a pem").is_err());
    assert!(JwtKeys::eddsa_pem(include_bytes!("keys/rsa_private.pem"), b"x").is_err());
    let debug = format!("{:?}", JwtKeys::hs256(SECRET).unwrap());
    assert!(!debug.contains("test secret"), "{debug}");
}

#[test]
fn regions_parse_from_config_strings() {
    let regions: AllowedRegions = "BY, lt".parse().unwrap();
    assert!(regions.allows(Some(Region::BY)) && regions.allows(Some(Region::LT)));
    assert!(!regions.allows(Some(Region::RU)) && !regions.allows(None));
    assert_eq!(
        "BY,ZZ".parse::<AllowedRegions>().unwrap_err(),
        "unknown region code `ZZ`"
    );
}

// ---- a store outage does not spend the code ----

/// A user store that fails while `down` is set (the rest of the time it is the memory store).
#[derive(Default)]
struct FlakyUsers {
    inner: MemoryUserStore,
    down: std::sync::atomic::AtomicBool,
    /// Fail only `start_family` (after the user was found or created).
    only_families: bool,
}

impl FlakyUsers {
    fn check(&self) -> Result<(), refsys_core::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(refsys_core::StoreError::unavailable("down for the test"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl refsys_core::UserStore for FlakyUsers {
    async fn find_or_create(
        &self,
        phone: &refsys_core::Phone,
        new_code: &(dyn Fn() -> refsys_core::InviteCode + Send + Sync),
        change: refsys_core::Change,
    ) -> Result<refsys_core::Registration, refsys_core::StoreError> {
        if !self.only_families {
            self.check()?;
        }
        self.inner.find_or_create(phone, new_code, change).await
    }
    async fn profile(
        &self,
        user: UserId,
        invitees: usize,
    ) -> Result<Option<refsys_core::Profile>, refsys_core::StoreError> {
        self.inner.profile(user, invitees).await
    }
    async fn invitees(
        &self,
        user: UserId,
        after: Option<refsys_core::account::InviteeCursor>,
        limit: usize,
    ) -> Result<Option<refsys_core::account::InviteePage>, refsys_core::StoreError> {
        self.inner.invitees(user, after, limit).await
    }
    async fn activate_invite(
        &self,
        user: UserId,
        code: &refsys_core::InviteCode,
        change: refsys_core::Change,
    ) -> Result<refsys_core::store::Activation, refsys_core::StoreError> {
        self.inner.activate_invite(user, code, change).await
    }
    async fn start_family(
        &self,
        user: &refsys_core::User,
        family: &refsys_core::FamilyId,
        jti: &refsys_core::TokenId,
        client: &refsys_core::session::SessionClient,
        now: refsys_core::Change,
        expires_at: refsys_core::Timestamp,
    ) -> Result<bool, refsys_core::StoreError> {
        self.check()?;
        self.inner
            .start_family(user, family, jti, client, now, expires_at)
            .await
    }
    async fn rotate_refresh(
        &self,
        family: &refsys_core::FamilyId,
        presented: &refsys_core::TokenId,
        next: &refsys_core::TokenId,
        now: refsys_core::Change,
        expires_at: refsys_core::Timestamp,
        reuse_grace: Duration,
    ) -> Result<refsys_core::store::Rotation, refsys_core::StoreError> {
        self.inner
            .rotate_refresh(family, presented, next, now, expires_at, reuse_grace)
            .await
    }
    async fn revoke_family(
        &self,
        family: &refsys_core::FamilyId,
        reason: refsys_core::SessionEndReason,
        change: refsys_core::Change,
    ) -> Result<(), refsys_core::StoreError> {
        self.inner.revoke_family(family, reason, change).await
    }
    async fn sessions(
        &self,
        user: UserId,
        now: refsys_core::Timestamp,
    ) -> Result<Vec<refsys_core::session::Session>, refsys_core::StoreError> {
        self.inner.sessions(user, now).await
    }
    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: refsys_core::session::SessionScope<'_>,
        reason: refsys_core::SessionEndReason,
        change: refsys_core::Change,
    ) -> Result<Vec<refsys_core::FamilyId>, refsys_core::StoreError> {
        self.inner
            .revoke_sessions(user, scope, reason, change)
            .await
    }
    async fn user_by_phone(
        &self,
        phone: &refsys_core::Phone,
    ) -> Result<Option<refsys_core::User>, refsys_core::StoreError> {
        self.inner.user_by_phone(phone).await
    }
    async fn account(
        &self,
        user: UserId,
    ) -> Result<Option<refsys_core::account::Account>, refsys_core::StoreError> {
        self.inner.account(user).await
    }
    async fn change_phone(
        &self,
        user: UserId,
        phone: &refsys_core::Phone,
        change: refsys_core::Change,
    ) -> Result<refsys_core::account::PhoneChange, refsys_core::StoreError> {
        self.check()?;
        self.inner.change_phone(user, phone, change).await
    }
    async fn delete_account(
        &self,
        user: UserId,
        change: refsys_core::Change,
    ) -> Result<Option<Vec<refsys_core::FamilyId>>, refsys_core::StoreError> {
        self.check()?;
        self.inner.delete_account(user, change).await
    }
}

#[tokio::test]
async fn a_user_store_outage_after_the_code_matched_leaves_the_code_usable() {
    for only_families in [false, true] {
        let users = Arc::new(FlakyUsers {
            only_families,
            ..FlakyUsers::default()
        });
        let sms = Arc::new(RecordingSender::new());
        let service = ReferralService::builder(
            users.clone(),
            MemoryOtpStore::new(),
            sms.clone(),
            JwtKeys::hs256(SECRET).unwrap(),
        )
        .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled())
        .build();
        service.send_code(A).await.unwrap();
        let phone = service.parse_phone(A).unwrap();
        let code = sms.last_code(&phone).unwrap();
        users.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            let error = service.verify_code(A, &code).await.unwrap_err();
            assert_eq!(error.http(), (503, "store_unavailable"), "{only_families}");
        }
        users.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let login = service.verify_code(A, &code).await.unwrap();
        assert_eq!(service.authenticate(&login.access).unwrap(), login.user_id);
        // Spent by the login that succeeded.
        let error = service.verify_code(A, &code).await.unwrap_err();
        assert_eq!(error.code(), "code_expired");
        // The failed tries made one user, not several.
        assert_eq!(login.user_id.0, 1, "{only_families}");
    }
}

/// A service over `users` whose codes can be sent again at once, client limits off.
fn without_cooldown(
    users: impl refsys_core::UserStore,
    sms: Arc<RecordingSender>,
) -> refsys_core::ServiceBuilder {
    ReferralService::builder(
        users,
        MemoryOtpStore::new(),
        sms,
        JwtKeys::hs256(SECRET).unwrap(),
    )
    .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled())
    .policy(
        refsys_core::Policy::builder()
            .resend_cooldown(Duration::ZERO)
            .build()
            .unwrap(),
    )
}

/// A user-store outage during a deletion or a phone change: 503, nothing changed, and the
/// codes given back, so that the same codes work once the store is back.
#[tokio::test]
async fn an_outage_during_a_deletion_or_a_phone_change_gives_the_codes_back() {
    let users = Arc::new(FlakyUsers::default());
    let sms = Arc::new(RecordingSender::new());
    let service = without_cooldown(users.clone(), sms.clone()).build();
    let (a, b) = (
        service.parse_phone(A).unwrap(),
        service.parse_phone(B).unwrap(),
    );
    service.send_code(A).await.unwrap();
    let login = service
        .verify_code(A, &sms.last_code(&a).unwrap())
        .await
        .unwrap();
    let caller = service.caller(&login.access).unwrap();

    // The phone change: both codes survive the outage.
    service.send_code(A).await.unwrap();
    let proof = sms.last_code(&a).unwrap();
    service
        .send_phone_change_code(&caller, B, &proof, None, None)
        .await
        .unwrap();
    let code = sms.last_code(&b).unwrap();
    users.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let error = service
        .change_phone(&caller, B, &code, None)
        .await
        .unwrap_err();
    assert_eq!(error.http(), (503, "store_unavailable"));
    users.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(service.profile(login.user_id).await.unwrap().phone, a);
    let moved = service.change_phone(&caller, B, &code, None).await.unwrap();
    assert_eq!(moved, b);

    // The deletion: the code survives the outage.
    service.send_code(B).await.unwrap();
    let code = sms.last_code(&b).unwrap();
    users.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let error = service
        .delete_account(&caller, &code, None)
        .await
        .unwrap_err();
    assert_eq!(error.http(), (503, "store_unavailable"));
    users.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(service.profile(login.user_id).await.is_ok(), "whole");
    service.delete_account(&caller, &code, None).await.unwrap();
    let error = service.profile(login.user_id).await.unwrap_err();
    assert_eq!(error.http(), (401, "unauthorized"));
    assert_eq!(
        service.caller(&login.access).unwrap_err().http(),
        (401, "unauthorized"),
        "its access token is refused at once"
    );
}

/// A phone-change code is void once the account has another number: codes asked for from
/// the old number do not move the account again.
#[tokio::test]
async fn a_phone_change_code_is_void_once_the_account_moved() {
    let sms = Arc::new(RecordingSender::new());
    let service = without_cooldown(MemoryUserStore::new(), sms.clone()).build();
    let (a, b, c) = (A, B, "+375291000003");
    let phone = |p: &str| service.parse_phone(p).unwrap();
    service.send_code(a).await.unwrap();
    let login = service
        .verify_code(a, &sms.last_code(&phone(a)).unwrap())
        .await
        .unwrap();
    let caller = service.caller(&login.access).unwrap();
    for to in [b, c] {
        service.send_code(a).await.unwrap();
        let proof = sms.last_code(&phone(a)).unwrap();
        service
            .send_phone_change_code(&caller, to, &proof, None, None)
            .await
            .unwrap();
    }
    let (to_b, to_c) = (
        sms.last_code(&phone(b)).unwrap(),
        sms.last_code(&phone(c)).unwrap(),
    );
    assert_eq!(
        service.change_phone(&caller, c, &to_c, None).await.unwrap(),
        phone(c)
    );
    let error = service
        .change_phone(&caller, b, &to_b, None)
        .await
        .unwrap_err();
    assert_eq!(
        error.http(),
        (400, "code_invalid"),
        "asked for from the old number"
    );
    assert_eq!(
        service.profile(login.user_id).await.unwrap().phone,
        phone(c)
    );
}

/// A process that records events without delivering them (an operator's command) records
/// `phone.locked` too.
#[tokio::test]
async fn recording_without_a_handler_records_phone_locked() {
    let users = Arc::new(MemoryUserStore::new());
    let sms = Arc::new(RecordingSender::new());
    let service = without_cooldown(users.clone(), sms.clone())
        .record_events()
        .build();
    let locked = 'lock: {
        for _ in 0..100 {
            service.send_code(A).await.unwrap();
            let code = sms.last_code(&service.parse_phone(A).unwrap()).unwrap();
            let wrong: String = code
                .chars()
                .map(|c| if c == '9' { '0' } else { '9' })
                .collect();
            for _ in 0..10 {
                if let Err(error) = service.verify_code(A, &wrong).await
                    && error.code() == "phone_locked"
                {
                    break 'lock true;
                }
            }
        }
        false
    };
    assert!(locked, "the phone locks");
    let events =
        refsys_core::UserStore::events(&*users, refsys_core::event::EventStatus::Pending, 100)
            .await
            .unwrap();
    assert!(
        events
            .iter()
            .any(|record| record.event.data.kind() == "phone.locked"),
        "{events:?}"
    );
}
