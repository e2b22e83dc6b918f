//! Budgets beyond one code: the per-phone failure budget and lock, the deployment-wide SMS
//! budget, the per-user `use_invite_code` limit, and that no answer reveals whether a phone is
//! registered. Through `ReferralService`, on the in-memory stores and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use refsys_core::http::Reply;
use refsys_core::testing::RecordingSender;
use refsys_core::{ClientLimits, RateLimit};
use refsys_core::{
    Error, JwtKeys, ManualClock, MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore, Policy,
    ReferralService, Timestamp, UserId,
};

const SECRET: &[u8] = b"test secret that is long enough for HS256";

/// The start of an hour, so fixed-window `retry_after`s are whole hours.
const START: Timestamp = Timestamp::from_unix(1_800_000_000);

const A: &str = "+375291000001";
const B: &str = "+375291000002";
const C: &str = "+375291000003";
const D: &str = "+375291000004";
const TEST_PHONE: &str = "+375291000099";

struct World {
    service: ReferralService,
    sms: Arc<RecordingSender>,
    clock: Arc<ManualClock>,
}

fn world_with(policy: Policy) -> World {
    let sms = Arc::new(RecordingSender::new());
    let clock = Arc::new(ManualClock::new(START));
    let service = ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        sms.clone(),
        JwtKeys::hs256(SECRET).unwrap(),
    )
    .policy(policy)
    .clock(clock.clone())
    .client_limits(MemoryRateLimitStore::new(), ClientLimits::default())
    .build();
    World {
        service,
        sms,
        clock,
    }
}

fn world() -> World {
    world_with(Policy::default())
}

impl World {
    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn code(&self, phone: &str) -> String {
        let phone = self.service.parse_phone(phone).unwrap();
        self.sms.last_code(&phone).expect("a code was sent")
    }

    async fn login(&self, phone: &str) -> UserId {
        self.service.send_code(phone).await.unwrap();
        let code = self.code(phone);
        self.service
            .verify_code(phone, &code)
            .await
            .unwrap()
            .user_id
    }

    /// Sends a code and guesses wrong `n` times (stopping at a refusal that is not a miss);
    /// returns the last error.
    async fn miss(&self, phone: &str, n: usize) -> Error {
        let code = self.code(phone);
        let wrong = format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000);
        let mut last = None;
        for _ in 0..n {
            let error = self.service.verify_code(phone, &wrong).await.unwrap_err();
            let done = !matches!(error, Error::CodeInvalid { .. });
            last = Some(error);
            if done {
                break;
            }
        }
        last.expect("at least one guess")
    }
}

// ---- per-phone failure budget ----

#[tokio::test]
async fn fifty_wrong_codes_across_resends_lock_the_phone_for_an_hour() {
    let w = world();
    // Codes 1-9: five misses each, the fifth burns the code.
    for _ in 0..9 {
        w.service.send_code(A).await.unwrap();
        let error = w.miss(A, 5).await;
        assert_eq!(error.http(), (429, "too_many_attempts"));
        w.advance(60);
    }
    // Code 10: its fifth miss is the 50th in a row, and locks the phone instead of burning.
    w.service.send_code(A).await.unwrap();
    let code = w.code(A);
    let error = w.miss(A, 5).await;
    assert_eq!(error.http(), (429, "phone_locked"));
    assert_eq!(error.retry_after(), Some(3600));
    let body = serde_json::to_value(error.body()).unwrap();
    assert_eq!(body["retry_after"], 3600);
    let reply = Reply::from(error);
    assert_eq!(reply.header("retry-after"), Some("3600"));

    // Locked: the right code fails, and no code is sent.
    w.advance(600);
    let error = w.service.verify_code(A, &code).await.unwrap_err();
    assert_eq!(error.http(), (429, "phone_locked"));
    assert_eq!(error.retry_after(), Some(3000));
    let sent = w.sms.sent().len();
    let error = w.service.send_code(A).await.unwrap_err();
    assert_eq!(error.http(), (429, "phone_locked"));
    assert_eq!(error.retry_after(), Some(3000));
    assert_eq!(w.sms.sent().len(), sent, "no SMS to a locked phone");
    // Other phones are unaffected.
    w.login(B).await;

    // The lock ends: the phone logs in.
    w.advance(3000);
    w.login(A).await;
}

#[tokio::test]
async fn attempts_left_counts_down_to_the_lock_when_it_is_nearer() {
    let w = world_with(Policy::builder().max_failures(7).build().unwrap());
    w.service.send_code(A).await.unwrap();
    assert_eq!(w.miss(A, 5).await.code(), "too_many_attempts");
    w.advance(60);
    w.service.send_code(A).await.unwrap();
    let code = w.code(A);
    let wrong = format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000);
    let error = w.service.verify_code(A, &wrong).await.unwrap_err();
    assert_eq!(error.body().attempts_left, Some(1), "7 - 6 misses");
    let error = w.service.verify_code(A, &wrong).await.unwrap_err();
    assert_eq!(error.code(), "phone_locked");
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_budget() {
    let w = world_with(Policy::builder().max_failures(6).build().unwrap());
    for _ in 0..3 {
        w.service.send_code(A).await.unwrap();
        w.miss(A, 4).await;
        let code = w.code(A);
        w.service.verify_code(A, &code).await.unwrap();
        w.advance(60);
    }
    // 12 misses in all, never 6 in a row: never locked.
    w.service.send_code(A).await.unwrap();
}

