use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::memory::sweep::SWEEP_EVERY;
use crate::store::{Check, Issue, OtpStore};
use crate::{FamilyId, OtpHash, OtpPolicy, Phone, StoreError, Timestamp};

/// An [`OtpStore`] in process memory. State is lost on restart and not shared between
/// processes: use the Redis store to run several instances.
#[derive(Debug, Default)]
pub struct MemoryOtpStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    phones: HashMap<Phone, PhoneState>,
    writes: u64,
    /// Revoked sessions and when (see `OtpStore::revoke_session`).
    revoked: HashMap<FamilyId, Timestamp>,
}

#[derive(Debug, Default)]
struct PhoneState {
    pending: Option<Pending>,
    /// Send times inside the rolling window, oldest first.
    sends: VecDeque<Timestamp>,
    /// Consecutive wrong codes, across codes.
    failures: u32,
    /// When `failures` is forgotten: one lockout after the last wrong code.
    failures_expire_at: Option<Timestamp>,
    /// The end of the lock, while the phone is locked.
    locked_until: Option<Timestamp>,
}

#[derive(Debug)]
struct Pending {
    hash: OtpHash,
    expires_at: Timestamp,
    attempts_left: u32,
    /// Checked and found valid; kept until it expires so that it can be restored.
    consumed: bool,
}

impl PhoneState {
    fn forget_old(&mut self, now: Timestamp, policy: &OtpPolicy) {
        while let Some(&oldest) = self.sends.front() {
            if oldest.plus(policy.send_window) <= now {
                self.sends.pop_front();
            } else {
                break;
            }
        }
        if self.pending.as_ref().is_some_and(|p| p.expires_at <= now) {
            self.pending = None;
        }
        if self.failures_expire_at.is_some_and(|at| at <= now) {
            self.failures = 0;
            self.failures_expire_at = None;
        }
        if self.locked_until.is_some_and(|until| until <= now) {
            self.locked_until = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_none()
            && self.sends.is_empty()
            && self.failures == 0
            && self.locked_until.is_none()
    }

    /// Time left of the lock, if the phone is locked (after [`forget_old`](Self::forget_old)).
    fn lock_left(&self, now: Timestamp) -> Option<Duration> {
        self.locked_until
            .map(|until| Duration::from_secs(now.secs_until(until).max(1)))
    }

    /// Counts a wrong code; the `max_failures`-th locks the phone and drops its code.
    /// Returns the misses left before the lock, or `None` if this one locked it.
    fn count_failure(&mut self, now: Timestamp, policy: &OtpPolicy) -> Option<u32> {
        self.failures += 1;
        if self.failures >= policy.max_failures {
            self.failures = 0;
            self.failures_expire_at = None;
            self.pending = None;
            self.locked_until = Some(now.plus(policy.lockout));
            return None;
        }
        self.failures_expire_at = Some(now.plus(policy.lockout));
        Some(policy.max_failures - self.failures)
    }

    /// Why a code cannot be issued now, if it cannot. A full window wins over the cooldown,
    /// and `retry_after` is when both have passed.
    fn blocked(&self, now: Timestamp, policy: &OtpPolicy) -> Option<Issue> {
        let cooldown = self
            .sends
            .back()
            .map_or(0, |&last| now.secs_until(last.plus(policy.resend_cooldown)));
        let window = match self.sends.front() {
            Some(&oldest) if self.sends.len() >= policy.max_sends_per_window as usize => {
                now.secs_until(oldest.plus(policy.send_window))
            }
            _ => 0,
        };
        if window > 0 {
            Some(Issue::WindowFull {
                retry_after: Duration::from_secs(window.max(cooldown)),
            })
        } else if cooldown > 0 {
            Some(Issue::Cooldown {
                retry_after: Duration::from_secs(cooldown),
            })
        } else {
            None
        }
    }
}

impl MemoryOtpStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Phones with live state (pending code or sends in the window), after the last sweep.
    pub fn len(&self) -> usize {
        self.lock().phones.len()
    }

