//! [`UserStore`] conformance cases. Each takes a fresh, empty store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{concurrently, phone, start};
use crate::session::SessionClient;
use crate::store::{Activation, Rotation, UserStore};
use crate::{Change, FamilyId, InviteCode, SessionEndReason, Timestamp, TokenId, User};

/// The reuse grace the grace cases use (the policy's default).
const GRACE: Duration = Duration::from_secs(10);
/// No reuse grace: every spent token that comes back is theft.
const NO_GRACE: Duration = Duration::ZERO;
/// A refresh family's lifetime in these cases.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

async fn create<S: UserStore>(store: &S, n: u32) -> User {
    store
        .find_or_create(&phone(n), &InviteCode::generate, Change::recorded(start()))
        .await
        .expect("find_or_create")
        .user
}

/// Logging in twice with one phone finds the same user.
pub async fn find_or_create_is_idempotent_per_phone<S: UserStore>(store: Arc<S>) {
    let first = store
        .find_or_create(&phone(1), &InviteCode::generate, Change::recorded(start()))
        .await
        .unwrap();
    assert!(first.created);
    let second = store
        .find_or_create(&phone(1), &InviteCode::generate, Change::recorded(start()))
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(first.user, second.user);
    assert_eq!(first.user.phone, phone(1));
}

/// Different phones get different ids and invite codes.
pub async fn find_or_create_gives_distinct_ids_and_codes<S: UserStore>(store: Arc<S>) {
    let mut users = Vec::new();
    for n in 0..20 {
        users.push(create(&*store, n).await);
    }
    for (i, a) in users.iter().enumerate() {
        for b in &users[i + 1..] {
            assert_ne!(a.id, b.id);
            assert_ne!(a.invite_code, b.invite_code);
        }
    }
}

/// A generated code that is taken is replaced by a fresh one, not rejected.
pub async fn find_or_create_retries_invite_code_collisions<S: UserStore>(store: Arc<S>) {
    let taken = create(&*store, 1).await.invite_code;
    let fresh = InviteCode::parse("FRESH2").unwrap();
    let calls = AtomicUsize::new(0);
    let colliding_first = || {
        if calls.fetch_add(1, Ordering::SeqCst) < 3 {
            taken
        } else {
            fresh
        }
    };
    let second = store
        .find_or_create(&phone(2), &colliding_first, Change::recorded(start()))
        .await
        .unwrap();
    assert!(second.created);
    assert_eq!(second.user.invite_code, fresh);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// A generator that only collides makes the store give up (bounded), creating nobody.
pub async fn find_or_create_gives_up_after_bounded_collisions<S: UserStore>(store: Arc<S>) {
    let taken = create(&*store, 1).await.invite_code;
    let calls = AtomicUsize::new(0);
    let always_taken = || {
        calls.fetch_add(1, Ordering::SeqCst);
        taken
    };
    let result = store
        .find_or_create(&phone(2), &always_taken, Change::recorded(start()))
        .await;
    assert!(
        matches!(result, Err(crate::StoreError::Exhausted(_))),
        "must give up, got {result:?}"
    );
    let tries = calls.load(Ordering::SeqCst);
    assert!(
        (2..=100).contains(&tries),
        "tries should be bounded, were {tries}"
    );
    let later = store
        .find_or_create(&phone(2), &InviteCode::generate, Change::recorded(start()))
        .await
        .unwrap();
    assert!(
        later.created,
        "the failed call must not have created the user"
    );
}

/// 50 simultaneous first logins of one phone create exactly one user.
pub async fn concurrent_find_or_create_creates_one_user<S: UserStore>(store: Arc<S>) {
    let outcomes = concurrently(&store, 50, |store, _| async move {
        store
            .find_or_create(&phone(7), &InviteCode::generate, Change::recorded(start()))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(outcomes.iter().filter(|r| r.created).count(), 1);
    assert!(outcomes.iter().all(|r| r.user == outcomes[0].user));
}

/// An id no user has has no profile.
pub async fn profile_of_unknown_user_is_none<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 1).await;
    assert!(
        store
            .profile(crate::UserId(user.id.0 + 1000), usize::MAX)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .profile(crate::UserId(-1), usize::MAX)
            .await
            .unwrap()
            .is_none()
    );
}

/// A new user's profile: own phone and code, nothing applied, nobody invited.
pub async fn profile_of_new_user_is_empty<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 1).await;
    let profile = store.profile(user.id, usize::MAX).await.unwrap().unwrap();
    assert_eq!(profile.phone, user.phone);
    assert_eq!(profile.own_invite_code, user.invite_code);
    assert_eq!(profile.activated_invite_code, None);
    assert!(profile.invited_users.is_empty());
    assert_eq!(profile.invited_count, 0);
}

