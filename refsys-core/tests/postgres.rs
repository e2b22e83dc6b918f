//! The PostgreSQL store passes the conformance suite, each case in a database of its own.
//!
//! Needs a running PostgreSQL: `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use refsys_core::postgres::PgUserStore;
use refsys_core::store::{Activation, Rotation};
use refsys_core::testing::postgres::{TestDatabase, fresh_database};
use refsys_core::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, UserId,
    UserStore,
};

/// A store on a fresh database; the teardown drops the database.
struct Fixture {
    store: PgUserStore,
    database: tokio::sync::Mutex<Option<TestDatabase>>,
}

async fn setup() -> Fixture {
    let database = fresh_database().await;
    let store = PgUserStore::connect(database.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    Fixture {
        store,
        database: tokio::sync::Mutex::new(Some(database)),
    }
}

async fn teardown(fixture: Arc<Fixture>) {
    if let Some(database) = fixture.database.lock().await.take() {
        database.drop_database().await;
    }
}

#[async_trait]
impl UserStore for Fixture {
    async fn find_or_create(
        &self,
        phone: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
    ) -> Result<Registration, StoreError> {
        self.store.find_or_create(phone, new_code).await
    }
    async fn profile(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        self.store.profile(user).await
    }
    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
    ) -> Result<Activation, StoreError> {
        self.store.activate_invite(user, code).await
    }
    async fn start_family(
        &self,
        user: UserId,
        family: &FamilyId,
        jti: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.store
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
    ) -> Result<Rotation, StoreError> {
        self.store
            .rotate_refresh(family, presented, next, now, expires_at)
            .await
    }
    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        self.store.revoke_family(family).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

mod conformance {
    refsys_core::user_store_conformance!(super::setup, super::teardown);
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let database = fresh_database().await;
    let store = PgUserStore::connect(database.url()).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    // A second store (another server instance) migrating the same database is fine too.
    PgUserStore::connect(database.url())
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    store.ping().await.unwrap();
    database.drop_database().await;
}

#[tokio::test]
async fn a_database_that_is_down_is_unavailable_quickly() {
    // Nothing listens on port 1.
    let store = PgUserStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .expect("connecting is lazy");
    let started = Instant::now();
    let phone = refsys_core::testing::phone(1);
    let (ping, login, migrate) = tokio::join!(
        store.ping(),
        store.find_or_create(&phone, &InviteCode::generate),
        store.migrate(),
    );
    assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    assert!(
        matches!(login, Err(StoreError::Unavailable(_))),
        "{login:?}"
    );
    assert!(
        matches!(migrate, Err(StoreError::Unavailable(_))),
        "{migrate:?}"
    );
    // The pool's acquire timeout is 3 s; allow for a loaded machine.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test]
async fn a_malformed_url_is_refused() {
    let outcome = PgUserStore::connect("not a url").await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
}
