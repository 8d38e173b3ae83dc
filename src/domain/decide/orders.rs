//! Deciding orders: creation, minting, funding, distribution.

use super::*;

pub(super) fn create_order(
    state: &State,
    now: Timestamp,
    fee: FeeRate,
    new: &NewOrder,
) -> Result<Step, Refusal> {
    let c = new.commanditaire;
    state
        .commanditaires
        .get(&c)
        .ok_or(Refusal::UnknownCommanditaire(c))?;
    if new.perimeter.is_empty() {
        return Err(Refusal::EmptyPerimeter);
    }
    if let Some(site) = new
        .perimeter
        .sites
        .iter()
        .find(|s| !state.sites.contains_key(s))
    {
        return Err(Refusal::UnknownSite(*site));
    }
    if new.valid_until <= new.valid_from {
        return Err(Refusal::ValidityWindowInverted);
    }
    if new.carnet_size == 0 || new.carnet_size > CARNET_SIZE_MAX || new.carnet_size > new.pass_count
    {
        return Err(Refusal::CarnetSizeInvalid);
    }
    let id = OrderId(state.orders.len() as u64 + 1);
    let order = Order {
        id,
        commanditaire: c,
        pass_count: new.pass_count,
        carnet_size: new.carnet_size,
        face_value: new.face_value,
        valid_from: new.valid_from,
        valid_until: new.valid_until,
        grace_days: new.grace_days,
        perimeter: new.perimeter.clone(),
        services: new.services.clone(),
        programme: new.programme.clone(),
        created_at: now,
        minted: false,
        funding: None,
        distributed: Default::default(),
        swept: false,
    };
    Ok(change(
        vec![
            Fact::OrderCreated(order),
            Fact::OrderFee {
                order: id,
                rate: fee,
            },
        ],
        Outcome::OrderCreated(id),
    ))
}

/// Minting is idempotent by order: a second mint answers like the first and adds nothing.
pub(super) fn mint(state: &State, order_id: OrderId, serials: &[Serial]) -> Result<Step, Refusal> {
    let order = known_order(state, order_id)?;
    let outcome = Outcome::Minted {
        order: order_id,
        passes: order.pass_count,
    };
    if order.minted {
        return Ok(Step::NoChange(outcome));
    }
    if serials.len() != order.pass_count as usize {
        return Err(Refusal::MintCountMismatch {
            expected: order.pass_count,
            got: serials.len() as u32,
        });
    }
    let mut seen = HashSet::with_capacity(serials.len());
    if let Some(s) = serials
        .iter()
        .find(|s| state.passes.contains_key(s) || !seen.insert(**s))
    {
        return Err(Refusal::SerialCollision(*s));
    }
    Ok(change(
        vec![Fact::PassesMinted {
            order: order_id,
            serials: serials.to_vec(),
        }],
        outcome,
    ))
}

/// Funding activates the order's minted passes. Passes cancelled or expired before funding
/// are paid for all the same, so their value is owed back to the commanditaire at once.
pub(super) fn fund(
    state: &State,
    now: Timestamp,
    order_id: OrderId,
    amount: Cents,
    reference: &Label,
) -> Result<Step, Refusal> {
    let order = known_order(state, order_id)?;
    if !order.minted {
        return Err(Refusal::NotMinted);
    }
    if order.funding.is_some() {
        return Err(Refusal::AlreadyFunded);
    }
    if amount != order.total() {
        return Err(Refusal::FundingMismatch {
            expected: order.total(),
            got: amount,
        });
    }
    let activated = count_passes(state, order_id, |p| p.status == PassStatus::Minted);
    let closed = order.pass_count - activated;
    let face = order.face_value.0;
    let c = order.commanditaire;
    let mut postings = vec![
        Posting {
            account: Account::Funds(c),
            amount: amount.0,
        },
        Posting {
            account: Account::Outstanding(c),
            amount: -face * i64::from(activated),
        },
    ];
    if closed > 0 {
        postings.push(Posting {
            account: Account::CreditDue(c),
            amount: -face * i64::from(closed),
        });
    }
    let funding = Funding {
        at: now,
        amount,
        reference: reference.clone(),
    };
    Ok(Step::Change(Effects {
        facts: vec![Fact::OrderFunded {
            order: order_id,
            funding,
        }],
        postings,
        outcome: Outcome::Funded {
            order: order_id,
            activated,
        },
    }))
}

pub(super) fn count_passes(state: &State, order: OrderId, pred: impl Fn(&Pass) -> bool) -> u32 {
    let serials = state
        .order_serials
        .get(&order)
        .map(|s| &s[..])
        .unwrap_or(&[]);
    serials.iter().filter(|s| pred(&state.passes[*s])).count() as u32
}

pub(super) fn distribute(state: &State, order_id: OrderId, carnet: u32) -> Result<Step, Refusal> {
    let order = known_order(state, order_id)?;
    if !order.minted {
        return Err(Refusal::NotMinted);
    }
    if carnet >= order.carnet_count() {
        return Err(Refusal::UnknownCarnet {
            order: order_id,
            carnet,
        });
    }
    if order.distributed.contains(&carnet) {
        return Err(Refusal::AlreadyDistributed { carnet });
    }
    Ok(change(
        vec![Fact::CarnetDistributed {
            order: order_id,
            carnet,
        }],
        Outcome::Distributed {
            order: order_id,
            carnet,
        },
    ))
}
