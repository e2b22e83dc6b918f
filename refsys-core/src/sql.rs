//! What the PostgreSQL and SQLite stores share: the statements both run word for word
//! (`$N` placeholders work on both), reading rows back into domain types, and turning sqlx
//! errors into [`StoreError`]s.

use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::account::{Account, Invitee, InviteeCursor, InviteePage, PhoneChange};
use crate::event::{
    Change, Claim, Event, EventData, EventId, EventRecord, EventStatus, Redeliver,
    SessionEndReason, Settlement,
};
use crate::session::{Session, SessionClient, SessionScope};
use crate::store::Rotation;
use crate::{
    FamilyId, InviteCode, Phone, Registration, StoreError, Timestamp, TokenId, User, UserId,
};

/// The rotation statement of [`rotate_refresh`], `$1`–`$6`, for backends that wrap it (the
/// PostgreSQL store appends the reuse event in the same statement).
macro_rules! rotate_statement {
    () => {
        "UPDATE refresh_families \
         SET live_jti = CASE WHEN live_jti = $2 THEN $3 ELSE live_jti END, \
             previous_jti = CASE WHEN live_jti = $2 THEN $2 ELSE previous_jti END, \
             rotated_at = CASE WHEN live_jti = $2 THEN $4 ELSE rotated_at END, \
             expires_at = CASE WHEN live_jti = $2 THEN $5 ELSE expires_at END, \
             revoked = (live_jti <> $2 \
                 AND NOT COALESCE(previous_jti = $2 AND rotated_at > $4 - $6, FALSE)) \
         WHERE family_id = $1 AND NOT revoked AND expires_at > $4 \
         RETURNING revoked, live_jti, user_id"
    };
}
pub(crate) use rotate_statement;

/// The columns an [`EventRecord`] is read from, in this order.
macro_rules! record_columns {
    () => {
        "id, type, occurred_at, data, status, attempts, queued_at, next_attempt_at, last_error"
    };
}

/// A row of `record_columns!()`.
pub(crate) type RecordRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
);

/// A claimed row: `seq, id, type, occurred_at, data, attempts, queued_at, lease_token`.
pub(crate) type ClaimRow = (i64, String, String, i64, String, i64, i64, String);

/// The outcome of a rotation statement: whether it revoked the family, its live token, and
/// its user.
pub(crate) type RotationRow = (bool, String, i64);

/// Rotates the live refresh token of `family` from `presented` to `next`; answers with the
/// live token when `presented` is the one spent last, less than `reuse_grace` ago; or revokes
/// the family when `presented` is neither (a spent token came back).
///
/// One statement: a live, unexpired family either rotates (the presented token is the live
/// one), stays as it is (the grace case), or is revoked. SET expressions see the row before
/// the update and RETURNING the row after, so `revoked` and the live token tell which
/// happened (`next` is fresh, so a live token equal to it means this call rotated); no row
/// means unknown, revoked or expired. Concurrent rotations of one token queue on the row
/// (PostgreSQL's row lock, SQLite's one writer) and each re-checks the row as the previous one
/// left it: the first rotates, the rest find their token spent a moment ago and get the live
/// one (or, with no grace, revoke the family).
pub(crate) async fn rotate_refresh<'c, DB, E>(
    db: E,
    family: &FamilyId,
    presented: &TokenId,
    next: &TokenId,
    now: Timestamp,
    expires_at: Timestamp,
    reuse_grace: Duration,
) -> Result<Rotation, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    RotationRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row = sqlx::query_as::<DB, RotationRow>(rotate_statement!())
        .bind(family.as_str())
        .bind(presented.as_str())
        .bind(next.as_str())
        .bind(unix(now))
        .bind(unix(expires_at))
        .bind(i64::try_from(reuse_grace.as_secs()).unwrap_or(i64::MAX))
        .fetch_optional(db)
        .await
        .map_err(store_error)?;
    Ok(rotation(row.as_ref(), next))
}

