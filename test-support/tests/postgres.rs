//! The PostgreSQL store passes the conformance suite, each case in a database of its own.
//!
//! Needs a running PostgreSQL: `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use refsys_core::postgres::PgUserStore;
use refsys_core::{InviteCode, StoreError, UserStore};
use refsys_test_support::postgres::{TestDatabase, fresh_database};
use sqlx::postgres::PgPoolOptions;

/// A store on a fresh database over connections with `sslmode` (whose use of TLS it checks);
/// the teardown drops the database.
async fn setup_with(sslmode: &str, tls: bool) -> (PgUserStore, TestDatabase) {
    let database = fresh_database().await;
    let separator = if database.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}sslmode={sslmode}", database.url());
    let store = PgUserStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let over_tls: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl");
    assert_eq!(over_tls, tls, "sslmode={sslmode}");
    (store, database)
}

async fn setup() -> (PgUserStore, TestDatabase) {
    setup_with("disable", false).await
}

async fn setup_over_tls() -> (PgUserStore, TestDatabase) {
    setup_with("require", true).await
}

/// The conformance suite with TLS off.
mod conformance {
    refsys_core::user_store_conformance!(super::setup, |database: super::TestDatabase| {
        database.drop_database()
    });
}

/// A store on a pool of one connection: concurrent calls queue for it and interleave on it.
async fn setup_one_connection() -> (PgUserStore, TestDatabase) {
    let database = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect(database.url())
        .await
        .expect("a pool of one connection");
    let store = PgUserStore::new(pool);
    store.migrate().await.expect("migrate");
    (store, database)
}

/// The conformance suite on one shared connection.
mod conformance_on_one_connection {
    refsys_core::user_store_conformance!(
        super::setup_one_connection,
        |database: super::TestDatabase| { database.drop_database() }
    );
}

