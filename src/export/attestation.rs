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
        let mut y = 800.0;
        // The heading: (font, size, text, space after).
        let heading = [
            (
                "F2",
                14.0,
                "Pass numérique — attestation de paiement".to_owned(),
                22.0,
            ),
            (
                "F1",
                10.0,
                format!(
                    "Structure : {} ({})",
                    structure.name,
                    structure.payee.as_str()
                ),
                14.0,
            ),
            (
                "F1",
                10.0,
                format!(
                    "Période : du {} au {} (dates d’exécution)",
                    iso_date(period.from_days),
                    iso_date(period.to_days - 1)
                ),
                14.0,
            ),
            (
                "F1",
                8.0,
                format!("Grand livre au n° {} — empreinte {}", head.0, hex(&head.1)),
                0.0,
            ),
        ];
        for (font, size, s, after) in &heading {
            text(&mut c, font, *size, 50.0, y, s);
            y -= after;
        }
        y -= 24.0;
        for (x, h) in [
            (50.0, "Référence"),
            (230.0, "Exécuté le"),
            (300.0, "Réf. banque"),
            (430.0, "Passes"),
            (480.0, "Montant (€)"),
        ] {
            text(&mut c, "F2", 9.0, x, y, h);
        }
        y -= 14.0;
        for r in chunk {
            text(&mut c, "F1", 9.0, 50.0, y, &r.reference);
            text(&mut c, "F1", 9.0, 230.0, y, &iso_date(r.executed_on_days));
            text(&mut c, "F1", 9.0, 300.0, y, &r.bank_reference);
            text(&mut c, "F1", 9.0, 430.0, y, &r.lines.to_string());
            text(&mut c, "F1", 9.0, 480.0, y, &euros_comma(r.amount));
            y -= 13.0;
        }
        if i + 1 == count {
            y -= 10.0;
            let msg = format!(
                "Total reçu : {} € en {} virement(s)",
                euros_comma(total),
                rows.len()
            );
            text(&mut c, "F2", 11.0, 50.0, y, &msg);
        }
        text(
            &mut c,
            "F1",
            8.0,
            50.0,
            40.0,
            &format!("Page {} / {count}", i + 1),
        );
        c
    });
    write_pages(out, count, contents)
}
