//! Protobuf ⇄ domain. Parsing happens here, once; every bad field is reported together.

use super::errors::{self, Violations};
use super::pb;
use crate::code::{CodeError, Keyring};
use crate::config::Limits;
use crate::domain::*;
use std::collections::BTreeSet;
use tonic::Status;

pub fn label(v: &mut Violations, field: &str, text: &str) -> Option<Label> {
    v.check(field, Label::parse(text))
}

pub fn perimeter(
    v: &mut Violations,
    limits: &Limits,
    p: Option<&pb::Perimeter>,
) -> Option<Perimeter> {
    let p = p.cloned().unwrap_or_default();
    let n = p.insee_codes.len() + p.departements.len() + p.site_ids.len();
    if n > limits.perimeter_entries_max {
        v.add(
            "perimeter",
            format!("at most {} entries", limits.perimeter_entries_max),
        );
        return None;
    }
    let mut out = Perimeter::default();
    for (i, c) in p.insee_codes.iter().enumerate() {
        out.communes
            .extend(v.check(&format!("perimeter.insee_codes[{i}]"), InseeCode::parse(c)));
    }
    for (i, d) in p.departements.iter().enumerate() {
        out.departements.extend(v.check(
            &format!("perimeter.departements[{i}]"),
            Departement::parse(d),
        ));
    }
    out.sites = p.site_ids.iter().map(|s| SiteId(*s)).collect();
    Some(out)
}

pub fn services(
    v: &mut Violations,
    limits: &Limits,
    field: &str,
    list: &[String],
) -> BTreeSet<ServiceCode> {
    if list.len() > limits.services_max {
        v.add(field, format!("at most {} services", limits.services_max));
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| v.check(&format!("{field}[{i}]"), ServiceCode::parse(s)))
        .collect()
}

pub fn place(v: &mut Violations, p: Option<&pb::Place>) -> Place {
    let Some(p) = p else { return Place::Site };
    match (p.stop, p.insee_code.is_empty()) {
        (Some(stop), true) => Place::Stop(stop),
        (None, false) => v
            .check("place.insee_code", InseeCode::parse(&p.insee_code))
            .map_or(Place::Site, Place::Commune),
        (None, true) => Place::Site,
        (Some(_), false) => {
            v.add("place", "name a stop or a commune, not both");
            Place::Site
        }
    }
}

/// A pass code checked with the keyring; the check's failure stays a `CodeError` so the
/// caller can tell a guess from a typo (`Ctx::pass_code`). A missing code is a bad request.
pub fn checked_code(
    keys: &Keyring,
    field: &str,
    code: Option<&pb::PassCode>,
) -> Result<Result<Serial, CodeError>, Status> {
    let form = code.and_then(|c| c.form.as_ref());
    Ok(match form {
        Some(pb::pass_code::Form::Scanned(text)) => keys.parse_scanned(text),
        Some(pb::pass_code::Form::Typed(t)) => keys.parse_typed(&t.serial, &t.verification_code),
        None => {
            let mut v = Violations::default();
            v.add(
                field,
                "give the scanned code or the typed serial and verification code",
            );
            return Err(v.into_result().expect_err("one violation"));
        }
    })
}

pub fn serial(v: &mut Violations, field: &str, text: &str) -> Option<Serial> {
    v.check(field, Serial::parse(text))
}

pub fn site_kind(
    v: &mut Violations,
    limits: &Limits,
    r: &pb::RegisterSiteRequest,
) -> Option<SiteKind> {
    match pb::SiteKind::try_from(r.kind).unwrap_or(pb::SiteKind::Unspecified) {
        pb::SiteKind::Fixed => v
            .check("insee_code", InseeCode::parse(&r.insee_code))
            .map(|commune| SiteKind::Fixed { commune }),
        pb::SiteKind::Workshop => v
            .check("insee_code", InseeCode::parse(&r.insee_code))
            .map(|home| SiteKind::Workshop { home }),
        pb::SiteKind::Itinerant => {
            if r.stops.is_empty() || r.stops.len() > limits.stops_max {
                v.add(
                    "stops",
                    format!("a bus has 1 to {} stops", limits.stops_max),
                );
                return None;
            }
            let stops: Vec<Option<Stop>> = r
                .stops
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let label = v.check(&format!("stops[{i}].label"), Label::parse(&s.label));
                    let commune = v.check(
                        &format!("stops[{i}].insee_code"),
                        InseeCode::parse(&s.insee_code),
                    );
                    Some(Stop {
                        label: label?,
                        commune: commune?,
                    })
                })
                .collect();
            stops
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|stops| SiteKind::Itinerant { stops })
        }
        pb::SiteKind::Unspecified => {
            v.add("kind", "FIXED, ITINERANT or WORKSHOP");
            None
        }
    }
}

pub fn site_info(site: &Site) -> pb::SiteInfo {
    let (kind, insee, stops) = match &site.kind {
        SiteKind::Fixed { commune } => (pb::SiteKind::Fixed, commune.to_string(), vec![]),
        SiteKind::Workshop { home } => (pb::SiteKind::Workshop, home.to_string(), vec![]),
        SiteKind::Itinerant { stops } => (
            pb::SiteKind::Itinerant,
            String::new(),
            stops
                .iter()
                .map(|s| pb::BusStop {
                    label: s.label.to_string(),
                    insee_code: s.commune.to_string(),
                })
                .collect(),
        ),
    };
    pb::SiteInfo {
        site_id: site.id.0,
        structure_id: site.structure.0,
        name: site.name.to_string(),
        kind: kind as i32,
        insee_code: insee,
        stops,
        active: site.active,
        reference: site.reference.clone().unwrap_or_default(),
        services: site_services(site),
        next_page_token: String::new(),
    }
}

