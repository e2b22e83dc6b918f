//! Redis stores: [`RedisOtpStore`] and [`RedisRateLimitStore`], shared by every server
//! instance that talks to the same Redis.
//!
//! Every trait method that writes is **one Lua script** (sent as `EVALSHA`, loaded automatically when the
//! server does not know it yet), so cooldowns, send windows, attempt counting, burning,
//! failure budgets, locks and consuming cannot race between instances. The scripts decide with the `now` the service
//! passes in, never with the Redis clock, exactly like [`MemoryOtpStore`](crate::MemoryOtpStore)
//! and [`MemoryRateLimitStore`](crate::MemoryRateLimitStore).
//!
//! # Key layout
//!
//! Every key starts with a prefix (default `refsys:`, see `with_prefix`), followed by:
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `otp:{<phone>}` | hash | the pending code: `h` (hex of the [`OtpHash`]), `exp` (expiry, Unix seconds), `left` (misses left) |
//! | `otp:{<phone>}:sends` | list | Unix seconds of the codes sent in the rolling window, oldest first |
//! | `otp:{<phone>}:fails` | hash | the failure budget: `n` (consecutive wrong codes) and `exp` (when `n` is forgotten), or `until` (end of the lock) while the phone is locked |
//! | `revoked` | sorted set | revoked sessions (member: the session id, score: when, Unix seconds), kept for the access-token lifetime and a margin |
//! | `rate:{<key>}` | hash | `end` (end of the current fixed window, Unix seconds), `n` (hits in it); sliding counters also `p` (hits in the window before) |
//!
//! for example `refsys:otp:{+375291234567}`. Codes are never stored, only their keyed hash.
//!
//! # Expiry
//!
//! Every key has a TTL, so Redis never keeps garbage. Each OTP write sets a phone's code and
//! sends keys to expire after the longer of [`OtpPolicy::code_ttl`] and
//! [`OtpPolicy::send_window`]: by then every code and every send the keys hold is dead anyway.
//! The `fails` key expires [`OtpPolicy::lockout`] after its last write (a miss or a lock), when
//! its count is forgotten or its lock ends. A rate-limit key expires when its window ends (a sliding one a window later). TTLs only collect garbage; the decisions themselves use `now`.
//!
//! # Redis Cluster
//!
//! Both stores run on a single Redis node or on a Redis Cluster; [`RedisConnection`] is either.
//! The part of a key in braces is a hash tag: all keys of one phone (or one rate-limit key)
//! live in the same slot, so every script touches one slot only and the cluster runs it on
//! the primary that owns the slot, unchanged. Different phones spread over the primaries. No
//! call ever needs keys of two phones. (A prefix containing `{…}` makes its content the tag
//! instead: still correct, but all keys then share one slot, on one primary.)
//!
//! Scripts are sent as `EVALSHA` on the cluster too; a primary that does not know a script
//! yet (a new node, a failover, a `SCRIPT FLUSH`) answers `NOSCRIPT`, the script is loaded on
//! every node and the call repeated. The cluster connection follows `MOVED` and `ASK`
//! redirections (resharding) and refreshes its slot map by itself.
//!
//! Tested against a local cluster of three primaries (`redis-server --cluster-enabled yes`):
//! the same conformance suites as a single node, see `refsys_test_support::redis` in the repository.

