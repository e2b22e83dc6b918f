//! Instant revocation across instances: services on the same stores (as server instances on
//! one database and one Redis); a session revoked on one has its access tokens refused by that
//! one at once and by the others within a second. Stateless revocation keeps the old
//! behaviour: access tokens live out their lifetime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use refsys_core::dto::RevokeScope;
use refsys_core::revocation::Revocation;
use refsys_core::{
    ClientLimits, Error, JwtKeys, LogSender, Login, ManualClock, MemoryOtpStore,
    MemoryRateLimitStore, MemoryUserStore, Policy, ReferralService,
};

const SECRET: &[u8] = b"test secret that is long enough for HS256";
const ALICE: &str = "+375291000001";

/// Shared stores and clock, from which instances are started.
struct Deployment {
    users: Arc<MemoryUserStore>,
    otps: Arc<MemoryOtpStore>,
    clock: Arc<ManualClock>,
    revocation: Revocation,
}

impl Deployment {
    fn new(revocation: Revocation) -> Self {
        Self {
            users: Arc::new(MemoryUserStore::new()),
            otps: Arc::new(MemoryOtpStore::new()),
            clock: Arc::new(ManualClock::starting_now()),
            revocation,
        }
    }

    fn instance(&self) -> ReferralService {
        let policy = Policy::builder().test_phone(ALICE, "1111").build().unwrap();
        ReferralService::builder(
            self.users.clone(),
            self.otps.clone(),
            LogSender,
            JwtKeys::hs256(SECRET).unwrap(),
        )
        .policy(policy)
        .clock(self.clock.clone())
        .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled())
        .revocation(self.revocation)
        .build()
    }

    /// A login of Alice on `service` (a new session), past the resend cooldown.
    async fn login(&self, service: &ReferralService) -> Login {
        self.clock.advance(Duration::from_secs(61));
        service.send_code(ALICE).await.unwrap();
        service.verify_code(ALICE, "1111").await.unwrap()
    }
}

/// Waits until `service` refuses `access`, failing if it takes more than the promised second.
async fn refused_within_a_second(service: &ReferralService, access: &str) {
    let started = Instant::now();
    loop {
        match service.authenticate(access) {
            Err(Error::Unauthorized) => return,
            Ok(_) if started.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("still accepted after {:?}: {other:?}", started.elapsed()),
        }
    }
}

#[tokio::test]
async fn a_logout_refuses_the_sessions_access_tokens_on_every_instance() {
    let deployment = Deployment::new(Revocation::Instant);
    let (a, b) = (deployment.instance(), deployment.instance());
    let login = deployment.login(&a).await;
    let other = deployment.login(&b).await;
    assert!(b.authenticate(&login.access).is_ok());
    a.logout(&login.refresh).await.unwrap();
    assert_eq!(
        a.authenticate(&login.access).unwrap_err().code(),
        "unauthorized",
        "at once on the instance that revoked"
    );
    refused_within_a_second(&b, &login.access).await;
    // The user's other session is untouched, on both.
    assert_eq!(a.authenticate(&other.access).unwrap(), other.user_id);
    assert_eq!(b.authenticate(&other.access).unwrap(), other.user_id);
    // An instance started later knows it too.
    let c = deployment.instance();
    refused_within_a_second(&c, &login.access).await;
    assert!(c.authenticate(&other.access).is_ok());
}

#[tokio::test]
async fn signing_out_everywhere_else_and_reuse_detection_refuse_on_every_instance() {
    let deployment = Deployment::new(Revocation::Instant);
    let (a, b) = (deployment.instance(), deployment.instance());
    let kept = deployment.login(&a).await;
    let phone = deployment.login(&a).await;
    let laptop = deployment.login(&b).await;
    let caller = b.caller(&kept.access).unwrap();
    assert_eq!(
        b.revoke_sessions(&caller, RevokeScope::Others)
            .await
            .unwrap(),
        2
    );
    for service in [&a, &b] {
        refused_within_a_second(service, &phone.access).await;
        refused_within_a_second(service, &laptop.access).await;
        assert!(service.authenticate(&kept.access).is_ok());
    }

    // A refresh token spent twice (after the grace): theft; its session goes everywhere.
    deployment.clock.advance(Duration::from_secs(1));
    let pair = a.refresh(&kept.refresh).await.unwrap();
    deployment.clock.advance(Duration::from_secs(60));
    assert_eq!(
        a.refresh(&kept.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
    for service in [&a, &b] {
        refused_within_a_second(service, &pair.access).await;
        refused_within_a_second(service, &kept.access).await;
    }
}

#[tokio::test]
async fn stateless_revocation_leaves_access_tokens_to_expire() {
    let deployment = Deployment::new(Revocation::Stateless);
    let (a, b) = (deployment.instance(), deployment.instance());
    let login = deployment.login(&a).await;
    a.logout(&login.refresh).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for service in [&a, &b] {
        assert_eq!(service.authenticate(&login.access).unwrap(), login.user_id);
    }
    // The refresh token is refused either way.
    assert_eq!(
        b.refresh(&login.refresh).await.unwrap_err().code(),
        "invalid_token"
    );
}

#[tokio::test]
async fn an_ended_sessions_access_token_cannot_end_the_others() {
    // Stateless, so the ended session's access token still authenticates.
    let deployment = Deployment::new(Revocation::Stateless);
    let a = deployment.instance();
    let stolen = deployment.login(&a).await;
    let owner = deployment.login(&a).await;
    let owners = a.caller(&owner.access).unwrap();
    let ended = a.caller(&stolen.access).unwrap();
    assert_eq!(
        a.revoke_sessions(&owners, RevokeScope::Others)
            .await
            .unwrap(),
        1
    );
    for refused in [
        a.revoke_sessions(&ended, RevokeScope::Others)
            .await
            .map(drop),
        a.revoke_sessions(&ended, RevokeScope::All).await.map(drop),
        a.revoke_session(&ended, owners.session.as_str()).await,
        a.sessions(&ended).await.map(drop),
    ] {
        assert_eq!(refused.unwrap_err().code(), "unauthorized");
    }
    let left = a.sessions(&owners).await.unwrap();
    assert_eq!(left.len(), 1, "the owner's session stays");
    assert_eq!(a.refresh(&owner.refresh).await.map(drop).ok(), Some(()));
}
