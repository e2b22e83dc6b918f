//! Conformance cases for sessions: [`UserStore::sessions`] and
//! [`UserStore::revoke_sessions`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, phone, start};
use crate::event::EventStatus;
use crate::session::{SessionClient, SessionScope};
use crate::store::{Rotation, UserStore};
use crate::{Change, EventData, FamilyId, InviteCode, SessionEndReason, Timestamp, TokenId, User};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) async fn create<S: UserStore>(store: &S, n: u32, at: Timestamp) -> User {
    store
        .find_or_create(&phone(n), &InviteCode::generate, Change::unrecorded(at))
        .await
        .expect("find_or_create")
        .user
}

pub(super) fn client(n: u8) -> SessionClient {
    SessionClient {
        network: Some(format!("203.0.{n}.0/24")),
        user_agent: Some(format!("agent {n}")),
    }
}

/// Starts a session of `user` at `at` (lasting a week, unrecorded) and returns its id and
/// live token.
pub(super) async fn session<S: UserStore>(
    store: &S,
    user: &User,
    client: &SessionClient,
    at: Timestamp,
    expires_at: Timestamp,
) -> (FamilyId, TokenId) {
    let (family, jti) = (FamilyId::random(), TokenId::random());
    store
        .start_family(
            user,
            &family,
            &jti,
            client,
            Change::unrecorded(at),
            expires_at,
        )
        .await
        .expect("start_family");
    (family, jti)
}

/// The `session.revoked` events pending: (session id, reason).
async fn revoked_events<S: UserStore>(store: &S) -> Vec<(String, SessionEndReason)> {
    store
        .events(EventStatus::Pending, 10_000)
        .await
        .expect("events")
        .into_iter()
        .filter_map(|record| match record.event.data {
            EventData::SessionRevoked {
                session_id, reason, ..
            } => Some((session_id, reason)),
            _ => None,
        })
        .collect()
}

/// A user's live sessions are listed newest first with when they started, when they were
/// last used (their last rotation) and the client they started from; revoked and expired
/// ones, and other users' sessions, are not.
pub async fn sessions_list_the_live_ones_newest_first<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let bob = create(&*store, 2, t).await;
    let (first, first_jti) = session(&*store, &alice, &client(1), t, t.plus(WEEK)).await;
    let (second, _) = session(
        &*store,
        &alice,
        &SessionClient::default(),
        t.plus(secs(2)),
        t.plus(WEEK),
    )
    .await;
    let (revoked, _) = session(&*store, &alice, &client(3), t.plus(secs(3)), t.plus(WEEK)).await;
    let (_expired, _) = session(
        &*store,
        &alice,
        &client(4),
        t.plus(secs(4)),
        t.plus(secs(10)),
    )
    .await;
    let (_bobs, _) = session(&*store, &bob, &client(5), t.plus(secs(5)), t.plus(WEEK)).await;
    store
        .revoke_family(
            &revoked,
            SessionEndReason::Logout,
            Change::unrecorded(t.plus(secs(6))),
        )
        .await
        .unwrap();
    let rotated = store
        .rotate_refresh(
            &first,
            &first_jti,
            &TokenId::random(),
            Change::unrecorded(t.plus(secs(7))),
            t.plus(WEEK),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(rotated, Rotation::Rotated);

    let now = t.plus(secs(20));
    let sessions = store.sessions(alice.id, now).await.unwrap();
    let ids: Vec<_> = sessions.iter().map(|s| s.id.clone()).collect();
    assert_eq!(
        ids,
        [second.clone(), first.clone()],
        "newest first, live only"
    );
    assert_eq!(sessions[0].created_at, t.plus(secs(2)));
    assert_eq!(sessions[0].last_used_at, t.plus(secs(2)), "never rotated");
    assert_eq!(sessions[0].client, SessionClient::default());
    assert_eq!(sessions[1].created_at, t);
    assert_eq!(sessions[1].last_used_at, t.plus(secs(7)), "its rotation");
    assert_eq!(sessions[1].client, client(1));
    // Before the short one expired, it was live.
    let earlier = store.sessions(alice.id, t.plus(secs(9))).await.unwrap();
    assert_eq!(earlier.len(), 3);
    assert_eq!(earlier[0].client, client(4));

    assert_eq!(store.sessions(bob.id, now).await.unwrap().len(), 1);

    // A recorded login keeps its client as well (stores write that path apart).
    let (recorded, jti) = (FamilyId::random(), TokenId::random());
    store
        .start_family(
            &bob,
            &recorded,
            &jti,
            &client(6),
            Change::recorded(t.plus(secs(8))),
            t.plus(WEEK),
        )
        .await
        .unwrap();
    let bobs = store.sessions(bob.id, now).await.unwrap();
    assert_eq!(bobs[0].id, recorded);
    assert_eq!(bobs[0].client, client(6));
    assert_eq!(bobs[0].created_at, t.plus(secs(8)));

    // Logins within one second: the later one first, many times over (ids are random).
    let carol = create(&*store, 3, t).await;
    let mut started = Vec::new();
    for n in 0..8 {
        let (id, _) = session(&*store, &carol, &client(n), t.plus(secs(30)), t.plus(WEEK)).await;
        started.push(id);
    }
    started.reverse();
    let listed: Vec<_> = store
        .sessions(carol.id, now.plus(secs(30)))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, started, "the later login of one second first");
    let nobody = crate::UserId(alice.id.0 + bob.id.0 + carol.id.0 + 100);
    assert!(store.sessions(nobody, now).await.unwrap().is_empty());
}

