//! [`PgUserStore`]: a PostgreSQL [`UserStore`] (sqlx).
//!
//! The schema lives in `migrations/postgres`, embedded in the binary; apply it with
//! [`PgUserStore::migrate`] at startup (it is idempotent, and safe to run from several
//! instances at once). Queries are checked at runtime, so building needs no database.
//!
//! ```no_run
//! use refsys_core::postgres::PgUserStore;
//!
//! # async fn run(app_pool: sqlx::PgPool) -> Result<(), refsys_core::StoreError> {
//! // A pool of its own (at most 10 connections, 3 s to get one)...
//! let store = PgUserStore::connect("postgres://refsys@db.internal/refsys?sslmode=verify-full")
//!     .await?;
//! store.migrate().await?;
//! // ...or the application's own, shared with its other queries.
//! let store = PgUserStore::new(app_pool);
//! # Ok(())
//! # }
//! ```
//!
//! # TLS
//!
//! Connections are encrypted with rustls (Mozilla's root certificates built in) as the URL's
//! `sslmode` says, with the same meanings as in libpq:
//!
//! - `disable`: never;
//! - `prefer` (the default): if the server offers TLS, without checking its certificate;
//! - `require`: always, without checking the certificate (against eavesdroppers only);
//! - `verify-ca`: always, and the certificate must be signed by a trusted root;
//! - `verify-full`: as `verify-ca`, and it must name the host of the URL.
//!
//! `sslrootcert=/path/ca.pem` adds the root that signed the server's certificate (a private
//! CA, a cloud provider's bundle); `sslcert=` and `sslkey=` give a client certificate. For a
//! database reached over a network, use `verify-full`.
//!
//! As with libpq, what the URL leaves out comes from the `PG*` environment variables
//! (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, ...) and a password from
//! `~/.pgpass`; so `PGSSLMODE` changes the default `prefer`.
//!
//! # Atomicity
//!
//! Every [`UserStore`] method is one statement, or a few that are each complete on their own;
//! the comments on the SQL explain how each stays atomic when many server instances share the
//! database. An activation is one call of the `refsys_activate_invite` function (its
//! migration explains why it cannot close a cycle; its first lines describe the pipelined
//! store this one replaced, and stay as they are, since sqlx checksums migrations).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use tokio::sync::oneshot;

use crate::account::{Account, InviteeCursor, InviteePage, PhoneChange};
use crate::event::{
    Change, Claim, Event, EventData, EventId, EventRecord, EventStatus, Redeliver,
    SessionEndReason, Settlement,
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
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a call of a store made by [`PgUserStore::connect`] waits for a connection before
/// it fails with [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections a pool made by [`PgUserStore::connect`] opens at most.
const MAX_CONNECTIONS: u32 = 10;

/// A PostgreSQL [`UserStore`] on an sqlx [`PgPool`].
///
/// Cloning is cheap: clones share the pool.
///
/// # Failures and cancellation
///
/// A call that gets no connection within the pool's acquire timeout, or whose connection
/// breaks, fails with [`StoreError::Unavailable`] naming the cause; when the database is back
/// the pool reconnects by itself. A connection the server closed fails the call that uses it
/// and is replaced.
///
/// A call cancelled (its future dropped) after sending its statement does not stop it: the
/// statement runs to its end and commits, like a request whose answer was lost, and sqlx
/// waits for the server's answer before the connection serves another call. (A dropped sqlx
/// *transaction* rolls back; this store runs none across statements.)
///
/// # Profile reads, batched
///
/// Profile reads that arrive while every connection is busy are read together, in one
/// statement for all of them, as soon as a connection is free: under load a statement then
/// serves many reads (one round trip, one plan, one snapshot), and the database spends less
/// per read; when a connection is free at once, a read is a statement of its own. Each read
/// sees every write that completed before it was called.
#[derive(Clone, Debug)]
pub struct PgUserStore {
    pool: PgPool,
    reads: Arc<Gathering>,
}

/// The profile reads waiting for a connection, with where to send each answer; the first
/// one to come starts the batch.
type Gathering = Mutex<Vec<Read>>;

/// One profile read: the user, how many invitees it shows, where its answer goes.
type Read = (UserId, usize, Reply);

/// Where the answer to one profile read goes.
type Reply = oneshot::Sender<Result<Option<Profile>, StoreError>>;

/// One row per user: id, phone, own code, the applied code, the invitees oldest activation
/// first (an index range scan of users_invited_by_idx, stopped at the batch's largest
/// limit), the count of all invitees.
type ProfileRow = (i64, String, String, Option<String>, Vec<String>, i64);

impl PgUserStore {
    /// A store on the application's own pool. The pool's settings apply: give it a bounded
    /// `acquire_timeout` (an outage then answers [`StoreError::Unavailable`] in that time),
    /// and consider `test_before_acquire(false)`, which saves a round trip per call (a
    /// connection that broke fails one call instead).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            reads: Arc::default(),
        }
    }

    /// A store on a new pool for `url` (`postgres://user:password@host:port/database?...`,
    /// see [TLS](crate::postgres#tls)): at most 10 connections, a 3-second acquire timeout,
    /// no ping before each use. Opens one connection to check that the database answers, and fails
    /// with [`StoreError::Unavailable`] if it does not (or the URL is malformed).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| StoreError::unavailable(format!("invalid PostgreSQL URL: {error}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        Ok(Self::new(pool))
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
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

