//! [`PgUserStore`]: a PostgreSQL [`UserStore`] (tokio-postgres, pipelined).
//!
//! The schema lives in `migrations/postgres`, embedded in the binary; apply it with
//! [`PgUserStore::migrate`] at startup (it is idempotent, and safe to run from several
//! instances at once). Queries are checked at runtime, so building needs no database.
//!
//! ```no_run
//! use refsys_core::postgres::PgUserStore;
//!
//! # async fn run() -> Result<(), refsys_core::StoreError> {
//! let store = PgUserStore::connect("postgres://refsys@127.0.0.1/refsys").await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every [`UserStore`] method is one statement, or a few run one after another where each is
//! complete on its own; the module source explains how each stays atomic when many server
//! instances share the database.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use tokio::runtime::{self, Handle};
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls, Row, Statement};

/// How to reach PostgreSQL (host, port, user, password, database, …), for
/// [`PgUserStore::connect_with`]; parse one from a URL or a `key=value` string.
pub use tokio_postgres::Config;

use crate::sql::{invite_code, migrate_error, phone, registered, registration, store_error, unix};
use crate::store::{Activation, INVITE_CODE_TRIES, Rotation, UserStore};
use crate::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, UserId,
};

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a call waits for a new connection to open before it fails with
/// [`StoreError::Unavailable`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections [`PgUserStore::connect`] opens at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;

/// A PostgreSQL [`UserStore`].
///
/// Cloning is cheap: clones share one set of connections.
///
/// # Connections, shared and pipelined
///
/// Every call is a single statement, or a few run one after another (an activation is one
/// call of the `refsys_activate_invite` function, which runs in a transaction of its own). So
/// calls do not need a connection to themselves: they share a few, and the statements of
/// concurrent calls are *pipelined* on them, sent without waiting for the answers before them.
/// One write to the socket then carries many statements and one read many answers, and the
/// database serves them without going back to sleep in between. In the benchmarks this
/// raised the PostgreSQL profile reads from 18.9k to 24.2k/s (axum) and from 20.7k to
/// 31.4k/s (actix), against one pooled connection per call (`benches/README.md`). Each
/// connection prepares a statement on its first use and reuses it from then on.
///
/// Connections open on demand, at most [`DEFAULT_MAX_CONNECTIONS`] (or what
/// [`connect_with`](Self::connect_with) says). A call goes to the open connection with the
/// fewest calls in flight, and a new connection opens only when every open one has more than
/// eight: a few connections with deep pipelines cost both sides fewer system calls and
/// wake-ups per statement than many with shallow ones.
/// Opening one waits at most three seconds, then the call fails with
/// [`StoreError::Unavailable`]; while the database is down calls fail that way, and when it
/// comes back the store reconnects by itself. A call that fails leaves its connection usable
/// (a statement either runs whole or not at all); a call that is cancelled (its request
/// dropped) after sending a statement does not stop it, since it is already on its way: like
/// a request whose answer was lost, it may have taken effect.
///
/// Pipelining has one cost: a statement that waits for a lock (an activation waiting for
/// another to finish, a login racing another login of the same phone) holds up the
/// statements queued behind it on its connection until it is done, usually a few
/// milliseconds. Calls arriving meanwhile go to less busy connections.
///
/// # Connections per Tokio runtime
///
/// A connection's socket belongs to the Tokio runtime it was opened on: that runtime's
/// reactor learns when the database answered, and wakes the waiting task even if it runs
/// on another runtime, which costs a thread wake-up per query. actix-web runs one
/// single-threaded runtime per worker, so with one shared pool most of its queries paid
/// that. So the store keeps connections per runtime that calls it, and a call only ever
/// uses connections of its own runtime: in the benchmarks this raised the actix server's
/// PostgreSQL profile reads by 10–17 % (`benches/README.md`).
///
/// The runtimes share the `max_connections` budget evenly (the first ones get the
/// remainder), at least one connection each; a runtime's share returns to the others when it
/// shuts down, and its connections are closed. A runtime whose share shrank closes the
/// connections beyond it once their calls are done, on its next turn to run (a connection is
/// driven by a task on its runtime). With one runtime (axum, `#[tokio::main]`)
/// nothing changes. A connection never outlives the runtime it was opened on, so a store
/// made in one runtime keeps working in another after the first has shut down.
#[derive(Clone)]
pub struct PgUserStore {
    pools: Arc<Pools>,
}

