//! Human checks before a code is sent: the SMS-pumping defence that switches on under
//! pressure.
//!
//! When the deployment's SMS budget (or a destination prefix's share of it) fills past the
//! [`Policy::human_check_at`](crate::Policy::human_check_at) mark, `send_code` answers
//! `428 human_check_required` with a [`Challenge`] instead of sending, and sends only when the
//! request carries a [`HumanCheckAnswer`] that the service's [`HumanCheck`] accepts. Below the
//! mark nobody is asked anything.
//!
//! Built in: [`ProofOfWork`], self-hosted and offline (the client finds a number whose hash
//! with the challenge starts with enough zero bits; the web UI does it in about a second).
//! With the `captcha` feature, [`SiteVerify`](crate::captcha::SiteVerify) checks Cloudflare
//! Turnstile and hCaptcha tokens with their providers.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{JwtKeys, Phone, Timestamp};

/// What a client must solve before a code is sent: the `challenge` of a
/// `428 human_check_required` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum Challenge {
    /// Find a decimal `solution` such that `SHA-256(challenge + ":" + solution)` begins with
    /// `difficulty` zero bits, and send both back within `expires_in` seconds.
    Pow {
        /// Always `"sha256"`.
        algorithm: &'static str,
        /// The string to hash (opaque; send it back unchanged).
        challenge: String,
        /// Leading zero bits the hash must have.
        difficulty: u8,
        /// Seconds the challenge stays valid.
        expires_in: u64,
    },
    /// Render the Cloudflare Turnstile widget with this site key and send its token back.
    Turnstile {
        /// The site key.
        site_key: String,
    },
    /// Render the hCaptcha widget with this site key and send its token back.
    Hcaptcha {
        /// The site key.
        site_key: String,
    },
}

/// A client's answer to a [`Challenge`]: the `human_check` field of a `send_code` body.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum HumanCheckAnswer {
    /// A solved [`Challenge::Pow`].
    Pow {
        /// The challenge string, as received.
        challenge: String,
        /// The decimal number found.
        solution: String,
    },
    /// A Turnstile widget's token.
    Turnstile {
        /// The token (`cf-turnstile-response`).
        token: String,
    },
    /// An hCaptcha widget's token.
    Hcaptcha {
        /// The token (`h-captcha-response`).
        token: String,
    },
}

impl std::fmt::Debug for HumanCheckAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            HumanCheckAnswer::Pow { .. } => "pow",
            HumanCheckAnswer::Turnstile { .. } => "turnstile",
            HumanCheckAnswer::Hcaptcha { .. } => "hcaptcha",
        };
        f.debug_struct("HumanCheckAnswer")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// An answer the check accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// A key under which the answer is spent, and until when it would otherwise stay valid:
    /// the service records it in its [`RateLimitStore`](crate::RateLimitStore) and refuses the
    /// same answer again (so one solved challenge sends one code, on every instance sharing
    /// the store). `None` when the provider itself refuses a token twice (Turnstile,
    /// hCaptcha).
    pub single_use: Option<(String, Timestamp)>,
}

/// Why an answer was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HumanCheckError {
    /// Wrong, stale, forged, meant for another phone or another kind of check: `400
    /// human_check_failed`. The reason is for logs, not for the client.
    #[error("human check failed: {0}")]
    Failed(String),
    /// The verifier could not be asked (a captcha provider down or slow): `502
    /// human_check_unavailable`.
    #[error("human check unavailable: {0}")]
    Unavailable(String),
}

/// Decides whether a client is a person, for `send_code` under pressure.
///
/// Implement it for another captcha provider; the service calls [`challenge`](Self::challenge)
/// to build a `428` answer and [`verify`](Self::verify) for a request that carries an answer.
#[async_trait]
pub trait HumanCheck: Send + Sync + 'static {
    /// The challenge for a `send_code` to `phone` at `now`.
    fn challenge(&self, phone: &Phone, now: Timestamp) -> Challenge;

    /// Checks `answer` for a `send_code` to `phone` by `client` (when known) at `now`.
    async fn verify(
        &self,
        answer: &HumanCheckAnswer,
        phone: &Phone,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Passed, HumanCheckError>;
}

/// A check picked at run time: `Box<dyn HumanCheck>`, `Arc<dyn HumanCheck>`.
macro_rules! human_check_behind {
    ($($pointer:ty),+) => {$(
        #[async_trait]
        impl<C: HumanCheck + ?Sized> HumanCheck for $pointer {
            fn challenge(&self, phone: &Phone, now: Timestamp) -> Challenge {
                (**self).challenge(phone, now)
            }
            async fn verify(
                &self,
                answer: &HumanCheckAnswer,
                phone: &Phone,
                client: Option<IpAddr>,
                now: Timestamp,
            ) -> Result<Passed, HumanCheckError> {
                (**self).verify(answer, phone, client, now).await
            }
        }
    )+};
}

