//! [`PgUserStore`]: a PostgreSQL [`UserStore`] (sqlx).
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
//! Every [`UserStore`] method is one statement or one transaction; the module source explains
//! how each stays atomic when many server instances share the database.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool::managed::{self, Metrics, Object, Pool, PoolError, RecycleResult};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::runtime::{self, Handle};

use crate::sql::{invite_code, migrate_error, phone, registered, registration, store_error, unix};
use crate::store::{Activation, INVITE_CODE_TRIES, Rotation, UserStore};
use crate::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, UserId,
};

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a call waits for a pooled connection (or for a new one to open) before it fails
/// with [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections [`PgUserStore::connect`] opens at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;

/// The key of the transaction-scoped advisory lock that serializes invite activations
/// (`"refsys"` and 1 in ASCII hex, to keep clear of other applications' keys).
const ACTIVATION_LOCK: i64 = 0x7265_6673_7973_0001;

/// A PostgreSQL [`UserStore`].
///
/// Cloning is cheap: clones share one set of connections.
///
/// # The pool
///
/// Connections open on demand, at most [`DEFAULT_MAX_CONNECTIONS`] (or what
/// [`connect_with`](Self::connect_with) says). A call waits at most three seconds for a free
/// connection or a new one, then fails with [`StoreError::Unavailable`]; while the database is
/// down calls fail that way, and when it comes back the pool reconnects by itself.
///
/// A connection goes back to the pool only when the call that used it finished: a call that
/// failed or was cancelled half-way (its request dropped) may leave a transaction open or a
/// message half-sent, so its connection is closed instead, and PostgreSQL rolls back and
/// frees its locks. That is why connections need no check when they come back: sqlx's own
/// pool pings every connection it takes back, a second round trip for every query; without
/// it the PostgreSQL profile read served about 30 % more requests per second in the
/// benchmarks (`benches/README.md`). A connection that died with the database fails its next call
/// (503) and is replaced.
///
/// # One pool per Tokio runtime
///
/// A connection's socket belongs to the Tokio runtime it was opened on: that runtime's
/// reactor learns when the database answered, and wakes the waiting task even if it runs
/// on another runtime, which costs a thread wake-up per query. actix-web runs one
/// single-threaded runtime per worker, so with one shared pool most of its queries paid
/// that. So the store keeps a pool per runtime that calls it, and a call only ever uses
/// connections of its own runtime: in the benchmarks this raised the actix server's
/// PostgreSQL profile reads by 10–17 % (`benches/README.md`).
///
/// The runtimes share the `max_connections` budget evenly (the first ones get the
/// remainder), at least one connection each; a runtime's share returns to the others when it
/// shuts down, and its connections are closed. With one runtime (axum, `#[tokio::main]`)
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
                &pools
                    .iter()
                    .map(|(_, pool)| pool.status().size)
                    .sum::<usize>(),
            )
            .finish()
    }
}

/// Each runtime's pool, in the order the runtimes first called the store.
type RuntimePools = Vec<(runtime::Id, Pool<Connector>)>;

/// The pools of a store, one per Tokio runtime that called it.
struct Pools {
    options: PgConnectOptions,
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

    /// The pool of the runtime this is called on, made on its first call.
    fn current(self: &Arc<Self>) -> Result<Pool<Connector>, StoreError> {
        let runtime = Handle::try_current()
            .map_err(|_| StoreError::unavailable("PgUserStore called outside a Tokio runtime"))?;
        let id = runtime.id();
        if let Some(pool) = pool_of(&self.read(), id) {
            return Ok(pool);
        }
        let pool = {
            let mut pools = self.write();
            if let Some(pool) = pool_of(&pools, id) {
                return Ok(pool);
            }
            let pool = Pool::builder(Connector {
                options: self.options.clone(),
            })
            .max_size(self.max_connections)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .build()
            .map_err(|error| StoreError::unavailable(format!("PostgreSQL pool: {error}")))?;
            pools.push((id, pool.clone()));
            share(&pools, self.max_connections);
            pool
        };
        // A task that never ends, dropped with its runtime: the runtime's pool goes with it.
        // Spawned without the lock held, since a runtime that is shutting down drops it here.
        let forget = ForgetRuntime {
            pools: Arc::downgrade(self),
            id,
        };
        drop(runtime.spawn(async move {
            let _forget = forget;
            std::future::pending::<()>().await;
        }));
        Ok(pool)
    }
}

