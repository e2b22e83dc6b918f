//! Events through `ReferralService`: a handler registered on the builder gets every change's
//! event, in order per user, and a failing handler gets it again until it takes it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use refsys_core::{
    Event, EventData, EventDelivery, EventHandler, HandlerError, JwtKeys, LogSender,
    MemoryOtpStore, MemoryUserStore, Policy, ReferralService, SessionEndReason, UserStore,
};

/// Records what it is given; refuses the first `refuse` calls.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Event>>,
    refuse: Mutex<u32>,
}

/// The handler the service holds, sharing the recorder with the test.
struct Handler(Arc<Recorder>);

#[async_trait]
impl EventHandler for Handler {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        {
            let mut refuse = self.0.refuse.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return Err(HandlerError::new("receiver down"));
            }
        }
        self.0.seen.lock().unwrap().push(event.clone());
        Ok(())
    }
}

fn fast() -> EventDelivery {
    EventDelivery {
        first_backoff: Duration::from_secs(1),
        poll: Duration::from_millis(50),
        ..EventDelivery::default()
    }
}

/// A service on memory stores with two test phones and `handler`.
fn service(
    handler: impl EventHandler,
    delivery: EventDelivery,
) -> (ReferralService, Arc<MemoryUserStore>) {
    let users = Arc::new(MemoryUserStore::new());
    let policy = Policy::builder()
        .test_phone("+375291000001", "1111")
        .test_phone("+375291000002", "2222")
        .build()
        .unwrap();
    let service = ReferralService::builder(
        users.clone(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256_random(),
    )
    .policy(policy)
    .event_handler(handler, delivery)
    .build();
    (service, users)
}

async fn wait_for(recorder: &Recorder, count: usize, within: Duration) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = recorder.seen.lock().unwrap().clone();
        if seen.len() >= count || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_login_apply_refresh_logout_flow_delivers_its_events_in_order() {
    let recorder = Arc::new(Recorder::default());
    let (service, _) = service(Handler(recorder.clone()), fast());
    service.send_code("+375291000001").await.unwrap();
    let alice = service.verify_code("+375291000001", "1111").await.unwrap();
    service.send_code("+375291000002").await.unwrap();
    let bob = service.verify_code("+375291000002", "2222").await.unwrap();
    let code = service
        .profile(alice.user_id)
        .await
        .unwrap()
        .own_invite_code;
    service
        .use_invite_code(bob.user_id, code.as_str())
        .await
        .unwrap();
    let pair = service.refresh(&bob.refresh).await.unwrap();
    service.logout(&pair.refresh).await.unwrap();

    let seen = wait_for(&recorder, 6, Duration::from_secs(5)).await;
    let kinds: Vec<_> = seen.iter().map(|e| e.data.kind()).collect();
    // One user's events arrive in order; the two users' may interleave.
    let of = |user| {
        seen.iter()
            .filter(|e| e.data.user_id() == Some(user))
            .map(|e| e.data.kind())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(alice.user_id),
        ["user.created", "session.created"],
        "{kinds:?}"
    );
    assert_eq!(
        of(bob.user_id),
        [
            "user.created",
            "session.created",
            "referral.created",
            "session.revoked"
        ]
    );
    let revoked = seen.iter().find_map(|e| match &e.data {
        EventData::SessionRevoked { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(revoked, Some(SessionEndReason::Logout));
    // No event carries a token or a code.
    for event in &seen {
        let json = event.to_json();
        assert!(!json.contains(&bob.refresh) && !json.contains(&pair.access));
        assert!(!json.contains("1111") && !json.contains("2222"));
    }
}

#[tokio::test]
async fn a_failing_handler_gets_the_event_again_with_the_same_id() {
    let recorder = Arc::new(Recorder::default());
    *recorder.refuse.lock().unwrap() = 2;
    let (service, users) = service(Handler(recorder.clone()), fast());
    service.send_code("+375291000001").await.unwrap();
    service.verify_code("+375291000001", "1111").await.unwrap();
    // Two refusals: backoff 1 s, then 4 s (±20 %).
    let seen = wait_for(&recorder, 2, Duration::from_secs(10)).await;
    assert_eq!(
        seen.iter().map(|e| e.data.kind()).collect::<Vec<_>>(),
        ["user.created", "session.created"]
    );
    assert_eq!(*recorder.refuse.lock().unwrap(), 0);
    // Settled as delivered soon after (the dispatcher settles before its next claim).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let delivered = loop {
        let delivered = users
            .events(refsys_core::event::EventStatus::Delivered, 10)
            .await
            .unwrap();
        if delivered.len() >= 2 || tokio::time::Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<_> = delivered.iter().map(|r| &r.event.id).collect();
    assert_eq!(ids, seen.iter().map(|e| &e.id).collect::<Vec<_>>());
    assert_eq!(delivered[0].attempts, 3);
}

#[tokio::test]
async fn without_a_handler_nothing_is_recorded() {
    let users = Arc::new(MemoryUserStore::new());
    let policy = Policy::builder()
        .test_phone("+375291000001", "1111")
        .build()
        .unwrap();
    let service = ReferralService::builder(
        users.clone(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256_random(),
    )
    .policy(policy)
    .build();
    service.send_code("+375291000001").await.unwrap();
    service.verify_code("+375291000001", "1111").await.unwrap();
    let pending = users
        .events(refsys_core::event::EventStatus::Pending, 10)
        .await
        .unwrap();
    assert!(pending.is_empty());
}

/// Never answers for the first phone's `user.created`; records everything else.
struct HangsOnFirstPhone(Arc<Recorder>);

#[async_trait]
impl EventHandler for HangsOnFirstPhone {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if let EventData::UserCreated { phone, .. } = &event.data
            && phone.as_str() == "+375291000001"
        {
            std::future::pending::<()>().await;
        }
        self.0.seen.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_hanging_delivery_holds_back_only_its_own_users_events() {
    let recorder = Arc::new(Recorder::default());
    // The hanging call times out only after 15 s (the default).
    let (service, _) = service(
        HangsOnFirstPhone(recorder.clone()),
        EventDelivery {
            poll: Duration::from_millis(50),
            ..EventDelivery::default()
        },
    );
    service.send_code("+375291000001").await.unwrap();
    let alice = service.verify_code("+375291000001", "1111").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    service.send_code("+375291000002").await.unwrap();
    let bob = service.verify_code("+375291000002", "2222").await.unwrap();
    let seen = wait_for(&recorder, 2, Duration::from_secs(5)).await;
    let of = |user| {
        seen.iter()
            .filter(|e| e.data.user_id() == Some(user))
            .count()
    };
    assert_eq!(
        of(bob.user_id),
        2,
        "bob's events wait behind alice's hanging one"
    );
    // Alice's second event waits behind her first: one user's events go out in order.
    assert_eq!(of(alice.user_id), 0);
}
