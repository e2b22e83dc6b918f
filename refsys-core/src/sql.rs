//! What the PostgreSQL and SQLite stores share: the statements both run word for word
//! (`$N` placeholders work on both), reading rows back into domain types, and turning sqlx
//! errors into [`StoreError`]s.

use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::store::Rotation;
use crate::{
    FamilyId, InviteCode, Phone, Registration, StoreError, Timestamp, TokenId, User, UserId,
};

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
    (bool, String): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row = sqlx::query_as::<DB, (bool, String)>(
        "UPDATE refresh_families \
         SET live_jti = CASE WHEN live_jti = $2 THEN $3 ELSE live_jti END, \
             previous_jti = CASE WHEN live_jti = $2 THEN $2 ELSE previous_jti END, \
             rotated_at = CASE WHEN live_jti = $2 THEN $4 ELSE rotated_at END, \
             expires_at = CASE WHEN live_jti = $2 THEN $5 ELSE expires_at END, \
             revoked = (live_jti <> $2 \
                 AND NOT COALESCE(previous_jti = $2 AND rotated_at > $4 - $6, FALSE)) \
         WHERE family_id = $1 AND NOT revoked AND expires_at > $4 \
         RETURNING revoked, live_jti",
    )
    .bind(family.as_str())
    .bind(presented.as_str())
    .bind(next.as_str())
    .bind(unix(now))
    .bind(unix(expires_at))
    .bind(i64::try_from(reuse_grace.as_secs()).unwrap_or(i64::MAX))
    .fetch_optional(db)
    .await
    .map_err(store_error)?;
    Ok(match row {
        None => Rotation::Revoked,
        Some((true, _)) => Rotation::Reused,
        Some((false, live)) if live == next.as_str() => Rotation::Rotated,
        Some((false, live)) => Rotation::Grace {
            live: TokenId::from_string(live),
        },
    })
}

/// Revokes `family` (logout): its tokens never rotate again.
pub(crate) async fn revoke_family<'c, DB, E>(db: E, family: &FamilyId) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    sqlx::query::<DB>("UPDATE refresh_families SET revoked = TRUE WHERE family_id = $1")
        .bind(family.as_str())
        .execute(db)
        .await
        .map(drop)
        .map_err(store_error)
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