/// The pool of runtime `id`, if it has one.
fn pool_of(pools: &RuntimePools, id: runtime::Id) -> Option<Pool<Connector>> {
    pools
        .iter()
        .find(|(of, _)| *of == id)
        .map(|(_, pool)| pool.clone())
}

/// Splits `max_connections` over `pools`, at least one each.
fn share(pools: &RuntimePools, max_connections: usize) {
    let (each, rest) = (max_connections / pools.len(), max_connections % pools.len());
    for (i, (_, pool)) in pools.iter().enumerate() {
        pool.resize((each + usize::from(i < rest)).max(1));
    }
}

/// Removes a runtime's pool when the runtime shuts down (and drops this).
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
        // Its idle connections close here, outside the lock.
        drop(gone);
    }
}

/// Opens the pool's connections.
struct Connector {
    options: PgConnectOptions,
}

impl managed::Manager for Connector {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConnection, sqlx::Error> {
        self.options.connect().await
    }

    async fn recycle(&self, _: &mut PgConnection, _: &Metrics) -> RecycleResult<sqlx::Error> {
        // Only connections whose call finished come back (see `Lease`).
        Ok(())
    }
}

/// A pooled connection, returned to the pool by [`Lease::done`] when its call succeeded, and
/// closed otherwise (the call failed, or was cancelled and dropped the lease).
struct Lease {
    conn: Option<Object<Connector>>,
}

impl Lease {
    /// Ends the lease with the call's `result`: the connection goes back to the pool if the
    /// call succeeded, and is closed if it failed.
    fn done<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_ok() {
            drop(self.conn.take());
        }
        result
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Out of the pool, then closed.
            drop(Object::take(conn));
        }
    }
}

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until it ends"))
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until it ends"))
    }
}

impl PgUserStore {
    /// A store on a new pool for `url` (`postgres://user:password@host:port/database`), with
    /// at most [`DEFAULT_MAX_CONNECTIONS`] connections; see [the pool](Self#the-pool).
    ///
    /// Connections open on demand, so this fails only for a malformed URL: call
    /// [`ping`](UserStore::ping) or [`migrate`](Self::migrate) to check that the database
    /// answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| StoreError::unavailable(format!("invalid PostgreSQL URL: {error}")))?;
        Ok(Self::connect_with(options, DEFAULT_MAX_CONNECTIONS))
    }

    /// A store of at most `max_connections` connections made with `options` (host,
    /// credentials, TLS, statement cache, …); see [the pool](Self#the-pool).
    /// Nothing connects yet: call [`ping`](UserStore::ping) or [`migrate`](Self::migrate)
    /// to check that the database answers. A `max_connections` of 0 counts as 1.
    pub fn connect_with(options: PgConnectOptions, max_connections: usize) -> Self {
        Self {
            pools: Arc::new(Pools {
                options,
                max_connections: max_connections.max(1),
                by_runtime: RwLock::new(Vec::new()),
            }),
        }
    }

    /// A connection from the calling runtime's pool.
    async fn lease(&self) -> Result<Lease, StoreError> {
        match self.pools.current()?.get().await {
            Ok(conn) => Ok(Lease { conn: Some(conn) }),
            Err(PoolError::Backend(error)) => Err(store_error(error)),
            Err(PoolError::Timeout(_)) => Err(no_connection_in_time()),
            Err(error) => Err(StoreError::unavailable(format!("PostgreSQL pool: {error}"))),
        }
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
    /// would otherwise keep a pool and a share of the connection budget.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, self.pools.options.connect())
            .await
            .map_err(|_| no_connection_in_time())?
            .map_err(store_error)?;
        let result = MIGRATOR.run(&mut conn).await.map_err(migrate_error);
        // Closing says goodbye to the server; if that fails the socket is dropped anyway.
        let _ = conn.close().await;
        result
    }
}

/// A call that got no connection within [`ACQUIRE_TIMEOUT`].
fn no_connection_in_time() -> StoreError {
    StoreError::unavailable(format_args!(
        "no PostgreSQL connection within {ACQUIRE_TIMEOUT:?}"
    ))
}

