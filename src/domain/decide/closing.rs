//! Deciding the end of passes that were never redeemed: cancellation and expiry.

use super::*;

pub(super) fn credit_back(c: CommanditaireId, face: i64) -> [Posting; 2] {
    [
        Posting {
            account: Account::Outstanding(c),
            amount: face,
        },
        Posting {
            account: Account::CreditDue(c),
            amount: -face,
        },
    ]
}

/// Gives back `amount` of the credit due to `c`: the money leaves its funds, and the
/// liability its credit due. Never more than is due; never nothing.
pub(super) fn return_credit(
    state: &State,
    c: CommanditaireId,
    amount: Cents,
    reference: &Label,
) -> Result<Step, Refusal> {
    if !state.commanditaires.contains_key(&c) {
        return Err(Refusal::UnknownCommanditaire(c));
    }
    let due = Cents(-state.balance(Account::CreditDue(c)));
    if amount.0 <= 0 || amount.0 > due.0 {
        return Err(Refusal::CreditExceeded { due, asked: amount });
    }
    Ok(Step::Change(Effects {
        facts: vec![Fact::CreditReturned {
            commanditaire: c,
            amount,
            reference: reference.clone(),
        }],
        postings: vec![
            Posting {
                account: Account::CreditDue(c),
                amount: amount.0,
            },
            Posting {
                account: Account::Funds(c),
                amount: -amount.0,
            },
        ],
        outcome: Outcome::CreditReturned {
            commanditaire: c,
            remaining: Cents(due.0 - amount.0),
        },
    }))
}

/// Cancels listed passes (all or none), or every still-live pass of a carnet.
pub(super) fn cancel(state: &State, target: &CancelTarget) -> Result<Step, Refusal> {
    let serials: Vec<Serial> = match target {
        CancelTarget::Passes(list) => {
            for s in list {
                let pass = state.passes.get(s).ok_or(Refusal::UnknownPass(*s))?;
                if !is_live(pass) {
                    return Err(Refusal::NotCancellable);
                }
            }
            list.clone()
        }
        CancelTarget::Carnet { order, carnet } => {
            let o = known_order(state, *order)?;
            if !o.minted || *carnet >= o.carnet_count() {
                return Err(Refusal::UnknownCarnet {
                    order: *order,
                    carnet: *carnet,
                });
            }
            let all = &state.order_serials[order];
            let start = (*carnet * o.carnet_size) as usize;
            let end = (start + o.carnet_size as usize).min(all.len());
            let live: Vec<Serial> = all[start..end]
                .iter()
                .copied()
                .filter(|s| is_live(&state.passes[s]))
                .collect();
            if live.is_empty() {
                return Err(Refusal::NotCancellable);
            }
            live
        }
    };
    let (mut facts, mut postings) = (vec![], vec![]);
    let credited = close_passes(
        state,
        &serials,
        |serial| Fact::PassCancelled { serial },
        &mut facts,
        &mut postings,
    );
    let outcome = Outcome::Cancelled {
        passes: serials.len() as u32,
        credited,
    };
    Ok(Step::Change(Effects {
        facts,
        postings,
        outcome,
    }))
}

pub(super) fn is_live(pass: &Pass) -> bool {
    matches!(pass.status, PassStatus::Minted | PassStatus::Active)
}

/// Closes live passes; the value of activated ones goes back to the commanditaire.
pub(super) fn close_passes(
    state: &State,
    serials: &[Serial],
    fact: impl Fn(Serial) -> Fact,
    facts: &mut Vec<Fact>,
    postings: &mut Vec<Posting>,
) -> Cents {
    let mut credited = 0;
    for serial in serials {
        let pass = &state.passes[serial];
        facts.push(fact(*serial));
        if pass.status == PassStatus::Active {
            let order = &state.orders[&pass.order];
            credited += order.face_value.0;
            postings.extend(credit_back(order.commanditaire, order.face_value.0));
        }
    }
    Cents(credited)
}

/// Expires the live passes of up to `sweep_orders_max` orders whose validity plus grace
/// has ended. The engine calls it again until it reports no order swept.
pub(super) fn expire_sweep(state: &State, rules: &Rules, now: Timestamp) -> Step {
    let due: Vec<&Order> = state
        .orders
        .values()
        .filter(|o| !o.swept && o.minted && o.expires_at().plus_ms(rules.offline_window_ms) <= now)
        .take(rules.sweep_orders_max)
        .collect();
    if due.is_empty() {
        return Step::NoChange(Outcome::Expired {
            passes: 0,
            credited: Cents(0),
        });
    }
    let (mut facts, mut postings) = (vec![], vec![]);
    let mut passes = 0;
    let mut credited = 0;
    for order in due {
        let live: Vec<Serial> = state.order_serials[&order.id]
            .iter()
            .copied()
            .filter(|s| is_live(&state.passes[s]))
            .collect();
        passes += live.len() as u32;
        credited += close_passes(
            state,
            &live,
            |serial| Fact::PassExpired { serial },
            &mut facts,
            &mut postings,
        )
        .0;
        facts.push(Fact::OrderSwept { order: order.id });
    }
    let outcome = Outcome::Expired {
        passes,
        credited: Cents(credited),
    };
    Step::Change(Effects {
        facts,
        postings,
        outcome,
    })
}
