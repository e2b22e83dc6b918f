//! Events: what changed, recorded by the [`UserStore`](crate::UserStore) in the same
//! transaction as the change, and delivered at least once to an
//! [`EventHandler`](crate::EventHandler).
//!
//! An [`Event`] is an id (`evt_` + 32 hex characters, the same on every redelivery), the
//! instant of the change, and its [`EventData`]. [`Event::to_json`] is the envelope that the
//! HTTP contract documents and the example server posts as a Standard Webhook:
//!
//! ```
//! use refsys_core::{Event, EventData, EventId, Timestamp, UserId};
//!
//! let event = Event {
//!     id: EventId::from_string("evt_0123456789abcdef0123456789abcdef"),
//!     timestamp: Timestamp::from_unix(1_764_662_400),
//!     data: EventData::ReferralCreated {
//!         user_id: UserId(2),
//!         referrer_id: UserId(1),
//!         invite_code: "AB2CD3".parse().unwrap(),
//!     },
//! };
//! assert_eq!(
//!     event.to_json(),
//!     r#"{"id":"evt_0123456789abcdef0123456789abcdef","type":"referral.created","timestamp":"2025-12-02T08:00:00Z","data":{"user_id":2,"referrer_id":1,"invite_code":"AB2CD3"}}"#
//! );
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{InviteCode, Phone, Timestamp, UserId};