impl fmt::Debug for PgUserStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pools = self.pools.read();
        f.debug_struct("PgUserStore")
            .field("max_connections", &self.pools.max_connections)
            .field("runtimes", &pools.len())
            .field(
                "open_connections",
                &pools.iter().map(|(_, lanes)| lanes.open()).sum::<usize>(),
            )
            .finish()
    }
}

/// Each runtime's connections, in the order the runtimes first called the store.
type RuntimePools = Vec<(runtime::Id, Arc<Lanes>)>;

/// The connections of a store, per Tokio runtime that called it.
struct Pools {
    config: Config,
    max_connections: usize,
    by_runtime: RwLock<RuntimePools>,
}

impl Pools {
    fn read(&self) -> RwLockReadGuard<'_, RuntimePools> {
        // A panic while holding the lock cannot leave the list half-changed.
        self.by_runtime
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, RuntimePools> {
        self.by_runtime
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connections of the runtime this is called on, made on its first call.
    fn current(self: &Arc<Self>) -> Result<Arc<Lanes>, StoreError> {
        let runtime = Handle::try_current()
            .map_err(|_| StoreError::unavailable("PgUserStore called outside a Tokio runtime"))?;
        let id = runtime.id();
        if let Some(lanes) = lanes_of(&self.read(), id) {
            return Ok(lanes);
        }
        let lanes = {
            let mut pools = self.write();
            if let Some(lanes) = lanes_of(&pools, id) {
                return Ok(lanes);
            }
            let lanes = Arc::new(Lanes::new(self.max_connections));
            pools.push((id, Arc::clone(&lanes)));
            share(&pools, self.max_connections);
            lanes
        };
        // A task that never ends, dropped with its runtime: the runtime's connections go with
        // it. Spawned without the lock held, since a runtime that is shutting down drops it
        // here.
        let forget = ForgetRuntime {
            pools: Arc::downgrade(self),
            id,
        };
        drop(runtime.spawn(async move {
            let _forget = forget;
            std::future::pending::<()>().await;
        }));
        Ok(lanes)
    }
}

/// The connections of runtime `id`, if it has any.
fn lanes_of(pools: &RuntimePools, id: runtime::Id) -> Option<Arc<Lanes>> {
    pools
        .iter()
        .find(|(of, _)| *of == id)
        .map(|(_, lanes)| Arc::clone(lanes))
}

/// Splits `max_connections` over `pools`, at least one each.
fn share(pools: &RuntimePools, max_connections: usize) {
    let (each, rest) = (max_connections / pools.len(), max_connections % pools.len());
    for (i, (_, lanes)) in pools.iter().enumerate() {
        lanes.resize((each + usize::from(i < rest)).max(1));
    }
}

/// Removes a runtime's connections when the runtime shuts down (and drops this).
struct ForgetRuntime {
    pools: Weak<Pools>,
    id: runtime::Id,
}

impl Drop for ForgetRuntime {
    fn drop(&mut self) {
        let Some(pools) = self.pools.upgrade() else {
            return;
        };
        let gone = {
            let mut list = pools.write();
            let gone = list
                .iter()
                .position(|(of, _)| *of == self.id)
                .map(|at| list.remove(at));
            if !list.is_empty() {
                share(&list, pools.max_connections);
            }
            gone
        };
        // Its connections close here, outside the lock.
        drop(gone);
    }
}

/// One runtime's connections: up to `max_connections` slots, of which the first `share` are
/// in use.
struct Lanes {
    slots: Box<[Slot]>,
    share: AtomicUsize,
}

/// A place for one connection.
#[derive(Default)]
struct Slot {
    conn: RwLock<Option<Arc<Conn>>>,
    /// Held while the connection opens, so that callers waiting for it do not open more.
    opening: Mutex<()>,
    /// Calls using (or waiting for) this slot's connection.
    in_flight: AtomicUsize,
}

impl Slot {
    /// Its connection, if it has one that is still open.
    fn open(&self) -> Option<Arc<Conn>> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|conn| !conn.client.is_closed())
            .map(Arc::clone)
    }

    /// Whether it has a connection that is still open (without taking a reference to it).
    fn is_open(&self) -> bool {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|conn| !conn.client.is_closed())
    }

    fn set(&self, conn: Option<Arc<Conn>>) -> Option<Arc<Conn>> {
        std::mem::replace(
            &mut self.conn.write().unwrap_or_else(PoisonError::into_inner),
            conn,
        )
    }
}