/// Whether `error` is a unique violation of the invite code's constraint.
fn is_taken_code(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.is_unique_violation() && db.constraint() == Some("users_invite_code_unique")
    })
}

/// Waits for a connection, then reads the profiles of every read gathered by then in one
/// statement and answers each.
///
/// If the task is dropped before it takes the batch (its runtime shut down, even before the
/// task first ran), the waiting reads fail at once instead of waiting for a batch that never
/// comes, and the next read starts a new one.
fn read_profiles(pool: PgPool, reads: Arc<Gathering>) -> impl Future<Output = ()> {
    let unclaimed = Unclaimed(Some(reads));
    async move {
        let mut unclaimed = unclaimed;
        let conn = pool.acquire().await;
        let Some(reads) = unclaimed.0.take() else {
            return;
        };
        read_batch(conn, take(&reads)).await;
    }
}

/// Reads the profiles of `batch` on `conn` in one statement and answers each read.
async fn read_batch(conn: Result<PoolConnection<Postgres>, sqlx::Error>, batch: Vec<Read>) {
    let users: Vec<i64> = batch.iter().map(|(user, _, _)| user.0).collect();
    // The reads of one service all show as many: one limit serves the batch, and a read
    // that shows fewer is cut below.
    let most = batch.iter().map(|(_, shown, _)| *shown).max().unwrap_or(0);
    let rows = match conn {
        Ok(mut conn) => sqlx::query_as::<_, ProfileRow>(
            "SELECT u.id, u.phone, u.invite_code, inviter.invite_code, \
                    ARRAY(SELECT g.phone FROM users g WHERE g.invited_by = u.id \
                          ORDER BY g.activation_seq LIMIT $2), u.invited_count \
             FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by \
             WHERE u.id = ANY($1) AND u.deleted_at IS NULL",
        )
        .bind(&users)
        .bind(i64::try_from(most).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error),
        Err(error) => Err(store_error(error)),
    };
    let rows: Result<HashMap<i64, ProfileRow>, StoreError> =
        rows.map(|rows| rows.into_iter().map(|row| (row.0, row)).collect());
    for (user, shown, reply) in batch {
        let answer = match &rows {
            Ok(rows) => rows.get(&user.0).map(|row| profile(row, shown)).transpose(),
            Err(error) => Err(error.clone()),
        };
        // A read whose caller went away needs no answer.
        let _ = reply.send(answer);
    }
}

