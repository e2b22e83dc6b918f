//! Reliability of the real `refsys-server` binary on PostgreSQL and Redis: stores that stop
//! under load and come back, an SMS gateway that fails or hangs, and two server processes
//! sharing one PostgreSQL and one Redis. Runs with the `services` feature.
//!
//! The fault tests never touch the shared PostgreSQL/Redis: they start private ones
//! (`support::services`). Each test prints `METRIC` lines with what it measured
//! (`cargo test ... -- --nocapture`).
#![cfg(feature = "services")]

mod support;

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_suite::gateway::{Mode, Receiver, webhook_env};
use http_suite::{Client, Res, assert_error};
use refsys_test_support::postgres::fresh_database;
use refsys_test_support::redis::fresh_prefix;
use serde_json::{Value, json};
use support::Server;
use support::services::{PrivatePostgres, PrivateRedis, login_across};

const JWT_SECRET: &str = "resilience tests: a secret of at least 32 bytes";
const HOOK_SECRET: &str = "resilience webhook secret";
/// Every answer, even with a store down, must come back within this.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// A 503 for a PostgreSQL outage comes within the pool's 3 s acquire timeout (+ 1 s of slack
/// for a shared machine).
const PG_OUTAGE_BOUND: Duration = Duration::from_secs(4);
/// A 503 for a Redis outage comes within the Redis stores' 2 s response timeout (+ 1 s).
const REDIS_OUTAGE_BOUND: Duration = Duration::from_secs(3);
/// How long a restarted store may take to be used again by the same server process.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// Test phone `n` (fixed code 0000 when listed in `TEST_PHONES`).
fn test_phone(n: u32) -> String {
    format!("+375291{n:06}")
}

/// An ordinary phone `n` (codes go through the SMS sender).
fn phone(n: u32) -> String {
    format!("+375292{n:06}")
}

fn test_phones(range: std::ops::Range<u32>) -> String {
    range
        .map(|n| format!("{}:0000", test_phone(n)))
        .collect::<Vec<_>>()
        .join(",")
}

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// One request of a load run.
#[derive(Clone, Debug)]
struct Sample {
    what: &'static str,
    start: Instant,
    latency: Duration,
    /// 0: no HTTP answer (connection error or the 15 s client timeout).
    status: u16,
    code: String,
}

impl Sample {
    fn end(&self) -> Instant {
        self.start + self.latency
    }
}

