//! CSV statements of a clearing run: per settlement (the run) or per line (a structure's
//! detail). Two dialects: one a French spreadsheet opens as it should (UTF-8 with BOM,
//! `;`, CRLF, decimal comma, dd/mm/yyyy) and one for programs (`,`, LF, cents, ISO 8601).

use super::{euros_comma, hex, iso_datetime, Export, LINES_PER_PART, SETTLEMENTS_PER_PART};
use crate::domain::reports::run_settlements;
use crate::domain::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Spreadsheet,
    Machine,
}

impl Dialect {
    fn sep(self) -> char {
        match self {
            Dialect::Spreadsheet => ';',
            Dialect::Machine => ',',
        }
    }
    fn eol(self) -> &'static str {
        match self {
            Dialect::Spreadsheet => "\r\n",
            Dialect::Machine => "\n",
        }
    }
    fn money(self, c: Cents) -> String {
        match self {
            Dialect::Spreadsheet => euros_comma(c),
            Dialect::Machine => c.0.to_string(),
        }
    }
    fn time(self, t: Timestamp) -> String {
        match self {
            Dialect::Spreadsheet => {
                let s = t.0.rem_euclid(Timestamp::MS_PER_DAY) / 1000;
                format!("{} {:02}:{:02}", french_date(t), s / 3600, s / 60 % 60)
            }
            Dialect::Machine => format!("{}Z", iso_datetime(t)),
        }
    }

    /// One CSV row: fields quoted when they hold the separator, a quote or a line break.
    /// In the spreadsheet dialect a field that a spreadsheet would run as a formula
    /// (`= + - @`) is prefixed with `'`: names come from open data.
    pub fn row(self, out: &mut Vec<u8>, fields: &[&str]) {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(self.sep() as u8);
            }
            let guarded;
            let f = if self == Dialect::Spreadsheet && f.starts_with(['=', '+', '-', '@']) {
                guarded = format!("'{f}");
                guarded.as_str()
            } else {
                f
            };
            if f.contains([self.sep(), '"', '\n', '\r']) {
                out.push(b'"');
                out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
                out.push(b'"');
            } else {
                out.extend_from_slice(f.as_bytes());
            }
        }
        out.extend_from_slice(self.eol().as_bytes());
    }

    fn start(self, out: &mut Vec<u8>, spreadsheet: &[&str], machine: &[&str]) {
        match self {
            Dialect::Spreadsheet => {
                out.extend_from_slice("\u{feff}".as_bytes());
                self.row(out, spreadsheet);
            }
            Dialect::Machine => self.row(out, machine),
        }
    }
}

fn status_label(s: &SettlementStatus) -> (&'static str, String) {
    match s {
        SettlementStatus::Created => ("created", String::new()),
        SettlementStatus::Paid { bank_reference, .. } => ("paid", bank_reference.to_string()),
        SettlementStatus::Rejected { reason, .. } => ("rejected", reason.to_string()),
    }
}

/// The run's settlements (of one structure, if named), returned ones only if asked.
fn settlement_ids(
    state: &State,
    cut_off: Timestamp,
    structure: Option<StructureId>,
    returned_too: bool,
) -> Vec<SettlementId> {
    run_settlements(state, cut_off)
        .filter(|s| structure.is_none_or(|id| s.structure == id))
        .filter(|s| returned_too || !matches!(s.status, SettlementStatus::Rejected { .. }))
        .map(|s| s.id)
        .collect()
}

/// One row per settlement of a run (optionally of one structure).
pub struct RunStatement {
    dialect: Dialect,
    settlements: Vec<SettlementId>,
    next: Option<usize>,
}

impl RunStatement {
    pub fn new(
        state: &State,
        cut_off: Timestamp,
        structure: Option<StructureId>,
        dialect: Dialect,
    ) -> RunStatement {
        RunStatement {
            dialect,
            settlements: settlement_ids(state, cut_off, structure, true),
            next: None,
        }
    }
}

