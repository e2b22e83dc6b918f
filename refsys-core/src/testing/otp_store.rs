//! [`OtpStore`] conformance cases. Each takes a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, phone, start};
use crate::store::{Check, Issue, OtpStore};
use crate::{FamilyId, OtpCode, OtpHash, OtpPolicy, Phone};

const PEPPER: [u8; 32] = [7; 32];

fn hash(phone: &Phone, code: &str) -> OtpHash {
    OtpHash::new(&PEPPER, phone, &OtpCode::parse(code, code.len()).unwrap())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The right code verifies once; it is consumed.
pub async fn issued_code_verifies_once<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    assert_eq!(
        store
            .issue(&p, &hash(&p, "1234"), now, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    let code = hash(&p, "1234");
    let check = |at| store.check(&p, &code, at, &policy);
    assert_eq!(check(now.plus(secs(10))).await.unwrap(), Check::Valid);
    assert_eq!(check(now.plus(secs(11))).await.unwrap(), Check::Missing);
}

/// Each miss counts; the last allowed miss burns the code.
pub async fn wrong_codes_count_down_then_burn<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    for left in (1..policy.max_attempts).rev() {
        let outcome = store
            .check(&p, &hash(&p, "0000"), now, &policy)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Check::Invalid {
                attempts_left: left
            }
        );
    }
    let last = store
        .check(&p, &hash(&p, "0000"), now, &policy)
        .await
        .unwrap();
    assert!(
        matches!(last, Check::Burned { retry_after } if retry_after == policy.resend_cooldown),
        "{last:?}"
    );
}

