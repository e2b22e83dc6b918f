//! Store outages in the log: one ERROR when a store stops answering, a WARN at most every
//! 10 s while it stays down (with how many calls failed), one INFO when it answers again. Not
//! one line per request: an outage under load would otherwise write thousands.
//!
//! [`Watched`] wraps each store the service is built with and reports every call's outcome,
//! with when the call began, to its [`Outage`]. Calls in flight when an outage begins or ends
//! finish on either side of it: a call that began before the outage began does not end it by
//! succeeding, and one that began before it ended does not begin a new one by failing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::account::{Account, InviteeCursor, InviteePage, PhoneChange};
use crate::event::{
    Change, Claim, EventRecord, EventStatus, Redeliver, SessionEndReason, Settlement,
};
use crate::session::{Session, SessionClient, SessionScope};
use crate::store::{
    Activation, Check, Issue, OtpStore, RateDecision, RateLimitStore, Rotation, UserStore,
};
use crate::{
    FamilyId, InviteCode, OtpHash, OtpPolicy, Phone, Profile, Registration, StoreError, Timestamp,
    TokenId, UserId,
};

/// The shortest time between two "still unavailable" warnings.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The state of one store's outage, if it has one.
#[derive(Debug)]
pub(crate) struct Outage {
    store: &'static str,
    /// Whether an outage is on: the one thing a successful call reads (no lock).
    down: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the outage began, while there is one.
    since: Option<Instant>,
    /// Calls that failed since then.
    failures: u64,
    /// The last line logged about it.
    last_logged: Option<Instant>,
    /// When the last outage ended.
    ended: Option<Instant>,
}

impl Outage {
    pub(crate) fn new(store: &'static str) -> Self {
        Outage {
            store,
            down: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    /// Notes the outcome of one call that began at `began`; logs when an outage begins, lasts
    /// or ends.
    pub(crate) fn record<T>(&self, began: Instant, outcome: &Result<T, StoreError>) {
        if outcome.is_ok() && !self.down.load(Ordering::Relaxed) {
            return;
        }
        let store = self.store;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(_) => {
                // A call that began before the outage says nothing of the store since.
                if let Some(since) = state.since.filter(|since| began >= *since) {
                    state.since = None;
                    state.ended = Some(Instant::now());
                    self.down.store(false, Ordering::Relaxed);
                    tracing::info!(
                        store,
                        failed_calls = state.failures,
                        outage_ms = since.elapsed().as_millis(),
                        "store answers again"
                    );
                    state.failures = 0;
                }
            }
            // A late failure of the outage that has ended.
            Err(StoreError::Unavailable(_))
                if state.since.is_none() && state.ended.is_some_and(|ended| began < ended) => {}
            Err(StoreError::Unavailable(error)) => {
                let now = Instant::now();
                state.failures += 1;
                if state.since.is_none() {
                    self.down.store(true, Ordering::Relaxed);
                    state.since = Some(now);
                    state.failures = 1;
                    state.last_logged = Some(now);
                    tracing::error!(store, %error, "store unavailable");
                } else if state
                    .last_logged
                    .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
                {
                    state.last_logged = Some(now);
                    tracing::warn!(store, failed_calls = state.failures, %error, "store still unavailable");
                }
            }
            // Not an outage: a bug or bad data, worth a line each time.
            Err(error) => tracing::error!(store, %error, "store call failed"),
        }
    }
}

/// A store whose calls are reported to an [`Outage`].
pub(crate) struct Watched<S: ?Sized> {
    inner: Arc<S>,
    outage: Outage,
}

impl<S: ?Sized> Watched<S> {
    pub(crate) fn new(store: &'static str, inner: Arc<S>) -> Self {
        Watched {
            inner,
            outage: Outage::new(store),
        }
    }

    /// Runs `call` (a store future, which does nothing until polled) and reports its outcome.
    async fn watch<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let began = Instant::now();
        let outcome = call.await;
        self.outage.record(began, &outcome);
        outcome
    }
}

