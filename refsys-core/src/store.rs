//! The storage traits: [`UserStore`] for durable state, [`OtpStore`] for short-lived state.
//!
//! Every method is **one atomic operation** with a typed outcome. The service never reads in
//! one call and writes in another, so a store that makes each method atomic (one SQL
//! transaction, one Redis Lua script, one lock) is race-free across threads and server
//! instances. Time is passed in (`now`), never read by the store, so every backend agrees with
//! the service's clock and the conformance suite can move time without sleeping.
//!
//! # A custom store
//!
//! A store that wraps another one (to count calls, cache, or add a backend) implements the
//! trait by delegating; [`crate::testing`] then checks it with the same conformance suite as
//! the built-in stores.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Duration;
//! use async_trait::async_trait;
//! use refsys_core::{
//!     account::{Account, InviteeCursor, InviteePage, PhoneChange},
//!     session::{Session, SessionClient, SessionScope},
//!     store::{Activation, Rotation},
//!     Change, FamilyId, InviteCode, MemoryUserStore, Phone, Profile, Registration,
//!     SessionEndReason, StoreError, Timestamp, TokenId, User, UserId, UserStore,
//! };
//!
//! /// Counts logins, delegates everything to an inner store.
//! #[derive(Default)]
//! struct Counting<S> { inner: S, logins: AtomicU64 }
//!
//! #[async_trait]
//! impl<S: UserStore> UserStore for Counting<S> {
//!     async fn find_or_create(
//!         &self,
//!         phone: &Phone,
//!         new_code: &(dyn Fn() -> InviteCode + Send + Sync),
//!         change: Change,
//!     ) -> Result<Registration, StoreError> {
//!         self.logins.fetch_add(1, Ordering::Relaxed);
//!         self.inner.find_or_create(phone, new_code, change).await
//!     }
//!     async fn profile(&self, user: UserId, invitees: usize) -> Result<Option<Profile>, StoreError> {
//!         self.inner.profile(user, invitees).await
//!     }
//!     async fn invitees(&self, user: UserId, after: Option<InviteeCursor>, limit: usize) -> Result<Option<InviteePage>, StoreError> {
//!         self.inner.invitees(user, after, limit).await
//!     }
//!     async fn activate_invite(&self, user: UserId, code: &InviteCode, change: Change) -> Result<Activation, StoreError> {
//!         self.inner.activate_invite(user, code, change).await
//!     }
//!     async fn start_family(&self, user: &User, family: &FamilyId, jti: &TokenId, client: &SessionClient, change: Change, expires_at: Timestamp) -> Result<bool, StoreError> {
//!         self.inner.start_family(user, family, jti, client, change, expires_at).await
//!     }
//!     async fn rotate_refresh(&self, family: &FamilyId, presented: &TokenId, next: &TokenId, change: Change, expires_at: Timestamp, reuse_grace: Duration) -> Result<Rotation, StoreError> {
//!         self.inner.rotate_refresh(family, presented, next, change, expires_at, reuse_grace).await
//!     }
//!     async fn revoke_family(&self, family: &FamilyId, reason: SessionEndReason, change: Change) -> Result<(), StoreError> {
//!         self.inner.revoke_family(family, reason, change).await
//!     }
//!     async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError> {
//!         self.inner.sessions(user, now).await
//!     }
//!     async fn revoke_sessions(&self, user: UserId, scope: SessionScope<'_>, reason: SessionEndReason, change: Change) -> Result<Vec<FamilyId>, StoreError> {
//!         self.inner.revoke_sessions(user, scope, reason, change).await
//!     }
//!     async fn user_by_phone(&self, phone: &Phone) -> Result<Option<User>, StoreError> {
//!         self.inner.user_by_phone(phone).await
//!     }
//!     async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
//!         self.inner.account(user).await
//!     }
//!     async fn change_phone(&self, user: UserId, phone: &Phone, change: Change) -> Result<PhoneChange, StoreError> {
//!         self.inner.change_phone(user, phone, change).await
//!     }
//!     async fn delete_account(&self, user: UserId, change: Change) -> Result<Option<Vec<FamilyId>>, StoreError> {
//!         self.inner.delete_account(user, change).await
//!     }
//!     // For its events to be delivered, a wrapper also delegates `keeps_event_log` and the
//!     // event-log methods (`phone_locked`, `claim_events`, ...), as
//!     // `examples/examples/custom_store.rs` does.
//! }
//!
//! // In a test module: refsys_core::user_store_conformance!(|| async { Counting::<MemoryUserStore>::default() });
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::account::{Account, InviteeCursor, InviteePage, PhoneChange};
use crate::event::{
    Change, Claim, EventRecord, EventStatus, Redeliver, SessionEndReason, Settlement,
};
use crate::session::{Session, SessionClient, SessionScope};
use crate::{
    FamilyId, InviteCode, OtpHash, OtpPolicy, Phone, Profile, Registration, StoreError, Timestamp,
    TokenId, User, UserId,
};

