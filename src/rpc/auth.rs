//! Bearer tokens: random, shown once, stored only as blake3 hashes. Each names one role and
//! one actor; the scope checks below say what each role may touch.

use super::errors;
use crate::code::hex;
use crate::directory::Directory;
use crate::domain::*;
use tonic::Status;

pub const TOKEN_PREFIX: &str = "pn_";

#[derive(Clone, Debug)]
pub struct Principal {
    pub role: Role,
    /// Request ids are scoped to the credential that sent them.
    pub scope: String,
    /// The hash that names the credential in the state.
    pub token_hash: [u8; 32],
}

/// A fresh token from the OS CSPRNG, and the hash that is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// What names a credential to people (to revoke it) and scopes its request ids in the
/// ledger: the first 8 bytes of its hash, in hex. Not a secret.
pub fn credential_id(token_hash: &[u8; 32]) -> String {
    hex(&token_hash[..8])
}

/// An id as `credential_id` writes it: 16 lowercase hex digits (the core reads request
/// scopes by the same rule).
pub use crate::domain::is_credential_id;

pub fn hash_token(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Finds the caller's role at `now`. The lookup is by hash, so no comparison of secrets
/// leaks timing; the stored hash is then compared again in constant time (blake3::Hash's
/// equality).
pub fn authenticate<T>(
    directory: &Directory,
    request: &tonic::Request<T>,
    now: Timestamp,
) -> Result<Principal, Status> {
    let header = request.metadata().get("authorization").ok_or_else(|| {
        errors::unauthenticated("MISSING_TOKEN", "send `authorization: Bearer <token>`")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            errors::unauthenticated(
                "MALFORMED_TOKEN",
                "the authorization header is `Bearer <token>`",
            )
        })?;
    let hash = hash_token(token.trim());
    let credential = directory
        .credentials
        .get(&hash)
        .ok_or_else(|| errors::unauthenticated("UNKNOWN_TOKEN", "this token is not known"))?;
    if credential.is_revoked() {
        return Err(errors::unauthenticated(
            "TOKEN_REVOKED",
            "this token was revoked: ask the operator for a new one",
        ));
    }
    if let Some(at) = credential.expired(now) {
        return Err(errors::status(
            tonic::Code::Unauthenticated,
            "TOKEN_EXPIRED",
            "this token has expired: ask the operator for a new one",
            vec![("expired_at_ms", at.0.to_string())],
        ));
    }
    let role = credential.role.clone();
    debug_assert!(blake3::Hash::from(hash) == blake3::hash(token.trim().as_bytes()));
    Ok(Principal {
        role,
        scope: credential_id(&hash),
        token_hash: hash,
    })
}

impl Principal {
    pub fn require_operator(&self) -> Result<(), Status> {
        match self.role {
            Role::Operator => Ok(()),
            _ => Err(errors::denied("only the operator may do this")),
        }
    }

    /// Orders: the operator, the owning commanditaire, a hub whose territory the perimeter
    /// touches. Another commanditaire learns nothing: the order is "not found" for it.
    pub fn may_read_order(&self, order: &Order) -> Result<(), Status> {
        let not_found = || errors::refused(&Refusal::UnknownOrder(order.id));
        match &self.role {
            Role::Operator => Ok(()),
            Role::Commanditaire(c) if *c == order.commanditaire => Ok(()),
            Role::Commanditaire(_) => Err(not_found()),
            Role::Hub(depts) if perimeter_touches(&order.perimeter, depts) => Ok(()),
            Role::Hub(_) => Err(not_found()),
            Role::Structure(_) | Role::Site(_) => Err(errors::denied("sites do not read orders")),
        }
    }

    /// Changing an order: the operator or its commanditaire (hubs only read).
    pub fn may_manage_order(&self, order: &Order) -> Result<(), Status> {
        self.may_read_order(order)?;
        match self.role {
            Role::Operator | Role::Commanditaire(_) => Ok(()),
            _ => Err(errors::denied("hubs read orders but do not change them")),
        }
    }

    pub fn may_act_for_commanditaire(&self, c: CommanditaireId) -> Result<(), Status> {
        match &self.role {
            Role::Operator => Ok(()),
            Role::Commanditaire(own) if *own == c => Ok(()),
            _ => Err(errors::denied("a commanditaire orders only for itself")),
        }
    }

    /// A site redeems only as itself: a site token for that site, or its structure's token.
    pub fn may_redeem_at(&self, site: &Site) -> Result<(), Status> {
        self.may_redeem_for(site.id, site.structure)
    }

    /// The same check from the directory: the site and the structure that runs it.
    pub fn may_redeem_for(&self, site: SiteId, structure: StructureId) -> Result<(), Status> {
        match self.role {
            Role::Site(id) if id == site => Ok(()),
            Role::Structure(id) if id == structure => Ok(()),
            Role::Site(_) | Role::Structure(_) => Err(errors::denied(format!(
                "this credential does not act for site {site}"
            ))),
            _ => Err(errors::denied(
                "only a site or its structure redeems passes",
            )),
        }
    }

    /// Reading a site: the operator, the site, its structure, a hub of its territory.
    pub fn may_read_site(&self, site: &Site) -> Result<(), Status> {
        match &self.role {
            Role::Operator => Ok(()),
            Role::Hub(depts)
                if site_communes(site)
                    .iter()
                    .any(|c| depts.contains(&c.departement())) =>
            {
                Ok(())
            }
            Role::Hub(_) => Err(errors::refused(&Refusal::UnknownSite(site.id))),
            _ => self.may_redeem_at(site),
        }
    }

    /// Reading the whole ledger and verifying the chain: the operator and the hubs, who must
    /// be able to check the figures independently. The ledger holds no personal data.
    pub fn may_read_whole_ledger(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Hub(_))
    }
}

pub use crate::domain::import::site_communes;

fn perimeter_touches(p: &Perimeter, depts: &std::collections::BTreeSet<Departement>) -> bool {
    p.departements.iter().any(|d| depts.contains(d))
        || p.communes.iter().any(|c| depts.contains(&c.departement()))
}
