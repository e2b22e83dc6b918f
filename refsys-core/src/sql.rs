//! What the PostgreSQL and SQLite stores share: the statements both run word for word
//! (`$N` placeholders work on both), reading rows back into domain types, and turning sqlx
//! errors into [`StoreError`]s.

use sqlx::migrate::MigrateError;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::store::Rotation;
use crate::{
    FamilyId, InviteCode, Phone, Registration, StoreError, Timestamp, TokenId, User, UserId,
};

/// Rotates the live refresh token of `family` from `presented` to `next`, or revokes the
/// family when `presented` is not the live token (a spent token came back).
///
/// One statement: a live, unexpired family either rotates (the presented token is the live
/// one) or is revoked (it is not). SET expressions see the row before the update and
/// RETURNING the row after, so `revoked` tells which happened; no row means unknown, revoked
/// or expired. Concurrent rotations of one token queue on the row (PostgreSQL's row lock,
/// SQLite's one writer) and each re-checks the row as the previous one left it: the first
/// rotates, the next finds a different live token and revokes, the rest find the family
/// revoked.
pub(crate) async fn rotate_refresh<'c, DB, E>(
    db: E,
    family: &FamilyId,
    presented: &TokenId,
    next: &TokenId,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<Rotation, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    (bool,): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let revoked = sqlx::query_scalar::<DB, bool>(
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
    .fetch_optional(db)
    .await
    .map_err(store_error)?;
    Ok(match revoked {
        Some(false) => Rotation::Rotated,
        Some(true) => Rotation::Reused,
        None => Rotation::Revoked,
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