/// How many invite codes [`UserStore::find_or_create`] tries before giving up with
/// [`StoreError::Exhausted`]. With 32⁶ ≈ 10⁹ codes, 8 collisions in a row mean something is
/// wrong with the generator, not bad luck.
pub const INVITE_CODE_TRIES: usize = 8;

/// Durable state: users, invite codes, referrals, refresh-token families, and the event log.
///
/// Every method that changes something takes a [`Change`]: when it happens and whether it
/// records its event. The event is appended in the same atomic step as the change (no change
/// without its event, no event without its change); the dispatcher then
/// [claims](Self::claim_events) events with a lease, delivers them and
/// [settles](Self::settle_event) each.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Returns the user with `phone`, creating it if there is none.
    ///
    /// A new user gets an invite code from `new_code`; on a collision with an existing code the
    /// store calls `new_code` again, a bounded number of times (then
    /// [`StoreError::Exhausted`], and no user is created). Uniqueness is the store's to
    /// enforce (a unique constraint, not check-then-insert). Concurrent calls for one phone
    /// create exactly one user.
    ///
    /// A user created records `user.created` when `change.record` says so, in the same
    /// transaction: no user without its event, no event without its user.
    async fn find_or_create(
        &self,
        phone: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
        change: Change,
    ) -> Result<Registration, StoreError>;

    /// The user's profile, with its oldest `invitees` invitees (at most that many, oldest
    /// first: a store reads no more) and the count of all; `None` for an unknown user.
    async fn profile(&self, user: UserId, invitees: usize) -> Result<Option<Profile>, StoreError>;

    /// A page of the user's invitees (accounts not deleted), oldest first: at most `limit`,
    /// those who applied the code after `after` (from the first when `None`), with the
    /// cursor of the next page when there are more, and the count of all, read together (one
    /// snapshot). `None` for an unknown user. Invitees who come while a client pages come
    /// after the pages it read: a cursor stays good however many join.
    async fn invitees(
        &self,
        user: UserId,
        after: Option<InviteeCursor>,
        limit: usize,
    ) -> Result<Option<InviteePage>, StoreError>;

    /// Applies invite code `code` for `user`, in one atomic step, unless (checked in this order)
    /// the user does not exist, no user has the code, it is the user's own, the user already
    /// applied a code, or the code's owner was invited (directly or transitively) by the user.
    /// An activation records `referral.created` (when `change.record`) in the same step; a
    /// refusal records nothing.
    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
        change: Change,
    ) -> Result<Activation, StoreError>;

    /// Records a new refresh-token family (a session) for `user` whose live token is `jti`,
    /// started at `change.now` by `client`, and its `session.created` (when `change.record`)
    /// in the same step; whether it did. It does not, and records nothing, when the account
    /// does not exist, was deleted or no longer has `user.phone` (the phone that logged in),
    /// also when a deletion or a phone change runs at the same time: a deleted account never
    /// keeps a session, and a number the account just left never logs in to it.
    async fn start_family(
        &self,
        user: &User,
        family: &FamilyId,
        jti: &TokenId,
        client: &SessionClient,
        change: Change,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Spends refresh token `presented` of `family` and makes `next` the live one, in one
    /// atomic step. If `presented` is the token spent last, less than `reuse_grace` before
    /// `now`, nothing changes and [`Rotation::Grace`] names the live token (a client that
    /// retried, or two tabs at once). If `presented` is otherwise not the live token (it was
    /// spent before), the whole family is revoked and [`Rotation::Reused`] returned: theft
    /// detection, which records `session.revoked` with reason `reuse_detected` (when
    /// `change.record`) in the same step. A rotation records nothing. `now` is `change.now`.
    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        change: Change,
        expires_at: Timestamp,
        reuse_grace: Duration,
    ) -> Result<Rotation, StoreError>;

    /// Revokes a family (logout) and records `session.revoked` with `reason` (when
    /// `change.record`) in the same step. Revoking an unknown or revoked family is not an
    /// error, and records nothing.
    async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<(), StoreError>;

    /// The live sessions of `user` at `now` (families neither revoked nor expired), newest
    /// first (by start; of sessions started in the same second, the later login first).
    async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError>;

    /// Revokes the live sessions of `user` in `scope` at `change.now`, and records a
    /// `session.revoked` with `reason` for each (when `change.record`), in one step; the ones
    /// it revoked. Another user's session is never in scope: [`SessionScope::One`] of one
    /// revokes none, as does an unknown, revoked or expired one.
    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: SessionScope<'_>,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<Vec<FamilyId>, StoreError>;

    /// The user with `phone`, if it has one (a read: nothing is created), for operators'
    /// lookups.
    async fn user_by_phone(&self, phone: &Phone) -> Result<Option<User>, StoreError>;

    /// Everything stored about `user` but its sessions (see [`Self::sessions`]), for its
    /// export; `None` for an unknown user or a deleted account. The invitees are the live
    /// accounts that applied the user's code, in the order they applied it.
    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError>;

    /// Moves `user` to `phone` and records `phone.changed` (when `change.record`), in one
    /// atomic step; the old phone is free at once (its next login is a new user). Nothing
    /// changes when the user does not exist, already has that phone, or another user has it:
    /// the phone's uniqueness is the store's to enforce (a unique constraint), so of two users
    /// moving to one phone, or a move and a first login of that phone, exactly one gets it.
    async fn change_phone(
        &self,
        user: UserId,
        phone: &Phone,
        change: Change,
    ) -> Result<PhoneChange, StoreError>;

    /// Deletes the account of `user` in one atomic step, and returns the live sessions it
    /// revoked (`None`, and nothing changes, for an unknown user or a deleted account):
    ///
    /// - the phone is erased and free at once (its next login is a brand-new user), and so
    ///   is every session with its network and user agent;
    /// - the id and the invite code stay taken for good: no later user gets either, and the
    ///   code cannot be applied any more;
    /// - the user leaves its inviter's invitees; its own invitees keep their accounts and the
    ///   code they applied;
    /// - with `change.record`, a `session.revoked` (reason `account_deleted`) for each live
    ///   session, then `account.deleted`.
    ///
    /// A failure part-way (an outage, a crash) leaves the whole account or none of it.
    async fn delete_account(
        &self,
        user: UserId,
        change: Change,
    ) -> Result<Option<Vec<FamilyId>>, StoreError>;

    /// Whether the store keeps an event log: the built-in stores do. The default says no,
    /// and the event-log methods below then do nothing, so a store that wraps another must
    /// delegate them all (and this) for its events to be delivered; the service logs an
    /// error when it is built with an event handler over a store without a log.
    fn keeps_event_log(&self) -> bool {
        false
    }

    /// Records `phone.locked` for `phone`, locked until `until` by the OTP store (when
    /// `change.record`), naming the phone's user if it has one. Default: nothing.
    async fn phone_locked(
        &self,
        phone: &Phone,
        until: Timestamp,
        change: Change,
    ) -> Result<(), StoreError> {
        let _ = (phone, until, change);
        Ok(())
    }

    /// Leases up to `max` events that are due at `now` to the caller until `now + lease`, in
    /// one atomic step, oldest first: pending events whose next attempt is due and whose
    /// lease (if any) ran out, and of those only the oldest pending event of each user, so
    /// that one user's events are delivered in order, one at a time. Each claim counts an
    /// attempt and gets a new lease token. Concurrent callers (other instances) never get
    /// the same event while its lease lasts.
    ///
    /// Default: none.
    async fn claim_events(
        &self,
        now: Timestamp,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let _ = (now, lease, max);
        Ok(Vec::new())
    }

    /// Settles a claimed event, if `claim`'s lease is still the event's (it was not taken
    /// over after the lease ran out) and it is pending: delivered, due again later, or failed.
    /// Answers whether it did. Default: it did not.
    async fn settle_event(
        &self,
        claim: &Claim,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let _ = (claim, settlement, now);
        Ok(false)
    }

    /// Settles claimed events as delivered, each as [`settle_event`](Self::settle_event)
    /// would, in one call (the dispatcher's common case); answers how many it settled.
    /// Default: one [`settle_event`](Self::settle_event) each.
    async fn settle_delivered(&self, claims: &[Claim], now: Timestamp) -> Result<u64, StoreError> {
        let mut settled = 0;
        for claim in claims {
            if self
                .settle_event(claim, &Settlement::Delivered, now)
                .await?
            {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Up to `limit` events with `status`, oldest first (for the admin command). Default:
    /// none.
    async fn events(
        &self,
        status: EventStatus,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let _ = (status, limit);
        Ok(Vec::new())
    }

    /// Queues events again, due at `now`, with their attempts counted from zero and their
    /// maximum age from `now`; answers how many. An event leased to a dispatcher at `now` (a
    /// delivery in flight) is left alone, so that one event is never with two at once.
    /// Default: none.
    async fn redeliver_events(&self, which: &Redeliver, now: Timestamp) -> Result<u64, StoreError> {
        let _ = (which, now);
        Ok(0)
    }

    /// Deletes up to `max` events delivered before `before` (the retention period); answers
    /// how many. Default: none.
    async fn prune_events(&self, before: Timestamp, max: usize) -> Result<u64, StoreError> {
        let _ = (before, max);
        Ok(0)
    }

    /// Checks that the store answers (for `/ready`).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The outcome of [`UserStore::activate_invite`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Applied.
    Activated,
    /// The user does not exist.
    UnknownUser,
    /// No user has this code.
    NotFound,
    /// It is the user's own code.
    OwnCode,
    /// The user applied a code before.
    AlreadyActivated,
    /// The code's owner descends from the user: applying it would close a cycle.
    Cycle,
}

/// The outcome of [`UserStore::rotate_refresh`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was live; `next` is live now.
    Rotated,
    /// The presented token was spent last, within the reuse grace: nothing changed, and
    /// `live` is the family's live token.
    Grace {
        /// The family's live token.
        live: TokenId,
    },
    /// The presented token was spent before: the family is now revoked.
    Reused,
    /// The family is unknown, expired or revoked.
    Revoked,
}

/// Short-lived state: pending codes, cooldowns, attempt counters, send windows.
#[async_trait]
pub trait OtpStore: Send + Sync + 'static {
    /// Stores `code` as the phone's pending code (replacing any earlier one, with fresh
    /// attempts) unless the phone is locked (see [`check`](Self::check)), is in its resend
    /// cooldown, or has had [`max_sends_per_window`](OtpPolicy::max_sends_per_window) codes in
    /// the rolling window (checked in this order). One atomic step.
    async fn issue(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Issue, StoreError>;

    /// Takes back an [`issue`](Self::issue) made at `issued_at` whose SMS could not be sent:
    /// the pending code goes if it is still `code`, and that send no longer counts towards
    /// the cooldown or the window.
    async fn cancel(
        &self,
        phone: &Phone,
        code: &OtpHash,
        issued_at: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<(), StoreError>;

    /// Checks `code` against the pending code, in one atomic step: a match consumes the code
    /// (it answers [`Check::Missing`] from then on, unless [`restore`](Self::restore)d);
    /// a miss counts an attempt, and the last allowed miss burns the code (it then answers
    /// [`Check::Burned`] to every code, the right one included, until it expires or a new code
    /// is issued).
    ///
    /// A miss also counts towards the phone's failure budget, across codes: the
    /// [`max_failures`](OtpPolicy::max_failures)-th consecutive miss locks the phone for
    /// [`lockout`](OtpPolicy::lockout), drops its pending code and answers
    /// [`Check::LockedNow`]. While locked, `check`
    /// answers [`Check::Locked`] (to the right code too) and [`issue`](Self::issue)
    /// [`Issue::Locked`]. A match resets the count, and so does a `lockout` with no miss
    /// (the count is forgotten then, as a served lock would reset it). Checks without a live
    /// code, and checks of a burned code, are not misses: they cannot succeed.
    async fn check(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Check, StoreError>;

    /// Gives back `code`, which [`check`](Self::check) found valid and consumed, because the
    /// login it was for could not be completed (the user store did not answer): it is the
    /// phone's pending code again, with the attempts it had, if it is still the phone's last
    /// code and has not expired by `now`. Otherwise nothing changes. One atomic step.
    ///
    /// The default does nothing: a store without it spends the code on such a failure, and
    /// the user asks for a new one.
    async fn restore(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        let _ = (phone, code, now, policy);
        Ok(())
    }

    /// Records that `session` was revoked at `at`, so that every instance sharing this store
    /// refuses its access tokens once it has read [`revoked_sessions`](Self::revoked_sessions).
    /// Entries revoked more than `keep` before `at` may be forgotten from then on: the
    /// service passes the access-token lifetime and a margin, after which no token of those
    /// sessions is live. Revoking a session again records the later time.
    async fn revoke_session(
        &self,
        session: &FamilyId,
        at: Timestamp,
        keep: Duration,
    ) -> Result<(), StoreError>;

    /// The sessions revoked at or after `since`, with when, in the order of their revocation
    /// times (the same time, any order).
    async fn revoked_sessions(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(FamilyId, Timestamp)>, StoreError>;

    /// Checks that the store answers (for `/ready`).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The outcome of [`OtpStore::issue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issue {
    /// Stored; the SMS may go out.
    Stored,
    /// The previous code went out less than the cooldown ago.
    Cooldown {
        /// Time until a code may be sent.
        retry_after: Duration,
    },
    /// The rolling window is full.
    WindowFull {
        /// Time until the oldest send leaves the window.
        retry_after: Duration,
    },
    /// The phone is locked after too many consecutive wrong codes.
    Locked {
        /// Time until the lock ends.
        retry_after: Duration,
    },
}

/// The outcome of [`OtpStore::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The code matched and is now consumed.
    Valid,
    /// The code did not match; `attempts_left` more misses are allowed.
    Invalid {
        /// Misses left before the code is burned or the phone is locked, whichever comes
        /// first.
        attempts_left: u32,
    },
    /// Too many misses: the code is burned.
    Burned {
        /// Time until a new code may be issued.
        retry_after: Duration,
    },
    /// No live code: never issued, expired, or consumed.
    Missing,
    /// The phone is locked after too many consecutive wrong codes, by an earlier miss.
    Locked {
        /// Time until the lock ends.
        retry_after: Duration,
    },
    /// This miss was the one that locked the phone (the service records `phone.locked`).
    LockedNow {
        /// Time until the lock ends.
        retry_after: Duration,
    },
}

/// Counters for per-client rate limits (e.g. `send_code` per IP), shared by every server
/// instance that shares the store.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Counts one hit on `key` in the fixed window of length `window` that contains `now`
    /// (windows start at multiples of `window` since the epoch), in one atomic step, and says
    /// whether it is within `limit` hits. Hits over the limit are not counted.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError>;

    /// Counts one hit on `key` in a sliding window of length `window` ending at `now`, in one
    /// atomic step, and says whether it is within `limit` hits. Hits over the limit are not
    /// counted.
    ///
    /// The window is estimated from two fixed windows, as [`hit`](Self::hit) counts them: the
    /// hits of the current one, plus the hits of the one before weighted by the share of it
    /// that still lies within `window` of `now` (rounded up) — see [`sliding_estimate`]. So a
    /// full count does not drop to zero when a fixed window ends but frees its places
    /// gradually, and a burst at the end of one window and the start of the next cannot pass
    /// twice the limit. [`take_back`](Self::take_back) takes back from the current window.
    ///
    /// The default counts in fixed windows ([`hit`](Self::hit)); the memory and Redis stores
    /// slide.
    async fn hit_sliding(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        self.hit(key, limit, window, now).await
    }

    /// Takes back one hit on `key` counted by [`hit`](Self::hit) in the window of length
    /// `window` that contains `now` (an action that then failed for a reason not the
    /// client's, such as an SMS gateway error). Never below zero; a counter of another window
    /// is left alone. The default does nothing: the hit stays counted.
    async fn take_back(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let _ = (key, window, now);
        Ok(())
    }

    /// Checks that the store answers (for `/ready`).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The outcome of [`RateLimitStore::hit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the limit; `remaining` more hits fit in this window.
    Allowed {
        /// Hits left in this window.
        remaining: u32,
    },
    /// Over the limit until the window ends.
    Limited {
        /// Time until the window ends.
        retry_after: Duration,
    },
}

/// The sliding-window estimate of [`RateLimitStore::hit_sliding`] at `now`, from the hits of
/// the fixed window that contains `now` (`current`, a window ending at `window_end`) and of
/// the one before (`previous`), and whether one more hit fits in `limit`.
///
/// Estimate: `current + ceil(previous × (window_end − now) / window)`. Allowed when it is below
/// `limit`; otherwise `retry_after` is the time until it will be (assuming no new hits).
pub fn sliding_estimate(
    limit: u32,
    window: Duration,
    window_end: Timestamp,
    now: Timestamp,
    previous: u32,
    current: u32,
) -> RateDecision {
    let w = window.as_secs().max(1);
    let left = now.secs_until(window_end).min(w);
    // u128: a window of up to 2^64 s times 2^32 hits does not overflow.
    let (w128, left128) = (u128::from(w), u128::from(left));
    let carried = (u128::from(previous) * left128).div_ceil(w128);
    let carried = u64::try_from(carried).unwrap_or(u64::MAX);
    let estimate = carried.saturating_add(u64::from(current));
    if estimate < u64::from(limit) {
        let remaining = u64::from(limit) - estimate - 1;
        return RateDecision::Allowed {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        };
    }
    // The first second at which the estimate is below `limit`. Within this window, the carried
    // part must fit in `limit - current - 1`; if the current window alone is full, in the next
    // window its hits are the carried part, and `limit - 1` must hold them.
    let wait = if current < limit {
        let room = u128::from(limit - current - 1);
        // ceil(previous * left' / w) <= room  <=>  left' <= room * w / previous
        let left_then = (room * w128) / u128::from(previous.max(1));
        left - u64::try_from(left_then).unwrap_or(u64::MAX).min(left)
    } else if limit == 0 {
        w
    } else {
        let room = u128::from(limit - 1);
        let left_then = (room * w128) / u128::from(current);
        left.saturating_add(w - u64::try_from(left_then).unwrap_or(u64::MAX).min(w))
    };
    RateDecision::Limited {
        retry_after: Duration::from_secs(wait.max(1)),
    }
}

/// Implements every store trait for a smart pointer to a store, so that a caller can keep a
/// handle on a store it gives the service (`Arc<S>`) and pick a backend at run time
/// (`Arc<dyn UserStore>`, `Box<dyn OtpStore>`, ...).
macro_rules! stores_behind {
    ($($pointer:ident),+) => {$(
        #[async_trait]
        impl<S: UserStore + ?Sized> UserStore for $pointer<S> {
            async fn find_or_create(
                &self,
                phone: &Phone,
                new_code: &(dyn Fn() -> InviteCode + Send + Sync),
                change: Change,
            ) -> Result<Registration, StoreError> {
                (**self).find_or_create(phone, new_code, change).await
            }
            async fn profile(
                &self,
                user: UserId,
                invitees: usize,
            ) -> Result<Option<Profile>, StoreError> {
                (**self).profile(user, invitees).await
            }
            async fn invitees(
                &self,
                user: UserId,
                after: Option<InviteeCursor>,
                limit: usize,
            ) -> Result<Option<InviteePage>, StoreError> {
                (**self).invitees(user, after, limit).await
            }
            async fn activate_invite(
                &self,
                user: UserId,
                code: &InviteCode,
                change: Change,
            ) -> Result<Activation, StoreError> {
                (**self).activate_invite(user, code, change).await
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
                (**self)
                    .start_family(user, family, jti, client, change, expires_at)
                    .await
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
                (**self)
                    .rotate_refresh(family, presented, next, change, expires_at, reuse_grace)
                    .await
            }
            async fn revoke_family(
                &self,
                family: &FamilyId,
                reason: SessionEndReason,
                change: Change,
            ) -> Result<(), StoreError> {
                (**self).revoke_family(family, reason, change).await
            }
            async fn sessions(
                &self,
                user: UserId,
                now: Timestamp,
            ) -> Result<Vec<Session>, StoreError> {
                (**self).sessions(user, now).await
            }
            async fn revoke_sessions(
                &self,
                user: UserId,
                scope: SessionScope<'_>,
                reason: SessionEndReason,
                change: Change,
            ) -> Result<Vec<FamilyId>, StoreError> {
                (**self).revoke_sessions(user, scope, reason, change).await
            }
            async fn user_by_phone(&self, phone: &Phone) -> Result<Option<User>, StoreError> {
                (**self).user_by_phone(phone).await
            }
            async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
                (**self).account(user).await
            }
            async fn change_phone(
                &self,
                user: UserId,
                phone: &Phone,
                change: Change,
            ) -> Result<PhoneChange, StoreError> {
                (**self).change_phone(user, phone, change).await
            }
            async fn delete_account(
                &self,
                user: UserId,
                change: Change,
            ) -> Result<Option<Vec<FamilyId>>, StoreError> {
                (**self).delete_account(user, change).await
            }
            fn keeps_event_log(&self) -> bool {
                (**self).keeps_event_log()
            }
            async fn phone_locked(
                &self,
                phone: &Phone,
                until: Timestamp,
                change: Change,
            ) -> Result<(), StoreError> {
                (**self).phone_locked(phone, until, change).await
            }
            async fn claim_events(
                &self,
                now: Timestamp,
                lease: Duration,
                max: usize,
            ) -> Result<Vec<Claim>, StoreError> {
                (**self).claim_events(now, lease, max).await
            }
            async fn settle_event(
                &self,
                claim: &Claim,
                settlement: &Settlement,
                now: Timestamp,
            ) -> Result<bool, StoreError> {
                (**self).settle_event(claim, settlement, now).await
            }
            async fn settle_delivered(
                &self,
                claims: &[Claim],
                now: Timestamp,
            ) -> Result<u64, StoreError> {
                (**self).settle_delivered(claims, now).await
            }
            async fn events(
                &self,
                status: EventStatus,
                limit: usize,
            ) -> Result<Vec<EventRecord>, StoreError> {
                (**self).events(status, limit).await
            }
            async fn redeliver_events(
                &self,
                which: &Redeliver,
                now: Timestamp,
            ) -> Result<u64, StoreError> {
                (**self).redeliver_events(which, now).await
            }
            async fn prune_events(
                &self,
                before: Timestamp,
                max: usize,
            ) -> Result<u64, StoreError> {
                (**self).prune_events(before, max).await
            }
            async fn ping(&self) -> Result<(), StoreError> {
                (**self).ping().await
            }
        }

        #[async_trait]
        impl<S: OtpStore + ?Sized> OtpStore for $pointer<S> {
            async fn issue(
                &self,
                phone: &Phone,
                code: &OtpHash,
                now: Timestamp,
                policy: &OtpPolicy,
            ) -> Result<Issue, StoreError> {
                (**self).issue(phone, code, now, policy).await
            }
            async fn cancel(
                &self,
                phone: &Phone,
                code: &OtpHash,
                issued_at: Timestamp,
                policy: &OtpPolicy,
            ) -> Result<(), StoreError> {
                (**self).cancel(phone, code, issued_at, policy).await
            }
            async fn check(
                &self,
                phone: &Phone,
                code: &OtpHash,
                now: Timestamp,
                policy: &OtpPolicy,
            ) -> Result<Check, StoreError> {
                (**self).check(phone, code, now, policy).await
            }
            async fn restore(
                &self,
                phone: &Phone,
                code: &OtpHash,
                now: Timestamp,
                policy: &OtpPolicy,
            ) -> Result<(), StoreError> {
                (**self).restore(phone, code, now, policy).await
            }
            async fn revoke_session(
                &self,
                session: &FamilyId,
                at: Timestamp,
                keep: Duration,
            ) -> Result<(), StoreError> {
                (**self).revoke_session(session, at, keep).await
            }
            async fn revoked_sessions(
                &self,
                since: Timestamp,
            ) -> Result<Vec<(FamilyId, Timestamp)>, StoreError> {
                (**self).revoked_sessions(since).await
            }
            async fn ping(&self) -> Result<(), StoreError> {
                (**self).ping().await
            }
        }

        #[async_trait]
        impl<S: RateLimitStore + ?Sized> RateLimitStore for $pointer<S> {
            async fn hit(
                &self,
                key: &str,
                limit: u32,
                window: Duration,
                now: Timestamp,
            ) -> Result<RateDecision, StoreError> {
                (**self).hit(key, limit, window, now).await
            }
            async fn hit_sliding(
                &self,
                key: &str,
                limit: u32,
                window: Duration,
                now: Timestamp,
            ) -> Result<RateDecision, StoreError> {
                (**self).hit_sliding(key, limit, window, now).await
            }
            async fn take_back(
                &self,
                key: &str,
                window: Duration,
                now: Timestamp,
            ) -> Result<(), StoreError> {
                (**self).take_back(key, window, now).await
            }
            async fn ping(&self) -> Result<(), StoreError> {
                (**self).ping().await
            }
        }
    )+};
}

stores_behind!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore};

    /// A service over stores chosen at run time, behind `Arc<dyn …>` or `Box<dyn …>`: a login
    /// (user and OTP stores), a readiness check (every store) and a client limit (the
    /// rate-limit store) go through them, and a handle the caller kept sees the writes.
    async fn exercise(
        users: Arc<dyn UserStore>,
        service: crate::ReferralService,
    ) -> Result<(), crate::Error> {
        service.send_code("+375291000001").await?;
        let login = service.verify_code("+375291000001", "1111").await?;
        service.ready().await?;
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        service
            .check_client(crate::ClientAction::SendCode, ip)
            .await?;
        let limited = service
            .check_client(crate::ClientAction::SendCode, ip)
            .await;
        assert!(matches!(limited, Err(crate::Error::RateLimited { .. })));
        let profile = users
            .profile(login.user_id, usize::MAX)
            .await?
            .expect("the new user");
        assert_eq!(profile.phone.as_str(), "+375291000001");
        Ok(())
    }

    fn policy() -> crate::Policy {
        crate::Policy::builder()
            .test_phone("+375291000001", "1111")
            .build()
            .unwrap()
    }

    fn one_send_a_minute() -> crate::ClientLimits {
        crate::ClientLimits {
            send_code: Some(crate::RateLimit::per_minute(1)),
            ..crate::ClientLimits::default()
        }
    }

    #[tokio::test]
    async fn stores_work_behind_arc_dyn() {
        let users: Arc<dyn UserStore> = Arc::new(MemoryUserStore::new());
        let otps: Arc<dyn OtpStore> = Arc::new(MemoryOtpStore::new());
        let rate: Arc<dyn RateLimitStore> = Arc::new(MemoryRateLimitStore::new());
        let service = crate::ReferralService::builder(
            users.clone(),
            otps,
            crate::LogSender,
            crate::JwtKeys::hs256_random(),
        )
        .policy(policy())
        .client_limits(rate, one_send_a_minute())
        .build();
        exercise(users, service).await.unwrap();
    }

    #[tokio::test]
    async fn stores_work_behind_box_dyn() {
        let users: Arc<dyn UserStore> = Arc::new(MemoryUserStore::new());
        let boxed: Box<dyn UserStore> = Box::new(users.clone());
        let otps: Box<dyn OtpStore> = Box::new(MemoryOtpStore::new());
        let rate: Box<dyn RateLimitStore> = Box::new(MemoryRateLimitStore::new());
        let service = crate::ReferralService::builder(
            boxed,
            otps,
            crate::LogSender,
            crate::JwtKeys::hs256_random(),
        )
        .policy(policy())
        .client_limits(rate, one_send_a_minute())
        .build();
        exercise(users, service).await.unwrap();
    }
}
