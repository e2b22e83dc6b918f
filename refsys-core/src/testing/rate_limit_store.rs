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
