//! The service's rules, with documented defaults and a validating builder.

use std::collections::HashMap;
use std::time::Duration;

use crate::limits::RateLimit;
use crate::{AllowedRegions, OtpCode, OtpPolicy, Phone};

/// What the service enforces. Build one with [`Policy::builder`]; [`Policy::default`] is the
/// table below.
///
/// | setting | default |
/// | --- | --- |
/// | code length | 4 digits |
/// | code lifetime | 300 s |
/// | resend cooldown | 60 s |
/// | wrong tries per code | 5 (the 5th burns the code) |
/// | codes per phone per rolling hour, all clients together | 10 |
/// | consecutive wrong codes per phone, across codes and clients, before a lock | 50 |
/// | lock after that many wrong codes | 1 h (no code sent or checked) |
/// | SMS for the whole deployment per sliding hour | 1000 (test phones not counted) |
/// | share of that budget one destination prefix may use | 25 % |
/// | human check asked for (if the service has one) once this share of a budget is used | 50 % |
/// | access token lifetime | 20 min |
/// | refresh token lifetime | 7 days |
/// | allowed regions | all |
/// | test phones | none |
///
/// With these defaults an attacker gets at most 5 guesses per code and 10 codes per hour, and
/// the 50th consecutive wrong code locks the phone for an hour: at most 50 guesses per lock
/// cycle over 10 000 codes, a 0.5 % chance per hour instead of the original service's
/// unbounded guessing. The failure budget is what keeps that bound if the per-code or
/// per-window limits are raised; NIST SP 800-63B caps consecutive failures at 100, and
/// [`PolicyBuilder::max_failures`] refuses more. A lock is a denial-of-service lever against
/// the phone's owner, so the per-phone [`ClientLimits`](crate::ClientLimits) give one client
/// network at most 5 of the 10 codes and 20 of the 50 wrong tries: it takes several networks
/// to lock a phone. Keep the lockout moderate.
///
/// The SMS budget caps what the whole deployment sends (SMS pumping: attackers requesting
/// codes to premium-rate numbers they profit from). It is counted in a sliding window in the
/// service's [`RateLimitStore`](crate::RateLimitStore), so it holds across instances only
/// when that store is shared (e.g. Redis). Size it above your peak legitimate hourly volume.
///
/// So that an attack cannot spend the whole budget and shut every login out, each destination
/// prefix ([`Phone::prefix`]: country code and the next two digits, e.g. `+37529`) may use
/// only a [share](PolicyBuilder::sms_prefix_share) of it, and once a budget (the deployment's,
/// or the prefix's share) is half used, a service with a
/// [`HumanCheck`](crate::human::HumanCheck) asks every `send_code` for one
/// ([`human_check_at`](PolicyBuilder::human_check_at)). An attack on the numbers of one range
/// then spends at most half of that range's share before it has to solve a challenge for
/// each code, and never more than the share; numbers elsewhere are not affected. Size the
/// share so that your busiest prefix's peak fits in it.
#[derive(Clone, Debug)]
pub struct Policy {
    otp: OtpPolicy,
    access_ttl: Duration,
    refresh_ttl: Duration,
    refresh_reuse_grace: Duration,
    regions: AllowedRegions,
    test_phones: HashMap<Phone, OtpCode>,
    sms_budget: Option<RateLimit>,
    sms_prefix_share: u8,
    human_check_at: u8,
    invitee_phones: InviteePhones,
    profile_invitees: usize,
}

/// How many invitees the profile lists by default (`PROFILE_INVITEES_LIMIT`).
pub const PROFILE_INVITEES_LIMIT: usize = 100;

/// How the routes show the phones of a user's invitees (the profile's `invited_users`, the
/// export's): in full (the default, the original service's behaviour) or
/// [masked](Phone::masked), `+37529*****67`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InviteePhones {
    /// In full, E.164.
    #[default]
    Full,
    /// Masked: the country code and the next two digits, the last two, the rest as `*`.
    Masked,
}

