//! What the ledger stores: a record body holds the facts an accepted command established,
//! their postings, and the answer given. Replaying bodies in order rebuilds every balance.

use super::command::RequestKey;
use super::entities::*;
use super::import::ImportReport;
use super::refusal::Refusal;
use super::serial::Serial;
use super::types::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fact {
    CommanditaireRegistered(Commanditaire),
    StructureRegistered(Structure),
    StructureIbanSet {
        structure: StructureId,
        iban: Iban,
        verified: bool,
    },
    SiteRegistered(Site),
    SiteActivitySet {
        site: SiteId,
        active: bool,
    },
    /// An import found a referenced site changed in the open data.
    SiteUpdated(Site),
    CredentialIssued {
        token_hash: [u8; 32],
        role: Role,
    },
    OrderCreated(Order),
    /// Pass `i` of the order is `serials[i]`, in carnet `i / carnet_size`.
    PassesMinted {
        order: OrderId,
        serials: Vec<Serial>,
    },
    OrderFunded {
        order: OrderId,
        funding: Funding,
    },
    CarnetDistributed {
        order: OrderId,
        carnet: u32,
    },
    WorkshopHeld(WorkshopSession),
    PassRedeemed {
        serial: Serial,
        redemption: Redemption,
    },
    RedemptionReversed {
        serial: Serial,
        site: SiteId,
    },
    PassCancelled {
        serial: Serial,
    },
    PassExpired {
        serial: Serial,
    },
    SettlementCreated(super::clearing::Settlement),
    SettlementStatusSet {
        settlement: SettlementId,
        status: super::clearing::SettlementStatus,
    },
    /// The expiry sweep has passed over this order: nothing of it is live any more.
    OrderSwept {
        order: OrderId,
    },
    /// From now on the token is refused. (New variants go last: the log numbers them.)
    CredentialRevoked {
        token_hash: [u8; 32],
    },
    /// The token just issued is refused from `at` on (in the record that issues it).
    CredentialExpires {
        token_hash: [u8; 32],
        at: Timestamp,
    },
    /// The fee the operator bills on the order just created (in the record that creates
    /// it): the rule in force then, so a later rule moves no order's fee.
    OrderFee {
        order: OrderId,
        rate: FeeRate,
    },
    /// The answers remembered for these credentials' requests are forgotten: each was
    /// refused for good (revoked or expired), so no request of theirs can come again.
    RequestsForgotten {
        token_hashes: Vec<[u8; 32]>,
    },
    /// Credit due to the commanditaire (its cancelled and expired passes' face value) went
    /// back to it: refunded, or carried over to a new order, as `reference` says.
    CreditReturned {
        commanditaire: CommanditaireId,
        amount: Cents,
        reference: Label,
    },
}

/// The answer to an accepted command, remembered for retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    CommanditaireRegistered(CommanditaireId),
    StructureRegistered(StructureId),
    StructureUpdated(StructureId),
    SiteRegistered(SiteId),
    SiteUpdated(SiteId),
    /// Boxed: a remembered answer of every kind is as large as the largest, and this one
    /// (five lists) would double every remembered redemption.
    SitesImported(Box<ImportReport>),
    Cleared {
        cut_off: Timestamp,
        settlements: Vec<SettlementId>,
        lines: u32,
        total: Cents,
        remaining: bool,
    },
    SettlementPaid(SettlementId),
    SettlementRejected(SettlementId),
    CredentialIssued,
    OrderCreated(OrderId),
    Minted {
        order: OrderId,
        passes: u32,
    },
    Funded {
        order: OrderId,
        activated: u32,
    },
    Distributed {
        order: OrderId,
        carnet: u32,
    },
    Redeemed(Redeemed),
    Workshop {
        workshop: WorkshopId,
        passes: Vec<Result<Redeemed, Refusal>>,
    },
    Reversed {
        serial: Serial,
        amount: Cents,
    },
    Cancelled {
        passes: u32,
        credited: Cents,
    },
    Expired {
        passes: u32,
        credited: Cents,
    },
    CredentialRevoked,
    /// This many credentials' remembered requests were forgotten.
    RequestsForgotten {
        credentials: u32,
    },
    CreditReturned {
        commanditaire: CommanditaireId,
        /// What is still due to it after this.
        remaining: Cents,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redeemed {
    pub serial: Serial,
    pub order: OrderId,
    pub amount: Cents,
    pub at: Timestamp,
    pub site: SiteId,
}

/// The body of one ledger record. `result` is `Err` when the command was refused: the
/// refusal is recorded so that a retry gets the same answer, even after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    pub request: Option<RequestKey>,
    pub facts: Vec<Fact>,
    pub postings: Vec<Posting>,
    pub result: Result<Outcome, Refusal>,
}

impl RecordBody {
    pub fn postings_balance(&self) -> bool {
        self.postings
            .iter()
            .map(|p| i128::from(p.amount))
            .sum::<i128>()
            == 0
    }
}
