//! A real Redis for tests: a fresh key prefix per test, and its cleanup; on a single node or
//! on a Redis Cluster.
//!
//! Tests run against the Redis at `REDIS_URL` (default [`DEFAULT_URL`]). Each test takes its
//! own prefix, so tests run in parallel on one Redis without seeing each other's keys:
//!
//! ```no_run
//! use refsys_test_support::redis::fresh_prefix;
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
//!
//! # Redis Cluster
//!
//! [`fresh_cluster_prefix`] and [`with_fresh_cluster_prefix`] do the same on a Redis Cluster:
//! the one whose nodes `REDIS_CLUSTER_URLS` lists (comma-separated `redis://` URLs), or else
//! a [`LocalCluster`] of three primaries that the test binary starts on first use and shares
//! between its tests (each test still has its own prefix). That needs `redis-server` (7 or
//! later) and `redis-cli` on `PATH`.
//!
//! The processes of a [`LocalCluster`] never outlive the test binary, however it ends
//! (tests pass, fail, or the binary is killed): the shared cluster lives in a `static`, whose
//! destructor Rust never runs, so each cluster also starts a small watchdog (`sh`) that holds
//! the read end of a pipe from the test process. When the test process exits, the kernel
//! closes the pipe, the watchdog reads end-of-file and kills the servers and deletes their
//! directory. A cluster owned by a test (`LocalCluster::start()` in the test) is also
//! stopped when dropped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use refsys_core::redis_store::{self, RedisConnection, RedisOtpStore, RedisRateLimitStore};
/// The Redis used when `REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable that points the cluster tests at an existing Redis Cluster:
/// comma-separated node URLs, e.g. `redis://10.0.0.1:6379,redis://10.0.0.2:6379`.
pub const CLUSTER_URLS_VAR: &str = "REDIS_CLUSTER_URLS";

/// A connection to the test Redis and a key prefix no other test uses.
#[derive(Clone)]
pub struct TestRedis {
    /// The Redis URL (`REDIS_URL`, or [`DEFAULT_URL`]); on a cluster, the node URLs separated
    /// by commas (the format of `REDIS_CLUSTER_URLS`).
    pub url: String,
    /// The key prefix, `refsys-test:<random hex>:`.
    pub prefix: String,
    /// A connection to the test Redis (or cluster).
    pub conn: RedisConnection,
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
    TestRedis {
        url,
        prefix: new_prefix(),
        conn,
    }
}

fn new_prefix() -> String {
    format!("refsys-test:{:016x}:", rand::random::<u64>())
}

/// The node URLs of the test cluster: `REDIS_CLUSTER_URLS` if set, or else those of a
/// [`LocalCluster`] started on the first call and shared by the whole test binary.
///
/// Blocks while the local cluster starts (a few seconds); from async code prefer
/// [`fresh_cluster_prefix`], which does this on a blocking thread.
///
/// # Panics
///
/// If the local cluster cannot start (see [`LocalCluster::start`]).
pub fn cluster_urls() -> Vec<String> {
    if let Ok(list) = std::env::var(CLUSTER_URLS_VAR) {
        let urls = redis_store::node_urls(&list);
        if !urls.is_empty() {
            return urls;
        }
    }
    static SHARED: OnceLock<LocalCluster> = OnceLock::new();
    SHARED.get_or_init(LocalCluster::start).urls().to_vec()
}

/// Connects to the test cluster (see [`cluster_urls`]) and makes a fresh key prefix.
///
/// # Panics
///
/// If the cluster cannot be started or reached.
pub async fn fresh_cluster_prefix() -> TestRedis {
    let urls = tokio::task::spawn_blocking(cluster_urls)
        .await
        .unwrap_or_else(|error| match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("starting the test cluster did not finish: {error}"),
        });
    let conn = match redis_store::connect_cluster(&urls).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "these tests need a Redis Cluster: could not reach the one at {} ({error}). \
             Unset {CLUSTER_URLS_VAR} to start a local one (needs redis-server and redis-cli), \
             or point it at a running cluster.",
            urls.iter()
                .map(|url| without_password(url))
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    TestRedis {
        url: urls.join(","),
        prefix: new_prefix(),
        conn,
    }
}

/// [`with_fresh_prefix`] on the test cluster: runs `case` with a fresh prefix from
/// [`fresh_cluster_prefix`], then deletes the prefix's keys, also when `case` panics.
///
/// # Panics
///
/// If the cluster cannot be started or reached, or `case` panics.
pub async fn with_fresh_cluster_prefix<F, Fut>(case: F)
where
    F: FnOnce(TestRedis) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_and_clean_up(fresh_cluster_prefix().await, case).await;
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
    run_and_clean_up(fresh_prefix().await, case).await;
}

