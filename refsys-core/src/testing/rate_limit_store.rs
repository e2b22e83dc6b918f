//! [`RateLimitStore`] conformance cases. Each takes a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, start};
use crate::Timestamp;
use crate::store::{RateDecision, RateLimitStore};

const MINUTE: Duration = Duration::from_secs(60);

/// The start of a fresh one-minute window at or after the case's start.
fn window_start() -> Timestamp {
    Timestamp::from_unix((start().as_unix() / 60 + 1) * 60)
}

/// `limit` hits pass, counting down; the next is refused until the window ends.
pub async fn hits_within_the_limit_are_allowed<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    for remaining in (0..3).rev() {
        let decision = store.hit("ip:1", 3, MINUTE, t).await.unwrap();
        assert_eq!(decision, RateDecision::Allowed { remaining });
    }
    let late = t.plus(Duration::from_secs(15));
    let refused = store.hit("ip:1", 3, MINUTE, late).await.unwrap();
    assert_eq!(
        refused,
        RateDecision::Limited {
            retry_after: Duration::from_secs(45)
        }
    );
}

/// A hit taken back frees its place in the window; counts never go below zero, and a counter
/// of an earlier window is not touched by a take-back in a later one.
pub async fn a_hit_taken_back_frees_its_place<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    for _ in 0..2 {
        store.hit("ip:1", 2, MINUTE, t).await.unwrap();
    }
    store.take_back("ip:1", MINUTE, t).await.unwrap();
    assert_eq!(
        store.hit("ip:1", 2, MINUTE, t).await.unwrap(),
        RateDecision::Allowed { remaining: 0 }
    );
    assert!(matches!(
        store.hit("ip:1", 2, MINUTE, t).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    // Never below zero: two take-backs of one hit leave room for one hit only.
    store.hit("ip:2", 1, MINUTE, t).await.unwrap();
    for _ in 0..2 {
        store.take_back("ip:2", MINUTE, t).await.unwrap();
    }
    assert_eq!(
        store.hit("ip:2", 1, MINUTE, t).await.unwrap(),
        RateDecision::Allowed { remaining: 0 }
    );
    assert!(matches!(
        store.hit("ip:2", 1, MINUTE, t).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    // A key never hit, and a later window: nothing to take back, nothing breaks.
    store.take_back("ip:3", MINUTE, t).await.unwrap();
    let next = t.plus(MINUTE);
    store.take_back("ip:1", MINUTE, next).await.unwrap();
    assert!(matches!(
        store.hit("ip:1", 2, MINUTE, t).await.unwrap(),
        RateDecision::Limited { .. }
    ));
}

/// A new window starts from zero.
pub async fn the_window_resets_the_count<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    for _ in 0..2 {
        store.hit("ip:1", 2, MINUTE, t).await.unwrap();
    }
    assert!(matches!(
        store.hit("ip:1", 2, MINUTE, t).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    let next = t.plus(MINUTE);
    let decision = store.hit("ip:1", 2, MINUTE, next).await.unwrap();
    assert_eq!(decision, RateDecision::Allowed { remaining: 1 });
}

/// One key's hits do not count against another's.
pub async fn keys_are_independent<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    store.hit("ip:1", 1, MINUTE, t).await.unwrap();
    assert!(matches!(
        store.hit("ip:1", 1, MINUTE, t).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    let other = store.hit("ip:2", 1, MINUTE, t).await.unwrap();
    assert_eq!(other, RateDecision::Allowed { remaining: 0 });
}

/// 50 simultaneous hits against a limit of 10: exactly 10 pass.
pub async fn concurrent_hits_never_exceed_the_limit<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    let outcomes = concurrently(&store, 50, |store, _| async move {
        store.hit("ip:1", 10, MINUTE, t).await.unwrap()
    })
    .await;
    let allowed = outcomes
        .iter()
        .filter(|o| matches!(o, RateDecision::Allowed { .. }))
        .count();
    assert_eq!(allowed, 10);
}

/// How many sliding hits on `key` pass in a row at `now`.
async fn allowed_in_a_row<S: RateLimitStore>(
    store: &S,
    key: &str,
    limit: u32,
    now: Timestamp,
) -> u32 {
    let mut allowed = 0;
    while let RateDecision::Allowed { .. } =
        store.hit_sliding(key, limit, MINUTE, now).await.unwrap()
    {
        allowed += 1;
        assert!(allowed <= limit, "more than the limit passed");
    }
    allowed
}

/// A sliding window: a full count does not reset when its fixed window ends, but frees its
/// places as the window slides past them (the last window's hits weighted by the share of it
/// still inside the window, rounded up); two windows later it is empty.
pub async fn a_sliding_window_frees_places_gradually<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    assert_eq!(allowed_in_a_row(&*store, "sms", 10, t).await, 10);
    // The next fixed window has begun, but all 10 are still within a minute.
    let next = t.plus(MINUTE);
    assert_eq!(
        store.hit_sliding("sms", 10, MINUTE, next).await.unwrap(),
        RateDecision::Limited {
            // ceil(10 × left / 60) <= 9 once left <= 54 s: 6 s from now.
            retry_after: Duration::from_secs(6)
        }
    );
    // Halfway through it, half of the last window's hits have slid out.
    let halfway = next.plus(Duration::from_secs(30));
    assert_eq!(allowed_in_a_row(&*store, "sms", 10, halfway).await, 5);
    // Two windows later, nothing is left.
    let later = t.plus(3 * MINUTE);
    assert_eq!(allowed_in_a_row(&*store, "sms", 10, later).await, 10);
}

/// The last window's share is rounded up, as [`sliding_estimate`](crate::store::sliding_estimate)
/// says, whatever divides evenly: 7 hits, 13 s of their window still inside the sliding one:
/// ceil(7 × 13 / 60) = 2 carried, so 8 of 10 fit.
pub async fn a_sliding_window_rounds_the_carried_share_up<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    assert_eq!(allowed_in_a_row(&*store, "odd", 7, t).await, 7);
    let later = t.plus(MINUTE).plus(Duration::from_secs(47));
    assert_eq!(allowed_in_a_row(&*store, "odd", 10, later).await, 8);
    // 8 this window + ceil(7 × 13 / 60) = 10: full until ceil(7 × left / 60) <= 1, left <= 8.
    assert_eq!(
        store.hit_sliding("odd", 10, MINUTE, later).await.unwrap(),
        RateDecision::Limited {
            retry_after: Duration::from_secs(5)
        }
    );
}

/// A burst at the end of one fixed window and another at the start of the next pass the
/// limit once, not twice (fixed windows would let both through).
pub async fn a_sliding_window_holds_across_the_window_edge<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    let end_of_first = t.plus(Duration::from_secs(59));
    assert_eq!(allowed_in_a_row(&*store, "sms", 10, end_of_first).await, 10);
    let start_of_next = t.plus(MINUTE);
    assert_eq!(allowed_in_a_row(&*store, "sms", 10, start_of_next).await, 0);
    // A key counted with `hit` is a fixed window: it resets, as documented.
    for _ in 0..10 {
        store.hit("fixed", 10, MINUTE, end_of_first).await.unwrap();
    }
    assert!(matches!(
        store.hit("fixed", 10, MINUTE, start_of_next).await.unwrap(),
        RateDecision::Allowed { .. }
    ));
    // A sliding count whose current window is full waits for the next window and the share
    // that has slid out of it: 10 hits, limit 10, at the window's start: ceil(10 × left / 60)
    // <= 9 once left <= 54 s, so 60 + 6 s.
    assert_eq!(allowed_in_a_row(&*store, "full", 10, t).await, 10);
    assert_eq!(
        store.hit_sliding("full", 10, MINUTE, t).await.unwrap(),
        RateDecision::Limited {
            retry_after: Duration::from_secs(66)
        }
    );
}

/// A sliding hit taken back frees its place, and 50 simultaneous sliding hits against a limit
/// of 10 pass exactly 10.
pub async fn sliding_hits_are_atomic_and_can_be_taken_back<S: RateLimitStore>(store: Arc<S>) {
    let t = window_start();
    assert_eq!(allowed_in_a_row(&*store, "sms", 3, t).await, 3);
    store.take_back("sms", MINUTE, t).await.unwrap();
    assert_eq!(allowed_in_a_row(&*store, "sms", 3, t).await, 1);
    let outcomes = concurrently(&store, 50, |store, _| async move {
        store.hit_sliding("many", 10, MINUTE, t).await.unwrap()
    })
    .await;
    let allowed = outcomes
        .iter()
        .filter(|o| matches!(o, RateDecision::Allowed { .. }))
        .count();
    assert_eq!(allowed, 10);
}
