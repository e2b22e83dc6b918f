//! Sessions against the real `refsys-server` binary: listed and ended on the embedded default,
//! and, with the `services` feature, across two instances (axum and actix-web) on one
//! PostgreSQL and one Redis, where a session ended on one instance has its access tokens
//! refused by the other within a second (instant revocation) — or not, with
//! `REVOCATION=stateless`.

mod support;

use std::time::{Duration, Instant};

use http_suite::{Client, Res, assert_error};
use serde_json::{Value, json};
use support::Server;

const JWT_SECRET: &str = "session tests: a signing secret of 32+ bytes";
const ALICE: &str = "+375291000001";
const TEST_PHONES: &str = "+375291000001:0000,+375291000002:0000";

/// The variables every server here runs with (limits off: the test logs in often).
fn base_env() -> Vec<(&'static str, String)> {
    vec![
        ("JWT_SECRET", JWT_SECRET.into()),
        ("TEST_PHONES", TEST_PHONES.into()),
        ("OTP_RESEND_COOLDOWN", "0".into()),
        ("RATE_LIMIT_SEND_CODE", "0".into()),
        ("RATE_LIMIT_VERIFY_CODE", "0".into()),
        ("RATE_LIMIT_SEND_CODE_PER_PHONE", "0".into()),
        ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0".into()),
    ]
}

/// A login of Alice from a device called `agent`; the login body.
async fn login(client: &Client, agent: &str) -> Value {
    let sent = client
        .post("/login/send_code/", json!({ "phone": ALICE }))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    let body = serde_json::to_vec(&json!({ "phone": ALICE, "code": "0000" })).unwrap();
    let headers = [("content-type", "application/json"), ("user-agent", agent)];
    let login = client
        .request("POST", "/login/verify_code/", &headers, Some(body))
        .await;
    assert_eq!(login.status, 200, "{}", login.json());
    login.json()
}

async fn delete(client: &Client, path: &str, access: &str) -> Res {
    let auth = format!("Bearer {access}");
    client
        .request("DELETE", path, &[("authorization", auth.as_str())], None)
        .await
}

/// How long until `client` refuses `access` on the profile route (at most `within`).
async fn refused_within(client: &Client, access: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let res = client.get("/get_profile/", Some(access)).await;
        if res.status == 401 {
            assert_error(&res, 401, "unauthorized");
            return started.elapsed();
        }
        assert_eq!(res.status, 200, "{}", res.json());
        assert!(
            started.elapsed() < within,
            "still accepted after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn sessions_are_listed_and_ended_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env();
    env.push((
        "DATABASE_URL",
        format!("sqlite:{}?mode=rwc", dir.path().join("refsys.db").display()),
    ));
    let server = Server::start(&env, &[]).await;
    let client = Client::new(&server.base);
    let phone = login(&client, "Phone/1").await;
    let laptop = login(&client, "Laptop/1").await;
    let laptop_access = laptop["access"].as_str().unwrap();
    let listed = client
        .get("/api/sessions/", Some(laptop_access))
        .await
        .json();
    let sessions = listed["sessions"].as_array().unwrap();
    let agents: Vec<_> = sessions.iter().map(|s| s["user_agent"].clone()).collect();
    assert_eq!(agents, [json!("Laptop/1"), json!("Phone/1")], "{listed}");
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["ip"], "127.0.0.0/24");
    let phone_id = sessions[1]["id"].as_str().unwrap();
    let res = delete(
        &client,
        &format!("/api/sessions/{phone_id}/"),
        laptop_access,
    )
    .await;
    assert_eq!(res.status, 204);
    // At once, on this (the only) instance; the refresh token too.
    let phone_access = phone["access"].as_str().unwrap();
    refused_within(&client, phone_access, Duration::ZERO).await;
    let refresh = client
        .post(
            "/api/token/refresh/",
            json!({ "refresh": phone["refresh"] }),
        )
        .await;
    assert_error(&refresh, 401, "invalid_token");
    // A logout ends the laptop's access at once too.
    let out = client
        .post(
            "/api/token/logout/",
            json!({ "refresh": laptop["refresh"] }),
        )
        .await;
    assert_eq!(out.status, 204);
    refused_within(&client, laptop_access, Duration::ZERO).await;
}