/// Invitees appear in the inviter's profile in the order they applied the code.
pub async fn invitees_are_listed_oldest_first<S: UserStore>(store: Arc<S>) {
    let owner = create(&*store, 1).await;
    // Created in one order, applying in another: the listing follows application order.
    let guests = [
        create(&*store, 2).await,
        create(&*store, 3).await,
        create(&*store, 4).await,
    ];
    for guest in [&guests[2], &guests[0], &guests[1]] {
        let outcome = store
            .activate_invite(guest.id, &owner.invite_code, Change::recorded(start()))
            .await
            .unwrap();
        assert_eq!(outcome, Activation::Activated);
    }
    let profile = store.profile(owner.id, usize::MAX).await.unwrap().unwrap();
    let expected = vec![
        guests[2].phone.clone(),
        guests[0].phone.clone(),
        guests[1].phone.clone(),
    ];
    assert_eq!(profile.invited_users, expected);
    assert_eq!(profile.invited_count, 3);
    let guest = store
        .profile(guests[0].id, usize::MAX)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        guest.invited_count, 0,
        "applying a code counts for its owner only"
    );
    assert_eq!(guest.activated_invite_code, Some(owner.invite_code));
}

/// Refusals come in the documented order and change nothing.
pub async fn activation_refusals_in_documented_order<S: UserStore>(store: Arc<S>) {
    let a = create(&*store, 1).await;
    let b = create(&*store, 2).await;
    let c = create(&*store, 3).await;
    let nobody = crate::UserId(a.id.0.max(b.id.0).max(c.id.0) + 1000);
    let unused = (0..)
        .map(|_| InviteCode::generate())
        .find(|code| ![a.invite_code, b.invite_code, c.invite_code].contains(code))
        .unwrap();

    let activate = |user, code| {
        let store = store.clone();
        async move {
            store
                .activate_invite(user, &code, Change::recorded(start()))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        activate(nobody, b.invite_code).await,
        Activation::UnknownUser
    );
    assert_eq!(activate(a.id, unused).await, Activation::NotFound);
    assert_eq!(activate(a.id, a.invite_code).await, Activation::OwnCode);
    assert_eq!(
        store
            .profile(a.id, usize::MAX)
            .await
            .unwrap()
            .unwrap()
            .activated_invite_code,
        None
    );

    assert_eq!(activate(a.id, b.invite_code).await, Activation::Activated);
    assert_eq!(
        activate(a.id, c.invite_code).await,
        Activation::AlreadyActivated
    );
    assert_eq!(
        activate(a.id, b.invite_code).await,
        Activation::AlreadyActivated
    );
    assert_eq!(activate(a.id, unused).await, Activation::NotFound);
    assert_eq!(activate(a.id, a.invite_code).await, Activation::OwnCode);

    let profile = store.profile(a.id, usize::MAX).await.unwrap().unwrap();
    assert_eq!(profile.activated_invite_code, Some(b.invite_code));
    assert!(
        store
            .profile(c.id, usize::MAX)
            .await
            .unwrap()
            .unwrap()
            .invited_users
            .is_empty()
    );
    let inviter = store.profile(b.id, usize::MAX).await.unwrap().unwrap();
    assert_eq!(inviter.invited_users, vec![a.phone]);
    assert_eq!(inviter.invited_count, 1, "the refusals counted nothing");
    assert_eq!(
        store
            .profile(c.id, usize::MAX)
            .await
            .unwrap()
            .unwrap()
            .invited_count,
        0
    );
}

/// A user cannot apply the code of someone they invited, directly or down a chain.
pub async fn activation_refuses_direct_and_transitive_cycles<S: UserStore>(store: Arc<S>) {
    let a = create(&*store, 1).await;
    let b = create(&*store, 2).await;
    let c = create(&*store, 3).await;
    let d = create(&*store, 4).await;
    // a invites b, b invites c, c invites d.
    for (guest, host) in [(&b, &a), (&c, &b), (&d, &c)] {
        assert_eq!(
            store
                .activate_invite(guest.id, &host.invite_code, Change::recorded(start()))
                .await
                .unwrap(),
            Activation::Activated
        );
    }
    for descendant in [&b, &c, &d] {
        assert_eq!(
            store
                .activate_invite(a.id, &descendant.invite_code, Change::recorded(start()))
                .await
                .unwrap(),
            Activation::Cycle
        );
    }
    assert_eq!(
        store
            .activate_invite(b.id, &d.invite_code, Change::recorded(start()))
            .await
            .unwrap(),
        Activation::AlreadyActivated
    );
    // Someone outside the chain is fine.
    let e = create(&*store, 5).await;
    assert_eq!(
        store
            .activate_invite(a.id, &e.invite_code, Change::recorded(start()))
            .await
            .unwrap(),
        Activation::Activated
    );
}

/// 100 simultaneous activations by one user (of 10 different codes): exactly one succeeds.
pub async fn concurrent_activations_by_one_user_succeed_once<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 0).await;
    let mut codes = Vec::new();
    for n in 1..=10 {
        codes.push(create(&*store, n).await.invite_code);
    }
    let codes = Arc::new(codes);
    let outcomes = concurrently(&store, 100, |store, i| {
        let codes = codes.clone();
        async move {
            store
                .activate_invite(user.id, &codes[i % codes.len()], Change::recorded(start()))
                .await
                .unwrap()
        }
    })
    .await;
    let wins = outcomes
        .iter()
        .filter(|o| **o == Activation::Activated)
        .count();
    assert_eq!(wins, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Activation::Activated | Activation::AlreadyActivated))
    );
    let profile = store.profile(user.id, usize::MAX).await.unwrap().unwrap();
    let applied = profile.activated_invite_code.expect("one code applied");
    let mut invitee_counts = 0;
    let mut counted = 0;
    for n in 1..=10 {
        let host = store
            .find_or_create(
                &super::phone(n),
                &InviteCode::generate,
                Change::recorded(start()),
            )
            .await
            .unwrap();
        let host_profile = store
            .profile(host.user.id, usize::MAX)
            .await
            .unwrap()
            .unwrap();
        counted += host_profile.invited_count;
        let invited = host_profile.invited_users;
        invitee_counts += invited.len();
        if host.user.invite_code == applied {
            assert_eq!(invited, vec![user.phone.clone()]);
        }
    }
    assert_eq!(invitee_counts, 1, "exactly one referral recorded");
    assert_eq!(counted, 1, "exactly one referral counted");
}

