//! Deciding who takes part: commanditaires, structures, sites and credentials.

use super::*;

pub(super) fn register_commanditaire(state: &State, name: &Label) -> Step {
    let c = Commanditaire {
        id: CommanditaireId(state.commanditaires.len() as u64 + 1),
        name: name.clone(),
    };
    let id = c.id;
    change(
        vec![Fact::CommanditaireRegistered(c)],
        Outcome::CommanditaireRegistered(id),
    )
}

pub(super) fn register_structure(
    state: &State,
    name: &Label,
    payee: &PayeeId,
    iban: &Option<Iban>,
) -> Result<Step, Refusal> {
    if state.structures.values().any(|s| &s.payee == payee) {
        return Err(Refusal::PayeeAlreadyRegistered);
    }
    let id = StructureId(state.structures.len() as u64 + 1);
    let s = Structure {
        id,
        name: name.clone(),
        payee: payee.clone(),
        iban: iban.clone(),
        // An IBAN given by the operator at registration is the operator's own check.
        iban_verified: iban.is_some(),
    };
    Ok(change(
        vec![Fact::StructureRegistered(s)],
        Outcome::StructureRegistered(id),
    ))
}

pub(super) fn issue_credential(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    token_hash: &[u8; 32],
    role: &Role,
    lifetime: Lifetime,
) -> Result<Step, Refusal> {
    if state.credentials.contains_key(token_hash) {
        return Err(Refusal::CredentialExists);
    }
    match role {
        Role::Operator | Role::Hub(_) => {}
        Role::Commanditaire(c) => {
            state
                .commanditaires
                .get(c)
                .ok_or(Refusal::UnknownCommanditaire(*c))?;
        }
        Role::Structure(s) => {
            known_structure(state, *s)?;
        }
        Role::Site(s) => {
            state.sites.get(s).ok_or(Refusal::UnknownSite(*s))?;
        }
    }
    let expires_at = credential_expiry(state, rules, now, role, lifetime)?;
    let mut facts = vec![Fact::CredentialIssued {
        token_hash: *token_hash,
        role: role.clone(),
    }];
    facts.extend(expires_at.map(|at| Fact::CredentialExpires {
        token_hash: *token_hash,
        at,
    }));
    Ok(change(facts, Outcome::CredentialIssued))
}

/// When a credential issued now expires. Only a ledger's first credential, the operator's,
/// may never expire: every other one is issued by a credential, and lives at most the
/// rules' longest.
pub(super) fn credential_expiry(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    role: &Role,
    lifetime: Lifetime,
) -> Result<Option<Timestamp>, Refusal> {
    let longest = rules.credential_lifetime_ms;
    let out_of_range = Refusal::CredentialLifetimeOutOfRange {
        longest_ms: longest,
    };
    let ms = match lifetime {
        Lifetime::Never if state.credentials.is_empty() && *role == Role::Operator => {
            return Ok(None)
        }
        Lifetime::Never => return Err(out_of_range),
        Lifetime::Longest => longest,
        Lifetime::Ms(ms) if (1..=longest).contains(&ms) => ms,
        Lifetime::Ms(_) => return Err(out_of_range),
    };
    Ok(Some(Timestamp(now.0.saturating_add(ms))))
}

pub(super) fn revoke_credential(state: &State, token_hash: &[u8; 32]) -> Result<Step, Refusal> {
    let c = state
        .credentials
        .get(token_hash)
        .ok_or(Refusal::UnknownCredential)?;
    if c.is_revoked() {
        return Err(Refusal::CredentialRevoked);
    }
    let fact = Fact::CredentialRevoked {
        token_hash: *token_hash,
    };
    Ok(change(vec![fact], Outcome::CredentialRevoked))
}

pub(super) fn set_structure_iban(
    state: &State,
    structure: StructureId,
    iban: &Iban,
    verified: bool,
) -> Result<Step, Refusal> {
    known_structure(state, structure)?;
    let fact = Fact::StructureIbanSet {
        structure,
        iban: iban.clone(),
        verified,
    };
    Ok(change(vec![fact], Outcome::StructureUpdated(structure)))
}

pub(super) fn register_site(
    state: &State,
    structure: StructureId,
    name: &Label,
    kind: &SiteKind,
) -> Result<Step, Refusal> {
    known_structure(state, structure)?;
    let id = SiteId(state.sites.len() as u64 + 1);
    let site = Site {
        id,
        structure,
        name: name.clone(),
        kind: kind.clone(),
        active: true,
        reference: None,
        listings: vec![],
    };
    Ok(change(
        vec![Fact::SiteRegistered(site)],
        Outcome::SiteRegistered(id),
    ))
}

pub(super) fn set_site_active(state: &State, site: SiteId, active: bool) -> Result<Step, Refusal> {
    state.sites.get(&site).ok_or(Refusal::UnknownSite(site))?;
    let fact = Fact::SiteActivitySet { site, active };
    Ok(change(vec![fact], Outcome::SiteUpdated(site)))
}
