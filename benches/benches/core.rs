//! Criterion benches of `refsys-core` on the in-memory stores.
//!
//! `cargo bench -p refsys-benches --bench core`. Every group keeps its measurement short (2 s,
//! 20 samples), so the whole run takes a couple of minutes.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use refsys_benches::{NoopSender, bench_policy, test_phone};
use refsys_core::http::{self, Endpoint, RequestInfo};
use refsys_core::revocation::Revocation;
use refsys_core::{
    AllowedRegions, InviteCode, JwtKeys, MemoryOtpStore, MemoryUserStore, Phone, ReferralService,
    UserId, UserStore,
};

const SECRET: &[u8] = b"criterion-bench-secret-of-32-bytes-or-more!!";

/// Test phones (fixed code `0000`) the login benches cycle through.
const TEST_PHONES: usize = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn service(users: Arc<MemoryUserStore>) -> ReferralService {
    ReferralService::builder(
        users,
        MemoryOtpStore::new(),
        NoopSender,
        JwtKeys::hs256(SECRET).expect("keys"),
    )
    .policy(bench_policy(TEST_PHONES))
    .build()
}

fn configure(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("core");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    group
}

fn pure(c: &mut Criterion) {
    let mut group = configure(c);
    let all = AllowedRegions::all();
    let by: AllowedRegions = "BY".parse().expect("regions");
    group.bench_function("phone_parse/e164", |b| {
        b.iter(|| Phone::parse(black_box("+375291234567"), &all))
    });
    group.bench_function("phone_parse/decorated", |b| {
        b.iter(|| Phone::parse(black_box("+375 (29) 123-45-67"), &all))
    });
    group.bench_function("phone_parse/national_by", |b| {
        b.iter(|| Phone::parse(black_box("8 029 123-45-67"), &by))
    });
    group.bench_function("invite_code/generate", |b| b.iter(InviteCode::generate));
    group.bench_function("invite_code/parse", |b| {
        b.iter(|| InviteCode::parse(black_box(" alg242 ")))
    });
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let rt = runtime();
    let service = service(Arc::new(MemoryUserStore::new()));
    let phone = test_phone(0);
    let login = rt.block_on(async {
        service.send_code(&phone).await.expect("send");
        service.verify_code(&phone, "0000").await.expect("verify")
    });
    let header = format!("Bearer {}", login.access);
    let mut group = configure(c);
    group.bench_function("token/authenticate", |b| {
        b.iter(|| service.authenticate(black_box(&login.access)))
    });
    group.bench_function("token/authenticate_header", |b| {
        b.iter(|| service.authenticate_header(black_box(Some(&header))))
    });
    // Issuing: `refresh` rotates the family in the store and signs a new pair; each iteration
    // presents the refresh token the previous one returned.
    let mut refresh = login.refresh.clone();
    group.bench_function("token/refresh_rotate_and_issue_pair", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let pair = service.refresh(&refresh).await.expect("refresh");
                    refresh = pair.refresh;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn login(c: &mut Criterion) {
    let rt = runtime();
    let mut group = configure(c);
    // send_code: distinct phones in turn, cooldown 0 and an unbounded window (bench_policy),
    // real (non-test) numbers so a code is generated, hashed and handed to the no-op sender.
    {
        let service = service(Arc::new(MemoryUserStore::new()));
        let phones: Vec<String> = (0..10_000)
            .map(|i| format!("+37533{:07}", 1_000_000 + i))
            .collect();
        let mut next = 0usize;
        group.bench_function("send_code", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        next = (next + 1) % phones.len();
                        service.send_code(&phones[next]).await.expect("send_code");
                    }
                    started.elapsed()
                })
            })
        });
    }
    // verify_code alone (send_code untimed) and the full login (both), test phones with the
    // fixed code: after the first pass every login finds the user already registered.
    {
        let service = service(Arc::new(MemoryUserStore::new()));
        let mut next = 0usize;
        group.bench_function("verify_code", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        next = (next + 1) % TEST_PHONES;
                        let phone = test_phone(next);
                        service.send_code(&phone).await.expect("send_code");
                        let started = Instant::now();
                        let login = service.verify_code(&phone, "0000").await.expect("verify");
                        timed += started.elapsed();
                        black_box(login);
                    }
                    timed
                })
            })
        });
        group.bench_function("login_send_and_verify", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        next = (next + 1) % TEST_PHONES;
                        let phone = test_phone(next);
                        service.send_code(&phone).await.expect("send_code");
                        black_box(service.verify_code(&phone, "0000").await.expect("verify"));
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// A store with one user (id 1) that `invitees` users invited themselves with.
fn store_with_invitees(rt: &tokio::runtime::Runtime, invitees: usize) -> Arc<MemoryUserStore> {
    let store = Arc::new(MemoryUserStore::new());
    rt.block_on(async {
        let all = AllowedRegions::all();
        let phone =
            |i: usize| Phone::parse(&format!("+37544{:07}", 1_000_000 + i), &all).expect("phone");
        // The owner is test phone 0, so a login with it (code 0000) is the owner's.
        let owner_phone = Phone::parse(&test_phone(0), &all).expect("phone");
        let owner = store
            .find_or_create(
                &owner_phone,
                &InviteCode::generate,
                refsys_core::Change::unrecorded(refsys_core::Timestamp::from_unix(0)),
            )
            .await
            .expect("owner");
        for i in 1..=invitees {
            let user = store
                .find_or_create(
                    &phone(i),
                    &InviteCode::generate,
                    refsys_core::Change::unrecorded(refsys_core::Timestamp::from_unix(0)),
                )
                .await
                .expect("user");
            store
                .activate_invite(
                    user.user.id,
                    &owner.user.invite_code,
                    refsys_core::Change::unrecorded(refsys_core::Timestamp::from_unix(0)),
                )
                .await
                .expect("activate");
        }
    });
    store
}

fn profile(c: &mut Criterion) {
    let rt = runtime();
    let mut group = configure(c);
    for invitees in [0usize, 10, 1_000] {
        let service = service(store_with_invitees(&rt, invitees));
        let user = UserId(1);
        group.bench_with_input(BenchmarkId::new("profile", invitees), &invitees, |b, _| {
            b.iter(|| rt.block_on(service.profile(user)).expect("profile"))
        });
        group.bench_with_input(
            BenchmarkId::new("profile_json", invitees),
            &invitees,
            |b, _| {
                b.iter(|| {
                    let profile = rt.block_on(service.profile(user)).expect("profile");
                    serde_json::to_vec(&profile).expect("json")
                })
            },
        );
        // The whole framework-independent request: auth header, store, JSON reply.
        let phone = test_phone(0);
        let login = rt.block_on(async {
            service.send_code(&phone).await.expect("send");
            service.verify_code(&phone, "0000").await.expect("verify")
        });
        let header = format!("Bearer {}", login.access);
        let info = RequestInfo {
            authorization: Some(&header),
            ..RequestInfo::default()
        };
        group.bench_with_input(
            BenchmarkId::new("http_handle_profile", invitees),
            &invitees,
            |b, _| b.iter(|| rt.block_on(http::handle(&service, Endpoint::Profile, &info, b""))),
        );
    }
    group.finish();
}

/// The `k`-th of 18 million distinct valid mobile numbers (`+37533…`, `+37544 2…`,
/// `+37529 3…`), none of them the hub's (test phone 0, `+37529 100 00 00`).
fn fresh_phone(k: usize, all: &AllowedRegions) -> Phone {
    let (prefix, base) = [("33", 0), ("44", 2_000_000), ("29", 3_000_000)][k / 6_000_000 % 3];
    Phone::parse(&format!("+375{prefix}{:07}", base + k % 6_000_000), all).expect("phone")
}

fn invites(c: &mut Criterion) {
    let rt = runtime();
    let store = store_with_invitees(&rt, 0);
    let service = service(store.clone());
    let hub_code = rt
        .block_on(service.profile(UserId(1)))
        .expect("hub")
        .own_invite_code;
    let all = AllowedRegions::all();
    let mut next = 10_000usize;
    let mut group = configure(c);
    // Each iteration applies the hub's code for a fresh user (created untimed).
    group.bench_function("use_invite_code", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let phone = fresh_phone(next, &all);
                    let user = store
                        .find_or_create(
                            &phone,
                            &InviteCode::generate,
                            refsys_core::Change::unrecorded(refsys_core::Timestamp::from_unix(0)),
                        )
                        .await
                        .expect("user");
                    let started = Instant::now();
                    service
                        .use_invite_code(user.user.id, hub_code.as_str())
                        .await
                        .expect("use_invite_code");
                    timed += started.elapsed();
                }
                timed
            })
        })
    });
    group.finish();
}