/// Two users applying each other's codes at the same moment: one wins, the other sees a
/// cycle — never both. Repeated over 20 pairs to give races a chance.
pub async fn concurrent_mutual_activations_never_make_a_cycle<S: UserStore>(store: Arc<S>) {
    for pair in 0..20 {
        let a = create(&*store, 2 * pair).await;
        let b = create(&*store, 2 * pair + 1).await;
        let outcomes = concurrently(&store, 2, |store, i| {
            let (who, code) = if i == 0 {
                (a.id, b.invite_code)
            } else {
                (b.id, a.invite_code)
            };
            async move {
                store
                    .activate_invite(who, &code, Change::recorded(start()))
                    .await
                    .unwrap()
            }
        })
        .await;
        let mut sorted = outcomes.clone();
        sorted.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            sorted,
            vec![Activation::Activated, Activation::Cycle],
            "pair {pair}"
        );
        let pa = store.profile(a.id, usize::MAX).await.unwrap().unwrap();
        let pb = store.profile(b.id, usize::MAX).await.unwrap().unwrap();
        assert!(pa.activated_invite_code.is_some() != pb.activated_invite_code.is_some());
    }
}

/// Three users applying codes around a ring at once: at most two succeed.
pub async fn concurrent_ring_activations_never_make_a_cycle<S: UserStore>(store: Arc<S>) {
    for round in 0..10 {
        let ring = [
            create(&*store, 3 * round).await,
            create(&*store, 3 * round + 1).await,
            create(&*store, 3 * round + 2).await,
        ];
        let ring = Arc::new(ring);
        let outcomes = concurrently(&store, 3, |store, i| {
            let ring = ring.clone();
            async move {
                let code = ring[(i + 1) % 3].invite_code;
                store
                    .activate_invite(ring[i].id, &code, Change::recorded(start()))
                    .await
                    .unwrap()
            }
        })
        .await;
        let wins = outcomes
            .iter()
            .filter(|o| **o == Activation::Activated)
            .count();
        assert_eq!(wins, 2, "round {round}: {outcomes:?}");
        assert!(
            outcomes.contains(&Activation::Cycle),
            "round {round}: {outcomes:?}"
        );
    }
}

