//! [`SqliteUserStore`]: a SQLite [`UserStore`] (sqlx, bundled SQLite).
//!
//! For a single server (SQLite is one file on one machine). The schema lives in
//! `migrations/sqlite`, embedded in the binary; apply it with [`SqliteUserStore::migrate`] at
//! startup (it is idempotent). Queries are checked at runtime, so building needs no database.
//!
//! ```no_run
//! use refsys_core::sqlite::SqliteUserStore;
//!
//! # async fn run() -> Result<(), refsys_core::StoreError> {
//! let store = SqliteUserStore::connect("sqlite:refsys.db").await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Connections use WAL journaling (readers never wait for the writer), `synchronous=NORMAL`
//! (the usual pairing with WAL: a power cut may lose the last commits, never corrupts), a
//! five-second busy timeout (concurrent writers queue instead of failing) and enforced
//! foreign keys.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::account::{Account, InviteeCursor, InviteePage, PhoneChange};
use crate::event::{
    Change, Claim, Event, EventData, EventRecord, EventStatus, Redeliver, SessionEndReason,
    Settlement,
};
use crate::session::{Session, SessionClient, SessionScope};
use crate::sql::{
    self, ClaimRow, RotationRow, invite_code, migrate_error, phone, registered, registration,
    rotate_statement, store_error, unix,
};
use crate::store::{Activation, INVITE_CODE_TRIES, Rotation, UserStore};
use crate::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, User,
    UserId,
};

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a call waits for a pooled connection before it fails with
/// [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a writer waits for another writer's transaction before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections a pool made by [`SqliteUserStore::connect`] opens at most. SQLite runs one
/// writer at a time, so more would only add waiting.
const MAX_CONNECTIONS: u32 = 8;

/// Expired refresh families swept out per new family.
const SWEEP_BATCH: i64 = 16;

/// A SQLite [`UserStore`].
///
/// Cloning is cheap: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct SqliteUserStore {
    pool: SqlitePool,
}

impl SqliteUserStore {
    /// A store on an existing pool. The pool's own settings apply: give its connections a
    /// busy timeout (without one, concurrent writers fail with "database is locked") and
    /// foreign keys, and the pool a bounded `acquire_timeout`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Connects a store on a new pool for `target`: a URL (`sqlite:refsys.db`,
    /// `sqlite:///var/lib/refsys/refsys.db`) or a plain file path. The file is created if
    /// missing, unless the URL says otherwise with `mode=ro` or `mode=rw`.
    ///
    /// Opens one connection before it returns, so a file that cannot be opened fails here
    /// with [`StoreError::Unavailable`]. An in-memory database (`sqlite::memory:`) works but
    /// lives only as long as the pool keeps a connection open; use a file for anything you
    /// keep.
    pub async fn connect(target: &str) -> Result<Self, StoreError> {
        let options = match target.strip_prefix("sqlite:") {
            Some(rest) => {
                let options = SqliteConnectOptions::from_str(target).map_err(|error| {
                    StoreError::unavailable(format!("invalid SQLite URL: {error}"))
                })?;
                let query = rest.split_once('?').map_or("", |(_, query)| query);
                let mode_given = query.split('&').any(|pair| pair.starts_with("mode="));
                if mode_given {
                    options
                } else {
                    options.create_if_missing(true)
                }
            }
            None => SqliteConnectOptions::new()
                .filename(target)
                .create_if_missing(true),
        };
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // No ping before each use (sqlx's default): the connection is a thread of this
        // process on a local file, with no network between to go stale, and the ping is a
        // round trip to that thread, as dear as the query it guards.
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        Ok(Self::new(pool))
    }

    /// Creates or updates the schema (the embedded `migrations/sqlite`).
    ///
    /// Idempotent: migrations already applied are skipped. Fails with
    /// [`StoreError::Corrupt`] if the database has migrations this build does not know or
    /// whose contents changed.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)
    }
}