/// The profile request with instant revocation (the default; 1,000 other sessions revoked in
/// the list, as after a busy access-token lifetime) beside stateless revocation, in one run.
fn revocation(c: &mut Criterion) {
    let rt = runtime();
    let _entered = rt.enter();
    let mut group = configure(c);
    for (name, revocation) in [
        ("instant", Revocation::Instant),
        ("stateless", Revocation::Stateless),
    ] {
        let service = ReferralService::builder(
            store_with_invitees(&rt, 10),
            MemoryOtpStore::new(),
            NoopSender,
            JwtKeys::hs256(SECRET).expect("keys"),
        )
        .policy(bench_policy(TEST_PHONES))
        .revocation(revocation)
        .build();
        let phone = test_phone(0);
        let login = rt.block_on(async {
            for _ in 0..1_000 {
                service.send_code(&phone).await.expect("send");
                let other = service.verify_code(&phone, "0000").await.expect("verify");
                service.logout(&other.refresh).await.expect("logout");
            }
            service.send_code(&phone).await.expect("send");
            service.verify_code(&phone, "0000").await.expect("verify")
        });
        let header = format!("Bearer {}", login.access);
        let info = RequestInfo {
            authorization: Some(&header),
            ..RequestInfo::default()
        };
        group.bench_function(
            BenchmarkId::new("http_handle_profile_revocation", name),
            |b| b.iter(|| rt.block_on(http::handle(&service, Endpoint::Profile, &info, b""))),
        );
    }
    group.finish();
}

criterion_group!(benches, pure, tokens, login, profile, invites, revocation);
criterion_main!(benches);