//! # Durability
//!
//! Pending codes, cooldowns and counters live only in Redis. If Redis loses data (a restart
//! without persistence, a failover before replication), pending codes are lost — users ask
//! for a new one — and cooldowns, send windows and rate limits start over. On a cluster this
//! holds per primary: a failover of one primary loses only the unreplicated writes of the
//! phones in its slots.
//!
//! # Connecting
//!
//! [`connect`] opens a [`RedisConnection`] to one node (a [`ConnectionManager`] that
//! reconnects by itself), [`connect_cluster`] one to a Redis Cluster (a
//! [`ClusterConnection`] that finds every primary from the nodes it is given). Both give up
//! on a connection attempt or a reply after two seconds, and every store call after three,
//! so a Redis that is down fails fast with [`StoreError::Unavailable`]. Both stores can
//! share one connection:
//!
//! ```no_run
//! use refsys_core::redis_store::{self, RedisOtpStore, RedisRateLimitStore};
//!
//! # async fn run() -> Result<(), refsys_core::StoreError> {
//! let conn = redis_store::connect("redis://127.0.0.1:6379").await?;
//! // or, on a cluster (any reachable nodes will do, the rest are discovered):
//! // let conn = redis_store::connect_cluster(&["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]).await?;
//! let otp = RedisOtpStore::new(conn.clone()).with_prefix("myapp:");
//! let limits = RedisRateLimitStore::new(conn).with_prefix("myapp:");
//! # let _ = (otp, limits);
//! # Ok(())
//! # }
//! ```
//!
//! A [`ConnectionManager`] or [`ClusterConnection`] built by hand converts with `into()`,
//! so `RedisOtpStore::new(manager)` works as well.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, ScriptInvocation,
    ServerErrorKind, Value,
};

use crate::store::{Check, Issue, OtpStore, RateDecision, RateLimitStore, sliding_estimate};
use crate::{FamilyId, OtpHash, OtpPolicy, Phone, StoreError, Timestamp};

/// The key prefix used unless `with_prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "refsys:";

/// How long to wait for a TCP connection, and for a reply.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The longest any one store call may take, reconnecting included.
const DEADLINE: Duration = Duration::from_secs(3);

/// Durations longer than this (about 34,000 years) are treated as this long, so the
/// arithmetic stays exact in Lua's doubles and TTLs stay within what Redis accepts.
const MAX_SECS: u64 = 1 << 40;

macro_rules! otp_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("redis_store/otp_common.lua"),
                include_str!($file)
            ))
        })
    };
}

static ISSUE: LazyLock<Script> = otp_script!("redis_store/issue.lua");
static CANCEL: LazyLock<Script> = otp_script!("redis_store/cancel.lua");
static CHECK: LazyLock<Script> = otp_script!("redis_store/check.lua");
static RESTORE: LazyLock<Script> = otp_script!("redis_store/restore.lua");
static HIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis_store/hit.lua")));
static REVOKE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("redis_store/revoke.lua")));
static SLIDE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("redis_store/slide.lua")));
static TAKE_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("redis_store/take_back.lua")));

/// A connection to Redis, shared by both stores: one node, or a Redis Cluster.
///
/// Cloning is cheap: clones share the underlying connection. It is also a
/// [`ConnectionLike`], so it runs any other command too (on a cluster, keyed commands go to the
/// primary that owns the key's slot; see the `redis` crate's cluster routing).
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisConnection {
    /// One Redis node, through a reconnecting [`ConnectionManager`] (see [`connect`]).
    Node(ConnectionManager),
    /// A Redis Cluster, through a [`ClusterConnection`] (see [`connect_cluster`]).
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this is a connection to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Node(_) => "RedisConnection::Node",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        Self::Node(conn)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(conn: ClusterConnection) -> Self {
        Self::Cluster(conn)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Opens a connection to the single Redis node at `url` (e.g. `redis://127.0.0.1:6379`) with
/// bounded timeouts: two seconds to connect, two seconds per reply, one quick retry. The
/// connection ([`RedisConnection::Node`]) reconnects by itself after a failure; clone it to
/// share it between stores.
///
/// Fails with [`StoreError::Unavailable`] if the URL is invalid or Redis does not answer.
pub async fn connect(url: &str) -> Result<RedisConnection, StoreError> {
    let client = redis::Client::open(url).map_err(store_error)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500));
    within_deadline(ConnectionManager::new_with_config(client, config))
        .await
        .map(RedisConnection::Node)
}