/// The id of an event: `evt_` and 32 hex characters of a CSPRNG, unique and the same on every
/// delivery of the event (a receiver deduplicates on it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// A fresh id: `evt_` and a UUID version 7 in 32 hex characters (a millisecond
    /// timestamp, then 74 random bits). Time-ordered, so the stores' unique index on it grows
    /// at one end instead of taking each insert at a random page.
    pub fn random() -> Self {
        Self(format!("evt_{}", uuid::Uuid::now_v7().simple()))
    }

    /// An id read back from a store, or given by an operator.
    pub fn from_string(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a session (a refresh-token family) ended: the `reason` of `session.revoked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    /// The user logged out with the session's refresh token.
    Logout,
    /// The user, or an operator, revoked it.
    Revoked,
    /// A spent refresh token of the session came back (theft detection).
    ReuseDetected,
    /// The account was deleted.
    AccountDeleted,
}

impl SessionEndReason {
    /// The name in events and in the store (`logout`, `revoked`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Revoked => "revoked",
            Self::ReuseDetected => "reuse_detected",
            Self::AccountDeleted => "account_deleted",
        }
    }
}

/// What happened: the `type` and `data` of an event.
///
/// `data` names users by `user_id`, carries a phone only where the event is about the phone
/// (`user.created`, `phone.changed`), and never a code or a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventData {
    /// `user.created`: a phone logged in for the first time.
    #[serde(rename = "user.created")]
    UserCreated {
        /// The new user.
        user_id: UserId,
        /// Its phone, E.164.
        phone: Phone,
    },
    /// `referral.created`: `user_id` applied the invite code of `referrer_id`.
    #[serde(rename = "referral.created")]
    ReferralCreated {
        /// The invitee, who applied the code.
        user_id: UserId,
        /// The inviter, whose code it is.
        referrer_id: UserId,
        /// The code applied.
        invite_code: InviteCode,
    },
    /// `session.created`: a login started a session (a refresh-token family).
    #[serde(rename = "session.created")]
    SessionCreated {
        /// The user who logged in.
        user_id: UserId,
        /// The session's id.
        session_id: String,
    },
    /// `session.revoked`: a session ended before its expiry.
    #[serde(rename = "session.revoked")]
    SessionRevoked {
        /// The session's user.
        user_id: UserId,
        /// The session's id.
        session_id: String,
        /// Why it ended.
        reason: SessionEndReason,
    },
    /// `phone.locked`: too many wrong codes locked a phone (the OTP store's decision).
    #[serde(rename = "phone.locked")]
    PhoneLocked {
        /// The phone's user, or `null` when no user has the phone (the lock does not depend on
        /// it).
        user_id: Option<UserId>,
        /// When the lock ends.
        #[serde(with = "rfc3339")]
        locked_until: Timestamp,
    },
    /// `phone.changed`: a user moved to another phone number (proven by a code sent to it).
    #[serde(rename = "phone.changed")]
    PhoneChanged {
        /// The user.
        user_id: UserId,
        /// Its new phone, E.164.
        phone: Phone,
    },
    /// `account.deleted`: a user deleted its account (or an operator did). Its sessions'
    /// `session.revoked` (reason `account_deleted`) come before it.
    #[serde(rename = "account.deleted")]
    AccountDeleted {
        /// The user, whose id is never given to another.
        user_id: UserId,
    },
}

impl EventData {
    /// The event type: `user.created`, `referral.created`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UserCreated { .. } => "user.created",
            Self::ReferralCreated { .. } => "referral.created",
            Self::SessionCreated { .. } => "session.created",
            Self::SessionRevoked { .. } => "session.revoked",
            Self::PhoneLocked { .. } => "phone.locked",
            Self::PhoneChanged { .. } => "phone.changed",
            Self::AccountDeleted { .. } => "account.deleted",
        }
    }

    /// The user the event is about: events of one user are delivered in the order of their
    /// changes. `None` for `phone.locked` of a phone no user has.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::UserCreated { user_id, .. }
            | Self::ReferralCreated { user_id, .. }
            | Self::SessionCreated { user_id, .. }
            | Self::SessionRevoked { user_id, .. }
            | Self::PhoneChanged { user_id, .. }
            | Self::AccountDeleted { user_id } => Some(*user_id),
            Self::PhoneLocked { user_id, .. } => *user_id,
        }
    }

    /// The `data` object alone, as the stores keep it, its fields in the documented order.
    pub fn data_json(&self) -> String {
        self.tagged(|tagged| tagged.data.get().to_owned())
    }

    /// Calls `f` with the type and the data of this event, serialized.
    fn tagged<T>(&self, f: impl FnOnce(Tagged<'_>) -> T) -> T {
        // Serializing an enum of plain fields cannot fail, and its output reads back.
        let text = serde_json::to_string(self).unwrap_or_default();
        let tagged = serde_json::from_str::<Tagged<'_>>(&text).unwrap_or(Tagged {
            kind: self.kind(),
            data: serde_json::value::RawValue::NULL,
        });
        f(tagged)
    }

    /// Reads back an event's data from its `kind` and its `data` object, as a store keeps
    /// them; `None` if they do not make a known event.
    pub fn from_stored(kind: &str, data: &str) -> Option<Self> {
        let data: serde_json::Value = serde_json::from_str(data).ok()?;
        serde_json::from_value(serde_json::json!({ "type": kind, "data": data })).ok()
    }
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique; the same on every delivery.
    pub id: EventId,
    /// When the change happened (the service's clock).
    pub timestamp: Timestamp,
    /// What changed.
    pub data: EventData,
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(data: EventData, timestamp: Timestamp) -> Self {
        Self {
            id: EventId::random(),
            timestamp,
            data,
        }
    }

    /// The envelope, as JSON text: `{"id", "type", "timestamp" (RFC 3339, UTC), "data"}`.
    pub fn to_json(&self) -> String {
        self.data.tagged(|tagged| {
            serde_json::to_string(&Envelope {
                id: self.id.as_str(),
                kind: tagged.kind,
                timestamp: rfc3339::format(self.timestamp),
                data: tagged.data,
            })
            .unwrap_or_default()
        })
    }
}

/// An event's type and its data, as serde writes the tagged enum.
#[derive(Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// The envelope's fields, in the documented order.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: &'a serde_json::value::RawValue,
}

/// Whether a change records its event, and when it happens: what the service hands every
/// [`UserStore`](crate::UserStore) method that changes something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// When the change happens (the service's clock).
    pub now: Timestamp,
    /// Whether to append the change's event to the store's event log, in the same
    /// transaction. The service records events when an [`EventHandler`](crate::EventHandler)
    /// is registered.
    pub record: bool,
}

impl Change {
    /// A change at `now` that records its event.
    pub fn recorded(now: Timestamp) -> Self {
        Self { now, record: true }
    }

    /// A change at `now` that records no event.
    pub fn unrecorded(now: Timestamp) -> Self {
        Self { now, record: false }
    }
}

/// Where an event is in its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// Not delivered yet: due, backing off after a failed attempt, or leased to a dispatcher.
    Pending,
    /// A handler took it.
    Delivered,
    /// Not delivered within the maximum age; kept for an operator to redeliver.
    Failed,
}

impl EventStatus {
    /// The name in the store and in the admin command: `pending`, `delivered`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// An event and the state of its delivery, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The event.
    pub event: Event,
    /// Where its delivery is.
    pub status: EventStatus,
    /// Delivery attempts so far (since it was last queued).
    pub attempts: u32,
    /// When it was queued: recorded, or queued again by an operator. Its maximum age counts
    /// from here.
    pub queued_at: Timestamp,
    /// When it is due next (pending events).
    pub next_attempt_at: Timestamp,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// An event leased to one dispatcher by [`UserStore::claim_events`](crate::UserStore::claim_events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The event.
    pub event: Event,
    /// Its place in the store's log (the order of the changes): the key the store settles
    /// it by, together with the lease.
    pub seq: u64,
    /// This attempt's number, from 1 (since it was last queued).
    pub attempt: u32,
    /// When it was queued (its maximum age counts from here).
    pub queued_at: Timestamp,
    /// The lease: settling the event needs it, so a dispatcher whose lease ran out and was
    /// taken over cannot settle it.
    pub lease: String,
}

/// The outcome of one delivery attempt, for
/// [`UserStore::settle_event`](crate::UserStore::settle_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Delivered.
    Delivered,
    /// Not delivered; due again at `at`.
    Retry {
        /// When to try again.
        at: Timestamp,
        /// Why it failed.
        error: String,
    },
    /// Not delivered, and past its maximum age: kept as failed.
    Failed {
        /// Why the last attempt failed.
        error: String,
    },
}

/// Which events [`UserStore::redeliver_events`](crate::UserStore::redeliver_events) queues
/// again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeliver {
    /// This one, whatever its status.
    One(EventId),
    /// Every failed one.
    Failed,
}

/// The RFC 3339 form of a [`Timestamp`] (`2026-12-02T08:00:00Z`), for events.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use crate::Timestamp;

    /// `at` in RFC 3339, UTC, whole seconds.
    pub fn format(at: Timestamp) -> String {
        i64::try_from(at.as_unix())
            .ok()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
    }

    /// The instant an RFC 3339 string names, if it is one (at or after the Unix epoch).
    pub fn parse(text: &str) -> Option<Timestamp> {
        let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        u64::try_from(at.unix_timestamp())
            .ok()
            .map(Timestamp::from_unix)
    }

    /// Serializes a timestamp as RFC 3339 (serde `with`).
    pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*at))
    }

    /// Deserializes an RFC 3339 timestamp (serde `with`).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_reads_back_as_it_was_written() {
        let phone = Phone::from_trusted_e164("+375291234567").unwrap();
        let every = [
            EventData::UserCreated {
                user_id: UserId(1),
                phone,
            },
            EventData::ReferralCreated {
                user_id: UserId(2),
                referrer_id: UserId(1),
                invite_code: "AB2CD3".parse().unwrap(),
            },
            EventData::SessionCreated {
                user_id: UserId(1),
                session_id: "f".repeat(32),
            },
            EventData::SessionRevoked {
                user_id: UserId(1),
                session_id: "f".repeat(32),
                reason: SessionEndReason::ReuseDetected,
            },
            EventData::PhoneLocked {
                user_id: None,
                locked_until: Timestamp::from_unix(1_764_662_400),
            },
            EventData::PhoneChanged {
                user_id: UserId(1),
                phone: Phone::from_trusted_e164("+375297654321").unwrap(),
            },
            EventData::AccountDeleted { user_id: UserId(1) },
        ];
        for data in every {
            let back = EventData::from_stored(data.kind(), &data.data_json());
            assert_eq!(back.as_ref(), Some(&data), "{}", data.data_json());
            let envelope = Event::new(data.clone(), Timestamp::from_unix(0)).to_json();
            let envelope: serde_json::Value = serde_json::from_str(&envelope).unwrap();
            assert_eq!(envelope["type"], data.kind());
            assert_eq!(envelope["timestamp"], "1970-01-01T00:00:00Z");
        }
        assert_eq!(
            EventData::from_stored("user.created", r#"{"user_id": 1}"#),
            None
        );
        assert_eq!(EventData::from_stored("user.renamed", "{}"), None);
    }

    #[test]
    fn ids_are_random_and_prefixed() {
        let (a, b) = (EventId::random(), EventId::random());
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("evt_") && a.as_str().len() == 36);
    }

    #[test]
    fn rfc3339_round_trips() {
        let at = Timestamp::from_unix(1_796_198_400);
        assert_eq!(rfc3339::format(at), "2026-12-02T08:00:00Z");
        assert_eq!(rfc3339::parse("2026-12-02T08:00:00Z"), Some(at));
        assert_eq!(rfc3339::parse("yesterday"), None);
    }
}
