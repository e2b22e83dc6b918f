//! The one error type of refsys, and the table that turns it into HTTP.
//!
//! Every variant has a stable machine code and an HTTP status, exactly as the HTTP contract
//! (`API.md`) lists them. Framework adapters answer through
//! [`http::Reply::error`](crate::http::Reply::error), which reads [`Error::http`],
//! [`Error::body`] and [`Error::retry_after`] and adds nothing of its own, so axum and actix-web
//! answer byte for byte the same.

use serde::Serialize;

/// Everything that can go wrong in a refsys operation.
///
/// Client mistakes are 4xx; [`Error::Store`] (503) and [`Error::SmsFailed`] (502) are failures
/// of our dependencies and never blamed on the client. Messages never contain secrets (codes,
/// tokens, keys) nor full phone numbers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request body is not JSON, or a field is missing or has the wrong type or format.
    #[error("{0}")]
    InvalidRequest(String),
    /// Not a valid phone number, or outside the allowed regions.
    #[error("Not a valid phone number, or its region is not allowed.")]
    InvalidPhone,
    /// A code was sent to this phone less than the resend cooldown ago.
    #[error("A code was sent to this phone moments ago. Wait before asking for another.")]
    ResendCooldown {
        /// Seconds until a new code may be sent.
        retry_after: u64,
    },
    /// Too many codes were sent to this phone in the rolling window.
    #[error("Too many codes were sent to this phone. Try again later.")]
    TooManyCodes {
        /// Seconds until a new code may be sent.
        retry_after: u64,
    },
    /// The SMS sender failed to deliver the code.
    #[error("The verification code could not be sent. Try again later.")]
    SmsFailed,
    /// The deployment's SMS budget for this window is spent (SMS-pumping defence); no SMS
    /// goes out until the window ends.
    ///
    /// **503, not 429**: the client did nothing wrong and cannot fix it by slowing down; the
    /// service is (deliberately) unable to send codes for a while, which is what 503 with
    /// `Retry-After` says (RFC 9110 §15.6.4). Being a 5xx it is logged as an error and shows
    /// up in server-error alerting, which is what operators need when the budget runs out —
    /// either an attack or a budget sized too small.
    #[error("Verification codes cannot be sent right now. Try again later.")]
    SmsBudgetExhausted {
        /// Seconds until the budget's window ends.
        retry_after: u64,
    },
    /// The deployment asks for a human check before it sends this code (SMS-pumping defence,
    /// under pressure): retry with an answer to `challenge` in the body's `human_check`.
    #[error("Prove you are a person to get a code: solve the challenge and send the answer.")]
    HumanCheckRequired {
        /// What to solve.
        challenge: Box<crate::human::Challenge>,
    },
    /// The `human_check` answer is wrong, stale, already used or of another kind of check.
    #[error("The human check was not passed. Ask for a new challenge.")]
    HumanCheckFailed,
    /// The human check's verifier (a captcha provider) could not be asked.
    #[error("The human check cannot be verified right now. Try again later.")]
    HumanCheckUnavailable,
    /// Too many consecutive wrong codes for this phone, across codes: it is locked, and no
    /// code is sent to it or checked for it until the lock ends.
    #[error("Too many wrong codes for this phone. Try again later.")]
    PhoneLocked {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// No live code for this phone: never sent, expired or already used.
    #[error("No valid code for this phone: it has expired or was never sent. Ask for a new one.")]
    CodeExpired,
    /// The code is wrong; `attempts_left` more tries remain for it.
    #[error("The code is incorrect.")]
    CodeInvalid {
        /// Wrong tries left before the code is burned.
        attempts_left: u32,
    },
    /// The code was guessed wrong too many times and is burned.
    #[error("Too many wrong codes. Ask for a new code.")]
    TooManyAttempts {
        /// Seconds until a new code may be sent.
        retry_after: u64,
    },
    /// The access token is missing, malformed, badly signed, expired, or not an access token.
    #[error("Authentication credentials are missing or invalid.")]
    Unauthorized,
    /// The user tried to apply their own invite code.
    #[error("You cannot apply your own invite code.")]
    OwnInviteCode,
    /// No user has this invite code.
    #[error("No such invite code.")]
    InviteCodeNotFound,
    /// The user has already applied an invite code.
    #[error("You have already applied an invite code.")]
    InviteAlreadyActivated,
    /// The code's owner was (directly or transitively) invited by this user.
    #[error("This invite code belongs to someone you invited.")]
    InviteCycle,
    /// No live session of the caller's has this id (unknown, another user's, revoked or
    /// expired).
    #[error("No such session.")]
    SessionNotFound,
    /// Another user has the phone number the caller proved and asked to move to.
    #[error("Another account has this phone number.")]
    PhoneTaken,
    /// The phone number asked for is the caller's own already.
    #[error("This is already your phone number.")]
    SamePhone,
    /// The refresh token is invalid, expired, spent or revoked, or not a refresh token.
    #[error("The token is invalid, expired or revoked.")]
    InvalidToken,
    /// Too many requests from this client.
    #[error("Too many requests. Try again later.")]
    RateLimited {
        /// Seconds until the client may try again.
        retry_after: u64,
    },
    /// No such route.
    #[error("Not found.")]
    NotFound,
    /// The route exists but not for this method.
    #[error("Method not allowed.")]
    MethodNotAllowed,
    /// The request body is larger than allowed.
    #[error("The request body is too large.")]
    PayloadTooLarge,
    /// The client did not send the request body within the body-read timeout.
    #[error("The request body did not arrive in time.")]
    RequestTimeout,
    /// The request body is not `application/json`.
    #[error("The request body must be JSON (Content-Type: application/json).")]
    UnsupportedMediaType,
    /// A store did not answer or failed.
    #[error("A storage service is unavailable. Try again later.")]
    Store(#[source] StoreError),
    /// A store failed the readiness check (`GET /ready`).
    #[error("The {store} store is not ready.")]
    NotReady {
        /// Which store: `"user"`, `"otp"` or `"rate_limit"`.
        store: &'static str,
        /// What it answered.
        #[source]
        error: StoreError,
    },
    /// An internal failure that is nobody's input's fault (e.g. a token could not be signed).
    #[error("Internal error.")]
    Internal(String),
}

impl Error {
    /// The HTTP status and the stable machine code of this error, as `API.md` lists them.
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            Error::InvalidRequest(_) => (400, "invalid_request"),
            Error::InvalidPhone => (400, "invalid_phone"),
            Error::ResendCooldown { .. } => (429, "resend_cooldown"),
            Error::TooManyCodes { .. } => (429, "too_many_codes"),
            Error::SmsFailed => (502, "sms_failed"),
            Error::SmsBudgetExhausted { .. } => (503, "sms_budget_exhausted"),
            Error::HumanCheckRequired { .. } => (428, "human_check_required"),
            Error::HumanCheckFailed => (400, "human_check_failed"),
            Error::HumanCheckUnavailable => (502, "human_check_unavailable"),
            Error::PhoneLocked { .. } => (429, "phone_locked"),
            Error::CodeExpired => (400, "code_expired"),
            Error::CodeInvalid { .. } => (400, "code_invalid"),
            Error::TooManyAttempts { .. } => (429, "too_many_attempts"),
            Error::Unauthorized => (401, "unauthorized"),
            Error::OwnInviteCode => (400, "own_invite_code"),
            Error::InviteCodeNotFound => (404, "invite_code_not_found"),
            Error::InviteAlreadyActivated => (409, "invite_already_activated"),
            Error::InviteCycle => (409, "invite_cycle"),
            Error::SessionNotFound => (404, "session_not_found"),
            Error::PhoneTaken => (409, "phone_taken"),
            Error::SamePhone => (400, "same_phone"),
            Error::InvalidToken => (401, "invalid_token"),
            Error::RateLimited { .. } => (429, "rate_limited"),
            Error::NotFound => (404, "not_found"),
            Error::MethodNotAllowed => (405, "method_not_allowed"),
            Error::PayloadTooLarge => (413, "payload_too_large"),
            Error::RequestTimeout => (408, "request_timeout"),
            Error::UnsupportedMediaType => (415, "unsupported_media_type"),
            Error::Store(_) => (503, "store_unavailable"),
            Error::NotReady { .. } => (503, "not_ready"),
            Error::Internal(_) => (500, "internal_error"),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.http().0
    }

    /// The stable machine-readable code, e.g. `"code_invalid"`.
    pub fn code(&self) -> &'static str {
        self.http().1
    }

    /// Seconds the client should wait (the `Retry-After` header), for 429 errors and
    /// `503 sms_budget_exhausted`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::ResendCooldown { retry_after }
            | Error::TooManyCodes { retry_after }
            | Error::TooManyAttempts { retry_after }
            | Error::PhoneLocked { retry_after }
            | Error::SmsBudgetExhausted { retry_after }
            | Error::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the response needs `WWW-Authenticate: Bearer` (401 on a protected route).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == 401
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.http();
        ErrorBody {
            error: self.to_string(),
            code,
            attempts_left: match self {
                Error::CodeInvalid { attempts_left } => Some(*attempts_left),
                _ => None,
            },
            retry_after: self.retry_after(),
            store: match self {
                Error::NotReady { store, .. } => Some(store),
                _ => None,
            },
            challenge: match self {
                Error::HumanCheckRequired { challenge } => Some((**challenge).clone()),
                _ => None,
            },
        }
    }
}