impl Lanes {
    fn new(max_connections: usize) -> Self {
        Self {
            slots: (0..max_connections).map(|_| Slot::default()).collect(),
            share: AtomicUsize::new(max_connections),
        }
    }

    /// Connections open now.
    fn open(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_open()).count()
    }

    /// Uses the first `share` slots from now on, and closes the connections of the others
    /// (once the calls still using them are done).
    fn resize(&self, share: usize) {
        let share = share.clamp(1, self.slots.len());
        self.share.store(share, Ordering::Relaxed);
        for slot in &self.slots[share..] {
            drop(slot.set(None));
        }
    }

    /// The slot for the next call: the open connection with the fewest calls in flight,
    /// unless every open one has more than [`PIPELINE_DEPTH`], then a new connection. Ties
    /// go to the lowest slot, which keeps the connections in use packed at the front.
    fn pick(&self) -> usize {
        let share = self.share.load(Ordering::Relaxed).min(self.slots.len());
        let cost = |slot: &Slot| match slot.in_flight.load(Ordering::Relaxed) {
            // An empty slot, or one whose connection broke: opening one costs a connection.
            0 if !slot.is_open() => PIPELINE_DEPTH,
            calls => calls,
        };
        (0..share)
            .min_by_key(|&at| cost(&self.slots[at]))
            .unwrap_or(0)
    }
}

/// How many calls in flight on every open connection (of a runtime) make the store open
/// another: with fewer connections each carries a deeper pipeline, and a deeper pipeline costs
/// both sides fewer system calls and wake-ups per statement.
const PIPELINE_DEPTH: usize = 8;

/// A connection and the statements it has prepared.
struct Conn {
    client: Client,
    prepared: [OnceCell<Statement>; Sql::COUNT],
}

/// The statements the store runs.
#[derive(Clone, Copy)]
enum Sql {
    FindUser,
    InsertUser,
    Profile,
    Activate,
    StartFamily,
    RotateRefresh,
    RevokeFamily,
    Ping,
}

// Every statement has a place in `Conn::prepared`.
const _: () = assert!(Sql::Ping as usize + 1 == Sql::COUNT);

impl Sql {
    /// How many there are (`Ping` is the last).
    const COUNT: usize = 8;

    fn text(self) -> &'static str {
        match self {
            Sql::FindUser => "SELECT id, invite_code FROM users WHERE phone = $1",
            // A concurrent insert of the same phone makes this wait for it, then do nothing;
            // the read after it (a new statement, so a new snapshot) then sees that user. A
            // taken code fails the unique constraint and is replaced. Nothing is checked first.
            Sql::InsertUser => {
                "INSERT INTO users (phone, invite_code) VALUES ($1, $2) \
                 ON CONFLICT (phone) DO NOTHING RETURNING id"
            }
            // One round trip, one snapshot: the invitees come as an array, oldest activation
            // first (an index range scan of users_invited_by_idx).
            Sql::Profile => {
                "SELECT u.phone, u.invite_code, inviter.invite_code, \
                        ARRAY(SELECT g.phone FROM users g WHERE g.invited_by = u.id \
                              ORDER BY g.activation_seq) \
                 FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by \
                 WHERE u.id = $1"
            }
            // The migration that creates the function explains why activations cannot close
            // a cycle.
            Sql::Activate => "SELECT refsys_activate_invite($1, $2)",
            // Families past their expiry can never rotate again; each new family sweeps out a
            // few (an index range scan), so the table stays bounded by live families.
            Sql::StartFamily => {
                "WITH swept AS ( \
                   DELETE FROM refresh_families WHERE family_id IN ( \
                     SELECT family_id FROM refresh_families WHERE expires_at <= $4 LIMIT 16 \
                     FOR UPDATE SKIP LOCKED)) \
                 INSERT INTO refresh_families (family_id, user_id, live_jti, started_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)"
            }
            // A live, unexpired family either rotates (the presented token is the live one) or
            // is revoked (it is not: a spent token came back). SET expressions see the row
            // before the update and RETURNING the row after, so `revoked` tells which
            // happened; no row means unknown, revoked or expired. Concurrent rotations of one
            // token queue on the row lock and each re-checks the row as the previous one left
            // it: the first rotates, the next finds a different live token and revokes, the
            // rest find the family revoked.
            Sql::RotateRefresh => {
                "UPDATE refresh_families \
                 SET live_jti = CASE WHEN live_jti = $2 THEN $3 ELSE live_jti END, \
                     expires_at = CASE WHEN live_jti = $2 THEN $5 ELSE expires_at END, \
                     revoked = (live_jti <> $2) \
                 WHERE family_id = $1 AND NOT revoked AND expires_at > $4 \
                 RETURNING revoked"
            }
            Sql::RevokeFamily => "UPDATE refresh_families SET revoked = TRUE WHERE family_id = $1",
            Sql::Ping => "SELECT 1",
        }
    }
}

