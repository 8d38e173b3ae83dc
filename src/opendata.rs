//! The national standard of digital-mediation places ("standard-mediation-num", LaMednum /
//! ANCT): reading its CSV into validated rows, and writing referenced sites back in it.
//! Pure: text in, rows and text out.

use crate::domain::import::{PlaceRow, RowRejection};
use crate::domain::*;
use std::collections::HashMap;

/// The standard's columns, in its order.
pub const COLUMNS: [&str; 32] = [
    "id",
    "pivot",
    "nom",
    "commune",
    "code_postal",
    "code_insee",
    "adresse",
    "complement_adresse",
    "latitude",
    "longitude",
    "typologie",
    "telephone",
    "courriels",
    "site_web",
    "horaires",
    "presentation_resume",
    "presentation_detail",
    "source",
    "itinerance",
    "structure_parente",
    "date_maj",
    "services",
    "publics_specifiquement_adresses",
    "prise_en_charge_specifique",
    "frais_a_charge",
    "dispositif_programmes_nationaux",
    "formations_labels",
    "autres_formations_labels",
    "modalites_acces",
    "modalites_accompagnement",
    "fiche_acces_libre",
    "prise_rdv",
];

/// Columns passnum needs on every row. `code_insee` is optional in the standard, but a
/// place without it cannot be checked against any perimeter.
const REQUIRED: [&str; 6] = ["id", "pivot", "nom", "code_insee", "date_maj", "services"];

/// A kept text field is at most this long: the listing is republished, not an archive.
pub const FIELD_CHARS_MAX: usize = 1_000;

/// The label the standard uses for places that take the Pass numérique.
pub const PASS_NUMERIQUE: &str = "Pass numérique";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileError {
    Encoding,
    UnterminatedQuote { line: u32 },
    MissingColumns(Vec<&'static str>),
    Empty,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Encoding => write!(f, "the file is not UTF-8"),
            FileError::UnterminatedQuote { line } => {
                write!(f, "a quoted field opened at line {line} never closes")
            }
            FileError::MissingColumns(c) => {
                write!(f, "the header lacks the columns {}", c.join(", "))
            }
            FileError::Empty => write!(f, "the file has no header"),
        }
    }
}

/// One CSV record and the line it starts on.
pub struct Record {
    pub line: u32,
    pub fields: Vec<String>,
}

/// Splits RFC 4180 CSV: commas, double quotes with `""` escapes, line breaks inside quotes,
/// CRLF or LF. A byte-order mark is skipped.
pub fn records(text: &str) -> Result<Vec<Record>, FileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = vec![];
    let mut fields = vec![];
    let mut field = String::new();
    let (mut line, mut start_line) = (1u32, 1u32);
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut at_record_start = true;
    while let Some(c) = chars.next() {
        if at_record_start {
            start_line = line;
            at_record_start = false;
        }
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                out.push(Record {
                    line: start_line,
                    fields: std::mem::take(&mut fields),
                });
                line += 1;
                at_record_start = true;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(FileError::UnterminatedQuote { line: start_line });
    }
    if !at_record_start {
        fields.push(field);
        out.push(Record {
            line: start_line,
            fields,
        });
    }
    out.retain(|r| !(r.fields.len() == 1 && r.fields[0].trim().is_empty()));
    Ok(out)
}

/// Reads a file of the standard: every row is either a validated `PlaceRow` or a rejection
/// naming its line and every reason. One bad row never stops the others.
pub fn read(text: &str) -> Result<(Vec<PlaceRow>, Vec<RowRejection>), FileError> {
    let mut recs = records(text)?.into_iter();
    let header = recs.next().ok_or(FileError::Empty)?;
    let columns: HashMap<String, usize> = header
        .fields
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().to_lowercase(), i))
        .collect();
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|c| !columns.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        return Err(FileError::MissingColumns(missing));
    }
    let mut rows = vec![];
    let mut rejected = vec![];
    for rec in recs {
        let get = |name: &str| -> String {
            columns
                .get(name)
                .and_then(|i| rec.fields.get(*i))
                .map_or("", |s| s.trim())
                .to_owned()
        };
        match row(rec.line, &get) {
            Ok(r) => rows.push(r),
            Err(reasons) => rejected.push(RowRejection {
                line: rec.line,
                id: get("id"),
                reason: reasons.join("; "),
            }),
        }
    }
    Ok((rows, rejected))
}