/// What a rotation statement's row says happened.
pub(crate) fn rotation(row: Option<&RotationRow>, next: &TokenId) -> Rotation {
    match row {
        None => Rotation::Revoked,
        Some((true, _, _)) => Rotation::Reused,
        Some((false, live, _)) if live == next.as_str() => Rotation::Rotated,
        Some((false, live, _)) => Rotation::Grace {
            live: TokenId::from_string(live.clone()),
        },
    }
}

/// Appends `event` to the log, pending and due at once.
pub(crate) async fn insert_event<'c, DB, E>(db: E, event: &Event) -> Result<(), sqlx::Error>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO events (id, type, user_id, occurred_at, data, queued_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $4, $4)",
    )
    .bind(event.id.as_str())
    .bind(event.data.kind())
    .bind(event.data.user_id().map(|user| user.0))
    .bind(unix(event.timestamp))
    .bind(event.data.data_json())
    .execute(db)
    .await
    .map(drop)
}

/// Settles the event of `claim` if its lease is still `claim`'s and it is pending.
pub(crate) async fn settle_event<'c, DB, E>(
    db: E,
    claim: &Claim,
    settlement: &Settlement,
    now: Timestamp,
) -> Result<bool, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    <DB as Database>::QueryResult: RowsAffected,
{
    let (status, next_at, delivered_at, error) = match settlement {
        Settlement::Delivered => (EventStatus::Delivered, None, Some(unix(now)), None),
        Settlement::Retry { at, error } => (
            EventStatus::Pending,
            Some(unix(*at)),
            None,
            Some(error.as_str()),
        ),
        Settlement::Failed { error } => (EventStatus::Failed, None, None, Some(error.as_str())),
    };
    let done = sqlx::query::<DB>(
        "UPDATE events SET status = $3, next_attempt_at = COALESCE($4, next_attempt_at), \
             delivered_at = $5, last_error = $6, lease_token = NULL, lease_until = NULL \
         WHERE seq = $1 AND lease_token = $2 AND id = $7 AND status = 'pending'",
    )
    .bind(i64::try_from(claim.seq).unwrap_or(i64::MAX))
    .bind(claim.lease.as_str())
    .bind(status.as_str())
    .bind(next_at)
    .bind(delivered_at)
    .bind(error)
    .bind(claim.event.id.as_str())
    .execute(db)
    .await
    .map_err(store_error)?;
    Ok(done.rows() > 0)
}

/// The live sessions of `user` at `now`, newest first (see `UserStore::sessions`), by
/// `statement` ([`SESSIONS_SQLITE`] or [`SESSIONS_POSTGRES`]).
pub(crate) async fn sessions<'c, DB, E>(
    db: E,
    statement: &'static str,
    user: UserId,
    now: Timestamp,
) -> Result<Vec<Session>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    SessionRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let rows = sqlx::query_as::<DB, SessionRow>(statement)
        .bind(user.0)
        .bind(unix(now))
        .fetch_all(db)
        .await
        .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(|(id, created, used, network, user_agent)| Session {
            id: FamilyId::from_string(id),
            created_at: timestamp(created),
            last_used_at: timestamp(used),
            client: SessionClient {
                network,
                user_agent,
            },
        })
        .collect())
}

/// The live sessions of `$1` at `$2`: newest first, and of one second, the later login first
/// (`$order`: the insertion order of the backend).
macro_rules! sessions_statement {
    ($order:literal) => {
        concat!(
            "SELECT family_id, started_at, COALESCE(rotated_at, started_at), client_network, \
                    user_agent \
             FROM refresh_families \
             WHERE user_id = $1 AND NOT revoked AND expires_at > $2 \
             ORDER BY started_at DESC, ",
            $order,
            " DESC"
        )
    };
}

/// [`sessions`] on SQLite: the row id orders logins (new rows get a larger one).
#[cfg(feature = "sqlite")]
pub(crate) const SESSIONS_SQLITE: &str = sessions_statement!("rowid");
/// [`sessions`] on PostgreSQL: an identity column orders logins.
#[cfg(feature = "postgres")]
pub(crate) const SESSIONS_POSTGRES: &str = sessions_statement!("started_seq");

