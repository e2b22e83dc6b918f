//! Shared pieces of the refsys benchmarks: the criterion benches (`benches/core.rs`) and the
//! HTTP load runner (`src/bin/load/`). See `README.md`.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use refsys_core::{Policy, Sms, SmsError, SmsSender};

/// The fixed code of every test phone made by [`test_phone`].
pub const TEST_CODE: &str = "0000";

/// An [`SmsSender`] that delivers nothing, instantly.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSender;

#[async_trait]
impl SmsSender for NoopSender {
    async fn send(&self, sms: &Sms) -> Result<(), SmsError> {
        std::hint::black_box(sms);
        Ok(())
    }
}

/// The `i`-th test phone (Belarus mobile, `+37529…`), E.164; valid for `i < 8 000 000`.
pub fn test_phone(i: usize) -> String {
    format!("+37529{:07}", 1_000_000 + i)
}

/// A policy for load: no resend cooldown, an unbounded number of codes per (1 s) window, no
/// deployment-wide SMS budget (a bench sends far more than its 1 000 an hour), and
/// `test_phones` test phones ([`test_phone`]`(0..test_phones)`) with the code [`TEST_CODE`].
///
/// # Panics
///
/// If a generated test phone does not parse (it does for `test_phones < 8 000 000`).
pub fn bench_policy(test_phones: usize) -> Policy {
    (0..test_phones)
        .fold(
            Policy::builder()
                .resend_cooldown(Duration::ZERO)
                .max_sends(u32::MAX, Duration::from_secs(1))
                .sms_budget(None),
            |builder, i| builder.test_phone(test_phone(i), TEST_CODE),
        )
        .build()
        .expect("bench policy")
}
