//! Accounts: what [`UserStore::account`](crate::UserStore::account) exports,
//! [`UserStore::change_phone`](crate::UserStore::change_phone) and
//! [`UserStore::delete_account`](crate::UserStore::delete_account) answer.
//!
//! A deleted account keeps its row as a tombstone: its id and invite code stay taken (never
//! given to another user), its invitees keep the code they applied (a code nobody owns now),
//! and everything personal (phone, sessions with their network and user agent) is erased.

use crate::{InviteCode, Phone, Timestamp, UserId};

/// Everything a store keeps about one user, for the user's export (`GET /api/account/export/`)
/// and for operators. Sessions come from [`UserStore::sessions`](crate::UserStore::sessions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The user's id.
    pub user_id: UserId,
    /// The phone the user logs in with.
    pub phone: Phone,
    /// When the user first logged in.
    pub created_at: Timestamp,
    /// The user's own invite code.
    pub own_invite_code: InviteCode,
    /// The code the user applied, if any (its owner may have deleted the account since).
    pub activated_invite_code: Option<InviteCode>,
    /// When the user applied it.
    pub activated_at: Option<Timestamp>,
    /// The user's inviter, if any (and the account still exists).
    pub invited_by: Option<UserId>,
    /// The users who applied this user's code, in the order they applied it.
    pub invitees: Vec<Invitee>,
}

/// One user who applied another's code, as [`Account::invitees`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitee {
    /// The invitee's id.
    pub user_id: UserId,
    /// The invitee's phone.
    pub phone: Phone,
    /// When the invitee applied the code.
    pub joined_at: Timestamp,
}

/// What [`UserStore::change_phone`](crate::UserStore::change_phone) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneChange {
    /// The user has the new phone now.
    Changed,
    /// The user had that phone already: nothing changed, nothing recorded.
    Unchanged,
    /// Another user has that phone: nothing changed.
    Taken,
    /// The user does not exist (or deleted the account).
    UnknownUser,
}