/// A row of [`sessions`]: id, started, last used, network, user agent.
pub(crate) type SessionRow = (String, i64, i64, Option<String>, Option<String>);

/// The statement that revokes `$1`'s live sessions at `$2` in `scope` (`$3` is the scope's
/// session, if it names one), returning each revoked one's id.
pub(crate) fn revoke_sessions_statement(scope: &SessionScope<'_>) -> &'static str {
    match scope {
        SessionScope::One(_) => {
            "UPDATE refresh_families SET revoked = TRUE \
             WHERE user_id = $1 AND NOT revoked AND expires_at > $2 AND family_id = $3 \
             RETURNING family_id"
        }
        SessionScope::AllBut(_) => {
            "UPDATE refresh_families SET revoked = TRUE \
             WHERE user_id = $1 AND NOT revoked AND expires_at > $2 AND family_id <> $3 \
             RETURNING family_id"
        }
        SessionScope::All => {
            "UPDATE refresh_families SET revoked = TRUE \
             WHERE user_id = $1 AND NOT revoked AND expires_at > $2 \
             RETURNING family_id"
        }
    }
}

/// `UserStore::revoke_sessions`, in a transaction the caller opened and commits: the
/// revocations and their events.
pub(crate) async fn revoke_sessions<DB>(
    tx: &mut DB::Connection,
    user: UserId,
    scope: &SessionScope<'_>,
    reason: SessionEndReason,
    change: Change,
) -> Result<Vec<FamilyId>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    (String,): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut revoke = sqlx::query_as::<DB, (String,)>(revoke_sessions_statement(scope))
        .bind(user.0)
        .bind(unix(change.now));
    if let Some(kept) = scope_session(scope) {
        revoke = revoke.bind(kept.as_str().to_owned());
    }
    let revoked = revoke.fetch_all(&mut *tx).await.map_err(store_error)?;
    if change.record {
        for (family,) in &revoked {
            let data = EventData::SessionRevoked {
                user_id: user,
                session_id: family.clone(),
                reason,
            };
            insert_event(&mut *tx, &Event::new(data, change.now))
                .await
                .map_err(store_error)?;
        }
    }
    Ok(revoked
        .into_iter()
        .map(|(family,)| FamilyId::from_string(family))
        .collect())
}

/// The session a scope names, if any (bound as `$3` of [`revoke_sessions_statement`]).
pub(crate) fn scope_session<'a>(scope: &SessionScope<'a>) -> Option<&'a FamilyId> {
    match scope {
        SessionScope::One(id) | SessionScope::AllBut(id) => Some(id),
        SessionScope::All => None,
    }
}

/// Up to `limit` events with `status`, oldest first.
pub(crate) async fn list_events<'c, DB, E>(
    db: E,
    status: EventStatus,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    RecordRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    sqlx::query_as::<DB, RecordRow>(concat!(
        "SELECT ",
        record_columns!(),
        " FROM events WHERE status = $1 ORDER BY seq LIMIT $2"
    ))
    .bind(status.as_str())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await
    .map_err(store_error)?
    .into_iter()
    .map(record)
    .collect()
}

/// Queues events again at `now`; answers how many.
pub(crate) async fn redeliver_events<'c, DB, E>(
    db: E,
    which: &Redeliver,
    now: Timestamp,
) -> Result<u64, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    <DB as Database>::QueryResult: RowsAffected,
{
    macro_rules! requeue {
        ($filter:literal) => {
            concat!(
                "UPDATE events SET status = 'pending', attempts = 0, queued_at = $1, \
                     next_attempt_at = $1, lease_token = NULL, lease_until = NULL, \
                     delivered_at = NULL, last_error = NULL \
                 WHERE (lease_until IS NULL OR lease_until <= $1) AND ",
                $filter
            )
        };
    }
    let (statement, id) = match which {
        Redeliver::One(id) => (requeue!("id = $2"), id.as_str()),
        // $2 is bound either way; here it matches nothing.
        Redeliver::Failed => (requeue!("status = 'failed' AND id <> $2"), ""),
    };
    let done = sqlx::query::<DB>(statement)
        .bind(unix(now))
        .bind(id)
        .execute(db)
        .await
        .map_err(store_error)?;
    Ok(done.rows())
}

