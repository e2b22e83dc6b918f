//! Delivering events, at least once: an [`EventHandler`] registered on the
//! [`ServiceBuilder`](crate::ServiceBuilder) and the dispatcher that feeds it.
//!
//! The dispatcher is a task the service starts when it is built with a handler. It
//! [claims](crate::UserStore::claim_events) due events with a lease (so several instances on
//! one database share the work, and each event is with one of them at a time), calls the
//! handler for each, and settles it: delivered, due again after an exponential backoff with
//! jitter, or failed once it is older than the maximum age. An instance that dies mid-delivery
//! loses nothing: its leases run out and another instance (or the restarted one) claims the
//! events again, with the same ids. Delivered events are pruned after the retention period.
//!
//! A handler that fails, hangs or is slow never slows a request: requests only append events
//! in their own transactions.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{Claim, Event, Settlement};
use crate::store::UserStore;
use crate::{Clock, Timestamp};

/// Takes delivery of events. Called once per event at a time, at least once per event: a
/// handler that may see an event again (after a crash, or a lease that ran out) should be
/// idempotent on [`Event::id`].
///
/// ```
/// use async_trait::async_trait;
/// use refsys_core::{Event, EventData, EventHandler, HandlerError};
///
/// struct Rewards;
///
/// #[async_trait]
/// impl EventHandler for Rewards {
///     async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
///         if let EventData::ReferralCreated { referrer_id, .. } = &event.data {
///             // Grant the referrer a reward, keyed by event.id so a redelivery grants none.
///             let _ = referrer_id;
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Takes one event. `Ok` means delivered; an error means "try again later" (with
    /// backoff), until the event is older than the [maximum age](EventDelivery::max_age).
    async fn handle(&self, event: &Event) -> Result<(), HandlerError>;
}

/// Why a handler did not take an event (logged, kept with the event, never sent to a client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}

/// How the dispatcher delivers: its defaults suit a webhook receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDelivery {
    /// How long a claimed event is the claimer's: longer than a handler call may take
    /// ([`handler_timeout`](Self::handler_timeout) is kept below it). Default 60 s.
    pub lease: Duration,
    /// How long one handler call may take before it counts as failed. Default 15 s.
    pub handler_timeout: Duration,
    /// Deliveries in flight at once (at most one per user). Default 32.
    pub batch: usize,
    /// How often the store is asked for due events when no local change woke the dispatcher
    /// (events recorded by other instances, retries). Default 1 s.
    pub poll: Duration,
    /// How long the dispatcher gathers work after a change woke it or a delivery finished,
    /// before it settles and claims, when its last claim left nothing due behind: under
    /// load, one claim and one settlement then serve many events instead of each event
    /// taking two store writes of its own (which, on SQLite's single writer, requests queue
    /// behind). Each event waits up to this long more; a backlog is worked off without it.
    /// Default 10 ms.
    pub linger: Duration,
    /// The first retry's delay; each next one is 4 times longer, up to
    /// [`max_backoff`](Self::max_backoff), with ±20 % jitter. Default 5 s.
    pub first_backoff: Duration,
    /// The longest delay between two attempts. Default 10 h.
    pub max_backoff: Duration,
    /// How long after it was queued an event is still tried; then it is kept as failed.
    /// Default 3 days.
    pub max_age: Duration,
    /// How long delivered events are kept before they are pruned. Default 7 days.
    pub retention: Duration,
}