/// After the burn, even the right code fails, until a new code is issued.
pub async fn burned_code_never_verifies_until_a_new_one<S: OtpStore>(store: Arc<S>) {
    let policy = OtpPolicy {
        max_attempts: 2,
        ..OtpPolicy::default()
    };
    let (now, p) = (start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    for _ in 0..2 {
        store
            .check(&p, &hash(&p, "9999"), now, &policy)
            .await
            .unwrap();
    }
    for later in [1, 30] {
        let outcome = store
            .check(&p, &hash(&p, "1234"), now.plus(secs(later)), &policy)
            .await
            .unwrap();
        assert!(matches!(outcome, Check::Burned { .. }));
    }
    let fresh = now.plus(policy.resend_cooldown);
    assert_eq!(
        store
            .issue(&p, &hash(&p, "5678"), fresh, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    let outcome = store
        .check(&p, &hash(&p, "5678"), fresh, &policy)
        .await
        .unwrap();
    assert_eq!(outcome, Check::Valid);
}

/// A code lives for exactly its lifetime: it still verifies a second before, and is dead at
/// the end.
pub async fn code_expires<S: OtpStore>(store: Arc<S>) {
    let (policy, now) = (OtpPolicy::default(), start());
    let (alive, dead) = (phone(1), phone(2));
    for p in [&alive, &dead] {
        store
            .issue(p, &hash(p, "1234"), now, &policy)
            .await
            .unwrap();
    }
    let just_before = now.plus(policy.code_ttl - std::time::Duration::from_secs(1));
    let outcome = store
        .check(&alive, &hash(&alive, "1234"), just_before, &policy)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Check::Valid,
        "a second before the end of its lifetime"
    );
    let expired = now.plus(policy.code_ttl);
    let outcome = store
        .check(&dead, &hash(&dead, "1234"), expired, &policy)
        .await
        .unwrap();
    assert_eq!(outcome, Check::Missing, "at the end of its lifetime");
}

/// No code was ever issued.
pub async fn unknown_phone_has_no_code<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    assert_eq!(
        store
            .check(&p, &hash(&p, "1234"), now, &policy)
            .await
            .unwrap(),
        Check::Missing
    );
}

/// A second code within the cooldown is refused with the time left; after it, a new code
/// replaces the old one.
pub async fn resend_cooldown_then_new_code_replaces_old<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1111"), now, &policy)
        .await
        .unwrap();
    let early = store
        .issue(&p, &hash(&p, "2222"), now.plus(secs(20)), &policy)
        .await
        .unwrap();
    assert_eq!(
        early,
        Issue::Cooldown {
            retry_after: secs(40)
        }
    );
    // The refused issue did not replace the code.
    let first_still = store
        .check(&p, &hash(&p, "1111"), now.plus(secs(21)), &policy)
        .await;
    assert_eq!(first_still.unwrap(), Check::Valid);

    let t = now.plus(secs(60));
    store
        .issue(&p, &hash(&p, "3333"), t, &policy)
        .await
        .unwrap();
    let t2 = t.plus(policy.resend_cooldown);
    assert_eq!(
        store
            .issue(&p, &hash(&p, "4444"), t2, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    let old = store
        .check(&p, &hash(&p, "3333"), t2, &policy)
        .await
        .unwrap();
    assert_eq!(
        old,
        Check::Invalid {
            attempts_left: policy.max_attempts - 1
        }
    );
    assert_eq!(
        store
            .check(&p, &hash(&p, "4444"), t2, &policy)
            .await
            .unwrap(),
        Check::Valid
    );
}

/// At most `max_sends_per_window` codes per rolling window.
pub async fn send_window_caps_codes_per_phone<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    let step = policy.resend_cooldown.as_secs();
    for i in 0..u64::from(policy.max_sends_per_window) {
        let at = now.plus(secs(i * step));
        assert_eq!(
            store
                .issue(&p, &hash(&p, "1234"), at, &policy)
                .await
                .unwrap(),
            Issue::Stored
        );
    }
    let sends = u64::from(policy.max_sends_per_window);
    let full_at = now.plus(secs(sends * step));
    let full = store
        .issue(&p, &hash(&p, "1234"), full_at, &policy)
        .await
        .unwrap();
    let wait = policy.send_window.as_secs() - sends * step;
    assert_eq!(
        full,
        Issue::WindowFull {
            retry_after: secs(wait)
        }
    );
    // When the oldest send leaves the window, one more fits.
    let reopened = now.plus(policy.send_window);
    assert_eq!(
        store
            .issue(&p, &hash(&p, "1234"), reopened, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    // The window rolls: the next-oldest send leaves one cooldown later...
    let next = reopened.plus(policy.resend_cooldown);
    assert_eq!(
        store
            .issue(&p, &hash(&p, "1234"), next, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    // ...and the window is full again at once, the full window reported over the cooldown.
    let again = store
        .issue(&p, &hash(&p, "1234"), next.plus(secs(1)), &policy)
        .await
        .unwrap();
    assert!(matches!(again, Issue::WindowFull { .. }), "{again:?}");
}

/// A cancelled issue (the SMS failed) leaves no code, no cooldown and no window use.
pub async fn cancel_gives_the_send_back<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    for i in 0..u64::from(policy.max_sends_per_window) + 3 {
        let at = now.plus(secs(i));
        let code = hash(&p, "1234");
        assert_eq!(
            store.issue(&p, &code, at, &policy).await.unwrap(),
            Issue::Stored,
            "send {i}"
        );
        store.cancel(&p, &code, at, &policy).await.unwrap();
        assert_eq!(
            store.check(&p, &code, at, &policy).await.unwrap(),
            Check::Missing
        );
    }
}

/// Cancelling an old issue does not remove a newer code.
pub async fn cancel_leaves_a_newer_code_alone<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1111"), now, &policy)
        .await
        .unwrap();
    let later = now.plus(policy.resend_cooldown);
    store
        .issue(&p, &hash(&p, "2222"), later, &policy)
        .await
        .unwrap();
    store
        .cancel(&p, &hash(&p, "1111"), now, &policy)
        .await
        .unwrap();
    assert_eq!(
        store
            .check(&p, &hash(&p, "2222"), later, &policy)
            .await
            .unwrap(),
        Check::Valid
    );
}

/// A code given back after a valid check is pending again, with the attempts it had left,
/// and verifies once more; giving back a code that is not the one consumed changes nothing.
pub async fn restore_gives_a_consumed_code_back<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    let (code, wrong) = (hash(&p, "1234"), hash(&p, "0000"));
    store.issue(&p, &code, now, &policy).await.unwrap();
    let check = |code: OtpHash, at| {
        let (store, p, policy) = (store.clone(), p.clone(), policy.clone());
        async move { store.check(&p, &code, at, &policy).await.unwrap() }
    };
    // One miss first: the code has max_attempts - 1 left.
    assert!(matches!(check(wrong, now).await, Check::Invalid { .. }));
    assert_eq!(check(code, now).await, Check::Valid);
    assert_eq!(check(code, now).await, Check::Missing, "consumed");
    // Another code, or a code never consumed, is not given back.
    store.restore(&p, &wrong, now, &policy).await.unwrap();
    assert_eq!(check(code, now).await, Check::Missing);
    store.restore(&p, &code, now, &policy).await.unwrap();
    // Pending again, with the attempts it had: max_attempts - 2 misses, then the burn.
    for left in (1..policy.max_attempts - 1).rev() {
        assert_eq!(
            check(wrong, now).await,
            Check::Invalid {
                attempts_left: left
            }
        );
    }
    assert!(matches!(check(wrong, now).await, Check::Burned { .. }));
    assert!(matches!(check(code, now).await, Check::Burned { .. }));

    // Restored twice, it still verifies only once per restore.
    let q = phone(2);
    let code = hash(&q, "4321");
    store.issue(&q, &code, now, &policy).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            store.check(&q, &code, now, &policy).await.unwrap(),
            Check::Valid
        );
        store.restore(&q, &code, now, &policy).await.unwrap();
        store.restore(&q, &code, now, &policy).await.unwrap();
    }
    assert_eq!(
        store.check(&q, &code, now, &policy).await.unwrap(),
        Check::Valid
    );
    assert_eq!(
        store.check(&q, &code, now, &policy).await.unwrap(),
        Check::Missing
    );
}

