//! The OpenAPI 3.1 document of the HTTP API.
//!
//! [`document`] describes every route of [`http::routes`](crate::http::routes()): request and
//! response bodies (schemas derived from the DTOs with utoipa), and every error a route can
//! answer, with examples made from [`Error::body`] itself — so the examples are exactly what
//! the server sends. Both framework crates serve [`json`] at `/api/schema/`. Swagger UI is
//! not part of this crate: the example server (`refsys-server`) serves it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::ToSchema;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Operation, OperationBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, Header, HttpMethod, InfoBuilder, ObjectBuilder, OpenApi,
    OpenApiBuilder, PathItem, PathsBuilder, Ref, ResponseBuilder, SecurityRequirement, Type,
};

use crate::dto::{
    AccountExport, ChangePhoneRequest, DeleteAccountRequest, HealthResponse, InviteeView,
    InviteesResponse, MessageResponse, PhoneResponse, PhoneSendCodeRequest, RefreshRequest,
    RevokeScope, RevokeSessionsRequest, RevokedResponse, SendCodeRequest, SessionView,
    SessionsResponse, UseInviteCodeRequest, VerifyCodeRequest,
};
use crate::http::routes::{Endpoint, Method, routes};
use crate::{Error, ErrorBody, Login, Profile, StoreError, TokenPair};

/// Returns the document as JSON, serialized on the first call.
pub fn json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_vec(&document()).unwrap_or_default())
}

/// Builds the OpenAPI 3.1 document of every route.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in routes() {
        let method = match route.method {
            Method::Get => HttpMethod::Get,
            Method::Post => HttpMethod::Post,
            Method::Delete => HttpMethod::Delete,
        };
        let operation = operation(route.endpoint);
        paths = paths.path(route.paths[0], PathItem::new(method, operation));
    }
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some("The `access` token from `verify_code` or `refresh`."))
        .build();
    let components = ComponentsBuilder::new()
        .schema_from::<SendCodeRequest>()
        .schema_from::<VerifyCodeRequest>()
        .schema_from::<UseInviteCodeRequest>()
        .schema_from::<RefreshRequest>()
        .schema_from::<MessageResponse>()
        .schema_from::<HealthResponse>()
        .schema_from::<Login>()
        .schema_from::<Profile>()
        .schema_from::<TokenPair>()
        .schema_from::<SessionsResponse>()
        .schema_from::<SessionView>()
        .schema_from::<RevokeSessionsRequest>()
        .schema_from::<RevokeScope>()
        .schema_from::<RevokedResponse>()
        .schema_from::<AccountExport>()
        .schema_from::<InviteeView>()
        .schema_from::<InviteesResponse>()
        .schema_from::<DeleteAccountRequest>()
        .schema_from::<ChangePhoneRequest>()
        .schema_from::<PhoneSendCodeRequest>()
        .schema_from::<PhoneResponse>()
        .schema_from::<ErrorBody>()
        .schema_from::<crate::human::Challenge>()
        .schema_from::<crate::human::HumanCheckAnswer>()
        .security_scheme("bearer", SecurityScheme::Http(bearer))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("refsys")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Phone-number login with one-time SMS codes, JWT sessions and invite codes. \
                     Paths are matched with and without the trailing slash. Every error has the \
                     shape `{\"error\": \"...\", \"code\": \"...\"}`; 429s and \
                     `503 sms_budget_exhausted` also carry `retry_after` and a `Retry-After` \
                     header. Bodies over 16 KiB get 413, a \
                     missing or non-JSON `Content-Type` 415, unknown routes 404, wrong methods 405, all in \
                     the error shape.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

fn sample_store_error() -> StoreError {
    StoreError::unavailable("connection refused")
}

