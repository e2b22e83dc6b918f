//! [`ReferralService`]: the one entry point.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

mod account;

use crate::account::{INVITEES_PAGE_MAX, InviteeCursor, InviteePage};
use crate::dispatch::{Dispatcher, EventDelivery, EventHandler};
use crate::dto::RevokeScope;
use crate::event::{Change, SessionEndReason};
use crate::human::{HumanCheck, HumanCheckAnswer, HumanCheckError, Passed};
use crate::limits::{ClientAction, ClientLimits, RateLimit};
use crate::revocation::{Revocation, RevokedSessions};
use crate::session::{Caller, Session, SessionClient, SessionScope};
use crate::store::{
    Activation, Check, Issue, OtpStore, RateDecision, RateLimitStore, Rotation, UserStore,
};
use crate::token::{FamilyId, JwtKeys, TokenId, TokenKind, TokenPair};
use crate::watch::Watched;
use crate::{
    Clock, Error, InviteCode, MemoryRateLimitStore, NotReady, OtpCode, OtpHash, Phone, PhoneError,
    Policy, Profile, Sms, SmsSender, SystemClock, Timestamp, UserId,
};

/// The [`RateLimitStore`] key the deployment-wide SMS budget is counted under.
pub const SMS_BUDGET_KEY: &str = "sms:global";

/// The [`RateLimitStore`] key a destination prefix's share of the SMS budget is counted under.
pub fn sms_prefix_key(phone: &Phone) -> String {
    format!("sms:prefix:{}", phone.prefix())
}

/// A successful login: the body of `POST /login/verify_code/`.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Login {
    /// The refresh token.
    pub refresh: String,
    /// The access token.
    pub access: String,
    /// The user's id.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, example = 1))]
    pub user_id: UserId,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Phone login, tokens and invite codes, over pluggable stores.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: build one at start-up and share it.
#[derive(Clone)]
pub struct ReferralService {
    inner: Arc<Inner>,
}

struct Inner {
    users: Arc<dyn UserStore>,
    otps: Arc<dyn OtpStore>,
    sms: Arc<dyn SmsSender>,
    keys: JwtKeys,
    policy: Policy,
    clock: Arc<dyn Clock>,
    rate: Arc<dyn RateLimitStore>,
    limits: ClientLimits,
    human: Option<Arc<dyn HumanCheck>>,
    /// The end of the last budget window whose exhaustion was logged (one line per window).
    budget_logged: std::sync::Mutex<Option<Timestamp>>,
    /// Where events go, and how; changes record events when there is a handler.
    events: Option<(Arc<dyn EventHandler>, EventDelivery)>,
    /// Wakes this instance's dispatcher when a change recorded an event.
    wake: Arc<tokio::sync::Notify>,
    /// Instant or stateless revocation of access tokens.
    revocation: Revocation,
    /// The revoked sessions whose access tokens are refused (instant revocation only).
    revoked: Option<Arc<RevokedSessions>>,
    /// Changes record their events without a handler (see `ServiceBuilder::record_events`).
    record_events: bool,
}

impl std::fmt::Debug for ReferralService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferralService")
            .field("keys", &self.inner.keys)
            .field("policy", &self.inner.policy)
            .field("client_limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Assembles a [`ReferralService`]; see [`ReferralService::builder`].
#[must_use]
pub struct ServiceBuilder {
    inner: Inner,
}

impl ServiceBuilder {
    /// Sets the rules to enforce (default: [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.inner.policy = policy;
        self
    }

    /// Sets the clock (default: the system clock). Tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.inner.clock = Arc::new(clock);
        self
    }

    /// Sets the per-client limits (per IP on `send_code` and `verify_code`, per user on
    /// `use_invite_code`), counted in `store`. The policy's
    /// [SMS budget](Policy::sms_budget) is counted in `store` too.
    ///
    /// Default: [`ClientLimits::default`] (on) counted in a [`MemoryRateLimitStore`], which
    /// limits per process; share a store (e.g. Redis) to limit across instances.
    pub fn client_limits(mut self, store: impl RateLimitStore, limits: ClientLimits) -> Self {
        self.inner.rate = Arc::new(store);
        self.inner.limits = limits;
        self
    }

    /// Sets the human check that `send_code` asks for once the SMS budget, or a destination
    /// prefix's share of it, is [in use past a mark](crate::PolicyBuilder::human_check_at)
    /// (default: none, and no `send_code` is ever asked). The built-in one is
    /// [`ProofOfWork`](crate::ProofOfWork); with the `captcha` feature,
    /// [`SiteVerify`](crate::captcha::SiteVerify) checks Turnstile or hCaptcha.
    pub fn human_check(mut self, check: impl HumanCheck) -> Self {
        self.inner.human = Some(Arc::new(check));
        self
    }

    /// Registers the handler that takes every event (`user.created`, `referral.created`,
    /// `session.created`, `session.revoked`, `phone.locked`): from then on each change records
    /// its event in the user store, in the same transaction, and [`build`](Self::build) starts
    /// the dispatcher that delivers them, at least once, with `delivery`'s lease, backoff,
    /// maximum age and retention. See [`crate::dispatch`].
    ///
    /// Without a handler (the default) no event is recorded.
    pub fn event_handler(mut self, handler: impl EventHandler, delivery: EventDelivery) -> Self {
        self.inner.events = Some((Arc::new(handler), delivery));
        self
    }

    /// Makes every change record its event in the user store, as with an
    /// [event handler](Self::event_handler), but delivers none from this service: for a
    /// process whose events the servers' dispatchers deliver (an operator's command).
    pub fn record_events(mut self) -> Self {
        self.inner.record_events = true;
        self
    }

    /// Sets whether a revoked session's access tokens are refused at once, by every instance
    /// that shares the OTP store ([`Revocation::Instant`], the default), or live out their
    /// lifetime ([`Revocation::Stateless`]). See [`crate::revocation`].
    pub fn revocation(mut self, revocation: Revocation) -> Self {
        self.inner.revocation = revocation;
        self
    }

    /// Builds the service. With an [event handler](Self::event_handler), this starts the
    /// dispatcher as a Tokio task, and with [instant revocation](Self::revocation) (the
    /// default) the task that reads other instances' revocations; so call it inside a Tokio
    /// runtime (without one, events are recorded but not delivered, this instance refuses
    /// only the sessions it revoked itself, and an error is logged). The tasks end when the
    /// last handle on the service is dropped.
    pub fn build(self) -> ReferralService {
        let mut inner = self.inner;
        // Store outages are logged once each, not once per request (`watch`).
        inner.users = Arc::new(Watched::new("user", inner.users));
        inner.otps = Arc::new(Watched::new("otp", inner.otps));
        inner.rate = Arc::new(Watched::new("rate_limit", inner.rate));
        if inner.revocation == Revocation::Instant {
            // A margin over the access tokens' lifetime for clocks a little apart.
            let keep = inner.policy.access_ttl() + Duration::from_secs(60);
            inner.revoked = Some(Arc::new(RevokedSessions::new(keep)));
        }
        let inner = Arc::new(inner);
        if let Some(revoked) = &inner.revoked {
            let reader = Arc::clone(revoked).run(
                Arc::clone(&inner.otps),
                Arc::clone(&inner.clock),
                Arc::downgrade(&inner),
            );
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(reader);
                }
                Err(_) => tracing::error!(
                    "ReferralService built outside a Tokio runtime: access tokens of sessions \
                     revoked by other instances are not refused until they expire"
                ),
            }
        }
        if let Some((handler, delivery)) = &inner.events {
            if !inner.users.keeps_event_log() {
                tracing::error!(
                    "the user store keeps no event log (a wrapper that does not delegate \
                     UserStore::keeps_event_log and the event-log methods?): no event is \
                     recorded or delivered"
                );
            }
            let dispatcher = Dispatcher {
                users: Arc::clone(&inner.users),
                clock: Arc::clone(&inner.clock),
                handler: Arc::clone(handler),
                delivery: delivery.clone(),
                wake: Arc::clone(&inner.wake),
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(dispatcher.run(Arc::downgrade(&inner)));
                }
                Err(_) => tracing::error!(
                    "ReferralService built outside a Tokio runtime: events are recorded but \
                     not delivered"
                ),
            }
        }
        ReferralService { inner }
    }
}

