//! The Redis stores pass the conformance suites, against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`); each case uses its own key prefix and deletes it afterwards.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use refsys_core::redis_store::{RedisOtpStore, RedisRateLimitStore};
use refsys_core::testing::{phone, start};
use refsys_core::{
    OtpCode, OtpHash, OtpPolicy, OtpStore, RateLimitStore, StoreError, store::Check, store::Issue,
};
use refsys_test_support::redis::{TestRedis, fresh_prefix, with_fresh_prefix};

mod otp_store {
    use super::*;

    refsys_core::otp_store_conformance!(
        || async {
            let redis = fresh_prefix().await;
            (redis.otp_store(), redis)
        },
        |redis: TestRedis| async move { redis.cleanup().await }
    );
}

mod rate_limit_store {
    use super::*;

    refsys_core::rate_limit_store_conformance!(
        || async {
            let redis = fresh_prefix().await;
            (redis.rate_limit_store(), redis)
        },
        |redis: TestRedis| async move { redis.cleanup().await }
    );
}

const PEPPER: [u8; 32] = [9; 32];

fn hash(phone: &refsys_core::Phone, code: &str) -> OtpHash {
    OtpHash::new(&PEPPER, phone, &OtpCode::parse(code, code.len()).unwrap())
}

/// Runs the usual operations on both stores under the test's prefix.
async fn exercise(redis: &refsys_test_support::redis::TestRedis, code: &str) {
    let (otp, limits) = (redis.otp_store(), redis.rate_limit_store());
    let (policy, now) = (OtpPolicy::default(), start());
    for n in 1..=3 {
        let p = phone(n);
        let issued = otp.issue(&p, &hash(&p, code), now, &policy).await.unwrap();
        assert_eq!(issued, Issue::Stored);
    }
    let p = phone(1);
    let miss = otp.check(&p, &hash(&p, "000000000000"), now, &policy).await;
    assert!(matches!(miss.unwrap(), Check::Invalid { .. }));
    let p = phone(2);
    let later = now.plus(policy.resend_cooldown);
    otp.issue(&p, &hash(&p, "111111111111"), later, &policy)
        .await
        .unwrap();
    otp.cancel(&p, &hash(&p, "111111111111"), later, &policy)
        .await
        .unwrap();
    for key in ["ip:10.0.0.1", "ip:{odd}key"] {
        limits
            .hit(key, 5, Duration::from_secs(60), now)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_key_has_a_ttl_and_a_hash_tag() {
    with_fresh_prefix(keys_have_ttls_and_hash_tags).await;
}

async fn keys_have_ttls_and_hash_tags(redis: TestRedis) {
    {
        exercise(&redis, "918273645546").await;
        let keys = redis.keys().await;
        let p = &redis.prefix;
        let mut expected = vec![
            format!("{p}otp:{{+375291000001}}"),
            // Phone 1 had a wrong code: its failure budget is counting.
            format!("{p}otp:{{+375291000001}}:fails"),
            format!("{p}otp:{{+375291000001}}:sends"),
            // Phone 2's second code was cancelled: only its sends are left.
            format!("{p}otp:{{+375291000002}}:sends"),
            format!("{p}otp:{{+375291000003}}"),
            format!("{p}otp:{{+375291000003}}:sends"),
            format!("{p}rate:{{ip:10.0.0.1}}"),
            format!("{p}rate:{{ip:{{odd}}key}}"),
        ];
        expected.sort();
        assert_eq!(keys, expected);

        let mut conn = redis.conn.clone();
        let policy = OtpPolicy::default();
        let longest = policy.code_ttl.max(policy.send_window).as_secs() as i64;
        for key in &keys {
            let ttl: i64 = redis::cmd("TTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(ttl > 0, "{key} has TTL {ttl}");
            let bound = if key.contains(":rate:") { 60 } else { longest };
            assert!(ttl <= bound, "{key} has TTL {ttl}, more than {bound}");
        }
        redis.cleanup().await;
        assert!(redis.keys().await.is_empty());
    }
}

#[tokio::test]
async fn codes_are_stored_only_as_hashes() {
    with_fresh_prefix(|redis| async move {
        let code = "918273645546";
        exercise(&redis, code).await;
        let mut conn = redis.conn.clone();
        let mut values = Vec::new();
        for key in redis.keys().await {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let mut fields: Vec<String> = match kind.as_str() {
                "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
                "list" => {
                    redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                }
                other => panic!("{key} is an unexpected {other}"),
            }
            .unwrap();
            values.append(&mut fields);
        }
        assert!(
            values.iter().all(|value| !value.contains(code)),
            "{values:?}"
        );
        let p = phone(3);
        assert!(
            values.contains(&hash(&p, code).to_hex()),
            "the pending code is stored as its hash hex: {values:?}"
        );
    })
    .await;
}

fn assert_unavailable<T: std::fmt::Debug>(outcome: Result<T, StoreError>, started: Instant) {
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_closed_port_is_unavailable_fast() {
    let url = "redis://127.0.0.1:1";
    let started = Instant::now();
    assert_unavailable(RedisOtpStore::connect(url).await, started);
    let started = Instant::now();
    assert_unavailable(RedisRateLimitStore::connect(url).await, started);

    // A store whose Redis goes away after start-up fails every call the same way.
    let client = redis::Client::open(url).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(0);
    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config).unwrap();
    let (otp, limits) = (
        RedisOtpStore::new(conn.clone()),
        RedisRateLimitStore::new(conn),
    );
    let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
    let code = hash(&p, "1234");
    let started = Instant::now();
    assert_unavailable(otp.issue(&p, &code, now, &policy).await, started);
    let started = Instant::now();
    assert_unavailable(otp.check(&p, &code, now, &policy).await, started);
    let started = Instant::now();
    assert_unavailable(otp.cancel(&p, &code, now, &policy).await, started);
    let started = Instant::now();
    assert_unavailable(OtpStore::ping(&otp).await, started);
    let started = Instant::now();
    let hit = limits.hit("ip:1", 5, Duration::from_secs(60), now).await;
    assert_unavailable(hit, started);
    let started = Instant::now();
    assert_unavailable(RateLimitStore::ping(&limits).await, started);
}

#[tokio::test]
async fn debug_shows_only_the_prefix() {
    let redis = fresh_prefix().await;
    let shown = format!("{:?} {:?}", redis.otp_store(), redis.rate_limit_store());
    assert_eq!(
        shown,
        format!(
            "RedisOtpStore {{ prefix: {0:?}, .. }} RedisRateLimitStore {{ prefix: {0:?}, .. }}",
            redis.prefix
        )
    );
}

/// A lock's key lives exactly as long as the lock; the locked phone's code is gone.
#[tokio::test]
async fn lock_key_expires_with_the_lock() {
    with_fresh_prefix(|redis| async move {
        let otp = redis.otp_store();
        let policy = OtpPolicy {
            max_failures: 2,
            lockout: Duration::from_secs(900),
            ..OtpPolicy::default()
        };
        let (now, p) = (start(), phone(1));
        otp.issue(&p, &hash(&p, "1234"), now, &policy)
            .await
            .unwrap();
        for _ in 0..2 {
            otp.check(&p, &hash(&p, "0000"), now, &policy)
                .await
                .unwrap();
        }
        let pre = &redis.prefix;
        let keys = redis.keys().await;
        assert_eq!(
            keys,
            [
                format!("{pre}otp:{{+375291000001}}:fails"),
                format!("{pre}otp:{{+375291000001}}:sends"),
            ]
        );
        let mut conn = redis.conn.clone();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((890..=900).contains(&ttl), "TTL {ttl}");
        let until: u64 = redis::cmd("HGET")
            .arg(&keys[0])
            .arg("until")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(until, now.as_unix() + 900);
        redis.cleanup().await;
    })
    .await;
}

/// Random operations give the same outcomes on the Redis store as on the in-memory one.
#[tokio::test]
async fn matches_the_memory_store_step_by_step() {
    with_fresh_prefix(|redis| async move {
        let (otp, memory) = (redis.otp_store(), refsys_core::MemoryOtpStore::new());
        let policy = OtpPolicy {
            code_ttl: Duration::from_secs(7),
            resend_cooldown: Duration::from_secs(3),
            max_attempts: 3,
            max_sends_per_window: 3,
            send_window: Duration::from_secs(20),
            max_failures: 4,
            lockout: Duration::from_secs(15),
            ..OtpPolicy::default()
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = start();
        let mut issued = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..600 {
            now = now.plus(Duration::from_secs(next(3)));
            let p = phone(next(2) as u32);
            let code = hash(&p, ["1111", "2222", "3333"][next(3) as usize]);
            let (ours, theirs) = match next(5) {
                0 | 1 => {
                    let ours = otp.issue(&p, &code, now, &policy).await.unwrap();
                    let theirs = memory.issue(&p, &code, now, &policy).await.unwrap();
                    if ours == Issue::Stored {
                        issued.push((p.clone(), code, now));
                    }
                    (format!("{ours:?}"), format!("{theirs:?}"))
                }
                2 if !issued.is_empty() => {
                    let (p, code, at) = issued.swap_remove(next(issued.len() as u64) as usize);
                    otp.cancel(&p, &code, at, &policy).await.unwrap();
                    memory.cancel(&p, &code, at, &policy).await.unwrap();
                    continue;
                }
                _ => {
                    let ours = otp.check(&p, &code, now, &policy).await.unwrap();
                    let theirs = memory.check(&p, &code, now, &policy).await.unwrap();
                    (format!("{ours:?}"), format!("{theirs:?}"))
                }
            };
            assert_eq!(ours, theirs, "step {step}");
            seen.insert(ours.split([' ', '{']).next().unwrap_or_default().to_owned());
        }
        let all = [
            "Burned",
            "Cooldown",
            "Invalid",
            "Locked",
            "LockedNow",
            "Missing",
            "Stored",
            "Valid",
            "WindowFull",
        ];
        assert_eq!(seen, all.map(String::from).into(), "every outcome occurs");
    })
    .await;
}

/// The same stores on a Redis Cluster of three primaries: a local one the test binary starts
/// (needs `redis-server` and `redis-cli`), or the one `REDIS_CLUSTER_URLS` names.
mod cluster {
    use std::collections::BTreeSet;

    use refsys_core::redis_store::{self, RedisConnection};
    use refsys_test_support::redis::{
        LocalCluster, fresh_cluster_prefix, with_fresh_cluster_prefix,
    };

    use super::*;

    mod otp_store {
        use super::*;

        refsys_core::otp_store_conformance!(
            || async {
                let redis = fresh_cluster_prefix().await;
                (redis.otp_store(), redis)
            },
            |redis: TestRedis| async move { redis.cleanup().await }
        );
    }

    mod rate_limit_store {
        use super::*;

        refsys_core::rate_limit_store_conformance!(
            || async {
                let redis = fresh_cluster_prefix().await;
                (redis.rate_limit_store(), redis)
            },
            |redis: TestRedis| async move { redis.cleanup().await }
        );
    }

    #[tokio::test]
    async fn the_test_redis_is_a_cluster() {
        let redis = fresh_cluster_prefix().await;
        assert!(redis.conn.is_cluster());
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut redis.conn.clone())
            .await
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        let nodes = redis.keys_by_node().await;
        assert!(nodes.len() >= 3, "at least three primaries: {nodes:?}");
    }

    #[tokio::test]
    async fn every_key_has_a_ttl_and_a_hash_tag() {
        with_fresh_cluster_prefix(keys_have_ttls_and_hash_tags).await;
    }

    /// The phone is the hash tag: each phone's keys share one primary, and the phones spread
    /// over several primaries, so a script that touched two phones' keys would be refused
    /// (`CROSSSLOT`) and the conformance suites above would fail.
    #[tokio::test]
    async fn phones_spread_over_primaries_and_keep_their_keys_together() {
        with_fresh_cluster_prefix(|redis| async move {
            let (otp, policy, now) = (redis.otp_store(), OtpPolicy::default(), start());
            for n in 1..=12 {
                let p = phone(n);
                otp.issue(&p, &hash(&p, "1234"), now, &policy)
                    .await
                    .unwrap();
                let miss = otp.check(&p, &hash(&p, "0000"), now, &policy).await;
                assert!(matches!(miss.unwrap(), Check::Invalid { .. }));
            }
            let nodes = redis.keys_by_node().await;
            let mut node_of_phone = std::collections::BTreeMap::new();
            for (node, keys) in &nodes {
                for key in keys {
                    let phone = key
                        .split_once('{')
                        .and_then(|(_, rest)| rest.split_once('}'))
                        .map(|(phone, _)| phone.to_owned())
                        .unwrap();
                    let first = node_of_phone.entry(phone.clone()).or_insert(node.clone());
                    assert_eq!(first, node, "{phone} has keys on two nodes: {nodes:?}");
                }
            }
            assert_eq!(node_of_phone.len(), 12, "{nodes:?}");
            let used: BTreeSet<_> = node_of_phone.values().collect();
            assert!(used.len() >= 2, "all phones on one node: {nodes:?}");

            // Two phones on different primaries: one script over both is refused.
            let (a, b) = (
                phone(1),
                (2..=12)
                    .map(phone)
                    .find(|p| node_of_phone[p.as_str()] != node_of_phone[phone(1).as_str()])
                    .unwrap(),
            );
            let keys = [
                format!("{}otp:{{{}}}", redis.prefix, a.as_str()),
                format!("{}otp:{{{}}}", redis.prefix, b.as_str()),
            ];
            let crossed: Result<i64, _> = redis::Script::new("return #KEYS")
                .key(&keys[0])
                .key(&keys[1])
                .invoke_async(&mut redis.conn.clone())
                .await;
            let error = crossed.unwrap_err();
            assert_eq!(
                error.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
                "{error}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn scripts_are_reloaded_after_a_script_flush() {
        with_fresh_cluster_prefix(|redis| async move {
            let (otp, policy, now, p) =
                (redis.otp_store(), OtpPolicy::default(), start(), phone(7));
            otp.issue(&p, &hash(&p, "1234"), now, &policy)
                .await
                .unwrap();
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut redis.conn.clone())
                .await
                .unwrap();
            let checked = otp.check(&p, &hash(&p, "1234"), now, &policy).await;
            assert_eq!(checked.unwrap(), Check::Valid);
        })
        .await;
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_unavailable_fast() {
        let started = Instant::now();
        let closed = ["redis://127.0.0.1:1", "redis://127.0.0.1:2"];
        assert_unavailable(redis_store::connect_cluster(&closed).await, started);
        let started = Instant::now();
        assert_unavailable(redis_store::connect_cluster::<&str>(&[]).await, started);

        // A cluster of its own, stopped under the stores: one primary, then all.
        let mut cluster = LocalCluster::start();
        let conn = redis_store::connect_cluster(cluster.urls()).await.unwrap();
        assert!(matches!(conn, RedisConnection::Cluster(_)));
        let (otp, limits) = (
            RedisOtpStore::new(conn.clone()),
            RedisRateLimitStore::new(conn),
        );
        let (policy, now, p) = (OtpPolicy::default(), start(), phone(1));
        let code = hash(&p, "1234");
        otp.issue(&p, &code, now, &policy).await.unwrap();
        OtpStore::ping(&otp).await.unwrap();

        cluster.stop_node(0);
        let started = Instant::now();
        assert_unavailable(OtpStore::ping(&otp).await, started);
        // Phones on the stopped primary fail fast; the others are still served.
        let (mut served, mut refused) = (0, 0);
        for n in 1..=12 {
            let p = phone(n);
            let started = Instant::now();
            match otp.issue(&p, &hash(&p, "1234"), now, &policy).await {
                Ok(_) => served += 1,
                outcome => {
                    assert_unavailable(outcome, started);
                    refused += 1;
                }
            }
        }
        assert!(
            served > 0 && refused > 0,
            "{served} served, {refused} refused"
        );

        drop(cluster);
        let started = Instant::now();
        assert_unavailable(otp.check(&p, &code, now, &policy).await, started);
        let started = Instant::now();
        assert_unavailable(otp.issue(&p, &code, now, &policy).await, started);
        let started = Instant::now();
        assert_unavailable(otp.cancel(&p, &code, now, &policy).await, started);
        let started = Instant::now();
        let hit = limits.hit("ip:1", 5, Duration::from_secs(60), now).await;
        assert_unavailable(hit, started);
        let started = Instant::now();
        assert_unavailable(RateLimitStore::ping(&limits).await, started);
    }
}