/// Revoking by scope ends exactly the caller's live sessions in it, records one
/// `session.revoked` each with the reason, and a revoked session no longer rotates.
/// Another user's session, an unknown, revoked or expired one is never in scope.
pub async fn revoke_sessions_ends_exactly_the_scope<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let bob = create(&*store, 2, t).await;
    let mut alices = Vec::new();
    for n in 0..4 {
        alices.push(
            session(
                &*store,
                &alice,
                &client(n),
                t.plus(secs(u64::from(n))),
                t.plus(WEEK),
            )
            .await,
        );
    }
    let (expired, _) = session(&*store, &alice, &client(9), t, t.plus(secs(5))).await;
    let (bobs, _) = session(&*store, &bob, &client(8), t, t.plus(WEEK)).await;
    let at = |n: u64| Change::recorded(t.plus(secs(10 + n)));
    let revoke = |scope, change| {
        let store = store.clone();
        async move {
            store
                .revoke_sessions(alice.id, scope, SessionEndReason::Revoked, change)
                .await
                .unwrap()
                .into_iter()
                .collect::<HashSet<FamilyId>>()
        }
    };
    let none = HashSet::new();
    let just = |ids: &[&FamilyId]| ids.iter().map(|id| (*id).clone()).collect::<HashSet<_>>();

    assert_eq!(revoke(SessionScope::One(&bobs), at(0)).await, none, "bob's");
    let unknown = FamilyId::random();
    assert_eq!(revoke(SessionScope::One(&unknown), at(0)).await, none);
    assert_eq!(revoke(SessionScope::One(&expired), at(0)).await, none);
    assert!(revoked_events(&*store).await.is_empty());

    let (one, one_jti) = &alices[0];
    assert_eq!(revoke(SessionScope::One(one), at(1)).await, just(&[one]));
    assert_eq!(
        revoke(SessionScope::One(one), at(2)).await,
        none,
        "already revoked"
    );
    let rotation = store
        .rotate_refresh(
            one,
            one_jti,
            &TokenId::random(),
            Change::unrecorded(t.plus(secs(13))),
            t.plus(WEEK),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(rotation, Rotation::Revoked);

    let (current, _) = &alices[3];
    assert_eq!(
        revoke(SessionScope::AllBut(current), at(3)).await,
        just(&[&alices[1].0, &alices[2].0])
    );
    let live: Vec<_> = store
        .sessions(alice.id, t.plus(secs(14)))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, std::slice::from_ref(current));
    assert_eq!(revoke(SessionScope::All, at(4)).await, just(&[current]));
    assert!(
        store
            .sessions(alice.id, t.plus(secs(15)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .sessions(bob.id, t.plus(secs(15)))
            .await
            .unwrap()
            .len(),
        1
    );

    let events = revoked_events(&*store).await;
    let ids: HashSet<_> = events.iter().map(|(id, _)| id.clone()).collect();
    let expected: HashSet<_> = alices
        .iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    assert_eq!(events.len(), 4, "one event per revoked session");
    assert_eq!(ids, expected);
    assert!(
        events
            .iter()
            .all(|(_, reason)| *reason == SessionEndReason::Revoked)
    );

    // Unrecorded, a revocation records nothing.
    let (quiet, _) = session(&*store, &alice, &client(7), t.plus(secs(20)), t.plus(WEEK)).await;
    let n = store
        .revoke_sessions(
            alice.id,
            SessionScope::One(&quiet),
            SessionEndReason::Revoked,
            Change::unrecorded(t.plus(secs(21))),
        )
        .await
        .unwrap();
    assert_eq!(n, [quiet]);
    assert_eq!(revoked_events(&*store).await.len(), 4);
}

/// Concurrent revocations of the same sessions revoke each once: between them they name
/// each session there was once, with one event each.
pub async fn concurrent_revocations_revoke_each_session_once<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let mut started = HashSet::new();
    for n in 0..5 {
        started.insert(
            session(&*store, &alice, &client(n), t, t.plus(WEEK))
                .await
                .0,
        );
    }
    let revoked = concurrently(&store, 8, |store, _| async move {
        store
            .revoke_sessions(
                alice.id,
                SessionScope::All,
                SessionEndReason::Revoked,
                Change::recorded(t.plus(secs(1))),
            )
            .await
            .unwrap()
    })
    .await;
    let all: Vec<FamilyId> = revoked.into_iter().flatten().collect();
    assert_eq!(all.len(), 5, "each once: {all:?}");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), started);
    assert_eq!(revoked_events(&*store).await.len(), 5);
}
