//! [`SiteVerify`]: Cloudflare Turnstile and hCaptcha as a [`HumanCheck`].
//!
//! Both providers document the same server-side check: `POST` a form with `secret`,
//! `response` (the widget's token) and optionally `remoteip` to their `siteverify` URL, and read
//! `{"success": true | false, "error-codes": [...]}` back. Each token is accepted once by the
//! provider, so the service keeps no record of its own.
//!
//! - Turnstile: <https://developers.cloudflare.com/turnstile/get-started/server-side-validation/>
//! - hCaptcha: <https://docs.hcaptcha.com/#verify-the-user-response-server-side>
//!
//! These are tested against local HTTP servers that check each request as the providers
//! document it; the real providers cannot be reached from the project's CI.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::human::{Challenge, HumanCheck, HumanCheckAnswer, HumanCheckError, Passed};
use crate::{Phone, Timestamp};

/// Cloudflare Turnstile's verification endpoint.
pub const TURNSTILE_VERIFY_URL: &str = "https://challenges.cloudflare.com/turnstile/v0/siteverify";
/// hCaptcha's verification endpoint.
pub const HCAPTCHA_VERIFY_URL: &str = "https://api.hcaptcha.com/siteverify";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Turnstile,
    Hcaptcha,
}

/// A captcha checked with its provider's `siteverify` endpoint (5 s timeout).
#[derive(Clone)]
pub struct SiteVerify {
    provider: Provider,
    site_key: String,
    secret: String,
    url: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for SiteVerify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteVerify")
            .field("provider", &self.provider)
            .field("site_key", &self.site_key)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SiteVerify {
    /// Cloudflare Turnstile with this site key (shown to clients) and secret key.
    pub fn turnstile(site_key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::new(
            Provider::Turnstile,
            site_key.into(),
            secret.into(),
            TURNSTILE_VERIFY_URL,
        )
    }

    /// hCaptcha with this site key (shown to clients) and secret key.
    pub fn hcaptcha(site_key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::new(
            Provider::Hcaptcha,
            site_key.into(),
            secret.into(),
            HCAPTCHA_VERIFY_URL,
        )
    }

    fn new(provider: Provider, site_key: String, secret: String, url: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a reqwest client with a timeout and rustls");
        SiteVerify {
            provider,
            site_key,
            secret,
            url: url.to_owned(),
            client,
        }
    }

    /// Sends the checks to `url` instead of the provider's (a proxy, or a test server).
    #[must_use]
    pub fn verify_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }
}

#[derive(serde::Deserialize)]
struct Verdict {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

#[async_trait]
impl HumanCheck for SiteVerify {
    fn challenge(&self, _phone: &Phone, _now: Timestamp) -> Challenge {
        let site_key = self.site_key.clone();
        match self.provider {
            Provider::Turnstile => Challenge::Turnstile { site_key },
            Provider::Hcaptcha => Challenge::Hcaptcha { site_key },
        }
    }

    async fn verify(
        &self,
        answer: &HumanCheckAnswer,
        _phone: &Phone,
        client: Option<IpAddr>,
        _now: Timestamp,
    ) -> Result<Passed, HumanCheckError> {
        let token = match (self.provider, answer) {
            (Provider::Turnstile, HumanCheckAnswer::Turnstile { token })
            | (Provider::Hcaptcha, HumanCheckAnswer::Hcaptcha { token }) => token,
            _ => {
                return Err(HumanCheckError::Failed(
                    "an answer of another kind of human check".into(),
                ));
            }
        };
        // Turnstile tokens are at most 2048 characters; neither provider accepts an empty one.
        if token.is_empty() || token.len() > 4096 {
            return Err(HumanCheckError::Failed("not a widget token".into()));
        }
        let mut form = vec![("secret", self.secret.clone()), ("response", token.clone())];
        if let Some(ip) = client {
            form.push(("remoteip", ip.to_string()));
        }
        if self.provider == Provider::Hcaptcha {
            form.push(("sitekey", self.site_key.clone()));
        }
        let response = self
            .client
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| HumanCheckError::Unavailable(format!("siteverify: {e}")))?;
        if !response.status().is_success() {
            return Err(HumanCheckError::Unavailable(format!(
                "siteverify answered {}",
                response.status()
            )));
        }
        let verdict: Verdict = response
            .json()
            .await
            .map_err(|e| HumanCheckError::Unavailable(format!("siteverify answer: {e}")))?;
        if verdict.success {
            return Ok(Passed { single_use: None });
        }
        // The provider refusing its own secret is ours to fix, not the client's.
        if verdict
            .error_codes
            .iter()
            .any(|c| c.contains("secret") || c == "internal-error")
        {
            return Err(HumanCheckError::Unavailable(format!(
                "siteverify refused our configuration: {:?}",
                verdict.error_codes
            )));
        }
        Err(HumanCheckError::Failed(format!(
            "siteverify: {:?}",
            verdict.error_codes
        )))
    }
}