#[tokio::test]
async fn test_phones_are_locked_too() {
    let w = world_with(
        Policy::builder()
            .test_phone(TEST_PHONE, "1234")
            .max_failures(3)
            .build()
            .unwrap(),
    );
    w.service.send_code(TEST_PHONE).await.unwrap();
    for _ in 0..2 {
        let error = w.service.verify_code(TEST_PHONE, "0000").await;
        assert_eq!(error.unwrap_err().code(), "code_invalid");
    }
    let error = w.service.verify_code(TEST_PHONE, "0000").await;
    assert_eq!(error.unwrap_err().code(), "phone_locked");
    let error = w.service.verify_code(TEST_PHONE, "1234").await;
    assert_eq!(error.unwrap_err().code(), "phone_locked");
}

#[test]
fn policy_refuses_failure_budgets_over_the_nist_cap() {
    assert_eq!(
        Policy::builder()
            .max_failures(101)
            .build()
            .unwrap_err()
            .setting,
        "max_failures"
    );
    let policy = Policy::builder().max_failures(100).build().unwrap();
    assert_eq!(policy.otp().max_failures, 100);
}

// ---- deployment-wide SMS budget ----

#[tokio::test]
async fn the_sms_budget_caps_the_deployment_and_takes_the_send_back() {
    let w = world_with(
        Policy::builder()
            .sms_budget(Some(RateLimit::per_hour(3)))
            // One budget for every prefix here (prefix shares: tests/pumping.rs).
            .sms_prefix_share(100)
            .test_phone(TEST_PHONE, "1234")
            .build()
            .unwrap(),
    );
    for phone in [A, B, C] {
        w.service.send_code(phone).await.unwrap();
    }
    // Test phones send no SMS and do not count.
    w.service.send_code(TEST_PHONE).await.unwrap();
    w.advance(10);
    let error = w.service.send_code(D).await.unwrap_err();
    assert_eq!(error.http(), (503, "sms_budget_exhausted"));
    // A sliding window, estimated from two fixed ones: the three sends of this hour count
    // whole until it ends, then as the share of it still within an hour. 2 of 3 fit once
    // 3 × left / 3600 <= 2, 1,200 s into the next hour.
    assert_eq!(
        error.retry_after(),
        Some(3590 + 1200),
        "until the window has slid past enough of the three sends"
    );
    let reply = Reply::from(error);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("4790"));
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["code"], "sms_budget_exhausted");
    assert_eq!(body["retry_after"], 4790);
    assert_eq!(w.sms.sent().len(), 3);
    // Refused again, still no SMS; D's own window and cooldown were not used.
    for _ in 0..10 {
        let error = w.service.send_code(D).await.unwrap_err();
        assert_eq!(error.code(), "sms_budget_exhausted");
    }
    // No code is pending for D.
    let error = w.service.verify_code(D, "0000").await.unwrap_err();
    assert_eq!(error.code(), "code_expired");
    // A second before the room it was promised, still none; then D gets a code at once, no
    // cooldown from the refused sends.
    w.advance(4789);
    let error = w.service.send_code(D).await.unwrap_err();
    assert_eq!(
        (error.code(), error.retry_after()),
        ("sms_budget_exhausted", Some(1))
    );
    w.advance(1);
    w.service.send_code(D).await.unwrap();
    assert_eq!(w.sms.sent().len(), 4);
}

#[tokio::test]
async fn the_sms_budget_is_on_by_default_and_can_be_turned_off() {
    assert_eq!(
        Policy::default().sms_budget(),
        Some(RateLimit::per_hour(1000))
    );
    // More sends in one hour than the default budget allows: every one goes out.
    let w = world_with(Policy::builder().sms_budget(None).build().unwrap());
    for i in 0..1001 {
        w.service
            .send_code(&format!("+37529200{i:04}"))
            .await
            .unwrap();
    }
    assert_eq!(w.sms.sent().len(), 1001);
}

#[tokio::test]
async fn the_sms_budget_is_shared_by_services_sharing_a_rate_store() {
    let rate = Arc::new(MemoryRateLimitStore::new());
    let otp = Arc::new(MemoryOtpStore::new());
    let users = Arc::new(MemoryUserStore::new());
    let sms = Arc::new(RecordingSender::new());
    let clock = Arc::new(ManualClock::new(START));
    let instance = || {
        ReferralService::builder(
            users.clone(),
            otp.clone(),
            sms.clone(),
            JwtKeys::hs256(SECRET).unwrap(),
        )
        .policy(
            Policy::builder()
                .sms_budget(Some(RateLimit::per_hour(2)))
                .sms_prefix_share(100)
                .build()
                .unwrap(),
        )
        .clock(clock.clone())
        .client_limits(rate.clone(), ClientLimits::default())
        .build()
    };
    let (one, two) = (instance(), instance());
    one.send_code(A).await.unwrap();
    two.send_code(B).await.unwrap();
    assert_eq!(
        one.send_code(C).await.unwrap_err().code(),
        "sms_budget_exhausted"
    );
    assert_eq!(
        two.send_code(C).await.unwrap_err().code(),
        "sms_budget_exhausted"
    );
}

