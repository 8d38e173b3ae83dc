//! The actors and instruments of the scheme, as DOMAIN.md names them.

use super::serial::Serial;
use super::types::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commanditaire {
    pub id: CommanditaireId,
    pub name: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Structure {
    pub id: StructureId,
    pub name: Label,
    pub payee: PayeeId,
    /// Not in the open data: added by the operator or by the structure itself.
    pub iban: Option<Iban>,
    /// Whether the operator checked the IBAN: only a verified IBAN goes into a payment file.
    pub iban_verified: bool,
}

/// One stop of an itinerant bus: the perimeter check uses the stop where service took place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub label: Label,
    pub commune: InseeCode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SiteKind {
    /// A fixed place: every service happens in its commune.
    Fixed { commune: InseeCode },
    /// A bus: every redemption names one of its stops (numbered from 0).
    Itinerant { stops: Vec<Stop> },
    /// A conseiller numérique who runs workshops in various communes: each redemption names
    /// the commune; `home` is where the conseiller is based.
    Workshop { home: InseeCode },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub id: SiteId,
    pub structure: StructureId,
    pub name: Label,
    pub kind: SiteKind,
    pub active: bool,
    /// The open-data key that referenced this site (`place:<id>` or `bus:<pivot>`), if any.
    pub reference: Option<String>,
    /// The open-data listing of each place: one for a fixed site, one per stop for a bus.
    pub listings: Vec<Listing>,
}

/// One row of the national standard of mediation places, as passnum keeps it to publish
/// it back. Coordinates are micro-degrees: exact integers, no floats in the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub id: String,
    pub nom: String,
    pub commune: String,
    pub code_postal: String,
    pub code_insee: Option<InseeCode>,
    pub adresse: String,
    pub latitude_micro: Option<i32>,
    pub longitude_micro: Option<i32>,
    pub horaires: String,
    pub services: Vec<String>,
    pub modalites_accompagnement: Vec<String>,
    pub frais_a_charge: Vec<String>,
    pub date_maj: String,
}

/// Where an order's passes may be used. A commune is inside when it is listed, or its
/// département is listed; a site is inside when it is listed explicitly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perimeter {
    pub communes: BTreeSet<InseeCode>,
    pub departements: BTreeSet<Departement>,
    pub sites: BTreeSet<SiteId>,
}