/// Splits a comma-separated list of node URLs (as in `REDIS_CLUSTER_URLS`) into the URLs
/// for [`connect_cluster`], trimmed, empty entries left out.
pub fn node_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Opens a connection to the Redis Cluster that `urls` belong to (e.g.
/// `["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]`): the first of them that answers
/// tells where every primary is, so any reachable subset of the nodes will do. A password or
/// user name is taken from the first URL and used for every node.
///
/// Timeouts are bounded as in [`connect`]: two seconds to connect to a node, two seconds for
/// a reply including the retries of a request (redirections, reconnecting), and three for
/// the whole call. The connection ([`RedisConnection::Cluster`]) reconnects to nodes and
/// refreshes the slot map by itself.
///
/// Fails with [`StoreError::Unavailable`] if `urls` is empty, a URL is invalid, or no node
/// answers.
pub async fn connect_cluster<S: AsRef<str>>(urls: &[S]) -> Result<RedisConnection, StoreError> {
    if urls.is_empty() {
        return Err(StoreError::unavailable(format_args!(
            "redis cluster: no node URLs"
        )));
    }
    let client = ClusterClientBuilder::new(urls.iter().map(AsRef::as_ref))
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
        .map_err(store_error)?;
    within_deadline(client.get_async_connection())
        .await
        .map(RedisConnection::Cluster)
}

/// The connection and key prefix both stores use.
#[derive(Clone)]
struct Redis {
    conn: RedisConnection,
    prefix: Arc<str>,
}

impl Redis {
    fn new(conn: RedisConnection) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
        }
    }

    async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        within_deadline(invocation.invoke_async(&mut conn)).await
    }

    /// `PING`; on a cluster, `PING` to every primary that serves slots (by the slot map of
    /// `CLUSTER SLOTS`), so one unreachable primary fails the check. (The client's own
    /// fan-out of `PING` skips primaries it has no connection to.)
    async fn ping(&self) -> Result<(), StoreError> {
        let replies: Vec<String> = match &self.conn {
            RedisConnection::Node(conn) => {
                let mut conn = conn.clone();
                vec![within_deadline(redis::cmd("PING").query_async(&mut conn)).await?]
            }
            RedisConnection::Cluster(conn) => within_deadline(ping_primaries(conn.clone())).await?,
        };
        match replies.iter().find(|reply| *reply != "PONG") {
            None => Ok(()),
            Some(reply) => Err(StoreError::corrupt(format_args!(
                "unexpected PING reply {reply:?}"
            ))),
        }
    }
}

/// Sends `PING` to each primary of the cluster's slot map, one after the other.
async fn ping_primaries(mut conn: ClusterConnection) -> Result<Vec<String>, RedisError> {
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    let mut primaries = slot_primaries(slots)?;
    primaries.sort();
    primaries.dedup();
    if primaries.is_empty() {
        return Err(RedisError::from((
            ErrorKind::ClusterConnectionNotFound,
            "the cluster serves no slots",
        )));
    }
    let mut replies = Vec::with_capacity(primaries.len());
    for (host, port) in primaries {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        let reply = conn.route_command(redis::cmd("PING"), route).await?;
        replies.push(redis::from_redis_value(reply)?);
    }
    Ok(replies)
}

/// The `(host, port)` of the primary of each slot range in a `CLUSTER SLOTS` reply:
/// `[[start, end, [host, port, id, ...], replicas...], ...]`.
fn slot_primaries(slots: Value) -> Result<Vec<(String, u16)>, RedisError> {
    let malformed = || RedisError::from((ErrorKind::Parse, "malformed CLUSTER SLOTS reply"));
    let Value::Array(ranges) = slots else {
        return Err(malformed());
    };
    ranges
        .into_iter()
        .map(|range| match range {
            Value::Array(range) => match range.into_iter().nth(2) {
                Some(Value::Array(node)) => {
                    let mut node = node.into_iter();
                    let (Some(host), Some(port)) = (node.next(), node.next()) else {
                        return Err(malformed());
                    };
                    Ok((
                        redis::from_redis_value(host)?,
                        redis::from_redis_value(port)?,
                    ))
                }
                _ => Err(malformed()),
            },
            _ => Err(malformed()),
        })
        .collect()
}