/// Which store failed a readiness check.
#[derive(Debug, thiserror::Error)]
#[error("{store} store is not ready: {error}")]
pub struct NotReady {
    /// `"user"`, `"otp"` or `"rate_limit"`.
    pub store: &'static str,
    /// What it answered.
    #[source]
    pub error: StoreError,
}

impl From<NotReady> for Error {
    fn from(not_ready: NotReady) -> Self {
        Error::NotReady {
            store: not_ready.store,
            error: not_ready.error,
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::Store(error)
    }
}

/// The JSON shape of every error response: `{"error": "...", "code": "..."}`, plus
/// `attempts_left` for `code_invalid`, `retry_after` for 429s and `sms_budget_exhausted`, and
/// `challenge` for `human_check_required`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A human-readable sentence.
    pub error: String,
    /// The stable machine-readable code.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "invalid_request"))]
    pub code: &'static str,
    /// Wrong tries left for the current code (`code_invalid` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Seconds to wait before retrying (429s and `sms_budget_exhausted`; also sent as
    /// `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The store that failed the readiness check (`not_ready` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub store: Option<&'static str>,
    /// What to solve (`human_check_required` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::human::Challenge>,
}

/// A failure of a [`UserStore`](crate::UserStore) or [`OtpStore`](crate::OtpStore).
///
/// Backends build it with the constructors below from their own error types, so the core never
/// names a database crate.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing service did not answer (connection refused, timeout, pool exhausted).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backing service answered with data the store cannot make sense of.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// A bounded retry gave up (e.g. no free invite code after several tries).
    #[error("store gave up: {0}")]
    Exhausted(String),
}

