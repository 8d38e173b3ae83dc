//! Client commands for who takes part: registrations and credentials.

use super::*;
use serde_json::json;
use std::path::PathBuf;

pub(super) async fn register(what: RegisterCmd, conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    match what {
        RegisterCmd::Commanditaire { name } => {
            let r = c
                .registry
                .register_commanditaire(pb::RegisterCommanditaireRequest {
                    request_id: request_id(),
                    name,
                })
                .await?
                .into_inner();
            out(
                &conn,
                json!({"commanditaire_id": r.commanditaire_id}),
                format!("commanditaire {} registered", r.commanditaire_id),
            );
        }
        RegisterCmd::Structure { name, siret, iban } => {
            let req = pb::RegisterStructureRequest {
                request_id: request_id(),
                name,
                siret_or_rna: siret,
                iban,
            };
            let r = c.registry.register_structure(req).await?.into_inner();
            out(
                &conn,
                json!({"structure_id": r.structure_id}),
                format!("structure {} registered", r.structure_id),
            );
        }
        RegisterCmd::Site {
            structure,
            name,
            kind,
            insee,
            stops,
        } => {
            let stops = stops
                .iter()
                .map(|s| {
                    s.rsplit_once('=').map(|(l, i)| pb::BusStop {
                        label: l.into(),
                        insee_code: i.into(),
                    })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| CliError::Usage("a --stop is label=INSEE".into()))?;
            let kind = match kind {
                KindArg::Fixed => pb::SiteKind::Fixed,
                KindArg::Itinerant => pb::SiteKind::Itinerant,
                KindArg::Workshop => pb::SiteKind::Workshop,
            } as i32;
            let req = pb::RegisterSiteRequest {
                request_id: request_id(),
                structure_id: structure,
                name,
                kind,
                insee_code: insee,
                stops,
            };
            let r = c.registry.register_site(req).await?.into_inner();
            out(
                &conn,
                json!({"site_id": r.site_id}),
                format!("site {} registered", r.site_id),
            );
        }
    }
    Ok(())
}

pub(super) async fn credential(
    role: RoleArg,
    actor: u64,
    departements: Vec<String>,
    file: Option<PathBuf>,
    valid_days: u32,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let req = pb::IssueCredentialRequest {
        request_id: request_id(),
        role: role_pb(role) as i32,
        actor_id: actor,
        departements,
        valid_days,
    };
    let issued = c.registry.issue_credential(req).await?.into_inner();
    let (token, id, expires) = (issued.token, issued.credential_id, issued.expires_at_ms);
    match file {
        Some(path) => {
            crate::server::write_secret(&path, &format!("{token}\n"))
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
            out(
                &conn,
                json!({"token_file": path, "credential_id": id, "expires_at_ms": expires}),
                format!(
                    "credential {id}: token written to {} (mode 0600), valid until {}",
                    path.display(),
                    instant(expires)
                ),
            );
        }
        None => out(
            &conn,
            json!({"token": token, "credential_id": id, "expires_at_ms": expires}),
            format!(
                "credential {id}, valid until {}, token (shown once): {token}",
                instant(expires)
            ),
        ),
    }
    Ok(())
}

pub(super) async fn revoke_credential(id: String, conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let req = pb::RevokeCredentialRequest {
        request_id: request_id(),
        credential_id: id.clone(),
    };
    let r = c.registry.revoke_credential(req).await?.into_inner();
    out(
        &conn,
        json!({"credential_id": id, "revoked_at_ms": r.revoked_at_ms}),
        format!("credential {id} revoked: its token is refused from now on"),
    );
    Ok(())
}

pub(super) async fn whoami(conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let own = pb::GetOwnCredentialRequest {};
    credential_out(
        &conn,
        &c.registry.get_own_credential(own).await?.into_inner(),
    );
    Ok(())
}

pub(super) async fn credentials(
    role: Option<RoleArg>,
    actor: u64,
    expiring_before: Option<String>,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let role = role.map_or(pb::Role::Unspecified, role_pb) as i32;
    let expiring_before_ms = match expiring_before {
        Some(day) => date_ms("expiring-before", &day, false)?,
        None => 0,
    };
    let mut after = String::new();
    loop {
        let req = pb::ListCredentialsRequest {
            role,
            actor_id: actor,
            after,
            page_size: 1_000,
            expiring_before_ms,
        };
        let page = c.registry.list_credentials(req).await?.into_inner();
        for x in &page.credentials {
            credential_out(&conn, x);
        }
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    Ok(())
}

fn role_pb(role: RoleArg) -> pb::Role {
    match role {
        RoleArg::Operator => pb::Role::Operator,
        RoleArg::Commanditaire => pb::Role::Commanditaire,
        RoleArg::Structure => pb::Role::Structure,
        RoleArg::Site => pb::Role::Site,
        RoleArg::Hub => pb::Role::Hub,
    }
}

/// One credential, a line of text or of JSON.
fn credential_out(conn: &Conn, x: &pb::CredentialInfo) {
    use serde_json::json;
    let role = pb::Role::try_from(x.role).unwrap_or(pb::Role::Unspecified);
    // Expired or not by this machine's clock: the server refuses by its own.
    let state = match (x.revoked_at_ms, x.expires_at_ms) {
        (0, 0) => "live, never expires".to_owned(),
        (0, at) if at <= now_ms() => format!("expired at {}", instant(at)),
        (0, at) => format!("live until {}", instant(at)),
        (at, _) => format!("revoked at {}", instant(at)),
    };
    out(
        conn,
        json!({"credential_id": x.credential_id, "role": role.as_str_name(),
            "actor_id": x.actor_id, "departements": x.departements,
            "revoked_at_ms": x.revoked_at_ms, "expires_at_ms": x.expires_at_ms}),
        format!(
            "{} {} {} {} {state}",
            x.credential_id,
            role.as_str_name(),
            x.actor_id,
            x.departements.join(",")
        ),
    );
}