/// Parameters of a statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A call's use of a connection.
struct Lease {
    conn: Arc<Conn>,
    _counted: InFlight,
}

/// Counts a call in its slot's calls in flight until dropped, also while the slot's
/// connection opens.
struct InFlight {
    lanes: Arc<Lanes>,
    slot: usize,
}

impl InFlight {
    fn new(lanes: Arc<Lanes>, slot: usize) -> Self {
        lanes.slots[slot].in_flight.fetch_add(1, Ordering::Relaxed);
        Self { lanes, slot }
    }

    fn slot(&self) -> &Slot {
        &self.lanes.slots[self.slot]
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lease {
    /// `sql`, prepared on this connection (on its first use).
    async fn statement(&self, sql: Sql) -> Result<&Statement, StoreError> {
        self.conn.prepared[sql as usize]
            .get_or_try_init(|| self.conn.client.prepare(sql.text()))
            .await
            .map_err(pg_error)
    }

    async fn query_opt(&self, sql: Sql, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql).await?;
        self.conn
            .client
            .query_opt(statement, params)
            .await
            .map_err(pg_error)
    }

    async fn execute(&self, sql: Sql, params: Params<'_>) -> Result<u64, StoreError> {
        let statement = self.statement(sql).await?;
        self.conn
            .client
            .execute(statement, params)
            .await
            .map_err(pg_error)
    }
}

/// Column `at` of `row`; a value the store cannot read means the database is corrupt.
fn column<'a, T: FromSql<'a>>(row: &'a Row, at: usize) -> Result<T, StoreError> {
    row.try_get(at)
        .map_err(|error| StoreError::corrupt(format_args!("PostgreSQL row: {error}")))
}

/// Maps a driver error: the database is not serving us. A server error keeps its SQLSTATE
/// and message, not its detail (which can quote the row's values).
fn pg_error(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::unavailable(format_args!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => match std::error::Error::source(&error) {
            Some(cause) => StoreError::unavailable(format_args!("PostgreSQL: {error}: {cause}")),
            None => StoreError::unavailable(format_args!("PostgreSQL: {error}")),
        },
    }
}

/// Whether `error` is a unique violation of the named constraint.
fn violates(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
    })
}

/// A call that got no connection within [`CONNECT_TIMEOUT`].
fn no_connection_in_time() -> StoreError {
    StoreError::unavailable(format_args!(
        "no PostgreSQL connection within {CONNECT_TIMEOUT:?}"
    ))
}

