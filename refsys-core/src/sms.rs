//! Delivering codes: the [`SmsSender`] trait and the development [`LogSender`].

use std::fmt;

use async_trait::async_trait;

use crate::{OtpCode, Phone};

/// One text message carrying a code. `Debug` hides the code and the text.
#[derive(Clone)]
pub struct Sms {
    /// The recipient.
    pub phone: Phone,
    /// The code the message carries.
    pub code: OtpCode,
    /// The full text to deliver, e.g. `Your refsys code: 1234`.
    pub text: String,
}

impl fmt::Debug for Sms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sms")
            .field("phone", &self.phone)
            .finish_non_exhaustive()
    }
}

/// Delivers a code to a phone: an SMS gateway, a webhook, a queue.
#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    /// Sends `sms`. An error becomes `502 sms_failed`, and the send does not count against the
    /// phone's cooldown or window.
    async fn send(&self, sms: &Sms) -> Result<(), SmsError>;
}

/// Lets a caller keep a handle on the sender it gives the service, or pick one at run time
/// (`Arc<dyn SmsSender>`).
#[async_trait]
impl<S: SmsSender + ?Sized> SmsSender for std::sync::Arc<S> {
    async fn send(&self, sms: &Sms) -> Result<(), SmsError> {
        (**self).send(sms).await
    }
}

/// Lets a sender be picked at run time (`Box<dyn SmsSender>`).
#[async_trait]
impl<S: SmsSender + ?Sized> SmsSender for Box<S> {
    async fn send(&self, sms: &Sms) -> Result<(), SmsError> {
        (**self).send(sms).await
    }
}

/// The sender could not deliver. The message is for logs: it must not contain the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SMS delivery failed: {0}")]
pub struct SmsError(pub String);

/// **Development only**: writes the phone and the code to the `tracing` log at INFO instead of
/// sending anything. Anyone who can read the logs can log in as anyone.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSender;

#[async_trait]
impl SmsSender for LogSender {
    async fn send(&self, sms: &Sms) -> Result<(), SmsError> {
        tracing::info!(
            phone = %sms.phone,
            code = sms.code.expose(),
            "LogSender (development only): verification code"
        );
        Ok(())
    }
}
