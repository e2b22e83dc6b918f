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

/// The pool takes connections back without a check, so a call cancelled half-way must not
/// hand its connection (mid-transaction, waiting on a lock) to the next call: it is closed,
/// PostgreSQL rolls its transaction back, and the next call gets a fresh connection.
#[tokio::test]
async fn a_call_cancelled_half_way_leaves_nothing_behind() {
    use sqlx::Connection as _;
    let database = fresh_database().await;
    let options = database.url().parse().expect("a test URL");
    // One connection: the call after the cancelled one cannot dodge a bad connection.
    let store = PgUserStore::connect_with(options, 1);
    store.migrate().await.expect("migrate");
    let owner = store
        .find_or_create(&refsys_core::testing::phone(1), &InviteCode::generate)
        .await
        .unwrap()
        .user;
    let guest = store
        .find_or_create(&refsys_core::testing::phone(2), &InviteCode::generate)
        .await
        .unwrap()
        .user;

    // Another session locks the guest's row, so the activation blocks in its UPDATE, inside
    // its transaction and holding the activation lock; then the call is cancelled.
    let mut other = sqlx::PgConnection::connect(database.url()).await.unwrap();
    let mut blocker = other.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(guest.id.0)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        store.activate_invite(guest.id, &owner.invite_code),
    )
    .await;
    assert!(cancelled.is_err(), "the activation should still be waiting");
    blocker.rollback().await.unwrap();

    // Its transaction ends by itself, releasing the activation lock every instance's
    // activations queue on; it does not sit in the pool until the connection's next use.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
        )
        .fetch_one(&mut other)
        .await
        .unwrap();
        if held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the activation lock is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The cancelled activation did not commit, and the store works on: the same activation
    // now succeeds once, and the profiles agree.
    let started = Instant::now();
    let outcome = store
        .activate_invite(guest.id, &owner.invite_code)
        .await
        .unwrap();
    assert_eq!(outcome, refsys_core::store::Activation::Activated);
    assert!(started.elapsed() < Duration::from_secs(5));
    let profile = store.profile(owner.id).await.unwrap().unwrap();
    assert_eq!(profile.invited_users, vec![guest.phone.clone()]);
    let again = store
        .activate_invite(guest.id, &owner.invite_code)
        .await
        .unwrap();
    assert_eq!(again, refsys_core::store::Activation::AlreadyActivated);
    drop(other);
    drop(store);
    database.drop_database().await;
}

/// A runtime of its own, as each actix-web worker has.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// `calls` concurrent profile reads on the calling runtime, every one answered: enough to
/// open every connection the runtime's share allows.
async fn burst(store: &PgUserStore, user: refsys_core::UserId, calls: usize) {
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let store = store.clone();
        reads.spawn(async move { store.profile(user).await });
    }
    while let Some(read) = reads.join_next().await {
        let profile = read.expect("the read task").expect("the read");
        assert!(profile.is_some());
    }
}

/// Waits until the test database has `expected` connections besides `observer`'s.
async fn wait_for_connections(observer: &mut sqlx::PgConnection, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *observer)
        .await
        .expect("pg_stat_activity");
        if open == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections open, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store keeps a pool per Tokio runtime (actix-web runs one per worker). The runtimes
/// that make calls share the connection budget: once their bursts are done they keep exactly
/// the budget open together (a connection closed by a resize may linger in
/// `pg_stat_activity` for a moment, so counts are awaited, not sampled). A runtime's share
/// comes back when it shuts down, and a connection never outlives its runtime: calls from
/// any runtime keep working after others have gone.
#[test]
fn runtimes_share_the_connection_budget_and_take_it_back_when_they_end() {
    use sqlx::Connection as _;
    let main = runtime();
    let database = main.block_on(fresh_database());
    let mut observer = main
        .block_on(sqlx::PgConnection::connect(database.url()))
        .expect("observer");
    let store = PgUserStore::connect_with(database.url().parse().expect("a test URL"), 4);
    // Migrating on a runtime that serves nothing later (as actix-web's main one) leaves it
    // no connection and no share of the budget.
    main.block_on(store.migrate()).expect("migrate");
    main.block_on(wait_for_connections(&mut observer, 0));

    let first = runtime();
    let user = first.block_on(async {
        let user = store
            .find_or_create(&refsys_core::testing::phone(1), &InviteCode::generate)
            .await
            .expect("user")
            .user
            .id;
        burst(&store, user, 50).await;
        user
    });
    // Alone, the first runtime may use the whole budget.
    main.block_on(wait_for_connections(&mut observer, 4));

    // Two more runtimes: 2 + 1 + 1 connections, still 4 in all.
    let second = runtime();
    second.block_on(burst(&store, user, 50));
    let third = runtime();
    third.block_on(burst(&store, user, 50));
    first.block_on(burst(&store, user, 50));
    main.block_on(wait_for_connections(&mut observer, 4));

    // Their runtimes end: their connections close and the first runtime gets the budget back.
    drop(second);
    drop(third);
    main.block_on(wait_for_connections(&mut observer, 2));
    first.block_on(burst(&store, user, 50));
    main.block_on(wait_for_connections(&mut observer, 4));

    // A runtime that comes after the first one ended is served too.
    drop(first);
    main.block_on(wait_for_connections(&mut observer, 0));
    runtime().block_on(burst(&store, user, 10));

    drop(store);
    main.block_on(async {
        drop(observer);
        database.drop_database().await;
    });
}