/// Bounded background load: profile reads and test-phone logins, spread over servers.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// (phone, user id, when) of every successful login.
    logins: Arc<Mutex<Vec<(String, i64, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(bases: &[String], tokens: &[String], phones: &[String], workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|worker| {
                let (stop, samples, logins, http) =
                    (stop.clone(), samples.clone(), logins.clone(), http.clone());
                let (bases, tokens, phones) = (bases.to_vec(), tokens.to_vec(), phones.to_vec());
                tokio::spawn(async move {
                    // Bounded: at most 5 000 iterations per worker, and the test stops it.
                    for k in 0..5_000usize {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let base = &bases[(worker + k) % bases.len()];
                        if k % 2 == 0 {
                            let token = &tokens[(worker + k) % tokens.len()];
                            let req = http.get(format!("{base}/get_profile/")).bearer_auth(token);
                            let (sample, _) = timed("profile", req).await;
                            samples.lock().unwrap().push(sample);
                        } else {
                            // Each worker has phones of its own: no races between workers.
                            let own: Vec<&String> =
                                phones.iter().skip(worker).step_by(workers).collect();
                            let phone = own[(k / 2) % own.len()];
                            let req = http
                                .post(format!("{base}/login/send_code/"))
                                .header("content-type", "application/json")
                                .body(json!({ "phone": phone }).to_string());
                            let (sample, _) = timed("send_code", req).await;
                            let sent = sample.status == 200;
                            samples.lock().unwrap().push(sample);
                            if sent {
                                let req = http
                                    .post(format!("{base}/login/verify_code/"))
                                    .header("content-type", "application/json")
                                    .body(json!({ "phone": phone, "code": "0000" }).to_string());
                                let (sample, body) = timed("verify_code", req).await;
                                if sample.status == 200 {
                                    let id = body["user_id"].as_i64().unwrap();
                                    logins
                                        .lock()
                                        .unwrap()
                                        .push((phone.clone(), id, sample.end()));
                                }
                                samples.lock().unwrap().push(sample);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            logins,
            tasks,
        }
    }

    async fn finish(self) -> (Vec<Sample>, Vec<(String, i64, Instant)>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let samples = self.samples.lock().unwrap().clone();
        let logins = self.logins.lock().unwrap().clone();
        (samples, logins)
    }
}

async fn timed(what: &'static str, req: reqwest::RequestBuilder) -> (Sample, Value) {
    let start = Instant::now();
    let (status, body) = match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let bytes = res.bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, body)
        }
        Err(_) => (0, Value::Null),
    };
    let sample = Sample {
        what,
        start,
        latency: start.elapsed(),
        status,
        code: body["code"].as_str().unwrap_or_default().to_owned(),
    };
    (sample, body)
}

/// The outage is in the server's log once per store, not once per request: one ERROR when it
/// began for each store that went down (as many as `stores` allows), a WARN at most every
/// 10 s of `down_for` per store, and one INFO per store when it answered again. Calls in
/// flight as it began or ended do not make it flap.
fn assert_outage_logged_once(server: &Server, stores: RangeInclusive<usize>, down_for: Duration) {
    let log = server.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let (errors, warnings) = (count(" ERROR "), count("store still unavailable"));
    let back = count("store answers again");
    println!(
        "METRIC outage-log {}: {errors} ERROR lines, {warnings} 'still unavailable', {back} 'answers again'",
        server.base
    );
    assert!(stores.contains(&errors), "one ERROR per store:\n{log}");
    let bound = usize::try_from(down_for.as_secs() / 10 + 1).unwrap() * 2;
    assert!(warnings <= bound, "{warnings} warnings:\n{log}");
    assert!(back >= 1 && back <= errors, "one INFO per store:\n{log}");
}

/// Polls `GET path` until it answers `status`; returns the time it took and the answer.
async fn poll_until(
    client: &Client,
    path: &str,
    token: Option<&str>,
    status: u16,
) -> (Duration, Res) {
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let res = client.get(path, token).await;
        assert!(
            t.elapsed() <= ANSWER_BOUND,
            "{path} took {:?} to answer {}",
            t.elapsed(),
            res.status
        );
        if res.status == status {
            return (started.elapsed(), res);
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "{path} did not answer {status} within {RECOVERY_BOUND:?} (last: {})",
            res.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn latency_stats(samples: &[&Sample]) -> (usize, u128, u128) {
    let mut lat: Vec<u128> = samples.iter().map(|s| ms(s.latency)).collect();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or_default();
    (lat.len(), p50, lat.last().copied().unwrap_or_default())
}

/// Every answer came back, quickly, as 200 or the contract's 503.
fn assert_every_answer_in_bounds(samples: &[Sample]) {
    for s in samples {
        assert!(s.status != 0, "{} got no HTTP answer: {s:?}", s.what);
        assert!(s.latency <= ANSWER_BOUND, "{} hung: {s:?}", s.what);
        assert!(
            s.status == 200 || (s.status == 503 && s.code == "store_unavailable"),
            "unexpected answer {s:?}"
        );
    }
}

/// A user-plus-referrals data set: `inviter` and `invitees` who applied its code.
struct Committed {
    inviter_access: String,
    invitees: Vec<String>,
    tokens: Vec<String>,
}

async fn commit_referrals(client: &Client, inviter: &str, invitees: &[String]) -> Committed {
    let login = client.login(inviter, "0000").await;
    let access = login["access"].as_str().unwrap().to_owned();
    let code = client
        .get("/get_profile/", Some(&access))
        .await
        .str("own_invite_code");
    let mut tokens = vec![access.clone()];
    for invitee in invitees {
        let login = client.login(invitee, "0000").await;
        let token = login["access"].as_str().unwrap().to_owned();
        let res = client
            .post_as(
                "/use_invite_code/",
                Some(&token),
                json!({ "invite_code": code }),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.json());
        tokens.push(token);
    }
    Committed {
        inviter_access: access,
        invitees: invitees.to_vec(),
        tokens,
    }
}

async fn assert_referrals_intact(client: &Client, data: &Committed) {
    let profile = client
        .get("/get_profile/", Some(&data.inviter_access))
        .await;
    assert_eq!(profile.status, 200);
    assert_eq!(profile.json()["invited_users"], json!(data.invitees));
}

/// Logs every phone in `logins` in again: it must be the same user as before.
async fn assert_logins_kept(client: &Client, logins: &[(String, i64, Instant)], before: Instant) {
    let mut seen = std::collections::BTreeMap::new();
    for (phone, id, _) in logins.iter().filter(|(_, _, at)| *at < before) {
        seen.insert(phone.clone(), *id);
    }
    for (phone, id) in &seen {
        let login = client.login(phone, "0000").await;
        assert_eq!(
            login["user_id"].as_i64(),
            Some(*id),
            "{phone} kept its user"
        );
    }
}

fn process_alive(server: &Server) -> bool {
    std::path::Path::new(&format!("/proc/{}", server.pid())).exists()
}

/// PostgreSQL stops under load (axum and actix servers at once, one private cluster), comes
/// back, and the same server processes serve again; nothing committed before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_then_restarted() {
    let mut pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let url = pg.url();
    let phones = test_phones(1..40);
    let env = env(&[
        ("DATABASE_URL", &url),
        ("JWT_SECRET", JWT_SECRET),
        ("TEST_PHONES", &phones),
        ("OTP_RESEND_COOLDOWN", "0"),
        ("OTP_MAX_SENDS", "100000"),
        ("RATE_LIMIT_SEND_CODE", "0"),
        ("RATE_LIMIT_VERIFY_CODE", "0"),
        ("RATE_LIMIT_SEND_CODE_PER_PHONE", "0"),
        ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0"),
    ]);
    let axum = Server::start(&env, &[]).await;
    let actix = Server::start(&env, &["--framework", "actix"]).await;
    let servers = [&axum, &actix];
    let clients: Vec<Client> = servers.iter().map(|s| Client::new(&s.base)).collect();

    let invitees: Vec<String> = (2..7).map(test_phone).collect();
    let data = commit_referrals(&clients[0], &test_phone(1), &invitees).await;
    let load_phones: Vec<String> = (10..40).map(test_phone).collect();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let load = Load::start(&bases, &data.tokens, &load_phones, 8);
    // A code sent before the outage, for a login tried during it.
    let pending = test_phone(8);
    let sent = clients[0]
        .post("/login/send_code/", json!({ "phone": pending }))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    let verify = json!({ "phone": pending, "code": "0000" });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Stop PostgreSQL.
    let stop_began = Instant::now();
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    for client in &clients {
        let t = Instant::now();
        let res = client
            .get("/get_profile/", Some(&data.inviter_access))
            .await;
        let first = t.elapsed();
        assert_error(&res, 503, "store_unavailable");
        assert!(first <= PG_OUTAGE_BOUND, "{first:?}");
        let t = Instant::now();
        let ready = client.get("/ready", None).await;
        let ready_time = t.elapsed();
        let body = assert_error(&ready, 503, "not_ready");
        assert_eq!(body["store"], "user", "{body}");
        println!(
            "METRIC postgres-stop: first profile read after the stop: 503 in {} ms; /ready 503 (store=user) in {} ms",
            ms(first),
            ms(ready_time)
        );
        assert!(process_alive(servers[0]) && process_alive(servers[1]));
    }
    // A login during the outage fails with 503, twice, and does not spend its code.
    for _ in 0..2 {
        let res = clients[0].post("/login/verify_code/", verify.clone()).await;
        assert_error(&res, 503, "store_unavailable");
    }
    // The outage goes on under load for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Start it again: the same processes recover without a restart.
    let restart_began = Instant::now();
    let pg_down_for = restart_began - stopped;
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let started = Instant::now();
    for (server, client) in servers.iter().zip(&clients) {
        poll_until(client, "/get_profile/", Some(&data.inviter_access), 200).await;
        let recovered = started.elapsed();
        poll_until(client, "/ready", None, 200).await;
        println!(
            "METRIC postgres-restart: {} serves profiles {} ms after pg_ctl start returned, /ready 200 at {} ms; same pid {}",
            server.base,
            ms(recovered),
            ms(started.elapsed()),
            server.pid()
        );
    }
    let recovered_all = Instant::now();
    // The code tried during the outage logs in now, once.
    let login = clients[0].post("/login/verify_code/", verify.clone()).await;
    assert_eq!(login.status, 200, "{}", login.json());
    let again = clients[0].post("/login/verify_code/", verify).await;
    assert_error(&again, 400, "code_expired");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (samples, logins) = load.finish().await;

    // Every answer: within 5 s, 200 or 503 store_unavailable; no 500, no dropped connection.
    assert_every_answer_in_bounds(&samples);
    let before: Vec<&Sample> = samples.iter().filter(|s| s.end() < stop_began).collect();
    assert!(
        before.iter().all(|s| s.status == 200),
        "all good before the fault"
    );
    let outage: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= stopped && s.end() < restart_began)
        .collect();
    for s in &outage {
        // send_code needs no PostgreSQL here (in-process OTP store); the rest does.
        let expected = if s.what == "send_code" { 200 } else { 503 };
        assert_eq!(s.status, expected, "during the outage: {s:?}");
    }
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= recovered_all)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|s| s.status == 200),
        "all good after recovery: {:?}",
        after.iter().find(|s| s.status != 200)
    );
    let failed_outage: Vec<&Sample> = outage.iter().copied().filter(|s| s.status == 503).collect();
    let (n, p50, max) = latency_stats(&failed_outage);
    assert!(
        max <= ms(PG_OUTAGE_BOUND),
        "an outage 503 took {max} ms, over the acquire timeout"
    );
    let first_ok = samples
        .iter()
        .filter(|s| s.start >= started && s.status == 200 && s.what == "profile")
        .map(|s| s.end() - started)
        .min()
        .unwrap();
    println!(
        "METRIC postgres-load: {} requests in all ({} before, {} during the {} ms outage, {} after recovery); outage 503s: {n}, latency p50 {p50} ms, max {max} ms; first 200 profile under load {} ms after restart; max latency overall {} ms",
        samples.len(),
        before.len(),
        outage.len(),
        ms(pg_down_for),
        after.len(),
        ms(first_ok),
        samples
            .iter()
            .map(|s| ms(s.latency))
            .max()
            .unwrap_or_default()
    );

    // Nothing committed before the fault is lost.
    assert_referrals_intact(&clients[1], &data).await;
    assert_logins_kept(&clients[0], &logins, stop_began).await;
    assert!(process_alive(&axum) && process_alive(&actix));
    for server in [&axum, &actix] {
        // PostgreSQL holds the user store alone.
        assert_outage_logged_once(server, 1..=1, pg_down_for);
    }
    drop(pg);
}