human_check_behind!(Box<C>, std::sync::Arc<C>);

type HmacSha256 = Hmac<Sha256>;

/// A self-hosted proof of work: no third party, works offline.
///
/// Each challenge is bound to the phone it was issued for, signed with a key derived from the
/// service's JWT key (so every instance sharing that key accepts it), valid for a short time
/// (default 2 minutes) and spent on first use. A difficulty of `d` bits costs a client about
/// `2^d` SHA-256 hashes: 16 (the default) took headless Chromium 0.4-0.7 s in the browser
/// test and takes a native program milliseconds, so it throttles scripted floods rather than stopping a
/// determined attacker; the budget caps still hold whatever a client solves. Use a captcha
/// ([`SiteVerify`](crate::captcha::SiteVerify)) where that matters more than self-hosting.
#[derive(Clone)]
pub struct ProofOfWork {
    key: [u8; 32],
    difficulty: u8,
    ttl: Duration,
}

impl std::fmt::Debug for ProofOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofOfWork")
            .field("difficulty", &self.difficulty)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The highest difficulty [`ProofOfWork::difficulty`] accepts (about 16 million hashes).
pub const MAX_POW_DIFFICULTY: u8 = 24;

impl ProofOfWork {
    /// A proof of work whose challenges are signed with a key derived from `keys`, with a
    /// difficulty of 16 bits and a lifetime of 2 minutes.
    pub fn new(keys: &JwtKeys) -> Self {
        let key = Sha256::new()
            .chain_update(b"refsys-human-check-v1\0")
            .chain_update(keys.otp_pepper())
            .finalize()
            .into();
        ProofOfWork {
            key,
            difficulty: 16,
            ttl: Duration::from_secs(120),
        }
    }

    /// Sets the difficulty in leading zero bits (capped at [`MAX_POW_DIFFICULTY`]).
    #[must_use]
    pub fn difficulty(mut self, bits: u8) -> Self {
        self.difficulty = bits.min(MAX_POW_DIFFICULTY);
        self
    }

    /// Sets how long a challenge stays valid (at least 1 s).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    fn mac(&self, body: &str, phone: &Phone) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac.update(b"\0");
        mac.update(phone.as_str().as_bytes());
        mac
    }

    fn check(
        &self,
        challenge: &str,
        solution: &str,
        phone: &Phone,
        now: Timestamp,
    ) -> Result<Passed, String> {
        let (body, tag) = challenge.rsplit_once('.').ok_or("not a challenge")?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| "not a challenge")?;
        self.mac(body, phone)
            .verify_slice(&tag)
            .map_err(|_| "not signed by us for this phone")?;
        let mut fields = body.split('.');
        let (Some("v1"), Some(expires), Some(difficulty), Some(_nonce), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err("not a challenge".into());
        };
        let expires = expires.parse::<u64>().map_err(|_| "not a challenge")?;
        let difficulty = difficulty.parse::<u8>().map_err(|_| "not a challenge")?;
        if now.as_unix() >= expires {
            return Err("expired".into());
        }
        if solution.is_empty()
            || solution.len() > 20
            || !solution.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("the solution is not a decimal number".into());
        }
        if leading_zero_bits(challenge, solution) < u32::from(difficulty) {
            return Err("the hash has too few leading zero bits".into());
        }
        Ok(Passed {
            single_use: Some((
                format!("human_check:pow:{body}"),
                Timestamp::from_unix(expires),
            )),
        })
    }
}

/// The leading zero bits of `SHA-256(challenge + ":" + solution)`.
pub fn leading_zero_bits(challenge: &str, solution: &str) -> u32 {
    let hash = Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(b":")
        .chain_update(solution.as_bytes())
        .finalize();
    let mut bits = 0;
    for byte in hash {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

/// Solves a proof-of-work `challenge` of `difficulty` bits: the smallest solution. For tests
/// and native clients; browsers do the same in JavaScript.
pub fn solve_pow(challenge: &str, difficulty: u8) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|solution| leading_zero_bits(challenge, solution) >= u32::from(difficulty))
        .unwrap_or_default()
}

