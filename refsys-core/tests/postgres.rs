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

/// Statements of concurrent calls are pipelined on shared connections, so a call cancelled
/// while its statement waits in the database (here an activation waiting for a row lock,
/// holding the activation lock) does not stop that statement. It completes whole once the
/// lock is free, releases the activation lock every instance's activations queue on, and the
/// connection goes on serving: the calls queued behind it are answered.
#[tokio::test]
async fn a_call_cancelled_while_its_statement_waits_takes_effect_whole() {
    use sqlx::Connection as _;
    let database = fresh_database().await;
    let config = database.url().parse().expect("a test URL");
    // One connection: the calls after the cancelled one queue behind it on the same one.
    let store = PgUserStore::connect_with(config, 1);
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

    // Another session locks the guest's row, so the activation blocks in its UPDATE, holding
    // the activation lock; then the call is cancelled.
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
    // A read queued behind it on the one connection waits too, and is answered once the
    // lock is gone.
    let queued = tokio::spawn({
        let store = store.clone();
        async move { store.profile(owner.id).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !queued.is_finished(),
        "the read should queue behind the activation"
    );
    blocker.rollback().await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the queued read is answered")
        .unwrap()
        .unwrap()
        .expect("the owner's profile");
    // The activation ran before the read on the connection.
    assert_eq!(read.invited_users, vec![guest.phone.clone()]);

    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert_eq!(held, 0, "the activation lock is still held");

    // It took effect once: applying the code again is refused, and the profile lists the
    // guest once.
    let again = store
        .activate_invite(guest.id, &owner.invite_code)
        .await
        .unwrap();
    assert_eq!(again, refsys_core::store::Activation::AlreadyActivated);
    let profile = store.profile(owner.id).await.unwrap().unwrap();
    assert_eq!(profile.invited_users, vec![guest.phone.clone()]);
    drop(other);
    drop(store);
    database.drop_database().await;
}

/// A connection the server closed (a restart, an administrator, an idle timeout) is replaced:
/// calls fail with `Unavailable` at most until the store notices, never with anything else,
/// and then go on on a new connection.
#[tokio::test]
async fn a_connection_the_server_closed_is_replaced() {
    use sqlx::Connection as _;
    let (store, database) = setup().await;
    let user = store
        .find_or_create(&refsys_core::testing::phone(1), &InviteCode::generate)
        .await
        .unwrap()
        .user;
    assert!(store.profile(user.id).await.unwrap().is_some());

    let mut admin = sqlx::PgConnection::connect(database.url()).await.unwrap();
    let closed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(closed >= 1, "the store had no connection to close");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.profile(user.id).await {
            Ok(Some(profile)) => {
                assert_eq!(profile.phone, user.phone);
                break;
            }
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("after the server closed the connection: {other:?}"),
        }
    }
    drop(admin);
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

/// Waits until the test database has `expected` connections besides the observer's, which
/// `on` drives: a connection closes on the runtime it was opened on, so that one must run.
fn wait_for_connections(on: &tokio::runtime::Runtime, url: &str, expected: i64) {
    use sqlx::Connection as _;
    on.block_on(async {
        let mut observer = sqlx::PgConnection::connect(url).await.expect("observer");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut observer)
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
    });
}

/// Concurrent calls share connections, their statements pipelined: a new connection opens
/// only when every open one has more than 8 calls in flight. So 9 concurrent reads ride on
/// the one connection the store has, and a 10th call in flight opens a second.
#[test]
fn concurrent_calls_share_a_connection_until_it_has_more_than_eight() {
    let on = runtime();
    let database = on.block_on(fresh_database());
    let url = database.url().to_owned();
    let store = PgUserStore::connect_with(url.parse().expect("a test URL"), 10);
    on.block_on(store.migrate()).expect("migrate");
    let user = on
        .block_on(store.find_or_create(&refsys_core::testing::phone(1), &InviteCode::generate))
        .expect("user")
        .user
        .id;
    wait_for_connections(&on, &url, 1);
    on.block_on(burst(&store, user, 9));
    wait_for_connections(&on, &url, 1);
    on.block_on(burst(&store, user, 10));
    wait_for_connections(&on, &url, 2);
    drop(store);
    on.block_on(database.drop_database());
}

/// The store keeps connections per Tokio runtime (actix-web runs one per worker). The runtimes
/// that make calls share the connection budget: once their bursts are done they keep exactly
/// the budget open together (a connection closed by a resize may linger in
/// `pg_stat_activity` for a moment, so counts are awaited, not sampled). A runtime's share
/// comes back when it shuts down, and a connection never outlives its runtime: calls from
/// any runtime keep working after others have gone.
#[test]
fn runtimes_share_the_connection_budget_and_take_it_back_when_they_end() {
    let main = runtime();
    let database = main.block_on(fresh_database());
    let url = database.url().to_owned();
    let store = PgUserStore::connect_with(url.parse().expect("a test URL"), 4);
    // Migrating on a runtime that serves nothing later (as actix-web's main one) leaves it
    // no connection and no share of the budget.
    main.block_on(store.migrate()).expect("migrate");
    wait_for_connections(&main, &url, 0);

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
    wait_for_connections(&first, &url, 4);

    // Two more runtimes: 2 + 1 + 1 connections, still 4 in all. A runtime whose share
    // shrank closes the connections it lost when it next runs (as a server's always do).
    let second = runtime();
    second.block_on(burst(&store, user, 50));
    let third = runtime();
    third.block_on(burst(&store, user, 50));
    second.block_on(burst(&store, user, 50));
    first.block_on(burst(&store, user, 50));
    wait_for_connections(&first, &url, 4);

    // Their runtimes end: their connections close and the first runtime gets the budget back.
    drop(second);
    drop(third);
    wait_for_connections(&first, &url, 2);
    first.block_on(burst(&store, user, 50));
    wait_for_connections(&first, &url, 4);

    // A runtime that comes after the first one ended is served too.
    drop(first);
    wait_for_connections(&main, &url, 0);
    runtime().block_on(burst(&store, user, 10));

    drop(store);
    main.block_on(database.drop_database());
}
