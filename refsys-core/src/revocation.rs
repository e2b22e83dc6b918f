//! Revocation that takes effect at once: a revoked session's access tokens are refused by
//! every instance within a second, not only when they expire.
//!
//! Access tokens are checked without a store (signature, kind, expiry), so by themselves they
//! outlive a logout by up to their lifetime. With [`Revocation::Instant`] (the default) each
//! instance also keeps the set of sessions revoked within the last access-token lifetime —
//! the only ones whose tokens can still be live — and refuses their tokens: a lookup in a
//! local hash map per request, no store round trip. The set is shared through the
//! [`OtpStore`] (Redis, for several instances): the instance that revokes a session adds it
//! to its own set at once and records it in the store
//! ([`OtpStore::revoke_session`]); every instance reads what was recorded since its last
//! read ([`OtpStore::revoked_sessions`]) every [`POLL`], and forgets entries once no token of
//! theirs can be live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::store::OtpStore;
use crate::{Clock, FamilyId, Timestamp};

/// Whether a revoked session's access tokens are refused at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Revocation {
    /// Refused by every instance within a second (see the [module docs](self)). The default.
    #[default]
    Instant,
    /// Checked by signature and expiry only: a revoked session's access tokens live out their
    /// lifetime (its refresh token is refused at once either way). No revocation list.
    Stateless,
}

/// How often an instance reads the sessions other instances revoked.
pub const POLL: Duration = Duration::from_millis(500);

/// Each read goes back this far before the latest revocation it has seen (or its own now, if
/// earlier), so that an instance whose clock is a little behind cannot write a revocation the
/// others skip. Keep the instances' clocks within this of each other (NTP).
const CLOCK_MARGIN: Duration = Duration::from_secs(30);

/// This instance's view of the revoked sessions whose access tokens may still be live.
#[derive(Debug)]
pub(crate) struct RevokedSessions {
    /// How long an entry matters: the access-token lifetime and a margin.
    keep: Duration,
    revoked: RwLock<HashMap<String, Timestamp>>,
    /// The latest revocation time read from the store.
    latest: Mutex<Option<Timestamp>>,
}

impl RevokedSessions {
    pub(crate) fn new(keep: Duration) -> Self {
        Self {
            keep,
            revoked: RwLock::default(),
            latest: Mutex::default(),
        }
    }

    /// How long the store keeps an entry.
    pub(crate) fn keep(&self) -> Duration {
        self.keep
    }

    /// Whether `session`'s access tokens are refused.
    pub(crate) fn contains(&self, session: &str) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        revoked.contains_key(session)
    }

    /// Refuses `session`'s access tokens on this instance from now on.
    pub(crate) fn insert(&self, session: &FamilyId, at: Timestamp) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.insert(session.as_str().to_owned(), at);
    }

    /// Reads what was revoked since the last read, and forgets what no longer matters.
    pub(crate) async fn sync(
        &self,
        otps: &dyn OtpStore,
        now: Timestamp,
    ) -> Result<(), crate::StoreError> {
        let oldest = back(now, self.keep);
        let latest = *self.latest.lock().unwrap_or_else(|e| e.into_inner());
        // Never past this instance's own now: one instance whose clock runs ahead must not
        // make the others skip what correctly clocked ones write.
        let since = latest.map_or(oldest, |at| back(at.min(now), CLOCK_MARGIN).max(oldest));
        let read = otps.revoked_sessions(since).await?;
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, at| *at >= oldest);
        let mut newest = latest;
        for (session, at) in read {
            newest = newest.max(Some(at));
            if at >= oldest {
                revoked.insert(session.as_str().to_owned(), at);
            }
        }
        drop(revoked);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = newest;
        Ok(())
    }

    /// Reads the store every [`POLL`] until `alive` can no longer be upgraded (every handle
    /// on the service is gone).
    pub(crate) async fn run<T: Send + Sync>(
        self: Arc<Self>,
        otps: Arc<dyn OtpStore>,
        clock: Arc<dyn Clock>,
        alive: Weak<T>,
    ) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if alive.strong_count() == 0 {
                return;
            }
            if let Err(error) = self.sync(&*otps, clock.now()).await {
                // The store logs its outage once (`watch`); the next tick tries again.
                tracing::debug!(%error, "could not read the revoked sessions");
            }
        }
    }
}

/// `at` less `by`, at the start of time at the earliest.
fn back(at: Timestamp, by: Duration) -> Timestamp {
    Timestamp::from_unix(at.as_unix().saturating_sub(by.as_secs()))
}
