//! Accounts against the real `refsys-server` binary: export, phone change and deletion, by
//! the user and by the admin commands, with a `kill -9` while deletions are in flight, on the
//! embedded default (SQLite) and, with the `services` feature, on PostgreSQL + Redis, where
//! PostgreSQL is also stopped mid-deletion and two instances share revocations.

mod support;

use std::time::Duration;

use http_suite::{Client, assert_error};
use serde_json::{Value, json};
use support::{Server, run_to_exit};

const JWT_SECRET: &str = "account tests: a signing secret of 32+ bytes";

/// Test phones (fixed code 0000, no SMS): `phone(n)` for n in 1..=40.
fn phone(n: u32) -> String {
    format!("+3752910001{n:02}")
}

fn base_env() -> Vec<(&'static str, String)> {
    let phones: Vec<String> = (1..=40).map(|n| format!("{}:0000", phone(n))).collect();
    vec![
        ("JWT_SECRET", JWT_SECRET.into()),
        ("TEST_PHONES", phones.join(",")),
        ("OTP_RESEND_COOLDOWN", "0".into()),
        ("RATE_LIMIT_SEND_CODE", "0".into()),
        ("RATE_LIMIT_VERIFY_CODE", "0".into()),
        ("RATE_LIMIT_SEND_CODE_PER_PHONE", "0".into()),
        ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0".into()),
    ]
}

fn sqlite_env(dir: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    let mut env = base_env();
    env.push((
        "DATABASE_URL",
        format!("sqlite:{}?mode=rwc", dir.path().join("refsys.db").display()),
    ));
    env
}

fn access(login: &Value) -> &str {
    login["access"].as_str().expect("an access token")
}

/// Sends a code to `phone` (a test phone: the code is 0000).
async fn send(client: &Client, phone: &str) {
    let sent = client
        .post("/login/send_code/", json!({ "phone": phone }))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json());
}

/// Deletes the account of `login` with a fresh code for `phone`.
async fn delete_account(client: &Client, phone: &str, login: &Value) -> http_suite::Res {
    send(client, phone).await;
    client
        .post_as(
            "/api/account/delete/",
            Some(access(login)),
            json!({ "code": "0000" }),
        )
        .await
}

