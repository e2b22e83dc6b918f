//! JWT access and refresh tokens.
//!
//! Both kinds carry `sub` (the user id), `exp`, `iat`, `nbf`, `jti`, `token_type` and `fam` (the
//! refresh-token family, one per login). A refresh token is never accepted as an access token
//! and vice versa. Expiry is checked against the service's [`Clock`](crate::Clock), not inside
//! `jsonwebtoken`, so it is testable.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Timestamp, UserId};

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// Clock skew tolerated on `nbf`, in seconds.
const NBF_LEEWAY_SECS: u64 = 5;

/// Whether a token is an access or a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Short-lived; sent as `Authorization: Bearer`.
    Access,
    /// Long-lived, single use; traded at `/api/token/refresh/` for a new pair.
    Refresh,
}

/// The claims refsys puts in its tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (RFC 7519 `sub` is a string).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Unique token id.
    pub jti: String,
    /// Access or refresh.
    pub token_type: TokenKind,
    /// The refresh-token family (one per login) this token belongs to.
    pub fam: String,
}

impl Claims {
    /// The user id in `sub`.
    pub fn user_id(&self) -> Option<UserId> {
        self.sub.parse().ok().map(UserId)
    }
}

/// A random 128-bit id, as 32 hex characters: the type of token ids and family ids.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4().simple().to_string())
            }

            /// An id read back from a token or a store.
            pub fn from_string(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// Identifies one refresh-token family: every refresh token descended from one login.
    FamilyId
);
random_id!(
    /// Identifies one token (`jti`).
    TokenId
);

/// An access + refresh pair.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    /// The access token.
    pub access: String,
    /// The refresh token.
    pub refresh: String,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenPair { .. }")
    }
}

/// The keys tokens are signed and checked with.
///
/// `Debug` shows only the algorithm.
#[derive(Clone)]
pub struct JwtKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The encoded header `issue` writes, e.g. `{"typ":"JWT","alg":"HS256"}`.
    header: String,
    pepper: [u8; 32],
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The HS256 secret is shorter than [`MIN_SECRET_LEN`].
    #[error("the JWT secret must be at least {MIN_SECRET_LEN} bytes")]
    SecretTooShort,
    /// A PEM key could not be read.
    #[error("invalid {0} key: {1}")]
    InvalidPem(&'static str, String),
}