#[async_trait]
impl<S: UserStore + ?Sized> UserStore for Watched<S> {
    async fn find_or_create(
        &self,
        phone: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
        change: Change,
    ) -> Result<Registration, StoreError> {
        self.watch(self.inner.find_or_create(phone, new_code, change))
            .await
    }
    async fn profile(&self, user: UserId, invitees: usize) -> Result<Option<Profile>, StoreError> {
        self.watch(self.inner.profile(user, invitees)).await
    }
    async fn invitees(
        &self,
        user: UserId,
        after: Option<InviteeCursor>,
        limit: usize,
    ) -> Result<Option<InviteePage>, StoreError> {
        self.watch(self.inner.invitees(user, after, limit)).await
    }
    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
        change: Change,
    ) -> Result<Activation, StoreError> {
        self.watch(self.inner.activate_invite(user, code, change))
            .await
    }
    async fn start_family(
        &self,
        user: &crate::User,
        family: &FamilyId,
        jti: &TokenId,
        client: &SessionClient,
        change: Change,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.watch(
            self.inner
                .start_family(user, family, jti, client, change, expires_at),
        )
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
        self.watch(self.inner.rotate_refresh(
            family,
            presented,
            next,
            change,
            expires_at,
            reuse_grace,
        ))
        .await
    }
    async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<(), StoreError> {
        self.watch(self.inner.revoke_family(family, reason, change))
            .await
    }
    async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError> {
        self.watch(self.inner.sessions(user, now)).await
    }
    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: SessionScope<'_>,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<Vec<FamilyId>, StoreError> {
        self.watch(self.inner.revoke_sessions(user, scope, reason, change))
            .await
    }
    async fn user_by_phone(&self, phone: &Phone) -> Result<Option<crate::User>, StoreError> {
        self.watch(self.inner.user_by_phone(phone)).await
    }
    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        self.watch(self.inner.account(user)).await
    }
    async fn change_phone(
        &self,
        user: UserId,
        phone: &Phone,
        change: Change,
    ) -> Result<PhoneChange, StoreError> {
        self.watch(self.inner.change_phone(user, phone, change))
            .await
    }
    async fn delete_account(
        &self,
        user: UserId,
        change: Change,
    ) -> Result<Option<Vec<FamilyId>>, StoreError> {
        self.watch(self.inner.delete_account(user, change)).await
    }
    fn keeps_event_log(&self) -> bool {
        self.inner.keeps_event_log()
    }
    async fn phone_locked(
        &self,
        phone: &Phone,
        until: Timestamp,
        change: Change,
    ) -> Result<(), StoreError> {
        self.watch(self.inner.phone_locked(phone, until, change))
            .await
    }
    async fn claim_events(
        &self,
        now: Timestamp,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        self.watch(self.inner.claim_events(now, lease, max)).await
    }
    async fn settle_event(
        &self,
        claim: &Claim,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.watch(self.inner.settle_event(claim, settlement, now))
            .await
    }
    async fn settle_delivered(&self, claims: &[Claim], now: Timestamp) -> Result<u64, StoreError> {
        self.watch(self.inner.settle_delivered(claims, now)).await
    }
    async fn events(
        &self,
        status: EventStatus,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.watch(self.inner.events(status, limit)).await
    }
    async fn redeliver_events(&self, which: &Redeliver, now: Timestamp) -> Result<u64, StoreError> {
        self.watch(self.inner.redeliver_events(which, now)).await
    }
    async fn prune_events(&self, before: Timestamp, max: usize) -> Result<u64, StoreError> {
        self.watch(self.inner.prune_events(before, max)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.watch(self.inner.ping()).await
    }
}

#[async_trait]
impl<S: OtpStore + ?Sized> OtpStore for Watched<S> {
    async fn issue(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Issue, StoreError> {
        self.watch(self.inner.issue(phone, code, now, policy)).await
    }
    async fn cancel(
        &self,
        phone: &Phone,
        code: &OtpHash,
        issued_at: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        self.watch(self.inner.cancel(phone, code, issued_at, policy))
            .await
    }
    async fn check(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Check, StoreError> {
        self.watch(self.inner.check(phone, code, now, policy)).await
    }
    async fn restore(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        self.watch(self.inner.restore(phone, code, now, policy))
            .await
    }
    async fn revoke_session(
        &self,
        session: &FamilyId,
        at: Timestamp,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.watch(self.inner.revoke_session(session, at, keep))
            .await
    }
    async fn revoked_sessions(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(FamilyId, Timestamp)>, StoreError> {
        self.watch(self.inner.revoked_sessions(since)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.watch(self.inner.ping()).await
    }
}

#[async_trait]
impl<S: RateLimitStore + ?Sized> RateLimitStore for Watched<S> {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        self.watch(self.inner.hit(key, limit, window, now)).await
    }
    async fn hit_sliding(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        self.watch(self.inner.hit_sliding(key, limit, window, now))
            .await
    }
    async fn take_back(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.watch(self.inner.take_back(key, window, now)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.watch(self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(outage: &Outage) -> (bool, u64) {
        let state = outage.state.lock().unwrap();
        (outage.down.load(Ordering::Relaxed), state.failures)
    }

    #[test]
    fn an_outage_begins_with_unavailable_and_ends_with_a_success() {
        let outage = Outage::new("test");
        outage.record::<()>(Instant::now(), &Ok(()));
        assert_eq!(failures(&outage), (false, 0));
        for n in 1..=3 {
            outage.record::<()>(Instant::now(), &Err(StoreError::unavailable("refused")));
            assert_eq!(failures(&outage), (true, n));
        }
        outage.record::<()>(Instant::now(), &Ok(()));
        assert_eq!(failures(&outage), (false, 0));
        // Bad data is not an outage.
        outage.record::<()>(Instant::now(), &Err(StoreError::corrupt("garbage")));
        assert_eq!(failures(&outage), (false, 0));
    }

    /// Calls in flight when the store goes down, and when it comes back, finish late: their
    /// outcomes belong to the state the store was in when they began.
    #[test]
    fn calls_in_flight_at_either_end_of_an_outage_do_not_flap_it() {
        // Instants a millisecond apart, so that none equals another.
        let tick = || {
            std::thread::sleep(Duration::from_millis(1));
            Instant::now()
        };
        let outage = Outage::new("test");
        let before = tick();
        outage.record::<()>(tick(), &Err(StoreError::unavailable("terminated")));
        // A call that began before the first failure answers afterwards: still down.
        outage.record::<()>(before, &Ok(()));
        assert_eq!(failures(&outage), (true, 1));
        let during = tick();
        outage.record::<()>(tick(), &Ok(()));
        assert_eq!(failures(&outage), (false, 0));
        // A call that began during the outage fails after it ended: not a new one.
        outage.record::<()>(during, &Err(StoreError::unavailable("refused")));
        assert_eq!(failures(&outage), (false, 0));
        // A call that began after it ended and fails is a new outage.
        outage.record::<()>(tick(), &Err(StoreError::unavailable("refused")));
        assert_eq!(failures(&outage), (true, 1));
    }
}
