//! What the PostgreSQL and SQLite stores share: reading rows back into domain types, and
//! turning sqlx errors into [`StoreError`]s.

use sqlx::migrate::MigrateError;

use crate::{InviteCode, Phone, Registration, StoreError, Timestamp, User, UserId};

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
