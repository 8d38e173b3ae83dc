//! The payment attestation a public site's accountant files: what a structure received
//! over a period, settlement by settlement, with the references its bank statement shows
//! and the ledger position the figures were read at.

use super::{euros_comma, hex, iso_date};
use crate::domain::*;
use crate::render::{text, write_pages};

/// Settlement rows on one A4 page.
const ROWS_PER_PAGE: usize = 40;

/// One paid settlement, as the attestation lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub reference: String,
    pub executed_on_days: i32,
    pub bank_reference: String,
    pub lines: usize,
    pub amount: Cents,
}

/// The settlements paid to `structure` with an execution date in `[from_days, to_days)`.
pub fn received(
    state: &State,
    structure: StructureId,
    from_days: i32,
    to_days: i32,
) -> Vec<Received> {
    let mut out: Vec<Received> = state
        .settlements
        .values()
        .filter(|s| s.structure == structure)
        .filter_map(|s| match &s.status {
            SettlementStatus::Paid {
                executed_on_days,
                bank_reference,
                amount,
                ..
            } if (from_days..to_days).contains(executed_on_days) => Some(Received {
                reference: s.reference.clone(),
                executed_on_days: *executed_on_days,
                bank_reference: bank_reference.to_string(),
                lines: s.lines.len(),
                amount: *amount,
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| (a.executed_on_days, &a.reference).cmp(&(b.executed_on_days, &b.reference)));
    out
}

pub struct Period {
    pub from_days: i32,
    pub to_days: i32,
}

/// Writes the attestation; the total is the sum of the rows it lists.
pub fn pdf(
    out: &mut impl std::io::Write,
    structure: &Structure,
    period: &Period,
    rows: &[Received],
    head: (u64, [u8; 32]),
) -> std::io::Result<()> {
    let total = Cents(rows.iter().map(|r| r.amount.0).sum());
    let pages: Vec<&[Received]> = if rows.is_empty() {
        vec![&[]]
    } else {
        rows.chunks(ROWS_PER_PAGE).collect()
    };
    let count = pages.len();
    let contents = pages.into_iter().enumerate().map(|(i, chunk)| {
        let mut c = Vec::new();
        let mut y = heading(&mut c, structure, period, head);
        y = table(&mut c, y, chunk);
        if i + 1 == count {
            let msg = format!(
                "Total reçu : {} € en {} virement(s)",
                euros_comma(total),
                rows.len()
            );
            text(&mut c, "F2", 11.0, 50.0, y - 10.0, &msg);
        }
        let footer = format!("Page {} / {count}", i + 1);
        text(&mut c, "F1", 8.0, 50.0, 40.0, &footer);
        c
    });
    write_pages(out, count, contents)
}

/// Every page's heading: who, when, and the ledger position read; returns where the table
/// starts.
fn heading(c: &mut Vec<u8>, structure: &Structure, period: &Period, head: (u64, [u8; 32])) -> f32 {
    let structure = format!(
        "Structure : {} ({})",
        structure.name,
        structure.payee.as_str()
    );
    let period = format!(
        "Période : du {} au {} (dates d’exécution)",
        iso_date(period.from_days),
        iso_date(period.to_days - 1)
    );
    let ledger = format!("Grand livre au n° {} — empreinte {}", head.0, hex(&head.1));
    // (font, size, text, space after)
    let lines = [
        ("F2", 14.0, "Pass numérique — attestation de paiement", 22.0),
        ("F1", 10.0, structure.as_str(), 14.0),
        ("F1", 10.0, period.as_str(), 14.0),
        ("F1", 8.0, ledger.as_str(), 0.0),
    ];
    let mut y = 800.0;
    for (font, size, s, after) in lines {
        text(c, font, size, 50.0, y, s);
        y -= after;
    }
    y - 24.0
}

/// The settlements' table from `y` down: its header, a row each; returns the next line's y.
fn table(c: &mut Vec<u8>, mut y: f32, rows: &[Received]) -> f32 {
    for (x, h) in [
        (50.0, "Référence"),
        (230.0, "Exécuté le"),
        (300.0, "Réf. banque"),
        (430.0, "Passes"),
        (480.0, "Montant (€)"),
    ] {
        text(c, "F2", 9.0, x, y, h);
    }
    y -= 14.0;
    for r in rows {
        text(c, "F1", 9.0, 50.0, y, &r.reference);
        text(c, "F1", 9.0, 230.0, y, &iso_date(r.executed_on_days));
        text(c, "F1", 9.0, 300.0, y, &r.bank_reference);
        text(c, "F1", 9.0, 430.0, y, &r.lines.to_string());
        text(c, "F1", 9.0, 480.0, y, &euros_comma(r.amount));
        y -= 13.0;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Received> {
        (0..n)
            .map(|i| Received {
                reference: format!("PN-2026-02-{i:04}"),
                executed_on_days: 20_500 + i as i32,
                bank_reference: format!("VIR{i}"),
                lines: i + 1,
                amount: Cents(1000 * (i as i64 + 1)),
            })
            .collect()
    }

    fn attestation(rows: &[Received]) -> String {
        let structure = Structure {
            id: StructureId(1),
            name: Label::parse("Médiathèque de Guéret").unwrap(),
            payee: PayeeId::parse("11000201100044").unwrap(),
            iban: None,
            iban_verified: false,
        };
        let period = Period {
            from_days: 20_500,
            to_days: 20_600,
        };
        let mut out = vec![];
        pdf(&mut out, &structure, &period, rows, (42, [7; 32])).unwrap();
        // WinAnsi, one byte a character: read each as its Latin-1 code point (€ is 0x80).
        out.iter().map(|&b| b as char).collect()
    }

    /// A page holds 40 settlements: the 41st starts a second page, with the heading again;
    /// the total (the sum of every row, on the last page only) follows the last row.
    #[test]
    fn rows_past_a_page_go_on_the_next_one_and_the_total_ends_the_last() {
        let pdf = attestation(&rows(41));
        let at = |s: &str| pdf.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("Page 1 / 2") < at("Page 2 / 2"));
        assert_eq!(pdf.matches("attestation de paiement").count(), 2);
        assert_eq!(pdf.matches("Grand livre au n\u{b0} 42").count(), 2);
        // 10 € × (1 + … + 41) = 8 610 €, over 41 transfers, once.
        assert_eq!(
            pdf.matches("Total re\u{e7}u : 8610,00 \u{80} en 41 virement\\(s\\)")
                .count(),
            1
        );
        assert!(at("PN-2026-02-0039") < at("Page 1 / 2"));
        assert!(at("Page 1 / 2") < at("PN-2026-02-0040"));
        assert!(at("PN-2026-02-0040") < at("Total re"));
        // Each row one line below the last: the 40th at 800 - 22 - 14 - 14 - 24 - 14 - 39 × 13.
        assert!(pdf.contains("50.0 205.0 Td (PN-2026-02-0039)"), "{pdf}");
    }

    #[test]
    fn a_period_without_payments_is_one_page_with_a_zero_total() {
        let pdf = attestation(&[]);
        assert!(pdf.contains("Page 1 / 1"), "{pdf}");
        assert!(
            pdf.contains("Total re\u{e7}u : 0,00 \u{80} en 0 virement\\(s\\)"),
            "{pdf}"
        );
    }
}
