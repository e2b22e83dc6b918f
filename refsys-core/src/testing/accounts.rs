//! Conformance cases for accounts: [`UserStore::account`], [`UserStore::change_phone`] and
//! [`UserStore::delete_account`].

use std::sync::Arc;
use std::time::Duration;

use super::sessions::{client, create, session};
use super::{concurrently, phone, start};
use crate::account::{Invitee, PhoneChange};
use crate::event::EventStatus;
use crate::store::{Activation, Rotation, UserStore};
use crate::{
    Change, EventData, FamilyId, InviteCode, SessionEndReason, Timestamp, TokenId, User, UserId,
};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn apply<S: UserStore>(store: &S, user: &User, owner: &User, at: Timestamp) {
    let outcome = store
        .activate_invite(user.id, &owner.invite_code, Change::unrecorded(at))
        .await
        .expect("activate_invite");
    assert_eq!(outcome, Activation::Activated);
}

/// The pending events about `user`, in order: (type, data).
async fn events_of<S: UserStore>(store: &S, user: UserId) -> Vec<EventData> {
    store
        .events(EventStatus::Pending, 10_000)
        .await
        .expect("events")
        .into_iter()
        .map(|record| record.event.data)
        .filter(|data| data.user_id() == Some(user))
        .collect()
}

/// An account's export holds what the store keeps: phone, when it was created, its own code,
/// the code it applied and when, its inviter, and its invitees in the order they applied
/// its code, each with when.
pub async fn account_exports_what_is_stored<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let bob = create(&*store, 2, t.plus(secs(1))).await;
    let carol = create(&*store, 3, t.plus(secs(2))).await;
    apply(&*store, &carol, &alice, t.plus(secs(5))).await;
    apply(&*store, &bob, &alice, t.plus(secs(8))).await;

    let account = store.account(alice.id).await.unwrap().expect("alice");
    assert_eq!(account.user_id, alice.id);
    assert_eq!(account.phone, alice.phone);
    assert_eq!(account.created_at, t);
    assert_eq!(account.own_invite_code, alice.invite_code);
    assert_eq!(account.activated_invite_code, None);
    assert_eq!(account.activated_at, None);
    assert_eq!(account.invited_by, None);
    assert_eq!(
        account.invitees,
        vec![
            Invitee {
                user_id: carol.id,
                phone: carol.phone.clone(),
                joined_at: t.plus(secs(5)),
            },
            Invitee {
                user_id: bob.id,
                phone: bob.phone.clone(),
                joined_at: t.plus(secs(8)),
            },
        ],
        "in the order they applied the code, not the order they registered"
    );

    let account = store.account(bob.id).await.unwrap().expect("bob");
    assert_eq!(account.created_at, t.plus(secs(1)));
    assert_eq!(account.activated_invite_code, Some(alice.invite_code));
    assert_eq!(account.activated_at, Some(t.plus(secs(8))));
    assert_eq!(account.invited_by, Some(alice.id));
    assert!(account.invitees.is_empty());

    assert_eq!(store.account(UserId(999_999)).await.unwrap(), None);
}