/// Redis stops under load: what needs it (codes, cooldowns, limits) is 503 quickly, what does
/// not (profiles) keeps working; after a restart the same processes serve again. Codes that
/// were pending when Redis went away are gone (no persistence).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_under_load_then_restarted() {
    let database = fresh_database().await;
    let redis = tokio::task::spawn_blocking(PrivateRedis::start)
        .await
        .unwrap();
    let receiver = Receiver::start(Mode::Ok).await;
    let phones = test_phones(1..40);
    let redis_url = redis.url();
    let mut env = env(&[
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", &redis_url),
        ("REDIS_PREFIX", "resilience:"),
        ("JWT_SECRET", JWT_SECRET),
        ("TEST_PHONES", &phones),
        ("OTP_RESEND_COOLDOWN", "0"),
        ("OTP_MAX_SENDS", "100000"),
        ("RATE_LIMIT_SEND_CODE", "0"),
        ("RATE_LIMIT_VERIFY_CODE", "0"),
        ("RATE_LIMIT_SEND_CODE_PER_PHONE", "0"),
        ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0"),
    ]);
    env.extend(webhook_env(&receiver, HOOK_SECRET));
    let axum = Server::start(&env, &[]).await;
    let actix = Server::start(&env, &["--framework", "actix"]).await;
    let servers = [&axum, &actix];
    let clients: Vec<Client> = servers.iter().map(|s| Client::new(&s.base)).collect();
    // A third server with the per-IP limits on (the load would trip them on the other two):
    // its limits are counted in Redis too, and must refuse with 503 while Redis is away.
    let limited_env: Vec<(&'static str, String)> = env
        .iter()
        .filter(|(name, _)| !name.starts_with("RATE_LIMIT_"))
        .cloned()
        .collect();
    let limited = Server::start(&limited_env, &[]).await;
    let limited_client = Client::new(&limited.base);

    let invitees: Vec<String> = (2..5).map(test_phone).collect();
    let data = commit_referrals(&clients[1], &test_phone(1), &invitees).await;
    let refresh = clients[0].login(&test_phone(5), "0000").await["refresh"]
        .as_str()
        .unwrap()
        .to_owned();
    // A user of the limited server, about to apply the inviter's code.
    let joiner = limited_client.login(&test_phone(6), "0000").await["access"]
        .as_str()
        .unwrap()
        .to_owned();
    let inviter_code = clients[0]
        .get("/get_profile/", Some(&data.inviter_access))
        .await
        .str("own_invite_code");
    // A code pending for an ordinary phone when Redis goes away.
    let pending = phone(1);
    let sent = clients[0]
        .post("/login/send_code/", json!({ "phone": pending }))
        .await;
    assert_eq!(sent.status, 200);
    let pending_code = receiver.last_code(&pending);

    let load_phones: Vec<String> = (10..40).map(test_phone).collect();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let load = Load::start(&bases, &data.tokens, &load_phones, 8);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop_began = Instant::now();
    let mut redis = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.stop();
        redis
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    for client in &clients {
        let t = Instant::now();
        let res = client
            .post("/login/send_code/", json!({ "phone": phone(2) }))
            .await;
        let first = t.elapsed();
        assert_error(&res, 503, "store_unavailable");
        assert!(first <= REDIS_OUTAGE_BOUND, "{first:?}");
        let t = Instant::now();
        let ready = client.get("/ready", None).await;
        let ready_time = t.elapsed();
        let body = assert_error(&ready, 503, "not_ready");
        assert_eq!(body["store"], "otp", "{body}");
        let profile = client
            .get("/get_profile/", Some(&data.inviter_access))
            .await;
        assert_eq!(profile.status, 200, "profiles need no Redis");
        println!(
            "METRIC redis-stop: first send_code after the stop: 503 in {} ms; /ready 503 (store=otp) in {} ms",
            ms(first),
            ms(ready_time)
        );
    }
    // Limits counted in Redis refuse with 503 rather than letting calls through uncounted.
    for (path, body) in [
        ("/login/send_code/", json!({ "phone": phone(3) })),
        (
            "/login/verify_code/",
            json!({ "phone": phone(3), "code": "0000" }),
        ),
    ] {
        let res = limited_client.post(path, body).await;
        assert_error(&res, 503, "store_unavailable");
    }
    // use_invite_code needs Redis only for its per-user limit, which fails closed.
    let applied = limited_client
        .post_as(
            "/use_invite_code/",
            Some(&joiner),
            json!({ "invite_code": inviter_code }),
        )
        .await;
    assert_error(&applied, 503, "store_unavailable");
    // Tokens need no Redis: a refresh rotates during the outage.
    let rotated = clients[1]
        .post("/api/token/refresh/", json!({ "refresh": refresh }))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.json());
    tokio::time::sleep(Duration::from_secs(4)).await;

    let restart_began = Instant::now();
    let redis_down_for = restart_began - stopped;
    let redis = tokio::task::spawn_blocking(move || {
        redis.start_again();
        redis
    })
    .await
    .unwrap();
    let started = Instant::now();
    for (server, client) in servers.iter().zip(&clients) {
        let (ready, _) = poll_until(client, "/ready", None, 200).await;
        let t = Instant::now();
        loop {
            let res = client
                .post("/login/send_code/", json!({ "phone": test_phone(3) }))
                .await;
            if res.status == 200 {
                break;
            }
            assert!(t.elapsed() < RECOVERY_BOUND, "{}", res.json());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "METRIC redis-restart: {} /ready 200 {} ms after redis-server answered PING, send_code 200 {} ms after; same pid {}",
            server.base,
            ms(ready),
            ms(started.elapsed()),
            server.pid()
        );
    }
    let recovered_all = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (samples, logins) = load.finish().await;

    assert_every_answer_in_bounds(&samples);
    let before: Vec<&Sample> = samples.iter().filter(|s| s.end() < stop_began).collect();
    assert!(before.iter().all(|s| s.status == 200));
    let outage: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= stopped && s.end() < restart_began)
        .collect();
    for s in &outage {
        let expected = if s.what == "profile" { 200 } else { 503 };
        assert_eq!(s.status, expected, "during the outage: {s:?}");
    }
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= recovered_all)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|s| s.status == 200),
        "{:?}",
        after.iter().find(|s| s.status != 200)
    );
    let failed: Vec<&Sample> = outage.iter().copied().filter(|s| s.status == 503).collect();
    let (n, p50, max) = latency_stats(&failed);
    assert!(
        max <= ms(REDIS_OUTAGE_BOUND),
        "an outage 503 took {max} ms, over the Redis timeout"
    );
    println!(
        "METRIC redis-load: {} requests ({} during the {} ms outage: {} profile reads all 200, {n} OTP calls all 503 with latency p50 {p50} ms, max {max} ms); max latency overall {} ms",
        samples.len(),
        outage.len(),
        ms(redis_down_for),
        outage.len() - n,
        samples
            .iter()
            .map(|s| ms(s.latency))
            .max()
            .unwrap_or_default()
    );

    // The code pending at the stop is gone: the user asks for a new one.
    let verify = clients[0]
        .post(
            "/login/verify_code/",
            json!({ "phone": pending, "code": pending_code }),
        )
        .await;
    assert_error(&verify, 400, "code_expired");
    assert_referrals_intact(&clients[0], &data).await;
    assert_logins_kept(&clients[1], &logins, stop_began).await;
    assert!(process_alive(&axum) && process_alive(&actix));
    for server in [&axum, &actix] {
        // Redis holds the OTP and rate-limit stores.
        assert_outage_logged_once(server, 1..=2, redis_down_for);
    }
    drop(redis);
    database.drop_database().await;
}

