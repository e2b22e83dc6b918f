//! Request and response bodies of the HTTP contract, defined once for every framework adapter.
//!
//! Responses that are domain values serialize directly: [`Login`](crate::Login),
//! [`Profile`](crate::Profile), [`TokenPair`](crate::TokenPair), [`ErrorBody`](crate::ErrorBody).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// `POST /login/send_code/`.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendCodeRequest {
    /// The phone, international form; spaces, dashes and brackets are accepted.
    #[cfg_attr(feature = "openapi", schema(example = "+375333478282"))]
    pub phone: String,
    /// The answer to the challenge of a `428 human_check_required`, when the deployment asked
    /// for one. A JSON object (an array is refused, as for the body itself).
    #[serde(default, deserialize_with = "object_only")]
    pub human_check: Option<crate::human::HumanCheckAnswer>,
}

/// Reads an optional JSON object into `T`: serde would also read a tagged enum or a struct
/// from a JSON array.
fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let object: Option<serde_json::Map<String, serde_json::Value>> =
        Option::deserialize(deserializer)?;
    object
        .map(|object| {
            serde_json::from_value(serde_json::Value::Object(object))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
}

/// `POST /login/verify_code/`.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UseInviteCodeRequest {
    /// Someone else's invite code; trimmed, case-insensitive.
    pub invite_code: String,
}

/// `POST /api/token/refresh/` and `POST /api/token/logout/`.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageResponse {
    /// The sentence.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
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

/// `POST /api/sessions/revoke/`.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeSessionsRequest {
    /// Which sessions to end: `others` (all but the caller's own) or `all`.
    pub scope: RevokeScope,
}

/// Which of the caller's sessions `POST /api/sessions/revoke/` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RevokeScope {
    /// Every session but the one the access token belongs to ("sign out everywhere else").
    Others,
    /// Every session, the caller's own too.
    All,
}

/// `POST /api/sessions/revoke/`: `{"revoked": N}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedResponse {
    /// How many sessions were ended.
    pub revoked: u64,
}

/// `GET /api/sessions/`: the caller's live sessions, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionsResponse {
    /// The sessions.
    pub sessions: Vec<SessionView>,
}

/// One session in `GET /api/sessions/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// The session's id (32 hex characters), for `DELETE /api/sessions/{id}/`.
    pub id: String,
    /// When it started (the login), RFC 3339 UTC.
    pub created_at: String,
    /// When it was last used (its last refresh; its start if never refreshed), RFC 3339 UTC.
    pub last_used_at: String,
    /// The `User-Agent` it started with, at most 256 characters; `null` if none was sent.
    pub user_agent: Option<String>,
    /// The network it started from (`203.0.113.0/24`, `2001:db8::/48`), never the address;
    /// `null` if unknown.
    pub ip: Option<String>,
    /// Whether this is the session of the access token that asked.
    pub current: bool,
}

impl SessionView {
    /// The view of `session` for a caller whose own session is `current`.
    pub fn new(session: &crate::session::Session, current: &crate::FamilyId) -> Self {
        use crate::event::rfc3339;
        Self {
            id: session.id.as_str().to_owned(),
            created_at: rfc3339::format(session.created_at),
            last_used_at: rfc3339::format(session.last_used_at),
            user_agent: session.client.user_agent.clone(),
            ip: session.client.network.clone(),
            current: session.id == *current,
        }
    }
}

/// `POST /api/account/delete/`: the caller's code, proving the phone again.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteAccountRequest {
    /// A live code for the caller's own phone, from `POST /login/send_code/`.
    pub code: String,
}

impl std::fmt::Debug for DeleteAccountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteAccountRequest")
            .finish_non_exhaustive()
    }
}

/// `POST /api/account/phone/send_code/`: the new phone, and a code proving the current one.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhoneSendCodeRequest {
    /// The phone to move to, as for `send_code`.
    pub phone: String,
    /// A live code for the account's current phone, from `POST /login/send_code/`.
    pub current_code: String,
    /// The answer to the challenge of a `428 human_check_required`, as for `send_code`.
    #[serde(default, deserialize_with = "object_only")]
    pub human_check: Option<crate::human::HumanCheckAnswer>,
}

