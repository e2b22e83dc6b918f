//! Event-log conformance cases for [`UserStore`]s: each change records exactly its event, a
//! refused or unrecorded change none, and delivery claims lease events one user at a time.
//! Each case takes a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, phone, start};
use crate::event::{Claim, EventRecord, EventStatus, Redeliver, Settlement};
use crate::session::SessionClient;
use crate::store::{Activation, Rotation, UserStore};
use crate::{
    Change, Event, EventData, FamilyId, InviteCode, SessionEndReason, Timestamp, TokenId, User,
    UserId,
};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const LEASE: Duration = Duration::from_secs(30);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn create<S: UserStore>(store: &S, n: u32, at: Timestamp) -> User {
    store
        .find_or_create(&phone(n), &InviteCode::generate, Change::recorded(at))
        .await
        .expect("find_or_create")
        .user
}

/// The pending events (all of them, until something is claimed and settled), in the order
/// of the changes.
async fn pending<S: UserStore>(store: &S) -> Vec<Event> {
    store
        .events(EventStatus::Pending, 10_000)
        .await
        .expect("events")
        .into_iter()
        .map(|record| record.event)
        .collect()
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|event| event.data.kind()).collect()
}

/// Claims what is due at `at` with the default lease.
async fn claim<S: UserStore>(store: &S, at: Timestamp) -> Vec<Claim> {
    store.claim_events(at, LEASE, 100).await.expect("claim")
}

