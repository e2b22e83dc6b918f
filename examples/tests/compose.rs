//! The production setup of `docker-compose.yml`, without Docker: the same binary started with
//! the compose file's environment for the `server` service (on top of `.env.example`, as
//! `env_file: .env` would load it), with the service host names pointed at the local
//! PostgreSQL and Redis. Runs with the `services` feature.
#![cfg(feature = "services")]

mod support;

use std::collections::BTreeMap;

use http_suite::Client;
use serde_json::json;
use support::{Server, TEST_PHONES, free_port};

/// `KEY=value` lines of `.env.example`, comments skipped.
fn env_example() -> BTreeMap<String, String> {
    let text = include_str!("../.env.example");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The `environment:` map of the compose file's `server` service, `${VAR:-default}` resolved
/// to its default.
fn compose_server_environment() -> BTreeMap<String, String> {
    let text = include_str!("../../docker-compose.yml");
    let mut in_server = false;
    let mut in_env = false;
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent == 2 {
            in_server = trimmed == "server:";
            in_env = false;
        } else if in_server && indent == 4 {
            in_env = trimmed == "environment:";
        } else if in_server && in_env && indent == 6 {
            let (key, value) = trimmed.split_once(':').expect("KEY: value");
            env.insert(key.trim().to_owned(), resolve_defaults(value.trim()));
        }
    }
    assert!(
        !env.is_empty(),
        "no environment for the server service in docker-compose.yml"
    );
    env
}

fn resolve_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let expr = &rest[start + 2..end];
        out.push_str(expr.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn compose_environment_runs_against_local_postgres_and_redis() {
    let compose = compose_server_environment();
    // What the compose file promises: Postgres and Redis by service name, JSON logs, all
    // interfaces.
    assert_eq!(compose["REFSYS_BIND"], "0.0.0.0:8000");
    assert_eq!(
        compose["DATABASE_URL"],
        "postgres://refsys:refsys@postgres:5432/refsys"
    );
    assert_eq!(compose["REDIS_URL"], "redis://redis:6379");

    let database = refsys_test_support::postgres::fresh_database().await;
    let redis = refsys_test_support::redis::fresh_prefix().await;
    let mut env = env_example();
    env.extend(compose);
    // The service names become this machine; the compose database becomes a fresh one.
    env.insert("REFSYS_BIND".into(), format!("127.0.0.1:{}", free_port()));
    env.insert("DATABASE_URL".into(), database.url().to_owned());
    let redis_url = env["REDIS_URL"].replace("redis://redis:6379", &redis.url);
    env.insert("REDIS_URL".into(), redis_url);
    env.insert("REDIS_PREFIX".into(), redis.prefix.clone());
    // What an operator puts in .env.
    env.insert(
        "JWT_SECRET".into(),
        "a compose secret of at least 32 bytes!!".into(),
    );
    env.insert("TEST_PHONES".into(), TEST_PHONES.into());
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();

    let server = Server::start(&env, &[]).await;
    let client = Client::new(&server.base);
    assert_eq!(client.get("/ready", None).await.status, 200);
    let alice = client.login("+375291000001", "0000").await;
    let bob = client.login("+375291000002", "0000").await;
    let profile = client.get("/get_profile/", alice["access"].as_str()).await;
    let code = profile.str("own_invite_code");
    let applied = client
        .post_as(
            "/use_invite_code/",
            bob["access"].as_str(),
            json!({ "invite_code": code }),
        )
        .await;
    assert_eq!(applied.status, 200);
    let profile = client
        .get("/get_profile/", alice["access"].as_str())
        .await
        .json();
    assert_eq!(profile["invited_users"], json!(["+375291000002"]));

    // The state really is in PostgreSQL and Redis.
    let users: i64 = sqlx_count(&database).await;
    assert_eq!(users, 2);
    assert!(!redis.keys().await.is_empty(), "OTP state lives in Redis");
    let log = server.log();
    assert!(log.contains("\"database\":\"postgres\""), "{log}");
    assert!(log.contains("\"otp_store\":\"redis\""), "{log}");

    drop(server);
    redis.cleanup().await;
    database.drop_database().await;
}

async fn sqlx_count(database: &refsys_test_support::postgres::TestDatabase) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT count(*) AS n FROM users")
        .fetch_one(database.pool())
        .await
        .expect("count users")
        .get("n")
}
