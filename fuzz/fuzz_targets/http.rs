//! Whole HTTP requests through `refsys_core::http::handle`, on the memory stores.
//!
//! The input is one or more requests in a readable text form, split by a line `###`:
//!
//! ```text
//! POST /login/send_code/
//! content-type: application/json
//! x-forwarded-for: 5.6.7.8
//!
//! {"phone": "+375291000001"}
//! ```
//!
//! The first line is the method and path; then `name: value` headers up to an empty line
//! (`content-type`, `authorization`, `x-forwarded-for` are read, `x-peer` sets the TCP peer,
//! 10.0.0.1 — a trusted proxy — by default); the rest is the body, bytes as they are.
//! `$ACCESS`, `$REFRESH` (tokens of the last login, first a login of a second test phone) and
//! `$INVITE` (that phone's invite code) are replaced before the request is sent. Routing is
//! done by `http::resolve`, as in the framework crates: 404 for an unknown path, 405 for a
//! known path with another method, 413 for a body over `MAX_BODY_BYTES`.
//!
//! For every reply: no panic, never 500 (no 5xx at all but `503 sms_budget_exhausted`), every
//! error is JSON of the contract's `ErrorBody` shape (`{"error": "...", "code": "...", ...}`)
//! with a status matching its code, `WWW-Authenticate: Bearer` on 401, `Retry-After` equal to
//! `retry_after` on 429, and no error message echoes a token or a value from the body.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use refsys_core::http::{self, MAX_BODY_BYTES, Reply, RequestInfo};
use refsys_core::{Error, ReferralService};
use refsys_fuzz::{TEST_CODE_2, TEST_PHONE_2, block_on, login, service};
use serde_json::Value;

/// More requests than this in one input are ignored: the state they build is what matters.
const MAX_REQUESTS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let service = service();
    let first = login(&service, TEST_PHONE_2, TEST_CODE_2);
    let mut state = State {
        access: first.access,
        refresh: first.refresh,
        invite: String::new(),
    };
    if let Ok(user) = service.authenticate(&state.access)
        && let Ok(profile) = block_on(service.profile(user))
    {
        state.invite = profile.own_invite_code.to_string();
    }
    for raw in split(data).take(MAX_REQUESTS) {
        let raw = state.substitute(raw);
        let request = parse(&raw);
        let reply = route(&service, &request);
        check(&request, &reply, &state);
        state.learn(&reply);
    }
});

struct State {
    access: String,
    refresh: String,
    invite: String,
}

impl State {
    fn substitute(&self, raw: &[u8]) -> Vec<u8> {
        let mut out = raw.to_vec();
        for (name, value) in [
            (&b"$ACCESS"[..], &self.access),
            (b"$REFRESH", &self.refresh),
            (b"$INVITE", &self.invite),
        ] {
            out = replace(&out, name, value.as_bytes());
        }
        out
    }

    /// Keeps the tokens of a successful login or refresh for the next requests.
    fn learn(&mut self, reply: &Reply) {
        if reply.status != 200 {
            return;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
            return;
        };
        if let (Some(access), Some(refresh)) = (body["access"].as_str(), body["refresh"].as_str()) {
            self.access = access.to_owned();
            self.refresh = refresh.to_owned();
        }
    }

    fn secrets(&self) -> [&str; 2] {
        [&self.access, &self.refresh]
    }
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        let separator = b"\n###\n";
        match current
            .windows(separator.len())
            .position(|w| w == separator)
        {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

struct Request {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Option<String>)>,
    peer: IpAddr,
    body: Vec<u8>,
}

impl Request {
    /// The first value of header `name`, if it is text (frameworks drop values that are not).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }
}

fn parse(raw: &[u8]) -> Request {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&raw[..at], raw[at + 2..].to_vec()),
        None => (raw, Vec::new()),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let (method, path) = first.split_once(' ').unwrap_or((&first, "/"));
    let headers: Vec<(String, Option<String>)> = lines
        .filter_map(|line| {
            let at = line.iter().position(|b| *b == b':')?;
            let name = String::from_utf8_lossy(&line[..at]).trim().to_owned();
            let value = std::str::from_utf8(&line[at + 1..])
                .ok()
                .map(|v| v.trim().to_owned());
            Some((name, value))
        })
        .collect();
    let mut request = Request {
        method: method.to_owned(),
        // Frameworks route on the path without the query.
        path: path.split('?').next().unwrap_or_default().to_owned(),
        query: path.split_once('?').map(|(_, query)| query.to_owned()),
        headers,
        peer: IpAddr::from([10, 0, 0, 1]),
        body,
    };
    if let Some(peer) = request.header("x-peer").and_then(|p| p.parse().ok()) {
        request.peer = peer;
    }
    request
}

