//! Phone numbers, normalised to E.164.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use phonenumber::Mode;
pub use phonenumber::country::Id as Region;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest input accepted before parsing; E.164 numbers have at most 15 digits, so anything
/// longer than this is junk and is refused without running the parser on it.
const MAX_INPUT_LEN: usize = 40;

/// A valid phone number in E.164 form (`+375333478282`).
///
/// A `Phone` can only be made by [`Phone::parse`], so holding one proves the number is valid
/// and inside the allowed regions it was parsed against. `Display` prints the full number (it is
/// what the API returns); `Debug` prints [`Phone::redacted`], so a stray `{:?}` in a log line
/// does not leak it.
///
/// The number is held inline (17 bytes), so a clone, as every profile read makes of each
/// invitee's number, allocates nothing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone {
    /// The E.164 form's bytes, then zeros. Field order matters: the derived `Ord` compares
    /// these first, and zero padding sorts like the end of a string, so phones order as
    /// their E.164 strings do.
    bytes: [u8; MAX_E164_LEN],
    len: u8,
}

impl Phone {
    /// Parses a phone number written in international form (`+375 (33) 347-82-82`): spaces,
    /// dashes, dots and brackets are accepted. When `regions` allows exactly one region, a
    /// national number of that region (`8 033 347-82-82` in `BY`) is accepted too.
    ///
    /// Nothing else is: no letters, no other punctuation, no control or non-ASCII characters.
    /// The parser underneath would silently drop some of them (a trailing NUL, a leading
    /// `tel:`) or translate them (`+1 800 FLOWERS`, a full-width `＋`), so one number could be
    /// written in many ways that are not what a person typed.
    ///
    /// The result always parses back to itself, so the number the API shows can be typed in
    /// again to log in.
    pub fn parse(input: &str, regions: &AllowedRegions) -> Result<Phone, PhoneError> {
        let input = input.trim();
        if input.is_empty() || input.len() > MAX_INPUT_LEN || !is_plain_number(input) {
            return Err(PhoneError::Invalid);
        }
        let e164 = normalise(input, regions)?;
        // The parser strips a national prefix written after some country codes
        // (`+370 8 800 34567` becomes `+37080034567`) and may then refuse its own output, or
        // strip again: only a number whose E.164 form reads back as itself is accepted.
        if e164 != input && normalise(&e164, regions).as_ref() != Ok(&e164) {
            return Err(PhoneError::Invalid);
        }
        Phone::from_trusted_e164(e164)
    }

    /// Wraps a string that is already E.164, as read back from a store the service wrote it
    /// to. Only the shape (`+` and 7–15 digits) is checked; use [`Phone::parse`] for input.
    pub fn from_trusted_e164(e164: impl AsRef<str>) -> Result<Phone, PhoneError> {
        let e164 = e164.as_ref().as_bytes();
        if !is_e164(e164) {
            return Err(PhoneError::Invalid);
        }
        let mut bytes = [0; MAX_E164_LEN];
        bytes[..e164.len()].copy_from_slice(e164);
        Ok(Phone {
            bytes,
            len: u8::try_from(e164.len()).map_err(|_| PhoneError::Invalid)?,
        })
    }