/// Deletes up to `max` events delivered before `before`; answers how many.
pub(crate) async fn prune_events<'c, DB, E>(
    db: E,
    before: Timestamp,
    max: usize,
) -> Result<u64, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    <DB as Database>::QueryResult: RowsAffected,
{
    let done = sqlx::query::<DB>(
        "DELETE FROM events WHERE seq IN ( \
           SELECT seq FROM events WHERE status = 'delivered' AND delivered_at < $1 \
           ORDER BY delivered_at LIMIT $2)",
    )
    .bind(unix(before))
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .execute(db)
    .await
    .map_err(store_error)?;
    Ok(done.rows())
}

/// The rows a statement changed, whichever the database.
pub(crate) trait RowsAffected {
    /// How many rows it changed.
    fn rows(&self) -> u64;
}

#[cfg(feature = "postgres")]
impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "sqlite")]
impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// An event read back from its id, type, time and data.
fn event(id: String, kind: &str, occurred_at: i64, data: &str) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId::from_string(id),
        timestamp: timestamp(occurred_at),
        data: EventData::from_stored(kind, data).ok_or_else(|| {
            StoreError::corrupt(format_args!("stored event {kind:?} is malformed"))
        })?,
    })
}

/// An [`EventRecord`] read back from a row of `record_columns!()`.
pub(crate) fn record(row: RecordRow) -> Result<EventRecord, StoreError> {
    let (id, kind, occurred_at, data, status, attempts, queued_at, next_at, last_error) = row;
    Ok(EventRecord {
        event: event(id, &kind, occurred_at, &data)?,
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("stored event status is unknown"))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        queued_at: timestamp(queued_at),
        next_attempt_at: timestamp(next_at),
        last_error,
    })
}

/// A [`Claim`] read back from a claimed row.
pub(crate) fn claim(row: ClaimRow) -> Result<Claim, StoreError> {
    let (seq, id, kind, occurred_at, data, attempts, queued_at, lease) = row;
    Ok(Claim {
        event: event(id, &kind, occurred_at, &data)?,
        seq: u64::try_from(seq).unwrap_or(0),
        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
        queued_at: timestamp(queued_at),
        lease,
    })
}

/// A count read back from a column (a negative one, which the schema never holds, is 0).
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A fresh lease token.
pub(crate) fn lease_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Unix seconds read back from a column (a negative value, which no store writes, is the
/// epoch).
pub(crate) fn timestamp(secs: i64) -> Timestamp {
    Timestamp::from_unix(u64::try_from(secs).unwrap_or(0))
}

/// Checks that the database answers.
pub(crate) async fn ping<'c, DB, E>(db: E) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    sqlx::query::<DB>("SELECT 1")
        .execute(db)
        .await
        .map(drop)
        .map_err(store_error)
}

/// Maps an sqlx error: data the store cannot read is corrupt; anything else (connection, pool,
/// server errors, a database file that cannot be opened or stays locked past the busy timeout)
/// means the database is not serving us.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => StoreError::corrupt(error),
        _ => StoreError::unavailable(error),
    }
}

/// Maps a migration error: a failed statement is the database's; anything else is a schema
/// this binary does not know (corrupt).
pub(crate) fn migrate_error(error: MigrateError) -> StoreError {
    match error {
        MigrateError::Execute(error) => store_error(error),
        MigrateError::ExecuteMigration(error, version) => {
            StoreError::unavailable(format!("migration {version} failed: {error}"))
        }
        other => StoreError::corrupt(format!("schema: {other}")),
    }
}

