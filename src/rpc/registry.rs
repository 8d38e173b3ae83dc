//! Registry (operator): commanditaires, structures, sites and bus stops, credentials.

use super::auth;
use super::context::Ctx;
use super::convert;
use super::errors::{self, Violations};
use super::pb::{self, registry_server::Registry};
use crate::domain::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct RegistryService(pub Arc<Ctx>);

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register_commanditaire(
        &self,
        req: Request<pb::RegisterCommanditaireRequest>,
    ) -> Result<Response<pb::RegisterCommanditaireResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let name = convert::label(&mut v, "name", &r.name);
        v.into_result()?;
        let cmd = Command::RegisterCommanditaire {
            name: name.expect("checked"),
        };
        match self
            .0
            .submit(&who, "RegisterCommanditaire", &r.request_id, r, cmd)
            .await?
        {
            Outcome::CommanditaireRegistered(id) => {
                Ok(Response::new(pb::RegisterCommanditaireResponse {
                    commanditaire_id: id.0,
                }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    async fn register_structure(
        &self,
        req: Request<pb::RegisterStructureRequest>,
    ) -> Result<Response<pb::RegisterStructureResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let name = convert::label(&mut v, "name", &r.name);
        let payee = v.check("siret_or_rna", PayeeId::parse(&r.siret_or_rna));
        let iban = if r.iban.is_empty() {
            None
        } else {
            v.check("iban", Iban::parse(&r.iban))
        };
        v.into_result()?;
        let cmd = Command::RegisterStructure {
            name: name.expect("checked"),
            payee: payee.expect("checked"),
            iban,
        };
        match self
            .0
            .submit(&who, "RegisterStructure", &r.request_id, r, cmd)
            .await?
        {
            Outcome::StructureRegistered(id) => Ok(Response::new(pb::RegisterStructureResponse {
                structure_id: id.0,
            })),
            o => Err(errors::unexpected(o)),
        }
    }

    async fn set_structure_iban(
        &self,
        req: Request<pb::SetStructureIbanRequest>,
    ) -> Result<Response<pb::SetStructureIbanResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        // The operator's IBAN is verified; a structure may give its own, which waits for
        // the operator's check before any payment file.
        let verified = match who.role {
            Role::Operator => true,
            Role::Structure(s) if s.0 == r.structure_id => false,
            _ => {
                return Err(errors::denied(
                    "only the operator or the structure itself sets its IBAN",
                ))
            }
        };
        let mut v = Violations::default();
        let iban = v.check("iban", Iban::parse(&r.iban));
        v.into_result()?;
        let cmd = Command::SetStructureIban {
            structure: StructureId(r.structure_id),
            iban: iban.expect("checked"),
            verified,
        };
        self.0
            .submit(&who, "SetStructureIban", &r.request_id, r, cmd)
            .await?;
        Ok(Response::new(pb::SetStructureIbanResponse {}))
    }

    async fn register_site(
        &self,
        req: Request<pb::RegisterSiteRequest>,
    ) -> Result<Response<pb::RegisterSiteResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let name = convert::label(&mut v, "name", &r.name);
        let kind = convert::site_kind(&mut v, &self.0.limits, r);
        v.into_result()?;
        let cmd = Command::RegisterSite {
            structure: StructureId(r.structure_id),
            name: name.expect("checked"),
            kind: kind.expect("checked"),
        };
        match self
            .0
            .submit(&who, "RegisterSite", &r.request_id, r, cmd)
            .await?
        {
            Outcome::SiteRegistered(id) => {
                Ok(Response::new(pb::RegisterSiteResponse { site_id: id.0 }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    async fn set_site_active(
        &self,
        req: Request<pb::SetSiteActiveRequest>,
    ) -> Result<Response<pb::SetSiteActiveResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let cmd = Command::SetSiteActive {
            site: SiteId(r.site_id),
            active: r.active,
        };
        self.0
            .submit(&who, "SetSiteActive", &r.request_id, r, cmd)
            .await?;
        Ok(Response::new(pb::SetSiteActiveResponse {}))
    }

    async fn issue_credential(
        &self,
        req: Request<pb::IssueCredentialRequest>,
    ) -> Result<Response<pb::IssueCredentialResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let role = convert::role(&mut v, r);
        v.into_result()?;
        // Tokens are shown once: a retry of the same request finds the first credential
        // issued and is told so, rather than given a token that was never stored.
        let (token, hash) = auth::new_token();
        let cmd = Command::IssueCredential {
            token_hash: hash,
            role: role.expect("checked"),
            lifetime: convert::lifetime(r.valid_days),
        };
        let first = self
            .0
            .submit(&who, "IssueCredential", &r.request_id, r, cmd)
            .await?;
        // The outcome of a retry names the first request's token, not this one's.
        let expires_at = match first {
            Outcome::CredentialIssued => match self.0.read()?.credentials.get(&hash) {
                Some(issued) => issued.expires_at,
                None => {
                    return Err(errors::status(
                        tonic::Code::AlreadyExists,
                        "TOKEN_ALREADY_SHOWN",
                        "this request already issued a token, which is shown only once; issue a new one with a new request id",
                        vec![],
                    ))
                }
            },
            o => return Err(errors::unexpected(o)),
        };
        Ok(Response::new(pb::IssueCredentialResponse {
            token,
            credential_id: auth::credential_id(&hash),
            expires_at_ms: expires_at.map_or(0, |t| t.0),
        }))
    }

    async fn revoke_credential(
        &self,
        req: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::RevokeCredentialResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        if !auth::is_credential_id(&r.credential_id) {
            v.add("credential_id", "16 hex digits, as IssueCredential gave it");
        }
        v.into_result()?;
        // Revoking one's own would be irreversible from this credential; another operator
        // credential may do it.
        if r.credential_id == who.scope {
            return Err(errors::status(
                tonic::Code::FailedPrecondition,
                "CANNOT_REVOKE_OWN_CREDENTIAL",
                "a credential does not revoke itself: use another operator credential",
                vec![],
            ));
        }
        let hash = self
            .0
            .engine
            .directory()
            .credentials
            .keys()
            .find(|h| auth::credential_id(h) == r.credential_id)
            .copied()
            .ok_or_else(|| errors::refused(&Refusal::UnknownCredential))?;
        let cmd = Command::RevokeCredential { token_hash: hash };
        match self
            .0
            .submit(&who, "RevokeCredential", &r.request_id, r, cmd)
            .await?
        {
            Outcome::CredentialRevoked => {
                let at = self.0.read()?.credentials[&hash].revoked_at;
                Ok(Response::new(pb::RevokeCredentialResponse {
                    revoked_at_ms: at.map_or(0, |t| t.0),
                }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    async fn list_credentials(
        &self,
        req: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        self.0.auth(&req)?.require_operator()?;
        let r = req.get_ref();
        let size = convert::page_size(r.page_size, 100, self.0.limits.page_credentials_max)?;
        let mut v = Violations::default();
        let role = pb::Role::try_from(r.role).ok();
        if role.is_none() {
            v.add(
                "role",
                "UNSPECIFIED (every role), OPERATOR, COMMANDITAIRE, STRUCTURE, SITE or HUB",
            );
        }
        if !r.after.is_empty() && !auth::is_credential_id(&r.after) {
            v.add(
                "after",
                "empty, or the last credential id of the previous page",
            );
        }
        v.into_result()?;
        let wanted = |info: &pb::CredentialInfo| {
            let role = role.expect("checked");
            (role == pb::Role::Unspecified || info.role == role as i32)
                && (r.actor_id == 0 || info.actor_id == r.actor_id)
                && info.credential_id.as_str() > r.after.as_str()
                && (r.expiring_before_ms == 0 || expiring(info, r.expiring_before_ms))
        };
        let directory = self.0.engine.directory();
        let mut page: Vec<pb::CredentialInfo> = directory
            .credentials
            .iter()
            .map(|(h, c)| convert::credential_info(&auth::credential_id(h), c))
            .filter(wanted)
            .collect();
        page.sort_unstable_by(|a, b| a.credential_id.cmp(&b.credential_id));
        let next_after = match page.len() > size {
            true => page[size - 1].credential_id.clone(),
            false => String::new(),
        };
        page.truncate(size);
        Ok(Response::new(pb::ListCredentialsResponse {
            credentials: page,
            next_after,
        }))
    }

    async fn get_own_credential(
        &self,
        req: Request<pb::GetOwnCredentialRequest>,
    ) -> Result<Response<pb::CredentialInfo>, Status> {
        let who = self.0.auth(&req)?;
        let directory = self.0.engine.directory();
        let own = directory
            .credentials
            .get(&who.token_hash)
            .ok_or_else(|| errors::refused(&Refusal::UnknownCredential))?;
        Ok(Response::new(convert::credential_info(&who.scope, own)))
    }

    async fn get_site(
        &self,
        req: Request<pb::GetSiteRequest>,
    ) -> Result<Response<pb::SiteInfo>, Status> {
        let who = self.0.auth(&req)?;
        let site = self.0.site(SiteId(req.get_ref().site_id))?;
        who.may_read_site(&site)?;
        self.0.settle().await?;
        Ok(Response::new(convert::site_info(&site)))
    }
}

/// A credential to renew before `before`: live, and expiring by then (expired ones too).
fn expiring(info: &pb::CredentialInfo, before: i64) -> bool {
    info.revoked_at_ms == 0 && info.expires_at_ms != 0 && info.expires_at_ms < before
}