fn row(line: u32, get: &dyn Fn(&str) -> String) -> Result<PlaceRow, Vec<String>> {
    let mut why = Why::default();
    let mut field = |name: &str| why.bounded(name, get(name));
    let (id, nom, commune, adresse, code_postal, horaires, date_maj) = (
        field("id"),
        field("nom"),
        field("commune"),
        field("adresse"),
        field("code_postal"),
        field("horaires"),
        field("date_maj"),
    );
    why.require("id", !id.is_empty(), "required");
    why.take("nom", Label::parse(&nom));
    let payee = why.take("pivot", PayeeId::parse(&get("pivot")));
    let insee = why.take("code_insee", InseeCode::parse(&get("code_insee")));
    let postal_ok = code_postal.is_empty()
        || (code_postal.len() == 5 && code_postal.bytes().all(|b| b.is_ascii_digit()));
    why.require("code_postal", postal_ok, "5 digits");
    let latitude = why.take("latitude", micro_degrees(&get("latitude"), 90));
    let longitude = why.take("longitude", micro_degrees(&get("longitude"), 180));
    why.take("date_maj", parse_date(&date_maj));
    let services = multi(&get("services"));
    why.require("services", !services.is_empty(), "at least one service");
    let itinerance = get("itinerance").to_lowercase();
    let itinerant = itinerance.contains("itinérant") || itinerance.contains("itinerant");
    let (Some(payee), Some(commune_code), Some(latitude_micro), Some(longitude_micro), []) =
        (payee, insee, latitude, longitude, why.0.as_slice())
    else {
        return Err(why.0);
    };
    let listing = Listing {
        id,
        nom,
        commune,
        code_postal,
        code_insee: Some(commune_code),
        adresse,
        latitude_micro,
        longitude_micro,
        horaires,
        services,
        modalites_accompagnement: multi(&get("modalites_accompagnement")),
        frais_a_charge: multi(&get("frais_a_charge")),
        date_maj,
    };
    Ok(PlaceRow {
        line,
        payee,
        itinerant,
        commune: commune_code,
        listing,
    })
}

/// A row's problems, each as "field: what is wrong", all told at once so that one pass
/// over the file shows a publisher every fix a row needs.
#[derive(Default)]
struct Why(Vec<String>);

impl Why {
    /// The field's value, noting it when it is longer than a field may be.
    fn bounded(&mut self, name: &str, value: String) -> String {
        if value.chars().count() > FIELD_CHARS_MAX {
            self.0
                .push(format!("{name}: longer than {FIELD_CHARS_MAX} characters"));
        }
        value
    }

    fn require(&mut self, name: &str, ok: bool, what: &str) {
        if !ok {
            self.0.push(format!("{name}: {what}"));
        }
    }

    /// The parsed value, or `None` with the field's error noted.
    fn take<T, E: std::fmt::Display>(&mut self, name: &str, parsed: Result<T, E>) -> Option<T> {
        parsed.map_err(|e| self.0.push(format!("{name}: {e}"))).ok()
    }
}

/// Splits a multi-valued field on `|` (the standard's separator).
fn multi(v: &str) -> Vec<String> {
    v.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a decimal coordinate into millionths of a degree, exactly (no floats), within
/// ±`bound` degrees. Empty is allowed: coordinates are optional.
pub fn micro_degrees(text: &str, bound: i64) -> Result<Option<i32>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || format!("a decimal number of degrees within ±{bound}");
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 3 || !all_digits(int) || !all_digits(frac) {
        return Err(bad());
    }
    let mut frac6: String = frac.chars().take(6).collect();
    while frac6.len() < 6 {
        frac6.push('0');
    }
    let micro = int.parse::<i64>().map_err(|_| bad())? * 1_000_000
        + frac6.parse::<i64>().map_err(|_| bad())?;
    if micro > bound * 1_000_000 {
        return Err(bad());
    }
    Ok(Some(if neg { -micro } else { micro } as i32))
}

fn format_micro(v: Option<i32>) -> String {
    v.map_or(String::new(), |m| {
        let sign = if m < 0 { "-" } else { "" };
        let a = i64::from(m).abs();
        format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
    })
}

/// Quotes a CSV field when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub fn header_line() -> String {
    let mut s = COLUMNS.join(",");
    s.push_str("\r\n");
    s
}

