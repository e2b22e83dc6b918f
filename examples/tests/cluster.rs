//! Two `refsys-server` processes (axum and actix) on one PostgreSQL and a Redis Cluster of
//! three primaries (`REDIS_CLUSTER_URLS`): a code sent via one verifies via the other, and
//! cooldowns, attempt limits and per-IP limits count across both. The cluster is a local one the test
//! binary starts (`refsys_test_support::redis::LocalCluster`, needs `redis-server` and
//! `redis-cli`), or the one `REDIS_CLUSTER_URLS` names. Runs with the `services` feature.
#![cfg(feature = "services")]

mod support;

use std::collections::BTreeSet;

use http_suite::gateway::{Mode, Receiver, webhook_env};
use http_suite::{Client, assert_error};
use refsys_test_support::postgres::fresh_database;
use refsys_test_support::redis::fresh_cluster_prefix;
use serde_json::json;
use support::Server;
use support::services::login_across;

const JWT_SECRET: &str = "cluster tests: a secret of at least 32 bytes!";
const HOOK_SECRET: &str = "cluster webhook secret";

/// An ordinary phone `n` (codes go through the SMS sender).
fn phone(n: u32) -> String {
    format!("+375292{n:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_a_redis_cluster_share_codes_cooldowns_and_limits() {
    let database = fresh_database().await;
    let redis = fresh_cluster_prefix().await;
    let receiver = Receiver::start(Mode::Ok).await;
    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database.url().to_owned()),
        ("REDIS_CLUSTER_URLS", redis.url.clone()),
        ("REDIS_PREFIX", redis.prefix.clone()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        // 12 sends below, then one more allowed: the 14th is over the limit.
        ("RATE_LIMIT_SEND_CODE", "13".to_owned()),
        ("RATE_LIMIT_VERIFY_CODE", "100".to_owned()),
    ];
    env.extend(webhook_env(&receiver, HOOK_SECRET));
    let a = Server::start(&env, &[]).await;
    let b = Server::start(&env, &["--framework", "actix"]).await;
    assert!(a.log().contains("redis-cluster"), "{}", a.log());
    let (ca, cb) = (Client::new(&a.base), Client::new(&b.base));
    for client in [&ca, &cb] {
        let ready = client.get("/ready", None).await;
        assert_eq!(ready.status, 200, "{}", ready.json());
    }

    // Codes sent via A for several phones verify via B. The per-IP limit below counts per
    // real-clock minute: keep these sends inside one.
    http_suite::away_from_a_window_edge(60).await;
    let phones: Vec<String> = (1..=6).map(phone).collect();
    for user in &phones {
        let sent = ca.post("/login/send_code/", json!({ "phone": user })).await;
        assert_eq!(sent.status, 200, "{}", sent.json());
        // B sees A's cooldown.
        let again = cb.post("/login/send_code/", json!({ "phone": user })).await;
        assert_error(&again, 429, "resend_cooldown");
    }
    // The per-IP limit counts the sends of both servers.
    let sent = cb
        .post("/login/send_code/", json!({ "phone": phone(7) }))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    let over = ca
        .post("/login/send_code/", json!({ "phone": phone(8) }))
        .await;
    assert_error(&over, 429, "rate_limited");

    // The phones' keys spread over the primaries.
    let nodes = redis.keys_by_node().await;
    let used: BTreeSet<_> = nodes.iter().filter(|(_, keys)| !keys.is_empty()).collect();
    assert!(used.len() >= 2, "all phones on one primary: {nodes:?}");

    for user in &phones {
        let code = receiver.last_code(user);
        let wrong = format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000);
        let miss = ca
            .post(
                "/login/verify_code/",
                json!({ "phone": user, "code": wrong }),
            )
            .await;
        let body = assert_error(&miss, 400, "code_invalid");
        assert_eq!(body["attempts_left"], json!(4), "{body}");
        // Verified on B; spent there, so A no longer takes it.
        login_across(&ca, &cb, user, &code).await;
    }

    drop(a);
    drop(b);
    redis.cleanup().await;
    database.drop_database().await;
}