async fn within_deadline<T>(
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(DEADLINE, call).await {
        Ok(result) => result.map_err(store_error),
        Err(_) => Err(StoreError::unavailable(format_args!(
            "redis did not answer within {DEADLINE:?}"
        ))),
    }
}

/// Replies the store cannot make sense of are corrupt data; everything else (I/O, timeouts,
/// a server that is loading, read-only or refusing) means Redis is unavailable.
fn store_error(error: RedisError) -> StoreError {
    let corrupt = match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Extension => matches!(error.code(), Some("CORRUPT" | "WRONGTYPE")),
        ErrorKind::Server(ServerErrorKind::ResponseError) => error
            .detail()
            .is_some_and(|detail| detail.contains("script")),
        _ => false,
    };
    if corrupt {
        StoreError::corrupt(format_args!("redis: {error}"))
    } else {
        StoreError::unavailable(format_args!("redis: {error}"))
    }
}

fn secs(duration: Duration) -> u64 {
    duration.as_secs().min(MAX_SECS)
}

/// The length in seconds (at least 1) of `window`, and the end of the fixed window of that
/// length that contains `now` (windows start at multiples of the length since the epoch).
fn fixed_window(window: Duration, now: Timestamp) -> (u64, Timestamp) {
    let window_secs = secs(window).max(1);
    let end = Timestamp::from_unix((now.as_unix() / window_secs + 1).saturating_mul(window_secs));
    (window_secs, end)
}

fn corrupt_reply(script: &str, reply: impl std::fmt::Debug) -> StoreError {
    StoreError::corrupt(format_args!(
        "unexpected reply {reply:?} from the {script} script"
    ))
}

/// The constructors and `Debug` that both Redis stores share: each is a [`Redis`] base (one
/// connection, one key prefix) with the operations of its trait on top.
macro_rules! redis_store {
    ($store:ident) => {
        impl $store {
            /// A store on `conn` (a [`RedisConnection`], or a [`ConnectionManager`] or
            /// [`ClusterConnection`]), with the [default prefix](DEFAULT_PREFIX).
            pub fn new(conn: impl Into<RedisConnection>) -> Self {
                Self {
                    redis: Redis::new(conn.into()),
                }
            }

            /// Connects to the single node at `url` (see [`connect`]) and builds a store with the
            /// default prefix. For a cluster, use [`connect_cluster`] and [`new`](Self::new).
            pub async fn connect(url: &str) -> Result<Self, StoreError> {
                Ok(Self::new(connect(url).await?))
            }

            /// Uses `prefix` in front of every key (e.g. `myapp:`), to share a Redis between apps.
            #[must_use]
            pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
                self.redis.prefix = Arc::from(prefix.into());
                self
            }

            /// The key prefix.
            pub fn prefix(&self) -> &str {
                &self.redis.prefix
            }
        }

        impl fmt::Debug for $store {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($store))
                    .field("prefix", &self.redis.prefix)
                    .finish_non_exhaustive()
            }
        }
    };
}

redis_store!(RedisOtpStore);
redis_store!(RedisRateLimitStore);

/// An [`OtpStore`] in Redis: pending codes, cooldowns, attempt counters and send windows,
/// shared by every instance. See the [module docs](self) for keys and TTLs.
///
/// Cloning is cheap (the connection is shared).
#[derive(Clone)]
pub struct RedisOtpStore {
    redis: Redis,
}