/// A login → apply-code → refresh → reuse → logout → lockout flow records exactly these
/// events, in order, each with the change's time and a unique `evt_` id; refused changes in
/// between record nothing.
pub async fn each_change_records_exactly_its_event<S: UserStore>(store: Arc<S>) {
    let t = start();
    let alice = create(&*store, 1, t).await;
    let bob = create(&*store, 2, t.plus(secs(1))).await;
    // A returning user is not a new one.
    create(&*store, 1, t.plus(secs(2))).await;
    let family = FamilyId::random();
    let first = TokenId::random();
    store
        .start_family(
            &bob,
            &family,
            &first,
            &SessionClient::default(),
            Change::recorded(t.plus(secs(3))),
            t.plus(WEEK),
        )
        .await
        .unwrap();
    let applied = store
        .activate_invite(
            bob.id,
            &alice.invite_code,
            Change::recorded(t.plus(secs(4))),
        )
        .await
        .unwrap();
    assert_eq!(applied, Activation::Activated);
    let again = store
        .activate_invite(
            bob.id,
            &alice.invite_code,
            Change::recorded(t.plus(secs(4))),
        )
        .await
        .unwrap();
    assert_eq!(again, Activation::AlreadyActivated);
    // A rotation is not an event; presenting the spent token again (no grace) is theft.
    let second = TokenId::random();
    let at = Change::recorded(t.plus(secs(5)));
    let rotated = store
        .rotate_refresh(&family, &first, &second, at, t.plus(WEEK), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rotated, Rotation::Rotated);
    let reused = store
        .rotate_refresh(
            &family,
            &first,
            &TokenId::random(),
            at,
            t.plus(WEEK),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(reused, Rotation::Reused);
    // Logging out of an already revoked family changes nothing.
    let logout = Change::recorded(t.plus(secs(6)));
    store
        .revoke_family(&family, SessionEndReason::Logout, logout)
        .await
        .unwrap();
    let other = FamilyId::random();
    store
        .start_family(
            &alice,
            &other,
            &TokenId::random(),
            &SessionClient::default(),
            logout,
            t.plus(WEEK),
        )
        .await
        .unwrap();
    store
        .revoke_family(&other, SessionEndReason::Logout, logout)
        .await
        .unwrap();
    let until = t.plus(secs(900));
    let lock = Change::recorded(t.plus(secs(7)));
    store.phone_locked(&alice.phone, until, lock).await.unwrap();
    store.phone_locked(&phone(99), until, lock).await.unwrap();

    let events = pending(&*store).await;
    let session = |family: &FamilyId| family.as_str().to_owned();
    let expected = [
        (
            t,
            EventData::UserCreated {
                user_id: alice.id,
                phone: alice.phone.clone(),
            },
        ),
        (
            t.plus(secs(1)),
            EventData::UserCreated {
                user_id: bob.id,
                phone: bob.phone.clone(),
            },
        ),
        (
            t.plus(secs(3)),
            EventData::SessionCreated {
                user_id: bob.id,
                session_id: session(&family),
            },
        ),
        (
            t.plus(secs(4)),
            EventData::ReferralCreated {
                user_id: bob.id,
                referrer_id: alice.id,
                invite_code: alice.invite_code,
            },
        ),
        (
            t.plus(secs(5)),
            EventData::SessionRevoked {
                user_id: bob.id,
                session_id: session(&family),
                reason: SessionEndReason::ReuseDetected,
            },
        ),
        (
            t.plus(secs(6)),
            EventData::SessionCreated {
                user_id: alice.id,
                session_id: session(&other),
            },
        ),
        (
            t.plus(secs(6)),
            EventData::SessionRevoked {
                user_id: alice.id,
                session_id: session(&other),
                reason: SessionEndReason::Logout,
            },
        ),
        (
            t.plus(secs(7)),
            EventData::PhoneLocked {
                user_id: Some(alice.id),
                locked_until: until,
            },
        ),
        (
            t.plus(secs(7)),
            EventData::PhoneLocked {
                user_id: None,
                locked_until: until,
            },
        ),
    ];
    let got: Vec<(Timestamp, EventData)> = events
        .iter()
        .map(|event| (event.timestamp, event.data.clone()))
        .collect();
    assert_eq!(got, expected.to_vec());
    let ids: HashSet<_> = events.iter().map(|event| event.id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    assert!(
        events
            .iter()
            .all(|event| event.id.as_str().starts_with("evt_") && event.id.as_str().len() == 36)
    );
    // Nothing is delivered or failed yet.
    for status in [EventStatus::Delivered, EventStatus::Failed] {
        assert!(store.events(status, 100).await.unwrap().is_empty());
    }
}

/// Changes that do not happen record nothing: refused activations, a rotation within the
/// grace, revoking what is unknown or revoked, a registration that runs out of invite codes;
/// and changes made with `record: false` record nothing either.
pub async fn refused_and_unrecorded_changes_record_nothing<S: UserStore>(store: Arc<S>) {
    let t = start();
    let quiet = Change::unrecorded(t);
    let a = store
        .find_or_create(&phone(1), &InviteCode::generate, quiet)
        .await
        .unwrap()
        .user;
    let b = store
        .find_or_create(&phone(2), &InviteCode::generate, quiet)
        .await
        .unwrap()
        .user;
    let family = FamilyId::random();
    let first = TokenId::random();
    store
        .start_family(
            &b,
            &family,
            &first,
            &SessionClient::default(),
            quiet,
            t.plus(WEEK),
        )
        .await
        .unwrap();
    let activated = store
        .activate_invite(b.id, &a.invite_code, quiet)
        .await
        .unwrap();
    assert_eq!(activated, Activation::Activated);
    let next = TokenId::random();
    store
        .rotate_refresh(&family, &first, &next, quiet, t.plus(WEEK), Duration::ZERO)
        .await
        .unwrap();
    let reused = store
        .rotate_refresh(
            &family,
            &first,
            &TokenId::random(),
            quiet,
            t.plus(WEEK),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(reused, Rotation::Reused);
    store.phone_locked(&a.phone, t, quiet).await.unwrap();
    assert_eq!(kinds(&pending(&*store).await), Vec::<&str>::new());

    // Recorded from here on, but refused.
    let loud = Change::recorded(t);
    let refusals = [
        (b.id, a.invite_code, Activation::AlreadyActivated),
        (a.id, a.invite_code, Activation::OwnCode),
        (a.id, b.invite_code, Activation::Cycle),
        (
            UserId(a.id.0 + 1000),
            a.invite_code,
            Activation::UnknownUser,
        ),
        (
            a.id,
            InviteCode::parse("ZZZZZZ").unwrap(),
            Activation::NotFound,
        ),
    ];
    for (user, code, refusal) in refusals {
        let outcome = store.activate_invite(user, &code, loud).await.unwrap();
        assert_eq!(outcome, refusal);
    }
    let live = FamilyId::random();
    let spent = TokenId::random();
    store
        .start_family(
            &a,
            &live,
            &spent,
            &SessionClient::default(),
            quiet,
            t.plus(WEEK),
        )
        .await
        .unwrap();
    let fresh = TokenId::random();
    store
        .rotate_refresh(&live, &spent, &fresh, loud, t.plus(WEEK), secs(10))
        .await
        .unwrap();
    let grace = store
        .rotate_refresh(
            &live,
            &spent,
            &TokenId::random(),
            loud,
            t.plus(WEEK),
            secs(10),
        )
        .await
        .unwrap();
    assert_eq!(grace, Rotation::Grace { live: fresh });
    // The family `family` was revoked by the reuse above; `unknown` never existed.
    let unknown = FamilyId::random();
    for revoked in [&family, &unknown] {
        store
            .revoke_family(revoked, SessionEndReason::Logout, loud)
            .await
            .unwrap();
        let rotation = store
            .rotate_refresh(
                revoked,
                &next,
                &TokenId::random(),
                loud,
                t.plus(WEEK),
                secs(10),
            )
            .await
            .unwrap();
        assert_eq!(rotation, Rotation::Revoked);
    }
    let taken = a.invite_code;
    let exhausted = store.find_or_create(&phone(3), &move || taken, loud).await;
    assert!(exhausted.is_err());
    store
        .find_or_create(&phone(1), &InviteCode::generate, loud)
        .await
        .unwrap();
    assert_eq!(kinds(&pending(&*store).await), Vec::<&str>::new());
}

/// Concurrent changes record one event each: 20 first logins of one phone record one
/// `user.created`, 20 of distinct phones twenty; one user applying 10 codes at once records
/// one `referral.created`; 10 thieves presenting one spent token record one `session.revoked`.
pub async fn concurrent_changes_record_one_event_each<S: UserStore>(store: Arc<S>) {
    let t = start();
    concurrently(
        &store,
        20,
        |store, _| async move { create(&*store, 1, t).await },
    )
    .await;
    concurrently(&store, 20, |store, i| async move {
        create(&*store, 100 + u32::try_from(i).unwrap(), t).await
    })
    .await;
    let events = pending(&*store).await;
    assert_eq!(events.len(), 21, "{:?}", kinds(&events));
    assert!(kinds(&events).iter().all(|kind| *kind == "user.created"));

    let guest = create(&*store, 2, t).await;
    let mut codes = Vec::new();
    for n in 0..10 {
        codes.push(create(&*store, 200 + n, t).await.invite_code);
    }
    let codes = Arc::new(codes);
    let outcomes = concurrently(&store, 10, |store, i| {
        let codes = Arc::clone(&codes);
        async move {
            store
                .activate_invite(guest.id, &codes[i], Change::recorded(t))
                .await
                .unwrap()
        }
    })
    .await;
    let activated = outcomes
        .iter()
        .filter(|o| **o == Activation::Activated)
        .count();
    assert_eq!(activated, 1);

    let family = FamilyId::random();
    let first = TokenId::random();
    store
        .start_family(
            &guest,
            &family,
            &first,
            &SessionClient::default(),
            Change::unrecorded(t),
            t.plus(WEEK),
        )
        .await
        .unwrap();
    store
        .rotate_refresh(
            &family,
            &first,
            &TokenId::random(),
            Change::unrecorded(t),
            t.plus(WEEK),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let family = Arc::new((family, first));
    concurrently(&store, 10, |store, _| {
        let family = Arc::clone(&family);
        async move {
            store
                .rotate_refresh(
                    &family.0,
                    &family.1,
                    &TokenId::random(),
                    Change::recorded(t),
                    t.plus(WEEK),
                    Duration::ZERO,
                )
                .await
                .unwrap()
        }
    })
    .await;
    let later: Vec<&str> = kinds(&pending(&*store).await)
        .into_iter()
        .filter(|kind| *kind != "user.created")
        .collect();
    assert_eq!(later, ["referral.created", "session.revoked"]);
}

/// Claims lease due events oldest first and only each user's oldest pending one; a leased
/// event is nobody else's until the lease ends; a settlement needs the current lease.
pub async fn claims_lease_events_one_user_at_a_time<S: UserStore>(store: Arc<S>) {
    let t = start();
    let a = create(&*store, 1, t).await;
    let b = create(&*store, 2, t).await;
    let family = FamilyId::random();
    store
        .start_family(
            &a,
            &family,
            &TokenId::random(),
            &SessionClient::default(),
            Change::recorded(t),
            t.plus(WEEK),
        )
        .await
        .unwrap();
    let all = pending(&*store).await;
    let (a1, b1, a2) = (&all[0], &all[1], &all[2]);
    assert_eq!(
        (a1.data.user_id(), b1.data.user_id(), a2.data.user_id()),
        (Some(a.id), Some(b.id), Some(a.id))
    );

    // Not due before it happened; then a's first and b's first, not a's second.
    assert!(
        claim(&*store, Timestamp::from_unix(t.as_unix() - 1))
            .await
            .is_empty()
    );
    let claimed = claim(&*store, t).await;
    let ids: Vec<_> = claimed.iter().map(|c| &c.event.id).collect();
    assert_eq!(ids, [&a1.id, &b1.id]);
    assert!(claimed.iter().all(|c| c.attempt == 1 && c.queued_at == t));
    assert_eq!(claimed[0].event, *a1);
    // Leased: nobody gets them, nor a's second, while the lease lasts.
    assert!(claim(&*store, t.plus(secs(29))).await.is_empty());
    let (claim_a1, claim_b1) = (&claimed[0], &claimed[1]);
    assert!(
        store
            .settle_event(claim_a1, &Settlement::Delivered, t.plus(secs(1)))
            .await
            .unwrap()
    );
    // Settled once: a second settlement of the same claim does nothing.
    assert!(
        !store
            .settle_event(claim_a1, &Settlement::Delivered, t.plus(secs(1)))
            .await
            .unwrap()
    );
    let next = claim(&*store, t.plus(secs(1))).await;
    assert_eq!(
        next.iter().map(|c| &c.event.id).collect::<Vec<_>>(),
        [&a2.id]
    );
    // b's lease runs out: b1 is claimed again, with a new lease, and the old one is dead.
    let again = claim(&*store, t.plus(LEASE)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.id, b1.id);
    assert_eq!(again[0].attempt, 2);
    assert_ne!(again[0].lease, claim_b1.lease);
    assert!(
        !store
            .settle_event(claim_b1, &Settlement::Delivered, t.plus(LEASE))
            .await
            .unwrap()
    );
    assert!(
        store
            .settle_event(&again[0], &Settlement::Delivered, t.plus(LEASE))
            .await
            .unwrap()
    );
    let delivered = store.events(EventStatus::Delivered, 10).await.unwrap();
    let delivered: Vec<_> = delivered.iter().map(|r| &r.event.id).collect();
    assert_eq!(delivered, [&a1.id, &b1.id]);
}

/// `settle_delivered` settles a batch of claims from several claim calls in one go, only
/// those whose lease is still theirs, and only once.
pub async fn delivered_events_settle_in_one_call<S: UserStore>(store: Arc<S>) {
    let t = start();
    for n in 1..=4 {
        create(&*store, n, t).await;
    }
    // Two claims (two leases), then the fourth user's event taken over after its lease.
    let mut first = store.claim_events(t, LEASE, 2).await.unwrap();
    let second = store.claim_events(t, LEASE, 1).await.unwrap();
    assert_eq!((first.len(), second.len()), (2, 1));
    // A delivery in flight is not queued again under it by an operator.
    let in_flight = Redeliver::One(first[0].event.id.clone());
    assert_eq!(store.redeliver_events(&in_flight, t).await.unwrap(), 0);
    assert_ne!(first[0].lease, second[0].lease);
    let stale = store.claim_events(t, secs(1), 1).await.unwrap();
    let taken_over = store.claim_events(t.plus(secs(1)), LEASE, 1).await.unwrap();
    assert_eq!(stale[0].event.id, taken_over[0].event.id);
    first.extend(second);
    first.push(stale[0].clone());
    let later = t.plus(secs(2));
    assert_eq!(store.settle_delivered(&first, later).await.unwrap(), 3);
    assert_eq!(
        store.settle_delivered(&first, later).await.unwrap(),
        0,
        "settled once"
    );
    assert_eq!(store.settle_delivered(&[], later).await.unwrap(), 0);
    let delivered: HashSet<_> = store
        .events(EventStatus::Delivered, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.event.id)
        .collect();
    assert_eq!(delivered.len(), 3);
    assert!(!delivered.contains(&taken_over[0].event.id));
    // The new lease still settles it.
    assert_eq!(store.settle_delivered(&taken_over, later).await.unwrap(), 1);
    assert!(pending(&*store).await.is_empty());
}

/// A failed attempt waits for its retry and holds back the user's later events; a failed
/// event stops holding them back, is listed with its error, and is queued again by an
/// operator with its attempts from zero.
pub async fn retries_wait_and_failed_events_can_be_redelivered<S: UserStore>(store: Arc<S>) {
    let t = start();
    let a = create(&*store, 1, t).await;
    store
        .start_family(
            &a,
            &FamilyId::random(),
            &TokenId::random(),
            &SessionClient::default(),
            Change::recorded(t),
            t.plus(WEEK),
        )
        .await
        .unwrap();
    let all = pending(&*store).await;
    let first = claim(&*store, t).await;
    assert_eq!(first.len(), 1);
    let retry = Settlement::Retry {
        at: t.plus(secs(10)),
        error: "503".into(),
    };
    assert!(store.settle_event(&first[0], &retry, t).await.unwrap());
    assert!(
        claim(&*store, t.plus(secs(9))).await.is_empty(),
        "neither the retry nor the next"
    );
    let second = claim(&*store, t.plus(secs(10))).await;
    assert_eq!(
        second
            .iter()
            .map(|c| (&c.event.id, c.attempt))
            .collect::<Vec<_>>(),
        [(&all[0].id, 2)]
    );
    let failed = Settlement::Failed {
        error: "gone".into(),
    };
    assert!(
        store
            .settle_event(&second[0], &failed, t.plus(secs(10)))
            .await
            .unwrap()
    );
    let listed: Vec<EventRecord> = store.events(EventStatus::Failed, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event, all[0]);
    assert_eq!(
        (listed[0].attempts, listed[0].last_error.as_deref()),
        (2, Some("gone"))
    );
    // The failed one no longer holds back the user's next event.
    let next = claim(&*store, t.plus(secs(10))).await;
    assert_eq!(
        next.iter().map(|c| &c.event.id).collect::<Vec<_>>(),
        [&all[1].id]
    );
    assert!(
        store
            .settle_event(&next[0], &Settlement::Delivered, t.plus(secs(11)))
            .await
            .unwrap()
    );

    let requeued_at = t.plus(secs(100));
    assert_eq!(
        store
            .redeliver_events(&Redeliver::Failed, requeued_at)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .redeliver_events(&Redeliver::Failed, requeued_at)
            .await
            .unwrap(),
        0
    );
    let back = claim(&*store, requeued_at).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        (&back[0].event, back[0].attempt, back[0].queued_at),
        (&all[0], 1, requeued_at)
    );
    // A delivered event can be sent again too; an unknown id matches nothing.
    let one = Redeliver::One(all[1].id.clone());
    assert_eq!(store.redeliver_events(&one, requeued_at).await.unwrap(), 1);
    let unknown = Redeliver::One(crate::EventId::random());
    assert_eq!(
        store.redeliver_events(&unknown, requeued_at).await.unwrap(),
        0
    );
    assert_eq!(pending(&*store).await.len(), 2);
}

/// Pruning deletes delivered events older than the cut, and nothing pending or failed.
pub async fn prune_deletes_only_old_delivered_events<S: UserStore>(store: Arc<S>) {
    let t = start();
    for n in 0..4 {
        create(&*store, n, t).await;
    }
    let claimed = claim(&*store, t).await;
    assert_eq!(claimed.len(), 4);
    let settle = |i: usize, settlement: Settlement, at: Timestamp| {
        let store = Arc::clone(&store);
        let claim = claimed[i].clone();
        async move { assert!(store.settle_event(&claim, &settlement, at).await.unwrap()) }
    };
    settle(0, Settlement::Delivered, t).await;
    settle(1, Settlement::Delivered, t.plus(secs(100))).await;
    settle(2, Settlement::Failed { error: "x".into() }, t).await;
    // 3 stays pending (leased).
    assert_eq!(store.prune_events(t.plus(secs(50)), 100).await.unwrap(), 1);
    let delivered = store.events(EventStatus::Delivered, 10).await.unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].event, claimed[1].event);
    assert_eq!(
        store.prune_events(t.plus(secs(1000)), 100).await.unwrap(),
        1
    );
    assert_eq!(
        store.events(EventStatus::Failed, 10).await.unwrap().len(),
        1
    );
    assert_eq!(pending(&*store).await.len(), 1);
}

/// Eight dispatchers claiming at once never get the same event, and between them get all.
pub async fn concurrent_claims_never_share_an_event<S: UserStore>(store: Arc<S>) {
    let t = start();
    for n in 0..60 {
        create(&*store, n, t).await;
    }
    let claims = concurrently(&store, 8, |store, _| async move {
        store.claim_events(t, LEASE, 10).await.unwrap()
    })
    .await;
    let ids: Vec<_> = claims
        .iter()
        .flatten()
        .map(|c| c.event.id.clone())
        .collect();
    let distinct: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(distinct.len(), ids.len(), "an event was claimed twice");
    // Whatever the first round missed (a claim that found the rows locked) comes next.
    let rest = store.claim_events(t, LEASE, 100).await.unwrap();
    assert_eq!(ids.len() + rest.len(), 60);
}
