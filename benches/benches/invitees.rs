//! Invitees at scale (issue 18): the profile of a user with 100,000 invitees beside one with
//! 10, and pages of `GET /api/invitees/?limit=200` from the start, the middle and the end of
//! the 100,000, on the memory store, SQLite and (feature `postgres`, PostgreSQL at
//! `DATABASE_URL` or 127.0.0.1:5432) PostgreSQL.
//!
//! `cargo bench -p refsys-benches --bench invitees [--features postgres]`. Each request runs
//! the framework-free HTTP half (`http::handle`: the token, the store read, the JSON body), so
//! what differs between the rows is the store's work and the body, not a framework's. Seeding
//! the 100,000 invitees goes through the store's own calls (`find_or_create`,
//! `activate_invite`), as logins and invite codes would.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use refsys_benches::{NoopSender, TEST_CODE, bench_policy, test_phone};
use refsys_core::http::{self, Endpoint, RequestInfo};
use refsys_core::sqlite::SqliteUserStore;
use refsys_core::{
    AllowedRegions, Change, InviteCode, JwtKeys, MemoryOtpStore, MemoryUserStore, Phone,
    ReferralService, Timestamp, User, UserStore,
};

const SECRET: &[u8] = b"criterion-bench-secret-of-32-bytes-or-more!!";
/// The crowd: 100,000 invitees under `cargo bench`; 1,000 when `cargo test --benches` runs
/// each bench once (CI), so that the check stays quick.
fn crowd_size() -> usize {
    if std::env::args().any(|arg| arg == "--bench") {
        100_000
    } else {
        1_000
    }
}
const FEW: usize = 10;
const PAGE: usize = 200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A user with phone number `n` (`+37544…`).
async fn user(store: &dyn UserStore, n: usize) -> User {
    let phone = Phone::parse(&format!("+37544{:07}", n), &AllowedRegions::all()).expect("phone");
    store
        .find_or_create(
            &phone,
            &InviteCode::generate,
            Change::unrecorded(Timestamp::from_unix(0)),
        )
        .await
        .expect("find_or_create")
        .user
}

