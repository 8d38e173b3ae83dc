//! Redemptions (sites): check a pass, redeem it, redeem a workshop's passes, reverse.

use super::auth::Principal;
use super::context::Ctx;
use super::convert;
use super::errors::{self, Violations};
use super::pb::{self, redemptions_server::Redemptions};
use crate::domain::rules::{check_redeemable, resolve_venue};
use crate::domain::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct RedemptionService(pub Arc<Ctx>);

/// Workshops last at most a working day.
const WORKSHOP_MINUTES_MAX: u32 = 480;
/// A collective session has at most this many participants.
const PARTICIPANTS_MAX: u32 = 1_000;

impl RedemptionService {
    /// The site the caller redeems at, checked against the caller (a site redeems only as
    /// itself, a structure at its own sites) from the directory, not under the state's lock:
    /// this is on every redemption's path.
    fn site_for(&self, who: &Principal, id: u64) -> Result<SiteId, Status> {
        let site = SiteId(id);
        let structure = *self
            .0
            .engine
            .directory()
            .site_structures
            .get(&site)
            .ok_or_else(|| errors::refused(&Refusal::UnknownSite(site)))?;
        who.may_redeem_for(site, structure)?;
        Ok(site)
    }
}

#[tonic::async_trait]
impl Redemptions for RedemptionService {
    async fn check_pass(
        &self,
        req: Request<pb::CheckPassRequest>,
    ) -> Result<Response<pb::CheckPassResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let site = self.0.site(SiteId(r.site_id))?;
        if !matches!(who.role, Role::Operator) {
            who.may_redeem_at(&site)?;
        }
        let serial = self.0.pass_code(&who, "pass", r.pass.as_ref())?;
        let mut v = Violations::default();
        let place = convert::place(&mut v, r.place.as_ref());
        let service = v.check("service", ServiceCode::parse(&r.service));
        v.into_result()?;
        let service = service.expect("checked");
        let now = (self.0.clock)();
        // The same rules as Redeem, read in place under one short read lock: nothing is
        // copied (an order's perimeter may list thousands of communes).
        let (verdict, status, face_value_cents, expires_at_ms) = {
            let state = self.0.read()?;
            let pass = state.passes.get(&serial);
            let order = pass.and_then(|p| state.orders.get(&p.order));
            let verdict = resolve_venue(&state, site.id, &place).and_then(|venue| {
                check_redeemable(&state, now, &venue, serial, std::slice::from_ref(&service))
                    .map(|_| ())
            });
            (
                verdict,
                pass.map_or(pb::PassStatus::Unspecified, |p| {
                    convert::pass_status(p.status)
                }),
                order.map_or(0, |o| o.face_value.0),
                order.map_or(0, |o| o.expires_at().0),
            )
        };
        let (reason, message) = match &verdict {
            Ok(()) => (String::new(), String::new()),
            Err(r) => (r.reason().to_owned(), r.to_string()),
        };
        self.0.settle().await?;
        Ok(Response::new(pb::CheckPassResponse {
            serial: serial.to_string(),
            redeemable: verdict.is_ok(),
            reason,
            message,
            status: status as i32,
            face_value_cents,
            expires_at_ms,
        }))
    }

    async fn redeem(
        &self,
        req: Request<pb::RedeemRequest>,
    ) -> Result<Response<pb::RedeemResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let site = self.site_for(&who, r.site_id)?;
        let serial = self.0.pass_code(&who, "pass", r.pass.as_ref())?;
        let mut v = Violations::default();
        let place = convert::place(&mut v, r.place.as_ref());
        let service = v.check("service", ServiceCode::parse(&r.service));
        let scanned_at = offline_time(&mut v, "scanned_at_ms", r.scanned_at_ms);
        v.into_result()?;
        let cmd = Command::Redeem {
            serial,
            site,
            place,
            service: service.expect("checked"),
            scanned_at,
        };
        match self.0.submit(&who, "Redeem", &r.request_id, r, cmd).await? {
            Outcome::Redeemed(red) => Ok(Response::new(pb::RedeemResponse {
                serial: red.serial.to_string(),
                order_id: red.order.0,
                amount_cents: red.amount.0,
                redeemed_at_ms: red.at.0,
                site_id: red.site.0,
            })),
            o => Err(errors::unexpected(o)),
        }
    }

    async fn redeem_workshop(
        &self,
        req: Request<pb::RedeemWorkshopRequest>,
    ) -> Result<Response<pb::RedeemWorkshopResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let limits = &self.0.limits;
        if r.passes.len() > limits.workshop_passes_max {
            return Err(errors::limit(
                "workshop_passes",
                limits.workshop_passes_max,
                r.passes.len(),
            ));
        }
        let site = self.site_for(&who, r.site_id)?;
        let (workshop, held_at) = workshop(&mut Violations::default(), limits, r, site)?;
        // A code that fails its check is that pass's outcome; the others still go through.
        let parsed: Vec<Result<Serial, Box<pb::PassOutcome>>> = r
            .passes
            .iter()
            .map(|code| {
                let serial = self.0.pass_code(&who, "passes", Some(code));
                serial.map_err(|status| Box::new(code_refused(&status)))
            })
            .collect();
        let serials: Vec<Serial> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().copied())
            .collect();
        let cmd = Command::RedeemWorkshop {
            workshop,
            serials: serials.clone(),
            held_at,
        };
        let Outcome::Workshop {
            workshop: id,
            passes,
        } = self
            .0
            .submit(&who, "RedeemWorkshop", &r.request_id, r, cmd)
            .await?
        else {
            return Err(Status::internal("unexpected outcome"));
        };
        let outcomes = in_given_order(parsed, &serials, &passes);
        let redeemed = outcomes.iter().filter(|o| o.redeemed).count() as u32;
        let amount_cents = outcomes.iter().map(|o| o.amount_cents).sum();
        Ok(Response::new(pb::RedeemWorkshopResponse {
            workshop_id: id.0,
            outcomes,
            redeemed,
            amount_cents,
        }))
    }

    async fn reverse(
        &self,
        req: Request<pb::ReverseRequest>,
    ) -> Result<Response<pb::ReverseResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let site = self.site_for(&who, r.site_id)?;
        let serial = self.0.pass_code(&who, "pass", r.pass.as_ref())?;
        match self
            .0
            .submit(
                &who,
                "Reverse",
                &r.request_id,
                r,
                Command::Reverse { serial, site },
            )
            .await?
        {
            Outcome::Reversed { serial, amount } => Ok(Response::new(pb::ReverseResponse {
                serial: serial.to_string(),
                amount_cents: amount.0,
            })),
            o => Err(errors::unexpected(o)),
        }
    }
}

