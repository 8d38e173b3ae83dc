//! Clearing: redemptions become settlements, one per structure, paid at full face value.
//!
//! A run is defined by its cut-off alone: it takes every redeemed, unsettled pass whose
//! redemption happened before the cut-off and whose reversal window had closed by then.
//! So a second run with the same cut-off finds nothing new, and a run cut short (records
//! are bounded, so a large run spans several) resumes where it stopped: each redemption is
//! settled exactly once. A settlement is then paid (the bank executed it) or rejected (the
//! bank returned it: its lines go back to the next run).

use super::entities::*;
use super::merkle;
use super::serial::Serial;
use super::state::State;
use super::types::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementLine {
    pub serial: Serial,
    pub site: SiteId,
    pub commune: InseeCode,
    pub service: ServiceCode,
    pub redeemed_at: Timestamp,
    pub commanditaire: CommanditaireId,
    pub order: OrderId,
    pub amount: Cents,
}

impl SettlementLine {
    /// The line's leaf in the settlement's Merkle tree: its canonical encoding, hashed.
    pub fn leaf(&self) -> merkle::Hash {
        merkle::leaf(&postcard::to_allocvec(self).expect("lines always encode"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementStatus {
    Created,
    Paid {
        at: Timestamp,
        bank_reference: Label,
        executed_on_days: i32,
    },
    Rejected {
        at: Timestamp,
        reason: Label,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub id: SettlementId,
    /// Goes into the bank transfer's remittance text: `PN-<cut-off date>-S<structure>-R<id>`.
    pub reference: String,
    pub structure: StructureId,
    pub cut_off: Timestamp,
    pub created_at: Timestamp,
    pub lines: Vec<SettlementLine>,
    pub total: Cents,
    pub merkle_root: merkle::Hash,
    pub status: SettlementStatus,
}

impl Settlement {
    pub fn lines_total(&self) -> Cents {
        Cents(self.lines.iter().map(|l| l.amount.0).sum())
    }
    pub fn leaves(&self) -> Vec<merkle::Hash> {
        self.lines.iter().map(SettlementLine::leaf).collect()
    }
    /// What each commanditaire's money pays in this settlement.
    pub fn by_commanditaire(&self) -> BTreeMap<CommanditaireId, Cents> {
        let mut out: BTreeMap<CommanditaireId, Cents> = BTreeMap::new();
        for l in &self.lines {
            out.entry(l.commanditaire).or_insert(Cents(0)).0 += l.amount.0;
        }
        out
    }
}

/// Whether a redemption belongs to the run with this cut-off.
pub fn eligible(r: &Redemption, cut_off: Timestamp, reversal_window_ms: i64) -> bool {
    r.settlement.is_none() && r.at < cut_off && r.at.plus_ms(reversal_window_ms) <= cut_off
}

/// Builds the next settlements of the run, structure by structure, until `lines_max`
/// lines are taken (a structure is never split across records).
pub fn next_settlements(
    state: &State,
    cut_off: Timestamp,
    now: Timestamp,
    reversal_window_ms: i64,
    lines_max: usize,
) -> Vec<Settlement> {
    let mut by_structure: BTreeMap<StructureId, Vec<SettlementLine>> = BTreeMap::new();
    for pass in state.passes.values() {
        let Some(r) = pass
            .redemption
            .as_ref()
            .filter(|r| eligible(r, cut_off, reversal_window_ms))
        else {
            continue;
        };
        let order = &state.orders[&pass.order];
        by_structure
            .entry(r.structure)
            .or_default()
            .push(SettlementLine {
                serial: pass.serial,
                site: r.site,
                commune: r.commune,
                service: r.service.clone(),
                redeemed_at: r.at,
                commanditaire: order.commanditaire,
                order: order.id,
                amount: order.face_value,
            });
    }
    let first_id = state.settlements.len() as u64 + 1;
    let mut taken = 0;
    let mut out = vec![];
    for (next_id, (structure, mut lines)) in (first_id..).zip(by_structure) {
        if taken > 0 && taken + lines.len() > lines_max {
            break;
        }
        taken += lines.len();
        lines.sort_by_key(|l| (l.redeemed_at, l.serial));
        let id = SettlementId(next_id);
        let total = Cents(lines.iter().map(|l| l.amount.0).sum());
        let leaves: Vec<merkle::Hash> = lines.iter().map(SettlementLine::leaf).collect();
        let day = cut_off.0.div_euclid(Timestamp::MS_PER_DAY) as i32;
        let (y, m, d) = civil_from_days(day);
        out.push(Settlement {
            id,
            reference: format!("PN-{y:04}{m:02}{d:02}-{structure}-{id}"),
            structure,
            cut_off,
            created_at: now,
            merkle_root: merkle::root(&leaves),
            lines,
            total,
            status: SettlementStatus::Created,
        });
    }
    out
}
