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

/// While another connection holds SQLite's write lock past the busy timeout, a login answers
/// 503 and its code stays usable: once the lock is gone, the same code logs in.
#[tokio::test]
async fn a_held_write_lock_does_not_spend_the_code() {
    use refsys_core::testing::RecordingSender;
    use refsys_core::{
        ClientLimits, JwtKeys, MemoryOtpStore, MemoryRateLimitStore, ReferralService,
    };
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refsys.db");
    let url = format!("sqlite:{}", path.display());
    let store = SqliteUserStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let sms = std::sync::Arc::new(RecordingSender::new());
    let service = ReferralService::builder(
        store,
        MemoryOtpStore::new(),
        sms.clone(),
        JwtKeys::hs256_random(),
    )
    .client_limits(MemoryRateLimitStore::new(), ClientLimits::disabled())
    .build();
    let phone = "+375291234567";
    service.send_code(phone).await.unwrap();
    let code = sms.last_code(&service.parse_phone(phone).unwrap()).unwrap();

    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let error = service.verify_code(phone, &code).await.unwrap_err();
    assert_eq!(error.http(), (503, "store_unavailable"));
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let login = service.verify_code(phone, &code).await.unwrap();
    assert_eq!(service.authenticate(&login.access).unwrap(), login.user_id);
}

/// A recorded change is one call that runs from `BEGIN IMMEDIATE` to `COMMIT` on the
/// connection's thread, a transaction sqlx does not track. Callers dropped at every point of
/// it (a client that went away) must neither leave that transaction open on a pooled
/// connection (the next writer would wait out the busy timeout and fail) nor leave a user
/// without its event.
#[tokio::test]
async fn dropped_callers_leave_no_transaction_open_and_no_change_without_its_event() {
    use refsys_core::event::EventStatus;
    use refsys_core::testing::{phone, start};
    use refsys_core::{Change, InviteCode};
    use std::time::Duration;

    let (store, _dir) = setup().await;
    let users = 200;
    for n in 0..users {
        let phone = phone(n);
        let call = store.find_or_create(&phone, &InviteCode::generate, Change::recorded(start()));
        if n % 10 == 0 {
            // Polled once, then dropped: its first read has not answered, so it wrote
            // nothing. (Tokio's timer rounds a deadline up to the next millisecond, in which
            // a call may well finish, so the timed drops alone may drop none early.)
            tokio::select! {
                biased;
                _ = call => {}
                () = std::future::ready(()) => {}
            }
            continue;
        }
        // From dropped at once to well after it finished (up to 48 ms, even on a loaded
        // machine).
        let within = Duration::from_micros(u64::from((n % 50) * (n % 50)) * 20);
        let _ = tokio::time::timeout(within, call).await;
    }
    let mut created = 0;
    for n in 0..users {
        let registration = store
            .find_or_create(&phone(n), &InviteCode::generate, Change::recorded(start()))
            .await
            .expect("a write after the dropped ones");
        created += u32::from(registration.created);
    }
    assert!(created > 0, "no call was dropped before it committed");
    assert!(
        created < users,
        "no call was dropped after it had committed"
    );
    let events = store.events(EventStatus::Pending, 1_000).await.unwrap();
    let mut with_event: Vec<_> = events
        .iter()
        .filter(|record| record.event.data.kind() == "user.created")
        .filter_map(|record| record.event.data.user_id())
        .collect();
    with_event.sort();
    with_event.dedup();
    assert_eq!(
        with_event.len(),
        users as usize,
        "one user.created per user"
    );
}