/// A refresh token rotates once; presenting a spent one revokes the family.
pub async fn refresh_rotation_and_reuse_detection<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 1).await;
    let now = start();
    let week = Duration::from_secs(7 * 24 * 3600);
    let family = FamilyId::random();
    let (t1, t2, t3) = (TokenId::random(), TokenId::random(), TokenId::random());
    store
        .start_family(
            &user,
            &family,
            &t1,
            &SessionClient::default(),
            Change::recorded(now),
            now.plus(week),
        )
        .await
        .unwrap();

    let rotate = |presented: &TokenId, next: &TokenId| {
        let (store, family, presented, next) = (
            store.clone(),
            family.clone(),
            presented.clone(),
            next.clone(),
        );
        async move {
            store
                .rotate_refresh(
                    &family,
                    &presented,
                    &next,
                    Change::recorded(now),
                    now.plus(week),
                    NO_GRACE,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(rotate(&t1, &t2).await, Rotation::Rotated);
    assert_eq!(rotate(&t2, &t3).await, Rotation::Rotated);
    // t1 was spent: theft. The family dies, the live t3 with it.
    assert_eq!(rotate(&t1, &TokenId::random()).await, Rotation::Reused);
    assert_eq!(rotate(&t3, &TokenId::random()).await, Rotation::Revoked);

    // Another family of the same user is untouched.
    let other = FamilyId::random();
    let o1 = TokenId::random();
    store
        .start_family(
            &user,
            &other,
            &o1,
            &SessionClient::default(),
            Change::recorded(now),
            now.plus(week),
        )
        .await
        .unwrap();
    let outcome = store
        .rotate_refresh(
            &other,
            &o1,
            &TokenId::random(),
            Change::recorded(now),
            now.plus(week),
            NO_GRACE,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Rotation::Rotated);
}

/// Logout (revocation), unknown families and expired families never rotate.
pub async fn revoked_unknown_and_expired_families_do_not_rotate<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 1).await;
    let now = start();
    let hour = Duration::from_secs(3600);

    let revoked = FamilyId::random();
    let r1 = TokenId::random();
    store
        .start_family(
            &user,
            &revoked,
            &r1,
            &SessionClient::default(),
            Change::recorded(now),
            now.plus(hour),
        )
        .await
        .unwrap();
    store
        .revoke_family(
            &revoked,
            SessionEndReason::Logout,
            Change::recorded(start()),
        )
        .await
        .unwrap();
    store
        .revoke_family(
            &revoked,
            SessionEndReason::Logout,
            Change::recorded(start()),
        )
        .await
        .unwrap();
    let outcome = store
        .rotate_refresh(
            &revoked,
            &r1,
            &TokenId::random(),
            Change::recorded(now),
            now.plus(hour),
            GRACE,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Rotation::Revoked);

    let unknown = FamilyId::random();
    store
        .revoke_family(
            &unknown,
            SessionEndReason::Logout,
            Change::recorded(start()),
        )
        .await
        .unwrap();
    let outcome = store
        .rotate_refresh(
            &unknown,
            &r1,
            &TokenId::random(),
            Change::recorded(now),
            now.plus(hour),
            GRACE,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Rotation::Revoked);

    let expiring = FamilyId::random();
    let e1 = TokenId::random();
    store
        .start_family(
            &user,
            &expiring,
            &e1,
            &SessionClient::default(),
            Change::recorded(now),
            now.plus(hour),
        )
        .await
        .unwrap();
    let later = now.plus(hour);
    let outcome = store
        .rotate_refresh(
            &expiring,
            &e1,
            &TokenId::random(),
            Change::recorded(later),
            later.plus(hour),
            GRACE,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Rotation::Revoked);
}