impl Perimeter {
    pub fn is_empty(&self) -> bool {
        self.communes.is_empty() && self.departements.is_empty() && self.sites.is_empty()
    }
    pub fn contains(&self, site: SiteId, commune: InseeCode) -> bool {
        self.sites.contains(&site)
            || self.communes.contains(&commune)
            || self.departements.contains(&commune.departement())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funding {
    pub at: Timestamp,
    pub amount: Cents,
    pub reference: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub commanditaire: CommanditaireId,
    pub pass_count: u32,
    pub carnet_size: u32,
    pub face_value: Cents,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    pub grace_days: u32,
    pub perimeter: Perimeter,
    /// Empty means every service is allowed.
    pub services: BTreeSet<ServiceCode>,
    pub programme: Label,
    pub created_at: Timestamp,
    pub minted: bool,
    pub funding: Option<Funding>,
    pub distributed: BTreeSet<u32>,
    /// Set once the expiry sweep has passed over this order.
    pub swept: bool,
}

impl Order {
    /// The first instant at which the order's passes are expired: validity plus grace.
    pub fn expires_at(&self) -> Timestamp {
        self.valid_until.plus_days(self.grace_days)
    }
    pub fn carnet_count(&self) -> u32 {
        self.pass_count.div_ceil(self.carnet_size)
    }
    pub fn total(&self) -> Cents {
        Cents(self.face_value.0 * i64::from(self.pass_count))
    }
    pub fn allows(&self, service: &ServiceCode) -> bool {
        self.services.is_empty() || self.services.contains(service)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassStatus {
    Minted,
    Active,
    Redeemed,
    Cancelled,
    Expired,
}

/// Where and for what a pass was redeemed. `at` is when the service took place: the
/// record's server time, or for a scan made offline the device's scan time (the record
/// keeps its own time, so how late the scan came is on the ledger).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub at: Timestamp,
    pub site: SiteId,
    pub structure: StructureId,
    pub stop: Option<u32>,
    pub commune: InseeCode,
    pub service: ServiceCode,
    pub workshop: Option<WorkshopId>,
    /// The settlement that pays it, once cleared (and until a bank rejection).
    pub settlement: Option<SettlementId>,
}

/// A pass's live redemption as the state holds it: the fact, and when its record was
/// written. The two differ for an offline scan, synced up to `offline_window_ms` late: its
/// reversal window runs from its arrival, so a bus that syncs a fortnight of scans can
/// still give back a mistaken one, and clearing waits for that window to close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRedemption {
    pub redemption: Redemption,
    pub recorded_at: Timestamp,
}

impl LiveRedemption {
    /// Until when its site may reverse it.
    pub fn reversible_until(&self, window_ms: i64) -> Timestamp {
        self.recorded_at.plus_ms(window_ms)
    }

    /// Where it sits in its structure's queue of unsettled redemptions: clearing takes
    /// them in the order their reversal windows close.
    pub fn unsettled_key(&self, serial: Serial) -> (Timestamp, Serial) {
        (self.recorded_at, serial)
    }
}

/// A redemption given back: kept so that reports can state what was reversed, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reversal {
    pub serial: Serial,
    pub order: OrderId,
    pub redemption: Redemption,
    pub reversed_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pass {
    pub serial: Serial,
    pub order: OrderId,
    /// The pass's position in its order, from 0; its carnet is `index / carnet_size`.
    pub index: u32,
    pub status: PassStatus,
    /// Boxed: most passes are never redeemed or not yet, and the state holds every pass
    /// (13 million at national scale), so an unredeemed pass costs a pointer, not a
    /// redemption's hundred-odd bytes. The encoding is the same.
    pub redeemed: Option<Box<LiveRedemption>>,
    /// When the pass stopped being live (cancelled or expired).
    pub closed_at: Option<Timestamp>,
}

impl Pass {
    pub fn redemption(&self) -> Option<&Redemption> {
        self.redeemed.as_deref().map(|r| &r.redemption)
    }
}

/// A collective workshop: the same facts as a conseiller numérique's activity report,
/// and no names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkshopSession {
    pub id: WorkshopId,
    pub site: SiteId,
    pub stop: Option<u32>,
    pub commune: InseeCode,
    /// Local date as days since 1970-01-01 and start as minutes after midnight.
    pub date_days: i32,
    pub start_minute: u16,
    pub duration_minutes: u16,
    pub themes: Vec<ServiceCode>,
    pub participants: u16,
    pub mediator: Label,
}

/// What a bearer token may do, and for whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Operator,
    Commanditaire(CommanditaireId),
    Structure(StructureId),
    Site(SiteId),
    Hub(BTreeSet<Departement>),
}

/// A bearer token, known by its hash: its role, when it was revoked (a revoked token is
/// kept, so that its holder is told so and its id never names another), and when it
/// expires (`None`: never, for the bootstrap operator's and those issued before tokens
/// had lifetimes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub role: Role,
    pub revoked_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// The answers remembered for its requests were forgotten (`Fact::RequestsForgotten`):
    /// it was refused for good, so none of them can be asked for again.
    pub requests_forgotten: bool,
}

impl Credential {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// When its token expired, if it has by `now` (it is refused from its expiry on).
    pub fn expired(&self, now: Timestamp) -> Option<Timestamp> {
        self.expires_at.filter(|at| now >= *at)
    }

    /// From when its token is refused for good (revoked or expired), if it ever is.
    pub fn refused_from(&self) -> Option<Timestamp> {
        match (self.revoked_at, self.expires_at) {
            (Some(r), Some(e)) => Some(r.min(e)),
            (r, e) => r.or(e),
        }
    }
}

/// Ledger accounts, in cents, debit positive. Every record's postings sum to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Account {
    /// Money received from a commanditaire, held segregated for it (asset).
    Funds(CommanditaireId),
    /// Value of its live, activated, unredeemed passes (liability).
    Outstanding(CommanditaireId),
    /// Owed to a structure for redemptions not yet paid (liability).
    Payable(StructureId),
    /// Unused value owed back to the commanditaire (liability).
    CreditDue(CommanditaireId),
    /// Settled for a structure and sent to the bank, not yet executed (liability).
    InPayment(StructureId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: Account,
    pub amount: i64,
}
