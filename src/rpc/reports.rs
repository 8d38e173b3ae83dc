//! Clearing reports to protobuf, and the date arguments of the Clearing service.

use super::errors::Violations;
use super::pb;
use crate::code::hex;
use crate::domain::proof::PassProof;
use crate::domain::reports::*;
use crate::domain::*;
use crate::export::iso_date;
use std::collections::BTreeMap;

/// A "YYYY-MM-DD" argument as the day number, or a violation on `field`.
pub fn day(v: &mut Violations, field: &str, text: &str) -> Option<i32> {
    v.check(field, parse_date(text))
}

pub fn midnight(days: i32) -> Timestamp {
    Timestamp(i64::from(days) * Timestamp::MS_PER_DAY)
}

/// A period `[from, to)` of at most `max_days`.
pub fn period(v: &mut Violations, from: &str, to: &str, max_days: i32) -> Option<(i32, i32)> {
    let (f, t) = (day(v, "from", from)?, day(v, "to", to)?);
    if t <= f {
        v.add("to", "must be after `from` (the period is [from, to))");
        return None;
    }
    if t - f > max_days {
        v.add("to", format!("a period is at most {max_days} days"));
        return None;
    }
    Some((f, t))
}

pub fn count(t: Tally) -> pb::Count {
    pb::Count {
        passes: t.count as u32,
        cents: t.cents,
    }
}

fn shares<K: Copy>(m: &BTreeMap<K, Tally>, id: impl Fn(K) -> u64) -> Vec<pb::Share> {
    m.iter()
        .map(|(k, t)| pb::Share {
            id: id(*k),
            lines: t.count,
            cents: t.cents,
        })
        .collect()
}

pub fn run_summary(s: &RunSummary, records: u32) -> pb::RunSummary {
    pb::RunSummary {
        cut_off: iso_date(s.cut_off.0.div_euclid(Timestamp::MS_PER_DAY) as i32),
        cut_off_ms: s.cut_off.0,
        settlements: s.settlements,
        lines: s.lines.count,
        total_cents: s.lines.cents,
        paid: Some(count(s.paid)),
        rejected: Some(count(s.rejected)),
        held: Some(count(s.held)),
        by_commanditaire: shares(&s.by_commanditaire, |c| c.0),
        by_structure: shares(&s.by_structure, |c| c.0),
        records,
    }
}

pub fn settlement_info(s: &Settlement) -> pb::SettlementInfo {
    let mut info = pb::SettlementInfo {
        settlement_id: s.id.0,
        reference: s.reference.clone(),
        structure_id: s.structure.0,
        cut_off_ms: s.cut_off.0,
        created_at_ms: s.created_at.0,
        lines: s.lines.len() as u32,
        total_cents: s.total.0,
        merkle_root: hex(&s.merkle_root),
        by_commanditaire: s
            .by_commanditaire()
            .into_iter()
            .map(|(c, cents)| pb::Share {
                id: c.0,
                lines: s.lines.iter().filter(|l| l.commanditaire == c).count() as u64,
                cents: cents.0,
            })
            .collect(),
        ..Default::default()
    };
    match &s.status {
        SettlementStatus::Created => info.status = "created".into(),
        SettlementStatus::Paid {
            bank_reference,
            executed_on_days,
            ..
        } => {
            info.status = "paid".into();
            info.bank_reference = bank_reference.to_string();
            info.executed_on = iso_date(*executed_on_days);
        }
        SettlementStatus::Rejected { reason, .. } => {
            info.status = "rejected".into();
            info.rejection_reason = reason.to_string();
        }
    }
    info
}

pub fn balance(b: &Balance, name: &str) -> pb::Balance {
    pb::Balance {
        commanditaire_id: b.commanditaire.0,
        name: name.to_owned(),
        funded_cents: b.funded.0,
        redeemed: Some(count(b.redeemed)),
        settled: Some(count(b.settled)),
        paid: Some(count(b.paid)),
        credited: Some(count(b.credited)),
        remaining_cents: b.remaining.0,
        funds_held_cents: b.funds_held.0,
        credit_returned_cents: b.credit_returned.0,
        credit_due_cents: b.credit_due.0,
    }
}

pub fn order_statement(s: &OrderStatement, c: CommanditaireId) -> pb::OrderStatement {
    pb::OrderStatement {
        order_id: s.order.0,
        commanditaire_id: c.0,
        issued: s.issued as u32,
        funded_cents: s.funded.0,
        activated: s.activated as u32,
        active: Some(count(s.active)),
        redeemed: Some(count(s.redeemed)),
        settled: Some(count(s.settled)),
        paid: Some(count(s.paid)),
        reversed: s.reversed as u32,
        cancelled: Some(count(s.cancelled)),
        expired: Some(count(s.expired)),
        credit_due: Some(count(s.credit_due)),
        expires_at_ms: s.expires_at.0,
        closed: s.closed,
        fee_recorded: s.fee_rate.is_some(),
        fee_basis_points: s.fee_rate.map_or(0, |r| u32::from(r.0)),
        fee_cents: s.fees.0,
    }
}