/// Deleting an account erases it (profile, account, sessions, phone) and keeps the graph
/// whole: the id and the invite code are never given to another user, the code cannot be
/// applied any more, invitees keep the code they applied, the account leaves its inviter's
/// invitees, its sessions are gone, and the phone registers a brand-new user. The live
/// sessions' `session.revoked` (reason `account_deleted`) come before `account.deleted`.
pub async fn deleting_an_account_erases_it_and_keeps_the_graph<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let bob = create(&*store, 2, t).await;
    let carol = create(&*store, 3, t).await;
    let dave = create(&*store, 4, t).await;
    apply(&*store, &bob, &alice, t).await;
    apply(&*store, &carol, &bob, t).await;
    let (live, live_jti) = session(&*store, &bob, &client(1), t, t.plus(WEEK)).await;
    let (ended, _) = session(&*store, &bob, &client(2), t, t.plus(WEEK)).await;
    store
        .revoke_family(&ended, SessionEndReason::Logout, Change::unrecorded(t))
        .await
        .unwrap();
    let (_alices, _) = session(&*store, &alice, &client(3), t, t.plus(WEEK)).await;

    let at = t.plus(secs(10));
    let revoked = store
        .delete_account(bob.id, Change::recorded(at))
        .await
        .unwrap();
    assert_eq!(
        revoked,
        Some(vec![live.clone()]),
        "the live session, not the ended one"
    );

    assert_eq!(store.profile(bob.id, usize::MAX).await.unwrap(), None);
    assert_eq!(store.account(bob.id).await.unwrap(), None);
    assert_eq!(store.user_by_phone(&bob.phone).await.unwrap(), None);
    assert_eq!(
        store.user_by_phone(&alice.phone).await.unwrap(),
        Some(alice.clone())
    );
    assert!(store.sessions(bob.id, at).await.unwrap().is_empty());
    let alices = store
        .profile(alice.id, usize::MAX)
        .await
        .unwrap()
        .expect("alice");
    assert!(
        alices.invited_users.is_empty(),
        "bob left alice's invitees: {:?}",
        alices.invited_users
    );
    assert_eq!(alices.invited_count, 0, "bob left alice's count");
    assert_eq!(store.account(alice.id).await.unwrap().unwrap().invitees, []);
    let carols = store
        .profile(carol.id, usize::MAX)
        .await
        .unwrap()
        .expect("carol");
    assert_eq!(
        carols.activated_invite_code,
        Some(bob.invite_code),
        "carol keeps the code she applied"
    );
    assert_eq!(
        store.account(carol.id).await.unwrap().unwrap().invited_by,
        None,
        "whose owner is gone"
    );
    assert_eq!(
        store
            .activate_invite(dave.id, &bob.invite_code, Change::unrecorded(at))
            .await
            .unwrap(),
        Activation::NotFound,
        "a deleted account's code belongs to nobody"
    );
    assert_eq!(
        store
            .activate_invite(bob.id, &dave.invite_code, Change::unrecorded(at))
            .await
            .unwrap(),
        Activation::UnknownUser
    );
    assert_eq!(
        store
            .rotate_refresh(
                &live,
                &live_jti,
                &TokenId::random(),
                Change::unrecorded(at),
                at.plus(WEEK),
                Duration::ZERO,
            )
            .await
            .unwrap(),
        Rotation::Revoked
    );
    let started = store
        .start_family(
            &bob,
            &FamilyId::random(),
            &TokenId::random(),
            &client(4),
            Change::recorded(at),
            at.plus(WEEK),
        )
        .await
        .unwrap();
    assert!(!started, "a deleted account gets no session");
    assert_eq!(
        store
            .change_phone(bob.id, &super::phone(60), Change::recorded(at))
            .await
            .unwrap(),
        PhoneChange::UnknownUser
    );
    assert_eq!(
        store
            .delete_account(bob.id, Change::recorded(at))
            .await
            .unwrap(),
        None,
        "deleted once"
    );

    // The phone is free: a new user, with a new id and, even offered bob's code first, a
    // new code.
    let offered = std::sync::atomic::AtomicUsize::new(0);
    let bobs_code = bob.invite_code;
    let new_code = move || {
        if offered.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            bobs_code
        } else {
            InviteCode::generate()
        }
    };
    let again = store
        .find_or_create(&bob.phone, &new_code, Change::unrecorded(at))
        .await
        .unwrap();
    assert!(again.created, "the phone registers a brand-new user");
    assert!(again.user.id > dave.id, "ids are never reused");
    assert_ne!(again.user.invite_code, bob.invite_code, "nor codes");
    assert_eq!(
        store
            .profile(again.user.id, usize::MAX)
            .await
            .unwrap()
            .unwrap()
            .activated_invite_code,
        None
    );

    assert_eq!(
        events_of(&*store, bob.id).await,
        vec![
            EventData::SessionRevoked {
                user_id: bob.id,
                session_id: live.as_str().to_owned(),
                reason: SessionEndReason::AccountDeleted,
            },
            EventData::AccountDeleted { user_id: bob.id },
        ],
        "and nothing for the refused calls"
    );
}