    /// Whether no phone has live state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied update (every update is
        // a few assignments), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn sweep_sometimes(&mut self, now: Timestamp, policy: &OtpPolicy) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.phones.retain(|_, phone| {
                phone.forget_old(now, policy);
                !phone.is_empty()
            });
        }
    }
}

#[async_trait]
impl OtpStore for MemoryOtpStore {
    async fn issue(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Issue, StoreError> {
        let mut state = self.lock();
        state.sweep_sometimes(now, policy);
        let entry = state.phones.entry(phone.clone()).or_default();
        entry.forget_old(now, policy);
        if let Some(retry_after) = entry.lock_left(now) {
            return Ok(Issue::Locked { retry_after });
        }
        if let Some(blocked) = entry.blocked(now, policy) {
            return Ok(blocked);
        }
        entry.pending = Some(Pending {
            hash: *code,
            expires_at: now.plus(policy.code_ttl),
            attempts_left: policy.max_attempts,
            consumed: false,
        });
        entry.sends.push_back(now);
        Ok(Issue::Stored)
    }

    async fn cancel(
        &self,
        phone: &Phone,
        code: &OtpHash,
        issued_at: Timestamp,
        _policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(entry) = state.phones.get_mut(phone) {
            if entry.pending.as_ref().is_some_and(|p| p.hash == *code) {
                entry.pending = None;
            }
            if let Some(at) = entry.sends.iter().rposition(|&sent| sent == issued_at) {
                entry.sends.remove(at);
            }
            if entry.is_empty() {
                state.phones.remove(phone);
            }
        }
        Ok(())
    }

    async fn check(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<Check, StoreError> {
        let mut state = self.lock();
        state.sweep_sometimes(now, policy);
        let Some(entry) = state.phones.get_mut(phone) else {
            return Ok(Check::Missing);
        };
        entry.forget_old(now, policy);
        if let Some(retry_after) = entry.lock_left(now) {
            return Ok(Check::Locked { retry_after });
        }
        let Some(pending) = entry.pending.as_mut().filter(|p| !p.consumed) else {
            return Ok(Check::Missing);
        };
        if pending.attempts_left > 0 {
            if pending.hash == *code {
                pending.consumed = true;
                entry.failures = 0;
                entry.failures_expire_at = None;
                return Ok(Check::Valid);
            }
            pending.attempts_left -= 1;
            let code_left = pending.attempts_left;
            let Some(budget_left) = entry.count_failure(now, policy) else {
                return Ok(Check::LockedNow {
                    retry_after: Duration::from_secs(policy.lockout.as_secs().max(1)),
                });
            };
            if code_left > 0 {
                return Ok(Check::Invalid {
                    attempts_left: code_left.min(budget_left),
                });
            }
        }
        let retry_after = match entry.blocked(now, policy) {
            Some(Issue::Cooldown { retry_after } | Issue::WindowFull { retry_after }) => {
                retry_after
            }
            _ => Duration::from_secs(1),
        };
        Ok(Check::Burned { retry_after })
    }

    async fn restore(
        &self,
        phone: &Phone,
        code: &OtpHash,
        now: Timestamp,
        policy: &OtpPolicy,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(entry) = state.phones.get_mut(phone) {
            entry.forget_old(now, policy);
            if let Some(pending) = entry.pending.as_mut()
                && pending.consumed
                && pending.hash == *code
            {
                pending.consumed = false;
            }
        }
        Ok(())
    }

    async fn revoke_session(
        &self,
        session: &FamilyId,
        at: Timestamp,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let forget_before = Timestamp::from_unix(at.as_unix().saturating_sub(keep.as_secs()));
        state.revoked.retain(|_, when| *when >= forget_before);
        let when = state.revoked.entry(session.clone()).or_insert(at);
        *when = (*when).max(at);
        Ok(())
    }

    async fn revoked_sessions(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(FamilyId, Timestamp)>, StoreError> {
        let state = self.lock();
        let mut revoked: Vec<(FamilyId, Timestamp)> = state
            .revoked
            .iter()
            .filter(|(_, when)| **when >= since)
            .map(|(session, when)| (session.clone(), *when))
            .collect();
        revoked.sort_by_key(|(_, when)| *when);
        Ok(revoked)
    }
}