#[cfg(feature = "services")]
mod services {
    use super::*;
    use refsys_test_support::postgres::fresh_database;
    use refsys_test_support::redis::fresh_prefix;

    use refsys_test_support::postgres::TestDatabase;
    use refsys_test_support::redis::TestRedis;

    /// Two instances, axum and actix-web, on one fresh database and Redis prefix (kept as
    /// long as the last two are).
    async fn pair(extra: &[(&'static str, &str)]) -> (Server, Server, (TestDatabase, TestRedis)) {
        let database = fresh_database().await;
        let redis = fresh_prefix().await;
        let mut env = base_env();
        env.extend([
            ("DATABASE_URL", database.url().to_owned()),
            ("REDIS_URL", redis.url.clone()),
            ("REDIS_PREFIX", redis.prefix.clone()),
        ]);
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let a = Server::start(&env, &[]).await;
        let b = Server::start(&env, &["--framework", "actix"]).await;
        (a, b, (database, redis))
    }

    #[tokio::test]
    async fn a_session_ended_on_one_instance_is_refused_by_the_other_within_a_second() {
        let (a, b, _guard) = pair(&[]).await;
        let (ca, cb) = (Client::new(&a.base), Client::new(&b.base));
        let phone = login(&ca, "Phone/1").await;
        let laptop = login(&cb, "Laptop/1").await;
        let (phone_access, laptop_access) = (
            phone["access"].as_str().unwrap(),
            laptop["access"].as_str().unwrap(),
        );
        // Both instances list the same two sessions.
        let on_a = ca.get("/api/sessions/", Some(laptop_access)).await.json();
        let on_b = cb.get("/api/sessions/", Some(laptop_access)).await.json();
        assert_eq!(on_a, on_b);
        let phone_id = on_b["sessions"][1]["id"].as_str().unwrap().to_owned();
        assert_eq!(on_b["sessions"][1]["user_agent"], "Phone/1");
        assert_eq!(
            ca.get("/get_profile/", Some(phone_access)).await.status,
            200
        );

        // The laptop ends the phone's session on b; a refuses the phone within a second.
        let res = delete(&cb, &format!("/api/sessions/{phone_id}/"), laptop_access).await;
        assert_eq!(res.status, 204);
        refused_within(&cb, phone_access, Duration::ZERO).await;
        let took = refused_within(&ca, phone_access, Duration::from_secs(1)).await;
        eprintln!(
            "METRIC revocation_seen_by_the_other_instance_ms={}",
            took.as_millis()
        );
        assert_eq!(
            ca.get("/get_profile/", Some(laptop_access)).await.status,
            200
        );

        // Sign out everywhere else, on a: b refuses those sessions' access tokens too.
        let tablet = login(&ca, "Tablet/1").await;
        let tablet_access = tablet["access"].as_str().unwrap();
        let res = ca
            .post_as(
                "/api/sessions/revoke/",
                Some(laptop_access),
                json!({ "scope": "others" }),
            )
            .await;
        assert_eq!(res.json(), json!({ "revoked": 1 }));
        refused_within(&cb, tablet_access, Duration::from_secs(1)).await;
        assert_eq!(
            cb.get("/get_profile/", Some(laptop_access)).await.status,
            200
        );
    }

    #[tokio::test]
    async fn stateless_revocation_lets_access_tokens_live_out_their_lifetime() {
        let (a, b, _guard) = pair(&[("REVOCATION", "stateless")]).await;
        let (ca, cb) = (Client::new(&a.base), Client::new(&b.base));
        let phone = login(&ca, "Phone/1").await;
        let out = ca
            .post("/api/token/logout/", json!({ "refresh": phone["refresh"] }))
            .await;
        assert_eq!(out.status, 204);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let access = phone["access"].as_str().unwrap();
        for client in [&ca, &cb] {
            assert_eq!(client.get("/get_profile/", Some(access)).await.status, 200);
        }
        let refresh = cb
            .post(
                "/api/token/refresh/",
                json!({ "refresh": phone["refresh"] }),
            )
            .await;
        assert_error(&refresh, 401, "invalid_token");
    }
}
