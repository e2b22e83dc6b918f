//! The PostgreSQL store passes the conformance suite, each case in a database of its own.
//!
//! Needs a running PostgreSQL: `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use refsys_core::postgres::PgUserStore;
use refsys_core::testing::postgres::{TestDatabase, fresh_database};
use refsys_core::{InviteCode, StoreError, UserStore};

/// A store on a fresh database; the teardown drops the database.
async fn setup() -> (PgUserStore, TestDatabase) {
    let database = fresh_database().await;
    let store = PgUserStore::connect(database.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, database)
}

mod conformance {
    refsys_core::user_store_conformance!(super::setup, |database: super::TestDatabase| {
        database.drop_database()
    });
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
