//! The load generator's HTTP side: a keep-alive client connection ([`Conn`]), the seeding of
//! a server over HTTP, the scenarios' requests ([`Scenario`], [`operation`]) and a load phase
//! on many connections at once ([`phase`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use refsys_benches::{TEST_CODE, test_phone};
use refsys_core::{Claims, FamilyId, JwtKeys, Timestamp, TokenId, TokenKind};

use crate::BoxError;
use crate::measure::Outcome;
use crate::options::Options;
use crate::protocol::{
    BARE_ROUTE, HUB, INVITEES, LOGIN_POOL_START, MINT_ROUTE, PROFILE_OWNER, SECRET, STORE_ROUTE,
    STORE_USER,
};

/// An HTTP/1.1 keep-alive connection.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`, from the local address `local` if given.
    pub(crate) async fn open(addr: SocketAddr, local: Option<IpAddr>) -> Result<Conn, BoxError> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    /// Sends one request; returns the status and the body.
    async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        header: Option<(&str, &str)>,
        body: Option<String>,
    ) -> Result<(u16, Bytes), BoxError> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "127.0.0.1");
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.map(Bytes::from).unwrap_or_default()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A GET, with `auth` as its `Authorization` header if given.
    pub(crate) async fn get(
        &mut self,
        path: &str,
        auth: Option<&str>,
    ) -> Result<(u16, Bytes), BoxError> {
        let header = auth.map(|auth| (hyper::header::AUTHORIZATION.as_str(), auth));
        self.call(hyper::Method::GET, path, header, None).await
    }

    /// A GET with one extra header.
    async fn get_with(
        &mut self,
        path: &str,
        name: &str,
        value: &str,
    ) -> Result<(u16, Bytes), BoxError> {
        self.call(hyper::Method::GET, path, Some((name, value)), None)
            .await
    }

    /// A POST of `body` as JSON, with `auth` as its `Authorization` header if given.
    async fn post(
        &mut self,
        path: &str,
        auth: Option<&str>,
        body: serde_json::Value,
    ) -> Result<(u16, Bytes), BoxError> {
        let header = auth.map(|auth| (hyper::header::AUTHORIZATION.as_str(), auth));
        self.call(hyper::Method::POST, path, header, Some(body.to_string()))
            .await
    }

    /// send_code + verify_code for a test phone; returns the access token.
    async fn login(&mut self, phone: &str) -> Result<String, BoxError> {
        let (status, body) = self
            .post(
                "/login/send_code/",
                None,
                serde_json::json!({ "phone": phone }),
            )
            .await?;
        expect_ok("send_code", status, &body)?;
        let (status, body) = self
            .post(
                "/login/verify_code/",
                None,
                serde_json::json!({ "phone": phone, "code": TEST_CODE }),
            )
            .await?;
        expect_ok("verify_code", status, &body)?;
        let login: serde_json::Value = serde_json::from_slice(&body)?;
        login["access"]
            .as_str()
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| "verify_code: no access token".into())
    }
}

/// An error naming `what` unless `status` is 200.
fn expect_ok(what: &str, status: u16, body: &[u8]) -> Result<(), BoxError> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!("{what}: {status} {}", String::from_utf8_lossy(body)).into())
    }
}

/// What one op of a load phase does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// A framework-native handler answering `{"status":"ok"}`, no refsys code: the
    /// framework's own ceiling (bench server only).
    Bare,
    /// A framework-native handler that reads the profile straight from the store: what
    /// the profile costs without refsys's HTTP half (bench server only).
    BareStore,
    Health,
    Profile,
    Login,
    Invite,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Bare => "GET bare handler (no refsys)",
            Scenario::BareStore => "GET bare handler + store profile read",
            Scenario::Health => "GET /health",
            Scenario::Profile => "GET /get_profile/ (10 invitees)",
            Scenario::Login => "login (send_code + verify_code)",
            Scenario::Invite => "POST /use_invite_code/",
        }
    }
}