impl SqliteUserStore {
    /// A write transaction that takes the database's write lock first (`BEGIN IMMEDIATE`),
    /// so it never fails to upgrade from reading to writing.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)
    }

    /// Inserts a user and its `user.created` in one transaction, one call; `None` if the
    /// phone has a user.
    async fn insert_user_recorded(
        &self,
        phone_number: &Phone,
        code: &InviteCode,
        change: Change,
    ) -> Result<Option<i64>, sqlx::Error> {
        // The id is the database's: the event's `user_id` is set from the row just inserted,
        // and the event is only inserted if the user was (`changes()` counts the rows of the
        // statement before).
        let event = Event::new(
            EventData::UserCreated {
                user_id: UserId(0),
                phone: phone_number.clone(),
            },
            change.now,
        );
        let query = sqlx::query(
            "BEGIN IMMEDIATE; \
             INSERT INTO users (phone, invite_code, created_at) VALUES (?, ?, ?) \
               ON CONFLICT (phone) DO NOTHING RETURNING id; \
             INSERT INTO events (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
               SELECT ?, ?, last_insert_rowid(), ?, \
                      json_set(?, '$.user_id', last_insert_rowid()), ?, ? \
               WHERE changes() = 1; \
             COMMIT",
        )
        .bind(phone_number.as_str().to_owned())
        .bind(code.as_str().to_owned())
        .bind(unix(change.now))
        .bind(event.id.as_str().to_owned())
        .bind(event.data.kind())
        .bind(unix(event.timestamp))
        .bind(event.data.data_json())
        .bind(unix(event.timestamp))
        .bind(unix(event.timestamp));
        let rows = self.write_once(query).await?;
        rows.first().map(|row| row.try_get::<i64, _>(0)).transpose()
    }

    /// Runs `query`, a string of statements from `BEGIN IMMEDIATE` to `COMMIT`, in one call
    /// to the connection's thread; the rows of its `RETURNING` clauses, in order.
    ///
    /// Its parameters are anonymous (`?`), bound in the order they appear across the
    /// statements. (sqlx binds numbered ones, `?3`, across statements only when each
    /// statement uses every number from 1 to its largest: it binds a gap as the next
    /// anonymous parameter and stops at the end of the arguments, leaving later ones NULL.)
    ///
    /// Why not a [`sqlx::Transaction`]: each of its statements is a hand-off to that thread
    /// and back, and SQLite's one write lock is held across all of them, so every other
    /// writer waits out several hand-offs (a change with its event was four). Here the lock
    /// is taken and released within the one call.
    ///
    /// Why it is safe although sqlx does not know of the transaction: the call runs in a task
    /// of its own, so a caller that is dropped (a client that went away) cannot stop it
    /// between `BEGIN` and `COMMIT`; and a connection on which any statement failed is closed,
    /// never returned to the pool (SQLite rolls back what a closing connection began).
    async fn write_once(
        &self,
        query: sqlx::query::Query<'static, Sqlite, SqliteArguments>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        tokio::spawn(async move {
            let rows = query.fetch_all(&mut *connection).await;
            if rows.is_err() {
                // Its error is the one to report; closing a connection does not fail in a
                // way that would change what the caller should do.
                let _ = connection.close().await;
            }
            rows
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

/// The `WITH` clause of both statements of an activation: the owner of the code (its one
/// parameter) and the chain of inviters above it.
macro_rules! activation_walk {
    () => {
        "WITH RECURSIVE \
           owner AS (SELECT id FROM users WHERE invite_code = ? AND deleted_at IS NULL), \
           chain (id) AS ( \
             SELECT u.invited_by FROM users u JOIN owner o ON u.id = o.id \
               WHERE u.invited_by IS NOT NULL \
             UNION \
             SELECT u.invited_by FROM users u JOIN chain c ON u.id = c.id \
               WHERE u.invited_by IS NOT NULL) "
    };
}

/// Inserts a user, created at `now`, unless the phone has one; its id if it did.
async fn insert_user<'c, E: sqlx::Executor<'c, Database = sqlx::Sqlite>>(
    db: E,
    phone_number: &Phone,
    code: &InviteCode,
    now: Timestamp,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar::<_, i64>(
        "INSERT INTO users (phone, invite_code, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (phone) DO NOTHING RETURNING id",
    )
    .bind(phone_number.as_str())
    .bind(code.as_str())
    .bind(unix(now))
    .fetch_optional(db)
    .await
}

/// Whether `error` is a unique violation on the invite code. (SQLite names the column, not
/// the constraint: "UNIQUE constraint failed: users.invite_code".)
fn is_taken_code(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.message().contains("users.invite_code"))
}