/// Describes `endpoint` as an OpenAPI operation.
fn operation(endpoint: Endpoint) -> Operation {
    let with_body_errors = |more: Vec<Error>| {
        let mut errors = vec![
            Error::InvalidRequest("Invalid request body: missing field `phone`.".into()),
            Error::PayloadTooLarge,
            Error::UnsupportedMediaType,
        ];
        errors.extend(more);
        errors
    };
    let limited = Error::RateLimited { retry_after: 42 };
    let store = Error::Store(sample_store_error());
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag("refsys")
    };
    let (builder, body, ok, errors, auth) = match endpoint {
        Endpoint::SendCode => (
            op("send_code", "Send a one-time code to a phone").description(Some(
                "The phone is normalised to E.164 (spaces, dashes and brackets accepted). The \
                 code goes to the SMS sender, never into the response. Limited per phone \
                 (lock after too many wrong codes, cooldown, rolling window), per client IP, and by \
                 the deployment's SMS budget and its share per destination prefix \
                 (503 `sms_budget_exhausted`). Once a budget is busy, a deployment with a human \
                 check answers 428 `human_check_required` with a `challenge`; send the same body \
                 again with `human_check` holding the answer (400 `human_check_failed` when it \
                 does not pass).",
            )),
            Some((
                "SendCodeRequest",
                serde_json::json!({"phone": "+375333478282"}),
            )),
            Some((200, "MessageResponse", to_json(&MessageResponse::CODE_SENT))),
            with_body_errors(vec![
                Error::InvalidPhone,
                Error::ResendCooldown { retry_after: 55 },
                Error::TooManyCodes { retry_after: 3000 },
                Error::PhoneLocked { retry_after: 3500 },
                limited,
                Error::SmsFailed,
                Error::SmsBudgetExhausted { retry_after: 1800 },
                Error::HumanCheckRequired {
                    challenge: Box::new(crate::human::Challenge::Pow {
                        algorithm: "sha256",
                        challenge: "v1.1800000120.16.pV1vS0Fzb6xP6a2h5u8i3Q.q3lQ0zGd4Jq1kD8rXm0m7Ew3o1y1bH7kR9p5cN2t6sA".into(),
                        difficulty: 16,
                        expires_in: 120,
                    }),
                },
                Error::HumanCheckFailed,
                Error::HumanCheckUnavailable,
                store,
            ]),
            false,
        ),
        Endpoint::VerifyCode => (
            op("verify_code", "Trade a code for tokens").description(Some(
                "The first successful verification creates the user and its invite code. A \
                 code is single use.",
            )),
            Some((
                "VerifyCodeRequest",
                serde_json::json!({"phone": "+375333478282", "code": "1234"}),
            )),
            Some((
                200,
                "Login",
                serde_json::json!({"refresh": "<jwt>", "access": "<jwt>", "user_id": 1}),
            )),
            with_body_errors(vec![
                Error::InvalidPhone,
                Error::CodeExpired,
                Error::CodeInvalid { attempts_left: 2 },
                Error::TooManyAttempts { retry_after: 280 },
                Error::PhoneLocked { retry_after: 3600 },
                limited,
                store,
            ]),
            false,
        ),
        Endpoint::Profile => (
            op("get_profile", "The caller's profile").description(Some(
                "`activated_invite_code` is null until the user applies one; \
                 `invited_users` lists who applied the user's code, oldest first, at most \
                 `PROFILE_INVITEES_LIMIT` of them (default 100; `GET /api/invitees/` pages \
                 through all); `invited_count` is how many there are in all.",
            )),
            None,
            Some((
                200,
                "Profile",
                serde_json::json!({
                    "phone": "+1234567890",
                    "own_invite_code": "X4F9ZQ",
                    "activated_invite_code": "K5J3RW",
                    "invited_users": ["+1231231234", "+3213213210"],
                    "invited_count": 2,
                }),
            )),
            vec![Error::Unauthorized, store],
            true,
        ),
        Endpoint::UseInviteCode => (
            op("use_invite_code", "Apply someone else's invite code, once").description(Some(
                "Input is trimmed and case-insensitive. A user applies one code, ever. Limited \
                 per user (10 calls an hour by default).",
            )),
            Some((
                "UseInviteCodeRequest",
                serde_json::json!({"invite_code": "ALG242"}),
            )),
            Some((
                200,
                "MessageResponse",
                to_json(&MessageResponse::INVITE_APPLIED),
            )),
            with_body_errors(vec![
                Error::Unauthorized,
                Error::OwnInviteCode,
                Error::InviteCodeNotFound,
                Error::InviteAlreadyActivated,
                Error::InviteCycle,
                limited,
                store,
            ]),
            true,
        ),
        Endpoint::Refresh => (
            op("token_refresh", "Rotate a refresh token").description(Some(
                "The presented refresh token is spent. Presenting the token spent last again \
                 within the reuse grace (default 10 s) answers with a pair holding the \
                 family's live refresh token; presenting a spent one otherwise revokes its \
                 whole family (theft detection) and answers 401.",
            )),
            Some(("RefreshRequest", serde_json::json!({"refresh": "<jwt>"}))),
            Some((
                200,
                "TokenPair",
                serde_json::json!({"access": "<jwt>", "refresh": "<jwt>"}),
            )),
            with_body_errors(vec![Error::InvalidToken, store]),
            false,
        ),
        Endpoint::Logout => (
            op("token_logout", "Log out: revoke the refresh token's family"),
            Some(("RefreshRequest", serde_json::json!({"refresh": "<jwt>"}))),
            None,
            with_body_errors(vec![Error::InvalidToken, store]),
            false,
        ),
        Endpoint::Sessions => (
            op("sessions", "The caller's sessions").description(Some(
                "One session per login (a refresh-token family), live ones only (not revoked, \
                 not expired), newest first. `ip` is the client's network only (an IPv4 /24, \
                 an IPv6 /48); `user_agent` at most 256 characters; `current` marks the \
                 session of the access token that asked.",
            )),
            None,
            Some((
                200,
                "SessionsResponse",
                serde_json::json!({"sessions": [{
                    "id": "9f0c2d0e8b6a4c1e93f1a2b3c4d5e6f7",
                    "created_at": "2026-12-01T09:30:00Z",
                    "last_used_at": "2026-12-03T08:12:45Z",
                    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)",
                    "ip": "203.0.113.0/24",
                    "current": true,
                }]}),
            )),
            vec![Error::Unauthorized, store],
            true,
        ),
        Endpoint::RevokeSession => (
            op("revoke_session", "End one of the caller's sessions").description(Some(
                "Its refresh token gets 401 `invalid_token` from then on. A session that is not \
                 a live one of the caller's (unknown, another user's, already revoked, \
                 expired) is 404 `session_not_found`.",
            ))
            .parameter(
                utoipa::openapi::path::ParameterBuilder::new()
                    .name("id")
                    .parameter_in(utoipa::openapi::path::ParameterIn::Path)
                    .required(utoipa::openapi::Required::True)
                    .description(Some("The session's id, from `GET /api/sessions/`."))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            ),
            None,
            None,
            vec![Error::Unauthorized, Error::SessionNotFound, store],
            true,
        ),
        Endpoint::RevokeSessions => (
            op("revoke_sessions", "End the caller's other sessions, or all").description(Some(
                "`others` ends every session but the caller's own (\"sign out everywhere \
                 else\"); `all` ends the caller's own too. Answers how many were ended.",
            )),
            Some((
                "RevokeSessionsRequest",
                serde_json::json!({"scope": "others"}),
            )),
            Some((200, "RevokedResponse", serde_json::json!({"revoked": 2}))),
            with_body_errors(vec![Error::Unauthorized, store]),
            true,
        ),
        Endpoint::ExportAccount => (
            op("export_account", "Everything stored about the caller").description(Some(
                "The account, its invitees in the order they applied the caller's code, its \
                 live sessions (as `GET /api/sessions/` lists them) and its rewards (none are \
                 kept yet: always empty).",
            )),
            None,
            Some((
                200,
                "AccountExport",
                serde_json::json!({
                    "user_id": 7,
                    "phone": "+375291234567",
                    "created_at": "2026-11-20T10:00:00Z",
                    "own_invite_code": "X4F9ZQ",
                    "activated_invite_code": "K5J3RW",
                    "activated_at": "2026-11-20T10:02:13Z",
                    "invited_users": [{"phone": "+375297654321", "joined_at": "2026-11-28T17:40:02Z"}],
                    "sessions": [{
                        "id": "9f0c2d0e8b6a4c1e93f1a2b3c4d5e6f7",
                        "created_at": "2026-12-01T09:30:00Z",
                        "last_used_at": "2026-12-03T08:12:45Z",
                        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)",
                        "ip": "203.0.113.0/24",
                        "current": true,
                    }],
                    "rewards": [],
                }),
            )),
            vec![Error::Unauthorized, store],
            true,
        ),
        Endpoint::DeleteAccount => (
            op("delete_account", "Delete the caller's account").description(Some(
                "`code` is a live code for the caller's own phone from \
                 `POST /login/send_code/` (a stolen access token alone cannot delete); a wrong \
                 or missing code gets the `verify_code` errors. The phone and every session are \
                 erased and every session revoked; the id and the invite code are never \
                 reused; invitees keep their accounts and the code they applied; the phone may \
                 register again as a new user.",
            )),
            Some(("DeleteAccountRequest", serde_json::json!({"code": "1234"}))),
            None,
            with_body_errors(vec![
                Error::Unauthorized,
                Error::CodeExpired,
                Error::CodeInvalid { attempts_left: 2 },
                Error::TooManyAttempts { retry_after: 280 },
                Error::PhoneLocked { retry_after: 3600 },
                limited,
                store,
            ]),
            true,
        ),
        Endpoint::PhoneSendCode => (
            op("phone_send_code", "Send a code to the number the caller moves to").description(
                Some(
                    "`current_code` is a live code for the account's current phone from \
                     `POST /login/send_code/` (a stolen access token alone cannot move the \
                     account); wrong or missing, the `verify_code` errors. Then a code goes \
                     to the new number, under the same limits, cooldowns, budgets and human \
                     check as `POST /login/send_code/` for that number; it serves this move \
                     only. It does not tell whether another account has the number. 400 \
                     `same_phone` for the caller's own.",
                ),
            ),
            Some((
                "PhoneSendCodeRequest",
                serde_json::json!({"phone": "+375297654321", "current_code": "1234"}),
            )),
            Some((200, "MessageResponse", to_json(&MessageResponse::CODE_SENT))),
            with_body_errors(vec![
                Error::Unauthorized,
                Error::InvalidPhone,
                Error::SamePhone,
                Error::CodeExpired,
                Error::CodeInvalid { attempts_left: 2 },
                Error::TooManyAttempts { retry_after: 280 },
                Error::ResendCooldown { retry_after: 55 },
                Error::TooManyCodes { retry_after: 3000 },
                Error::PhoneLocked { retry_after: 3500 },
                limited,
                Error::SmsFailed,
                Error::SmsBudgetExhausted { retry_after: 1800 },
                Error::HumanCheckRequired {
                    challenge: Box::new(crate::human::Challenge::Turnstile {
                        site_key: "0x4AAAAAAADnPIDROrmt1Wwj".into(),
                    }),
                },
                Error::HumanCheckFailed,
                Error::HumanCheckUnavailable,
                store,
            ]),
            true,
        ),
        Endpoint::PhoneVerify => (
            op("phone_verify", "Move the caller's account to a proven number").description(
                Some(
                    "Once the code proves the number (the `verify_code` errors otherwise), the \
                     account moves to it and the old number is free. 409 `phone_taken` if \
                     another account has it, answered only after the code proved the number; of \
                     two accounts racing for one number, exactly one gets it.",
                ),
            ),
            Some((
                "ChangePhoneRequest",
                serde_json::json!({"phone": "+375297654321", "code": "1234"}),
            )),
            Some((
                200,
                "PhoneResponse",
                serde_json::json!({"phone": "+375297654321"}),
            )),
            with_body_errors(vec![
                Error::Unauthorized,
                Error::InvalidPhone,
                Error::SamePhone,
                Error::CodeExpired,
                Error::CodeInvalid { attempts_left: 2 },
                Error::TooManyAttempts { retry_after: 280 },
                Error::PhoneLocked { retry_after: 3600 },
                Error::PhoneTaken,
                limited,
                store,
            ]),
            true,
        ),
        Endpoint::Invitees => {
            let query = |name: &str, what: &str, schema: ObjectBuilder| {
                utoipa::openapi::path::ParameterBuilder::new()
                    .name(name)
                    .parameter_in(utoipa::openapi::path::ParameterIn::Query)
                    .required(utoipa::openapi::Required::False)
                    .description(Some(what))
                    .schema(Some(schema))
            };
            (
                op("invitees", "A page of the caller's invitees").description(Some(
                    "Oldest first (the order they applied the caller's code). Pass a page's \
                     `next_cursor` as `cursor` for the next page; it is `null` after the last. \
                     Invitees who apply the code while a client pages come after the pages it \
                     read, so paging never repeats nor skips one. `total` is the profile's \
                     `invited_count`. Phones are masked as in the profile with \
                     `INVITEE_PHONES=masked`.",
                ))
                .parameter(query(
                    "limit",
                    "How many invitees a page holds at most: 1 to 200 (default 50).",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(crate::account::INVITEES_PAGE_MAX as u32))
                        .default(Some(serde_json::json!(crate::account::INVITEES_PAGE_DEFAULT))),
                ))
                .parameter(query(
                    "cursor",
                    "Where the page starts: the `next_cursor` of the page before (opaque).",
                    ObjectBuilder::new().schema_type(Type::String),
                )),
                None,
                Some((
                    200,
                    "InviteesResponse",
                    serde_json::json!({
                        "invitees": [
                            {"phone": "+375297654321", "joined_at": "2026-11-28T17:40:02Z"},
                            {"phone": "+375297654322", "joined_at": "2026-11-29T08:01:45Z"},
                        ],
                        "next_cursor": "aW52MQAAAAAAAAAq",
                        "total": 57,
                    }),
                )),
                vec![
                    Error::InvalidRequest(
                        "Parameter `limit` must be a whole number of 1 to 200.".into(),
                    ),
                    Error::Unauthorized,
                    store,
                ],
                true,
            )
        }
        Endpoint::Health => (
            op("health", "Liveness"),
            None,
            Some((200, "HealthResponse", serde_json::json!({"status": "ok"}))),
            Vec::new(),
            false,
        ),
        Endpoint::Ready => (
            op("ready", "Readiness: every store answers"),
            None,
            Some((200, "HealthResponse", serde_json::json!({"status": "ok"}))),
            vec![Error::NotReady {
                store: "user",
                error: sample_store_error(),
            }],
            false,
        ),
        Endpoint::Schema => (
            op("schema", "This OpenAPI document"),
            None,
            None,
            Vec::new(),
            false,
        ),
    };
    let mut builder = builder;
    if let Some((schema, example)) = body {
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(utoipa::openapi::Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .example(Some(example))
                        .build(),
                )
                .build(),
        ));
    }
    builder = match (endpoint, ok) {
        (_, Some((status, schema, example))) => builder.response(
            status.to_string(),
            ResponseBuilder::new().description("Success.").content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .example(Some(example))
                    .build(),
            ),
        ),
        (Endpoint::Logout, None) => {
            builder.response("204", ResponseBuilder::new().description("Logged out."))
        }
        (Endpoint::RevokeSession, None) => {
            builder.response("204", ResponseBuilder::new().description("Revoked."))
        }
        (_, None) => builder.response(
            "200",
            ResponseBuilder::new()
                .description("The OpenAPI 3.1 document.")
                .content("application/json", ContentBuilder::new().build()),
        ),
    };
    if auth {
        builder = builder.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    for (status, response) in error_responses(&errors) {
        builder = builder.response(status.to_string(), response);
    }
    builder.build()
}