/// A code is not given back once it expired, nor once a newer code was issued.
pub async fn restore_leaves_expired_and_replaced_codes_alone<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    let code = hash(&p, "1234");
    store.issue(&p, &code, now, &policy).await.unwrap();
    assert_eq!(
        store.check(&p, &code, now, &policy).await.unwrap(),
        Check::Valid
    );
    let expired = now.plus(policy.code_ttl);
    store.restore(&p, &code, expired, &policy).await.unwrap();
    assert_eq!(
        store.check(&p, &code, expired, &policy).await.unwrap(),
        Check::Missing
    );

    let q = phone(2);
    let (old, new) = (hash(&q, "1111"), hash(&q, "2222"));
    store.issue(&q, &old, now, &policy).await.unwrap();
    assert_eq!(
        store.check(&q, &old, now, &policy).await.unwrap(),
        Check::Valid
    );
    let later = now.plus(policy.resend_cooldown);
    store.issue(&q, &new, later, &policy).await.unwrap();
    store.restore(&q, &old, later, &policy).await.unwrap();
    assert!(matches!(
        store.check(&q, &old, later, &policy).await.unwrap(),
        Check::Invalid { .. }
    ));
    assert_eq!(
        store.check(&q, &new, later, &policy).await.unwrap(),
        Check::Valid
    );
}

/// One phone's codes, cooldowns and attempts do not touch another's.
pub async fn phones_are_independent<S: OtpStore>(store: Arc<S>) {
    let (policy, now) = (OtpPolicy::default(), start());
    let (a, b) = (phone(1), phone(2));
    store
        .issue(&a, &hash(&a, "1111"), now, &policy)
        .await
        .unwrap();
    assert_eq!(
        store
            .issue(&b, &hash(&b, "2222"), now, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    assert_eq!(
        store
            .check(&a, &hash(&a, "2222"), now, &policy)
            .await
            .unwrap(),
        Check::Invalid {
            attempts_left: policy.max_attempts - 1
        }
    );
    assert_eq!(
        store
            .check(&b, &hash(&b, "2222"), now, &policy)
            .await
            .unwrap(),
        Check::Valid
    );
    assert_eq!(
        store
            .check(&a, &hash(&a, "1111"), now, &policy)
            .await
            .unwrap(),
        Check::Valid
    );
}

/// 50 simultaneous right answers: exactly one login.
pub async fn concurrent_correct_checks_succeed_once<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    let outcomes = concurrently(&store, 50, |store, _| {
        let (p, policy) = (p.clone(), policy.clone());
        async move {
            store
                .check(&p, &hash(&p, "1234"), now, &policy)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(
        outcomes.iter().filter(|o| **o == Check::Valid).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Check::Valid | Check::Missing))
    );
}

/// 100 simultaneous wrong guesses count exactly; the right code afterwards still fails.
pub async fn concurrent_wrong_guesses_never_exceed_the_limit<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    let outcomes = concurrently(&store, 100, |store, i| {
        let (p, policy) = (p.clone(), policy.clone());
        let guess = format!("{:04}", 5000 + i);
        async move {
            store
                .check(&p, &hash(&p, &guess), now, &policy)
                .await
                .unwrap()
        }
    })
    .await;
    let mut lefts: Vec<u32> = outcomes
        .iter()
        .filter_map(|o| match o {
            Check::Invalid { attempts_left } => Some(*attempts_left),
            _ => None,
        })
        .collect();
    lefts.sort_unstable();
    let expected: Vec<u32> = (1..policy.max_attempts).collect();
    assert_eq!(lefts, expected, "each miss counted exactly once");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Check::Invalid { .. } | Check::Burned { .. }))
    );
    let right = store
        .check(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    assert!(matches!(right, Check::Burned { .. }), "{right:?}");
}