/// The SMS gateway answers 500, then hangs past `SMS_WEBHOOK_TIMEOUT=1`: `502 sms_failed`
/// within the timeout, and the failed sends cost the user neither cooldown nor window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_or_slow_sms_gateway_on_axum() {
    failing_or_slow_sms_gateway(&[]).await;
}

/// The same on actix-web.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_or_slow_sms_gateway_on_actix() {
    failing_or_slow_sms_gateway(&["--framework", "actix"]).await;
}

/// The SMS-gateway scenario against a server started with `args`.
async fn failing_or_slow_sms_gateway(args: &[&str]) {
    let database = fresh_database().await;
    let redis = fresh_prefix().await;
    let receiver = Receiver::start(Mode::Fail).await;
    let mut env = env(&[
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", &redis.url),
        ("REDIS_PREFIX", &redis.prefix),
        ("JWT_SECRET", JWT_SECRET),
        ("SMS_WEBHOOK_TIMEOUT", "1"),
        ("RATE_LIMIT_SEND_CODE", "0"),
    ]);
    env.extend(webhook_env(&receiver, HOOK_SECRET));
    let server = Server::start(&env, args).await;
    let c = Client::new(&server.base);
    let user = phone(10);
    let send = || c.post("/login/send_code/", json!({ "phone": user }));

    // 500 from the gateway. The first request is as quick as the others: the server loads
    // the phone-number metadata at start (it took 1.6-6 s in the first request before).
    for _ in 0..3 {
        let t = Instant::now();
        let res = send().await;
        assert_error(&res, 502, "sms_failed");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        println!(
            "METRIC sms-500 {args:?}: 502 sms_failed in {} ms",
            ms(t.elapsed())
        );
    }
    // A gateway that hangs: the server gives up after the 1 s timeout.
    receiver.set_mode(Mode::Slow);
    let t = Instant::now();
    let res = send().await;
    let slow = t.elapsed();
    assert_error(&res, 502, "sms_failed");
    assert!(
        slow >= Duration::from_millis(900) && slow < Duration::from_millis(2_500),
        "{slow:?}"
    );
    println!(
        "METRIC sms-slow {args:?}: 502 sms_failed after {} ms (SMS_WEBHOOK_TIMEOUT=1)",
        ms(slow)
    );
    let late_code = receiver.last_code(&user);
    // The gateway comes back: the send goes through at once (no cooldown was used)...
    receiver.set_mode(Mode::Ok);
    let res = send().await;
    assert_eq!(res.status, 200, "{}", res.json());
    // ...and the cooldown does apply to a send that went through.
    assert_error(&send().await, 429, "resend_cooldown");

    // What the gateway got: 5 signed requests, `{"phone","message"}` with the code.
    let got = receiver.for_phone(&user);
    assert_eq!(got.len(), 5);
    for r in &got {
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(r.signed_with(HOOK_SECRET, 5), "bad signature: {r:?}");
        assert!(!r.signed_with("another secret of some length", 5));
        let body = r.json();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["message", "phone"]);
        assert_eq!(r.code().len(), 4, "{body}");
    }
    let code = receiver.last_code(&user);
    // The code the hung gateway delivered late is not the live one (the send was taken back).
    if late_code != code {
        let res = c
            .post(
                "/login/verify_code/",
                json!({ "phone": user, "code": late_code }),
            )
            .await;
        assert_error(&res, 400, "code_invalid");
    }
    let login = c
        .post(
            "/login/verify_code/",
            json!({ "phone": user, "code": code }),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.json());

    // The window: with OTP_MAX_SENDS=2 and no cooldown, 5 failed sends then 2 good ones fit.
    drop(server);
    let mut env2 = env.clone();
    env2.push(("OTP_MAX_SENDS", "2".into()));
    env2.push(("OTP_RESEND_COOLDOWN", "0".into()));
    let server = Server::start(&env2, args).await;
    let c = Client::new(&server.base);
    let other = phone(11);
    receiver.set_mode(Mode::Fail);
    for _ in 0..5 {
        let res = c.post("/login/send_code/", json!({ "phone": other })).await;
        assert_error(&res, 502, "sms_failed");
    }
    receiver.set_mode(Mode::Ok);
    for _ in 0..2 {
        let res = c.post("/login/send_code/", json!({ "phone": other })).await;
        assert_eq!(res.status, 200, "{}", res.json());
    }
    let res = c.post("/login/send_code/", json!({ "phone": other })).await;
    assert_error(&res, 429, "too_many_codes");
    assert_eq!(receiver.for_phone(&other).len(), 7);

    drop(server);
    redis.cleanup().await;
    database.drop_database().await;
}

