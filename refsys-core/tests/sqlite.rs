//! The SQLite store passes the conformance suite, each case in a file of its own.
#![cfg(feature = "sqlite")]

use refsys_core::sqlite::SqliteUserStore;
use refsys_core::{StoreError, UserStore};
use tempfile::TempDir;

/// A store on a fresh file in a temporary directory, deleted by the teardown.
async fn setup() -> (SqliteUserStore, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("refsys.db");
    let store = SqliteUserStore::connect(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (store, dir)
}

mod conformance {
    refsys_core::user_store_conformance!(
        super::setup,
        |dir: super::TempDir| async move { drop(dir) }
    );
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
async fn a_file_that_cannot_be_opened_is_unavailable_at_connect() {
    let outcome = SqliteUserStore::connect("sqlite:/nonexistent-dir/refsys.db").await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_url_without_a_mode_creates_the_file_and_mode_rw_does_not() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite:{}", dir.path().join("a.db").display()),
        format!("sqlite://{}", dir.path().join("b.db").display()),
        format!("sqlite:{}?mode=rwc", dir.path().join("c.db").display()),
    ] {
        let store = SqliteUserStore::connect(&url).await.expect(&url);
        store.migrate().await.expect(&url);
        store.ping().await.expect(&url);
    }
    for file in ["a.db", "b.db", "c.db"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let rw = format!("sqlite:{}?mode=rw", dir.path().join("d.db").display());
    let outcome = SqliteUserStore::connect(&rw).await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(!dir.path().join("d.db").exists());
}
