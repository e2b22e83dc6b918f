//! An [`SmsSender`] for tests: records what it sends, and can be told to fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::{Phone, Sms, SmsError, SmsSender};

/// Records every message instead of sending it; [`fail`](Self::fail) makes it refuse.
#[derive(Debug, Default)]
pub struct RecordingSender {
    sent: Mutex<Vec<Sms>>,
    failing: AtomicBool,
}

impl RecordingSender {
    /// A sender that succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later send fail (`true`) or succeed (`false`).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every message sent so far, oldest first.
    pub fn sent(&self) -> Vec<Sms> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The code in the last message to `phone`.
    pub fn last_code(&self, phone: &Phone) -> Option<String> {
        self.sent()
            .iter()
            .rev()
            .find(|sms| &sms.phone == phone)
            .map(|sms| sms.code.expose().to_owned())
    }
}

#[async_trait]
impl SmsSender for RecordingSender {
    async fn send(&self, sms: &Sms) -> Result<(), SmsError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SmsError("recording sender told to fail".into()));
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sms.clone());
        Ok(())
    }
}
