//! Events out of the binary as Standard Webhooks, to a receiver in the test that checks every
//! request as the specification says (headers, the signature, the envelope): a flow's events
//! in order, a receiver that is down and then up, `kill -9` mid-delivery, two instances on
//! one PostgreSQL, PostgreSQL stopped mid-flow.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http_suite::Client;
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Server, free_port};

/// The Standard Webhooks test-vector secret.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn phone(n: u32) -> String {
    format!("+3752910000{n:02}")
}

/// The receiver's answer to the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// 204 after the receiver's delay.
    Accept = 0,
    /// Never answers (until the connection goes).
    Hang = 1,
}

/// What the receiver saw.
#[derive(Default)]
struct Log {
    /// Accepted deliveries in arrival order: (webhook-id, the envelope).
    delivered: Vec<(String, Value)>,
    /// Requests that failed a check, and why.
    bad: Vec<String>,
    /// Requests being answered now, per event id.
    in_flight: HashMap<String, usize>,
    /// Event ids that arrived while another delivery of the same id was in flight.
    overlapping: Vec<String>,
    /// Requests that were held without an answer.
    held: usize,
}

/// A webhook receiver on 127.0.0.1; down until [`Receiver::listen`].
#[derive(Clone)]
struct Receiver {
    log: Arc<Mutex<Log>>,
    mode: Arc<AtomicU8>,
    delay: Duration,
    port: u16,
}

