//! Expected refusals: values named after the rule that refused, never panics or strings.
//! Each has a stable machine-readable reason (`reason()`), which the gRPC layer sends as
//! google.rpc.ErrorInfo.reason.

use super::serial::Serial;
use super::types::*;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    // Request identity.
    RequestIdReused,
    // Unknown things.
    UnknownCommanditaire(CommanditaireId),
    UnknownStructure(StructureId),
    UnknownSite(SiteId),
    UnknownOrder(OrderId),
    UnknownPass(Serial),
    UnknownStop { site: SiteId, stop: u32 },
    UnknownCarnet { order: OrderId, carnet: u32 },
    // Registry rules.
    PayeeAlreadyRegistered,
    CredentialExists,
    PlaceDoesNotFitSite,
    // Order rules.
    EmptyPerimeter,
    ValidityWindowInverted,
    CarnetSizeInvalid,
    MintCountMismatch { expected: u32, got: u32 },
    SerialCollision(Serial),
    NotMinted,
    AlreadyFunded,
    FundingMismatch { expected: Cents, got: Cents },
    AlreadyDistributed { carnet: u32 },
    // Redemption rules, in their order of precedence.
    NotActivated,
    Cancelled,
    Expired { at: Timestamp },
    NotYetValid { from: Timestamp },
    AlreadyRedeemed { at: Timestamp, site: SiteId },
    SiteInactive(SiteId),
    OutsidePerimeter,
    ServiceNotAllowed,
    // Reversal rules.
    NotRedeemed,
    WrongSite { site: SiteId },
    ReversalWindowClosed { until: Timestamp },
    // Cancellation.
    NotCancellable,
    // Clearing.
    CutOffInFuture { now: Timestamp },
    UnknownSettlement(SettlementId),
    SettlementNotOpen(SettlementId),
    AlreadySettled(SettlementId),
    PaymentAmountMismatch { expected: Cents, got: Cents },
    NotSettled(Serial),
    // Storage: what the command would record exceeds the size of one ledger record.
    RecordTooLarge { bytes: usize, max: usize },
    // Credentials. (New variants go last: the log numbers them.)
    UnknownCredential,
    CredentialRevoked,
    // Offline scans: the scan time is outside what the ledger accepts.
    ScanTooOld { oldest: Timestamp },
    ScanInFuture { latest: Timestamp },
    // Credentials: a lifetime is 1 ms up to the rules' longest.
    CredentialLifetimeOutOfRange { longest_ms: i64 },
    // Credit: no more can go back to a commanditaire than it is due.
    CreditExceeded { due: Cents, asked: Cents },
}