/// What the framework crates do before `handle`: resolve the route (404 / 405), refuse a
/// body over the limit (413).
fn route(service: &ReferralService, request: &Request) -> Reply {
    let endpoint = match http::resolve(&request.method, &request.path) {
        Ok(endpoint) => endpoint,
        Err(reply) => return reply,
    };
    if request.body.len() > MAX_BODY_BYTES {
        return Reply::error(&Error::PayloadTooLarge);
    }
    let info = RequestInfo {
        peer: Some(request.peer),
        forwarded_for: request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .filter_map(|(_, v)| v.as_deref())
            .collect(),
        content_type: request.header("content-type"),
        authorization: request.header("authorization"),
        user_agent: request.header("user-agent"),
        id: http::routes()
            .iter()
            .flat_map(|route| route.paths)
            .find_map(|pattern| http::path_id(pattern, &request.path)),
        query: request.query.as_deref(),
    };
    block_on(http::handle(service, endpoint, &info, &request.body))
}

fn check(request: &Request, reply: &Reply, state: &State) {
    let what = || {
        format!(
            "{} {} -> {} {}",
            request.method,
            request.path,
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    };
    assert_ne!(reply.status, 500, "{}", what());
    if reply.status == 204 {
        assert!(reply.body.is_empty(), "{}", what());
        return;
    }
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        what()
    );
    let body: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", what()));
    if reply.status < 400 {
        assert!(body.is_object(), "{}", what());
        return;
    }

    // The `ErrorBody` shape.
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body not an object: {}", what()));
    for key in object.keys() {
        assert!(
            ["error", "code", "attempts_left", "retry_after", "store"].contains(&key.as_str()),
            "unknown key {key:?}: {}",
            what()
        );
    }
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", what()));
    let code = body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {}", what()));
    assert!(!message.is_empty(), "{}", what());
    assert_eq!(
        status_of(code),
        Some(reply.status),
        "code and status disagree: {}",
        what()
    );
    assert!(
        reply.status < 500 || code == "sms_budget_exhausted",
        "server error: {}",
        what()
    );
    assert_eq!(
        body.get("attempts_left").is_some(),
        code == "code_invalid",
        "{}",
        what()
    );
    if reply.status == 401 {
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer"),
            "{}",
            what()
        );
    }
    match body.get("retry_after") {
        Some(seconds) => {
            let seconds = seconds.as_u64().unwrap_or_else(|| panic!("{}", what()));
            assert!(seconds >= 1, "{}", what());
            assert_eq!(
                reply.header("retry-after"),
                Some(seconds.to_string().as_str()),
                "{}",
                what()
            );
        }
        None => assert!(
            reply.status != 429 && reply.header("retry-after").is_none(),
            "{}",
            what()
        ),
    }

    // Nothing secret comes back in a message: not a token, not a value from the body.
    for secret in state.secrets() {
        assert!(!message.contains(secret), "token echoed: {}", what());
    }
    if let Ok(sent) = serde_json::from_slice::<Value>(&request.body) {
        let mut values = Vec::new();
        scalars(&sent, &mut values);
        for value in values {
            if value.chars().count() >= 4 && value.chars().any(|c| c.is_ascii_digit()) {
                assert!(
                    !message.contains(&value),
                    "body value {value:?} echoed: {}",
                    what()
                );
            }
        }
    }
}

/// Every string and number in a JSON value.
fn scalars(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| scalars(v, out)),
        Value::Object(map) => map.values().for_each(|v| scalars(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// The status of each error code, from the contract table (`Error::http`).
fn status_of(code: &str) -> Option<u16> {
    Some(match code {
        "invalid_request" | "invalid_phone" | "code_expired" | "code_invalid"
        | "own_invite_code" | "human_check_failed" => 400,
        "unauthorized" | "invalid_token" => 401,
        "not_found" | "invite_code_not_found" => 404,
        "method_not_allowed" => 405,
        "invite_already_activated" | "invite_cycle" => 409,
        "payload_too_large" => 413,
        "unsupported_media_type" => 415,
        "resend_cooldown" | "too_many_codes" | "phone_locked" | "too_many_attempts"
        | "rate_limited" => 429,
        "human_check_required" => 428,
        "sms_failed" | "human_check_unavailable" => 502,
        "sms_budget_exhausted" | "store_unavailable" | "not_ready" => 503,
        "internal_error" => 500,
        _ => return None,
    })
}