/// 20 simultaneous sends to one phone: exactly one code goes out.
pub async fn concurrent_issues_store_once<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    let outcomes = concurrently(&store, 20, |store, i| {
        let (p, policy) = (p.clone(), policy.clone());
        async move {
            store
                .issue(&p, &hash(&p, &format!("{:04}", i)), now, &policy)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(
        outcomes.iter().filter(|o| **o == Issue::Stored).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Issue::Stored | Issue::Cooldown { .. }))
    );
}

/// A policy with a small failure budget for the budget cases.
fn budget_policy(max_attempts: u32, max_failures: u32, lockout: u64) -> OtpPolicy {
    OtpPolicy {
        max_attempts,
        max_failures,
        lockout: secs(lockout),
        ..OtpPolicy::default()
    }
}

/// Misses count across codes; the `max_failures`-th locks the phone for `lockout`: no code
/// is checked (the right one included) or issued. The lock drops the pending code, and when
/// it ends the phone starts afresh. Other phones are not touched.
pub async fn failures_across_codes_lock_the_phone<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (budget_policy(3, 7, 600), start(), phone(1));
    let wrong = hash(&p, "0000");
    let miss = |at| store.check(&p, &wrong, at, &policy);
    for (i, code) in ["1111", "2222"].into_iter().enumerate() {
        let at = now.plus(secs(60 * i as u64));
        let issued = store.issue(&p, &hash(&p, code), at, &policy).await.unwrap();
        assert_eq!(issued, Issue::Stored);
        for left in [2, 1] {
            let outcome = miss(at).await.unwrap();
            assert_eq!(
                outcome,
                Check::Invalid {
                    attempts_left: left
                },
                "code {code}"
            );
        }
        assert!(matches!(miss(at).await.unwrap(), Check::Burned { .. }));
    }
    // Six misses so far; the seventh, on a third code, locks.
    let t = now.plus(secs(120));
    store
        .issue(&p, &hash(&p, "3333"), t, &policy)
        .await
        .unwrap();
    assert_eq!(
        miss(t).await.unwrap(),
        Check::LockedNow {
            retry_after: secs(600)
        }
    );
    let right = store
        .check(&p, &hash(&p, "3333"), t.plus(secs(10)), &policy)
        .await;
    assert_eq!(
        right.unwrap(),
        Check::Locked {
            retry_after: secs(590)
        }
    );
    let resend = store
        .issue(&p, &hash(&p, "4444"), t.plus(secs(100)), &policy)
        .await;
    assert_eq!(
        resend.unwrap(),
        Issue::Locked {
            retry_after: secs(500)
        }
    );
    // Another phone is unaffected.
    let q = phone(2);
    assert_eq!(
        store
            .issue(&q, &hash(&q, "5555"), t, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    assert_eq!(
        store
            .check(&q, &hash(&q, "5555"), t, &policy)
            .await
            .unwrap(),
        Check::Valid
    );
    // The lock ends: the locked code is gone, a new one is issued with a fresh budget.
    let end = t.plus(secs(600));
    let old = store.check(&p, &hash(&p, "3333"), end, &policy).await;
    assert_eq!(old.unwrap(), Check::Missing);
    assert_eq!(
        store
            .issue(&p, &hash(&p, "6666"), end, &policy)
            .await
            .unwrap(),
        Issue::Stored
    );
    assert_eq!(
        miss(end).await.unwrap(),
        Check::Invalid { attempts_left: 2 }
    );
    let right = store.check(&p, &hash(&p, "6666"), end, &policy).await;
    assert_eq!(right.unwrap(), Check::Valid);
}

/// `attempts_left` is the nearer of the code's misses and the phone's budget.
pub async fn attempts_left_is_the_nearer_of_code_and_budget<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (budget_policy(5, 3, 60), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    let wrong = hash(&p, "0000");
    let miss = || store.check(&p, &wrong, now, &policy);
    assert_eq!(miss().await.unwrap(), Check::Invalid { attempts_left: 2 });
    assert_eq!(miss().await.unwrap(), Check::Invalid { attempts_left: 1 });
    assert_eq!(
        miss().await.unwrap(),
        Check::LockedNow {
            retry_after: secs(60)
        }
    );
    // The next miss finds the phone locked by that one.
    assert_eq!(
        miss().await.unwrap(),
        Check::Locked {
            retry_after: secs(60)
        }
    );
}

/// A successful check resets the count of misses; checks without a live code, and checks of
/// a burned code, are not misses.
pub async fn success_resets_the_failure_count<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (budget_policy(3, 4, 3600), start(), phone(1));
    // Not misses: no code yet.
    for _ in 0..10 {
        let outcome = store.check(&p, &hash(&p, "0000"), now, &policy).await;
        assert_eq!(outcome.unwrap(), Check::Missing);
    }
    store
        .issue(&p, &hash(&p, "1111"), now, &policy)
        .await
        .unwrap();
    for _ in 0..2 {
        store
            .check(&p, &hash(&p, "0000"), now, &policy)
            .await
            .unwrap();
    }
    let ok = store.check(&p, &hash(&p, "1111"), now, &policy).await;
    assert_eq!(ok.unwrap(), Check::Valid);
    // Fresh count: three misses burn this code without locking (4 allowed).
    let t = now.plus(policy.resend_cooldown);
    store
        .issue(&p, &hash(&p, "2222"), t, &policy)
        .await
        .unwrap();
    let wrong = hash(&p, "0000");
    let miss = || store.check(&p, &wrong, t, &policy);
    assert_eq!(miss().await.unwrap(), Check::Invalid { attempts_left: 2 });
    assert_eq!(miss().await.unwrap(), Check::Invalid { attempts_left: 1 });
    assert!(matches!(miss().await.unwrap(), Check::Burned { .. }));
    // Checks of the burned code are not misses: still not locked.
    for _ in 0..10 {
        assert!(matches!(miss().await.unwrap(), Check::Burned { .. }));
    }
    let t2 = t.plus(policy.resend_cooldown);
    store
        .issue(&p, &hash(&p, "3333"), t2, &policy)
        .await
        .unwrap();
    // The fourth miss since the last success locks.
    let outcome = store.check(&p, &hash(&p, "0000"), t2, &policy).await;
    assert!(matches!(outcome.unwrap(), Check::LockedNow { .. }));
}

