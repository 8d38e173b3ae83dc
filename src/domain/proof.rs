//! Proof that a pass was paid for: its settlement line, the line's position and the audit
//! path to the settlement's Merkle root. `verify` needs nothing but the proof (and, to be
//! worth anything, a root obtained elsewhere: the ledger record or the bank's remittance).

use super::clearing::SettlementLine;
use super::merkle;
use super::refusal::Refusal;
use super::serial::Serial;
use super::state::State;
use super::types::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassProof {
    pub settlement: SettlementId,
    pub reference: String,
    pub structure: StructureId,
    pub total: Cents,
    pub line_count: u64,
    pub index: u64,
    pub line: SettlementLine,
    pub root: merkle::Hash,
    pub path: Vec<merkle::Step>,
}

/// The proof of the settlement that holds this pass's redemption.
pub fn prove(state: &State, serial: Serial) -> Result<PassProof, Refusal> {
    let pass = state
        .passes
        .get(&serial)
        .ok_or(Refusal::UnknownPass(serial))?;
    let id = pass
        .redemption()
        .and_then(|r| r.settlement)
        .ok_or(Refusal::NotSettled(serial))?;
    let s = &state.settlements[&id];
    let index = s
        .lines
        .iter()
        .position(|l| l.serial == serial)
        .expect("a settled pass has a line in its settlement");
    Ok(PassProof {
        settlement: id,
        reference: s.reference.clone(),
        structure: s.structure,
        total: s.total,
        line_count: s.lines.len() as u64,
        index: index as u64,
        line: s.lines[index].clone(),
        root: s.merkle_root,
        path: merkle::path(&s.leaves(), index),
    })
}

/// Why a proof does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProofError {
    /// The audit path is longer or shorter than a tree of `line_count` leaves has.
    PathLength { expected: usize, got: usize },
    /// The line, hashed and walked up the path, does not reach the root.
    RootMismatch,
    /// The root is not the one the caller trusts.
    UntrustedRoot,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofError::PathLength { expected, got } => {
                write!(
                    f,
                    "the audit path has {got} steps; a tree of this many lines needs {expected}"
                )
            }
            ProofError::RootMismatch => {
                write!(f, "the line and its audit path do not lead to the root")
            }
            ProofError::UntrustedRoot => write!(f, "the proof's root is not the expected root"),
        }
    }
}

/// Checks a proof offline; with `trusted_root`, also that it is the root the caller holds.
pub fn verify(p: &PassProof, trusted_root: Option<&merkle::Hash>) -> Result<(), ProofError> {
    let expected = path_len(p.line_count as usize, p.index as usize);
    if p.path.len() != expected {
        return Err(ProofError::PathLength {
            expected,
            got: p.path.len(),
        });
    }
    if !merkle::verify(p.line.leaf(), &p.path, &p.root) {
        return Err(ProofError::RootMismatch);
    }
    if trusted_root.is_some_and(|r| r != &p.root) {
        return Err(ProofError::UntrustedRoot);
    }
    Ok(())
}

/// The steps from leaf `index` of `n` up to the root (odd nodes carried up add none).
fn path_len(mut n: usize, mut index: usize) -> usize {
    let mut steps = 0;
    while n > 1 {
        if index ^ 1 < n {
            steps += 1;
        }
        n = n.div_ceil(2);
        index /= 2;
    }
    steps
}