/// One response per status, with one example per error (named by its code), taken from
/// [`Error::body`].
fn error_responses(errors: &[Error]) -> BTreeMap<u16, ResponseBuilder> {
    let mut by_status: BTreeMap<u16, Vec<&Error>> = BTreeMap::new();
    for error in errors {
        by_status.entry(error.status()).or_default().push(error);
    }
    by_status
        .into_iter()
        .map(|(status, errors)| {
            let codes: Vec<&str> = errors.iter().map(|e| e.code()).collect();
            let examples = errors.iter().map(|e| {
                (
                    e.code(),
                    ExampleBuilder::new()
                        .summary(e.to_string())
                        .value(Some(to_json(&e.body())))
                        .build(),
                )
            });
            let mut response = ResponseBuilder::new()
                .description(format!("Error: `{}`.", codes.join("`, `")))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .examples_from_iter(examples)
                        .build(),
                );
            if status == 401 {
                response = response.header("WWW-Authenticate", string_header("Always `Bearer`."));
            }
            if errors.iter().any(|e| e.retry_after().is_some()) {
                response = response.header(
                    "Retry-After",
                    Header::new(ObjectBuilder::new().schema_type(Type::Integer)),
                );
            }
            (status, response)
        })
        .collect()
}

fn string_header(description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
    header.description = Some(description.to_owned());
    header
}

fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_every_api_route() {
        let doc: serde_json::Value = serde_json::from_slice(json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/login/send_code/",
            "/login/verify_code/",
            "/get_profile/",
            "/use_invite_code/",
            "/api/token/refresh/",
            "/api/token/logout/",
            "/health",
            "/ready",
            "/api/schema/",
            "/api/sessions/",
            "/api/sessions/{id}/",
            "/api/sessions/revoke/",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let verify = &doc["paths"]["/login/verify_code/"]["post"];
        let invalid = &verify["responses"]["400"]["content"]["application/json"]["examples"];
        assert_eq!(invalid["code_invalid"]["value"]["attempts_left"], 2);
        let schemas = &doc["components"]["schemas"];
        for schema in [
            "SendCodeRequest",
            "Login",
            "Profile",
            "TokenPair",
            "ErrorBody",
        ] {
            assert!(schemas[schema].is_object(), "{schema}");
        }
    }
}
