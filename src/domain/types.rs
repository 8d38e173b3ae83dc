//! Value types that cannot be wrong: each is parsed once at the edge and trusted after.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Server time in milliseconds since the Unix epoch, UTC. The core never reads a clock:
/// every instant is passed in.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const MS_PER_DAY: i64 = 86_400_000;

    pub fn plus_days(self, days: u32) -> Timestamp {
        Timestamp(self.0 + i64::from(days) * Self::MS_PER_DAY)
    }
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0 + ms)
    }
}

/// An amount of money in euro cents. Money is never a float.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Cents(pub i64);

impl Cents {
    /// A face value above 1 000 € is certainly a typing error: the scheme's passes are 10 €.
    pub const FACE_VALUE_MAX: i64 = 100_000;

    pub fn face_value(cents: i64) -> Result<Cents, &'static str> {
        if cents <= 0 {
            return Err("must be a positive number of cents");
        }
        if cents > Self::FACE_VALUE_MAX {
            return Err("must be at most 100000 cents (1000 EUR)");
        }
        Ok(Cents(cents))
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02} EUR", abs / 100, abs % 100)
    }
}

/// The operator's fee on an order, in basis points of its face value (400 = 4 %), before
/// VAT. Billed to the commanditaire, never taken from the money that pays sites: DOMAIN.md
/// knows #APTIC's 4 % HT and nothing firmer, so it is a rule the operator sets.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FeeRate(pub u16);

impl FeeRate {
    /// 20 %: five times the only rate known. Past it, a typing error is likelier.
    pub const MAX_BASIS_POINTS: u16 = 2_000;

    /// The fee on `amount`, rounded to the nearest cent, half a cent up. Exact: in i128,
    /// so no amount an order can hold overflows.
    pub fn on(self, amount: Cents) -> Cents {
        let scaled = i128::from(amount.0) * i128::from(self.0);
        let cents = (scaled + 5_000).div_euclid(10_000);
        Cents(i64::try_from(cents).expect("a fee is at most a fifth of its amount"))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}
id_type!(
    /// A commanditaire, numbered from 1 in registration order.
    CommanditaireId, "C"
);
id_type!(
    /// A structure (the payee), numbered from 1.
    StructureId, "S"
);
id_type!(
    /// A site (lieu qualifié), numbered from 1.
    SiteId, "L"
);
id_type!(
    /// An order (commande), numbered from 1.
    OrderId, "O"
);
id_type!(
    /// A workshop session, numbered from 1.
    WorkshopId, "W"
);
id_type!(
    /// A hub territorial, numbered from 1.
    HubId, "H"
);
id_type!(
    /// A settlement (one structure's share of a clearing run), numbered from 1.
    SettlementId, "R"
);

/// An INSEE commune code (COG): five characters, `2A`/`2B` for Corsica, 97x/98x overseas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InseeCode([u8; 5]);

impl InseeCode {
    pub fn parse(text: &str) -> Result<InseeCode, &'static str> {
        let bytes: [u8; 5] = text
            .as_bytes()
            .try_into()
            .map_err(|_| "an INSEE code has exactly 5 characters")?;
        let dept = Departement::of_commune_bytes(&bytes)?;
        let rest = &bytes[dept.len()..];
        if !rest.iter().all(u8::is_ascii_digit) {
            return Err("an INSEE code ends in digits");
        }
        Ok(InseeCode(bytes))
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated ASCII")
    }
    pub fn departement(&self) -> Departement {
        Departement::of_commune_bytes(&self.0).expect("validated at parse")
    }
}

impl fmt::Display for InseeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A département code: `01`–`19`, `2A`, `2B`, `21`–`95`, or three digits overseas (971–978, 984–989).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Departement([u8; 3]);

impl Departement {
    pub fn parse(text: &str) -> Result<Departement, &'static str> {
        let b = text.as_bytes();
        let d = match b.len() {
            2 | 3 => Self::of_commune_bytes(&[b[0], b[1], *b.get(2).unwrap_or(&b'0'), b'0', b'0'])?,
            _ => return Err("a département code has 2 or 3 characters"),
        };
        if d.len() != b.len() {
            return Err("not a known département code");
        }
        Ok(d)
    }

    fn of_commune_bytes(b: &[u8; 5]) -> Result<Departement, &'static str> {
        match (b[0], b[1]) {
            (b'2', b'A' | b'B') => Ok(Departement([b[0], b[1], 0])),
            (b'9', b'7' | b'8') => {
                let ok = matches!((b[1], b[2]), (b'7', b'1'..=b'8') | (b'8', b'4'..=b'9'));
                if ok {
                    Ok(Departement([b[0], b[1], b[2]]))
                } else {
                    Err("not a known overseas département or collectivity")
                }
            }
            (d0 @ b'0'..=b'9', d1 @ b'0'..=b'9') => {
                let n = (d0 - b'0') * 10 + (d1 - b'0');
                match n {
                    0 => Err("département 00 does not exist"),
                    20 => Err("Corsica is 2A or 2B, not 20"),
                    96 => Err("département 96 does not exist"),
                    _ => Ok(Departement([d0, d1, 0])),
                }
            }
            _ => Err("a département code is digits, or 2A/2B"),
        }
    }

    pub fn len(&self) -> usize {
        if self.0[2] == 0 {
            2
        } else {
            3
        }
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..self.len()]).expect("validated ASCII")
    }
}