async fn run_and_clean_up<F, Fut>(redis: TestRedis, case: F)
where
    F: FnOnce(TestRedis) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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

    /// Every key under the prefix, sorted (on a cluster, from every primary).
    ///
    /// # Panics
    ///
    /// If Redis fails.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.keys_by_node().await.into_values().flatten().collect();
        keys.sort();
        keys
    }

    /// Every key under the prefix, sorted, by the node that holds it: `host:port` of each
    /// cluster primary (every primary appears, with no keys if it holds none), or the one
    /// entry `""` on a single node.
    ///
    /// # Panics
    ///
    /// If Redis fails.
    pub async fn keys_by_node(&self) -> BTreeMap<String, Vec<String>> {
        let mut nodes = BTreeMap::new();
        match &self.conn {
            RedisConnection::Cluster(cluster) => {
                for (host, port) in primaries(&mut self.conn.clone()).await {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    });
                    let mut keys = scan(&self.prefix, |scan| {
                        let (mut cluster, route) = (cluster.clone(), route.clone());
                        async move { cluster.route_command(scan, route).await }
                    })
                    .await;
                    keys.sort();
                    nodes.insert(format!("{host}:{port}"), keys);
                }
            }
            _ => {
                let mut keys = scan(&self.prefix, |scan| {
                    let mut conn = self.conn.clone();
                    async move { scan.query_async(&mut conn).await }
                })
                .await;
                keys.sort();
                nodes.insert(String::new(), keys);
            }
        }
        nodes
    }

    /// Deletes every key under the prefix.
    ///
    /// # Panics
    ///
    /// If Redis fails.
    pub async fn cleanup(&self) {
        let keys = self.keys().await;
        unlink(&mut self.conn.clone(), &keys).await;
    }
}

