//! Deciding redemptions: one pass, a workshop's, and their reversal.

use super::*;

pub(super) fn redemption_effects(
    order: &Order,
    venue: &Venue,
    now: Timestamp,
    serial: Serial,
    service: &ServiceCode,
    workshop: Option<WorkshopId>,
) -> (Fact, [Posting; 2], Redeemed) {
    let redemption = Redemption {
        at: now,
        site: venue.site,
        structure: venue.structure,
        stop: venue.stop,
        commune: venue.commune,
        service: service.clone(),
        workshop,
        settlement: None,
    };
    let face = order.face_value.0;
    let postings = [
        Posting {
            account: Account::Outstanding(order.commanditaire),
            amount: face,
        },
        Posting {
            account: Account::Payable(venue.structure),
            amount: -face,
        },
    ];
    let redeemed = Redeemed {
        serial,
        order: order.id,
        amount: order.face_value,
        at: now,
        site: venue.site,
    };
    (
        Fact::PassRedeemed { serial, redemption },
        postings,
        redeemed,
    )
}

/// When a redemption happened: now, or the time a device scanned the pass offline, which
/// every redemption rule is then judged at (the pass was valid when the person was
/// helped). The window bounds what a wrong or dishonest device clock can reach back to.
pub(super) fn scan_time(
    rules: &Rules,
    now: Timestamp,
    scanned_at: Option<Timestamp>,
) -> Result<Timestamp, Refusal> {
    let Some(at) = scanned_at else {
        return Ok(now);
    };
    let latest = now.plus_ms(rules.scan_clock_skew_ms);
    if at > latest {
        return Err(Refusal::ScanInFuture { latest });
    }
    let oldest = now.plus_ms(-rules.offline_window_ms);
    if at < oldest {
        return Err(Refusal::ScanTooOld { oldest });
    }
    Ok(at.min(now))
}

pub(super) fn redeem(
    state: &State,
    now: Timestamp,
    serial: Serial,
    site: SiteId,
    place: &Place,
    service: &ServiceCode,
) -> Result<Step, Refusal> {
    let venue = resolve_venue(state, site, place)?;
    let order = check_redeemable(state, now, &venue, serial, std::slice::from_ref(service))?;
    let (fact, postings, redeemed) = redemption_effects(order, &venue, now, serial, service, None);
    Ok(Step::Change(Effects {
        facts: vec![fact],
        postings: postings.to_vec(),
        outcome: Outcome::Redeemed(redeemed),
    }))
}

/// A workshop redeems many passes in one session: one outcome per pass, in the order
/// given. The session is recorded even if every pass is refused: it took place. Every
/// rule is judged `at` the session: now, or when a device recorded it offline.
pub(super) fn redeem_workshop(
    state: &State,
    at: Timestamp,
    w: &NewWorkshop,
    serials: &[Serial],
) -> Result<Step, Refusal> {
    let venue = resolve_venue(state, w.site, &w.place)?;
    let id = WorkshopId(state.workshops.len() as u64 + 1);
    let session = WorkshopSession {
        id,
        site: w.site,
        stop: venue.stop,
        commune: venue.commune,
        date_days: w.date_days,
        start_minute: w.start_minute,
        duration_minutes: w.duration_minutes,
        themes: w.themes.clone(),
        participants: w.participants,
        mediator: w.mediator.clone(),
    };
    let service = w
        .themes
        .first()
        .expect("a workshop has at least one theme (validated at the edge)");
    let mut facts = vec![Fact::WorkshopHeld(session)];
    let mut postings = vec![];
    let mut outcomes = Vec::with_capacity(serials.len());
    let mut seen = HashSet::with_capacity(serials.len());
    for serial in serials {
        if !seen.insert(*serial) {
            outcomes.push(Err(Refusal::AlreadyRedeemed { at, site: w.site }));
            continue;
        }
        match check_redeemable(state, at, &venue, *serial, &w.themes) {
            Ok(order) => {
                let (fact, more, redeemed) =
                    redemption_effects(order, &venue, at, *serial, service, Some(id));
                facts.push(fact);
                postings.extend(more);
                outcomes.push(Ok(redeemed));
            }
            Err(refusal) => outcomes.push(Err(refusal)),
        }
    }
    let outcome = Outcome::Workshop {
        workshop: id,
        passes: outcomes,
    };
    Ok(Step::Change(Effects {
        facts,
        postings,
        outcome,
    }))
}

pub(super) fn reverse(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    serial: Serial,
    site: SiteId,
) -> Result<Step, Refusal> {
    check_reversible(state, now, rules.reversal_window_ms, serial, site)?;
    let pass = &state.passes[&serial];
    let order = &state.orders[&pass.order];
    let structure = pass.redemption().expect("checked reversible").structure;
    let face = order.face_value.0;
    let c = order.commanditaire;
    let mut effects = Effects {
        facts: vec![Fact::RedemptionReversed { serial, site }],
        postings: vec![
            Posting {
                account: Account::Payable(structure),
                amount: face,
            },
            Posting {
                account: Account::Outstanding(c),
                amount: -face,
            },
        ],
        outcome: Outcome::Reversed {
            serial,
            amount: order.face_value,
        },
    };
    // A pass given back after its order was swept would stay live forever: expire it now.
    if order.swept {
        effects.facts.push(Fact::PassExpired { serial });
        effects.postings.extend(credit_back(c, face));
    }
    Ok(Step::Change(effects))
}
