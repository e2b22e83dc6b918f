//! Accounts: what [`UserStore::account`](crate::UserStore::account) exports,
//! [`UserStore::change_phone`](crate::UserStore::change_phone) and
//! [`UserStore::delete_account`](crate::UserStore::delete_account) answer.
//!
//! A deleted account keeps its row as a tombstone: its id and invite code stay taken (never
//! given to another user), its invitees keep the code they applied (a code nobody owns now),
//! and everything personal (phone, sessions with their network and user agent) is erased.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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

/// The most invitees one page of [`UserStore::invitees`](crate::UserStore::invitees) holds
/// through `GET /api/invitees/` (`limit`, 1 to this).
pub const INVITEES_PAGE_MAX: usize = 200;

/// The invitees of a page when `GET /api/invitees/` names no `limit`.
pub const INVITEES_PAGE_DEFAULT: usize = 50;

/// Where a page of a user's invitees ends: the next page is the invitees who applied the
/// code after that one. A position in the order of the activations (each store numbers its
/// activations in the order they happen), so a page is the same whatever activations come
/// after it, and an invitee whose account is deleted meanwhile leaves no gap nor repeat.
///
/// Clients see it only [encoded](Self::encode), as an opaque cursor: its form is not part of
/// the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InviteeCursor(pub u64);

/// What an encoded cursor starts with: the form's version, so that another form can come.
const CURSOR_TAG: &[u8; 4] = b"inv1";

impl InviteeCursor {
    /// The opaque cursor a client is given (`next_cursor`): 16 URL-safe characters.
    pub fn encode(self) -> String {
        let mut bytes = CURSOR_TAG.to_vec();
        bytes.extend_from_slice(&self.0.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor that [`encode`](Self::encode) gave as `text`; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let seq = bytes.strip_prefix(CURSOR_TAG.as_slice())?;
        Some(Self(u64::from_be_bytes(seq.try_into().ok()?)))
    }
}

/// One page of a user's invitees, oldest first, as
/// [`UserStore::invitees`](crate::UserStore::invitees) answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteePage {
    /// The invitees of the page, in the order they applied the code.
    pub invitees: Vec<Invitee>,
    /// Where the next page starts, if there are invitees after this page.
    pub next: Option<InviteeCursor>,
    /// How many invitees the user has in all (its profile's `invited_count`).
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_what_it_encodes_and_nothing_else_decodes() {
        for seq in [0, 1, 255, 1 << 40, u64::MAX] {
            let text = InviteeCursor(seq).encode();
            assert_eq!(text.len(), 16);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(InviteeCursor::decode(&text), Some(InviteeCursor(seq)));
        }
        let other_tag = URL_SAFE_NO_PAD.encode(b"inv2\0\0\0\0\0\0\0\x01");
        let short = URL_SAFE_NO_PAD.encode(b"inv1\0\0\0\x01");
        let long = URL_SAFE_NO_PAD.encode(b"inv1\0\0\0\0\0\0\0\0\x01");
        for bad in ["", "1", "42", "aW52MQ", "!!!!", &other_tag, &short, &long] {
            assert_eq!(InviteeCursor::decode(bad), None, "{bad:?}");
        }
    }
}