/// The services a site's listings name, each once.
pub fn site_services(site: &Site) -> Vec<String> {
    let set: BTreeSet<&String> = site.listings.iter().flat_map(|l| &l.services).collect();
    set.into_iter().cloned().collect()
}

pub fn pass_status(s: PassStatus) -> pb::PassStatus {
    match s {
        PassStatus::Minted => pb::PassStatus::Minted,
        PassStatus::Active => pb::PassStatus::Active,
        PassStatus::Redeemed => pb::PassStatus::Redeemed,
        PassStatus::Cancelled => pb::PassStatus::Cancelled,
        PassStatus::Expired => pb::PassStatus::Expired,
    }
}

pub fn pass_info(keys: &Keyring, pass: &Pass, order: &Order) -> pb::PassInfo {
    pb::PassInfo {
        serial: pass.serial.to_string(),
        code: keys.qr_payload(pass.serial),
        verification_code: keys.verification_code(pass.serial),
        order_id: pass.order.0,
        carnet: pass.index / order.carnet_size,
        index: pass.index,
        status: pass_status(pass.status) as i32,
        redemption: pass.redeemed.as_deref().map(|live| {
            let r = &live.redemption;
            pb::Redemption {
                at_ms: r.at.0,
                site_id: r.site.0,
                structure_id: r.structure.0,
                insee_code: r.commune.to_string(),
                service: r.service.as_str().to_owned(),
                workshop_id: r.workshop.map_or(0, |w| w.0),
                stop_plus_one: r.stop.map_or(0, |s| s + 1),
                recorded_at_ms: live.recorded_at.0,
            }
        }),
        face_value_cents: order.face_value.0,
        expires_at_ms: order.expires_at().0,
        next_page_token: String::new(),
    }
}

pub fn role(v: &mut Violations, r: &pb::IssueCredentialRequest) -> Option<Role> {
    let role = pb::Role::try_from(r.role).unwrap_or(pb::Role::Unspecified);
    match role {
        pb::Role::Operator => Some(Role::Operator),
        pb::Role::Commanditaire => Some(Role::Commanditaire(CommanditaireId(r.actor_id))),
        pb::Role::Structure => Some(Role::Structure(StructureId(r.actor_id))),
        pb::Role::Site => Some(Role::Site(SiteId(r.actor_id))),
        pb::Role::Hub => {
            let depts: BTreeSet<Departement> = r
                .departements
                .iter()
                .enumerate()
                .filter_map(|(i, d)| v.check(&format!("departements[{i}]"), Departement::parse(d)))
                .collect();
            if r.departements.is_empty() {
                v.add("departements", "a hub covers at least one département");
            }
            Some(Role::Hub(depts))
        }
        pb::Role::Unspecified => {
            v.add("role", "OPERATOR, COMMANDITAIRE, STRUCTURE, SITE or HUB");
            None
        }
    }
}

/// A page's size: 0 asks for `default`; more than `max` is refused (`LIMIT_EXCEEDED`).
pub fn page_size(requested: u32, default: u32, max: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(default.min(max).max(1) as usize),
        n if n > max => Err(errors::limit("page_size", max as usize, n as usize)),
        n => Ok(n as usize),
    }
}

/// A credential as the operator lists it: never its token, which only its holder has.
pub fn credential_info(id: &str, c: &Credential) -> pb::CredentialInfo {
    let (role, actor_id, departements) = match &c.role {
        Role::Operator => (pb::Role::Operator, 0, vec![]),
        Role::Commanditaire(x) => (pb::Role::Commanditaire, x.0, vec![]),
        Role::Structure(x) => (pb::Role::Structure, x.0, vec![]),
        Role::Site(x) => (pb::Role::Site, x.0, vec![]),
        Role::Hub(d) => (pb::Role::Hub, 0, d.iter().map(|d| d.to_string()).collect()),
    };
    pb::CredentialInfo {
        credential_id: id.to_owned(),
        role: role as i32,
        actor_id,
        departements,
        revoked_at_ms: c.revoked_at.map_or(0, |t| t.0),
        expires_at_ms: c.expires_at.map_or(0, |t| t.0),
    }
}

/// The lifetime an issuer asks for: 0 days, the longest the server allows.
pub fn lifetime(valid_days: u32) -> Lifetime {
    match valid_days {
        0 => Lifetime::Longest,
        days => Lifetime::Ms(i64::from(days) * Timestamp::MS_PER_DAY),
    }
}

/// One pass's outcome in a workshop, in the same words as a unary refusal.
pub fn pass_outcome(serial: Serial, r: &Result<Redeemed, Refusal>) -> pb::PassOutcome {
    match r {
        Ok(red) => pb::PassOutcome {
            serial: serial.to_string(),
            redeemed: true,
            amount_cents: red.amount.0,
            redeemed_at_ms: red.at.0,
            ..Default::default()
        },
        Err(refusal) => pb::PassOutcome {
            serial: serial.to_string(),
            redeemed: false,
            reason: refusal.reason().to_owned(),
            message: refusal.to_string(),
            metadata: refusal
                .metadata()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            amount_cents: 0,
            redeemed_at_ms: 0,
        },
    }
}