#[async_trait]
impl UserStore for SqliteUserStore {
    async fn find_or_create(
        &self,
        phone_number: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
        change: Change,
    ) -> Result<Registration, StoreError> {
        let existing = || async {
            sqlx::query_as::<_, (i64, String)>("SELECT id, invite_code FROM users WHERE phone = ?1")
                .bind(phone_number.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?
                .map(|row| registered(phone_number, row))
                .transpose()
        };
        // The common case, a returning user, is one read that writes nothing.
        if let Some(found) = existing().await? {
            return Ok(found);
        }
        for _ in 0..INVITE_CODE_TRIES {
            let code = new_code();
            // One writer at a time: a concurrent insert of the same phone either committed
            // before this statement (then it does nothing, and the read below finds that user)
            // or waits for it. A taken code fails the unique constraint and is replaced. With
            // its event, the user and `user.created` are one transaction.
            let inserted = if change.record {
                self.insert_user_recorded(phone_number, &code, change).await
            } else {
                insert_user(&self.pool, phone_number, &code, change.now).await
            };
            match inserted {
                Ok(Some(id)) => {
                    return Ok(registration(phone_number, id, code, true));
                }
                Ok(None) => {
                    if let Some(found) = existing().await? {
                        return Ok(found);
                    }
                    // Deleted between the two statements: try again.
                }
                Err(error) if is_taken_code(&error) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        Err(StoreError::Exhausted(format!(
            "no free invite code in {INVITE_CODE_TRIES} tries"
        )))
    }

    async fn profile(&self, user: UserId, invitees: usize) -> Result<Option<Profile>, StoreError> {
        // One statement, so one round trip to the connection's thread and one snapshot: the
        // invitees come as a comma-separated list (E.164 numbers hold no commas), oldest
        // activation first: an index range scan of users_invited_by_idx up to the number of
        // the `?2`-th invitee (the inner probe walks at most `?2` entries of the same index;
        // none when there are fewer). Not a LIMIT in a subquery of FROM: with SQLite 3.51 that
        // form cost twice the CPU of the whole read, 10 invitees or 100,000.
        let row = sqlx::query_as::<_, (String, String, Option<String>, Option<String>, i64)>(
            "SELECT u.phone, u.invite_code, inviter.invite_code, \
                    (SELECT group_concat(g.phone, ',' ORDER BY g.activation_seq) \
                     FROM users g WHERE g.invited_by = u.id AND ?2 > 0 \
                       AND g.activation_seq <= COALESCE( \
                         (SELECT h.activation_seq FROM users h WHERE h.invited_by = u.id \
                          ORDER BY h.activation_seq LIMIT 1 OFFSET ?2 - 1), \
                         9223372036854775807)), \
                    u.invited_count \
             FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by \
             WHERE u.id = ?1 AND u.deleted_at IS NULL",
        )
        .bind(user.0)
        .bind(i64::try_from(invitees).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        let Some((own_phone, own_code, applied, invitees, count)) = row else {
            return Ok(None);
        };
        Ok(Some(Profile {
            phone: phone(&own_phone)?,
            own_invite_code: invite_code(&own_code)?,
            activated_invite_code: applied.as_deref().map(invite_code).transpose()?,
            invited_users: invitees
                .as_deref()
                .map_or(Ok(Vec::new()), |list| list.split(',').map(phone).collect())?,
            invited_count: sql::count(count),
        }))
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
        change: Change,
    ) -> Result<Activation, StoreError> {
        // Why this cannot close a cycle: `BEGIN IMMEDIATE` takes the database's write lock
        // before the transaction reads anything, so it waits (busy timeout) for any other
        // writer and then reads the latest committed state; no other write can happen until
        // it commits. Two users applying each other's codes therefore run one after the
        // other, and the second one's walk up its inviter chain finds the first. No
        // serialization failure can happen: a deferred transaction that reads and then
        // writes could hit SQLITE_BUSY on upgrade, an immediate one cannot.
        //
        // One call (see `write_once`): the first statement reads everything the documented
        // order of refusals needs; the update repeats the same conditions, so it changes the
        // row exactly when that read says "activated" (same snapshot: nothing else writes in
        // between), and the event is inserted only if it did (`changes()`) and events are
        // recorded (the last parameter). The walk goes up from the code's owner (UNION, not UNION ALL, so it
        // would end even on a corrupt cycle). Writers are serialized, so 1 + the counter's
        // last number (a trigger moves it) is a number never given before, larger than all.
        let event = Event::new(
            EventData::ReferralCreated {
                user_id: user,
                referrer_id: UserId(0),
                invite_code: *code,
            },
            change.now,
        );
        let query = sqlx::query(concat!(
            "BEGIN IMMEDIATE; ",
            activation_walk!(),
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = ? AND deleted_at IS NULL), \
                    EXISTS (SELECT 1 FROM users WHERE id = ? AND invited_by IS NOT NULL), \
                    (SELECT id FROM owner), \
                    EXISTS (SELECT 1 FROM chain WHERE id = ?); ",
            activation_walk!(),
            "UPDATE users SET invited_by = (SELECT id FROM owner), \
                    activation_seq = (SELECT last + 1 FROM activation_counter), \
                    activated_at = ? \
             WHERE id = ? AND invited_by IS NULL AND deleted_at IS NULL \
               AND EXISTS (SELECT 1 FROM owner WHERE id <> ?) \
               AND NOT EXISTS (SELECT 1 FROM chain WHERE id = ?) \
             RETURNING invited_by; \
             INSERT INTO events (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
               SELECT ?, ?, u.id, ?, json_set(?, '$.referrer_id', u.invited_by), ?, ? \
               FROM users u WHERE u.id = ? AND changes() = 1 AND ?; \
             COMMIT",
        ));
        let now = unix(event.timestamp);
        let code = code.as_str().to_owned();
        // The check: the code, then the user three times; the update: the code, the time,
        // the user three times.
        let query = query
            .bind(code.clone())
            .bind(user.0)
            .bind(user.0)
            .bind(user.0)
            .bind(code)
            .bind(unix(change.now))
            .bind(user.0)
            .bind(user.0)
            .bind(user.0);
        let query = query
            .bind(event.id.as_str().to_owned())
            .bind(event.data.kind())
            .bind(now)
            .bind(event.data.data_json())
            .bind(now)
            .bind(now)
            .bind(user.0)
            .bind(change.record);
        let rows = self.write_once(query).await.map_err(store_error)?;
        let Some(check) = rows.first() else {
            return Err(StoreError::Corrupt(
                "the activation check returned no row".to_owned(),
            ));
        };
        let (exists, already, owner, cycle) =
            <(bool, bool, Option<i64>, bool) as sqlx::FromRow<'_, SqliteRow>>::from_row(check)
                .map_err(store_error)?;
        let outcome = match owner {
            _ if !exists => Activation::UnknownUser,
            None => Activation::NotFound,
            Some(owner) if owner == user.0 => Activation::OwnCode,
            Some(_) if already => Activation::AlreadyActivated,
            Some(_) if cycle => Activation::Cycle,
            Some(_) => Activation::Activated,
        };
        let updated = rows.len() == 2;
        if updated != (outcome == Activation::Activated) {
            return Err(StoreError::Corrupt(format!(
                "the activation check said {outcome:?} but the update {} the row",
                if updated { "changed" } else { "did not change" }
            )));
        }
        Ok(outcome)
    }

    async fn start_family(
        &self,
        user: &User,
        family: &FamilyId,
        jti: &TokenId,
        client: &SessionClient,
        change: Change,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let now = change.now;
        let network = client.network.clone();
        let user_agent = client.user_agent.clone();
        let (phone_number, user) = (user.phone.as_str().to_owned(), user.id);
        // Only for an account that exists and still has the phone that logged in: a deletion
        // or a phone change is a write, so it ran before this statement (and this inserts
        // nothing) or runs after it (a deletion deletes the family; a move keeps it, as it
        // keeps every session that started before it).
        if change.record {
            // The family, `session.created` and the sweep below: one transaction, one call.
            let event = Event::new(
                EventData::SessionCreated {
                    user_id: user,
                    session_id: family.as_str().to_owned(),
                },
                now,
            );
            let query = sqlx::query(
                "BEGIN IMMEDIATE; \
                 INSERT INTO refresh_families \
                   (family_id, user_id, live_jti, started_at, expires_at, client_network, \
                    user_agent) \
                   SELECT ?, id, ?, ?, ?, ?, ? FROM users \
                   WHERE id = ? AND phone = ? AND deleted_at IS NULL \
                   RETURNING 1; \
                 INSERT INTO events \
                   (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
                   SELECT ?, ?, ?, ?, ?, ?, ? WHERE changes() = 1; \
                 DELETE FROM refresh_families WHERE family_id IN ( \
                   SELECT family_id FROM refresh_families WHERE expires_at <= ? LIMIT ?); \
                 COMMIT",
            )
            .bind(family.as_str().to_owned())
            .bind(jti.as_str().to_owned())
            .bind(unix(now))
            .bind(unix(expires_at))
            .bind(network)
            .bind(user_agent)
            .bind(user.0)
            .bind(phone_number);
            let query = query
                .bind(event.id.as_str().to_owned())
                .bind(event.data.kind())
                .bind(user.0)
                .bind(unix(now))
                .bind(event.data.data_json())
                .bind(unix(now))
                .bind(unix(now));
            let query = query.bind(unix(now)).bind(SWEEP_BATCH);
            let rows = self.write_once(query).await.map_err(store_error)?;
            return Ok(!rows.is_empty());
        }
        let started = sqlx::query(
            "INSERT INTO refresh_families \
               (family_id, user_id, live_jti, started_at, expires_at, client_network, user_agent) \
             SELECT ?1, id, ?3, ?4, ?5, ?6, ?7 FROM users \
             WHERE id = ?2 AND phone = ?8 AND deleted_at IS NULL",
        )
        .bind(family.as_str())
        .bind(user.0)
        .bind(jti.as_str())
        .bind(unix(now))
        .bind(unix(expires_at))
        .bind(network)
        .bind(user_agent)
        .bind(phone_number)
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected()
            == 1;
        // Families past their expiry can never rotate again; each new family sweeps out a few
        // (an index range scan), so the table stays bounded by live families.
        sqlx::query(
            "DELETE FROM refresh_families WHERE family_id IN ( \
               SELECT family_id FROM refresh_families WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .bind(unix(now))
        .bind(SWEEP_BATCH)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(started)
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        change: Change,
        expires_at: Timestamp,
        reuse_grace: Duration,
    ) -> Result<Rotation, StoreError> {
        if !change.record {
            return sql::rotate_refresh(
                &self.pool,
                family,
                presented,
                next,
                change.now,
                expires_at,
                reuse_grace,
            )
            .await;
        }
        // The rotation and, if it revoked the family, `session.revoked`: one transaction.
        let mut tx = self.begin().await?;
        let row = sqlx::query_as::<_, RotationRow>(rotate_statement!())
            .bind(family.as_str())
            .bind(presented.as_str())
            .bind(next.as_str())
            .bind(unix(change.now))
            .bind(unix(expires_at))
            .bind(i64::try_from(reuse_grace.as_secs()).unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        if let Some((true, _, user)) = &row {
            let data = EventData::SessionRevoked {
                user_id: UserId(*user),
                session_id: family.as_str().to_owned(),
                reason: SessionEndReason::ReuseDetected,
            };
            sql::insert_event(&mut *tx, &Event::new(data, change.now))
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(sql::rotation(row.as_ref(), next))
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<(), StoreError> {
        let revoke = sqlx::query_scalar::<_, i64>(
            "UPDATE refresh_families SET revoked = TRUE WHERE family_id = ?1 AND NOT revoked \
             RETURNING user_id",
        )
        .bind(family.as_str());
        if !change.record {
            return revoke
                .fetch_optional(&self.pool)
                .await
                .map(drop)
                .map_err(store_error);
        }
        let mut tx = self.begin().await?;
        if let Some(user) = revoke.fetch_optional(&mut *tx).await.map_err(store_error)? {
            let data = EventData::SessionRevoked {
                user_id: UserId(user),
                session_id: family.as_str().to_owned(),
                reason,
            };
            sql::insert_event(&mut *tx, &Event::new(data, change.now))
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError> {
        sql::sessions(&self.pool, sql::SESSIONS_SQLITE, user, now).await
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: SessionScope<'_>,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<Vec<FamilyId>, StoreError> {
        // The revocations and their events, one transaction (not a hot path: a plain one).
        let mut tx = self.begin().await?;
        let revoked =
            sql::revoke_sessions::<Sqlite>(&mut *tx, user, &scope, reason, change).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(revoked)
    }

    async fn user_by_phone(&self, phone_number: &Phone) -> Result<Option<User>, StoreError> {
        sql::user_by_phone(&self.pool, phone_number).await
    }

    async fn invitees(
        &self,
        user: UserId,
        after: Option<InviteeCursor>,
        limit: usize,
    ) -> Result<Option<InviteePage>, StoreError> {
        sql::invitees_page(&self.pool, &sql::ACCOUNT_SQLITE, user, after, limit).await
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        // A read transaction: both statements see one snapshot.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sql::account::<Sqlite>(&mut *tx, &sql::ACCOUNT_SQLITE, user).await
    }

    async fn change_phone(
        &self,
        user: UserId,
        phone_number: &Phone,
        change: Change,
    ) -> Result<PhoneChange, StoreError> {
        let mut tx = self.begin().await?;
        let outcome = sql::change_phone::<Sqlite>(&mut *tx, user, phone_number, change).await?;
        if outcome == PhoneChange::Changed {
            tx.commit().await.map_err(store_error)?;
        }
        Ok(outcome)
    }

    async fn delete_account(
        &self,
        user: UserId,
        change: Change,
    ) -> Result<Option<Vec<FamilyId>>, StoreError> {
        // `BEGIN IMMEDIATE` serializes it with every other write (activations, new
        // sessions): each of them ran before it or sees the account gone.
        let mut tx = self.begin().await?;
        let revoked = sql::delete_account::<Sqlite>(&mut *tx, user, change).await?;
        if revoked.is_some() {
            tx.commit().await.map_err(store_error)?;
        }
        Ok(revoked)
    }

    fn keeps_event_log(&self) -> bool {
        true
    }

    async fn phone_locked(
        &self,
        phone_number: &Phone,
        until: Timestamp,
        change: Change,
    ) -> Result<(), StoreError> {
        if !change.record {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let user = sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE phone = ?1")
            .bind(phone_number.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let data = EventData::PhoneLocked {
            user_id: user.map(UserId),
            locked_until: until,
        };
        sql::insert_event(&mut *tx, &Event::new(data, change.now))
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn claim_events(
        &self,
        now: Timestamp,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        // One statement, and SQLite runs one writer at a time: two claims never take the
        // same event. Only each user's oldest pending event is due (see the index).
        sqlx::query_as::<_, ClaimRow>(
            "UPDATE events SET lease_token = ?3, lease_until = ?2, attempts = attempts + 1 \
             WHERE seq IN ( \
               SELECT e.seq FROM events e \
               WHERE e.status = 'pending' AND e.next_attempt_at <= ?1 \
                 AND (e.lease_until IS NULL OR e.lease_until <= ?1) \
                 AND NOT EXISTS (SELECT 1 FROM events p WHERE p.status = 'pending' \
                                 AND p.user_id = e.user_id AND p.seq < e.seq) \
               ORDER BY e.seq LIMIT ?4) \
             RETURNING seq, id, type, occurred_at, data, attempts, queued_at, lease_token",
        )
        .bind(unix(now))
        .bind(unix(now.plus(lease)))
        .bind(sql::lease_token())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(sql::claim)
        .collect()
    }

    async fn settle_event(
        &self,
        claim: &Claim,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        sql::settle_event(&self.pool, claim, settlement, now).await
    }

    async fn settle_delivered(&self, claims: &[Claim], now: Timestamp) -> Result<u64, StoreError> {
        if claims.is_empty() {
            return Ok(0);
        }
        // One statement for the batch: (seq, lease, id) triples as a JSON array, joined on
        // the seq (the table's key: the id has no index on SQLite).
        let triples: Vec<(u64, &str, &str)> = claims
            .iter()
            .map(|claim| (claim.seq, claim.lease.as_str(), claim.event.id.as_str()))
            .collect();
        let triples = serde_json::to_string(&triples)
            .map_err(|e| StoreError::unavailable(format!("encoding claims: {e}")))?;
        let done = sqlx::query(
            "UPDATE events SET status = 'delivered', delivered_at = ?1, last_error = NULL, \
                 lease_token = NULL, lease_until = NULL \
             FROM (SELECT value ->> 0 AS seq, value ->> 1 AS lease, value ->> 2 AS id \
                   FROM json_each(?2)) AS d \
             WHERE events.seq = d.seq AND events.lease_token = d.lease \
               AND events.id = d.id AND events.status = 'pending'",
        )
        .bind(unix(now))
        .bind(triples)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn events(
        &self,
        status: EventStatus,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        sql::list_events(&self.pool, status, limit).await
    }

    async fn redeliver_events(&self, which: &Redeliver, now: Timestamp) -> Result<u64, StoreError> {
        sql::redeliver_events(&self.pool, which, now).await
    }

    async fn prune_events(&self, before: Timestamp, max: usize) -> Result<u64, StoreError> {
        sql::prune_events(&self.pool, before, max).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sql::ping(&self.pool).await
    }
}