impl InviteePhones {
    /// `phone` as shown to its inviter.
    pub fn show(self, phone: &Phone) -> String {
        match self {
            Self::Full => phone.as_str().to_owned(),
            Self::Masked => phone.masked(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Policy {
    /// How invitees' phones are shown to their inviter.
    pub fn invitee_phones(&self) -> InviteePhones {
        self.invitee_phones
    }

    /// How many invitees (the oldest) the profile's `invited_users` lists; the rest are
    /// paged through `GET /api/invitees/`, and `invited_count` counts them all.
    pub fn profile_invitees_limit(&self) -> usize {
        self.profile_invitees
    }

    /// A builder starting from the defaults.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::defaults(),
            test_phones: Vec::new(),
        }
    }

    fn defaults() -> Self {
        Self {
            otp: OtpPolicy::default(),
            access_ttl: Duration::from_secs(20 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            regions: AllowedRegions::all(),
            test_phones: HashMap::new(),
            sms_budget: Some(RateLimit::per_hour(1000)),
            sms_prefix_share: 25,
            human_check_at: 50,
            invitee_phones: InviteePhones::Full,
            profile_invitees: PROFILE_INVITEES_LIMIT,
        }
    }

    /// The rules handed to the [`OtpStore`](crate::OtpStore).
    pub fn otp(&self) -> &OtpPolicy {
        &self.otp
    }

    /// Access-token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Refresh-token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// How long after a refresh token was spent presenting it again still gets the live
    /// token of its family instead of revoking the family (default 10 s).
    pub fn refresh_reuse_grace(&self) -> Duration {
        self.refresh_reuse_grace
    }

    /// Which regions' numbers may log in.
    pub fn regions(&self) -> &AllowedRegions {
        &self.regions
    }

    /// The fixed code of a test phone, if `phone` is one.
    pub fn test_code(&self, phone: &Phone) -> Option<&OtpCode> {
        self.test_phones.get(phone)
    }

    /// SMS the whole deployment may send per sliding window, if limited.
    pub fn sms_budget(&self) -> Option<RateLimit> {
        self.sms_budget
    }

    /// The SMS one destination prefix may use per window: its share of the
    /// [budget](Self::sms_budget), at least 1; `None` when the budget is off or the share is
    /// 100 %.
    pub fn sms_prefix_budget(&self) -> Option<RateLimit> {
        let budget = self.sms_budget?;
        (self.sms_prefix_share < 100).then(|| RateLimit {
            max: (u64::from(budget.max) * u64::from(self.sms_prefix_share) / 100).max(1) as u32,
            window: budget.window,
        })
    }

    /// The share (percent) of the SMS budget one destination prefix may use.
    pub fn sms_prefix_share(&self) -> u8 {
        self.sms_prefix_share
    }

    /// The share (percent) of the SMS budget, or of a prefix's share of it, in use from which
    /// `send_code` asks for a human check (when the service has one); 0 asks always.
    pub fn human_check_at(&self) -> u8 {
        self.human_check_at
    }
}

/// Builds a [`Policy`]; [`build`](Self::build) refuses settings that make no sense.
#[derive(Debug)]
#[must_use]
pub struct PolicyBuilder {
    policy: Policy,
    test_phones: Vec<(String, String)>,
}

impl PolicyBuilder {
    /// Digits per code (4–10).
    pub fn code_length(mut self, digits: usize) -> Self {
        self.policy.otp.code_length = digits;
        self
    }

    /// How long a code stays valid.
    pub fn code_ttl(mut self, ttl: Duration) -> Self {
        self.policy.otp.code_ttl = ttl;
        self
    }

    /// Minimum time between two codes to one phone.
    pub fn resend_cooldown(mut self, cooldown: Duration) -> Self {
        self.policy.otp.resend_cooldown = cooldown;
        self
    }

    /// Wrong tries per code (at least 1); the last one burns the code.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.otp.max_attempts = attempts;
        self
    }

    /// Codes per phone per rolling `window` (at least 1).
    pub fn max_sends(mut self, sends: u32, window: Duration) -> Self {
        self.policy.otp.max_sends_per_window = sends;
        self.policy.otp.send_window = window;
        self
    }

    /// Consecutive wrong codes per phone, across codes, before the phone is locked (1–100).
    pub fn max_failures(mut self, failures: u32) -> Self {
        self.policy.otp.max_failures = failures;
        self
    }

    /// How long a phone stays locked after [`max_failures`](Self::max_failures) wrong codes
    /// (at least 1 s).
    pub fn lockout(mut self, lockout: Duration) -> Self {
        self.policy.otp.lockout = lockout;
        self
    }

    /// SMS the whole deployment may send per window, e.g.
    /// `Some(RateLimit::per_hour(1000))` (the default); `None` for no limit. Test phones do
    /// not count. Over the budget, `send_code` answers `503 sms_budget_exhausted`.
    pub fn sms_budget(mut self, budget: Option<RateLimit>) -> Self {
        self.policy.sms_budget = budget;
        self
    }

    /// The share of the [SMS budget](Self::sms_budget), in percent (1–100, default 25), that
    /// the numbers of one destination prefix ([`Phone::prefix`]) may use per window; over it,
    /// `send_code` to that prefix answers `503 sms_budget_exhausted` while other prefixes
    /// still get codes. 100 turns prefix budgets off.
    pub fn sms_prefix_share(mut self, percent: u8) -> Self {
        self.policy.sms_prefix_share = percent;
        self
    }

    /// From which share of a budget in use (percent, 0–100, default 50) a `send_code` must
    /// pass the service's [`HumanCheck`](crate::human::HumanCheck): the deployment's budget or
    /// the prefix's share, whichever is fuller (a send is asked once at least this share of
    /// one is used). 0 asks every time; 100 never (the budget is spent first). Without a human
    /// check on the service, or without an SMS budget, this does nothing.
    pub fn human_check_at(mut self, percent: u8) -> Self {
        self.policy.human_check_at = percent;
        self
    }

    /// Access-token lifetime.
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.policy.access_ttl = ttl;
        self
    }

    /// Refresh-token lifetime.
    pub fn refresh_ttl(mut self, ttl: Duration) -> Self {
        self.policy.refresh_ttl = ttl;
        self
    }

    /// How long after a refresh token was spent presenting it again (a client that retried
    /// after a lost response, two tabs refreshing at once) answers with a working pair of the
    /// same family instead of revoking it as theft (default 10 s; zero turns the grace off).
    /// Keep it short: a thief who replays a stolen token within it is not detected.
    pub fn refresh_reuse_grace(mut self, grace: Duration) -> Self {
        self.policy.refresh_reuse_grace = grace;
        self
    }

    /// Which regions' numbers may log in.
    pub fn regions(mut self, regions: AllowedRegions) -> Self {
        self.policy.regions = regions;
        self
    }

    /// A test phone with a fixed code, for demos and end-to-end tests: no SMS is sent to it and
    /// `code` always works for it (cooldown, window and attempt limits still apply). Never
    /// configure a real person's number.
    pub fn test_phone(mut self, phone: impl Into<String>, code: impl Into<String>) -> Self {
        self.test_phones.push((phone.into(), code.into()));
        self
    }

    /// Shows invitees' phones to their inviter in full (the default) or masked.
    pub fn invitee_phones(mut self, shown: InviteePhones) -> Self {
        self.policy.invitee_phones = shown;
        self
    }

    /// Lists at most `limit` invitees (the oldest) in the profile (default
    /// [`PROFILE_INVITEES_LIMIT`], 100); 0 lists none. However many a user has, a profile
    /// read then costs the same.
    pub fn profile_invitees_limit(mut self, limit: usize) -> Self {
        self.policy.profile_invitees = limit;
        self
    }

    /// Checks the settings and returns the policy.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let Self {
            mut policy,
            test_phones,
        } = self;
        let otp = &policy.otp;
        let bad = |setting: &'static str, why: &str| Err(PolicyError::new(setting, why));
        if !(4..=10).contains(&otp.code_length) {
            return bad("code_length", "must be 4 to 10 digits");
        }
        if otp.code_ttl.as_secs() == 0 {
            return bad("code_ttl", "must be at least 1 second");
        }
        if otp.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if otp.max_sends_per_window == 0 || otp.send_window.as_secs() == 0 {
            return bad(
                "max_sends",
                "must allow at least 1 code in a window of at least 1 s",
            );
        }
        if !(1..=100).contains(&otp.max_failures) {
            return bad(
                "max_failures",
                "must be 1 to 100 (NIST SP 800-63B allows at most 100)",
            );
        }
        if otp.lockout.as_secs() == 0 {
            return bad("lockout", "must be at least 1 second");
        }
        if policy
            .sms_budget
            .is_some_and(|b| b.max == 0 || b.window.as_secs() == 0)
        {
            return bad(
                "sms_budget",
                "must allow at least 1 SMS in a window of at least 1 s (None for no limit)",
            );
        }
        if !(1..=100).contains(&policy.sms_prefix_share) {
            return bad("sms_prefix_share", "must be 1 to 100 percent");
        }
        if policy.human_check_at > 100 {
            return bad("human_check_at", "must be 0 to 100 percent");
        }
        if policy.access_ttl.as_secs() == 0 {
            return bad("access_ttl", "must be at least 1 second");
        }
        if policy.refresh_ttl <= policy.access_ttl {
            return bad(
                "refresh_ttl",
                "must be longer than the access-token lifetime",
            );
        }
        for (phone, code) in test_phones {
            let parsed = Phone::parse(&phone, &policy.regions)
                .map_err(|e| PolicyError::new("test_phones", &format!("`{phone}`: {e}")))?;
            let code = OtpCode::parse(&code, policy.otp.code_length).map_err(|e| {
                PolicyError::new("test_phones", &format!("code for `{phone}`: {e}"))
            })?;
            policy.test_phones.insert(parsed, code);
        }
        Ok(policy)
    }
}

