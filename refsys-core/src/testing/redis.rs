//! A real Redis for tests: a fresh key prefix per test, and its cleanup.
//!
//! Tests run against the Redis at `REDIS_URL` (default [`DEFAULT_URL`]). Each test takes its
//! own prefix, so tests run in parallel on one Redis without seeing each other's keys:
//!
//! ```no_run
//! use refsys_core::testing::redis::fresh_prefix;
//!
//! # async fn run() {
//! let redis = fresh_prefix().await;
//! let otp = redis.otp_store();
//! // ... use `otp` ...
//! redis.cleanup().await;
//! # let _ = otp;
//! # }
//! ```
//!
//! [`with_fresh_prefix`] does the same and cleans up even when the test panics.
//!
//! If Redis cannot be reached the helpers panic with a message saying so: a test that needs
//! Redis fails loudly instead of passing without it.

use redis::aio::ConnectionManager;

use crate::redis_store::{self, RedisOtpStore, RedisRateLimitStore};

/// The Redis used when `REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// A connection to the test Redis and a key prefix no other test uses.
#[derive(Clone)]
pub struct TestRedis {
    /// The Redis URL (`REDIS_URL`, or [`DEFAULT_URL`]).
    pub url: String,
    /// The key prefix, `refsys-test:<random hex>:`.
    pub prefix: String,
    /// A connection to the test Redis.
    pub conn: ConnectionManager,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The URL of the test Redis: `REDIS_URL`, or [`DEFAULT_URL`].
pub fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Connects to the test Redis and makes a fresh key prefix.
///
/// # Panics
///
/// If Redis cannot be reached, with a message naming `REDIS_URL` and its default.
pub async fn fresh_prefix() -> TestRedis {
    let url = url();
    let conn = connect(&url).await;
    let prefix = format!("refsys-test:{:016x}:", rand::random::<u64>());
    TestRedis { url, prefix, conn }
}

/// Runs `case` with a fresh prefix, then deletes the prefix's keys, also when `case` panics
/// (the panic is then resumed).
///
/// # Panics
///
/// If Redis cannot be reached, or `case` panics.
pub async fn with_fresh_prefix<F, Fut>(case: F)
where
    F: FnOnce(TestRedis) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let redis = fresh_prefix().await;
    let outcome = tokio::spawn(case(redis.clone())).await;
    redis.cleanup().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test case did not finish: {error}"),
        }
    }
}

/// Deletes every key under `prefix` in the test Redis (for teardowns that only have a store,
/// e.g. `cleanup_prefix(store.prefix())`).
///
/// # Panics
///
/// If Redis cannot be reached.
pub async fn cleanup_prefix(prefix: &str) {
    delete_prefix(&mut connect(&url()).await, prefix).await;
}

impl TestRedis {
    /// An OTP store on this prefix.
    pub fn otp_store(&self) -> RedisOtpStore {
        RedisOtpStore::new(self.conn.clone()).with_prefix(self.prefix.clone())
    }

    /// A rate-limit store on this prefix.
    pub fn rate_limit_store(&self) -> RedisRateLimitStore {
        RedisRateLimitStore::new(self.conn.clone()).with_prefix(self.prefix.clone())
    }

    /// Every key under the prefix, sorted.
    ///
    /// # Panics
    ///
    /// If Redis fails.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = scan(&mut self.conn.clone(), &self.prefix).await;
        keys.sort();
        keys
    }

    /// Deletes every key under the prefix.
    ///
    /// # Panics
    ///
    /// If Redis fails.
    pub async fn cleanup(&self) {
        delete_prefix(&mut self.conn.clone(), &self.prefix).await;
    }
}

async fn connect(url: &str) -> ConnectionManager {
    match redis_store::connect(url).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "these tests need a running Redis: could not reach the one at {} ({error}). \
             Start Redis, or point the REDIS_URL environment variable at one \
             (default {DEFAULT_URL}).",
            without_password(url)
        ),
    }
}

/// `url` without its user info, which may hold a password.
fn without_password(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_owned(),
    }
}

async fn scan(conn: &mut ConnectionManager, prefix: &str) -> Vec<String> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap_or_else(|error| panic!("Redis SCAN failed: {error}"));
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

async fn delete_prefix(conn: &mut ConnectionManager, prefix: &str) {
    let keys = scan(conn, prefix).await;
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(conn)
            .await
            .unwrap_or_else(|error| panic!("Redis UNLINK failed: {error}"));
    }
}

/// `prefix` as a SCAN MATCH pattern that matches it literally.
fn glob_escape(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}