/// Two server processes with the same settings on one PostgreSQL and one Redis.
struct Pair {
    a: Server,
    b: Server,
    receiver: Receiver,
    database: refsys_test_support::postgres::TestDatabase,
    redis: refsys_test_support::redis::TestRedis,
}

impl Pair {
    async fn start(extra: &[(&'static str, &str)]) -> Pair {
        let database = fresh_database().await;
        let redis = fresh_prefix().await;
        let receiver = Receiver::start(Mode::Ok).await;
        let phones = test_phones(1..20);
        let mut env = env(&[
            ("DATABASE_URL", database.url()),
            ("REDIS_URL", &redis.url),
            ("REDIS_PREFIX", &redis.prefix),
            ("JWT_SECRET", JWT_SECRET),
            ("TEST_PHONES", &phones),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ]);
        env.extend(webhook_env(&receiver, HOOK_SECRET));
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let a = Server::start(&env, &[]).await;
        let b = Server::start(&env, &["--framework", "actix"]).await;
        Pair {
            a,
            b,
            receiver,
            database,
            redis,
        }
    }

    async fn stop(self) {
        drop(self.a);
        drop(self.b);
        self.redis.cleanup().await;
        self.database.drop_database().await;
    }
}

/// A code sent via A verifies via B; a resend via B is inside A's cooldown; wrong codes
/// alternating A/B burn the code after `OTP_MAX_ATTEMPTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_codes_cooldowns_and_attempts_are_shared() {
    let pair = Pair::start(&[]).await;
    let (a, b) = (Client::new(&pair.a.base), Client::new(&pair.b.base));

    let user = phone(1);
    assert_eq!(
        a.post("/login/send_code/", json!({ "phone": user }))
            .await
            .status,
        200
    );
    let code = pair.receiver.last_code(&user);
    // Verified on B; spent there, so A no longer takes it.
    login_across(&a, &b, &user, &code).await;

    let cooled = phone(2);
    assert_eq!(
        a.post("/login/send_code/", json!({ "phone": cooled }))
            .await
            .status,
        200
    );
    let res = b
        .post("/login/send_code/", json!({ "phone": cooled }))
        .await;
    let body = assert_error(&res, 429, "resend_cooldown");
    assert!(
        (55..=60).contains(&body["retry_after"].as_u64().unwrap()),
        "{body}"
    );

    let target = phone(3);
    assert_eq!(
        a.post("/login/send_code/", json!({ "phone": target }))
            .await
            .status,
        200
    );
    let right = pair.receiver.last_code(&target);
    let wrong = format!("{:04}", (right.parse::<u32>().unwrap() + 1) % 10_000);
    for attempt in 1..=5u64 {
        let server = if attempt % 2 == 1 { &a } else { &b };
        let res = server
            .post(
                "/login/verify_code/",
                json!({ "phone": target, "code": wrong }),
            )
            .await;
        if attempt < 5 {
            let body = assert_error(&res, 400, "code_invalid");
            assert_eq!(body["attempts_left"], json!(5 - attempt), "{body}");
        } else {
            assert_error(&res, 429, "too_many_attempts");
        }
    }
    for server in [&a, &b] {
        let res = server
            .post(
                "/login/verify_code/",
                json!({ "phone": target, "code": right }),
            )
            .await;
        // Burned on one instance, burned on both, until a new code is sent.
        assert_error(&res, 429, "too_many_attempts");
    }
    pair.stop().await;
}

/// Per-client-IP limits count across both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_per_ip_limits_are_shared() {
    let pair = Pair::start(&[
        ("RATE_LIMIT_SEND_CODE", "10"),
        ("RATE_LIMIT_VERIFY_CODE", "30"),
        // This test is about the per-IP limits: the per-phone ones would stop the 30 checks
        // of one phone first.
        ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "0"),
    ])
    .await;
    // The limits count per real-clock minute: keep the bursts inside one.
    http_suite::away_from_a_window_edge(60).await;
    let servers = [Client::new(&pair.a.base), Client::new(&pair.b.base)];
    let ip = "198.51.100.7";
    for i in 0..10u32 {
        let res = servers[i as usize % 2]
            .post_from(ip, "/login/send_code/", json!({ "phone": phone(100 + i) }))
            .await;
        assert_eq!(res.status, 200, "{i}: {}", res.json());
    }
    for server in &servers {
        let res = server
            .post_from(ip, "/login/send_code/", json!({ "phone": phone(200) }))
            .await;
        assert_error(&res, 429, "rate_limited");
    }
    let res = servers[1]
        .post_from(
            "198.51.100.8",
            "/login/send_code/",
            json!({ "phone": phone(200) }),
        )
        .await;
    assert_eq!(res.status, 200, "another client is not limited");

    for i in 0..30u32 {
        let res = servers[i as usize % 2]
            .post_from(
                ip,
                "/login/verify_code/",
                json!({ "phone": phone(300), "code": "1234" }),
            )
            .await;
        assert_error(&res, 400, "code_expired");
    }
    for server in &servers {
        let res = server
            .post_from(
                ip,
                "/login/verify_code/",
                json!({ "phone": phone(300), "code": "1234" }),
            )
            .await;
        assert_error(&res, 429, "rate_limited");
    }
    pair.stop().await;
}