#[async_trait]
impl HumanCheck for ProofOfWork {
    fn challenge(&self, phone: &Phone, now: Timestamp) -> Challenge {
        let nonce: [u8; 16] = rand::random();
        let expires = now.plus(self.ttl).as_unix();
        let body = format!(
            "v1.{expires}.{}.{}",
            self.difficulty,
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&body, phone).finalize().into_bytes());
        Challenge::Pow {
            algorithm: "sha256",
            challenge: format!("{body}.{tag}"),
            difficulty: self.difficulty,
            expires_in: self.ttl.as_secs(),
        }
    }

    async fn verify(
        &self,
        answer: &HumanCheckAnswer,
        phone: &Phone,
        _client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Passed, HumanCheckError> {
        let HumanCheckAnswer::Pow {
            challenge,
            solution,
        } = answer
        else {
            return Err(HumanCheckError::Failed(
                "this deployment asks for a proof of work".into(),
            ));
        };
        self.check(challenge, solution, phone, now)
            .map_err(HumanCheckError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(e164: &str) -> Phone {
        Phone::from_trusted_e164(e164).unwrap()
    }

    fn pow() -> ProofOfWork {
        ProofOfWork::new(&JwtKeys::hs256_random()).difficulty(8)
    }

    fn issued(pow: &ProofOfWork, phone: &Phone, now: Timestamp) -> (String, String) {
        let Challenge::Pow {
            challenge,
            difficulty,
            ..
        } = pow.challenge(phone, now)
        else {
            panic!("not a proof of work");
        };
        let solution = solve_pow(&challenge, difficulty);
        (challenge, solution)
    }

    async fn verify(
        pow: &ProofOfWork,
        challenge: &str,
        solution: &str,
        phone: &Phone,
        now: Timestamp,
    ) -> Result<Passed, HumanCheckError> {
        let answer = HumanCheckAnswer::Pow {
            challenge: challenge.into(),
            solution: solution.into(),
        };
        pow.verify(&answer, phone, None, now).await
    }

    #[tokio::test]
    async fn a_solved_challenge_passes_once_for_its_phone_until_it_expires() {
        let pow = pow();
        let now = Timestamp::from_unix(1_000_000);
        let me = phone("+375291234567");
        let (challenge, solution) = issued(&pow, &me, now);
        let passed = verify(&pow, &challenge, &solution, &me, now).await.unwrap();
        let (key, until) = passed.single_use.unwrap();
        assert!(key.starts_with("human_check:pow:v1."));
        assert_eq!(until, now.plus(Duration::from_secs(120)));
        // Another phone, a later time, a wrong solution, another key: refused.
        let other = phone("+375291234568");
        let late = now.plus(Duration::from_secs(120));
        assert!(
            verify(&pow, &challenge, &solution, &other, now)
                .await
                .is_err()
        );
        assert!(
            verify(&pow, &challenge, &solution, &me, late)
                .await
                .is_err()
        );
        let stranger = ProofOfWork::new(&JwtKeys::hs256_random()).difficulty(8);
        assert!(
            verify(&stranger, &challenge, &solution, &me, now)
                .await
                .is_err()
        );
        let wrong = (0u64..)
            .map(|n| n.to_string())
            .find(|s| leading_zero_bits(&challenge, s) < 8)
            .unwrap();
        assert!(verify(&pow, &challenge, &wrong, &me, now).await.is_err());
        for junk in ["", "12a", "-1", "123456789012345678901"] {
            assert!(
                verify(&pow, &challenge, junk, &me, now).await.is_err(),
                "{junk:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_challenge_whose_difficulty_was_lowered_is_refused() {
        let pow = pow().difficulty(12);
        let now = Timestamp::from_unix(1_000_000);
        let me = phone("+375291234567");
        let (challenge, _) = issued(&pow, &me, now);
        let (body, tag) = challenge.rsplit_once('.').unwrap();
        let forged = format!("{}.{tag}", body.replace(".12.", ".0."));
        assert_ne!(forged, challenge);
        assert!(verify(&pow, &forged, "0", &me, now).await.is_err());
        for junk in ["", ".", "v1", "v1.x.y.z.", "a.b.c.d.e.f"] {
            assert!(verify(&pow, junk, "0", &me, now).await.is_err(), "{junk:?}");
        }
    }

    #[tokio::test]
    async fn captcha_answers_are_refused_by_the_proof_of_work() {
        let pow = pow();
        let answer = HumanCheckAnswer::Turnstile {
            token: "XXXX.DUMMY.TOKEN".into(),
        };
        let refused = pow
            .verify(
                &answer,
                &phone("+375291234567"),
                None,
                Timestamp::from_unix(1),
            )
            .await;
        assert!(matches!(refused, Err(HumanCheckError::Failed(_))));
    }

    #[test]
    fn zero_bits_are_counted_from_the_first_byte() {
        // SHA-256("abc:0") and friends, checked against the definition bit by bit.
        for solution in ["0", "1", "2", "77"] {
            let hash = Sha256::digest(format!("abc:{solution}").as_bytes());
            let bits = hash
                .iter()
                .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
                .take_while(|bit| *bit == 0)
                .count();
            assert_eq!(
                leading_zero_bits("abc", solution),
                bits as u32,
                "{solution}"
            );
        }
        let solved = solve_pow("abc", 10);
        assert!(leading_zero_bits("abc", &solved) >= 10);
    }
}