impl Default for EventDelivery {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            handler_timeout: Duration::from_secs(15),
            batch: 32,
            poll: Duration::from_secs(1),
            linger: Duration::from_millis(10),
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10 * 3600),
            max_age: Duration::from_secs(3 * 24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl EventDelivery {
    /// The delay before attempt `attempt + 1`, after `attempt` (from 1) failed, without
    /// jitter: `first_backoff × 4^(attempt − 1)`, at most `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 4u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// What to do with `claim` after its attempt failed with `error` at `now`: retry after
    /// the backoff with ±20 % jitter, or, past the maximum age, fail.
    pub fn after_failure(&self, claim: &Claim, error: String, now: Timestamp) -> Settlement {
        let age = claim.queued_at.secs_until(now);
        let delay = self.backoff(claim.attempt);
        let jitter = rand::random_range(0.8..=1.2);
        let delay =
            Duration::from_secs_f64(delay.as_secs_f64() * jitter).max(Duration::from_secs(1));
        if Duration::from_secs(age) + delay > self.max_age {
            Settlement::Failed { error }
        } else {
            Settlement::Retry {
                at: now.plus(delay),
                error,
            }
        }
    }
}

/// A delivery this long after its change is logged at `info` (sooner ones at `debug`).
const LATE_SECS: u64 = 60;

/// What the dispatcher task needs: the store, the clock, the handler and the settings.
pub(crate) struct Dispatcher {
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) handler: Arc<dyn EventHandler>,
    pub(crate) delivery: EventDelivery,
    /// Woken when this instance records an event, so that it goes out at once.
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

impl Dispatcher {
    /// Runs until `alive` can no longer be upgraded (every handle on the service is gone).
    ///
    /// Up to [`batch`](EventDelivery::batch) deliveries are in flight at once. The store is
    /// asked for more when half of them are done (or all, for a batch of one): a slow
    /// delivery holds back its own user's later events, and the others' only while half the
    /// batch or more is slow (at most the handler timeout). Finished
    /// deliveries are settled just before the next claim, the delivered ones in one call; after
    /// each wake-up the dispatcher [lingers](EventDelivery::linger) so that a busy instance
    /// makes a few large calls rather than many small ones.
    pub(crate) async fn run<T: Send + Sync>(self, alive: Weak<T>) {
        let this = Arc::new(self);
        let batch = this.delivery.batch.max(1);
        let refill_at = (batch / 2).max(1);
        let mut in_flight = tokio::task::JoinSet::new();
        let mut finished = Vec::new();
        let mut last_prune: Option<Timestamp> = None;
        // Whether the last claim got fewer events than it asked for: nothing more was due.
        let mut caught_up = true;
        // When the oldest finished delivery not settled yet finished.
        let mut waiting_since: Option<tokio::time::Instant> = None;
        while alive.strong_count() > 0 {
            let now = this.clock.now();
            while let Some(done) = in_flight.try_join_next() {
                finished.push(done);
            }
            if !finished.is_empty() {
                waiting_since.get_or_insert_with(tokio::time::Instant::now);
            }
            if last_prune.is_none_or(|at| at.secs_until(now) >= 60) {
                last_prune = Some(now);
                this.prune(now).await;
            }
            let room = batch.saturating_sub(in_flight.len());
            let claiming = in_flight.is_empty() || room >= refill_at;
            // Settle what finished (the delivered ones in one call) before each claim (a
            // finished delivery's user may have its next event due), and whatever has waited a
            // linger, so that no finished event waits on slow ones for its lease to run out.
            if claiming || waiting_since.is_some_and(|at| at.elapsed() >= this.delivery.linger) {
                this.settle_finished(&mut finished, now).await;
                waiting_since = None;
            }
            if claiming {
                let claimed = match this
                    .users
                    .claim_events(now, this.delivery.lease, room)
                    .await
                {
                    Ok(claimed) => {
                        caught_up = claimed.len() < room;
                        claimed
                    }
                    Err(error) => {
                        // The store logs its outage once (`watch`); wait and ask again.
                        tracing::debug!(%error, "could not claim events");
                        Vec::new()
                    }
                };
                for claim in claimed {
                    let this = Arc::clone(&this);
                    in_flight.spawn(async move {
                        let settlement = this.deliver(&claim).await;
                        (claim, settlement)
                    });
                }
            }
            // Wait for a finished delivery (a slot to settle, and then maybe its user's next
            // event), a local change, or the next poll.
            let polled = tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    finished.push(done);
                    false
                }
                () = this.wake.notified() => false,
                () = tokio::time::sleep(this.delivery.poll) => true,
            };
            // Then, unless a backlog is waiting, gather: the changes and finished deliveries
            // of the next few milliseconds share the next round's store calls.
            if caught_up && !polled && !this.delivery.linger.is_zero() {
                tokio::time::sleep(this.delivery.linger).await;
            }
        }
        // The service is gone: what finished is settled (what is still in flight is dropped,
        // and delivered again once its lease ends).
        this.settle_finished(&mut finished, this.clock.now()).await;
    }

    /// Settles the finished deliveries, the delivered ones in one store call.
    async fn settle_finished(
        &self,
        finished: &mut Vec<Result<(Claim, Settlement), tokio::task::JoinError>>,
        now: Timestamp,
    ) {
        let mut delivered = Vec::new();
        for done in finished.drain(..) {
            match done {
                Ok((claim, Settlement::Delivered)) => delivered.push(claim),
                Ok((claim, settlement)) => self.settle(&claim, &settlement, now).await,
                // The lease runs out and the event is tried again.
                Err(error) => tracing::error!(%error, "an event handler panicked"),
            }
        }
        self.settle_delivered(&delivered, now).await;
    }

    /// Delivers one claimed event: how to settle it.
    async fn deliver(&self, claim: &Claim) -> Settlement {
        let event = &claim.event;
        let outcome =
            tokio::time::timeout(self.delivery.handler_timeout, self.handler.handle(event)).await;
        let now = self.clock.now();
        match outcome {
            Ok(Ok(())) => {
                let lag_secs = event.timestamp.secs_until(now);
                // Late against when it was queued: an operator's redelivery is not late.
                if claim.queued_at.secs_until(now) >= LATE_SECS {
                    tracing::info!(
                        event_id = %event.id,
                        event_type = event.data.kind(),
                        attempt = claim.attempt,
                        lag_secs,
                        "event delivered late"
                    );
                } else {
                    tracing::debug!(
                        event_id = %event.id,
                        event_type = event.data.kind(),
                        attempt = claim.attempt,
                        lag_secs,
                        "event delivered"
                    );
                }
                Settlement::Delivered
            }
            Ok(Err(error)) => self.failed(claim, error.0, now),
            Err(_) => self.failed(
                claim,
                format!(
                    "the handler took longer than {:?}",
                    self.delivery.handler_timeout
                ),
                now,
            ),
        }
    }

    /// Settles the delivered `claims` in one store call.
    async fn settle_delivered(&self, claims: &[Claim], now: Timestamp) {
        if claims.is_empty() {
            return;
        }
        match self.users.settle_delivered(claims, now).await {
            Ok(settled) if settled < claims.len() as u64 => tracing::info!(
                taken_over = claims.len() as u64 - settled,
                "event leases were taken over before they were settled; those events may be \
                 delivered again"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                events = claims.len(),
                %error,
                "could not settle delivered events; they will be delivered again when their \
                 leases end"
            ),
        }
    }

    /// Settles one claim that was not delivered (to retry, or failed).
    async fn settle(&self, claim: &Claim, settlement: &Settlement, now: Timestamp) {
        let event = &claim.event;
        match self.users.settle_event(claim, settlement, now).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                event_id = %event.id,
                "event lease was taken over before it was settled; it may be delivered again"
            ),
            Err(error) => tracing::warn!(
                event_id = %event.id,
                %error,
                "could not settle an event; it will be delivered again when its lease ends"
            ),
        }
    }

    /// The settlement of a failed attempt, logged.
    fn failed(&self, claim: &Claim, error: String, now: Timestamp) -> Settlement {
        let settlement = self.delivery.after_failure(claim, error, now);
        let event = &claim.event;
        match &settlement {
            Settlement::Retry { at, error } => tracing::warn!(
                event_id = %event.id,
                event_type = event.data.kind(),
                attempt = claim.attempt,
                retry_in_secs = now.secs_until(*at),
                %error,
                "event delivery failed; will retry"
            ),
            Settlement::Failed { error } => tracing::error!(
                event_id = %event.id,
                event_type = event.data.kind(),
                attempt = claim.attempt,
                %error,
                "event delivery failed past its maximum age; kept as failed for an operator to redeliver"
            ),
            Settlement::Delivered => {}
        }
        settlement
    }

    /// Prunes delivered events older than the retention period.
    async fn prune(&self, now: Timestamp) {
        let before = Timestamp::from_unix(
            now.as_unix()
                .saturating_sub(self.delivery.retention.as_secs()),
        );
        match self.users.prune_events(before, 10_000).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "delivered events pruned"),
            Err(error) => tracing::debug!(%error, "could not prune events"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_four_times_up_to_the_cap() {
        let delivery = EventDelivery::default();
        let secs = |attempt| delivery.backoff(attempt).as_secs();
        assert_eq!((secs(1), secs(2), secs(3)), (5, 20, 80));
        assert_eq!(secs(8), 10 * 3600);
        assert_eq!(secs(u32::MAX), 10 * 3600);
    }
}
