//! SMS pumping without an off switch: destination-prefix shares of the SMS budget, and the
//! human check that switches on under pressure. Through `ReferralService`, on the in-memory
//! stores and a manual clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use refsys_core::human::{HumanCheckAnswer, solve_pow};
use refsys_core::testing::RecordingSender;
use refsys_core::{
    Challenge, ClientLimits, Error, JwtKeys, ManualClock, MemoryOtpStore, MemoryRateLimitStore,
    MemoryUserStore, Policy, ProofOfWork, RateLimit, ReferralService, Timestamp,
};

const START: Timestamp = Timestamp::from_unix(1_800_000_000);

struct World {
    service: ReferralService,
    sms: Arc<RecordingSender>,
    clock: Arc<ManualClock>,
}

fn world(policy: Policy, human_check: bool) -> World {
    let sms = Arc::new(RecordingSender::new());
    let clock = Arc::new(ManualClock::new(START));
    let keys = JwtKeys::hs256(b"test secret that is long enough for HS256").unwrap();
    let mut builder = ReferralService::builder(
        MemoryUserStore::new(),
        MemoryOtpStore::new(),
        sms.clone(),
        keys.clone(),
    )
    .policy(policy)
    .clock(clock.clone())
    .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled());
    if human_check {
        builder = builder.human_check(ProofOfWork::new(&keys).difficulty(4));
    }
    World {
        service: builder.build(),
        sms,
        clock,
    }
}

fn budget(max: u32) -> Policy {
    Policy::builder()
        .sms_budget(Some(RateLimit::per_hour(max)))
        .build()
        .unwrap()
}

/// Ranges of valid mobile numbers, each of its own destination prefix: the start of the
/// number and its first serial.
const RANGES: [(&str, u32); 10] = [
    ("+37529", 1_000_000),
    ("+37533", 1_000_000),
    ("+37544", 1_000_000),
    ("+7916", 1_000_000),
    ("+44791", 1_000_000),
    ("+336", 12_000_000),
    ("+48512", 100_000),
    ("+38050", 1_000_000),
    ("+99555", 1_000_000),
    ("+1201", 2_000_000),
];

/// The `n`-th number (below 200) of range `range`.
fn number(range: usize, n: u32) -> String {
    let (start, first) = RANGES[range];
    format!("{start}{}", first + n)
}

fn client() -> Option<IpAddr> {
    Some("203.0.113.7".parse().unwrap())
}

/// The answer to a `428`'s proof-of-work challenge.
fn solve(error: &Error) -> HumanCheckAnswer {
    let body = serde_json::to_value(error.body()).unwrap();
    assert_eq!(body["code"], "human_check_required", "{body}");
    let challenge = &body["challenge"];
    assert_eq!(challenge["kind"], "pow");
    assert_eq!(challenge["algorithm"], "sha256");
    let text = challenge["challenge"].as_str().unwrap();
    let difficulty = u8::try_from(challenge["difficulty"].as_u64().unwrap()).unwrap();
    serde_json::from_value(serde_json::json!({
        "kind": "pow",
        "challenge": text,
        "solution": solve_pow(text, difficulty),
    }))
    .unwrap()
}

impl World {
    async fn send(&self, phone: &str, answer: Option<&HumanCheckAnswer>) -> Result<(), Error> {
        self.service.send_code_with(phone, client(), answer).await
    }

    /// Sends a code to `phone`, solving the human check when asked.
    async fn send_solving(&self, phone: &str) -> Result<(), Error> {
        match self.send(phone, None).await {
            Err(asked @ Error::HumanCheckRequired { .. }) => {
                self.send(phone, Some(&solve(&asked))).await
            }
            other => other,
        }
    }
}