impl JwtKeys {
    /// HS256 with a shared secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort);
        }
        Ok(Self::new(
            Algorithm::HS256,
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
            secret,
        ))
    }

    /// HS256 with a fresh random secret: tokens die with the process. For development only.
    pub fn hs256_random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::new(
            Algorithm::HS256,
            EncodingKey::from_secret(&secret),
            DecodingKey::from_secret(&secret),
            &secret,
        )
    }

    /// RS256 from a PKCS#1/PKCS#8 private key and its public key, both PEM.
    pub fn rs256_pem(private_pem: &[u8], public_pem: &[u8]) -> Result<Self, KeyError> {
        let pem_error = |e: jsonwebtoken::errors::Error| KeyError::InvalidPem("RSA", e.to_string());
        Ok(Self::new(
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(private_pem).map_err(pem_error)?,
            DecodingKey::from_rsa_pem(public_pem).map_err(pem_error)?,
            private_pem,
        ))
    }

    /// EdDSA (Ed25519) from a PKCS#8 private key and its public key, both PEM.
    pub fn eddsa_pem(private_pem: &[u8], public_pem: &[u8]) -> Result<Self, KeyError> {
        let pem_error =
            |e: jsonwebtoken::errors::Error| KeyError::InvalidPem("Ed25519", e.to_string());
        Ok(Self::new(
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(private_pem).map_err(pem_error)?,
            DecodingKey::from_ed_pem(public_pem).map_err(pem_error)?,
            private_pem,
        ))
    }

    fn new(
        algorithm: Algorithm,
        encoding: EncodingKey,
        decoding: DecodingKey,
        secret_material: &[u8],
    ) -> Self {
        let header = serde_json::to_vec(&Header::new(algorithm))
            .map(|json| URL_SAFE_NO_PAD.encode(json))
            .unwrap_or_default();
        let pepper = Sha256::new()
            .chain_update(b"refsys-otp-pepper-v1\0")
            .chain_update(secret_material)
            .finalize()
            .into();
        Self {
            algorithm,
            encoding,
            decoding,
            header,
            pepper,
        }
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key OTP hashes are made with, derived from the signing secret so that every server
    /// instance sharing the JWT key shares it too.
    pub(crate) fn otp_pepper(&self) -> &[u8; 32] {
        &self.pepper
    }

    /// Signs a token of `kind` for `user` in `family`, valid from `now` for `lifetime`.
    pub(crate) fn issue(
        &self,
        kind: TokenKind,
        user: UserId,
        family: &FamilyId,
        jti: &TokenId,
        now: Timestamp,
        lifetime: std::time::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user.to_string(),
            exp: now.plus(lifetime).as_unix(),
            iat: now.as_unix(),
            nbf: now.as_unix(),
            jti: jti.to_string(),
            token_type: kind,
            fam: family.to_string(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
    }

    /// Checks signature, algorithm, kind and lifetime; returns the claims.
    ///
    /// The signature is checked by `jsonwebtoken` against this key's algorithm only (a header
    /// naming any other algorithm, `none` included, is refused). The header is parsed only
    /// when it differs from the one `issue` writes, and the claims are
    /// decoded and deserialized once: this is the hot path of every authenticated request.
    pub fn decode(&self, token: &str, kind: TokenKind, now: Timestamp) -> Option<Claims> {
        let (message, signature) = token.rsplit_once('.')?;
        let (header, payload) = message.split_once('.')?;
        if header != self.header && jsonwebtoken::decode_header(token).ok()?.alg != self.algorithm {
            return None;
        }
        let signed = jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &self.decoding,
            self.algorithm,
        );
        if !signed.ok()? {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let live = now.as_unix() < claims.exp
            && claims.nbf <= now.as_unix().saturating_add(NBF_LEEWAY_SECS);
        (live && claims.token_type == kind && claims.user_id().is_some()).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &[u8] = b"an HS256 secret of at least 32 bytes, for tests";
    const NOW: u64 = 1_800_000_000;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(SECRET).unwrap()
    }

    fn issue(keys: &JwtKeys, kind: TokenKind) -> String {
        let (family, jti) = (FamilyId::random(), TokenId::random());
        let now = Timestamp::from_unix(NOW);
        keys.issue(kind, UserId(7), &family, &jti, now, Duration::from_secs(60))
            .unwrap()
    }

    /// Signs `claims` under a header of our choosing, as another issuer (or an attacker
    /// holding the key) might.
    fn sign_with(header: &Header, claims: &Claims, secret: &[u8]) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn claims_of(keys: &JwtKeys, token: &str) -> Option<Claims> {
        keys.decode(token, TokenKind::Access, Timestamp::from_unix(NOW + 1))
    }

    #[test]
    fn issued_tokens_start_with_the_precomputed_header() {
        let keys = keys();
        let token = issue(&keys, TokenKind::Access);
        assert!(token.starts_with(&format!("{}.", keys.header)), "{token}");
        let claims = claims_of(&keys, &token).unwrap();
        assert_eq!(claims.user_id(), Some(UserId(7)));
    }

    #[test]
    fn another_header_of_the_same_algorithm_is_parsed_and_accepted() {
        let keys = keys();
        let claims = claims_of(&keys, &issue(&keys, TokenKind::Access)).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = None;
        header.kid = Some("k1".into());
        let token = sign_with(&header, &claims, SECRET);
        assert!(!token.starts_with(&keys.header));
        assert_eq!(claims_of(&keys, &token), Some(claims));
    }

    #[test]
    fn other_algorithms_wrong_keys_and_edits_are_refused() {
        let keys = keys();
        let token = issue(&keys, TokenKind::Access);
        let claims = claims_of(&keys, &token).unwrap();
        // Same key, another HMAC algorithm.
        let hs512 = sign_with(&Header::new(Algorithm::HS512), &claims, SECRET);
        assert_eq!(claims_of(&keys, &hs512), None);
        // Right algorithm, wrong key.
        let forged = sign_with(&Header::new(Algorithm::HS256), &claims, &[b'x'; 32]);
        assert_eq!(claims_of(&keys, &forged), None);
        // `alg: none` with the signature dropped or kept.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let (_, rest) = token.split_once('.').unwrap();
        let (payload, _) = rest.split_once('.').unwrap();
        assert_eq!(claims_of(&keys, &format!("{none}.{payload}.")), None);
        assert_eq!(claims_of(&keys, &format!("{none}.{rest}")), None);
        // A payload edited after signing.
        let mut edited = claims.clone();
        edited.sub = "8".into();
        let edited_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&edited).unwrap());
        let signature = token.rsplit_once('.').unwrap().1;
        let tampered = format!("{}.{edited_payload}.{signature}", keys.header);
        assert_eq!(claims_of(&keys, &tampered), None);
        // Structure.
        for garbage in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            &format!("{token}.x"),
            &token[1..],
        ] {
            assert_eq!(claims_of(&keys, garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn kind_and_lifetime_are_checked() {
        let keys = keys();
        let access = issue(&keys, TokenKind::Access);
        let refresh = issue(&keys, TokenKind::Refresh);
        let at = |secs| Timestamp::from_unix(secs);
        assert!(keys.decode(&access, TokenKind::Access, at(NOW)).is_some());
        assert!(keys.decode(&access, TokenKind::Refresh, at(NOW)).is_none());
        assert!(keys.decode(&refresh, TokenKind::Refresh, at(NOW)).is_some());
        assert!(keys.decode(&refresh, TokenKind::Access, at(NOW)).is_none());
        // Valid until `exp` (exclusive); `nbf` tolerates a few seconds of skew.
        assert!(
            keys.decode(&access, TokenKind::Access, at(NOW + 59))
                .is_some()
        );
        assert!(
            keys.decode(&access, TokenKind::Access, at(NOW + 60))
                .is_none()
        );
        let early = NOW - NBF_LEEWAY_SECS;
        assert!(keys.decode(&access, TokenKind::Access, at(early)).is_some());
        assert!(
            keys.decode(&access, TokenKind::Access, at(early - 1))
                .is_none()
        );
    }

    #[test]
    fn claims_missing_a_field_are_refused() {
        let keys = keys();
        let claims = claims_of(&keys, &issue(&keys, TokenKind::Access)).unwrap();
        let mut json = serde_json::to_value(&claims).unwrap();
        json.as_object_mut().unwrap().remove("exp");
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(claims_of(&keys, &token), None);
    }
}
