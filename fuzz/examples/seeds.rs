//! Writes the committed seed corpus, `fuzz/corpus/<target>/<name>`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.
//!
//! The token seeds are signed with the fuzzed service's key (`refsys_fuzz::SECRET`), so they
//! are the well-formed JWTs the `token` target accepts; the HTTP seeds are a valid request for
//! every route and a whole login → invite → profile → refresh → logout flow.
//!
//! `corpus/token/built-access` and `built-refresh` are not written here: they are inputs the
//! fuzzer found whose built JWT (the `arbitrary` half of the `token` target) is one the model
//! accepts, kept so every run starts with that path covered.

use std::path::Path;

use jsonwebtoken::Algorithm;
use refsys_fuzz::{NOW, SECRET, Signed, claims, sign};
use serde_json::json;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    for (name, phone) in [
        ("e164", "+375291234567"),
        ("decorated", "+375 (29) 123-45-67"),
        ("dots", " +375.29.123.45.67 "),
        ("national-by", "8 029 123-45-67"),
        ("lt", "+37061234567"),
        ("us", "+1 202 555 0143"),
        ("short-niue", "+683 7290"),
        ("long-de", "+49 30 123456789012"),
        ("nul", "+375291234567\0"),
        ("leading-junk", "tel:+375291234567"),
        ("trailing-junk", "+375291234567#"),
        ("extension", "+375291234567 ext. 12"),
        ("vanity", "+1 800 FLOWERS"),
        ("arabic-digits", "+٣٧٥٢٩١٢٣٤٥٦٧"),
        ("fullwidth-plus", "＋375291234567"),
        ("junk", "+"),
        ("lt-national-prefix", "+370880034567"),
    ] {
        write("phone", name, phone.as_bytes());
    }

    for (name, code) in [
        ("valid", "ALG242"),
        ("lower-padded", "  alg242\n"),
        ("look-alike", "ALG2O2"),
        ("short", "ALG24"),
        ("non-ascii", "ÄLG242"),
        ("inner-space", "ALG 42"),
    ] {
        write("invite_code", name, code.as_bytes());
    }

    let signed = Signed::new();
    let mut expired = claims("1", "access");
    expired["exp"] = json!(NOW - 1);
    let mut early = claims("1", "access");
    early["nbf"] = json!(NOW + 60);
    let mut no_sub = claims("1", "access");
    no_sub.as_object_mut().unwrap().remove("sub");
    for (name, token) in [
        ("access-1", signed.access[0].clone()),
        ("access-2", signed.access[1].clone()),
        ("refresh-1", signed.refresh[0].clone()),
        ("live-access", "$ACCESS".into()),
        ("live-refresh", "$REFRESH".into()),
        ("live-access-bearer", "Bearer $ACCESS ".into()),
        ("expired", sign(Algorithm::HS256, &expired, SECRET)),
        ("not-yet", sign(Algorithm::HS256, &early, SECRET)),
        ("no-sub", sign(Algorithm::HS256, &no_sub, SECRET)),
        (
            "not-a-user-id",
            sign(Algorithm::HS256, &claims("alice", "access"), SECRET),
        ),
        (
            "hs512",
            sign(Algorithm::HS512, &claims("1", "access"), SECRET),
        ),
        (
            "other-key",
            sign(
                Algorithm::HS256,
                &claims("1", "access"),
                b"another secret, also 32 bytes long",
            ),
        ),
        (
            "alg-none",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.".into(),
        ),
        ("dots", "..".into()),
    ] {
        write("token", name, token.as_bytes());
    }

    let json = "content-type: application/json";
    let send =
        |phone: &str| format!("POST /login/send_code/\n{json}\n\n{{\"phone\": \"{phone}\"}}");
    let verify = |phone: &str, code: &str| {
        format!(
            "POST /login/verify_code/\n{json}\n\n{{\"phone\": \"{phone}\", \"code\": \"{code}\"}}"
        )
    };
    let flow = [
        send("+375291000001"),
        verify("+375291000001", "1111"),
        format!("POST /use_invite_code/\n{json}\nauthorization: Bearer $ACCESS\n\n{{\"invite_code\": \"$INVITE\"}}"),
        "GET /get_profile/\nauthorization: Bearer $ACCESS\n".into(),
        format!("POST /api/token/refresh/\n{json}\n\n{{\"refresh\": \"$REFRESH\"}}"),
        format!("POST /api/token/logout/\n{json}\n\n{{\"refresh\": \"$REFRESH\"}}"),
    ]
    .join("\n###\n");
    for (name, request) in [
        ("send-code", send("+375 29 100-00-01")),
        ("verify-code", verify("+375291000002", "2222")),
        ("wrong-code", verify("+375291000002", "0000")),
        (
            "profile",
            "GET /get_profile\nauthorization: Bearer $ACCESS\n".into(),
        ),
        (
            "use-invite-code",
            format!(
                "POST /use_invite_code/\n{json}\nauthorization: Bearer $ACCESS\n\n{{\"invite_code\": \"ALG242\"}}"
            ),
        ),
        (
            "refresh",
            format!("POST /api/token/refresh\n{json}\n\n{{\"refresh\": \"$REFRESH\"}}"),
        ),
        (
            "logout",
            format!("POST /api/token/logout/\n{json}\n\n{{\"refresh\": \"$REFRESH\"}}"),
        ),
        ("health", "GET /health\n".into()),
        ("ready", "HEAD /ready/\n".into()),
        ("not-found", "GET /nope?x=1\n".into()),
        ("method-not-allowed", "DELETE /login/send_code/\n".into()),
        (
            "forwarded",
            format!(
                "POST /login/send_code/\n{json}\nx-peer: 10.0.0.7\nx-forwarded-for: 6.6.6.6, 10.1.2.3\nx-forwarded-for: 5.5.5.5\n\n{{\"phone\": \"+375291000001\"}}"
            ),
        ),
        (
            "ipv6-peer",
            format!(
                "POST /login/verify_code/\n{json}\nx-peer: 2001:db8::1\n\n{{\"phone\": \"+375291000001\", \"code\": 1111}}"
            ),
        ),
        (
            "text-plain",
            "POST /login/send_code/\ncontent-type: text/plain\n\n{\"phone\": \"+375291000001\"}"
                .into(),
        ),
        (
            "array-body",
            format!("POST /api/token/refresh/\n{json}\n\n[\"$REFRESH\"]"),
        ),
        ("flow", flow),
    ] {
        write("http", name, request.as_bytes());
    }
}