/// A phone change moves the account (its next login by the new number finds it, the old
/// number registers a new user) and records `phone.changed`; a taken number, the account's
/// own number and an unknown user change and record nothing.
pub async fn phone_change_moves_the_account<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let bob = create(&*store, 2, t).await;
    let new = phone(50);
    assert_eq!(
        store
            .change_phone(alice.id, &new, Change::recorded(t))
            .await
            .unwrap(),
        PhoneChange::Changed
    );
    assert_eq!(
        store
            .profile(alice.id, usize::MAX)
            .await
            .unwrap()
            .unwrap()
            .phone,
        new
    );
    let by_phone = store
        .user_by_phone(&new)
        .await
        .unwrap()
        .expect("found by its new phone");
    assert_eq!(
        (by_phone.id, by_phone.invite_code),
        (alice.id, alice.invite_code)
    );
    assert_eq!(store.user_by_phone(&alice.phone).await.unwrap(), None);
    // A login by the old number that found alice before the move starts no session on her
    // account; one by the new number does.
    let start = |user: User| {
        let store = store.clone();
        async move {
            store
                .start_family(
                    &user,
                    &FamilyId::random(),
                    &TokenId::random(),
                    &client(1),
                    Change::unrecorded(t),
                    t.plus(WEEK),
                )
                .await
                .unwrap()
        }
    };
    assert!(!start(alice.clone()).await, "the number alice left");
    let moved = User {
        phone: new.clone(),
        ..alice.clone()
    };
    assert!(start(moved).await, "her new number");
    assert_eq!(store.sessions(alice.id, t).await.unwrap().len(), 1);
    let found = store
        .find_or_create(&new, &InviteCode::generate, Change::unrecorded(t))
        .await
        .unwrap();
    assert!(!found.created);
    assert_eq!(found.user.id, alice.id);
    let old = store
        .find_or_create(&alice.phone, &InviteCode::generate, Change::unrecorded(t))
        .await
        .unwrap();
    assert!(old.created, "the old number is free at once");

    for (to, expected) in [
        (&bob.phone, PhoneChange::Taken),
        (&new, PhoneChange::Unchanged),
    ] {
        assert_eq!(
            store
                .change_phone(alice.id, to, Change::recorded(t))
                .await
                .unwrap(),
            expected
        );
    }
    assert_eq!(
        store
            .change_phone(UserId(999_999), &phone(51), Change::recorded(t))
            .await
            .unwrap(),
        PhoneChange::UnknownUser
    );
    assert_eq!(
        store
            .profile(bob.id, usize::MAX)
            .await
            .unwrap()
            .unwrap()
            .phone,
        bob.phone
    );
    assert_eq!(
        events_of(&*store, alice.id).await,
        vec![EventData::PhoneChanged {
            user_id: alice.id,
            phone: new,
        }]
    );
    assert!(events_of(&*store, bob.id).await.is_empty());
}

/// Users moving to one number at the same moment as a first login of it: exactly one of
/// them gets it, and the others are told it is taken.
pub async fn concurrent_moves_to_one_number_give_it_to_one<S: UserStore>(store: Arc<S>) {
    let t = start();
    let mut users = Vec::new();
    for n in 0..8 {
        users.push(create(&*store, n, t).await);
    }
    let users = Arc::new(users);
    let contested = phone(77);
    let outcomes = concurrently(&store, 9, {
        let (users, contested) = (users.clone(), contested.clone());
        move |store, i| {
            let (users, contested) = (users.clone(), contested.clone());
            async move {
                if i == 8 {
                    let login = store
                        .find_or_create(&contested, &InviteCode::generate, Change::recorded(t))
                        .await
                        .unwrap();
                    return login.created;
                }
                let outcome = store
                    .change_phone(users[i].id, &contested, Change::recorded(t))
                    .await
                    .unwrap();
                assert!(
                    matches!(outcome, PhoneChange::Changed | PhoneChange::Taken),
                    "{outcome:?}"
                );
                outcome == PhoneChange::Changed
            }
        }
    })
    .await;
    assert_eq!(
        outcomes.iter().filter(|won| **won).count(),
        1,
        "exactly one gets the number: {outcomes:?}"
    );
    let holder = store
        .find_or_create(&contested, &InviteCode::generate, Change::unrecorded(t))
        .await
        .unwrap();
    assert!(!holder.created);
    if let Some(winner) = outcomes[..8].iter().position(|won| *won) {
        assert_eq!(holder.user.id, users[winner].id);
    }
    let moved = store
        .events(EventStatus::Pending, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.event.data.kind() == "phone.changed")
        .count();
    assert_eq!(moved, outcomes[..8].iter().filter(|won| **won).count());
}