/// Logs in test phone `owner` and has `invitees` users (phones from `first`) apply its code,
/// 16 at a time: the owner's `Authorization` header.
async fn owner_with(
    service: &ReferralService,
    store: &Arc<dyn UserStore>,
    owner: usize,
    first: usize,
    invitees: usize,
) -> String {
    let phone = test_phone(owner);
    service.send_code(&phone).await.expect("send_code");
    let login = service
        .verify_code(&phone, TEST_CODE)
        .await
        .expect("verify_code");
    let code = store
        .profile(login.user_id, 0)
        .await
        .expect("profile")
        .expect("the owner")
        .own_invite_code;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..16 {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            for i in (lane..invitees).step_by(16) {
                let guest = user(&*store, first + i).await;
                let applied = store
                    .activate_invite(guest.id, &code, Change::unrecorded(Timestamp::from_unix(0)))
                    .await
                    .expect("activate_invite");
                assert_eq!(applied, refsys_core::store::Activation::Activated);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a seeding task");
    }
    eprintln!("seeded {invitees} invitees in {:.1?}", started.elapsed());
    format!("Bearer {}", login.access)
}

fn service(users: Arc<dyn UserStore>) -> ReferralService {
    ReferralService::builder(
        users,
        MemoryOtpStore::new(),
        NoopSender,
        JwtKeys::hs256(SECRET).expect("keys"),
    )
    .policy(bench_policy(2))
    .build()
}

/// Benches one store: the two profiles, then pages at three places of the crowd's list.
fn bench_store(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    users: Arc<dyn UserStore>,
    settle: impl FnOnce(&tokio::runtime::Runtime),
) {
    let service = service(Arc::clone(&users));
    let (few, crowd) = rt.block_on(async {
        let few = owner_with(&service, &users, 0, 1_000_000, FEW).await;
        let crowd = owner_with(&service, &users, 1, 2_000_000, crowd_size()).await;
        (few, crowd)
    });
    // What a database does after a bulk write anyway (PostgreSQL: vacuum and statistics), so
    // that the timed reads do not share the machine with it.
    settle(rt);
    // Every cursor of the crowd's list, in one walk (timed: the whole list, page by page).
    let (cursors, walk) = rt.block_on(async {
        let started = Instant::now();
        let mut cursors = vec![None];
        loop {
            let query = match cursors.last().and_then(Option::as_ref) {
                Some(cursor) => format!("limit={PAGE}&cursor={cursor}"),
                None => format!("limit={PAGE}"),
            };
            let reply = get(&service, Endpoint::Invitees, &crowd, Some(&query)).await;
            let body: serde_json::Value = serde_json::from_slice(&reply).expect("a page");
            match body["next_cursor"].as_str() {
                Some(next) => cursors.push(Some(next.to_owned())),
                None => break,
            }
        }
        (cursors, started.elapsed())
    });
    assert_eq!(cursors.len(), crowd_size() / PAGE, "pages of the crowd");
    eprintln!(
        "{name}: all {} invitees in {} pages of {PAGE}: {walk:.1?} ({:.1?} a page)",
        crowd_size(),
        cursors.len(),
        walk / cursors.len() as u32
    );
    let mut group = c.benchmark_group(format!("invitees/{name}"));
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    let labels = [
        (format!("profile/{FEW}_invitees"), &few),
        (format!("profile/{}_invitees", crowd_size()), &crowd),
    ];
    for (label, auth) in labels {
        group.bench_function(label, |b| {
            b.to_async(rt)
                .iter(|| get(&service, Endpoint::Profile, auth, None));
        });
    }
    let places = [
        ("page/first", 0),
        ("page/middle", cursors.len() / 2),
        ("page/last", cursors.len() - 1),
    ];
    for (label, at) in places {
        let query = match &cursors[at] {
            Some(cursor) => format!("limit={PAGE}&cursor={cursor}"),
            None => format!("limit={PAGE}"),
        };
        group.bench_function(label, |b| {
            b.to_async(rt)
                .iter(|| get(&service, Endpoint::Invitees, &crowd, Some(&query)));
        });
    }
    group.finish();
}

/// One authenticated `GET` through the framework-free HTTP half; the body (200 asserted).
async fn get(
    service: &ReferralService,
    endpoint: Endpoint,
    auth: &str,
    query: Option<&str>,
) -> Vec<u8> {
    let info = RequestInfo {
        authorization: Some(auth),
        query,
        ..RequestInfo::default()
    };
    let reply = http::handle(service, endpoint, &info, b"").await;
    assert_eq!(reply.status, 200);
    reply.body.to_vec()
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    bench_store(c, "memory", &rt, Arc::new(MemoryUserStore::new()), |_| {});
    let dir = std::env::temp_dir().join(format!("refsys-bench-invitees-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let url = format!("sqlite:{}?mode=rwc", dir.join("refsys.db").display());
    let sqlite = rt.block_on(async {
        let store = SqliteUserStore::connect(&url).await.expect("sqlite");
        store.migrate().await.expect("migrate");
        store
    });
    bench_store(c, "sqlite", &rt, Arc::new(sqlite), |_| {});
    let _ = std::fs::remove_dir_all(&dir);
    #[cfg(feature = "postgres")]
    postgres(c, &rt);
}

/// The PostgreSQL group, on a database of its own (made, then dropped).
#[cfg(feature = "postgres")]
fn postgres(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use sqlx::Connection as _;
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("refsys_bench_invitees_{}", std::process::id());
    let (base, _) = server.rsplit_once('/').expect("a database URL");
    let url = format!("{base}/{name}");
    let admin = |sql: String| {
        let server = server.clone();
        async move {
            let mut conn = sqlx::PgConnection::connect(&server)
                .await
                .expect("PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
                .expect(&sql);
        }
    };
    rt.block_on(admin(format!("CREATE DATABASE {name}")));
    let store = rt.block_on(async {
        let store = refsys_core::postgres::PgUserStore::connect(&url)
            .await
            .expect("PostgreSQL");
        store.migrate().await.expect("migrate");
        store
    });
    let vacuum = |rt: &tokio::runtime::Runtime| {
        let url = url.clone();
        rt.block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("PostgreSQL");
            sqlx::query("VACUUM (ANALYZE) users")
                .execute(&mut conn)
                .await
                .expect("vacuum");
        });
    };
    bench_store(c, "postgres", rt, Arc::new(store), vacuum);
    rt.block_on(admin(format!("DROP DATABASE {name} WITH (FORCE)")));
}

criterion_group!(benches, stores);
criterion_main!(benches);
