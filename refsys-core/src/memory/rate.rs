use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::memory::sweep::SWEEP_EVERY;
use crate::store::{RateDecision, RateLimitStore, sliding_estimate};
use crate::{StoreError, Timestamp};

/// A [`RateLimitStore`] in process memory: limits hold per process only. Use the Redis store
/// to share them across instances.
#[derive(Debug, Default)]
pub struct MemoryRateLimitStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, Counter>,
    writes: u64,
}

/// One key's count.
#[derive(Debug, Clone, Copy)]
struct Counter {
    /// The end of the fixed window counted.
    end: Timestamp,
    /// Hits in it.
    hits: u32,
    /// Hits in the window before it (sliding counters only).
    previous: u32,
    /// When the counter may be forgotten: its window's end, or a window later for a sliding
    /// counter (its hits still count as the next window's `previous`).
    keep_until: Timestamp,
}

impl State {
    /// The counter of `key` for the fixed window ending at `end`, started (or rolled over)
    /// as needed; `sliding` keeps the last window's hits as `previous`.
    fn counter(
        &mut self,
        key: &str,
        end: Timestamp,
        window: Duration,
        now: Timestamp,
        sliding: bool,
    ) -> &mut Counter {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.counters.retain(|_, c| c.keep_until > now);
        }
        let keep_until = if sliding { end.plus(window) } else { end };
        let fresh = Counter {
            end,
            hits: 0,
            previous: 0,
            keep_until,
        };
        let counter = self.counters.entry(key.to_owned()).or_insert(fresh);
        if counter.end != end {
            let previous = if sliding && counter.end.plus(window) == end {
                counter.hits
            } else {
                0
            };
            *counter = Counter { previous, ..fresh };
        }
        counter
    }
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
        let counter = state.counter(key, window_end, window, now, false);
        if counter.hits >= limit {
            return Ok(RateDecision::Limited {
                retry_after: Duration::from_secs(now.secs_until(window_end).max(1)),
            });
        }
        counter.hits += 1;
        Ok(RateDecision::Allowed {
            remaining: limit - counter.hits,
        })
    }

    async fn hit_sliding(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<RateDecision, StoreError> {
        let window_end = window_end(window, now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let counter = state.counter(key, window_end, window, now, true);
        let decision = sliding_estimate(
            limit,
            window,
            window_end,
            now,
            counter.previous,
            counter.hits,
        );
        if let RateDecision::Allowed { .. } = decision {
            counter.hits += 1;
        }
        Ok(decision)
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
            && counter.end == window_end
        {
            counter.hits = counter.hits.saturating_sub(1);
        }
        Ok(())
    }
}

/// The end of the fixed window of length `window` that contains `now`.
fn window_end(window: Duration, now: Timestamp) -> Timestamp {
    let window_secs = window.as_secs().max(1);
    Timestamp::from_unix((now.as_unix() / window_secs + 1).saturating_mul(window_secs))
}