impl fmt::Display for Departement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is paid: a company or public body by SIRET (14 digits, Luhn), an association by RNA.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PayeeId {
    Siret(String),
    Rna(String),
}

/// La Poste's SIREN: its establishments fail Luhn and use a digit-sum rule instead.
const LA_POSTE_SIREN: &str = "356000000";

impl PayeeId {
    pub fn parse(text: &str) -> Result<PayeeId, &'static str> {
        let t = text.trim();
        if t.starts_with('W') || t.starts_with('w') {
            return Self::parse_rna(t);
        }
        Self::parse_siret(t)
    }

    fn parse_siret(t: &str) -> Result<PayeeId, &'static str> {
        let digits: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a SIRET has 14 digits");
        }
        let ok = if digits.starts_with(LA_POSTE_SIREN) {
            digits.bytes().map(|b| u32::from(b - b'0')).sum::<u32>() % 5 == 0
        } else {
            luhn10_valid(&digits)
        };
        if !ok {
            return Err("SIRET check digit is wrong (Luhn)");
        }
        Ok(PayeeId::Siret(digits))
    }

    fn parse_rna(t: &str) -> Result<PayeeId, &'static str> {
        let upper = t.to_ascii_uppercase();
        let ok = upper.len() == 10 && upper[1..].bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err("an RNA number is W followed by 9 digits");
        }
        Ok(PayeeId::Rna(upper))
    }

    pub fn as_str(&self) -> &str {
        match self {
            PayeeId::Siret(s) | PayeeId::Rna(s) => s,
        }
    }
}

/// The Luhn check used by SIREN and SIRET numbers.
pub fn luhn10_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// An IBAN, normalised (no spaces, upper case), with a valid ISO 13616 mod-97 check.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Iban(String);

