//! Cloudflare Turnstile and hCaptcha as the human check, against a local `siteverify` server
//! that checks each request as the providers document it (we cannot reach the real ones from
//! CI): `POST`, `application/x-www-form-urlencoded`, `secret`, `response`, `remoteip`, and for
//! hCaptcha `sitekey`; answered `{"success": ..., "error-codes": [...]}`.
//!
//! - <https://developers.cloudflare.com/turnstile/get-started/server-side-validation/>
//! - <https://docs.hcaptcha.com/#verify-the-user-response-server-side>

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use http_suite::{Client, assert_error};
use refsys_core::captcha::SiteVerify;
use refsys_core::human::{HumanCheck, HumanCheckAnswer, HumanCheckError};
use refsys_core::{Challenge, Phone, Timestamp};
use serde_json::{Value, json};
use support::Server;

const SECRET: &str = "0x4AAAAAAAtest-secret";
const SITE_KEY: &str = "0x4AAAAAAAtest-site-key";

/// A `siteverify` stand-in: accepts tokens starting with `good` once each, and records every
/// request's form.
#[derive(Clone, Default)]
struct Provider {
    requests: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    spent: Arc<Mutex<HashSet<String>>>,
    /// Answer 500 to everything.
    down: Arc<Mutex<bool>>,
}

async fn siteverify(
    State(provider): State<Provider>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if *provider.down.lock().unwrap() {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    // The documented request: a form post.
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded")
    );
    provider.requests.lock().unwrap().push(form.clone());
    if form.get("secret").map(String::as_str) != Some(SECRET) {
        return (
            StatusCode::OK,
            Json(json!({"success": false, "error-codes": ["invalid-input-secret"]})),
        );
    }
    let token = form.get("response").cloned().unwrap_or_default();
    let fresh = provider.spent.lock().unwrap().insert(token.clone());
    let answer = if !token.starts_with("good") {
        json!({"success": false, "error-codes": ["invalid-input-response"]})
    } else if !fresh {
        json!({"success": false, "error-codes": ["timeout-or-duplicate"]})
    } else {
        json!({"success": true, "challenge_ts": "2026-12-02T00:00:00Z", "hostname": "localhost", "error-codes": []})
    };
    (StatusCode::OK, Json(answer))
}

async fn start_provider() -> (Provider, SocketAddr) {
    let provider = Provider::default();
    let app = Router::new()
        .route("/siteverify", post(siteverify))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (provider, addr)
}

fn phone() -> Phone {
    Phone::from_trusted_e164("+375291234567").unwrap()
}

fn answer(kind: &str, token: &str) -> HumanCheckAnswer {
    serde_json::from_value(json!({"kind": kind, "token": token})).unwrap()
}