/// A reconciliation's figures in the départements `depts` (all if empty) over the days
/// `[from, to)`: what the server answers, and what a hub recomputes from its own copy of
/// the ledger (`cli_mirror::figures`), by this same function.
pub fn reconciliation(
    state: &State,
    depts: &std::collections::BTreeSet<Departement>,
    (from, to): (i32, i32),
) -> pb::Reconciliation {
    let in_scope = |c: InseeCode| depts.is_empty() || depts.contains(&c.departement());
    let recon = reconcile(state, in_scope, midnight(from), midnight(to));
    pb::Reconciliation {
        departements: depts.iter().map(|d| d.to_string()).collect(),
        rows: recon
            .rows
            .iter()
            .map(|(k, row)| recon_row(Some(k), row))
            .collect(),
        totals: Some(recon_row(None, &recon.totals)),
        discrepancies: recon.discrepancies.iter().map(discrepancy).collect(),
        ..Default::default()
    }
}

pub fn recon_row(k: Option<&ReconKey>, r: &ReconRow) -> pb::ReconRow {
    pb::ReconRow {
        structure_id: k.map_or(0, |k| k.structure.0),
        site_id: k.map_or(0, |k| k.site.0),
        commanditaire_id: k.map_or(0, |k| k.commanditaire.0),
        order_id: k.map_or(0, |k| k.order.0),
        redeemed: Some(count(r.redeemed)),
        reversed: Some(count(r.reversed)),
        settled: Some(count(r.settled)),
        paid: Some(count(r.paid)),
        outstanding: Some(count(r.outstanding)),
    }
}

pub fn discrepancy(d: &Discrepancy) -> pb::Discrepancy {
    match d {
        Discrepancy::SettlementTotal {
            settlement,
            total,
            lines,
        } => pb::Discrepancy {
            kind: "SETTLEMENT_TOTAL".into(),
            settlement_ids: vec![settlement.0],
            expected_cents: lines.0,
            found_cents: total.0,
            ..Default::default()
        },
        Discrepancy::PaidAmount {
            settlement,
            settled,
            paid,
        } => pb::Discrepancy {
            kind: "PAID_AMOUNT".into(),
            settlement_ids: vec![settlement.0],
            expected_cents: settled.0,
            found_cents: paid.0,
            ..Default::default()
        },
        Discrepancy::SettledTwice {
            serial,
            settlements,
        } => pb::Discrepancy {
            kind: "SETTLED_TWICE".into(),
            settlement_ids: settlements.iter().map(|s| s.0).collect(),
            serial: serial.to_string(),
            ..Default::default()
        },
    }
}

pub fn status_name(s: &SettlementStatus) -> &'static str {
    match s {
        SettlementStatus::Created => "created",
        SettlementStatus::Paid { .. } => "paid",
        SettlementStatus::Rejected { .. } => "rejected",
    }
}

pub fn line(l: &SettlementLine) -> pb::SettlementLine {
    pb::SettlementLine {
        serial: l.serial.to_string(),
        site_id: l.site.0,
        commune: l.commune.to_string(),
        service: l.service.as_str().to_owned(),
        redeemed_at_ms: l.redeemed_at.0,
        commanditaire_id: l.commanditaire.0,
        order_id: l.order.0,
        amount_cents: l.amount.0,
    }
}

pub fn proof(p: &PassProof, status: &SettlementStatus) -> pb::PassProof {
    pb::PassProof {
        settlement_id: p.settlement.0,
        reference: p.reference.clone(),
        structure_id: p.structure.0,
        total_cents: p.total.0,
        line_count: p.line_count,
        index: p.index,
        line: Some(line(&p.line)),
        merkle_root: hex(&p.root),
        path: p
            .path
            .iter()
            .map(|s| pb::PathStep {
                sibling: hex(&s.sibling),
                sibling_is_left: s.sibling_is_left,
            })
            .collect(),
        status: status_name(status).into(),
    }
}

/// A proof as received (or read back from a file), for the offline verifier.
pub fn proof_from_pb(p: &pb::PassProof) -> Result<PassProof, String> {
    let l = p.line.as_ref().ok_or("the proof has no line")?;
    let hash = |what: &str, h: &str| {
        crate::code::unhex32(h).ok_or_else(|| format!("{what} is not 64 hex digits"))
    };
    let line = SettlementLine {
        serial: Serial::parse(&l.serial).map_err(|e| format!("line serial: {e}"))?,
        site: SiteId(l.site_id),
        commune: InseeCode::parse(&l.commune).map_err(|e| format!("line commune: {e}"))?,
        service: ServiceCode::parse(&l.service).map_err(|e| format!("line service: {e}"))?,
        redeemed_at: Timestamp(l.redeemed_at_ms),
        commanditaire: CommanditaireId(l.commanditaire_id),
        order: OrderId(l.order_id),
        amount: Cents(l.amount_cents),
    };
    let path = p
        .path
        .iter()
        .map(|s| {
            Ok(merkle::Step {
                sibling: hash("a path step", &s.sibling)?,
                sibling_is_left: s.sibling_is_left,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(PassProof {
        settlement: SettlementId(p.settlement_id),
        reference: p.reference.clone(),
        structure: StructureId(p.structure_id),
        total: Cents(p.total_cents),
        line_count: p.line_count,
        index: p.index,
        line,
        root: hash("merkle_root", &p.merkle_root)?,
        path,
    })
}