impl Iban {
    pub fn parse(text: &str) -> Result<Iban, &'static str> {
        let s: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !(15..=34).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("an IBAN has 15 to 34 letters and digits");
        }
        let b = s.as_bytes();
        if !b[0].is_ascii_uppercase() || !b[1].is_ascii_uppercase() {
            return Err("an IBAN starts with a country code");
        }
        if s.starts_with("FR") && s.len() != 27 {
            return Err("a French IBAN has 27 characters");
        }
        if iban_mod97(&s) != 1 {
            return Err("IBAN check digits are wrong (mod 97)");
        }
        Ok(Iban(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn iban_mod97(s: &str) -> u32 {
    let rearranged = s[4..].bytes().chain(s[..4].bytes());
    let mut rem = 0u32;
    for b in rearranged {
        let v = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem
}

/// A service (theme) code such as `demarches-en-ligne`: a lowercase slug.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceCode(String);

impl ServiceCode {
    pub const LEN_MAX: usize = 64;
    pub fn parse(text: &str) -> Result<ServiceCode, &'static str> {
        let ok = !text.is_empty()
            && text.len() <= Self::LEN_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err("a service code is 1 to 64 characters of a-z, 0-9, '-' or '_'");
        }
        Ok(ServiceCode(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Human text (names, labels, references): trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label(String);

impl Label {
    pub const CHARS_MAX: usize = 200;
    pub fn parse(text: &str) -> Result<Label, &'static str> {
        let t = text.trim();
        if t.is_empty() {
            return Err("must not be empty");
        }
        if t.chars().count() > Self::CHARS_MAX {
            return Err("must be at most 200 characters");
        }
        if t.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Label(t.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fee_is_rounded_to_the_nearest_cent_half_up() {
        let cases = [
            (400, 2_000_000, 80_000),
            (400, 1_000, 40),
            (1, 4_999, 0),
            (1, 5_000, 1),
            (250, 300, 8),
            (0, 1_000, 0),
            (2_000, 400_000_000_000_000_003, 80_000_000_000_000_001),
        ];
        for (bp, amount, fee) in cases {
            assert_eq!(
                FeeRate(bp).on(Cents(amount)),
                Cents(fee),
                "{bp} bp of {amount}"
            );
        }
    }

    #[test]
    fn insee_codes() {
        for ok in [
            "75056", "2A004", "2B033", "97105", "97611", "01001", "98735",
        ] {
            assert!(InseeCode::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "7505", "750566", "20004", "00001", "2C004", "97905", "9610A", "75A56", "96001",
        ] {
            assert!(InseeCode::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            InseeCode::parse("97105").unwrap().departement().as_str(),
            "971"
        );
        assert_eq!(
            InseeCode::parse("2A004").unwrap().departement().as_str(),
            "2A"
        );
        assert_eq!(
            InseeCode::parse("33063").unwrap().departement().as_str(),
            "33"
        );
    }

    #[test]
    fn departements() {
        for ok in ["33", "2A", "2B", "971", "976", "01"] {
            assert_eq!(Departement::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["20", "00", "3", "9711", "979", "97", "AA"] {
            assert!(Departement::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn siret_and_rna() {
        // A SIRET that passes Luhn, and a La Poste one that passes only the digit-sum rule.
        assert!(PayeeId::parse("11000201100044").is_ok());
        assert!(PayeeId::parse("35600000000001").is_ok());
        assert!(PayeeId::parse("11000201100045").is_err());
        assert!(PayeeId::parse("1100020110004").is_err());
        assert_eq!(
            PayeeId::parse("w751234567").unwrap(),
            PayeeId::Rna("W751234567".into())
        );
        assert!(PayeeId::parse("W75123456").is_err());
    }

    #[test]
    fn ibans() {
        assert!(Iban::parse("FR76 3000 6000 0112 3456 7890 189").is_ok());
        assert!(Iban::parse("FR76 3000 6000 0112 3456 7890 188").is_err());
        assert!(Iban::parse("DE89370400440532013000").is_ok());
        assert!(Iban::parse("FR7630006000011234567890").is_err());
    }

    #[test]
    fn cents_display() {
        assert_eq!(Cents(1000).to_string(), "10.00 EUR");
        assert_eq!(Cents(-5).to_string(), "-0.05 EUR");
        assert!(Cents::face_value(0).is_err());
        assert!(Cents::face_value(100_001).is_err());
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i32::from(m <= 2), m, d)
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<i32, &'static str> {
    let bad = "a date is YYYY-MM-DD";
    let mut it = text.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad);
    };
    let (y, m, d): (i32, u32, u32) = (
        y.parse().map_err(|_| bad)?,
        m.parse().map_err(|_| bad)?,
        d.parse().map_err(|_| bad)?,
    );
    if !(2000..=2200).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return Err(bad);
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return Err("no such day in that month");
    }
    Ok(days)
}

/// Parses an instant as a device writes it: RFC 3339 to the second, with `Z` or a UTC
/// offset (`2026-12-01T14:03:05+01:00`; fractions of a second are dropped), or plain
/// milliseconds since 1970.
pub fn parse_instant(text: &str) -> Result<Timestamp, &'static str> {
    let bad =
        "an instant is YYYY-MM-DDTHH:MM:SS followed by Z or +HH:MM, or milliseconds since 1970";
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Timestamp).map_err(|_| bad);
    }
    let (date, rest) = text.split_once(['T', 't', ' ']).ok_or(bad)?;
    let days = parse_date(date)?;
    let (clock, offset_min) = match rest.strip_suffix(['Z', 'z']) {
        Some(clock) => (clock, 0),
        None => {
            let at = rest.rfind(['+', '-']).ok_or(bad)?;
            let sign = if rest.as_bytes()[at] == b'-' { -1 } else { 1 };
            (
                &rest[..at],
                sign * hours_minutes(&rest[at + 1..]).ok_or(bad)?,
            )
        }
    };
    let clock = clock.split_once('.').map_or(clock, |(whole, _)| whole);
    let (hm, sec) = clock.rsplit_once(':').ok_or(bad)?;
    let minutes = hours_minutes(hm).ok_or(bad)?;
    let sec: i64 = match sec.parse() {
        Ok(s) if sec.len() == 2 && s < 60 => s,
        _ => return Err(bad),
    };
    let seconds = i64::from(days) * 86_400 + (minutes - offset_min) * 60 + sec;
    Ok(Timestamp(seconds * 1000))
}

/// `HH:MM` (00:00 to 23:59) as minutes.
fn hours_minutes(text: &str) -> Option<i64> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Formats a timestamp's UTC date as `DD/MM/YYYY`, as French forms print it.
pub fn french_date(t: Timestamp) -> String {
    let (y, m, d) = civil_from_days(t.0.div_euclid(Timestamp::MS_PER_DAY) as i32);
    format!("{d:02}/{m:02}/{y}")
}

#[cfg(test)]
mod calendar_tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        for z in -800_000..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(parse_date("2026-02-29"), Err("no such day in that month"));
        assert_eq!(parse_date("2028-02-29"), Ok(days_from_civil(2028, 2, 29)));
        assert_eq!(french_date(Timestamp(1_767_225_600_000)), "01/01/2026");
    }

    #[test]
    fn instants_as_devices_write_them() {
        let t = Timestamp(1_767_225_600_000 + (14 * 3600 + 3 * 60 + 5) * 1000);
        assert_eq!(parse_instant("2026-01-01T14:03:05Z"), Ok(t));
        assert_eq!(parse_instant("2026-01-01T15:03:05+01:00"), Ok(t));
        assert_eq!(parse_instant("2026-01-01T10:03:05.250-04:00"), Ok(t));
        assert_eq!(parse_instant("2026-01-01 14:03:05z"), Ok(t));
        assert_eq!(parse_instant(&t.0.to_string()), Ok(t));
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T14:03:05",
            "2026-01-01T24:00:00Z",
            "2026-01-01T14:60:00Z",
            "2026-01-01T14:03:5Z",
            "2026-02-30T14:03:05Z",
            "2026-01-01T14:03:05+1:00",
            "-5",
            "99999999999999999999999",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }
}