/// The user registered with `phone`, from its `(id, invite_code)` row.
pub(crate) fn registered(
    phone: &Phone,
    (id, code): (i64, String),
) -> Result<Registration, StoreError> {
    Ok(registration(phone, id, invite_code(&code)?, false))
}

/// The user with `id`, `phone` and `code`; `created` if this call inserted it.
pub(crate) fn registration(
    phone: &Phone,
    id: i64,
    code: InviteCode,
    created: bool,
) -> Registration {
    Registration {
        user: User {
            id: UserId(id),
            phone: phone.clone(),
            invite_code: code,
        },
        created,
    }
}

/// A phone read back from a row.
pub(crate) fn phone(stored: &str) -> Result<Phone, StoreError> {
    Phone::from_trusted_e164(stored).map_err(|_| StoreError::corrupt("stored phone is not E.164"))
}

/// An invite code read back from a row.
pub(crate) fn invite_code(stored: &str) -> Result<InviteCode, StoreError> {
    InviteCode::parse(stored).map_err(|_| StoreError::corrupt("stored invite code is malformed"))
}

/// Unix seconds as the 64-bit integer columns hold them (saturating; no real instant
/// overflows).
pub(crate) fn unix(at: Timestamp) -> i64 {
    i64::try_from(at.as_unix()).unwrap_or(i64::MAX)
}

/// `UserStore::user_by_phone`.
pub(crate) async fn user_by_phone<'c, DB, E>(
    db: E,
    phone_number: &Phone,
) -> Result<Option<User>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    (i64, String): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row =
        sqlx::query_as::<DB, (i64, String)>("SELECT id, invite_code FROM users WHERE phone = $1")
            .bind(phone_number.as_str())
            .fetch_optional(db)
            .await
            .map_err(store_error)?;
    row.map(|row| registered(phone_number, row).map(|found| found.user))
        .transpose()
}

/// Whether `error` is a unique violation on the phone (PostgreSQL names the constraint,
/// SQLite the column: "UNIQUE constraint failed: users.phone").
pub(crate) fn is_taken_phone(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.is_unique_violation()
            && (db.constraint() == Some("users_phone_unique")
                || db.message().contains("users.phone"))
    })
}