/// The token spent last, presented again less than the grace after it was spent, gets the
/// live token and changes nothing; at the end of the grace, or once another rotation came
/// between, it is theft and revokes the family.
pub async fn a_token_spent_within_the_reuse_grace_gets_the_live_one<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 1).await;
    let now = start();
    let [family, other, strict] = [(); 3].map(|()| FamilyId::random());
    let [t1, t2, t3, t4, o1, o2, s1, s2] = [(); 8].map(|()| TokenId::random());
    for (family, first) in [(&family, &t1), (&other, &o1), (&strict, &s1)] {
        store
            .start_family(
                &user,
                family,
                first,
                &SessionClient::default(),
                Change::recorded(now),
                now.plus(WEEK),
            )
            .await
            .unwrap();
    }
    let fresh = TokenId::random;

    assert_eq!(
        rotate_at(&*store, &family, &t1, &t2, now, GRACE).await,
        Rotation::Rotated
    );
    // A retry 9 s later, and again: the live t2 each time, nothing rotates.
    let retry = now.plus(GRACE - Duration::from_secs(1));
    for _ in 0..2 {
        let outcome = rotate_at(&*store, &family, &t1, &fresh(), retry, GRACE).await;
        assert_eq!(outcome, Rotation::Grace { live: t2.clone() });
    }
    // t2 is still the one to spend.
    let later = now.plus(Duration::from_secs(60));
    assert_eq!(
        rotate_at(&*store, &family, &t2, &t3, later, GRACE).await,
        Rotation::Rotated
    );
    // t1 is two rotations old now: theft, even within t2's grace.
    let outcome = rotate_at(&*store, &family, &t1, &fresh(), later, GRACE).await;
    assert_eq!(outcome, Rotation::Reused);
    assert_eq!(
        rotate_at(&*store, &family, &t3, &t4, later, GRACE).await,
        Rotation::Revoked
    );

    // The grace ends exactly `GRACE` after the spend.
    assert_eq!(
        rotate_at(&*store, &other, &o1, &o2, now, GRACE).await,
        Rotation::Rotated
    );
    let end = now.plus(GRACE);
    assert_eq!(
        rotate_at(&*store, &other, &o1, &fresh(), end, GRACE).await,
        Rotation::Reused
    );
    assert_eq!(
        rotate_at(&*store, &other, &o2, &fresh(), end, GRACE).await,
        Rotation::Revoked
    );

    // With no grace, a retry a second later is theft.
    assert_eq!(
        rotate_at(&*store, &strict, &s1, &s2, now, NO_GRACE).await,
        Rotation::Rotated
    );
    let second = now.plus(Duration::from_secs(1));
    let outcome = rotate_at(&*store, &strict, &s1, &fresh(), second, NO_GRACE).await;
    assert_eq!(outcome, Rotation::Reused);
}