    /// The E.164 string, e.g. `+375333478282`.
    pub fn as_str(&self) -> &str {
        // ASCII by construction (`is_e164`), so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The destination prefix the SMS budget is shared out by: the country calling code and
    /// the next two digits (three after a one-digit code, `+1` and `+7`, so that the area code
    /// is in it), e.g. `+37529` for `+375291234567`, `+1201` for `+12015550123`.
    /// Numbers of one operator range share a prefix, so an SMS-pumping attack on a range of
    /// numbers it profits from stays within one.
    pub fn prefix(&self) -> &str {
        let number = self.as_str();
        let country = self.country_len();
        let national = if country == 1 { 3 } else { 2 };
        &number[..(1 + country + national).min(number.len())]
    }

    /// How many digits the country calling code has (1 to 3).
    fn country_len(&self) -> usize {
        let number = self.as_str();
        // Country calling codes are prefix-free (ITU-T E.164): the first 1, 2 or 3 digits
        // that name one is the code. A table lookup, not a second parse of the number.
        (1..=3)
            .find(|&len| {
                number
                    .get(1..=len)
                    .and_then(|digits| digits.parse::<u16>().ok())
                    .is_some_and(|code| phonenumber::metadata::DATABASE.by_code(&code).is_some())
            })
            .unwrap_or(3)
    }

    /// Another user's phone as a deployment that keeps invitees' phones private shows it
    /// ([`InviteePhones::Masked`](crate::InviteePhones::Masked)): the country calling code and
    /// the next two digits, the last two digits, the rest as `*`, e.g. `+37529*****67` for
    /// `+375291234567`.
    pub fn masked(&self) -> String {
        let number = self.as_str();
        let head = (1 + self.country_len() + 2).min(number.len());
        let tail = 2.min(number.len() - head);
        format!(
            "{}{}{}",
            &number[..head],
            "*".repeat(number.len() - head - tail),
            &number[number.len() - tail..]
        )
    }

    /// A form safe for logs: country prefix and last two digits, e.g. `+3753*******82`.
    pub fn redacted(&self) -> String {
        let number = self.as_str();
        let keep_head = 5.min(number.len());
        let keep_tail = 2.min(number.len() - keep_head);
        let hidden = number.len() - keep_head - keep_tail;
        format!(
            "{}{}{}",
            &number[..keep_head],
            "*".repeat(hidden),
            &number[number.len() - keep_tail..]
        )
    }
}

/// The E.164 form of `input`, if it is a valid number of an allowed region.
fn normalise(input: &str, regions: &AllowedRegions) -> Result<String, PhoneError> {
    let number = phonenumber::parse(regions.single(), input).map_err(|_| PhoneError::Invalid)?;
    if !phonenumber::is_valid(&number) || number.extension().is_some() {
        return Err(PhoneError::Invalid);
    }
    if !regions.allows(number.country().id()) {
        return Err(PhoneError::RegionNotAllowed);
    }
    let e164 = number.format().mode(Mode::E164).to_string();
    // What the stores write they must be able to read back with `from_trusted_e164`.
    if !is_e164(e164.as_bytes()) {
        return Err(PhoneError::Invalid);
    }
    Ok(e164)
}

/// Fewest digits of a valid E.164 number: 7, as in Niue (`+683 7290`) and Tokelau.
const MIN_E164_DIGITS: usize = 7;

/// Most digits of an E.164 number (ITU-T E.164 §6).
const MAX_E164_DIGITS: usize = 15;

/// Longest E.164 form: `+` and [`MAX_E164_DIGITS`] digits.
const MAX_E164_LEN: usize = 1 + MAX_E164_DIGITS;

/// `+` and 7–15 ASCII digits.
fn is_e164(text: &[u8]) -> bool {
    text.strip_prefix(b"+").is_some_and(|digits| {
        (MIN_E164_DIGITS..=MAX_E164_DIGITS).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
    })
}

/// Only what [`Phone::parse`] documents: ASCII digits, a leading `+`, and spaces, dashes,
/// dots and brackets between them.
fn is_plain_number(input: &str) -> bool {
    let rest = input.strip_prefix('+').unwrap_or(input);
    rest.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'.' | b'(' | b')'))
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.redacted())
    }
}

impl AsRef<str> for Phone {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for Phone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Reads a phone in E.164 as [`Phone::from_trusted_e164`] does: for data this library wrote
/// (an event read back), not for user input, which [`Phone::parse`] checks against the
/// allowed regions.
impl<'de> Deserialize<'de> for Phone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_trusted_e164(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not a valid phone number.
    #[error("not a valid phone number")]
    Invalid,
    /// A valid number, but its region is not in the allowed list.
    #[error("phone region is not allowed")]
    RegionNotAllowed,
}

/// Which countries' numbers may log in. Default: all.
///
/// ```
/// use refsys_core::{AllowedRegions, Phone};
///
/// let only_by: AllowedRegions = "BY".parse().unwrap();
/// assert!(Phone::parse("+375 (33) 347-82-82", &only_by).is_ok());
/// assert!(Phone::parse("+1 202 555 0143", &only_by).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedRegions(Option<BTreeSet<RegionKey>>);

/// `Region` is not `Ord`; keep it in sets by its two-letter name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RegionKey(Region);

impl PartialOrd for RegionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RegionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_ref().cmp(other.0.as_ref())
    }
}

impl AllowedRegions {
    /// Every region.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only these regions.
    pub fn only(regions: impl IntoIterator<Item = Region>) -> Self {
        Self(Some(regions.into_iter().map(RegionKey).collect()))
    }

