//! Bearer and refresh tokens: arbitrary strings through `authenticate`,
//! `authenticate_header`, `refresh` and `logout` of a service on the memory stores.
//!
//! Each input is used twice:
//!
//! - as text, the token itself (`$ACCESS` and `$REFRESH` are replaced by the tokens of a real
//!   login, so mutations of live tokens are tried too). The service must answer with its
//!   contract error (`unauthorized` / `invalid_token`), never panic, and accept only a string
//!   that is exactly a token signed with the key: the real login's, or one of
//!   `refsys_fuzz::Signed` (HS256 is deterministic, so the committed seeds are those strings);
//! - as the choices of a JWT built from parts (`arbitrary`): any `alg` header, claims present,
//!   missing or of the wrong type, times around the clock, signed with the key, another key,
//!   or junk. The service must accept it exactly when a small model of the rules says so:
//!   HS256 signed with the key, every claim present and well typed, `sub` a user id, the
//!   right `token_type`, `exp` after now, `nbf` at most 5 s ahead.
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use refsys_core::{Error, ReferralService, TokenPair};
use refsys_fuzz::{NOW, SECRET, Signed, TEST_CODE, TEST_PHONE, block_on, login, service};
use serde_json::{Map, Value, json};

static SIGNED: LazyLock<Signed> = LazyLock::new(Signed::new);

fuzz_target!(|data: &[u8]| {
    let service = service();
    let real = login(&service, TEST_PHONE, TEST_CODE);
    if let Ok(text) = std::str::from_utf8(data) {
        let token = text
            .replace("$ACCESS", &real.access)
            .replace("$REFRESH", &real.refresh);
        check(&service, &real, &token, None);
    }
    if let Ok(forged) = Forged::arbitrary(&mut Unstructured::new(data)) {
        let (token, model) = forged.encode();
        check(&service, &real, &token, Some(model));
    }
});

/// What the model says a built token is good for.
#[derive(Clone, Copy, Debug)]
struct Model {
    access: bool,
    refresh: bool,
}

fn check(service: &ReferralService, real: &TokenPair, token: &str, model: Option<Model>) {
    let signed = &*SIGNED;
    let is_signed_access = |t: &str| t == real.access || signed.access.iter().any(|s| s == t);
    let is_signed_refresh = |t: &str| t == real.refresh || signed.refresh.iter().any(|s| s == t);

    // A built token is signed with the key when the model says so; the model decides.
    let signed_access = |t: &str| match model {
        Some(model) => model.access,
        None => is_signed_access(t),
    };
    let signed_refresh = |t: &str| match model {
        Some(model) => model.refresh,
        None => is_signed_refresh(t),
    };

    let auth = service.authenticate(token);
    expect_error(&auth, "unauthorized", token);
    if auth.is_ok() {
        assert!(
            signed_access(token),
            "accepted an unsigned access token {token:?}"
        );
    }
    if let Some(model) = model {
        assert_eq!(
            auth.is_ok(),
            model.access,
            "authenticate({token:?}), model {model:?}"
        );
    }

    let header = format!("Bearer {token}");
    let by_header = service.authenticate_header(Some(&header));
    expect_error(&by_header, "unauthorized", token);
    assert_eq!(
        by_header.as_ref().ok(),
        service.authenticate(token.trim()).as_ref().ok(),
        "header and bare token disagree on {token:?}"
    );
    // The whole input as the header value: the scheme is case-insensitive (RFC 9110), then
    // one space, then the token.
    if let Ok(user) = service.authenticate_header(Some(token)) {
        let bare = token
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, rest)| rest.trim());
        assert!(
            is_signed_access(bare) || model.is_some(),
            "accepted header {token:?}"
        );
        assert_eq!(service.authenticate(bare).ok(), Some(user));
    }

    let refreshed = block_on(service.refresh(token));
    expect_error(&refreshed, "invalid_token", token);
    if refreshed.is_ok() {
        // Only the live refresh token of a real login rotates; a family the store does
        // not know is refused even when signed.
        assert_eq!(token, real.refresh, "refreshed with {token:?}");
    }
    let logout = block_on(service.logout(token));
    expect_error(&logout, "invalid_token", token);
    if logout.is_ok() {
        assert!(signed_refresh(token), "logged out with {token:?}");
    }
    if let Some(model) = model {
        assert_eq!(
            logout.is_ok(),
            model.refresh,
            "logout({token:?}), model {model:?}"
        );
    }
}

fn expect_error<T>(result: &Result<T, Error>, code: &str, token: &str) {
    if let Err(error) = result {
        assert_eq!(error.code(), code, "{token:?}: {error:?}");
    }
}

/// A JWT made of fuzzer-chosen parts.
#[derive(Arbitrary, Debug)]
struct Forged {
    alg: Alg,
    typ: Option<String>,
    kid: Option<String>,
    sub: Field<SubValue>,
    exp: Field<Time>,
    nbf: Field<Time>,
    iat: Field<Time>,
    jti: Field<String>,
    fam: Field<String>,
    token_type: Field<Kind>,
    extra: Option<(String, String)>,
    signature: Signature,
}