impl StoreError {
    /// The backing service did not answer.
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(error.to_string())
    }

    /// The backing service answered with data the store cannot make sense of.
    pub fn corrupt(error: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of API.md, row by row.
    #[test]
    fn statuses_and_codes_match_the_contract() {
        let table: Vec<(Error, u16, &str)> = vec![
            (Error::InvalidRequest("x".into()), 400, "invalid_request"),
            (Error::SessionNotFound, 404, "session_not_found"),
            (Error::InvalidPhone, 400, "invalid_phone"),
            (
                Error::ResendCooldown { retry_after: 1 },
                429,
                "resend_cooldown",
            ),
            (
                Error::TooManyCodes { retry_after: 1 },
                429,
                "too_many_codes",
            ),
            (Error::SmsFailed, 502, "sms_failed"),
            (
                Error::SmsBudgetExhausted { retry_after: 1 },
                503,
                "sms_budget_exhausted",
            ),
            (Error::PhoneLocked { retry_after: 1 }, 429, "phone_locked"),
            (Error::RateLimited { retry_after: 1 }, 429, "rate_limited"),
            (
                Error::HumanCheckRequired {
                    challenge: Box::new(crate::human::Challenge::Turnstile {
                        site_key: "key".into(),
                    }),
                },
                428,
                "human_check_required",
            ),
            (Error::HumanCheckFailed, 400, "human_check_failed"),
            (Error::HumanCheckUnavailable, 502, "human_check_unavailable"),
            (Error::CodeExpired, 400, "code_expired"),
            (Error::CodeInvalid { attempts_left: 1 }, 400, "code_invalid"),
            (
                Error::TooManyAttempts { retry_after: 1 },
                429,
                "too_many_attempts",
            ),
            (Error::Unauthorized, 401, "unauthorized"),
            (Error::OwnInviteCode, 400, "own_invite_code"),
            (Error::InviteCodeNotFound, 404, "invite_code_not_found"),
            (
                Error::InviteAlreadyActivated,
                409,
                "invite_already_activated",
            ),
            (Error::InviteCycle, 409, "invite_cycle"),
            (Error::PhoneTaken, 409, "phone_taken"),
            (Error::SamePhone, 400, "same_phone"),
            (Error::InvalidToken, 401, "invalid_token"),
            (Error::PayloadTooLarge, 413, "payload_too_large"),
            (Error::RequestTimeout, 408, "request_timeout"),
            (Error::UnsupportedMediaType, 415, "unsupported_media_type"),
            (Error::NotFound, 404, "not_found"),
            (
                Error::Store(StoreError::unavailable("down")),
                503,
                "store_unavailable",
            ),
        ];
        for (error, status, code) in table {
            assert_eq!(error.http(), (status, code), "{error:?}");
            let waits = status == 429 || code == "sms_budget_exhausted";
            assert_eq!(error.retry_after().is_some(), waits, "{error:?}");
        }
    }

    #[test]
    fn body_is_the_contract_shape() {
        let plain = serde_json::to_value(Error::InviteCycle.body()).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({
                "error": "This invite code belongs to someone you invited.",
                "code": "invite_cycle"
            })
        );
        let invalid = serde_json::to_value(Error::CodeInvalid { attempts_left: 3 }.body()).unwrap();
        assert_eq!(invalid["attempts_left"], 3);
        assert!(invalid.get("retry_after").is_none());
        let limited = serde_json::to_value(Error::TooManyCodes { retry_after: 42 }.body()).unwrap();
        assert_eq!(limited["retry_after"], 42);
        assert!(limited.get("attempts_left").is_none());
        let challenge = Error::HumanCheckRequired {
            challenge: Box::new(crate::human::Challenge::Turnstile {
                site_key: "0x4AAA".into(),
            }),
        };
        let body = serde_json::to_value(challenge.body()).unwrap();
        assert_eq!(body["code"], "human_check_required");
        assert_eq!(
            body["challenge"],
            serde_json::json!({"kind": "turnstile", "site_key": "0x4AAA"})
        );
        assert!(plain.get("challenge").is_none());
    }

    #[test]
    fn store_details_stay_out_of_the_response() {
        let error = Error::Store(StoreError::unavailable(
            "password authentication failed for db",
        ));
        assert!(!error.body().error.contains("password"));
    }
}