/// 500 concurrent `use_invite_code` calls for one user, spread over both servers and five
/// inviters' codes: exactly one lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_one_invite_code_under_500_concurrent_calls() {
    // The per-user limit off, so that every call reaches the store.
    let pair = Pair::start(&[("RATE_LIMIT_USE_INVITE_CODE", "0")]).await;
    let clients = [Client::new(&pair.a.base), Client::new(&pair.b.base)];
    let mut inviters = Vec::new();
    for n in 1..=5 {
        let login = clients[n % 2].login(&test_phone(n as u32), "0000").await;
        let access = login["access"].as_str().unwrap().to_owned();
        let code = clients[0]
            .get("/get_profile/", Some(&access))
            .await
            .str("own_invite_code");
        inviters.push((test_phone(n as u32), access, code));
    }
    let invitee = clients[1].login(&test_phone(10), "0000").await;
    let token = invitee["access"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let tasks: Vec<_> = (0..500usize)
        .map(|i| {
            let client = clients[i % 2].clone();
            let token = token.clone();
            let code = inviters[i % 5].2.clone();
            tokio::spawn(async move {
                client
                    .post_as(
                        "/use_invite_code/",
                        Some(&token),
                        json!({ "invite_code": code }),
                    )
                    .await
            })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::<(u16, String), usize>::new();
    let mut winner = None;
    for (i, task) in tasks.into_iter().enumerate() {
        let res = task.await.unwrap();
        let code = res.json()["code"].as_str().unwrap_or_default().to_owned();
        if res.status == 200 {
            winner = Some(inviters[i % 5].2.clone());
        } else {
            assert_eq!(res.header("content-type"), Some("application/json"));
        }
        *outcomes.entry((res.status, code)).or_default() += 1;
    }
    println!(
        "METRIC scale-out invite race: 500 calls in {} ms: {outcomes:?}",
        ms(started.elapsed())
    );
    assert_eq!(
        outcomes.get(&(200, String::new())),
        Some(&1),
        "{outcomes:?}"
    );
    for (status, code) in outcomes.keys() {
        assert!(
            *status == 200 || (*status == 409 && code == "invite_already_activated"),
            "{status} {code}"
        );
    }
    let winner = winner.unwrap();
    let profile = clients[0].get("/get_profile/", Some(&token)).await.json();
    assert_eq!(profile["activated_invite_code"], json!(winner));
    let mut listed = 0;
    for (_, access, code) in &inviters {
        let profile = clients[1].get("/get_profile/", Some(access)).await.json();
        let invited = profile["invited_users"].as_array().unwrap();
        if *code == winner {
            assert_eq!(invited, &vec![json!(test_phone(10))]);
            listed += 1;
        } else {
            assert!(invited.is_empty(), "{profile}");
        }
    }
    assert_eq!(listed, 1);
    pair.stop().await;
}
