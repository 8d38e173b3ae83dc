//! The code printed on a pass: its serial plus a keyed MAC, so a forged or altered code is
//! refused before storage is touched. Pure: the keyring is passed in.
//!
//! QR payload (QR alphanumeric mode, version 2 at error correction M):
//! `PN1:<serial, 13 chars>:<verification code, 8 chars>` e.g. `PN1:0123456789ABX:1K3M5P7Q`.
//! The verification code is the key id (one base-32 character, for rotation) followed by
//! 35 bits of `blake3::keyed_hash(key, "passnum/pass/v1" ‖ key id ‖ serial)`. A person who
//! cannot scan types the serial and the verification code printed under the QR.

use crate::domain::serial::{symbol_value, SerialError, ALPHABET};
use crate::domain::Serial;
use std::collections::BTreeMap;
use std::fmt;

pub const VERSION_PREFIX: &str = "PN1";
const TAG_CHARS: usize = 7;
pub const VERIFICATION_CHARS: usize = 1 + TAG_CHARS;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeError {
    /// Not the shape of any passnum code.
    Malformed,
    /// A version this server does not read.
    UnknownVersion,
    Serial(SerialError),
    /// The code names a key this server does not hold.
    UnknownKey,
    /// The MAC does not match: forged, altered, or mistyped.
    NotAuthentic,
}

impl CodeError {
    /// The code is well formed but its MAC fails: what guessing produces (a mistyped serial
    /// fails its check character first).
    pub fn is_guess(&self) -> bool {
        matches!(self, CodeError::NotAuthentic | CodeError::UnknownKey)
    }

    pub fn reason(&self) -> &'static str {
        match self {
            CodeError::Malformed => "MALFORMED_CODE",
            CodeError::UnknownVersion => "UNKNOWN_CODE_VERSION",
            CodeError::Serial(SerialError::CheckCharacter) => "BAD_CHECK_CHARACTER",
            CodeError::Serial(_) => "MALFORMED_SERIAL",
            CodeError::UnknownKey => "UNKNOWN_CODE_KEY",
            CodeError::NotAuthentic => "CODE_NOT_AUTHENTIC",
        }
    }
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeError::Malformed => write!(
                f,
                "not a pass code: expected PN1:<serial>:<verification code>"
            ),
            CodeError::UnknownVersion => {
                write!(f, "this pass code's version is not known to this server")
            }
            CodeError::Serial(e) => write!(f, "{e}"),
            CodeError::UnknownKey => write!(f, "the pass code names an unknown key"),
            CodeError::NotAuthentic => write!(
                f,
                "the verification code does not match the serial: forged or mistyped"
            ),
        }
    }
}

/// MAC keys by id. The current key signs new codes; older keys still verify.
#[derive(Clone)]
pub struct Keyring {
    current: u8,
    keys: BTreeMap<u8, [u8; 32]>,
}

impl Keyring {
    pub fn new(current: u8, keys: BTreeMap<u8, [u8; 32]>) -> Result<Keyring, String> {
        if keys.keys().any(|k| *k >= 32) {
            return Err("key ids are 0 to 31".into());
        }
        if !keys.contains_key(&current) {
            return Err(format!("the current key {current} is not in the keyring"));
        }
        Ok(Keyring { current, keys })
    }

    /// Text form, one `id hex` line per key, the current key marked with `*`.
    pub fn to_text(&self) -> String {
        let mut out = String::from("# passnum pass-code MAC keys: keep secret, keep a backup\n");
        for (id, key) in &self.keys {
            let mark = if *id == self.current { "*" } else { "" };
            out.push_str(&format!("{id}{mark} {}\n", hex(key)));
        }
        out
    }

    pub fn from_text(text: &str) -> Result<Keyring, String> {
        let mut keys = BTreeMap::new();
        let mut current = None;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (id, key) = line.split_once(' ').ok_or("a key line is `id hex`")?;
            let (id, is_current) = id.strip_suffix('*').map_or((id, false), |i| (i, true));
            let id: u8 = id.parse().map_err(|_| "a key id is a number")?;
            let key = unhex32(key.trim()).ok_or("a key is 64 hex digits")?;
            keys.insert(id, key);
            if is_current {
                current = Some(id);
            }
        }
        Keyring::new(current.ok_or("no key is marked current with `*`")?, keys)
    }

    fn tag(&self, key_id: u8, serial: Serial) -> Option<[u8; TAG_CHARS]> {
        let key = self.keys.get(&key_id)?;
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(b"passnum/pass/v1");
        h.update(&[key_id]);
        h.update(&serial.as_u64().to_le_bytes());
        let bits = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8"));
        let mut out = [0u8; TAG_CHARS];
        for (i, c) in out.iter_mut().enumerate() {
            *c = ALPHABET[((bits >> (5 * i)) & 31) as usize];
        }
        Some(out)
    }

    /// The 8-character verification code printed under the QR.
    pub fn verification_code(&self, serial: Serial) -> String {
        let tag = self
            .tag(self.current, serial)
            .expect("the current key exists");
        let mut s = String::with_capacity(VERIFICATION_CHARS);
        s.push(ALPHABET[self.current as usize] as char);
        s.extend(tag.iter().map(|b| *b as char));
        s
    }

    /// What the QR code holds.
    pub fn qr_payload(&self, serial: Serial) -> String {
        format!(
            "{VERSION_PREFIX}:{}:{}",
            serial.compact(),
            self.verification_code(serial)
        )
    }

    /// Reads a scanned QR payload.
    pub fn parse_scanned(&self, text: &str) -> Result<Serial, CodeError> {
        let (serial, code) = payload_parts(text)?;
        self.parse_typed(serial, code)
    }

    /// Reads a typed serial and verification code. Hyphens, spaces and case do not matter.
    pub fn parse_typed(&self, serial: &str, code: &str) -> Result<Serial, CodeError> {
        let serial = Serial::parse(serial).map_err(CodeError::Serial)?;
        let values: Vec<u8> = code
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(symbol_value)
            .collect::<Option<_>>()
            .ok_or(CodeError::Malformed)?;
        if values.len() != VERIFICATION_CHARS {
            return Err(CodeError::Malformed);
        }
        let expected = self.tag(values[0], serial).ok_or(CodeError::UnknownKey)?;
        let given: Vec<u8> = values[1..].iter().map(|v| ALPHABET[*v as usize]).collect();
        // Constant time: a timing difference must not tell how many characters were right.
        let diff = expected
            .iter()
            .zip(&given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(CodeError::NotAuthentic);
        }
        Ok(serial)
    }
}

