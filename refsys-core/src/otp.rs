//! One-time codes: generation, parsing, and the keyed hash stores keep instead of the code.

use std::fmt;
use std::time::Duration;

use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Phone;

/// A one-time code of N decimal digits (4 by default).
///
/// `Debug` hides the digits, so a code cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl OtpCode {
    /// A fresh code of `len` digits from the CSPRNG, uniformly distributed.
    pub fn generate(len: usize) -> Self {
        let mut rng = rand::rng();
        Self(
            (0..len)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect(),
        )
    }

    /// Parses user input: exactly `len` ASCII digits (surrounding whitespace trimmed).
    pub fn parse(input: &str, len: usize) -> Result<Self, OtpCodeError> {
        let input = input.trim();
        if input.len() == len && input.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(input.to_owned()))
        } else {
            Err(OtpCodeError { len })
        }
    }

    /// The digits. Handle with care: this is a secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(****)")
    }
}

/// The input is not a code of the configured length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the code must be {len} digits")]
pub struct OtpCodeError {
    len: usize,
}

/// A keyed SHA-256 of (phone, code): what stores keep and compare instead of the code.
///
/// The key (a server-side pepper) means a leaked store dump cannot be brute-forced over the
/// 10 000 possible codes without also stealing the key. Equality is constant-time.
#[derive(Clone, Copy, Eq)]
pub struct OtpHash([u8; 32]);

impl OtpHash {
    /// Hashes `code` for `phone` under `pepper`.
    pub fn new(pepper: &[u8; 32], phone: &Phone, code: &OtpCode) -> Self {
        Self(Self::hasher(pepper, phone, code).finalize().into())
    }

    /// The hash of a login code, not yet finalized.
    fn hasher(pepper: &[u8; 32], phone: &Phone, code: &OtpCode) -> Sha256 {
        let mut hasher = Sha256::new();
        hasher.update(b"refsys-otp-v1\0");
        hasher.update(pepper);
        hasher.update(phone.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(code.expose().as_bytes());
        hasher
    }

    /// Hashes `code` for `phone` under `pepper`, bound to `purpose`: such a code proves the
    /// phone for that purpose only (a login code, hashed by [`new`](Self::new), never matches
    /// it, nor it a login code's hash).
    pub fn for_purpose(pepper: &[u8; 32], phone: &Phone, code: &OtpCode, purpose: &str) -> Self {
        let mut hasher = Self::hasher(pepper, phone, code);
        hasher.update(b"\0");
        hasher.update(purpose.as_bytes());
        Self(hasher.finalize().into())
    }

    /// Rebuilds a hash a store read back.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes, for storing.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, for stores that keep strings.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl PartialEq for OtpHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for OtpHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpHash(..)")
    }
}

/// The rules an [`OtpStore`](crate::OtpStore) enforces, handed to it on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtpPolicy {
    /// Digits per code. Default 4.
    pub code_length: usize,
    /// How long a code stays valid. Default 300 s.
    pub code_ttl: Duration,
    /// Minimum time between two codes to one phone. Default 60 s.
    pub resend_cooldown: Duration,
    /// Wrong tries per code; the last wrong one burns the code. Default 5.
    pub max_attempts: u32,
    /// Codes per phone per rolling [`send_window`](Self::send_window), from all clients
    /// together. Default 10: one client network gets at most
    /// [`ClientLimits::send_code_per_phone`](crate::ClientLimits::send_code_per_phone) (5) of
    /// them, so it cannot use up the phone's window alone.
    pub max_sends_per_window: u32,
    /// The rolling window for [`max_sends_per_window`](Self::max_sends_per_window). Default 1 h.
    pub send_window: Duration,
    /// Consecutive wrong codes per phone, from all clients together, across any number of
    /// codes, before the phone is locked for [`lockout`](Self::lockout). A successful
    /// verification resets the count, and so does a quiet `lockout` with no wrong code.
    /// Default 50 (NIST SP 800-63B allows at most 100): one client network gets at most
    /// [`ClientLimits::verify_code_per_phone`](crate::ClientLimits::verify_code_per_phone) (20)
    /// tries, so it takes three networks to lock a phone.
    pub max_failures: u32,
    /// How long a phone stays locked after [`max_failures`](Self::max_failures) consecutive
    /// wrong codes: no code is sent to it and none is checked. Default 1 h.
    pub lockout: Duration,
}

impl Default for OtpPolicy {
    fn default() -> Self {
        Self {
            code_length: 4,
            code_ttl: Duration::from_secs(300),
            resend_cooldown: Duration::from_secs(60),
            max_attempts: 5,
            max_sends_per_window: 10,
            send_window: Duration::from_secs(3600),
            max_failures: 50,
            lockout: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AllowedRegions;

    #[test]
    fn generated_codes_have_the_length_and_parse_back() {
        for len in [4, 6, 8] {
            let code = OtpCode::generate(len);
            assert_eq!(code.expose().len(), len);
            assert_eq!(OtpCode::parse(code.expose(), len), Ok(code));
        }
    }

    #[test]
    fn generated_codes_cover_all_digits() {
        let mut seen = [false; 10];
        for _ in 0..500 {
            for b in OtpCode::generate(4).expose().bytes() {
                seen[usize::from(b - b'0')] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn parse_refuses_wrong_shapes() {
        for input in ["123", "12345", "12a4", "", "١٢٣٤", "+123"] {
            assert!(OtpCode::parse(input, 4).is_err(), "{input}");
        }
        assert_eq!(OtpCode::parse(" 1234 ", 4).unwrap().expose(), "1234");
    }

    #[test]
    fn debug_hides_the_code() {
        let code = OtpCode::parse("1234", 4).unwrap();
        assert!(!format!("{code:?}").contains("1234"));
    }

    #[test]
    fn hash_depends_on_pepper_phone_and_code() {
        let all = AllowedRegions::all();
        let a = Phone::parse("+375333478282", &all).unwrap();
        let b = Phone::parse("+375333478283", &all).unwrap();
        let c1 = OtpCode::parse("1234", 4).unwrap();
        let c2 = OtpCode::parse("1235", 4).unwrap();
        let base = OtpHash::new(&[1; 32], &a, &c1);
        assert_eq!(base, OtpHash::new(&[1; 32], &a, &c1));
        assert_ne!(base, OtpHash::new(&[2; 32], &a, &c1));
        assert_ne!(base, OtpHash::new(&[1; 32], &b, &c1));
        assert_ne!(base, OtpHash::new(&[1; 32], &a, &c2));
        assert_eq!(OtpHash::from_bytes(*base.as_bytes()), base);
        assert_eq!(base.to_hex().len(), 64);
    }

    #[test]
    fn a_purpose_bound_hash_matches_its_purpose_only() {
        let a = Phone::parse("+375333478282", &AllowedRegions::all()).unwrap();
        let code = OtpCode::parse("1234", 4).unwrap();
        let bound = OtpHash::for_purpose(&[1; 32], &a, &code, "phone-change:7");
        assert_eq!(
            bound,
            OtpHash::for_purpose(&[1; 32], &a, &code, "phone-change:7")
        );
        assert_ne!(bound, OtpHash::new(&[1; 32], &a, &code), "not a login code");
        assert_ne!(
            bound,
            OtpHash::for_purpose(&[1; 32], &a, &code, "phone-change:8")
        );
        assert_ne!(
            bound,
            OtpHash::for_purpose(&[2; 32], &a, &code, "phone-change:7")
        );
    }
}
