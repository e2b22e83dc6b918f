//! Users and what the profile shows of them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{InviteCode, Phone};

/// A user's id (the JSON `user_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The phone the user logs in with.
    pub phone: Phone,
    /// The user's own invite code, unique among users.
    pub invite_code: InviteCode,
}

/// What [`UserStore::find_or_create`](crate::UserStore::find_or_create) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The user with that phone.
    pub user: User,
    /// Whether the user was created by this call.
    pub created: bool,
}

/// A user's profile: the body of `GET /get_profile/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    /// The user's phone, E.164.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "+1234567890"))]
    pub phone: Phone,
    /// The user's own invite code.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "X4F9ZQ"))]
    pub own_invite_code: InviteCode,
    /// The code this user applied, if any.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, required = true, example = "K5J3RW"))]
    pub activated_invite_code: Option<InviteCode>,
    /// Phones of the users who applied this user's code, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub invited_users: Vec<Phone>,
    /// How many users applied this user's code (accounts not deleted): the stores keep the
    /// count, so it costs nothing however many there are.
    #[cfg_attr(feature = "openapi", schema(example = 2))]
    pub invited_count: u64,
}