/// `UserStore::change_phone`, in a transaction the caller opened and commits when the
/// answer is [`PhoneChange::Changed`] (and drops, rolling back, otherwise).
pub(crate) async fn change_phone<DB>(
    tx: &mut DB::Connection,
    user: UserId,
    phone_number: &Phone,
    change: Change,
) -> Result<PhoneChange, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    (bool,): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    // The unique constraint decides a race for the phone: the second writer fails it (on
    // PostgreSQL after waiting for the first to commit or roll back).
    let moved = sqlx::query_as::<DB, (i64,)>(
        "UPDATE users SET phone = $2 \
         WHERE id = $1 AND deleted_at IS NULL AND phone <> $2 RETURNING id",
    )
    .bind(user.0)
    .bind(phone_number.as_str())
    .fetch_optional(&mut *tx)
    .await;
    match moved {
        Ok(Some(_)) => {}
        Ok(None) => {
            let has = sqlx::query_as::<DB, (bool,)>(
                "SELECT phone = $2 FROM users WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(user.0)
            .bind(phone_number.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
            return Ok(match has {
                Some((true,)) => PhoneChange::Unchanged,
                _ => PhoneChange::UnknownUser,
            });
        }
        Err(error) if is_taken_phone(&error) => return Ok(PhoneChange::Taken),
        Err(error) => return Err(store_error(error)),
    }
    if change.record {
        let data = EventData::PhoneChanged {
            user_id: user,
            phone: phone_number.clone(),
        };
        insert_event(&mut *tx, &Event::new(data, change.now))
            .await
            .map_err(store_error)?;
    }
    Ok(PhoneChange::Changed)
}

/// `UserStore::delete_account`, in a transaction the caller opened and commits (a backend
/// that must serialize deletions with other writes takes its locks first).
pub(crate) async fn delete_account<DB>(
    tx: &mut DB::Connection,
    user: UserId,
    change: Change,
) -> Result<Option<Vec<FamilyId>>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    (String, bool): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    // The tombstone first: it locks the row (PostgreSQL: a key update, so a login's new
    // session, which locks the user first, waits for this to commit and then finds the
    // account gone; or it came first, and its family is deleted below).
    let deleted = sqlx::query_as::<DB, (i64,)>(
        "UPDATE users SET phone = 'deleted:' || id, invited_by = NULL, activation_seq = NULL, \
                activated_at = NULL, deleted_at = $2 \
         WHERE id = $1 AND deleted_at IS NULL RETURNING id",
    )
    .bind(user.0)
    .bind(unix(change.now))
    .fetch_optional(&mut *tx)
    .await
    .map_err(store_error)?;
    if deleted.is_none() {
        return Ok(None);
    }
    let families = sqlx::query_as::<DB, (String, bool)>(
        "DELETE FROM refresh_families WHERE user_id = $1 \
         RETURNING family_id, NOT revoked AND expires_at > $2",
    )
    .bind(user.0)
    .bind(unix(change.now))
    .fetch_all(&mut *tx)
    .await
    .map_err(store_error)?;
    let mut revoked: Vec<FamilyId> = families
        .into_iter()
        .filter(|(_, live)| *live)
        .map(|(id, _)| FamilyId::from_string(id))
        .collect();
    revoked.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    if change.record {
        let ended = revoked.iter().map(|family| EventData::SessionRevoked {
            user_id: user,
            session_id: family.as_str().to_owned(),
            reason: SessionEndReason::AccountDeleted,
        });
        for data in ended.chain([EventData::AccountDeleted { user_id: user }]) {
            insert_event(&mut *tx, &Event::new(data, change.now))
                .await
                .map_err(store_error)?;
        }
    }
    Ok(Some(revoked))
}

/// The account row of `UserStore::account`, by `$1`: phone, created, own code, applied
/// code, applied at, the inviter if its account exists. `$open` and `$close` around a time
/// column make it Unix seconds.
macro_rules! account_statement {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT u.phone, ",
            $open,
            "u.created_at",
            $close,
            ", u.invite_code, \
                    inviter.invite_code, ",
            $open,
            "u.activated_at",
            $close,
            ", \
                    CASE WHEN inviter.deleted_at IS NULL THEN inviter.id END \
             FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by \
             WHERE u.id = $1 AND u.deleted_at IS NULL"
        )
    };
}

/// The invitees of `$1`, in the order they applied its code: id, phone, applied at.
macro_rules! invitees_statement {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT id, phone, ",
            $open,
            "COALESCE(activated_at, created_at)",
            $close,
            " FROM users \
             WHERE invited_by = $1 ORDER BY activation_seq"
        )
    };
}

/// A page of the invitees of `$1` for [`invitees_page`]: one row per invitee activated after
/// `$2`, at most `$3`, oldest first, each with the user's count (a user with none on the page
/// is one row of NULLs and its count; an unknown one, no row). One statement, one snapshot;
/// the page is an index range scan of `users_invited_by_idx` that stops after `$3`.
macro_rules! page_statement {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT u.invited_count, g.activation_seq, g.id, g.phone, ",
            $open,
            "g.joined_at",
            $close,
            " FROM users u LEFT JOIN ( \
                 SELECT activation_seq, id, phone, COALESCE(activated_at, created_at) AS joined_at \
                 FROM users WHERE invited_by = $1 AND activation_seq > $2 \
                 ORDER BY activation_seq LIMIT $3) g ON TRUE \
             WHERE u.id = $1 AND u.deleted_at IS NULL \
             ORDER BY g.activation_seq"
        )
    };
}

/// The statements of [`account`] and [`invitees_page`] for one backend.
pub(crate) struct AccountStatements {
    account: &'static str,
    invitees: &'static str,
    page: &'static str,
}