impl PgUserStore {
    /// A store for `url` (`postgres://user:password@host:port/database`, or the `key=value`
    /// form), with at most [`DEFAULT_MAX_CONNECTIONS`] connections; see
    /// [the connections](Self#connections-shared-and-pipelined).
    ///
    /// Connections open on demand, so this fails only for a malformed URL: call
    /// [`ping`](UserStore::ping) or [`migrate`](Self::migrate) to check that the database
    /// answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config = Config::from_str(url)
            .map_err(|error| StoreError::unavailable(format!("invalid PostgreSQL URL: {error}")))?;
        Ok(Self::connect_with(config, DEFAULT_MAX_CONNECTIONS))
    }

    /// A store of at most `max_connections` connections made with `config` (hosts,
    /// credentials, timeouts, keepalives, …); see
    /// [the connections](Self#connections-shared-and-pipelined). Connections are not
    /// encrypted: TLS is not built in. Nothing connects yet: call [`ping`](UserStore::ping)
    /// or [`migrate`](Self::migrate) to check that the database answers. A
    /// `max_connections` of 0 counts as 1.
    pub fn connect_with(config: Config, max_connections: usize) -> Self {
        Self {
            pools: Arc::new(Pools {
                config,
                max_connections: max_connections.max(1),
                by_runtime: RwLock::new(Vec::new()),
            }),
        }
    }

    /// A connection of the calling runtime for one call.
    async fn lease(&self) -> Result<Lease, StoreError> {
        let lanes = self.pools.current()?;
        let at = lanes.pick();
        let counted = InFlight::new(lanes, at);
        let conn = match counted.slot().open() {
            Some(conn) => conn,
            None => tokio::time::timeout(CONNECT_TIMEOUT, self.open(&counted))
                .await
                .map_err(|_| no_connection_in_time())??,
        };
        Ok(Lease {
            conn,
            _counted: counted,
        })
    }

    /// Opens the connection of the call's slot, unless a call that got there first did.
    async fn open(&self, call: &InFlight) -> Result<Arc<Conn>, StoreError> {
        let slot = call.slot();
        let _opening = slot.opening.lock().await;
        if let Some(conn) = slot.open() {
            return Ok(conn);
        }
        let (client, connection) = self.pools.config.connect(NoTls).await.map_err(pg_error)?;
        // The connection's socket is driven by a task on this runtime; it ends when the client
        // is dropped (after the answers still due) or the connection breaks.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a PostgreSQL connection ended");
            }
        });
        let conn = Arc::new(Conn {
            client,
            prepared: Default::default(),
        });
        // A slot that went out of use meanwhile (another runtime came) serves this call only.
        if call.slot < call.lanes.share.load(Ordering::Relaxed) {
            drop(slot.set(Some(Arc::clone(&conn))));
        }
        Ok(conn)
    }

    /// Creates or updates the schema (the embedded `migrations/postgres`).
    ///
    /// Idempotent: migrations already applied are skipped. Concurrent calls from several
    /// instances are safe (sqlx holds an advisory lock while migrating). Fails with
    /// [`StoreError::Corrupt`] if the database has migrations this build does not know or
    /// whose contents changed.
    ///
    /// It runs on a connection of its own, closed when it is done: migrating is a start-up
    /// step, often on a runtime that serves nothing afterwards (actix-web's main one), which
    /// would otherwise keep connections and a share of the connection budget.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let options = migration_options(&self.pools.config)?;
        let mut conn =
            tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| no_connection_in_time())?
                .map_err(store_error)?;
        let result = MIGRATOR.run(&mut conn).await.map_err(migrate_error);
        // Closing says goodbye to the server; if that fails the socket is dropped anyway.
        let _ = conn.close().await;
        result
    }
}

/// The same server, user and database for sqlx, which applies the migrations (the first host
/// and port of `config`).
fn migration_options(config: &Config) -> Result<PgConnectOptions, StoreError> {
    let mut options = PgConnectOptions::new_without_pgpass();
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => options = options.host(host),
        #[cfg(unix)]
        Some(Host::Unix(dir)) => options = options.socket(dir),
        None => {}
    }
    if let Some(&port) = config.get_ports().first() {
        options = options.port(port);
    }
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(password) = config.get_password() {
        let password = std::str::from_utf8(password)
            .map_err(|_| StoreError::unavailable("the PostgreSQL password is not UTF-8"))?;
        options = options.password(password);
    }
    if let Some(database) = config.get_dbname() {
        options = options.database(database);
    }
    if let Some(name) = config.get_application_name() {
        options = options.application_name(name);
    }
    Ok(options)
}