impl Receiver {
    fn new(delay: Duration) -> Receiver {
        Receiver {
            log: Arc::default(),
            mode: Arc::new(AtomicU8::new(Mode::Accept as u8)),
            delay,
            port: free_port(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/refsys", self.port)
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Starts answering on its port.
    async fn listen(&self) {
        let app = Router::new()
            .route("/hooks/refsys", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the receiver's port");
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    /// Distinct event ids delivered so far.
    fn distinct(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.delivered
            .iter()
            .map(|(id, _)| id)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Waits until `n` distinct events have arrived (at most `within`), then a little longer
    /// for any that should not come, and returns the first delivery of each, in order.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while self.distinct() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} events arrived in {within:?}: {:?}",
                self.distinct(),
                self.firsts()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The dispatcher polls every second: anything extra would show by now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let log = self.log.lock().unwrap();
        assert!(
            log.bad.is_empty(),
            "requests that failed a check: {:?}",
            log.bad
        );
        drop(log);
        self.firsts()
    }

    /// The first delivery of each event id, in arrival order.
    fn firsts(&self) -> Vec<Value> {
        let log = self.log.lock().unwrap();
        let mut seen = HashSet::new();
        log.delivered
            .iter()
            .filter(|(id, _)| seen.insert(id.clone()))
            .map(|(_, event)| event.clone())
            .collect()
    }
}

/// Counts a request in flight for its id while alive.
struct InFlight {
    log: Arc<Mutex<Log>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut log = self.log.lock().unwrap();
        if let Some(n) = log.in_flight.get_mut(&self.id) {
            *n -= 1;
        }
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let event = match check(&headers, &body) {
        Ok(event) => event,
        Err(why) => {
            receiver.log.lock().unwrap().bad.push(why);
            return StatusCode::BAD_REQUEST;
        }
    };
    let id = event["id"].as_str().unwrap().to_owned();
    let _in_flight = {
        let mut log = receiver.log.lock().unwrap();
        let n = log.in_flight.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            log.overlapping.push(id.clone());
        }
        InFlight {
            log: Arc::clone(&receiver.log),
            id: id.clone(),
        }
    };
    if receiver.mode.load(Ordering::SeqCst) == Mode::Hang as u8 {
        receiver.log.lock().unwrap().held += 1;
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(receiver.delay).await;
    receiver.log.lock().unwrap().delivered.push((id, event));
    StatusCode::NO_CONTENT
}

/// Checks one request as the Standard Webhooks specification and `docs/API.md` say; returns
/// the envelope.
fn check(headers: &HeaderMap, body: &str) -> Result<Value, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    if header("content-type")? != "application/json" {
        return Err(format!("content-type {:?}", headers.get("content-type")));
    }
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signature = header("webhook-signature")?;
    // The signature, computed here from the spec: v1,base64(HMAC-SHA256(key, id.ts.body)).
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    if signature != expected {
        return Err(format!("signature {signature}, expected {expected}"));
    }
    // And as a receiver would check it, with the timestamp's tolerance.
    standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(body.as_bytes(), headers)
        .map_err(|e| format!("standardwebhooks: {e}"))?;
    let event: Value = serde_json::from_str(body).map_err(|e| format!("body: {e}"))?;
    let keys: Vec<&str> = event
        .as_object()
        .ok_or("the body is not an object")?
        .keys()
        .map(String::as_str)
        .collect();
    if keys != ["data", "id", "timestamp", "type"] {
        return Err(format!("envelope keys {keys:?}"));
    }
    if event["id"] != id {
        return Err(format!(
            "webhook-id {id} is not the event's id {}",
            event["id"]
        ));
    }
    let hex = id.strip_prefix("evt_").unwrap_or_default();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("event id {id}"));
    }
    Ok(event)
}

/// The flow's requests: alice and bob log in, bob applies alice's code, alice refreshes and
/// logs out. Returns every token the flow saw (none may appear in an event).
async fn flow(server: &Server, alice: &str, bob: &str) -> Vec<String> {
    let client = Client::new(&server.base);
    let a = client.login(alice, "0000").await;
    let b = client.login(bob, "0000").await;
    let profile = client.get("/get_profile/", a["access"].as_str()).await;
    let code = profile.str("own_invite_code");
    let applied = client
        .post_as(
            "/use_invite_code/",
            b["access"].as_str(),
            json!({ "invite_code": code }),
        )
        .await;
    assert_eq!(applied.status, 200, "{}", applied.json());
    let refreshed = client
        .post("/api/token/refresh/", json!({ "refresh": a["refresh"] }))
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.json());
    let logout = client
        .post(
            "/api/token/logout/",
            json!({ "refresh": refreshed.json()["refresh"] }),
        )
        .await;
    assert_eq!(logout.status, 204);
    let mut tokens = Vec::new();
    for body in [&a, &b, &refreshed.json()] {
        for key in ["access", "refresh"] {
            tokens.push(body[key].as_str().unwrap().to_owned());
        }
    }
    tokens
}

/// The events of [`flow`] among `events`, checked: exactly these types, in order per user,
/// with the data the changes had.
fn assert_flow_events(events: &[Value], alice: &str, bob: &str) {
    let user = |phone: &str| {
        events
            .iter()
            .find(|e| e["type"] == "user.created" && e["data"]["phone"] == phone)
            .unwrap_or_else(|| panic!("no user.created for {phone}: {events:?}"))["data"]["user_id"]
            .clone()
    };
    let (alice_id, bob_id) = (user(alice), user(bob));
    let events: Vec<&Value> = events
        .iter()
        .filter(|e| e["data"]["user_id"] == alice_id || e["data"]["user_id"] == bob_id)
        .collect();
    let mut per_user: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for event in &events {
        per_user
            .entry(event["data"]["user_id"].to_string())
            .or_default()
            .push(event["type"].as_str().unwrap());
    }
    assert_eq!(per_user.len(), 2, "{events:?}");
    assert_eq!(
        per_user[&alice_id.to_string()],
        ["user.created", "session.created", "session.revoked"],
        "{events:?}"
    );
    assert_eq!(
        per_user[&bob_id.to_string()],
        ["user.created", "session.created", "referral.created"],
        "{events:?}"
    );
    let of = |kind: &str, user: &Value| {
        events
            .iter()
            .find(|e| e["type"] == kind && &e["data"]["user_id"] == user)
            .unwrap()["data"]
            .clone()
    };
    let referral = of("referral.created", &bob_id);
    assert_eq!(referral["referrer_id"], alice_id);
    assert_eq!(
        of("session.revoked", &alice_id),
        json!({
            "user_id": alice_id,
            "session_id": of("session.created", &alice_id)["session_id"],
            "reason": "logout",
        })
    );
}

/// The embedded server's environment with events to `receiver`, its SQLite file in `dir`.
fn embedded(
    receiver: &Receiver,
    dir: &std::path::Path,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "TEST_PHONES",
            (1..=20)
                .map(|n| format!("{}:0000", phone(n)))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "DATABASE_URL",
            format!("sqlite:{}", dir.join("refsys.db").display()),
        ),
        (
            "JWT_SECRET",
            "a-test-secret-of-at-least-32-bytes!!".to_owned(),
        ),
        ("EVENTS_WEBHOOK_URL", receiver.url()),
        ("EVENTS_WEBHOOK_SECRET", SECRET.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

async fn flow_delivers_each_event_in_order_signed(args: &[&str]) {
    let receiver = Receiver::new(Duration::ZERO);
    receiver.listen().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&embedded(&receiver, dir.path(), &[]), args).await;
    let tokens = flow(&server, &phone(1), &phone(2)).await;
    let events = receiver.wait_for(6, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 6, "{events:?}");
    assert_flow_events(&events, &phone(1), &phone(2));
    let log = receiver.log.lock().unwrap();
    assert_eq!(log.delivered.len(), 6, "each event once when nothing fails");
    for (_, event) in &log.delivered {
        let text = event.to_string();
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "a token in {text}");
        }
        assert!(!text.contains("\"code\""), "{text}");
    }
    assert!(
        !server
            .log()
            .contains(SECRET.strip_prefix("whsec_").unwrap())
    );
}