/// A database at the schema before `20261207000000_events_slim.sql` keeps its event log
/// through that migration: every event, its status and its order, and new events after it.
#[tokio::test]
async fn the_slim_event_log_keeps_the_events_of_an_older_schema() {
    use refsys_core::event::{EventData, EventStatus, Settlement};
    use refsys_core::testing::{phone, start};
    use refsys_core::{Change, InviteCode};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (url, pool) = older_schema(&dir, "20261207000000").await;
    // Three events of the older schema: delivered, failed, pending (in that order).
    let at = start().as_unix() as i64;
    for (seq, status) in [(1, "delivered"), (2, "failed"), (3, "pending")] {
        sqlx::query(
            "INSERT INTO events (id, type, user_id, occurred_at, data, status, queued_at, \
                 next_attempt_at, delivered_at) \
             VALUES (?1, 'user.created', ?2, ?3, ?4, ?5, ?3, ?3, ?3)",
        )
        .bind(format!("evt_{seq:032x}"))
        .bind(seq)
        .bind(at)
        .bind(format!(
            r#"{{"user_id":{seq},"phone":"+37529123456{seq}"}}"#
        ))
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = SqliteUserStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    for (status, seq) in [
        (EventStatus::Delivered, 1),
        (EventStatus::Failed, 2),
        (EventStatus::Pending, 3),
    ] {
        let listed = store.events(status, 10).await.unwrap();
        assert_eq!(listed.len(), 1, "{status:?}");
        assert_eq!(listed[0].event.id.as_str(), format!("evt_{seq:032x}"));
    }
    // A new change's event comes after the kept one, and both are claimed and settled.
    store
        .find_or_create(&phone(7), &InviteCode::generate, Change::recorded(start()))
        .await
        .unwrap();
    let claims = store
        .claim_events(start(), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert_eq!(claims[0].event.id.as_str(), format!("evt_{:032x}", 3));
    assert!(matches!(
        claims[1].event.data,
        EventData::UserCreated { .. }
    ));
    assert!(claims[0].seq < claims[1].seq);
    assert!(
        store
            .settle_event(&claims[0], &Settlement::Delivered, start())
            .await
            .unwrap()
    );
    assert_eq!(
        store.settle_delivered(&claims[1..], start()).await.unwrap(),
        1
    );
    assert!(
        store
            .events(EventStatus::Pending, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .events(EventStatus::Delivered, 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// A database in `dir` with the migrations before `version` applied: its URL, and a pool on it.
async fn older_schema(dir: &TempDir, version: &str) -> (String, sqlx::SqlitePool) {
    let older = dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    let all = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < version {
            std::fs::copy(&path, older.join(&name)).unwrap();
        }
    }
    let url = format!("sqlite:{}", dir.path().join("refsys.db").display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(older.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (url, pool)
}

/// Counting invitees (`20261208000000_invited_count.sql`) starts from the referrals a
/// database already holds, deleted invitees not counted, and follows the ones after it.
#[tokio::test]
async fn invitees_made_before_the_count_are_counted() {
    use refsys_core::store::Activation;
    use refsys_core::testing::{phone, start};
    use refsys_core::{Change, InviteCode, UserId};

    let dir = tempfile::tempdir().unwrap();
    let (url, pool) = older_schema(&dir, "20261208000000").await;
    // Users 1..=4; 2 and 3 applied 1's code, 4 applied 2's; 3's account was deleted since.
    for n in 1..=4_i64 {
        sqlx::query(
            "INSERT INTO users (id, phone, invite_code, created_at) VALUES (?1, ?2, ?3, 0)",
        )
        .bind(n)
        .bind(phone(n as u32).as_str().to_owned())
        .bind(InviteCode::generate().as_str().to_owned())
        .execute(&pool)
        .await
        .unwrap();
    }
    for (user, inviter, seq) in [(2_i64, 1_i64, 1_i64), (3, 1, 2), (4, 2, 3)] {
        sqlx::query(
            "UPDATE users SET invited_by = ?2, activation_seq = ?3, activated_at = 0 WHERE id = ?1",
        )
        .bind(user)
        .bind(inviter)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "UPDATE users SET phone = 'deleted:3', invited_by = NULL, activation_seq = NULL, \
             activated_at = NULL, deleted_at = 0 WHERE id = 3",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = SqliteUserStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let count = |user| {
        let store = store.clone();
        async move {
            store
                .profile(UserId(user), usize::MAX)
                .await
                .unwrap()
                .unwrap()
                .invited_count
        }
    };
    assert_eq!(count(1).await, 1, "2, not the deleted 3");
    assert_eq!(count(2).await, 1);
    assert_eq!(count(4).await, 0);
    // And after: a new invitee of 4, then 2 deleting its account.
    let newcomer = store
        .find_or_create(&phone(9), &InviteCode::generate, Change::recorded(start()))
        .await
        .unwrap();
    let code = store
        .profile(UserId(4), usize::MAX)
        .await
        .unwrap()
        .unwrap()
        .own_invite_code;
    assert_eq!(
        store
            .activate_invite(newcomer.user.id, &code, Change::recorded(start()))
            .await
            .unwrap(),
        Activation::Activated
    );
    assert_eq!(count(4).await, 1);
    store
        .delete_account(UserId(2), Change::recorded(start()))
        .await
        .unwrap()
        .expect("deleted");
    assert_eq!(count(1).await, 0);
}

/// The activation counter (`20261209000000_activation_counter.sql`) starts past every number
/// a database may have given, the ones lost to deletions too (never more than the largest user
/// id): the next activation is numbered after it, and a number whose account is deleted later
/// is not given again.
#[tokio::test]
async fn activations_after_the_counter_are_numbered_after_the_ones_before() {
    use refsys_core::store::Activation;
    use refsys_core::testing::{phone, start};
    use refsys_core::{Change, InviteCode, UserId};

    let dir = tempfile::tempdir().unwrap();
    let (url, pool) = older_schema(&dir, "20261209000000").await;
    // Users 1..=9 (the ones the test does not name may have held numbers since deleted).
    for n in 1..=9_i64 {
        sqlx::query(
            "INSERT INTO users (id, phone, invite_code, created_at) VALUES (?1, ?2, ?3, 0)",
        )
        .bind(n)
        .bind(phone(n as u32).as_str().to_owned())
        .bind(InviteCode::generate().as_str().to_owned())
        .execute(&pool)
        .await
        .unwrap();
    }
    // 2 and 3 applied 1's code as activations 1 and 7 (a database that saw others between).
    for (user, seq) in [(2_i64, 1_i64), (3, 7)] {
        sqlx::query(
            "UPDATE users SET invited_by = 1, activation_seq = ?2, activated_at = 0 WHERE id = ?1",
        )
        .bind(user)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = SqliteUserStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let code = store
        .profile(UserId(1), 0)
        .await
        .unwrap()
        .unwrap()
        .own_invite_code;
    let probe = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut numbers = Vec::new();
    for n in [10, 11] {
        let newcomer = store
            .find_or_create(&phone(n), &InviteCode::generate, Change::recorded(start()))
            .await
            .unwrap()
            .user;
        let activated = store
            .activate_invite(newcomer.id, &code, Change::recorded(start()))
            .await
            .unwrap();
        assert_eq!(activated, Activation::Activated);
        let seq: (i64,) = sqlx::query_as("SELECT activation_seq FROM users WHERE id = ?1")
            .bind(newcomer.id.0)
            .fetch_one(&probe)
            .await
            .unwrap();
        numbers.push(seq.0);
        // The newest activation's account goes: its number must not come back.
        store
            .delete_account(newcomer.id, Change::recorded(start()))
            .await
            .unwrap()
            .expect("deleted");
    }
    assert_eq!(numbers, [10, 11], "after user 9, the largest id");
}
