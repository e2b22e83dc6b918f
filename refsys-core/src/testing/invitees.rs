//! Conformance cases for invitees at scale: the profile's capped list and
//! [`UserStore::invitees`] pages. Each takes a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, phone, start};
use crate::account::{Invitee, InviteeCursor};
use crate::store::{Activation, UserStore};
use crate::{Change, InviteCode, Timestamp, User};

async fn create<S: UserStore>(store: &S, n: u32) -> User {
    store
        .find_or_create(&phone(n), &InviteCode::generate, Change::recorded(start()))
        .await
        .expect("find_or_create")
        .user
}

async fn activate<S: UserStore>(store: &S, guest: &User, owner: &User, at: Timestamp) {
    let outcome = store
        .activate_invite(guest.id, &owner.invite_code, Change::recorded(at))
        .await
        .expect("activate_invite");
    assert_eq!(outcome, Activation::Activated);
}

/// An owner (phone 1) and `n` guests (phones 2..), the guests applying the owner's code in
/// the reverse of the order they were created, a second apart: the order of the activations,
/// not of the accounts, is the order of the lists.
async fn owner_with_guests<S: UserStore>(store: &S, n: u32) -> (User, Vec<User>, Timestamp) {
    let owner = create(store, 1).await;
    let mut guests = Vec::new();
    for i in 0..n {
        guests.push(create(store, 2 + i).await);
    }
    guests.reverse();
    let t0 = start();
    for (i, guest) in guests.iter().enumerate() {
        activate(store, guest, &owner, t0.plus(Duration::from_secs(i as u64))).await;
    }
    (owner, guests, t0)
}

/// Every page from the first, `limit` at a time: (the pages' invitees, the pages' sizes).
async fn page_through<S: UserStore>(
    store: &S,
    user: &User,
    limit: usize,
) -> (Vec<Invitee>, Vec<usize>) {
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .invitees(user.id, after, limit)
            .await
            .expect("invitees")
            .expect("a known user");
        assert!(page.invitees.len() <= limit, "a page holds at most `limit`");
        sizes.push(page.invitees.len());
        all.extend(page.invitees);
        match page.next {
            Some(next) => {
                assert!(after < Some(next), "a cursor moves forward");
                after = Some(next);
            }
            None => return (all, sizes),
        }
        assert!(sizes.len() < 1000, "paging does not end");
    }
}

/// The profile lists the oldest invitees up to the limit it is asked for, and counts them all.
pub async fn profile_lists_at_most_the_limit_oldest_first<S: UserStore>(store: Arc<S>) {
    let (owner, guests, _) = owner_with_guests(&*store, 5).await;
    let phones: Vec<_> = guests.iter().map(|g| g.phone.clone()).collect();
    for (limit, shown) in [(0, 0), (1, 1), (3, 3), (5, 5), (6, 5), (usize::MAX, 5)] {
        let profile = store.profile(owner.id, limit).await.unwrap().unwrap();
        assert_eq!(profile.invited_users, phones[..shown], "limit {limit}");
        assert_eq!(
            profile.invited_count, 5,
            "limit {limit}: the count is of all"
        );
    }
    let guest = store.profile(guests[0].id, 0).await.unwrap().unwrap();
    assert_eq!(guest.activated_invite_code, Some(owner.invite_code));
}

/// Pages hold every invitee once, oldest first, with when each applied the code; the last
/// page has no next cursor, also when it is exactly full.
pub async fn invitee_pages_hold_each_invitee_once_in_order<S: UserStore>(store: Arc<S>) {
    let (owner, guests, t0) = owner_with_guests(&*store, 7).await;
    let expected: Vec<Invitee> = guests
        .iter()
        .enumerate()
        .map(|(i, guest)| Invitee {
            user_id: guest.id,
            phone: guest.phone.clone(),
            joined_at: t0.plus(Duration::from_secs(i as u64)),
        })
        .collect();
    for (limit, sizes) in [
        (1, vec![1; 7]),
        (3, vec![3, 3, 1]),
        (6, vec![6, 1]),
        (7, vec![7]),
        (200, vec![7]),
    ] {
        let (all, got) = page_through(&*store, &owner, limit).await;
        assert_eq!(all, expected, "limit {limit}");
        assert_eq!(got, sizes, "limit {limit}: page sizes");
    }
    let first = store.invitees(owner.id, None, 3).await.unwrap().unwrap();
    assert_eq!(first.total, 7);
    let next = first.next.expect("a second page");
    let again = store
        .invitees(owner.id, Some(next), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.invitees, expected[3..6], "a cursor can be read twice");
    assert_eq!(again.total, 7);
}