#[tokio::test]
async fn flow_delivers_each_event_in_order_signed_on_axum() {
    flow_delivers_each_event_in_order_signed(&[]).await;
}

#[tokio::test]
async fn flow_delivers_each_event_in_order_signed_on_actix() {
    flow_delivers_each_event_in_order_signed(&["--framework", "actix"]).await;
}

#[tokio::test]
async fn receiver_down_then_up_gets_every_event_once_per_id() {
    let receiver = Receiver::new(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    // A receiver URL with a credential in it, which no log line may show.
    let mut env = embedded(&receiver, dir.path(), &[]);
    for (k, v) in &mut env {
        if *k == "EVENTS_WEBHOOK_URL" {
            v.push_str("?token=url-credential-1234");
        }
    }
    let server = Server::start(&env, &[]).await;
    // Requests do not wait on the receiver: the whole flow answers while it is down.
    let started = Instant::now();
    flow(&server, &phone(1), &phone(2)).await;
    let flow_took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        server.log().contains("event delivery failed; will retry"),
        "{}",
        server.log()
    );
    assert!(
        !server.log().contains("url-credential-1234"),
        "{}",
        server.log()
    );
    receiver.listen().await;
    let events = receiver.wait_for(6, Duration::from_secs(30)).await;
    assert_flow_events(&events, &phone(1), &phone(2));
    // One id per change: group what arrived by its content.
    let log = receiver.log.lock().unwrap();
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for (id, event) in &log.delivered {
        let content = json!([event["type"], event["data"]]).to_string();
        ids.entry(content).or_default().insert(id.clone());
    }
    assert_eq!(ids.len(), 6);
    assert!(ids.values().all(|set| set.len() == 1), "{ids:?}");
    println!(
        "METRIC events-receiver-down: the flow took {} ms with the receiver down; {} deliveries of 6 events after it came up",
        flow_took.as_millis(),
        log.delivered.len()
    );
}

