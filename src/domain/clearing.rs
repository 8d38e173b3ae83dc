//! Clearing: redemptions become settlements, one per structure, paid at full face value.
//!
//! A run is defined by its cut-off alone: it takes every redeemed, unsettled pass whose
//! redemption happened before the cut-off and whose reversal window had closed by then.
//! That window opens when the redemption reached the ledger: an offline scan synced late
//! waits for the run after its window closes, so its site can still reverse a mistake.
//! So a second run with the same cut-off finds nothing new, and a run cut short (records
//! are bounded, so a large run spans several) resumes where it stopped: each redemption is
//! settled exactly once. A settlement is then paid (the bank executed it) or rejected (the
//! bank returned it: its lines go back to the next run).

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
        // Encoded on the stack: a run hashes a million lines. A line made by `decide` fits
        // (6 integers of at most 10 bytes, 5 for the commune, 65 for the service code);
        // only one decoded from elsewhere could hold a longer code.
        let mut buf = [0u8; 160];
        match postcard::to_slice(self, &mut buf) {
            Ok(bytes) => merkle::leaf(bytes),
            Err(_) => merkle::leaf(&postcard::to_allocvec(self).expect("lines always encode")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementStatus {
    Created,
    Paid {
        at: Timestamp,
        bank_reference: Label,
        executed_on_days: i32,
        amount: Cents,
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
    /// Shared: set once, so a checkpoint copies a pointer under the state's lock and
    /// encodes the lines off it.
    pub lines: std::sync::Arc<[SettlementLine]>,
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
        for l in self.lines.iter() {
            out.entry(l.commanditaire).or_insert(Cents(0)).0 += l.amount.0;
        }
        out
    }
}

/// The reversal window of a redemption recorded at `recorded_at` closed by the cut-off.
/// `unsettled` is ordered by `recorded_at`, so the redemptions for which this holds are a
/// prefix of it. It also means the redemption was made before the cut-off, with no lookup
/// of the pass: a redemption is dated at or before its record (a scan time ahead is taken
/// as now), and the window counts as at least 1 ms.
fn window_closed(recorded_at: Timestamp, cut_off: Timestamp, reversal_window_ms: i64) -> bool {
    recorded_at.plus_ms(reversal_window_ms.max(1)) <= cut_off
}

/// The next settlements of a run, and whether eligible redemptions remain after them.
pub struct NextSettlements {
    pub settlements: Vec<Settlement>,
    pub remaining: bool,
}

/// Builds the next settlements of the run, structure by structure, until `lines_max`
/// lines are taken. A structure's lines stay together unless they alone exceed `lines_max`:
/// then it gets one settlement per `lines_max` lines, oldest first, over several records.
/// Reads only the unsettled redemptions, so it costs what it settles.
pub fn next_settlements(
    state: &State,
    cut_off: Timestamp,
    now: Timestamp,
    reversal_window_ms: i64,
    lines_max: usize,
) -> NextSettlements {
    let mut next_id = state.settlements.len() as u64 + 1;
    let mut taken = 0;
    let mut out = vec![];
    for (structure, unsettled) in &state.unsettled {
        let mut due = unsettled
            .iter()
            .take_while(|(recorded_at, _)| window_closed(*recorded_at, cut_off, reversal_window_ms))
            .peekable();
        if due.peek().is_none() {
            continue;
        }
        let room = lines_max - taken;
        let due_count = due.clone().take(room + 1).count();
        if taken > 0 && due_count > room {
            return NextSettlements {
                settlements: out,
                remaining: true,
            };
        }
        let lines: Vec<SettlementLine> = due
            .take(room)
            .map(|(_, serial)| line(state, *serial))
            .collect();
        taken += lines.len();
        out.push(settlement(
            SettlementId(next_id),
            *structure,
            cut_off,
            now,
            lines,
        ));
        next_id += 1;
        if due_count > room {
            return NextSettlements {
                settlements: out,
                remaining: true,
            };
        }
    }
    NextSettlements {
        settlements: out,
        remaining: false,
    }
}

fn line(state: &State, serial: Serial) -> SettlementLine {
    let pass = &state.passes[&serial];
    let r = pass.redemption().expect("unsettled passes are redeemed");
    let order = &state.orders[&pass.order];
    SettlementLine {
        serial,
        site: r.site,
        commune: r.commune,
        service: r.service.clone(),
        redeemed_at: r.at,
        commanditaire: order.commanditaire,
        order: order.id,
        amount: order.face_value,
    }
}

fn settlement(
    id: SettlementId,
    structure: StructureId,
    cut_off: Timestamp,
    now: Timestamp,
    lines: Vec<SettlementLine>,
) -> Settlement {
    let total = Cents(lines.iter().map(|l| l.amount.0).sum());
    let leaves: Vec<merkle::Hash> = lines.iter().map(SettlementLine::leaf).collect();
    let day = cut_off.0.div_euclid(Timestamp::MS_PER_DAY) as i32;
    let (y, m, d) = civil_from_days(day);
    Settlement {
        id,
        reference: format!("PN-{y:04}{m:02}{d:02}-{structure}-{id}"),
        structure,
        cut_off,
        created_at: now,
        merkle_root: merkle::root(&leaves),
        lines: lines.into(),
        total,
        status: SettlementStatus::Created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(service: ServiceCode) -> SettlementLine {
        SettlementLine {
            serial: Serial::from_random(u64::MAX),
            site: SiteId(u64::MAX),
            commune: InseeCode::parse("2A004").unwrap(),
            service,
            redeemed_at: Timestamp(i64::MIN),
            commanditaire: CommanditaireId(u64::MAX),
            order: OrderId(u64::MAX),
            amount: Cents(i64::MIN),
        }
    }

    fn leaf_of_encoding(l: &SettlementLine) -> merkle::Hash {
        merkle::leaf(&postcard::to_allocvec(l).unwrap())
    }

    #[test]
    fn a_leaf_hashes_the_lines_encoding_whatever_its_size() {
        let longest = ServiceCode::parse(&"x".repeat(ServiceCode::LEN_MAX)).unwrap();
        let l = line(longest);
        assert_eq!(l.leaf(), leaf_of_encoding(&l));
        // Only a line decoded from elsewhere can carry a longer code; it still hashes.
        let decoded: ServiceCode =
            postcard::from_bytes(&postcard::to_allocvec(&"y".repeat(300)).unwrap()).unwrap();
        let l = line(decoded);
        assert!(postcard::to_allocvec(&l).unwrap().len() > 160);
        assert_eq!(l.leaf(), leaf_of_encoding(&l));
    }
}