impl std::fmt::Debug for PhoneSendCodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneSendCodeRequest")
            .field("human_check", &self.human_check)
            .finish_non_exhaustive()
    }
}

/// `POST /api/account/phone/verify/`: the new phone and the code sent to it.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangePhoneRequest {
    /// The new phone, as for `send_code`.
    pub phone: String,
    /// The code sent to it by `POST /api/account/phone/send_code/`.
    pub code: String,
}

impl std::fmt::Debug for ChangePhoneRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePhoneRequest").finish_non_exhaustive()
    }
}

/// `POST /api/account/phone/verify/`: `{"phone": "<new E.164>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhoneResponse {
    /// The account's phone now, E.164.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "+375291234567"))]
    pub phone: crate::Phone,
}

/// `GET /api/account/export/`: everything stored about the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountExport {
    /// The caller's id.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub user_id: crate::UserId,
    /// The caller's phone, E.164.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub phone: crate::Phone,
    /// When the account was created (its first login), RFC 3339 UTC.
    pub created_at: String,
    /// The caller's own invite code.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub own_invite_code: crate::InviteCode,
    /// The code the caller applied, or `null`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub activated_invite_code: Option<crate::InviteCode>,
    /// When the caller applied it, RFC 3339 UTC, or `null`.
    pub activated_at: Option<String>,
    /// The users who applied the caller's code, in the order they did.
    pub invited_users: Vec<InviteeView>,
    /// The caller's live sessions, as `GET /api/sessions/` lists them.
    pub sessions: Vec<SessionView>,
    /// The caller's rewards (none are kept yet: always empty).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub rewards: Vec<serde_json::Value>,
}

/// One invitee in [`AccountExport`] and [`InviteesResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteeView {
    /// The invitee's phone, E.164, or masked (`+37529*****67`) with `INVITEE_PHONES=masked`.
    pub phone: String,
    /// When the invitee applied the caller's code, RFC 3339 UTC.
    pub joined_at: String,
}

impl InviteeView {
    /// `invitee`, its phone shown as `invitee_phones` says.
    pub fn new(invitee: &crate::account::Invitee, invitee_phones: crate::InviteePhones) -> Self {
        Self {
            phone: invitee_phones.show(&invitee.phone),
            joined_at: crate::event::rfc3339::format(invitee.joined_at),
        }
    }
}

impl AccountExport {
    /// The export of `account` with its live `sessions`, for a caller whose own session is
    /// `current`, its invitees' phones shown as `invitee_phones` says.
    pub fn new(
        account: crate::account::Account,
        sessions: &[crate::session::Session],
        current: &crate::FamilyId,
        invitee_phones: crate::InviteePhones,
    ) -> Self {
        use crate::event::rfc3339;
        Self {
            user_id: account.user_id,
            phone: account.phone,
            created_at: rfc3339::format(account.created_at),
            own_invite_code: account.own_invite_code,
            activated_invite_code: account.activated_invite_code,
            activated_at: account.activated_at.map(rfc3339::format),
            invited_users: account
                .invitees
                .iter()
                .map(|invitee| InviteeView::new(invitee, invitee_phones))
                .collect(),
            sessions: sessions
                .iter()
                .map(|session| SessionView::new(session, current))
                .collect(),
            rewards: Vec::new(),
        }
    }
}

/// `GET /get_profile/` as the routes send it: the [`Profile`](crate::Profile), its
/// invitees' phones shown as the policy's [`InviteePhones`](crate::InviteePhones) says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileView {
    /// The caller's phone, E.164.
    pub phone: crate::Phone,
    /// The caller's own invite code.
    pub own_invite_code: crate::InviteCode,
    /// The code the caller applied, or `null`.
    pub activated_invite_code: Option<crate::InviteCode>,
    /// Who applied the caller's code, oldest first: E.164, or masked.
    pub invited_users: Vec<String>,
    /// How many applied it.
    pub invited_count: u64,
}

