//! [`Reply`]: a response ready for a framework to write, and the contract's error response.

use std::borrow::Cow;

use serde::Serialize;

use crate::error::Error;

/// A response, ready for a framework to write: status, headers, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers (lower-case names), `Content-Type` included when there is a body.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The body.
    pub body: Cow<'static, [u8]>,
}

/// Headers every reply carries: no content sniffing, and no `Referer` sent from a page of
/// ours (`docs/API.md`, edge rules).
pub const SECURITY_HEADERS: [(&str, &str); 2] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

fn headers_with(content_type: Option<&'static str>) -> Vec<(&'static str, Cow<'static, str>)> {
    let mut headers = Vec::with_capacity(4);
    if let Some(content_type) = content_type {
        headers.push(("content-type", Cow::Borrowed(content_type)));
    }
    for (name, value) in SECURITY_HEADERS {
        headers.push((name, Cow::Borrowed(value)));
    }
    headers
}

impl Reply {
    /// `status` with `value` as its JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                headers: headers_with(Some("application/json")),
                body: body.into(),
            },
            Err(e) => Reply::error(&Error::Internal(format!("serializing a reply: {e}"))),
        }
    }

    /// `status` with a body of `content_type` that lives as long as the program.
    pub fn bytes(status: u16, content_type: &'static str, body: &'static [u8]) -> Reply {
        Reply {
            status,
            headers: headers_with(Some(content_type)),
            body: Cow::Borrowed(body),
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            headers: headers_with(None),
            body: Cow::Borrowed(&[]),
        }
    }

    /// The contract's response for `error`: its status, the [`ErrorBody`](crate::ErrorBody)
    /// as JSON, `WWW-Authenticate: Bearer` on 401 and `Retry-After` on 429. Internal errors
    /// are logged here at ERROR, with their cause; store outages are logged by the service
    /// once per outage, and the other 5xx (SMS gateway, budget) where they arise, so that no
    /// request writes an ERROR line of its own.
    pub fn error(error: &Error) -> Reply {
        let (status, code) = error.http();
        if let Error::Internal(_) = error {
            tracing::error!(code, error = ?error, "request failed");
        } else if status >= 500 {
            tracing::debug!(code, error = %error, "request refused by the server side");
        }
        let mut reply = Reply::json(status, &error.body());
        if error.is_unauthorized() {
            reply.headers.push(("www-authenticate", "Bearer".into()));
        }
        if let Some(seconds) = error.retry_after() {
            reply
                .headers
                .push(("retry-after", seconds.to_string().into()));
        }
        reply
    }

    /// The value of header `name` (lower case), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl From<Error> for Reply {
    fn from(error: Error) -> Reply {
        Reply::error(&error)
    }
}