async fn connect(url: &str) -> RedisConnection {
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

/// Every key under `prefix` on one node, SCANning with `send`.
async fn scan<F, Fut>(prefix: &str, send: F) -> Vec<String>
where
    F: Fn(redis::Cmd) -> Fut,
    Fut: Future<Output = redis::RedisResult<Value>>,
{
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, batch): (u64, Vec<String>) = send(cmd)
            .await
            .and_then(|reply| redis::from_redis_value(reply).map_err(Into::into))
            .unwrap_or_else(|error| panic!("Redis SCAN failed: {error}"));
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The `(host, port)` of every cluster primary that is not failing, from `CLUSTER NODES`.
async fn primaries(conn: &mut RedisConnection) -> Vec<(String, u16)> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(conn)
        .await
        .unwrap_or_else(|error| panic!("Redis CLUSTER NODES failed: {error}"));
    let mut primaries: Vec<(String, u16)> = nodes
        .lines()
        .filter_map(|line| {
            // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect();
    primaries.sort();
    primaries
}

async fn delete_prefix(conn: &mut RedisConnection, prefix: &str) {
    let keys = scan(prefix, |scan| {
        let mut conn = conn.clone();
        async move { scan.query_async(&mut conn).await }
    })
    .await;
    unlink(conn, &keys).await;
}

/// Deletes `keys`; on a cluster one by one, since keys of different slots cannot share a
/// command.
async fn unlink(conn: &mut RedisConnection, keys: &[String]) {
    let chunk = if conn.is_cluster() { 1 } else { 500 };
    for chunk in keys.chunks(chunk) {
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

/// A throw-away Redis Cluster of three primaries on `127.0.0.1`, for tests: `redis-server`
/// processes (cluster mode, no persistence) in a fresh temporary directory, on free ports,
/// joined with `redis-cli --cluster create` and ready (`cluster_state:ok` on every node) when
/// [`start`](Self::start) returns.
///
/// Dropping it kills the servers and deletes the directory. The processes also die with the
/// test process if it is never dropped (a `static`) or the process is killed: a watchdog
/// (`sh`) reading a pipe from the test process kills them when the pipe closes (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct LocalCluster {
    urls: Vec<String>,
    dir: PathBuf,
    servers: Vec<Child>,
    /// Kills `servers` when this pipe closes, unless told they are already reaped.
    watchdog: Option<(Child, ChildStdin)>,
}

/// How many primaries a [`LocalCluster`] has.
const CLUSTER_NODES: usize = 3;

/// The watchdog: collects server pids (one per line) until end-of-file, then kills whichever
/// were not reported reaped (SIGKILL: the servers keep nothing worth a clean shutdown), and
/// deletes the directory. Ignores SIGINT and SIGHUP, so a Ctrl-C
/// of the test run still cleans up.
const WATCHDOG: &str = r#"trap '' INT HUP
pids=
while read -r line; do
    case "$line" in
        reaped) pids= ;;
        *) pids="$pids $line" ;;
    esac
done
if [ -n "$pids" ]; then
    kill -9 $pids 2>/dev/null
fi
rm -rf "$1"
"#;

impl LocalCluster {
    /// Starts a cluster of three primaries and waits (up to about 30 seconds) until it
    /// serves every slot.
    ///
    /// # Panics
    ///
    /// If `redis-server` or `redis-cli` is missing, or the cluster does not come up (the
    /// message includes the servers' logs).
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "refsys-redis-cluster-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("refsys-redis-watchdog")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting the watchdog shell (sh): {error}"));
        let stdin = watchdog.stdin.take().expect("piped stdin");
        let mut cluster = Self {
            urls: Vec::new(),
            dir,
            servers: Vec::new(),
            watchdog: Some((watchdog, stdin)),
        };
        let ports = free_ports(CLUSTER_NODES);
        for &port in &ports {
            cluster.spawn_server(port);
        }
        cluster.urls = ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in &ports {
            cluster.wait_for(port, deadline, "PING", |reply| reply == "PONG");
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("running redis-cli --cluster create: {error}"));
        if !created.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}{}{}",
                created.status,
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr),
                cluster.logs()
            );
        }
        for &port in &ports {
            cluster.wait_for(port, deadline, "CLUSTER INFO", |info| {
                info.lines().any(|line| line.trim() == "cluster_state:ok")
            });
        }
        cluster
    }

    /// The node URLs, `redis://127.0.0.1:<port>`, one per primary.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The directory with the servers' cluster configuration and logs (`redis-<port>.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the `index`th primary (of [`urls`](Self::urls)), to test a node going away.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    pub fn stop_node(&mut self, index: usize) {
        let server = &mut self.servers[index];
        let _ = server.kill();
        let _ = server.wait();
    }

    fn spawn_server(&mut self, port: u16) {
        let server = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", &format!("redis-{port}.log")])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("these tests need redis-server on PATH to start a local cluster ({error}); or set {CLUSTER_URLS_VAR}")
            });
        if let Some((_, stdin)) = &mut self.watchdog {
            // If this fails the watchdog is gone; `Drop` still kills the server.
            let _ = writeln!(stdin, "{}", server.id());
        }
        self.servers.push(server);
    }

    /// Polls `command` on the node at `port` until `ready` accepts its reply.
    fn wait_for(
        &mut self,
        port: u16,
        deadline: Instant,
        command: &str,
        ready: impl Fn(&str) -> bool,
    ) {
        let url = format!("redis://127.0.0.1:{port}");
        loop {
            let reply = redis::Client::open(url.as_str())
                .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut conn| {
                    let mut cmd = redis::Cmd::new();
                    for word in command.split(' ') {
                        cmd.arg(word);
                    }
                    cmd.query::<String>(&mut conn)
                });
            let last = match reply {
                Ok(reply) if ready(&reply) => return,
                Ok(reply) => reply,
                Err(error) => error.to_string(),
            };
            for server in &mut self.servers {
                if let Ok(Some(status)) = server.try_wait() {
                    panic!(
                        "a redis-server of the test cluster exited ({status}):\n{}",
                        self.logs()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the test cluster node on port {port} did not get ready ({command}: {last}):\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of every server's log, for failure messages.
    fn logs(&self) -> String {
        let mut logs = String::new();
        for url in &self.urls {
            let port = url.rsplit(':').next().unwrap_or_default();
            let log = std::fs::read_to_string(self.dir.join(format!("redis-{port}.log")))
                .unwrap_or_else(|error| format!("(no log: {error})"));
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            logs.push_str(&format!("--- redis-{port}.log (end) ---\n"));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        if let Some((mut watchdog, mut stdin)) = self.watchdog.take() {
            // The pids are reaped and may be reused: the watchdog must not kill them.
            let _ = writeln!(stdin, "reaped");
            drop(stdin);
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` distinct ports on 127.0.0.1 that are free, and whose cluster bus port (+10000) is free
/// too.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == n {
            break;
        }
        let port = 20_000 + rand::random::<u16>() % 20_000;
        let (Ok(a), Ok(b)) = (
            std::net::TcpListener::bind(("127.0.0.1", port)),
            std::net::TcpListener::bind(("127.0.0.1", port + 10_000)),
        ) else {
            continue;
        };
        held.push((a, b));
        ports.push(port);
    }
    assert_eq!(ports.len(), n, "no free ports for the test cluster");
    ports
}