/// One rotation of `family` at `at`, with `grace`, for a week.
async fn rotate_at<S: UserStore>(
    store: &S,
    family: &FamilyId,
    presented: &TokenId,
    next: &TokenId,
    at: Timestamp,
    grace: Duration,
) -> Rotation {
    store
        .rotate_refresh(
            family,
            presented,
            next,
            Change::recorded(at),
            at.plus(WEEK),
            grace,
        )
        .await
        .unwrap()
}

/// 30 simultaneous refreshes with one token, within the grace: exactly one rotates, the 29
/// others get the token it made live, and the family lives on.
pub async fn concurrent_refreshes_within_the_grace_all_get_the_live_token<S: UserStore>(
    store: Arc<S>,
) {
    let user = create(&*store, 1).await;
    let now = start();
    let expires = now.plus(Duration::from_secs(3600));
    let family = FamilyId::random();
    let first = TokenId::random();
    store
        .start_family(
            &user,
            &family,
            &first,
            &SessionClient::default(),
            Change::recorded(now),
            expires,
        )
        .await
        .unwrap();
    let outcomes = concurrently(&store, 30, |store, _| {
        let (family, first, next) = (family.clone(), first.clone(), TokenId::random());
        async move {
            let outcome = store
                .rotate_refresh(
                    &family,
                    &first,
                    &next,
                    Change::recorded(now),
                    expires,
                    GRACE,
                )
                .await
                .unwrap();
            (next, outcome)
        }
    })
    .await;
    let winners: Vec<&TokenId> = outcomes
        .iter()
        .filter(|(_, o)| *o == Rotation::Rotated)
        .map(|(next, _)| next)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let live = winners[0].clone();
    for (_, outcome) in &outcomes {
        assert!(
            *outcome == Rotation::Rotated || *outcome == Rotation::Grace { live: live.clone() },
            "{outcome:?}"
        );
    }
    let outcome = store
        .rotate_refresh(
            &family,
            &live,
            &TokenId::random(),
            Change::recorded(now),
            expires,
            GRACE,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Rotation::Rotated, "the family survived");
}

/// 20 simultaneous refreshes with one token and no grace: exactly one rotates.
pub async fn concurrent_rotations_of_one_token_succeed_once<S: UserStore>(store: Arc<S>) {
    let user = create(&*store, 1).await;
    let now = start();
    let expires = now.plus(Duration::from_secs(3600));
    let family = FamilyId::random();
    let first = TokenId::random();
    store
        .start_family(
            &user,
            &family,
            &first,
            &SessionClient::default(),
            Change::recorded(now),
            expires,
        )
        .await
        .unwrap();
    let outcomes = concurrently(&store, 20, |store, _| {
        let (family, first) = (family.clone(), first.clone());
        async move {
            store
                .rotate_refresh(
                    &family,
                    &first,
                    &TokenId::random(),
                    Change::recorded(now),
                    expires,
                    NO_GRACE,
                )
                .await
                .unwrap()
        }
    })
    .await;
    let rotated = outcomes.iter().filter(|o| **o == Rotation::Rotated).count();
    assert_eq!(rotated, 1, "{outcomes:?}");
    // Every loser presented a spent token: theft detection revoked the family.
    assert!(outcomes.contains(&Rotation::Reused), "{outcomes:?}");
}

/// The readiness probe answers on a healthy store.
pub async fn ping_answers<S: UserStore>(store: Arc<S>) {
    store.ping().await.expect("ping");
}