impl Refusal {
    /// The stable, machine-readable reason: UPPER_SNAKE_CASE, never renamed.
    pub fn reason(&self) -> &'static str {
        use Refusal::*;
        match self {
            RequestIdReused => "REQUEST_ID_REUSED",
            UnknownCommanditaire(_) => "UNKNOWN_COMMANDITAIRE",
            UnknownStructure(_) => "UNKNOWN_STRUCTURE",
            UnknownSite(_) => "UNKNOWN_SITE",
            UnknownOrder(_) => "UNKNOWN_ORDER",
            UnknownPass(_) => "UNKNOWN_PASS",
            UnknownStop { .. } => "UNKNOWN_STOP",
            UnknownCarnet { .. } => "UNKNOWN_CARNET",
            PayeeAlreadyRegistered => "PAYEE_ALREADY_REGISTERED",
            CredentialExists => "CREDENTIAL_EXISTS",
            UnknownCredential => "UNKNOWN_CREDENTIAL",
            CredentialRevoked => "CREDENTIAL_ALREADY_REVOKED",
            PlaceDoesNotFitSite => "PLACE_DOES_NOT_FIT_SITE",
            EmptyPerimeter => "EMPTY_PERIMETER",
            ValidityWindowInverted => "VALIDITY_WINDOW_INVERTED",
            CarnetSizeInvalid => "CARNET_SIZE_INVALID",
            MintCountMismatch { .. } => "MINT_COUNT_MISMATCH",
            SerialCollision(_) => "SERIAL_COLLISION",
            NotMinted => "NOT_MINTED",
            AlreadyFunded => "ALREADY_FUNDED",
            FundingMismatch { .. } => "FUNDING_MISMATCH",
            AlreadyDistributed { .. } => "ALREADY_DISTRIBUTED",
            NotActivated => "NOT_ACTIVATED",
            Cancelled => "CANCELLED",
            Expired { .. } => "EXPIRED",
            NotYetValid { .. } => "NOT_YET_VALID",
            AlreadyRedeemed { .. } => "ALREADY_REDEEMED",
            SiteInactive(_) => "SITE_INACTIVE",
            OutsidePerimeter => "OUTSIDE_PERIMETER",
            ServiceNotAllowed => "SERVICE_NOT_ALLOWED",
            NotRedeemed => "NOT_REDEEMED",
            WrongSite { .. } => "WRONG_SITE",
            ReversalWindowClosed { .. } => "REVERSAL_WINDOW_CLOSED",
            NotCancellable => "NOT_CANCELLABLE",
            RecordTooLarge { .. } => "RECORD_TOO_LARGE",
            CutOffInFuture { .. } => "CUT_OFF_IN_FUTURE",
            UnknownSettlement(_) => "UNKNOWN_SETTLEMENT",
            SettlementNotOpen(_) => "SETTLEMENT_NOT_OPEN",
            AlreadySettled(_) => "ALREADY_SETTLED",
            PaymentAmountMismatch { .. } => "PAYMENT_AMOUNT_MISMATCH",
            NotSettled(_) => "NOT_SETTLED",
            ScanTooOld { .. } => "SCAN_TOO_OLD",
            ScanInFuture { .. } => "SCAN_IN_FUTURE",
            CredentialLifetimeOutOfRange { .. } => "CREDENTIAL_LIFETIME_OUT_OF_RANGE",
            CreditExceeded { .. } => "CREDIT_EXCEEDED",
        }
    }

    /// Facts that back the refusal, as key/value pairs (ErrorInfo metadata).
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        use Refusal::*;
        match self {
            UnknownCommanditaire(id) => vec![("commanditaire", id.0.to_string())],
            UnknownStructure(id) => vec![("structure", id.0.to_string())],
            UnknownSite(id) | SiteInactive(id) => vec![("site", id.0.to_string())],
            UnknownOrder(id) => vec![("order", id.0.to_string())],
            UnknownPass(s) | SerialCollision(s) | NotSettled(s) => vec![("serial", s.to_string())],
            UnknownStop { site, stop } => {
                vec![("site", site.0.to_string()), ("stop", stop.to_string())]
            }
            UnknownCarnet { order, carnet } => {
                vec![
                    ("order", order.0.to_string()),
                    ("carnet", carnet.to_string()),
                ]
            }
            MintCountMismatch { expected, got } => {
                vec![("expected", expected.to_string()), ("got", got.to_string())]
            }
            FundingMismatch { expected, got } | PaymentAmountMismatch { expected, got } => vec![
                ("expected_cents", expected.0.to_string()),
                ("got_cents", got.0.to_string()),
            ],
            AlreadyDistributed { carnet } => vec![("carnet", carnet.to_string())],
            Expired { at } => vec![("expired_at_ms", at.0.to_string())],
            NotYetValid { from } => vec![("valid_from_ms", from.0.to_string())],
            AlreadyRedeemed { at, site } => {
                vec![
                    ("redeemed_at_ms", at.0.to_string()),
                    ("site", site.0.to_string()),
                ]
            }
            WrongSite { site } => vec![("redeemed_at_site", site.0.to_string())],
            ReversalWindowClosed { until } => vec![("window_closed_at_ms", until.0.to_string())],
            ScanTooOld { oldest } => vec![("oldest_accepted_ms", oldest.0.to_string())],
            ScanInFuture { latest } => vec![("latest_accepted_ms", latest.0.to_string())],
            CredentialLifetimeOutOfRange { longest_ms } => {
                vec![(
                    "longest_days",
                    (longest_ms / Timestamp::MS_PER_DAY).to_string(),
                )]
            }
            CreditExceeded { due, asked } => vec![
                ("due_cents", due.0.to_string()),
                ("asked_cents", asked.0.to_string()),
            ],
            _ => vec![],
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Refusal::*;
        match self {
            RequestIdReused => write!(f, "this request id was already used for a different request"),
            UnknownCommanditaire(id) => write!(f, "no commanditaire {id}"),
            UnknownStructure(id) => write!(f, "no structure {id}"),
            UnknownSite(id) => write!(f, "no site {id}"),
            UnknownOrder(id) => write!(f, "no order {id}"),
            UnknownPass(s) => write!(f, "no pass {s}"),
            UnknownStop { site, stop } => write!(f, "site {site} has no stop {stop}"),
            UnknownCarnet { order, carnet } => write!(f, "order {order} has no carnet {carnet}"),
            PayeeAlreadyRegistered => write!(f, "a structure with this SIRET or RNA is already registered"),
            CredentialExists => write!(f, "this credential already exists"),
            UnknownCredential => write!(f, "no credential has this id"),
            CredentialRevoked => write!(f, "this credential is already revoked"),
            PlaceDoesNotFitSite => write!(
                f,
                "the place does not fit the site's kind: a bus names a stop, a workshop site names a commune, a fixed site names neither"
            ),
            EmptyPerimeter => write!(f, "an order's perimeter lists at least one commune, département or site"),
            ValidityWindowInverted => write!(f, "the validity window ends before it starts"),
            CarnetSizeInvalid => write!(f, "a carnet holds 1 to 20 passes and no more than the order"),
            MintCountMismatch { expected, got } => write!(f, "the order has {expected} passes, not {got}"),
            SerialCollision(s) => write!(f, "serial {s} already exists"),
            NotMinted => write!(f, "the order's passes are not minted yet"),
            AlreadyFunded => write!(f, "the order is already funded"),
            FundingMismatch { expected, got } => {
                write!(f, "the order's value is {expected}; funding of {got} does not match")
            }
            AlreadyDistributed { carnet } => write!(f, "carnet {carnet} is already marked distributed"),
            NotActivated => write!(f, "the pass is not activated: its order is not funded yet"),
            Cancelled => write!(f, "the pass was cancelled"),
            Expired { at } => write!(f, "the pass expired at {} ms", at.0),
            NotYetValid { from } => write!(f, "the pass is valid from {} ms", from.0),
            AlreadyRedeemed { at, site } => write!(f, "the pass was already redeemed at {} ms at site {site}", at.0),
            SiteInactive(id) => write!(f, "site {id} is not active"),
            OutsidePerimeter => write!(f, "the place of service is outside the order's perimeter"),
            ServiceNotAllowed => write!(f, "the order does not allow this service"),
            NotRedeemed => write!(f, "the pass is not redeemed"),
            WrongSite { site } => write!(f, "only site {site}, which redeemed the pass, may reverse it"),
            ReversalWindowClosed { until } => write!(f, "the reversal window closed at {} ms", until.0),
            NotCancellable => write!(f, "only minted or activated passes can be cancelled"),
            CutOffInFuture { now } => write!(f, "a clearing cut-off cannot be after now ({} ms)", now.0),
            UnknownSettlement(id) => write!(f, "no settlement {id}"),
            SettlementNotOpen(id) => write!(f, "settlement {id} is already paid or rejected"),
            PaymentAmountMismatch { expected, got } => write!(f, "the settlement's total is {expected}; a payment of {got} is not its execution"),
            NotSettled(s) => write!(f, "pass {s} is in no settlement (not redeemed, not yet cleared, or returned by the bank)"),
            AlreadySettled(id) => write!(f, "the redemption is cleared in settlement {id}: it can no longer be reversed"),
            ScanTooOld { oldest } => write!(
                f,
                "an offline scan must reach the ledger within its window: this one is from before {} ms",
                oldest.0
            ),
            ScanInFuture { latest } => write!(
                f,
                "the scan time is ahead of the server's clock (latest accepted {} ms): check the device's clock",
                latest.0
            ),
            CredentialLifetimeOutOfRange { longest_ms } => write!(
                f,
                "a credential is valid for 1 to {} days",
                longest_ms / Timestamp::MS_PER_DAY
            ),
            RecordTooLarge { bytes, max } => {
                write!(f, "this would make a ledger record of {bytes} bytes; the most is {max}: split it")
            }
            CreditExceeded { due, asked } => {
                write!(f, "the commanditaire is due {due} of credit; {asked} cannot go back to it")
            }
        }
    }
}