impl RedisOtpStore {
    /// `script` invoked on `phone`'s three keys (code, sends, failures: one hash slot), ready
    /// for its arguments.
    fn invoke<'a>(&self, script: &'a Script, phone: &Phone) -> ScriptInvocation<'a> {
        let code = format!("{}otp:{{{}}}", self.redis.prefix, phone.as_str());
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&code)
            .key(format!("{code}:sends"))
            .key(format!("{code}:fails"));
        invocation
    }

    /// The sorted set of revoked sessions (one key: on a cluster, one slot).
    fn revoked_key(&self) -> String {
        format!("{}revoked", self.redis.prefix)
    }

    /// The code and sends keys expire after the longer of the code's life and the send window.
    fn key_ttl(policy: &OtpPolicy) -> u64 {
        secs(policy.code_ttl).max(secs(policy.send_window)).max(1)
    }
}

#[async_trait]
impl OtpStore for RedisOtpStore {
    async fn issue(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Issue, StoreError> {
        let expires_at = now.as_unix().saturating_add(secs(policy.code_ttl));
        let reply: (u8, u64) = self
            .redis
            .run(
                self.invoke(&ISSUE, phone)
                    .arg(now.as_unix())
                    .arg(code.to_hex())
                    .arg(expires_at)
                    .arg(secs(policy.resend_cooldown))
                    .arg(policy.max_attempts)
                    .arg(policy.max_sends_per_window)
                    .arg(secs(policy.send_window))
                    .arg(Self::key_ttl(policy)),
            )
            .await?;
        match reply {
            (0, _) => Ok(Issue::Stored),
            (1, wait) => Ok(Issue::Cooldown {
                retry_after: Duration::from_secs(wait),
            }),
            (2, wait) => Ok(Issue::WindowFull {
                retry_after: Duration::from_secs(wait),
            }),
            (3, wait) => Ok(Issue::Locked {
                retry_after: Duration::from_secs(wait),
            }),
            other => Err(corrupt_reply("issue", other)),
        }
    }

    async fn cancel(
        &self,
        phone: &Phone,
        code: &OtpHash,
        issued_at: Timestamp,
        _policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .run(
                self.invoke(&CANCEL, phone)
                    .arg(code.to_hex())
                    .arg(issued_at.as_unix()),
            )
            .await?;
        Ok(())
    }

    async fn check(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Check, StoreError> {
        let reply: (u8, u64) = self
            .redis
            .run(
                self.invoke(&CHECK, phone)
                    .arg(now.as_unix())
                    .arg(code.to_hex())
                    .arg(secs(policy.resend_cooldown))
                    .arg(policy.max_sends_per_window)
                    .arg(secs(policy.send_window))
                    .arg(Self::key_ttl(policy))
                    .arg(policy.max_failures)
                    .arg(secs(policy.lockout)),
            )
            .await?;
        match reply {
            (0, _) => Ok(Check::Valid),
            (1, left) => u32::try_from(left)
                .map(|attempts_left| Check::Invalid { attempts_left })
                .map_err(|_| corrupt_reply("check", reply)),
            (2, wait) => Ok(Check::Burned {
                retry_after: Duration::from_secs(wait),
            }),
            (3, _) => Ok(Check::Missing),
            (4, wait) => Ok(Check::Locked {
                retry_after: Duration::from_secs(wait),
            }),
            (5, wait) => Ok(Check::LockedNow {
                retry_after: Duration::from_secs(wait),
            }),
            other => Err(corrupt_reply("check", other)),
        }
    }

    async fn restore(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        _policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .run(
                self.invoke(&RESTORE, phone)
                    .arg(now.as_unix())
                    .arg(code.to_hex()),
            )
            .await?;
        Ok(())
    }

    async fn revoke_session(
        &self,
        session: &FamilyId,
        at: Timestamp,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let forget_before = at.as_unix().saturating_sub(secs(keep));
        let mut invocation = REVOKE.prepare_invoke();
        invocation
            .key(self.revoked_key())
            .arg(session.as_str())
            .arg(at.as_unix())
            .arg(forget_before)
            .arg(secs(keep).max(1));
        let _: i64 = self.redis.run(&invocation).await?;
        Ok(())
    }

    async fn revoked_sessions(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(FamilyId, Timestamp)>, StoreError> {
        let mut conn = self.redis.conn.clone();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.revoked_key())
            .arg(since.as_unix())
            .arg("+inf")
            .arg("WITHSCORES");
        let reply: Vec<(String, f64)> = within_deadline(cmd.query_async(&mut conn)).await?;
        reply
            .into_iter()
            .map(|(session, when)| {
                if when.is_finite() && when >= 0.0 {
                    // Whole Unix seconds, as written.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let when = Timestamp::from_unix(when as u64);
                    Ok((FamilyId::from_string(session), when))
                } else {
                    Err(corrupt_reply("revoked_sessions", when))
                }
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }
}

/// A [`RateLimitStore`] in Redis: fixed-window counters shared by every instance. See the
/// [module docs](self) for keys and TTLs.
///
/// Cloning is cheap (the connection is shared).
#[derive(Clone)]
pub struct RedisRateLimitStore {
    redis: Redis,
}

#[async_trait]
impl RateLimitStore for RedisRateLimitStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        let (_, window_end) = fixed_window(window, now);
        let until_end = now.secs_until(window_end).max(1);
        let counter = format!("{}rate:{{{key}}}", self.redis.prefix);
        let reply: (u8, u64) = self
            .redis
            .run(
                HIT.key(counter)
                    .arg(limit)
                    .arg(window_end.as_unix())
                    .arg(until_end.min(MAX_SECS)),
            )
            .await?;
        match reply {
            (1, hits) => u32::try_from(hits)
                .ok()
                .and_then(|hits| limit.checked_sub(hits))
                .map(|remaining| RateDecision::Allowed { remaining })
                .ok_or_else(|| corrupt_reply("hit", reply)),
            (0, _) => Ok(RateDecision::Limited {
                retry_after: Duration::from_secs(until_end),
            }),
            other => Err(corrupt_reply("hit", other)),
        }
    }

    async fn hit_sliding(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        let (window_secs, window_end) = fixed_window(window, now);
        // Kept a window longer than `hit`'s: its hits are the next window's `p`.
        let ttl = now.secs_until(window_end).max(1) + window_secs;
        let counter = format!("{}rate:{{{key}}}", self.redis.prefix);
        let reply: (u8, u64, u64) = self
            .redis
            .run(
                SLIDE
                    .key(counter)
                    .arg(limit)
                    .arg(window_end.as_unix())
                    .arg(window_secs)
                    .arg(now.as_unix())
                    .arg(ttl.min(MAX_SECS)),
            )
            .await?;
        let (allowed, previous, current) = reply;
        let count = |n: u64| u32::try_from(n).map_err(|_| corrupt_reply("hit_sliding", reply));
        let decision = sliding_estimate(
            limit,
            Duration::from_secs(window_secs),
            window_end,
            now,
            count(previous)?,
            // Allowed: the count before this hit decided.
            count(current)?
                .checked_sub(u32::from(allowed == 1))
                .ok_or_else(|| corrupt_reply("hit_sliding", reply))?,
        );
        match (allowed, decision) {
            (1, RateDecision::Allowed { .. }) | (0, RateDecision::Limited { .. }) => Ok(decision),
            _ => Err(corrupt_reply("hit_sliding", reply)),
        }
    }

    async fn take_back(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (_, window_end) = fixed_window(window, now);
        let window_end = window_end.as_unix();
        let counter = format!("{}rate:{{{key}}}", self.redis.prefix);
        let _: i64 = self
            .redis
            .run(TAKE_BACK.key(counter).arg(window_end))
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_are_trimmed_and_empty_entries_dropped() {
        assert_eq!(
            node_urls(" redis://a:1, ,redis://b:2 ,"),
            ["redis://a:1", "redis://b:2"]
        );
        assert!(node_urls(" , ").is_empty());
    }
}