impl Export for RunStatement {
    fn next(&mut self, state: &State, out: &mut Vec<u8>) -> bool {
        let d = self.dialect;
        let Some(start) = self.next else {
            d.start(
                out,
                &[
                    "Référence",
                    "Structure",
                    "Nom",
                    "SIRET ou RNA",
                    "Passes",
                    "Montant (€)",
                    "État",
                    "Référence banque ou motif",
                    "Racine Merkle",
                ],
                &[
                    "reference",
                    "structure_id",
                    "structure_name",
                    "payee_id",
                    "lines",
                    "amount_cents",
                    "status",
                    "bank_reference_or_reason",
                    "merkle_root",
                ],
            );
            self.next = Some(0);
            return true;
        };
        let end = (start + SETTLEMENTS_PER_PART).min(self.settlements.len());
        for id in &self.settlements[start..end] {
            let s = &state.settlements[id];
            let st = &state.structures[&s.structure];
            let (status, detail) = status_label(&s.status);
            d.row(
                out,
                &[
                    &s.reference,
                    &s.structure.0.to_string(),
                    st.name.as_str(),
                    st.payee.as_str(),
                    &s.lines.len().to_string(),
                    &d.money(s.total),
                    status,
                    &detail,
                    &hex(&s.merkle_root),
                ],
            );
        }
        self.next = Some(end);
        end < self.settlements.len()
    }
}

/// One row per settlement line: what a structure is paid for, pass by pass.
pub struct LineStatement {
    dialect: Dialect,
    settlements: Vec<SettlementId>,
    /// (settlement position, line position); `None` until the header is written.
    at: Option<(usize, usize)>,
}

impl LineStatement {
    pub fn new(
        state: &State,
        cut_off: Timestamp,
        structure: Option<StructureId>,
        dialect: Dialect,
    ) -> LineStatement {
        LineStatement {
            dialect,
            settlements: settlement_ids(state, cut_off, structure, false),
            at: None,
        }
    }
}

impl Export for LineStatement {
    fn next(&mut self, state: &State, out: &mut Vec<u8>) -> bool {
        let d = self.dialect;
        let Some((mut si, mut li)) = self.at else {
            d.start(
                out,
                &[
                    "Référence",
                    "Pass",
                    "Lieu",
                    "Nom du lieu",
                    "Commune (INSEE)",
                    "Service",
                    "Date",
                    "Commanditaire",
                    "Commande",
                    "Montant (€)",
                ],
                &[
                    "reference",
                    "serial",
                    "site_id",
                    "site_name",
                    "commune_insee",
                    "service",
                    "redeemed_at",
                    "commanditaire_id",
                    "order_id",
                    "amount_cents",
                ],
            );
            self.at = Some((0, 0));
            return true;
        };
        let mut written = 0;
        while si < self.settlements.len() && written < LINES_PER_PART {
            let s = &state.settlements[&self.settlements[si]];
            for l in s.lines.iter().skip(li).take(LINES_PER_PART - written) {
                let site = state.sites.get(&l.site).map_or("", |x| x.name.as_str());
                d.row(
                    out,
                    &[
                        &s.reference,
                        &l.serial.to_string(),
                        &l.site.0.to_string(),
                        site,
                        l.commune.as_str(),
                        l.service.as_str(),
                        &d.time(l.redeemed_at),
                        &l.commanditaire.0.to_string(),
                        &l.order.0.to_string(),
                        &d.money(l.amount),
                    ],
                );
                written += 1;
                li += 1;
            }
            if li >= s.lines.len() {
                si += 1;
                li = 0;
            }
        }
        self.at = Some((si, li));
        si < self.settlements.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(d: Dialect, fields: &[&str]) -> String {
        let mut out = vec![];
        d.row(&mut out, fields);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(
            row(Dialect::Machine, &["a,b", "c\"d", "e"]),
            "\"a,b\",\"c\"\"d\",e\n"
        );
        assert_eq!(
            row(Dialect::Spreadsheet, &["a,b", "x;y"]),
            "a,b;\"x;y\"\r\n"
        );
        assert_eq!(
            row(Dialect::Spreadsheet, &["=HYPERLINK(1)", "-2"]),
            "'=HYPERLINK(1);'-2\r\n"
        );
        assert_eq!(
            row(Dialect::Machine, &["=1"]),
            "=1\n",
            "machine files are data, not sheets"
        );
    }

    #[test]
    fn money_and_time_per_dialect() {
        assert_eq!(Dialect::Spreadsheet.money(Cents(123_456)), "1234,56");
        assert_eq!(Dialect::Machine.money(Cents(123_456)), "123456");
        let t = Timestamp(1_767_225_600_000 + 14 * 3_600_000 + 3 * 60_000 + 7_000);
        assert_eq!(Dialect::Spreadsheet.time(t), "01/01/2026 14:03");
        assert_eq!(Dialect::Machine.time(t), "2026-01-01T14:03:07Z");
    }
}
