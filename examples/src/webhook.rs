//! An [`SmsSender`] that POSTs `{"phone", "message"}` to an SMS gateway of the operator's choice.
//!
//! Each request carries `X-Refsys-Timestamp` (Unix seconds) and
//! `X-Refsys-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so the gateway can
//! check that the request came from this server and is fresh. Any non-2xx answer, a timeout or
//! a connection error is a failed send (`502 sms_failed`; the user's cooldown is not used).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use refsys_core::{Sms, SmsError, SmsSender};
use sha2::Sha256;

/// Sends codes through an HTTP webhook.
#[derive(Clone)]
pub(crate) struct WebhookSender {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender posting to `url`, signing with `secret`, giving up after `timeout`.
    pub(crate) fn new(
        url: String,
        secret: &str,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            client,
            url,
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// The signature header value for `body` sent at `timestamp`.
    pub(crate) fn signature(&self, timestamp: u64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }
}

#[async_trait]
impl SmsSender for WebhookSender {
    async fn send(&self, sms: &Sms) -> Result<(), SmsError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "phone": sms.phone.as_str(),
            "message": sms.text,
        }))
        .map_err(|e| SmsError(format!("encoding the webhook body: {e}")))?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Refsys-Timestamp", timestamp.to_string())
            .header("X-Refsys-Signature", self.signature(timestamp, &body))
            .body(body)
            .send()
            .await
            // reqwest's error names the URL, never the body, so the code stays out of logs.
            .map_err(|e| SmsError(format!("webhook request failed: {e}")))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SmsError(format!("webhook answered {}", response.status())))
        }
    }
}
