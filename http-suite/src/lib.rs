//! The black-box HTTP test suite that `refsys-axum` and `refsys-actix` both run.
//!
//! Every scenario in [`mod@scenarios`] is an async function taking a [`Framework`]: it starts a
//! real server of that framework on `127.0.0.1:0` ([`TestServer::start`]) and talks to it over
//! HTTP with reqwest, asserting status, code, body shape and headers as `API.md` states them.
//! Each framework crate's `tests/http.rs` runs them all with [`scenarios!`]; the
//! `tests/parity.rs` of this crate runs one long [`transcript`] against both frameworks and
//! asserts identical answers.
//!
//! The server's service is built from memory stores, a fixed HS256 secret, a
//! [`ManualClock`] the scenarios move, test phones with fixed codes ([`TEST_PHONES`]), and a
//! [`RecordingSender`] so that flows with ordinary phones can read the codes "sent". Next to
//! the refsys routes sits a user handler, `GET /me`, guarded by the framework's `AuthUser`.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use refsys_core::ClientLimits;
use refsys_core::store::{RateDecision, RateLimitStore};
use refsys_core::testing::RecordingSender;
use refsys_core::{
    AllowedRegions, JwtKeys, ManualClock, MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore,
    Policy, ReferralService, Region, StoreError, Timestamp,
};
use reqwest::header::HeaderMap;
use serde_json::Value;

pub mod embedding;
pub mod gateway;
pub mod scenarios;
mod servers;
pub mod transcript;

/// The HS256 secret every test server signs with.
pub const SECRET: &str = "http-suite secret, at least thirty-two bytes long";

/// The secret a [`Framework::Binary`] signs its SMS webhook requests with.
const GATEWAY_SECRET: &str = "http-suite SMS gateway secret";

/// Test phones and their fixed codes (no SMS is sent for them).
pub const TEST_PHONES: [(&str, &str); 3] = [
    ("+375291000001", "1111"),
    ("+375291000002", "2222"),
    ("+375291000003", "3333"),
];

/// Where every server's clock starts: a fixed instant at the start of a rate-limit minute,
/// so that `retry_after` values are the same on every run and every framework.
pub const START: Timestamp = Timestamp::from_unix(1_800_000_000);

/// The web framework under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framework {
    /// `refsys-axum` (needs this crate's `axum` feature).
    Axum,
    /// `refsys-actix` (needs this crate's `actix` feature).
    Actix,
    /// A `refsys-server` binary, started as a separate process for each scenario, sending its
    /// codes to a fake SMS gateway ([`gateway::Receiver`]): only the scenarios of
    /// [`binary_scenarios!`] run against it (the others move the service's clock, switch its
    /// stores off or change its settings, which a separate process does not expose).
    Binary(Binary),
}

/// How to start a `refsys-server` binary for [`Framework::Binary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binary {
    /// The executable, e.g. `env!("CARGO_BIN_EXE_refsys-server")`.
    pub path: &'static str,
    /// `axum` or `actix` (`--framework`).
    pub framework: &'static str,
    /// Store users in a fresh PostgreSQL database (`DATABASE_URL` names the server, default
    /// `postgres://postgres@127.0.0.1:5432/test`) and codes in Redis (`REDIS_URL`, default
    /// `redis://127.0.0.1:6379`, under a fresh key prefix) instead of the embedded default.
    pub postgres_redis: bool,
}

/// How to build the server's service.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// The per-client limits (default: the library defaults).
    pub limits: ClientLimits,
    /// SMS per hour for the whole deployment (default `None`: the policy's default budget).
    pub sms_budget: Option<u32>,
    /// The share of it one destination prefix may use, in percent (default `None`: the
    /// policy's default).
    pub sms_prefix_share: Option<u8>,
    /// Ask for a proof of work (8 bits) once this share of a budget is used (default `None`:
    /// no human check). Also passed to a [`Framework::Binary`], as `HUMAN_CHECK_AT`.
    pub human_check_at: Option<u8>,
    /// How invitees' phones are shown (default: in full). Passed to a [`Framework::Binary`]
    /// as `INVITEE_PHONES`.
    pub invitee_phones: refsys_core::InviteePhones,
    /// How many invitees the profile lists (default `None`: the policy's default, 100).
    /// Passed to a [`Framework::Binary`] as `PROFILE_INVITEES_LIMIT`.
    pub profile_invitees_limit: Option<usize>,
}