/// The count of misses is forgotten after a `lockout` without a miss.
pub async fn failure_count_is_forgotten_after_a_quiet_lockout<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (budget_policy(10, 3, 100), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    let wrong = hash(&p, "0000");
    let miss = |at| store.check(&p, &wrong, at, &policy);
    assert_eq!(
        miss(now).await.unwrap(),
        Check::Invalid { attempts_left: 2 }
    );
    let last = now.plus(secs(1));
    assert_eq!(
        miss(last).await.unwrap(),
        Check::Invalid { attempts_left: 1 }
    );
    // A lockout after the last miss, the count starts over.
    let quiet = last.plus(secs(100));
    assert_eq!(
        miss(quiet).await.unwrap(),
        Check::Invalid { attempts_left: 2 }
    );
    assert_eq!(
        miss(quiet.plus(secs(99))).await.unwrap(),
        Check::Invalid { attempts_left: 1 }
    );
    assert!(matches!(
        miss(quiet.plus(secs(99))).await.unwrap(),
        Check::LockedNow { .. }
    ));
}

/// 100 simultaneous wrong guesses against a budget of 10: exactly 9 misses answer
/// `Invalid` (each count once), one `LockedNow` (the miss that locked) and every other one
/// `Locked`; then nothing gets through.
pub async fn concurrent_wrong_guesses_never_exceed_the_budget<S: OtpStore>(store: Arc<S>) {
    let (policy, now, p) = (budget_policy(1000, 10, 3600), start(), phone(1));
    store
        .issue(&p, &hash(&p, "1234"), now, &policy)
        .await
        .unwrap();
    let outcomes = concurrently(&store, 100, |store, i| {
        let (p, policy) = (p.clone(), policy.clone());
        let guess = format!("{:04}", 5000 + i);
        async move {
            store
                .check(&p, &hash(&p, &guess), now, &policy)
                .await
                .unwrap()
        }
    })
    .await;
    let mut lefts: Vec<u32> = outcomes
        .iter()
        .filter_map(|o| match o {
            Check::Invalid { attempts_left } => Some(*attempts_left),
            _ => None,
        })
        .collect();
    lefts.sort_unstable();
    assert_eq!(lefts, (1..10).collect::<Vec<u32>>(), "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Check::Locked { .. }))
            .count(),
        90
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Check::LockedNow { .. }))
            .count(),
        1
    );
    let right = store.check(&p, &hash(&p, "1234"), now, &policy).await;
    assert!(matches!(right.unwrap(), Check::Locked { .. }));
    let later = now.plus(policy.resend_cooldown);
    let issued = store.issue(&p, &hash(&p, "4321"), later, &policy).await;
    assert!(matches!(issued.unwrap(), Issue::Locked { .. }));
}

