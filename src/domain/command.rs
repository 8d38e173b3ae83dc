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
    /// What the remembered answer is filed under. Computed twice per command on the writer
    /// thread (decide, then apply): one blake3 block, no allocation.
    pub fn digest(&self) -> RequestDigest {
        let mut h = blake3::Hasher::new();
        h.update(b"passnum/request/v1");
        h.update(&(self.scope.len() as u64).to_le_bytes());
        h.update(self.scope.as_bytes());
        h.update(self.id.as_bytes());
        let mut d = [0; 16];
        d.copy_from_slice(&h.finalize().as_bytes()[..16]);
        RequestDigest(d)
    }

    /// The credential the request came from, if its scope names one: the service scopes
    /// every request by its credential's id, the first 8 bytes of its token's hash in
    /// lower-case hex (`rpc::auth::credential_id`).
    pub fn credential(&self) -> Option<CredentialTag> {
        is_credential_id(&self.scope)
            .then(|| u64::from_str_radix(&self.scope, 16).ok())
            .flatten()
            .and_then(std::num::NonZeroU64::new)
            .map(CredentialTag)
    }
}

/// A credential's id as the service writes it: 16 lower-case hex digits.
pub fn is_credential_id(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The 8 bytes of a token's hash that name its credential, as a number. Kept with every
/// remembered request so that a credential refused for good can have its requests
/// forgotten. (A hash whose first 8 bytes are zero names none: its requests are kept.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CredentialTag(pub std::num::NonZeroU64);

impl CredentialTag {
    pub fn of(token_hash: &[u8; 32]) -> Option<CredentialTag> {
        let first: [u8; 8] = token_hash[..8].try_into().expect("8 of 32 bytes");
        std::num::NonZeroU64::new(u64::from_be_bytes(first)).map(CredentialTag)
    }
}

/// A remembered request's key: 128 bits of blake3 over its scope and id. The map of every
/// request ever answered holds about 13 million entries at national scale; a fixed-size key
/// keeps no string on the heap (about 64 bytes each). Finding two requests that share a
/// digest takes about 2^64 hashes, so a digest names one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestDigest(pub [u8; 16]);

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
        lifetime: Lifetime,
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
        /// When a device scanned the pass offline; None for a scan sent as it happens.
        scanned_at: Option<Timestamp>,
    },
    RedeemWorkshop {
        workshop: NewWorkshop,
        serials: Vec<Serial>,
        /// When a device recorded the session's passes offline (a bus in a village without
        /// a network); None for a session sent as it happens. Judged like a scan's time.
        held_at: Option<Timestamp>,
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
    RevokeCredential {
        token_hash: [u8; 32],
    },
    /// Forgets the remembered requests of credentials refused for good before yesterday
    /// (at most once a day: it reads every remembered request).
    ForgetRequests,
    /// The operator gave back part or all of the credit due to a commanditaire (a transfer,
    /// or value carried over to a new order): `reference` names it.
    ReturnCredit {
        commanditaire: CommanditaireId,
        amount: Cents,
        reference: Label,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub request: Option<RequestKey>,
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: &str, id: &str) -> RequestKey {
        RequestKey {
            scope: scope.into(),
            id: id.into(),
            fingerprint: [0; 32],
        }
    }

    #[test]
    fn a_digest_names_scope_and_id_apart_and_ignores_the_content() {
        assert_ne!(key("ab", "c").digest(), key("a", "bc").digest());
        assert_ne!(key("s", "r1").digest(), key("t", "r1").digest());
        let mut retry = key("s", "r1");
        retry.fingerprint = [1; 32];
        assert_eq!(retry.digest(), key("s", "r1").digest());
    }

    #[test]
    fn a_request_scoped_by_a_credential_id_names_that_credential() {
        let hash = [0xab; 32];
        let tag = CredentialTag::of(&hash).unwrap();
        assert_eq!(key("abababababababab", "r").credential(), Some(tag));
        assert_eq!(CredentialTag::of(&[0; 32]), None);
        for other in [
            "ABABABABABABABAB",
            "+bababababababab",
            "abababababababa",
            "site:0102",
            "",
        ] {
            assert_eq!(key(other, "r").credential(), None, "{other:?}");
        }
        assert_eq!(key("0000000000000000", "r").credential(), None);
    }

    /// The digest keys the index on disk: changing it needs a new index layout version.
    #[test]
    fn the_digest_is_frozen() {
        let d = key("site:0102", "scan-1").digest();
        let frozen = [
            0x0e, 0x80, 0x9c, 0x05, 0xea, 0xb0, 0x6b, 0x8f, 0xe6, 0xf3, 0x57, 0xbc, 0xfb, 0x6a,
            0xf1, 0xd7,
        ];
        assert_eq!(d.0, frozen);
    }
}

/// How long an issued credential lets its token in. A token on a lost tablet or in an old
/// script stops working by itself; the operator rotates tokens before they expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lifetime {
    /// The longest the rules allow (`Rules::credential_lifetime_ms`).
    Longest,
    /// This many ms from its issue, at most the longest.
    Ms(i64),
    /// Never expires: only the first credential of a ledger, the operator's that `serve`
    /// writes into its data directory, from which every other is issued.
    Never,
}
