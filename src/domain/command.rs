//! Commands: everything a caller can ask the core to do. Randomness (serials) and identity
//! (the caller's request key) come in with the command; the clock comes in beside it.

use super::entities::*;
pub use super::import::{ImportScope, PlaceRow};
use super::serial::Serial;
use super::types::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A client's request id, scoped to the credential that sent it, with a fingerprint of the
/// request's content: the same key with the same fingerprint is a retry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    pub scope: String,
    pub id: String,
    pub fingerprint: [u8; 32],
}

impl RequestKey {
    pub const ID_LEN_MAX: usize = 64;
    /// `scope/id`, the key of the remembered answer. Built by hand: it is made twice per
    /// command on the writer thread, where `format!` took 1.6 % of the CPU under load.
    pub fn map_key(&self) -> String {
        let mut key = String::with_capacity(self.scope.len() + 1 + self.id.len());
        key.push_str(&self.scope);
        key.push('/');
        key.push_str(&self.id);
        key
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    /// At a fixed site: its own commune.
    Site,
    /// At the given stop of an itinerant site.
    Stop(u32),
    /// In the given commune (a workshop-kind site).
    Commune(InseeCode),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub commanditaire: CommanditaireId,
    pub pass_count: u32,
    pub carnet_size: u32,
    pub face_value: Cents,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    pub grace_days: u32,
    pub perimeter: Perimeter,
    pub services: BTreeSet<ServiceCode>,
    pub programme: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorkshop {
    pub site: SiteId,
    pub place: Place,
    pub date_days: i32,
    pub start_minute: u16,
    pub duration_minutes: u16,
    pub themes: Vec<ServiceCode>,
    pub participants: u16,
    pub mediator: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelTarget {
    Passes(Vec<Serial>),
    Carnet { order: OrderId, carnet: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterCommanditaire {
        name: Label,
    },
    RegisterStructure {
        name: Label,
        payee: PayeeId,
        iban: Option<Iban>,
    },
    /// `verified` when the operator sets or confirms it; a structure's own is unverified.
    SetStructureIban {
        structure: StructureId,
        iban: Iban,
        verified: bool,
    },
    RegisterSite {
        structure: StructureId,
        name: Label,
        kind: SiteKind,
    },
    SetSiteActive {
        site: SiteId,
        active: bool,
    },
    IssueCredential {
        token_hash: [u8; 32],
        role: Role,
    },
    CreateOrder(NewOrder),
    Mint {
        order: OrderId,
        serials: Vec<Serial>,
    },
    RecordFunding {
        order: OrderId,
        amount: Cents,
        reference: Label,
    },
    MarkDistributed {
        order: OrderId,
        carnet: u32,
    },
    Redeem {
        serial: Serial,
        site: SiteId,
        place: Place,
        service: ServiceCode,
    },
    RedeemWorkshop {
        workshop: NewWorkshop,
        serials: Vec<Serial>,
    },
    Reverse {
        serial: Serial,
        site: SiteId,
    },
    Cancel {
        target: CancelTarget,
    },
    /// Expires every live pass whose order's validity plus grace has ended by `now`.
    ExpireSweep,
    /// Settles what was redeemed before `cut_off` (its next settlements; run until done).
    RunClearing {
        cut_off: Timestamp,
    },
    /// The bank executed a settlement's transfer.
    RecordPayment {
        settlement: SettlementId,
        bank_reference: Label,
        executed_on_days: i32,
        /// What the bank executed: a SEPA transfer is executed whole, so it must equal the
        /// settlement's total; anything else is a reconciliation matter, refused here.
        amount: Cents,
    },
    /// The bank returned a settlement's transfer.
    RecordRejection {
        settlement: SettlementId,
        reason: Label,
    },
    /// References sites from the national open data: rows already validated at the edge.
    ImportSites {
        rows: Vec<PlaceRow>,
        scope: ImportScope,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub request: Option<RequestKey>,
    pub command: Command,
}