#[derive(Arbitrary, Debug)]
enum Field<T> {
    Present(T),
    Missing,
    Null,
    Wrong(bool),
}

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    None,
    Rs256,
    EdDsa,
    Lower,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum SubValue {
    Id(i64),
    Text(String),
    Number(i64),
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Seconds from the service's clock.
    Offset(i32),
    Raw(u64),
    Negative(u32),
    Float(f64),
    Text(u32),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Access,
    Refresh,
    Upper,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    /// HMAC-SHA256 with the service's key, whatever `alg` says.
    Key,
    /// HMAC-SHA256 with the key and one byte of the signature flipped.
    KeyFlipped(u8),
    /// HMAC-SHA256 with another key.
    OtherKey,
    Empty,
    Bytes(Vec<u8>),
    /// The key's signature, then junk appended to the base64 text.
    KeyThen(String),
}

impl<T> Field<T> {
    fn json(&self, present: impl Fn(&T) -> Value) -> Option<Value> {
        match self {
            Field::Present(value) => Some(present(value)),
            Field::Missing => None,
            Field::Null => Some(Value::Null),
            Field::Wrong(b) => Some(json!(b)),
        }
    }
}

impl Time {
    fn json(&self) -> Value {
        match self {
            Time::Offset(offset) => json!(NOW as i64 + i64::from(*offset)),
            Time::Raw(raw) => json!(raw),
            Time::Negative(n) => json!(-1 - i64::from(*n)),
            Time::Float(f) => json!(f),
            Time::Text(n) => json!(n.to_string()),
        }
    }
}

impl Forged {
    fn encode(&self) -> (String, Model) {
        let alg = match &self.alg {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::None => "none",
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
            Alg::Lower => "hs256",
            Alg::Other(other) => other,
        };
        let mut header = Map::new();
        if let Some(typ) = &self.typ {
            header.insert("typ".into(), json!(typ));
        }
        header.insert("alg".into(), json!(alg));
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), json!(kid));
        }

        let mut claims = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                claims.insert(name.into(), value);
            }
        };
        put(
            "sub",
            self.sub.json(|sub| match sub {
                SubValue::Id(id) => json!(id.to_string()),
                SubValue::Text(text) => json!(text),
                SubValue::Number(n) => json!(n),
            }),
        );
        put("exp", self.exp.json(Time::json));
        put("nbf", self.nbf.json(Time::json));
        put("iat", self.iat.json(Time::json));
        put("jti", self.jti.json(|s| json!(s)));
        put("fam", self.fam.json(|s| json!(s)));
        put(
            "token_type",
            self.token_type.json(|kind| match kind {
                Kind::Access => json!("access"),
                Kind::Refresh => json!("refresh"),
                Kind::Upper => json!("ACCESS"),
                Kind::Other(other) => json!(other),
            }),
        );
        if let Some((name, value)) = &self.extra {
            let known = ["sub", "exp", "nbf", "iat", "jti", "fam", "token_type"];
            if !known.contains(&name.as_str()) {
                claims.insert(name.clone(), json!(value));
            }
        }

        let header = serde_json::to_vec(&Value::Object(header)).unwrap();
        let payload = serde_json::to_vec(&Value::Object(claims.clone())).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        let hmac = |key: &[u8]| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        let (signature, by_key) = match &self.signature {
            Signature::Key => (URL_SAFE_NO_PAD.encode(hmac(SECRET)), true),
            Signature::KeyFlipped(at) => {
                let mut sig = hmac(SECRET);
                let len = sig.len();
                sig[usize::from(*at) % len] ^= 1 << (at % 8);
                (URL_SAFE_NO_PAD.encode(sig), false)
            }
            Signature::OtherKey => (
                URL_SAFE_NO_PAD.encode(hmac(b"not the service's key")),
                false,
            ),
            Signature::Empty => (String::new(), false),
            Signature::Bytes(bytes) => (URL_SAFE_NO_PAD.encode(bytes), false),
            Signature::KeyThen(junk) => {
                let sig = URL_SAFE_NO_PAD.encode(hmac(SECRET));
                let junk_is_nothing = junk.is_empty();
                (format!("{sig}{junk}"), junk_is_nothing)
            }
        };
        let token = format!("{input}.{signature}");

        // The model of the rules, from the claims as they will be read.
        let u64_claim = |name: &str| claims.get(name).and_then(Value::as_u64);
        let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
        let well_formed = alg == "HS256"
            && by_key
            && str_claim("sub").is_some_and(|sub| sub.parse::<i64>().is_ok())
            && str_claim("jti").is_some()
            && str_claim("fam").is_some()
            && u64_claim("iat").is_some()
            && u64_claim("exp").is_some_and(|exp| NOW < exp)
            && u64_claim("nbf").is_some_and(|nbf| nbf <= NOW + 5);
        let kind = str_claim("token_type");
        let model = Model {
            access: well_formed && kind == Some("access"),
            refresh: well_formed && kind == Some("refresh"),
        };
        (token, model)
    }
}
