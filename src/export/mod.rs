//! Files for people and banks outside the engine: the SEPA payment file, CSV statements,
//! the PDF attestation and the open-data usage report. Each is produced in parts from the
//! state (`Export::next`), so that a large run is streamed, never held whole in memory.

pub mod attestation;
pub mod pain001;
pub mod statement;
pub mod usage;

use crate::domain::*;

/// A file written part by part. Each call reads the state under the caller's read lock
/// and appends a bounded part to `out`; it returns false once the file is complete.
pub trait Export: Send {
    fn next(&mut self, state: &State, out: &mut Vec<u8>) -> bool;
}

/// Settlements written per part: a part stays in the tens of kilobytes.
pub const SETTLEMENTS_PER_PART: usize = 256;
/// Lines written per part.
pub const LINES_PER_PART: usize = 2048;

/// "12.34": the decimal point and two digits that XML and machine files expect.
pub fn euros_dot(c: Cents) -> String {
    let sign = if c.0 < 0 { "-" } else { "" };
    let a = c.0.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// "12,34": what a French spreadsheet reads as a number.
pub fn euros_comma(c: Cents) -> String {
    euros_dot(c).replace('.', ",")
}

/// "2026-03-12T14:03:07" (UTC, seconds).
pub fn iso_datetime(t: Timestamp) -> String {
    let (y, m, d) = civil_from_days(t.0.div_euclid(Timestamp::MS_PER_DAY) as i32);
    let s = t.0.rem_euclid(Timestamp::MS_PER_DAY) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// "2026-03-12".
pub fn iso_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn hex(bytes: &[u8]) -> String {
    crate::code::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_in_both_notations() {
        assert_eq!(euros_dot(Cents(5)), "0.05");
        assert_eq!(euros_dot(Cents(-1050)), "-10.50");
        assert_eq!(euros_comma(Cents(100_000_000_001)), "1000000000,01");
        assert_eq!(iso_date(0), "1970-01-01");
    }
}
