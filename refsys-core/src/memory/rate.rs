use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::memory::sweep::SWEEP_EVERY;
use crate::store::{RateDecision, RateLimitStore};
use crate::{StoreError, Timestamp};

/// A [`RateLimitStore`] in process memory: limits hold per process only. Use the Redis store
/// to share them across instances.
#[derive(Debug, Default)]
pub struct MemoryRateLimitStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// key → (window end, hits in the window)
    counters: HashMap<String, (Timestamp, u32)>,
    writes: u64,
}

impl MemoryRateLimitStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimitStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        let window_end = window_end(window, now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.writes += 1;
        if state.writes.is_multiple_of(SWEEP_EVERY) {
            state.counters.retain(|_, (end, _)| *end > now);
        }
        let counter = state
            .counters
            .entry(key.to_owned())
            .or_insert((window_end, 0));
        if counter.0 != window_end {
            *counter = (window_end, 0);
        }
        if counter.1 >= limit {
            return Ok(RateDecision::Limited {
                retry_after: Duration::from_secs(now.secs_until(window_end).max(1)),
            });
        }
        counter.1 += 1;
        Ok(RateDecision::Allowed {
            remaining: limit - counter.1,
        })
    }

    async fn take_back(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let window_end = window_end(window, now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = state.counters.get_mut(key)
            && counter.0 == window_end
        {
            counter.1 = counter.1.saturating_sub(1);
        }
        Ok(())
    }
}

/// The end of the fixed window of length `window` that contains `now`.
fn window_end(window: Duration, now: Timestamp) -> Timestamp {
    let window_secs = window.as_secs().max(1);
    Timestamp::from_unix((now.as_unix() / window_secs + 1).saturating_mul(window_secs))
}