/// When a device did something offline: `None` for 0 (done as it is sent).
fn offline_time(v: &mut Violations, field: &str, ms: i64) -> Option<Timestamp> {
    match ms {
        0 => None,
        ms if ms < 0 => {
            v.add(field, "milliseconds since 1970, or 0 for now");
            None
        }
        ms => Some(Timestamp(ms)),
    }
}

/// The session, and when it was held if a device recorded it offline.
fn workshop(
    v: &mut Violations,
    limits: &crate::config::Limits,
    r: &pb::RedeemWorkshopRequest,
    site: SiteId,
) -> Result<(NewWorkshop, Option<Timestamp>), Status> {
    let place = convert::place(v, r.place.as_ref());
    let date = v.check("date", parse_date(&r.date));
    let start = v.check("start", parse_hhmm(&r.start));
    if r.duration_minutes == 0 || r.duration_minutes > WORKSHOP_MINUTES_MAX {
        v.add(
            "duration_minutes",
            format!("1 to {WORKSHOP_MINUTES_MAX} minutes"),
        );
    }
    if r.themes.is_empty() {
        v.add("themes", "a workshop has at least one theme");
    }
    let themes: Vec<ServiceCode> = convert::services(v, limits, "themes", &r.themes)
        .into_iter()
        .collect();
    if r.participants == 0 || r.participants > PARTICIPANTS_MAX {
        v.add("participants", format!("1 to {PARTICIPANTS_MAX}"));
    }
    let mediator = convert::label(v, "mediator_id", &r.mediator_id);
    if r.passes.is_empty() {
        v.add("passes", "a workshop redeems at least one pass");
    }
    let held_at = offline_time(v, "held_at_ms", r.held_at_ms);
    if let (Some(at), Some(day)) = (held_at, date) {
        // The session's date is local, `held_at` UTC: a day either way covers every zone
        // of France, overseas included.
        if (at.0.div_euclid(Timestamp::MS_PER_DAY) - i64::from(day)).abs() > 1 {
            v.add("held_at_ms", "must fall within a day of the session's date");
        }
    }
    std::mem::take(v).into_result()?;
    let session = NewWorkshop {
        site,
        place,
        date_days: date.expect("checked"),
        start_minute: start.expect("checked"),
        duration_minutes: r.duration_minutes as u16,
        themes,
        participants: r.participants as u16,
        mediator: mediator.expect("checked"),
    };
    Ok((session, held_at))
}

fn parse_hhmm(s: &str) -> Result<u16, &'static str> {
    let bad = "a time is HH:MM";
    let (h, m) = s.split_once(':').ok_or(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad)?, m.parse().map_err(|_| bad)?);
    if h > 23 || m > 59 {
        return Err(bad);
    }
    Ok(h * 60 + m)
}

/// A workshop pass whose code fails its check: its outcome, with the status's reason.
fn code_refused(status: &Status) -> pb::PassOutcome {
    pb::PassOutcome {
        reason: tonic_types::StatusExt::get_error_details(status)
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        message: status.message().to_owned(),
        ..Default::default()
    }
}

/// Every code's outcome in the order the codes came: the core's for each code that
/// parsed (`serials`, answered in `passes` in the same order), the refusal for each that
/// did not.
fn in_given_order(
    parsed: Vec<Result<Serial, Box<pb::PassOutcome>>>,
    serials: &[Serial],
    passes: &[Result<Redeemed, Refusal>],
) -> Vec<pb::PassOutcome> {
    let mut core = serials.iter().zip(passes);
    parsed
        .into_iter()
        .map(|p| match p {
            Ok(_) => {
                let (serial, result) = core.next().expect("one core outcome per parsed code");
                convert::pass_outcome(*serial, result)
            }
            Err(bad) => *bad,
        })
        .collect()
}
