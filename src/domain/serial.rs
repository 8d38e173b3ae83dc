//! A pass's serial: 60 random bits, written as 12 Crockford base-32 characters and a
//! Luhn mod 32 check character, grouped for reading aloud: `ABCD-EFGH-JKMN-P`.
//!
//! Why 60 bits: among 10⁶ live passes a guessed serial is live with probability
//! 10⁶ / 2⁶⁰ ≈ 10⁻¹², before the MAC (see `code`) divides that by another 2³⁵.
//! Why Luhn mod 32: it catches every single wrong character and every swap of two
//! neighbours but one, using only the 32 symbols a person can type (no `*~$=`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Crockford's base-32 alphabet: no I, L, O or U, so nothing is misread.
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const SERIAL_BITS: u32 = 60;
const PAYLOAD_CHARS: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Serial(u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialError {
    Length,
    Character,
    CheckCharacter,
}

impl fmt::Display for SerialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SerialError::Length => "a serial has 13 characters (hyphens and spaces are ignored)",
            SerialError::Character => "a serial uses only 0-9 and A-Z without I, L, O, U",
            SerialError::CheckCharacter => {
                "the serial's check character does not match: a typing mistake"
            }
        })
    }
}

impl Serial {
    /// Keeps the low 60 bits of `random`: the caller brings the randomness.
    pub fn from_random(random: u64) -> Serial {
        Serial(random & ((1u64 << SERIAL_BITS) - 1))
    }
    pub fn from_u64(v: u64) -> Option<Serial> {
        (v >> SERIAL_BITS == 0).then_some(Serial(v))
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses typed or scanned text; case, hyphens and spaces do not matter, and the
    /// look-alikes I, L (→ 1) and O (→ 0) are read as Crockford says.
    pub fn parse(text: &str) -> Result<Serial, SerialError> {
        let mut values = [0u8; PAYLOAD_CHARS + 1];
        let mut n = 0;
        for c in text.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
            if n == values.len() {
                return Err(SerialError::Length);
            }
            values[n] = symbol_value(c).ok_or(SerialError::Character)?;
            n += 1;
        }
        if n != values.len() {
            return Err(SerialError::Length);
        }
        if luhn32_check(&values[..PAYLOAD_CHARS]) != values[PAYLOAD_CHARS] {
            return Err(SerialError::CheckCharacter);
        }
        let v = values[..PAYLOAD_CHARS]
            .iter()
            .fold(0u64, |acc, d| (acc << 5) | u64::from(*d));
        Ok(Serial(v))
    }

    fn digits(self) -> [u8; PAYLOAD_CHARS] {
        let mut out = [0u8; PAYLOAD_CHARS];
        for (i, d) in out.iter_mut().enumerate() {
            *d = ((self.0 >> (5 * (PAYLOAD_CHARS - 1 - i))) & 31) as u8;
        }
        out
    }

    /// The 13 characters without grouping, as they go into a QR payload.
    pub fn compact(self) -> String {
        String::from_utf8(self.symbols().to_vec()).expect("the alphabet is ASCII")
    }

    /// The payload's symbols and the check symbol, on the stack: every reply names a serial.
    fn symbols(self) -> [u8; PAYLOAD_CHARS + 1] {
        let digits = self.digits();
        let mut out = [0u8; PAYLOAD_CHARS + 1];
        for (o, d) in out.iter_mut().zip(digits) {
            *o = ALPHABET[d as usize];
        }
        out[PAYLOAD_CHARS] = ALPHABET[luhn32_check(&digits) as usize];
        out
    }
}

impl fmt::Display for Serial {
    /// Grouped for people: `ABCD-EFGH-JKMN-P`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.symbols();
        let mut grouped = [b'-'; PAYLOAD_CHARS + 1 + 3];
        for (i, symbol) in c.iter().enumerate() {
            grouped[i + i / 4] = *symbol;
        }
        f.write_str(std::str::from_utf8(&grouped).expect("the alphabet is ASCII"))
    }
}

pub fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'I' | 'L' => '1',
        'O' => '0',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|a| *a as char == c)
        .map(|p| p as u8)
}

/// Luhn mod N with N = 32: the check value that makes the weighted sum a multiple of 32.
fn luhn32_check(values: &[u8]) -> u8 {
    let mut factor = 2u32;
    let mut sum = 0u32;
    for v in values.iter().rev() {
        let addend = factor * u32::from(*v);
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    ((32 - sum % 32) % 32) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_grouping() {
        let s = Serial::from_random(0x0123_4567_89AB_CDEF);
        let text = s.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(Serial::parse(&text), Ok(s));
        assert_eq!(Serial::parse(&text.to_lowercase()), Ok(s));
        assert_eq!(Serial::parse(&text.replace('-', " ")), Ok(s));
    }

    #[test]
    fn refusals() {
        assert_eq!(Serial::parse("ABC"), Err(SerialError::Length));
        assert_eq!(Serial::parse("ABCD-EFGH-JKMN-PQ"), Err(SerialError::Length));
        assert_eq!(
            Serial::parse("ABCD-EFGH-JKMN-U"),
            Err(SerialError::Character)
        );
    }

    proptest! {
        #[test]
        fn every_single_substitution_is_caught(v in any::<u64>(), pos in 0usize..13, delta in 1u8..32) {
            let s = Serial::from_random(v);
            let mut chars: Vec<u8> = s.compact().into_bytes();
            let old = symbol_value(chars[pos] as char).unwrap();
            chars[pos] = ALPHABET[((old + delta) % 32) as usize];
            let typed = String::from_utf8(chars).unwrap();
            prop_assert_eq!(Serial::parse(&typed), Err(SerialError::CheckCharacter));
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = Serial::parse(&text);
        }
    }
}