impl ProfileView {
    /// `profile` with its invitees' phones shown as `invitee_phones` says.
    pub fn new(profile: crate::Profile, invitee_phones: crate::InviteePhones) -> Self {
        Self {
            phone: profile.phone,
            own_invite_code: profile.own_invite_code,
            activated_invite_code: profile.activated_invite_code,
            invited_users: profile
                .invited_users
                .iter()
                .map(|phone| invitee_phones.show(phone))
                .collect(),
            invited_count: profile.invited_count,
        }
    }
}

/// The query string of `GET /api/invitees/`: `limit` (1 to
/// [`INVITEES_PAGE_MAX`](crate::account::INVITEES_PAGE_MAX), default
/// [`INVITEES_PAGE_DEFAULT`](crate::account::INVITEES_PAGE_DEFAULT)) and `cursor` (a
/// `next_cursor`). Other parameters are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct InviteesQuery {
    /// How many invitees the page holds at most.
    pub limit: Option<String>,
    /// Where the page starts: a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl InviteesQuery {
    /// Reads `query` (the request's query string, without `?`), or the contract's
    /// `400 invalid_request` naming what is wrong (never echoing it).
    pub fn parse(query: Option<&str>) -> Result<Self, Error> {
        serde_urlencoded::from_str(query.unwrap_or_default()).map_err(|_| {
            Error::InvalidRequest(
                "Invalid query string: give `limit` and `cursor` at most once each.".into(),
            )
        })
    }

    /// The page's `limit`: [`INVITEES_PAGE_DEFAULT`](crate::account::INVITEES_PAGE_DEFAULT)
    /// when there is none, 0 (which [`ReferralService::invitees`](crate::ReferralService::invitees)
    /// refuses) when it is not a whole number.
    pub fn limit(&self) -> usize {
        match &self.limit {
            None => crate::account::INVITEES_PAGE_DEFAULT,
            Some(text) if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().unwrap_or(0),
            Some(_) => 0,
        }
    }
}

/// `GET /api/invitees/`: a page of the caller's invitees, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteesResponse {
    /// The invitees of the page, in the order they applied the caller's code.
    pub invitees: Vec<InviteeView>,
    /// The `cursor` of the next page, or `null` after the last one.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, example = "aW52MQAAAAAAAAAq")
    )]
    pub next_cursor: Option<String>,
    /// How many invitees the caller has in all (the profile's `invited_count`).
    pub total: u64,
}

impl InviteesResponse {
    /// `page` with its invitees' phones shown as `invitee_phones` says.
    pub fn new(page: crate::account::InviteePage, invitee_phones: crate::InviteePhones) -> Self {
        Self {
            invitees: page
                .invitees
                .iter()
                .map(|invitee| InviteeView::new(invitee, invitee_phones))
                .collect(),
            next_cursor: page.next.map(crate::account::InviteeCursor::encode),
            total: page.total,
        }
    }
}

/// `GET /health`: `{"status": "ok"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// Always `"ok"`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "ok"))]
    pub status: &'static str,
}

impl HealthResponse {
    /// `{"status": "ok"}`.
    pub const OK: Self = Self { status: "ok" };
}

/// Parses a JSON request body into `T`, or the contract's `400 invalid_request` naming what is
/// wrong (never echoing the input, which may hold secrets).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // serde would also read a struct from a JSON array (`["+375..."]`); the contract's bodies
    // are objects.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b == b'[') {
        let why = "Invalid request body: expected a JSON object.";
        return Err(Error::InvalidRequest(why.into()));
    }
    serde_json::from_slice(body).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Data => data_error(&e.to_string()),
            serde_json::error::Category::Eof => "The request body is empty or cut short.".into(),
            _ => "The request body is not valid JSON.".into(),
        };
        Error::InvalidRequest(why)
    })
}