/// `refsys-server admin <args>` with `env`: (success, output).
async fn admin(env: &[(&'static str, String)], args: &[&str]) -> (Option<i32>, String) {
    let env: Vec<(&str, String)> = env.to_vec();
    let mut all = vec!["admin".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let (status, output) = run_to_exit(&env, &args);
        (status.code(), output)
    })
    .await
    .unwrap()
}

/// The whole flow on one server: export, a phone change (and one refused as taken), the
/// admin's view, a deletion refused without `--yes`, a self-service deletion, the admin's
/// revocation and deletion.
async fn flow(env: &[(&'static str, String)], framework: &str) {
    let server = Server::start(env, &["--framework", framework]).await;
    let c = Client::new(&server.base);
    let alice = c.login(&phone(1), "0000").await;
    let bob = c.login(&phone(2), "0000").await;
    let alice_code =
        c.get("/get_profile/", Some(access(&alice))).await.json()["own_invite_code"].clone();
    let applied = c
        .post_as(
            "/use_invite_code/",
            Some(access(&bob)),
            json!({ "invite_code": alice_code }),
        )
        .await;
    assert_eq!(applied.status, 200);
    let export = c.get("/api/account/export/", Some(access(&alice))).await;
    assert_eq!(export.status, 200);
    let export = export.json();
    assert_eq!(export["phone"], json!(phone(1)));
    assert_eq!(export["invited_users"][0]["phone"], json!(phone(2)));
    assert_eq!(export["sessions"].as_array().unwrap().len(), 1);

    // Alice moves to phone 3 (proving phone 1 again); bob cannot move to it.
    send(&c, &phone(1)).await;
    let moved = c
        .post_as(
            "/api/account/phone/send_code/",
            Some(access(&alice)),
            json!({ "phone": phone(3), "current_code": "0000" }),
        )
        .await;
    assert_eq!(moved.status, 200);
    let moved = c
        .post_as(
            "/api/account/phone/verify/",
            Some(access(&alice)),
            json!({ "phone": phone(3), "code": "0000" }),
        )
        .await;
    assert_eq!(
        (moved.status, moved.json()),
        (200, json!({ "phone": phone(3) }))
    );
    send(&c, &phone(2)).await;
    let sent = c
        .post_as(
            "/api/account/phone/send_code/",
            Some(access(&bob)),
            json!({ "phone": phone(3), "current_code": "0000" }),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    let taken = c
        .post_as(
            "/api/account/phone/verify/",
            Some(access(&bob)),
            json!({ "phone": phone(3), "code": "0000" }),
        )
        .await;
    assert_error(&taken, 409, "phone_taken");

    // The admin's view, by the new phone and by id.
    let (code, shown) = admin(env, &["user", &phone(3)]).await;
    assert_eq!(code, Some(0), "{shown}");
    let alice_id = alice["user_id"].to_string();
    assert!(shown.contains(&format!("user {alice_id}")), "{shown}");
    assert!(shown.contains(&phone(3)), "{shown}");
    assert!(shown.contains("invitees      1"), "{shown}");
    assert!(shown.contains("sessions      1 live"), "{shown}");
    assert!(shown.contains("127.0.0.0/24"), "{shown}");
    let (code, shown) = admin(env, &["user", &phone(1)]).await;
    assert_eq!(code, Some(1), "the old phone has no user: {shown}");
    let (code, shown) = admin(env, &["user", "not-a-phone"]).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("neither a user id nor a phone"), "{shown}");
    let (code, shown) = admin(env, &["user", phone(3).trim_start_matches('+')]).await;
    assert_eq!(code, Some(1), "digits alone are an id: {shown}");
    assert!(shown.contains("with its +"), "{shown}");
    let bob_id = bob["user_id"].to_string();
    let (code, shown) = admin(env, &["user", "delete", &bob_id]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("--yes"), "{shown}");
    assert_eq!(c.get("/get_profile/", Some(access(&bob))).await.status, 200);

    // Bob deletes his account: gone at once, out of alice's list, the phone signs up anew.
    let deleted = delete_account(&c, &phone(2), &bob).await;
    assert_eq!(
        deleted.status,
        204,
        "{}",
        String::from_utf8_lossy(&deleted.body)
    );
    assert_error(
        &c.get("/get_profile/", Some(access(&bob))).await,
        401,
        "unauthorized",
    );
    let alices = c.get("/get_profile/", Some(access(&alice))).await.json();
    assert_eq!(alices["invited_users"], json!([]));
    let (code, shown) = admin(env, &["user", &bob_id]).await;
    assert_eq!(code, Some(1), "{shown}");
    let again = c.login(&phone(2), "0000").await;
    assert_ne!(again["user_id"], bob["user_id"]);

    // The admin ends alice's sessions, then deletes her.
    let (code, shown) = admin(env, &["sessions", "revoke", &phone(3)]).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("revoked 1 session(s)"), "{shown}");
    let refresh = c
        .post(
            "/api/token/refresh/",
            json!({ "refresh": alice["refresh"] }),
        )
        .await;
    assert_error(&refresh, 401, "invalid_token");
    let alice = c.login(&phone(3), "0000").await;
    let (code, shown) = admin(env, &["user", "delete", &alice_id, "--yes"]).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(&format!("deleted user {alice_id}")),
        "{shown}"
    );
    assert_error(
        &c.get("/get_profile/", Some(access(&alice))).await,
        401,
        "unauthorized",
    );
    let refresh = c
        .post(
            "/api/token/refresh/",
            json!({ "refresh": alice["refresh"] }),
        )
        .await;
    assert_error(&refresh, 401, "invalid_token");
}

#[tokio::test]
async fn accounts_on_the_embedded_default_axum() {
    let dir = tempfile::tempdir().unwrap();
    flow(&sqlite_env(&dir), "axum").await;
}

#[tokio::test]
async fn accounts_on_the_embedded_default_actix() {
    let dir = tempfile::tempdir().unwrap();
    flow(&sqlite_env(&dir), "actix").await;
}

/// Whether the account `login` (of `phone`) is whole: it answers its profile, its phone logs
/// in to it, and its inviter lists it. Or wholly gone: refused, its phone signs up anew, and
/// its inviter does not list it. Anything in between panics.
async fn whole_or_gone(c: &Client, phone: &str, login: &Value, inviter: &Value) -> bool {
    let profile = c.get("/get_profile/", Some(access(login))).await;
    let listed = c.get("/get_profile/", Some(access(inviter))).await.json()["invited_users"]
        .as_array()
        .unwrap()
        .contains(&json!(phone));
    let again = c.login(phone, "0000").await;
    match profile.status {
        200 => {
            assert!(listed, "a whole account is on its inviter's list");
            assert_eq!(
                again["user_id"], login["user_id"],
                "a whole account keeps its phone"
            );
            true
        }
        401 => {
            assert!(!listed, "a deleted account left its inviter's list");
            assert_ne!(
                again["user_id"], login["user_id"],
                "a deleted account's phone is free"
            );
            false
        }
        other => panic!("profile answered {other}"),
    }
}

/// `kill -9` while deletions are in flight (after increasing delays), then a restart on the
/// same file: every account is whole or wholly gone, never half-deleted.
#[tokio::test]
async fn a_kill_during_deletions_leaves_each_account_whole_or_gone() {
    let dir = tempfile::tempdir().unwrap();
    kill_during_deletions(&sqlite_env(&dir), "sqlite", Duration::from_millis(3)).await;
}

/// Four rounds of: four accounts (invitees of one inviter) asking to be deleted at once, the
/// server killed after 0, 1, 2 and 3 `step`s, a restart on the same stores; then every account
/// is whole or wholly gone.
async fn kill_during_deletions(env: &[(&'static str, String)], store: &str, step: Duration) {
    let env = env.to_vec();
    let mut outcomes = Vec::new();
    for round in 0..4u32 {
        let mut server = Server::start(&env, &[]).await;
        let c = Client::new(&server.base);
        let inviter = c.login(&phone(30 + round), "0000").await;
        let phones: Vec<String> = (1..=4).map(|n| phone(round * 4 + n)).collect();
        let code =
            c.get("/get_profile/", Some(access(&inviter))).await.json()["own_invite_code"].clone();
        let mut logins = Vec::new();
        for phone in &phones {
            let login = c.login(phone, "0000").await;
            let applied = c
                .post_as(
                    "/use_invite_code/",
                    Some(access(&login)),
                    json!({ "invite_code": code }),
                )
                .await;
            assert_eq!(applied.status, 200);
            send(&c, phone).await;
            logins.push(login);
        }
        let requests: Vec<_> = logins
            .iter()
            .map(|login| {
                let (c, bearer) = (c.clone(), access(login).to_owned());
                tokio::spawn(async move {
                    c.post_as(
                        "/api/account/delete/",
                        Some(&bearer),
                        json!({ "code": "0000" }),
                    )
                    .await
                })
            })
            .collect();
        tokio::time::sleep(step * round).await;
        server.kill();
        for request in requests {
            request.abort();
        }
        let server = Server::start(&env, &[]).await;
        let c = Client::new(&server.base);
        let inviter = c.login(&phone(30 + round), "0000").await;
        for (phone, login) in phones.iter().zip(&logins) {
            outcomes.push(whole_or_gone(&c, phone, login, &inviter).await);
        }
    }
    eprintln!(
        "METRIC kill_during_deletions store={store} whole={} gone={}",
        outcomes.iter().filter(|whole| **whole).count(),
        outcomes.iter().filter(|whole| !**whole).count()
    );
}

#[cfg(feature = "services")]
mod services {
    use super::*;
    use std::time::Instant;
    use support::services::{PrivatePostgres, PrivateRedis};

    /// PostgreSQL stopped when a deletion is asked for: 503, the account whole and its code
    /// still good; back up, the same code deletes it. (The outage is met by the deletion's
    /// first read, before the code is checked; a failure after the code matched, which gives
    /// the code back, is the service test `an_outage_during_a_deletion_or_a_phone_change_...`.)
    #[tokio::test]
    async fn postgres_stopped_mid_deletion_leaves_the_account_whole() {
        let mut pg = tokio::task::spawn_blocking(PrivatePostgres::start)
            .await
            .unwrap();
        let redis = tokio::task::spawn_blocking(PrivateRedis::start)
            .await
            .unwrap();
        let mut env = base_env();
        env.push(("DATABASE_URL", pg.url()));
        env.push(("REDIS_URL", redis.url()));
        let server = Server::start(&env, &[]).await;
        let c = Client::new(&server.base);
        let inviter = c.login(&phone(9), "0000").await;
        let bob = c.login(&phone(2), "0000").await;
        let code =
            c.get("/get_profile/", Some(access(&inviter))).await.json()["own_invite_code"].clone();
        let applied = c
            .post_as(
                "/use_invite_code/",
                Some(access(&bob)),
                json!({ "invite_code": code }),
            )
            .await;
        assert_eq!(applied.status, 200);
        // The code is sent while the database answers; the deletion finds it gone.
        send(&c, &phone(2)).await;
        let mut pg = tokio::task::spawn_blocking(move || {
            pg.stop();
            pg
        })
        .await
        .unwrap();
        let res = c
            .post_as(
                "/api/account/delete/",
                Some(access(&bob)),
                json!({ "code": "0000" }),
            )
            .await;
        assert_error(&res, 503, "store_unavailable");
        let pg = tokio::task::spawn_blocking(move || {
            pg.start_again();
            pg
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.get("/get_profile/", Some(access(&bob))).await.status != 200 {
            assert!(Instant::now() < deadline, "the database did not come back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let listed = c.get("/get_profile/", Some(access(&inviter))).await.json();
        assert_eq!(listed["invited_users"], json!([phone(2)]), "bob is whole");
        // The same code, given back after the outage, deletes him now.
        let res = c
            .post_as(
                "/api/account/delete/",
                Some(access(&bob)),
                json!({ "code": "0000" }),
            )
            .await;
        assert_eq!(res.status, 204, "{}", String::from_utf8_lossy(&res.body));
        let listed = c.get("/get_profile/", Some(access(&inviter))).await.json();
        assert_eq!(listed["invited_users"], json!([]));
        drop(pg);
    }

    /// The kill test on PostgreSQL + Redis.
    #[tokio::test]
    async fn a_kill_during_deletions_on_postgres_leaves_each_account_whole_or_gone() {
        let database = refsys_test_support::postgres::fresh_database().await;
        let redis = refsys_test_support::redis::fresh_prefix().await;
        let mut env = base_env();
        env.push(("DATABASE_URL", database.url().to_owned()));
        env.push(("REDIS_URL", redis.url.clone()));
        env.push(("REDIS_PREFIX", redis.prefix.clone()));
        // Slower per deletion than SQLite: later kills, so that some deletions commit first.
        kill_during_deletions(&env, "postgres", Duration::from_millis(25)).await;
    }

    /// Two instances (axum, actix-web) on one PostgreSQL and Redis: the whole flow; a deleted
    /// account is refused by the other at once (its store has no account any more); an admin's
    /// revocation reaches the other's access-token check, through Redis, within a second.
    #[tokio::test]
    async fn two_instances_share_deletions_and_revocations() {
        let database = refsys_test_support::postgres::fresh_database().await;
        let redis = refsys_test_support::redis::fresh_prefix().await;
        let mut env = base_env();
        env.push(("DATABASE_URL", database.url().to_owned()));
        env.push(("REDIS_URL", redis.url.clone()));
        env.push(("REDIS_PREFIX", redis.prefix.clone()));
        flow(&env, "actix").await;

        let a = Server::start(&env, &["--framework", "axum"]).await;
        let b = Server::start(&env, &["--framework", "actix"]).await;
        let (ca, cb) = (Client::new(&a.base), Client::new(&b.base));
        let carol = ca.login(&phone(5), "0000").await;
        let dave = ca.login(&phone(6), "0000").await;
        assert_eq!(
            cb.get("/get_profile/", Some(access(&carol))).await.status,
            200
        );
        let deleted = delete_account(&ca, &phone(5), &carol).await;
        assert_eq!(deleted.status, 204);
        let started = Instant::now();
        while cb.get("/api/sessions/", Some(access(&carol))).await.status != 401 {
            assert!(started.elapsed() < Duration::from_secs(1), "still accepted");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The admin command shares its revocation through Redis too.
        let (code, shown) = admin(&env, &["sessions", "revoke", &phone(6)]).await;
        assert_eq!(code, Some(0), "{shown}");
        let started = Instant::now();
        loop {
            let res = cb.get("/get_profile/", Some(access(&dave))).await;
            if res.status == 401 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "dave's access still accepted after the admin's revocation"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        eprintln!(
            "METRIC admin_revocation_seen_by_other_instance_ms={}",
            started.elapsed().as_millis()
        );
    }
}