/// Takes the reads gathered so far.
fn take(reads: &Gathering) -> Vec<Read> {
    std::mem::take(&mut *reads.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Drops the gathered reads (their callers get an error) unless the batch was taken.
struct Unclaimed(Option<Arc<Gathering>>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(reads) = &self.0 {
            drop(take(reads));
        }
    }
}

/// The profile in `row`, with its first `shown` invitees.
fn profile(
    (_, own, code, applied, invitees, count): &ProfileRow,
    shown: usize,
) -> Result<Profile, StoreError> {
    Ok(Profile {
        phone: phone(own)?,
        own_invite_code: invite_code(code)?,
        activated_invite_code: applied.as_deref().map(invite_code).transpose()?,
        invited_users: invitees
            .iter()
            .take(shown)
            .map(|p| phone(p))
            .collect::<Result<_, _>>()?,
        invited_count: sql::count(*count),
    })
}

#[async_trait]
impl UserStore for PgUserStore {
    async fn find_or_create(
        &self,
        phone_number: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
        change: Change,
    ) -> Result<Registration, StoreError> {
        // One connection for all the statements: each use of the pool costs a round trip
        // when the connection goes back (sqlx checks it).
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        // The common case, a returning user, is one read that writes nothing.
        if let Some(found) = find_user(&mut conn, phone_number).await? {
            return Ok(found);
        }
        for _ in 0..INVITE_CODE_TRIES {
            let code = new_code();
            // A concurrent insert of the same phone makes this wait for it, then do nothing;
            // the read after it (a new statement, so a new snapshot) then sees that user. A
            // taken code fails the unique constraint and is replaced. Nothing is checked first.
            // The user and its `user.created` are one statement, so one transaction; the
            // event's data is built by the statement, which alone knows the new id.
            let inserted = sqlx::query_scalar::<_, i64>(
                "WITH u AS ( \
                   INSERT INTO users (phone, invite_code, created_at) \
                     VALUES ($1, $2, to_timestamp($4)) \
                   ON CONFLICT (phone) DO NOTHING RETURNING id), \
                 e AS ( \
                   INSERT INTO events \
                     (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
                   SELECT $3, 'user.created', id, $4, \
                          json_build_object('user_id', id, 'phone', $1::text)::text, $4, $4 \
                   FROM u WHERE $5) \
                 SELECT id FROM u",
            )
            .bind(phone_number.as_str())
            .bind(code.as_str())
            .bind(EventId::random().as_str().to_owned())
            .bind(unix(change.now))
            .bind(change.record)
            .fetch_optional(&mut *conn)
            .await;
            match inserted {
                Ok(Some(id)) => return Ok(registration(phone_number, id, code, true)),
                Ok(None) => {
                    if let Some(found) = find_user(&mut conn, phone_number).await? {
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
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push((user, invitees, reply));
            waiting.len() == 1
        };
        if first {
            // A task of its own: cancelling this call must not strand the reads that join.
            tokio::spawn(read_profiles(self.pool.clone(), Arc::clone(&self.reads)));
        }
        let dropped = || Err(StoreError::unavailable("the profile read was dropped"));
        answer.await.unwrap_or_else(|_| dropped())
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
        change: Change,
    ) -> Result<Activation, StoreError> {
        let event = change.record.then(|| EventId::random().as_str().to_owned());
        let outcome =
            sqlx::query_scalar::<_, String>("SELECT refsys_activate_invite($1, $2, $3, $4)")
                .bind(user.0)
                .bind(code.as_str())
                .bind(event)
                .bind(unix(change.now))
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(match outcome.as_str() {
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
        user: &User,
        family: &FamilyId,
        jti: &TokenId,
        client: &SessionClient,
        change: Change,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // Families past their expiry can never rotate again; each new family sweeps out a few
        // (an index range scan), so the table stays bounded by live families. The family and
        // its `session.created` are one statement. Only for an account that exists and still
        // has the phone that logged in, locked as the family's foreign key would lock it
        // anyway (`FOR KEY SHARE`): a deletion or a phone change (each a key update: the phone
        // is unique) either waits for this to commit (a deletion then deletes the family) or
        // commits first, and then this finds the account gone or moved.
        // Built only when recorded: a login without events pays for no JSON.
        let event = change.record.then(|| {
            let data = EventData::SessionCreated {
                user_id: user.id,
                session_id: family.as_str().to_owned(),
            };
            Event::new(data, change.now)
        });
        sqlx::query_as(
            "WITH swept AS ( \
               DELETE FROM refresh_families WHERE family_id IN ( \
                 SELECT family_id FROM refresh_families WHERE expires_at <= $4 LIMIT 16 \
                 FOR UPDATE SKIP LOCKED)), \
             owner AS ( \
               SELECT id FROM users \
               WHERE id = $2 AND phone = $11 AND deleted_at IS NULL FOR KEY SHARE), \
             f AS ( \
               INSERT INTO refresh_families \
                 (family_id, user_id, live_jti, started_at, expires_at, client_network, \
                  user_agent) \
               SELECT $1, id, $3, $4, $5, $9, $10 FROM owner RETURNING user_id), \
             e AS ( \
               INSERT INTO events \
                 (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
               SELECT $6, 'session.created', user_id, $4, $7, $4, $4 FROM f WHERE $8) \
             SELECT count(*) FROM f",
        )
        .bind(family.as_str())
        .bind(user.id.0)
        .bind(jti.as_str())
        .bind(unix(change.now))
        .bind(unix(expires_at))
        .bind(event.as_ref().map(|event| event.id.as_str().to_owned()))
        .bind(event.as_ref().map(|event| event.data.data_json()))
        .bind(change.record)
        .bind(client.network.as_deref())
        .bind(client.user_agent.as_deref())
        .bind(user.phone.as_str())
        .fetch_one(&self.pool)
        .await
        .map(|(started,): (i64,)| started == 1)
        .map_err(store_error)
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
        // The rotation and, when it revokes the family, `session.revoked`: one statement.
        let row = sqlx::query_as::<_, RotationRow>(concat!(
            "WITH r AS (",
            rotate_statement!(),
            "), e AS ( \
               INSERT INTO events \
                 (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
               SELECT $7, 'session.revoked', user_id, $4, \
                      json_build_object('user_id', user_id, 'session_id', $1::text, \
                                        'reason', 'reuse_detected')::text, $4, $4 \
               FROM r WHERE revoked AND $8) \
             SELECT revoked, live_jti, user_id FROM r"
        ))
        .bind(family.as_str())
        .bind(presented.as_str())
        .bind(next.as_str())
        .bind(unix(change.now))
        .bind(unix(expires_at))
        .bind(i64::try_from(reuse_grace.as_secs()).unwrap_or(i64::MAX))
        .bind(EventId::random().as_str().to_owned())
        .bind(change.record)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(sql::rotation(row.as_ref(), next))
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<(), StoreError> {
        // Only a family that was live is revoked, and records its event, in one statement.
        sqlx::query(
            "WITH r AS ( \
               UPDATE refresh_families SET revoked = TRUE \
               WHERE family_id = $1 AND NOT revoked RETURNING user_id) \
             INSERT INTO events (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
             SELECT $2, 'session.revoked', user_id, $3, \
                    json_build_object('user_id', user_id, 'session_id', $1::text, \
                                      'reason', $4::text)::text, $3, $3 \
             FROM r WHERE $5",
        )
        .bind(family.as_str())
        .bind(EventId::random().as_str().to_owned())
        .bind(unix(change.now))
        .bind(reason.as_str())
        .bind(change.record)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(store_error)
    }

    async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError> {
        sql::sessions(&self.pool, sql::SESSIONS_POSTGRES, user, now).await
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: SessionScope<'_>,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<Vec<FamilyId>, StoreError> {
        // The revocations (row locks: a concurrent revocation of the same sessions waits and
        // then finds them revoked) and their events, one transaction.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let revoked =
            sql::revoke_sessions::<Postgres>(&mut *tx, user, &scope, reason, change).await?;
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
        sql::invitees_page(&self.pool, &sql::ACCOUNT_POSTGRES, user, after, limit).await
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        // Both statements see one snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(store_error)?;
        sql::account::<Postgres>(&mut *tx, &sql::ACCOUNT_POSTGRES, user).await
    }

    async fn change_phone(
        &self,
        user: UserId,
        phone_number: &Phone,
        change: Change,
    ) -> Result<PhoneChange, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let outcome = sql::change_phone::<Postgres>(&mut *tx, user, phone_number, change).await?;
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
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // The activations' lock: an activation by or of this account ran wholly before, or
        // runs after and finds the account gone (see the accounts migration).
        sqlx::query("SELECT pg_advisory_xact_lock(x'7265667379730001'::bigint)")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let revoked = sql::delete_account::<Postgres>(&mut *tx, user, change).await?;
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
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        let user = find_user(&mut conn, phone_number).await?;
        let data = EventData::PhoneLocked {
            user_id: user.map(|found| found.user.id),
            locked_until: until,
        };
        sql::insert_event(&mut *conn, &Event::new(data, change.now))
            .await
            .map_err(store_error)
    }

    async fn claim_events(
        &self,
        now: Timestamp,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        // The statement, and why it is a function, are in the migration
        // `20261204000000_claim_events.sql`: its plan stays a walk of the pending events in
        // order that stops after `max`, whatever the table's statistics say.
        let mut rows =
            sqlx::query_as::<_, ClaimRow>("SELECT * FROM refsys_claim_events($1, $2, $3, $4)")
                .bind(unix(now))
                .bind(unix(now.plus(lease)))
                .bind(sql::lease_token())
                .bind(i64::try_from(max).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        rows.sort_by_key(|row| row.0);
        rows.into_iter().map(sql::claim).collect()
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
        let ids: Vec<&str> = claims.iter().map(|c| c.event.id.as_str()).collect();
        let leases: Vec<&str> = claims.iter().map(|c| c.lease.as_str()).collect();
        let done = sqlx::query(
            "UPDATE events e SET status = 'delivered', delivered_at = $1, last_error = NULL, \
                 lease_token = NULL, lease_until = NULL \
             FROM unnest($2::text[], $3::text[]) AS d (id, lease) \
             WHERE e.id = d.id AND e.lease_token = d.lease AND e.status = 'pending'",
        )
        .bind(unix(now))
        .bind(&ids)
        .bind(&leases)
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