#[tokio::test]
async fn kill_9_mid_delivery_then_restart_loses_nothing() {
    let receiver = Receiver::new(Duration::ZERO);
    receiver.set_mode(Mode::Hang);
    receiver.listen().await;
    let dir = tempfile::tempdir().unwrap();
    // A claimed event is taken up again 4 × 2 s after its claim.
    let env = embedded(&receiver, dir.path(), &[("EVENTS_WEBHOOK_TIMEOUT", "2")]);
    let mut server = Server::start(&env, &[]).await;
    // A first login whose delivery the receiver holds: the flow then answers in full while
    // deliveries hang (requests never wait on the receiver).
    Client::new(&server.base).login(&phone(3), "0000").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.log.lock().unwrap().held == 0 {
        assert!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    flow(&server, &phone(1), &phone(2)).await;
    assert!(receiver.log.lock().unwrap().delivered.is_empty());
    server.kill();
    receiver.set_mode(Mode::Accept);
    let restarted_at = Instant::now();
    let _server = Server::start(&env, &[]).await;
    let events = receiver.wait_for(8, Duration::from_secs(40)).await;
    assert_flow_events(&events, &phone(1), &phone(2));
    let carol: Vec<&Value> = events
        .iter()
        .filter(|e| e["data"]["phone"] == phone(3).as_str())
        .collect();
    assert_eq!(carol.len(), 1, "{events:?}");
    let log = receiver.log.lock().unwrap();
    println!(
        "METRIC events-kill-9: {} requests held when killed; all 8 events delivered {} ms after the restart ({} deliveries)",
        log.held,
        restarted_at.elapsed().as_millis(),
        log.delivered.len()
    );
}

/// A server's admin command, with the server's environment: (status, stdout and stderr).
fn admin(env: &[(&'static str, String)], args: &[&str]) -> (bool, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, output) = support::run_to_exit(&env, args);
    (status.success(), output)
}

#[tokio::test]
async fn admin_lists_failed_events_and_queues_them_again() {
    // A receiver that is down and a maximum age of 1 s: the first failure fails an event,
    // and the login's two events fail one after the other.
    let receiver = Receiver::new(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let env = embedded(&receiver, dir.path(), &[("EVENTS_WEBHOOK_MAX_AGE", "1")]);
    // Where there is no database, the command says so and creates none.
    let (ok, out) = admin(&env, &["admin", "events"]);
    assert!(!ok && out.contains("no database at"), "{out}");
    assert!(!dir.path().join("refsys.db").exists());
    let mut server = Server::start(&env, &[]).await;
    let (ok, out) = admin(&env, &["admin", "events"]);
    assert!(
        ok && out.contains("0 failed event(s)") && out.contains("0 pending event(s)"),
        "{out}"
    );
    Client::new(&server.base).login(&phone(1), "0000").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = admin(&env, &["admin", "events", "--failed"]);
        assert!(ok, "{out}");
        assert!(
            !out.contains("pending event(s)"),
            "--failed lists only failed ones: {out}"
        );
        if out.contains("2 failed event(s)") {
            assert!(
                out.contains("user.created") && out.contains("session.created"),
                "{out}"
            );
            assert!(out.contains("last_error=\"webhook request failed"), "{out}");
            // The cause, not just reqwest's "error sending request".
            assert!(out.contains("onnect"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events did not fail: {out}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, all) = admin(&env, &["admin", "events"]);
    assert!(ok, "{all}");
    assert!(
        all.contains("2 failed event(s)") && all.contains("0 pending event(s)"),
        "{all}"
    );
    // Oldest first: the first id listed is user.created's.
    let failed_id = all
        .split_whitespace()
        .find(|w| w.starts_with("evt_"))
        .unwrap()
        .to_owned();
    let _ = server.terminate();

    // Bad ids are refused before the store is asked; an unknown id says so.
    let (ok, out) = admin(&env, &["admin", "events", "redeliver", "nope"]);
    assert!(!ok && out.contains("not an event id"), "{out}");
    let unknown = format!("evt_{}", "0".repeat(32));
    let (ok, out) = admin(&env, &["admin", "events", "redeliver", &unknown]);
    assert!(!ok && out.contains("no event"), "{out}");
    let (ok, out) = admin(&env, &["admin", "events", "redeliver"]);
    assert!(!ok, "an id or --failed is required: {out}");

    // Queue the failed ones again and bring the receiver up: they go out.
    let (ok, out) = admin(&env, &["admin", "events", "redeliver", "--failed"]);
    assert!(ok && out.contains("queued 2 failed event(s)"), "{out}");
    let (ok, out) = admin(&env, &["admin", "events"]);
    assert!(
        ok && out.contains("0 failed event(s)") && out.contains("2 pending event(s)"),
        "{out}"
    );
    receiver.listen().await;
    let env_long = embedded(&receiver, dir.path(), &[]);
    let server = Server::start(&env_long, &[]).await;
    let events = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(events[0]["id"], failed_id.as_str());
    assert_eq!(
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["user.created", "session.created"]
    );
    // One delivered event queued again by id goes out again, with its id.
    let (ok, out) = admin(&env_long, &["admin", "events", "redeliver", &failed_id]);
    assert!(ok && out.contains(&format!("queued {failed_id}")), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.log.lock().unwrap().delivered.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "not redelivered: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.log.lock().unwrap().delivered[2].0, failed_id);
}

#[cfg(feature = "services")]
mod services {
    use refsys_test_support::postgres::fresh_database;

    use super::support::services::PrivatePostgres;
    use super::*;

    fn pg_env(receiver: &Receiver, url: &str) -> Vec<(&'static str, String)> {
        let mut env = embedded(receiver, std::path::Path::new("/nonexistent"), &[]);
        env.retain(|(k, _)| *k != "DATABASE_URL");
        env.push(("DATABASE_URL", url.to_owned()));
        for var in [
            "RATE_LIMIT_SEND_CODE",
            "RATE_LIMIT_VERIFY_CODE",
            "RATE_LIMIT_USE_INVITE_CODE",
            "RATE_LIMIT_SEND_CODE_PER_PHONE",
            "RATE_LIMIT_VERIFY_CODE_PER_PHONE",
        ] {
            env.push((var, "0".to_owned()));
        }
        env
    }

    #[tokio::test]
    async fn two_instances_on_one_postgres_deliver_each_event_one_at_a_time() {
        let database = fresh_database().await;
        // A slow receiver, so that two deliveries of one event would overlap.
        let receiver = Receiver::new(Duration::from_millis(50));
        receiver.listen().await;
        let env = pg_env(&receiver, database.url());
        let a = Server::start(&env, &[]).await;
        let b = Server::start(&env, &["--framework", "actix"]).await;
        let clients = [Client::new(&a.base), Client::new(&b.base)];
        let mut accesses = Vec::new();
        for n in 1..=16 {
            let login = clients[n as usize % 2].login(&phone(n), "0000").await;
            accesses.push(login["access"].as_str().unwrap().to_owned());
        }
        // Users 9..16 apply the codes of users 1..8, on the other instance.
        for i in 0..8 {
            let code = clients[0]
                .get("/get_profile/", Some(&accesses[i]))
                .await
                .str("own_invite_code");
            let applied = clients[1 - i % 2]
                .post_as(
                    "/use_invite_code/",
                    Some(&accesses[i + 8]),
                    json!({ "invite_code": code }),
                )
                .await;
            assert_eq!(applied.status, 200, "{}", applied.json());
        }
        let events = receiver.wait_for(16 * 2 + 8, Duration::from_secs(60)).await;
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for event in &events {
            *kinds.entry(event["type"].as_str().unwrap()).or_default() += 1;
        }
        assert_eq!(
            kinds,
            BTreeMap::from([
                ("referral.created", 8),
                ("session.created", 16),
                ("user.created", 16)
            ])
        );
        {
            let log = receiver.log.lock().unwrap();
            assert!(
                log.overlapping.is_empty(),
                "delivered by both at once: {:?}",
                log.overlapping
            );
            println!(
                "METRIC events-two-instances: 40 events, {} deliveries, none of one event at the same moment",
                log.delivered.len()
            );
        }
        drop((a, b));
        database.drop_database().await;
    }

    #[tokio::test]
    async fn postgres_stopped_mid_flow_records_no_event_for_what_did_not_commit() {
        let mut pg = tokio::task::spawn_blocking(PrivatePostgres::start)
            .await
            .unwrap();
        let url = pg.url();
        let receiver = Receiver::new(Duration::ZERO);
        receiver.listen().await;
        let env = pg_env(&receiver, &url);
        let server = Server::start(&env, &[]).await;
        let client = Client::new(&server.base);
        let alice = client.login(&phone(1), "0000").await;
        receiver.wait_for(2, Duration::from_secs(20)).await;
        // The code goes out before the outage (the OTP store is in the process).
        let sent = client
            .post("/login/send_code/", json!({ "phone": phone(2) }))
            .await;
        assert_eq!(sent.status, 200, "{}", sent.json());

        let mut pg = tokio::task::spawn_blocking(move || {
            pg.stop();
            pg
        })
        .await
        .unwrap();
        // A new user's login and alice's logout fail with 503 and commit nothing.
        let login = client
            .post(
                "/login/verify_code/",
                json!({ "phone": phone(2), "code": "0000" }),
            )
            .await;
        http_suite::assert_error(&login, 503, "store_unavailable");
        let logout = client
            .post("/api/token/logout/", json!({ "refresh": alice["refresh"] }))
            .await;
        http_suite::assert_error(&logout, 503, "store_unavailable");

        let pg = tokio::task::spawn_blocking(move || {
            pg.start_again();
            pg
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get("/get_profile/", alice["access"].as_str())
            .await
            .status
            != 200
        {
            assert!(Instant::now() < deadline, "no recovery: {}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A change after the outage: its events go out behind the earlier ones.
        client.login(&phone(3), "0000").await;
        let events = receiver.wait_for(4, Duration::from_secs(30)).await;
        let phones: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "user.created")
            .map(|e| &e["data"]["phone"])
            .collect();
        assert_eq!(phones, [&json!(phone(1)), &json!(phone(3))], "{events:?}");
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(events.iter().all(|e| e["type"] != "session.revoked"));
        // And the log holds exactly those: nothing half-written waits to go out.
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, 4);
        pool.close().await;
        drop(pg);
    }
}