/// The conformance suite with TLS on (the test server has `ssl = on`, Debian's default).
mod conformance_over_tls {
    refsys_core::user_store_conformance!(super::setup_over_tls, |database: super::TestDatabase| {
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

/// Nothing listens on port 1: `connect` fails, and every call of a store on a lazy pool fails,
/// with `Unavailable` once the acquire timeout (3 s) has passed.
/// Both results of two futures run together.
async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

#[tokio::test]
async fn a_database_that_is_down_is_unavailable_quickly() {
    const DOWN: &str = "postgres://postgres@127.0.0.1:1/test";
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(DOWN)
        .expect("a valid URL");
    let store = PgUserStore::new(pool);
    let started = Instant::now();
    let phone = refsys_core::testing::phone(1);
    let user = refsys_core::UserId(1);
    let (connect, ping, login, migrate, profiles) = tokio::join!(
        PgUserStore::connect(DOWN),
        store.ping(),
        store.find_or_create(
            &phone,
            &InviteCode::generate,
            refsys_core::Change::recorded(refsys_core::testing::start())
        ),
        store.migrate(),
        // Two reads in one batch: each gets the batch's error.
        futures_join(
            store.profile(user, usize::MAX),
            store.profile(user, usize::MAX)
        ),
    );
    for profile in [profiles.0, profiles.1] {
        assert!(
            matches!(profile, Err(StoreError::Unavailable(_))),
            "{profile:?}"
        );
    }
    match connect {
        Err(StoreError::Unavailable(cause)) => assert!(cause.contains("timed out"), "{cause}"),
        other => panic!("connect: {other:?}"),
    }
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

/// A call cancelled while its statement waits in the database (here an activation waiting for
/// a row lock, holding the activation lock) does not stop that statement: it completes whole
/// once the lock is free and releases the activation lock every instance's activations queue
/// on. sqlx hands the connection to the next call only after the server has answered, so on
/// a pool of one connection a read queued behind the cancelled call waits for it and sees
/// its effect.
#[tokio::test]
async fn a_call_cancelled_while_its_statement_waits_takes_effect_whole() {
    use sqlx::Connection as _;
    let database = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database.url())
        .await
        .expect("a pool");
    let store = PgUserStore::new(pool);
    store.migrate().await.expect("migrate");
    let owner = store
        .find_or_create(
            &refsys_core::testing::phone(1),
            &InviteCode::generate,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        )
        .await
        .unwrap()
        .user;
    let guest = store
        .find_or_create(
            &refsys_core::testing::phone(2),
            &InviteCode::generate,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        )
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
        store.activate_invite(
            guest.id,
            &owner.invite_code,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        ),
    )
    .await;
    assert!(cancelled.is_err(), "the activation should still be waiting");
    // A read queued behind it for the one connection waits too, and is answered once the
    // lock is gone.
    let queued = tokio::spawn({
        let store = store.clone();
        async move { store.profile(owner.id, usize::MAX).await }
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
    // The activation took effect before the read got the connection.
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
        .activate_invite(
            guest.id,
            &owner.invite_code,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        )
        .await
        .unwrap();
    assert_eq!(again, refsys_core::store::Activation::AlreadyActivated);
    let profile = store.profile(owner.id, usize::MAX).await.unwrap().unwrap();
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
        .find_or_create(
            &refsys_core::testing::phone(1),
            &InviteCode::generate,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        )
        .await
        .unwrap()
        .user;
    assert!(store.profile(user.id, usize::MAX).await.unwrap().is_some());

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
        match store.profile(user.id, usize::MAX).await {
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

/// Profile reads that wait for the one connection are read together in one statement: each
/// still gets its own user's profile, with as many invitees as it asked for, and an unknown
/// user none.
#[tokio::test]
async fn batched_profile_reads_each_get_their_own() {
    let database = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database.url())
        .await
        .expect("a pool");
    let store = PgUserStore::new(pool);
    store.migrate().await.expect("migrate");
    let mut users = Vec::new();
    for i in 0..4 {
        let phone = refsys_core::testing::phone(i);
        let user = store
            .find_or_create(
                &phone,
                &InviteCode::generate,
                refsys_core::Change::recorded(refsys_core::testing::start()),
            )
            .await;
        users.push(user.unwrap().user);
    }
    for guest in &users[1..] {
        let activated = store.activate_invite(
            guest.id,
            &users[0].invite_code,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        );
        assert_eq!(
            activated.await.unwrap(),
            refsys_core::store::Activation::Activated
        );
    }
    let mut reads = tokio::task::JoinSet::new();
    for n in 0..200 {
        let (known, user) = (store.clone(), users[n % users.len()].clone());
        // Reads of one batch that show 0, 1, 2 or 3 invitees.
        let shown = (n / users.len()) % 4;
        reads.spawn(async move { (user.clone(), shown, known.profile(user.id, shown).await) });
        let (other, unknown) = (store.clone(), refsys_core::UserId(1_000_000 + n as i64));
        reads.spawn(async move { (user_of(unknown), 3, other.profile(unknown, 3).await) });
    }
    while let Some(read) = reads.join_next().await {
        let (user, shown, profile) = read.expect("the read task");
        match profile.expect("the read") {
            Some(profile) => {
                assert_eq!(profile.phone, user.phone);
                assert_eq!(profile.own_invite_code, user.invite_code);
                let invitees = if user.id == users[0].id { 3 } else { 0 };
                let guests: Vec<_> = users[1..].iter().map(|u| u.phone.clone()).collect();
                assert_eq!(profile.invited_users, guests[..shown.min(invitees)]);
                assert_eq!(profile.invited_count, invitees as u64);
            }
            None => assert!(user.id.0 >= 1_000_000, "no profile for {user:?}"),
        }
    }
    drop(store);
    database.drop_database().await;
}

/// The task that reads a batch of profiles runs on the runtime of the read that started it.
/// When that runtime shuts down before the task took its batch, the reads waiting in the
/// batch fail, and reads after it start a batch of their own instead of waiting for ever.
#[test]
fn a_batch_whose_runtime_shut_down_does_not_stall_later_reads() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let main = runtime();
    let database = main.block_on(fresh_database());
    let (store, held, user) = main.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(database.url())
            .await
            .expect("a pool");
        let store = PgUserStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        let phone = refsys_core::testing::phone(1);
        let user = store
            .find_or_create(
                &phone,
                &InviteCode::generate,
                refsys_core::Change::recorded(refsys_core::testing::start()),
            )
            .await;
        // The pool's one connection, held: the next batch waits for it.
        let held = pool.acquire().await.expect("the connection");
        (store, held, user.unwrap().user)
    });
    let doomed = runtime();
    doomed.block_on(async {
        // The read's task is detached: it dies with its runtime.
        drop(tokio::spawn({
            let store = store.clone();
            async move { store.profile(user.id, usize::MAX).await }
        }));
        // Let the read start its batch task, which waits for the held connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    drop(doomed);
    main.block_on(async {
        drop(held);
        let read =
            tokio::time::timeout(Duration::from_secs(5), store.profile(user.id, usize::MAX)).await;
        let profile = read.expect("a read after the shut-down batch answers");
        assert_eq!(profile.unwrap().unwrap().phone, user.phone);
        drop(store);
        database.drop_database().await;
    });
}

/// A stand-in user for an id that has none.
fn user_of(id: refsys_core::UserId) -> refsys_core::User {
    refsys_core::User {
        id,
        phone: refsys_core::testing::phone(99),
        invite_code: InviteCode::parse("AAAAAA").unwrap(),
    }
}