    /// Whether a number of `region` may log in.
    pub fn allows(&self, region: Option<Region>) -> bool {
        match (&self.0, region) {
            (None, _) => true,
            (Some(set), Some(region)) => set.contains(&RegionKey(region)),
            (Some(_), None) => false,
        }
    }

    /// The region, when exactly one is allowed: national numbers are read as that region's.
    fn single(&self) -> Option<Region> {
        match &self.0 {
            Some(set) if set.len() == 1 => set.first().map(|key| key.0),
            _ => None,
        }
    }
}

impl FromStr for AllowedRegions {
    type Err = String;

    /// Parses a comma-separated list of ISO 3166 region codes (`"BY,LT"`); empty or `*` means
    /// all regions.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let list = list.trim();
        if list.is_empty() || list == "*" {
            return Ok(Self::all());
        }
        let regions = list
            .split(',')
            .map(|name| {
                let name = name.trim().to_ascii_uppercase();
                name.parse::<Region>()
                    .map_err(|_| format!("unknown region code `{name}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::only(regions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_the_country_code_and_two_digits() {
        let all = AllowedRegions::all();
        for (number, prefix) in [
            ("+375291234567", "+37529"),
            ("+375331234567", "+37533"),
            ("+12015550123", "+1201"),
            ("+447911123456", "+4479"),
            ("+4915123456789", "+4915"),
            ("+79161234567", "+7916"),
            ("+8613912345678", "+8613"),
            ("+380501234567", "+38050"),
        ] {
            assert_eq!(
                Phone::parse(number, &all).expect(number).prefix(),
                prefix,
                "{number}"
            );
            // The same for a number read back from a store, which was never parsed.
            assert_eq!(Phone::from_trusted_e164(number).unwrap().prefix(), prefix);
        }
    }

    #[test]
    fn normalises_decorated_input_to_e164() {
        let all = AllowedRegions::all();
        for input in [
            "+375333478282",
            "+375 33 347 82 82",
            "+375 (33) 347-82-82",
            " +375-33-3478282 ",
        ] {
            assert_eq!(
                Phone::parse(input, &all).unwrap().as_str(),
                "+375333478282",
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_junk() {
        let all = AllowedRegions::all();
        for input in [
            "",
            "   ",
            "abc",
            "+",
            "+0000",
            "12345",
            "+375 33",
            "+3753334782821234567",
            &"9".repeat(200),
        ] {
            assert_eq!(
                Phone::parse(input, &all),
                Err(PhoneError::Invalid),
                "{input}"
            );
        }
    }

    #[test]
    fn national_numbers_need_a_single_region() {
        let by: AllowedRegions = "BY".parse().unwrap();
        assert_eq!(
            Phone::parse("8 033 347-82-82", &by).unwrap().as_str(),
            "+375333478282"
        );
        assert!(Phone::parse("8 033 347-82-82", &AllowedRegions::all()).is_err());
    }

    #[test]
    fn region_policy() {
        let by_lt: AllowedRegions = "by, LT".parse().unwrap();
        assert!(Phone::parse("+375333478282", &by_lt).is_ok());
        assert!(Phone::parse("+37061234567", &by_lt).is_ok());
        assert_eq!(
            Phone::parse("+12025550143", &by_lt),
            Err(PhoneError::RegionNotAllowed)
        );
        assert!("XX".parse::<AllowedRegions>().is_err());
        assert_eq!(
            "*".parse::<AllowedRegions>().unwrap(),
            AllowedRegions::all()
        );
    }

    #[test]
    fn masked_keeps_the_country_code_two_digits_and_the_last_two() {
        let all = AllowedRegions::all();
        let masked = |p: &str| Phone::parse(p, &all).unwrap().masked();
        assert_eq!(masked("+375291234567"), "+37529*****67");
        assert_eq!(masked("+12015550123"), "+120******23");
        assert_eq!(masked("+447911123456"), "+4479******56");
    }

    #[test]
    fn redacted_and_debug_hide_the_middle() {
        let phone = Phone::parse("+375333478282", &AllowedRegions::all()).unwrap();
        assert_eq!(phone.redacted(), "+3753******82");
        assert_eq!(format!("{phone:?}"), "Phone(+3753******82)");
        assert_eq!(phone.to_string(), "+375333478282");
    }

    #[test]
    fn trusted_e164_checks_shape() {
        assert!(Phone::from_trusted_e164("+375333478282").is_ok());
        assert!(Phone::from_trusted_e164("375333478282").is_err());
        assert!(Phone::from_trusted_e164("+37533a478282").is_err());
        assert!(Phone::from_trusted_e164("+123456").is_err());
        assert!(Phone::from_trusted_e164("+1234567890123456").is_err());
    }

    #[test]
    fn longest_numbers_fit_and_phones_order_and_compare_as_their_strings() {
        let mut phones: Vec<Phone> = [
            "+123456789012345", // 15 digits, the most E.164 has
            "+1234567",
            "+12345678",
            "+1234568",
            "+375333478282",
            "+9999999",
        ]
        .into_iter()
        .map(|e164| Phone::from_trusted_e164(e164).unwrap())
        .collect();
        assert_eq!(phones[0].as_str(), "+123456789012345");
        let mut strings: Vec<String> = phones.iter().map(|p| p.as_str().to_owned()).collect();
        phones.sort();
        strings.sort();
        let sorted: Vec<&str> = phones.iter().map(Phone::as_str).collect();
        assert_eq!(sorted, strings);
        assert_ne!(phones[0], phones[1]);
        assert_eq!(
            phones[0],
            Phone::from_trusted_e164(phones[0].as_str()).unwrap()
        );
    }

    /// Found by the `phone` fuzz target: Niue's 7-digit E.164 numbers parsed, but the stores'
    /// read-back (`from_trusted_e164`) wanted 8 or more digits, so such a user's row could
    /// be written and never read again.
    #[test]
    fn shortest_numbers_read_back_from_a_store() {
        for input in ["+683 7290", "+690 3010"] {
            let phone = Phone::parse(input, &AllowedRegions::all()).unwrap();
            assert_eq!(phone.as_str().len(), 8, "{input}");
            assert_eq!(Phone::from_trusted_e164(phone.as_str()), Ok(phone));
        }
    }

    /// Found by the `phone` fuzz target: `+370 8 800 34567` (a national prefix after the
    /// country code) came out as `+37080034567`, which the parser then refused, so the user
    /// could not log in with the number the API showed.
    #[test]
    fn accepted_numbers_parse_back_to_themselves() {
        let lt: AllowedRegions = "LT".parse().unwrap();
        for regions in [AllowedRegions::all(), lt] {
            // Accepted, and reading the shown number back gives the same number.
            for input in ["+37061234567", "+370 8 612 34567"] {
                let phone = Phone::parse(input, &regions)
                    .unwrap_or_else(|e| panic!("{input:?} is a Lithuanian mobile: {e:?}"));
                assert_eq!(phone.as_str(), "+37061234567", "{input:?}");
                assert_eq!(
                    Phone::parse(phone.as_str(), &regions).as_ref(),
                    Ok(&phone),
                    "{input:?} -> {phone}"
                );
            }
            // The fuzz finding: refused outright, not shown as a number that is then refused.
            for input in ["+370880034567", "+370 8 800 34567"] {
                assert_eq!(
                    Phone::parse(input, &regions),
                    Err(PhoneError::Invalid),
                    "{input:?}"
                );
            }
        }
    }

    /// A trailing NUL was dropped by the parser, so `"+375291234567\0"` was the same user as
    /// `"+375291234567"`; so were a leading `tel:`, vanity letters (`+1 800 FLOWERS`) and a
    /// full-width plus (all found by the `phone` fuzz target). Only digits, `+`, spaces,
    /// dashes, dots and brackets are accepted.
    #[test]
    fn refuses_characters_the_parser_would_drop_or_translate() {
        let all = AllowedRegions::all();
        assert!(Phone::parse("+375291234567", &all).is_ok());
        for input in [
            "+375291234567\0",
            "\0+375291234567",
            "+37529\u{1}1234567",
            "+375291234567\u{7f}",
            "+375 29\t123 45 67",
            "+375\u{200b}291234567",
            "tel:+375291234567",
            "+375291234567#",
            "+375291234567;",
            "+375291234567 ext. 12",
            "+1 800 FLOWERS",
            "+\u{663}\u{667}\u{665}\u{662}\u{669}\u{661}\u{662}\u{663}\u{664}\u{665}\u{666}\u{667}",
            "\u{ff0b}375291234567",
            "++375291234567",
            "375+291234567",
        ] {
            assert_eq!(
                Phone::parse(input, &all),
                Err(PhoneError::Invalid),
                "{input:?}"
            );
        }
    }
}