/// The readiness probe answers on a healthy store.
pub async fn ping_answers<S: OtpStore>(store: Arc<S>) {
    store.ping().await.expect("ping");
}

/// Revoked sessions are listed from a time on, oldest first; revoking one again keeps the
/// later time; entries older than `keep` are forgotten by a later revocation.
pub async fn revoked_sessions_are_listed_since_and_forgotten_after_keep<S: OtpStore>(
    store: Arc<S>,
) {
    let t = start();
    let keep = secs(600);
    let (a, b, c) = (FamilyId::random(), FamilyId::random(), FamilyId::random());
    assert!(store.revoked_sessions(t).await.unwrap().is_empty());
    store.revoke_session(&a, t, keep).await.unwrap();
    store
        .revoke_session(&b, t.plus(secs(5)), keep)
        .await
        .unwrap();
    assert_eq!(
        store.revoked_sessions(t).await.unwrap(),
        [(a.clone(), t), (b.clone(), t.plus(secs(5)))]
    );
    assert_eq!(
        store.revoked_sessions(t.plus(secs(1))).await.unwrap(),
        [(b.clone(), t.plus(secs(5)))]
    );
    assert_eq!(
        store.revoked_sessions(t.plus(secs(5))).await.unwrap(),
        [(b.clone(), t.plus(secs(5)))],
        "since is inclusive"
    );
    assert!(
        store
            .revoked_sessions(t.plus(secs(6)))
            .await
            .unwrap()
            .is_empty()
    );
    // Again, later: the later time; earlier: no change.
    store
        .revoke_session(&a, t.plus(secs(7)), keep)
        .await
        .unwrap();
    store
        .revoke_session(&a, t.plus(secs(2)), keep)
        .await
        .unwrap();
    assert_eq!(
        store.revoked_sessions(t.plus(secs(6))).await.unwrap(),
        [(a.clone(), t.plus(secs(7)))]
    );
    // Ten minutes after a's last revocation, b and a are forgotten.
    store
        .revoke_session(&c, t.plus(secs(608)), keep)
        .await
        .unwrap();
    let left = store.revoked_sessions(t).await.unwrap();
    assert_eq!(left, [(c, t.plus(secs(608)))], "{left:?}");
}

/// Revocations by many instances at once are all kept.
pub async fn concurrent_revocations_are_all_kept<S: OtpStore>(store: Arc<S>) {
    let t = start();
    let sessions: Vec<FamilyId> = (0..16).map(|_| FamilyId::random()).collect();
    let all = Arc::new(sessions.clone());
    concurrently(&store, 16, |store, i| {
        let all = Arc::clone(&all);
        async move {
            store
                .revoke_session(&all[i], t.plus(secs(i as u64 % 3)), secs(600))
                .await
                .unwrap();
        }
    })
    .await;
    let mut listed: Vec<FamilyId> = store
        .revoked_sessions(t)
        .await
        .unwrap()
        .into_iter()
        .map(|(session, _)| session)
        .collect();
    let mut expected = sessions;
    let key = |id: &FamilyId| id.as_str().to_owned();
    listed.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(listed, expected);
}