/// [`account`] on SQLite: times are Unix seconds already.
#[cfg(feature = "sqlite")]
pub(crate) const ACCOUNT_SQLITE: AccountStatements = AccountStatements {
    account: account_statement!("", ""),
    invitees: invitees_statement!("", ""),
    page: page_statement!("", ""),
};

/// [`account`] on PostgreSQL: times are `timestamptz`.
#[cfg(feature = "postgres")]
pub(crate) const ACCOUNT_POSTGRES: AccountStatements = AccountStatements {
    account: account_statement!("CAST(EXTRACT(EPOCH FROM ", ") AS BIGINT)"),
    invitees: invitees_statement!("CAST(EXTRACT(EPOCH FROM ", ") AS BIGINT)"),
    page: page_statement!("CAST(EXTRACT(EPOCH FROM ", ") AS BIGINT)"),
};

/// A row of the page statement.
type PageRow = (i64, Option<i64>, Option<i64>, Option<String>, Option<i64>);

/// `UserStore::invitees`, in one statement.
pub(crate) async fn invitees_page<'c, DB, E>(
    db: E,
    statements: &AccountStatements,
    user: UserId,
    after: Option<InviteeCursor>,
    limit: usize,
) -> Result<Option<InviteePage>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    PageRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    // Activations are numbered from 1; a cursor past what a column holds is past the end.
    let after = after.map_or(0, |InviteeCursor(seq)| {
        i64::try_from(seq).unwrap_or(i64::MAX)
    });
    // One more than the page, to know whether there is a next one.
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let rows = sqlx::query_as::<DB, PageRow>(statements.page)
        .bind(user.0)
        .bind(after)
        .bind(fetch)
        .fetch_all(db)
        .await
        .map_err(store_error)?;
    let Some(&(total, ..)) = rows.first() else {
        return Ok(None);
    };
    let mut page = Vec::with_capacity(rows.len().min(limit));
    let mut more = false;
    for row in rows {
        let (_, Some(seq), Some(id), Some(invitee_phone), Some(joined)) = row else {
            continue;
        };
        if page.len() == limit {
            more = true;
            break;
        }
        let invitee = Invitee {
            user_id: UserId(id),
            phone: phone(&invitee_phone)?,
            joined_at: timestamp(joined),
        };
        page.push((seq, invitee));
    }
    Ok(Some(InviteePage {
        next: more
            .then(|| page.last().map(|&(seq, _)| InviteeCursor(count(seq))))
            .flatten(),
        invitees: page.into_iter().map(|(_, invitee)| invitee).collect(),
        total: count(total),
    }))
}

/// A row of the account statement.
type AccountRow = (
    String,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// `UserStore::account`, its two reads in one transaction the caller opened (one snapshot).
pub(crate) async fn account<DB>(
    tx: &mut DB::Connection,
    statements: &AccountStatements,
    user: UserId,
) -> Result<Option<Account>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    AccountRow: for<'r> FromRow<'r, DB::Row>,
    (i64, String, Option<i64>): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row = sqlx::query_as::<DB, AccountRow>(statements.account)
        .bind(user.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
    let Some((own_phone, created, own_code, applied, applied_at, inviter)) = row else {
        return Ok(None);
    };
    let invitees = sqlx::query_as::<DB, (i64, String, Option<i64>)>(statements.invitees)
        .bind(user.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|(id, invitee_phone, joined)| {
            Ok(Invitee {
                user_id: UserId(id),
                phone: phone(&invitee_phone)?,
                joined_at: timestamp(joined.unwrap_or(created)),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(Account {
        user_id: user,
        phone: phone(&own_phone)?,
        created_at: timestamp(created),
        own_invite_code: invite_code(&own_code)?,
        activated_invite_code: applied.as_deref().map(invite_code).transpose()?,
        activated_at: applied_at.map(timestamp),
        invited_by: inviter.map(UserId),
        invitees,
    }))
}
