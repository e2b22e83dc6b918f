//! A custom `UserStore`: a wrapper that counts logins around any other store, checked by the
//! same conformance suite as refsys's own stores.
//!
//! Run it: `cargo run -p refsys-server --example custom_store`;
//! check it: `cargo test -p refsys-server --example custom_store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use refsys_core::account::{Account, InviteeCursor, InviteePage, PhoneChange};
use refsys_core::event::{Claim, EventRecord, EventStatus, Redeliver, Settlement};
use refsys_core::session::{Session, SessionClient, SessionScope};
use refsys_core::store::{Activation, Rotation};
use refsys_core::{
    Change, FamilyId, InviteCode, JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, Phone,
    Profile, ReferralService, Registration, SessionEndReason, StoreError, Timestamp, TokenId, User,
    UserId, UserStore,
};

/// Counts logins and new users, and delegates everything to `inner`.
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    inner: S,
    logins: AtomicU64,
    registrations: AtomicU64,
}

impl<S> CountingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            logins: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
        }
    }

    /// (logins, of which new users).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.logins.load(Ordering::Relaxed),
            self.registrations.load(Ordering::Relaxed),
        )
    }
}

#[async_trait]
impl<S: UserStore> UserStore for CountingStore<S> {
    async fn find_or_create(
        &self,
        phone: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
        change: Change,
    ) -> Result<Registration, StoreError> {
        let registration = self.inner.find_or_create(phone, new_code, change).await?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        if registration.created {
            self.registrations.fetch_add(1, Ordering::Relaxed);
        }
        Ok(registration)
    }

    async fn profile(&self, user: UserId, invitees: usize) -> Result<Option<Profile>, StoreError> {
        self.inner.profile(user, invitees).await
    }

    async fn invitees(
        &self,
        user: UserId,
        after: Option<InviteeCursor>,
        limit: usize,
    ) -> Result<Option<InviteePage>, StoreError> {
        self.inner.invitees(user, after, limit).await
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
        change: Change,
    ) -> Result<Activation, StoreError> {
        self.inner.activate_invite(user, code, change).await
    }

    async fn start_family(
        &self,
        user: &User,
        family: &FamilyId,
        jti: &TokenId,
        client: &SessionClient,
        change: Change,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner
            .start_family(user, family, jti, client, change, expires_at)
            .await
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        change: Change,
        expires_at: Timestamp,
        reuse_grace: Duration,
    ) -> Result<Rotation, StoreError> {
        self.inner
            .rotate_refresh(family, presented, next, change, expires_at, reuse_grace)
            .await
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<(), StoreError> {
        self.inner.revoke_family(family, reason, change).await
    }

    async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError> {
        self.inner.sessions(user, now).await
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: SessionScope<'_>,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<Vec<FamilyId>, StoreError> {
        self.inner
            .revoke_sessions(user, scope, reason, change)
            .await
    }

    async fn user_by_phone(&self, phone: &Phone) -> Result<Option<User>, StoreError> {
        self.inner.user_by_phone(phone).await
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        self.inner.account(user).await
    }

    async fn change_phone(
        &self,
        user: UserId,
        phone: &Phone,
        change: Change,
    ) -> Result<PhoneChange, StoreError> {
        self.inner.change_phone(user, phone, change).await
    }

    async fn delete_account(
        &self,
        user: UserId,
        change: Change,
    ) -> Result<Option<Vec<FamilyId>>, StoreError> {
        self.inner.delete_account(user, change).await
    }

    // The event log: a wrapper delegates it all, or its events are never delivered.

    fn keeps_event_log(&self) -> bool {
        self.inner.keeps_event_log()
    }

    async fn phone_locked(
        &self,
        phone: &Phone,
        until: Timestamp,
        change: Change,
    ) -> Result<(), StoreError> {
        self.inner.phone_locked(phone, until, change).await
    }

    async fn claim_events(
        &self,
        now: Timestamp,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        self.inner.claim_events(now, lease, max).await
    }

    async fn settle_event(
        &self,
        claim: &Claim,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.settle_event(claim, settlement, now).await
    }

    async fn settle_delivered(&self, claims: &[Claim], now: Timestamp) -> Result<u64, StoreError> {
        self.inner.settle_delivered(claims, now).await
    }

    async fn events(
        &self,
        status: EventStatus,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.events(status, limit).await
    }

    async fn redeliver_events(&self, which: &Redeliver, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.redeliver_events(which, now).await
    }

    async fn prune_events(&self, before: Timestamp, max: usize) -> Result<u64, StoreError> {
        self.inner.prune_events(before, max).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = refsys_core::Policy::builder()
        .test_phone("+375291000001", "0000")
        .build()?;
    let store = std::sync::Arc::new(CountingStore::new(MemoryUserStore::new()));
    let service = ReferralService::builder(
        store.clone(),
        MemoryOtpStore::new(),
        LogSender,
        JwtKeys::hs256_random(),
    )
    .policy(policy)
    .build();
    service.send_code("+375291000001").await?;
    let login = service.verify_code("+375291000001", "0000").await?;
    println!(
        "logged in as user {}; (logins, new users) = {:?}",
        login.user_id,
        store.counts()
    );
    Ok(())
}

#[cfg(test)]
mod conformance {
    use super::*;

    refsys_core::user_store_conformance!(|| async { CountingStore::new(MemoryUserStore::new()) });
}
