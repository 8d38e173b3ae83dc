//! The redemption rules, as flat runs of guard clauses in their order of precedence:
//!
//! 1. the site exists (`UnknownSite`) and the place fits it (`UnknownStop`, `PlaceDoesNotFitSite`);
//! 2. the pass exists (`UnknownPass`);
//! 3. it is activated (`NotActivated`), not cancelled (`Cancelled`), not expired (`Expired`,
//!    by status or by the clock: validity plus grace), and already valid (`NotYetValid`);
//! 4. it is not already redeemed (`AlreadyRedeemed`, saying when and where);
//! 5. the site is active (`SiteInactive`);
//! 6. the place of service is inside the order's perimeter (`OutsidePerimeter`);
//! 7. every service given is allowed by the order (`ServiceNotAllowed`).
//!
//! The order follows DOMAIN.md: what is wrong with the request comes first, then what is
//! true of the pass (the evidence a site most needs), then the site's own standing.

use super::command::Place;
use super::entities::*;
use super::refusal::Refusal;
use super::serial::Serial;
use super::state::State;
use super::types::*;

/// Where a service takes place, resolved from a site and the place its request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Venue {
    pub site: SiteId,
    pub structure: StructureId,
    pub stop: Option<u32>,
    pub commune: InseeCode,
    pub active: bool,
}

pub fn resolve_venue(state: &State, site_id: SiteId, place: &Place) -> Result<Venue, Refusal> {
    let site = state
        .sites
        .get(&site_id)
        .ok_or(Refusal::UnknownSite(site_id))?;
    let (stop, commune) = match (&site.kind, place) {
        (SiteKind::Fixed { commune }, Place::Site) => (None, *commune),
        (SiteKind::Itinerant { stops }, Place::Stop(n)) => {
            let stop = stops.get(*n as usize).ok_or(Refusal::UnknownStop {
                site: site_id,
                stop: *n,
            })?;
            (Some(*n), stop.commune)
        }
        (SiteKind::Workshop { .. }, Place::Commune(c)) => (None, *c),
        _ => return Err(Refusal::PlaceDoesNotFitSite),
    };
    Ok(Venue {
        site: site_id,
        structure: site.structure,
        stop,
        commune,
        active: site.active,
    })
}

/// Checks one pass against every redemption rule; returns its order when all pass.
pub fn check_redeemable<'s>(
    state: &'s State,
    now: Timestamp,
    venue: &Venue,
    serial: Serial,
    services: &[ServiceCode],
) -> Result<&'s Order, Refusal> {
    let pass = state
        .passes
        .get(&serial)
        .ok_or(Refusal::UnknownPass(serial))?;
    let order = state
        .orders
        .get(&pass.order)
        .expect("a pass's order exists");
    check_status(pass, order)?;
    check_clock(order, now)?;
    if let Some(r) = pass.redemption() {
        return Err(Refusal::AlreadyRedeemed {
            at: r.at,
            site: r.site,
        });
    }
    if !venue.active {
        return Err(Refusal::SiteInactive(venue.site));
    }
    if !order.perimeter.contains(venue.site, venue.commune) {
        return Err(Refusal::OutsidePerimeter);
    }
    if !services.iter().all(|s| order.allows(s)) {
        return Err(Refusal::ServiceNotAllowed);
    }
    Ok(order)
}

fn check_status(pass: &Pass, order: &Order) -> Result<(), Refusal> {
    match pass.status {
        PassStatus::Minted => Err(Refusal::NotActivated),
        PassStatus::Cancelled => Err(Refusal::Cancelled),
        PassStatus::Expired => Err(Refusal::Expired {
            at: order.expires_at(),
        }),
        PassStatus::Active | PassStatus::Redeemed => Ok(()),
    }
}

fn check_clock(order: &Order, now: Timestamp) -> Result<(), Refusal> {
    if now >= order.expires_at() {
        return Err(Refusal::Expired {
            at: order.expires_at(),
        });
    }
    if now < order.valid_from {
        return Err(Refusal::NotYetValid {
            from: order.valid_from,
        });
    }
    Ok(())
}

/// A reversal is allowed to the site that redeemed, before clearing, within the window
/// that opened when the redemption reached the ledger (an offline scan's, at its sync).
pub fn check_reversible(
    state: &State,
    now: Timestamp,
    window_ms: i64,
    serial: Serial,
    site: SiteId,
) -> Result<(), Refusal> {
    let pass = state
        .passes
        .get(&serial)
        .ok_or(Refusal::UnknownPass(serial))?;
    let live = pass.redeemed.as_deref().ok_or(Refusal::NotRedeemed)?;
    let r = &live.redemption;
    if r.site != site {
        return Err(Refusal::WrongSite { site: r.site });
    }
    if let Some(s) = r.settlement {
        return Err(Refusal::AlreadySettled(s));
    }
    let until = live.reversible_until(window_ms);
    if now >= until {
        return Err(Refusal::ReversalWindowClosed { until });
    }
    Ok(())
}