/// A policy setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy setting `{setting}`: {reason}")]
pub struct PolicyError {
    /// The setting's name.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl PolicyError {
    fn new(setting: &'static str, reason: &str) -> Self {
        Self {
            setting,
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_table() {
        let policy = Policy::builder().build().unwrap();
        let otp = policy.otp();
        assert_eq!(otp.code_length, 4);
        assert_eq!(otp.code_ttl, Duration::from_secs(300));
        assert_eq!(otp.resend_cooldown, Duration::from_secs(60));
        assert_eq!(otp.max_attempts, 5);
        assert_eq!(otp.max_sends_per_window, 10);
        assert_eq!(otp.send_window, Duration::from_secs(3600));
        assert_eq!(otp.max_failures, 50);
        assert_eq!(otp.lockout, Duration::from_secs(3600));
        assert_eq!(policy.sms_budget(), Some(RateLimit::per_hour(1000)));
        assert_eq!(policy.sms_prefix_budget(), Some(RateLimit::per_hour(250)));
        assert_eq!(policy.human_check_at(), 50);
        assert_eq!(policy.access_ttl(), Duration::from_secs(1200));
        assert_eq!(policy.refresh_ttl(), Duration::from_secs(604_800));
        assert_eq!(policy.regions(), &AllowedRegions::all());
        assert_eq!(Policy::default().otp(), otp);
    }

    #[test]
    fn nonsense_is_refused_naming_the_setting() {
        let cases = [
            (Policy::builder().code_length(3), "code_length"),
            (Policy::builder().code_ttl(Duration::ZERO), "code_ttl"),
            (Policy::builder().max_attempts(0), "max_attempts"),
            (
                Policy::builder().max_sends(0, Duration::from_secs(60)),
                "max_sends",
            ),
            (Policy::builder().max_failures(0), "max_failures"),
            (Policy::builder().max_failures(101), "max_failures"),
            (Policy::builder().lockout(Duration::ZERO), "lockout"),
            (
                Policy::builder().sms_budget(Some(RateLimit::per_hour(0))),
                "sms_budget",
            ),
            (Policy::builder().sms_prefix_share(0), "sms_prefix_share"),
            (Policy::builder().sms_prefix_share(101), "sms_prefix_share"),
            (Policy::builder().human_check_at(101), "human_check_at"),
            (Policy::builder().access_ttl(Duration::ZERO), "access_ttl"),
            (
                Policy::builder().refresh_ttl(Duration::from_secs(60)),
                "refresh_ttl",
            ),
            (Policy::builder().test_phone("nope", "0000"), "test_phones"),
            (
                Policy::builder().test_phone("+375291234567", "00"),
                "test_phones",
            ),
        ];
        for (builder, setting) in cases {
            assert_eq!(builder.build().unwrap_err().setting, setting);
        }
    }

    #[test]
    fn prefix_budgets_are_a_share_of_the_budget() {
        let share = |budget, percent| {
            Policy::builder()
                .sms_budget(budget)
                .sms_prefix_share(percent)
                .build()
                .unwrap()
                .sms_prefix_budget()
        };
        assert_eq!(
            share(Some(RateLimit::per_hour(100)), 30),
            Some(RateLimit::per_hour(30))
        );
        assert_eq!(
            share(Some(RateLimit::per_hour(3)), 10),
            Some(RateLimit::per_hour(1))
        );
        assert_eq!(share(Some(RateLimit::per_hour(100)), 100), None);
        assert_eq!(share(None, 25), None);
    }

    #[test]
    fn test_phones_are_normalised() {
        let policy = Policy::builder()
            .test_phone("+375 29 123-45-67", "0000")
            .build()
            .unwrap();
        let phone = Phone::parse("+375291234567", &AllowedRegions::all()).unwrap();
        assert_eq!(policy.test_code(&phone).unwrap().expose(), "0000");
    }
}