/// Whether `error` is a unique violation of the named constraint.
fn violates(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// The user registered with `phone_number`, if any.
async fn find_user(
    conn: &mut PgConnection,
    phone_number: &Phone,
) -> Result<Option<Registration>, StoreError> {
    sqlx::query_as::<_, (i64, String)>("SELECT id, invite_code FROM users WHERE phone = $1")
        .bind(phone_number.as_str())
        .fetch_optional(conn)
        .await
        .map_err(store_error)?
        .map(|row| registered(phone_number, row))
        .transpose()
}

#[async_trait]
impl UserStore for PgUserStore {
    async fn find_or_create(
        &self,
        phone_number: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
    ) -> Result<Registration, StoreError> {
        let mut conn = self.lease().await?;
        let result = async {
            // The common case, a returning user, is one read that writes nothing.
            if let Some(found) = find_user(&mut conn, phone_number).await? {
                return Ok(found);
            }
            for _ in 0..INVITE_CODE_TRIES {
                let code = new_code();
                // A concurrent insert of the same phone makes this wait for it, then do
                // nothing; the read below (a new statement, so a new snapshot) then sees that
                // user. A taken code fails the unique constraint and is replaced. Nothing is
                // checked first.
                let inserted = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO users (phone, invite_code) VALUES ($1, $2) \
                     ON CONFLICT (phone) DO NOTHING RETURNING id",
                )
                .bind(phone_number.as_str())
                .bind(code.as_str())
                .fetch_optional(&mut *conn)
                .await;
                match inserted {
                    Ok(Some(id)) => {
                        return Ok(registration(phone_number, id, code, true));
                    }
                    Ok(None) => {
                        if let Some(found) = find_user(&mut conn, phone_number).await? {
                            return Ok(found);
                        }
                        // Deleted between the two statements: try again.
                    }
                    Err(error) if violates(&error, "users_invite_code_unique") => {}
                    Err(error) => return Err(store_error(error)),
                }
            }
            Err(StoreError::Exhausted(format!(
                "no free invite code in {INVITE_CODE_TRIES} tries"
            )))
        }
        .await;
        conn.done(result)
    }

    async fn profile(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        // One round trip, one snapshot: the invitees come as an array, oldest activation first
        // (an index range scan of users_invited_by_idx).
        let mut conn = self.lease().await?;
        let row = sqlx::query_as::<_, (String, String, Option<String>, Vec<String>)>(
            "SELECT u.phone, u.invite_code, inviter.invite_code, \
                    ARRAY(SELECT g.phone FROM users g WHERE g.invited_by = u.id \
                          ORDER BY g.activation_seq) \
             FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by \
             WHERE u.id = $1",
        )
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error);
        let row = conn.done(row)?;
        let Some((own_phone, own_code, applied, invitees)) = row else {
            return Ok(None);
        };
        Ok(Some(Profile {
            phone: phone(&own_phone)?,
            own_invite_code: invite_code(&own_code)?,
            activated_invite_code: applied.as_deref().map(invite_code).transpose()?,
            invited_users: invitees
                .iter()
                .map(|p| phone(p))
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
    ) -> Result<Activation, StoreError> {
        // Why this cannot close a cycle: every activation takes one transaction-scoped advisory
        // lock before it reads anything, so activations run one at a time across all
        // connections and server instances. Under READ COMMITTED each statement sees
        // everything committed before it started, so the check below (a separate statement
        // after the lock) sees every earlier activation, including the one that just released
        // the lock. Two users applying each other's codes therefore run in some order, and the
        // second one's walk up its inviter chain finds the first. The lock is released by
        // COMMIT or ROLLBACK (also when a dropped transaction is rolled back), never leaks.
        //
        // Activations happen once per user and hold the lock for a few milliseconds, so the
        // serialization costs nothing that matters. Nothing here can fail with a
        // serialization error or deadlock: the isolation level is READ COMMITTED and the only
        // row lock taken (the user's own row, by the UPDATE) is taken while holding the lock.
        let mut conn = self.lease().await?;
        let result = async {
            let mut tx = conn.begin().await.map_err(store_error)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ACTIVATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            // Everything the documented order needs, in one statement. The walk goes up from the
            // code's owner (UNION, not UNION ALL, so it would end even on a corrupt cycle).
            let (exists, already, owner, cycle) = sqlx::query_as::<_, (bool, bool, Option<i64>, bool)>(
                "WITH RECURSIVE \
                       owner AS (SELECT id FROM users WHERE invite_code = $2), \
                       chain (id) AS ( \
                         SELECT u.invited_by FROM users u JOIN owner o ON u.id = o.id \
                           WHERE u.invited_by IS NOT NULL \
                         UNION \
                         SELECT u.invited_by FROM users u JOIN chain c ON u.id = c.id \
                           WHERE u.invited_by IS NOT NULL) \
                     SELECT EXISTS (SELECT 1 FROM users WHERE id = $1), \
                            EXISTS (SELECT 1 FROM users WHERE id = $1 AND invited_by IS NOT NULL), \
                            (SELECT id FROM owner), \
                            EXISTS (SELECT 1 FROM chain WHERE id = $1)",
            )
            .bind(user.0)
            .bind(code.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            let outcome = match owner {
                _ if !exists => Activation::UnknownUser,
                None => Activation::NotFound,
                Some(owner) if owner == user.0 => Activation::OwnCode,
                Some(_) if already => Activation::AlreadyActivated,
                Some(_) if cycle => Activation::Cycle,
                Some(owner) => {
                    sqlx::query(
                        "UPDATE users SET invited_by = $2, activation_seq = nextval('activation_seq'), \
                                activated_at = now() \
                         WHERE id = $1 AND invited_by IS NULL",
                    )
                    .bind(user.0)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                    Activation::Activated
                }
            };
            // A refusal changed nothing; committing it just releases the lock.
            tx.commit().await.map_err(store_error)?;
            Ok(outcome)
        }
        .await;
        conn.done(result)
    }

    async fn start_family(
        &self,
        user: UserId,
        family: &FamilyId,
        jti: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        // Families past their expiry can never rotate again; each new family sweeps out a few
        // (an index range scan), so the table stays bounded by live families.
        let mut conn = self.lease().await?;
        let result = sqlx::query(
            "WITH swept AS ( \
               DELETE FROM refresh_families WHERE family_id IN ( \
                 SELECT family_id FROM refresh_families WHERE expires_at <= $4 LIMIT 16 \
                 FOR UPDATE SKIP LOCKED)) \
             INSERT INTO refresh_families (family_id, user_id, live_jti, started_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(family.as_str())
        .bind(user.0)
        .bind(jti.as_str())
        .bind(unix(now))
        .bind(unix(expires_at))
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(store_error);
        conn.done(result)
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Rotation, StoreError> {
        // One statement. A live, unexpired family either rotates (the presented token is the
        // live one) or is revoked (it is not: a spent token came back). SET expressions see the
        // row before the update and RETURNING the row after, so `revoked` tells which
        // happened; no row means unknown, revoked or expired. Concurrent rotations of one
        // token queue on the row lock and each re-checks the row as the previous one left it:
        // the first rotates, the next finds a different live token and revokes, the rest find
        // the family revoked.
        let mut conn = self.lease().await?;
        let revoked = sqlx::query_scalar::<_, bool>(
            "UPDATE refresh_families \
             SET live_jti = CASE WHEN live_jti = $2 THEN $3 ELSE live_jti END, \
                 expires_at = CASE WHEN live_jti = $2 THEN $5 ELSE expires_at END, \
                 revoked = (live_jti <> $2) \
             WHERE family_id = $1 AND NOT revoked AND expires_at > $4 \
             RETURNING revoked",
        )
        .bind(family.as_str())
        .bind(presented.as_str())
        .bind(next.as_str())
        .bind(unix(now))
        .bind(unix(expires_at))
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error);
        Ok(match conn.done(revoked)? {
            Some(false) => Rotation::Rotated,
            Some(true) => Rotation::Reused,
            None => Rotation::Revoked,
        })
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        let mut conn = self.lease().await?;
        let result = sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE family_id = $1")
            .bind(family.as_str())
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(store_error);
        conn.done(result)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.lease().await?;
        let result = sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(store_error);
        conn.done(result)
    }
}