/// What the scenarios share: tokens and the next free phone or token.
pub(crate) struct Ctx {
    pub(crate) scenario: Scenario,
    pub(crate) profile_auth: String,
    pub(crate) profile_user_id: String,
    pub(crate) hub_code: String,
    pub(crate) phones_end: usize,
    pub(crate) next_phone: AtomicUsize,
    pub(crate) collected: Mutex<Vec<String>>,
    pub(crate) invite_tokens: Vec<String>,
    pub(crate) next_token: AtomicUsize,
    pub(crate) budget: AtomicU64,
}

/// The seeded state: the profile owner with 10 invitees, and the hub.
pub(crate) struct Seeded {
    pub(crate) profile_auth: String,
    pub(crate) hub_code: String,
    pub(crate) profile_user_id: i64,
}

/// Logs in the profile owner, its 10 invitees and the hub over HTTP, each from its own
/// loopback address (127.0.0.x) so per-IP limits of a server that has them do not bite.
pub(crate) async fn seed(addr: SocketAddr) -> Result<Seeded, BoxError> {
    let mut tokens = Vec::new();
    for i in 0..LOGIN_POOL_START {
        let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(2 + i)?));
        let mut conn = Conn::open(addr, Some(local)).await?;
        tokens.push(conn.login(&test_phone(i)).await?);
    }
    let mut conn = Conn::open(addr, None).await?;
    let owner_code = own_invite_code(&mut conn, &tokens[PROFILE_OWNER]).await?;
    for token in &tokens[1..=INVITEES] {
        let (status, body) = conn
            .post(
                "/use_invite_code/",
                Some(token),
                serde_json::json!({ "invite_code": owner_code }),
            )
            .await?;
        expect_ok("use_invite_code", status, &body)?;
    }
    let invited = profile(&mut conn, &tokens[PROFILE_OWNER]).await?["invited_users"]
        .as_array()
        .map_or(0, Vec::len);
    if invited != INVITEES {
        return Err(format!("seeded profile has {invited} invitees, not {INVITEES}").into());
    }
    let hub_code = own_invite_code(&mut conn, &tokens[HUB]).await?;
    // The owner's id, from the token's `sub` (the payload is base64url JSON).
    let profile_user_id = user_id_of(&tokens[PROFILE_OWNER]).ok_or("bad token")?;
    Ok(Seeded {
        profile_auth: tokens[PROFILE_OWNER].clone(),
        hub_code,
        profile_user_id,
    })
}