/// The sentence for one of serde's data errors, made only of what the contract's own types
/// say: serde's messages quote what was sent (``invalid type: string "<sent>", expected ...``,
/// ``unknown variant `<sent>`, expected ...``), so only the kind of error, and the names and
/// types serde expected, are kept. What serde expected comes last in its message, before
/// ` at line N column M`.
fn data_error(message: &str) -> String {
    let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
    let expected = message.rsplit_once(", expected ").map(|(_, e)| e);
    let kind = [
        ("invalid type", "a value has the wrong type"),
        ("invalid value", "a value is not allowed"),
        ("invalid length", "a value has the wrong length"),
        ("unknown variant", "an unknown value"),
        ("unknown field", "an unknown field"),
    ]
    .into_iter()
    .find(|(prefix, _)| message.starts_with(prefix));
    match (kind, expected) {
        (Some((_, what)), Some(expected)) => {
            format!("Invalid request body: {what}, expected {expected}.")
        }
        (Some((_, what)), None) => format!("Invalid request body: {what}."),
        // Field names are the contract's own: `missing field `phone``, `duplicate field ...`.
        (None, _)
            if message.starts_with("missing field") || message.starts_with("duplicate field") =>
        {
            format!("Invalid request body: {message}.")
        }
        (None, _) => "Invalid request body: a field has an invalid value.".into(),
    }
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
            br#"["+375333478282"]"#,
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
    fn human_check_answers_are_objects_and_never_echoed() {
        let phone = r#""phone": "+375333478282""#;
        let ok: SendCodeRequest = parse_body(
            format!(r#"{{{phone}, "human_check": {{"kind": "pow", "challenge": "c", "solution": "1"}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            ok.human_check,
            Some(crate::HumanCheckAnswer::Pow { .. })
        ));
        let none: SendCodeRequest =
            parse_body(format!(r#"{{{phone}, "human_check": null}}"#).as_bytes()).unwrap();
        assert!(none.human_check.is_none());
        for (answer, expected) in [
            (r#"["pow", "c", "1"]"#, "wrong type"),
            (r#"{"kind": "s3cr3t-<script>"}"#, "unknown value"),
            (
                r#"{"kind": "pow", "challenge": "c", "solution": "1", "s3cr3t-key": 1}"#,
                "unknown field",
            ),
            (r#"{"kind": "turnstile", "token": 7}"#, "wrong type"),
            // What was sent may look like serde's own words: it is still not repeated.
            (r#"{"kind": "s3cr3t at line 1"}"#, "unknown value"),
            (r#"{"kind": "a, expected s3cr3t"}"#, "unknown value"),
            (
                r#"{"kind": "pow", "challenge": ["s3cr3t, expected x"], "solution": "1"}"#,
                "wrong type",
            ),
        ] {
            let body = format!(r#"{{{phone}, "human_check": {answer}}}"#);
            let error = parse_body::<SendCodeRequest>(body.as_bytes()).unwrap_err();
            let message = error.to_string();
            assert_eq!(error.code(), "invalid_request", "{answer}");
            assert!(message.contains(expected), "{answer}: {message}");
            assert!(
                !message.contains("s3cr3t") && !message.contains('7'),
                "{message}"
            );
        }
    }

    #[test]
    fn wrong_types_are_named_without_the_value() {
        for body in [
            &br#"{"phone": "+375291000001", "code": 4821}"#[..],
            br#"{"phone": "+375291000001", "code": 4821.5}"#,
            br#"{"phone": "+375291000001", "code": true}"#,
            br#"{"phone": "+375291000001", "code": {"x": "4821"}}"#,
        ] {
            let message = parse_body::<VerifyCodeRequest>(body)
                .unwrap_err()
                .to_string();
            assert!(!message.contains("4821"), "{message}");
            assert!(!message.contains("true"), "{message}");
            assert!(message.contains("expected a string"), "{message}");
        }
    }

    #[test]
    fn type_errors_do_not_echo_secrets() {
        let error = parse_body::<RefreshRequest>(br#"{"refresh": ["s3cr3t-token"]}"#).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