/// The user registered with `phone_number`, if any.
async fn find_user(conn: &Lease, phone_number: &Phone) -> Result<Option<Registration>, StoreError> {
    let Some(row) = conn
        .query_opt(Sql::FindUser, &[&phone_number.as_str()])
        .await?
    else {
        return Ok(None);
    };
    registered(phone_number, (column(&row, 0)?, column(&row, 1)?)).map(Some)
}

#[async_trait]
impl UserStore for PgUserStore {
    async fn find_or_create(
        &self,
        phone_number: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
    ) -> Result<Registration, StoreError> {
        let conn = self.lease().await?;
        // The common case, a returning user, is one read that writes nothing.
        if let Some(found) = find_user(&conn, phone_number).await? {
            return Ok(found);
        }
        let statement = conn.statement(Sql::InsertUser).await?;
        for _ in 0..INVITE_CODE_TRIES {
            let code = new_code();
            let inserted = conn
                .conn
                .client
                .query_opt(statement, &[&phone_number.as_str(), &code.as_str()])
                .await;
            match inserted {
                Ok(Some(row)) => {
                    return Ok(registration(phone_number, column(&row, 0)?, code, true));
                }
                Ok(None) => {
                    if let Some(found) = find_user(&conn, phone_number).await? {
                        return Ok(found);
                    }
                    // Deleted between the two statements: try again.
                }
                Err(error) if violates(&error, "users_invite_code_unique") => {}
                Err(error) => return Err(pg_error(error)),
            }
        }
        Err(StoreError::Exhausted(format!(
            "no free invite code in {INVITE_CODE_TRIES} tries"
        )))
    }

    async fn profile(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        let conn = self.lease().await?;
        let Some(row) = conn.query_opt(Sql::Profile, &[&user.0]).await? else {
            return Ok(None);
        };
        drop(conn);
        let invitees: Vec<&str> = column(&row, 3)?;
        Ok(Some(Profile {
            phone: phone(column(&row, 0)?)?,
            own_invite_code: invite_code(column(&row, 1)?)?,
            activated_invite_code: column::<Option<&str>>(&row, 2)?
                .map(invite_code)
                .transpose()?,
            invited_users: invitees.into_iter().map(phone).collect::<Result<_, _>>()?,
        }))
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
    ) -> Result<Activation, StoreError> {
        let conn = self.lease().await?;
        let row = conn
            .query_opt(Sql::Activate, &[&user.0, &code.as_str()])
            .await?
            .ok_or_else(|| StoreError::corrupt("refsys_activate_invite answered no row"))?;
        Ok(match column::<&str>(&row, 0)? {
            "unknown_user" => Activation::UnknownUser,
            "not_found" => Activation::NotFound,
            "own_code" => Activation::OwnCode,
            "already_activated" => Activation::AlreadyActivated,
            "cycle" => Activation::Cycle,
            "activated" => Activation::Activated,
            other => {
                return Err(StoreError::corrupt(format_args!(
                    "refsys_activate_invite answered {other:?}"
                )));
            }
        })
    }

    async fn start_family(
        &self,
        user: UserId,
        family: &FamilyId,
        jti: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let conn = self.lease().await?;
        conn.execute(
            Sql::StartFamily,
            &[
                &family.as_str(),
                &user.0,
                &jti.as_str(),
                &unix(now),
                &unix(expires_at),
            ],
        )
        .await
        .map(drop)
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let conn = self.lease().await?;
        let row = conn
            .query_opt(
                Sql::RotateRefresh,
                &[
                    &family.as_str(),
                    &presented.as_str(),
                    &next.as_str(),
                    &unix(now),
                    &unix(expires_at),
                ],
            )
            .await?;
        Ok(match row.map(|row| column::<bool>(&row, 0)).transpose()? {
            Some(false) => Rotation::Rotated,
            Some(true) => Rotation::Reused,
            None => Rotation::Revoked,
        })
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        let conn = self.lease().await?;
        conn.execute(Sql::RevokeFamily, &[&family.as_str()])
            .await
            .map(drop)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.lease().await?;
        conn.execute(Sql::Ping, &[]).await.map(drop)
    }
}