/// The profile of the user of `auth` (`GET /get_profile/`), as JSON.
async fn profile(conn: &mut Conn, auth: &str) -> Result<serde_json::Value, BoxError> {
    let (status, body) = conn.get("/get_profile/", Some(auth)).await?;
    expect_ok("get_profile", status, &body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// The own invite code of the user of `auth`, from their profile.
async fn own_invite_code(conn: &mut Conn, auth: &str) -> Result<String, BoxError> {
    Ok(profile(conn, auth).await?["own_invite_code"]
        .as_str()
        .ok_or("no own_invite_code")?
        .to_owned())
}

/// The user id of a `Bearer <access token>`, checked with the servers' secret.
fn user_id_of(auth: &str) -> Option<i64> {
    let keys = JwtKeys::hs256(SECRET).ok()?;
    let now = Timestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs());
    let claims = keys.decode(auth.strip_prefix("Bearer ")?, TokenKind::Access, now)?;
    Some(claims.user_id()?.0)
}

/// `Bearer` access tokens for the users `ids`, signed with the servers' secret and
/// carrying the claims `ReferralService` puts in its own (valid for an hour).
fn access_tokens(ids: &[i64]) -> Result<Vec<String>, BoxError> {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    ids.iter()
        .map(|id| {
            let claims = Claims {
                sub: id.to_string(),
                exp: now + 3600,
                iat: now,
                nbf: now,
                jti: TokenId::random().to_string(),
                token_type: TokenKind::Access,
                fam: FamilyId::random().to_string(),
            };
            Ok(format!(
                "Bearer {}",
                jsonwebtoken::encode(&header, &claims, &key)?
            ))
        })
        .collect()
}

/// Asks the bench server for `n` fresh users and signs an access token for each.
pub(crate) async fn fresh_users(addr: SocketAddr, n: usize) -> Result<Vec<String>, BoxError> {
    let mut conn = Conn::open(addr, None).await?;
    let path = MINT_ROUTE.replace("{n}", &n.to_string());
    let (status, body) = conn.call(hyper::Method::POST, &path, None, None).await?;
    expect_ok("minting users", status, &body)?;
    access_tokens(&serde_json::from_slice::<Vec<i64>>(&body)?)
}

/// How one op ended: done, or nothing left to do (no phone or token left).
enum Step {
    Done,
    Exhausted,
}

/// One operation of the scenario on `conn`.
async fn operation(conn: &mut Conn, ctx: &Ctx, mine: &mut Vec<String>) -> Result<Step, BoxError> {
    match ctx.scenario {
        Scenario::Bare => {
            let (status, body) = conn.get(BARE_ROUTE, None).await?;
            expect_ok("bare handler", status, &body)?;
        }
        Scenario::BareStore => {
            let (status, body) = conn
                .get_with(STORE_ROUTE, STORE_USER, &ctx.profile_user_id)
                .await?;
            expect_ok("bare store handler", status, &body)?;
        }
        Scenario::Health => {
            let (status, body) = conn.get("/health", None).await?;
            expect_ok("health", status, &body)?;
        }
        Scenario::Profile => {
            let (status, body) = conn.get("/get_profile/", Some(&ctx.profile_auth)).await?;
            expect_ok("get_profile", status, &body)?;
        }
        Scenario::Login => {
            let i = ctx.next_phone.fetch_add(1, Ordering::Relaxed);
            if i >= ctx.phones_end {
                return Ok(Step::Exhausted);
            }
            mine.push(conn.login(&test_phone(i)).await?);
        }
        Scenario::Invite => {
            let i = ctx.next_token.fetch_add(1, Ordering::Relaxed);
            let Some(token) = ctx.invite_tokens.get(i) else {
                return Ok(Step::Exhausted);
            };
            let (status, body) = conn
                .post(
                    "/use_invite_code/",
                    Some(token),
                    serde_json::json!({ "invite_code": ctx.hub_code }),
                )
                .await?;
            expect_ok("use_invite_code", status, &body)?;
        }
    }
    Ok(Step::Done)
}

/// Runs the scenario on `options.connections` connections for `duration` (or until the
/// op budget or the phone/token pool runs out).
pub(crate) async fn phase(
    addr: SocketAddr,
    options: &Options,
    ctx: &Arc<Ctx>,
    duration: Duration,
    record: bool,
) -> Result<Outcome, BoxError> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..options.connections {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut first_error = None;
            let mut exhausted = false;
            let mut mine = Vec::new();
            let mut conn = Conn::open(addr, None).await?;
            let mut reconnects = 0;
            while Instant::now() < deadline {
                if ctx
                    .budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let t = Instant::now();
                match operation(&mut conn, &ctx, &mut mine).await {
                    Ok(Step::Done) => {
                        ops += 1;
                        if record {
                            latencies
                                .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                    }
                    Ok(Step::Exhausted) => {
                        exhausted = true;
                        break;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        if conn.sender.is_closed() {
                            reconnects += 1;
                            if reconnects > 10 {
                                break;
                            }
                            conn = Conn::open(addr, None).await?;
                        }
                    }
                }
            }
            if let Ok(mut collected) = ctx.collected.lock() {
                collected.append(&mut mine);
            }
            Ok::<_, BoxError>((
                ops,
                errors,
                latencies,
                first_error,
                exhausted,
                Instant::now(),
            ))
        }));
    }
    let mut outcome = Outcome {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        first_error: None,
        exhausted: false,
    };
    let mut last_end = started;
    for task in tasks {
        let (ops, errors, mut latencies, first_error, exhausted, ended) = task.await??;
        outcome.ops += ops;
        outcome.errors += errors;
        outcome.latencies_us.append(&mut latencies);
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
        outcome.exhausted |= exhausted;
        last_end = last_end.max(ended);
    }
    outcome.elapsed = last_end - started;
    outcome.latencies_us.sort_unstable();
    Ok(outcome)
}
