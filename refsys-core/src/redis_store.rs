//! Redis stores: [`RedisOtpStore`] and [`RedisRateLimitStore`], shared by every server
//! instance that talks to the same Redis.
//!
//! Every trait method is **one Lua script** (sent as `EVALSHA`, loaded automatically when the
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
//! | `rate:{<key>}` | hash | `end` (end of the current fixed window, Unix seconds), `n` (hits in it) |
//!
//! for example `refsys:otp:{+375291234567}`. Codes are never stored, only their keyed hash.
//!
//! # Expiry
//!
//! Every key has a TTL, so Redis never keeps garbage. Each OTP write sets a phone's code and
//! sends keys to expire after the longer of [`OtpPolicy::code_ttl`] and
//! [`OtpPolicy::send_window`]: by then every code and every send the keys hold is dead anyway.
//! The `fails` key expires [`OtpPolicy::lockout`] after its last write (a miss or a lock), when
//! its count is forgotten or its lock ends. A rate-limit key expires when its window ends. TTLs only collect garbage; the decisions themselves use `now`.
//!
//! # Redis Cluster
//!
//! The part of a key in braces is a hash tag: all keys of one phone (or one rate-limit key)
//! live in the same slot, so every script touches one slot only and runs on Cluster unchanged.
//! (A prefix containing `{…}` makes its content the tag instead: still correct, but all keys
//! then share one slot.)
//!
//! # Durability
//!
//! Pending codes, cooldowns and counters live only in Redis. If Redis loses data (a restart
//! without persistence, a failover before replication), pending codes are lost — users ask
//! for a new one — and cooldowns, send windows and rate limits start over.
//!
//! # Connecting
//!
//! [`connect`] builds a [`ConnectionManager`] that reconnects by itself and gives up on a
//! connection attempt or a reply after two seconds, so a Redis that is down fails fast with
//! [`StoreError::Unavailable`]. Both stores can share one manager:
//!
//! ```no_run
//! use refsys_core::redis_store::{self, RedisOtpStore, RedisRateLimitStore};
//!
//! # async fn run() -> Result<(), refsys_core::StoreError> {
//! let conn = redis_store::connect("redis://127.0.0.1:6379").await?;
//! let otp = RedisOtpStore::new(conn.clone()).with_prefix("myapp:");
//! let limits = RedisRateLimitStore::new(conn).with_prefix("myapp:");
//! # let _ = (otp, limits);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation, ServerErrorKind};

use crate::store::{Check, Issue, OtpStore, RateDecision, RateLimitStore};
use crate::{OtpHash, OtpPolicy, Phone, StoreError, Timestamp};

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
static HIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis_store/hit.lua")));

/// Opens a [`ConnectionManager`] to `url` (e.g. `redis://127.0.0.1:6379`) with bounded
/// timeouts: two seconds to connect, two seconds per reply, one quick retry. The manager
/// reconnects by itself after a failure; clone it to share one connection between stores.
///
/// Fails with [`StoreError::Unavailable`] if the URL is invalid or Redis does not answer.
pub async fn connect(url: &str) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(store_error)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500));
    within_deadline(ConnectionManager::new_with_config(client, config)).await
}

/// The connection and key prefix both stores use.
#[derive(Clone)]
struct Redis {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl Redis {
    fn new(conn: ConnectionManager) -> Self {
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

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let reply: String = within_deadline(redis::cmd("PING").query_async(&mut conn)).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(StoreError::corrupt(format_args!(
                "unexpected PING reply {reply:?}"
            )))
        }
    }
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

fn corrupt_reply(script: &str, reply: (u8, u64)) -> StoreError {
    StoreError::corrupt(format_args!(
        "unexpected reply {reply:?} from the {script} script"
    ))
}

/// An [`OtpStore`] in Redis: pending codes, cooldowns, attempt counters and send windows,
/// shared by every instance. See the [module docs](self) for keys and TTLs.
///
/// Cloning is cheap (the connection is shared).
#[derive(Clone)]
pub struct RedisOtpStore {
    redis: Redis,
}

impl RedisOtpStore {
    /// A store on `conn`, with the [default prefix](DEFAULT_PREFIX).
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            redis: Redis::new(conn),
        }
    }

    /// Connects to `url` (see [`connect`]) and builds a store with the default prefix.
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

    fn keys(&self, phone: &Phone) -> [String; 3] {
        let code = format!("{}otp:{{{}}}", self.redis.prefix, phone.as_str());
        let sends = format!("{code}:sends");
        let fails = format!("{code}:fails");
        [code, sends, fails]
    }

    /// The code and sends keys expire after the longer of the code's life and the send window.
    fn key_ttl(policy: &OtpPolicy) -> u64 {
        secs(policy.code_ttl).max(secs(policy.send_window)).max(1)
    }
}

impl fmt::Debug for RedisOtpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOtpStore")
            .field("prefix", &self.redis.prefix)
            .finish_non_exhaustive()
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
        let [code_key, sends_key, fails_key] = self.keys(phone);
        let expires_at = now.as_unix().saturating_add(secs(policy.code_ttl));
        let reply: (u8, u64) = self
            .redis
            .run(
                ISSUE
                    .key(code_key)
                    .key(sends_key)
                    .key(fails_key)
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
        let [code_key, sends_key, fails_key] = self.keys(phone);
        let _: i64 = self
            .redis
            .run(
                CANCEL
                    .key(code_key)
                    .key(sends_key)
                    .key(fails_key)
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
        let [code_key, sends_key, fails_key] = self.keys(phone);
        let reply: (u8, u64) = self
            .redis
            .run(
                CHECK
                    .key(code_key)
                    .key(sends_key)
                    .key(fails_key)
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
            other => Err(corrupt_reply("check", other)),
        }
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

impl RedisRateLimitStore {
    /// A store on `conn`, with the [default prefix](DEFAULT_PREFIX).
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            redis: Redis::new(conn),
        }
    }

    /// Connects to `url` (see [`connect`]) and builds a store with the default prefix.
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

impl fmt::Debug for RedisRateLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitStore")
            .field("prefix", &self.redis.prefix)
            .finish_non_exhaustive()
    }
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
        let window_secs = secs(window).max(1);
        let window_end =
            Timestamp::from_unix((now.as_unix() / window_secs + 1).saturating_mul(window_secs));
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }
}
