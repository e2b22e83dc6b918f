//! Events out as Standard Webhooks (standardwebhooks.com): an [`EventHandler`]
//! that POSTs each event's JSON envelope to `EVENTS_WEBHOOK_URL`, signed with
//! `EVENTS_WEBHOOK_SECRET`.
//!
//! Each request carries `webhook-id` (the event id, the same on every redelivery),
//! `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, signed by the
//! `standardwebhooks` crate (the specification authors' own). Any 2xx answer is delivered;
//! anything else, a timeout or a connection error is retried by the dispatcher with backoff.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use refsys_core::{Event, EventHandler, HandlerError};
use standardwebhooks::Webhook;

use crate::config::EventsConfig;

/// Delivers events to one webhook receiver.
pub(crate) struct EventWebhook {
    client: reqwest::Client,
    url: String,
    signer: Webhook,
}

impl EventWebhook {
    /// A handler posting to the configured URL, signing with its secret, giving up on one
    /// attempt after the configured timeout.
    pub(crate) fn new(config: &EventsConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A receiver that redirects is misconfigured: an event is not delivered to a
            // URL the operator did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let signer =
            Webhook::new(&config.secret).map_err(|e| format!("EVENTS_WEBHOOK_SECRET: {e}"))?;
        Ok(Self {
            client,
            url: config.url.clone(),
            signer,
        })
    }

    /// The `webhook-signature` value for `body` of event `id` sent at `timestamp`.
    pub(crate) fn signature(
        &self,
        id: &str,
        timestamp: i64,
        body: &str,
    ) -> Result<String, HandlerError> {
        self.signer
            .sign(id, timestamp, body.as_bytes())
            .map_err(|e| HandlerError::new(format!("signing the event: {e}")))
    }
}

#[async_trait]
impl EventHandler for EventWebhook {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let body = event.to_json();
        let id = event.id.to_string();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let signature = self.signature(&id, timestamp, &body)?;
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            // Without the URL: it may carry a credential, and the error is logged and kept
            // with the event (the operator knows which receiver this is).
            .map_err(|e| {
                HandlerError::new(format!(
                    "webhook request failed: {}",
                    cause(&e.without_url())
                ))
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(HandlerError::new(format!(
                "webhook answered {}",
                response.status()
            )))
        }
    }
}

/// `error` and its causes, `: `-separated (reqwest's own message alone says only "error
/// sending request", not whether the connection was refused or timed out).
fn cause(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn handler(secret: &str) -> EventWebhook {
        EventWebhook::new(&EventsConfig {
            url: "http://127.0.0.1:9/".into(),
            secret: secret.into(),
            timeout: Duration::from_secs(1),
            max_age: Duration::from_secs(60),
            retention: Duration::from_secs(60),
        })
        .unwrap()
    }

    /// The signing test vector of the Standard Webhooks specification.
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let webhook = handler("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        assert_eq!(
            webhook
                .signature(
                    "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                    1_649_367_553,
                    r#"{"email":"test@example.com","username":"test_user"}"#,
                )
                .unwrap(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }
}