/// The proof-of-work difficulty of [`Setup::human_check_at`].
pub const POW_DIFFICULTY: u8 = 8;

/// A [`RateLimitStore`] over the memory store that can be switched off, to test `/ready` and
/// store failures.
/// Clones share one store.
#[derive(Clone, Debug, Default)]
pub struct SwitchableRateStore(Arc<Switchable>);

#[derive(Debug, Default)]
struct Switchable {
    inner: MemoryRateLimitStore,
    down: AtomicBool,
}

impl SwitchableRateStore {
    /// Makes the store fail (`true`) or work (`false`).
    pub fn set_down(&self, down: bool) {
        self.0.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("switched off by the test"));
        }
        Ok(())
    }
}

#[async_trait]
impl RateLimitStore for SwitchableRateStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        self.check()?;
        self.0.inner.hit(key, limit, window, now).await
    }

    async fn hit_sliding(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        self.check()?;
        self.0.inner.hit_sliding(key, limit, window, now).await
    }

    async fn take_back(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.0.inner.take_back(key, window, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }
}

/// A running server and the handles the scenarios steer it with.
pub struct TestServer {
    /// Which framework serves.
    pub framework: Framework,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The service behind the server.
    pub service: ReferralService,
    /// Every SMS "sent".
    pub sms: Arc<RecordingSender>,
    /// The service's clock.
    pub clock: Arc<ManualClock>,
    /// The client rate-limit store.
    pub rate_store: SwitchableRateStore,
    /// A client for `base`.
    pub client: Client,
    /// The fake SMS gateway a [`Framework::Binary`] sends its codes to.
    gateway: Option<gateway::Receiver>,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("framework", &self.framework)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl TestServer {
    /// Starts `framework` on `127.0.0.1:0` with the default [`Setup`].
    pub async fn start(framework: Framework) -> TestServer {
        TestServer::start_with(framework, Setup::default()).await
    }

    /// Starts `framework` on `127.0.0.1:0`.
    pub async fn start_with(framework: Framework, setup: Setup) -> TestServer {
        let sms = Arc::new(RecordingSender::new());
        let clock = Arc::new(ManualClock::new(START));
        let rate_store = SwitchableRateStore::default();
        let mut policy = Policy::builder().regions(AllowedRegions::only([Region::BY, Region::US]));
        for (phone, code) in TEST_PHONES {
            policy = policy.test_phone(phone, code);
        }
        if let Some(max) = setup.sms_budget {
            policy = policy.sms_budget(Some(refsys_core::RateLimit::per_hour(max)));
        }
        if let Some(share) = setup.sms_prefix_share {
            policy = policy.sms_prefix_share(share);
        }
        if let Some(at) = setup.human_check_at {
            policy = policy.human_check_at(at);
        }
        policy = policy.invitee_phones(setup.invitee_phones);
        if let Some(limit) = setup.profile_invitees_limit {
            policy = policy.profile_invitees_limit(limit);
        }
        let keys = JwtKeys::hs256(SECRET).expect("the secret is long enough");
        let mut builder = ReferralService::builder(
            MemoryUserStore::new(),
            MemoryOtpStore::new(),
            Arc::clone(&sms),
            keys.clone(),
        )
        .policy(policy.build().expect("a valid policy"))
        .clock(Arc::clone(&clock))
        .client_limits(rate_store.clone(), setup.limits);
        if setup.human_check_at.is_some() {
            builder = builder
                .human_check(refsys_core::ProofOfWork::new(&keys).difficulty(POW_DIFFICULTY));
        }
        let service = builder.build();
        let mut gateway = None;
        let (addr, stop) = match framework {
            Framework::Binary(binary) => {
                let receiver = gateway::Receiver::start(gateway::Mode::Ok).await;
                let mut sms_env = gateway::webhook_env(&receiver, GATEWAY_SECRET);
                if let Some(at) = setup.human_check_at {
                    sms_env.push(("HUMAN_CHECK_AT", at.to_string()));
                    sms_env.push(("HUMAN_CHECK_POW_DIFFICULTY", POW_DIFFICULTY.to_string()));
                }
                if setup.invitee_phones == refsys_core::InviteePhones::Masked {
                    sms_env.push(("INVITEE_PHONES", "masked".to_owned()));
                }
                if let Some(limit) = setup.profile_invitees_limit {
                    sms_env.push(("PROFILE_INVITEES_LIMIT", limit.to_string()));
                }
                gateway = Some(receiver);
                servers::start_binary(binary, sms_env).await
            }
            _ => servers::start(framework, service.clone()).await,
        };
        let base = format!("http://{addr}");
        TestServer {
            framework,
            client: Client::new(&base),
            gateway,
            base,
            service,
            sms,
            clock,
            rate_store,
            stop: Some(stop),
        }
    }

    /// Moves the service's clock forward.
    pub fn advance(&self, duration: Duration) {
        self.in_process("advance the clock");
        self.clock.advance(duration);
    }

    fn in_process(&self, what: &str) {
        assert!(
            !matches!(self.framework, Framework::Binary(_)),
            "a scenario that needs to {what} cannot run against a separate process"
        );
    }

    /// The last code sent by SMS to `phone`: what the recording sender got, or for a
    /// [`Framework::Binary`], what its webhook delivered to the fake gateway (each delivery
    /// checked for the documented signature).
    pub fn last_code(&self, phone: &str) -> String {
        let phone = self.service.parse_phone(phone).expect("a valid phone");
        match &self.gateway {
            Some(gateway) => {
                let received = gateway.for_phone(phone.as_str());
                let last = received.last().expect("a code was sent");
                assert!(
                    last.signed_with(GATEWAY_SECRET, 5),
                    "the SMS webhook request is signed: {last:?}"
                );
                last.code()
            }
            None => self.sms.last_code(&phone).expect("a code was sent"),
        }
    }

    /// Makes every SMS send fail from now on (`true`), or succeed (`false`): the recording
    /// sender fails, or the fake gateway of a [`Framework::Binary`] answers 500.
    pub fn fail_sms(&self, fail: bool) {
        match &self.gateway {
            Some(gateway) => gateway.set_mode(if fail {
                gateway::Mode::Fail
            } else {
                gateway::Mode::Ok
            }),
            None => self.sms.fail(fail),
        }
    }
}

/// A small HTTP client bound to one server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Res {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Res {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Field `key` of the JSON body as a string.
    pub fn str(&self, key: &str) -> String {
        self.json()[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{key}` in {}", self.json()))
            .to_owned()
    }
}

impl Client {
    /// A client for `base` that follows no redirects.
    pub fn new(base: &str) -> Client {
        Client::with(base, reqwest::Client::builder())
    }

    /// A client whose connections come from local address `source` (any of 127.0.0.0/8 on
    /// loopback), so that the server sees that client address without trusting a proxy.
    pub fn bound(base: &str, source: std::net::IpAddr) -> Client {
        Client::with(base, reqwest::Client::builder().local_address(source))
    }

    fn with(base: &str, builder: reqwest::ClientBuilder) -> Client {
        Client {
            http: builder
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a reqwest client"),
            base: base.to_owned(),
        }
    }

    /// Any request: `headers` as given, `body` raw.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Res {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("a body").to_vec();
        Res {
            status,
            headers,
            body,
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Res {
        self.post_as(path, None, body).await
    }

    /// `POST path` with a JSON body and, if given, a bearer token.
    pub async fn post_as(&self, path: &str, bearer: Option<&str>, body: Value) -> Res {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let body = serde_json::to_vec(&body).expect("JSON");
        self.request("POST", path, &headers, Some(body)).await
    }

    /// `POST path` with a JSON body, as if from client address `ip` behind a trusted proxy
    /// (`X-Forwarded-For: ip`).
    pub async fn post_from(&self, ip: &str, path: &str, body: Value) -> Res {
        let headers = [
            ("content-type", "application/json"),
            ("x-forwarded-for", ip),
        ];
        let body = serde_json::to_vec(&body).expect("JSON");
        self.request("POST", path, &headers, Some(body)).await
    }

    /// `GET path`, with a bearer token if given.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Res {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", &a[..])).collect();
        self.request("GET", path, &headers, None).await
    }

    /// `send_code` then `verify_code` for a test phone; returns the login body.
    pub async fn login(&self, phone: &str, code: &str) -> Value {
        let sent = self
            .post("/login/send_code/", serde_json::json!({ "phone": phone }))
            .await;
        assert_eq!(sent.status, 200, "send_code: {}", sent.json());
        let login = self
            .post(
                "/login/verify_code/",
                serde_json::json!({ "phone": phone, "code": code }),
            )
            .await;
        assert_eq!(login.status, 200, "verify_code: {}", login.json());
        login.json()
    }
}

/// The `human_check` answer to a proof-of-work `challenge` of a `428 human_check_required`
/// body: `{"kind": "pow", "challenge", "solution"}`, solved at the challenge's difficulty.
pub fn pow_answer(challenge: &Value) -> Value {
    assert_eq!(challenge["kind"], "pow", "{challenge}");
    let text = challenge["challenge"].as_str().expect("the string to hash");
    let difficulty = challenge["difficulty"]
        .as_u64()
        .and_then(|d| u8::try_from(d).ok())
        .expect("a difficulty");
    let solution = refsys_core::human::solve_pow(text, difficulty);
    serde_json::json!({ "kind": "pow", "challenge": text, "solution": solution })
}

/// Asserts that `res` is the contract's error `code` with `status`: JSON content type, a body
/// of exactly `error` (a sentence) and `code` (plus `attempts_left` for `code_invalid`,
/// `retry_after` for 429s and `sms_budget_exhausted`, `store` for `not_ready`, `challenge` for `human_check_required`),
/// `WWW-Authenticate: Bearer` on 401 and a `Retry-After` equal to the body's `retry_after`
/// with it. Returns the body.
#[track_caller]
pub fn assert_error(res: &Res, status: u16, code: &str) -> Value {
    let body = res.json();
    assert_eq!(
        (res.status, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert_eq!(
        res.header("content-type"),
        Some("application/json"),
        "{body}"
    );
    let object = body.as_object().expect("an object");
    let sentence = object["error"].as_str().expect("`error` is a string");
    assert!(
        sentence.len() > 3 && sentence.ends_with('.'),
        "not a sentence: {sentence:?}"
    );
    let mut expected = vec!["code", "error"];
    if code == "code_invalid" {
        expected.push("attempts_left");
    }
    if code == "human_check_required" {
        expected.push("challenge");
        assert!(body["challenge"]["kind"].is_string(), "{body}");
    }
    if status == 429 || code == "sms_budget_exhausted" {
        expected.push("retry_after");
        let seconds = body["retry_after"].as_u64().expect("retry_after");
        assert!(seconds >= 1, "{body}");
        assert_eq!(
            res.header("retry-after"),
            Some(seconds.to_string().as_str())
        );
    } else {
        assert_eq!(res.header("retry-after"), None, "{body}");
    }
    if code == "not_ready" {
        expected.push("store");
    }
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{body}");
    if status == 401 {
        assert_eq!(res.header("www-authenticate"), Some("Bearer"), "{body}");
    } else {
        assert_eq!(res.header("www-authenticate"), None, "{body}");
    }
    body
}

/// Generates one `#[tokio::test]` per scenario of [`mod@scenarios`] for a framework:
/// `http_suite::scenarios!(http_suite::Framework::Axum);`
#[macro_export]
macro_rules! scenarios {
    ($framework:expr) => {
        $crate::scenarios!(@each $framework;
            happy_path,
            send_code_succeeds_and_normalises_the_phone,
            send_code_rejects_malformed_bodies,
            send_code_rejects_invalid_phones,
            send_code_resend_cooldown,
            send_code_too_many_codes,
            send_code_sms_failed,
            verify_code_rejects_malformed_bodies,
            verify_code_code_expired,
            verify_code_code_invalid_then_too_many_attempts,
            profile_unauthorized_cases,
            use_invite_code_errors,
            use_invite_code_is_trimmed_and_case_insensitive,
            refresh_rotation_and_reuse_detection,
            concurrent_refreshes_of_one_token_all_succeed,
            refresh_errors,
            logout_revokes_the_family,
            trailing_slashes,
            payload_too_large,
            slow_body_times_out,
            unsupported_media_type,
            every_answer_carries_the_security_headers,
            cors_is_off_by_default,
            cors_for_allowed_origins_only,
            not_found,
            method_not_allowed,
            health_and_ready,
            ready_names_a_store_that_is_down,
            store_down,
            schema,
            no_swagger_ui_in_the_framework_crates,
            rate_limit_send_code,
            rate_limit_verify_code,
            trusted_proxy_forwarded_for,
            auth_user_guards_user_handlers,
            phone_locked_after_wrong_codes_across_resends,
            one_network_cannot_lock_out_a_phone,
            send_code_sms_budget_exhausted,
            send_code_sms_budget_per_prefix,
            send_code_human_check,
            use_invite_code_rate_limited_per_user,
            answers_do_not_reveal_registration,
            sessions_are_listed_and_ended,
            session_routes_refuse_bad_requests,
            account_is_exported_and_deleted,
            phone_is_changed,
            account_routes_refuse_bad_requests,
            invitee_phones_can_be_masked,
            invitees_are_paged,
            invitee_routes_refuse_bad_requests
        );
    };
    (@each $framework:expr; $($name:ident),* $(,)?) => {
        $crate::__scenario_tests!($framework; $($name),*);
    };
}

/// Generates one `#[tokio::test]` per scenario that needs nothing but HTTP and the SMS
/// gateway, for a [`Framework::Binary`]: `http_suite::binary_scenarios!(Framework::Binary(...));`
#[macro_export]
macro_rules! binary_scenarios {
    ($framework:expr) => {
        $crate::__scenario_tests!($framework;
            send_code_succeeds_and_normalises_the_phone,
            send_code_rejects_malformed_bodies,
            send_code_rejects_invalid_phones,
            send_code_sms_failed,
            verify_code_rejects_malformed_bodies,
            verify_code_code_invalid_then_too_many_attempts,
            use_invite_code_errors,
            use_invite_code_is_trimmed_and_case_insensitive,
            concurrent_refreshes_of_one_token_all_succeed,
            logout_revokes_the_family,
            trailing_slashes,
            payload_too_large,
            unsupported_media_type,
            every_answer_carries_the_security_headers,
            cors_is_off_by_default,
            not_found,
            method_not_allowed,
            health_and_ready,
            schema,
            swagger_ui,
            rate_limit_verify_code,
            send_code_human_check,
            use_invite_code_rate_limited_per_user,
            session_routes_refuse_bad_requests,
            account_routes_refuse_bad_requests,
            invitee_phones_can_be_masked,
            invitees_are_paged,
            invitee_routes_refuse_bad_requests
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_tests {
    ($framework:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::scenarios::$name($framework).await;
            }
        )*
    };
}

/// Waits, if need be, until at least 10 seconds of the current fixed window of `window`
/// seconds (on the real clock, as the binary counts) are left, so that a burst of calls counted
/// in it does not straddle two windows.
pub async fn away_from_a_window_edge(window: u64) {
    away_from_a_window_edge_by(window, 10).await;
}

/// [`away_from_a_window_edge`] with `margin` seconds instead of 10, for a longer burst.
pub async fn away_from_a_window_edge_by(window: u64, margin: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    let left = window - now.as_secs() % window;
    if left < margin.min(window) {
        tokio::time::sleep(Duration::from_secs(left) + Duration::from_millis(100)).await;
    }
}
