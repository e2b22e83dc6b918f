//! Invite codes: 6 characters from an alphabet without look-alikes.

use std::fmt;
use std::str::FromStr;

use rand::RngExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The invite-code alphabet: digits and capital letters without `0`/`O` and `1`/`I`.
/// Its 32 symbols make each character exactly 5 random bits (no modulo bias).
pub const INVITE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Length of an invite code.
pub const INVITE_CODE_LEN: usize = 6;

/// A well-formed invite code, e.g. `X4F9ZQ`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InviteCode([u8; INVITE_CODE_LEN]);

impl InviteCode {
    /// Generates a fresh random code from the CSPRNG (30 bits of entropy).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut code = [0u8; INVITE_CODE_LEN];
        for slot in &mut code {
            *slot = INVITE_ALPHABET[rng.random_range(0..INVITE_ALPHABET.len())];
        }
        Self(code)
    }

    /// Parses user input: surrounding whitespace is trimmed and letters are case-insensitive.
    pub fn parse(input: &str) -> Result<Self, InviteCodeError> {
        let input = input.trim().as_bytes();
        if input.len() != INVITE_CODE_LEN {
            return Err(InviteCodeError);
        }
        let mut code = [0u8; INVITE_CODE_LEN];
        for (slot, byte) in code.iter_mut().zip(input) {
            let byte = byte.to_ascii_uppercase();
            if !INVITE_ALPHABET.contains(&byte) {
                return Err(InviteCodeError);
            }
            *slot = byte;
        }
        Ok(Self(code))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        // Every byte is from the ASCII alphabet, checked at construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for InviteCode {
    type Err = InviteCodeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

impl fmt::Display for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteCode({})", self.as_str())
    }
}

impl Serialize for InviteCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Reads a code as [`InviteCode::parse`] does (any case), refusing anything else.
impl<'de> Deserialize<'de> for InviteCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The input is not 6 characters of the invite-code alphabet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an invite code is 6 characters of A-Z and 2-9 without I and O")]
pub struct InviteCodeError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_parse_back() {
        for _ in 0..1000 {
            let code = InviteCode::generate();
            assert_eq!(InviteCode::parse(code.as_str()), Ok(code));
        }
    }

    #[test]
    fn input_is_trimmed_and_case_insensitive() {
        assert_eq!(InviteCode::parse("  alg242\n").unwrap().as_str(), "ALG242");
    }

    #[test]
    fn look_alikes_and_wrong_lengths_are_refused() {
        for input in [
            "ALG24", "ALG2422", "ALG2O2", "ALG202", "ALG212", "ALGI42", "ALG 42", "", "ÄLG242",
        ] {
            assert_eq!(InviteCode::parse(input), Err(InviteCodeError), "{input}");
        }
    }

    #[test]
    fn alphabet_has_no_look_alikes() {
        for c in b"01IO" {
            assert!(!INVITE_ALPHABET.contains(c));
        }
    }
}
