//! The SQLite store passes the conformance suite, each case in a file of its own.
#![cfg(feature = "sqlite")]

use async_trait::async_trait;
use refsys_core::sqlite::SqliteUserStore;
use refsys_core::store::{Activation, Rotation};
use refsys_core::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, UserId,
    UserStore,
};
use tempfile::TempDir;

/// A store on a fresh file in a temporary directory, deleted when the case's last handle on
/// the fixture goes.
struct Fixture {
    store: SqliteUserStore,
    _dir: TempDir,
}

async fn setup() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("refsys.db");
    let store = SqliteUserStore::connect(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    Fixture { store, _dir: dir }
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
    refsys_core::user_store_conformance!(super::setup);
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}?mode=rwc", dir.path().join("refsys.db").display());
    let store = SqliteUserStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    // A second pool on the same file (a restarted server) migrating again is fine too.
    SqliteUserStore::connect(&url)
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_file_that_cannot_be_opened_is_unavailable() {
    let store = SqliteUserStore::connect("sqlite:/nonexistent-dir/refsys.db?mode=rwc")
        .await
        .expect("connecting is lazy");
    let outcome = store.ping().await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
}