/// A user with no invitees has one empty page; an unknown or deleted user has none; a
/// cursor past the end gives an empty last page.
pub async fn invitee_pages_of_nobody_and_past_the_end<S: UserStore>(store: Arc<S>) {
    let (owner, guests, _) = owner_with_guests(&*store, 2).await;
    let lonely = create(&*store, 50).await;
    let page = store.invitees(lonely.id, None, 10).await.unwrap().unwrap();
    assert_eq!((page.invitees.len(), page.next, page.total), (0, None, 0));
    let nobody = crate::UserId(owner.id.0.max(lonely.id.0) + 1000);
    assert_eq!(store.invitees(nobody, None, 10).await.unwrap(), None);
    let far = Some(InviteeCursor(u64::MAX));
    let page = store.invitees(owner.id, far, 10).await.unwrap().unwrap();
    assert_eq!((page.invitees.len(), page.next, page.total), (0, None, 2));
    store
        .delete_account(owner.id, Change::recorded(start()))
        .await
        .unwrap()
        .expect("deleted");
    assert_eq!(store.invitees(owner.id, None, 10).await.unwrap(), None);
    assert_eq!(store.profile(owner.id, 10).await.unwrap(), None);
    let page = store
        .invitees(guests[0].id, None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.total, 0,
        "an invitee whose inviter left has none of its own"
    );
}

/// A cursor is a place in the order of the activations and a page holds the asking user's
/// invitees only: another user's cursor read on one's own list gives one's own invitees who
/// came after that place, none of the other user's.
pub async fn a_cursor_reads_only_the_callers_invitees_after_its_place<S: UserStore>(store: Arc<S>) {
    let owner = create(&*store, 1).await;
    let other = create(&*store, 2).await;
    let mut guests = Vec::new();
    for n in 3..=6 {
        guests.push(create(&*store, n).await);
    }
    // In this order: other's first, owner's two, other's second.
    activate(&*store, &guests[0], &other, start()).await;
    activate(&*store, &guests[1], &owner, start()).await;
    activate(&*store, &guests[2], &owner, start()).await;
    activate(&*store, &guests[3], &other, start()).await;
    let owners_first = store.invitees(owner.id, None, 1).await.unwrap().unwrap();
    assert_eq!(owners_first.invitees[0].user_id, guests[1].id);
    let page = store
        .invitees(other.id, owners_first.next, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.invitees.iter().map(|i| i.user_id).collect::<Vec<_>>(),
        [guests[3].id],
        "other's invitee after the place, not the one before, not owner's"
    );
    assert_eq!(page.total, 2);
}

/// A cursor stays good while invitees join and leave: the pages after it hold the invitees
/// who are still there and were not on a page read before, then the newcomers, once each.
pub async fn invitee_cursors_hold_while_invitees_come_and_go<S: UserStore>(store: Arc<S>) {
    let (owner, guests, _) = owner_with_guests(&*store, 4).await;
    let first = store.invitees(owner.id, None, 2).await.unwrap().unwrap();
    assert_eq!(
        first.invitees.iter().map(|i| i.user_id).collect::<Vec<_>>(),
        [guests[0].id, guests[1].id]
    );
    // One invitee already read and one not yet read leave; two newcomers join.
    for gone in [&guests[1], &guests[2]] {
        store
            .delete_account(gone.id, Change::recorded(start()))
            .await
            .unwrap()
            .expect("deleted");
    }
    let newcomers = [create(&*store, 60).await, create(&*store, 61).await];
    for newcomer in &newcomers {
        activate(&*store, newcomer, &owner, start()).await;
    }
    let second = store
        .invitees(owner.id, first.next, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second
            .invitees
            .iter()
            .map(|i| i.user_id)
            .collect::<Vec<_>>(),
        [guests[3].id, newcomers[0].id]
    );
    assert_eq!(second.total, 4, "two left, two joined");
    let third = store
        .invitees(owner.id, second.next, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        third.invitees.iter().map(|i| i.user_id).collect::<Vec<_>>(),
        [newcomers[1].id]
    );
    assert_eq!(third.next, None);
    let profile = store.profile(owner.id, 10).await.unwrap().unwrap();
    let listed: Vec<_> = [&guests[0], &guests[3], &newcomers[0], &newcomers[1]]
        .iter()
        .map(|u| u.phone.clone())
        .collect();
    assert_eq!(profile.invited_users, listed);
    assert_eq!(profile.invited_count, 4);
}