#[tokio::test]
async fn site_verify_asks_the_provider_as_documented() {
    let (provider, addr) = start_provider().await;
    let url = format!("http://{addr}/siteverify");
    let now = Timestamp::from_unix(1_800_000_000);
    let client = Some("203.0.113.9".parse().unwrap());
    for (kind, check) in [
        ("turnstile", SiteVerify::turnstile(SITE_KEY, SECRET)),
        ("hcaptcha", SiteVerify::hcaptcha(SITE_KEY, SECRET)),
    ] {
        let check = check.verify_url(&url);
        let challenge = serde_json::to_value(check.challenge(&phone(), now)).unwrap();
        assert_eq!(challenge, json!({"kind": kind, "site_key": SITE_KEY}));
        let token = format!("good-{kind}");
        let passed = check
            .verify(&answer(kind, &token), &phone(), client, now)
            .await;
        assert_eq!(passed.unwrap().single_use, None);
        let form = provider.requests.lock().unwrap().last().cloned().unwrap();
        let mut expected = BTreeMap::from([
            ("secret".to_owned(), SECRET.to_owned()),
            ("response".to_owned(), token.clone()),
            ("remoteip".to_owned(), "203.0.113.9".to_owned()),
        ]);
        if kind == "hcaptcha" {
            expected.insert("sitekey".into(), SITE_KEY.into());
        }
        assert_eq!(form, expected);
        // The provider refuses a token twice, and a wrong one: the client's failure.
        for refused in [token.as_str(), "forged"] {
            let result = check
                .verify(&answer(kind, refused), &phone(), client, now)
                .await;
            assert!(
                matches!(result, Err(HumanCheckError::Failed(_))),
                "{result:?}"
            );
        }
        // Another kind's answer is not even sent.
        let before = provider.requests.lock().unwrap().len();
        let other = if kind == "turnstile" {
            "hcaptcha"
        } else {
            "turnstile"
        };
        let result = check
            .verify(&answer(other, "good-x"), &phone(), client, now)
            .await;
        assert!(matches!(result, Err(HumanCheckError::Failed(_))));
        let result = check.verify(&answer(kind, ""), &phone(), client, now).await;
        assert!(matches!(result, Err(HumanCheckError::Failed(_))));
        assert_eq!(provider.requests.lock().unwrap().len(), before);
    }
    // Our secret refused, the provider down, or not there at all: unavailable, not the
    // client's fault.
    let wrong_secret = SiteVerify::turnstile(SITE_KEY, "not-ours").verify_url(&url);
    let result = wrong_secret
        .verify(&answer("turnstile", "good-1"), &phone(), None, now)
        .await;
    assert!(
        matches!(result, Err(HumanCheckError::Unavailable(_))),
        "{result:?}"
    );
    let form = provider.requests.lock().unwrap().last().cloned().unwrap();
    assert!(
        !form.contains_key("remoteip"),
        "no client address, no remoteip"
    );
    *provider.down.lock().unwrap() = true;
    let check = SiteVerify::turnstile(SITE_KEY, SECRET).verify_url(&url);
    let result = check
        .verify(&answer("turnstile", "good-2"), &phone(), None, now)
        .await;
    assert!(
        matches!(result, Err(HumanCheckError::Unavailable(_))),
        "{result:?}"
    );
    let nobody = SiteVerify::turnstile(SITE_KEY, SECRET).verify_url(format!(
        "http://127.0.0.1:{}/siteverify",
        support::free_port()
    ));
    let result = nobody
        .verify(&answer("turnstile", "good-3"), &phone(), None, now)
        .await;
    assert!(
        matches!(result, Err(HumanCheckError::Unavailable(_))),
        "{result:?}"
    );
    assert!(matches!(
        check.challenge(&phone(), now),
        Challenge::Turnstile { .. }
    ));
}

/// The binary with `HUMAN_CHECK=turnstile` (asked always: `HUMAN_CHECK_AT=0`), on both
/// frameworks: 428 names the site key, a good token sends the code, a used or forged one is
/// `400 human_check_failed`, and a provider that is down is `502 human_check_unavailable`.
#[tokio::test]
async fn the_binary_checks_turnstile_tokens_on_axum() {
    the_binary_checks_turnstile_tokens(&[]).await;
}

/// The same on actix-web.
#[tokio::test]
async fn the_binary_checks_turnstile_tokens_on_actix() {
    the_binary_checks_turnstile_tokens(&["--framework", "actix"]).await;
}

async fn the_binary_checks_turnstile_tokens(args: &[&str]) {
    let (provider, addr) = start_provider().await;
    let env = [
        ("HUMAN_CHECK", "turnstile".to_owned()),
        ("HUMAN_CHECK_AT", "0".to_owned()),
        ("TURNSTILE_SITE_KEY", SITE_KEY.to_owned()),
        ("TURNSTILE_SECRET_KEY", SECRET.to_owned()),
        (
            "HUMAN_CHECK_VERIFY_URL",
            format!("http://{addr}/siteverify"),
        ),
    ];
    let server = Server::start(&env, args).await;
    let c = Client::new(&server.base);
    let send = "/login/send_code/";
    let me = "+375291234567";
    let res = c.post(send, json!({ "phone": me })).await;
    let body = assert_error(&res, 428, "human_check_required");
    assert_eq!(
        body["challenge"],
        json!({"kind": "turnstile", "site_key": SITE_KEY})
    );
    let with = |token: &str| json!({ "phone": me, "human_check": { "kind": "turnstile", "token": token } });
    let res = c.post(send, with("good-binary")).await;
    assert_eq!(res.status, 200, "{}", res.json());
    let form = provider.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(form["response"], "good-binary");
    assert_eq!(
        form["remoteip"], "127.0.0.1",
        "the client address the server saw"
    );
    for refused in ["good-binary", "forged"] {
        let res = c.post(send, with(refused)).await;
        assert_error(&res, 400, "human_check_failed");
    }
    *provider.down.lock().unwrap() = true;
    let res = c.post(send, with("good-later")).await;
    assert_error(&res, 502, "human_check_unavailable");
    let log = server.log();
    assert!(!log.contains(SECRET), "the secret is never logged");
    assert!(
        !log.contains(" ERROR "),
        "no ERROR for a client's failed check:\n{log}"
    );
}