impl ReferralService {
    /// Starts building a service over these stores, sender and keys.
    pub fn builder(
        users: impl UserStore,
        otps: impl OtpStore,
        sms: impl SmsSender,
        keys: JwtKeys,
    ) -> ServiceBuilder {
        ServiceBuilder {
            inner: Inner {
                users: Arc::new(users),
                otps: Arc::new(otps),
                sms: Arc::new(sms),
                keys,
                policy: Policy::default(),
                clock: Arc::new(SystemClock),
                rate: Arc::new(MemoryRateLimitStore::new()),
                limits: ClientLimits::default(),
                human: None,
                budget_logged: std::sync::Mutex::new(None),
                events: None,
                wake: Arc::default(),
                revocation: Revocation::default(),
                revoked: None,
                record_events: false,
            },
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The per-client limits in force.
    pub fn client_limits(&self) -> &ClientLimits {
        &self.inner.limits
    }

    /// The client IP of a request from TCP peer `peer` with these `X-Forwarded-For` header
    /// values, under the configured [trusted proxies](crate::TrustedProxies).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        self.inner
            .limits
            .trusted_proxies
            .client_ip(peer, forwarded_for)
    }

    /// Counts one `action` by client `ip` against the [`ClientLimits`]: `429 rate_limited`
    /// (with `retry_after`) when over. The HTTP adapters call it before `send_code` and
    /// `verify_code`.
    pub async fn check_client(&self, action: ClientAction, ip: IpAddr) -> Result<(), Error> {
        let limited = self.count(action, &ClientLimits::key(action, ip)).await;
        if let Err(Error::RateLimited { .. }) = limited {
            tracing::info!(action = action.as_str(), "client rate limit reached");
        }
        limited
    }

    /// Counts one `action` on `phone` by the network of client `ip` against the
    /// [`ClientLimits`]: `429 rate_limited` (with `retry_after`) when over.
    async fn check_phone_client(
        &self,
        action: ClientAction,
        phone: &Phone,
        ip: IpAddr,
    ) -> Result<(), Error> {
        if self.inner.limits.limit(action).is_none() {
            return Ok(());
        }
        let limited = self
            .count(action, &ClientLimits::phone_key(action, phone, ip))
            .await;
        if let Err(Error::RateLimited { .. }) = limited {
            tracing::info!(
                phone = %phone.redacted(),
                network = %crate::limits::network(ip),
                action = action.as_str(),
                "per-phone client limit reached"
            );
        }
        limited
    }

    /// Takes back a count of [`check_phone_client`](Self::check_phone_client) whose call then
    /// failed for a reason not the client's. A store error here is logged and ignored: the
    /// count stays, which errs on the safe side.
    async fn take_back_phone_client(&self, action: ClientAction, phone: &Phone, ip: IpAddr) {
        let Some(limit) = self.inner.limits.limit(action) else {
            return;
        };
        let key = ClientLimits::phone_key(action, phone, ip);
        self.give_back(&key, limit.window, self.now()).await;
    }

    /// Counts one `action` by authenticated `user` against the [`ClientLimits`]:
    /// `429 rate_limited` (with `retry_after`) when over.
    async fn check_user(&self, action: ClientAction, user: UserId) -> Result<(), Error> {
        let limited = self
            .count(action, &ClientLimits::user_key(action, user))
            .await;
        if let Err(Error::RateLimited { .. }) = limited {
            tracing::info!(user_id = %user, action = action.as_str(), "user rate limit reached");
        }
        limited
    }

    /// Counts one `action` under `key` against its [`ClientLimits`] entry: `429
    /// rate_limited` (with `retry_after`) when over, nothing when the action has no limit.
    async fn count(&self, action: ClientAction, key: &str) -> Result<(), Error> {
        let Some(limit) = self.inner.limits.limit(action) else {
            return Ok(());
        };
        match self
            .inner
            .rate
            .hit(key, limit.max, limit.window, self.now())
            .await?
        {
            RateDecision::Allowed { .. } => Ok(()),
            RateDecision::Limited { retry_after } => Err(Error::RateLimited {
                retry_after: retry_after.as_secs().max(1),
            }),
        }
    }

    /// Takes one SMS for `phone` from its destination prefix's
    /// [share](Policy::sms_prefix_budget) of the budget, then from the deployment-wide
    /// [budget](Policy::sms_budget), both sliding windows: `503 sms_budget_exhausted` when one
    /// is spent. A send that owes the human check `owed` (the service has one and the request
    /// passed none) may only use what lies below each budget's
    /// [mark](Policy::human_check_at): past it, `428 human_check_required`. Nothing stays
    /// taken when the answer is a refusal.
    async fn take_sms_budget(
        &self,
        phone: &Phone,
        now: Timestamp,
        owed: Option<&dyn HumanCheck>,
    ) -> Result<(), Error> {
        let policy = &self.inner.policy;
        let Some(budget) = policy.sms_budget() else {
            return Ok(());
        };
        let refusal = |retry_after: Duration| match owed {
            Some(check) => Error::HumanCheckRequired {
                challenge: Box::new(check.challenge(phone, now)),
            },
            None => Error::SmsBudgetExhausted {
                retry_after: retry_after.as_secs().max(1),
            },
        };
        let prefix = policy
            .sms_prefix_budget()
            .map(|limit| (sms_prefix_key(phone), limit));
        if let Some((key, limit)) = &prefix {
            let allowed = self.allowance(*limit, owed.is_some());
            match self
                .inner
                .rate
                .hit_sliding(key, allowed, limit.window, now)
                .await?
            {
                RateDecision::Allowed { remaining } => {
                    if remaining == 0 && allowed == limit.max {
                        tracing::warn!(
                            prefix = phone.prefix(),
                            budget = limit.max,
                            "a destination prefix used up its share of the SMS budget; \
                             its numbers get no codes until the window frees room"
                        );
                    }
                }
                RateDecision::Limited { retry_after } => return Err(refusal(retry_after)),
            }
        }
        let decision = self
            .inner
            .rate
            .hit_sliding(
                SMS_BUDGET_KEY,
                self.allowance(budget, owed.is_some()),
                budget.window,
                now,
            )
            .await;
        let refused = match decision {
            Ok(RateDecision::Allowed { .. }) => return Ok(()),
            Ok(RateDecision::Limited { retry_after }) => {
                if owed.is_none() {
                    self.log_budget_exhausted(budget, now.plus(retry_after));
                }
                refusal(retry_after)
            }
            Err(error) => Error::Store(error),
        };
        if let Some((key, limit)) = &prefix {
            self.give_back(key, limit.window, now).await;
        }
        Err(refused)
    }

    /// Gives back the SMS [`take_sms_budget`](Self::take_sms_budget) took for `phone`.
    async fn give_back_sms_budget(&self, phone: &Phone, now: Timestamp) {
        let policy = &self.inner.policy;
        if let Some(budget) = policy.sms_budget() {
            self.give_back(SMS_BUDGET_KEY, budget.window, now).await;
        }
        if let Some(limit) = policy.sms_prefix_budget() {
            self.give_back(&sms_prefix_key(phone), limit.window, now)
                .await;
        }
    }

    /// Takes back one hit on `key`; a store error is logged, and the hit stays counted (the
    /// safe side).
    async fn give_back(&self, key: &str, window: Duration, now: Timestamp) {
        if let Err(error) = self.inner.rate.take_back(key, window, now).await {
            tracing::warn!(%error, "could not take back a rate-limit count");
        }
    }

    /// How much of a budget of `limit` a send may use: all of it, or, when it owes a human
    /// check, up to the [mark](Policy::human_check_at): a send is asked once at least that
    /// share of the budget is used.
    fn allowance(&self, limit: RateLimit, owes_check: bool) -> u32 {
        if !owes_check {
            return limit.max;
        }
        let at = u64::from(self.inner.policy.human_check_at());
        let mark = (u64::from(limit.max) * at).div_ceil(100);
        u32::try_from(mark).unwrap_or(u32::MAX)
    }

    /// Logs an exhausted SMS budget at ERROR, once for each time it runs out (a 5xx that
    /// operators must see, but not one line per refused request).
    fn log_budget_exhausted(&self, budget: RateLimit, free_again: Timestamp) {
        let mut logged = self
            .inner
            .budget_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Within one window of the last line, the same exhaustion.
        if logged.is_some_and(|last| free_again.as_unix() < last.plus(budget.window).as_unix()) {
            return;
        }
        *logged = Some(free_again);
        tracing::error!(
            budget = budget.max,
            window_secs = budget.window.as_secs(),
            "SMS budget exhausted: no codes are sent until the sliding window frees room"
        );
    }

    /// Checks a client's answer to the human check; a proof of work is spent in the
    /// rate-limit store, so the same answer passes once on every instance that shares it.
    async fn pass_human_check(
        &self,
        check: &dyn HumanCheck,
        answer: &HumanCheckAnswer,
        phone: &Phone,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<(), Error> {
        match check.verify(answer, phone, client, now).await {
            Ok(Passed { single_use: None }) => Ok(()),
            Ok(Passed {
                single_use: Some((key, until)),
            }) => {
                // One hit allowed in the fixed window [0, until): a mark that lives as long
                // as the answer would stay valid.
                let window = Duration::from_secs(until.as_unix().max(now.as_unix() + 1));
                // Under a key of its own, whatever the check named it.
                let key = format!("human_check:spent:{key}");
                match self.inner.rate.hit(&key, 1, window, now).await? {
                    RateDecision::Allowed { .. } => Ok(()),
                    RateDecision::Limited { .. } => {
                        tracing::info!(phone = %phone.redacted(), "human check answer used again");
                        Err(Error::HumanCheckFailed)
                    }
                }
            }
            Err(HumanCheckError::Failed(reason)) => {
                tracing::info!(phone = %phone.redacted(), %reason, "human check failed");
                Err(Error::HumanCheckFailed)
            }
            Err(HumanCheckError::Unavailable(reason)) => {
                tracing::warn!(%reason, "human check could not be verified");
                Err(Error::HumanCheckUnavailable)
            }
        }
    }

    /// Parses a phone number under the policy's allowed regions.
    pub fn parse_phone(&self, input: &str) -> Result<Phone, Error> {
        Phone::parse(input, self.inner.policy.regions()).map_err(|e| match e {
            PhoneError::Invalid | PhoneError::RegionNotAllowed => Error::InvalidPhone,
        })
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// A change at `now`, recording its event when there is an event handler.
    fn change(&self, now: Timestamp) -> Change {
        Change {
            now,
            record: self.inner.events.is_some() || self.inner.record_events,
        }
    }

    /// Wakes this instance's dispatcher after a change that may have recorded an event.
    fn recorded(&self) {
        if self.inner.events.is_some() {
            self.inner.wake.notify_one();
        }
    }

    fn hash(&self, phone: &Phone, code: &OtpCode, purpose: Purpose<'_>) -> OtpHash {
        let pepper = self.inner.keys.otp_pepper();
        match purpose {
            Purpose::Login => OtpHash::new(pepper, phone, code),
            Purpose::PhoneChange { user, from } => {
                OtpHash::for_purpose(pepper, phone, code, &format!("phone-change:{user}:{from}"))
            }
        }
    }

    /// `POST /login/send_code/`: makes a code for `phone` and hands it to the SMS sender.
    ///
    /// One SMS is taken from the phone's destination prefix's
    /// [share](Policy::sms_prefix_budget) and from the deployment's
    /// [budget](Policy::sms_budget) first (`503 sms_budget_exhausted` when either is spent;
    /// with a [human check](ServiceBuilder::human_check), `428 human_check_required` once
    /// a budget is past its [mark](Policy::human_check_at)); then the send is reserved in the
    /// OTP store (one atomic step that enforces the phone's lock, cooldown and window, and
    /// replaces its pending code), and the SMS given back if that refuses; then the sender is
    /// called, and the reservation taken back if it fails, so the user's cooldown and window
    /// are not used. A refused budget leaves the phone's pending code alone. (An SMS the
    /// sender failed still counts towards the budgets: the gateway may have sent it, and
    /// erring that way is the safe side.) Test phones get their fixed code, no SMS, and do
    /// not count towards the budgets.
    ///
    /// The answer never depends on whether the phone belongs to a registered user.
    ///
    /// This counts no client: use [`send_code_from`](Self::send_code_from) when the client's
    /// address is known (the HTTP adapters do), so that one client cannot use up the phone's
    /// window.
    pub async fn send_code(&self, phone: &str) -> Result<(), Error> {
        self.send_code_with(phone, None, None).await
    }

    /// [`send_code`](Self::send_code) by a client at `ip`: first counts the call against the
    /// [per-phone client limit](ClientLimits::send_code_per_phone) of the client's network
    /// (`429 rate_limited` when over). Only codes that went out count: a send refused or
    /// failed after that is taken back from the count.
    pub async fn send_code_from(&self, phone: &str, ip: IpAddr) -> Result<(), Error> {
        self.send_code_with(phone, Some(ip), None).await
    }

    /// [`send_code`](Self::send_code) by a client at `client` (counted as in
    /// [`send_code_from`](Self::send_code_from) when known), with the client's answer to a
    /// human check, if it sent one.
    ///
    /// With a [human check](ServiceBuilder::human_check) on the service, once the SMS budget or
    /// the phone's prefix share of it is [in use past its mark](Policy::human_check_at), a call
    /// without a passing answer gets `428 human_check_required` carrying the challenge;
    /// nothing is sent, and the phone and the budgets are left as they were. A wrong, stale
    /// or reused answer gets
    /// `400 human_check_failed` whatever the pressure (it is checked first).
    pub async fn send_code_with(
        &self,
        phone: &str,
        client: Option<IpAddr>,
        human_check: Option<&HumanCheckAnswer>,
    ) -> Result<(), Error> {
        let phone = self.parse_phone(phone)?;
        self.send_code_for(phone, client, human_check, Purpose::Login)
            .await
    }

    /// [`send_code_with`](Self::send_code_with) for a parsed phone, of a code for `purpose`.
    pub(crate) async fn send_code_for(
        &self,
        phone: Phone,
        client: Option<IpAddr>,
        human_check: Option<&HumanCheckAnswer>,
        purpose: Purpose<'_>,
    ) -> Result<(), Error> {
        let action = ClientAction::SendCodeToPhone;
        if let Some(ip) = client {
            self.check_phone_client(action, &phone, ip).await?;
        }
        let sent = self
            .send_code_to(phone.clone(), client, human_check, purpose)
            .await;
        if let (Err(_), Some(ip)) = (&sent, client) {
            self.take_back_phone_client(action, &phone, ip).await;
        }
        sent
    }

    async fn send_code_to(
        &self,
        phone: Phone,
        client: Option<IpAddr>,
        human_check: Option<&HumanCheckAnswer>,
        purpose: Purpose<'_>,
    ) -> Result<(), Error> {
        let now = self.now();
        let human = self.inner.human.as_deref();
        let passed = match (human, human_check) {
            (Some(check), Some(answer)) => {
                self.pass_human_check(check, answer, &phone, client, now)
                    .await?;
                true
            }
            _ => false,
        };
        let policy = &self.inner.policy;
        let test_code = policy.test_code(&phone);
        let code = test_code
            .cloned()
            .unwrap_or_else(|| OtpCode::generate(policy.otp().code_length));
        let hash = self.hash(&phone, &code, purpose);
        // The budgets first, so that a send they refuse (or that owes a human check) leaves
        // the phone's pending code, cooldown and window as they were. Test phones send no SMS.
        let budgeted = test_code.is_none();
        if budgeted {
            let owed = if passed { None } else { human };
            self.take_sms_budget(&phone, now, owed).await?;
        }
        let issued = self
            .inner
            .otps
            .issue(&phone, &hash, now, policy.otp())
            .await;
        let refused = match issued {
            Ok(Issue::Stored) => None,
            Ok(Issue::Cooldown { retry_after }) => Some(Error::ResendCooldown {
                retry_after: retry_after.as_secs().max(1),
            }),
            Ok(Issue::WindowFull { retry_after }) => Some(Error::TooManyCodes {
                retry_after: retry_after.as_secs().max(1),
            }),
            Ok(Issue::Locked { retry_after }) => Some(Error::PhoneLocked {
                retry_after: retry_after.as_secs().max(1),
            }),
            Err(error) => Some(Error::Store(error)),
        };
        if let Some(refused) = refused {
            if budgeted {
                self.give_back_sms_budget(&phone, now).await;
            }
            return Err(refused);
        }
        if test_code.is_some() {
            tracing::debug!(phone = %phone.redacted(), "code issued for a test phone; no SMS sent");
            return Ok(());
        }
        let sms = Sms {
            text: format!("Your verification code: {}", code.expose()),
            phone,
            code,
        };
        if let Err(error) = self.inner.sms.send(&sms).await {
            tracing::warn!(phone = %sms.phone.redacted(), %error, "SMS sender failed; send taken back");
            self.inner
                .otps
                .cancel(&sms.phone, &hash, now, policy.otp())
                .await?;
            return Err(Error::SmsFailed);
        }
        Ok(())
    }

    /// `POST /login/verify_code/`: trades a code for tokens, creating the user on first login.
    ///
    /// Every refusal is decided by the OTP store before any user is looked up, so it never
    /// depends on whether the phone belongs to a registered user. A code is spent only by a
    /// login that succeeds: if the user store fails after the code matched, the code is
    /// [restored](crate::OtpStore::restore) and the user can try it again.
    ///
    /// This counts no client: use [`verify_code_from`](Self::verify_code_from) when the
    /// client's address is known (the HTTP adapters do), so that one client cannot lock the
    /// phone.
    pub async fn verify_code(&self, phone: &str, code: &str) -> Result<Login, Error> {
        let phone = self.parse_phone(phone)?;
        self.verify_code_for(phone, code, &SessionClient::default())
            .await
    }

    /// [`verify_code`](Self::verify_code) by a client at `ip`: first counts the call against
    /// the [per-phone client limit](ClientLimits::verify_code_per_phone) of the client's
    /// network (`429 rate_limited` when over; the code is not checked then).
    pub async fn verify_code_from(
        &self,
        phone: &str,
        code: &str,
        ip: IpAddr,
    ) -> Result<Login, Error> {
        self.verify_code_by(phone, code, ip, None).await
    }

    /// [`verify_code_from`](Self::verify_code_from) by a client at `ip` that sent
    /// `user_agent`: the session it starts is listed with the client's network (never its
    /// address) and user agent (see [`SessionClient`]). The HTTP adapters call this.
    pub async fn verify_code_by(
        &self,
        phone: &str,
        code: &str,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<Login, Error> {
        let phone = self.parse_phone(phone)?;
        let action = ClientAction::VerifyCodeForPhone;
        self.check_phone_client(action, &phone, ip).await?;
        let client = SessionClient::new(Some(ip), user_agent);
        let login = self.verify_code_for(phone.clone(), code, &client).await;
        if let Err(Error::Store(_)) = login {
            // Not the client's doing: the try does not count.
            self.take_back_phone_client(action, &phone, ip).await;
        }
        login
    }

    async fn verify_code_for(
        &self,
        phone: Phone,
        code: &str,
        client: &SessionClient,
    ) -> Result<Login, Error> {
        let now = self.now();
        let hash = self.spend_code(&phone, code, now, Purpose::Login).await?;
        match self.log_in(&phone, client, now).await {
            Ok(login) => Ok(login),
            Err(error) => {
                // Not the user's fault (a store outage): the code stays usable.
                self.restore_code(&phone, &hash, now).await;
                Err(error)
            }
        }
    }

    /// Checks `code` against the phone's pending code in the OTP store, which spends it if
    /// it matches; the code's hash, to [restore](Self::restore_code) it if what the code was
    /// for then fails. Every refusal is the OTP store's (and a lock records `phone.locked`).
    pub(crate) async fn spend_code(
        &self,
        phone: &Phone,
        code: &str,
        now: Timestamp,
        purpose: Purpose<'_>,
    ) -> Result<OtpHash, Error> {
        let otp = self.inner.policy.otp();
        let code = OtpCode::parse(code, otp.code_length)
            .map_err(|e| Error::InvalidRequest(format!("Field `code`: {e}.")))?;
        let phone = phone.clone();
        let hash = self.hash(&phone, &code, purpose);
        match self.inner.otps.check(&phone, &hash, now, otp).await? {
            Check::Valid => {}
            Check::Invalid { attempts_left } => return Err(Error::CodeInvalid { attempts_left }),
            Check::Burned { retry_after } => {
                return Err(Error::TooManyAttempts {
                    retry_after: retry_after.as_secs().max(1),
                });
            }
            Check::Missing => return Err(Error::CodeExpired),
            Check::Locked { retry_after } => {
                tracing::info!(phone = %phone.redacted(), "code check refused: phone locked");
                return Err(Error::PhoneLocked {
                    retry_after: retry_after.as_secs().max(1),
                });
            }
            Check::LockedNow { retry_after } => {
                tracing::info!(phone = %phone.redacted(), "too many wrong codes: phone locked");
                if self.change(now).record {
                    // The lock is the OTP store's; the event is recorded after it (a failure
                    // here is logged, and the lock stands).
                    let until = now.plus(retry_after);
                    match self
                        .inner
                        .users
                        .phone_locked(&phone, until, self.change(now))
                        .await
                    {
                        Ok(()) => self.recorded(),
                        Err(error) => {
                            tracing::warn!(%error, "could not record phone.locked");
                        }
                    }
                }
                return Err(Error::PhoneLocked {
                    retry_after: retry_after.as_secs().max(1),
                });
            }
        }
        Ok(hash)
    }

    /// Gives back a code [spent](Self::spend_code) by a call that then failed for a reason
    /// not the user's (a store outage), so that the code stays usable.
    pub(crate) async fn restore_code(&self, phone: &Phone, hash: &OtpHash, now: Timestamp) {
        let otp = self.inner.policy.otp();
        if let Err(restore) = self.inner.otps.restore(phone, hash, now, otp).await {
            tracing::warn!(error = %restore, "could not give back a code after a failed call");
        }
    }

    /// The second half of [`verify_code`](Self::verify_code), once the code proved the
    /// phone: finds or registers its user and starts a token family.
    async fn log_in(
        &self,
        phone: &Phone,
        client: &SessionClient,
        now: Timestamp,
    ) -> Result<Login, Error> {
        let family = FamilyId::random();
        let jti = TokenId::random();
        let refresh_expires = now.plus(self.inner.policy.refresh_ttl());
        // Twice at most: an account deleted or moved to another number between finding it
        // and starting its session gets no session, and the phone, free now, registers a new
        // user.
        let mut tries = 0;
        let user = loop {
            let registration = self
                .inner
                .users
                .find_or_create(phone, &InviteCode::generate, self.change(now))
                .await?;
            let user = registration.user.id;
            if registration.created {
                tracing::info!(user_id = %user, phone = %phone.redacted(), "new user registered");
            }
            let started = self
                .inner
                .users
                .start_family(
                    &registration.user,
                    &family,
                    &jti,
                    client,
                    self.change(now),
                    refresh_expires,
                )
                .await?;
            if started {
                break user;
            }
            tries += 1;
            if tries == 2 {
                return Err(Error::Store(crate::StoreError::unavailable(
                    "the account was deleted while logging in",
                )));
            }
        };
        self.recorded();
        let tokens = self.sign_pair(user, &family, &jti, now)?;
        Ok(Login {
            refresh: tokens.refresh,
            access: tokens.access,
            user_id: user,
        })
    }

    fn sign_pair(
        &self,
        user: UserId,
        family: &FamilyId,
        refresh_jti: &TokenId,
        now: Timestamp,
    ) -> Result<TokenPair, Error> {
        let keys = &self.inner.keys;
        let policy = &self.inner.policy;
        let sign_error = |e: jsonwebtoken::errors::Error| Error::Internal(format!("signing: {e}"));
        Ok(TokenPair {
            access: keys
                .issue(
                    TokenKind::Access,
                    user,
                    family,
                    &TokenId::random(),
                    now,
                    policy.access_ttl(),
                )
                .map_err(sign_error)?,
            refresh: keys
                .issue(
                    TokenKind::Refresh,
                    user,
                    family,
                    refresh_jti,
                    now,
                    policy.refresh_ttl(),
                )
                .map_err(sign_error)?,
        })
    }

    /// Checks an access token (the part after `Bearer `) and returns its user.
    ///
    /// Signature, kind and expiry, and (with [instant revocation](crate::revocation), the
    /// default) that its session was not revoked: a lookup in this instance's copy of the
    /// revocation list. No store is asked, so it is cheap enough for every request.
    pub fn authenticate(&self, access: &str) -> Result<UserId, Error> {
        self.caller(access).map(|caller| caller.user)
    }

    /// Reads an `Authorization` header value (`Bearer <access>`; the scheme is
    /// case-insensitive, as RFC 9110 says) and returns its user.
    pub fn authenticate_header(&self, header: Option<&str>) -> Result<UserId, Error> {
        self.authenticate(bearer(header)?)
    }

    /// Checks an access token, as [`authenticate`](Self::authenticate) does, and returns
    /// who is calling: its user and the session it belongs to.
    pub fn caller(&self, access: &str) -> Result<Caller, Error> {
        let claims = self
            .inner
            .keys
            .decode(access, TokenKind::Access, self.now())
            .ok_or(Error::Unauthorized)?;
        let user = claims.user_id().ok_or(Error::Unauthorized)?;
        if let Some(revoked) = &self.inner.revoked
            && revoked.contains(&claims.fam)
        {
            return Err(Error::Unauthorized);
        }
        Ok(Caller {
            user,
            session: FamilyId::from_string(claims.fam),
        })
    }

    /// [`caller`](Self::caller) from an `Authorization` header value.
    pub fn caller_header(&self, header: Option<&str>) -> Result<Caller, Error> {
        self.caller(bearer(header)?)
    }

    /// `GET /get_profile/`: the user's profile, its oldest invitees up to the policy's
    /// [`profile_invitees_limit`](Policy::profile_invitees_limit).
    pub async fn profile(&self, user: UserId) -> Result<Profile, Error> {
        let shown = self.inner.policy.profile_invitees_limit();
        self.inner
            .users
            .profile(user, shown)
            .await?
            .ok_or(Error::Unauthorized)
    }

    /// `GET /api/invitees/`: a page of the user's invitees, oldest first, from the start or
    /// after `cursor` (a page's [`next`](InviteePage::next), [encoded](InviteeCursor::encode)
    /// as clients see it). `limit` is 1 to [`INVITEES_PAGE_MAX`] (else `invalid_request`, as
    /// is a cursor this service did not give).
    pub async fn invitees(
        &self,
        user: UserId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InviteePage, Error> {
        if !(1..=INVITEES_PAGE_MAX).contains(&limit) {
            return Err(Error::InvalidRequest(format!(
                "Parameter `limit` must be a whole number of 1 to {INVITEES_PAGE_MAX}."
            )));
        }
        let after = cursor
            .map(|text| {
                InviteeCursor::decode(text).ok_or_else(|| {
                    Error::InvalidRequest(
                        "Parameter `cursor` is not one this server gave (use `next_cursor`)."
                            .into(),
                    )
                })
            })
            .transpose()?;
        self.inner
            .users
            .invitees(user, after, limit)
            .await?
            .ok_or(Error::Unauthorized)
    }

    /// `POST /use_invite_code/`: applies someone else's invite code, once.
    ///
    /// Every call, malformed ones included, counts against the user's
    /// [`use_invite_code` limit](ClientLimits::use_invite_code) first.
    pub async fn use_invite_code(&self, user: UserId, code: &str) -> Result<(), Error> {
        self.check_user(ClientAction::UseInviteCode, user).await?;
        let code = InviteCode::parse(code)
            .map_err(|e| Error::InvalidRequest(format!("Field `invite_code`: {e}.")))?;
        let change = self.change(self.now());
        match self
            .inner
            .users
            .activate_invite(user, &code, change)
            .await?
        {
            Activation::Activated => {
                self.recorded();
                tracing::info!(user_id = %user, "invite code applied");
                Ok(())
            }
            Activation::UnknownUser => Err(Error::Unauthorized),
            Activation::NotFound => Err(Error::InviteCodeNotFound),
            Activation::OwnCode => Err(Error::OwnInviteCode),
            Activation::AlreadyActivated => Err(Error::InviteAlreadyActivated),
            Activation::Cycle => Err(Error::InviteCycle),
        }
    }

    /// `POST /api/token/refresh/`: spends a refresh token and returns a new pair.
    ///
    /// Presenting the token spent last again within the
    /// [reuse grace](crate::PolicyBuilder::refresh_reuse_grace) returns a pair holding the
    /// family's live refresh token; presenting any other spent token revokes the whole family
    /// (theft detection).
    pub async fn refresh(&self, refresh: &str) -> Result<TokenPair, Error> {
        let (this, refresh) = (self.clone(), refresh.to_owned());
        to_completion(async move { this.refresh_now(&refresh).await }).await
    }

    async fn refresh_now(&self, refresh: &str) -> Result<TokenPair, Error> {
        let now = self.now();
        let claims = self
            .inner
            .keys
            .decode(refresh, TokenKind::Refresh, now)
            .ok_or(Error::InvalidToken)?;
        let user = claims.user_id().ok_or(Error::InvalidToken)?;
        let family = FamilyId::from_string(claims.fam);
        let presented = TokenId::from_string(claims.jti);
        let next = TokenId::random();
        let expires_at = now.plus(self.inner.policy.refresh_ttl());
        match self
            .inner
            .users
            .rotate_refresh(
                &family,
                &presented,
                &next,
                self.change(now),
                expires_at,
                self.inner.policy.refresh_reuse_grace(),
            )
            .await?
        {
            Rotation::Rotated => self.sign_pair(user, &family, &next, now),
            // The token was spent a moment ago: the caller gets the family's live token.
            Rotation::Grace { live } => self.sign_pair(user, &family, &live, now),
            Rotation::Reused => {
                self.recorded();
                self.refuse_access(vec![family], now);
                tracing::warn!(user_id = %user, "spent refresh token presented again; family revoked");
                Err(Error::InvalidToken)
            }
            Rotation::Revoked => Err(Error::InvalidToken),
        }
    }

    /// `GET /api/sessions/`: the caller's live sessions, newest first. `401 unauthorized`
    /// if the caller's own session is not among them (it was ended, and its access token has
    /// not expired yet).
    pub async fn sessions(&self, caller: &Caller) -> Result<Vec<Session>, Error> {
        let sessions = self.inner.users.sessions(caller.user, self.now()).await?;
        if !sessions.iter().any(|session| session.id == caller.session) {
            return Err(Error::Unauthorized);
        }
        Ok(sessions)
    }

    /// `DELETE /api/sessions/{id}/`: ends one of the caller's live sessions (its refresh
    /// token gets `401 invalid_token`, its access tokens `401 unauthorized` with
    /// [instant revocation](crate::revocation)). `404 session_not_found` when `session` is
    /// not the id of a live session of the caller's (whoever else's it is); `401
    /// unauthorized` when the caller's own session was ended.
    pub async fn revoke_session(&self, caller: &Caller, session: &str) -> Result<(), Error> {
        if !is_session_id(session) {
            return Err(Error::SessionNotFound);
        }
        let (this, caller, session) = (self.clone(), caller.clone(), session.to_owned());
        to_completion(async move {
            this.live_caller(&caller).await?;
            let session = FamilyId::from_string(session);
            let now = this.now();
            let revoked = this
                .inner
                .users
                .revoke_sessions(
                    caller.user,
                    SessionScope::One(&session),
                    SessionEndReason::Revoked,
                    this.change(now),
                )
                .await?;
            if revoked.is_empty() {
                return Err(Error::SessionNotFound);
            }
            this.recorded();
            this.refuse_access(revoked, now);
            tracing::info!(user_id = %caller.user, "session revoked");
            Ok(())
        })
        .await
    }

    /// `POST /api/sessions/revoke/`: ends the caller's other sessions, or all of them; how
    /// many it ended. `401 unauthorized` when the caller's own session was ended.
    pub async fn revoke_sessions(&self, caller: &Caller, scope: RevokeScope) -> Result<u64, Error> {
        let (this, caller) = (self.clone(), caller.clone());
        to_completion(async move {
            this.live_caller(&caller).await?;
            let scope = match scope {
                RevokeScope::Others => SessionScope::AllBut(&caller.session),
                RevokeScope::All => SessionScope::All,
            };
            let now = this.now();
            let revoked = this
                .inner
                .users
                .revoke_sessions(
                    caller.user,
                    scope,
                    SessionEndReason::Revoked,
                    this.change(now),
                )
                .await?;
            let count = revoked.len() as u64;
            if count > 0 {
                this.recorded();
                this.refuse_access(revoked, now);
                tracing::info!(user_id = %caller.user, revoked = count, "sessions revoked");
            }
            Ok(count)
        })
        .await
    }

    /// `401 unauthorized` unless the caller's session is live: an ended session's access
    /// token (stateless revocation, or another instance within its first second) may not end
    /// the user's other sessions.
    async fn live_caller(&self, caller: &Caller) -> Result<(), Error> {
        self.sessions(caller).await.map(drop)
    }

    /// `POST /api/token/logout/`: revokes the refresh token's family.
    pub async fn logout(&self, refresh: &str) -> Result<(), Error> {
        let (this, refresh) = (self.clone(), refresh.to_owned());
        to_completion(async move {
            let now = this.now();
            let claims = this
                .inner
                .keys
                .decode(&refresh, TokenKind::Refresh, now)
                .ok_or(Error::InvalidToken)?;
            let family = FamilyId::from_string(claims.fam);
            this.inner
                .users
                .revoke_family(&family, SessionEndReason::Logout, this.change(now))
                .await?;
            this.recorded();
            this.refuse_access(vec![family], now);
            Ok(())
        })
        .await
    }

    /// With instant revocation, refuses the access tokens of `sessions` (just revoked in the
    /// user store) on this instance at once, and shares them through the OTP store in a task
    /// of its own (the request does not wait on it), so that the other instances refuse them
    /// once they have read the list. A list that cannot be written is logged: the revocation
    /// itself stands (the sessions' refresh tokens are refused), but other instances accept
    /// their access tokens until they expire.
    fn refuse_access(&self, sessions: Vec<FamilyId>, now: Timestamp) {
        let Some(share) = self.refuse_here(sessions, now) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            // Its failures are logged by the task.
            Ok(runtime) => drop(runtime.spawn(share)),
            Err(_) => tracing::warn!("no Tokio runtime: a session's revocation is not shared"),
        }
    }

    /// With instant revocation, refuses the access tokens of `sessions` on this instance at
    /// once; what shares them through the OTP store (see
    /// [`refuse_access`](Self::refuse_access)).
    fn refuse_here(
        &self,
        sessions: Vec<FamilyId>,
        now: Timestamp,
    ) -> Option<impl std::future::Future<Output = bool> + Send + 'static> {
        let revoked = self.inner.revoked.as_ref()?;
        for session in &sessions {
            revoked.insert(session, now);
        }
        let (otps, keep) = (Arc::clone(&self.inner.otps), revoked.keep());
        Some(async move {
            let mut shared = true;
            for session in &sessions {
                if let Err(error) = otps.revoke_session(session, now, keep).await {
                    shared = false;
                    tracing::warn!(
                        %error,
                        "could not share a session's revocation: other instances accept its \
                         access tokens until they expire"
                    );
                }
            }
            shared
        })
    }

    /// `GET /ready`: asks every store to answer.
    pub async fn ready(&self) -> Result<(), NotReady> {
        self.inner.users.ping().await.map_err(|error| NotReady {
            store: "user",
            error,
        })?;
        self.inner.otps.ping().await.map_err(|error| NotReady {
            store: "otp",
            error,
        })?;
        self.inner.rate.ping().await.map_err(|error| NotReady {
            store: "rate_limit",
            error,
        })
    }
}

/// What a code proves its phone for: its hash binds it, so that a code for one purpose
/// never serves another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose<'a> {
    /// Logging in (and re-authenticating as the phone's user: account deletion).
    Login,
    /// Moving `user`'s account from `from` to the phone: the code is void once the account
    /// has another number.
    PhoneChange { user: UserId, from: &'a Phone },
}

/// The token of an `Authorization` header value `Bearer <token>` (the scheme is
/// case-insensitive, as RFC 9110 says).
fn bearer(header: Option<&str>) -> Result<&str, Error> {
    let (scheme, token) = header
        .and_then(|value| value.split_once(' '))
        .ok_or(Error::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthorized);
    }
    Ok(token.trim())
}

/// Runs `work` to completion in a task of its own, so that a caller that is dropped (a client
/// that went away) cannot stop it between a revocation in the user store and the revocation
/// list. Outside a Tokio runtime (another executor) it runs `work` in place.
async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn(work).await.unwrap_or_else(|error| {
            Err(Error::Internal(format!(
                "a revocation did not finish: {error}"
            )))
        }),
        Err(_) => work.await,
    }
}

/// Whether `id` has the form of a session id (32 lowercase hex characters), so that nothing
/// else is looked up.
fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
