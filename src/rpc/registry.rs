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
        };
        let first = self
            .0
            .submit(&who, "IssueCredential", &r.request_id, r, cmd)
            .await?;
        match first {
            Outcome::CredentialIssued if self.0.read()?.credentials.contains_key(&hash) => {
                Ok(Response::new(pb::IssueCredentialResponse { token }))
            }
            Outcome::CredentialIssued => Err(errors::status(
                tonic::Code::AlreadyExists,
                "TOKEN_ALREADY_SHOWN",
                "this request already issued a token, which is shown only once; issue a new one with a new request id",
                vec![],
            )),
            o => Err(errors::unexpected(o)),
        }
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