/// An activation's place is never given again: when the cursor's invitee and every later
/// activation of the deployment are gone, a newcomer still comes after the cursor (a store
/// that numbered activations from the largest number left would number it into the past).
pub async fn a_newcomer_comes_after_a_cursor_whose_invitees_are_gone<S: UserStore>(store: Arc<S>) {
    let (owner, guests, _) = owner_with_guests(&*store, 3).await;
    let first = store.invitees(owner.id, None, 1).await.unwrap().unwrap();
    assert_eq!(first.invitees[0].user_id, guests[0].id);
    for gone in &guests {
        store
            .delete_account(gone.id, Change::recorded(start()))
            .await
            .unwrap()
            .expect("deleted");
    }
    let newcomer = create(&*store, 70).await;
    activate(&*store, &newcomer, &owner, start()).await;
    let next = store
        .invitees(owner.id, first.next, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.invitees.iter().map(|i| i.user_id).collect::<Vec<_>>(),
        [newcomer.id],
        "the newcomer is on the page after the cursor"
    );
    assert_eq!(next.total, 1);
}

/// Paging while many invitees join at once never repeats nor skips one: each page is one
/// snapshot, and a newcomer's place is after every invitee already there.
pub async fn paging_during_concurrent_activations_repeats_and_skips_none<S: UserStore>(
    store: Arc<S>,
) {
    const JOINING: usize = 24;
    let (owner, _, _) = owner_with_guests(&*store, 3).await;
    let mut joining = Vec::new();
    for i in 0..JOINING {
        joining.push(create(&*store, 100 + i as u32).await);
    }
    let joining = Arc::new(joining);
    let owner = Arc::new(owner);
    let (started, first_read) = tokio::sync::oneshot::channel();
    let pager = {
        let (store, owner) = (store.clone(), owner.clone());
        let mut started = Some(started);
        tokio::spawn(async move {
            // Pages of 2 until the last page holds every activation.
            let mut seen = Vec::new();
            let mut after = None;
            let mut reads = 0;
            loop {
                let page = store.invitees(owner.id, after, 2).await.unwrap().unwrap();
                reads += 1;
                assert!(reads < 100_000, "paging does not end");
                // The activations start once the first page is read: the paging overlaps.
                if let Some(started) = started.take() {
                    assert_eq!(page.total, 3, "the first page is read before any joins");
                    let _ = started.send(());
                }
                // The last page, read before every activation is in: read it again later
                // (a last page has no cursor to go on from).
                if page.next.is_none() && page.total as usize != 3 + JOINING {
                    tokio::task::yield_now().await;
                    continue;
                }
                seen.extend(page.invitees.iter().map(|i| i.user_id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => return (seen, reads),
                }
            }
        })
    };
    first_read.await.expect("the pager read its first page");
    let outcomes = concurrently(&store, JOINING, |store, i| {
        let (joining, owner) = (joining.clone(), owner.clone());
        async move {
            store
                .activate_invite(joining[i].id, &owner.invite_code, Change::recorded(start()))
                .await
                .unwrap()
        }
    })
    .await;
    assert!(outcomes.iter().all(|o| *o == Activation::Activated));
    let (seen, _) = pager.await.expect("pager");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no invitee on two pages");
    let (all, _) = page_through(&*store, &owner, 200).await;
    let all: Vec<_> = all.iter().map(|i| i.user_id).collect();
    assert_eq!(
        seen, all,
        "the pages read during the activations are the final list"
    );
}
