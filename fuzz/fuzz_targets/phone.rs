//! `Phone::parse` on arbitrary text, under four region policies: every region, one region
//! (national numbers allowed), two regions, and a region the seeds are not in.
//!
//! Invariants of an accepted number: its E.164 form is `+` and 7–15 digits, re-parses (under
//! the same policy and under every region) to an equal phone, is what `from_trusted_e164` (the
//! stores' read-back path) accepts, and `Debug` shows no more than the redacted form. Every
//! accepted input is made only of digits, `+`, spaces, dashes, dots and brackets, as
//! `Phone::parse` documents: nothing the parser would silently drop (control characters,
//! leading or trailing junk).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use refsys_core::{AllowedRegions, Phone, PhoneError};

static POLICIES: LazyLock<Vec<AllowedRegions>> = LazyLock::new(|| {
    ["*", "BY", "BY,LT", "US"]
        .iter()
        .map(|list| list.parse().expect("a valid region list"))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    for regions in POLICIES.iter() {
        check(input, regions);
    }
});

fn check(input: &str, regions: &AllowedRegions) {
    let phone = match Phone::parse(input, regions) {
        Ok(phone) => phone,
        Err(PhoneError::Invalid | PhoneError::RegionNotAllowed) => return,
    };
    let e164 = phone.as_str();
    let digits = e164
        .strip_prefix('+')
        .unwrap_or_else(|| panic!("{e164:?} does not start with +"));
    assert!(
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
        "{input:?} parsed to {e164:?}, not + and 7-15 digits"
    );

    let accepted = input.trim();
    assert!(
        accepted
            .chars()
            .all(|c| c.is_ascii_digit() || " +-.()".contains(c)),
        "{input:?} accepted as {e164:?} with characters outside digits, +, space, -, ., (, )"
    );

    assert_eq!(
        Phone::parse(e164, regions).as_ref(),
        Ok(&phone),
        "{e164:?} does not re-parse under the same policy"
    );
    assert_eq!(
        Phone::parse(e164, &AllowedRegions::all()).as_ref(),
        Ok(&phone),
        "{e164:?} does not re-parse under every region"
    );
    assert_eq!(
        Phone::from_trusted_e164(e164).as_ref(),
        Ok(&phone),
        "{e164:?} (from {input:?}) cannot be read back from a store"
    );
    assert_eq!(phone.to_string(), e164);
    assert_eq!(
        serde_json::to_string(&phone).unwrap(),
        format!("\"{e164}\"")
    );

    let debug = format!("{phone:?}");
    assert_eq!(debug, format!("Phone({})", phone.redacted()));
    assert!(!debug.contains(digits), "Debug {debug:?} shows the number");
    let shown = debug.bytes().filter(u8::is_ascii_digit).count();
    assert!(shown <= 6, "Debug {debug:?} shows {shown} digits");
}
