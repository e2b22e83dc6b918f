//! A custom `UserStore`: a wrapper that counts logins around any other store, checked by the
//! same conformance suite as refsys's own stores.
//!
//! Run it: `cargo run -p refsys-server --example custom_store`;
//! check it: `cargo test -p refsys-server --example custom_store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use refsys_core::store::{Activation, Rotation};
use refsys_core::{
    FamilyId, InviteCode, JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, Phone, Profile,
    ReferralService, Registration, StoreError, Timestamp, TokenId, UserId, UserStore,
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
    ) -> Result<Registration, StoreError> {
        let registration = self.inner.find_or_create(phone, new_code).await?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        if registration.created {
            self.registrations.fetch_add(1, Ordering::Relaxed);
        }
        Ok(registration)
    }

    async fn profile(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        self.inner.profile(user).await
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
    ) -> Result<Activation, StoreError> {
        self.inner.activate_invite(user, code).await
    }

    async fn start_family(
        &self,
        user: UserId,
        family: &FamilyId,
        jti: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner
            .start_family(user, family, jti, now, expires_at)
            .await
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
        reuse_grace: Duration,
    ) -> Result<Rotation, StoreError> {
        self.inner
            .rotate_refresh(family, presented, next, now, expires_at, reuse_grace)
            .await
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        self.inner.revoke_family(family).await
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