#[tokio::test]
async fn an_attack_on_one_prefix_spends_its_share_and_other_prefixes_still_get_codes() {
    // 100 SMS an hour, a quarter of it per prefix, no human check.
    let w = world(budget(100), false);
    let mut refused = 0;
    for n in 0..60 {
        match w.send(&number(0, n), None).await {
            Ok(()) => {}
            Err(error) => {
                assert_eq!(error.code(), "sms_budget_exhausted");
                assert!(error.retry_after().unwrap() > 0);
                refused += 1;
            }
        }
    }
    assert_eq!((w.sms.sent().len(), refused), (25, 35));
    // Numbers of other ranges are not affected.
    for range in 1..4 {
        w.send(&number(range, 1), None).await.unwrap();
    }
    assert_eq!(w.sms.sent().len(), 28);
    // A refused number was not charged a cooldown: it gets its code once there is room.
    w.clock.advance(Duration::from_secs(2 * 3600));
    w.send(&number(0, 59), None).await.unwrap();
}

#[tokio::test]
async fn under_pressure_send_code_asks_for_a_human_check_and_sends_once_it_is_passed() {
    // A prefix's share is 25 of 100; sends are asked once half of it (12.5) is used: the
    // 14th.
    let w = world(budget(100), true);
    for n in 0..13 {
        w.send(&number(0, n), None).await.unwrap();
    }
    let asked = w.send(&number(0, 13), None).await.unwrap_err();
    assert_eq!(asked.http(), (428, "human_check_required"));
    assert_eq!(w.sms.sent().len(), 13, "nothing sent for a 428");
    // Nothing was counted either: still 428 (not a cooldown), and other ranges get codes.
    let again = w.send(&number(0, 13), None).await.unwrap_err();
    assert_eq!(again.code(), "human_check_required");
    w.send(&number(1, 1), None).await.unwrap();
    // The answer sends the code.
    let answer = solve(&asked);
    w.send(&number(0, 13), Some(&answer)).await.unwrap();
    assert_eq!(w.sms.sent().len(), 15);
    // An answer is spent once: again for its own phone (checked before the cooldown) it is
    // refused.
    let reused = w.send(&number(0, 13), Some(&answer)).await.unwrap_err();
    assert_eq!(reused.http(), (400, "human_check_failed"));
    // It is bound to its phone, and a try for another phone does not spend it.
    let for_another = solve(&w.send(&number(0, 14), None).await.unwrap_err());
    let refused = w.send(&number(0, 15), Some(&for_another)).await;
    assert_eq!(refused.unwrap_err().code(), "human_check_failed");
    w.send(&number(0, 14), Some(&for_another)).await.unwrap();
    // It expires.
    let stale = solve(&w.send(&number(0, 16), None).await.unwrap_err());
    w.clock.advance(Duration::from_secs(121));
    let refused = w.send(&number(0, 16), Some(&stale)).await;
    assert_eq!(refused.unwrap_err().code(), "human_check_failed");
    assert_eq!(w.sms.sent().len(), 16);
}

#[tokio::test]
async fn a_428_leaves_the_phones_pending_code_alone() {
    // Past the mark, a stranger's unanswered send_code for a phone must not replace or
    // cancel the code its owner is about to type.
    let policy = Policy::builder()
        .sms_budget(Some(RateLimit::per_hour(10)))
        .sms_prefix_share(100)
        .resend_cooldown(Duration::ZERO)
        .build()
        .unwrap();
    let w = world(policy, true);
    let owner = number(0, 1);
    w.send(&owner, None).await.unwrap();
    let code = w
        .sms
        .last_code(&w.service.parse_phone(&owner).unwrap())
        .unwrap();
    for n in 2..6 {
        w.send(&number(1, n), None).await.unwrap();
    }
    let asked = w.send(&owner, None).await.unwrap_err();
    assert_eq!(asked.code(), "human_check_required");
    w.service.verify_code(&owner, &code).await.unwrap();
}