/// A QR payload's serial and verification code, as text: `PN1:SERIAL:CODE`.
fn payload_parts(text: &str) -> Result<(&str, &str), CodeError> {
    let mut parts = text.trim().split(':');
    let (Some(version), Some(serial), Some(code), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CodeError::Malformed);
    };
    if !version.eq_ignore_ascii_case(VERSION_PREFIX) {
        return Err(
            // Bytes, not str slicing: a version field may hold any UTF-8 (fuzzing found it).
            if version.len() == 3 && version.as_bytes()[..2].eq_ignore_ascii_case(b"PN") {
                CodeError::UnknownVersion
            } else {
                CodeError::Malformed
            },
        );
    }
    Ok((serial, code))
}

/// The serial a QR payload names, unverified: for a client that holds no key, to name a
/// pass the server already accepted.
pub fn named_serial(text: &str) -> Option<Serial> {
    let (serial, _) = payload_parts(text).ok()?;
    Serial::parse(serial).ok()
}

/// Lower-case hex. By table, not `format!`: every authenticated request names its scope so.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes `text` spells in hex (either case), if it is hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    // Digits only: `from_str_radix` alone would take "+f" for 15.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(1, [(1, [7u8; 32]), (2, [9u8; 32])].into()).unwrap()
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte_and_reads_back() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex32(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("00FFa5"), Some(vec![0, 255, 0xa5]), "either case");
        for bad in ["0", "+f", "0g", "é0", " 0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
        assert_eq!(unhex32("00"), None, "32 bytes or none");
    }

    #[test]
    fn scanned_and_typed_round_trip() {
        let k = ring();
        let s = Serial::from_random(0xDEAD_BEEF_1234);
        let payload = k.qr_payload(s);
        assert_eq!(payload.len(), 26);
        assert_eq!(k.parse_scanned(&payload), Ok(s));
        assert_eq!(k.parse_scanned(&payload.to_lowercase()), Ok(s));
        let code = k.verification_code(s);
        assert_eq!(
            k.parse_typed(&s.to_string(), &format!("{}-{}", &code[..4], &code[4..])),
            Ok(s)
        );
    }

    #[test]
    fn forged_altered_and_malformed_codes_are_refused() {
        let k = ring();
        let s = Serial::from_random(42);
        let payload = k.qr_payload(s);
        let mut altered = payload.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.parse_scanned(std::str::from_utf8(&altered).unwrap()),
            Err(CodeError::NotAuthentic)
        );
        let other = Serial::from_random(43);
        let forged = format!("PN1:{}:{}", other.compact(), k.verification_code(s));
        assert_eq!(k.parse_scanned(&forged), Err(CodeError::NotAuthentic));
        assert_eq!(k.parse_scanned("hello"), Err(CodeError::Malformed));
        assert_eq!(
            k.parse_scanned(&payload.replace("PN1", "PN9")),
            Err(CodeError::UnknownVersion)
        );
        let unknown_key = format!("PN1:{}:Z{}", s.compact(), &k.verification_code(s)[1..]);
        assert_eq!(k.parse_scanned(&unknown_key), Err(CodeError::UnknownKey));
    }

    /// Found by fuzzing (fuzz/pass_code): a 3-byte version field holding a 2-byte
    /// character made `parse_scanned` slice inside it and panic.
    #[test]
    fn regression_multibyte_version_field_does_not_panic() {
        let k = ring();
        assert_eq!(
            k.parse_scanned("/\u{e3}:):z\u{8}"),
            Err(CodeError::Malformed)
        );
        assert_eq!(
            k.parse_scanned("é1:0123456789ABX:1K3M5P7Q"),
            Err(CodeError::Malformed)
        );
    }

    #[test]
    fn an_old_key_still_verifies_after_rotation() {
        let s = Serial::from_random(5);
        let old = ring();
        let rotated = Keyring::new(2, [(1, [7u8; 32]), (2, [9u8; 32])].into()).unwrap();
        assert_eq!(rotated.parse_scanned(&old.qr_payload(s)), Ok(s));
        assert_ne!(rotated.qr_payload(s), old.qr_payload(s));
    }

    #[test]
    fn keyring_text_round_trip() {
        let k = ring();
        let back = Keyring::from_text(&k.to_text()).unwrap();
        assert_eq!(
            back.qr_payload(Serial::from_random(1)),
            k.qr_payload(Serial::from_random(1))
        );
    }
}