// ---- use_invite_code per user ----

#[tokio::test]
async fn use_invite_code_is_limited_per_user_per_hour() {
    let w = world();
    let a = w.login(A).await;
    let b = w.login(B).await;
    let b_code = w.service.profile(b).await.unwrap().own_invite_code;
    let limit = ClientLimits::default().use_invite_code.unwrap();
    assert_eq!(limit, RateLimit::per_hour(10));
    // A sweeps the code space: ten guesses (malformed ones count too), then 429.
    for guess in ["ZZZZZZ", "ZZZZZY", "ZZZZZX", "bad"]
        .into_iter()
        .cycle()
        .take(10)
    {
        let error = w.service.use_invite_code(a, guess).await.unwrap_err();
        assert!(
            matches!(error.code(), "invite_code_not_found" | "invalid_request"),
            "{error:?}"
        );
    }
    w.advance(100);
    let error = w
        .service
        .use_invite_code(a, b_code.as_str())
        .await
        .unwrap_err();
    assert_eq!(error.http(), (429, "rate_limited"));
    assert_eq!(error.retry_after(), Some(3500));
    // Another user has their own budget.
    let c = w.login(C).await;
    let error = w.service.use_invite_code(c, "ZZZZZZ").await.unwrap_err();
    assert_eq!(error.code(), "invite_code_not_found");
    // The next hour, A may try again.
    w.advance(3500);
    w.service.use_invite_code(a, b_code.as_str()).await.unwrap();
}

#[tokio::test]
async fn the_use_invite_code_limit_can_be_turned_off() {
    let sms = Arc::new(RecordingSender::new());
    let service = ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        sms.clone(),
        JwtKeys::hs256(SECRET).unwrap(),
    )
    .client_limits(
        MemoryRateLimitStore::new(),
        ClientLimits {
            use_invite_code: None,
            ..ClientLimits::default()
        },
    )
    .build();
    service.send_code(A).await.unwrap();
    let phone = service.parse_phone(A).unwrap();
    let code = sms.last_code(&phone).unwrap();
    let user = service.verify_code(A, &code).await.unwrap().user_id;
    for _ in 0..50 {
        let error = service.use_invite_code(user, "ZZZZZZ").await.unwrap_err();
        assert_eq!(error.code(), "invite_code_not_found");
    }
}

// ---- enumeration ----

/// Every refusal of `send_code` and `verify_code` is the same reply (status, headers, body)
/// for a registered phone as for one never seen, in the same state.
#[tokio::test]
async fn answers_do_not_reveal_whether_a_phone_is_registered() {
    let w = world_with(Policy::builder().max_failures(7).build().unwrap());
    let registered = A;
    w.login(registered).await;
    let unregistered = B;
    w.advance(60);

    type Step = for<'a> fn(&'a World, &'static str) -> BoxFut<'a, Result<(), Error>>;
    // (seconds to wait first, name, step): each step runs for both phones at the same instant.
    let steps: [(u64, &str, Step); 6] = [
        (0, "verify without a code", |w, p| {
            Box::pin(async move { w.service.verify_code(p, "1234").await.map(drop) })
        }),
        (0, "send", |w, p| Box::pin(w.service.send_code(p))),
        (1, "send again within the cooldown", |w, p| {
            Box::pin(w.service.send_code(p))
        }),
        (1, "wrong code", |w, p| {
            Box::pin(async move {
                let code = w.code(p);
                let wrong = format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000);
                w.service.verify_code(p, &wrong).await.map(drop)
            })
        }),
        (1, "wrong codes up to the burn", |w, p| {
            Box::pin(async move { Err(w.miss(p, 4).await) })
        }),
        (60, "a new code, wrong codes up to the lock", |w, p| {
            Box::pin(async move {
                w.service.send_code(p).await?;
                Err(w.miss(p, 5).await)
            })
        }),
    ];
    for (wait, name, step) in steps {
        w.advance(wait);
        let one = step(&w, registered).await;
        let other = step(&w, unregistered).await;
        match (one, other) {
            (Ok(()), Ok(())) => {}
            (Err(one), Err(other)) => {
                assert_eq!(Reply::from(one), Reply::from(other), "{name}");
            }
            (one, other) => panic!("{name}: {one:?} vs {other:?}"),
        }
    }
    // Both are locked now, alike.
    let one = w.service.send_code(registered).await.unwrap_err();
    let other = w.service.send_code(unregistered).await.unwrap_err();
    assert_eq!(one.code(), "phone_locked");
    assert_eq!(Reply::from(one), Reply::from(other));
}

type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