#[tokio::test]
async fn a_wrong_answer_is_refused_even_without_pressure() {
    let w = world(budget(100), true);
    let wrong: HumanCheckAnswer = serde_json::from_value(serde_json::json!({
        "kind": "pow", "challenge": "v1.1.1.x.y", "solution": "1"
    }))
    .unwrap();
    let refused = w.send(&number(0, 1), Some(&wrong)).await.unwrap_err();
    assert_eq!(refused.http(), (400, "human_check_failed"));
    assert!(w.sms.sent().is_empty());
    // Without an answer, no pressure: the code goes out.
    w.send(&number(0, 1), None).await.unwrap();
}

#[tokio::test]
async fn the_deployment_mark_asks_every_prefix() {
    let policy = Policy::builder()
        .sms_budget(Some(RateLimit::per_hour(10)))
        .sms_prefix_share(100)
        .build()
        .unwrap();
    let w = world(policy, true);
    for range in 0..5 {
        w.send(&number(range, 1), None).await.unwrap();
    }
    // 5 of 10 used: the half mark, from which every prefix is asked.
    let asked = w.send(&number(0, 2), None).await.unwrap_err();
    assert_eq!(asked.code(), "human_check_required");
    let asked = w.send(&number(1, 2), None).await.unwrap_err();
    assert_eq!(asked.code(), "human_check_required");
    assert!(matches!(
        &asked,
        Error::HumanCheckRequired { challenge } if matches!(**challenge, Challenge::Pow { .. })
    ));
}

#[tokio::test]
async fn an_attacker_who_solves_every_check_never_passes_the_budget() {
    // 40 an hour, 10 per prefix; the attacker solves every challenge, on 10 prefixes.
    let w = world(budget(40), true);
    let mut sent = 0;
    for n in 0..30 {
        for range in 0..RANGES.len() {
            if w.send_solving(&number(range, n)).await.is_ok() {
                sent += 1;
            }
        }
        assert!(w.sms.sent().len() <= 40);
    }
    assert_eq!((sent, w.sms.sent().len()), (40, 40));
    // Refused since: the deployment's budget, with a wait.
    let refused = w.send_solving(&number(0, 99)).await.unwrap_err();
    assert_eq!(refused.code(), "sms_budget_exhausted");
    assert!(refused.retry_after().unwrap() > 0);
}

#[tokio::test]
async fn without_a_human_check_the_mark_changes_nothing() {
    let policy = Policy::builder()
        .sms_budget(Some(RateLimit::per_hour(10)))
        .sms_prefix_share(100)
        .human_check_at(0)
        .build()
        .unwrap();
    let w = world(policy, false);
    for n in 0..10 {
        w.send(&number(0, n), None).await.unwrap();
    }
    let refused = w.send(&number(0, 10), None).await.unwrap_err();
    assert_eq!(refused.code(), "sms_budget_exhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_get_a_428_never_hold_a_place_in_the_budget() {
    // Asked always; 8 SMS, one left after 7 solved sends. 200 unanswered sends at once all
    // get 428 (none a 503 for a place another one holds for a moment), and the last place is
    // still there for a person who answers.
    let policy = Policy::builder()
        .sms_budget(Some(RateLimit::per_hour(8)))
        .sms_prefix_share(100)
        .human_check_at(0)
        .build()
        .unwrap();
    let w = Arc::new(world(policy, true));
    for n in 0..7 {
        w.send_solving(&number(n as usize % RANGES.len(), n))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let w = Arc::clone(&w);
            tokio::spawn(async move {
                // 200 distinct numbers: 20 in each range.
                let (range, serial) = (n % RANGES.len(), 100 + n / RANGES.len());
                w.send(&number(range, serial as u32), None).await
            })
        })
        .collect();
    for task in tasks {
        let refused = task.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), "human_check_required");
    }
    w.send_solving(&number(0, 199)).await.unwrap();
    let spent = w.send_solving(&number(1, 199)).await.unwrap_err();
    assert_eq!(spent.code(), "sms_budget_exhausted");
    assert_eq!(w.sms.sent().len(), 8);
}
