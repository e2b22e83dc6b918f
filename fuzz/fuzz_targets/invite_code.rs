//! `InviteCode::parse` on arbitrary text.
//!
//! Invariants: an accepted code is exactly 6 characters of `INVITE_ALPHABET`, equal to the
//! trimmed input upper-cased, parses back from its own `as_str()` (and from its lower-case and
//! `Display` forms) to an equal code, and serializes as that string. A refused input is
//! refused whatever its case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refsys_core::{INVITE_ALPHABET, INVITE_CODE_LEN, InviteCode};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(code) = InviteCode::parse(input) else {
        assert!(
            InviteCode::parse(&input.to_ascii_uppercase()).is_err(),
            "{input:?} refused, its upper case accepted"
        );
        return;
    };
    let text = code.as_str();
    assert_eq!(text.len(), INVITE_CODE_LEN, "{input:?} -> {text:?}");
    assert!(
        text.bytes().all(|b| INVITE_ALPHABET.contains(&b)),
        "{input:?} -> {text:?} outside the alphabet"
    );
    assert_eq!(text, input.trim().to_ascii_uppercase(), "{input:?}");
    assert_eq!(InviteCode::parse(text), Ok(code));
    assert_eq!(InviteCode::parse(&text.to_ascii_lowercase()), Ok(code));
    assert_eq!(code.to_string().parse::<InviteCode>(), Ok(code));
    assert_eq!(format!("{code:?}"), format!("InviteCode({text})"));
    assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
});