/// The rows of one site in the standard: one per listing (a bus: one per stop).
pub fn site_lines(site: &Site, structure: &Structure) -> String {
    let mut out = String::new();
    let itinerance = match site.kind {
        SiteKind::Itinerant { .. } => "Itinérant",
        _ => "Fixe",
    };
    for l in &site.listings {
        let mut values: HashMap<&str, String> = HashMap::new();
        values.insert("id", l.id.clone());
        values.insert("pivot", structure.payee.as_str().to_owned());
        values.insert("nom", l.nom.clone());
        values.insert("commune", l.commune.clone());
        values.insert("code_postal", l.code_postal.clone());
        values.insert(
            "code_insee",
            l.code_insee.map(|c| c.to_string()).unwrap_or_default(),
        );
        values.insert("adresse", l.adresse.clone());
        values.insert("latitude", format_micro(l.latitude_micro));
        values.insert("longitude", format_micro(l.longitude_micro));
        values.insert("horaires", l.horaires.clone());
        values.insert("source", "passnum".into());
        values.insert("itinerance", itinerance.into());
        values.insert("date_maj", l.date_maj.clone());
        values.insert("services", l.services.join("|"));
        values.insert("frais_a_charge", l.frais_a_charge.join("|"));
        values.insert("dispositif_programmes_nationaux", PASS_NUMERIQUE.into());
        values.insert(
            "modalites_accompagnement",
            l.modalites_accompagnement.join("|"),
        );
        let line: Vec<String> = COLUMNS
            .iter()
            .map(|c| csv_field(values.get(c).map_or("", String::as_str)))
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_and_line_breaks() {
        let recs = records("a,b,c\r\n1,\"x, y\",\"line\nbreak \"\"q\"\"\"\n2,,\n").unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].fields, ["1", "x, y", "line\nbreak \"q\""]);
        assert_eq!((recs[1].line, recs[2].line), (2, 4));
        assert_eq!(recs[2].fields, ["2", "", ""]);
        assert_eq!(
            records("a\n\"open").err(),
            Some(FileError::UnterminatedQuote { line: 2 })
        );
    }

    /// One row of the standard: the fields given, every other column empty.
    fn one_row(fields: &[(&str, &str)]) -> Result<PlaceRow, String> {
        let line: Vec<String> = COLUMNS
            .iter()
            .map(|c| {
                let v = fields.iter().find(|(n, _)| n == c).map_or("", |(_, v)| *v);
                csv_field(v)
            })
            .collect();
        let (mut rows, mut rejected) = read(&(header_line() + &line.join(","))).unwrap();
        match (rows.pop(), rejected.pop()) {
            (Some(row), None) => Ok(row),
            (None, Some(r)) => Err(r.reason),
            other => panic!("one row, one outcome: {other:?}"),
        }
    }

    const GOOD: [(&str, &str); 9] = [
        ("id", "med-1"),
        ("pivot", "11000201100044"),
        ("nom", "Médiathèque"),
        ("code_postal", "33000"),
        ("code_insee", "33063"),
        ("latitude", "44.8"),
        ("longitude", "-0.57"),
        ("date_maj", "2026-09-01"),
        ("services", "Aide aux démarches administratives"),
    ];

    fn with(changes: &[(&str, &str)]) -> Result<PlaceRow, String> {
        let mut fields: Vec<(&str, &str)> = GOOD.to_vec();
        for (name, value) in changes {
            fields.retain(|(n, _)| n != name);
            fields.push((name, value));
        }
        one_row(&fields)
    }

    /// Each field's rule refuses the row with the field named; several broken fields are
    /// all named at once, in column order.
    #[test]
    fn a_row_is_refused_naming_each_field_it_breaks() {
        let row = with(&[]).unwrap();
        assert_eq!(row.listing.latitude_micro, Some(44_800_000));
        assert!(!row.itinerant);
        let long = "x".repeat(FIELD_CHARS_MAX + 1);
        for (field, value, reason) in [
            ("id", "", "id: required"),
            ("nom", "", "nom: "),
            ("pivot", "12345678901234", "pivot: "),
            ("code_insee", "3306", "code_insee: "),
            ("code_postal", "3300", "code_postal: 5 digits"),
            ("code_postal", "33 00", "code_postal: 5 digits"),
            ("latitude", "91", "latitude: "),
            ("longitude", "west", "longitude: "),
            ("date_maj", "01/09/2026", "date_maj: "),
            ("services", " | ", "services: at least one service"),
            (
                "adresse",
                long.as_str(),
                "adresse: longer than 1000 characters",
            ),
        ] {
            let why = with(&[(field, value)]).expect_err(field);
            assert!(why.starts_with(reason), "{field}={value:?}: {why}");
            assert!(!why.contains(';'), "{field}: only its own reason: {why}");
        }
        let why = with(&[("id", ""), ("code_postal", "x"), ("services", "")]).unwrap_err();
        let fields: Vec<&str> = why
            .split("; ")
            .map(|r| r.split(':').next().unwrap())
            .collect();
        assert_eq!(fields, ["id", "code_postal", "services"]);
        assert_eq!(
            with(&[("code_postal", "")]).unwrap().listing.code_postal,
            ""
        );
        assert!(with(&[("itinerance", "Itinérant")]).unwrap().itinerant);
    }

    #[test]
    fn coordinates_are_exact_micro_degrees() {
        assert_eq!(micro_degrees("44.837789", 90), Ok(Some(44_837_789)));
        assert_eq!(micro_degrees("-0.5792", 180), Ok(Some(-579_200)));
        assert_eq!(micro_degrees("", 90), Ok(None));
        assert!(micro_degrees("91", 90).is_err());
        assert!(micro_degrees("4a.5", 90).is_err());
        assert!(micro_degrees("1e5", 90).is_err());
        assert_eq!(format_micro(Some(-579_200)), "-0.579200");
    }
}