/// A deletion at the same moment as new sessions, applications of the account's code and a
/// second deletion: one deletion deletes; every session that started was live when the
/// account went and is among those it revoked (none outlives it); every application either
/// came first (the invitee keeps the code) or finds no such code.
pub async fn concurrent_deletion_leaves_nothing_behind<S: UserStore>(store: Arc<S>) {
    let t = start();
    let bob = create(&*store, 1, t).await;
    let mut invitees = Vec::new();
    for n in 10..16 {
        invitees.push(create(&*store, n, t).await);
    }
    let (bob, invitees) = (Arc::new(bob), Arc::new(invitees));
    enum Outcome {
        Deleted(Option<Vec<FamilyId>>),
        Started(FamilyId, bool),
        Applied(UserId, Activation),
    }
    let outcomes = concurrently(&store, 16, {
        let (bob, invitees) = (bob.clone(), invitees.clone());
        move |store, i| {
            let (bob, invitees) = (bob.clone(), invitees.clone());
            async move {
                match i {
                    0 | 1 => Outcome::Deleted(
                        store
                            .delete_account(bob.id, Change::recorded(t))
                            .await
                            .unwrap(),
                    ),
                    2..=9 => {
                        let family = FamilyId::random();
                        let started = store
                            .start_family(
                                &bob,
                                &family,
                                &TokenId::random(),
                                &client(1),
                                Change::recorded(t),
                                t.plus(WEEK),
                            )
                            .await
                            .unwrap();
                        Outcome::Started(family, started)
                    }
                    _ => {
                        let invitee = &invitees[i - 10];
                        let outcome = store
                            .activate_invite(invitee.id, &bob.invite_code, Change::recorded(t))
                            .await
                            .unwrap();
                        Outcome::Applied(invitee.id, outcome)
                    }
                }
            }
        }
    })
    .await;
    let deletions: Vec<_> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Deleted(revoked) => Some(revoked.clone()),
            _ => None,
        })
        .collect();
    let revoked = match deletions.as_slice() {
        [Some(revoked), None] | [None, Some(revoked)] => revoked.clone(),
        other => panic!("exactly one deletion deletes: {other:?}"),
    };
    let started: Vec<_> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Started(family, true) => Some(family.clone()),
            _ => None,
        })
        .collect();
    let mut expected = started.clone();
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(
        revoked, expected,
        "every session that started, revoked with the account"
    );
    assert!(store.sessions(bob.id, t).await.unwrap().is_empty());
    let ended: Vec<_> = events_of(&*store, bob.id)
        .await
        .into_iter()
        .filter(|data| matches!(data, EventData::SessionRevoked { .. }))
        .collect();
    assert_eq!(ended.len(), started.len());
    for outcome in &outcomes {
        if let Outcome::Applied(invitee, activation) = outcome {
            let profile = store.profile(*invitee, usize::MAX).await.unwrap().unwrap();
            match activation {
                Activation::Activated => {
                    assert_eq!(profile.activated_invite_code, Some(bob.invite_code));
                }
                Activation::NotFound => assert_eq!(profile.activated_invite_code, None),
                other => panic!("an application got {other:?}"),
            }
        }
    }
}
