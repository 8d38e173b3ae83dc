//! Deciding clearing runs and what the bank says of their payments.

use super::*;
use crate::domain::clearing;

/// The next settlements of the run with this cut-off; none left is an answer, not a change.
pub(super) fn run_clearing(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    cut_off: Timestamp,
) -> Result<Step, Refusal> {
    if cut_off > now {
        return Err(Refusal::CutOffInFuture { now });
    }
    let clearing::NextSettlements {
        settlements,
        remaining,
    } = clearing::next_settlements(
        state,
        cut_off,
        now,
        rules.reversal_window_ms,
        rules.clearing_lines_max,
    );
    if settlements.is_empty() {
        let done = Outcome::Cleared {
            cut_off,
            settlements: vec![],
            lines: 0,
            total: Cents(0),
            remaining: false,
        };
        return Ok(Step::NoChange(done));
    }
    let mut postings = vec![];
    for s in &settlements {
        assert_eq!(
            s.total,
            s.lines_total(),
            "a settlement's total is the sum of its lines"
        );
        postings.push(Posting {
            account: Account::Payable(s.structure),
            amount: s.total.0,
        });
        postings.push(Posting {
            account: Account::InPayment(s.structure),
            amount: -s.total.0,
        });
    }
    let outcome = Outcome::Cleared {
        cut_off,
        settlements: settlements.iter().map(|s| s.id).collect(),
        lines: settlements.iter().map(|s| s.lines.len() as u32).sum(),
        total: Cents(settlements.iter().map(|s| s.total.0).sum()),
        remaining,
    };
    let facts = settlements
        .into_iter()
        .map(Fact::SettlementCreated)
        .collect();
    Ok(Step::Change(Effects {
        facts,
        postings,
        outcome,
    }))
}

pub(super) fn open_settlement(
    state: &State,
    id: SettlementId,
) -> Result<&clearing::Settlement, Refusal> {
    let s = state
        .settlements
        .get(&id)
        .ok_or(Refusal::UnknownSettlement(id))?;
    if s.status != clearing::SettlementStatus::Created {
        return Err(Refusal::SettlementNotOpen(id));
    }
    Ok(s)
}

/// The bank executed the transfer: the money leaves each commanditaire's funds.
pub(super) fn settle_payment(
    state: &State,
    now: Timestamp,
    id: SettlementId,
    bank_reference: &Label,
    executed_on_days: i32,
    amount: Cents,
) -> Result<Step, Refusal> {
    let s = open_settlement(state, id)?;
    if amount != s.total {
        return Err(Refusal::PaymentAmountMismatch {
            expected: s.total,
            got: amount,
        });
    }
    let mut postings = vec![Posting {
        account: Account::InPayment(s.structure),
        amount: s.total.0,
    }];
    for (c, amount) in s.by_commanditaire() {
        postings.push(Posting {
            account: Account::Funds(c),
            amount: -amount.0,
        });
    }
    let status = clearing::SettlementStatus::Paid {
        at: now,
        bank_reference: bank_reference.clone(),
        executed_on_days,
        amount,
    };
    Ok(Step::Change(Effects {
        facts: vec![Fact::SettlementStatusSet {
            settlement: id,
            status,
        }],
        postings,
        outcome: Outcome::SettlementPaid(id),
    }))
}

/// The bank returned the transfer: the lines go back to the next run.
pub(super) fn reject_payment(
    state: &State,
    now: Timestamp,
    id: SettlementId,
    reason: &Label,
) -> Result<Step, Refusal> {
    let s = open_settlement(state, id)?;
    let postings = vec![
        Posting {
            account: Account::InPayment(s.structure),
            amount: s.total.0,
        },
        Posting {
            account: Account::Payable(s.structure),
            amount: -s.total.0,
        },
    ];
    let status = clearing::SettlementStatus::Rejected {
        at: now,
        reason: reason.clone(),
    };
    Ok(Step::Change(Effects {
        facts: vec![Fact::SettlementStatusSet {
            settlement: id,
            status,
        }],
        postings,
        outcome: Outcome::SettlementRejected(id),
    }))
}
