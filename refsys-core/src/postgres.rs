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

use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::sql::{invite_code, migrate_error, phone, store_error, unix};
use crate::store::{Activation, INVITE_CODE_TRIES, Rotation, UserStore};
use crate::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, User,
    UserId,
};

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a call waits for a pooled connection (or for a new one to open) before it fails
/// with [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections a pool made by [`PgUserStore::connect`] opens at most.
const MAX_CONNECTIONS: u32 = 10;

/// The key of the transaction-scoped advisory lock that serializes invite activations
/// (`"refsys"` and 1 in ASCII hex, to keep clear of other applications' keys).
const ACTIVATION_LOCK: i64 = 0x7265_6673_7973_0001;

/// A PostgreSQL [`UserStore`].
///
/// Cloning is cheap: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct PgUserStore {
    pool: PgPool,
}

impl PgUserStore {
    /// A store on an existing pool. The pool's own settings apply; give it a bounded
    /// `acquire_timeout` so a database that is down fails calls instead of hanging them.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A store on a new pool for `url` (`postgres://user:password@host:port/database`).
    ///
    /// Connections open on demand, so this fails only for a malformed URL: call
    /// [`ping`](UserStore::ping) or [`migrate`](Self::migrate) to check that the database
    /// answers. While the database is down, every call fails with
    /// [`StoreError::Unavailable`] within three seconds; when it comes back the pool
    /// reconnects by itself. The pool holds at most ten connections.
    ///
    /// Pooled connections are not pinged before each use (sqlx's `test_before_acquire`): the
    /// ping is a round trip per query, which cost about a fifth of the server's CPU per profile
    /// read in the benchmarks. A connection that died with the database fails its next query
    /// (503) and is replaced.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy(url)
            .map_err(|error| StoreError::unavailable(format!("invalid PostgreSQL URL: {error}")))?;
        Ok(Self::new(pool))
    }

    /// Creates or updates the schema (the embedded `migrations/postgres`).
    ///
    /// Idempotent: migrations already applied are skipped. Concurrent calls from several
    /// instances are safe (sqlx holds an advisory lock while migrating). Fails with
    /// [`StoreError::Corrupt`] if the database has migrations this build does not know or
    /// whose contents changed.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)
    }
}

/// Whether `error` is a unique violation of the named constraint.
fn violates(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(constraint))
}

#[async_trait]
impl UserStore for PgUserStore {
    async fn find_or_create(
        &self,
        phone_number: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
    ) -> Result<Registration, StoreError> {
        let existing = || async {
            sqlx::query_as::<_, (i64, String)>("SELECT id, invite_code FROM users WHERE phone = $1")
                .bind(phone_number.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?
                .map(|(id, code)| {
                    Ok(Registration {
                        user: User {
                            id: UserId(id),
                            phone: phone_number.clone(),
                            invite_code: invite_code(&code)?,
                        },
                        created: false,
                    })
                })
                .transpose()
        };
        // The common case, a returning user, is one read that writes nothing.
        if let Some(found) = existing().await? {
            return Ok(found);
        }
        for _ in 0..INVITE_CODE_TRIES {
            let code = new_code();
            // A concurrent insert of the same phone makes this wait for it, then do nothing;
            // the read below (a new statement, so a new snapshot) then sees that user. A taken
            // code fails the unique constraint and is replaced. Nothing is checked first.
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO users (phone, invite_code) VALUES ($1, $2) \
                 ON CONFLICT (phone) DO NOTHING RETURNING id",
            )
            .bind(phone_number.as_str())
            .bind(code.as_str())
            .fetch_optional(&self.pool)
            .await;
            match inserted {
                Ok(Some(id)) => {
                    return Ok(Registration {
                        user: User {
                            id: UserId(id),
                            phone: phone_number.clone(),
                            invite_code: code,
                        },
                        created: true,
                    });
                }
                Ok(None) => {
                    if let Some(found) = existing().await? {
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

    async fn profile(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        // One round trip, one snapshot: the invitees come as an array, oldest activation first
        // (an index range scan of users_invited_by_idx).
        let row = sqlx::query_as::<_, (String, String, Option<String>, Vec<String>)>(
            "SELECT u.phone, u.invite_code, inviter.invite_code, \
                    ARRAY(SELECT g.phone FROM users g WHERE g.invited_by = u.id \
                          ORDER BY g.activation_seq) \
             FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by \
             WHERE u.id = $1",
        )
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        let Some((own_phone, own_code, applied, invitees)) = row else {
            return Ok(None);
        };
        Ok(Some(Profile {
            phone: phone(own_phone)?,
            own_invite_code: invite_code(&own_code)?,
            activated_invite_code: applied.as_deref().map(invite_code).transpose()?,
            invited_users: invitees.into_iter().map(phone).collect::<Result<_, _>>()?,
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
        let mut tx = self.pool.begin().await.map_err(store_error)?;
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
        sqlx::query(
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
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
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
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(match revoked {
            Some(false) => Rotation::Rotated,
            Some(true) => Rotation::Reused,
            None => Rotation::Revoked,
        })
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE family_id = $1")
            .bind(family.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
