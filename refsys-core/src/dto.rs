//! Request and response bodies of the HTTP contract, defined once for every framework adapter.
//!
//! Responses that are domain values serialize directly: [`Login`](crate::Login),
//! [`Profile`](crate::Profile), [`TokenPair`](crate::TokenPair), [`ErrorBody`](crate::ErrorBody).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// `POST /login/send_code/`.
#[derive(Clone, Debug, Deserialize)]
pub struct SendCodeRequest {
    /// The phone, international form; spaces, dashes and brackets are accepted.
    pub phone: String,
}

/// `POST /login/verify_code/`.
#[derive(Clone, Deserialize)]
pub struct VerifyCodeRequest {
    /// The phone the code was sent to.
    pub phone: String,
    /// The code from the SMS.
    pub code: String,
}

impl std::fmt::Debug for VerifyCodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCodeRequest").finish_non_exhaustive()
    }
}

/// `POST /use_invite_code/`.
#[derive(Clone, Debug, Deserialize)]
pub struct UseInviteCodeRequest {
    /// Someone else's invite code; trimmed, case-insensitive.
    pub invite_code: String,
}

/// `POST /api/token/refresh/` and `POST /api/token/logout/`.
#[derive(Clone, Deserialize)]
pub struct RefreshRequest {
    /// A refresh token.
    pub refresh: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest").finish_non_exhaustive()
    }
}

/// A body with one sentence: `{"message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageResponse {
    /// The sentence.
    pub message: &'static str,
}

impl MessageResponse {
    /// The body of a successful `send_code`.
    pub const CODE_SENT: Self = Self {
        message: "Verification code has been sent successfully.",
    };
    /// The body of a successful `use_invite_code`.
    pub const INVITE_APPLIED: Self = Self {
        message: "Invite code applied successfully. Welcome!",
    };
}

/// `GET /health`: `{"status": "ok"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthResponse {
    /// Always `"ok"`.
    pub status: &'static str,
}

/// Parses a JSON request body into `T`, or the contract's `400 invalid_request` naming what is
/// wrong (never echoing the input, which may hold secrets).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Data => {
                // serde's data errors name the field and the expected type, not the value.
                let message = e.to_string();
                let message = message.split(" at line ").next().unwrap_or_default();
                format!("Invalid request body: {message}.")
            }
            serde_json::error::Category::Eof => "The request body is empty or cut short.".into(),
            _ => "The request body is not valid JSON.".into(),
        };
        Error::InvalidRequest(why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_body_reports_the_contract_error() {
        let ok: SendCodeRequest = parse_body(br#"{"phone": "+375333478282", "extra": 1}"#).unwrap();
        assert_eq!(ok.phone, "+375333478282");
        for body in [
            &b""[..],
            b"not json",
            b"{",
            b"[]",
            b"{}",
            br#"{"phone": 375}"#,
            br#"{"phone": null}"#,
        ] {
            let error = parse_body::<SendCodeRequest>(body).unwrap_err();
            assert_eq!(
                error.code(),
                "invalid_request",
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let missing = parse_body::<SendCodeRequest>(b"{}")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("phone"), "{missing}");
    }

    #[test]
    fn type_errors_do_not_echo_secrets() {
        let error = parse_body::<RefreshRequest>(br#"{"refresh": ["s3cr3t-token"]}"#).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
